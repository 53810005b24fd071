"""Network namespaces and the lab LAN.

The lab LAN is a bridge inside its own namespace (`<prefix>lan`). Every lab
host is a namespace with one veth link (`eth0`) whose other end is plugged
into that bridge. The veth pairs are created *inside* the lab namespaces
(`ip -n`), so no link ever appears in the machine's own (root) namespace and
no lab host has a route to anything but the lab LAN.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `ip [-n ns] args...`."""
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def exists(ns: str) -> bool:
    return os.path.exists(f"/run/netns/{ns}")


def create(ns: str) -> None:
    """A new namespace with its loopback up (daemons bind 127.0.0.1 and ::1)."""
    ip("netns", "add", ns)
    ip("link", "set", "lo", "up", ns=ns)


def create_lan(lan_ns: str, bridge: str = "br0") -> None:
    create(lan_ns)
    ip("link", "add", bridge, "type", "bridge", ns=lan_ns)
    # Forward at once: the bridge must not wait for STP before passing frames.
    ip("link", "set", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0", ns=lan_ns)
    ip("link", "set", bridge, "up", ns=lan_ns)


def plug_host(lan_ns: str, host_ns: str, port: str, addresses: list[str], bridge: str = "br0") -> None:
    """Join host_ns to the LAN with a veth: `port` on the bridge, `eth0` in the host.

    addresses are CIDR strings (e.g. 198.51.100.10/24, 2001:db8:100::10/64).
    IPv6 addresses get `nodad` so they are usable at once instead of after
    duplicate-address detection (a second or two of "Cannot assign address").
    """
    ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host_ns, ns=lan_ns)
    ip("link", "set", port, "master", bridge, "up", ns=lan_ns)
    for cidr in addresses:
        extra = ["nodad"] if ":" in cidr else []
        ip("addr", "add", cidr, "dev", "eth0", *extra, ns=host_ns)
    ip("link", "set", "eth0", "up", ns=host_ns)


def set_resolver(ns: str, nameservers: list[str]) -> None:
    """Give `ip netns exec ns ...` its own /etc/resolv.conf (ip bind-mounts /etc/netns/NS/*).

    Without it, programs in a lab host would ask the machine's resolver, which
    a lab host cannot (and must not) reach.
    """
    etc = Path("/etc/netns") / ns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text("".join(f"nameserver {a}\n" for a in nameservers))


def remove_resolver(ns: str) -> None:
    etc = Path("/etc/netns") / ns
    (etc / "resolv.conf").unlink(missing_ok=True)
    for d in (etc, etc.parent):
        try:
            d.rmdir()  # only when empty: other users of /etc/netns keep theirs
        except OSError:
            pass


def pids(ns: str) -> list[int]:
    """Processes whose network namespace is ns (as `ip netns pids` reports them)."""
    if not exists(ns):
        return []
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def kill_pids(pid_list: list[int], grace: float = 5.0) -> None:
    """SIGTERM the given pids, wait up to `grace` seconds, then SIGKILL what is left."""
    alive = []
    for pid in pid_list:
        try:
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _running(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _running(pid: int) -> bool:
    """True while pid exists and is not a zombie (our own children may linger as zombies)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def delete(ns: str) -> None:
    """Stop every process in ns by pid, then remove the namespace (its links go with it)."""
    kill_pids(pids(ns))
    if exists(ns):
        ip("netns", "del", ns, check=False)
    remove_resolver(ns)
