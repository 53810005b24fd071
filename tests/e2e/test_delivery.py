"""Mail from the Internet to a user of each domain: Postfix → Dovecot LMTP → Maildir → IMAP, with Sieve."""

from __future__ import annotations

import uuid

import pytest

from .conftest import run_client, wait_for
from .stack import DOMAINS, GUIDE_SIEVE, LISTS_SIEVE, MAILBOX, password


def message(subject: str, sender: str, to: str, body: str = "Hello from the lab.\n") -> str:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@peer.example.net>\r\n\r\n{body}"


def imap(lab, login: str, folder: str = "INBOX", tls: str = "imaps") -> dict:
    return run_client(lab, "client", "imap", host=lab.mx.ipv4, user=login, password=password(login), folder=folder,
                      tls=tls)


def from_peer(lab, to: str, subject: str, sender: str = "someone@example.net") -> dict:
    return run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from="someone@example.net",
                      rcpt_to=[to], message=message(subject, sender, to))


@pytest.mark.parametrize("domain", DOMAINS)
def test_mail_from_peer_is_delivered_to_maildir_and_readable_over_imap_tls(lab, deployment, domain):
    alice = f"alice@{domain}"
    subject = f"delivery {uuid.uuid4()}"
    sent = from_peer(lab, alice, subject)
    assert sent["ok"], sent
    found = wait_for(lambda: [m for m in imap(lab, alice)["messages"] if subject in m])
    assert found, f"the message did not reach {alice}'s INBOX over IMAP (993)"
    # Delivered by Dovecot's LMTP into the mailbox's Maildir, under the domain's own folder.
    listing = lab.ssh(f"grep -rlF {subject!r} /var/vmail/{domain}/alice/Maildir/new /var/vmail/{domain}/alice/Maildir/cur",
                      check=False).stdout
    assert listing.strip(), f"the message is not in /var/vmail/{domain}/alice/Maildir"
    assert "lmtp" in found[0].lower(), "the Received: trail does not show LMTP delivery"
    # And over STARTTLS on 143 too.
    assert any(subject in m for m in imap(lab, alice, tls="starttls")["messages"])


# Each alice has her own script: the guide's (Postfix error reports into System) at example.com,
# a mailing-list rule (into Lists) at example.org. Each message below matches one script's rule only.
REPORT_SUBJECT = "Postfix SMTP server: errors from unknown[198.51.100.30]"
LIST_SUBJECT = "[lists] weekly digest"


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_users_own_sieve_script_files_her_mail(lab, deployment, domain):
    alice = f"alice@{domain}"
    own_folder = {GUIDE_SIEVE: "System", LISTS_SIEVE: "Lists"}[MAILBOX[alice].sieve]
    token = uuid.uuid4().hex
    report, listmail = f"{REPORT_SUBJECT} {token}", f"{LIST_SUBJECT} {token}"
    assert from_peer(lab, alice, report, sender="MAILER-DAEMON@mail.example.net")["ok"]
    assert from_peer(lab, alice, listmail)["ok"]
    mine = report if own_folder == "System" else listmail
    other = listmail if mine == report else report
    found = wait_for(lambda: [m for m in imap(lab, alice, folder=own_folder)["messages"] if mine in m])
    assert found, f"{alice}'s Sieve script did not file {mine!r} into {own_folder}"
    inbox = wait_for(lambda: [m for m in imap(lab, alice)["messages"] if other in m])
    assert inbox, f"{other!r} is not in {alice}'s INBOX: another user's script was applied"
    assert not [m for m in imap(lab, alice)["messages"] if mine in m], "the filed message also stayed in INBOX"
    other_folder = "Lists" if own_folder == "System" else "System"
    folders = imap(lab, alice)["folders"]
    assert not [f for f in folders if f.endswith(other_folder)], f"{alice} got the other script's folder: {folders}"
