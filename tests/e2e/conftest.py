"""The `lab` fixture: one lab for the whole test session, torn down at its end.

Set MAILSTACK_LAB_KEEP=1 to leave the lab up after the tests (inspect it with
`python -m tests.e2e.lab ssh ...`, remove it with `python -m tests.e2e.lab down`).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _why_no_lab() -> str | None:
    """The reason the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the e2e lab needs root (network namespaces, mounts, chroot)"
    for tool in ("ip", "unshare", "nsenter", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            return f"the e2e lab needs `{tool}`, which is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def lab():
    reason = _why_no_lab()
    if reason:
        pytest.skip(reason)
    from .lab import Lab

    the_lab = Lab()
    the_lab.up()
    try:
        yield the_lab
    finally:
        if os.environ.get("MAILSTACK_LAB_KEEP") == "1":
            the_lab.write_state()
        else:
            the_lab.down()
