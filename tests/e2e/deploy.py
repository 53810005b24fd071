"""Deploy stacks into the lab with the program itself.

No Pulumi CLI can run here, so the real `__main__.py` runs under the SDK's
mocks, and these mocks do what the providers would do under `pulumi up`:

- a `remote.Command` runs its `create` (or, when it ran before with other
  inputs, its `update`) over SSH with its own `connection` and `stdin`, and
  returns the real stdout; a failing command fails the deployment with its
  stderr;
- a `cloudflare.DnsRecord` is published to the lab's DNS server with a
  dynamic update, exactly as registered (TXT chunks included);
- the zone lookup returns the lab zone;
- a `pulumi.StackReference` reads the outputs that the referenced stack's
  last successful `up` exported (a domain stack reads its host stack's, and
  its own: none before its first `up`), from the `StackExports` shared by the
  lab's deployments, as a backend keeps them; secret outputs stay secret.

The SDK registers a resource only once its dependencies are registered and
its inputs known, so resources are created in the order the graph dictates:
the DKIM key the host generates flows into the DKIM record as under `pulumi up`.

Like the engine, a `Deployment` (one per stack) remembers each resource's
inputs: a resource whose inputs did not change is not touched on the next run
(no command runs); a resource registered with an alias takes over the state
of the name it had; after a successful `up`, a resource the program no
longer registers is deleted (its command's `delete` runs, its record goes),
newest first. `destroy()` does what `pulumi destroy` does: every
command's `delete` runs, in reverse order of creation, every DNS record goes,
and the stack's state and exports are forgotten.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi.runtime import mocks as pulumi_mocks

from tests.program.harness import (
    STACK_REFERENCE,
    Evaluation,
    RecordingMonitor,
    _unwrap,
    alias_urns,
    evaluate,
    stack_reference_outputs,
)

from .lab import Lab

AUTO_TTL = 300  # what Cloudflare's ttl=1 ("automatic") stands for here


class DeploymentFailed(RuntimeError):
    pass


@dataclass
class CommandRun:
    name: str
    seconds: float
    stdout: str
    stderr: str


class StackExports:
    """What each stack of one lab exported at its last successful `up`: the backend's side of a StackReference."""

    def __init__(self):
        self.outputs: dict[str, dict[str, Any]] = {}  # stack name -> its exports
        self.secret: dict[str, list[str]] = {}  # stack name -> the names of its secret exports
        self._lock = threading.Lock()

    def publish(self, stack: str, outputs: dict[str, Any], secret: list[str]) -> None:
        with self._lock:
            self.outputs[stack] = dict(outputs)
            self.secret[stack] = list(secret)

    def forget(self, stack: str) -> None:
        with self._lock:
            self.outputs.pop(stack, None)
            self.secret.pop(stack, None)

    def snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        with self._lock:
            return dict(self.outputs), dict(self.secret)

    def __getstate__(self):  # a copy for another process (up_at_once): the values, not the lock
        return self.snapshot()

    def __setstate__(self, state):
        self.outputs, self.secret = state
        self._lock = threading.Lock()


