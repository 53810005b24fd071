"""DNSSEC in the lab: Knot signs chosen zones, and a validating resolver trusts them.

The lab has no root zone, so there is no chain from the root: the resolver is
given each signed zone's DS as a trust anchor instead, the way a real resolver
holds the root's. Answers from a signed zone then come back with the AD flag
(validated); answers from the other lab zones come back without it (no
anchor above them: insecure, as an unsigned zone on the Internet is).

    ds = sign_zones(lab, ["example.net"])     # Knot signs it; returns its DS records
    resolver = start_resolver(lab, ds)        # unbound on dns, 198.51.100.54 / 2001:db8:100::54
    answer = validated_query(lab, "mail.example.net", "A")   # {"ad": True, ...}

Test infrastructure only (never used by users): unbound is Debian's `unbound`,
run as a plain process in the lab's `dns` namespace; `Lab.down` stops it with
every other process in the lab's namespaces.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from . import dnsserver, netns

RESOLVER_V4 = "198.51.100.54"
# unbound answers these documentation ranges' reverse zones itself (RFC 6303: NXDOMAIN);
# the lab's addresses live there, so it must ask the lab's Knot instead.
LOCAL_BY_DEFAULT = ("100.51.198.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")
_NODEFAULT = "\n".join(f'    local-zone: "{z}." nodefault' for z in LOCAL_BY_DEFAULT)
RESOLVER_V6 = "2001:db8:100::54"


def _knot_conf(lab) -> Path:
    return lab.run_dir / "dns" / "knot.conf"


def sign_zones(lab, zones: list[str], timeout: float = 30.0) -> dict[str, list[str]]:
    """Have Knot sign `zones` (lab zones) from now on; return each zone's DS records (SHA-256), as text.

    Only knot.conf is rewritten (the zone files hold the records published so
    far), then Knot reloads it and signs the zones' current contents.
    """
    unknown = [z for z in zones if z not in lab.forward_zones + lab.reverse_zones]
    if unknown:
        raise ValueError(f"not lab zones: {unknown}")
    conf = _knot_conf(lab)
    dns_dir = conf.parent
    listen = [lab.dns.ipv4, lab.dns.ipv6, "127.0.0.1", "::1"]
    conf.write_text(dnsserver.config_text(dns_dir, listen, lab.forward_zones + lab.reverse_zones,
                                          lab.tsig_secret, signed_zones=tuple(zones)))
    subprocess.run(["knotc", "-c", str(conf), "conf-check"], check=True, capture_output=True)
    subprocess.run(["knotc", "-c", str(conf), "reload"], check=True, capture_output=True)
    return {zone: _wait_for_ds(lab, zone, timeout) for zone in zones}


def _wait_for_ds(lab, zone: str, timeout: float) -> list[str]:
    """The DS records of the zone's key-signing key(s), once Knot serves a signed SOA."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        soa = lab._nsclient("admin", "query", server=lab.dns.ipv4, name=zone, rtype="SOA", dnssec=True)
        keys = lab.dns_query(zone, "DNSKEY")
        if soa["signed"] and keys:
            return ds_records(zone, keys)
        time.sleep(0.3)
    raise RuntimeError(f"Knot did not sign {zone} within {timeout:.0f}s (see {lab.run_dir}/knotd.log)")


def ds_records(zone: str, dnskeys: list[str]) -> list[str]:
    """DS (SHA-256) text for each secure-entry-point key (flags 257) among dnskeys."""
    owner = dns.name.from_text(zone)
    out = []
    for text in dnskeys:
        key = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, text)
        if key.flags & 0x0001:  # SEP: the key a parent's DS points at
            out.append(dns.dnssec.make_ds(owner, key, "SHA256").to_text())
    return out


