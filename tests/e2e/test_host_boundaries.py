"""What a deployment must never do to the host, and what it must do at once.

- An account mailstack did not create (here `dave`, made by hand) is never
  touched: the accounts unit fails naming it, and no account changes at all.
- A user removed from the stack keeps their account and Maildir, but cannot
  log in (IMAP, submission AUTH) and their address is refused at RCPT TO with
  550 5.1.1; listed again, they log in and find their mail.
- A second stack aimed at a host that another stack converges fails before
  changing anything, in every one of its units.
- A user's Sieve script that `sievec` refuses fails the `up` before Dovecot or
  Postfix are touched.

Every test puts the stack's own config back before it ends.
"""

from __future__ import annotations

import copy
import subprocess
import uuid

import pytest

from tests.program.harness import MailMocks, evaluate

from .conftest import run_client, wait_for
from .deploy import Deployment, DeploymentFailed
from .stack import SECRET_KEYS, USERS, e2e_config
from .test_deployment import COMMAND, leftovers, pids, unit_names

# Everything a unit could change, by content and by date.
SNAPSHOT = (
    "find /etc/postfix /etc/postfix-policyd-spf-python /etc/dovecot /etc/opendkim /etc/opendkim.conf"
    " /etc/aliases /etc/aliases.db /etc/mailstack /etc/ssl/private /etc/passwd /etc/shadow /etc/group"
    " /etc/gshadow /home/alice/.dovecot.sieve -xdev -type f -printf '%p\\t%T@\\t' -exec sha256sum {} ';' | sort"
)
LAPTOP = "laptop.example.org"
OUTSIDE = "someone@example.net"


def snapshot(lab) -> dict[str, str]:
    """path -> "mtime sha256" of every file the units write, and the accounts' databases."""
    lines = lab.ssh(SNAPSHOT).stdout.splitlines()
    return {line.split("\t")[0]: " ".join(line.split("\t")[1:]) for line in lines}


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def deploy(deployment, lab, **overrides) -> None:
    deployment.up(e2e_config(lab, **overrides), SECRET_KEYS)


def stack_users(lab) -> list[dict]:
    return copy.deepcopy(e2e_config(lab)["mailstack:users"])


def sha512_crypt(password: str, salt: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password,
                          capture_output=True, text=True, check=True).stdout.strip()


def imap(lab, user: str) -> dict:
    return run_client(lab, "client", "imap", host=lab.mx.ipv4, user=user, password=USERS[user][0])


def submit(lab, user: str, token: str) -> dict:
    """Submission on 587 from the client: STARTTLS, AUTH as `user`, one message to the Internet."""
    sender = USERS[user][1][0]
    text = f"From: {sender}\r\nTo: {OUTSIDE}\r\nSubject: {token}\r\nMessage-ID: <{token}@{LAPTOP}>\r\n\r\nHi.\r\n"
    return run_client(lab, "client", "send", host=lab.mx.ipv4, port=587, helo=LAPTOP, mail_from=sender,
                      rcpt_to=[OUTSIDE], message=text, starttls=True, login=[user, USERS[user][0]])


def mail_from_peer(lab, to: str, token: str) -> dict:
    text = (f"From: {OUTSIDE}\r\nTo: {to}\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@peer.example.net>\r\n\r\nFor {to}.\r\n")
    return run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from=OUTSIDE,
                      rcpt_to=[to], message=text)


# --- 1. an account mailstack did not create is never touched ----------------------------------------


def test_an_account_mailstack_did_not_create_is_refused_and_no_account_changes(lab, deployment):
    lab.ssh("useradd --create-home --shell /bin/bash dave && chpasswd", stdin="dave:daves-own-password\n")
    try:
        dave_shadow = lab.ssh("getent shadow dave").stdout
        before, daemons = snapshot(lab), pids(lab)
        users = stack_users(lab)
        # alice first, with a new password: applied one by one, her line would change before dave is met.
        users[0]["password_hash"] = sha512_crypt("alice-New-Secret", "mailstacknew")
        users.append({"name": "dave", "password_hash": sha512_crypt("dave-Stack-Secret", "mailstackdave")})
        with pytest.raises(DeploymentFailed) as failure:
            deploy(deployment, lab, users=users)
        text = str(failure.value)
        assert text.startswith("mail-host-accounts: exit 1"), text
        assert ("refusing to touch account dave: it exists on this host but mailstack did not create it "
                "(it is not in group mailstack-mailbox)") in text, text
        assert "no account was changed" in text, text
        assert "refusing to touch account alice" not in text and "carol" not in text, text
        assert unit_names(deployment) == ["mail-host-accounts"], "postfix waits for the accounts"
        assert lab.ssh("getent shadow dave").stdout == dave_shadow
        assert changed(before, snapshot(lab)) == [], "a refused accounts unit changed files"
        assert pids(lab) == daemons
        assert "mailstack-mailbox" not in lab.ssh("id -nG dave").stdout.split()
        # alice's own (mailstack-made) account carries the mark.
        assert "mailstack-mailbox" in lab.ssh("id -nG alice").stdout.split()
    finally:
        lab.ssh("userdel --remove dave", check=False)
        deploy(deployment, lab)
    assert deployment.runs == [], "the refused run was recorded as done"