@dataclass
class Deployment:
    """One stack's state across runs, as the engine would keep it."""

    lab: Lab
    stack: str = "e2e"
    exports: StackExports = field(default_factory=StackExports)  # shared by the lab's deployments
    state: dict[str, dict[str, Any]] = field(default_factory=dict)  # "type::name" -> {inputs, outputs}
    runs: list[CommandRun] = field(default_factory=list)  # the commands the last run executed
    ssh_sessions: int = 0  # SSH sessions opened by the last run
    first_seconds: float = 0.0  # wall time of the first deployment (set by the fixture)
    config: dict[str, Any] = field(default_factory=dict)  # the config of the last successful `up`
    secret_keys: list[str] = field(default_factory=list)
    # Record names whose publication is held back (Cloudflare took them, DNS does not show them yet):
    # `release()` publishes them. And when each record name was last published (time.time()).
    withheld: set[str] = field(default_factory=set)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    published_at: dict[str, float] = field(default_factory=dict)

    def up(self, config: dict[str, Any], secret_keys: list[str] | None = None, stack: str | None = None) -> Evaluation:
        """Run the program against the lab; raise DeploymentFailed on a failing resource."""
        self.runs = []
        self.ssh_sessions = 0
        name = stack or self.stack
        mocks = LabMocks(self)
        try:
            evaluation = evaluate(config, secret_keys, mocks, stack=name, monitor=LabMonitor(mocks))
        except Exception as err:  # noqa: BLE001 - the SDK wraps a provider error in its own types
            if mocks.failure is not None:
                raise mocks.failure from None
            raise DeploymentFailed(str(err)) from err
        # What the program no longer has goes, as the engine deletes it at the end of an `up`.
        for key in reversed([k for k in self.state if k not in mocks.registered]):
            self._delete(mocks, key)
        self.exports.publish(name, evaluation.stack_outputs, evaluation.secret_outputs)
        self.config, self.secret_keys = config, list(secret_keys or [])
        return evaluation

    def destroy(self) -> None:
        """`pulumi destroy`: each command's `delete` (if any) over SSH and each DNS record removed,
        newest first; then the state and the exports are gone. A failing `delete` stops it there,
        with that resource and the older ones still in the state (as the engine leaves them)."""
        self.runs = []
        self.ssh_sessions = 0
        mocks = LabMocks(self)
        for key in reversed(list(self.state)):
            self._delete(mocks, key)
        self.exports.forget(self.stack)
        self.config, self.secret_keys = {}, []


    def release(self) -> None:
        """Every withheld record published now (DNS has caught up), and nothing withheld any more."""
        self.withheld = set()
        for name, inputs in list(self.held.items()):
            ttl = AUTO_TTL if int(inputs["ttl"]) == 1 else int(inputs["ttl"])
            self.lab.dns_update(inputs["zoneId"], inputs["name"], inputs["type"], ttl, record_content(inputs))
            self.published_at[name] = time.time()
            del self.held[name]

    def _delete(self, mocks: "LabMocks", key: str) -> None:
        """One resource deleted: its command's `delete` over SSH (DeploymentFailed if it fails), its record removed."""
        kind = key.split("::", 1)[0]
        inputs = self.state[key]["inputs"]
        if kind == "command:remote:Command" and inputs.get("delete"):
            mocks.run_command(key.split("::", 1)[1], inputs["delete"], inputs)
        elif kind == "cloudflare:index/dnsRecord:DnsRecord":
            self.lab.dns_delete(inputs["zoneId"], inputs["name"], inputs["type"], record_content(inputs))
        del self.state[key]


class LabMonitor(RecordingMonitor):
    """The mock monitor, and the engine's aliases: a resource registered with an alias takes its old state."""

    def __init__(self, mocks: "LabMocks"):
        super().__init__(mocks)
        self.lab_mocks = mocks

    def RegisterResource(self, request):
        if request.custom:
            deployment = self.lab_mocks.deployment
            key = f"{request.type}::{request.name}"
            for alias in alias_urns(key, request):
                old = alias if alias.count("::") == 1 else f"{request.type}::{alias.rsplit('::', 1)[1]}"
                with self.lab_mocks._lock:
                    if key not in deployment.state and old in deployment.state:
                        deployment.state = {(key if k == old else k): v for k, v in deployment.state.items()}
        return super().RegisterResource(request)


def up_at_once(jobs: list[tuple[Deployment, dict[str, Any], list[str]]]) -> list[DeploymentFailed | None]:
    """Several `up`s at the same time, each in a process of its own, as `pulumi up` in two shells would run.

    (The SDK's mock runtime is one per process, so threads cannot do it; and a
    forked copy of this process hangs in the SDK's event loop, so each `up`
    runs in a fresh interpreter.) Each Deployment gets its run's state,
    commands and exports back; the answer is each job's failure, or None.
    """
    context = multiprocessing.get_context("spawn")
    started = []
    for deployment, config, secret_keys in jobs:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_up_in_child, args=(deployment, config, secret_keys, sender))
        process.start()
        sender.close()
        started.append((deployment, config, secret_keys, process, receiver))
    failures: list[DeploymentFailed | None] = []
    for deployment, config, secret_keys, process, receiver in started:
        try:
            answer = receiver.recv()
        except EOFError:
            answer = {"failure": "the deploying process died without an answer", "runs": [], "ssh_sessions": 0}
        process.join(60)
        deployment.runs, deployment.ssh_sessions = answer["runs"], answer["ssh_sessions"]
        if answer["failure"] is None:
            deployment.state = answer["state"]
            deployment.exports.publish(deployment.stack, answer["outputs"], answer["secret_outputs"])
            deployment.config, deployment.secret_keys = config, list(secret_keys)
            failures.append(None)
        else:
            failures.append(DeploymentFailed(answer["failure"]))
    return failures


def _up_in_child(deployment: Deployment, config: dict[str, Any], secret_keys: list[str], sender) -> None:
    answer: dict[str, Any] = {"failure": None}
    try:
        evaluation = deployment.up(config, secret_keys)
        answer.update(state=deployment.state, outputs=evaluation.stack_outputs,
                      secret_outputs=evaluation.secret_outputs)
    except Exception as err:  # noqa: BLE001 - sent to the parent, which raises or reports it
        answer["failure"] = str(err) or repr(err)
    answer.update(runs=deployment.runs, ssh_sessions=deployment.ssh_sessions)
    sender.send(answer)
    sender.close()


