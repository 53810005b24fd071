"""The lab's DANE peer (peermta.py, world.py, smtpsink.py): what issue 13's DANE proofs stand on (RFC 7672).

example.net is signed (dnssec.py) and the peer's SMTP sink offers STARTTLS
with a certificate made for this lab run, whose `3 1 1` TLSA record is
published at _25._tcp.peer.example.net. The peer's own Postfix (send only,
`smtp_tls_security_level = dane`, resolving through the validating resolver)
then:
  - delivers to example.net (MX peer.example.net) over a *verified* TLS
    connection: the TLSA record matched;
  - does not deliver while a wrong TLSA record is published (deferred, 4.7.5;
    the log says "no matching DANE TLSA records"), and delivers once the right
    one is back;
  - delivers to an unsigned zone's MX, which has no TLSA, over plain
    opportunistic TLS (not verified).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from . import dnssec, netns
from .conftest import wait_for
from .peermta import PeerMta, process_alive
from .world import PEER_NAME, PEER_TLSA_NAME, peer_tlsa, publish_peer_tlsa

SENDER = f"someone@{PEER_NAME}"
SIGNED_RCPT = "someone@example.net"  # example.net: signed; MX peer.example.net (the sink), with TLSA
# An unsigned zone's MX, in the lab's unsigned example.org: no TLSA, no DNSSEC.
PLAIN_DOMAIN = "plain-peer.example.org"
PLAIN_MX = f"mx.{PLAIN_DOMAIN}"
WRONG_TLSA = "3 1 1 " + "0f" * 32


@pytest.fixture(scope="module")
def signed(lab):
    """example.net signed and the validating resolver answering (test_lab_dnssec may have done both)."""
    pid = lab.pids.get("resolver")
    if pid and Path(f"/proc/{pid}").exists() and dnssec.validated_query(lab, "example.net", "SOA")["ad"]:
        return
    dnssec.start_resolver(lab, dnssec.sign_zones(lab, ["example.net"]))


@pytest.fixture(scope="module")
def mta(lab, world, signed):
    peer_mta = PeerMta.start(lab)
    yield peer_mta
    peer_mta.stop()


def message(subject: str) -> bytes:
    return (f"From: {SENDER}\r\nTo: someone\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4()}@{PEER_NAME}>\r\n\r\n{subject}\r\n").encode()


def validated_tlsa(lab) -> list[str]:
    """The peer's TLSA RRset as the validating resolver gives it to peer, only if validated (AD)."""
    answer = dnssec.validated_query(lab, PEER_TLSA_NAME, "TLSA", from_host="peer")
    return [r["text"] for r in answer["records"]] if answer["ad"] else []


def resolver_serves_tlsa(lab, mta, content: str) -> None:
    """Wait until the resolver's answer (cached at most 5 s) is `content`, validated; then have the
    MTA's smtp processes forget the TLSA RRset they hold (mta.reload())."""
    assert wait_for(lambda: validated_tlsa(lab) == [content], timeout=30), (content, validated_tlsa(lab))
    mta.reload()


def sink_has(world, subject: str) -> list[str]:
    return [m for m in world.received(0, timeout=0, count=0) if subject in m]


# --- the peer's TLS and its TLSA record ------------------------------------------------------------


def test_the_sink_offers_starttls_with_the_certificate_the_tlsa_record_names(lab, world, signed):
    """From stranger: STARTTLS on peer.example.net:25, then the SHA-256 of the certificate's
    SubjectPublicKeyInfo is the data of the validated `3 1 1` record."""
    probe = r"""
import hashlib, smtplib, ssl, sys, json
from cryptography import x509
from cryptography.hazmat.primitives import serialization
context = ssl.create_default_context(); context.check_hostname = False; context.verify_mode = ssl.CERT_NONE
with smtplib.SMTP(sys.argv[1], 25, timeout=10) as smtp:
    smtp.ehlo("stranger.example.org")
    offered = smtp.has_extn("starttls")
    smtp.starttls(context=context)
    der = smtp.sock.getpeercert(binary_form=True)
    version = smtp.sock.version()
cert = x509.load_der_x509_certificate(der)
spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
print(json.dumps({"offered": offered, "version": version, "spki_sha256": hashlib.sha256(spki).hexdigest(),
                  "subject": cert.subject.rfc4514_string()}))
"""
    seen = json.loads(lab.run_python("stranger", ["-c", probe, lab.hosts["peer"].ipv4]).stdout)
    assert seen["offered"] and seen["version"] in ("TLSv1.2", "TLSv1.3"), seen
    assert seen["subject"] == f"CN={PEER_NAME}"
    assert validated_tlsa(lab) == [peer_tlsa(lab)] == [f"3 1 1 {seen['spki_sha256']}"]


