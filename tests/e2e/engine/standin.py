"""What the two stand-in resource providers share: the engine's provider protocol.

A provider plugin is a gRPC `ResourceProvider` server: the CLI starts it as
`pulumi-resource-NAME ENGINE_ADDRESS`, reads its port from the first line
of its stdout, and calls Configure, Check, Diff, Create, Update, Delete,
Read and Invoke. The stubs are the ones the Python SDK ships
(`pulumi.runtime.proto`); the values are protobuf Structs in which a
secret is `{SECRET_SIG: SECRET_VALUE, "value": v}` and an unknown (during
preview) is the UNKNOWN string.

Inputs are checked against the installed provider SDK's `*Args` classes,
the generated copy of the real provider's schema, so an input the real
provider does not know fails `Check` here as it would in production.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import typing
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi import _types as pulumi_types
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, plugin_pb2, provider_pb2, provider_pb2_grpc

SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = SECRET_SIG
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

MAX_MESSAGE = 400 * 1024 * 1024


class ProviderError(Exception):
    """A failure the engine shows the user as the resource's error."""


# --- values -----------------------------------------------------------------------------------------


def to_dict(struct: struct_pb2.Struct | None) -> dict[str, Any]:
    return json_format.MessageToDict(struct) if struct is not None else {}


def to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_VALUE


def secret(value: Any) -> dict[str, Any]:
    return value if is_secret(value) else {SIG_KEY: SECRET_VALUE, "value": value}


def plain(value: Any) -> Any:
    """The value with every secret wrapper removed (to use it, never to return it)."""
    if is_secret(value):
        return plain(value.get("value"))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _anywhere(value: Any, found) -> bool:
    """Whether `found` holds for the value or anything inside it."""
    if found(value):
        return True
    if isinstance(value, dict):
        return any(_anywhere(v, found) for v in value.values())
    if isinstance(value, list):
        return any(_anywhere(v, found) for v in value)
    return False


def has_secret(value: Any) -> bool:
    return _anywhere(value, is_secret)


def has_unknown(value: Any) -> bool:
    return _anywhere(value, lambda v: v == UNKNOWN)


def keep_secrets(inputs: dict[str, Any], outputs: dict[str, Any], always: tuple[str, ...] = ()) -> dict[str, Any]:
    """Outputs with every property that was (or held) a secret input, or is always secret, kept secret."""
    return {k: secret(plain(v)) if (k in always or has_secret(inputs.get(k))) else v for k, v in outputs.items()}


# --- the real schema, from the installed SDK ---------------------------------------------------------


