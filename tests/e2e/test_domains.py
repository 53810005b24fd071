"""Two domains on one host, each with its own stack: what keeps them apart, and what they share.

- alice@example.com and alice@example.org are two mailboxes: each gets her
  own mail, in her own Maildir, and logs in with her full address and her own
  password only;
- mail a user of one domain submits is signed with her domain's own DKIM key
  and selector; to the other domain it is delivered on the host itself;
- a user sends only as her own addresses, never as the other domain's;
- an alias may name mailboxes of both domains; a catch-all takes the unknown
  addresses of its domain only; an unknown user of a domain without one is
  refused at RCPT TO;
- deploying one domain stack touches nothing of the other domain and reloads
  no daemon; two domain stacks may deploy at the same time;
- `pulumi destroy` of a domain stack stops its mail and logins, keeps its
  mail and its key on disk, and an `up` brings it all back.

The destroy tests come last and leave the lab as they found it.
"""

from __future__ import annotations

import email
import re
import uuid

import dkim
import pytest

from .conftest import run_client, wait_for
from .deploy import DeploymentFailed
from .stack import DOMAINS, MAILBOX, password, password_hash, sha512_crypt, stack_users
from .test_deployment import pids
from .test_submission import (
    LAPTOP,
    OUTSIDE,
    auth_plain,
    dkim_public_key,
    dkim_tags,
    envelope_dialog,
    lab_dnsfunc,
    receiver_verdict,
    relayed,
    rejected_at_rcpt,
    selector_of,
    split_sink,
    verdict_results,
)

COM, ORG = DOMAINS  # example.com, example.org
ASSEMBLER = "/usr/local/sbin/mailstack-assemble"
ALICES = [f"alice@{d}" for d in DOMAINS]


# --- helpers -----------------------------------------------------------------------------------------


def other(login: str) -> str:
    """The other domain's alice."""
    return ALICES[1 - ALICES.index(login)]


def imap(lab, login: str, secret: str | None = None, folder: str = "INBOX") -> dict:
    return run_client(lab, "client", "imap", host=lab.mx.ipv4, user=login,
                      password=password(login) if secret is None else secret, folder=folder)


def login_comes_to(lab, login: str, accepted: bool, secret: str | None = None) -> bool:
    """Whether the login comes to be accepted (or refused) within a few seconds.

    Dovecot looks at its users file's stamp at most once a second (passwd-file's last_sync_time):
    a change made in the second it last looked is seen in the next one, not before.
    """
    return wait_for(lambda: imap(lab, login, secret=secret)["ok"] == accepted, timeout=5, every=0.3)


def messages(lab, login: str) -> list[str]:
    answer = imap(lab, login)
    assert answer["ok"], answer
    return answer["messages"]


def text(sender: str, to: str, token: str) -> str:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@lab.example.net>\r\n\r\nHello, {token}.\r\n")


def from_peer(lab, to: str, token: str) -> dict:
    return run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from=OUTSIDE,
                      rcpt_to=[to], message=text(OUTSIDE, to, token))


def submit(lab, login: str, rcpt_to: list[str], token: str, mail_from: str | None = None) -> dict:
    """587 from client: STARTTLS, AUTH as `login`, one message from `mail_from` (default: the login)."""
    sender = mail_from or login
    return run_client(lab, "client", "send", host=lab.mx.ipv4, port=587, helo=LAPTOP, mail_from=sender,
                      rcpt_to=rcpt_to, message=text(sender, ", ".join(rcpt_to), token), starttls=True,
                      login=[login, password(login)])


def in_maildir(lab, mailbox: str, token: str) -> list[str]:
    """Messages of the mailbox's Maildir (new/ and cur/ of every folder: not Dovecot's indexes) holding `token`."""
    local, domain = mailbox.split("@")
    found = lab.ssh(f"find /var/vmail/{domain}/{local}/Maildir -type f \\( -path '*/new/*' -o -path '*/cur/*' \\)"
                    f" -exec grep -lF {token!r} {{}} +", check=False).stdout
    return found.split()


