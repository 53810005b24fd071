"""The host scripts, run for real where they can be: quoting, swapping, refusing."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import subprocess
from pathlib import Path

import pytest

from components import units
from components.config import load_config
from components.render import HostFile, here_document, render_template
from components.services import render_host_files

BASE = {"mailstack:domain": "example.com", "mailstack:ipv4": ["192.0.2.10"]}
HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
# Everything a shell could misread: quotes, expansions, a fake here-doc end.
NASTY = "a 'single' \"double\" $HOME `id` $(touch /tmp/pwned) \\ \\n ${x:-y}\nMAILSTACK_EOFX\n  MAILSTACK_EOF\n!#*?[]{}|&;<>\n"


OWNER = "mailstack/example.com"


def cfg(**overrides):
    values = dict(BASE, **{f"mailstack:{k}": v for k, v in overrides.items()})
    return load_config(values)


def all_scripts(c):
    yield "packages", units.packages_unit(c, OWNER).stdin
    yield "tls", units.tls_unit(c, OWNER).stdin
    yield "dkim", units.dkim_unit(c, OWNER).stdin
    yield "accounts", units.accounts_command(c, OWNER)
    for service, files in render_host_files(c).items():
        yield service, units.service_unit(c, OWNER, service, files).stdin


@pytest.mark.parametrize("stack_user", ["root", "deploy"])
def test_every_script_is_valid_bash(stack_user):
    c = cfg(ssh_user=stack_user, users=[{"name": "alice", "sieve": 'require "fileinto";\nfileinto "x";\n'}])
    for name, script in all_scripts(c):
        check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, f"{name}: {check.stderr}"
    for command in (units.packages_unit(c, OWNER).command, units.accounts_command(c, OWNER)):
        assert subprocess.run(["bash", "-n", "-c", command], capture_output=True).returncode == 0


def test_runner_uses_sudo_only_for_other_users():
    assert "sudo" not in units.packages_unit(cfg(), OWNER).command
    assert 'sudo -n bash "$f"' in units.packages_unit(cfg(ssh_user="deploy"), OWNER).command
    assert units.accounts_command(cfg(ssh_user="deploy"), OWNER).startswith("sudo -n bash -c ")


def test_password_hashes_travel_only_on_stdin():
    c = cfg(users=[{"name": "alice", "password_hash": HASH}, {"name": "bob"}])
    assert HASH not in units.accounts_command(c, OWNER)
    assert units.accounts_stdin(c) == f"alice\t{HASH}\nbob\t-\n"


def _me():
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def _run(script: str) -> subprocess.CompletedProcess:
    """Run a unit's script (without the owner check, which would claim this machine) as the runner does."""
    return subprocess.run(["bash", "-c", units.packages_unit(cfg(), OWNER).command], input=script, text=True,
                          capture_output=True)


def test_service_script_installs_exact_content_and_is_idempotent(tmp_path):
    owner, group = _me()
    target = tmp_path / "etc" / "demo" / "demo.conf"
    file = HostFile(path=str(target), content=NASTY, mode="0640", owner=owner, group=group)
    script = units.service_script(cfg(), "demo", [file])

    first = _run(script)
    assert first.returncode == 0, first.stderr
    assert target.read_text() == NASTY
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert not Path("/tmp/pwned").exists()
    assert f"updated {target}" in first.stderr

    mtime = target.stat().st_mtime_ns
    second = _run(script)
    assert second.returncode == 0, second.stderr
    assert "updated" not in second.stderr
    assert target.stat().st_mtime_ns == mtime, "an unchanged file must not be rewritten"
    assert not list(target.parent.glob("*.mailstack-new"))


def test_a_failing_check_swaps_nothing(tmp_path, monkeypatch):
    owner, group = _me()
    target = tmp_path / "live.conf"
    target.write_text("old\n")
    monkeypatch.setitem(units.CHECKS, "demo", ['grep -q "^good" "$STAGE"' + str(target) + ' || { echo "demo: bad config" >&2; exit 1; }'])
    bad = units.service_script(cfg(), "demo", [HostFile(path=str(target), content="bad\n", owner=owner, group=group)])
    result = _run(bad)
    assert result.returncode != 0
    assert "demo: bad config" in result.stderr
    assert target.read_text() == "old\n"
    good = units.service_script(cfg(), "demo", [HostFile(path=str(target), content="good\n", owner=owner, group=group)])
    assert _run(good).returncode == 0
    assert target.read_text() == "good\n"


