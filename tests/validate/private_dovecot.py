"""A private Dovecot instance made of mailstack's rendered config, for the tests on this machine.

It reads the host-mail fixture stack's rendered Dovecot files with the host's
paths moved under a temporary folder and the vmail account replaced by
`nobody` (there is no vmail account here); its own base_dir, state_dir and
log. Starting it switches users: the tests that use it need root.
tests/validate/test_dovecot_quota.py and test_dovecot_spam.py use it.
"""

from __future__ import annotations

import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components import paths
from components.services import render_host_files
from tests.conftest import stack_config

LDA = "/usr/lib/dovecot/dovecot-lda"


def moved_paths(root: Path) -> dict[str, str]:
    """What the rendered files name on a host, and what they name in the instance under `root`."""
    return {
        paths.DOVECOT_USERS: f"{root}/users",
        paths.VMAIL_DIR: f"{root}/vmail",
        paths.QUOTA_STATUS_SOCKET.host: f"{root}/quota-status",
        paths.QUOTA_WARNING_SCRIPT: f"{root}/quota-warning",
        paths.SPAM_SIEVE_DIR: f"{root}/sieve-spam",
        paths.DEFAULT_SIEVE_DIR: f"{root}/sieve",
        paths.SIEVE_PIPE_DIR: f"{root}/sieve-pipe",
        "uid=vmail gid=vmail": "uid=nobody gid=nogroup",
        f"user = {paths.VMAIL_USER}": "user = nobody",
        # The quota warning script delivers with this instance's config.
        f"{LDA} ": f"{LDA} -c {root}/dovecot.conf ",
    }


def write_config(root: Path, conf_d: tuple[str, ...], main: str, moved: dict[str, str] | None = None) -> None:
    """The rendered conf.d files named in `conf_d`, the rendered files (scripts) the instance uses, and
    dovecot.conf: its own folders and log, then `main` (protocols, listeners), then conf.d."""
    cfg = stack_config("host-mail")
    moved = {**moved_paths(root), **(moved or {})}
    for folder in ("conf.d", "sieve-spam", "sieve", "sieve-pipe", "vmail"):
        (root / folder).mkdir(exist_ok=True)
    for f in render_host_files(cfg)["dovecot"]:
        text = f.content
        for old, new in moved.items():
            text = text.replace(old, new)
        folder, name = f.path.rsplit("/", 1)
        if f.path.startswith(paths.DOVECOT_CONF_D):
            if name not in conf_d:
                continue
            text = text.replace(f"= {cfg.vmail_uid}", f"= {pwd.getpwnam('nobody').pw_uid}")
            target = root / "conf.d" / name
        elif f.path in moved:
            target = Path(moved[f.path])
        elif folder in moved:
            target = Path(moved[folder]) / name
        else:
            continue  # the other files are the unit's (apply script) or Debian's
        target.write_text(text)
        target.chmod(int(f.mode, 8))
    (root / "dovecot.conf").write_text(
        f"base_dir = {root}/run\nstate_dir = {root}/state\nlog_path = {root}/log\n"
        "listen = 127.0.0.1\nssl = no\ndefault_internal_user = nobody\ndefault_login_user = nobody\n"
        f"{main}!include conf.d/*.conf\n"
    )
    # Scripts run as `nobody` here (vmail on a host) and log like the rest.
    (root / "log").touch(mode=0o666)
    (root / "log").chmod(0o666)
    shutil.chown(root / "vmail", "nobody", "nogroup")


def users_file(root: Path, password: str, users: dict[str, str]) -> None:
    """Dovecot's users file as mailstack-assemble writes it: each address, the password's hash, and
    the extra fields given for it (e.g. `userdb_quota_rule=...`)."""
    hashed = subprocess.run(["openssl", "passwd", "-6", "-salt", "msprivate", "-stdin"], input=password,
                            capture_output=True, text=True, check=True).stdout.strip()
    (root / "users").write_text(
        "# made by mailstack-assemble\n" + "".join(f"{user}:{hashed}::::::{extra}\n" for user, extra in users.items())
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def instance(prefix: str) -> Iterator[Path]:
    """A folder for an instance (not under pytest's 0700 folders: `nobody` walks down to its Maildirs);
    the instance in it is stopped and the folder removed at the end."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        yield root
    finally:
        subprocess.run(["doveadm", "-c", str(root / "dovecot.conf"), "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def start(root: Path, ready) -> None:
    """Check the config as the unit does (`doveconf -n`), start Dovecot, and wait until `ready()`."""
    conf = str(root / "dovecot.conf")
    checked = subprocess.run(["doveconf", "-c", conf, "-n"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    subprocess.run(["dovecot", "-c", conf], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready(), f"Dovecot did not come up: {(root / 'log').read_text()[-2000:]}"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def doveadm(root: Path, *args: str) -> str:
    result = subprocess.run(["doveadm", "-c", str(root / "dovecot.conf"), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout
