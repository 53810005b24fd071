"""Dovecot's quota settings as rendered, run for real on this machine (README, "Mailbox quotas").

A private Dovecot instance (tests/validate/private_dovecot.py; no network
listener) reads the rendered 10-auth.conf, 10-mail.conf and 90-quota.conf.
Its users file is what mailstack-assemble writes.
The test delivers with dovecot-lda and over LMTP (as Postfix hands mail to
Dovecot on a host), and asks the quota-status socket what Postfix would ask at
RCPT (its policy protocol).

The lab (tests/e2e/test_quota.py) proves the same through Postfix and IMAP.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import message_of_size
from tests.validate import private_dovecot
from tests.validate.private_dovecot import LDA, doveadm

pytestmark = [
    pytest.mark.skipif(shutil.which("dovecot") is None or not Path(LDA).exists(),
                       reason="Dovecot is missing (Debian package dovecot-core; scripts/setup installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a Dovecot instance switches to the mail user: needs root"),
]

QUOTA_BYTES = 100 * 1024
PASSWORD = "carol-Secret-1"


@pytest.fixture(scope="module")
def dovecot():
    with private_dovecot.instance("mailstack-dovecot-quota.") as root:
        private_dovecot.write_config(root, ("10-auth.conf", "10-mail.conf", "90-quota.conf"), "protocols = lmtp\n")
        # carol and dave with a quota, alice without.
        quota = f"userdb_quota_rule=*:storage={QUOTA_BYTES}B"
        private_dovecot.users_file(root, PASSWORD, {"carol@example.com": quota, "alice@example.com": "",
                                                    "dave@example.com": quota})
        private_dovecot.start(root, (root / "quota-status").exists)
        yield root


def policy(root: Path, recipient: str, size: int | None = None) -> str:
    """quota-status's action for `recipient`, asked as Postfix's check_policy_service asks at RCPT."""
    request = f"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient={recipient}\n"
    if size is not None:
        request += f"size={size}\n"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(root / "quota-status"))
        sock.sendall((request + "\n").encode())
        reply = b""
        while not reply.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode().strip()


def deliver(root: Path, recipient: str, number: int) -> None:
    line = "quota filler " * 6 + "\n"
    message = f"From: x@example.net\nTo: {recipient}\nSubject: fill {number}\n\n" + line * 256  # ~20 KiB
    subprocess.run([LDA, "-c", str(root / "dovecot.conf"), "-d", recipient, "-f", "x@example.net"],
                   input=message, text=True, capture_output=True, timeout=60)


def storage(root: Path, user: str) -> tuple[int, str]:
    """(used KiB, limit) of the user's STORAGE quota, from doveadm quota get."""
    for line in doveadm(root, "quota", "get", "-u", user).splitlines():
        fields = line.split()
        if "STORAGE" in fields:
            at = fields.index("STORAGE")
            return int(fields[at + 1]), fields[at + 2]
    raise AssertionError(f"no STORAGE line for {user}")


def test_the_userdb_gives_the_quota_rule_and_the_vmail_home(dovecot):
    carol = doveadm(dovecot, "user", "carol@example.com")
    assert f"quota_rule\t*:storage={QUOTA_BYTES}B" in carol
    assert f"home\t{dovecot}/vmail/example.com/carol" in carol
    # A line without a quota is a user all the same, with no limit.
    alice = doveadm(dovecot, "user", "alice@example.com")
    assert f"home\t{dovecot}/vmail/example.com/alice" in alice and "quota_rule" not in alice
    assert storage(dovecot, "alice@example.com")[1] == "-"


