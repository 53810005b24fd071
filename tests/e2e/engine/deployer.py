"""Deploy the lab's stacks with the real `pulumi` CLI.

`Engine` is one project + backend + PULUMI_HOME + passphrase in a folder, and
one stack of that project: it runs `pulumi --stack NAME` there with
everything it needs in its environment and nothing downloaded. Several
Engines on one folder are several stacks of one backend: the host stack and
the domain stacks, which must share the passphrase, since a domain stack's
StackReference decrypts the host stack's secret outputs (the SSH keys).

`EngineDeployment` has the mock deployer's interface (tests/e2e/deploy.py:
`up(config, secret_keys)`, `destroy()`, `state`, `runs`, `ssh_sessions`),
and `EngineLabStacks` is the lab's `LabStacks` with one per stack, so that
the e2e tests can run against a host deployed by `pulumi up`
(MAILSTACK_LAB_DEPLOYER=engine).

The project is a folder of links to the checkout's Pulumi.yaml, __main__.py,
components/ and templates/, with a `stacks/` of its own: Pulumi.yaml is never
edited, and the lab's stack file never lands among the users' stacks.

The stack's config is written as a person would: the plain values in the
stack file (as `stacks/Pulumi.example.com.yaml` shows them), the secrets with
the README's quick-start commands (`pulumi config set --secret ...`, values
on stdin).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.deploy import CommandRun, DeploymentFailed, LabStacks

REPO = Path(__file__).resolve().parents[3]
LAUNCHER_DIR = Path(__file__).resolve().parent / "bin"
PULUMI_VERSION = os.environ.get("MAILSTACK_PULUMI_VERSION", "v3.274.1")
ENGINE_CACHE = Path(os.environ.get("MAILSTACK_ENGINE_CACHE", "/var/cache/mailstack-engine"))
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "components", "templates", "requirements.txt", ".venv")
# The stand-in providers, at the versions the program's SDKs ask for (pulumi-plugin.json).
STAND_INS = {"command": "tests.e2e.engine.command_provider", "cloudflare": "tests.e2e.engine.cloudflare_provider"}
# Secret keys and how the README's quick start sets them.
SECRET_FILE_KEYS = ("ssh_private_key",)  # `pulumi config set --secret KEY < FILE`
SECRET_VALUE_KEYS = ("ssh_host_key",)  # `pulumi config set --secret KEY "VALUE"`
USER_SECRET_FIELDS = ("password_hash",)  # `... | pulumi config set --secret --path 'users[i].FIELD'`
# Commands that act on one stack: Engine.run gives them `--stack NAME` (never `pulumi stack select`,
# whose choice is one per project, so that two stacks can run at the same time).
STACK_COMMANDS = ("config", "preview", "up", "destroy", "refresh", "cancel")
STACK_SUBCOMMANDS = ("export", "import", "output", "history", "tag")


class EngineMissing(RuntimeError):
    pass


def find_pulumi() -> Path | None:
    """The CLI: $MAILSTACK_PULUMI, the one scripts/build-pulumi built, or a 3.x `pulumi` on PATH."""
    if os.environ.get("MAILSTACK_PULUMI"):
        path = Path(os.environ["MAILSTACK_PULUMI"])
        return path if path.is_file() else None
    built = ENGINE_CACHE / PULUMI_VERSION / "bin" / "pulumi"
    if built.is_file():
        return built
    on_path = shutil.which("pulumi")
    if on_path:
        version = subprocess.run([on_path, "version"], capture_output=True, text=True).stdout.strip()
        if version.lstrip("v").startswith("3."):
            return Path(on_path)
    return None


def installed_sdk_versions() -> dict[str, str]:
    from .launcher import required_plugins

    return dict(required_plugins())


@dataclass
class Engine:
    """`pulumi` in one folder: project, file backend, PULUMI_HOME, passphrase file."""

    workdir: Path
    stack: str = "e2e"
    pulumi: Path | None = None
    lab_name: str = field(default_factory=lambda: os.environ.get("MAILSTACK_LAB", "msl"))

    def __post_init__(self):
        self.pulumi = self.pulumi or find_pulumi()
        if self.pulumi is None:
            raise EngineMissing("no Pulumi CLI: run scripts/setup (it builds one with scripts/build-pulumi)")
        self.project = self.workdir / "project"
        self.backend = self.workdir / "state"
        self.home = self.workdir / "pulumi-home"
        self.passphrase_file = self.workdir / "passphrase"  # one for every stack of the backend

    def for_stack(self, stack: str) -> "Engine":
        """Another stack of the same project, backend, PULUMI_HOME and passphrase."""
        return Engine(self.workdir, stack=stack, pulumi=self.pulumi, lab_name=self.lab_name)

    @property
    def runs_file(self) -> Path:
        """Where the command stand-in records the commands this stack's runs ran."""
        return self.workdir / f"stand-in-runs.{self.stack}.jsonl"

    # --- setting up ---------------------------------------------------------------------------------

    def prepare(self) -> "Engine":
        """Project links, backend, passphrase, and the stand-in providers installed in PULUMI_HOME."""
        for folder in (self.project / "stacks", self.backend, self.home):
            folder.mkdir(parents=True, exist_ok=True)
        for name in PROJECT_FILES:
            link = self.project / name
            if not link.exists() and (REPO / name).exists():
                link.symlink_to(REPO / name)
        if not self.passphrase_file.exists():
            self.passphrase_file.write_text(os.urandom(24).hex() + "\n")
            self.passphrase_file.chmod(0o600)
        self.install_stand_ins()
        return self

    def install_stand_ins(self) -> None:
        versions = installed_sdk_versions()
        wrappers = self.workdir / "stand-ins"
        wrappers.mkdir(exist_ok=True)
        for name, module in STAND_INS.items():
            version = versions[name]
            if (self.home / "plugins" / f"resource-{name}-v{version}").is_dir():
                continue
            wrapper = wrappers / f"pulumi-resource-{name}"
            wrapper.write_text(
                "#!/bin/sh\n"
                f"# STAND-IN for the {name} provider {version} (test infrastructure: {module.replace('.', '/')}.py)\n"
                f"PYTHONPATH={REPO} exec {REPO}/.venv/bin/python -m {module} \"$@\"\n"
            )
            wrapper.chmod(0o755)
            self.run(["plugin", "install", "resource", name, version, "--file", str(wrapper)], cwd=self.workdir)

    def env(self) -> dict[str, str]:
        path = f"{self.pulumi.parent}:{LAUNCHER_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
            "PATH": path,
            "PULUMI_HOME": str(self.home),
            # metadata=skip: as README "Deploy" tells users of a file backend. The file backend
            # rewrites a sidecar (<stack>.json.attrs) in place with every checkpoint, and a
            # StackReference read at that moment (a domain stack reads its own state) fails the
            # `up` with "failed to load checkpoint: EOF" (seen once in CI).
            "PULUMI_BACKEND_URL": f"file://{self.backend}?metadata=skip",
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(self.passphrase_file),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "MAILSTACK_LAB": self.lab_name,
            "MAILSTACK_STANDIN_RUNS": str(self.runs_file),
            "NO_COLOR": "1",
        }

    def run(self, args: list[str], input: str | None = None, check: bool = True, cwd: Path | None = None,
            timeout: float = 3600) -> subprocess.CompletedProcess:
        """`pulumi ARGS` in the project folder; raises PulumiFailed (with its output) when check and it fails.

        A command that acts on one stack gets `--stack` with this Engine's stack."""
        if args and (args[0] in STACK_COMMANDS or (args[0] == "stack" and args[1:2] and args[1] in STACK_SUBCOMMANDS)):
            args = [*args, "--stack", self.stack]
        result = subprocess.run([str(self.pulumi), *args], input=input if input is not None else "",
                                capture_output=True, text=True, cwd=cwd or self.project, env=self.env(),
                                timeout=timeout)
        if check and result.returncode != 0:
            raise PulumiFailed(args, result)
        return result

    # --- stacks and config ------------------------------------------------------------------------------

    @property
    def stack_file(self) -> Path:
        return self.project / "stacks" / f"Pulumi.{self.stack}.yaml"

    def stack_exists(self) -> bool:
        listed = self.run(["stack", "ls", "--json"], check=False)
        try:
            return any(s.get("name") == self.stack for s in json.loads(listed.stdout or "[]"))
        except ValueError:
            return False

    def init_stack(self) -> None:
        if not self.stack_exists():
            self.run(["stack", "init", self.stack, "--no-select"])

    def write_config(self, config: dict[str, Any]) -> None:
        """The stack's config: plain values in the stack file, secrets with the quick start's commands.

        config: `mailstack:key` -> value, secrets in clear (tests/e2e/stack.py's e2e_config).
        A secret whose value is already in the stack file is not set again.
        """
        self.init_stack()
        current = self._stack_yaml().get("config") or {}
        known = self._secrets_set()
        plain_values: dict[str, Any] = {}
        commands: list[tuple[list[str], str]] = []
        for key, value in config.items():
            short = key.split(":", 1)[1]
            if short in SECRET_FILE_KEYS + SECRET_VALUE_KEYS:
                if value in (None, ""):
                    continue
                if known.get(short) == value and key in current:
                    plain_values[key] = current[key]
                    continue
                if short in SECRET_FILE_KEYS:  # pulumi config set --secret ssh_private_key < KEYFILE
                    commands.append((["config", "set", "--secret", short], value))
                else:  # pulumi config set --secret ssh_host_key "ssh-ed25519 AAAA..."
                    commands.append((["config", "set", "--secret", short, value], ""))
                known[short] = value
            elif short == "users":
                users = []
                old_users = current.get(key) if isinstance(current.get(key), list) else []
                for i, user in enumerate(value):
                    entry = {k: v for k, v in user.items() if k not in USER_SECRET_FIELDS}
                    for secret_field in USER_SECRET_FIELDS:
                        if user.get(secret_field) is None:
                            continue
                        path = f"users[{i}].{secret_field}"
                        old = old_users[i].get(secret_field) if i < len(old_users) and isinstance(
                            old_users[i], dict) else None
                        if known.get(path) == user[secret_field] and isinstance(old, dict):
                            entry[secret_field] = old
                        else:
                            # openssl passwd -6 | pulumi config set --secret --path 'users[0].password_hash'
                            commands.append((["config", "set", "--secret", "--path", path], user[secret_field]))
                            known[path] = user[secret_field]
                    users.append(entry)
                plain_values[key] = users
            else:
                plain_values[key] = value
        document = self._stack_yaml()
        document["config"] = plain_values
        self.stack_file.write_text(
            "# The lab's stack (tests/e2e/engine/deployer.py): plain values here, secrets set with\n"
            "# `pulumi config set --secret ...` as the README's quick start does.\n"
            + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        )
        for args, stdin in commands:
            self.run(args, input=stdin)
        self._secrets_file.write_text(json.dumps(known))
        self._secrets_file.chmod(0o600)

    @property
    def _secrets_file(self) -> Path:
        return self.workdir / f".secrets-set.{self.stack}.json"

    def _stack_yaml(self) -> dict[str, Any]:
        if not self.stack_file.exists():
            return {}
        return yaml.safe_load(self.stack_file.read_text()) or {}

    def _secrets_set(self) -> dict[str, str]:
        try:
            return json.loads(self._secrets_file.read_text())
        except (OSError, ValueError):
            return {}

    # --- state ----------------------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """The stack's checkpoint with secrets decrypted (`pulumi stack export --show-secrets`)."""
        return json.loads(self.run(["stack", "export", "--show-secrets"]).stdout)

    def resources(self) -> dict[str, dict[str, Any]]:
        """"type::name" -> {"inputs", "outputs"} (secrets in clear) of every resource in the state."""
        out = {}
        for resource in self.export().get("deployment", {}).get("resources") or []:
            name = resource["urn"].split("::")[-1]
            out[f"{resource['type']}::{name}"] = {"inputs": reveal(resource.get("inputs") or {}),
                                                  "outputs": reveal(resource.get("outputs") or {})}
        return out

    def outputs(self) -> dict[str, Any]:
        """The stack's outputs, secrets in clear (`pulumi stack output --json --show-secrets`)."""
        return json.loads(self.run(["stack", "output", "--json", "--show-secrets"]).stdout or "{}")

    def take_runs(self) -> list[dict[str, Any]]:
        """The commands the stand-in ran on the host since the last call (one dict per command)."""
        try:
            lines = self.runs_file.read_text().splitlines()
        except OSError:
            return []
        self.runs_file.unlink()
        return [json.loads(line) for line in lines if line.strip()]

    def by_hand(self) -> dict[str, Any]:
        """What a person needs to run `pulumi` against this stack by hand."""
        env = self.env()
        keys = ("PATH", "PULUMI_HOME", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE_FILE",
                "PULUMI_SKIP_UPDATE_CHECK", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "MAILSTACK_LAB")
        exports = " ".join(f"{k}={_sh(env[k])}" for k in keys if k != "PATH")
        exports = f'PATH={_sh(str(self.pulumi.parent))}:{_sh(str(LAUNCHER_DIR))}:"$PATH" {exports}'
        return {
            "pulumi": str(self.pulumi),
            "project": str(self.project),
            "backend_url": env["PULUMI_BACKEND_URL"],
            "stack": self.stack,
            "passphrase_variable": "PULUMI_CONFIG_PASSPHRASE_FILE",
            "passphrase_file": str(self.passphrase_file),
            "pulumi_home": str(self.home),
            "path": env["PATH"],
            "env": {k: env[k] for k in keys},
            "shell": f"cd {_sh(str(self.project))} && export {exports}",
        }


