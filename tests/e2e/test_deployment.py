"""Deploying again: no-op runs, one-setting changes, rejected configs and cut connections.

The lab has three stacks (tests/e2e/stack.py): the host stack, whose units
converge the daemons, and the domain stacks example.com and example.org,
whose units write the domains' own files. Host settings change through the
host stack, users and their Sieve scripts through a domain stack.

The units' promise (docs/design.md, "Host units"): each is idempotent; a service
unit stages its files, checks them with the daemon's own checker, swaps the
changed ones atomically and reloads only that service; a config the checker
rejects changes nothing on the host.

Every test that deploys another config puts the stack's own config back
before it ends, so that the tests after it see the deployment of the
`deployment` fixture. Timings of the deployments are collected in TIMINGS and
written to .lab/deployment-timings-<lab>.json at the end of the module.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from components.config import load_config
from components.services import render_host_files
from tests.program.harness import config_for_pulumi

from . import netns
from .conftest import run_client
from .deploy import DeploymentFailed
from .lab import LAB_NAME, REPO
from .stack import DOMAINS, MAILBOXES, banner_rewrite, host_config, main_cf_rewritten, stack_users

COMMAND = "command:remote:Command"
POSTFIX_UNIT = "host-postfix"
POSTFIX_KEY = f"{COMMAND}::{POSTFIX_UNIT}"
DEFAULT_SIZE = 25_000_000  # components.config: message_size_limit's default
# web, mta-sts and autoconfig: the lab's host has tls: acme, whose domains serve MTA-STS policies and
# the mail client settings file (autoconfig on, the default).
HOST_UNITS = {"packages", "tls", "tables", "opendkim", "policyd-spf", "resolver", "dovecot", "postfix", "fail2ban",
              "web", "rspamd"}
# dkim-key-<selector>: example.com signs with mail, example.org with s2026.
DOMAIN_UNITS = {"dkim-key-mail", "dkim-key-s2026", "dkim-signing", "files", "passwords", "mta-sts", "autoconfig"}
ALICE_SIEVE = "/var/vmail/example.com/alice/.dovecot.sieve"

# Files the units write (the users' Sieve scripts among the mailboxes' files).
# A run that changes nothing must leave every mtime as it was.
WATCHED = (
    "{ find /etc/postfix /etc/postfix-policyd-spf-python /etc/dovecot /etc/opendkim /etc/rspamd"
    " /etc/opendkim.conf /etc/aliases /etc/aliases.db /etc/mailstack"
    " /etc/ssl/private/postfix.cacert.pem /etc/ssl/private/postfix.privkey.pem"
    " -xdev -type f -printf '%p\\t%T@\\n';"
    " find /var/vmail -mindepth 3 -maxdepth 3 -name '.dovecot.sieve' -printf '%p\\t%T@\\n'; } | sort"
)
PIDS = {
    "postfix": "/var/spool/postfix/pid/master.pid",
    "dovecot": "/run/dovecot/master.pid",
    "opendkim": "/run/opendkim/opendkim.pid",
    "rspamd": "/run/rspamd/rspamd.pid",
}

TIMINGS: dict[str, object] = {}


@pytest.fixture(scope="module", autouse=True)
def timings_report():
    yield
    if TIMINGS:
        out = REPO / ".lab" / f"deployment-timings-{LAB_NAME}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(TIMINGS, indent=2) + "\n")
        print(f"\ndeployment timings ({out}):\n{json.dumps(TIMINGS, indent=2)}")


# --- what is on mx ------------------------------------------------------------------------------


def mtimes(lab) -> dict[str, str]:
    out = lab.ssh(WATCHED).stdout
    return dict(line.split("\t") for line in out.splitlines())


def pids(lab, pid_files: dict[str, str] = PIDS) -> dict[str, int]:
    """The daemons' pids (from their pid files), each checked to be a running process."""
    found = {}
    for daemon, pid_file in pid_files.items():
        pid = int(lab.ssh(f"cat {pid_file}").stdout.strip())
        assert lab.ssh(f"kill -0 {pid}", check=False).returncode == 0, f"{daemon} (pid {pid}) is not running"
        found[daemon] = pid
    return found


def sha256(lab, path: str) -> str:
    return lab.ssh(f"sha256sum {path}").stdout.split()[0]