# --- 2. a user removed from the stack: locked out, refused at RCPT, mail kept; back again -------------


def test_a_removed_user_cannot_log_in_or_receive_keeps_the_maildir_and_comes_back(lab, deployment):
    token = f"carol-before-removal-{uuid.uuid4()}"
    sent = mail_from_peer(lab, "carol@example.com", token)
    assert sent["ok"], sent
    assert wait_for(lambda: [m for m in imap(lab, "carol")["messages"] if token in m]), "no mail for carol"
    assert submit(lab, "carol", f"carol-may-submit-{uuid.uuid4()}")["ok"]

    try:
        deploy(deployment, lab, users=[u for u in stack_users(lab) if u["name"] != "carol"])
        assert {"mail-host-accounts", "mail-host-postfix"} <= set(unit_names(deployment))

        # IMAP: the password is refused.
        login = imap(lab, "carol")
        assert not login["ok"] and "AUTHENTICATIONFAILED" in login["error"].upper(), login
        # Submission: SASL (Dovecot, PAM) refuses her too, so she cannot send.
        sub = submit(lab, "carol", f"carol-after-removal-{uuid.uuid4()}")
        assert not sub["ok"] and sub["stage"] == "auth" and sub["code"] == 535, sub
        # SMTP from the Internet: her address is unknown now, permanently (soft_bounce is off).
        for address in ("carol@example.com", "carol+tag@example.com"):
            refused = mail_from_peer(lab, address, f"carol-refused-{uuid.uuid4()}")
            assert not refused["ok"] and refused["stage"] == "rcpt", refused
            assert refused["code"] == 550 and "5.1.1" in refused["error"], refused
            assert "user unknown" in refused["error"].lower(), refused
        # The others still receive: alice, her alias bob@, and the aliases postmaster@ and root@.
        answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=[
            "EHLO peer.example.net", f"MAIL FROM:<{OUTSIDE}>", "RCPT TO:<alice@example.com>",
            "RCPT TO:<bob@example.com>", "RCPT TO:<postmaster@example.com>", "RCPT TO:<root@example.com>"])
        assert [code for code, _ in answer["replies"]] == [250] * 6, answer
        # Locked by the accounts unit, at once.
        accounts = next(run for run in deployment.runs if run.name == "mail-host-accounts")
        assert "locked user carol (no longer in the stack" in accounts.stderr, accounts.stderr
        assert lab.ssh("passwd --status carol").stdout.split()[1] == "L"
        # Her account and her mail stay.
        assert lab.ssh(f"grep -rlF {token!r} /home/carol/Maildir/new /home/carol/Maildir/cur",
                       check=False).stdout.strip(), "carol's Maildir lost the message"
        # With soft_bounce on (the guide's setting while testing) the same refusal is temporary.
        deploy(deployment, lab, users=[u for u in stack_users(lab) if u["name"] != "carol"], soft_bounce=True)
        refused = mail_from_peer(lab, "carol@example.com", f"carol-soft-{uuid.uuid4()}")
        assert not refused["ok"] and refused["stage"] == "rcpt", refused
        assert refused["code"] == 450 and "4.1.1" in refused["error"], refused
        deploy(deployment, lab, users=[u for u in stack_users(lab) if u["name"] != "carol"])
    finally:
        deploy(deployment, lab)

    accounts = next(run for run in deployment.runs if run.name == "mail-host-accounts")
    assert "created user carol" not in accounts.stderr, "carol's account was made anew"
    back = imap(lab, "carol")
    assert back["ok"], back
    assert [m for m in back["messages"] if token in m], "carol's earlier message is not there any more"
    assert submit(lab, "carol", f"carol-back-{uuid.uuid4()}")["ok"]
    assert mail_from_peer(lab, "carol@example.com", f"carol-back-{uuid.uuid4()}")["ok"]