# --- the peer MTA ------------------------------------------------------------------------------------


def test_the_peer_mta_lives_in_the_peer_namespace_with_its_own_resolver(lab, mta):
    processes = mta.processes()
    assert len(processes) >= 3, processes  # master, qmgr, pickup at least
    assert set(processes) <= set(netns.pids(lab.hosts["peer"].netns))
    assert lab.pids["peer_mta"] == mta.master_pid()
    # The master's /etc/resolv.conf is the private one; the rest of peer keeps the lab DNS server.
    mine = Path(f"/proc/{mta.master_pid()}/root/etc/resolv.conf").read_text()
    assert mine.split("\n")[:2] == [f"nameserver {dnssec.RESOLVER_V4}", "options trust-ad"]
    others = lab.run_in("peer", ["cat", "/etc/resolv.conf"]).stdout
    assert f"nameserver {lab.dns.ipv4}" in others and "trust-ad" not in others
    assert "daemon started -- version 3." in mta.log()


def test_dane_verified_delivery_to_a_signed_domain(lab, world, mta):
    subject = f"dane verified {uuid.uuid4()}"
    mark = mta.send(SENDER, SIGNED_RCPT, message(subject))
    lines = mta.wait_for(SIGNED_RCPT, timeout=60)
    assert lines and "status=sent" in lines[-1], mta.log(mark)
    assert re.search(r"Verified TLS connection established to peer\.example\.net\[[0-9a-f.:]+\]:25",
                     mta.log(mark)), mta.log(mark)
    kept = wait_for(lambda: sink_has(world, subject), timeout=30)
    assert kept and re.search(r"^X-Sink-TLS: TLSv1\.[23] ", kept[0], re.M), kept


def test_a_wrong_tlsa_record_stops_delivery_until_the_right_one_is_back(lab, world, mta):
    subject = f"dane wrong tlsa {uuid.uuid4()}"
    publish_peer_tlsa(lab, WRONG_TLSA)
    try:
        resolver_serves_tlsa(lab, mta, WRONG_TLSA)
        mark = mta.send(SENDER, SIGNED_RCPT, message(subject))
        lines = mta.wait_for(SIGNED_RCPT, timeout=60)
        log = mta.log(mark)
        assert lines and all("status=deferred" in line for line in lines), log
        assert "dsn=4.7.5" in lines[-1] and "(Server certificate not verified)" in lines[-1], log
        assert re.search(r"server certificate verification failed for peer\.example\.net\[[0-9a-f.:]+\]:25: "
                         r"num=65:no matching DANE TLSA records", log), log
        assert "Verified TLS connection" not in log, log
        assert not sink_has(world, subject)
    finally:
        publish_peer_tlsa(lab)
    resolver_serves_tlsa(lab, mta, peer_tlsa(lab))
    since = mta.log_size()
    mta.flush()
    lines = mta.wait_for(SIGNED_RCPT, timeout=60, since=since, status="sent")
    assert lines and "status=sent" in lines[-1], mta.log(since)
    assert "Verified TLS connection established to peer.example.net" in mta.log(since)
    assert wait_for(lambda: sink_has(world, subject), timeout=30)


def test_an_unsigned_domain_without_tlsa_gets_opportunistic_tls(lab, world, mta):
    peer = lab.hosts["peer"]
    lab.dns_update("example.org", PLAIN_DOMAIN, "MX", 300, f"10 {PLAIN_MX}", replace=True)
    lab.dns_update("example.org", PLAIN_MX, "A", 300, peer.ipv4, replace=True)
    lab.dns_update("example.org", PLAIN_MX, "AAAA", 300, peer.ipv6, replace=True)
    answer = dnssec.validated_query(lab, PLAIN_DOMAIN, "MX", from_host="peer")
    assert answer["rcode"] == "NOERROR" and not answer["ad"], answer  # insecure: no DANE possible
    rcpt = f"someone@{PLAIN_DOMAIN}"
    subject = f"opportunistic {uuid.uuid4()}"
    mark = mta.send(SENDER, rcpt, message(subject))
    lines = mta.wait_for(rcpt, timeout=60)
    log = mta.log(mark)
    assert lines and "status=sent" in lines[-1], log
    assert re.search(rf"(Untrusted|Anonymous) TLS connection established to {re.escape(PLAIN_MX)}\[", log), log
    assert "Verified TLS connection" not in log
    assert wait_for(lambda: sink_has(world, subject), timeout=30)


def test_stop_ends_the_master_and_all_its_processes(lab, mta):
    processes = mta.processes()
    assert processes
    mta.stop()
    assert not mta.running()
    assert not [p for p in processes if process_alive(p)]
    assert "peer_mta" not in lab.pids
