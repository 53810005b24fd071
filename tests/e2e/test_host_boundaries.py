"""What a deployment must never do to the host, and what it must do at once.

- The host's system accounts are no mail users: an account made by hand
  (here `dave`) cannot log in to mail, gets no mail, and no deployment
  touches it, even with a mailbox dave@example.org on the host; nor is it
  ever taken over as the owner of the mailboxes (vmail). The host's own
  addresses (root@, postmaster@mail.example.net) go to the postmaster.
- A user removed from a domain stack keeps the Maildir, but cannot log in
  (IMAP, submission AUTH) and the address is refused at RCPT TO with 550
  5.1.1 (450 with soft_bounce); listed again, the user logs in and finds the
  mail.
- A second host stack aimed at the host, a domain stack aimed at the wrong
  host stack, and a second stack for a domain the host has: each fails
  before changing anything.
- A user's Sieve script that `sievec` refuses fails the domain's `up` before
  any of the domain's files or the shared tables change.

Every test puts the stacks' own config back before it ends.
"""

from __future__ import annotations

import uuid

import pytest

from tests.program.harness import MailMocks, evaluate

from .conftest import run_client, wait_for
from .deploy import Deployment, DeploymentFailed, StackExports
from .stack import (
    DOMAIN_SECRET_KEYS,
    HOST_SECRET_KEYS,
    MAILBOX,
    domain_config,
    host_config,
    password,
    sha512_crypt,
    stack_users,
)
from .test_deployment import COMMAND, HOST_UNITS, leftovers, pids, unit_names

# Everything a unit could change, by content and by date.
SNAPSHOT = (
    "{ find /etc/postfix /etc/postfix-policyd-spf-python /etc/dovecot /etc/opendkim /etc/opendkim.conf"
    " /etc/aliases /etc/aliases.db /etc/mailstack /etc/ssl/private /etc/passwd /etc/shadow /etc/group"
    " /etc/gshadow -xdev -type f -printf '%p\\t%T@\\t' -exec sha256sum {} ';';"
    " find /var/vmail -mindepth 3 -maxdepth 3 -name '.dovecot.sieve' -printf '%p\\t%T@\\t' -exec sha256sum {} ';';"
    " } | sort"
)
LAPTOP = "laptop.example.org"
OUTSIDE = "someone@example.net"
HOST_CLAIM = "/etc/mailstack/host"
HOST_REFUSAL = (
    "mail.example.net is converged by host stack mailstack/host-e2e; this is mailstack/host-other. One host stack "
    "per host: point this stack at another host, or remove /etc/mailstack/host on the host if stack "
    "mailstack/host-e2e is gone."
)
WRONG_HOST_REFUSAL = (
    "this host is not converged by host stack mailstack/host-other (it records: mailstack/host-e2e); run `pulumi up` "
    "for the host stack first, or check mailstack:host_stack."
)
DOMAIN_REFUSAL = (
    "example.com belongs to domain stack mailstack/example.com; this is mailstack/example.com-copy. One stack per "
    "domain: remove /etc/mailstack/domains/example.com/owner on the host only if stack mailstack/example.com is gone."
)


def snapshot(lab) -> dict[str, str]:
    """path -> "mtime sha256" of every file the units write, and the accounts' databases."""
    lines = lab.ssh(SNAPSHOT).stdout.splitlines()
    return {line.split("\t")[0]: " ".join(line.split("\t")[1:]) for line in lines}


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def imap(lab, login: str, secret: str | None = None) -> dict:
    return run_client(lab, "client", "imap", host=lab.mx.ipv4, user=login,
                      password=password(login) if secret is None else secret)


def submit(lab, login: str, token: str) -> dict:
    """Submission on 587 from the client: STARTTLS, AUTH as `login`, one message to the Internet."""
    sender = MAILBOX[login].addresses[0]
    text = f"From: {sender}\r\nTo: {OUTSIDE}\r\nSubject: {token}\r\nMessage-ID: <{token}@{LAPTOP}>\r\n\r\nHi.\r\n"
    return run_client(lab, "client", "send", host=lab.mx.ipv4, port=587, helo=LAPTOP, mail_from=sender,
                      rcpt_to=[OUTSIDE], message=text, starttls=True, login=[login, password(login)])