# --- 3. a second stack aimed at the host changes nothing ---------------------------------------------


OTHER_STACK = "example.org"
REFUSAL = (
    "mail.example.com is converged by stack mailstack/e2e; this is mailstack/example.org. One stack per host "
    "until multi-domain hosts land: point this stack at another host, or remove /etc/mailstack/owner on the host "
    "if stack mailstack/e2e is gone."
)


def test_a_second_stack_aimed_at_the_host_fails_in_every_unit_and_changes_nothing(lab, deployment):
    before, daemons = snapshot(lab), pids(lab)

    # The same host, another stack (the mock deployer's stack name): its first unit stops the `up`.
    other = Deployment(lab)
    with pytest.raises(DeploymentFailed) as failure:
        other.up(e2e_config(lab), SECRET_KEYS, stack=OTHER_STACK)
    assert str(failure.value).startswith("mail-host-packages: exit 1"), failure.value
    assert REFUSAL in str(failure.value), failure.value
    assert unit_names(other) == ["mail-host-packages"], "the units after packages must not run"

    # Each of its units refuses on its own too, run over SSH exactly as the engine would run it.
    graph = evaluate(e2e_config(lab), SECRET_KEYS, MailMocks(dkim_public_key="MIIB"), stack=OTHER_STACK)
    commands = graph.of_type(COMMAND)
    assert len(commands) == 9
    for unit in commands:
        result = lab.ssh(unit.inputs["create"], stdin=unit.inputs.get("stdin"), check=False)
        assert result.returncode == 1 and result.stderr.strip() == REFUSAL, f"{unit.name}: {result.stderr}"
        assert result.stdout == "", f"{unit.name} printed {result.stdout!r}"

    assert changed(before, snapshot(lab)) == [], "the other stack changed files on the host"
    assert pids(lab) == daemons, "the other stack restarted a daemon"
    assert leftovers(lab) == []
    assert lab.ssh("cat /etc/mailstack/owner").stdout == "mailstack/e2e\n"
    # The host's own stack goes on as before.
    deploy(deployment, lab)
    assert deployment.runs == []


# --- 4. a user's broken Sieve script fails before Dovecot and Postfix change ---------------------------


def test_a_broken_user_sieve_script_fails_before_dovecot_or_postfix_change(lab, deployment):
    # Dovecot's 10-ssl.conf and Postfix's main.cf both name the certificate: moving it changes both units.
    # The pair is copied there first, so the TLS unit has nothing to generate.
    cert, key = "/etc/ssl/private/e2e-moved.cacert.pem", "/etc/ssl/private/e2e-moved.privkey.pem"
    lab.ssh(f"cp -p /etc/ssl/private/postfix.cacert.pem {cert} && cp -p /etc/ssl/private/postfix.privkey.pem {key}")
    users = stack_users(lab)
    # The config model takes any text; sievec refuses an unknown command.
    users[0]["sieve"] += 'frobnicate "INBOX";\n'
    try:
        before, daemons = snapshot(lab), pids(lab)
        with pytest.raises(DeploymentFailed) as failure:
            deploy(deployment, lab, users=users, smtpd_tls_cert_file=cert, smtpd_tls_key_file=key,
                   message_size_limit=26_214_400)
        text = str(failure.value)
        assert text.startswith("mail-host-sieve: exit 1") and "frobnicate" in text, text
        ran = unit_names(deployment)
        assert "mail-host-dovecot" not in ran and "mail-host-postfix" not in ran, ran
        assert changed(before, snapshot(lab)) == [], "files changed in an `up` that a Sieve script failed"
        assert pids(lab) == daemons
        assert lab.ssh("doveconf -h ssl_cert").stdout.strip() == "</etc/ssl/private/postfix.cacert.pem"
        assert lab.ssh("postconf -h smtpd_tls_cert_file message_size_limit").stdout.split() == [
            "/etc/ssl/private/postfix.cacert.pem", "25000000"]
        assert leftovers(lab) == []
    finally:
        deploy(deployment, lab)
        lab.ssh(f"rm -f {cert} {key}")
