"""The lab's authoritative DNS server: Knot DNS (Debian package `knot`).

Why Knot: one small config file, runs fine as a plain process in a network
namespace (it binds port 53 as root, then drops to the `knot` user), and
accepts RFC 2136 dynamic updates signed with a TSIG key, which is how the
tests publish records exactly as the program registers them.

It serves the forward zones the lab is given and the reverse zones of the lab
LAN. It is authoritative only: it answers for those zones (the mx host's
resolver points at it) and REFUSES everything else.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

TSIG_KEY_NAME = "lab-update"
TSIG_ALGORITHM = "hmac-sha256"


def ensure_knot() -> None:
    """Install Knot from Debian if it is missing (maintainer scripts must not start it)."""
    if not shutil.which("knotd"):
        from .rootfs import apt_install_on_machine

        apt_install_on_machine("knot")


def new_tsig_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def zone_file_text(zone: str, ns_name: str, glue: dict[str, str]) -> str:
    """A minimal zone: SOA and NS; the name server's own A/AAAA when it lives in this zone."""
    lines = [
        f"$ORIGIN {zone}.",
        "$TTL 300",
        f"@ SOA {ns_name}. hostmaster.{zone}. 1 3600 600 86400 60",
        f"@ NS {ns_name}.",
    ]
    if ns_name.endswith("." + zone):
        for rtype, address in glue.items():
            lines.append(f"{ns_name}. {rtype} {address}")
    return "\n".join(lines) + "\n"


def config_text(dns_dir: Path, listen: list[str], zones: list[str], secret: str,
                signed_zones: tuple[str, ...] = ()) -> str:
    """knot.conf. Zones in signed_zones are signed by Knot itself (tests/e2e/dnssec.py)."""
    zone_entries = "\n".join(
        f"  - domain: {z}" + ("\n    dnssec-signing: on\n    dnssec-policy: lab" if z in signed_zones else "")
        for z in zones)
    listen_list = ", ".join(f"{a}@53" for a in listen)
    return f"""\
# Knot DNS for the mailstack lab (generated; see tests/e2e/dnsserver.py).
server:
    rundir: "{dns_dir}"
    user: knot:knot
    listen: [ {listen_list} ]

log:
  - target: stderr
    any: info

database:
    storage: "{dns_dir}/db"

key:
  - id: {TSIG_KEY_NAME}
    algorithm: {TSIG_ALGORITHM}
    secret: {secret}

# One key per signed zone (ECDSA P-256, a CSK), never rolled: the lab's zones live for one run.
policy:
  - id: lab
    algorithm: ecdsap256sha256
    single-type-signing: on
    ksk-lifetime: 0
    zsk-lifetime: 0

acl:
  # transfer: the Cloudflare stand-in (cfapi.py) lists a zone's records by AXFR.
  - id: tests-may-update
    key: {TSIG_KEY_NAME}
    action: [update, transfer]

template:
  - id: default
    storage: "{dns_dir}/zones"
    file: "%s.zone"
    acl: tests-may-update
    # Write updates back to the zone file at once: handy when debugging a run.
    zonefile-sync: 0
    semantic-checks: off

zone:
{zone_entries}
"""


def write_config(dns_dir: Path, listen: list[str], zones: list[str], ns_name: str,
                 glue: dict[str, str], secret: str) -> Path:
    """Write knot.conf and the zone files under dns_dir, owned by the `knot` user."""
    (dns_dir / "zones").mkdir(parents=True, exist_ok=True)
    (dns_dir / "db").mkdir(parents=True, exist_ok=True)
    for zone in zones:
        (dns_dir / "zones" / f"{zone}.zone").write_text(zone_file_text(zone, ns_name, glue))
    conf = dns_dir / "knot.conf"
    conf.write_text(config_text(dns_dir, listen, zones, secret))
    conf.chmod(0o640)  # holds the TSIG secret
    subprocess.run(["chown", "-R", "knot:knot", str(dns_dir)], check=True)
    subprocess.run(["knotc", "-c", str(conf), "conf-check"], check=True, capture_output=True)
    return conf


def reverse_zone_v4(network: str) -> str:
    """198.51.100.0/24 -> 100.51.198.in-addr.arpa (only /8, /16, /24 networks)."""
    import ipaddress

    net = ipaddress.ip_network(network)
    octets = str(net.network_address).split(".")[: net.prefixlen // 8]
    return ".".join(reversed(octets)) + ".in-addr.arpa"


def reverse_zone_v6(network: str) -> str:
    """2001:db8:100::/64 -> 0.0.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa (prefix a multiple of 4)."""
    import ipaddress

    net = ipaddress.ip_network(network)
    nibbles = net.network_address.exploded.replace(":", "")[: net.prefixlen // 4]
    return ".".join(reversed(nibbles)) + ".ip6.arpa"
