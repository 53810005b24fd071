"""DANE (RFC 7672) for the mail host, and for the mail it sends (issue 13).

The lab signs example.net (the zone of mail.example.net; tests/e2e/dnssec.py),
the host stack has `dnssec: true`, and the lab's validating resolver vouches
for what Knot serves. Seen from outside:

- `_25._tcp.mail.example.net` holds two TLSA `3 1 1` records, validated: the
  key mx serves on port 25, and the next key, kept on the host;
- the peer's own Postfix (`smtp_tls_security_level = dane`) sends to the mx
  and logs a verified TLS connection;
- a key roll (`tls_key_roll` raised by one) serves the key whose record was
  already published, publishes a new next key, drops the old one's record,
  restarts no daemon, and the peer still verifies; a roll whose next record is
  not visible through the host's resolver is refused, nothing changed;
- the mx's own Postfix verifies the peer's TLSA: mail goes out while the
  record matches, waits in the queue (not bounced, not sent in the clear)
  while it does not, and goes once it matches again.
"""

from __future__ import annotations

import json
import uuid

import pytest

from . import dnssec
from .conftest import run_client, wait_for
from .deploy import DeploymentFailed
from .peermta import PeerMta
from .stack import HOSTNAME, password
from .test_deployment import PIDS, pids
from .test_tls import probe
from .world import PEER_NAME, PEER_TLSA_NAME, peer_tlsa, publish_peer_tlsa

TLSA_NAME = f"_25._tcp.{HOSTNAME}"
NEXT_KEY_SPKI = (
    "openssl pkey -in \"$(postconf -h smtpd_tls_key_file).next\" -pubout -outform DER | sha256sum | cut -d' ' -f1"
)


def served_spki(lab) -> str:
    answer = probe(lab, "smtp-25")
    assert answer["ok"], answer
    return answer["spki_sha256"]


def published(lab) -> tuple[bool, set[str]]:
    """(validated, the TLSA records' digests) at _25._tcp.mail.example.net, through the validating resolver."""
    answer = dnssec.validated_query(lab, TLSA_NAME, "TLSA", from_host="peer")
    assert answer["rcode"] == "NOERROR", answer
    digests = set()
    for record in answer["records"]:
        usage, selector, matching, digest = record["text"].split(maxsplit=3)
        assert (usage, selector, matching) == ("3", "1", "1"), record
        digests.add(digest.replace(" ", "").lower())
    return answer["ad"], digests


def seen_by_mx(lab, name: str) -> set[str]:
    """The TLSA records at `name` as mx's own resolver answers now (its cache included), "3 1 1 <hex>" each."""
    out = lab.ssh(f"dig +short @127.0.0.1 {name} TLSA").stdout
    return {" ".join(line.split()[:3] + ["".join(line.split()[3:]).lower()]) for line in out.splitlines() if line}


def next_key_spki(lab) -> str:
    return lab.ssh(NEXT_KEY_SPKI).stdout.strip()


def masters(lab) -> dict[str, int]:
    return pids(lab, {"postfix": PIDS["postfix"], "dovecot": PIDS["dovecot"]})


@pytest.fixture(scope="module", autouse=True)
def stacks_as_configured(deployment):
    """The key rolls here change the host stack's config: the lab's stacks are deployed as configured after."""
    yield
    deployment.restore()


@pytest.fixture(scope="module")
def peer_mta(lab, world, deployment):
    mta = PeerMta.start(lab)
    yield mta
    mta.stop()


def message(subject: str, to: str) -> bytes:
    return (f"From: someone@{PEER_NAME}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4()}@{PEER_NAME}>\r\n\r\n{subject}\r\n").encode()


def peer_sends_to_mx(peer_mta) -> str:
    """One message from the peer's Postfix to alice@example.com (MX mail.example.net); what it logged."""
    # Postfix keeps TLSA answers for their TTL in each smtp process: new processes see the records as they are.
    peer_mta.reload()
    since = peer_mta.log_size()
    peer_mta.send(f"someone@{PEER_NAME}", "alice@example.com", message(f"dane {uuid.uuid4()}", "alice@example.com"))
    assert peer_mta.wait_for("alice@example.com", since=since, status="sent"), peer_mta.log(since)
    return peer_mta.log(since)


def test_tlsa_records_name_the_served_key_and_the_next_one_and_validate(lab, deployment):
    validated, digests = published(lab)
    assert validated, "the TLSA records did not validate (no AD from the lab's validating resolver)"
    assert digests == {served_spki(lab), next_key_spki(lab)}
    assert len(digests) == 2


def test_the_peer_verifies_the_mx_by_its_tlsa_record(peer_mta):
    log = peer_sends_to_mx(peer_mta)
    assert f"Verified TLS connection established to {HOSTNAME}" in log, log
    assert "status=sent" in log, log


