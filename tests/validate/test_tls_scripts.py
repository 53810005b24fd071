"""The TLS scripts as shellcheck reads them: mailstack-tls and the TLS unit of each mode."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from components import units
from components.config import load_config
from components.services import tls

HOST = {
    "mailstack:hostname": "mail.example.com",
    "mailstack:ipv4": ["192.0.2.10"],
    "mailstack:postmaster_address": "alice@example.com",
}

pytestmark = pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is missing (scripts/setup installs it)")


def _script(mode: str) -> str:
    extra = {"mailstack:tls": mode}
    if mode == "acme":
        extra["mailstack:acme_cloudflare_token"] = "t" * 40
    unit = units.tls_unit(load_config({**HOST, **extra}), "mailstack/host-mail")
    # acme: the script is the command line (its stdin is the token); else it is the stdin.
    return shlex.split(unit.command)[2] if unit.secret else unit.stdin


@pytest.mark.parametrize(
    "name,script",
    [
        ("mailstack-tls", lambda: tls.mailstack_tls_script()),
        *((f"tls unit ({mode})", lambda mode=mode: _script(mode)) for mode in ("acme", "self-signed", "files")),
    ],
)
def test_passes_shellcheck(tmp_path: Path, name, script) -> None:
    path = tmp_path / "script.sh"
    path.write_text(script())
    result = subprocess.run(["shellcheck", "--shell=bash", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, f"{name}:\n{result.stdout}"
