"""components/verify.py: the checks' judgement, with real records and real protocol data.

No mock of dnspython: the DNS checks ask a small authoritative server on
127.0.0.1 (below), which answers from zone text parsed by dnspython, over real
UDP/TCP, through the same `Dns` class, pyspf and checkdmarc that `verify` uses.
The records it serves are the ones components/records.py builds for the stack
(so a healthy zone is exactly what `pulumi up` publishes), then broken one at a
time. Server checks are judged from probe data: real certificates made with
cryptography, banners and replies as Postfix words them.

Nothing here connects anywhere but 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import checkdmarc.spf
import checkdmarc.utils
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from components import records as rec
from components import verify as v
from components.config import DomainConfig, HostConfig, load_config
from components.hostfacts import HostFacts
from components.stackfile import host_facts
from components.verify_net import Dns, HostUnavailable, ImapProbe, SmtpProbe, SmtpReply, TlsInfo, ssh_argv

V4, V6 = "198.51.100.10", "2001:db8:100::10"
HOST = "mail.example.com"
HOST_STACK = "host-mail"


@dataclass(frozen=True)
class Stacks:
    """A host stack and a domain stack on it, as verify sees them (the domain's host from the host's file)."""

    host: HostConfig
    domain: DomainConfig
    facts: HostFacts

    @property
    def addresses(self) -> list[str]:
        return self.host.addresses

    def target(self, kind: str) -> v.Target:
        return v.Target(self.host) if kind == "host" else v.Target(self.host, self.domain, self.facts)


def config(**values) -> Stacks:
    """The two stacks; each value goes to the stack whose key it is (a host key or a domain key)."""
    base = {"domain": "example.com", "hostname": HOST, "ipv4": [V4], "ipv6": [V6],
            "postmaster_address": "postmaster@example.com", "host_stack": HOST_STACK, "users": [{"name": "alice"}]}
    base.update(values)
    host = {k: val for k, val in base.items() if k in HostConfig.model_fields and val is not None}
    domain = {k: val for k, val in base.items() if k in DomainConfig.model_fields and val is not None}
    host_cfg = load_config({f"mailstack:{k}": val for k, val in host.items()})
    domain_cfg = load_config({f"mailstack:{k}": val for k, val in domain.items()})
    return Stacks(host_cfg, domain_cfg, host_facts(HOST_STACK, host_cfg))


def new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def b64(key: rsa.RSAPrivateKey, fmt=serialization.PublicFormat.SubjectPublicKeyInfo) -> str:
    """The public key as the host's DKIM unit prints it: base64 of the DER SubjectPublicKeyInfo."""
    return base64.b64encode(key.public_key().public_bytes(serialization.Encoding.DER, fmt)).decode("ascii")


@pytest.fixture(scope="module")
def host_key() -> str:
    return b64(new_key(2048))


def txt_value(content: str) -> str:
    """A TXT record's value as receivers see it: the quoted strings parsed by dnspython and joined."""
    return b"".join(dns.rdata.from_text("IN", "TXT", content).strings).decode()


# --- a DNS server on loopback, answering from zone text -------------------------------------------------


class ZoneServer:
    """Authoritative for the zones it is given, on 127.0.0.1 (UDP and TCP, one port), until stop()."""

    def __init__(self):
        self.zones: dict[dns.name.Name, dns.zone.Zone] = {}
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self.running = True
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    def load(self, zone_texts: list[str]) -> None:
        zones = [dns.zone.from_text(text, relativize=False, check_origin=False) for text in zone_texts]
        self.zones = {z.origin: z for z in zones}

    def stop(self) -> None:
        self.running = False
        self.udp.close()
        self.tcp.close()

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        zone = max((z for origin, z in self.zones.items() if question.name.is_subdomain(origin)),
                   key=lambda z: len(z.origin), default=None)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        name, rdtype = question.name, question.rdtype
        for _ in range(8):  # follow CNAMEs inside the zone, as an authoritative server does
            node = zone.get_node(name)
            if node is None:
                if not any(n.is_subdomain(name) for n in zone.nodes):  # not even an empty non-terminal
                    response.set_rcode(dns.rcode.NXDOMAIN)
                break
            found = node.get_rdataset(dns.rdataclass.IN, rdtype)
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if found is not None:
                response.answer.append(dns.rrset.from_rdata_list(name, found.ttl, list(found)))
                return response
            if cname is None or rdtype == dns.rdatatype.CNAME:
                break
            response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
            name = cname[0].target
            if not name.is_subdomain(zone.origin):
                return response
        soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
        response.authority.append(dns.rrset.from_rdata_list(zone.origin, soa.ttl, list(soa)))
        return response

    def _serve_udp(self) -> None:
        while self.running:
            try:
                query, _, peer = dns.query.receive_udp(self.udp)
            except (OSError, dns.exception.DNSException):
                continue
            response = self.answer(query)
            try:
                wire = response.to_wire(max_size=query.payload if query.edns >= 0 else 512)
            except dns.exception.TooBig:
                response.answer.clear()
                response.flags |= dns.flags.TC
                wire = response.to_wire()
            self.udp.sendto(wire, peer)

    def _serve_tcp(self) -> None:
        while self.running:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            with conn:
                try:
                    query, _ = dns.query.receive_tcp(conn)
                    dns.query.send_tcp(conn, self.answer(query))
                except (OSError, EOFError, dns.exception.DNSException):
                    pass


@pytest.fixture(scope="module")
def server():
    the_server = ZoneServer()
    yield the_server
    the_server.stop()


@pytest.fixture(autouse=True)
def _clean_checkdmarc_cache():
    # checkdmarc caches answers process-wide by name, whatever the resolver (run_checks clears it too).
    checkdmarc.utils.DNS_CACHE.clear()


def zone_line(record: rec.Record) -> str:
    if record.type == "TXT":
        content = rec.txt_content(record.content)
    elif record.type == "MX":
        content = f"{record.priority} {record.content}."
    elif record.type in ("PTR", "CNAME"):
        content = record.content + "."
    elif record.type == "SRV":
        content = rec._rdata(record)
    else:
        content = record.content
    return f"{record.name}. 300 IN {record.type} {content}"


def zones_for(records: list[rec.Record]) -> list[str]:
    """Zone texts holding the records: example.com, example.net, and the reverse trees."""
    origins = ["example.com", "example.net", "in-addr.arpa", "ip6.arpa"]
    texts = []
    for origin in origins:
        inside = [r for r in records if r.name == origin or r.name.endswith("." + origin)]
        lines = [f"$ORIGIN {origin}.", "@ 300 IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 300",
                 "@ 300 IN NS ns1.example.com."]
        texts.append("\n".join(lines + [zone_line(r) for r in inside]) + "\n")
    return texts


def published(cfg: Stacks, key: str) -> list[rec.Record]:
    """What `pulumi up` publishes for the two stacks: the host's records and PTRs, the domain's records."""
    return rec.host_records(cfg.host) + rec.ptr_records(cfg.host) + rec.mail_records(cfg.domain, cfg.facts, key)


def serve(server: ZoneServer, records: list[rec.Record]) -> Dns:
    server.load(zones_for(records))
    return Dns(["127.0.0.1"], port=server.port, timeout=3)


def host_dns_results(cfg: Stacks, lookups: Dns) -> list[v.Result]:
    """The host stack's checks that only need DNS, as run_checks runs them."""
    host = cfg.host
    results = [v.check_addresses(host, lookups, "A"), v.check_addresses(host, lookups, "AAAA")]
    results += [v.check_ptr(host, lookups, a) for a in host.addresses]
    results.append(v.check_spf_helo(host, lookups))
    return results


