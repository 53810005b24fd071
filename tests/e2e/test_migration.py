"""A host of the single-domain layout, moved to the multi-domain layout without losing mail.

The previous layout (commit OLD_LAYOUT: one stack per host, a system account
per user in group mailstack-mailbox, mail in /home/<user>/Maildir, logins
by bare user name) is deployed by its own program, from a git worktree of
that commit, onto a bare mx of a lab of this module's own. Mail is delivered
to its users (alice's Sieve script files one message into System). Then the
current program takes the host over, as README "Moving a host to the
multi-domain layout" tells: the host stack with mailstack:adopt (and
soft_bounce for the window), then the domain stack that keeps the old
stack's name, with the same users and password hashes. Afterwards:

- every message is there over IMAP, logged in with the full address, with
  the same UIDVALIDITY, UIDs and flags (no client downloads anything again,
  read mail stays read);
- new mail is delivered; mail sent during the window was deferred (4xx);
- the old accounts are locked, their Maildirs kept as Maildir.migrated, and
  the bare user name no longer logs in;
- the DKIM key is the old one (its published record stays valid);
- running the files unit again moves nothing, and finishes a move that
  stopped halfway.

The lab: the session's lab is deployed by the other e2e tests, so this module
brings up a lab of its own, named "<MAILSTACK_LAB>-mig", in a subprocess
(`tests.e2e.lab` names everything after MAILSTACK_LAB), and takes down that
lab only.

Run it alone: MAILSTACK_LAB=<name> python -m pytest tests/e2e/test_migration.py
It may also run as a script on a lab host: `python -m tests.e2e.test_migration
imap '{...}'` (the IMAP reader below, used from the client namespace).
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The commit before the multi-domain work: the single-domain layout.
OLD_LAYOUT = "ed56c38"
OLD_STACK = "example.com"  # the old stack; the domain stack keeps its name
OLD_OWNER = f"mailstack/{OLD_STACK}"
HOST_STACK = "host-mail"
DOMAIN = "example.com"
HOSTNAME = "mail.example.com"  # the host keeps its name
USERS = {  # name -> (password, addresses)
    "alice": ("alice-Secret-1", ["alice@example.com", "bob@example.com"]),
    "carol": ("carol-Secret-2", ["carol@example.com"]),
}
# The guide's script, for this host's name: Postfix's error reports into System.
REPORT_SIEVE = """require [
  "fileinto", # Put mail in dirs
  "mailbox"]; # Create dirs

if allof (
  address :matches :all "from" "MAILER-DAEMON@mail.example.com",
  header :matches "subject" "Postfix SMTP server: errors from *") {
    fileinto :create "System";
}
"""
REPORT_SUBJECT = "Postfix SMTP server: errors from unknown[198.51.100.30]"


# --- reading a mailbox over IMAP, from the client namespace --------------------------------------------


def imap_folders(host: str, user: str, password: str, folders: list[str]) -> dict[str, Any]:
    """Log in over IMAPS; each folder's UIDVALIDITY and its messages as [uid, subject, flags]."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the lab's self-signed certificate
    client = imaplib.IMAP4_SSL(host, 993, ssl_context=context, timeout=30)
    try:
        try:
            client.login(user, password)
        except imaplib.IMAP4.error as err:
            return {"ok": False, "error": str(err)}
        answer: dict[str, Any] = {"ok": True, "folders": {}}
        for folder in folders:
            status, _ = client.select(f'"{folder}"', readonly=True)
            if status != "OK":
                answer["folders"][folder] = None
                continue
            validity = int(client.response("UIDVALIDITY")[1][0])
            messages = []
            status, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            for part in data:
                if isinstance(part, tuple):
                    uid = int(re.search(rb"UID (\d+)", part[0])[1])
                    # \Recent belongs to the session (RFC 3501), not to the message.
                    flags = sorted(f for f in re.search(rb"FLAGS \(([^)]*)\)", part[0])[1].decode().split()
                                   if f != "\\Recent")
                    subject = part[1].decode("utf-8", "replace").partition(":")[2].strip()
                    messages.append([uid, subject, flags])
            answer["folders"][folder] = {"uidvalidity": validity, "messages": sorted(messages)}
        return answer
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


if __name__ == "__main__":  # `python -m tests.e2e.test_migration imap JSON` on a lab host
    print(json.dumps(imap_folders(**json.loads(sys.argv[2]))))
    sys.exit(0)


