"""STAND-IN for `pulumi-language-python`, Pulumi's Python language host.

Test infrastructure: the real language host is a Go program whose module
cannot be fetched here (README, "The real engine in the lab"). This one runs
the program with the Python SDK's own language server, the one the
Automation API uses for inline programs (`pulumi.automation._server.
LanguageServer`), so the program runs exactly as the SDK runs it under the
real CLI: same `run_in_stack`, same config and secret handling, same
resource monitor.

The CLI starts a language host as `pulumi-language-python [flags]
ENGINE_ADDRESS` in the project folder and reads the port it serves on from
the first line of its stdout. What this one answers:

- Run: `__main__.py` of the program folder, with that folder as working
  directory and first on sys.path (as `python __main__.py` would);
- GetRequiredPlugins / GetRequiredPackages: the resource plugins the
  installed provider SDKs name in their `pulumi-plugin.json` (as the real
  host reports them), so the engine loads the versions the SDKs ask for;
- RunPlugin for a policy pack (`pulumi preview --policy-pack DIR`): starts
  `python -u -m pulumi.policy ENGINE DIR` with the pack's own virtualenv,
  behind a small Analyzer proxy that first receives the stack's config from
  the engine and hands it to the pack in PULUMI_CONFIG, as the real host does.

SIGINT or SIGTERM (the engine stopping its plugins) ends it quietly.
"""

from __future__ import annotations

import json
import os
import queue
import runpy
import subprocess
import sys
import threading
import time
from concurrent import futures
from importlib import metadata
from pathlib import Path

import grpc
from pulumi.automation._server import LanguageServer
from pulumi.runtime.proto import (
    analyzer_pb2,
    analyzer_pb2_grpc,
    language_pb2,
    language_pb2_grpc,
    plugin_pb2,
)

from .standin import record_timing, serve_until_stopped

MAX_MESSAGE = 400 * 1024 * 1024  # the engine's own limit for plugin messages


def required_plugins() -> list[tuple[str, str]]:
    """(name, version) of every resource plugin an installed SDK declares in pulumi-plugin.json."""
    found = {}
    for dist in metadata.distributions():
        for file in dist.files or ():
            if file.name != "pulumi-plugin.json":
                continue
            try:
                info = json.loads(Path(dist.locate_file(file)).read_text())
            except (OSError, ValueError):
                continue
            if info.get("resource") and info.get("name") and info.get("version"):
                found[info["name"]] = info["version"]
    return sorted(found.items())


class ProgramServer(LanguageServer):
    """The SDK's language server, told where the program is and how to reach the engine."""

    def __init__(self, engine_address: str):
        super().__init__(self._run_main)
        self.engine_address = engine_address
        self.program_dir = Path.cwd()

    def _run_main(self) -> None:
        main = self.program_dir / "__main__.py"
        if not main.exists():
            raise RuntimeError(f"no __main__.py in {self.program_dir} (the stand-in language host runs only that)")
        sys.path.insert(0, str(self.program_dir))
        runpy.run_path(str(main), run_name="__main__")

    def Run(self, request, context):
        program_dir = request.info.program_directory or request.pwd or os.getcwd()
        self.program_dir = Path(program_dir).resolve()
        os.chdir(request.pwd or program_dir)
        # The SDK's server (made for the Automation API) takes the engine's
        # address from the first program argument; the CLI gave it to us instead.
        forwarded = language_pb2.RunRequest()
        forwarded.CopyFrom(request)
        del forwarded.args[:]
        forwarded.args.append(self.engine_address)
        started = time.monotonic()
        try:
            return super().Run(forwarded, context)
        finally:
            record_timing(plugin="program", dry_run=request.dryRun, seconds=round(time.monotonic() - started, 3))

    def GetRequiredPlugins(self, request, context):
        return language_pb2.GetRequiredPluginsResponse(
            plugins=[plugin_pb2.PluginDependency(name=n, kind="resource", version=v) for n, v in required_plugins()]
        )

    def GetRequiredPackages(self, request, context):
        return language_pb2.GetRequiredPackagesResponse(
            packages=[plugin_pb2.PackageDependency(name=n, kind="resource", version=v) for n, v in required_plugins()]
        )

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version="0.0.0-mailstack-stand-in")

    def RunPlugin(self, request, context):
        if request.kind != "analyzer":
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          f"the stand-in language host runs only policy packs, not a {request.kind or 'plugin'!r}")
        yield from PolicyPackRun(request, self.engine_address).responses(context)


# --- policy packs ---------------------------------------------------------------------------------


