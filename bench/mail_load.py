"""Mail throughput in the lab: messages per second with rspamd on and off, side by side in one run.

    MAILSTACK_LAB=bn .venv/bin/python bench/mail_load.py            # needs root; a few minutes
    MAILSTACK_LAB=bn .venv/bin/python bench/mail_load.py --total 1000 --json out.json

A lab of its own (tests/e2e/lab.py, named after MAILSTACK_LAB, default "bn",
so that it never takes down a test session's lab), the lab's stacks
deployed by the mock deployer (tests/e2e/deploy.py), then the load of
tests/e2e/mailload.py (the e2e test's: Postfix's smtp-source in the peer,
20 parallel sessions into the peer's Postfix, which relays to mx by MX;
half the messages to carol@example.com, half to dave@example.org), measured
from smtp-source's start to the last message counted in the Maildirs on mx:

1. a short warm-up (not counted): the daemons' first processes start;
2. rspamd on: the host stack as deployed (spam_filter: true, its default);
3. rspamd off: the host stack deployed again with spam_filter: false;

each run's every message counted once by Message-ID (a run with a message
missing or twice is reported, not measured). Not a timed test: the figures
are printed beside their targets. The lab is taken down at the end
(MAILSTACK_LAB_KEEP=1 leaves it up). In a checkout without rspamd
(components/services/rspamd.py) only the run without it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: bench/mail_load.py
    sys.path.insert(0, str(REPO))
os.environ.setdefault("MAILSTACK_LAB", "bn")  # before tests.e2e.lab reads it

from bench.report import Row, table  # noqa: E402

# Targets on the lab's 2-core machine (shared with the lab's other daemons, and with whatever else
# runs there): a small site's peak is a few messages a second; the lab should take ten times that.
TARGET_ON = 20.0  # messages per second, rspamd on
TARGET_OFF = 40.0  # messages per second, rspamd off
WARM_UP = 100
RUN_TIMEOUT = 900


def spam_filter_in_program() -> bool:
    import importlib.util

    return importlib.util.find_spec("components.services.rspamd") is not None


def measure_run(lab, load, label: str, total: int, sessions: int, log, judged: bool | None = None) -> dict:
    """One run of the load: its figures, after checking every message arrived exactly once.

    judged: True when rspamd must have judged every message (X-Spamd-Result on each), False when
    none (the spam filter is off), None: not checked (the warm-ups)."""
    run = load.send(total=total, sessions=sessions)
    try:
        sent = run.wait_sent(timeout=RUN_TIMEOUT)
        delivered = run.wait_delivered(total, timeout=RUN_TIMEOUT)
        elapsed = (run.last_at or time.monotonic()) - run.started
        queued = run.queued_ids()
        counted = run.delivered()
        whole = (all(status == 0 for status, _ in sent) and len(set(queued)) == total
                 and set(counted) == set(queued) and all(n == 1 for n in counted.values()))
        unjudged = len(run.not_judged())
        as_labelled = judged is None or unjudged == (0 if judged else len(counted))
        figures = {
            "label": label, "total": total, "sessions": sessions, "delivered": delivered,
            "seconds": round(elapsed, 2), "per_second": round(total / elapsed, 1) if elapsed else None,
            "every_message_once": whole, "judged_by_rspamd": len(counted) - unjudged,
            "as_labelled": as_labelled, "attempts": dict(run.statuses()),
            "smtp_source": [status for status, _ in sent],
        }
        log(f"{label}: {delivered}/{total} in {elapsed:.1f} s ({figures['per_second']} messages/s); "
            f"every message once: {whole}; judged by rspamd: {figures['judged_by_rspamd']}; "
            f"the peer's attempts: {figures['attempts']}")
        return figures
    finally:
        run.forget()


def rows(runs: dict[str, dict]) -> list[Row]:
    out = []
    for key, target, name in (("on", TARGET_ON, "rspamd on"), ("off", TARGET_OFF, "rspamd off")):
        figures = runs.get(key)
        if figures is None:
            out.append(Row("Mail load (2-core lab)", f"{name}", "not measured", f">= {target:.0f} msg/s", None,
                           "no rspamd in this checkout" if key == "on" else ""))
            continue
        whole = figures["every_message_once"] and figures["as_labelled"]
        out.append(Row(
            "Mail load (2-core lab)",
            f"{name}: {figures['total']} messages, {figures['sessions']} sessions",
            f"{figures['per_second']} msg/s ({figures['seconds']:.1f} s)" if whole else
            "LOST OR DUPLICATED MAIL" if not figures["every_message_once"] else
            f"NOT AS LABELLED: {figures['judged_by_rspamd']} of {figures['total']} judged by rspamd",
            f">= {target:.0f} msg/s",
            whole and figures["per_second"] >= target,
            f"judged by rspamd: {figures['judged_by_rspamd']}; "
            f"deferred then sent: {figures['attempts'].get('deferred', 0)}"))
    if "on" in runs and "off" in runs and runs["on"]["per_second"] and runs["off"]["per_second"]:
        ratio = runs["on"]["per_second"] / runs["off"]["per_second"]
        out.append(Row("Mail load (2-core lab)", "rspamd on / off", f"{ratio:.2f}", "", None,
                       "the share of throughput the spam filter keeps"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/mail_load.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total", type=int, default=2000, help="messages per run (default 2000)")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions (default 20)")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    from tests.e2e.conftest import _why_no_lab

    reason = _why_no_lab()
    if reason:
        log(f"mail load skipped: {reason}")
        return 2
    from tests.e2e.deploy import LabStacks
    from tests.e2e.lab import LAB_NAME, Lab
    from tests.e2e.mailload import MailLoad
    from tests.e2e.world import make_world

    lab = Lab()
    runs: dict[str, dict] = {}
    sink = None
    try:
        log(f"lab {LAB_NAME!r}: up")
        lab.up(log=lambda message: log(f"lab: {message.strip()}"))
        _, sink = make_world(lab)
        stacks = LabStacks.mock(lab)
        log("deploying the lab's stacks (host-e2e, example.org, example.com)")
        stacks.up()
        with_rspamd = spam_filter_in_program()
        load = MailLoad.start(lab)
        try:
            measure_run(lab, load, "warm-up", WARM_UP, args.sessions, log)
            if with_rspamd:
                runs["on"] = measure_run(lab, load, "rspamd on", args.total, args.sessions, log, judged=True)
                log("deploying the host stack with spam_filter: false")
                stacks.up_host(spam_filter=False)
                measure_run(lab, load, "warm-up (rspamd off)", WARM_UP, args.sessions, log)
            runs["off"] = measure_run(lab, load, "rspamd off", args.total, args.sessions, log, judged=False)
        finally:
            load.stop()
    finally:
        if sink is not None:
            sink.kill()
            sink.wait()
        if os.environ.get("MAILSTACK_LAB_KEEP") == "1":
            lab.write_state()
            log(f"lab {LAB_NAME!r} left up (MAILSTACK_LAB_KEEP=1)")
        else:
            log(f"lab {LAB_NAME!r}: down")
            lab.down(log=lambda message: log(f"lab: {message.strip()}"))
    print(table(rows(runs)))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    return 0 if all(r["every_message_once"] and r["as_labelled"] for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