def resolver_config(run_dir: Path, zones: list[str], stub: str, anchors: dict[str, list[str]],
                    v4: str = RESOLVER_V4, v6: str = RESOLVER_V6) -> str:
    """unbound.conf: answers the lab LAN, asks Knot for every lab zone, validates from the anchors."""
    stubs = "\n".join(f'stub-zone:\n    name: "{z}."\n    stub-addr: {stub}\n' for z in zones)
    trust = "\n".join(f'    trust-anchor: "{z}. DS {ds}"' for z, lines in anchors.items() for ds in lines)
    return f"""\
# unbound for the mailstack lab (generated; tests/e2e/dnssec.py): validating, lab zones only.
server:
    interface: {v4}
    interface: {v6}
    access-control: 198.51.100.0/24 allow
    access-control: 2001:db8:100::/64 allow
    username: ""
    chroot: ""
    directory: "{run_dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    module-config: "validator iterator"
    # The lab's addresses are documentation ranges, and lab zones have short lives.
    do-not-query-localhost: no
    cache-max-ttl: 5
    cache-max-negative-ttl: 1
    val-log-level: 2
{_NODEFAULT}
{trust}
{stubs}"""


def start_resolver(lab, anchors: dict[str, list[str]], v4: str = RESOLVER_V4, v6: str = RESOLVER_V6,
                   name: str = "resolver") -> int:
    """Start unbound in the `dns` namespace on v4/v6; return its pid (the lab stops it at down)."""
    for cidr in (f"{v4}/24", f"{v6}/64"):
        extra = ["nodad"] if ":" in cidr else []
        netns.ip("addr", "replace", cidr, "dev", "eth0", *extra, ns=lab.dns.netns)
    run_dir = lab.run_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "unbound.conf"
    conf.write_text(resolver_config(run_dir, lab.forward_zones + lab.reverse_zones, lab.dns.ipv4, anchors, v4, v6))
    subprocess.run(["unbound-checkconf", str(conf)], check=True, capture_output=True)
    pid = lab._spawn(name, ["ip", "netns", "exec", lab.dns.netns, "unbound", "-d", "-c", str(conf)])
    # Up once it answers for a lab zone with no anchor above it (not bogus whatever the anchors say).
    unsigned = next((z for z in lab.forward_zones if z not in anchors), lab.reverse_zones[0])
    lab._wait_for(f"resolver {name}", lambda: validated_query(lab, unsigned, "SOA", server=v4)["rcode"] == "NOERROR")
    return pid


def validated_query(lab, name: str, rtype: str, from_host: str = "admin", server: str = RESOLVER_V4) -> dict:
    """Ask a validating resolver of the lab (DO and AD set); the answer says whether it validated ("ad")."""
    return lab._nsclient(from_host, "query", server=server, name=name, rtype=rtype, dnssec=True)


# Zones the lab signs when it comes up: the mail host's and the peer's (DANE for their MX
# names), and example.com, whose MX a sender must find secure before it uses DANE
# (RFC 7672 2.2); example.org stays unsigned, as many domains are.
SIGNED_AT_START = ("example.net", "example.com")
MX_RESOLVER_DROPIN = "etc/unbound/unbound.conf.d/lab.conf"


def mx_resolver_dropin(zones: list[str], stub: str, anchors: dict[str, list[str]]) -> str:
    """The lab's part of mx's unbound (the program installs unbound; this file is the lab's "Internet").

    The lab has no root zone: every lab zone is a stub to the lab's Knot; the
    signed ones are anchored at their DS, and the others are declared insecure
    (the root's trust anchor, which Debian's unbound holds, could not prove them so).
    """
    lines = ["# The mailstack lab's DNS for mx's unbound (tests/e2e/dnssec.py): test infrastructure.", "server:"]
    lines += [f'    trust-anchor: "{z}. DS {ds}"' for z, records in anchors.items() for ds in records]
    lines += [f'    domain-insecure: "{z}."' for z in zones if z not in anchors]
    # The lab's records change within a test: keep answers seconds, not their TTL.
    lines += [_NODEFAULT, "    do-not-query-localhost: no", "    cache-max-ttl: 5", "    cache-max-negative-ttl: 1", ""]
    lines += [f'stub-zone:\n    name: "{z}."\n    stub-addr: {stub}' for z in zones]
    return "\n".join(lines) + "\n"


def secure_the_lab(lab) -> dict[str, list[str]]:
    """At lab up: sign SIGNED_AT_START, start the lab's validating resolver, give mx its unbound drop-in."""
    zones = lab.forward_zones + lab.reverse_zones
    anchors = sign_zones(lab, [z for z in SIGNED_AT_START if z in zones])
    start_resolver(lab, anchors)
    dropin = lab.mx_root / MX_RESOLVER_DROPIN
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(mx_resolver_dropin(zones, lab.dns.ipv4, anchors))
    return anchors