class LabMocks(pulumi_mocks.Mocks):
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.lab = deployment.lab
        self.failure: DeploymentFailed | None = None
        self.registered: set[str] = set()  # "type::name" of every resource this run registered
        self._lock = threading.Lock()

    # --- resources --------------------------------------------------------------------------

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        if args.typ == STACK_REFERENCE:  # a read: nothing to create, nothing to remember
            outputs, secret = self.deployment.exports.snapshot()
            try:
                return stack_reference_outputs(args, outputs, secret)
            except KeyError as err:
                self.failure = self.failure or DeploymentFailed(err.args[0])
                raise self.failure from None
        inputs = _unwrap(args.inputs, "", set())
        key = f"{args.typ}::{args.name}"
        with self._lock:
            self.registered.add(key)
            before = self.deployment.state.get(key)
        if before is not None and before["inputs"] == inputs:
            return f"{args.name}-id", before["outputs"]
        try:
            if args.typ == "command:remote:Command":
                outputs = self._command(args.name, inputs, before)
            elif args.typ == "cloudflare:index/dnsRecord:DnsRecord":
                outputs = self._record(inputs, before)
            elif args.typ == "cloudflare:index/zoneDnssec:ZoneDnssec":
                outputs = {**inputs, **zone_dnssec_outputs(self.lab, inputs)}
            else:
                outputs = dict(inputs)
        except DeploymentFailed as err:
            self.failure = self.failure or err
            raise
        with self._lock:
            self.deployment.state[key] = {"inputs": inputs, "outputs": outputs}
        return f"{args.name}-id", outputs

    def call(self, args: pulumi_mocks.MockCallArgs):
        if args.token == "cloudflare:index/getZone:getZone":
            name = (args.args.get("filter") or {}).get("name", "")
            zones = [*self.lab.forward_zones, *self.lab.reverse_zones]
            if name not in zones:
                raise DeploymentFailed(f"getZone: the lab serves no zone {name!r} (it serves {zones})")
            return {"id": "", "zoneId": name, "name": name}
        return {}

    # --- remote.Command: over real SSH, with the resource's own connection ----------------------

    def _command(self, name: str, inputs: dict[str, Any], before: dict | None) -> dict[str, Any]:
        script = inputs.get("update") if before is not None and inputs.get("update") else inputs["create"]
        result = self.run_command(name, script, inputs)
        return {**inputs, "stdout": result.stdout, "stderr": result.stderr}

    def run_command(self, name: str, script: str, inputs: dict[str, Any]) -> subprocess.CompletedProcess:
        """Run one of the resource's scripts with its connection and stdin; DeploymentFailed if it fails."""
        started = time.monotonic()
        result = self._ssh(inputs["connection"], script, inputs.get("stdin"))
        run = CommandRun(name, time.monotonic() - started, result.stdout, result.stderr)
        with self._lock:
            self.deployment.runs.append(run)
            self.deployment.ssh_sessions += 1
        if result.returncode != 0:
            raise DeploymentFailed(f"{name}: exit {result.returncode}:\n{result.stderr.strip()}")
        return result

    def _ssh(self, connection: dict[str, Any], command: str, stdin: str | None) -> subprocess.CompletedProcess:
        host, port, user = connection["host"], int(connection.get("port", 22)), connection.get("user", "root")
        with tempfile.TemporaryDirectory(prefix="mailstack-ssh-") as tmp:
            key = Path(tmp) / "key"
            key.write_text(connection["privateKey"])
            key.chmod(0o600)
            known_hosts = Path(tmp) / "known_hosts"
            host_id = host if port == 22 else f"[{host}]:{port}"
            known_hosts.write_text(f"{host_id} {connection['hostKey']}\n")
            argv = [
                "ip", "netns", "exec", self.lab.admin.netns,
                "ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "LogLevel=ERROR", "-p", str(port), f"{user}@{host}", "--", command,
            ]  # fmt: skip
            return subprocess.run(argv, input=stdin or "", capture_output=True, text=True, timeout=1800)

    # --- cloudflare.DnsRecord: a dynamic update to the lab's DNS ----------------------------------

    def _record(self, inputs: dict[str, Any], before: dict | None) -> dict[str, Any]:
        if before is not None:
            old = before["inputs"]
            self.lab.dns_delete(old["zoneId"], old["name"], old["type"], record_content(old))
        if inputs["name"] in self.deployment.withheld:
            self.deployment.held[inputs["name"]] = dict(inputs)
            return dict(inputs)
        ttl = AUTO_TTL if int(inputs["ttl"]) == 1 else int(inputs["ttl"])
        self.lab.dns_update(inputs["zoneId"], inputs["name"], inputs["type"], ttl, record_content(inputs))
        self.deployment.published_at[inputs["name"]] = time.time()
        return dict(inputs)


