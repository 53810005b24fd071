"""Learning from Junk and filing spam into it, as rendered, run for real on this machine
(README, "Learning from Junk").

A private Dovecot instance (tests/validate/private_dovecot.py; IMAP on a
loopback port) reads the rendered 10-auth.conf, 10-mail.conf, 90-sieve.conf,
90-quota.conf and 90-spam.conf. The global Sieve scripts are compiled as
the dovecot unit compiles them. The learning program is the rendered one,
with rspamc replaced by a stand-in that records what it was asked to learn
(rspamd itself is the lab's: tests/e2e/test_spam_learning.py).

- dovecot-lda delivers: a message carrying X-Spam: Yes lands in Junk after the
  user's script (or the default one) kept it; a user's script that files it
  itself decides; other mail stays in INBOX.
- Over IMAP: a message moved or uploaded into Junk is piped to the learning
  program as spam, one moved out of Junk as ham, one moved into Trash not at
  all; a learning failure leaves the move done.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from components import paths
from components.services import dovecot as dovecot_service
from tests.validate import private_dovecot
from tests.validate.private_dovecot import LDA

pytestmark = [
    pytest.mark.skipif(shutil.which("dovecot") is None or not Path(LDA).exists(),
                       reason="Dovecot is missing (Debian package dovecot-core; scripts/setup installs it)"),
    pytest.mark.skipif(not Path("/usr/lib/dovecot/modules/sieve/lib90_sieve_imapsieve_plugin.so").exists(),
                       reason="Pigeonhole's IMAPSieve plugin is missing (Debian package dovecot-sieve)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a Dovecot instance switches to the mail user: needs root"),
]

PASSWORD = "junk-Secret-1"
# erin has no script of her own (the default one runs); frank's files spam himself, into INBOX;
# grace's handles mailing lists only, and keeps the rest.
FRANK_SIEVE = 'require ["fileinto"];\nif header :is "X-Spam" "Yes" {\n  fileinto "INBOX";\n  stop;\n}\n'
GRACE_SIEVE = ('require ["fileinto", "mailbox"];\n'
               'if header :contains "subject" "[lists]" {\n  fileinto :create "Lists";\n}\n')
# henry's stops on spam without filing it: the message is still to be kept, so the Junk script runs.
HENRY_SIEVE = 'if header :is "X-Spam" "Yes" {\n  stop;\n}\n'
USERS = {"erin@example.com": None, "frank@example.com": FRANK_SIEVE, "grace@example.com": GRACE_SIEVE,
         "henry@example.com": HENRY_SIEVE}

# Stands in for rspamc: records its arguments and the message, then answers as rspamc does on success.
FAKE_RSPAMC = """#!/bin/sh
n=$(date +%s%N)
cat >"{root}/learned/$n.msg"
printf '%s\\n' "$*" >"{root}/learned/$n.args"
echo 'success = true;'
"""
# ... or fails without reading the message, as rspamc does when rspamd is down.
BROKEN_RSPAMC = """#!/bin/sh
echo 'connection refused' >&2
exit 1
"""


def use_rspamc(root: Path, text: str) -> None:
    (root / "rspamc").write_text(text.format(root=root))
    (root / "rspamc").chmod(0o755)


@pytest.fixture(scope="module")
def dovecot():
    port = private_dovecot.free_port()
    with private_dovecot.instance("mailstack-dovecot-spam.") as root:
        conf = str(root / "dovecot.conf")
        private_dovecot.write_config(
            root, ("10-auth.conf", "10-mail.conf", "90-sieve.conf", "90-quota.conf", "90-spam.conf"),
            f"protocols = imap\n"
            f"service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n"
            "  inet_listener imaps {\n    port = 0\n  }\n}\n"
            # dovecot-lda stands in for LMTP here: the same Sieve plugin (20-lmtp.conf).
            "protocol lda {\n  mail_plugins = $mail_plugins sieve\n}\n",
            {dovecot_service.LEARN_SPAM_COMMAND: f"{root}/rspamc learn_spam",
             dovecot_service.LEARN_HAM_COMMAND: f"{root}/rspamc learn_ham"},
        )
        (root / "learned").mkdir()
        (root / "learned").chmod(0o777)
        private_dovecot.users_file(root, PASSWORD, dict.fromkeys(USERS, ""))
        for user, script in USERS.items():
            if script is not None:
                home = root / "vmail" / "example.com" / user.split("@")[0]
                home.mkdir(parents=True)
                (home / paths.USER_SIEVE_NAME).write_text(script)
                for path in (home.parent, home, home / paths.USER_SIEVE_NAME):
                    shutil.chown(path, "nobody", "nogroup")
        use_rspamc(root, FAKE_RSPAMC)
        # As the dovecot unit's check and apply step compile them (components/services/dovecot.py).
        for script in [*sorted((root / "sieve-spam").glob("*.sieve")), root / "sieve" / "default.sieve"]:
            compiled = subprocess.run(["sievec", "-c", conf, str(script)], capture_output=True, text=True,
                                      timeout=60)
            assert compiled.returncode == 0, compiled.stderr
        private_dovecot.start(root, lambda: private_dovecot.listening(port))
        yield root, port


def deliver(root: Path, user: str, subject: str, spam: bool) -> None:
    header = "X-Spam: Yes\n" if spam else ""
    message = (f"From: x@example.net\nTo: {user}\nSubject: {subject}\nMessage-ID: <{subject}@example.net>\n"
               f"{header}\nA message for the tests of Junk.\n")
    result = subprocess.run([LDA, "-c", str(root / "dovecot.conf"), "-d", user, "-f", "x@example.net"],
                            input=message, text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr + (root / "log").read_text()


def imap(port: int, user: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    client.login(user, PASSWORD)
    return client


def subjects(port: int, user: str, folder: str) -> list[str]:
    client = imap(port, user)
    try:
        status, _ = client.select(f'"{folder}"', readonly=True)
        if status != "OK":
            return []
        _, data = client.search(None, "ALL")
        found = []
        for number in data[0].split():
            _, parts = client.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            found.append(parts[0][1].decode().split(":", 1)[1].strip())
        return found
    finally:
        client.logout()


def move(port: int, user: str, subject: str, source: str, target: str) -> None:
    client = imap(port, user)
    try:
        assert client.select(f'"{source}"')[0] == "OK"
        _, data = client.search(None, "SUBJECT", f'"{subject}"')
        (number,) = data[0].split()
        status, answer = client._simple_command("MOVE", number.decode(), f'"{target}"')
        assert status == "OK", answer
    finally:
        client.logout()


def learned(root: Path) -> list[tuple[str, str]]:
    """(class, Subject) of each message the stand-in rspamc was asked to learn, in order."""
    found = []
    for args in sorted((root / "learned").glob("*.args")):
        words = args.read_text().split()
        message = args.with_suffix(".msg").read_text()
        subject = next(line for line in message.splitlines() if line.startswith("Subject: "))
        found.append((words[-1].removeprefix("learn_"), subject.removeprefix("Subject: ")))
    return found


def wait_learned(root: Path, count: int) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 30
    while len(learned(root)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return learned(root)


def test_imap_loads_quota_and_imapsieve_together(dovecot):
    root, _ = dovecot
    plugins = subprocess.run(["doveconf", "-c", str(root / "dovecot.conf"), "-f", "protocol=imap", "-h",
                              "mail_plugins"], capture_output=True, text=True, timeout=60).stdout.split()
    assert {"quota", "imap_quota", "imap_sieve"} <= set(plugins), plugins


def test_every_mailbox_has_a_subscribed_junk_folder(dovecot):
    _, port = dovecot
    client = imap(port, "erin@example.com")
    try:
        _, listing = client.list()
        _, subscribed = client.lsub()
    finally:
        client.logout()
    assert any(b"\\Junk" in line and line.endswith(b" Junk") for line in listing), listing
    assert any(line.endswith(b" Junk") for line in subscribed), subscribed


def test_spam_is_filed_into_junk_after_the_users_script(dovecot):
    root, port = dovecot
    # No script of her own: the default script, then the Junk script.
    deliver(root, "erin@example.com", "erin-spam", spam=True)
    deliver(root, "erin@example.com", "erin-ham", spam=False)
    assert "erin-spam" in subjects(port, "erin@example.com", "Junk")
    assert "erin-ham" in subjects(port, "erin@example.com", "INBOX")
    assert "erin-spam" not in subjects(port, "erin@example.com", "INBOX")
    # Her own script that keeps the message: then the Junk script.
    deliver(root, "grace@example.com", "grace-spam", spam=True)
    deliver(root, "grace@example.com", "[lists] grace-list-spam", spam=True)
    assert subjects(port, "grace@example.com", "Junk") == ["grace-spam"]
    # A script that files the message itself decides: the Junk script does not run after it.
    assert subjects(port, "grace@example.com", "Lists") == ["[lists] grace-list-spam"]


def test_a_users_script_that_files_spam_itself_keeps_it_out_of_junk(dovecot):
    root, port = dovecot
    deliver(root, "frank@example.com", "frank-spam", spam=True)
    assert "frank-spam" in subjects(port, "frank@example.com", "INBOX")
    assert "frank-spam" not in subjects(port, "frank@example.com", "Junk")


def test_a_bare_stop_leaves_the_message_to_the_junk_script(dovecot):
    root, port = dovecot
    deliver(root, "henry@example.com", "henry-spam", spam=True)
    assert subjects(port, "henry@example.com", "Junk") == ["henry-spam"]
    assert "henry-spam" not in subjects(port, "henry@example.com", "INBOX")


def test_moving_into_junk_learns_spam_and_out_of_it_ham(dovecot):
    root, port = dovecot
    user = "erin@example.com"
    deliver(root, user, "move-me", spam=False)
    before = len(learned(root))
    move(port, user, "move-me", "INBOX", "Junk")
    assert wait_learned(root, before + 1)[before:] == [("spam", "move-me")]
    assert "move-me" in subjects(port, user, "Junk")
    move(port, user, "move-me", "Junk", "INBOX")
    assert wait_learned(root, before + 2)[before:] == [("spam", "move-me"), ("ham", "move-me")]
    # The whole message reached the program: headers and body.
    last = sorted((root / "learned").glob("*.msg"))[-1].read_text()
    assert "Message-ID: <move-me@example.net>" in last and "A message for the tests of Junk." in last


def test_uploading_into_junk_learns_spam(dovecot):
    root, port = dovecot
    before = len(learned(root))
    client = imap(port, "erin@example.com")
    try:
        message = b"From: x@example.net\r\nSubject: uploaded\r\n\r\nUploaded by a client into Junk.\r\n"
        assert client.append('"Junk"', None, None, message)[0] == "OK"
    finally:
        client.logout()
    assert wait_learned(root, before + 1)[before:] == [("spam", "uploaded")]


def test_junk_into_trash_is_not_learned_as_ham(dovecot):
    root, port = dovecot
    user = "erin@example.com"
    client = imap(port, user)
    try:
        client.create('"Trash"')
    finally:
        client.logout()
    # erin-spam was filed into Junk at delivery (not learned: delivery is not a move).
    before = len(learned(root))
    move(port, user, "erin-spam", "Junk", "Trash")
    assert "erin-spam" in subjects(port, user, "Trash")
    time.sleep(2)  # nothing to wait for: give a wrong pipe the time to show
    assert learned(root)[before:] == []


def test_a_learning_failure_never_fails_the_move(dovecot):
    root, port = dovecot
    user = "erin@example.com"
    deliver(root, user, "rspamd-down", spam=False)
    use_rspamc(root, BROKEN_RSPAMC)
    try:
        move(port, user, "rspamd-down", "INBOX", "Junk")
    finally:
        use_rspamc(root, FAKE_RSPAMC)
    assert "rspamd-down" in subjects(port, user, "Junk")
    assert "rspamd-down" not in subjects(port, user, "INBOX")
    log = (root / "log").read_text()
    assert "not learned as spam (rspamc 1): connection refused" in log, log[-2000:]