def domain_dns_results(cfg: Stacks, lookups: Dns, host_key: str) -> list[v.Result]:
    """The domain stack's checks (all of them DNS, with the host's key), as run_checks runs them."""
    domain, facts = cfg.domain, cfg.facts
    results = [v.check_mx(domain, facts, lookups), v.check_mx_cname(domain, facts, lookups)]
    results.append(v.check_srv(domain, facts, lookups))
    results += v.check_spf(domain, facts, lookups)
    results += [v.check_spf_pass(domain, facts, lookups, a) for a in facts.addresses]
    record_result, record = v.check_dkim_record(domain, facts, lookups, host_key)
    results += [record_result, v.check_dkim_key(domain, facts, record, host_key, "read over SSH")]
    results += v.check_dmarc(domain, facts, lookups)
    return results


def dns_results(cfg: Stacks, lookups: Dns, host_key: str) -> list[v.Result]:
    """Every check that only needs DNS (and the host's key): the host stack's and the domain stack's."""
    return host_dns_results(cfg, lookups) + domain_dns_results(cfg, lookups, host_key)


def by_status(results: list[v.Result], status: str) -> dict[str, v.Result]:
    return {r.name: r for r in results if r.status == status}


# --- the published records pass; each broken one fails exactly its check -----------------------------------


def test_the_records_pulumi_up_publishes_pass_every_dns_check(server, host_key):
    cfg = config()
    results = dns_results(cfg, serve(server, published(cfg, host_key)), host_key)
    assert len(results) == 17
    assert [r for r in results if r.status != v.PASS] == []
    names = [r.name for r in results]
    assert f"dns.ptr[{V6}]" in names and f"spf.pass[{V4}]" in names
    # Each kind checks its own records: every name one of the two kinds' own checks.
    host_names = {r.name.split("[")[0] for r in host_dns_results(cfg, serve(server, published(cfg, host_key)))}
    domain_names = {r.name.split("[")[0] for r in domain_dns_results(cfg, serve(server, published(cfg, host_key)),
                                                                     host_key)}
    assert host_names <= set(v.HOST_CHECKS) and domain_names <= set(v.DOMAIN_CHECKS)
    assert host_names | domain_names == {n.split("[")[0] for n in names}


def _without(records, predicate):
    return [r for r in records if not predicate(r)]


@pytest.mark.parametrize("key", ["mx", f"a-{V4.replace('.', '-')}", "spf", "spf-helo", "dkim", "dmarc",
                                 "srv-submission"])
def test_a_missing_record_is_asked_for_as_mail_dns_publishes_it(server, host_key, key):
    """verify's expectations are the record list MailDns publishes: the fix names that very record."""
    cfg = config(dmarc_policy="reject")
    records = published(cfg, host_key)
    [missing] = [r for r in records if r.key == key]
    content = {"MX": f"{missing.priority} {missing.content}.", "TXT": rec.txt_content(missing.content),
               "SRV": rec._rdata(missing)}
    line = f"{missing.name}. {missing.type} {content.get(missing.type, missing.content)}"
    results = dns_results(cfg, serve(server, _without(records, lambda r: r.key == key)), host_key)
    failing = [r for r in results if r.status == v.FAIL]
    assert failing, f"no check fails without {key}"
    assert any(f"publish {line}" in r.fix for r in failing), [r.fix for r in failing]


def _replacing(records, predicate, **changes):
    return [replace(r, **changes) if predicate(r) else r for r in records]


def _other_key() -> str:
    return b64(new_key(2048))


VARIANTS: dict[str, tuple[Callable, tuple[str, ...], str]] = {
    # name: (records -> broken records, the failing checks, text the first one's reason must name)
    "missing PTR": (lambda rs, cfg: _without(rs, lambda r: r.name == rec.ptr_name(V4)),
                    (f"dns.ptr[{V4}]",), "10.100.51.198.in-addr.arpa"),
    "PTR naming another host": (lambda rs, cfg: _replacing(rs, lambda r: r.name == rec.ptr_name(V6),
                                                           content="other.example.net"),
                                (f"dns.ptr[{V6}]",), "other.example.net"),
    "SPF without the IPv6 address": (lambda rs, cfg: _replacing(rs, lambda r: r.key == "spf",
                                                                content=f"v=spf1 ip4:{V4} -all"),
                                     (f"spf.pass[{V6}]",), f'example.com TXT "v=spf1 ip4:{V4} -all"'),
    "DKIM record with another key": (lambda rs, cfg: _replacing(rs, lambda r: r.key == "dkim",
                                                                content=rec.dkim_value(cfg.domain, _other_key())),
                                     ("dkim.key",), "mail._domainkey.example.com"),
    "missing DMARC": (lambda rs, cfg: _without(rs, lambda r: r.key == "dmarc"),
                      ("dmarc.record",), "_dmarc.example.com"),
    "MX to another host": (lambda rs, cfg: _replacing(rs, lambda r: r.key == "mx", content="mx.example.net"),
                           ("dns.mx",), "mx.example.net"),
    "an A record too many": (lambda rs, cfg: rs + [rec.Record(HOST, "A", "198.51.100.11", "stale")],
                             ("dns.a",), "198.51.100.11"),
    "no AAAA": (lambda rs, cfg: _without(rs, lambda r: r.type == "AAAA"),
                ("dns.aaaa", f"dns.ptr[{V6}]"), V6),
    "two SPF records": (lambda rs, cfg: rs + [rec.Record("example.com", "TXT", "v=spf1 -all", "second")],
                        ("spf.record", f"spf.pass[{V4}]", f"spf.pass[{V6}]"), "2 SPF records at example.com"),
    "no SPF for the HELO name": (lambda rs, cfg: _without(rs, lambda r: r.key == "spf-helo"),
                                 ("spf.helo",), HOST),
    "DMARC policy other than configured": (lambda rs, cfg: _replacing(rs, lambda r: r.key == "dmarc",
                                                                      content="v=DMARC1; p=reject; "
                                                                              "rua=mailto:postmaster@example.com"),
                                           ("dmarc.policy",), "p=reject, the stack says p=quarantine"),
    "submission SRV to another port": (lambda rs, cfg: _replacing(rs, lambda r: r.key == "srv-submission",
                                                                 content=f"0 1 465 {HOST}"),
                                      ("dns.srv",), f"0 1 465 {HOST}, the stack says 0 1 587 {HOST}"),
    "no IMAP SRV": (lambda rs, cfg: _without(rs, lambda r: r.key == "srv-imaps"),
                    ("dns.srv",), "no SRV record at _imaps._tcp.example.com"),
    "MX target is a CNAME": (lambda rs, cfg: [
        replace(r, name="server.example.com") if r.name == HOST else r for r in rs
    ] + [rec.Record(HOST, "CNAME", "server.example.com", "alias")], ("dns.mx-cname",), "CNAME"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_broken_record_fails_exactly_its_check(server, host_key, variant):
    break_records, expected, named = VARIANTS[variant]
    cfg = config()
    results = dns_results(cfg, serve(server, break_records(published(cfg, host_key), cfg)), host_key)
    failing = by_status(results, v.FAIL)
    assert set(failing) == set(expected), {n: r.reason for n, r in failing.items()}
    first = failing[expected[0]]
    assert named in first.reason, first.reason
    assert first.fix


def test_a_missing_ptr_says_where_to_publish_it(server, host_key):
    in_zone = config(reverse_zones=["100.51.198.in-addr.arpa"])
    outside = config()
    for cfg, where in ((in_zone, "in the reverse zone 100.51.198.in-addr.arpa"), (outside, "at the provider of")):
        records = _without(published(cfg, host_key), lambda r: r.name == rec.ptr_name(V4))
        result = v.check_ptr(cfg.host, serve(server, records), V4)
        assert result.status == v.FAIL
        assert result.fix.startswith(f"publish 10.100.51.198.in-addr.arpa. PTR {HOST}. {where}")


def test_softfail_spf_is_a_warning_and_names_its_qualifier(server, host_key):
    cfg = config()
    records = _replacing(published(cfg, host_key), lambda r: r.key == "spf", content=f"v=spf1 ip4:{V4} ip6:{V6} ~all")
    results = dns_results(cfg, serve(server, records), host_key)
    assert by_status(results, v.FAIL) == {}
    assert list(by_status(results, v.WARN)) == ["spf.all"]
    assert "~all (softfail)" in by_status(results, v.WARN)["spf.all"].reason


def test_a_1024_bit_dkim_key_fails_the_record_check(server):
    cfg = config()
    small = b64(new_key(1024))
    results = dns_results(cfg, serve(server, published(cfg, small)), small)
    assert set(by_status(results, v.FAIL)) == {"dkim.record"}
    assert "1024-bit" in by_status(results, v.FAIL)["dkim.record"].reason


def test_dkim_key_not_compared_without_the_hosts_key(server, host_key):
    cfg = config()
    lookups = serve(server, published(cfg, host_key))
    _, record = v.check_dkim_record(cfg.domain, cfg.facts, lookups)
    result = v.check_dkim_key(cfg.domain, cfg.facts, record, None, "",
                              "the host's key could not be read over SSH (timed out)")
    assert result.status == v.WARN and "timed out" in result.reason and "--dkim-key" in result.fix


def test_dkim_fix_is_the_record_with_the_hosts_key(server, host_key):
    cfg = config()
    records = _replacing(published(cfg, host_key), lambda r: r.key == "dkim", content=rec.dkim_value(cfg.domain, _other_key()))
    lookups = serve(server, records)
    _, record = v.check_dkim_record(cfg.domain, cfg.facts, lookups, host_key)
    result = v.check_dkim_key(cfg.domain, cfg.facts, record, host_key, "read over SSH")
    content = rec.txt_content(rec.dkim_value(cfg.domain, host_key))
    assert result.fix.startswith(f"publish mail._domainkey.example.com. TXT {content}")


def test_an_unanswering_name_server_fails_the_dns_checks_with_the_lookup():
    # A port on loopback where nothing answers: every lookup times out.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        lookups = Dns(["127.0.0.1"], port=sock.getsockname()[1], timeout=0.5)
        cfg = config()
        result = v.check_mx(cfg.domain, cfg.facts, lookups)
    finally:
        sock.close()
    assert result.status == v.FAIL and "MX lookup of example.com failed" in result.reason


# --- SPF lookup counting (RFC 7208 4.6.4) ---------------------------------------------------------------

# A chain shaped like Google's _spf.google.com and Microsoft 365's, and a few senders' includes.
REAL_WORLD_SPF = {
    "_spf.google.com": '"v=spf1 include:_netblocks.google.com include:_netblocks2.google.com '
                       'include:_netblocks3.google.com ~all"',
    "_netblocks.google.com": '"v=spf1 ip4:35.190.247.0/24 ip4:64.233.160.0/19 ip4:66.102.0.0/20 ip4:66.249.80.0/20 '
                             'ip4:72.14.192.0/18 ip4:74.125.0.0/16 ip4:108.177.8.0/21 ip4:173.194.0.0/16 '
                             'ip4:209.85.128.0/17 ip4:216.58.192.0/19 ip4:216.239.32.0/19 ~all"',
    "_netblocks2.google.com": '"v=spf1 ip6:2001:4860:4000::/36 ip6:2404:6800:4000::/36 ip6:2607:f8b0:4000::/36 '
                              'ip6:2800:3f0:4000::/36 ip6:2a00:1450:4000::/36 ip6:2c0f:fb50:4000::/36 ~all"',
    "_netblocks3.google.com": '"v=spf1 ip4:172.217.0.0/19 ip4:172.217.32.0/20 ip4:172.217.128.0/19 '
                              'ip4:172.217.160.0/20 ip4:172.217.192.0/19 ip4:172.253.56.0/21 ip4:172.253.112.0/20 '
                              'ip4:108.177.96.0/19 ip4:35.191.0.0/16 ip4:130.211.0.0/22 ~all"',
    "spf.protection.outlook.com": '"v=spf1 ip4:40.92.0.0/15 ip4:40.107.0.0/16 ip4:52.100.0.0/15 ip4:52.102.0.0/16 '
                                  'ip4:104.47.0.0/17 ip6:2a01:111:f400::/48 ip6:2a01:111:f403::/49 -all"',
    "mailgun.example.net": '"v=spf1 include:_spf.mailgun.example.net include:_spf.eu.mailgun.example.net ~all"',
    "_spf.mailgun.example.net": '"v=spf1 ip4:209.61.151.0/24 ip4:166.78.68.0/22 ip4:198.61.254.0/23 ~all"',
    "_spf.eu.mailgun.example.net": '"v=spf1 ip4:141.193.32.0/23 ip4:159.135.140.80/29 ~all"',
    "sendgrid.example.net": '"v=spf1 ip4:167.89.0.0/17 ip4:208.117.48.0/20 ip4:50.31.32.0/19 ~all"',
    # 7 lookups: mx, a, include (+3 inside), include
    "shop.example.net": '"v=spf1 mx a include:_spf.google.com include:spf.protection.outlook.com -all"',
    # 11 lookups: 4 + 1 + 1 + 3 + a + mx
    "busy.example.net": '"v=spf1 include:_spf.google.com include:spf.protection.outlook.com '
                        'include:sendgrid.example.net include:mailgun.example.net a mx -all"',
    "loop.example.net": '"v=spf1 include:loop2.example.net -all"',
    "loop2.example.net": '"v=spf1 include:loop.example.net -all"',
    "dangling.example.net": '"v=spf1 include:nothing-here.example.net -all"',
    "redirected.example.net": '"v=spf1 redirect=_spf.google.com"',
    "macro.example.net": '"v=spf1 exists:%{i}._spf.example.net include:%{d}.example.org -all"',
}


def spf_at(name: str) -> list[str]:
    """The SPF records at a name, from the table's zone-file TXT contents parsed by dnspython."""
    content = REAL_WORLD_SPF.get(name)
    return v.spf_records([txt_value(content)]) if content else []


@pytest.mark.parametrize(
    ("domain", "count", "problem"),
    [
        ("_netblocks.google.com", 0, None),
        ("_spf.google.com", 3, None),
        ("shop.example.net", 7, None),
        ("busy.example.net", 11, None),
        ("redirected.example.net", 4, None),
        ("macro.example.net", 2, None),
        ("loop.example.net", 2, "include:loop.example.net loops back to loop.example.net"),
        ("dangling.example.net", 1, "include:nothing-here.example.net: nothing-here.example.net has no SPF record"),
    ],
)
def test_spf_lookup_count(domain, count, problem):
    cost = v.count_spf_lookups(spf_at(domain)[0], spf_at, (domain,))
    assert cost.count == count
    assert (cost.problems[0].split(" (")[0] if cost.problems else None) == problem


def test_mailstacks_own_spf_record_costs_no_lookup():
    value = rec.spf_value(config().host.ipv4, config().host.ipv6)
    assert v.count_spf_lookups(txt_value(rec.txt_content(value)), spf_at).count == 0


def test_spf_redirect_is_ignored_when_there_is_an_all():
    # RFC 7208 6.1
    assert v.count_spf_lookups("v=spf1 ip4:198.51.100.10 redirect=_spf.google.com -all", spf_at).count == 0


@pytest.mark.parametrize("domain", ["_spf.google.com", "shop.example.net", "busy.example.net"])
def test_spf_lookup_count_agrees_with_checkdmarc(server, domain):
    # The same records over real DNS: checkdmarc's own count (it resolves a, mx and includes itself).
    zone = ["$ORIGIN example.net.", "@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 300", "@ 300 IN NS ns1"]
    zone += [f"{n}. 300 IN TXT {c}" for n, c in REAL_WORLD_SPF.items() if n.endswith("example.net")]
    zone += ["shop 300 IN MX 10 mx", "shop 300 IN A 198.51.100.30", "busy 300 IN MX 10 mx",
             "busy 300 IN A 198.51.100.31", "mx 300 IN A 198.51.100.32"]
    google = ["$ORIGIN google.com.", "@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 300", "@ 300 IN NS ns1"]
    google += [f"{n}. 300 IN TXT {c}" for n, c in REAL_WORLD_SPF.items() if n.endswith("google.com")]
    outlook = ["$ORIGIN outlook.com.", "@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 300", "@ 300 IN NS ns1",
               f"spf.protection 300 IN TXT {REAL_WORLD_SPF['spf.protection.outlook.com']}"]
    server.load(["\n".join(z) + "\n" for z in (zone, google, outlook)])
    lookups = Dns(["127.0.0.1"], port=server.port, timeout=3)
    record = v.spf_records(lookups.texts(domain))[0]
    theirs = checkdmarc.spf.parse_spf_record(record, domain, resolver=lookups.resolver, ignore_too_many_lookups=True)
    ours = v.count_spf_lookups(record, lambda n: v.spf_records(lookups.texts(n)), (domain,))
    assert ours.count == theirs["dns_lookups"]


def test_too_many_spf_lookups_fail_with_the_count(server):
    cfg = config()
    texts = [f"$ORIGIN example.com.\n@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 300\n@ 300 IN NS ns1\n"
             f"@ 300 IN TXT {REAL_WORLD_SPF['busy.example.net'].replace('a mx', 'a:mail.example.com mx')}\n"
             "@ 300 IN MX 10 mail\nmail 300 IN A 198.51.100.10\n"]
    for suffix in ("google.com", "example.net", "outlook.com"):
        lines = [f"$ORIGIN {suffix}.", "@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 300", "@ 300 IN NS ns1"]
        lines += [f"{n}. 300 IN TXT {c}" for n, c in REAL_WORLD_SPF.items() if n.endswith(suffix)]
        texts.append("\n".join(lines) + "\n")
    server.load(texts)
    results = {r.name: r for r in v.check_spf(cfg.domain, cfg.facts, Dns(["127.0.0.1"], port=server.port, timeout=3))}
    assert results["spf.lookups"].status == v.FAIL
    assert results["spf.lookups"].reason.startswith("11 DNS lookups")
    assert "more than 10 is a permerror" in results["spf.lookups"].reason


@pytest.mark.parametrize(
    ("record", "qualifier", "redirect"),
    [
        ("v=spf1 ip4:198.51.100.10 -all", "-", ""),
        ("v=spf1 ip4:198.51.100.10 ~all", "~", ""),
        ("v=spf1 ?all", "?", ""),
        ("v=spf1 all", "+", ""),
        ("v=spf1 +all", "+", ""),
        ("v=spf1 ip4:198.51.100.10", None, ""),
        ("v=spf1 redirect=_spf.example.net", None, "_spf.example.net"),
        ("v=spf1 include:allowed.example.net -ALL", "-", ""),
    ],
)
def test_spf_all_qualifier(record, qualifier, redirect):
    assert v.spf_all(record) == (qualifier, redirect)


# --- DKIM key size from the record -----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1024, 2048, 3072, 4096])
def test_dkim_key_size_from_the_published_record(bits):
    cfg = config()
    # As published: the record split into 255-byte strings, read back through dnspython and joined.
    content = rec.txt_content(rec.dkim_value(cfg, b64(new_key(bits))))
    assert v.dkim_key_bits(txt_value(content)) == bits


def test_dkim_key_size_of_a_pkcs1_key():
    # Some publishers put the bare RSAPublicKey (PKCS#1) in p=; verifiers accept it.
    record = f"v=DKIM1; k=rsa; p={b64(new_key(2048), serialization.PublicFormat.PKCS1)}"
    assert v.dkim_key_bits(record) == 2048


def test_dkim_record_as_opendkim_genkey_writes_it():
    key = b64(new_key(2048))
    # mail.txt from `opendkim-genkey -r -s mail`: the value in parentheses, split in two strings.
    genkey = f'( "v=DKIM1; h=sha256; k=rsa; s=email; " "p={key[:200]}" "{key[200:]}" )'
    parsed = v.parse_dkim_record(txt_value(genkey.strip("() ")))
    assert (parsed.key_type, parsed.bits, parsed.tags["s"]) == ("rsa", 2048, "email")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("v=DKIM1; k=rsa; p=", "p= is empty: the key is revoked"),
        ("v=DKIM1; k=rsa", "no p= tag"),
        ("v=DKIM2; k=rsa; p=MIIB", "v=DKIM2, expected v=DKIM1"),
        ("v=DKIM1; k=rsa; p=not*base64", "p= is not base64"),
        ("v=DKIM1; k=rsa; p=TUlJQg==", "could not parse RSA public key"),
    ],
)
def test_broken_dkim_records(record, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        v.parse_dkim_record(record)


def test_ed25519_record_has_no_rsa_size():
    key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="  # RFC 8463 appendix A.2
    parsed = v.parse_dkim_record(f"v=DKIM1; k=ed25519; p={key}")
    assert (parsed.key_type, parsed.bits) == ("ed25519", None)


def test_dkim_key_option_takes_the_key_or_the_record():
    key = b64(new_key(2048))
    assert v.key_from_option(key) == key
    assert v.key_from_option(rec.dkim_value(config().domain, key)) == key


# --- SMTP, submission and IMAP, judged from what the server said --------------------------------------------


def certificate(names: list[str], *, self_signed: bool = True, days: tuple[int, int] = (-1, 365),
                cn: str | None = None, san: bool = True) -> bytes:
    key = new_key(2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or names[0])])
    issuer_key, issuer = (key, subject) if self_signed else (new_key(2048), x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Lab CA")]))
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now + dt.timedelta(days=days[0]))
               .not_valid_after(now + dt.timedelta(days=days[1])))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def smtp_probe(port=25, banner="mail.example.com ESMTP Postfix", features=("starttls", "size", "pipelining"),
               auth_before=None, auth_after=None, der=None, verified=False, tls_ok=True) -> SmtpProbe:
    tls = TlsInfo(ok=tls_ok, error="" if tls_ok else "SSLError: handshake failure", version="TLSv1.3",
                  cert_der=der or certificate([HOST]), verified=verified,
                  verify_error="" if verified else "self-signed certificate")
    return SmtpProbe(V4, port, banner=(220, banner), features=sorted(features), auth_before_tls=auth_before,
                     starttls_reply=(220, "2.0.0 Ready to start TLS") if "starttls" in features else None,
                     tls=tls if "starttls" in features else None, features_tls=sorted(features),
                     auth_after_tls=auth_after)