def ehlo_size(lab) -> int:
    """SIZE in mx's EHLO reply to the peer (what a client on the Internet is told)."""
    answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=["EHLO peer.example.net", "QUIT"])
    code, text = answer["replies"][0]
    assert code == 250, answer
    sizes = re.findall(r"^SIZE (\d+)$", text, re.M)
    assert sizes, f"no SIZE in EHLO reply: {text}"
    return int(sizes[0])


def leftovers(lab) -> list[str]:
    """Stage directories and half-swapped files the units may leave behind."""
    out = lab.ssh("ls -d /var/tmp/mailstack-* 2>/dev/null; "
                  "find /etc /var/vmail -xdev -name '*.mailstack-new' 2>/dev/null; true").stdout
    return out.split()


def postconf_is_clean(lab) -> None:
    """The live Postfix config parses without a single warning."""
    result = lab.ssh("postconf -n >/dev/null", check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def rendered_postfix(lab, **overrides) -> dict[str, str]:
    cfg = load_config(config_for_pulumi(host_config(lab, **overrides)))
    return {f.path: f.content for f in render_host_files(cfg)["postfix"]}


def unit_names(deployment) -> list[str]:
    return sorted(run.name for run in deployment.runs)


def run_of(deployment, name: str):
    runs = [run for run in deployment.runs if run.name == name]
    assert len(runs) == 1, f"{name} ran {len(runs)} times: {unit_names(deployment)}"
    return runs[0]


def deploy(deployment, lab, **overrides) -> float:
    """`up` of the host stack with `overrides`; its wall time."""
    started = time.monotonic()
    deployment.up_host(**overrides)
    return round(time.monotonic() - started, 2)


def restore(deployment, lab) -> None:
    """Deploy the host stack's own config again (a test's changes undone on the host)."""
    deploy(deployment, lab)


def message(subject: str) -> str:
    return (f"From: someone@example.net\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4()}@peer.example.net>\r\n\r\nHello from the lab.\r\n")


def assert_mail_reaches_alice(lab) -> None:
    subject = f"still serving {uuid.uuid4()}"
    sent = run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net",
                      mail_from="someone@example.net", rcpt_to=["alice@example.com"], message=message(subject))
    assert sent["ok"], sent
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if lab.ssh(f"grep -rlF {subject!r} /var/vmail/example.com/alice/Maildir/new "
                   "/var/vmail/example.com/alice/Maildir/cur", check=False).stdout:
            return
        time.sleep(1)
    raise AssertionError("the message from peer did not reach alice@example.com's Maildir")


# --- 1. nothing changed: nothing runs, and the scripts themselves change nothing ------------------


def test_second_deployment_runs_nothing_and_every_unit_is_idempotent(lab, deployment):
    host = deployment.host
    first = list(host.runs)
    if any(run.name == "host-packages" for run in first):  # the fixture's deployment, untouched yet
        packages = sum(run.seconds for run in first if run.name == "host-packages")
        TIMINGS["first"] = {
            "wall_seconds": round(host.first_seconds, 2),
            "packages_unit_seconds": round(packages, 2),
            "everything_else_seconds": round(host.first_seconds - packages, 2),
            "ssh_sessions": host.ssh_sessions,
            "units": {run.name: round(run.seconds, 2) for run in first},
            "domain_stacks_seconds": {d: deployment.seconds.get(d) for d in DOMAINS},
        }
    files, daemons = mtimes(lab), pids(lab)
    assert files and "/etc/postfix/main.cf" in files and ALICE_SIEVE in files, files

    # As under `pulumi up` with unchanged inputs: not one command, not one SSH session, in any stack.
    seconds = deploy(deployment, lab)
    for domain in DOMAINS:
        deployment.up_domain(domain)
    TIMINGS["second_no_op"] = {"wall_seconds": seconds, "ssh_sessions": host.ssh_sessions}
    for stack in deployment.all:
        assert stack.runs == [], f"{stack.stack}: {unit_names(stack)}"
        assert stack.ssh_sessions == 0

    # The scripts themselves, run again by hand exactly as the deployment ran them.
    commands = {key.split("::", 1)[1]: entry for stack in deployment.all
                for key, entry in stack.state.items() if key.startswith(COMMAND)}
    expected = {f"host-{unit}" for unit in HOST_UNITS} | {f"domain-{unit}" for unit in DOMAIN_UNITS}
    assert set(commands) == expected, sorted(commands)  # by name: each domain stack has its domain-* units
    for stack in deployment.all:
        for key, entry in stack.state.items():
            if not key.startswith(COMMAND):
                continue
            name, inputs = f"{stack.stack}: {key.split('::', 1)[1]}", entry["inputs"]
            result = lab.ssh(inputs["create"], stdin=inputs.get("stdin"), check=False)
            assert result.returncode == 0, f"{name}: exit {result.returncode}: {result.stderr}"
            said = re.findall(r"^(?:updated|reloaded|restarted|started|generating|created|installing|closed|retired)"
                              r"\b.*$", result.stderr, re.M)
            assert not said, f"{name} did something on a converged host: {said}"
            if "-dkim-key-" in key or key.endswith("-tls"):
                assert result.stdout == entry["outputs"]["stdout"], f"{name} printed another key or fingerprint"

    after = mtimes(lab)
    assert {p: t for p, t in after.items() if files.get(p) != t} == {}, "files rewritten by an idempotent run"
    assert after.keys() == files.keys(), "files appeared or vanished"
    assert pids(lab) == daemons, "a daemon was restarted by an idempotent run"
    assert leftovers(lab) == []