def mail_from_peer(lab, to: str, token: str) -> dict:
    text = (f"From: {OUTSIDE}\r\nTo: {to}\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@peer.example.net>\r\n\r\nFor {to}.\r\n")
    return run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from=OUTSIDE,
                      rcpt_to=[to], message=text)


def rcpt_replies(lab, recipients: list[str]) -> list[tuple[int, str]]:
    answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=[
        "EHLO peer.example.net", f"MAIL FROM:<{OUTSIDE}>", *(f"RCPT TO:<{r}>" for r in recipients)])
    return [(code, " ".join(text.split())) for code, text in answer["replies"][2:]]


def inbox(lab, login: str) -> list[str]:
    answer = imap(lab, login)
    assert answer["ok"], answer
    return answer["messages"]


# --- 1. the host's accounts are not mail users ----------------------------------------------------------


def test_a_system_account_is_no_mail_user_and_no_deployment_touches_it(lab, deployment):
    lab.ssh("useradd --create-home --shell /bin/bash dave && chpasswd", stdin="dave:daves-own-password\n")
    try:
        account = lab.ssh("getent passwd dave; getent shadow dave; ls -la --time-style=full-iso /home/dave").stdout
        # Its password opens no mailbox, under either name.
        for login in ("dave", "dave@example.org", "dave@mail.example.net"):
            refused = imap(lab, login, secret="daves-own-password")
            assert not refused["ok"] and "AUTHENTICATIONFAILED" in refused["error"].upper(), (login, refused)
        # The host's own domain receives for root@ and postmaster@ only, not for its accounts.
        (refused,) = rcpt_replies(lab, ["dave@mail.example.net"])
        assert refused[0] == 550 and "5.1.1" in refused[1], refused
        # A change of the mailbox dave@example.org is a change of that mailbox only.
        users = stack_users(lab, "example.org")
        next(u for u in users if u["name"] == "dave")["password_hash"] = sha512_crypt("dave.org-Other", "msdaveother")
        deployment.up_domain("example.org", users=users)
        assert imap(lab, "dave@example.org", secret="dave.org-Other")["ok"]
        assert lab.ssh("getent passwd dave; getent shadow dave; ls -la --time-style=full-iso /home/dave"
                       ).stdout == account, "a deployment changed the account dave or its home"
        assert lab.ssh("ls -A /home/dave").stdout.split() == lab.ssh("ls -A /etc/skel").stdout.split()
    finally:
        lab.ssh("userdel --remove dave", check=False)
        deployment.up_domain("example.org")
    assert imap(lab, "dave@example.org")["ok"]


def test_an_account_mailstack_did_not_make_is_never_taken_over_for_the_mailboxes(lab, deployment):
    # dave, made by hand, has the uid that the host stack is now told to give the mailboxes' owner.
    lab.ssh("useradd --uid 6000 --create-home --shell /bin/bash dave")
    try:
        account = lab.ssh("getent passwd dave vmail; getent group dave vmail").stdout
        before, daemons = snapshot(lab), pids(lab)
        with pytest.raises(DeploymentFailed) as failure:
            deployment.up_host(vmail_uid=6000)
        text = str(failure.value)
        assert text.startswith("host-tables: exit 1") and "nothing was changed" in text, text
        assert unit_names(deployment.host) == ["host-tables"], "the units that read the tables wait for them"
        assert lab.ssh("getent passwd dave vmail; getent group dave vmail").stdout == account
        assert changed(before, snapshot(lab)) == [], "a refused tables unit changed files"
        assert pids(lab) == daemons
    finally:
        lab.ssh("userdel --remove dave", check=False)
        deployment.up_host()
    assert deployment.host.runs == [], "the refused run was recorded as done"
    assert imap(lab, "alice@example.com")["ok"]


def test_the_hosts_own_addresses_go_to_the_postmaster(lab, deployment):
    tokens = {to: f"{to}-{uuid.uuid4().hex}" for to in ("root@mail.example.net", "postmaster@mail.example.net")}
    for to, token in tokens.items():
        assert mail_from_peer(lab, to, token)["ok"], to
    for to, token in tokens.items():
        assert wait_for(lambda: [m for m in inbox(lab, "alice@example.com") if token in m]), \
            f"{to} did not reach the postmaster_address alice@example.com"


