"""The world around mx: a peer mail server on the lab's Internet, with proper DNS.

peer.example.net has forward-confirmed reverse DNS, its own MX and SPF
records, and an SMTP server (smtpsink.py) that keeps every message it gets.

Used by the `world` fixture (conftest.py, which stops the sink at the end of
the session) and by `python -m tests.e2e.lab up` (which leaves it running
until `down`: the lab stops every process in its namespaces).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .lab import Lab

PEER_NAME = "peer.example.net"
PEER_DOMAIN = "example.net"
SINK = Path(__file__).resolve().parent / "smtpsink.py"


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


def publish_peer_dns(lab: Lab) -> None:
    """peer.example.net's A, AAAA, MX, SPF and PTR records."""
    peer = lab.hosts["peer"]
    lab.dns_update(PEER_DOMAIN, "peer", "A", 300, peer.ipv4)
    lab.dns_update(PEER_DOMAIN, "peer", "AAAA", 300, peer.ipv6)
    lab.dns_update(PEER_DOMAIN, "@", "MX", 300, f"10 {PEER_NAME}")
    lab.dns_update(PEER_DOMAIN, "@", "TXT", 300, f'"v=spf1 ip4:{peer.ipv4} ip6:{peer.ipv6} -all"')
    for address, zone in ((peer.ipv4, lab.reverse_zones[0]), (peer.ipv6, lab.reverse_zones[1])):
        lab.dns_update(zone, ipaddress.ip_address(address).reverse_pointer + ".", "PTR", 300, PEER_NAME + ".")


def start_peer_sink(lab: Lab, detached: bool = False) -> subprocess.Popen:
    """Start the peer's SMTP sink in the peer namespace; return once it listens.

    detached=True: in its own session, so that it outlives this process (the
    lab's `down` stops it with everything else in the lab's namespaces).
    """
    peer = lab.hosts["peer"]
    argv = ["ip", "netns", "exec", peer.netns, sys.executable, str(SINK), str(sink_dir(lab)), peer.ipv4, peer.ipv6]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=detached, cwd="/")
    if process.stdout.readline().strip() != "ready":
        process.kill()
        process.wait()
        raise RuntimeError("the peer's SMTP sink did not start")
    if detached:
        process.stdout.close()  # it prints nothing more
    return process


def sink_dir(lab: Lab) -> Path:
    return lab.run_dir / "peer-mail"


def make_world(lab: Lab, detached: bool = False) -> tuple[World, subprocess.Popen]:
    """Publish the peer's DNS and start its mail server: the World, and the sink's process."""
    publish_peer_dns(lab)
    process = start_peer_sink(lab, detached=detached)
    return World(sink=sink_dir(lab)), process