def test_config_values_reach_the_shell_quoted():
    """The model already refuses shell syntax in these values; the scripts quote them anyway."""
    script = units.tls_unit(cfg(smtpd_tls_cert_file="/etc/ssl/private/mail.example.com.pem"), OWNER).stdin
    assert "cert=/etc/ssl/private/mail.example.com.pem" in script
    assert "-subj /CN=mail.example.com -addext subjectAltName=DNS:mail.example.com" in script
    from components.render import _ENV

    quote = _ENV.filters["q"]
    assert quote("a b$(id)") == "'a b$(id)'"


# --- files travel in here-documents that no content can end ---------------------------------------

HOSTILE = [
    "a\nMAILSTACK_EOF\ntouch MARKER\n",  # the first delimiter, as a line (then what would run)
    "MAILSTACK_EOF\nMAILSTACK_EOF_1\nMAILSTACK_EOF_2\n",  # and the next ones
    "$(touch MARKER)\n`touch MARKER`\n${HOME} $HOME \\$(touch MARKER)\n",  # expansions
    "dos\r\nMAILSTACK_EOF\r\nMAILSTACK_EOF\n",  # carriage returns, then the delimiter after all
    "no final newline",
    "MAILSTACK_EOF",  # the delimiter as the last line, without its newline
    "ends with a backslash \\",
    "",
    "\n",
    "\r",
    "line\n\n\n",
    "'MAILSTACK_EOF'\n MAILSTACK_EOF\nMAILSTACK_EOF \n",  # near misses stay text
    "ünïcödé ✓\ttab\n",
]


def test_staging_writes_hostile_contents_byte_for_byte(tmp_path):
    files = [HostFile(path=f"/etc/demo/{i}/file.conf", content=text) for i, text in enumerate(HOSTILE)]
    staging = units.staging_script(files)
    stage = tmp_path / "stage"
    stage.mkdir()
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + staging], cwd=tmp_path, capture_output=True,
                            env={**os.environ, "STAGE": str(stage)})
    assert result.returncode == 0, result.stderr.decode()
    for file in files:
        staged = stage / file.path.lstrip("/")
        assert staged.read_bytes() == file.content.encode(), file.path
    assert not (tmp_path / "MARKER").exists(), "the content was run by the shell"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_the_same_content_always_gets_the_same_delimiter_and_stays_readable():
    assert here_document("smtpd_banner = $myhostname ESMTP\n") == "'MAILSTACK_EOF'\nsmtpd_banner = $myhostname ESMTP\nMAILSTACK_EOF"
    assert here_document("x\nMAILSTACK_EOF\n") == "'MAILSTACK_EOF_1'\nx\nMAILSTACK_EOF\nMAILSTACK_EOF_1"
    assert here_document("MAILSTACK_EOF\nMAILSTACK_EOF_1\n").startswith("'MAILSTACK_EOF_2'\n")
    c = cfg(users=[{"name": "alice", "sieve": "keep;\n# MAILSTACK_EOF\n"}])
    files = render_host_files(c)
    first = units.service_unit(c, OWNER, "sieve", files["sieve"]).stdin
    assert first == units.service_unit(c, OWNER, "sieve", render_host_files(c)["sieve"]).stdin
    # The config travels in plain sight (the preview shows it), not encoded.
    postfix = units.service_unit(c, OWNER, "postfix", files["postfix"]).stdin
    assert "\nsmtpd_banner = $myhostname ESMTP $mail_name\n" in postfix
    packages = units.packages_unit(c, OWNER).stdin
    assert "<<'MAILSTACK_EOF'\npostfix postfix/main_mailer_type select Internet Site\n" in packages
    assert "postfix postfix/mailname string mail.example.com\nMAILSTACK_EOF\n" in packages


def test_a_user_sieve_script_holding_the_delimiter_is_staged_whole(tmp_path):
    c = cfg(users=[{"name": "alice", "sieve": 'require "fileinto";\nMAILSTACK_EOF\nfileinto "x";\n'}])
    (sieve,) = render_host_files(c)["sieve"]
    script = units.service_unit(c, OWNER, "sieve", [sieve]).stdin  # a ValueError before
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    assert "<<'MAILSTACK_EOF_1'\n" in script


def test_a_nul_byte_is_refused_naming_the_file():
    with pytest.raises(ValueError, match="/etc/x: contains a NUL byte"):
        units.staging_script([HostFile(path="/etc/x", content="a\0b\n")])


# --- accounts: only those mailstack created are touched --------------------------------------------