class PulumiFailed(RuntimeError):
    def __init__(self, args: list[str], result: subprocess.CompletedProcess):
        self.args_, self.result = args, result
        super().__init__(f"`pulumi {' '.join(args[:3])}...` failed (exit {result.returncode}):\n"
                         f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}")


def reveal(value: Any) -> Any:
    """A checkpoint value with `--show-secrets` wrappers ({sig, plaintext}) replaced by their values."""
    from .standin import SECRET_SIG

    if isinstance(value, dict):
        if SECRET_SIG in value and "plaintext" in value:
            return reveal(json.loads(value["plaintext"]))
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def _sh(text: str) -> str:
    import shlex

    return shlex.quote(text)


# --- the mock deployer's interface ----------------------------------------------------------------------


@dataclass
class EngineDeployment:
    """One stack of the lab, like tests/e2e/deploy.py's Deployment, with `pulumi up` doing the work."""

    lab: Any
    stack: str = "e2e"
    engine: Engine | None = None  # this stack's Engine (its folder shared with the lab's other stacks)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)  # "type::name" -> {inputs, outputs}
    runs: list[CommandRun] = field(default_factory=list)  # the commands the last run executed
    ssh_sessions: int = 0
    first_seconds: float = 0.0
    last_output: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the config of the last successful `up`
    secret_keys: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.engine is None:
            self.engine = Engine(Path(self.lab.run_dir) / "engine").prepare()
        self.engine = self.engine.for_stack(self.stack)

    def up(self, config: dict[str, Any], secret_keys: list[str] | None = None, stack: str | None = None):
        """`pulumi up --yes --skip-preview` with this config; DeploymentFailed with pulumi's output on failure.

        The answer: the stack's outputs (secrets in clear)."""
        if stack and stack != self.stack:
            self.stack, self.engine = stack, self.engine.for_stack(stack)
        self.engine.write_config(config)
        self._pulumi(["up", "--yes", "--skip-preview", "--diff"], "up")
        self.config, self.secret_keys = config, list(secret_keys or [])
        return self.engine.outputs()

    def destroy(self) -> None:
        """`pulumi destroy --yes`: every command's `delete` runs, every record goes (the engine's order).
        A failing `delete` stops it with that resource, and what depends on nothing deleted yet, in the state."""
        self._pulumi(["destroy", "--yes"], "destroy")
        self.config, self.secret_keys = {}, []

    def _pulumi(self, args: list[str], what: str) -> None:
        self.engine.take_runs()
        result = self.engine.run(args, check=False)
        self.last_output = result.stdout + result.stderr
        self.runs = [CommandRun(r["name"], r["seconds"], r["stdout"], r["stderr"]) for r in self.engine.take_runs()]
        self.ssh_sessions = len(self.runs)
        self.state = self.engine.resources()
        if result.returncode != 0:
            raise DeploymentFailed(f"pulumi {what} of {self.stack} failed (exit {result.returncode}):\n"
                                   f"{_error_part(self.last_output)}")


