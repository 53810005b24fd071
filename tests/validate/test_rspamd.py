"""rspamd's rendered config judged by rspamd itself (Debian's package, as on the host).

The stage is built as the unit builds it (Debian's /etc/rspamd, the rendered
files over it) and read by `rspamadm configtest` (the unit's own check) and
`rspamadm configdump` (what rspamd makes of it): the workers listen where the
contract says (loopback only), the actions are the keys', greylisting follows
its keys, the controller's password reaches rspamd from the unit's stdin and
no file. The checks run in private namespaces with an overlay over /etc (the
host has the vmail group, which the learning socket names; this machine need
not), as `python -m components check` runs them.
"""

from __future__ import annotations

import grp
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from components import check
from components.services import rspamd
from tests.conftest import stack_config

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    if shutil.which("rspamadm") is None or not Path(rspamd.RSPAMD_DIR).is_dir():
        pytest.skip("rspamadm is not installed (Debian package rspamd)")
    if os.geteuid() != 0:
        pytest.skip("the checks run as root, as on the host")
    problem = check.namespaces_problem()
    if problem:
        pytest.skip(problem)


def stage(tmp_path: Path, **overrides) -> Path:
    return check.build_stage(tmp_path / "stage", stack_config("host-mail", **overrides), ["rspamd"])


def in_host(tmp_path: Path, stage_dir: Path, script: str) -> subprocess.CompletedProcess:
    """`script` with STAGE set, in private namespaces where /etc is an overlay with the host's vmail group."""
    scratch = tmp_path / "host"
    scratch.mkdir(exist_ok=True)
    whole = "\n".join([
        "set -euo pipefail",
        check.host_setup([], scratch),
        f"STAGE={shlex.quote(str(stage_dir))}",
        script,
    ])
    return subprocess.run(["unshare", "-m", "-n", "bash", "-c", whole], capture_output=True, text=True)


def configtest(tmp_path: Path, stage_dir: Path, password: str | None = None) -> subprocess.CompletedProcess:
    """The unit's checks, as it runs them (the password, when given, read from stdin first)."""
    read = f"rspamd_password={shlex.quote(password)}\n" if password else ""
    return in_host(tmp_path, stage_dir, read + "\n".join(command for _, command in rspamd.CHECKS))


def configdump(tmp_path: Path, stage_dir: Path, section: str) -> str:
    d = f"$STAGE{rspamd.RSPAMD_DIR}"
    result = in_host(
        tmp_path, stage_dir,
        f'rspamadm --var=CONFDIR="{d}" --var=LOCAL_CONFDIR="{d}" configdump -c "{d}/rspamd.conf" {section} 2>/dev/null',
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_configtest_accepts_the_rendered_files(tmp_path):
    root = stage(tmp_path)
    result = configtest(tmp_path, root)
    assert result.returncode == 0, result.stderr


def test_configtest_refuses_a_broken_file(tmp_path):
    """The check can fail: a local.d file rspamd cannot parse stops the unit before the swap."""
    root = stage(tmp_path)
    (root / "etc/rspamd/local.d/greylist.conf").write_text("timeout = ;\n{\n")
    result = configtest(tmp_path, root)
    assert result.returncode != 0
    assert "greylist.conf" in result.stderr or "parse" in result.stderr, result.stderr


def test_workers_listen_on_loopback_only(tmp_path):
    dump = configdump(tmp_path, stage(tmp_path), "worker")
    binds = [line.strip() for line in dump.splitlines() if "11332" in line or "11333" in line or "11334" in line
             or "learn.sock" in line]
    assert 'bind_socket = "127.0.0.1:11333";' in binds
    assert 'bind_socket = "127.0.0.1:11332";' in binds
    assert '"127.0.0.1:11334",' in binds and '"[::1]:11334",' in binds
    assert f'"{rspamd.LEARN_SOCKET} mode=0660 owner=_rspamd group=vmail",' in binds
    # Debian's "localhost" (every loopback name) is gone for the three workers.
    assert "localhost:1133" not in dump.replace("localhost:11335", "")
    # The milter: the proxy scans itself and marks spam with X-Spam.
    assert "milter = true;" in dump and "self_scan = true;" in dump and 'spam_header = "X-Spam";' in dump
    # The controller trusts no address: secure_ip is empty, so TCP needs the password.
    assert "secure_ip [\n    ]" in dump or "secure_ip []" in dump


def test_actions_are_the_keys(tmp_path):
    dump = configdump(tmp_path, stage(tmp_path, spam_reject_score=20, spam_header_score=9, spam_greylist_score=5),
                      "actions")
    assert "reject = 20;" in dump and "add_header = 9;" in dump and "greylist = 5;" in dump


def test_greylisting_follows_its_keys(tmp_path):
    on = configdump(tmp_path, stage(tmp_path, greylist_delay="10s"), "greylist")
    assert "timeout = 10;" in on and "enabled = true;" in on
    assert "check_authed = false;" in on and "check_local = false;" in on
    off_root = stage(tmp_path / "off", greylisting=False)
    assert "enabled = false;" in configdump(tmp_path / "off", off_root, "greylist")
    assert "greylist" not in configdump(tmp_path / "off", off_root, "actions")
    assert configtest(tmp_path / "off", off_root).returncode == 0


def test_opendkim_signs_and_dmarc_only_scores(tmp_path):
    root = stage(tmp_path)
    assert "enabled = false;" in configdump(tmp_path, root, "dkim_signing")
    assert "enabled = false;" in configdump(tmp_path, root, "arc")
    dmarc = configdump(tmp_path, root, "dmarc")
    assert "reject" not in dmarc and "quarantine" not in dmarc


def test_the_password_comes_from_stdin_into_a_private_file(tmp_path):
    root = stage(tmp_path)
    result = configtest(tmp_path, root, PASSWORD)
    assert result.returncode == 0, result.stderr
    password_file = root / rspamd.PASSWORD_PATH.lstrip("/")
    assert password_file.read_text() == f'password = "{PASSWORD}";\n'
    assert oct(password_file.stat().st_mode & 0o777) == "0o640"
    assert password_file.stat().st_uid == 0 and password_file.stat().st_gid == grp.getgrnam("_rspamd").gr_gid
    dump = configdump(tmp_path, root, "worker")
    assert f'password = "{PASSWORD}";' in dump and 'password = "q1";' not in dump


def test_without_the_key_the_controller_gets_a_random_password_not_debians(tmp_path):
    """Debian's worker-controller.inc sets "q1" (every Debian host's): never left in effect."""
    root = stage(tmp_path)
    assert configtest(tmp_path, root).returncode == 0
    password_file = root / rspamd.PASSWORD_PATH.lstrip("/")
    first = password_file.read_text()
    mark, line = first.splitlines()
    assert mark == rspamd.RANDOM_MARK and line.startswith('password = "') and len(line) > len('password = "";') + 30
    [password] = [p.strip().removeprefix("password = ") for p in configdump(tmp_path, root, "worker").splitlines()
                  if p.strip().startswith("password = ")]
    assert password == line.removeprefix("password = ") != '"q1";'
    # Made once, then kept: the next run stages the same file (no reload for nothing).
    assert configtest(tmp_path, root).returncode == 0
    assert password_file.read_text() == first
    # Another stage (another host) gets another one.
    other = stage(tmp_path / "other")
    assert configtest(tmp_path / "other", other).returncode == 0
    assert (other / rspamd.PASSWORD_PATH.lstrip("/")).read_text() != first