import pytest  # noqa: E402 (the script above runs without pytest)

from .conftest import _why_no_lab, run_client, wait_for  # noqa: E402
from .deploy import Deployment, DeploymentFailed, StackExports  # noqa: E402
from .lab import LAB_NAME, REPO, Host, Lab  # noqa: E402
from .stack import HOST_SECRET_KEYS, DOMAIN_SECRET_KEYS, acme_settings, host_config, sha512_crypt  # noqa: E402
from .world import make_world  # noqa: E402

MIG_LAB = f"{LAB_NAME}-mig"


# --- the lab of this module --------------------------------------------------------------------------------


def _lab_env() -> dict[str, str]:
    env = dict(os.environ, MAILSTACK_LAB=MIG_LAB, PYTHONPATH=str(REPO))
    env.pop("MAILSTACK_LAB_RUN", None)
    return env


def _lab_from_state(state: dict[str, Any]) -> Lab:
    """This process's handle on the lab the subprocess brought up (never used to take it down:
    `Lab.down` and `write_state` work on the session's lab's state file)."""
    lab = Lab(state["mx_hostname"], tuple(z for z in state["zones"] if not z.endswith(".arpa")),
              Path(state["run_dir"]))
    # The lab module names hosts after MAILSTACK_LAB, which is the session's here.
    lab.hosts = {role: Host(**host) for role, host in state["hosts"].items()}
    lab.lan_netns = state["lan_netns"]
    lab.mx_host_key, lab.tsig_secret = state["mx_host_key"], state["tsig"]["secret"]
    lab.pids, lab.timings = state["pids"], state["timings"]
    return lab


@pytest.fixture(scope="module")
def old_worktree():
    """A git worktree of the previous layout, made from this repository's history, removed afterwards."""
    probe = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{OLD_LAYOUT}^{{commit}}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"commit {OLD_LAYOUT} (the single-domain layout) is not in this clone's history "
                    "(a shallow clone?): fetch it to run the migration test")
    with tempfile.TemporaryDirectory(prefix="mailstack-old-layout-") as tmp:
        tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), OLD_LAYOUT],
                       check=True, capture_output=True, text=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           capture_output=True, text=True)


@pytest.fixture(scope="module")
def mig_lab():
    """A lab of this module's own, mx under the old layout's host name; only it is taken down."""
    reason = _why_no_lab()
    if reason:
        pytest.skip(reason)
    state_file = REPO / ".lab" / f"lab-{MIG_LAB}.json"
    up = subprocess.run(
        [sys.executable, "-c", f"from tests.e2e.lab import Lab; Lab(mx_hostname={HOSTNAME!r}).up()"],
        cwd=REPO, env=_lab_env(), capture_output=True, text=True, timeout=900)
    try:
        assert up.returncode == 0, f"lab {MIG_LAB} did not come up:\n{up.stdout[-2000:]}{up.stderr[-3000:]}"
        lab = _lab_from_state(json.loads(state_file.read_text()))
        make_world(lab, detached=True)  # the peer: proper DNS and a mail server; stopped by `down`
        yield lab
    finally:
        if os.environ.get("MAILSTACK_LAB_KEEP") != "1":
            subprocess.run([sys.executable, "-m", "tests.e2e.lab", "down"], cwd=REPO, env=_lab_env(),
                           capture_output=True, text=True, timeout=300)


# --- the old layout, deployed by its own program ------------------------------------------------------------

# Runs in the old worktree: its own lab handle (same namespaces: the same MAILSTACK_LAB), its own
# mock deployer and program. Reads {"lab", "config", "secret_keys", "stack"} on stdin; prints
# each command unit's stdout.
OLD_DEPLOYER = """
import json, sys
from pathlib import Path
from tests.e2e.lab import Lab
from tests.e2e.deploy import Deployment
job = json.load(sys.stdin)
state = job["lab"]
lab = Lab("example.com", state["mx_hostname"], tuple(z for z in state["zones"] if not z.endswith(".arpa")),
          Path(state["run_dir"]))
assert {r: h.netns for r, h in lab.hosts.items()} == {r: h["netns"] for r, h in state["hosts"].items()}
lab.mx_host_key, lab.tsig_secret, lab.pids = state["mx_host_key"], state["tsig"]["secret"], state["pids"]
deployment = Deployment(lab)
deployment.up(job["config"], job["secret_keys"], stack=job["stack"])
print(json.dumps({run.name: run.stdout for run in deployment.runs}))
"""