def delivered(lab, login: str, token: str) -> list[str]:
    return wait_for(lambda: [m for m in messages(lab, login) if token in m])


def rcpt(lab, recipient: str) -> tuple[int, str]:
    """The reply to RCPT TO on port 25, from peer (EHLO and MAIL FROM accepted)."""
    answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=[
        "EHLO peer.example.net", f"MAIL FROM:<{OUTSIDE}>", f"RCPT TO:<{recipient}>"])
    ehlo, mail, reply = answer["replies"]
    assert ehlo[0] == 250 and mail[0] == 250, answer
    return reply[0], " ".join(reply[1].split())


def files_of(lab, domain: str) -> dict[str, str]:
    """path -> "inode mtime" of everything under the domain's config dir and its mailboxes."""
    out = lab.ssh(f"find /etc/mailstack/domains/{domain} /var/vmail/{domain} -printf '%p\\t%i %T@\\n' | sort").stdout
    return dict(line.split("\t") for line in out.splitlines())


def raw_from_maildir(lab, mailbox: str, token: str) -> bytes:
    (path,) = in_maildir(lab, mailbox, token)
    return lab.ssh(f"cat {path}").stdout.encode()


# --- two alices ------------------------------------------------------------------------------------------


def test_each_alice_receives_her_own_mail_in_her_own_maildir(lab, deployment):
    tokens = {login: f"for-{login}-{uuid.uuid4().hex}" for login in ALICES}
    for login, token in tokens.items():
        assert from_peer(lab, login, token)["ok"]
    for login, token in tokens.items():
        assert delivered(lab, login, token), f"{login} did not get her message"
        assert in_maildir(lab, login, token), f"the message is not under /var/vmail/{login.split('@')[1]}/alice"
        assert not [m for m in messages(lab, other(login)) if token in m], f"{other(login)} got {login}'s mail"
        assert not in_maildir(lab, other(login), token)
    # Two homes, owned by vmail, readable by nobody else.
    for domain in DOMAINS:
        assert lab.ssh(f"stat -c '%U:%G %a' /var/vmail/{domain}/alice").stdout.split() == ["vmail:vmail", "700"]


@pytest.mark.parametrize("login", ALICES)
def test_each_alice_logs_in_with_her_own_password_only(lab, deployment, login):
    assert imap(lab, login)["ok"]
    # The other alice's password is not hers.
    wrong = imap(lab, login, secret=password(other(login)))
    assert not wrong["ok"] and "AUTHENTICATIONFAILED" in wrong["error"].upper(), wrong
    # A bare user name is no login: which alice would it be?
    for secret in (password(login), password(other(login))):
        bare = imap(lab, "alice", secret=secret)
        assert not bare["ok"] and "AUTHENTICATIONFAILED" in bare["error"].upper(), bare
    # The address is the login whatever its case (auth_username_format %Lu).
    assert imap(lab, login.replace("alice", "Alice").replace("example", "Example"), secret=password(login))["ok"]
    # Submission's SASL (Dovecot's) judges the same way.
    for user, secret, code in ((login, password(login), 235), (login, password(other(login)), 535),
                               ("alice", password(login), 535)):
        answer = run_client(lab, "client", "dialog", host=lab.mx.ipv4, port=587, starttls=True, tls_first_ehlo=LAPTOP,
                            lines=[auth_plain(user, secret)])
        assert answer["replies"][0][0] == code, (user, answer["replies"])


# --- across the two domains -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crossed(lab, world, deployment) -> dict[str, dict]:
    """Each alice submits one message to the other alice and to the Internet (the peer's sink).

    {sender: {"answer", "token", "relayed": raw bytes the peer got, "local": raw bytes in the other's Maildir}}.
    """
    since = world.count()
    sent = {}
    for login in ALICES:
        token = uuid.uuid4().hex
        sent[login] = {"answer": submit(lab, login, [other(login), OUTSIDE], token), "token": token}
    arrived = relayed(world, since, [s["token"] for s in sent.values() if s["answer"]["ok"]])
    for login, entry in sent.items():
        entry["relayed"] = arrived.get(entry["token"])
        entry["local"] = (raw_from_maildir(lab, other(login), entry["token"])
                          if delivered(lab, other(login), entry["token"]) else None)
    return sent