class EngineLabStacks(LabStacks):
    """The lab's stacks (tests/e2e/deploy.py's LabStacks) deployed by `pulumi up`, in one backend."""

    @classmethod
    def engine(cls, lab: Any) -> "EngineLabStacks":
        from tests.e2e.stack import DEPLOY_ORDER, HOST_STACK

        shared = Engine(Path(lab.run_dir) / "engine").prepare()
        return cls(lab, EngineDeployment(lab, HOST_STACK, shared),
                   {d: EngineDeployment(lab, d, shared) for d in DEPLOY_ORDER})

    def up_domains_at_once(self, overrides: dict[str, dict[str, Any]]) -> list[DeploymentFailed | None]:
        """`pulumi up` of the domain stacks named in `overrides` at the same time, one process each."""
        from tests.e2e.stack import DOMAIN_SECRET_KEYS, domain_config

        failures: dict[str, DeploymentFailed | None] = {}

        def up(domain: str) -> None:
            try:
                self.domains[domain].up(domain_config(self.lab, domain, **overrides[domain]), DOMAIN_SECRET_KEYS)
                failures[domain] = None
            except DeploymentFailed as err:
                failures[domain] = err

        threads = [threading.Thread(target=up, args=(d,)) for d in overrides]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [failures.get(d, DeploymentFailed(f"{d}: no answer")) for d in overrides]


def _error_part(output: str) -> str:
    """The diagnostics of a failed `pulumi up` (the part a person reads)."""
    start = output.find("Diagnostics:")
    return (output[start:] if start >= 0 else output)[-8000:]


def deployer_choice(default: str = "mock") -> str:
    """`engine` or `mock`: MAILSTACK_LAB_DEPLOYER when set, else `default` (`auto`: the engine when built)."""
    wanted = os.environ.get("MAILSTACK_LAB_DEPLOYER", "").strip().lower() or default
    if wanted == "auto":
        return "engine" if find_pulumi() else "mock"
    if wanted not in ("engine", "mock"):
        raise ValueError(f"MAILSTACK_LAB_DEPLOYER={wanted!r}: expected engine, mock or auto")
    return wanted