def password_hash(name: str) -> str:
    """The same hash in the old stack and in the new one (fixed salt: the same on every run)."""
    return sha512_crypt(USERS[name][0], f"mig{name}")


def old_config(lab: Lab) -> dict[str, Any]:
    """The single-domain stack as the old layout's README had it (its e2e stack): the host
    keys of today's host stack that it knew (no postmaster_address, no ACME or DNSSEC: its
    certificate was self-signed; no fail2ban, no spam filter), with the domain and its users."""
    values = host_config(lab, hostname=HOSTNAME)
    for key in ("postmaster_address", "dnssec", *acme_settings(lab)):
        del values[f"mailstack:{key}"]
    for key in [key for key in values if key.startswith(("mailstack:fail2ban", "mailstack:spam_",
                                                           "mailstack:greylist"))]:
        del values[key]
    return {"mailstack:domain": DOMAIN, **values, "mailstack:users": users()}


def users() -> list[dict[str, Any]]:
    return [{"name": name, "password_hash": password_hash(name), "addresses": addresses,
             **({"sieve": REPORT_SIEVE} if name == "alice" else {})}
            for name, (_, addresses) in USERS.items()]


def domain_config() -> dict[str, Any]:
    """The old stack's config rewritten to a domain stack's keys: the same users and hashes."""
    return {"mailstack:domain": DOMAIN, "mailstack:host_stack": HOST_STACK, "mailstack:users": users()}


def deploy_old_layout(lab: Lab, tree: Path) -> dict[str, str]:
    job = {"lab": json.loads((REPO / ".lab" / f"lab-{MIG_LAB}.json").read_text()), "config": old_config(lab),
           "secret_keys": ["mailstack:ssh_private_key", "mailstack:ssh_host_key", "mailstack:users"],
           "stack": OLD_STACK}
    env = dict(_lab_env(), PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", OLD_DEPLOYER], cwd=tree, env=env, input=json.dumps(job),
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"the old layout's deployment failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- mail ------------------------------------------------------------------------------------------------


def send(lab: Lab, to: str, subject: str, sender: str = "someone@example.net") -> dict:
    message = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{uuid.uuid4()}@peer.example.net>\r\n\r\nKept across the move.\r\n")
    return run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net",
                      mail_from="someone@example.net", rcpt_to=[to], message=message)


def read(lab: Lab, login: str, name: str, folders: tuple[str, ...] = ("INBOX",)) -> dict[str, Any]:
    """`login`'s folders over IMAPS from the client host; `name` is the user whose password it is."""
    args = {"host": lab.mx.ipv4, "user": login, "password": USERS[name][0], "folders": list(folders)}
    result = lab.run_python("client", ["-m", "tests.e2e.test_migration", "imap", json.dumps(args)], timeout=120)
    return json.loads(result.stdout)


def subjects(answer: dict[str, Any], folder: str) -> list[str]:
    about = answer.get("folders", {}).get(folder) if answer.get("ok") else None
    return [subject for _, subject, _ in about["messages"]] if about else []


