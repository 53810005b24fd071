"""The real `pulumi` CLI against the e2e lab: what a preview and an up cost, and the program's share.

A lab of its own (tests/e2e/lab.py) and two of the lab's stacks, the host
stack host-e2e and the domain stack example.com (tests/e2e/stack.py), in one
file backend, run by the CLI that scripts/build-pulumi builds, through the
stand-in language host and providers (tests/e2e/engine/). Measured, in order:

1. `pulumi version`: the CLI's own start;
2. `pulumi preview` of the host stack on an empty state: wall time, each
   plugin's start (the language host and both providers, interpreter and
   imports included; they start side by side), and the program's run under
   the language host (the SDK's `run_in_stack`, which also waits for the
   engine to register each resource: in an `up`, for the commands to run);
3. the host stack's first `pulumi up --yes --skip-preview` (installs the mail packages);
4. the domain stack's `pulumi preview` (its StackReference read of the host
   stack's outputs included) and first `pulumi up --yes --skip-preview`;
5. a no-op `pulumi up --yes` of each (the preview and the update: the program runs twice);
6. the domain stack's `pulumi preview` with 1,000 mailboxes (password hashes as secrets).

Each beside the program-only figure of the same shape under the SDK's mocks
(bench/program.py, when it ran), so that the share of a preview that the
program owns is known. Needs root and a built CLI. The lab is named after
MAILSTACK_LAB (default "bench") and taken down at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MAILSTACK_LAB", "bench")  # before tests.e2e.lab reads it

from bench.report import Row, seconds

MAILBOXES = 1000


def why_not() -> str | None:
    from tests.e2e.conftest import _why_no_lab
    from tests.e2e.engine.deployer import find_pulumi

    if find_pulumi() is None:
        return "no Pulumi CLI built (scripts/setup builds one with scripts/build-pulumi)"
    return _why_no_lab()


def _timed(engine, args: list[str], timings: Path) -> dict:
    """Run `pulumi ARGS`; wall time and what the stand-ins recorded meanwhile."""
    timings.write_text("")
    started = time.monotonic()
    engine.run(args)
    wall = time.monotonic() - started
    entries = [json.loads(line) for line in timings.read_text().splitlines() if line.strip()]
    starts = {e["plugin"]: e["startup_seconds"] for e in entries if "startup_seconds" in e}
    program = [e["seconds"] for e in entries if e.get("plugin") == "program"]
    return {"wall_seconds": wall, "plugin_start_seconds": starts, "program_seconds": program}


def _users(count: int) -> list[dict]:
    from bench.stacks import PASSWORD_HASH, generated_users

    return [{**user, "password_hash": PASSWORD_HASH} for user in generated_users(count)]


DOMAIN = "example.com"  # generated_users' domain


def measure(log) -> dict:
    from tests.e2e.engine.deployer import Engine
    from tests.e2e.lab import LAB_NAME, Lab
    from tests.e2e.stack import HOST_STACK, domain_config, host_config

    result: dict = {"lab": LAB_NAME}
    lab = Lab()
    log(f"engine bench: lab {LAB_NAME!r} up")
    lab.up(log=lambda message: log(f"lab: {message.strip()}"))
    try:
        with tempfile.TemporaryDirectory(prefix="mailstack-bench-engine-") as tmp:
            timings = Path(tmp) / "timings.jsonl"
            os.environ["MAILSTACK_STANDIN_TIMINGS"] = str(timings)
            host = Engine(Path(tmp), stack=HOST_STACK).prepare()
            domain = host.for_stack(DOMAIN)  # same backend and passphrase: it reads the host's secrets
            host.write_config(host_config(lab))
            # Aliases to nothing outside the stack: the bench deploys this one domain.
            domain.write_config(domain_config(lab, DOMAIN, aliases=[]))
            started = time.monotonic()
            subprocess.run([str(host.pulumi), "version"], capture_output=True, check=True)
            result["cli_start_seconds"] = time.monotonic() - started
            result["pulumi_version"] = subprocess.run([str(host.pulumi), "version"], capture_output=True,
                                                      text=True).stdout.strip()
            log("engine bench: host stack preview (empty state)")
            result["preview"] = _timed(host, ["preview"], timings)
            log("engine bench: host stack first up (installs the mail packages)")
            result["first_up"] = _timed(host, ["up", "--yes", "--skip-preview"], timings)
            log("engine bench: domain stack preview and first up")
            result["domain_preview"] = _timed(domain, ["preview"], timings)
            result["domain_first_up"] = _timed(domain, ["up", "--yes", "--skip-preview"], timings)
            log("engine bench: no-op ups")
            result["noop_up"] = _timed(host, ["up", "--yes"], timings)
            result["domain_noop_up"] = _timed(domain, ["up", "--yes"], timings)
            log(f"engine bench: domain stack preview with {MAILBOXES:,} mailboxes")
            users = _users(MAILBOXES)
            config = domain_config(lab, DOMAIN, aliases=[])
            config["mailstack:users"] = [{k: v for k, v in u.items() if k != "password_hash"} for u in users]
            domain.write_config(config)
            # One `config set-all` for the 1,000 hashes (the bench's placeholders, not real secrets).
            domain.run(["config", "set-all", "--path",
                        *(arg for i, u in enumerate(users) if u.get("password_hash")
                          for arg in ("--secret", f"users[{i}].password_hash={u['password_hash']}"))])
            result["preview_1000"] = _timed(domain, ["preview"], timings)
            os.environ.pop("MAILSTACK_STANDIN_TIMINGS", None)
    finally:
        log("engine bench: lab down")
        lab.down(log=lambda message: None)
    return result


def rows(raw: dict, evaluation: dict | None = None) -> list[Row]:
    section = "The real `pulumi` CLI against the lab (stand-in language host and providers)"
    evaluation = evaluation or {}

    def program_only(key: str) -> str:
        r = evaluation.get(key)
        return f"; program alone under the mocks: {seconds(r['total_seconds'])}" if r else ""

    def breakdown(r: dict) -> str:
        starts = r["plugin_start_seconds"]
        program = r["program_seconds"]
        parts = [f"plugins start {', '.join(f'{k} {seconds(v)}' for k, v in sorted(starts.items()))}"]
        if program:
            parts.append(f"program run (waits on the engine included) {' + '.join(seconds(p) for p in program)} "
                         f"({sum(program) / r['wall_seconds']:.0%} of the wall time)")
        return "; ".join(parts)

    out = [Row(section, "CLI start (`pulumi version`)", seconds(raw["cli_start_seconds"]), "", None,
               raw.get("pulumi_version", ""))]
    for key, label, mock_key in (("preview", "`pulumi preview`, the lab's host stack", None),
                                 ("first_up", "host stack: first `pulumi up` (bare host: packages installed)", None),
                                 ("domain_preview", "`pulumi preview`, a domain stack (StackReference read)",
                                  "example"),
                                 ("domain_first_up", "domain stack: first `pulumi up`", None),
                                 ("noop_up", "host stack: no-op `pulumi up --yes` (preview + update)", None),
                                 ("domain_noop_up", "domain stack: no-op `pulumi up --yes`", "example"),
                                 ("preview_1000", f"`pulumi preview`, a domain stack of {MAILBOXES:,} mailboxes",
                                  str(MAILBOXES))):
        r = raw.get(key)
        if r:
            note = breakdown(r) + (program_only(mock_key) if mock_key else "")
            out.append(Row(section, label, seconds(r["wall_seconds"]), "", None, note))
    return out
