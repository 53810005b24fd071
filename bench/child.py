"""One measurement in a fresh interpreter; prints one JSON object on stdout.

    python -m bench.child evaluate SIZE   # time and memory of one evaluation (lean mocks)
    python -m bench.child growth SIZE...  # evaluation time of each size, in one process
    python -m bench.child digest SIZE [--change]   # each resource's inputs, hashed (test harness)
    python -m bench.child domains COUNT MAILBOXES  # COUNT domain stacks' evaluations, in one process

SIZE is "host" (the host stack), "example" (the example domain stack) or a
number of mailboxes (a domain stack). `bench/program.py` runs these.

Clock: the child makes its stack first (the benchmark's own work), then
starts the clock, imports the Pulumi SDK (as the language host does) and
evaluates the program, which imports the provider SDKs and mailstack's
modules itself. The interpreter's own start-up (and the child's few
standard-library imports) is before the clock: "after interpreter start" in
the targets. The parent runs `evaluate` under `python -X importtime` to
split the program's time into imports and the rest.
"""

from __future__ import annotations

import gc
import hashlib
import json
import resource
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _size(text: str) -> int | str | None:
    return {"example": None, "host": "host"}.get(text) if text in ("example", "host") else int(text)


def _stack_name(size: int | str | None) -> str:
    from bench.stacks import EXAMPLE, HOST

    return HOST if size == "host" else EXAMPLE


def evaluate(size: int | str | None) -> dict:
    from bench.stacks import SECRET_KEYS, config_of

    config = config_of(size)
    rss_start = _rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    # What the language host has imported before it runs the program: the SDK
    # (and here the harness's runner and the lean mocks, a few modules more).
    import pulumi  # noqa: F401

    from bench.lean import evaluate_lean

    ready = time.perf_counter()
    # The program itself: __main__.py imports the provider SDKs and mailstack's
    # modules (its own way, see there), loads the config and registers everything.
    evaluation = evaluate_lean(config, SECRET_KEYS, _stack_name(size))
    done, cpu_done = time.perf_counter(), time.process_time()
    return {
        "sdk_seconds": ready - started,
        "program_seconds": done - ready,
        "total_seconds": done - started,
        "cpu_seconds": cpu_done - cpu_started,
        "rss_start_mb": rss_start,
        "peak_rss_mb": _peak_rss_mb(),
        "exports": sorted(evaluation.stack_outputs),
    }


def growth(sizes: list[int | None]) -> dict:
    """Each stack evaluated in one process, after a first evaluation has imported everything.

    How fast a process runs varies by a third from one process to the next on a
    shared machine, more than within one process, so the cost per mailbox of
    different sizes compares here. The fastest of five evaluations per size.
    """
    from bench.lean import evaluate_lean
    from bench.stacks import SECRET_KEYS, stack_config

    evaluate_lean(stack_config(None), SECRET_KEYS)
    seconds = {}
    for size in sizes:
        config = stack_config(size)
        runs = []
        for _ in range(5):
            gc.collect()  # each run starts from the same heap: a full collection lands in it or not alike
            started = time.perf_counter()
            evaluate_lean(config, SECRET_KEYS)
            runs.append(time.perf_counter() - started)
        seconds["example" if size is None else str(size)] = min(runs)
    return {"seconds": seconds}


def domains(count: int, mailboxes: int) -> dict:
    """`count` domain stacks of `mailboxes` mailboxes each (d001.example, ...), one evaluation each.

    In one process, after one evaluation has done the imports (each stack's own
    `pulumi preview` pays those once more: the fresh-process figure of the
    same size says how much). The memory after the last stack against that
    after the first says whether evaluations leave anything behind.
    """
    from bench.lean import evaluate_lean
    from bench.stacks import SECRET_KEYS, stack_config

    configs = [stack_config(mailboxes, domain=f"d{i:03d}.example") for i in range(1, count + 1)]
    evaluate_lean(stack_config(mailboxes), SECRET_KEYS)
    gc.collect()
    rss_first = _rss_mb()
    times = []
    started = time.perf_counter()
    for i, config in enumerate(configs, start=1):
        one = time.perf_counter()
        evaluate_lean(config, SECRET_KEYS, f"d{i:03d}.example")
        times.append(time.perf_counter() - one)
    total = time.perf_counter() - started
    gc.collect()
    return {"seconds": total, "each": times, "rss_first_mb": rss_first, "rss_last_mb": _rss_mb(),
            "peak_rss_mb": _peak_rss_mb()}


def digest(size: int | str | None, change: bool) -> dict:
    """Each resource's inputs (and which are secret), hashed; and the rest of its registration, hashed."""
    from google.protobuf import json_format

    from bench.lean import mocks as make_mocks
    from bench.stacks import CHANGED_HOST_SETTING, CHANGED_SETTING, SECRET_KEYS, config_of
    from tests.program.harness import RecordingMonitor
    from tests.program.harness import evaluate as evaluate_recorded

    class Monitor(RecordingMonitor):
        """Also keeps what else the engine is told: version, aliases, parent, dependencies..."""

        def __init__(self, mocks):
            super().__init__(mocks)
            self.requests: dict[str, dict] = {}

        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            fields = json_format.MessageToDict(request)
            for key in ("object", "sourcePosition", "stackTrace"):  # inputs are compared apart; call sites vary
                fields.pop(key, None)
            fields["dependencies"] = sorted(fields.get("dependencies", []))
            self.requests[response.urn] = fields
            return response

    config = config_of(size)
    if change:
        key, value = CHANGED_HOST_SETTING if size == "host" else CHANGED_SETTING
        config[key] = value
    stack = _stack_name(size)
    # What is compared is the first evaluation in the process, as under `pulumi up`.
    mocks = make_mocks()
    monitor = Monitor(mocks)
    evaluation = evaluate_recorded(config, SECRET_KEYS, mocks, stack=stack, monitor=monitor)
    # The second, with the imports done, is timed: the test harness's own cost.
    started = time.perf_counter()
    evaluate_recorded(config, SECRET_KEYS, make_mocks(), stack=stack)
    seconds = time.perf_counter() - started
    return {
        "harness_seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "digests": {r.urn: _hash({"inputs": r.inputs, "secret": sorted(r.secret_paths)})
                    for r in evaluation.registrations},
        "requests": {urn: _hash(fields) for urn, fields in monitor.requests.items()},
    }


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "evaluate":
        result = evaluate(_size(argv[1]))
    elif command == "growth":
        result = growth([_size(a) for a in argv[1:]])
    elif command == "domains":
        result = domains(int(argv[1]), int(argv[2]))
    elif command == "digest":
        result = digest(_size(argv[1]), "--change" in argv[2:])
    else:
        raise SystemExit(f"unknown command {command!r}")
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