@dataclass
class Move:
    """What the move did, step by step, for the tests below to check."""

    lab: Lab
    before: dict[str, dict[str, Any]] = field(default_factory=dict)  # login -> imap_folders() answer
    subjects: dict[str, list[str]] = field(default_factory=dict)  # name -> subjects delivered before
    old_dkim: str = ""
    refused_without_adopt: str = ""
    window_reply: dict = field(default_factory=dict)
    host: Deployment | None = None
    domain: Deployment | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def move(mig_lab, old_worktree) -> Move:
    lab = mig_lab
    done = Move(lab)
    clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        done.seconds[step] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    # 1. The old layout, and mail for its users: each logs in as the bare user name there.
    outputs = deploy_old_layout(lab, old_worktree)
    done.old_dkim = next(out.strip() for name, out in outputs.items() if name.endswith("-dkim"))
    lap("old layout deployed")
    token = uuid.uuid4().hex[:8]
    done.subjects = {"alice": [f"first {token}", f"second {token}", f"to bob {token}"],
                     "carol": [f"for carol {token}"]}
    for subject in done.subjects["alice"][:2]:
        assert send(lab, "alice@example.com", subject)["ok"]
    assert send(lab, "bob@example.com", done.subjects["alice"][2])["ok"]
    assert send(lab, "carol@example.com", done.subjects["carol"][0])["ok"]
    report = f"{REPORT_SUBJECT} {token}"
    assert send(lab, "alice@example.com", report, sender="MAILER-DAEMON@mail.example.com")["ok"]
    folders = {"alice": ("INBOX", "System"), "carol": ("INBOX",)}
    read_one = done.subjects["alice"][0]  # alice has read this one: it must stay read
    for name, expected in done.subjects.items():
        answer = wait_for(lambda n=name, e=expected: (a := read(lab, n, n, folders[n]))["ok"]
                          and set(e) <= set(subjects(a, "INBOX"))
                          and (n != "alice" or report in subjects(a, "System")) and a, timeout=60)
        assert answer, f"the old layout did not deliver {name}'s mail: {read(lab, name, name, folders[name])}"
        done.before[name] = answer
    lab.ssh(f"doveadm flags add -u alice '\\Seen' mailbox INBOX header subject {read_one!r}")
    done.before["alice"] = read(lab, "alice", "alice", folders["alice"])
    seen = [flags for _, s, flags in done.before["alice"]["folders"]["INBOX"]["messages"] if s == read_one]
    assert seen == [["\\Seen"]], done.before["alice"]
    lap("mail delivered under the old layout")

    # 2. Without mailstack:adopt the host stack refuses the old layout's host.
    refused = Deployment(lab, HOST_STACK, StackExports())
    try:
        refused.up(host_config(lab, hostname=HOSTNAME, postmaster_address="alice@example.com"), HOST_SECRET_KEYS)
    except DeploymentFailed as err:
        done.refused_without_adopt = str(err)

    # 3. The host stack adopts the host; for the window, rejects are 4xx.
    exports = StackExports()
    done.host = Deployment(lab, HOST_STACK, exports)
    done.host.up(host_config(lab, hostname=HOSTNAME, postmaster_address="alice@example.com", adopt=OLD_OWNER,
                             soft_bounce=True, testing=True), HOST_SECRET_KEYS)
    lap("host stack up (adopt)")
    done.window_reply = send(lab, "alice@example.com", f"during the window {token}")

    # 4. The domain stack that keeps the old stack's name: it takes over the accounts' mail and the key.
    done.domain = Deployment(lab, OLD_STACK, exports)
    done.domain.up(domain_config(), DOMAIN_SECRET_KEYS)
    lap("domain stack up (mail moved)")
    timings = REPO / ".lab" / f"migration-timings-{MIG_LAB}.json"
    timings.write_text(json.dumps(done.seconds, indent=2) + "\n")
    return done


# --- the tests -------------------------------------------------------------------------------------------


def test_host_stack_without_adopt_refuses_the_old_layouts_host(move):
    assert "single-domain stack mailstack/example.com" in move.refused_without_adopt, move.refused_without_adopt
    assert "mailstack:adopt" in move.refused_without_adopt


def test_the_host_stack_records_itself_and_keeps_the_old_claim(move):
    lab = move.lab
    assert lab.ssh("cat /etc/mailstack/host").stdout.strip() == f"mailstack/{HOST_STACK}"
    assert lab.ssh("cat /etc/mailstack/owner.pre-multidomain").stdout.strip() == OLD_OWNER
    assert lab.ssh("test -e /etc/mailstack/owner", check=False).returncode != 0


def test_mail_sent_in_the_window_is_deferred_not_bounced(move):
    # Between the two stacks example.com is hosted by nobody: soft_bounce turns the reject into 4xx.
    reply = move.window_reply
    assert not reply["ok"] and 400 <= reply["code"] < 500, reply


@pytest.mark.parametrize("name", list(USERS))
def test_every_message_is_readable_with_the_full_address_with_the_same_uids(move, name):
    folders = tuple(move.before[name]["folders"])
    after = read(move.lab, f"{name}@{DOMAIN}", name, folders)
    assert after["ok"], f"{name}@{DOMAIN} cannot log in after the move: {after}"
    for folder in folders:
        before, now = move.before[name]["folders"][folder], after["folders"][folder]
        assert before is not None and before["messages"], f"nothing was delivered to {name}'s {folder} before"
        assert now == before, f"{name}'s {folder} changed in the move (UIDVALIDITY or UIDs): {before} -> {now}"
    for subject in move.subjects[name]:
        assert subject in subjects(after, "INBOX")