@pytest.mark.parametrize("sender", ALICES)
def test_mail_to_the_other_domain_is_delivered_on_the_host(lab, crossed, sender):
    entry = crossed[sender]
    assert entry["answer"]["ok"], entry["answer"]
    assert entry["local"] is not None, f"{other(sender)} never got {sender}'s message"
    # Straight into the other domain's mailbox over LMTP: no SMTP hop back into mx's port 25.
    trail = [" ".join(r.split()) for r in email.message_from_bytes(entry["local"]).get_all("Received") or []]
    assert any("with LMTP" in r for r in trail), trail
    smtp_hops = [r for r in trail if re.search(r"\bwith E?SMTPS?A?\b", r)]
    assert len(smtp_hops) == 1 and "with ESMTPSA" in smtp_hops[0], trail


@pytest.mark.parametrize("sender", ALICES)
def test_each_domain_signs_with_its_own_key(lab, deployment, crossed, sender):
    domain = sender.split("@")[1]
    selector = selector_of(domain)
    for copy in ("local", "relayed"):
        raw = crossed[sender][copy]
        assert raw is not None, f"no {copy} copy of {sender}'s message"
        signed = split_sink(raw)[1] if copy == "relayed" else raw
        tags = dkim_tags(signed)
        assert (tags["d"], tags["s"]) == (domain, selector), (copy, tags)
        asked: list[str] = []
        assert dkim.verify(signed, dnsfunc=lab_dnsfunc(lab, asked)), f"the {copy} copy does not verify"
        assert [name.rstrip(".") for name in asked] == [f"{selector}._domainkey.{domain}"]
    (record,) = lab.dns_txt(f"{selector}._domainkey.{domain}")
    assert "".join(record).endswith("p=" + dkim_public_key(deployment, domain))


@pytest.mark.parametrize("sender", ALICES)
def test_receiver_verdict_for_each_domain_is_spf_dkim_and_dmarc_pass(lab, crossed, sender, tmp_path):
    domain = sender.split("@")[1]
    raw = crossed[sender]["relayed"]
    assert raw is not None, f"{sender}'s message never reached the peer's sink"
    envelope, signed = split_sink(raw)
    assert envelope["mail-from"] == sender and envelope["helo"] == lab.mx_hostname
    message_file = tmp_path / "relayed.eml"
    message_file.write_bytes(signed)
    verdict = receiver_verdict(lab, message_file, envelope["peer"], envelope["mail-from"], envelope["helo"])
    assert verdict_results(verdict) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}, verdict
    assert f"header.d={domain}" in verdict and f"header.from={domain}" in verdict, verdict


@pytest.mark.parametrize("login", ALICES)
def test_alice_may_not_send_as_the_other_domains_alice(lab, deployment, login):
    replies = envelope_dialog(lab, "client", lab.mx.ipv4, 587, LAPTOP, other(login), OUTSIDE,
                              before=(auth_plain(login),), starttls=True)
    assert replies[1][0] == 235, replies
    code, reply = rejected_at_rcpt(replies)
    assert code == 553 and f"<{other(login)}>: Sender address rejected: not owned by user {login}" in reply, reply


# --- aliases, catch-all, unknown users ---------------------------------------------------------------------


def test_alias_delivers_to_a_mailbox_of_each_domain(lab, deployment):
    token = f"team-{uuid.uuid4().hex}"
    assert from_peer(lab, "team@example.com", token)["ok"]
    for target in ("alice@example.com", "dave@example.org"):
        assert delivered(lab, target, token), f"team@example.com did not reach {target}"
    assert not [m for m in messages(lab, "alice@example.org") if token in m]


