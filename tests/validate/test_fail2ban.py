"""fail2ban's rendered config judged by fail2ban itself (Debian's package, as on the host).

- `fail2ban-client --test`, the unit's own check (components/services/fail2ban.py),
  accepts the rendered jails in either backend variant, and refuses a jail
  that names a filter fail2ban does not have, or a value it cannot use;
- `fail2ban-regex` with each jail's filter, as the rendered jail names it,
  finds the attacker in lines as Postfix, Dovecot and sshd write them on
  bookworm (tests/fixtures/fail2ban/*.attack.log) and nothing in the lines of
  ordinary mail, logins and deliveries (normal.log).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from components.services import fail2ban, render_host_files
from tests.conftest import stack_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fail2ban"
FAIL2BAN_DIR = Path(fail2ban.FAIL2BAN_DIR)
# Each jail's attack lines, and the addresses they must ban.
ATTACKERS = {
    "postfix-sasl": ["198.51.100.30", "198.51.100.30", "2001:db8:100::30"],
    "postfix": ["198.51.100.30", "198.51.100.20", "198.51.100.20", "198.51.100.20", "2001:db8:100::30"],
    "dovecot": ["198.51.100.30", "2001:db8:100::30"],
    "sshd": ["198.51.100.30", "198.51.100.30"],
}


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    for tool in ("fail2ban-client", "fail2ban-regex"):
        if shutil.which(tool) is None or not FAIL2BAN_DIR.is_dir():
            pytest.skip(f"{tool} is not installed (Debian package fail2ban)")


def stage(tmp_path: Path, backend: str = "logfiles", **overrides) -> Path:
    """/etc/fail2ban as the unit stages it: the installed folder, the rendered files over it."""
    root = tmp_path / "stage"
    shutil.copytree(FAIL2BAN_DIR, root / FAIL2BAN_DIR.relative_to("/"), symlinks=True)
    for f in render_host_files(stack_config("host-mail", **overrides))["fail2ban"]:
        content = fail2ban.backend_file(backend) if f.path == fail2ban.BACKEND_CONF else f.content
        (root / f.path.lstrip("/")).write_text(content)
    return root


def check(root: Path) -> subprocess.CompletedProcess:
    """The unit's check, as the unit runs it (STAGE set, bash -euo pipefail)."""
    [test] = [command for name, command in fail2ban.CHECKS if name]
    env = {"STAGE": str(root), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", test], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("backend", fail2ban.BACKENDS)
def test_fail2ban_accepts_the_rendered_jails(tmp_path, backend):
    result = check(stage(tmp_path, backend, fail2ban_ignore_addresses=["203.0.113.5", "2001:db8:5::/48"],
                         fail2ban_max_retry=3, fail2ban_find_time="30m", fail2ban_ban_time="2h"))
    assert result.returncode == 0, result.stderr


def test_the_jails_as_fail2ban_reads_them(tmp_path):
    root = stage(tmp_path, fail2ban_ignore_addresses=["203.0.113.5"], fail2ban_max_retry=3)
    dump = subprocess.run(["fail2ban-client", "-c", str(root / "etc/fail2ban"), "--dump"], capture_output=True,
                          text=True).stdout
    for jail in ATTACKERS:
        assert f"['add', '{jail}', 'auto']" in dump
        assert f"['set', '{jail}', 'maxretry', 3]" in dump
        assert f"['set', '{jail}', 'addignoreip', '127.0.0.1/8', '::1', '203.0.113.5']" in dump
        assert f"['set', '{jail}', 'addaction', 'nftables-multiport']" in dump


@pytest.mark.parametrize("breakage,words", [
    (("filter = dovecot\n", "filter = dovecot-nonexistent\n"), "dovecot-nonexistent"),
    (("maxretry = 5\n", "maxretry = five\n"), "Wrong value for 'maxretry'"),
    (("banaction = nftables-multiport\n", "banaction = no-such-action\n"), "no-such-action"),
])
def test_the_check_refuses_what_fail2ban_cannot_use(tmp_path, breakage, words):
    root = stage(tmp_path)
    jails = root / fail2ban.JAIL_CONF.lstrip("/")
    jails.write_text(jails.read_text().replace(*breakage))
    result = check(root)
    assert result.returncode == 1 and words in result.stderr, result.stderr


def _jail_filters(tmp_path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string((stage(tmp_path) / fail2ban.JAIL_CONF.lstrip("/")).read_text())
    return {name: parser[name]["filter"] for name in parser.sections()}


@pytest.mark.parametrize("jail", list(ATTACKERS))
def test_each_jails_filter_finds_the_attackers_and_nothing_else(tmp_path, jail):
    filters = _jail_filters(tmp_path)
    assert set(filters) == set(ATTACKERS)

    def banned(log: str) -> list[str]:
        result = subprocess.run(["fail2ban-regex", "-o", "ip", str(FIXTURES / log), filters[jail]],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert banned(f"{jail}.attack.log") == ATTACKERS[jail]
    assert banned("normal.log") == []