def test_new_mail_is_delivered_into_the_moved_mailbox(move):
    lab, subject = move.lab, f"after the move {uuid.uuid4().hex[:8]}"
    sent = send(lab, "alice@example.com", subject)
    assert sent["ok"], (sent.get("code"), sent.get("error"))
    answer = wait_for(lambda: (a := read(lab, "alice@example.com", "alice")) and subject in subjects(a, "INBOX") and a)
    assert answer, "new mail did not reach alice@example.com"
    old_uids = [uid for uid, _, _ in move.before["alice"]["folders"]["INBOX"]["messages"]]
    new_uid = next(uid for uid, s, _ in answer["folders"]["INBOX"]["messages"] if s == subject)
    assert new_uid > max(old_uids)
    assert lab.ssh(f"grep -rlF {subject!r} /var/vmail/example.com/alice/Maildir/new "
                   "/var/vmail/example.com/alice/Maildir/cur").stdout.strip()


@pytest.mark.parametrize("name", list(USERS))
def test_old_accounts_are_locked_and_their_maildir_kept(move, name):
    lab = move.lab
    shadow = lab.ssh(f"getent shadow {name}").stdout.strip().split(":")
    assert shadow[1].startswith("!"), f"{name}'s password is not locked"
    assert shadow[7] == "1", f"{name}'s account has not expired (expire field: {shadow[7]!r})"
    assert lab.ssh(f"id -nG {name}").stdout.split().count("mailstack-mailbox") == 1  # the account stays
    kept = lab.ssh(f"find /home/{name}/Maildir.migrated -type f -regex '.*/\\(cur\\|new\\)/.*' | wc -l").stdout.strip()
    assert int(kept) >= 1, f"/home/{name}/Maildir.migrated holds no mail"
    assert lab.ssh(f"test -e /home/{name}/Maildir", check=False).returncode != 0
    owner = lab.ssh(f"stat -c %U /var/vmail/example.com/{name}/Maildir").stdout.strip()
    assert owner == "vmail"
    assert lab.ssh(f"find /var/vmail/example.com/{name} ! -user vmail | wc -l").stdout.strip() == "0"


def test_the_bare_user_name_no_longer_logs_in(move):
    answer = read(move.lab, "alice", "alice")
    assert not answer["ok"], "alice logs in without her domain after the move"


def test_the_dkim_key_is_the_old_one(move):
    new = next(run.stdout.strip() for run in move.domain.runs if "-dkim-key-" in run.name)
    assert move.old_dkim and new == move.old_dkim, "the domain stack made a new DKIM key: the published record breaks"
    assert move.lab.ssh("test -s /etc/opendkim/mail.private").returncode == 0  # the old file stays


def test_the_files_unit_said_what_it_moved_and_a_second_run_moves_nothing(move):
    files = next(run for run in move.domain.runs if run.name.endswith("-files"))
    for name in USERS:
        assert f"moved the mail of account {name} to {name}@{DOMAIN}" in files.stderr, files.stderr
    # Run the files unit again, exactly as deployed (the deployer would skip it: nothing changed).
    inputs = next(v["inputs"] for k, v in move.domain.state.items() if k.endswith("-files"))
    listing = "find /var/vmail/example.com /home -path '*Maildir*' -type f -printf '%p %s\\n' | sort"
    before = move.lab.ssh(listing).stdout
    again = move.lab.ssh(inputs["create"], stdin=inputs["stdin"], check=False)
    assert again.returncode == 0, again.stderr
    assert "moved the mail" not in again.stderr and "warning" not in again.stderr, again.stderr
    assert move.lab.ssh(listing).stdout == before


def test_a_move_stopped_between_its_renames_is_finished_by_the_next_run(move):
    # As if the unit had been cut off after keeping the original and before renaming the copy in.
    lab = move.lab
    inputs = next(v["inputs"] for k, v in move.domain.state.items() if k.endswith("-files"))
    lab.ssh("mv /var/vmail/example.com/carol/Maildir /var/vmail/example.com/carol/Maildir.mailstack-new")
    again = lab.ssh(inputs["create"], stdin=inputs["stdin"], check=False)
    assert again.returncode == 0, again.stderr
    assert "moved the mail of account carol to carol@example.com" in again.stderr, again.stderr
    assert "account alice" not in again.stderr
    after = read(lab, "carol@example.com", "carol")
    assert after["ok"] and after["folders"]["INBOX"] == move.before["carol"]["folders"]["INBOX"]


