"""Run the real `__main__.py` under the Pulumi SDK's mocks and record the graph.

The mock monitor sees every registration as the engine would: type, name,
parent, dependencies and inputs (with secrets still marked). `evaluate`
returns them, in registration order; reads (a `pulumi.StackReference` is one)
are recorded in `Evaluation.reads`.

A domain stack reads its host stack's outputs through a StackReference. Under
the mocks that is a read of type `pulumi:pulumi:StackReference` whose id is
the referenced stack's name: `MailMocks(stacks=...)` answers it with the
outputs given for that stack (`stack_reference_outputs`), secret ones marked.
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import ROOT

PROJECT_DIR = Path(__file__).resolve().parents[2]
MAIN = PROJECT_DIR / "__main__.py"

# What the monitor receives for a value not known yet (in a preview).
UNKNOWN = rpc.UNKNOWN

# How the SDK marks a secret value on the wire.
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    dependencies: list[str]
    custom: bool
    inputs: dict[str, Any]  # plain values, secrets unwrapped
    secret_paths: set[str] = field(default_factory=set)  # e.g. {"stdin", "connection.privateKey"}
    aliases: list[str] = field(default_factory=list)  # the URNs the resource was known by before


def _unwrap(value: Any, path: str, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            secrets.add(path)
            return _unwrap(value.get("value"), path, secrets)
        return {k: _unwrap(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


def alias_urns(urn: str, request: Any) -> list[str]:
    """The URNs of a registration's aliases (`pulumi.Alias(name=...)`: the parent's type chain unchanged)."""
    urns = []
    for alias in getattr(request, "aliases", []) or []:
        if isinstance(alias, str):
            urns.append(alias)
        elif alias.urn:
            urns.append(alias.urn)
        elif alias.spec.name:
            urns.append(urn.rsplit("::", 1)[0] + "::" + alias.spec.name)
    return urns


def _registration(urn: str, request: Any, properties: Any, custom: bool) -> Registration:
    """What the engine is told of a resource (registered or read), secrets unwrapped and noted."""
    secrets: set[str] = set()
    inputs = _unwrap(json_format.MessageToDict(properties), "", secrets)
    return Registration(
        aliases=alias_urns(urn, request),
        urn=urn,
        type=request.type,
        name=request.name,
        parent=request.parent,
        dependencies=sorted(request.dependencies),
        custom=custom,
        inputs=inputs,
        secret_paths=secrets,
    )


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi_mocks.Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.reads: list[Registration] = []
        self.outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        self.registrations.append(_registration(response.urn, request, request.object, bool(request.custom)))
        return response

    def ReadResource(self, request):
        response = super().ReadResource(request)
        self.reads.append(_registration(response.urn, request, request.properties, True))
        return response

    def RegisterResourceOutputs(self, request):
        self.outputs[request.urn] = _unwrap(json_format.MessageToDict(request.outputs), "", set())
        return super().RegisterResourceOutputs(request)


@dataclass
class Evaluation:
    registrations: list[Registration]
    stack_outputs: dict[str, Any]
    reads: list[Registration] = field(default_factory=list)  # e.g. the StackReference to the host stack
    secret_outputs: list[str] = field(default_factory=list)  # the names of the exports that are secret

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def named(self, name: str) -> Registration:
        matches = [r for r in self.registrations if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name!r}, found {len(matches)}"
        return matches[0]


STACK_REFERENCE = "pulumi:pulumi:StackReference"


def stack_reference_outputs(args: pulumi_mocks.MockResourceArgs, stacks: dict[str, dict[str, Any]],
                            secret_outputs: dict[str, list[str]] | None = None):
    """The answer to the read of a StackReference: the referenced stack's outputs, secret ones named.

    The SDK reads it with id = the name it was given ("host-e2e", or in full
    "organization/mailstack/host-e2e"); `stacks` and `secret_outputs` are keyed
    by the bare stack name. A stack that is not there fails, as under the engine,
    but the stack being run: its own outputs are empty until its first `up`.
    """
    name = args.resource_id or args.inputs.get("name", "")
    bare = name.rsplit("/", 1)[-1]
    if bare not in stacks and bare == pulumi.get_stack():
        # The stack's own previous outputs (a domain stack reads its DKIM state): on its
        # first `up` it has none, as the engine answers.
        return name, {**args.inputs, "outputs": {}, "secretOutputNames": []}
    if bare not in stacks:
        raise KeyError(f"StackReference {name!r}: no such stack (the test knows {sorted(stacks)})")
    outputs = stacks[bare]
    secret = [n for n in (secret_outputs or {}).get(bare, []) if n in outputs]
    return name, {**args.inputs, "outputs": dict(outputs), "secretOutputNames": secret}


# What the example host stack (tests/fixtures/stacks/Pulumi.host-mail.yaml) exports after its `up`:
# what a domain stack on it reads, unless a test gives other stacks.
HOST_MAIL_OUTPUTS = {
    "host_id": "mailstack/host-mail",
    "hostname": "mail.example.net",
    "addresses": ["192.0.2.10", "2001:db8::10"],
    "ssh_host": "192.0.2.10",
    "ssh_port": 22,
    "ssh_user": "root",
    "ssh_private_key": "",
    "ssh_host_key": "",
    "postmaster_address": "alice@example.com",
    "tls": "self-signed",
}
HOST_SECRET_OUTPUTS = ["ssh_private_key", "ssh_host_key"]


# What a TLS unit prints (templates/tls/tls.sh.j2): the certificate's fingerprint, the served
# and the next key's SPKI digests (the TLSA records) and the served key's number.
TLS_UNIT_STDOUT = ("AB:" * 31 + "AB\n" + "spki=" + "11" * 32 + "\n" + "spki_next=" + "22" * 32 + "\n"
                   + "generation=0\n")


class MailMocks(pulumi_mocks.Mocks):
    """Outputs a provider would give: each DKIM key unit prints `dkim_public_key`.

    stacks: stack name -> its exported outputs, for StackReference reads
    (default: the example host stack host-mail, HOST_MAIL_OUTPUTS);
    secret_outputs: stack name -> the names of its outputs that are secret.
    """

    def __init__(self, dkim_public_key: str, stdout: Callable[[str], str] | None = None,
                 stacks: dict[str, dict[str, Any]] | None = None, secret_outputs: dict[str, list[str]] | None = None,
                 commands_ran: bool = True):
        self.dkim_public_key = dkim_public_key
        # False: as in a preview, no command has run, so their stdout is not known
        # (an output the provider does not give is unknown while previewing).
        self.commands_ran = commands_ran
        self.stdout = stdout
        if stacks is None:
            stacks, secret_outputs = {"host-mail": HOST_MAIL_OUTPUTS}, {"host-mail": HOST_SECRET_OUTPUTS}
        self.stacks = stacks
        self.secret_outputs = secret_outputs or {}

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        if args.typ == STACK_REFERENCE:
            return stack_reference_outputs(args, self.stacks, self.secret_outputs)
        outputs = dict(args.inputs)
        if args.typ == "command:remote:Command" and self.commands_ran:
            if self.stdout is not None:
                outputs["stdout"] = self.stdout(args.name)
            elif args.name.endswith("-tls"):
                outputs["stdout"] = TLS_UNIT_STDOUT
            else:
                outputs["stdout"] = self.dkim_public_key if "-dkim-key-" in args.name else ""
            outputs["stderr"] = ""
        return f"{args.name}-id", outputs

    def call(self, args: pulumi_mocks.MockCallArgs):
        if args.token == "cloudflare:index/getZone:getZone":
            name = (args.args.get("filter") or {}).get("name", "zone")
            return {"id": f"zone-{name}", "zoneId": f"zone-{name}", "name": name}
        return {}


def config_for_pulumi(values: dict[str, Any]) -> dict[str, str]:
    """Stack-file values as Pulumi hands them to a program: strings, structured ones as JSON."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (dict, list)):
            out[key] = json.dumps(value)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