def test_catch_all_takes_unknown_addresses_of_its_domain_only(lab, deployment):
    unknown, own = f"unknown-{uuid.uuid4().hex}", f"own-{uuid.uuid4().hex}"
    assert from_peer(lab, "unknown@example.org", unknown)["ok"]
    assert from_peer(lab, "alice@example.org", own)["ok"]
    assert delivered(lab, "dave@example.org", unknown), "the catch-all did not get unknown@example.org"
    assert delivered(lab, "alice@example.org", own)
    assert not [m for m in messages(lab, "dave@example.org") if own in m], "the catch-all took alice@'s mail"
    assert not [m for m in messages(lab, "alice@example.org") if unknown in m]


def test_unknown_user_of_a_domain_without_catch_all_is_refused_at_rcpt(lab, deployment):
    code, reply = rcpt(lab, "nobody@example.com")
    assert code == 550 and "5.1.1" in reply and "User unknown" in reply, reply
    # A user of the other domain is no user of this one.
    code, reply = rcpt(lab, "dave@example.com")
    assert code == 550 and "5.1.1" in reply, reply


# --- deploying one domain leaves the other alone --------------------------------------------------------------


def test_redeploying_one_domain_touches_nothing_of_the_other_and_reloads_no_daemon(lab, deployment):
    before_com, daemons = files_of(lab, COM), pids(lab)
    users = stack_users(lab, ORG)
    dave = next(u for u in users if u["name"] == "dave")
    dave["password_hash"] = sha512_crypt("dave.org-New-Secret", "msdavenew")
    try:
        deployment.up_domain(ORG, users=users)
        ran = {run.name for run in deployment.domains[ORG].runs}
        assert ran and all(name.startswith("domain-") for name in ran), ran
        # The change is in force at once; the old password is refused.
        assert login_comes_to(lab, "dave@example.org", True, secret="dave.org-New-Secret")
        assert login_comes_to(lab, "dave@example.org", False)
        # Nothing of example.com was rewritten, not even its date; and no daemon was restarted.
        after_com = files_of(lab, COM)
        assert {p: (before_com.get(p), t) for p, t in after_com.items() if before_com.get(p) != t} == {}
        assert after_com.keys() == before_com.keys()
        assert pids(lab) == daemons, "a daemon was restarted by a domain's user change"
        assert imap(lab, "alice@example.com")["ok"]
    finally:
        deployment.up_domain(ORG)
    assert login_comes_to(lab, "dave@example.org", True), "dave's own password did not come back"
    assert password_hash("dave@example.org") in lab.ssh(f"cat /etc/mailstack/domains/{ORG}/passwd").stdout


def test_two_domain_stacks_deploy_at_the_same_time(lab, deployment):
    new_users = {COM: "erin", ORG: "frank"}
    changed = {}
    for domain, name in new_users.items():
        users = stack_users(lab, domain)
        users.append({"name": name, "password_hash": sha512_crypt(f"{name}-Secret", f"ms{name}")})
        changed[domain] = {"users": users}
    try:
        failures = deployment.up_domains_at_once(changed)
        assert failures == [None, None], failures
        mailboxes = lab.ssh("cat /etc/postfix/mailstack/mailboxes").stdout.split()
        for domain, name in new_users.items():
            assert f"{name}@{domain}" in mailboxes, mailboxes
            assert rcpt(lab, f"{name}@{domain}")[0] == 250
            assert run_client(lab, "client", "imap", host=lab.mx.ipv4, user=f"{name}@{domain}",
                              password=f"{name}-Secret")["ok"]
        # Neither lost the other's earlier users.
        for login in (*ALICES, "carol@example.com", "dave@example.org"):
            assert login in mailboxes, mailboxes
    finally:
        for domain in new_users:
            deployment.up_domain(domain)
    assert rcpt(lab, "erin@example.com")[0] == 550


# --- pulumi destroy of a domain stack (last: it takes example.org away and brings it back) -------------------


