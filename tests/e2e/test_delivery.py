"""Mail from the Internet to a user: Postfix → Dovecot LMTP → ~/Maildir → IMAP, with Sieve."""

from __future__ import annotations

import uuid

from .conftest import run_client, wait_for
from .stack import USERS


def message(subject: str, sender: str, to: str, body: str = "Hello from the lab.\n") -> str:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@peer.example.net>\r\n\r\n{body}"


def imap(lab, user: str, folder: str = "INBOX", tls: str = "imaps") -> dict:
    return run_client(lab, "client", "imap", host=lab.mx.ipv4, user=user, password=USERS[user][0], folder=folder, tls=tls)


def test_mail_from_peer_is_delivered_to_maildir_and_readable_over_imap_tls(lab, deployment):
    subject = f"delivery {uuid.uuid4()}"
    sent = run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from="someone@example.net",
                      rcpt_to=["alice@example.com"], message=message(subject, "someone@example.net", "alice@example.com"))
    assert sent["ok"], sent
    found = wait_for(lambda: [m for m in imap(lab, "alice")["messages"] if subject in m])
    assert found, "the message did not reach alice's INBOX over IMAP (993)"
    # Delivered by Dovecot's LMTP into ~/Maildir (the guide's mail_location).
    listing = lab.ssh("ls /home/alice/Maildir/new /home/alice/Maildir/cur").stdout
    assert listing.strip(), "nothing in ~alice/Maildir"
    assert "lmtp" in found[0].lower(), "the Received: trail does not show LMTP delivery"
    # And over STARTTLS on 143 too.
    assert any(subject in m for m in imap(lab, "alice", tls="starttls")["messages"])


def test_guides_sieve_script_files_postfix_error_reports_into_system(lab, deployment):
    subject = f"Postfix SMTP server: errors from unknown[198.51.100.30] {uuid.uuid4()}"
    sent = run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net",
                      mail_from="someone@example.net", rcpt_to=["alice@example.com"],
                      message=message(subject, "MAILER-DAEMON@mail.example.com", "alice@example.com"))
    assert sent["ok"], sent
    found = wait_for(lambda: [m for m in imap(lab, "alice", folder="System")["messages"] if subject in m])
    assert found, "the Sieve script did not file the report into System"
    assert not [m for m in imap(lab, "alice")["messages"] if subject in m], "the report also stayed in INBOX"