def test_a_key_roll_serves_the_published_next_key_and_the_peer_still_verifies(lab, deployment, peer_mta):
    before, upcoming = served_spki(lab), next_key_spki(lab)
    pids = masters(lab)
    deployment.up_host(tls_key_roll=1)
    after = served_spki(lab)
    validated, digests = published(lab)
    assert after == upcoming != before
    assert validated and digests == {after, next_key_spki(lab)} and before not in digests
    assert masters(lab) == pids, "a key roll reloads the daemons, never restarts them"
    # The same up again changes nothing: one roll per step of the number.
    deployment.up_host(tls_key_roll=1)
    assert served_spki(lab) == after
    log = peer_sends_to_mx(peer_mta)
    assert f"Verified TLS connection established to {HOSTNAME}" in log, log


def test_a_roll_whose_next_record_is_not_visible_is_refused(lab, deployment):
    current, upcoming = served_spki(lab), next_key_spki(lab)
    lab.dns_delete("example.net", TLSA_NAME, "TLSA", f"3 1 1 {upcoming}")
    try:
        assert wait_for(lambda: f"3 1 1 {upcoming}" not in seen_by_mx(lab, TLSA_NAME), timeout=30), "mx's resolver did not see the change"
        with pytest.raises(DeploymentFailed, match="TLSA"):
            deployment.up_host(tls_key_roll=2)
        assert (served_spki(lab), next_key_spki(lab)) == (current, upcoming), "the refused roll changed a key"
    finally:
        lab.dns_update("example.net", TLSA_NAME, "TLSA", 300, f"3 1 1 {upcoming}")
    assert wait_for(lambda: f"3 1 1 {upcoming}" in seen_by_mx(lab, TLSA_NAME), timeout=30), "mx's resolver did not see the change"
    deployment.up_host(tls_key_roll=2)
    assert served_spki(lab) == upcoming


def submit_to_peer(lab) -> dict:
    token = uuid.uuid4().hex
    answer = run_client(lab, "client", "send", host=lab.mx.ipv4, port=587, helo="laptop.example.org",
                        mail_from="alice@example.com", rcpt_to=["someone@example.net"],
                        message=f"From: alice@example.com\r\nTo: someone@example.net\r\nSubject: {token}\r\n\r\n{token}\r\n",
                        starttls=True, login=["alice@example.com", password("alice@example.com")])
    assert answer["ok"], answer
    return {"token": token}


def mx_postfix_forgets_tlsa_answers(lab) -> None:
    """Postfix's smtp processes keep TLSA answers for their TTL: after a reload, new processes ask again."""
    old = set(lab.ssh("pgrep -f 'smtp -t unix' || true").stdout.split())
    lab.ssh("postfix reload")
    wait_for(lambda: not old & set(lab.ssh("pgrep -f 'smtp -t unix' || true").stdout.split()), timeout=30)


def mx_queue(lab) -> list[dict]:
    lines = lab.ssh("postqueue -j").stdout.splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_the_mx_sends_only_to_the_peer_whose_key_matches_its_tlsa_record(lab, world, deployment):
    since = world.count()
    sent = submit_to_peer(lab)
    arrived = world.received(since=since, timeout=60)
    assert any(sent["token"] in m for m in arrived), "mail to the peer, whose TLSA matches, did not arrive"

    wrong = publish_peer_tlsa(lab, "3 1 1 " + "0f" * 32)  # a record that matches no key of the peer's
    assert wait_for(lambda: seen_by_mx(lab, PEER_TLSA_NAME) == {wrong}, timeout=30), "mx's resolver did not see the change"
    mx_postfix_forgets_tlsa_answers(lab)
    try:
        since = world.count()
        held = submit_to_peer(lab)

        def deferred():
            return [r for q in mx_queue(lab) for r in q.get("recipients", [])
                    if r.get("address") == "someone@example.net" and r.get("delay_reason")]
        reasons = wait_for(deferred, timeout=60)
        assert reasons, "the message was neither held nor sent"
        assert "TLSA" in reasons[0]["delay_reason"] or "certificate" in reasons[0]["delay_reason"], reasons
        assert not any(held["token"] in m for m in world.received(since=since, timeout=1)), \
            "mail went to a peer whose key matches no TLSA record"
    finally:
        right = publish_peer_tlsa(lab, peer_tlsa(lab))
    assert wait_for(lambda: seen_by_mx(lab, PEER_TLSA_NAME) == {right}, timeout=30), "mx's resolver did not see the change"
    mx_postfix_forgets_tlsa_answers(lab)
    lab.ssh("postqueue -f")
    assert any(held["token"] in m for m in world.received(since=since, timeout=90)), \
        "the held message did not go once the record matched again"
