"""Mailbox quotas (README, "Mailbox quotas"), on the lab's mx.

carol@example.com gets a quota of 100K (a domain stack override); the peer
fills her mailbox with messages of about 20 KB, announcing their size as MTAs
do. What a user and a sender see:

- every message accepted is in her Maildir (none accepted, then bounced);
- once the mailbox is full, the next message is refused at RCPT with
  552 5.2.2, before DATA, while alice@example.com, of the same domain,
  still accepts;
- GETQUOTA over IMAP shows her use against the 100 KiB limit;
- the 90 % warning arrives in her INBOX;
- a message whose announced size just fits at RCPT is delivered, though the
  headers mx adds after RCPT make it larger than what was judged.

The module leaves carol as it found her: no quota, an empty INBOX.
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests.conftest import message_of_size

from .conftest import run_client, wait_for
from .stack import password, stack_users
from .test_submission import OUTSIDE

COM = "example.com"
CAROL = "carol@example.com"
ALICE = "alice@example.com"
QUOTA_KIB = 100
BODY_BYTES = 20 * 1024
# Enough messages to fill 100K two times over: the loop stops at the first refusal.
MAX_MESSAGES = 12


def message(to: str, token: str) -> str:
    line = "quota filler " * 6 + "\r\n"  # 80 bytes a line
    body = line * (BODY_BYTES // len(line))
    return (f"From: {OUTSIDE}\r\nTo: {to}\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@lab.example.net>\r\n\r\n{body}")


def from_peer(lab, to: str, token: str) -> dict:
    """One message from the peer on port 25, its size announced in MAIL FROM (SIZE=)."""
    return run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from=OUTSIDE,
                      rcpt_to=[to], message=message(to, token), size=True)


def rcpt_reply(lab, to: str) -> tuple[int, str]:
    """The reply to RCPT TO on port 25 from the peer, no size announced."""
    answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=[
        "EHLO peer.example.net", f"MAIL FROM:<{OUTSIDE}>", f"RCPT TO:<{to}>"])
    ehlo, mail, reply = answer["replies"]
    assert ehlo[0] == 250 and mail[0] == 250, answer
    return reply[0], " ".join(reply[1].split())


def inbox(lab, login: str) -> list[str]:
    answer = run_client(lab, "client", "imap", host=lab.mx.ipv4, user=login, password=password(login))
    assert answer["ok"], answer
    return answer["messages"]


def storage(lab, login: str) -> tuple[int, int]:
    """(used, limit) of the mailbox's STORAGE resource in KiB, from GETQUOTAROOT over IMAP."""
    answer = run_client(lab, "client", "quota", host=lab.mx.ipv4, user=login, password=password(login))
    assert answer["ok"], answer
    found = [re.search(r"STORAGE (\d+) (\d+)", line) for line in answer["quotas"]]
    used_limit = [(int(m[1]), int(m[2])) for m in found if m]
    assert len(used_limit) == 1, answer
    return used_limit[0]


def empty_carols_mailbox(lab) -> None:
    # Mail other modules left in carol's folders (the lab is shared) would move where a fill ends.
    lab.ssh(f"doveadm expunge -u {CAROL} mailbox '*' all", check=False)


def fill(lab, messages: int) -> list[tuple[str, dict]]:
    """Up to `messages` messages from the peer to carol, one at a time, until one is refused."""
    sent: list[tuple[str, dict]] = []
    for _ in range(messages):
        token = f"quota-{uuid.uuid4().hex[:12]}"
        answer = from_peer(lab, CAROL, token)
        sent.append((token, answer))
        if not answer["ok"]:
            break
        # Delivered before the next one: the next RCPT is asked about the mailbox as it is.
        assert wait_for(lambda t=token: any(t in m for m in inbox(lab, CAROL)), timeout=60), token
    return sent


@pytest.fixture(scope="module")
def carol_has_a_quota(lab, deployment):
    """carol@example.com with a 100K quota, for the module; then no quota and an empty mailbox again."""
    users = stack_users(lab, COM)
    carol = next(u for u in users if u["name"] == "carol")
    carol["quota"] = f"{QUOTA_KIB}K"
    deployment.up_domain(COM, users=users)
    try:
        yield
    finally:
        deployment.up_domain(COM)
        empty_carols_mailbox(lab)


@pytest.fixture(scope="module")
def filled(lab, carol_has_a_quota):
    """carol's mailbox filled from empty by the peer until a message is refused."""
    empty_carols_mailbox(lab)
    return fill(lab, MAX_MESSAGES)