@pytest.mark.parametrize(
    ("banner", "status", "text"),
    [
        ("mail.example.com ESMTP Postfix", v.PASS, "names the host, no version"),
        ("mail.example.com ESMTP", v.PASS, "names the host"),
        ("mail.example.com ESMTP Postfix (Debian/GNU)", v.FAIL, "shows 'Debian'"),
        ("mail.example.com ESMTP Postfix 3.7.11", v.FAIL, "shows '3.7.11'"),
        ("mail.example.com ESMTP Postfix (3.7.11)\nready", v.FAIL, "shows '3.7.11'"),
        ("localhost ESMTP Postfix", v.FAIL, "names localhost, not mail.example.com"),
        ("MAIL.EXAMPLE.COM ESMTP", v.PASS, "names the host"),
    ],
)
def test_banner(banner, status, text):
    result = v.check_banner(config().host, smtp_probe(banner=banner))
    assert (result.status, result.name) == (status, f"smtp.banner[{V4}]")
    assert text in result.reason
    if status == v.FAIL and "shows" in text:
        assert "smtpd_banner" in result.fix


def test_no_smtp_session_fails_the_banner_and_leaves_the_rest_unchecked():
    probe = SmtpProbe(V4, 25, error="ConnectionRefusedError: [Errno 111] Connection refused")
    cfg = config().host
    assert v.check_banner(cfg, probe).status == v.FAIL
    assert v.check_starttls(cfg, probe).status == v.FAIL
    assert v.check_certificate(cfg, probe).status == v.WARN
    assert v.check_auth_25(probe).status == v.WARN


