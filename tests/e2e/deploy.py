"""Deploy a stack into the lab with the program itself.

No Pulumi CLI can run here, so the real `__main__.py` runs under the SDK's
mocks, and these mocks do what the providers would do under `pulumi up`:

- a `remote.Command` runs its `create` (or, when it ran before with other
  inputs, its `update`) over SSH with its own `connection` and `stdin`, and
  returns the real stdout; a failing command fails the deployment with its
  stderr;
- a `cloudflare.DnsRecord` is published to the lab's DNS server with a
  dynamic update, exactly as registered (TXT chunks included);
- the zone lookup returns the lab zone.

The SDK registers a resource only once its dependencies are registered and
its inputs known, so resources are created in the order the graph dictates:
the DKIM key the host generates flows into the DKIM record as under `pulumi up`.

Like the engine, a `Deployment` remembers each resource's inputs: a resource
whose inputs did not change is not touched on the next run (no command runs).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi.runtime import mocks as pulumi_mocks

from tests.program.harness import Evaluation, _unwrap, evaluate

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


@dataclass
class Deployment:
    """One stack's state across runs, as the engine would keep it."""

    lab: Lab
    state: dict[str, dict[str, Any]] = field(default_factory=dict)  # "type::name" -> {inputs, outputs}
    runs: list[CommandRun] = field(default_factory=list)  # the commands the last run executed
    ssh_sessions: int = 0  # SSH sessions opened by the last run
    first_seconds: float = 0.0  # wall time of the first deployment (set by the fixture)

    def up(self, config: dict[str, Any], secret_keys: list[str] | None = None, stack: str = "e2e") -> Evaluation:
        """Run the program against the lab; raise DeploymentFailed on a failing resource."""
        self.runs = []
        self.ssh_sessions = 0
        mocks = LabMocks(self)
        try:
            return evaluate(config, secret_keys, mocks, stack=stack)
        except Exception as err:  # noqa: BLE001 - the SDK wraps a provider error in its own types
            if mocks.failure is not None:
                raise mocks.failure from None
            raise DeploymentFailed(str(err)) from err


class LabMocks(pulumi_mocks.Mocks):
    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.lab = deployment.lab
        self.failure: DeploymentFailed | None = None
        self._lock = threading.Lock()

    # --- resources --------------------------------------------------------------------------

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        inputs = _unwrap(args.inputs, "", set())
        key = f"{args.typ}::{args.name}"
        with self._lock:
            before = self.deployment.state.get(key)
        if before is not None and before["inputs"] == inputs:
            return f"{args.name}-id", before["outputs"]
        try:
            if args.typ == "command:remote:Command":
                outputs = self._command(args.name, inputs, before)
            elif args.typ == "cloudflare:index/dnsRecord:DnsRecord":
                outputs = self._record(inputs, before)
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
        started = time.monotonic()
        result = self._ssh(inputs["connection"], script, inputs.get("stdin"))
        run = CommandRun(name, time.monotonic() - started, result.stdout, result.stderr)
        with self._lock:
            self.deployment.runs.append(run)
            self.deployment.ssh_sessions += 1
        if result.returncode != 0:
            raise DeploymentFailed(f"{name}: exit {result.returncode}:\n{result.stderr.strip()}")
        return {**inputs, "stdout": result.stdout, "stderr": result.stderr}

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
            self.lab.dns_delete(old["zoneId"], old["name"], old["type"], _content(old))
        ttl = AUTO_TTL if int(inputs["ttl"]) == 1 else int(inputs["ttl"])
        self.lab.dns_update(inputs["zoneId"], inputs["name"], inputs["type"], ttl, _content(inputs))
        return dict(inputs)


def _content(record: dict[str, Any]) -> str:
    if record["type"] == "MX":
        return f"{int(record['priority'])} {record['content']}"
    return record["content"]
