"""Mail out: submission on 587 (TLS, AUTH, sender ownership), SPF on 25, DKIM signing.

- 587 offers AUTH only after STARTTLS; alice of each domain logs in with her
  full address; she may use only the MAIL FROM addresses the sender login map
  gives her (alice@example.com: alice@, bob@); what she submits is relayed to
  the Internet (the peer's sink).
- On 25, policyd-spf rejects a sender whose SPF fails for the connecting
  address with the guide's message, and lets an SPF pass through.
- What leaves mx carries OpenDKIM's signature by the sender's domain, with
  that domain's selector (mail for example.com, s2026 for example.org; From
  oversigned), that verifies against the key in the lab DNS; a receiver's
  verdict (authheaders, run on peer where the lab DNS resolves) is spf, dkim
  and dmarc pass.
"""

from __future__ import annotations

import base64
import email
import ipaddress
import time
import uuid

import dkim
import pytest

from .conftest import PEER_NAME, run_client, wait_for
from .stack import DOMAIN_SETTINGS, DOMAINS, HOSTNAME, MAILBOX, password

COMMAND = "command:remote:Command"
ALICES = [f"alice@{d}" for d in DOMAINS]
LAPTOP = "laptop.example.org"  # the client's HELO: a FQDN with no DNS at all
OUTSIDE = "someone@example.net"  # a recipient on the Internet (the peer's sink)
SPF_FAIL_DOMAIN = "spf-fail.example.net"
SPF_FAIL_ADDRESS = "198.51.100.99"  # nobody in the lab: SPF fails for every lab host


# --- helpers -----------------------------------------------------------------------------------


def message(sender: str, to: str, token: str) -> str:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: submission {token}\r\n"
            f"Message-ID: <{token}@{LAPTOP}>\r\n\r\nHello from the laptop, {token}.\r\n")


def submit(lab, mail_from: str, rcpt_to: str = OUTSIDE, user: str = "alice@example.com", token: str = "") -> dict:
    """smtplib from `client` to 587: STARTTLS, AUTH as `user` (a mailbox address), one message."""
    return run_client(lab, "client", "send", host=lab.mx.ipv4, port=587, helo=LAPTOP, mail_from=mail_from,
                      rcpt_to=[rcpt_to], message=message(mail_from, rcpt_to, token or uuid.uuid4().hex),
                      starttls=True, login=[user, password(user)])


def auth_plain(user: str, secret: str | None = None) -> str:
    secret = password(user) if secret is None else secret
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{secret}".encode()).decode()


def selector_of(domain: str) -> str:
    return DOMAIN_SETTINGS[domain].get("dkim_selector", "mail")


def dkim_public_key(deployment, domain: str) -> str:
    """What the domain stack's DKIM unit printed: the public key it generated on the host."""
    (key,) = [entry["outputs"]["stdout"] for name, entry in deployment.domains[domain].state.items()
              if name == f"{COMMAND}::domain-dkim-key-{selector_of(domain)}"]
    return "".join(key.split())


def envelope_dialog(lab, on: str, address: str, port: int, helo: str, mail_from: str, rcpt_to: str,
                    before: tuple[str, ...] = (), starttls: bool = False) -> list[tuple[int, str]]:
    """EHLO (or STARTTLS first), `before` (e.g. AUTH), MAIL FROM, RCPT TO; the replies, from the last EHLO on.

    No DATA, and no QUIT: after a rejection Postfix delays every further reply
    by smtpd_error_sleep_time (8 s), so the client just hangs up.
    """
    lines = [*before, f"MAIL FROM:<{mail_from}>", f"RCPT TO:<{rcpt_to}>"]
    answer = run_client(lab, on, "dialog", host=address, port=port, starttls=starttls, tls_first_ehlo=helo,
                        lines=lines if starttls else [f"EHLO {helo}", *lines])
    assert not answer["closed"], answer
    replies = [tuple(r) for r in answer["replies"]]
    return [tuple(answer["ehlo_after_tls"]), *replies] if starttls else replies


def rejected_at_rcpt(replies: list[tuple[int, str]]) -> tuple[int, str]:
    """The RCPT reply (the last), after every earlier command was accepted; text on one line."""
    *accepted, (code, text) = replies
    assert all(200 <= c < 300 for c, _ in accepted), f"refused before RCPT: {replies}"
    assert code >= 500, f"RCPT not rejected: {replies}"
    return code, " ".join(text.split())