def evaluate(
    config: dict[str, Any],
    secret_keys: list[str] | None = None,
    mocks: pulumi_mocks.Mocks | None = None,
    stack: str = "example.com",
    monitor: RecordingMonitor | None = None,
    preview: bool = False,
) -> Evaluation:
    """Run __main__.py once with `config` (stack-file style values) and return what it registered."""
    mocks = mocks or MailMocks(dkim_public_key="MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest")
    monitor = monitor or RecordingMonitor(mocks)
    ROOT.set(None)  # a fresh stack resource for each evaluation
    pulumi.runtime.set_mocks(mocks, project="mailstack", stack=stack, preview=preview, monitor=monitor)
    # As the engine does: every default Pulumi.yaml declares, as text, beside the stack's values.
    pulumi.runtime.set_all_config(config_for_pulumi(with_project_defaults(config)), secret_keys or [])

    exports: dict[str, Any] = {}
    secret_exports: list[str] = []

    @pulumi.runtime.test
    def run():
        runpy.run_path(str(MAIN), run_name="__main__")
        # `pulumi.export` values: resolved here, as the engine would show them.
        root = ROOT.get()
        outputs = dict(root.outputs)

        async def secret_names():
            for name, value in outputs.items():
                if await pulumi.Output.from_input(value).is_secret():
                    secret_exports.append(name)

        return pulumi.Output.all(pulumi.Output.from_input(outputs).apply(exports.update),
                                 pulumi.Output.from_input(secret_names()))

    run()
    return Evaluation(monitor.registrations, exports, monitor.reads, sorted(secret_exports))


def with_project_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """`values` plus every default Pulumi.yaml declares for a key they lack, as the engine adds them.

    The real engine hands the program each declared default as text too
    ("2048", "true", "[]", ""), so a value the config model reads only in its
    typed form fails there, not under plain mocks (found with the real CLI:
    README, "What the real engine found"). `evaluate` always applies it.
    """
    import yaml

    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text()).get("config") or {}
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["name"]
    out = dict(values)
    for key, spec in declared.items():
        if isinstance(spec, dict) and "default" in spec:
            out.setdefault(f"{project}:{key}", spec["default"])
    return out
