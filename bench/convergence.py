"""Host convergence in the e2e lab: what a deployment costs a live mail server.

A lab of its own (tests/e2e/lab.py; network namespaces, a debootstrapped
Debian host `mx` with no mail packages, a DNS server) and the program
deployed into it for real by `tests/e2e/deploy.py`: every unit runs over SSH,
every record is published. Measured, in order:

1. a fresh deployment from the bare host, split into the packages unit
   (apt-get update, download through the lab's relay to Debian's archive,
   install) and everything else;
2. a second deployment with nothing changed: commands run, SSH sessions,
   files rewritten (mtimes), daemons restarted (pids), wall time;
3. every unit's script run again by hand on the converged host, as a
   deployment runs them all when every script changes (a mailstack upgrade):
   what they rewrite and restart, and how long they take;
4. a one-setting change (message_size_limit): units run, reloads, files
   rewritten, daemons restarted, wall time; then the setting put back.

The helpers that look at mx are the e2e tests' own (tests/e2e/test_deployment.py).
Needs root. The lab is named after MAILSTACK_LAB (default here: "bench", so
that it never takes down a test session's lab, "msl") and is taken down at the end.
"""

from __future__ import annotations

import os
import re
import time

os.environ.setdefault("MAILSTACK_LAB", "bench")  # before tests.e2e.lab reads it

from bench.report import Row, seconds

CHANGE = {"message_size_limit": 31_457_280}
TARGET_REST_SECONDS = 120.0
# What a unit's script says on stderr when it acts (the e2e tests look for the same words).
ACTED = re.compile(r"^(?:updated|reloaded|restarted|started|generating|created user|installing)\b.*$", re.MULTILINE)
APPLIED = re.compile(r"^(reloaded|restarted|started) (\S+)", re.MULTILINE)


def why_no_lab() -> str | None:
    from tests.e2e.conftest import _why_no_lab

    return _why_no_lab()


def _applied(runs) -> list[str]:
    """'reloaded postfix', 'restarted dovecot', ...: what the units did to the daemons."""
    return [f"{verb} {daemon}" for run in runs for verb, daemon in APPLIED.findall(run.stderr)]


