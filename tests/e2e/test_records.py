"""The stacks' DNS records as the world sees them: what the program registered, nothing else.

The host stack registers the mail host's own records (A/AAAA, PTR, the HELO
name's SPF); each domain stack its domain's (MX, SPF, DKIM, DMARC), and none
of the host's. Every `cloudflare.DnsRecord` a stack registered (tests/e2e/deploy.py
publishes each one to the lab DNS exactly as registered) must be answered by
the lab DNS with the same content: MX target and priority, A/AAAA address,
TXT chunks as the same character-strings, PTR target. For mx's addresses the
reverse DNS must be forward-confirmed (IPv4 and IPv6), as receivers'
reject_unknown_client_hostname demands. checkdmarc's parsers judge the SPF
and DMARC texts offline: they get the record text, and any lookup they make
is answered from what the lab DNS said (a resolver that never goes out).
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict

import dns.rdata
import dns.resolver
import pytest
from checkdmarc.dmarc import parse_dmarc_record
from checkdmarc.spf import parse_spf_record

from .deploy import record_content
from .stack import DOMAIN_SETTINGS, DOMAINS, HOSTNAME, host_config
from .test_submission import dkim_public_key, selector_of

DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"

# One process in a lab namespace asks every question (a process per query costs ~0.3 s).
_ASK = """
import json, sys
from tests.e2e.nsclient import query
server, questions = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps([query(server, name, rtype) for name, rtype in questions]))
"""


# --- helpers -----------------------------------------------------------------------------------


def ask_lab_dns(lab, questions: list[tuple[str, str]], on: str = "peer") -> dict[tuple[str, str], list[dict]]:
    """{(name, type): records} from the lab DNS, asked from a lab host; each record {"text", "strings"?}."""
    questions = list(dict.fromkeys(questions))
    out = lab.run_python(on, ["-c", _ASK, lab.dns.ipv4, json.dumps(questions)]).stdout
    answers = json.loads(out)
    for (name, rtype), answer in zip(questions, answers, strict=True):
        assert answer["rcode"] == "NOERROR", f"{name} {rtype}: {answer['rcode']}"
    return {question: answer["records"] for question, answer in zip(questions, answers, strict=True)}


def registered_records(stack) -> list[dict]:
    """The inputs of every DnsRecord a stack registered (as its deployment published them)."""
    return [entry["inputs"] for key, entry in stack.state.items() if key.startswith(DNS_RECORD + "::")]


def txt_strings(content: str) -> list[str]:
    """A registered TXT content ('"chunk1" "chunk2"') as its character-strings."""
    rdata = dns.rdata.from_text("IN", "TXT", content)
    return [s.decode() for s in rdata.strings]


def registered_answer(record: dict):
    """What the lab DNS must answer for a registered record, in the form `served_answer` gives."""
    kind = record["type"]
    if kind in ("TLSA", "SRV"):  # registered as Cloudflare takes them: their fields as data
        text = (record.get("content") or record_content(record)).lower()
        if kind == "SRV":  # the target as the lab DNS answers it: absolute ("." stays ".")
            text = text if text.endswith(".") else text + "."
        return text
    content = record["content"]
    if kind in ("A", "AAAA"):
        return str(ipaddress.ip_address(content))
    if kind == "MX":
        return f"{int(record['priority'])} {content.rstrip('.')}."
    if kind == "PTR":
        return content.rstrip(".") + "."
    if kind == "TXT":
        return tuple(txt_strings(content))
    raise AssertionError(f"unexpected record type {kind}")


def served_answer(kind: str, served: dict):
    if kind in ("A", "AAAA"):
        return str(ipaddress.ip_address(served["text"]))
    if kind == "TXT":
        return tuple(served["strings"])
    return served["text"].lower()


def joined_txt(answers: dict, name: str) -> list[str]:
    """Each TXT record at name, its strings concatenated (as SPF/DKIM/DMARC readers do)."""
    return ["".join(r["strings"]) for r in answers[(name, "TXT")]]


class LabAnswers(dns.resolver.Resolver):
    """A resolver for checkdmarc that never sends a packet: it answers from `answers`."""

    def __init__(self, answers: dict[tuple[str, str], list[dict]]):
        super().__init__(configure=False)
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    def resolve(self, qname, rdtype="A", *args, **kwargs):
        question = (str(qname).rstrip(".").lower(), str(rdtype).upper())
        self.asked.append(question)
        if question not in self.answers:
            raise AssertionError(f"checkdmarc asked {question}, which the test did not fetch from the lab DNS")
        records = self.answers[question]
        if not records:
            raise dns.resolver.NoAnswer()
        return [dns.rdata.from_text("IN", question[1], r["text"]) for r in records]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records_of(deployment) -> dict[str, list[dict]]:
    """{"host": the host stack's records, "example.com": that domain stack's, ...}."""
    return {"host": registered_records(deployment.host),
            **{d: registered_records(stack) for d, stack in deployment.domains.items()}}


@pytest.fixture(scope="module")
def records(records_of) -> list[dict]:
    return [r for stack_records in records_of.values() for r in stack_records]


@pytest.fixture(scope="module")
def served(lab, records) -> dict[tuple[str, str], list[dict]]:
    """The lab DNS's answers for every registered (name, type), plus mx's forward names and MX."""
    questions = [(r["name"], r["type"]) for r in records]
    questions += [(HOSTNAME, "A"), (HOSTNAME, "AAAA"), *((d, "MX") for d in DOMAINS)]
    questions += [(ipaddress.ip_address(a).reverse_pointer, "PTR") for a in (lab.mx.ipv4, lab.mx.ipv6)]
    return ask_lab_dns(lab, questions)


# --- tests ----------------------------------------------------------------------------------------


def test_host_stack_registers_the_hosts_records_only(lab, records_of):
    kinds = sorted((r["name"], r["type"]) for r in records_of["host"])
    assert kinds == sorted([
        (HOSTNAME, "A"),
        (HOSTNAME, "AAAA"),
        (HOSTNAME, "TXT"),  # SPF of the HELO name
        (ipaddress.ip_address(lab.mx.ipv4).reverse_pointer, "PTR"),
        (ipaddress.ip_address(lab.mx.ipv6).reverse_pointer, "PTR"),
        # DANE (dnssec: true): the served key's and the next key's TLSA records.
        *([(f"_25._tcp.{HOSTNAME}", "TLSA")] * 2 if host_config(lab).get("mailstack:dnssec") else []),
    ])
    assert {r["zoneId"] for r in records_of["host"] if r["type"] != "PTR"} == {"example.net"}


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_stack_registers_its_mail_records_only(lab, records_of, domain):
    kinds = sorted((r["name"], r["type"]) for r in records_of[domain])
    expected = [
        (domain, "MX"),
        (domain, "TXT"),  # SPF
        (f"{selector_of(domain)}._domainkey.{domain}", "TXT"),  # DKIM, the domain's selector
        (f"_dmarc.{domain}", "TXT"),
        (f"_smtp._tls.{domain}", "TXT"),  # TLS-RPT, whatever the host's TLS
    ]
    # MTA-STS: only on a host with trusted certificates (mailstack:tls acme), unless its mode is none.
    if (host_config(lab).get("mailstack:tls") == "acme"
            and DOMAIN_SETTINGS[domain].get("mta_sts_mode", "testing") != "none"):
        expected += [(f"_mta-sts.{domain}", "TXT"), (f"mta-sts.{domain}", "A"), (f"mta-sts.{domain}", "AAAA")]
    # Client autoconfiguration (autoconfig: true, the default): the RFC 6186/8314 SRV records, and
    # autoconfig.<domain> on a host with trusted certificates.
    if DOMAIN_SETTINGS[domain].get("autoconfig", True):
        expected += [(f"{service}.{domain}", "SRV") for service in (
            "_submissions._tcp", "_submission._tcp", "_imaps._tcp", "_imap._tcp", "_pop3s._tcp", "_pop3._tcp")]
        if host_config(lab).get("mailstack:tls") == "acme":
            expected += [(f"autoconfig.{domain}", "A"), (f"autoconfig.{domain}", "AAAA")]
    assert kinds == sorted(expected)
    assert {r["zoneId"] for r in records_of[domain]} == {domain}


def test_lab_dns_answers_exactly_the_registered_records(records, served):
    # Per (name, type): the answer holds the registered records and nothing else
    # (two SPF records at one name, say, would be a permerror).
    registered = defaultdict(list)
    for record in records:
        registered[(record["name"], record["type"])].append(registered_answer(record))
    for (name, kind), expected in registered.items():
        answer = [served_answer(kind, r) for r in served[(name, kind)]]
        assert sorted(answer) == sorted(expected), f"{name} {kind}: served {answer}, registered {expected}"


@pytest.mark.parametrize("domain", DOMAINS)
def test_mail_records_say_what_the_guide_needs(lab, deployment, served, domain):
    assert [r["text"] for r in served[(domain, "MX")]] == [f"10 {HOSTNAME}."]
    assert [r["text"] for r in served[(HOSTNAME, "A")]] == [lab.mx.ipv4]
    assert [r["text"] for r in served[(HOSTNAME, "AAAA")]] == [lab.mx.ipv6]
    spf = f"v=spf1 ip4:{lab.mx.ipv4} ip6:{lab.mx.ipv6} -all"
    assert joined_txt(served, domain) == [spf]
    assert joined_txt(served, HOSTNAME) == [spf]
    # The DKIM key in DNS is the one the host generated for this domain (its DKIM unit's stdout).
    public_key = dkim_public_key(deployment, domain)
    assert public_key
    dkim_name = f"{selector_of(domain)}._domainkey.{domain}"
    (dkim,) = joined_txt(served, dkim_name)
    assert dkim == f"v=DKIM1; h=sha256; k=rsa; s=email; p={public_key}"
    assert all(len(s.encode()) <= 255 for r in served[(dkim_name, "TXT")] for s in r["strings"])


def test_each_domain_has_a_dkim_key_of_its_own(deployment):
    keys = [dkim_public_key(deployment, d) for d in DOMAINS]
    assert all(keys) and len(set(keys)) == len(keys), "two domains publish the same DKIM key"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_reverse_dns_of_mx_is_forward_confirmed(lab, served, family):
    address = getattr(lab.mx, family)
    ptr = [r["text"] for r in served[(ipaddress.ip_address(address).reverse_pointer, "PTR")]]
    assert ptr == [f"{HOSTNAME}."], f"PTR of {address}: {ptr}"
    forward = [r["text"] for r in served[(HOSTNAME, "A" if family == "ipv4" else "AAAA")]]
    assert [ipaddress.ip_address(a) for a in forward] == [ipaddress.ip_address(address)]


@pytest.mark.parametrize("domain", DOMAINS)
def test_spf_parses_with_checkdmarc(lab, served, domain):
    (record,) = joined_txt(served, domain)
    resolver = LabAnswers(served)
    parsed = parse_spf_record(record, domain, resolver=resolver)
    assert parsed["parsed"]["mechanisms"] == [
        {"action": "pass", "mechanism": "ip4", "value": lab.mx.ipv4},
        {"action": "pass", "mechanism": "ip6", "value": lab.mx.ipv6},
    ]
    assert parsed["parsed"]["all"] == "fail"
    assert parsed["dns_lookups"] == 0 and parsed["warnings"] == []
    # The HELO name's SPF is the same policy.
    assert parse_spf_record(joined_txt(served, HOSTNAME)[0], HOSTNAME, resolver=resolver)["parsed"] == parsed["parsed"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_dmarc_parses_with_checkdmarc(served, domain):
    (record,) = joined_txt(served, f"_dmarc.{domain}")
    parsed = parse_dmarc_record(record, domain, resolver=LabAnswers(served))
    tags = parsed["tags"]
    assert tags["v"]["value"] == "DMARC1"
    assert tags["p"]["value"] == DOMAIN_SETTINGS[domain].get("dmarc_policy", "quarantine")
    assert [uri["address"] for uri in tags["rua"]["value"]] == [f"postmaster@{domain}"]
    # Alignment stays relaxed (bounces are checked by the HELO name mail.example.net).
    assert tags["adkim"]["value"] == "r" and tags["aspf"]["value"] == "r"
    assert parsed["warnings"] == [], parsed["warnings"]