def test_the_passdb_takes_the_same_lines(dovecot):
    assert "auth succeeded" in doveadm(dovecot, "auth", "test", "carol@example.com", PASSWORD)
    wrong = subprocess.run(["doveadm", "-c", str(dovecot / "dovecot.conf"), "auth", "test", "alice@example.com",
                            "not-the-password"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0 and "auth failed" in wrong.stdout + wrong.stderr


def test_quota_status_refuses_a_full_mailbox_with_552_and_nothing_else(dovecot):
    # Addresses Dovecot does not know (another domain's, on submission): left to Postfix.
    assert policy(dovecot, "bob@gmail.example") == "action=DUNNO"
    assert policy(dovecot, "alice@example.com", 10**9) == "action=DUNNO"  # no quota
    answers = []
    for number in range(1, 10):
        answers.append(policy(dovecot, "carol@example.com", 20 * 1024))
        if answers[-1] != "action=DUNNO":
            break
        deliver(dovecot, "carol@example.com", number)
    assert answers[-1] == "action=552 5.2.2 Mailbox is full", answers
    assert len(answers) >= 5, answers  # 100K took four or five messages of 20K before it was full
    # Full: refused whatever the size, announced or not.
    assert policy(dovecot, "carol@example.com") == "action=552 5.2.2 Mailbox is full"
    assert policy(dovecot, "carol@example.com", 1) == "action=552 5.2.2 Mailbox is full"
    used, limit = storage(dovecot, "carol@example.com")
    assert limit == "100" and 100 <= used <= 110, (used, limit)  # at most Dovecot's 10 % grace over
    # The 90 % warning arrived once, though the delivery that crossed 90 % filled the mailbox.
    new = dovecot / "vmail" / "example.com" / "carol" / "Maildir" / "new"

    def warnings() -> list[str]:
        texts = [path.read_text() for path in new.iterdir()]
        return [text for text in texts if "\nSubject: Your mailbox is 90% full\n" in text]

    deadline = time.monotonic() + 30
    while not warnings() and time.monotonic() < deadline:
        time.sleep(0.2)
    (warning,) = warnings()
    # From the host stack's postmaster_address (stacks/Pulumi.host-mail.yaml).
    assert "From: Mail system <alice@example.com>\nTo: <carol@example.com>\n" in warning
    assert "has used 90 % of its quota" in warning


def lmtp_deliver(root: Path, recipient: str, message: str) -> tuple[int, str]:
    """Hand `message` to Dovecot's LMTP for `recipient`, as Postfix's lmtp client does: (code, reply) after DATA."""
    with smtplib.LMTP(str(root / "run" / "lmtp"), timeout=60) as lmtp:
        lmtp.mail("x@example.net")
        code, reply = lmtp.rcpt(recipient)
        assert code == 250, (code, reply)
        code, reply = lmtp.data(message.encode())
        return code, reply.decode()


def head(recipient: str, subject: str) -> str:
    return f"From: x@example.net\r\nTo: {recipient}\r\nSubject: {subject}\r\n"


def largest_size_accepted_at_rcpt(root: Path, recipient: str) -> int:
    """The largest SIZE quota-status lets through for `recipient` now (a binary search of its answers)."""
    low, high = 0, 10 * QUOTA_BYTES
    assert policy(root, recipient, low) == "action=DUNNO"
    assert policy(root, recipient, high) != "action=DUNNO"
    while high - low > 1:
        middle = (low + high) // 2
        if policy(root, recipient, middle) == "action=DUNNO":
            low = middle
        else:
            high = middle
    return low


def test_a_message_accepted_at_rcpt_is_stored_with_the_headers_added_after_rcpt(dovecot):
    # What quota-status judges at RCPT is the size the client announced; what LMTP stores is larger: this
    # host's Received header and rspamd's X-Spamd-Result and X-Spam-Status come before it, Dovecot's
    # Return-Path and Delivered-To in it. A message that just fits at RCPT must still be stored, or
    # Postfix, which has taken it, would return it to a sender who may be forged (backscatter).
    dave = "dave@example.com"
    for number in range(4):
        assert lmtp_deliver(dovecot, dave, message_of_size(head(dave, f"fill {number}"), 20 * 1024))[0] == 250
    fits = largest_size_accepted_at_rcpt(dovecot, dave)
    used = int(doveadm(dovecot, "mailbox", "status", "-u", dave, "-t", "vsize", "*").strip().removeprefix("vsize="))
    # Dovecot's grace at RCPT, as the README says: the last message may go 10 % over.
    assert used + fits == QUOTA_BYTES * 11 // 10, (used, fits)
    added_after_rcpt = (
        "Received: from peer.example.net (peer.example.net [198.51.100.20])\r\n"
        "\tby mx.example.com (Postfix) with ESMTPS id 4ZXYW12345\r\n"
        "\tfor <dave@example.com>; Wed,  3 Dec 2026 12:00:00 +0000 (UTC)\r\n"
        "X-Spamd-Result: default: False [1.40 / 15.00];\r\n" + "\tSYMBOL_NAME_OF_SOME_LENGTH(0.10)[some, details];\r\n" * 20 +
        "X-Spam-Status: No, score=1.40\r\n"
    )
    assert 1000 < len(added_after_rcpt) < 2000
    code, reply = lmtp_deliver(dovecot, dave, added_after_rcpt + message_of_size(head(dave, "the last that fits"), fits))
    assert code == 250, (code, reply)
    stored = [path.read_text() for path in (dovecot / "vmail" / "example.com" / "dave" / "Maildir" / "new").iterdir()]
    assert sum("Subject: the last that fits" in text for text in stored) == 1
    # And then the mailbox is full for the next one, at RCPT.
    assert policy(dovecot, dave, 1) == "action=552 5.2.2 Mailbox is full"