# --- 2. a user removed from a domain stack: locked out, refused at RCPT, mail kept; back again ------------


def test_a_removed_user_cannot_log_in_or_receive_keeps_the_maildir_and_comes_back(lab, deployment):
    carol = "carol@example.com"
    token = f"carol-before-removal-{uuid.uuid4()}"
    assert mail_from_peer(lab, carol, token)["ok"]
    assert wait_for(lambda: [m for m in inbox(lab, carol) if token in m]), "no mail for carol"
    assert submit(lab, carol, f"carol-may-submit-{uuid.uuid4()}")["ok"]
    without_carol = [u for u in stack_users(lab, "example.com") if u["name"] != "carol"]
    com = deployment.domains["example.com"]

    try:
        deployment.up_domain("example.com", users=without_carol)
        assert "domain-files" in unit_names(com)
        # IMAP: the password is refused.
        login = imap(lab, carol)
        assert not login["ok"] and "AUTHENTICATIONFAILED" in login["error"].upper(), login
        # Submission: SASL (Dovecot) refuses her too, so she cannot send.
        sub = submit(lab, carol, f"carol-after-removal-{uuid.uuid4()}")
        assert not sub["ok"] and sub["stage"] == "auth" and sub["code"] == 535, sub
        # SMTP from the Internet: her address is unknown now, permanently (soft_bounce is off).
        for address in (carol, "carol+tag@example.com"):
            refused = mail_from_peer(lab, address, f"carol-refused-{uuid.uuid4()}")
            assert not refused["ok"] and refused["stage"] == "rcpt", refused
            assert refused["code"] == 550 and "5.1.1" in refused["error"], refused
            assert "user unknown" in refused["error"].lower(), refused
        # The others still receive: alice, her address bob@, the alias team@ and postmaster@.
        replies = rcpt_replies(lab, ["alice@example.com", "bob@example.com", "team@example.com",
                                     "postmaster@example.com", "alice@example.org"])
        assert [code for code, _ in replies] == [250] * 5, replies
        # Her open sessions were closed at once; her mail stays.
        files = next(run for run in com.runs if run.name == "domain-files")
        assert f"closed mailbox {carol}" in files.stderr, files.stderr
        assert lab.ssh(f"grep -rlF {token!r} /var/vmail/example.com/carol/Maildir", check=False).stdout.strip(), \
            "carol's Maildir lost the message"
        # With soft_bounce on (the guide's setting while testing: a host key) the same refusal is temporary.
        deployment.up_host(soft_bounce=True)
        try:
            refused = mail_from_peer(lab, carol, f"carol-soft-{uuid.uuid4()}")
            assert not refused["ok"] and refused["stage"] == "rcpt", refused
            assert refused["code"] == 450 and "4.1.1" in refused["error"], refused
        finally:
            deployment.up_host()
    finally:
        deployment.up_domain("example.com")

    back = imap(lab, carol)
    assert back["ok"], back
    assert [m for m in back["messages"] if token in m], "carol's earlier message is not there any more"
    assert submit(lab, carol, f"carol-back-{uuid.uuid4()}")["ok"]
    assert mail_from_peer(lab, carol, f"carol-back-{uuid.uuid4()}")["ok"]


# --- 3. stacks aimed at a host or a domain that another stack converges change nothing -----------------------


def test_a_second_host_stack_aimed_at_the_host_fails_in_every_unit_and_changes_nothing(lab, deployment):
    before, daemons = snapshot(lab), pids(lab)
    claim = lab.ssh(f"cat {HOST_CLAIM}").stdout

    # The same host, another host stack: its first unit stops the `up`.
    other = Deployment(lab, "host-other", StackExports())
    with pytest.raises(DeploymentFailed) as failure:
        other.up(host_config(lab), HOST_SECRET_KEYS)
    text = str(failure.value)
    assert text.startswith("host-packages: exit 1") and HOST_REFUSAL in text, text
    assert unit_names(other) == ["host-packages"], "the units after packages must not run"

    # Each of its units refuses on its own too, run over SSH exactly as the engine would run it.
    graph = evaluate(host_config(lab), HOST_SECRET_KEYS, MailMocks(dkim_public_key="MIIB"), stack="host-other")
    commands = graph.of_type(COMMAND)
    assert {unit.name for unit in commands} == {f"host-{u}" for u in HOST_UNITS}
    for unit in commands:
        result = lab.ssh(unit.inputs["create"], stdin=unit.inputs.get("stdin"), check=False)
        assert result.returncode == 1 and result.stderr.strip() == HOST_REFUSAL, f"{unit.name}: {result.stderr}"
        assert result.stdout == "", f"{unit.name} printed {result.stdout!r}"

    assert changed(before, snapshot(lab)) == [], "the other stack changed files on the host"
    assert pids(lab) == daemons, "the other stack restarted a daemon"
    assert leftovers(lab) == []
    assert lab.ssh(f"cat {HOST_CLAIM}").stdout == claim == "mailstack/host-e2e\n"
    # The host's own stacks go on as before.
    deployment.restore()
    assert all(stack.runs == [] for stack in deployment.all)


