"""The `lab` fixture: one lab for the whole test session, torn down at its end.

Set MAILSTACK_LAB_KEEP=1 to leave the lab up after the tests (inspect it with
`python -m tests.e2e.lab ssh ...`, remove it with `python -m tests.e2e.lab down`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


# --- the world around mx: a peer mail server with proper DNS, and the deployment ----------

PEER_NAME = "peer.example.net"
PEER_DOMAIN = "example.net"


@dataclass
class World:
    """What the tests talk to besides mx."""

    sink: Path  # messages the peer's mail server received, one .eml each

    def received(self, since: int = 0, timeout: float = 60, count: int = 1) -> list[str]:
        """Messages the peer got after the first `since`, waiting for `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            files = sorted(self.sink.glob("*.eml"))[since:]
            if len(files) >= count or time.monotonic() > deadline:
                return [f.read_text() for f in files]
            time.sleep(0.5)

    def count(self) -> int:
        return len(list(self.sink.glob("*.eml")))


@pytest.fixture(scope="session")
def world(lab):
    """peer.example.net: forward-confirmed reverse DNS, its own SPF and MX, a mail server."""
    peer = lab.hosts["peer"]
    lab.dns_update(PEER_DOMAIN, "peer", "A", 300, peer.ipv4)
    lab.dns_update(PEER_DOMAIN, "peer", "AAAA", 300, peer.ipv6)
    lab.dns_update(PEER_DOMAIN, "@", "MX", 300, f"10 {PEER_NAME}")
    lab.dns_update(PEER_DOMAIN, "@", "TXT", 300, f'"v=spf1 ip4:{peer.ipv4} ip6:{peer.ipv6} -all"')
    for address, zone in ((peer.ipv4, lab.reverse_zones[0]), (peer.ipv6, lab.reverse_zones[1])):
        lab.dns_update(zone, ipaddress.ip_address(address).reverse_pointer + ".", "PTR", 300, PEER_NAME + ".")
    sink = lab.run_dir / "peer-mail"
    argv = ["ip", "netns", "exec", peer.netns, sys.executable, str(Path(__file__).parent / "smtpsink.py"),
            str(sink), peer.ipv4, peer.ipv6]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError("the peer's SMTP sink did not start")
    try:
        yield World(sink=sink)
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def deployment(lab, world):
    """The e2e stack deployed to mx by the program itself (tests/e2e/deploy.py)."""
    from .deploy import Deployment
    from .stack import SECRET_KEYS, e2e_config

    deployment = Deployment(lab)
    started = time.monotonic()
    deployment.up(e2e_config(lab), SECRET_KEYS)
    deployment.first_seconds = time.monotonic() - started
    return deployment


def run_client(lab, on: str, command: str, **args) -> dict:
    """Run tests/e2e/mailclient.py COMMAND in the lab host `on`; its JSON answer."""
    result = lab.run_python(on, [str(Path(__file__).parent / "mailclient.py"), command, json.dumps(args)],
                            check=False, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"mailclient {command} on {on} failed: {result.stderr}")
    return json.loads(result.stdout)