def relayed(world, since: int, tokens: list[str], timeout: float = 60) -> dict[str, bytes]:
    """{token: raw bytes} of the messages bearing those tokens that the peer's sink got after `since`.

    Raw bytes (CRLF as on the wire), not world.received's text: DKIM hashes the exact lines.
    """
    deadline = time.monotonic() + timeout
    found: dict[str, bytes] = {}
    while True:
        texts = world.received(since, timeout=0, count=0)
        paths = sorted(world.sink.glob("*.eml"))[since:]  # the same files, in the same order
        for text, path in zip(texts, paths):
            found.update({t: path.read_bytes() for t in tokens if t in text})
        if len(found) == len(tokens) or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def split_sink(raw: bytes) -> tuple[dict[str, str], bytes]:
    """The sink's X-Sink-* envelope headers (peer, helo, mail-from, rcpt-to) and the message as relayed."""
    envelope, lines = {}, raw.split(b"\r\n")
    while lines and lines[0].startswith(b"X-Sink-"):
        name, _, value = lines.pop(0).decode().partition(": ")
        envelope[name.removeprefix("X-Sink-").lower()] = value
    return envelope, b"\r\n".join(lines)


def dkim_tags(message: bytes) -> dict[str, str]:
    """The tags of the (one) DKIM-Signature, whitespace removed."""
    signatures = email.message_from_bytes(message).get_all("DKIM-Signature") or []
    assert len(signatures) == 1, f"expected one DKIM-Signature, got {signatures}"
    tags = (t.split("=", 1) for t in "".join(signatures[0].split()).split(";") if t)
    return {name: value for name, value in tags}


def lab_dnsfunc(lab, asked: list[str]):
    """A dkimpy dnsfunc that asks the lab DNS (from peer): the TXT strings concatenated."""

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        asked.append(name)
        records = lab.dns_txt(name, from_host="peer")
        return "".join(records[0]).encode() if records else None

    return dnsfunc


def inbox(lab, user: str) -> list[str]:
    """The messages in the user's INBOX, over IMAPS from client."""
    return run_client(lab, "client", "imap", host=lab.mx.ipv4, user=user, password=password(user))["messages"]


# A receiver's verdict, run on peer: there /etc/resolv.conf is the lab DNS, so
# pyspf (SPF), dkimpy (DKIM key) and authheaders (DMARC) all resolve in the lab.
_VERDICT = """
import sys
from authheaders import authenticate_message
path, ip, mail_from, helo = sys.argv[1:]
print(authenticate_message(open(path, "rb").read(), "peer.example.net", spf=True, dkim=True, dmarc=True,
                           ip=ip, mail_from=mail_from, helo=helo))
"""


def verdict_results(header: str) -> dict[str, str]:
    """{method: result} of an Authentication-Results header (RFC 8601: "id; method=result props; ...")."""
    _, *results = header.split(":", 1)[1].split(";")
    return dict(r.split()[0].split("=", 1) for r in results if r.strip())


def receiver_verdict(lab, message_file, ip: str, mail_from: str, helo: str) -> str:
    return lab.run_python("peer", ["-c", _VERDICT, str(message_file), ip, mail_from, helo]).stdout.strip()


# --- fixtures ------------------------------------------------------------------------------------


SENDERS = [address for alice in ALICES for address in MAILBOX[alice].addresses]  # each alice's addresses


@pytest.fixture(scope="module")
def submitted(lab, world, deployment) -> dict[str, dict]:
    """Each alice submits one message as each address she owns (alice@, bob@example.com; alice@example.org)
    to the Internet.

    {address: {"answer": send's answer, "token": str, "raw": the message as the peer's sink got it}}.
    """
    since = world.count()
    sent = {}
    for alice in ALICES:
        for address in MAILBOX[alice].addresses:
            token = uuid.uuid4().hex
            sent[address] = {"answer": submit(lab, address, user=alice, token=token), "token": token}
    arrived = relayed(world, since, [s["token"] for s in sent.values() if s["answer"]["ok"]])
    for entry in sent.values():
        entry["raw"] = arrived.get(entry["token"])
    return sent


@pytest.fixture(scope="module")
def spf_fail_domain(lab):
    """A domain whose SPF authorises nobody in the lab; it has an A record (reject_unknown_sender_domain)."""
    lab.dns_update("example.net", SPF_FAIL_DOMAIN, "TXT", 300, f'"v=spf1 ip4:{SPF_FAIL_ADDRESS} -all"')
    lab.dns_update("example.net", SPF_FAIL_DOMAIN, "A", 300, SPF_FAIL_ADDRESS)
    try:
        yield SPF_FAIL_DOMAIN
    finally:
        lab.dns_delete("example.net", SPF_FAIL_DOMAIN)