def test_a_domain_stack_aimed_at_another_host_stack_changes_nothing(lab, deployment):
    # host-other: a host stack whose outputs lead to this very machine, which host-e2e converges.
    exports = StackExports()
    exports.publish("host-other", {**deployment.host.exports.outputs["host-e2e"], "host_id": "mailstack/host-other"},
                    deployment.host.exports.secret["host-e2e"])
    before, daemons = snapshot(lab), pids(lab)
    stray = Deployment(lab, "example.com", exports)
    with pytest.raises(DeploymentFailed) as failure:
        stray.up(domain_config(lab, "example.com", host_stack="host-other"), DOMAIN_SECRET_KEYS)
    text = str(failure.value)
    assert text.startswith("domain-dkim-key-mail: exit 1") and WRONG_HOST_REFUSAL in text, text
    assert unit_names(stray) == ["domain-dkim-key-mail"]
    assert changed(before, snapshot(lab)) == [] and pids(lab) == daemons


def test_a_second_stack_for_a_hosted_domain_changes_nothing(lab, deployment):
    before, daemons = snapshot(lab), pids(lab)
    copy = Deployment(lab, "example.com-copy", deployment.host.exports)
    with pytest.raises(DeploymentFailed) as failure:
        copy.up(domain_config(lab, "example.com"), DOMAIN_SECRET_KEYS)
    text = str(failure.value)
    assert text.startswith("domain-dkim-key-mail: exit 1") and DOMAIN_REFUSAL in text, text
    assert unit_names(copy) == ["domain-dkim-key-mail"]
    assert changed(before, snapshot(lab)) == [] and pids(lab) == daemons
    assert lab.ssh("cat /etc/mailstack/domains/example.com/owner").stdout == "mailstack/example.com\n"


# --- 4. a user's broken Sieve script fails before any of the domain's files change -------------------------


def test_a_broken_user_sieve_script_fails_before_the_domains_files_or_tables_change(lab, deployment):
    users = stack_users(lab, "example.com")
    # The config model takes any text; sievec refuses an unknown command.
    users[0]["sieve"] += 'frobnicate "INBOX";\n'
    # In the same `up`: a new password, a new address and a new alias, none of which may land.
    users[1]["password_hash"] = sha512_crypt("carol.com-Other", "mscarolother")
    users[1]["addresses"] = ["carol@example.com", "caroline@example.com"]
    aliases = [*domain_config(lab, "example.com")["mailstack:aliases"],
               {"address": "sales@example.com", "to": ["carol@example.com"]}]
    com = deployment.domains["example.com"]
    try:
        before, daemons = snapshot(lab), pids(lab)
        with pytest.raises(DeploymentFailed) as failure:
            deployment.up_domain("example.com", users=users, aliases=aliases)
        text = str(failure.value)
        assert text.startswith("domain-files: exit 1") and "frobnicate" in text, text
        assert "domain-passwords" not in unit_names(com), "the passwords unit runs after the files unit"
        assert changed(before, snapshot(lab)) == [], "files changed in an `up` that a Sieve script failed"
        assert pids(lab) == daemons
        assert [code for code, _ in rcpt_replies(lab, ["caroline@example.com", "sales@example.com"])] == [550, 550]
        assert imap(lab, "carol@example.com")["ok"], "carol's password changed"
        assert leftovers(lab) == []
    finally:
        deployment.up_domain("example.com")
