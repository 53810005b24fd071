"""A load that loses nothing (issue 17, "Load, and nothing lost"), on the lab's mx.

From the peer, Postfix's `smtp-source` sends 2,000 messages over 20 parallel
SMTP sessions, half to carol@example.com, half to dave@example.org (no
Sieve script, no quota). It hands them to the peer's own Postfix, which
relays them to mx by the domains' MX records and keeps in its queue what mx
refuses for now (mailload.py). Once a quarter of them is in the mailboxes,
Postfix on mx is reloaded and rspamd restarted (its milter tempfails while
it is away: the mail waits at the peer and comes after). What every outcome
shares, and what is asserted:

- the peer's Postfix took all 2,000, each with its own Message-ID;
- each of them is in its mailbox's Maildir exactly once: none missing, no
  duplicate;
- none was bounced or expired, the peer's queue is empty at the end;
- the reload and the restart happened while mail was still coming;
- rspamd judged every one (its X-Spamd-Result header is on each).

How many messages waited (deferred, then delivered) depends on timing and is
only printed, with the messages per second (run with -s to see them).
The module expunges the run's mail at the end: the two mailboxes are as before.
"""

from __future__ import annotations

import importlib.util
import shlex
import time
from dataclasses import dataclass

import pytest

from .conftest import wait_for
from .mailload import MAILBOXES, LoadRun, MailLoad

TOTAL = 2000
SESSIONS = 20
DISRUPT_AFTER = TOTAL // 4
# Generous on a busy 2-core machine (a run takes about a minute or two there).
SEND_TIMEOUT = 420
DELIVERY_TIMEOUT = 480
RSPAMD_PID_FILE = "/run/rspamd/rspamd.pid"


def spam_filter_in_program() -> bool:
    """Whether this checkout's program has the rspamd service (issue 17's spam filter)."""
    return importlib.util.find_spec("components.services.rspamd") is not None


@dataclass
class Disruption:
    what: str
    delivered_before: int  # the run's messages in the Maildirs when it was done
    returncode: int
    output: str
    pid_before: int | None = None
    pid_after: int | None = None


@dataclass
class Outcome:
    run: LoadRun
    sent: list[tuple[int, str]]  # each smtp-source's exit status and output
    delivered: int
    disruptions: dict[str, Disruption]
    queue_left: list[dict]


def rspamd_pid(lab) -> int | None:
    """rspamd's main process on mx, when it runs."""
    answer = lab.ssh(f"pid=$(cat {RSPAMD_PID_FILE}) && kill -0 \"$pid\" && echo \"$pid\"", check=False)
    return int(answer.stdout) if answer.returncode == 0 and answer.stdout.strip().isdigit() else None


def rspamd_answers(lab) -> bool:
    """rspamd's milter (what Postfix talks to) takes connections on loopback."""
    from components.services import rspamd

    probe = f"exec 3<>/dev/tcp/{rspamd.PROXY_HOST}/{rspamd.PROXY_PORT}"
    return lab.ssh(f"bash -c {shlex.quote(probe)}", check=False, timeout=60).returncode == 0