@pytest.mark.parametrize(
    ("probe", "status", "text"),
    [
        (smtp_probe(), v.PASS, "TLSv1.3"),
        (smtp_probe(features=("size",)), v.FAIL, "STARTTLS not offered on port 25"),
        (smtp_probe(tls_ok=False), v.FAIL, "handshake failed"),
    ],
)
def test_starttls(probe, status, text):
    result = v.check_starttls(config().host, probe)
    assert result.status == status and text in result.reason


@pytest.mark.parametrize(
    ("der", "verified", "status", "text"),
    [
        (certificate([HOST]), False, v.WARN, "self-signed certificate for mail.example.com"),
        (certificate([HOST]), True, v.PASS, "names mail.example.com"),
        (certificate(["*.example.com"]), True, v.PASS, "names mail.example.com"),
        (certificate([HOST], san=False), False, v.WARN, "self-signed"),  # CN only, as the guide's openssl makes it
        (certificate(["other.example.net"]), False, v.FAIL, "names other.example.net, not mail.example.com"),
        (certificate(["*.mail.example.com"]), False, v.FAIL, "not mail.example.com"),
        (certificate([HOST], days=(-400, -10)), False, v.FAIL, "expired"),
        (certificate([HOST], days=(5, 365)), False, v.FAIL, "not valid before"),
        (certificate([HOST], self_signed=False), False, v.WARN, "does not verify here"),
    ],
)
def test_certificate(der, verified, status, text):
    result = v.check_certificate(config().host, smtp_probe(der=der, verified=verified))
    assert result.status == status, result.reason
    assert text in result.reason
    if status != v.PASS:
        assert "/etc/ssl/private/postfix.cacert.pem" in result.fix


@pytest.mark.parametrize(
    ("before", "after", "status"),
    [(None, None, v.PASS), ("PLAIN LOGIN", None, v.FAIL), (None, "PLAIN LOGIN", v.FAIL)],
)
def test_no_auth_on_port_25(before, after, status):
    result = v.check_auth_25(smtp_probe(auth_before=before, auth_after=after))
    assert result.status == status
    if status == v.FAIL:
        assert "smtpd_sasl_auth_enable = no" in result.fix


@pytest.mark.parametrize(
    ("before", "after", "status", "text"),
    [
        (None, "PLAIN LOGIN", v.PASS, "AUTH PLAIN LOGIN only after STARTTLS"),
        ("PLAIN LOGIN", "PLAIN LOGIN", v.FAIL, "before STARTTLS"),
        (None, None, v.FAIL, "AUTH not offered after STARTTLS"),
    ],
)
def test_submission_auth_only_after_starttls(before, after, status, text):
    result = v.check_submission_auth(smtp_probe(port=587, auth_before=before, auth_after=after))
    assert result.status == status and text in result.reason


def reply(code: int | None, text: str = "", error: str = "") -> SmtpReply:
    return SmtpReply(V4, "RCPT TO:<postmaster@example.net>", (code, text) if code else None, error)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (reply(554, "5.7.1 <postmaster@example.net>: Relay access denied"), v.PASS),
        (reply(454, "4.7.1 <postmaster@example.net>: Relay access denied"), v.PASS),  # soft_bounce = yes
        (reply(250, "2.1.5 Ok"), v.FAIL),
        (reply(450, "4.7.25 Client host rejected: cannot find your hostname, [198.51.100.5]"), v.WARN),
        (reply(None, error="EHLO x refused: 504 5.5.2 <x>: Helo command rejected: need fully-qualified hostname"),
         v.WARN),
    ],
)
def test_relay(answer, status):
    result = v.check_relay(answer)
    assert result.status == status
    if status == v.FAIL:
        assert "open relay" in result.reason and "smtpd_relay_restrictions" in result.fix and "mynetworks" in result.fix


@pytest.mark.parametrize(
    ("code", "text", "status"),
    [(502, "5.5.1 VRFY command is disabled", v.PASS), (252, "2.0.0 postmaster", v.PASS),
     (402, "4.5.1 VRFY command is disabled", v.PASS),  # soft_bounce = yes
     (250, "2.0.0 postmaster", v.FAIL), (450, "4.7.25 Client host rejected", v.WARN)],
)
def test_vrfy(code, text, status):
    result = v.check_vrfy(SmtpReply(V4, "VRFY postmaster", (code, text)))
    assert result.status == status
    if status == v.FAIL:
        assert "disable_vrfy_command = yes" in result.fix


@pytest.mark.parametrize(
    ("port", "before", "after", "status", "text"),
    [
        (25, ("starttls", "size", "pipelining"), ("size", "pipelining"), v.PASS, "does not offer ETRN"),
        (25, ("starttls", "etrn", "size"), ("etrn", "size"), v.WARN, "offers ETRN (before STARTTLS, after STARTTLS)"),
        (587, ("starttls", "size"), ("auth", "etrn"), v.WARN, "port 587 offers ETRN (after STARTTLS)"),
    ],
)
def test_etrn_is_not_offered_in_ehlo(port, before, after, status, text):
    probe = replace(smtp_probe(port=port, features=before), features_tls=sorted(after))
    result = v.check_etrn(probe, "smtp" if port == 25 else "submission")
    assert (result.name, result.status) == (f"{'smtp' if port == 25 else 'submission'}.etrn[{V4}]", status)
    assert text in result.reason
    if status == v.WARN:
        assert "smtpd_discard_ehlo_keywords = silent-discard, etrn" in result.fix


def test_etrn_not_checked_without_a_session():
    result = v.check_etrn(SmtpProbe(V4, 25, error="ConnectionRefusedError: refused"))
    assert result.status == v.WARN and result.reason.startswith("not checked")


