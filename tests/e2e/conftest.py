"""The `lab` fixture: one lab for the whole test session, torn down at its end.

Set MAILSTACK_LAB_KEEP=1 to leave the lab up after the tests (inspect it with
`python -m tests.e2e.lab ssh ...`, remove it with `python -m tests.e2e.lab down`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

# The world is made by tests/e2e/world.py (shared with `python -m tests.e2e.lab up`).
from .world import PEER_DOMAIN, PEER_NAME, World, make_world  # noqa: F401 (re-exported for tests)


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


# --- the world around mx: a peer mail server with proper DNS, and the deployment ----------


@pytest.fixture(scope="session")
def world(lab):
    """peer.example.net: forward-confirmed reverse DNS, its own SPF and MX, a mail server."""
    the_world, process = make_world(lab)
    try:
        yield the_world
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def deployment(lab, world):
    """The lab's stacks deployed to mx by the program itself (tests/e2e/deploy.py): the host stack
    host-e2e, then the domain stacks example.org and example.com (stack.DEPLOY_ORDER), each its own `up`.

    `deployment.host`, `deployment.domains["example.com"]`: each stack's Deployment;
    `deployment.up_host(**overrides)`, `deployment.up_domain(domain, **overrides)`: `up` again
    with changed keys; `deployment.restore()`: every stack back to its own config.
    """
    from .deploy import LabStacks
    from .engine.deployer import deployer_choice

    if deployer_choice() == "engine":
        from .engine.deployer import EngineLabStacks

        stacks = EngineLabStacks.engine(lab)  # `pulumi up` of each stack, one backend (tests/e2e/engine/)
    else:
        stacks = LabStacks.mock(lab)
    stacks.up()
    stacks.host.first_seconds = stacks.seconds["host"]
    return stacks


def wait_for(probe, timeout: float = 30.0, every: float = 0.5):
    """Call `probe` until it returns something true, or `timeout` seconds pass; its last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def whole_message(mail_from: str, to: str, subject: str, body: str) -> str:
    """A message as a mail program writes it (From, To, Date, Message-ID), not a bare Subject and body:
    rspamd scores a message without them (MISSING_DATE, MISSING_MID, ...) into its greylist band."""
    return (f"From: {mail_from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {formatdate(localtime=True)}\r\n"
            f"Message-ID: {make_msgid(domain=mail_from.rpartition('@')[2])}\r\n\r\n{body}\r\n")


def run_client(lab, on: str, command: str, **args) -> dict:
    """Run tests/e2e/mailclient.py COMMAND in the lab host `on`; its JSON answer."""
    result = lab.run_python(on, [str(Path(__file__).parent / "mailclient.py"), command, json.dumps(args)],
                            check=False, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"mailclient {command} on {on} failed: {result.stderr}")
    return json.loads(result.stdout)


def pytest_collection_modifyitems(items):
    """The lab's smoke tests run first, on the bare lab: they check what a deployment changes.
    Then the engine's tests (test_engine.py), whose `pulumi up` starts from a bare mx."""
    first = ("tests/e2e/test_lab_smoke.py", "tests/e2e/test_engine.py")
    items.sort(key=lambda item: next((i for i, f in enumerate(first) if item.nodeid.startswith(f)), len(first)))