def _input_class(annotation: Any) -> type | None:
    """The input type class inside an annotation like Optional[Input['ConnectionArgs']], if any."""
    if isinstance(annotation, type) and pulumi_types.is_input_type(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        found = _input_class(arg)
        if found is not None:
            return found
    return None


def schema_of(args_class: type) -> dict[str, tuple[bool, type | None]]:
    """pulumi name -> (required, nested input class) for an SDK `*Args` class."""
    names = pulumi_types.input_type_py_to_pulumi_names(args_class)
    types = pulumi_types.input_type_types(args_class)
    params = inspect.signature(args_class.__init__).parameters
    out = {}
    for py_name, pulumi_name in names.items():
        param = params.get(py_name)
        required = param is not None and param.default is inspect.Parameter.empty
        out[pulumi_name] = (required, _input_class(types.get(pulumi_name)))
    return out


def function_schema(function) -> dict[str, tuple[bool, type | None]]:
    """The same for an invoke's arguments, read from the SDK's function signature (camelCase names)."""
    hints = typing.get_type_hints(function)
    out = {}
    for py_name, param in inspect.signature(function).parameters.items():
        if py_name == "opts":
            continue
        head, *rest = py_name.split("_")
        name = head + "".join(part.title() for part in rest)
        out[name] = (param.default is inspect.Parameter.empty, _input_class(hints.get(py_name)))
    return out


def check_against(values: dict[str, Any], schema: dict[str, tuple[bool, type | None]], where: str = "",
                  ) -> list[provider_pb2.CheckFailure]:
    """CheckFailures for properties the schema lacks and required ones missing (nested objects too)."""
    failures = []
    for name, value in values.items():
        path = f"{where}{name}"
        if name not in schema:
            failures.append(provider_pb2.CheckFailure(
                property=path, reason=f"unknown property {path!r}: the provider's schema has no such input "
                                      f"(it has {', '.join(sorted(schema))})"))
            continue
        nested = schema[name][1]
        value = plain(value)
        if nested is not None and isinstance(value, dict):
            failures += check_against(value, schema_of(nested), path + ".")
    for name, (required, _) in schema.items():
        if required and values.get(name) is None:
            failures.append(provider_pb2.CheckFailure(property=f"{where}{name}",
                                                      reason=f"Missing required property '{where}{name}'"))
    return failures


# --- the server --------------------------------------------------------------------------------------


class StandInProvider(provider_pb2_grpc.ResourceProviderServicer):
    """The protocol parts every provider needs; subclasses implement the resources."""

    name = ""
    version = ""
    resource_type = ""  # the main resource type the stand-in implements
    args_class: type | None = None  # the installed SDK's *Args: what the real schema takes
    other_types: dict[str, type] = {}  # further resource types it implements -> their *Args
    replace_on: tuple[str, ...] = ()  # inputs whose change replaces the resource
    computed: tuple[str, ...] = ()  # outputs that are not inputs

    def __init__(self, engine_address: str):
        self.engine_address = engine_address
        self._engine = None
        self.config: dict[str, Any] = {}

    # engine log (what `pulumi up` shows under the resource)
    def log(self, urn: str, message: str, severity=engine_pb2.INFO, ephemeral: bool = False) -> None:
        if not self.engine_address:
            print(message, file=sys.stderr)
            return
        if self._engine is None:
            channel = grpc.insecure_channel(self.engine_address)
            self._engine = engine_pb2_grpc.EngineStub(channel)
        try:
            self._engine.Log(engine_pb2.LogRequest(severity=severity, message=message, urn=urn, ephemeral=ephemeral))
        except grpc.RpcError:
            pass

    # Check and Diff, as the real providers decide them
    def Check(self, request, context):
        news = to_dict(request.news)
        kind = type_of(request)
        if kind != self.resource_type and kind not in self.other_types:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the {self.name} stand-in implements only {self.resource_type}, {', '.join(self.other_types)}")
        args_class = self.args_class if kind == self.resource_type else self.other_types[kind]
        failures = check_against(news, schema_of(args_class))
        if kind == self.resource_type:
            failures += self.more_check_failures(plain(news))
        return provider_pb2.CheckResponse(inputs=request.news, failures=failures)

    def more_check_failures(self, values: dict[str, Any]) -> list:
        """What the real provider refuses beyond the schema's names and types."""
        return []

    def Diff(self, request, context):
        if request.HasField("old_inputs"):
            olds = to_dict(request.old_inputs)
        else:
            olds = {k: v for k, v in to_dict(request.olds).items() if k not in self.computed}
        return diff_response(olds, to_dict(request.news), replace_on=self.replace_on)

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=self.version)

    def GetSchema(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the {self.name} stand-in has no schema to give")

    def CheckConfig(self, request, context):
        return provider_pb2.CheckResponse(inputs=request.news)

    def DiffConfig(self, request, context):
        changed = plain(to_dict(request.olds)) != plain(to_dict(request.news))
        return provider_pb2.DiffResponse(changes=provider_pb2.DiffResponse.DIFF_SOME if changed
                                         else provider_pb2.DiffResponse.DIFF_NONE)

    def Configure(self, request, context):
        self.config = plain(to_dict(request.args)) if request.HasField("args") else dict(request.variables)
        return provider_pb2.ConfigureResponse(acceptSecrets=True, supportsPreview=True, acceptResources=True)

    def Cancel(self, request, context):
        return empty_pb2.Empty()

    def Attach(self, request, context):
        self.engine_address = request.address
        return empty_pb2.Empty()


def type_of(request) -> str:
    """The resource type a request is about (older engines leave `type` empty: the URN has it)."""
    if getattr(request, "type", ""):
        return request.type
    return request.urn.split("::")[2].split("$")[-1] if request.urn.count("::") >= 3 else ""


def diff_response(olds: dict[str, Any], news: dict[str, Any], replace_on: tuple[str, ...] = ()):
    """A DiffResponse: every changed input an update, or a replacement when it is in replace_on."""
    diffs, replaces, detailed = [], [], {}
    old_plain, new_plain = plain(olds), plain(news)
    for key in sorted(set(old_plain) | set(new_plain)):
        before, after = old_plain.get(key), new_plain.get(key)
        if before == after:
            continue
        diffs.append(key)
        replace = key in replace_on
        if replace:
            replaces.append(key)
        kind = ("ADD" if before is None else "DELETE" if after is None else "UPDATE") + ("_REPLACE" if replace else "")
        detailed[key] = provider_pb2.PropertyDiff(kind=getattr(provider_pb2.PropertyDiff, kind), inputDiff=True)
    changes = provider_pb2.DiffResponse.DIFF_SOME if diffs else provider_pb2.DiffResponse.DIFF_NONE
    return provider_pb2.DiffResponse(changes=changes, diffs=diffs, replaces=replaces, detailedDiff=detailed,
                                     hasDetailedDiff=True, deleteBeforeReplace=False)


def process_age() -> float:
    """Seconds since this process started (interpreter start and imports included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as stat:
        started = int(stat.read().rpartition(")")[2].split()[19]) / ticks
    with open("/proc/uptime") as uptime:
        return float(uptime.read().split()[0]) - started


def record_timing(**entry: Any) -> None:
    """One JSON line in $MAILSTACK_STANDIN_TIMINGS, when set (bench/engine.py reads them)."""
    path = os.environ.get("MAILSTACK_STANDIN_TIMINGS")
    if path:
        import json

        with open(path, "a") as out:
            out.write(json.dumps(entry) + "\n")


def serve(provider_class: type[StandInProvider], argv: list[str]) -> int:
    positional = [a for a in argv if not a.startswith("-")]
    provider = provider_class(positional[-1] if positional else "")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=os.cpu_count() * 4 + 8),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE)])
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(provider, server)
    return serve_until_stopped(server, provider_class.name)


def serve_until_stopped(server: grpc.Server, plugin: str) -> int:
    """What the engine expects of a plugin: its port on stdout, then serving until SIGINT/SIGTERM."""
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    record_timing(plugin=plugin, startup_seconds=round(process_age(), 3))
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop(0)
    return 0