# --- 587: TLS before AUTH, sender ownership, relay ----------------------------------------------


@pytest.mark.parametrize("alice", ALICES)
def test_submission_offers_auth_only_after_starttls(lab, deployment, alice):
    plain = run_client(lab, "client", "dialog", host=lab.mx.ipv4, port=587,
                       lines=[f"EHLO {LAPTOP}", auth_plain(alice)])
    (ehlo_code, ehlo), (auth_code, auth) = plain["replies"]
    assert ehlo_code == 250 and "STARTTLS" in ehlo.splitlines()
    assert not [line for line in ehlo.splitlines() if line.startswith("AUTH")], f"AUTH offered in plaintext: {ehlo}"
    assert auth_code == 503, f"AUTH in plaintext answered {auth_code} {auth}"

    tls = run_client(lab, "client", "dialog", host=lab.mx.ipv4, port=587, starttls=True, tls_first_ehlo=LAPTOP,
                     lines=[auth_plain(alice)])
    assert tls["starttls"][0] == 220
    code, ehlo = tls["ehlo_after_tls"]
    assert code == 250 and [line for line in ehlo.splitlines() if line.startswith("AUTH ")], ehlo
    assert "PLAIN" in ehlo and "STARTTLS" not in ehlo.splitlines()
    assert tls["replies"][0][0] == 235, f"{alice}'s AUTH after STARTTLS: {tls['replies']}"


# A user of the same domain whose address alice does not own.
NOT_HERS = {"alice@example.com": "carol@example.com", "alice@example.org": "dave@example.org"}


@pytest.mark.parametrize("alice", ALICES)
def test_alice_may_not_send_as_an_address_she_does_not_own(lab, deployment, alice):
    other = NOT_HERS[alice]
    replies = envelope_dialog(lab, "client", lab.mx.ipv4, 587, LAPTOP, other, OUTSIDE,
                              before=(auth_plain(alice),), starttls=True)
    assert replies[1][0] == 235, f"{alice}'s AUTH: {replies}"
    code, text = rejected_at_rcpt(replies)  # smtpd_delay_reject: MAIL FROM is judged at RCPT
    assert code == 553 and f"<{other}>: Sender address rejected: not owned by user {alice}" in text, text


@pytest.mark.parametrize("address", SENDERS)
def test_alice_sends_as_her_addresses_and_mail_is_relayed_out(lab, submitted, address):
    entry = submitted[address]
    assert entry["answer"]["ok"], entry["answer"]
    assert entry["answer"]["auth_before_tls"] is False
    assert entry["raw"] is not None, f"the message from {address} never reached the peer's sink"
    envelope, relayed_message = split_sink(entry["raw"])
    assert envelope["mail-from"] == address and envelope["rcpt-to"] == OUTSIDE
    assert envelope["helo"] == HOSTNAME
    assert envelope["peer"] in (lab.mx.ipv4, lab.mx.ipv6)
    assert email.message_from_bytes(relayed_message)["Subject"] == f"submission {entry['token']}"


@pytest.mark.parametrize("address", ALICES)
def test_submitted_mail_does_not_tell_where_the_user_sent_it_from(lab, submitted, address):
    """Submission's cleanup (master.cf) rewrites the client part of the Received header smtpd adds."""
    raw = submitted[address]["raw"]
    assert raw is not None, f"the message from {address} never reached the peer's sink"
    _, relayed_message = split_sink(raw)
    headers = email.message_from_bytes(relayed_message)
    client = lab.hosts["client"]
    for name, value in headers.items():
        text = " ".join(str(value).split())
        assert client.ipv4 not in text and client.ipv6 not in text, f"{name}: {text}"
        if name.lower() != "message-id":  # the user's own mail program wrote that one
            assert LAPTOP not in text, f"{name}: {text}"
    # The trace stays: mx's one Received header, from the authenticated user, by mx, with its queue id and date.
    (received,) = [" ".join(r.split()) for r in headers.get_all("Received")]
    assert received.startswith(f"from authenticated-user by {HOSTNAME} (Postfix) with ESMTPSA id "), received
    assert f"for <{OUTSIDE}>; " in received, received