@pytest.mark.parametrize(
    ("answer", "status", "text"),
    [
        (reply(554, "5.7.1 <postmaster@example.net>: Relay access denied"), v.PASS, "refused with 554"),
        (reply(454, "4.7.1 <postmaster@example.net>: Relay access denied"), v.WARN, "soft_bounce is on"),
        # Refused before the relay rules (reverse DNS): nothing to tell soft_bounce by.
        (reply(450, "4.7.25 Client host rejected: cannot find your hostname, [198.51.100.5]"), v.WARN, "not checked"),
        (reply(250, "2.1.5 Ok"), v.WARN, "not checked"),
        (reply(None, error="ConnectionRefusedError"), v.WARN, "not checked"),
    ],
)
def test_soft_bounce_seen_in_the_relay_refusal(answer, status, text):
    result = v.check_soft_bounce_live(answer)
    assert (result.name, result.status) == (f"smtp.soft_bounce[{V4}]", status)
    assert text in result.reason
    if "soft_bounce is on" in text:
        assert "mailstack:soft_bounce: false" in result.fix


@pytest.mark.parametrize(
    ("value", "status"),
    [("yes", v.WARN), ("no", v.PASS), ("true", v.WARN), ("", v.PASS)],
)
def test_soft_bounce_setting(value, status):
    result = v.check_soft_bounce_setting(value, "the host's postconf, over SSH")
    assert (result.name, result.status) == ("postfix.soft_bounce", status)
    assert "the host's postconf, over SSH" in result.reason
    if status == v.WARN:
        assert "mailstack:soft_bounce: false" in result.fix


@pytest.mark.parametrize(
    ("value", "status", "named"),
    [
        ("resource, software", v.PASS, ""),
        ("software", v.PASS, ""),
        ("bounce, 2bounce, data, delay, policy, protocol, resource, software", v.WARN,
         "bounce, 2bounce, data, delay, policy, protocol reports"),
        ("resource,software policy", v.WARN, "policy reports"),
    ],
)
def test_notify_classes_setting(value, status, named):
    result = v.check_notify_classes(value, "the stack's config")
    assert (result.name, result.status) == ("postfix.notify_classes", status)
    if status == v.WARN:
        assert named in result.reason and "confidential" in result.reason
        assert "mailstack:notify_classes: [resource, software]" in result.fix


def test_testing_time_settings_come_from_the_stack_when_the_host_is_not_asked(monkeypatch):
    asked = []
    monkeypatch.setattr(v, "read_postfix_settings", lambda *a: asked.append(a) or {})
    cfg = config(soft_bounce=True, notify_classes=["resource", "software"])
    results = {r.name: r for r in v._postfix_settings(cfg.host, v.Options(ssh=False))}
    assert asked == []
    assert results["postfix.soft_bounce"].status == v.WARN
    assert "the stack's config; the host not asked: SSH is off (--no-ssh)" in results["postfix.soft_bounce"].reason
    assert results["postfix.notify_classes"].status == v.PASS


def test_testing_time_settings_are_read_from_the_host_first(monkeypatch):
    """The stack says off, the host says on (a hand edit, an older deploy): the host's word counts."""
    monkeypatch.setattr(v, "read_postfix_settings",
                        lambda cfg, names, timeout: {"soft_bounce": "yes", "notify_classes": "resource, software"})
    results = {r.name: r for r in v._postfix_settings(config(soft_bounce=False).host, v.Options())}
    assert results["postfix.soft_bounce"].status == v.WARN
    assert "the host's postconf, over SSH" in results["postfix.soft_bounce"].reason


def test_testing_time_settings_fall_back_on_the_stack_when_ssh_fails(monkeypatch):
    def unreachable(*a):
        raise HostUnavailable("ssh to root@198.51.100.10 failed: Connection refused")
    monkeypatch.setattr(v, "read_postfix_settings", unreachable)
    results = {r.name: r for r in v._postfix_settings(config(soft_bounce=False).host, v.Options())}
    assert results["postfix.soft_bounce"].status == v.PASS
    assert "the host not asked: ssh to root@198.51.100.10 failed" in results["postfix.soft_bounce"].reason
    assert results["postfix.notify_classes"].status == v.WARN  # the guide's list, mailstack's default


def test_postconf_over_ssh_reads_each_setting(monkeypatch):
    import subprocess
    from components import verify_net
    seen = {}

    def run(cfg, command, timeout):
        seen["command"] = command
        return subprocess.CompletedProcess([], 0, "soft_bounce = no\nnotify_classes =\n", "")
    monkeypatch.setattr(verify_net, "run_on_host", run)
    assert verify_net.read_postfix_settings(config().host, ["soft_bounce", "notify_classes"]) == {
        "soft_bounce": "no", "notify_classes": ""}
    assert seen["command"] == "postconf soft_bounce notify_classes"
    monkeypatch.setattr(verify_net, "run_on_host",
                        lambda *a: subprocess.CompletedProcess([], 1, "", "postconf: command not found"))
    with pytest.raises(HostUnavailable, match="postconf: command not found"):
        verify_net.read_postfix_settings(config().host, ["soft_bounce"])


def test_imap():
    ok = TlsInfo(ok=True, version="TLSv1.3")
    down = TlsInfo(ok=False, error="ConnectionRefusedError: [Errno 111] Connection refused")
    assert v.check_imap(ImapProbe(V4, ok, ok, ["IMAP4REV1", "LOGINDISABLED", "STARTTLS"])).status == v.PASS
    assert v.check_imap(ImapProbe(V4, ok, down)).status == v.PASS
    assert v.check_imap(ImapProbe(V4, down, down)).status == v.FAIL
    plaintext = v.check_imap(ImapProbe(V4, ok, ok, ["IMAP4REV1", "STARTTLS"]))
    assert plaintext.status == v.WARN and "disable_plaintext_auth" in plaintext.fix


# --- the DKIM key over SSH, the report -------------------------------------------------------------------


def test_ssh_pins_the_stacks_host_key_and_uses_its_key(tmp_path):
    cfg = config(ssh_host="198.51.100.10", ssh_port=2222, ssh_user="deploy")
    key_path = "/etc/mailstack/domains/example.com/dkim/mail.private"
    argv = ssh_argv(cfg.host, key_path, tmp_path / "key", tmp_path / "known_hosts", timeout=5)
    assert argv[:2] == ["ssh", "-F"]
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[argv.index("-i") + 1] == str(tmp_path / "key") and "BatchMode=yes" in argv
    assert argv[-4:] == ["2222", "deploy@198.51.100.10", "--",
                         f"sudo -n openssl rsa -in {key_path} -pubout -outform DER 2>/dev/null "
                         "| base64 -w0"]
    # Without a pinned key: the user's own known_hosts, still strict.
    unpinned = ssh_argv(config().host, key_path, None, None, timeout=5)
    assert "-F" not in unpinned and "-i" not in unpinned and "StrictHostKeyChecking=yes" in unpinned
    assert unpinned[-1].startswith("openssl rsa")


