"""STAND-IN for the `command` resource provider (pulumi-command), `command:remote:Command` only.

Test infrastructure: the real provider's Go module cannot be fetched here. This
one follows the real provider's code at the version the SDK asks for
(provider/pkg/provider/remote/commandController.go, commandOutputs.go,
common/inputs.go of pulumi-command v1.2.1):

- Check: inputs as the installed SDK's `CommandArgs`/`ConnectionArgs` declare
  them; an unknown input fails, a missing `connection`/`host` fails;
- Diff: any input change is an update; a change of `triggers` replaces;
- Create runs `create`; Update runs `update`, or else `create`; Delete runs
  `delete` (nothing when there is none); a preview runs nothing (Create in
  preview leaves stdout/stderr unknown, Update in preview keeps the old ones);
- a command runs over SSH with the resource's own connection: its private
  key, its user and port, the host key pinned when one is given; `stdin` as
  given; stdout and stderr (one trailing newline trimmed) become outputs;
  each output line goes to the engine's log unless `logging` says not;
- a failing command fails the step with the real provider's message:
  `Process exited with status N: running "CMD":` and the combined output;
- `connection` is always secret in state and outputs; any other input that was
  secret stays secret.

The SSH client is OpenSSH's, run in the lab's admin namespace (the operator's
workstation) when a lab is up; the real provider uses Go's x/crypto/ssh.
Every command that ran is appended, one JSON line, to $MAILSTACK_STANDIN_RUNS
when set, so that tests can tell which units ran.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import engine_pb2, provider_pb2
from pulumi_command import remote

from .standin import (
    UNKNOWN,
    ProviderError,
    StandInProvider,
    keep_secrets,
    plain,
    serve,
    to_dict,
    to_struct,
)

TYPE = "command:remote:Command"
ALWAYS_SECRET = ("connection",)  # `provider:"secret"` on CommandInputs.Connection
PREVIOUS_OUTPUT_WARNING = (
    "Unable to set '{key}'. This only works if your SSH server is configured to accept\n"
    "\tthese variables via AcceptEnv. Alternatively, if a Bash-like shell runs the command on the remote host, "
    "you could\n\tprefix the command itself with the variables in the form 'VAR=value command'"
)


def lab_admin_netns() -> str | None:
    """The lab's admin namespace (where the operator's workstation is), when a lab is up."""
    try:
        from tests.e2e.lab import STATE_FILE

        return json.loads(STATE_FILE.read_text())["hosts"]["admin"]["netns"]
    except (OSError, ValueError, KeyError):
        return None


class CommandProvider(StandInProvider):
    name = "command"
    version = "1.2.1"
    resource_type = TYPE
    args_class = remote.CommandArgs
    replace_on = ("triggers",)
    computed = ("stdout", "stderr")

    def Create(self, request, context):
        inputs = to_dict(request.properties)
        name = request.urn.split("::")[-1]
        resource_id = f"{name}{secrets.token_hex(4)}"
        if request.preview:
            outputs = {**inputs, "stdout": UNKNOWN, "stderr": UNKNOWN}
            return provider_pb2.CreateResponse(id=resource_id, properties=to_struct(outputs))
        outputs = dict(inputs)
        if plain(inputs.get("create")):
            outputs.update(self._run(context, request.urn, inputs, inputs["create"], previous={}))
        return provider_pb2.CreateResponse(id=resource_id, properties=to_struct(_secret_outputs(inputs, outputs)))

    def Update(self, request, context):
        news, olds = to_dict(request.news), to_dict(request.olds)
        previous = {"stdout": plain(olds.get("stdout", "")), "stderr": plain(olds.get("stderr", ""))}
        outputs = {**news, **{k: olds[k] for k in ("stdout", "stderr") if k in olds}}
        if not request.preview:
            script = plain(news.get("update")) or plain(news.get("create"))
            if script:
                outputs.update(self._run(context, request.urn, news, script, previous))
        return provider_pb2.UpdateResponse(properties=to_struct(_secret_outputs(news, outputs)))

    def Delete(self, request, context):
        state = to_dict(request.properties)
        if plain(state.get("delete")):
            previous = {"stdout": plain(state.get("stdout", "")), "stderr": plain(state.get("stderr", ""))}
            self._run(context, request.urn, state, state["delete"], previous)
        return empty_pb2.Empty()

    def Read(self, request, context):
        # The real provider reads nothing from the host: the state is what it was.
        return provider_pb2.ReadResponse(id=request.id, properties=request.properties, inputs=request.inputs)

    # --- running a command over SSH ------------------------------------------------------------------

    def _run(self, context, urn: str, inputs: dict[str, Any], script: Any, previous: dict[str, str]) -> dict:
        script = plain(script)
        connection = plain(inputs["connection"])
        add_previous = plain(inputs.get("addPreviousOutputInEnv"))
        if add_previous is None or add_previous:
            # The real provider asks sshd to set these; Debian's sshd accepts only LANG and LC_*.
            for key, value in (("PULUMI_COMMAND_STDOUT", previous.get("stdout")),
                               ("PULUMI_COMMAND_STDERR", previous.get("stderr"))):
                if value:
                    self.log(urn, PREVIOUS_OUTPUT_WARNING.format(key=key), severity=engine_pb2.WARNING)
        environment = plain(inputs.get("environment")) or {}
        if environment:
            key = sorted(environment)[0]
            context.abort(grpc.StatusCode.UNKNOWN, f"could not set environment variable {key!r}: ssh: setenv failed")
        logging = plain(inputs.get("logging")) or "stdoutAndStderr"
        started = time.monotonic()
        try:
            result = ssh(connection, script, plain(inputs.get("stdin")) or "")
        except ProviderError as err:
            context.abort(grpc.StatusCode.UNKNOWN, str(err))
        _record_run(urn, result, time.monotonic() - started, logged=logging != "none")
        streams = [(result.stdout, "stdout"), (result.stderr, "stderr")]
        for text, stream in streams:
            if logging in ("stdoutAndStderr", stream):
                for line in text.splitlines():
                    self.log(urn, line, ephemeral=True)
        if result.returncode != 0:
            combined = result.stdout + result.stderr
            context.abort(grpc.StatusCode.UNKNOWN, f"Process exited with status {result.returncode}: "
                                                   f"running {_go_quote(script)}:\n{combined}")
        return {"stdout": _trim(result.stdout), "stderr": _trim(result.stderr)}


def ssh(connection: dict[str, Any], script: str, stdin: str) -> subprocess.CompletedProcess:
    """Run script on the connection's host with OpenSSH; retries a refused or timed-out dial as the real one."""
    for unsupported in ("password", "privateKeyPassword", "proxy"):
        if connection.get(unsupported):
            raise ProviderError(f"the command stand-in does not support connection.{unsupported}")
    host, port = connection["host"], int(connection.get("port") or 22)
    user = connection.get("user") or "root"
    attempts = int(connection.get("dialErrorLimit") or 10)
    timeout = int(connection.get("perDialTimeout") or 15)
    with tempfile.TemporaryDirectory(prefix="mailstack-standin-ssh-") as tmp:
        options = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
                   "-o", "LogLevel=ERROR", "-o", "GlobalKnownHostsFile=/dev/null", "-p", str(port)]
        if connection.get("privateKey"):
            key = Path(tmp) / "key"
            key.write_text(connection["privateKey"].rstrip("\n") + "\n")
            key.chmod(0o600)
            options += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        env = dict(os.environ)
        if connection.get("agentSocketPath"):
            env["SSH_AUTH_SOCK"] = connection["agentSocketPath"]
        if connection.get("hostKey"):
            known_hosts = Path(tmp) / "known_hosts"
            host_id = host if port == 22 else f"[{host}]:{port}"
            known_hosts.write_text(f"{host_id} {connection['hostKey'].strip()}\n")
            options += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        else:  # the real provider accepts any host key when none is given
            options += ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"]
        netns = lab_admin_netns()
        prefix = ["ip", "netns", "exec", netns] if netns else []
        argv = [*prefix, "ssh", *options, f"{user}@{host}", "--", script]
        for attempt in range(1, attempts + 1):
            result = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=3600)
            dial_failed = result.returncode == 255 and any(
                s in result.stderr for s in ("Connection refused", "timed out", "No route to host"))
            if not dial_failed:
                return result
            if attempt == attempts:
                raise ProviderError(f"Dial: after {attempts} failed attempts: {result.stderr.strip()}")
            time.sleep(min(attempt, 5))
    raise AssertionError("unreachable")


def _secret_outputs(inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    return keep_secrets(inputs, outputs, always=ALWAYS_SECRET)


def _trim(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def _go_quote(text: str) -> str:
    """Roughly Go's %q: a double-quoted string with escapes."""
    return json.dumps(text, ensure_ascii=False)


def _record_run(urn: str, result: subprocess.CompletedProcess, seconds: float, logged: bool) -> None:
    """One line per command run; its output only when the resource lets it be logged."""
    path = os.environ.get("MAILSTACK_STANDIN_RUNS")
    if not path:
        return
    entry = {"name": urn.split("::")[-1], "exit": result.returncode, "seconds": round(seconds, 2),
             "stdout": result.stdout if logged else "", "stderr": result.stderr if logged else ""}
    with open(path, "a") as out:
        out.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    sys.exit(serve(CommandProvider, sys.argv[1:]))