# --- 25: SPF on incoming mail (policyd-spf) -------------------------------------------------------


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("alice", ALICES)
def test_sender_failing_spf_is_rejected_with_the_guides_message(lab, deployment, spf_fail_domain, family, alice):
    replies = envelope_dialog(lab, "peer", getattr(lab.mx, family), 25, PEER_NAME, f"someone@{spf_fail_domain}",
                              alice)
    code, text = rejected_at_rcpt(replies)
    assert code == 550, text
    assert "Recipient address rejected: Message rejected due to: SPF fail - not authorized" in text, text


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("alice", ALICES)
def test_sender_passing_spf_is_accepted_and_marked_pass(lab, deployment, family, alice):
    token, to = uuid.uuid4().hex, alice
    answer = run_client(lab, "peer", "send", host=getattr(lab.mx, family), port=25, helo=PEER_NAME,
                        mail_from=OUTSIDE, rcpt_to=[to], message=message(OUTSIDE, to, token))
    assert answer["ok"], answer
    # policyd-spf judged it: its Received-SPF header says Pass, for peer's address.
    delivered = wait_for(lambda: [m for m in inbox(lab, alice) if token in m])
    assert delivered, f"the message never reached {alice}'s INBOX"
    received_spf = email.message_from_string(delivered[0]).get_all("Received-SPF") or []
    assert len(received_spf) == 1 and received_spf[0].startswith("Pass"), received_spf
    assert f"client-ip={getattr(lab.hosts['peer'], family)};" in " ".join(received_spf[0].split())
    # Mail from another MTA on 25 keeps its Received header whole: the peer's HELO, name and address.
    peer_address = getattr(lab.hosts["peer"], family)
    received = [" ".join(r.split()) for r in email.message_from_string(delivered[0]).get_all("Received") or []]
    assert [r for r in received if r.startswith(f"from {PEER_NAME} ({PEER_NAME} [")
            and peer_address in r and "with ESMTP" in r], received


# --- DKIM: OpenDKIM signs what leaves ----------------------------------------------------------


@pytest.mark.parametrize("address", SENDERS)
def test_submitted_mail_is_dkim_signed_and_verifies_against_the_lab_dns(lab, deployment, submitted, address):
    domain, selector = address.split("@")[1], selector_of(address.split("@")[1])
    raw = submitted[address]["raw"]
    assert raw is not None, f"the message from {address} never reached the peer's sink"
    _, signed = split_sink(raw)
    tags = dkim_tags(signed)
    assert (tags["s"], tags["d"]) == (selector, domain)
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"
    # OversignHeaders From: the one From plus a null From, so no From can be added later.
    assert [h.lower() for h in tags["h"].split(":")].count("from") == 2, tags["h"]

    asked: list[str] = []
    assert dkim.verify(signed, dnsfunc=lab_dnsfunc(lab, asked)), "DKIM signature does not verify"
    assert [name.rstrip(".") for name in asked] == [f"{selector}._domainkey.{domain}"]
    # The key verified against is the one the host generated for this domain (its DKIM unit's stdout).
    (record,) = lab.dns_txt(f"{selector}._domainkey.{domain}")
    published = dict(t.strip().split("=", 1) for t in "".join(record).split(";") if t.strip())["p"]
    assert published == dkim_public_key(deployment, domain)


@pytest.mark.parametrize("alice", ALICES)
def test_receiver_verdict_is_spf_dkim_and_dmarc_pass(lab, submitted, tmp_path, alice):
    domain = alice.split("@")[1]
    entry = submitted[alice]
    assert entry["raw"] is not None, f"{alice}'s message never reached the peer's sink"
    envelope, signed = split_sink(entry["raw"])
    # The verdict is for the connection as the peer saw it: mx's address, its HELO, alice's MAIL FROM.
    assert ipaddress.ip_address(envelope["peer"]) in (ipaddress.ip_address(lab.mx.ipv4),
                                                      ipaddress.ip_address(lab.mx.ipv6))
    assert (envelope["helo"], envelope["mail-from"]) == (HOSTNAME, alice)
    message_file = tmp_path / "relayed.eml"
    message_file.write_bytes(signed)
    verdict = receiver_verdict(lab, message_file, envelope["peer"], envelope["mail-from"], envelope["helo"])
    results = verdict_results(verdict)
    assert results == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}, verdict
    assert f"header.d={domain}" in verdict and f"header.from={domain}" in verdict, verdict