class PolicyPackRun:
    """One policy pack, run as the real Python host runs it (sdk/python/cmd/pulumi-language-python,
    RunPlugin): the engine talks to a proxy first, which learns the stack's config from
    ConfigureStack, then starts the pack with it in its environment and forwards every call."""

    def __init__(self, request, engine_address: str):
        self.request = request
        self.pack_dir = Path(request.info.program_directory or request.pwd)
        options = dict(request.info.options) if request.info.HasField("options") else {}
        venv = options.get("virtualenv")
        self.python = str((self.pack_dir / venv / "bin" / "python") if venv else Path(sys.executable))
        self.engine_address = engine_address
        self.out: queue.Queue = queue.Queue()
        self.configured = threading.Event()
        self.stack_config = None  # the AnalyzerStackConfigureRequest, once the engine sent it
        self.client = None
        self.client_ready = threading.Event()
        self.client_error: str | None = None

    def responses(self, context):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=_grpc_options())
        analyzer_pb2_grpc.add_AnalyzerServicer_to_server(_AnalyzerProxy(self), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        threading.Thread(target=self._start_pack, daemon=True).start()
        yield language_pb2.RunPluginResponse(stdout=f"{port}\n".encode())
        try:
            while True:
                item = self.out.get()
                if item is None:
                    break
                yield item
        finally:
            server.stop(0)
            proc = getattr(self, "proc", None)
            if proc is not None and proc.poll() is None:
                proc.terminate()

    def _start_pack(self) -> None:
        self.configured.wait()
        env = dict(os.environ)
        cfg = self.stack_config
        if cfg is not None:
            env.update({"PULUMI_ORGANIZATION": cfg.organization, "PULUMI_PROJECT": cfg.project,
                        "PULUMI_STACK": cfg.stack, "PULUMI_DRY_RUN": "true" if cfg.dry_run else "false",
                        "PULUMI_CONFIG": json.dumps(dict(cfg.config))})
            env = {k: v for k, v in env.items() if v != ""}
        env.update(dict(e.split("=", 1) for e in self.request.env if "=" in e))
        env.pop("PYTHONPATH", None)  # the pack has its own environment, not the program's
        argv = [self.python, "-u", "-m", "pulumi.policy", *self.request.args, str(self.pack_dir)]
        try:
            self.proc = subprocess.Popen(argv, cwd=self.pack_dir, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except OSError as err:
            self._fail(f"cannot start the policy pack with {self.python}: {err}")
            return
        threading.Thread(target=self._pump, args=(self.proc.stderr, "stderr"), daemon=True).start()
        first = self.proc.stdout.readline()
        try:
            pack_port = int(first.strip())
        except ValueError:
            self._fail(f"the policy pack did not print its port (printed {first[:200]!r})")
            self.out.put(language_pb2.RunPluginResponse(exitcode=self.proc.wait()))
            self.out.put(None)
            return
        channel = grpc.insecure_channel(f"127.0.0.1:{pack_port}", options=_grpc_options())
        self.client = analyzer_pb2_grpc.AnalyzerStub(channel)
        if cfg is not None:
            try:
                self.client.ConfigureStack(cfg)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                    self._fail(f"policy pack configuration failed: {err.details()}")
        self.client_ready.set()
        self._pump(self.proc.stdout, "stdout")
        self.out.put(language_pb2.RunPluginResponse(exitcode=self.proc.wait()))
        self.out.put(None)

    def _pump(self, stream, field: str) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            self.out.put(language_pb2.RunPluginResponse(**{field: chunk}))

    def _fail(self, message: str) -> None:
        self.client_error = message
        self.out.put(language_pb2.RunPluginResponse(stderr=(message + "\n").encode()))
        self.client_ready.set()

    def analyzer(self):
        self.configured.set()  # a call before ConfigureStack: no stack config (e.g. `pulumi policy publish`)
        self.client_ready.wait()
        if self.client is None:
            raise RuntimeError(self.client_error or "policy pack not started")
        return self.client


class _AnalyzerProxy(analyzer_pb2_grpc.AnalyzerServicer):
    def __init__(self, run: PolicyPackRun):
        self.run = run

    def Handshake(self, request, context):
        return analyzer_pb2.AnalyzerHandshakeResponse()

    def ConfigureStack(self, request, context):
        if not self.run.configured.is_set():
            self.run.stack_config = request
            self.run.configured.set()
        return analyzer_pb2.AnalyzerStackConfigureResponse()


def _forward(method: str):
    def call(self, request, context):
        try:
            return getattr(self.run.analyzer(), method)(request)
        except grpc.RpcError as err:
            context.abort(err.code(), err.details())
        except RuntimeError as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(err))

    return call


for _method in ("Analyze", "AnalyzeStack", "Remediate", "GetAnalyzerInfo", "GetPluginInfo", "Configure", "Cancel"):
    setattr(_AnalyzerProxy, _method, _forward(_method))


# --- main -------------------------------------------------------------------------------------------


def _grpc_options():
    return [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]


def main(argv: list[str]) -> int:
    positional = [a for a in argv if not a.startswith("-")]
    engine_address = positional[-1] if positional else ""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=_grpc_options())
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(ProgramServer(engine_address), server)
    return serve_until_stopped(server, "language")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