def _rewritten(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(p for p in after.keys() | before.keys() if before.get(p) != after.get(p))


def _restarted(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return sorted(d for d in before if before[d] != after.get(d))


def measure(log) -> dict:
    from tests.e2e.deploy import Deployment
    from tests.e2e.lab import LAB_NAME, Lab
    from tests.e2e.stack import SECRET_KEYS, e2e_config
    from tests.e2e.test_deployment import COMMAND, deploy, mtimes, pids, unit_names

    result: dict = {"lab": LAB_NAME}
    lab = Lab()
    log(f"lab {LAB_NAME!r}: up (namespaces {LAB_NAME}-*)")
    started = time.monotonic()
    lab.up(log=lambda message: log(f"lab: {message.strip()}"))
    result["lab_up_seconds"] = time.monotonic() - started
    try:
        deployment = Deployment(lab)

        log("fresh deployment to the bare host")
        started = time.monotonic()
        deployment.up(e2e_config(lab), SECRET_KEYS)
        wall = time.monotonic() - started
        units = {run.name: run.seconds for run in deployment.runs}
        packages = units.get("mail-host-packages", 0.0)
        result["fresh"] = {"wall_seconds": wall, "packages_seconds": packages, "rest_seconds": wall - packages,
                           "ssh_sessions": deployment.ssh_sessions, "units": units,
                           "applied": _applied(deployment.runs)}

        log("second deployment, nothing changed")
        files, daemons = mtimes(lab), pids(lab)
        wall = deploy(deployment, lab)
        result["no_op"] = {"wall_seconds": wall, "commands": unit_names(deployment),
                           "ssh_sessions": deployment.ssh_sessions,
                           "rewritten": _rewritten(files, mtimes(lab)), "restarted": _restarted(daemons, pids(lab))}

        log("every unit's script again, by hand, on the converged host")
        files, daemons = mtimes(lab), pids(lab)
        reruns: dict[str, float] = {}
        acted: list[str] = []
        started = time.monotonic()
        for key, entry in sorted(deployment.state.items()):
            if not key.startswith(COMMAND):
                continue
            name, inputs = key.split("::", 1)[1], entry["inputs"]
            t = time.monotonic()
            run = lab.ssh(inputs["create"], stdin=inputs.get("stdin"), check=False)
            reruns[name] = time.monotonic() - t
            if run.returncode != 0:
                raise RuntimeError(f"{name} failed when run again: {run.stderr.strip()}")
            acted += [f"{name}: {line}" for line in ACTED.findall(run.stderr)]
        result["rerun_all"] = {"wall_seconds": time.monotonic() - started, "units": reruns, "acted": acted,
                               "rewritten": _rewritten(files, mtimes(lab)), "restarted": _restarted(daemons, pids(lab))}

        log(f"one setting changed: {CHANGE}")
        files, daemons = mtimes(lab), pids(lab)
        wall = deploy(deployment, lab, **CHANGE)
        result["one_setting"] = {"wall_seconds": wall, "commands": unit_names(deployment),
                                 "ssh_sessions": deployment.ssh_sessions, "applied": _applied(deployment.runs),
                                 "units": {run.name: run.seconds for run in deployment.runs},
                                 "rewritten": _rewritten(files, mtimes(lab)),
                                 "restarted": _restarted(daemons, pids(lab))}

        log("the setting put back")
        wall = deploy(deployment, lab)
        result["put_back"] = {"wall_seconds": wall, "commands": unit_names(deployment),
                              "ssh_sessions": deployment.ssh_sessions, "applied": _applied(deployment.runs)}
    finally:
        log(f"lab {LAB_NAME!r}: down")
        lab.down(log=lambda message: log(f"lab: {message.strip()}"))
    return result


def rows(r: dict) -> list[Row]:
    section = f"Host convergence in the e2e lab (lab {r['lab']!r}; up in {seconds(r['lab_up_seconds'])})"
    fresh, no_op, rerun, one, back = r["fresh"], r["no_op"], r["rerun_all"], r["one_setting"], r["put_back"]
    slowest = sorted(((s, n) for n, s in fresh["units"].items() if n != "mail-host-packages"), reverse=True)[:3]
    out = [
        Row(section, "fresh deployment: packages unit", seconds(fresh["packages_seconds"]), "",
            None, "apt-get update, download (through the lab's relay to Debian's archive) and install"),
        Row(section, "fresh deployment: everything else", seconds(fresh["rest_seconds"]),
            f"< {TARGET_REST_SECONDS:.0f} s", fresh["rest_seconds"] < TARGET_REST_SECONDS,
            f"wall {seconds(fresh['wall_seconds'])}; slowest units: "
            + ", ".join(f"{n.removeprefix('mail-host-')} {seconds(s)}" for s, n in slowest)),
        Row(section, "fresh deployment: SSH sessions", str(fresh["ssh_sessions"]), "", None,
            "one per unit; " + ", ".join(fresh["applied"])),
        Row(section, "no-op deployment: commands run", str(len(no_op["commands"])), "0", not no_op["commands"],
            ", ".join(no_op["commands"])),
        Row(section, "no-op deployment: files rewritten", str(len(no_op["rewritten"])), "0",
            not no_op["rewritten"], ", ".join(no_op["rewritten"])),
        Row(section, "no-op deployment: daemons restarted", str(len(no_op["restarted"])), "0",
            not no_op["restarted"], ", ".join(no_op["restarted"])),
        Row(section, "no-op deployment: SSH sessions", str(no_op["ssh_sessions"]), "0", no_op["ssh_sessions"] == 0),
        Row(section, "no-op deployment: wall time", seconds(no_op["wall_seconds"]), "", None,
            "evaluation (imports already done in this process) and state comparison; nothing reaches the host"),
        Row(section, "every unit run again by hand: files rewritten", str(len(rerun["rewritten"])), "0",
            not rerun["rewritten"], ", ".join(rerun["rewritten"])),
        Row(section, "every unit run again by hand: daemons restarted", str(len(rerun["restarted"])), "0",
            not rerun["restarted"], ", ".join(rerun["restarted"] + rerun["acted"])),
        Row(section, "every unit run again by hand: wall time", seconds(rerun["wall_seconds"]), "", None,
            f"{len(rerun['units'])} SSH sessions, one after another (what a mailstack upgrade that changes every "
            "script costs)"),
        Row(section, "one setting (message_size_limit): units run", str(len(one["commands"])), "1",
            one["commands"] == ["mail-host-postfix"], ", ".join(one["commands"])),
        Row(section, "one setting: reloads", str(len(one["applied"])), "1 (reloaded postfix)",
            one["applied"] == ["reloaded postfix"] and not one["restarted"],
            ", ".join(one["applied"] + [f"{d} restarted" for d in one["restarted"]])),
        Row(section, "one setting: files rewritten", str(len(one["rewritten"])), "", None, ", ".join(one["rewritten"])),
        Row(section, "one setting: SSH sessions", str(one["ssh_sessions"]), "", None),
        Row(section, "one setting: wall time", seconds(one["wall_seconds"]), "", None,
            f"put back: {seconds(back['wall_seconds'])}, {', '.join(back['commands'])}, {', '.join(back['applied'])}"),
    ]
    return out