def test_report_and_table():
    cfg = config()
    results = [v.passed("dns.mx", "example.com MX 10 mail.example.com"),
               v.warned("dkim.key", "not compared: SSH is off", "give the key with --dkim-key"),
               v.failed("dmarc.record", "no DMARC record at _dmarc.example.com", "publish ...")]
    data = v.report("e2e", cfg.target("domain"), results, 1.234)
    assert data["counts"] == {"pass": 1, "warn": 1, "fail": 1} and data["ok"] is False and data["seconds"] == 1.23
    assert (data["kind"], data["domain"], data["hostname"], data["addresses"]) == ("domain", "example.com", HOST,
                                                                                   [V4, V6])
    assert data["checks"][2] == {"name": "dmarc.record", "status": "fail",
                                 "reason": "no DMARC record at _dmarc.example.com", "fix": "publish ..."}
    json.dumps(data)
    lines = v.table("e2e", cfg.target("domain"), results, 1.234).splitlines()
    assert lines[0] == f"verify e2e: example.com, mail host {HOST} ({V4}, {V6})"
    assert lines[3].split() == ["pass", "dns.mx", "example.com", "MX", "10", "mail.example.com"]
    assert lines[4].startswith("WARN") and lines[5].strip() == "fix: give the key with --dkim-key"
    assert lines[6].startswith("FAIL") and lines[7].strip() == "fix: publish ..."
    assert lines[-1] == "1 passed, 1 warnings, 1 failed in 1.2s"


def test_report_and_table_of_a_host_stack():
    cfg = config()
    results = [v.warned(f"smtp.cert[{V4}]", "self-signed certificate", "install a certificate"),
               v.failed(f"dns.ptr[{V4}]", "no PTR record at 10.100.51.198.in-addr.arpa", "publish ...")]
    data = v.report("host-e2e", cfg.target("host"), results, 2.0)
    assert (data["kind"], data["domain"], data["hostname"]) == ("host", None, HOST)
    assert data["checks"][1] == {"name": f"dns.ptr[{V4}]", "status": "fail",
                                 "reason": "no PTR record at 10.100.51.198.in-addr.arpa", "fix": "publish ..."}
    lines = v.table("host-e2e", cfg.target("host"), results, 2.0).splitlines()
    assert lines[0] == f"verify host-e2e: mail host {HOST} ({V4}, {V6})"
    assert lines[3].startswith("WARN") and lines[4].strip() == "fix: install a certificate"


def test_results_are_reported_by_check_then_address():
    cfg = config()
    names = [f"smtp.relay[{V6}]", "dns.mx", f"smtp.banner[{V6}]", f"smtp.banner[{V4}]", "dkim.key", f"dns.ptr[{V4}]"]
    ordered = sorted((v.passed(n, "") for n in names), key=lambda r: v._order(cfg.target("host"), r))
    assert [r.name for r in ordered] == ["dns.mx", f"dns.ptr[{V4}]", "dkim.key", f"smtp.banner[{V4}]",
                                         f"smtp.banner[{V6}]", f"smtp.relay[{V6}]"]


def test_every_check_belongs_to_one_kind_of_stack():
    # Everything verify checked for the single-domain stack is still checked, by exactly one kind.
    assert sorted(v.HOST_CHECKS + v.DOMAIN_CHECKS) == sorted(v.ORDER)
    assert set(v.HOST_CHECKS).isdisjoint(v.DOMAIN_CHECKS)


@pytest.mark.parametrize("kind", ["host", "domain"])
def test_run_checks_runs_exactly_its_kinds_checks(server, host_key, kind, monkeypatch):
    """The whole run, the network probes answered by no one: every check of the kind, once per address."""
    cfg = config(dnssec=True)  # with DANE's checks too
    lookups = serve(server, published(cfg, host_key))
    no_session = "ConnectionRefusedError: [Errno 111] Connection refused"
    monkeypatch.setattr(v, "probe_smtp", lambda address, port, *a: SmtpProbe(address, port, error=no_session))
    monkeypatch.setattr(v, "probe_vrfy", lambda address, *a: SmtpReply(address, "VRFY", None, no_session))
    monkeypatch.setattr(v, "probe_relay", lambda address, *a: SmtpReply(address, "RCPT", None, no_session))
    down = TlsInfo(False, error=no_session)
    monkeypatch.setattr(v, "probe_imap", lambda address, *a: ImapProbe(address, down, down))
    options = v.Options(helo="client.example.net", ssh=False, dkim_key=host_key, timeout=3)
    results = v.run_checks(cfg.target(kind), options, lookups)
    per_address = {"dns.ptr", "spf.pass", "dane.tlsa"} | {n for n in v.ORDER
                                                       if n.split(".")[0] in ("smtp", "submission", "imap")}
    own = v.HOST_CHECKS if kind == "host" else v.DOMAIN_CHECKS
    own = [n for n in own if n != "mta-sts.policy"]  # a self-signed host: no policy to fetch (test_verify_sts.py)
    expected = [n if n not in per_address else f"{n}[{a}]" for n in own for a in ([V4, V6] if n in per_address
                                                                                  else [None])]
    assert sorted(r.name for r in results) == sorted(expected)
    dns_checks = [r for r in results if r.name.split(".")[0] in ("dns", "spf", "dkim", "dmarc")]
    assert dns_checks and all(r.status == v.PASS for r in dns_checks), [r for r in dns_checks if r.status != v.PASS]


def test_relay_recipient_is_outside_the_hosts_domains():
    assert v.default_relay_to([HOST]) == "postmaster@example.net"
    assert v.default_relay_to(["mail.example.net"]) == "postmaster@example.org"
    # The domains the host is known to host (the project's domain stacks on it) are kept out too.
    assert v.default_relay_to(["mail.example.net", "example.com", "example.org"]) == "postmaster@relay-test.example"


