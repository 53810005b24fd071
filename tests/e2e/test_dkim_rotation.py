"""DKIM rotation with overlap, on the lab's host (README, "Rotating a DKIM key").

example.com moves from selector `mail` to `rot1`, step by step, while its
users keep sending:

1. the new record is not visible yet (the lab's DNS holds it back, as a
   slow propagation would): the signing unit waits dkim_publish_timeout and
   fails clearly; `mail` keeps signing, nothing switched;
2. DNS catches up, and the next `up` resumes: it switches to `rot1` once the
   host's resolver shows the record. Messages sent all along are each signed
   once, with a key that DNS held when the message left;
3. mail signed with `mail` before the rotation still verifies while the old
   record is kept; mail after the switch verifies with `rot1`;
4. an `up` after the retention (dkim_retention 0s here) drops the old record
   and the old private key.

The module ends with example.com back on `mail` (a new key) and `rot1` gone,
as the other modules expect it.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import dkim
import pytest

from .deploy import DeploymentFailed
from .engine.deployer import deployer_choice
from .test_submission import OUTSIDE, dkim_tags, lab_dnsfunc, relayed, split_sink, submit

# It holds a record back in the mock deployer's DNS (Deployment.withheld); with the real engine,
# test_engine.py rotates a key (test_a_dkim_rotation_with_the_real_engine).
pytestmark = pytest.mark.skipif(deployer_choice() == "engine", reason="holds a record back: the mock deployer's")

COM = "example.com"
OLD, NEW = "mail", "rot1"
SENDER = "alice@example.com"
DKIM_DIR = f"/etc/mailstack/domains/{COM}/dkim"
SELECTOR_FILE = f"/etc/mailstack/domains/{COM}/dkim_selector"


def record_name(selector: str) -> str:
    return f"{selector}._domainkey.{COM}"


@dataclass
class Sent:
    token: str
    started: float
    ended: float
    ok: bool
    raw: bytes | None = None
    verified: bool | None = None  # dkimpy's verdict against the lab DNS, taken while both records were up


@dataclass
class Rotation:
    """What happened at each step, for the tests to judge."""

    before: Sent | None = None  # signed with OLD before the rotation
    failure: str = ""  # the failed `up`'s message (record held back)
    after_failure: Sent | None = None
    selector_after_failure: str = ""
    exports_after_failure: dict = field(default_factory=dict)
    new_key_after_failure: bool = False
    during: list[Sent] = field(default_factory=list)  # sent while the resumed `up` ran
    published_new: float = 0.0  # when the lab DNS got the new record
    exports_after_switch: dict = field(default_factory=dict)
    after_switch: Sent | None = None
    old_record_after_switch: bool = False
    selector_after_switch: str = ""
    old_record_after_retention: bool = True
    old_key_after_retention: bool = True
    after_retention: Sent | None = None
    exports_after_retention: dict = field(default_factory=dict)


def send(lab, world) -> Sent:
    """One message from alice@example.com to the Internet, as it arrived at the peer."""
    since, token = world.count(), uuid.uuid4().hex
    started = time.time()
    answer = submit(lab, SENDER, OUTSIDE, user=SENDER, token=token)
    sent = Sent(token, started, time.time(), answer["ok"])
    if sent.ok:
        sent.raw = relayed(world, since, [token], timeout=120).get(token)
    return sent


def selector_on_host(lab) -> str:
    lines = lab.ssh(f"cat {SELECTOR_FILE}").stdout.splitlines()
    return next(line.split()[0] for line in lines if line.strip() and not line.startswith("#"))


def in_dns(lab, selector: str) -> bool:
    return any("p=" in "".join(strings) for strings in lab.dns_txt(record_name(selector)))


def verifies(lab, raw: bytes) -> bool:
    _, message = split_sink(raw)
    return bool(dkim.verify(message, dnsfunc=lab_dnsfunc(lab, [])))


def selector_of_message(raw: bytes) -> str:
    return dkim_tags(split_sink(raw)[1])["s"]


@pytest.fixture(scope="module")
def rotation(lab, world, deployment):
    stack = deployment.domains[COM]
    done = Rotation()
    try:
        done.before = send(lab, world)

        # 1. The new record is accepted but not visible: the switch waits, then fails.
        stack.withheld = {record_name(NEW)}
        with pytest.raises(DeploymentFailed) as failed:
            deployment.up_domain(COM, dkim_selector=NEW, dkim_publish_timeout="10s")
        done.failure = str(failed.value)
        done.selector_after_failure = selector_on_host(lab)
        done.exports_after_failure = dict(stack.exports.outputs[COM])
        done.new_key_after_failure = lab.ssh(f"test -s {DKIM_DIR}/{NEW}.private", check=False).returncode == 0
        done.after_failure = send(lab, world)

        # 2. DNS catches up; the next `up` resumes, while alice keeps sending.
        stack.release()
        done.published_new = stack.published_at[record_name(NEW)]
        stop = threading.Event()

        def keep_sending():
            while not stop.is_set():
                token = uuid.uuid4().hex
                started = time.time()
                answer = submit(lab, SENDER, OUTSIDE, user=SENDER, token=token)
                done.during.append(Sent(token, started, time.time(), answer["ok"]))

        since = world.count()
        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        try:
            deployment.up_domain(COM, dkim_selector=NEW)
            time.sleep(3)  # a few messages after the switch too
        finally:
            stop.set()
            sender.join(300)
        arrived = relayed(world, since, [s.token for s in done.during if s.ok], timeout=180)
        for sent in done.during:
            sent.raw = arrived.get(sent.token)
        done.exports_after_switch = dict(stack.exports.outputs[COM])
        done.selector_after_switch = selector_on_host(lab)
        done.after_switch = send(lab, world)
        done.old_record_after_switch = in_dns(lab, OLD)
        # Verified now, while the old record is kept: the mail signed before, during and after the switch.
        for sent in [done.before, done.after_failure, *done.during, done.after_switch]:
            if sent.raw is not None:
                sent.verified = verifies(lab, sent.raw)

        # 3./4. Past the retention: the old record and key go.
        deployment.up_domain(COM, dkim_selector=NEW, dkim_retention="0s")
        done.exports_after_retention = dict(stack.exports.outputs[COM])
        done.old_record_after_retention = in_dns(lab, OLD)
        done.old_key_after_retention = lab.ssh(f"test -e {DKIM_DIR}/{OLD}.private", check=False).returncode == 0
        done.after_retention = send(lab, world)
        if done.after_retention.raw is not None:
            done.after_retention.verified = verifies(lab, done.after_retention.raw)
        yield done
    finally:
        stack.withheld = set()
        stack.release()
        # Back to the stack's own selector (a new key: the old one is gone), then rot1 dropped.
        deployment.up_domain(COM)
        deployment.up_domain(COM, dkim_retention="0s")


# --- 1. a record that is not visible: nothing switches ---------------------------------------------


def test_an_invisible_record_fails_the_signing_unit_clearly(rotation):
    assert rotation.failure.startswith("domain-dkim-signing: exit 1"), rotation.failure
    assert f"not switching {COM} to DKIM selector {NEW}" in rotation.failure, rotation.failure
    assert "Selector mail still signs; nothing changed" in rotation.failure, rotation.failure
    assert "run pulumi up again" in rotation.failure


def test_after_the_failure_the_old_selector_still_signs_and_the_outputs_are_the_old_ones(rotation):
    assert rotation.new_key_after_failure, "the new key is made before the wait"
    assert rotation.selector_after_failure == OLD
    assert rotation.exports_after_failure["dkim_signing"] == OLD
    assert rotation.exports_after_failure["dkim_keys"] == {OLD: {"retired_at": None}}
    sent = rotation.after_failure
    assert sent.ok and sent.raw is not None
    assert selector_of_message(sent.raw) == OLD and sent.verified


# --- 2. the next `up` resumes and switches, and no message is left unsigned -------------------------


def test_the_next_up_switches_to_the_new_selector(rotation):
    assert rotation.selector_after_switch == NEW
    exports = rotation.exports_after_switch
    assert exports["dkim_signing"] == NEW
    assert exports["dkim_keys"][NEW] == {"retired_at": None}
    assert isinstance(exports["dkim_keys"][OLD]["retired_at"], float)


def test_every_message_sent_during_the_rotation_is_signed_with_a_key_dns_held(rotation):
    sent = [s for s in rotation.during if s.ok]
    assert len(sent) >= 3, f"too few messages sent during the rotation: {rotation.during}"
    assert all(s.raw is not None for s in sent), [s.token for s in sent if s.raw is None]
    selectors = []
    for s in sent:
        selector = selector_of_message(s.raw)  # exactly one DKIM-Signature (dkim_tags asserts it)
        assert selector in (OLD, NEW), selector
        if selector == NEW:
            # Signed with the new key only once DNS held it: the message left after the record was published.
            assert s.ended >= rotation.published_new, (s.ended, rotation.published_new)
        assert s.verified, f"{s.token} (s={selector}) does not verify"
        selectors.append(selector)
    assert selectors[-1] == NEW, f"the last messages are still signed with {selectors[-1]}"


# --- 3. overlap: old mail verifies while the old record stays; new mail with the new one -----------


def test_mail_signed_before_the_rotation_still_verifies_while_the_old_record_is_kept(rotation):
    assert rotation.old_record_after_switch, "the old record went with the switch"
    before = rotation.before
    assert before.ok and before.raw is not None and selector_of_message(before.raw) == OLD
    assert before.verified, "mail signed before the rotation no longer verifies after the switch"


def test_mail_after_the_switch_verifies_with_the_new_selector(rotation):
    sent = rotation.after_switch
    assert sent.ok and selector_of_message(sent.raw) == NEW and sent.verified


# --- 4. after the retention: the old record and private key are gone --------------------------------


def test_after_the_retention_the_old_record_and_key_are_gone(rotation):
    assert not rotation.old_record_after_retention, "the old DKIM record is still published"
    assert not rotation.old_key_after_retention, "the old private key is still on the host"
    assert rotation.exports_after_retention["dkim_keys"] == {NEW: {"retired_at": None}}
    sent = rotation.after_retention
    assert sent.ok and selector_of_message(sent.raw) == NEW and sent.verified