# --- 2. one setting changed: one unit, one file, one reload ------------------------------------------


def test_changing_message_size_limit_runs_postfix_alone_and_reloads_only_postfix(lab, deployment):
    new_size = 31_457_280
    files, daemons = mtimes(lab), pids(lab)
    # An smtpd that served a client stays idle (max_idle) with the config it read:
    # without a reload, the next client would meet it and the old limit.
    assert ehlo_size(lab) == DEFAULT_SIZE
    try:
        seconds = deploy(deployment, lab, message_size_limit=new_size)
        TIMINGS["one_setting_change"] = {"wall_seconds": seconds, "ssh_sessions": deployment.host.ssh_sessions,
                                         "units": {run.name: round(run.seconds, 2) for run in deployment.host.runs}}
        assert unit_names(deployment.host) == [POSTFIX_UNIT]
        assert deployment.host.ssh_sessions == 1
        after = mtimes(lab)
        assert [p for p, t in after.items() if files.get(p) != t] == ["/etc/postfix/main.cf"]
        stderr = run_of(deployment.host, POSTFIX_UNIT).stderr
        assert "updated /etc/postfix/main.cf" in stderr and "reloaded postfix" in stderr, stderr
        assert "restarted postfix" not in stderr, stderr
        now = pids(lab)
        assert now["dovecot"] == daemons["dovecot"] and now["opendkim"] == daemons["opendkim"]
        assert now["postfix"] == daemons["postfix"], "`postfix reload` keeps the master process"
        assert lab.ssh("postconf -h message_size_limit").stdout.strip() == str(new_size)
        assert ehlo_size(lab) == new_size
    finally:
        restore(deployment, lab)
    assert unit_names(deployment.host) == [POSTFIX_UNIT]
    assert ehlo_size(lab) == DEFAULT_SIZE


# --- 3. a config the daemon's checker rejects changes nothing --------------------------------------


def test_invalid_sieve_script_fails_with_sievec_message_and_keeps_the_live_script(lab, deployment):
    before_sum, before_mtime = sha256(lab, ALICE_SIEVE), mtimes(lab)[ALICE_SIEVE]
    users = stack_users(lab, "example.com")
    alice = next(u for u in users if u["name"] == "alice")
    alice["sieve"] = alice["sieve"] + 'frobnicate "INBOX";\n'
    com = deployment.domains["example.com"]
    with pytest.raises(DeploymentFailed) as failure:
        deployment.up_domain("example.com", users=users)
    message_text = str(failure.value)
    assert message_text.startswith("domain-files: exit 1"), message_text
    assert "frobnicate" in message_text and "error" in message_text.lower(), message_text  # sievec's own words
    assert unit_names(com) == ["domain-files"], "only the files unit had new inputs"
    assert sha256(lab, ALICE_SIEVE) == before_sum and mtimes(lab)[ALICE_SIEVE] == before_mtime
    assert leftovers(lab) == []
    # The failed unit was not recorded: the good config is what the state holds, so deploying it runs nothing.
    deployment.up_domain("example.com")
    assert com.runs == []


