"""The host scripts, run for real where they can be: quoting, swapping, refusing."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from components import units
from components.config import load_config
from components.render import HostFile, render_host_files

BASE = {"mailstack:domain": "example.com", "mailstack:ipv4": ["192.0.2.10"]}
HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
# Everything a shell could misread: quotes, expansions, a fake here-doc end.
NASTY = "a 'single' \"double\" $HOME `id` $(touch /tmp/pwned) \\ \\n ${x:-y}\nMAILSTACK_EOFX\n  MAILSTACK_EOF\n!#*?[]{}|&;<>\n"


def cfg(**overrides):
    values = dict(BASE, **{f"mailstack:{k}": v for k, v in overrides.items()})
    return load_config(values)


def all_scripts(c):
    yield "packages", units.packages_unit(c).stdin
    yield "tls", units.tls_unit(c).stdin
    yield "dkim", units.dkim_unit(c).stdin
    for service, files in render_host_files(c).items():
        yield service, units.service_unit(c, service, files).stdin


@pytest.mark.parametrize("stack_user", ["root", "deploy"])
def test_every_script_is_valid_bash(stack_user):
    c = cfg(ssh_user=stack_user, users=[{"name": "alice", "sieve": 'require "fileinto";\nfileinto "x";\n'}])
    for name, script in all_scripts(c):
        check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, f"{name}: {check.stderr}"
    for command in (units.packages_unit(c).command, units.accounts_command(c)):
        assert subprocess.run(["bash", "-n", "-c", command], capture_output=True).returncode == 0


def test_runner_uses_sudo_only_for_other_users():
    assert "sudo" not in units.packages_unit(cfg()).command
    assert 'sudo -n bash "$f"' in units.packages_unit(cfg(ssh_user="deploy")).command
    assert units.accounts_command(cfg(ssh_user="deploy")).startswith("sudo -n bash -c ")


def test_password_hashes_travel_only_on_stdin():
    c = cfg(users=[{"name": "alice", "password_hash": HASH}, {"name": "bob"}])
    assert HASH not in units.accounts_command(c)
    assert units.accounts_stdin(c) == f"alice\t{HASH}\nbob\t-\n"


def _me():
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", units.packages_unit(cfg()).command], input=script, text=True, capture_output=True)


def test_service_script_installs_exact_content_and_is_idempotent(tmp_path):
    owner, group = _me()
    target = tmp_path / "etc" / "demo" / "demo.conf"
    file = HostFile(path=str(target), content=NASTY, mode="0640", owner=owner, group=group)
    script = units.service_unit(cfg(), "demo", [file]).stdin

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
    bad = units.service_unit(cfg(), "demo", [HostFile(path=str(target), content="bad\n", owner=owner, group=group)])
    result = _run(bad.stdin)
    assert result.returncode != 0
    assert "demo: bad config" in result.stderr
    assert target.read_text() == "old\n"
    good = units.service_unit(cfg(), "demo", [HostFile(path=str(target), content="good\n", owner=owner, group=group)])
    assert _run(good.stdin).returncode == 0
    assert target.read_text() == "good\n"


def test_the_here_document_marker_cannot_hide_in_a_file():
    with pytest.raises(ValueError, match="MAILSTACK_EOF"):
        units.service_unit(cfg(), "demo", [HostFile(path="/etc/x", content="a\nMAILSTACK_EOF\nrm -rf /\n")])


def test_config_values_reach_the_shell_quoted():
    """The model already refuses shell syntax in these values; the scripts quote them anyway."""
    script = units.tls_unit(cfg(smtpd_tls_cert_file="/etc/ssl/private/mail.example.com.pem")).stdin
    assert "cert=/etc/ssl/private/mail.example.com.pem" in script
    assert "-subj /CN=mail.example.com -addext subjectAltName=DNS:mail.example.com" in script
    from components.render import _ENV

    quote = _ENV.filters["q"]
    assert quote("a b$(id)") == "'a b$(id)'"