def test_destroying_a_domain_that_another_aliases_into_is_refused(lab, deployment):
    # team@example.com names dave@example.org: retiring example.org would break it.
    with pytest.raises(DeploymentFailed) as failure:
        deployment.domains[ORG].destroy()
    assert "example.com" in str(failure.value), failure.value  # the domain that still aliases into it
    # Refused means nothing changed on the host: not even the retired mark, which the next
    # assembly (by any domain's `up`) would otherwise act on.
    assert lab.ssh(f"test -e /etc/mailstack/domains/{ORG}/retired", check=False).returncode != 0
    assert rcpt(lab, "alice@example.org")[0] == 250
    lab.ssh(ASSEMBLER)  # as the next `up` of any domain would run it
    assert rcpt(lab, "alice@example.org")[0] == 250
    deployment.up_domain(ORG)  # what the refused destroy took away (its DNS records) comes back
    assert imap(lab, "alice@example.org")["ok"]


def test_destroyed_domain_refuses_mail_and_logins_keeps_its_data_and_comes_back(lab, deployment):
    kept = f"kept-{uuid.uuid4().hex}"
    assert from_peer(lab, "alice@example.org", kept)["ok"]
    assert delivered(lab, "alice@example.org", kept)
    key = f"/etc/mailstack/domains/{ORG}/dkim/{selector_of(ORG)}.private"
    key_sum = lab.ssh(f"sha256sum {key}").stdout.split()[0]
    deployment.up_domain(COM, aliases=[])  # nothing aliases into example.org any more
    try:
        deployment.domains[ORG].destroy()
        # Mail for example.org is refused, permanently and saying why, on 25 and on 587.
        for recipient in ("alice@example.org", "unknown@example.org"):
            code, reply = rcpt(lab, recipient)
            assert code == 550 and "5.1.2" in reply and "no longer hosted" in reply, reply
        replies = envelope_dialog(lab, "client", lab.mx.ipv4, 587, LAPTOP, "alice@example.com", "alice@example.org",
                                  before=(auth_plain("alice@example.com"),), starttls=True)
        code, reply = rejected_at_rcpt(replies)
        assert code == 550 and "5.1.2" in reply, reply
        # Its users cannot log in.
        for login in ("alice@example.org", "dave@example.org"):
            refused = imap(lab, login)
            assert not refused["ok"] and "AUTHENTICATIONFAILED" in refused["error"].upper(), refused
        # Its mail and its key stay on the host; it is marked retired.
        assert in_maildir(lab, "alice@example.org", kept), "example.org's Maildir lost its mail"
        assert lab.ssh(f"sha256sum {key}").stdout.split()[0] == key_sum
        assert lab.ssh(f"test -e /etc/mailstack/domains/{ORG}/retired", check=False).returncode == 0
        # Its DNS records are gone.
        assert lab.dns_query(ORG, "MX") == []
        # example.com goes on: it receives and its alice logs in.
        token = f"com-still-{uuid.uuid4().hex}"
        assert from_peer(lab, "alice@example.com", token)["ok"]
        assert delivered(lab, "alice@example.com", token)
        mailboxes = lab.ssh("cat /etc/postfix/mailstack/mailboxes").stdout.split()
        assert "alice@example.com" in mailboxes and not [m for m in mailboxes if m.endswith("@example.org")]
    finally:
        deployment.up_domain(ORG)
        deployment.up_domain(COM)
    # `up` again: mail, logins and the old messages are back; so is the alias into example.org.
    assert lab.ssh(f"test -e /etc/mailstack/domains/{ORG}/retired", check=False).returncode != 0
    assert [m for m in messages(lab, "alice@example.org") if kept in m], "alice@example.org's old mail is gone"
    assert lab.ssh(f"sha256sum {key}").stdout.split()[0] == key_sum, "the DKIM key was made anew"
    assert rcpt(lab, "alice@example.org")[0] == 250
    token = f"back-{uuid.uuid4().hex}"
    assert from_peer(lab, "team@example.com", token)["ok"]
    assert delivered(lab, "dave@example.org", token)
    assert re.fullmatch(r"10 mail\.example\.net\.", " ".join(lab.dns_query(ORG, "MX")))