def test_setting_postconf_rejects_fails_with_postconf_message_and_postfix_keeps_serving(lab, deployment):
    # A truncated ${...} macro is a fatal error to Postfix. The config model
    # refuses it in smtpd_banner, so it comes from a broken rendering here:
    # the checker on the host is the last line of defence.
    bad_banner = "$myhostname ESMTP ${mail_name"
    main_cf = "/etc/postfix/main.cf"
    before_sum, before_mtime, daemons = sha256(lab, main_cf), mtimes(lab)[main_cf], pids(lab)
    try:
        with pytest.raises(DeploymentFailed) as failure, main_cf_rewritten(banner_rewrite(bad_banner)):
            deploy(deployment, lab)
        message_text = str(failure.value)
        assert message_text.startswith(f"{POSTFIX_UNIT}: exit 1"), message_text
        assert "postconf: fatal: macro processing error" in message_text, message_text
        assert "truncated macro reference" in message_text, message_text
        assert sha256(lab, main_cf) == before_sum and mtimes(lab)[main_cf] == before_mtime
        assert pids(lab) == daemons
        assert deployment.host.state[POSTFIX_KEY]["inputs"]["stdin"].count(bad_banner) == 0, "a failed unit was recorded"
        postconf_is_clean(lab)
        assert leftovers(lab) == []
        assert_mail_reaches_alice(lab)
    finally:
        restore(deployment, lab)
    assert deployment.host.runs == []  # the host never left the good config


# --- 4. the connection is cut in the middle of a unit; the next deployment converges ----------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