def test_cli_exits_2_for_an_unknown_stack_or_a_bad_key_before_checking_anything(tmp_path, monkeypatch, capsys):
    from components.__main__ import main

    def no_network(*args, **kwargs):
        raise AssertionError("verify must not check anything here")

    monkeypatch.setattr(v, "run_checks", no_network)
    assert main(["verify", "nosuch", "--project", str(tmp_path)]) == 2
    assert "no stack 'nosuch'" in capsys.readouterr().err
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.lab.yaml").write_text(
        f"config:\n  mailstack:domain: example.com\n  mailstack:ipv4: [{V4}]\n")
    assert main(["verify", "lab", "--project", str(tmp_path)]) == 2
    assert "mailstack:ipv4: is a host-stack key" in capsys.readouterr().err
    # A domain stack whose host stack file is missing: the key and the file are named.
    (tmp_path / "stacks" / "Pulumi.lab.yaml").write_text(
        "config:\n  mailstack:domain: example.com\n  mailstack:host_stack: organization/mailstack/host-lab\n"
        "  mailstack:users: [{name: alice}]\n")
    assert main(["verify", "lab", "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mailstack:host_stack: 'organization/mailstack/host-lab' names the host stack host-lab" in err
    assert "stacks/Pulumi.host-lab.yaml, which does not exist" in err
    (tmp_path / "stacks" / "Pulumi.host-lab.yaml").write_text(
        f"config:\n  mailstack:hostname: {HOST}\n  mailstack:ipv4: [{V4}]\n"
        "  mailstack:postmaster_address: postmaster@example.com\n")
    assert main(["verify", "lab", "--project", str(tmp_path), "--dkim-key", "v=DKIM1; p="]) == 2
    assert "--dkim-key: p= is empty" in capsys.readouterr().err


# --- mailstack:tls acme | files: the certificate must be trusted, and not about to expire ---------


@pytest.mark.parametrize(
    ("mode", "der", "verified", "status", "text"),
    [
        ("acme", certificate([HOST], self_signed=False), True, v.PASS, "names mail.example.com, valid until"),
        ("acme", certificate([HOST], self_signed=False, days=(-80, 20)), True, v.PASS, "issued by CN=Lab CA"),
        ("acme", certificate([HOST], self_signed=False, days=(-80, 10)), True, v.WARN, "but expires in 9 days"),
        ("acme", certificate([HOST]), False, v.FAIL, "mail.example.com is self-signed (mailstack:tls is acme"),
        ("acme", certificate([HOST], self_signed=False), False, v.FAIL, "does not verify here: self-signed"),
        ("acme", certificate([HOST], self_signed=False, days=(-100, -1)), False, v.FAIL, "expired"),
        ("acme", certificate(["other.example.com"], self_signed=False), True, v.FAIL, "not mail.example.com"),
        ("files", certificate([HOST]), False, v.FAIL, "is self-signed (mailstack:tls is files: it must be trusted)"),
        ("files", certificate([HOST], self_signed=False, days=(-80, 3)), True, v.WARN, "expires in 2 days"),
        ("self-signed", certificate([HOST], self_signed=False, days=(-80, 3)), True, v.WARN, "expires in 2 days"),
    ],
)
def test_certificate_by_tls_mode(mode, der, verified, status, text):
    extra = {"acme_cloudflare_token": "t" * 40} if mode == "acme" else {}
    cfg = config(tls=mode, **extra).host
    result = v.check_certificate(cfg, smtp_probe(der=der, verified=verified))
    assert result.status == status and text in result.reason, result.reason
    if status != v.PASS and mode == "acme":
        assert "mailstack-tls status" in result.fix and "mailstack-tls renew --force host" in result.fix
    if status != v.PASS and mode == "files":
        assert "from a trusted CA at /etc/ssl/private/postfix.cacert.pem" in result.fix


def test_ca_file_is_trusted_instead_of_the_system_cas(tmp_path):
    """`verify --ca-file`: a certificate from that CA verifies (and names the host); without it, it does not."""
    from components import verify_net

    ca_key, key = new_key(2048), new_key(2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lab ACME root")])
    now = dt.datetime.now(dt.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(2).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    (tmp_path / "ca.pem").write_bytes(pem(ca))
    (tmp_path / "chain.pem").write_bytes(pem(leaf) + pem(ca))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")

    def handshake(context: ssl.SSLContext) -> str:
        client, server = socket.socketpair()
        thread = threading.Thread(target=lambda: _serve(server_context, server), daemon=True)
        thread.start()
        try:
            with context.wrap_socket(client, server_hostname=HOST):
                return "verified"
        except ssl.SSLCertVerificationError as err:
            return err.verify_message
        finally:
            thread.join(5)

    assert handshake(verify_net._verifying_context(str(tmp_path / "ca.pem"))) == "verified"
    assert handshake(verify_net._verifying_context()) == "self-signed certificate in certificate chain"


def _serve(context, sock) -> None:
    try:
        with context.wrap_socket(sock, server_side=True):
            pass
    except (ssl.SSLError, OSError):
        pass


# --- DANE: the host's TLSA records and the DNSSEC under them ---------------------------------------


class FakeDane:
    """Lookups for the DANE checks: TLSA/DNSKEY/DS rdatas by type, and whether the resolver vouches (AD)."""

    def __init__(self, tlsa=(), dnskey=True, ds=True, ad=True, error=None):
        self.answers = {"TLSA": [dns.rdata.from_text("IN", "TLSA", t) for t in tlsa],
                        "DNSKEY": [object()] if dnskey else [], "DS": [object()] if ds else []}
        self.ad, self.error = ad, error

    def records(self, name, rtype):
        if self.error:
            raise v.DnsError(self.error)
        return self.answers[rtype]

    def authenticated(self, name, rtype):
        return self.ad


def dane_host():
    return config(dnssec=True).host


def test_tlsa_passes_when_a_record_matches_the_served_key_and_counts_the_next_one():
    der = certificate([HOST])
    served = v.spki_sha256(der)
    probe = smtp_probe(der=der)
    result = v.check_tlsa(dane_host(), probe, FakeDane([f"3 1 1 {served}", "3 1 1 " + "ab" * 32]))
    assert (result.status, result.name) == (v.PASS, f"dane.tlsa[{V4}]")
    assert "1 more record(s): the next key" in result.reason


def test_tlsa_fails_when_no_record_matches_the_served_key_and_names_the_fix():
    result = v.check_tlsa(dane_host(), smtp_probe(), FakeDane(["3 1 1 " + "ab" * 32, "2 0 1 " + "cd" * 32]))
    assert result.status == v.FAIL and "matches the key served on port 25" in result.reason
    assert "pulumi up" in result.fix
    assert v.check_tlsa(dane_host(), smtp_probe(), FakeDane([])).status == v.FAIL


def test_tlsa_is_not_judged_without_a_tls_session_or_an_answer():
    assert v.check_tlsa(dane_host(), smtp_probe(tls_ok=False), FakeDane()).status == v.WARN
    assert v.check_tlsa(dane_host(), smtp_probe(), FakeDane(error="timeout")).status == v.WARN


@pytest.mark.parametrize(("lookups", "status", "words"), [
    (FakeDane(), v.PASS, "validates"),
    (FakeDane(ds=False), v.PASS, "validates"),  # the resolver's anchor proves it (a lab, a private root)
    (FakeDane(dnskey=False), v.FAIL, "not signed"),
    (FakeDane(ds=False, ad=False), v.FAIL, "no DS"),
    (FakeDane(ad=False), v.WARN, "did not validate"),
])
def test_dnssec_under_the_tlsa_records(lookups, status, words):
    result = v.check_dnssec(dane_host(), lookups)
    assert result.status == status and words in result.reason


# --- dkim.selectors: the selectors in DNS and the one the host signs with ---------------------------


class _Txt:
    """Lookups that hold a DKIM record for some selectors of example.com."""

    def __init__(self, *selectors: str):
        self.names = {f"{s}._domainkey.example.com" for s in selectors}

    def texts(self, name: str) -> list[str]:
        return ["v=DKIM1; k=rsa; p=MIIB"] if name in self.names else []


@pytest.mark.parametrize(("wanted", "in_dns", "signing", "keys", "status", "says"), [
    ("mail", ["mail"], "mail", ["mail"], v.PASS, "selectors in DNS: mail; the host signs with mail"),
    # A rotation: both published, the host still on the old one until the next up switches it.
    ("s2026", ["mail", "s2026"], "mail", ["mail", "s2026"], v.WARN, "a rotation under way: its record is published"),
    ("s2026", ["mail"], "mail", ["mail", "s2026"], v.WARN, "its record is not yet visible"),
    # Switched, the old one kept for the retention: fine.
    ("s2026", ["mail", "s2026"], "s2026", ["mail", "s2026"], v.PASS, "selectors in DNS: mail, s2026; the host signs with s2026"),
    ("s2026", ["mail"], "s2026", ["s2026"], v.FAIL, "the host signs with s2026, which has no record in DNS"),
    ("mail", ["mail"], None, [], v.FAIL, "the host signs nothing from example.com"),
])
def test_dkim_selectors(wanted, in_dns, signing, keys, status, says):
    cfg = config(dkim_selector=wanted).domain
    result = v.check_dkim_selectors(cfg, _Txt(*in_dns), signing, keys)
    assert (result.status, result.name) == (status, "dkim.selectors"), result
    assert says in result.reason, result.reason
    assert result.status == v.PASS or result.fix


def test_dkim_selectors_without_ssh():
    cfg = config().domain
    off = v.check_dkim_selectors(cfg, _Txt(cfg.dkim_selector), None, [], "SSH is off (--no-ssh)")
    assert off.status == v.PASS and "not read" in off.reason
    broken = v.check_dkim_selectors(cfg, _Txt(cfg.dkim_selector), None, [], "ssh failed")
    assert broken.status == v.WARN and "unknown" in broken.reason