def disrupt(lab, run: LoadRun, what: str, command: str) -> Disruption:
    """Run `command` on mx (stdio away from the SSH session: a daemon it starts must not hold it)."""
    delivered = run.delivered_count()
    result = lab.ssh(f"{{ {command} ; }} </dev/null >/tmp/mailstack-load-disrupt.log 2>&1; rc=$?; "
                     "cat /tmp/mailstack-load-disrupt.log; exit $rc", check=False, timeout=300)
    return Disruption(what, delivered, result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def spam_filter(lab, deployment) -> bool:
    """True once the program has rspamd: then it must run on mx before the load starts."""
    if not spam_filter_in_program():
        return False
    assert wait_for(lambda: rspamd_answers(lab), timeout=60), "rspamd is in the program but does not answer on mx"
    return True


@pytest.fixture(scope="module")
def outcome(lab, deployment, world, spam_filter):
    load = MailLoad.start(lab)
    run = load.send(total=TOTAL, sessions=SESSIONS, mailboxes=MAILBOXES)
    try:
        disruptions = {}
        at = run.wait_delivered(DISRUPT_AFTER, timeout=DELIVERY_TIMEOUT)
        assert at >= DISRUPT_AFTER, f"only {at} of {TOTAL} messages arrived: {run.statuses()}"
        disruptions["postfix"] = disrupt(lab, run, "postfix reload", "postfix reload")
        if spam_filter:
            before = rspamd_pid(lab)
            restart = disrupt(lab, run, "rspamd restart", "service rspamd restart")
            restart.pid_before = before
            wait_for(lambda: rspamd_answers(lab), timeout=60)
            restart.pid_after = rspamd_pid(lab)
            disruptions["rspamd"] = restart
        sent = run.wait_sent(timeout=SEND_TIMEOUT)
        delivered = run.wait_delivered(TOTAL, timeout=DELIVERY_TIMEOUT)
        # The peer's queue drains once its last delivery is logged (a deferred one is retried within 10 s).
        wait_for(lambda: not load.mta.queue(), timeout=120)
        queue_left = load.mta.queue()
        rate = run.messages_per_second()
        print(f"\nload: {TOTAL} messages over {SESSIONS} sessions, {delivered} delivered in "
              f"{(run.last_at or time.monotonic()) - run.started:.1f} s: {rate:.1f} messages/s; "
              f"the peer's delivery attempts: {dict(run.statuses())}; "
              + "; ".join(f"{d.what} after {d.delivered_before} delivered (exit {d.returncode})"
                          for d in disruptions.values()))
        yield Outcome(run, sent, delivered, disruptions, queue_left)
    finally:
        load.stop()
        run.forget()


def test_the_peer_took_every_message_each_with_its_own_message_id(outcome):
    for status, output in outcome.sent:
        assert status == 0, output[-2000:]
    queued = outcome.run.queued_ids()
    assert len(queued) == TOTAL, (len(queued), outcome.sent)
    assert len(set(queued)) == TOTAL, "smtp-source gave two messages the same Message-ID"


def test_every_message_is_in_its_maildir_exactly_once(outcome):
    queued = set(outcome.run.queued_ids())
    delivered = outcome.run.delivered()
    missing = queued - set(delivered)
    twice = {mid: n for mid, n in delivered.items() if n > 1}
    strangers = set(delivered) - queued
    assert not missing, f"{len(missing)} of {TOTAL} never arrived, e.g. {sorted(missing)[:5]}; " \
                        f"the peer's attempts: {dict(outcome.run.statuses())}"
    assert not twice, f"{len(twice)} arrived more than once, e.g. {sorted(twice.items())[:5]}"
    assert not strangers, sorted(strangers)[:5]
    assert sum(delivered.values()) == TOTAL


def test_none_is_deferred_for_good(outcome):
    statuses = outcome.run.statuses()
    assert statuses["bounced"] == 0 and statuses["expired"] == 0, dict(statuses)
    assert statuses["sent"] == TOTAL, dict(statuses)
    assert outcome.queue_left == [], outcome.queue_left[:3]


def test_postfix_was_reloaded_while_mail_was_coming(outcome):
    reload = outcome.disruptions["postfix"]
    assert reload.returncode == 0, reload.output
    assert DISRUPT_AFTER <= reload.delivered_before < TOTAL, reload


def test_rspamd_was_restarted_while_mail_was_coming(lab, outcome, spam_filter):
    if not spam_filter:
        pytest.skip("this checkout has no spam filter (components/services/rspamd.py): nothing to restart")
    restart = outcome.disruptions["rspamd"]
    assert restart.returncode == 0, restart.output
    assert restart.delivered_before < TOTAL, restart
    # A new rspamd, answering, once the load was through.
    assert restart.pid_before and restart.pid_after and restart.pid_before != restart.pid_after, restart
    assert rspamd_answers(lab)


def test_rspamd_judged_every_message(outcome, spam_filter):
    if not spam_filter:
        pytest.skip("this checkout has no spam filter (components/services/rspamd.py)")
    # Each one, before and after the restart, carries rspamd's verdict: none slipped past the milter.
    outcome.run.delivered()
    assert outcome.run.not_judged() == []