def record_content(record: dict[str, Any]) -> str:
    if record["type"] == "MX":
        return f"{int(record['priority'])} {record['content']}"
    if record["type"] == "TLSA":
        return tlsa_content(record["data"])
    if record["type"] == "SRV":
        return srv_content(record["data"])
    return record["content"]


def srv_content(data: dict[str, Any]) -> str:
    """An SRV record's `data` (as Cloudflare takes it) in presentation form: 0 1 587 mail.example.net."""
    return f"{int(data['priority'])} {int(data['weight'])} {int(data['port'])} {data['target']}"


def tlsa_content(data: dict[str, Any]) -> str:
    """A TLSA record's `data` (as Cloudflare takes it) in presentation form."""
    matching = data.get("matchingType", data.get("matching_type"))
    return f"{int(data['usage'])} {int(data['selector'])} {int(matching)} {data['certificate']}"


def zone_dnssec_outputs(lab: Lab, inputs: dict[str, Any]) -> dict[str, Any]:
    """Cloudflare's DNSSEC for a lab zone: the lab's Knot signs it (tests/e2e/dnssec.py); its DS, as Cloudflare shows it."""
    from . import dnssec

    zone = inputs["zoneId"]  # the lab's zone ids are the zones' names
    if inputs.get("status", "active") != "active":
        raise DeploymentFailed(f"the lab's DNSSEC stand-in only turns signing on (status {inputs.get('status')!r})")
    if zone not in lab.dnssec_anchors:
        lab.dnssec_anchors.update(dnssec.sign_zones(lab, [*lab.dnssec_anchors, zone]))
    ds = lab.dnssec_anchors[zone][0]
    key_tag, algorithm, digest_type, digest = ds.split(maxsplit=3)
    return {"status": "active", "ds": f"{zone}. 3600 IN DS {ds}", "keyTag": int(key_tag),
            "algorithm": algorithm, "digestType": digest_type, "digest": digest.replace(" ", "")}


@dataclass
class LabStacks:
    """The lab's stacks, each with its own Deployment: the host stack, then one domain stack per domain."""

    lab: Lab
    host: Deployment
    domains: dict[str, Deployment]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stack's first `up`

    @classmethod
    def mock(cls, lab: Lab) -> "LabStacks":
        """Deployments by the mock deployer (this module), sharing one store of the stacks' exports."""
        from .stack import DEPLOY_ORDER, HOST_STACK

        exports = StackExports()
        return cls(lab, Deployment(lab, HOST_STACK, exports), {d: Deployment(lab, d, exports) for d in DEPLOY_ORDER})

    @property
    def all(self) -> list[Deployment]:
        return [self.host, *self.domains.values()]

    def up(self) -> None:
        """Deploy every stack with its own config: the host stack first (its exports feed the domains)."""
        for name, step in (("host", self.up_host), *((d, lambda d=d: self.up_domain(d)) for d in self.domains)):
            started = time.monotonic()
            step()
            self.seconds.setdefault(name, round(time.monotonic() - started, 2))

    def up_host(self, **overrides: Any) -> Evaluation:
        """`up` of the host stack with its config and `overrides` (keys without `mailstack:`)."""
        from .stack import HOST_SECRET_KEYS, host_config

        return self.host.up(host_config(self.lab, **overrides), HOST_SECRET_KEYS)

    def up_domain(self, domain: str, **overrides: Any) -> Evaluation:
        """`up` of the domain stack of `domain` with its config and `overrides`."""
        from .stack import DOMAIN_SECRET_KEYS, domain_config

        return self.domains[domain].up(domain_config(self.lab, domain, **overrides), DOMAIN_SECRET_KEYS)

    def up_domains_at_once(self, overrides: dict[str, dict[str, Any]]) -> list[DeploymentFailed | None]:
        """`up` of the domain stacks named in `overrides` ({domain: {key: value}}) at the same time."""
        from .stack import DOMAIN_SECRET_KEYS, domain_config

        return up_at_once([(self.domains[d], domain_config(self.lab, d, **o), DOMAIN_SECRET_KEYS)
                           for d, o in overrides.items()])

    def restore(self) -> None:
        """Every stack deployed again with its own config (a test's changes undone on the host)."""
        self.up_host()
        for domain in self.domains:
            self.up_domain(domain)