def test_the_next_message_for_a_full_mailbox_is_refused_at_rcpt_with_552(filled):
    *accepted, (_, last) = filled
    assert accepted, "the very first message was refused: the quota was not below one message"
    assert all(answer["ok"] for _, answer in accepted), accepted
    assert not last["ok"], f"{len(filled)} messages of {BODY_BYTES} bytes all went into a {QUOTA_KIB}K mailbox"
    assert (last["stage"], last["code"]) == ("rcpt", 552), last
    assert "5.2.2" in last["error"], last


def test_every_accepted_message_is_in_the_mailbox(lab, filled):
    # Nothing was accepted and then bounced: each message the peer handed over is in her INBOX.
    messages = inbox(lab, CAROL)
    for token, _ in filled[:-1]:
        assert sum(token in m for m in messages) == 1, token


def test_another_mailbox_of_the_same_domain_still_accepts(lab, filled):
    token = f"quota-other-{uuid.uuid4().hex[:12]}"
    answer = from_peer(lab, ALICE, token)
    assert answer["ok"], answer
    assert wait_for(lambda: any(token in m for m in inbox(lab, ALICE)), timeout=60), token


def test_a_full_mailbox_is_refused_even_without_size(lab, filled):
    code, text = rcpt_reply(lab, CAROL)
    assert (code, text.split()[0]) == (552, "5.2.2"), (code, text)


def test_getquota_shows_the_use_against_the_limit(lab, filled):
    used, limit = storage(lab, CAROL)
    assert limit == QUOTA_KIB
    # At least the messages delivered (each some 20 KiB), and no more than the limit with Dovecot's 10 % grace.
    delivered = len(filled) - 1
    assert used >= delivered * BODY_BYTES // 1024, (used, delivered)
    assert used <= QUOTA_KIB * 1.1 + 1, used


def test_the_90_percent_warning_arrives(lab, filled):
    def warnings() -> list[str]:
        return [m for m in inbox(lab, CAROL) if re.search(r"(?m)^Subject: Your mailbox is 90% full", m)]

    found = wait_for(warnings, timeout=60)
    assert len(found) == 1, found
    assert "From: Mail system <alice@example.com>" in found[0]  # the host's postmaster_address
    assert CAROL in found[0]


def test_a_message_that_just_fits_at_rcpt_is_delivered_not_bounced(lab, carol_has_a_quota):
    # quota-status judges the size the peer announced; mx then adds its Received header and rspamd's
    # headers, and LMTP its own, so what is stored is larger. A message that fits at RCPT must be stored
    # all the same: had LMTP refused it, Postfix would have bounced it to its (maybe forged) sender.
    empty_carols_mailbox(lab)
    assert all(answer["ok"] for _, answer in fill(lab, 4))  # some 80K of 100K
    status = lab.ssh(f"doveadm mailbox status -u {CAROL} -t vsize '*'").stdout.strip()
    used = int(status.removeprefix("vsize="))
    fits = QUOTA_KIB * 1024 * 11 // 10 - used  # the limit and Dovecot's 10 % grace, less what is used
    assert 0 < fits < BODY_BYTES * 2, (used, fits)
    # RCPT says so too: that size is taken, one byte more is refused.
    answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=[
        "EHLO peer.example.net",
        f"MAIL FROM:<{OUTSIDE}> SIZE={fits}", f"RCPT TO:<{CAROL}>", "RSET",
        f"MAIL FROM:<{OUTSIDE}> SIZE={fits + 1}", f"RCPT TO:<{CAROL}>"])
    assert [reply[0] for reply in answer["replies"]] == [250, 250, 250, 250, 250, 552], answer
    token = f"quota-edge-{uuid.uuid4().hex[:12]}"
    head = (f"From: {OUTSIDE}\r\nTo: {CAROL}\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@lab.example.net>\r\n")
    sent = run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from=OUTSIDE,
                      rcpt_to=[CAROL], message=message_of_size(head, fits), size=True)
    assert sent["ok"], sent
    found = wait_for(lambda: [m for m in inbox(lab, CAROL) if token in m], timeout=60)
    assert len(found) == 1, f"the message announced at {fits} bytes, which fit at RCPT, was not delivered"
    assert len(found[0].encode()) > fits  # stored with the headers added after RCPT
    assert rcpt_reply(lab, CAROL)[0] == 552  # and now the mailbox is full