class Cutter(threading.Thread):
    """Watches mx (its network namespace only) for the postfix unit at `moment`, then cuts it.

    moment "checking": a checker reads the staged config; "swapping": the unit's
    `mv` of a staged file over the live one is about to run (held there by a
    shim, see MV_SHIM). how "connection": kill the SSH session's sshd process,
    as a lost connection does (the remote script runs on until it writes to
    the dead session); "kill": SIGKILL the remote script too (a crash).
    """

    def __init__(self, lab, moment: str, how: str):
        super().__init__(daemon=True)
        self.lab, self.moment, self.how = lab, moment, how
        self.done = threading.Event()
        self.stop = threading.Event()
        self.cut: list[str] = []  # what was killed, for the failure message
        self.remote: list[int] = []  # the unit's processes on mx at the cut

    def _mx_pids(self) -> list[int]:
        return netns.pids(self.lab.mx.netns)

    def _found(self) -> int | None:
        if self.moment == "swapping":
            held = self.lab.run_in("mx", ["test", "-e", f"{HOLD_DIR}/at-swap"], check=False).returncode == 0
            pattern = "mailstack-new"
            if not held:
                return None
        else:
            pattern = "/var/tmp/mailstack-postfix."
        for pid in self._mx_pids():
            line = _cmdline(pid)
            if pattern in line and (self.moment != "checking" or "postfix -c" in line or "postconf -c" in line):
                return pid
        return None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 300
            while not self.stop.is_set() and time.monotonic() < deadline:
                pid = self._found()
                if pid is not None:
                    self._cut(pid)
                    return
                time.sleep(0.02)
        finally:
            self.done.set()

    def _cut(self, pid: int) -> None:
        chain, session = [], pid
        while session > 1 and not _cmdline(session).startswith("sshd:"):
            chain.append(session)
            session = _ppid(session)
        assert session > 1, f"no sshd session above pid {pid}"
        in_mx = set(self._mx_pids())
        # Only this lab's mx is ever touched. A short-lived checker found above may have
        # exited while the namespace was listed: gone is fine, elsewhere is not.
        elsewhere = [p for p in chain if p not in in_mx and Path(f"/proc/{p}").exists()]
        assert session in in_mx and not elsewhere, f"not a process of this lab's mx: {session} {elsewhere}"
        self.remote = self._descendants(session, in_mx)
        if self.how == "kill":
            for victim in reversed(self.remote):  # the script first, so it cannot react
                self._kill(victim)
        self._kill(session)
        if self.moment == "swapping":
            self.lab.run_in("mx", ["rm", "-f", f"{HOLD_DIR}/hold-swap"])  # release the held `mv`

    def _descendants(self, root: int, candidates: set[int]) -> list[int]:
        found, frontier = [], [root]
        while frontier:
            parent = frontier.pop()
            children = [p for p in candidates if _ppid(p) == parent]
            found.extend(children)
            frontier.extend(children)
        return found

    def _kill(self, pid: int) -> None:
        self.cut.append(f"{pid} {_cmdline(pid)[:80]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


HOLD_DIR = "/run/mailstack-e2e"
# Test-only fault injection on mx: /usr/local/bin comes before /usr/bin in
# root's PATH, so the unit's `mv` of a staged Postfix file runs this shim,
# which waits while $HOLD_DIR/hold-swap exists. It changes no behaviour
# otherwise, and is removed at the end of the test.
MV_SHIM = f"""#!/bin/sh
for arg in "$@"; do
  case "$arg" in
    /etc/postfix/*.mailstack-new)
      if [ -e {HOLD_DIR}/hold-swap ]; then
        : >{HOLD_DIR}/at-swap
        while [ -e {HOLD_DIR}/hold-swap ]; do sleep 0.05; done
      fi ;;
  esac
done
exec /usr/bin/mv "$@"
"""


@pytest.fixture
def mv_shim(lab):
    lab.ssh(f"install -d -m 0700 {HOLD_DIR} && cat >/usr/local/bin/mv && chmod 0755 /usr/local/bin/mv", stdin=MV_SHIM)
    try:
        yield
    finally:
        lab.ssh(f"rm -rf /usr/local/bin/mv {HOLD_DIR}")


@pytest.mark.parametrize("moment, how", [
    ("checking", "connection"),
    ("swapping", "connection"),
    ("swapping", "kill"),
])
def test_cut_in_the_middle_of_the_postfix_unit_then_deploying_again_converges(lab, deployment, mv_shim, moment, how):
    new_size = 27_262_976
    old_files, new_files = rendered_postfix(lab), rendered_postfix(lab, message_size_limit=new_size)
    assert [p for p in new_files if old_files[p] != new_files[p]] == ["/etc/postfix/main.cf"]
    recorded = copy.deepcopy(deployment.host.state[POSTFIX_KEY])
    daemons = pids(lab)
    assert ehlo_size(lab) == DEFAULT_SIZE  # leaves an idle smtpd that read the old main.cf

    if moment == "swapping":
        lab.ssh(f": >{HOLD_DIR}/hold-swap")
    cutter = Cutter(lab, moment, how)
    cutter.start()
    try:
        with pytest.raises(DeploymentFailed) as failure:
            deploy(deployment, lab, message_size_limit=new_size)
        assert cutter.done.wait(10) and cutter.cut, "the unit was never cut"
        # The run failed in the postfix unit. With what status is a race: ssh's own 255 when the
        # session dies first, or the script's 137 (SIGKILL) when ssh learns of that first.
        exit_status = re.match(rf"{POSTFIX_UNIT}: exit (-?\d+)", str(failure.value))
        assert exit_status and int(exit_status[1]) != 0, failure.value
        # A failed create is not recorded: the next deployment runs the unit again.
        assert deployment.host.state[POSTFIX_KEY] == recorded

        # What the cut left on mx: each live file is the old or the new one, whole; Postfix parses it.
        _wait_gone(cutter.remote)
        for path, old in old_files.items():
            live = lab.ssh(f"cat {path}").stdout
            assert live in (old, new_files[path]), f"{path} is neither the old nor the new file"
        postconf_is_clean(lab)
        assert pids(lab)["dovecot"] == daemons["dovecot"]
        cut_left = leftovers(lab)

        # Deploying again converges: the unit runs, the new limit is in force for new clients.
        seconds = deploy(deployment, lab, message_size_limit=new_size)
        TIMINGS.setdefault("converge_after_cut", {})[f"{moment}/{how}"] = {
            "wall_seconds": seconds, "left_by_the_cut": cut_left}
        assert unit_names(deployment.host) == [POSTFIX_UNIT]
        stderr = run_of(deployment.host, POSTFIX_UNIT).stderr
        assert re.search(r"^(reloaded|restarted|started) postfix", stderr, re.M), \
            f"the converging run did not apply the change to the running Postfix:\n{stderr}"
        for path, new in new_files.items():
            assert lab.ssh(f"cat {path}").stdout == new, path
        postconf_is_clean(lab)
        assert lab.ssh("postconf -h message_size_limit").stdout.strip() == str(new_size)
        assert ehlo_size(lab) == new_size
        assert leftovers(lab) == [], "the converging run left stage directories or staged files behind"
    finally:
        cutter.stop.set()
        cutter.join(10)
        lab.ssh(f"rm -f {HOLD_DIR}/hold-swap {HOLD_DIR}/at-swap")
        restore(deployment, lab)
    assert ehlo_size(lab) == DEFAULT_SIZE
    assert leftovers(lab) == []


def _wait_gone(remote: list[int], timeout: float = 30) -> None:
    """The unit's processes on mx run on after a cut until they write to it: let them finish."""
    deadline = time.monotonic() + timeout
    while any(netns._running(p) for p in remote) and time.monotonic() < deadline:
        time.sleep(0.2)


# --- 5. the lab as a tool: `python -m tests.e2e.lab up` / `down` ---------------------------------------


def test_lab_command_up_deploys_and_describes_the_lab_and_down_removes_it(lab):
    # A lab of its own (another name, whose namespaces still start with "<lab>-"):
    # it must not fight the session's lab.
    name = f"{LAB_NAME}-up"
    env = dict(os.environ, MAILSTACK_LAB=name, PYTHONPATH=str(REPO))
    env.pop("MAILSTACK_LAB_RUN", None)
    state_file = REPO / ".lab" / f"lab-{name}.json"
    started = time.monotonic()
    up = subprocess.run([sys.executable, "-m", "tests.e2e.lab", "up"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=1200)
    try:
        TIMINGS["lab_command_up_seconds"] = round(time.monotonic() - started, 1)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        state = json.loads(state_file.read_text())
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"  # it holds the TSIG secret and passwords
        printed = up.stdout
        assert state["mx_hostname"] == "mail.example.net" and state["host_stack"]["hostname"] == "mail.example.net"
        assert list(state["domains"]) == list(DOMAINS)
        assert set(state["hosts"]) == {"admin", "mx", "peer", "stranger", "client", "dns"}
        for role, host in state["hosts"].items():
            assert host["netns"] == f"{name}-{role}"
            assert host["ipv4"].startswith("198.51.100.") and host["ipv6"].startswith("2001:db8:100::")
            assert netns.exists(host["netns"]), f"{host['netns']} is not up"
            assert host["netns"] in printed and host["ipv4"] in printed and host["ipv6"] in printed
        users = {u["login"]: (u["password"], tuple(u["addresses"]))
                 for about in state["domains"].values() for u in about["users"]}
        assert users == {m.address: (m.password, m.addresses) for m in MAILBOXES}
        for login, (secret, addresses) in users.items():
            assert login in printed and secret in printed
            assert all(a in printed for a in addresses)
        assert all(d in printed for d in DOMAINS) and "mail.example.net" in printed

        # The lab is running and deployed: each alice logs in over IMAPS from the client host, with lab.json's data.
        client = state["hosts"]["client"]["netns"]
        for domain in DOMAINS:
            alice = next(u for u in state["domains"][domain]["users"] if u["login"] == f"alice@{domain}")
            answer = subprocess.run(
                ["ip", "netns", "exec", client, sys.executable, str(Path(__file__).parent / "mailclient.py"), "imap",
                 json.dumps({"host": state["hosts"]["mx"]["ipv4"], "user": alice["login"],
                             "password": alice["password"]})],
                capture_output=True, text=True, timeout=120)
            assert json.loads(answer.stdout)["ok"], answer.stdout + answer.stderr
    finally:
        down = subprocess.run([sys.executable, "-m", "tests.e2e.lab", "down"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if ns.startswith(f"{name}-")]
    assert left == [], f"namespaces left after down: {left}"
    assert not state_file.exists()
    assert not Path(f"/var/tmp/mailstack-lab-{name}").exists()
    assert netns.exists(lab.mx.netns), "down of another lab touched the session's lab"