CHANGERS = ("useradd", "usermod", "userdel", "chpasswd", "groupadd", "gpasswd", "passwd", "doveadm")


def _accounts(tmp_path, stdin: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the accounts script with every command that changes an account replaced by a recorder."""
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "changes.log"
    for name in CHANGERS:
        shim = shims / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >>"{log}"\ncat >/dev/null\n')
        shim.chmod(0o755)
    script = units.accounts_script()
    assert not [name for name in CHANGERS if f"/{name}" in script], "the recorders must not be bypassed"
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], input=stdin, text=True, capture_output=True, env=env)
    return result, (log.read_text().splitlines() if log.exists() else [])


@pytest.mark.parametrize("account", ["root", "daemon"])
def test_accounts_refuse_a_system_account_even_past_the_config_model(tmp_path, account):
    """The config model refuses these names; the script refuses them on its own, before any change."""
    result, changes = _accounts(tmp_path, f"mailstackneverexisted\t-\n{account}\t{HASH}\n")
    assert result.returncode == 1
    assert f"refusing to touch account {account}:" in result.stderr
    assert "mailstack did not create it (it is not in group mailstack-mailbox)" in result.stderr
    assert changes == [], "nothing may change, for no user, when one is refused"
    assert HASH not in result.stderr


def test_accounts_refuse_an_odd_name_before_any_change(tmp_path):
    result, changes = _accounts(tmp_path, "mailstackneverexisted\t-\nbad name\t-\n")
    assert result.returncode == 1 and "refusing user name: bad name" in result.stderr
    assert changes == []


def test_accounts_are_created_with_the_mark(tmp_path):
    result, changes = _accounts(tmp_path, f"mailstackneverexisted\t{HASH}\n")
    # The recorder does not create the account, so the script stops at `id -u`; what it asked for is logged.
    assert changes[:2] == [
        "groupadd --system mailstack-mailbox",
        "useradd --create-home --user-group --groups mailstack-mailbox --shell /usr/sbin/nologin mailstackneverexisted",
    ], changes


# --- the owner check: one stack per host ------------------------------------------------------------


def test_every_unit_starts_with_the_owner_check():
    c = cfg(users=[{"name": "alice", "sieve": "keep;\n"}])
    check = render_template("units/owner.sh.j2", host_name=c.host_name, owner=OWNER)
    for name, script in all_scripts(c):
        if name == "accounts":  # the script is the command line: bash -c '...'
            argv = shlex.split(script)
            assert argv[:2] == ["bash", "-c"] and len(argv) == 3
            script = argv[2]
        assert script.startswith(check), f"{name} does not start with the owner check"
    assert "owner=mailstack/example.com\n" in check
    odd = render_template("units/owner.sh.j2", host_name=c.host_name, owner="mailstack/it's $(odd)")
    assert "owner='mailstack/it'\"'\"'s $(odd)'\n" in odd


def _owner_check(tmp_path, owner: str) -> subprocess.CompletedProcess:
    """The owner check, run against a folder of the test's own in place of /etc/mailstack."""
    check = render_template("units/owner.sh.j2", host_name="mail.example.com", owner=owner)
    assert check.count("/etc/mailstack") >= 4
    check = check.replace("/etc/mailstack", str(tmp_path / "mailstack")) + "echo converging\n"
    return subprocess.run(["bash", "-c", check], capture_output=True, text=True)


def test_the_first_stack_claims_the_host_and_another_is_refused(tmp_path):
    first = _owner_check(tmp_path, "mailstack/example.com")
    assert first.returncode == 0 and first.stdout == "converging\n", first.stderr
    assert (tmp_path / "mailstack" / "owner").read_text() == "mailstack/example.com\n"
    again = _owner_check(tmp_path, "mailstack/example.com")
    assert again.returncode == 0 and again.stdout == "converging\n" and "claimed" not in again.stderr
    other = _owner_check(tmp_path, "mailstack/example.org")
    assert other.returncode == 1 and other.stdout == ""
    assert other.stderr == (
        "mail.example.com is converged by stack mailstack/example.com; this is mailstack/example.org. "
        "One stack per host until multi-domain hosts land: point this stack at another host, or remove "
        "/etc/mailstack/owner on the host if stack mailstack/example.com is gone.\n"
    ).replace("/etc/mailstack", str(tmp_path / "mailstack"))
    assert (tmp_path / "mailstack" / "owner").read_text() == "mailstack/example.com\n"
    assert sorted(p.name for p in (tmp_path / "mailstack").iterdir()) == ["owner"]
