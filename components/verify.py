"""`verify`: is the deployed mail system what the stack says, seen from outside?

`python -m components verify STACK` reads what should be true from the list of
records that `components/records.py` builds and `MailDns` publishes (`published`
below: the very list, not a copy of its rules) and checks what is true, like a
receiving mail server would. Each kind of stack checks what it owns:

- a host stack: the host's records (A, AAAA, forward-confirmed PTRs, the HELO
  name's SPF) and its services at every address (SMTP banner, STARTTLS,
  certificate, no AUTH on port 25, no VRFY, no ETRN offered, no open relay,
  submission, IMAP), and the guide's testing-time settings (soft_bounce,
  notify_classes) as the host's Postfix reads them over SSH;
- a domain stack: its domain's records (MX at its host, not a CNAME; SPF that
  passes mail from every address of the host; DKIM, the key the host signs
  with; DMARC; MTA-STS, and its policy fetched over HTTPS as a sender does;
  TLS-RPT). What it knows of its host (name, addresses, SSH) comes from
  its host stack's file (components/stackfile.py), as `render` does.

Every check is a `Result`: a name, pass/warn/fail, one line of reason and, when
something is wrong, the fix (the record to publish, the setting to change).

- fail: mail will be refused, spoofable or exposed, or the stack's record or
  setting is not what is live;
- warn: works, but not as it should (a self-signed certificate, `~all`), or
  could not be decided from here (the reason says why);
- pass.

The judges below are pure: DNS checks read through a `Dns` (a dnspython
resolver, any server), server checks read probe data (components/verify_net.py
makes it). `run_checks` runs them concurrently.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import checkdmarc.dmarc
import checkdmarc.spf
import checkdmarc.utils
import dkim
import dkim.util
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components import paths
from components.config import DomainConfig, HostConfig
from components.hostfacts import HostFacts
from components.services import rspamd
from components.records import (
    Record,
    domain_mta_sts_policy,
    host_records,
    mail_records,
    mta_sts_host,
    ptr_name,
    ptr_records,
    reverse_zone_for,
    tlsa_name,
    txt_content,
)
from components.verify_net import (
    Dns,
    DnsError,
    HostKeyUnavailable,
    HostUnavailable,
    ImapProbe,
    PolicyFetch,
    SmtpProbe,
    SmtpReply,
    TlsInfo,
    probe_imap,
    probe_relay,
    probe_smtp,
    read_spam_filter_state,
    fetch_policy,
    probe_vrfy,
    read_host_dkim_key,
    read_host_dkim_signing,
    read_postfix_settings,
    spf_check,
)

PASS, WARN, FAIL = "pass", "warn", "fail"

# RFC 7208 4.6.4: at most 10 terms that cause DNS lookups, across includes.
SPF_MAX_LOOKUPS = 10
# RFC 8301 3.2: signers SHOULD use RSA keys of at least 2048 bits (1024 is the floor); the guide's size.
DKIM_MIN_BITS = 2048

REFRESH = "`pulumi up --refresh` publishes it again"


@dataclass(frozen=True)
class Result:
    """One check: what was checked, how it went, why, and what to do."""

    name: str  # e.g. "dns.ptr[198.51.100.10]"
    status: str  # pass, warn or fail
    reason: str  # one line
    fix: str = ""  # the record to publish or the setting to change; empty on pass


def passed(name: str, reason: str) -> Result:
    return Result(name, PASS, reason)


def warned(name: str, reason: str, fix: str = "") -> Result:
    return Result(name, WARN, reason, fix)


def failed(name: str, reason: str, fix: str) -> Result:
    return Result(name, FAIL, reason, fix)


def _line(name: str, rtype: str, content: str) -> str:
    """A record as a zone-file line: what to publish."""
    return f"{name}. {rtype} {content}"


def _at(address: str) -> str:
    return f"[{address}]"


# --- what the stack publishes -------------------------------------------------------------------

# The DKIM record's key when verify does not know the host's key (a fix then shows where it goes).
HOST_KEY_UNKNOWN = "<the host key>"


def published(cfg: HostConfig | DomainConfig, host: HostFacts | None = None, dkim_key: str | None = None
              ) -> dict[str, Record]:
    """The records MailDns publishes for the stack, by their key ("a-...", "ptr-...", "mx", "spf", "dkim").

    The expectations of every DNS check: the same list the Cloudflare component
    and the zone file get (components/records.py), so a new record, or a changed
    one, is checked the day it is published. A host stack's: host_records and
    ptr_records; a domain stack's: mail_records with its `host`. `dkim_key`:
    the host's public key for the domain, when known.
    """
    if isinstance(cfg, HostConfig):
        return {r.key: r for r in host_records(cfg) + ptr_records(cfg)}
    assert host is not None, "a domain stack's records need its host"
    return {r.key: r for r in mail_records(cfg, host, dkim_key or HOST_KEY_UNKNOWN)}


# --- DNS ----------------------------------------------------------------------------------------


def check_mx(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns) -> Result:
    mx = published(cfg, host_facts)["mx"]
    name, domain, host = "dns.mx", mx.name, mx.content
    fix = f"publish {_line(domain, 'MX', f'{mx.priority} {host}.')} ({REFRESH})"
    try:
        records = sorted((r.preference, r.exchange.to_text(omit_final_dot=True).lower())
                         for r in lookups.records(domain, "MX"))
    except DnsError as err:
        return failed(name, str(err), fix)
    shown = ", ".join(f"{p} {t or '.'}" for p, t in records)
    if not records:
        return failed(name, f"no MX record at {domain}: mail for the domain goes to its A record, if any", fix)
    if host not in (t for _, t in records):
        return failed(name, f"MX of {domain} is {shown}, not {host}", fix)
    others = [t or "." for _, t in records if t != host]
    if others:
        return warned(name, f"MX of {domain} is {shown}: mail also goes to {', '.join(others)}, "
                            f"which this stack does not run", f"delete the MX records for {', '.join(others)}")
    return passed(name, f"{domain} MX {shown}")


def check_mx_cname(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns) -> Result:
    """RFC 2181 10.3 / RFC 5321 5.1: an MX target must not be an alias."""
    mx = published(cfg, host_facts)["mx"]
    name, host = "dns.mx-cname", mx.content
    try:
        targets = [r.exchange.to_text(omit_final_dot=True).lower() for r in lookups.records(mx.name, "MX")]
        aliases = {t: lookups.targets(t, "CNAME") for t in dict.fromkeys([host, *targets]) if t}
    except DnsError as err:
        return failed(name, str(err), f"make {host} answer for its A/AAAA and CNAME records")
    cnames = {t: a for t, a in aliases.items() if a}
    if cnames:
        listing = ", ".join(f"{t} is a CNAME for {', '.join(a)}" for t, a in cnames.items())
        return failed(name, f"{listing}: an MX target must be a host name with its own A/AAAA records "
                            "(RFC 2181 10.3)", f"replace the CNAME at {', '.join(cnames)} with A/AAAA records")
    return passed(name, f"{', '.join(aliases)}: not a CNAME")


def check_srv(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns) -> Result:
    """The RFC 6186/8314 SRV records: each the host and the port the stack publishes, or "." where it says none."""
    expected = [r for r in published(cfg, host_facts).values() if r.type == "SRV"]
    name = "dns.srv"
    if not expected:
        return passed(name, "no SRV records for mail clients, as configured (mailstack:autoconfig false)")
    every = "; ".join(f"publish {_line(r.name, 'SRV', _srv_text(r.content))}" for r in expected)
    problems, shown, wrong = [], [], []
    for record in expected:
        try:
            found = [f"{r.priority} {r.weight} {r.port} {r.target.to_text(omit_final_dot=True).lower() or '.'}"
                     for r in lookups.records(record.name, "SRV")]
        except DnsError as err:
            return failed(name, str(err), f"{every} ({REFRESH})")
        if not found:
            problems.append(f"no SRV record at {record.name}")
            wrong.append(record)
        elif found != [record.content]:
            problems.append(f"{record.name} SRV is {', '.join(found)}, the stack says {record.content}")
            wrong.append(record)
        else:
            port = record.content.split()[2]
            shown.append(f"{record.name.split('.')[0]} {'not offered' if port == '0' else port}")
    if problems:
        fix = "; ".join(f"publish {_line(r.name, 'SRV', _srv_text(r.content))}" for r in wrong)
        return failed(name, "; ".join(problems) + ": mail clients that follow RFC 6186 are sent wrong",
                      f"{fix} (only that record at each name; {REFRESH})")
    return passed(name, f"{host_facts.hostname}: " + ", ".join(shown))


def _srv_text(content: str) -> str:
    priority, weight, port, target = content.split()
    return f"{priority} {weight} {port} {'.' if target == '.' else target + '.'}"


def check_addresses(cfg: HostConfig, lookups: Dns, rtype: str) -> Result:
    """A (or AAAA) of the host: exactly the configured addresses."""
    records = published(cfg)
    name, host = f"dns.{rtype.lower()}", cfg.host_name
    expected = {str(ipaddress.ip_address(r.content)) for r in records.values() if r.type == rtype and r.name == host}
    try:
        found = {str(ipaddress.ip_address(a)) for a in lookups.addresses(host, rtype)}
    except DnsError as err:
        return failed(name, str(err), f"make {host} resolvable")
    if found == expected:
        if not expected:
            return passed(name, f"no {rtype} record at {host}, as configured (no IPv{4 if rtype == 'A' else 6})")
        return passed(name, f"{host} {rtype} {', '.join(sorted(found))}")
    missing, extra = sorted(expected - found), sorted(found - expected)
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"has {', '.join(extra)}, "
                                                                         "not configured"] if extra else [])
    fixes = [f"publish {_line(host, rtype, a)}" for a in missing] + [f"delete {_line(host, rtype, a)}" for a in extra]
    return failed(name, f"{host} {rtype}: {'; '.join(problems)} (expected exactly "
                        f"{', '.join(sorted(expected)) or 'none'})", f"{'; '.join(fixes)} ({REFRESH})")


def check_ptr(cfg: HostConfig, lookups: Dns, address: str) -> Result:
    """Forward-confirmed reverse DNS: PTR -> host name -> the same address (the guide's `host` checks)."""
    pointer = ptr_name(address)
    ptr = next((r for r in published(cfg).values() if r.type == "PTR" and r.name == pointer), None)
    name, host = f"dns.ptr{_at(address)}", ptr.content if ptr else cfg.host_name
    zone = reverse_zone_for(cfg, address)
    where = (f"in the reverse zone {zone} ({REFRESH})" if zone else
             f"at the provider of {address}: it is not in mailstack:reverse_zones (the stack exports it in "
             "expected_ptrs)")
    fix = f"publish {_line(pointer, 'PTR', host + '.')} {where}"
    try:
        targets = lookups.targets(pointer, "PTR")
    except DnsError as err:
        return failed(name, str(err), fix)
    if not targets:
        return failed(name, f"no PTR record at {pointer}: receivers that check reverse DNS (the guide's "
                            f"reject_unknown_client_hostname) refuse mail from {address}", fix)
    if host not in targets:
        return failed(name, f"PTR {pointer} names {', '.join(targets)}, not {host}: receivers that check "
                            f"reverse DNS refuse mail from {address}", fix)
    if len(targets) > 1:
        return warned(name, f"{pointer} has {len(targets)} PTR records ({', '.join(targets)}): receivers use "
                            "any one of them", f"keep only {_line(pointer, 'PTR', host + '.')}")
    rtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
    try:
        forward = {str(ipaddress.ip_address(a)) for a in lookups.addresses(host, rtype)}
    except DnsError as err:
        return failed(name, f"PTR {pointer} names {host}, but {err}", f"publish {_line(host, rtype, address)}")
    if str(ipaddress.ip_address(address)) not in forward:
        return failed(name, f"PTR {pointer} names {host}, but {host} {rtype} is "
                            f"{', '.join(sorted(forward)) or 'missing'}, not {address} (forward confirmation "
                            "fails)", f"publish {_line(host, rtype, address)} ({REFRESH})")
    return passed(name, f"{address} -> {host} -> {address}")


# --- SPF ----------------------------------------------------------------------------------------


def spf_records(texts: list[str]) -> list[str]:
    """The SPF records among a name's TXT records (RFC 7208 4.5: "v=spf1" then a space or the end)."""
    return [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


@dataclass
class SpfLookups:
    """What evaluating a record may cost in DNS lookups (RFC 7208 4.6.4), over its includes."""

    count: int = 0
    problems: list[str] = field(default_factory=list)  # permerrors met on the way (missing include, loop)
    detail: list[str] = field(default_factory=list)  # e.g. "include:_spf.example.net (3 more)"


# Terms that cost a DNS lookup each (RFC 7208 4.6.4); redirect is a modifier.
_LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")
_QUALIFIERS = "+-~?"


def _terms(record: str) -> list[str]:
    return record.split()[1:]  # after v=spf1


def _mechanism(term: str) -> tuple[str, str]:
    """("include", "_spf.example.net") for "~include:_spf.example.net"; ("a", "") for "a/24"."""
    term = term.lstrip(_QUALIFIERS)
    if "=" in term.split(":", 1)[0]:
        key, _, value = term.partition("=")
        return key.lower() + "=", value
    head, _, value = term.partition(":")
    return head.split("/", 1)[0].lower(), value.split("/", 1)[0] if value else ""


def count_spf_lookups(record: str, lookup: Callable[[str], list[str]], _path: tuple[str, ...] = ()) -> SpfLookups:
    """The DNS lookups a receiver may make evaluating `record`, counting every include and redirect.

    `lookup(name)` returns the SPF records at a name (0, 1 or more). The count is
    the worst case (every term evaluated), which is what the limit is about:
    the 11th lookup is a permerror whatever the client's address.
    """
    out = SpfLookups()
    terms = _terms(record)
    has_all = any(_mechanism(t)[0] == "all" for t in terms)
    for term in terms:
        kind, target = _mechanism(term)
        if kind == "redirect=" and has_all:
            continue  # RFC 7208 6.1: ignored when there is an "all"
        if kind not in _LOOKUP_MECHANISMS and kind != "redirect=":
            continue
        out.count += 1
        if kind not in ("include", "redirect="):
            continue
        label = f"{kind}{'' if kind.endswith('=') else ':'}{target}"
        if "%" in target:
            out.detail.append(f"{label} (a macro: not followed)")
            continue
        target = target.lower().rstrip(".")
        if target in _path:
            out.problems.append(f"{label} loops back to {target} (permerror)")
            continue
        found = lookup(target)
        if len(found) != 1:
            out.problems.append(f"{label}: {target} has {len(found) or 'no'} SPF record{'s' if found else ''} "
                                "(permerror)")
            continue
        inner = count_spf_lookups(found[0], lookup, (*_path, target))
        out.count += inner.count
        out.problems += inner.problems
        out.detail.append(f"{label} ({inner.count} more)")
    return out


def spf_all(record: str) -> tuple[str | None, str]:
    """The record's "all" qualifier ("-", "~", "?", "+") or None, and its redirect target if any."""
    qualifier, redirect = None, ""
    for term in _terms(record):
        kind, target = _mechanism(term)
        if kind == "all":
            qualifier = term[0] if term[0] in _QUALIFIERS else "+"
        elif kind == "redirect=":
            redirect = target
    return qualifier, redirect


def _spf_fix(cfg: HostConfig | DomainConfig, host_facts: HostFacts | None = None) -> str:
    """Publish the stack's SPF record (a domain's "spf", the host name's "spf-helo")."""
    records = published(cfg, host_facts)
    record = records["spf-helo" if isinstance(cfg, HostConfig) else "spf"]
    return f"publish {_line(record.name, 'TXT', txt_content(record.content))} ({REFRESH})"


def check_spf(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns) -> list[Result]:
    """spf.record (exactly one, parses), spf.lookups (<= 10), spf.all (the final qualifier)."""
    domain = published(cfg, host_facts)["spf"].name
    fix = _spf_fix(cfg, host_facts)
    not_checked = "not checked: no usable SPF record (see spf.record)"
    try:
        found = spf_records(lookups.texts(domain))
    except DnsError as err:
        return [failed("spf.record", str(err), fix), warned("spf.lookups", not_checked),
                warned("spf.all", not_checked)]
    if len(found) != 1:
        reason = (f"no SPF record at {domain}: receivers cannot tell forged mail from ours" if not found else
                  f"{len(found)} SPF records at {domain}: a permerror for every receiver (RFC 7208 4.5)")
        return [failed("spf.record", reason, fix), warned("spf.lookups", not_checked),
                warned("spf.all", not_checked)]
    record = found[0]
    try:
        parsed = checkdmarc.spf.parse_spf_record(record, domain, resolver=lookups.resolver,
                                                 ignore_too_many_lookups=True)
    except (checkdmarc.spf.SPFError, checkdmarc.utils.DNSException) as err:
        return [failed("spf.record", f"{domain} TXT \"{record}\" does not parse: {err}", fix),
                warned("spf.lookups", not_checked), warned("spf.all", not_checked)]
    results = []
    if parsed["warnings"]:
        results.append(warned("spf.record", f"\"{record}\": {'; '.join(parsed['warnings'])}", fix))
    else:
        results.append(passed("spf.record", f"{domain} TXT \"{record}\""))

    try:
        cost = count_spf_lookups(record, lambda n: spf_records(lookups.texts(n)), (domain,))
    except DnsError as err:
        results.append(failed("spf.lookups", f"could not follow the record's includes: {err}", fix))
    else:
        detail = f" ({', '.join(cost.detail)})" if cost.detail else ""
        if cost.problems:
            results.append(failed("spf.lookups", "; ".join(cost.problems), fix))
        elif cost.count > SPF_MAX_LOOKUPS:
            results.append(failed("spf.lookups", f"{cost.count} DNS lookups{detail}: more than "
                                                 f"{SPF_MAX_LOOKUPS} is a permerror (RFC 7208 4.6.4)",
                                  f"replace includes by ip4:/ip6: mechanisms, e.g. {fix}"))
        else:
            results.append(passed("spf.lookups", f"{cost.count} of at most {SPF_MAX_LOOKUPS} DNS lookups{detail}"))

    qualifier, redirect = spf_all(record)
    meaning = {"-": "fail", "~": "softfail", "?": "neutral", "+": "pass"}
    if qualifier == "-":
        results.append(passed("spf.all", "ends in -all: mail from any other host fails SPF"))
    elif qualifier == "~":
        results.append(warned("spf.all", "ends in ~all (softfail): receivers accept mail from other hosts, "
                                         "at most marked", fix))
    elif qualifier is not None:
        results.append(failed("spf.all", f"ends in {qualifier}all ({meaning[qualifier]}): mail from any host "
                                         f"{'passes' if qualifier == '+' else 'is neither passed nor failed'}",
                              fix))
    elif redirect:
        results.append(passed("spf.all", f"no all: redirect={redirect} decides for other hosts"))
    else:
        results.append(failed("spf.all", "no all mechanism: other hosts get neutral (RFC 7208 4.7)", fix))
    return results


def check_spf_pass(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns, address: str) -> Result:
    """pyspf's check_host() for mail from the domain sent by this address of its host."""
    name, domain = f"spf.pass{_at(address)}", published(cfg, host_facts)["spf"].name
    result, explanation = spf_check(lookups, address, f"postmaster@{domain}", host_facts.hostname)
    try:
        record = " / ".join(f'"{r}"' for r in spf_records(lookups.texts(domain))) or "(none)"
    except DnsError as err:
        record = f"(not read: {err})"
    if result == "pass":
        return passed(name, f"{domain} TXT {record} passes mail from {address}")
    why = f" ({explanation})" if explanation else ""
    return failed(name, f"{domain} TXT {record} gives {result} for mail from {address}{why}",
                  _spf_fix(cfg, host_facts))


def check_spf_helo(cfg: HostConfig, lookups: Dns) -> Result:
    """SPF of the HELO name: what receivers check for bounces (empty MAIL FROM, RFC 7208 2.3)."""
    name, host = "spf.helo", cfg.host_name
    outcomes = {a: spf_check(lookups, a, "", host) for a in cfg.addresses}
    bad = {a: r for a, r in outcomes.items() if r[0] != "pass"}
    if not bad:
        return passed(name, f"{host}'s SPF record passes {', '.join(outcomes)} (HELO identity)")
    listing = "; ".join(f"{result} for {a}" for a, (result, _) in bad.items())
    return failed(name, f"{host}'s SPF record (HELO identity, checked for bounces) gives {listing}",
                  _spf_fix(cfg))


# --- DKIM ---------------------------------------------------------------------------------------


@dataclass
class DkimKey:
    """A DKIM key record, parsed."""

    tags: dict[str, str]
    key_type: str  # "rsa", "ed25519"
    der: bytes  # the p= value, decoded
    bits: int | None  # RSA modulus size


def parse_dkim_record(text: str) -> DkimKey:
    """A DKIM key record (RFC 6376 3.6.1) as receivers read it; ValueError says what is wrong."""
    try:
        raw = dkim.util.parse_tag_value(text.encode("utf-8"))
    except dkim.util.InvalidTagValueList as err:
        raise ValueError(f"not a tag=value list ({err})") from None
    tags = {k.decode("ascii", "replace").lower(): v.decode("ascii", "replace") for k, v in raw.items()}
    if "v" in tags and tags["v"] != "DKIM1":
        raise ValueError(f"v={tags['v']}, expected v=DKIM1")
    key_type = tags.get("k", "rsa").lower()
    p = "".join(tags.get("p", "").split())
    if "p" not in tags:
        raise ValueError("no p= tag (the public key)")
    if not p:
        raise ValueError("p= is empty: the key is revoked (RFC 6376 3.6.1)")
    try:
        der = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("p= is not base64") from None
    if key_type != "rsa":
        return DkimKey(tags, key_type, der, None)
    try:
        dkim.evaluate_pk(b"key", text.encode("utf-8"))  # what dkimpy, as a verifier, makes of it
    except dkim.KeyFormatError as err:
        raise ValueError(str(err)) from None
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise ValueError("p= is not an RSA public key (expected base64 DER)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"k=rsa but p= holds a {type(key).__name__}")
    return DkimKey(tags, key_type, der, key.key_size)


def dkim_key_bits(text: str) -> int | None:
    """The RSA key size of a DKIM key record (None for a non-RSA key)."""
    return parse_dkim_record(text).bits


def _public_numbers(der: bytes) -> tuple[int, int] | None:
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        return None
    return (key.public_numbers().n, key.public_numbers().e) if isinstance(key, rsa.RSAPublicKey) else None


def key_from_option(value: str) -> str:
    """--dkim-key: base64 DER, or a whole DKIM record value (as `pulumi stack output records` shows it)."""
    if "p=" in value:
        return base64.b64encode(parse_dkim_record(value).der).decode("ascii")
    return "".join(value.split())


def _dkim_fix(cfg: DomainConfig, host_facts: HostFacts, key_b64: str | None) -> str:
    record = published(cfg, host_facts, key_b64)["dkim"]
    content = txt_content(record.content) if key_b64 else f'"{record.content}"'
    return f"publish {_line(record.name, 'TXT', content)} ({REFRESH})"


def check_dkim_record(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns, host_key: str | None = None
                      ) -> tuple[Result, DkimKey | None]:
    name, where = "dkim.record", published(cfg, host_facts)["dkim"].name
    fix = _dkim_fix(cfg, host_facts, host_key)
    try:
        texts = lookups.texts(where)
    except DnsError as err:
        return failed(name, str(err), fix), None
    candidates = [t for t in texts if t.lstrip().startswith("v=DKIM1") or "p=" in t]
    if not candidates:
        return failed(name, f"no DKIM record at {where}: receivers cannot verify our signatures", fix), None
    if len(candidates) > 1:
        return failed(name, f"{len(candidates)} DKIM records at {where}: verifiers use any one of them", fix), None
    try:
        key = parse_dkim_record(candidates[0])
    except ValueError as err:
        return failed(name, f"{where}: {err}", fix), None
    if key.key_type != "rsa":
        return failed(name, f"{where} is k={key.key_type}, not RSA (OpenDKIM signs with RSA here)", fix), key
    if key.bits < DKIM_MIN_BITS:
        return failed(name, f"{where} holds a {key.bits}-bit RSA key: under the {DKIM_MIN_BITS} bits RFC 8301 "
                            "recommends and the guide uses",
                      f"a new key: set mailstack:dkim_selector to a new selector (mailstack:dkim_bits "
                      f">= {DKIM_MIN_BITS}) and pulumi up"), key
    hashes = [h.strip().lower() for h in key.tags.get("h", "sha256").split(":")]
    if "sha256" not in hashes:
        return failed(name, f"{where} has h={key.tags['h']}: OpenDKIM signs with sha256", fix), key
    if "y" in [f.strip() for f in key.tags.get("t", "").split(":")]:
        return warned(name, f"{where} is in testing mode (t=y): receivers treat failures as unsigned", fix), key
    return passed(name, f"{where}: RSA, {key.bits} bits"), key


def check_dkim_key(cfg: DomainConfig, host_facts: HostFacts, record: DkimKey | None, host_key: str | None,
                   source: str, unavailable: str = "") -> Result:
    """The published key is the one OpenDKIM signs with (host_key: base64 DER from `source`)."""
    name, where = "dkim.key", published(cfg, host_facts)["dkim"].name
    if record is None:
        return warned(name, "not compared: no usable DKIM record (see dkim.record)")
    if host_key is None:
        return warned(name, f"not compared: {unavailable}",
                      "give the key with --dkim-key (the DKIM record in `pulumi stack output records`), "
                      "or make the stack's SSH connection usable")
    try:
        ours = _public_numbers(base64.b64decode(host_key, validate=True))
    except (binascii.Error, ValueError):
        ours = None
    if ours is None:
        return failed(name, f"the host's key ({source}) is not a base64 DER RSA public key: {host_key[:24]!r}...",
                      f"check {paths.domain_dkim_key(cfg.domain, cfg.dkim_selector)} on the host")
    if _public_numbers(record.der) != ours:
        return failed(name, f"{where} publishes a different key than the host signs with ({source}): "
                            "every signature fails", _dkim_fix(cfg, host_facts, host_key))
    return passed(name, f"{where} holds the key the host signs with ({source})")


# --- DMARC --------------------------------------------------------------------------------------


def check_dmarc(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns) -> list[Result]:
    """dmarc.record (exactly one, parses with checkdmarc) and dmarc.policy (p= and rua= as configured)."""
    dmarc = published(cfg, host_facts)["dmarc"]
    where = dmarc.name
    fix = f"publish {_line(where, 'TXT', txt_content(dmarc.content))} ({REFRESH})"
    not_checked = warned("dmarc.policy", "not checked: no usable DMARC record (see dmarc.record)")
    try:
        found = [t for t in lookups.texts(where) if t.startswith("v=DMARC1")]
    except DnsError as err:
        return [failed("dmarc.record", str(err), fix), not_checked]
    if len(found) != 1:
        reason = (f"no DMARC record at {where}: receivers apply no policy to mail forged as {cfg.domain}"
                  if not found else f"{len(found)} DMARC records at {where}: receivers ignore them all "
                                    "(RFC 7489 6.6.3)")
        return [failed("dmarc.record", reason, fix), not_checked]
    record = found[0]
    try:
        parsed = checkdmarc.dmarc.parse_dmarc_record(record, cfg.domain, resolver=lookups.resolver)
    except (checkdmarc.dmarc.DMARCError, checkdmarc.utils.DNSException) as err:
        return [failed("dmarc.record", f"{where} TXT \"{record}\" does not parse: {err}", fix), not_checked]
    if parsed["warnings"]:
        results = [warned("dmarc.record", f"\"{record}\": {'; '.join(parsed['warnings'])}", fix)]
    else:
        results = [passed("dmarc.record", f"{where} TXT \"{record}\"")]
    tags = parsed["tags"]
    policy = tags["p"]["value"]
    rua = [u["address"].lower() for u in tags.get("rua", {}).get("value", []) if u.get("scheme") == "mailto"]
    problems = []
    if policy != cfg.dmarc_policy:
        problems.append(f"p={policy}, the stack says p={cfg.dmarc_policy}")
    if sorted(rua) != sorted(cfg.rua):
        problems.append(f"rua={','.join(rua) or 'none'}, the stack says {','.join(cfg.rua)}")
    if problems:
        results.append(failed("dmarc.policy", f"{where}: {'; '.join(problems)}", fix))
    else:
        results.append(passed("dmarc.policy", f"p={policy}, aggregate reports to {', '.join(rua)}"))
    return results


# --- MTA-STS and TLS-RPT -------------------------------------------------------------------------

# RFC 8461 3.1: id is 1 to 32 letters and digits.
_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}")
# RFC 8461 3.2: max_age is at most 31557600 seconds.
STS_MAX_AGE = 31557600
_HOST_TLS_FIX = ("set mailstack:tls to acme in the host stack and `pulumi up` it, then `pulumi up` this stack "
                 "(README, MTA-STS and TLS-RPT)")


def _sts_reason(cfg: DomainConfig, host_facts: HostFacts) -> str:
    """Why the stack publishes no MTA-STS."""
    if cfg.mta_sts_mode == "none":
        return "mailstack:mta_sts_mode is none"
    return f"the host's mailstack:tls is {host_facts.tls}, not acme"


def _tagged_fields(text: str, version: str) -> dict[str, str]:
    """A `v=<version>; key=value; ...` TXT record (MTA-STS, TLS-RPT) as fields; ValueError says what is wrong."""
    fields: dict[str, str] = {}
    for part in [p.strip() for p in text.split(";")]:
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not a field=value pair")
        fields[key.strip()] = value.strip()
    if next(iter(fields), None) != "v" or fields["v"] != version:
        raise ValueError(f"does not start with v={version}")
    return fields


def parse_sts_record(text: str) -> dict[str, str]:
    """An `_mta-sts` TXT record (RFC 8461 3.1) as fields; ValueError says what is wrong."""
    fields = _tagged_fields(text, "STSv1")
    if "id" not in fields:
        raise ValueError("has no id=")
    if not _STS_ID.fullmatch(fields["id"]):
        raise ValueError(f"id={fields['id']} is not 1 to 32 letters and digits")
    return fields


def parse_sts_policy(text: str) -> dict[str, list[str]]:
    """A policy file (RFC 8461 3.2): key -> values (mx may repeat); ValueError says what is wrong."""
    fields: dict[str, list[str]] = {}
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"line {number} {line[:40]!r} is not key: value")
        fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise ValueError("has no version: STSv1")
    mode = fields.get("mode", [""])
    if len(mode) != 1 or mode[0] not in ("enforce", "testing", "none"):
        raise ValueError(f"mode is {', '.join(mode) or 'missing'} (expected one of enforce, testing, none)")
    age = fields.get("max_age", [""])
    if len(age) != 1 or not age[0].isdigit() or int(age[0]) > STS_MAX_AGE:
        raise ValueError(f"max_age is {', '.join(age) or 'missing'} (expected 0 to {STS_MAX_AGE} seconds)")
    if mode[0] != "none" and not fields.get("mx"):
        raise ValueError("has no mx: line (every MX host senders may deliver to)")
    return fields


def _mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: an mx pattern is a name or *.<name> (one leftmost label)."""
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.count(".") == pattern.count(".") and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def check_mta_sts_record(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns) -> Result:
    """`_mta-sts.<domain>`: one v=STSv1 record whose id is the stack's policy's (or none, if none is published)."""
    name, where = "mta-sts.record", f"_mta-sts.{cfg.domain}"
    expected = published(cfg, host_facts).get("mta-sts")
    try:
        found = [t for t in lookups.texts(where) if t.startswith("v=STSv1")]
    except DnsError as err:
        return failed(name, str(err), f"make {where} answer")
    if expected is None:
        why = _sts_reason(cfg, host_facts)
        if found:
            return warned(name, f"{where} publishes MTA-STS, but the stack publishes none ({why}): senders fetch a "
                                "policy the stack no longer serves",
                          f"delete {_line(where, 'TXT', txt_content(found[0]))} (or set mailstack:mta_sts_mode)")
        if cfg.mta_sts_mode == "none":
            return passed(name, f"no MTA-STS record, as configured ({why})")
        return warned(name, f"no MTA-STS: {why}, and senders only trust a policy on a host with a certificate they "
                            "trust; they may deliver in clear if STARTTLS is stripped", _HOST_TLS_FIX)
    fix = f"publish {_line(where, 'TXT', txt_content(expected.content))} ({REFRESH})"
    if not found:
        return failed(name, f"no MTA-STS record at {where}: senders never fetch the policy", fix)
    if len(found) > 1:
        return failed(name, f"{len(found)} MTA-STS records at {where}: senders treat that as no policy "
                            "(RFC 8461 3.1)", fix)
    try:
        fields = parse_sts_record(found[0])
    except ValueError as err:
        return failed(name, f"{where} TXT \"{found[0]}\" {err}: senders ignore it", fix)
    want = parse_sts_record(expected.content)["id"]
    if fields["id"] != want:
        return failed(name, f"{where} has id={fields['id']}, the stack's policy has id={want}: senders that "
                            "cached an older policy keep it", fix)
    return passed(name, f"{where} TXT \"{found[0]}\"")


def check_mta_sts_policy(cfg: DomainConfig, host_facts: HostFacts, fetch: PolicyFetch) -> Result:
    """The policy senders fetch: over HTTPS with a trusted certificate, text/plain, as the stack renders it."""
    name, policy_host = "mta-sts.policy", mta_sts_host(cfg.domain)
    expected = domain_mta_sts_policy(cfg, host_facts)
    unit_fix = (f"`pulumi up` this stack (its mta-sts unit serves the policy); on the host, `mailstack-tls status` "
                f"shows the certificate of {policy_host}")
    if fetch.verify_error:
        return failed(name, f"{fetch.error}: senders ignore the policy", unit_fix)
    if fetch.error:
        return failed(name, f"{fetch.url}: {fetch.error}", unit_fix)
    if fetch.status != 200:
        moved = f" to {fetch.location}" if fetch.location else ""
        what = "a redirect senders do not follow" if fetch.status and 300 <= fetch.status < 400 else "no policy"
        return failed(name, f"{fetch.url} answered {fetch.status}{moved}: {what}", unit_fix)
    if fetch.content_type != "text/plain":
        return failed(name, f"{fetch.url} is {fetch.content_type or 'untyped'}, not text/plain (RFC 8461 3.3)",
                      unit_fix)
    try:
        fields = parse_sts_policy(fetch.body)
    except ValueError as err:
        return failed(name, f"{fetch.url} {err}", unit_fix)
    mode, max_age, mx = fields["mode"][0], int(fields["max_age"][0]), fields.get("mx", [])
    problems = []
    if mode != cfg.mta_sts_mode:
        problems.append(f"mode {mode}, the stack says {cfg.mta_sts_mode}")
    if not any(_mx_matches(p, host_facts.hostname) for p in mx):
        problems.append(f"mx {', '.join(mx)} does not match the MX host {host_facts.hostname}: "
                        "senders refuse to deliver to it" + (" (enforce)" if mode == "enforce" else ""))
    if max_age != cfg.mta_sts_max_age:
        problems.append(f"max_age {max_age}, the stack says {cfg.mta_sts_max_age}")
    if not problems and fetch.body != expected:
        problems.append("the text is not what the stack renders (its id in DNS is that text's)")
    if problems:
        return failed(name, f"{fetch.url}: {'; '.join(problems)}", unit_fix)
    return passed(name, f"mode {mode}, mx {', '.join(mx)}, max_age {max_age}; served from {fetch.address} with a "
                        "certificate that verifies")


def parse_tls_rpt(text: str) -> list[str]:
    """A TLS-RPT record (RFC 8460 3) as its rua URIs; ValueError says what is wrong."""
    fields = _tagged_fields(text, "TLSRPTv1")
    uris = [u.strip() for u in fields.get("rua", "").split(",") if u.strip()]
    if not uris:
        raise ValueError("has no rua= (where reports go)")
    for uri in uris:
        if not uri.startswith(("mailto:", "https://")):
            raise ValueError(f"rua {uri!r} is neither mailto: nor https:")
    return uris


def check_tls_rpt(cfg: DomainConfig, host_facts: HostFacts, lookups: Dns) -> Result:
    """`_smtp._tls.<domain>`: one v=TLSRPTv1 record, reports to the stack's addresses."""
    record = published(cfg, host_facts)["tls-rpt"]
    name, where = "tls-rpt.record", record.name
    fix = f"publish {_line(where, 'TXT', txt_content(record.content))} ({REFRESH})"
    try:
        found = [t for t in lookups.texts(where) if t.startswith("v=TLSRPTv1")]
    except DnsError as err:
        return failed(name, str(err), fix)
    if not found:
        return failed(name, f"no TLS-RPT record at {where}: senders cannot report failed TLS to us", fix)
    if len(found) > 1:
        return failed(name, f"{len(found)} TLS-RPT records at {where}: senders use none (RFC 8460 3)", fix)
    try:
        uris = parse_tls_rpt(found[0])
    except ValueError as err:
        return failed(name, f"{where} TXT \"{found[0]}\" {err}", fix)
    mailto = sorted(u[len("mailto:"):].lower() for u in uris if u.startswith("mailto:"))
    if mailto != sorted(cfg.tls_rpt) or len(mailto) != len(uris):
        return failed(name, f"{where} reports to {', '.join(uris)}, the stack says "
                            f"{', '.join('mailto:' + a for a in cfg.tls_rpt)}", fix)
    return passed(name, f"{where} TXT \"{found[0]}\"")


# --- SMTP, submission, IMAP -----------------------------------------------------------------------

# A version number (3.7.11) or an OS in a banner; the guide: "exclude this information".
_VERSION = re.compile(r"\d+(?:\.\d+)+|\b(?:debian|ubuntu|gnu|linux|centos|red ?hat|freebsd|openbsd)\b", re.I)
_BANNER_FIX = ("set mailstack:smtpd_banner to '$myhostname ESMTP $mail_name' (main.cf smtpd_banner; the guide: "
               "no version, no OS) and pulumi up")


def _no_session(probe: SmtpProbe) -> str:
    return f"no SMTP session on {probe.address} port {probe.port}: {probe.error}"


def check_banner(cfg: HostConfig, probe: SmtpProbe) -> Result:
    name, host = f"smtp.banner{_at(probe.address)}", cfg.host_name
    if probe.error or probe.banner is None:
        return failed(name, _no_session(probe), f"is Postfix running and listening on {probe.address} "
                                                "(main.cf inet_interfaces)?")
    code, text = probe.banner
    shown = f"'{code} {' / '.join(text.splitlines())}'"
    if code != 220:
        return failed(name, f"banner {shown}: the server turns clients away", "see the mail log on the host")
    first = (text.split() or [""])[0].lower()
    if first != host:
        return failed(name, f"banner {shown} names {first or 'nothing'}, not {host} (RFC 5321 4.3.1)",
                      f"main.cf: myhostname = {host}, and {_BANNER_FIX}")
    leak = _VERSION.search(text[len(first):])
    if leak:
        return failed(name, f"banner {shown} shows {leak.group(0)!r}: everyone who connects learns what to attack",
                      _BANNER_FIX)
    return passed(name, f"banner {shown}: names the host, no version")


def _tls_failure(probe: SmtpProbe) -> str | None:
    """Why STARTTLS did not give a usable session, or None when it did."""
    if "starttls" not in probe.features:
        return f"STARTTLS not offered on port {probe.port} (EHLO: {', '.join(probe.features) or 'nothing'})"
    if probe.starttls_reply is not None and probe.starttls_reply[0] != 220:
        return f"STARTTLS refused: {probe.starttls_reply[0]} {probe.starttls_reply[1]}"
    if probe.tls is None or not probe.tls.ok or probe.tls.error:
        return f"the TLS handshake failed: {probe.tls.error if probe.tls else 'no reply'}"
    return None


def check_starttls(cfg: HostConfig, probe: SmtpProbe, service: str = "smtp") -> Result:
    name = f"{service}.starttls{_at(probe.address)}"
    if probe.error or probe.banner is None or probe.banner[0] != 220:
        return failed(name, _no_session(probe) if probe.error else f"no session (banner {probe.banner})",
                      "see the banner check")
    problem = _tls_failure(probe)
    if problem:
        return failed(name, f"{problem}: mail {'to this host' if service == 'smtp' else 'from users'} "
                            "travels in clear", f"main.cf: smtpd_tls_security_level = may, with a readable "
                                                f"smtpd_tls_cert_file ({cfg.smtpd_tls_cert_file}) and "
                                                f"smtpd_tls_key_file ({cfg.smtpd_tls_key_file})")
    return passed(name, f"STARTTLS offered, {probe.tls.version} established")


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:  # no SAN: the CN is all there is (RFC 6125 6.4.4)
        return [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


def _matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):  # RFC 6125 6.4.3: a wildcard stands for one whole label
        return host.count(".") == pattern.count(".") and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# A trusted certificate with fewer days left than this is a warning: mailstack-tls
# renews at 30, so one this close to its end has failed to renew for two weeks.
EXPIRY_WARN_DAYS = 14


def _certificate_fix(cfg: HostConfig) -> str:
    """What to do about the host's certificate, by where it comes from (mailstack:tls)."""
    host, cert_file, key_file = cfg.host_name, cfg.smtpd_tls_cert_file, cfg.smtpd_tls_key_file
    if cfg.tls == "acme":
        return (f"on the host, `mailstack-tls status` shows the certificate and its last renewal, "
                f"/var/lib/mailstack/tls/host.status why it failed; `mailstack-tls renew --force host` tries "
                f"again (the Cloudflare token needs Zone:DNS:Edit on {cfg.zone_name})")
    if cfg.tls == "files":
        return (f"install a certificate for {host} from a trusted CA at {cert_file} (mailstack:smtpd_tls_cert_file) "
                f"with its key at {key_file} (mailstack:smtpd_tls_key_file), then `pulumi up`")
    return (f"install a certificate for {host} at {cert_file} (mailstack:smtpd_tls_cert_file), "
            f"e.g. from an ACME client, with its key at {key_file}; or set mailstack:tls: acme")


def judge_certificate(name: str, cfg: HostConfig, tls: TlsInfo, now: datetime | None = None) -> Result:
    """The certificate names the host, is in date and, unless the host is self-signed by choice, trusted.

    With mailstack:tls self-signed an untrusted certificate is a warning (the
    guide's); with acme or files it fails: a trusted certificate is the point.
    A trusted one within EXPIRY_WARN_DAYS of its end is a warning.
    """
    host, now = cfg.host_name, now or datetime.now(timezone.utc)
    fix = _certificate_fix(cfg)
    cert = x509.load_der_x509_certificate(tls.cert_der)
    names = _names(cert)
    until = cert.not_valid_after_utc
    if not any(_matches(n, host) for n in names):
        return failed(name, f"the certificate names {', '.join(names) or 'nothing'}, not {host}", fix)
    if until < now:
        return failed(name, f"the certificate for {host} expired on {until:%Y-%m-%d}", fix)
    if cert.not_valid_before_utc > now:
        return failed(name, f"the certificate for {host} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}",
                      fix)
    if tls.verified:
        issuer = cert.issuer.rfc4514_string()
        days = (until - now).days
        if days < EXPIRY_WARN_DAYS:
            return warned(name, f"names {host}, issued by {issuer}, but expires in {days} days ({until:%Y-%m-%d})",
                          fix)
        return passed(name, f"names {host}, valid until {until:%Y-%m-%d}, issued by {issuer}")
    self_signed = _self_signed(cert)
    if cfg.tls == "self-signed":
        if self_signed:
            return warned(name, f"self-signed certificate for {host} (valid until {until:%Y-%m-%d}): sending servers "
                                "encrypt but cannot authenticate us (no DANE or MTA-STS)", fix)
        return warned(name, f"the certificate names {host} but does not verify here: {tls.verify_error}", fix)
    what = "is self-signed" if self_signed else f"does not verify here: {tls.verify_error}"
    return failed(name, f"the certificate for {host} {what} (mailstack:tls is {cfg.tls}: it must be trusted)", fix)


def check_certificate(cfg: HostConfig, probe: SmtpProbe, now: datetime | None = None) -> Result:
    name = f"smtp.cert{_at(probe.address)}"
    if probe.error or _tls_failure(probe) or probe.tls.cert_der is None:
        return warned(name, f"not checked: no TLS session (see smtp.starttls{_at(probe.address)})")
    return judge_certificate(name, cfg, probe.tls, now)


# --- DANE (RFC 7672): the host's TLSA records and the DNSSEC under them ---------------------------


def spki_sha256(cert_der: bytes) -> str:
    """Hex SHA-256 of a certificate's SubjectPublicKeyInfo: what a TLSA `3 1 1` record holds."""
    spki = x509.load_der_x509_certificate(cert_der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def tlsa_digests(records: list) -> list[str]:
    """The digests of the `3 1 1` records among TLSA rdatas (other kinds are not mailstack's)."""
    return [r.cert.hex() for r in records if (r.usage, r.selector, r.mtype) == (3, 1, 1)]


def check_tlsa(cfg: HostConfig, probe: SmtpProbe, lookups: Dns) -> Result:
    """dnssec: true: a `3 1 1` TLSA record at _25._tcp.<host> matches the key served on port 25."""
    name = f"dane.tlsa{_at(probe.address)}"
    fix = "pulumi up of the host stack (it publishes TLSA records of the key it serves and the next one)"
    if probe.error or _tls_failure(probe) or probe.tls.cert_der is None:
        return warned(name, f"not checked: no TLS session (see smtp.starttls{_at(probe.address)})")
    try:
        digests = tlsa_digests(lookups.records(tlsa_name(cfg), "TLSA"))
    except DnsError as err:
        return warned(name, f"not checked: {err}")
    served = spki_sha256(probe.tls.cert_der)
    if not digests:
        return failed(name, f"no TLSA 3 1 1 record at {tlsa_name(cfg)}", fix)
    if served not in digests:
        return failed(name, f"no TLSA record at {tlsa_name(cfg)} matches the key served on port 25 ({served[:16]}...): "
                      "senders that use DANE keep mail for this host in their queues", fix)
    others = len(digests) - 1
    return passed(name, f"TLSA 3 1 1 matches the key served on port 25"
                  + (f"; {others} more record(s): the next key" if others else ""))


def check_dnssec(cfg: HostConfig, lookups: Dns) -> Result:
    """dnssec: true: the zone is signed, its DS is at the parent, and a validating resolver vouches for the TLSA."""
    name, zone = "dane.dnssec", cfg.zone_name
    try:
        keys = lookups.records(zone, "DNSKEY")
        # A validating resolver's AD flag is the proof: the chain from its trust anchor holds.
        validated = bool(keys) and lookups.authenticated(tlsa_name(cfg), "TLSA")
        ds = lookups.records(zone, "DS") if keys and not validated else []
    except DnsError as err:
        return warned(name, f"not checked: {err}")
    if not keys:
        return failed(name, f"{zone} is not signed (no DNSKEY): TLSA records mean nothing without DNSSEC",
                      "pulumi up of the host stack (dnssec: true turns Cloudflare's DNSSEC on for the zone)")
    if validated:
        return passed(name, f"{zone} is signed and {tlsa_name(cfg)} validates (the resolver vouches for it)")
    if not ds:
        return failed(name, f"{zone} is signed but its parent has no DS record for it: no one can validate it",
                      "add the host stack's dnssec_ds output at your registrar (DS record of the zone)")
    return warned(name, f"{zone} is signed and has a DS, but the resolver asked did not validate {tlsa_name(cfg)}",
                  "ask a validating resolver (--nameserver), or check the DS at the registrar matches the zone's key")


def check_auth_25(probe: SmtpProbe) -> Result:
    """The guide: AUTH on port 25 is "unnecessary and bad practice"."""
    name = f"smtp.auth{_at(probe.address)}"
    if probe.error or probe.banner is None:
        return warned(name, f"not checked: {_no_session(probe)}")
    offered = [(when, mechs) for when, mechs in (("before STARTTLS", probe.auth_before_tls),
                                                 ("after STARTTLS", probe.auth_after_tls)) if mechs is not None]
    if offered:
        listing = "; ".join(f"AUTH {mechs or ''}".strip() + f" {when}" for when, mechs in offered)
        return failed(name, f"port 25 offers {listing}: password guessing on the MTA port",
                      "main.cf: smtpd_sasl_auth_enable = no (AUTH on submission only: master.cf -o "
                      "smtpd_sasl_auth_enable=yes)")
    checked = "before or after STARTTLS" if not _tls_failure(probe) else "before STARTTLS (TLS failed)"
    return passed(name, f"no AUTH on port 25 {checked}")


def check_vrfy(reply: SmtpReply) -> Result:
    name = f"smtp.vrfy{_at(reply.address)}"
    fix = "main.cf: disable_vrfy_command = yes (the guide)"
    if reply.reply is None:
        return warned(name, f"not checked: {reply.error}")
    code, text = reply.reply
    if code in (250, 251):
        return failed(name, f"{reply.command} answered {code} {text}: addresses can be harvested", fix)
    if code in (502, 252):
        return passed(name, f"{reply.command} refused: {code} {text}")
    if code == 402:  # 502 with soft_bounce on (see postfix.soft_bounce)
        return passed(name, f"{reply.command} refused: {code} {text} (soft_bounce makes 502 a 402)")
    return warned(name, f"inconclusive: {reply.command} answered {code} {text}", fix)


_RELAY_DENIED = re.compile(r"relay", re.I)


def check_relay(reply: SmtpReply) -> Result:
    """An unauthenticated client must not get mail relayed to a foreign domain."""
    name = f"smtp.relay{_at(reply.address)}"
    fix = ("main.cf: smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated reject_unauth_destination "
           "(the guide) and mynetworks = loopback only (permit_mynetworks lets every client in it relay); "
           "pulumi up renders both")
    inconclusive = ("run verify from a host with forward-confirmed reverse DNS, with its name as --helo, so that "
                    "Postfix gets as far as the relay rules")
    if reply.reply is None:
        return warned(name, f"inconclusive: {reply.error}", inconclusive)
    code, text = reply.reply
    if code < 400:
        return failed(name, f"{reply.command} accepted from an unauthenticated client ({code} {text}): "
                            "an open relay", fix)
    if _RELAY_DENIED.search(text):
        return passed(name, f"{reply.command} refused: {code} {text}")
    return warned(name, f"inconclusive: {reply.command} refused before the relay rules: {code} {text}",
                  inconclusive)


def check_submission_auth(probe: SmtpProbe) -> Result:
    name = f"submission.auth{_at(probe.address)}"
    if probe.error or probe.banner is None:
        return warned(name, f"not checked: {_no_session(probe)}")
    if probe.auth_before_tls is not None:
        return failed(name, f"AUTH {probe.auth_before_tls} offered before STARTTLS: passwords can travel in clear",
                      "main.cf: smtpd_tls_auth_only = yes (the guide)")
    if _tls_failure(probe):
        return warned(name, "no AUTH before STARTTLS; after it not checked (see submission.starttls)")
    if probe.auth_after_tls is None:
        return failed(name, "AUTH not offered after STARTTLS: users cannot log in to send mail",
                      "master.cf submission: -o smtpd_sasl_auth_enable=yes; main.cf: smtpd_sasl_type = dovecot, "
                      f"smtpd_sasl_path = {paths.DOVECOT_AUTH_SOCKET.postfix} (Dovecot's auth listener)")
    return passed(name, f"AUTH {probe.auth_after_tls} only after STARTTLS")


def check_etrn(probe: SmtpProbe, service: str = "smtp") -> Result:
    """EHLO does not offer ETRN: the guide refuses it (smtpd_etrn_restrictions = reject), so offering it misleads."""
    name = f"{service}.etrn{_at(probe.address)}"
    if probe.error or probe.banner is None:
        return warned(name, f"not checked: {_no_session(probe)}")
    offered = [when for when, features in (("before STARTTLS", probe.features), ("after STARTTLS", probe.features_tls))
               if "etrn" in features]
    if offered:
        return warned(name, f"EHLO on port {probe.port} offers ETRN ({', '.join(offered)}), which the server refuses",
                      "main.cf: smtpd_discard_ehlo_keywords = silent-discard, etrn (pulumi up renders it)")
    return passed(name, f"EHLO on port {probe.port} does not offer ETRN")


_SOFT_BOUNCE_FIX = ("once testing is done: mailstack:soft_bounce: false and mailstack:testing: false in the host "
                    "stack, and pulumi up (README, Testing-time settings)")


def check_soft_bounce_live(reply: SmtpReply) -> Result:
    """The relay attempt's refusal: 5xx as it should be, or 4xx because soft_bounce is on."""
    name = f"smtp.soft_bounce{_at(reply.address)}"
    if reply.reply is None or not _RELAY_DENIED.search(reply.reply[1]) or reply.reply[0] < 400:
        return warned(name, f"not checked: no relay refusal to judge (see smtp.relay{_at(reply.address)})")
    code, text = reply.reply
    if code < 500:
        return warned(name, f"{reply.command} refused with {code} {text}: soft_bounce is on, so every refusal is "
                            "temporary and senders retry for days instead of hearing no", _SOFT_BOUNCE_FIX)
    return passed(name, f"{reply.command} refused with {code}: permanent refusals are permanent (soft_bounce off)")


# notify_classes' default in Postfix: only the classes that report the server's own trouble.
DEFAULT_NOTIFY_CLASSES = ("resource", "software")


def check_soft_bounce_setting(value: str, source: str) -> Result:
    name = "postfix.soft_bounce"
    if value.strip().lower() in ("yes", "true"):
        return warned(name, f"soft_bounce = {value} ({source}): the guide's testing-time setting is still on; "
                            "mail that should bounce waits in queues instead", _SOFT_BOUNCE_FIX)
    return passed(name, f"soft_bounce = {value or 'no'} ({source})")


def check_notify_classes(value: str, source: str) -> Result:
    name = "postfix.notify_classes"
    classes = [c for c in re.split(r"[\s,]+", value.strip().lower()) if c]
    extra = [c for c in classes if c not in DEFAULT_NOTIFY_CLASSES]
    if extra:
        return warned(name, f"notify_classes = {value} ({source}): postmaster gets {', '.join(extra)} reports, "
                            "which carry other people's message headers and SMTP transcripts (the guide: it can "
                            "divulge confidential information)",
                      f"once testing is done: mailstack:notify_classes: [{', '.join(DEFAULT_NOTIFY_CLASSES)}] "
                      "(Postfix's default) in the host stack, and pulumi up")
    return passed(name, f"notify_classes = {value or '(none)'} ({source}): only the server's own trouble")


def _postfix_settings(cfg: HostConfig, options: Options) -> list[Result]:
    """The testing-time settings as the host's Postfix reads them (over SSH), else as the stack sets them."""
    try:
        if not options.ssh:
            raise HostUnavailable("SSH is off (--no-ssh)")
        live = read_postfix_settings(cfg, ["soft_bounce", "notify_classes"], options.timeout)
        source = "the host's postconf, over SSH"
    except HostUnavailable as err:
        live = {"soft_bounce": "yes" if cfg.soft_bounce else "no", "notify_classes": ", ".join(cfg.notify_classes)}
        source = f"the stack's config; the host not asked: {err}"
    return [check_soft_bounce_setting(live["soft_bounce"], source),
            check_notify_classes(live["notify_classes"], source)]


def check_imap(probe: ImapProbe) -> Result:
    name = f"imap.tls{_at(probe.address)}"
    shown = []
    for label, tls in (("993", probe.imaps), ("143 STARTTLS", probe.starttls)):
        shown.append(f"{label}: {tls.version}" if tls.ok else f"{label}: {tls.error}")
    if not probe.imaps.ok and not probe.starttls.ok:
        return failed(name, f"no TLS for IMAP ({'; '.join(shown)})",
                      "is Dovecot running? 10-ssl.conf: ssl = required, ssl_cert and ssl_key (mailstack renders them)")
    if probe.starttls.ok and "LOGINDISABLED" not in probe.capabilities_before_tls:
        return warned(name, f"{'; '.join(shown)}; but 143 offers LOGIN before STARTTLS: passwords can travel in clear",
                      "10-auth.conf: disable_plaintext_auth = yes")
    return passed(name, "; ".join(shown))


# --- the spam filter (rspamd and Redis), read over SSH -----------------------------------------------

# What listens for the spam filter, each on the host's loopback only (components/services/rspamd.py).
SPAM_FILTER_PORTS = {
    "rspamd's milter": rspamd.PROXY_PORT,
    "rspamd's scanner": int(rspamd.NORMAL_ADDRESS.rpartition(":")[2]),
    "rspamd's controller": int(rspamd.CONTROLLER_ADDRESSES[0].rpartition(":")[2]),
    "Redis": rspamd.REDIS_PORT,
}
REDIS_ADDRESS = f"{rspamd.REDIS_SERVER}:{rspamd.REDIS_PORT}"
_SPAM_FILTER_FIX = "pulumi up the host stack (its rspamd unit starts rspamd and Redis); on the host: service rspamd status"


def _listener(text: str) -> tuple[str, int] | None:
    """ss's local address ("127.0.0.1:6379", "[::1]:11334", "*:25", "127.0.0.53%lo:53") as (address, port)."""
    address, _, port = text.rpartition(":")
    if not port.isdigit():
        return None
    return address.strip("[]").split("%", 1)[0], int(port)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # "*": every address
        return False


def check_spam_filter_listeners(listeners: list[str], ports: dict[str, int]) -> Result:
    """Each of rspamd's workers and Redis listens, and only on loopback (`ports`: what → port)."""
    name = "rspamd.listening"
    found = [parsed for parsed in map(_listener, listeners) if parsed]
    exposed, missing = [], []
    for what, port in ports.items():
        addresses = [address for address, p in found if p == port]
        if not addresses:
            missing.append(f"{what} ({port})")
        exposed += [f"{what} on {address or '*'}:{port}" for address in addresses if not _loopback(address)]
    if exposed:
        return failed(name, f"reachable beyond the host: {', '.join(exposed)}",
                      "bind them to 127.0.0.1 and ::1 only (mailstack's rspamd and Redis files do; something else "
                      "changed them): pulumi up the host stack, and check /etc/redis/redis.conf's bind")
    if missing:
        return failed(name, f"not listening: {', '.join(missing)}", _SPAM_FILTER_FIX)
    shown = ", ".join(f"{what} {port}" for what, port in ports.items())
    return passed(name, f"{shown}: on loopback only")


def check_spam_filter_milter(answer: str, address: str) -> Result:
    name = "rspamd.milter"
    if answer.startswith("answered O"):
        return passed(name, f"rspamd's milter on {address} answers Postfix's milter negotiation")
    return failed(name, f"rspamd's milter on {address} does not answer ({answer or 'no answer'}): with the milter's "
                        "default_action tempfail, mail from outside waits (4xx) until it does", _SPAM_FILTER_FIX)


def check_redis_ping(answer: str, address: str) -> Result:
    name = "redis.ping"
    if answer.strip() == "PONG":
        return passed(name, f"Redis on {address} answers PING (rspamd keeps its statistics, greylisting and rates there)")
    return failed(name, f"Redis on {address} does not answer PING ({answer or 'no answer'}): rspamd cannot learn, "
                        "greylist or keep rates", "on the host: service redis-server start; then pulumi up the host stack")


# rspamd's Bayes classifier judges nothing until it has learned this many messages of each class.
BAYES_MIN_LEARNS = 200


def learned_counts(stat: str) -> dict[str, int]:
    """`rspamc stat`'s statfiles and what each has learned: {"BAYES_SPAM": 3, "BAYES_HAM": 1}."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^Statfile: (\S+) .*?learned: (\d+)", stat, re.M)}


def check_spam_learned(stat: str) -> Result:
    name = "rspamd.learned"
    counts = learned_counts(stat)
    if not counts:
        return failed(name, f"rspamc stat gave no statistics: {stat.splitlines()[-1] if stat else 'no output'}",
                      _SPAM_FILTER_FIX)
    spam, ham = counts.get("BAYES_SPAM", 0), counts.get("BAYES_HAM", 0)
    reason = f"learned {spam} spam, {ham} ham"
    if min(spam, ham) < BAYES_MIN_LEARNS:
        reason += (f" (Bayes takes part once each reaches {BAYES_MIN_LEARNS}: users teach it by moving mail "
                   "into and out of Junk)")
    return passed(name, reason)


def _spam_filter_checks(cfg: HostConfig, options: Options) -> list[Result]:
    """rspamd's and Redis's state as the host reports it; warnings when SSH cannot ask."""
    names = ["rspamd.listening", "rspamd.milter", "redis.ping", "rspamd.learned"]
    try:
        if not options.ssh:
            raise HostUnavailable("SSH is off (--no-ssh)")
        state = read_spam_filter_state(cfg, rspamd.PROXY_ADDRESS, REDIS_ADDRESS, rspamd.STAT_COMMAND, options.timeout)
    except HostUnavailable as err:
        return [warned(n, f"not checked: they listen on the host's loopback only, and the host was not asked: {err}",
                       "let verify reach the host over SSH (the host stack's connection)") for n in names]
    return [
        check_spam_filter_listeners(state.listeners, SPAM_FILTER_PORTS),
        check_spam_filter_milter(state.milter, rspamd.PROXY_ADDRESS),
        check_redis_ping(state.redis, REDIS_ADDRESS),
        check_spam_learned(state.stat),
    ]


# --- running them ---------------------------------------------------------------------------------


@dataclass
class Options:
    """How to check, besides the stack: the command line's options."""

    nameservers: list[str] = field(default_factory=list)  # ask these instead of /etc/resolv.conf
    helo: str = ""  # our EHLO name (default: this machine's FQDN)
    relay_to: str = ""  # a recipient in a foreign domain, for the relay test
    dkim_key: str | None = None  # the host's DKIM public key, for when SSH cannot read it
    ssh: bool = True  # read the DKIM key from the host over SSH (first choice)
    timeout: float = 10.0  # per connection or lookup, seconds
    ca_file: str | None = None  # trust these CAs instead of the system's (a lab's ACME root), for the mail ports and the MTA-STS policy


@dataclass(frozen=True)
class Target:
    """What a run of verify checks: a host stack, or a domain stack with its host stack.

    `host`: the host stack's config (the host itself, or the domain's host,
    from its host stack's file); `domain`: the domain stack's config, or None;
    `facts`: what the domain stack knows of its host (HostFacts);
    `hosted`: the domains known to be on the host (kept out of the relay test).
    """

    host: HostConfig
    domain: DomainConfig | None = None
    facts: HostFacts | None = None
    hosted: tuple[str, ...] = ()

    @property
    def addresses(self) -> list[str]:
        return self.host.addresses


# Reserved for documentation (RFC 2606): never a real mail domain, unless the host hosts one of them.
_FOREIGN = ("example.net", "example.org", "example.com")


def default_relay_to(names: list[str]) -> str:
    """A recipient outside every domain in `names` (the host's name, its hosted domains)."""
    for domain in _FOREIGN:
        related = any(name == domain or name.endswith("." + domain) or domain.endswith("." + name) for name in names)
        if not related:
            return f"postmaster@{domain}"
    return "postmaster@relay-test.example"  # RFC 2606's .example: no one hosts it


def check_dkim_selectors(cfg: DomainConfig, lookups: Dns, signing: str | None, host_keys: list[str],
                         unavailable: str = "") -> Result:
    """The selectors in DNS (mailstack:dkim_selector's and every key the host keeps) and the one the host signs with.

    `signing`: the selector of the domain's SigningTable line (None: no line, or
    not read: `unavailable` says why); `host_keys`: the selectors the host has keys of.
    """
    name = "dkim.selectors"
    selectors = sorted({cfg.dkim_selector, *host_keys, *([signing] if signing else [])})
    seen = []
    for selector in selectors:
        try:
            texts = lookups.texts(f"{selector}._domainkey.{cfg.domain}")
        except DnsError:
            texts = []
        if any("p=" in t for t in texts):
            seen.append(selector)
    in_dns = f"selectors in DNS: {', '.join(seen) or 'none'}"
    if unavailable and cfg.dkim_selector in seen and "--no-ssh" in unavailable:
        return passed(name, f"{in_dns}; which one the host signs with was not read ({unavailable})")
    if unavailable:
        return warned(name, f"{in_dns}; which one the host signs with is unknown: {unavailable}",
                      "let verify reach the host over SSH (the host stack's connection)")
    if signing is None:
        return failed(name, f"{in_dns}; the host signs nothing from {cfg.domain} (no SigningTable line)",
                      "pulumi up the domain stack (its dkim-signing unit names the selector)")
    if signing not in seen:
        return failed(name, f"{in_dns}; the host signs with {signing}, which has no record in DNS: "
                      "receivers cannot verify its signatures", "pulumi up the domain stack (it publishes the record)")
    if signing != cfg.dkim_selector:
        state = "published" if cfg.dkim_selector in seen else "not yet visible"
        return warned(name, f"{in_dns}; the host signs with {signing}, mailstack:dkim_selector is "
                      f"{cfg.dkim_selector} (a rotation under way: its record is {state})",
                      "pulumi up again once the new record is visible: it switches signing to the new selector")
    return passed(name, f"{in_dns}; the host signs with {signing}")


def _dkim_checks(target: Target, lookups: Dns, options: Options) -> list[Result]:
    """The host's own key when SSH can read it; else the key given with --dkim-key; else not compared."""
    cfg, facts = target.domain, target.facts
    key_path = paths.domain_dkim_key(cfg.domain, cfg.dkim_selector)
    host_key, source, unavailable = None, "", "no --dkim-key given"
    if options.ssh:
        try:
            host_key = read_host_dkim_key(target.host, key_path, options.timeout)
            source = f"{key_path}, read over SSH"
        except HostKeyUnavailable as err:
            unavailable = f"the host's key could not be read over SSH ({err}) and no --dkim-key was given"
    else:
        unavailable = "SSH is off (--no-ssh) and no --dkim-key was given"
    if host_key is None and options.dkim_key:
        host_key, source = options.dkim_key, "the key given with --dkim-key"
    record_result, record = check_dkim_record(cfg, facts, lookups, host_key)
    signing, host_keys, why = None, [], ""
    if options.ssh:
        try:
            signing, host_keys = read_host_dkim_signing(target.host, cfg.domain, options.timeout)
        except HostKeyUnavailable as err:
            why = f"the host's SigningTable could not be read over SSH ({err})"
    else:
        why = "SSH is off (--no-ssh)"
    return [record_result, check_dkim_key(cfg, facts, record, host_key, source, unavailable),
            check_dkim_selectors(cfg, lookups, signing, host_keys, why)]


def _smtp_checks(cfg: HostConfig, address: str, options: Options, lookups: Dns) -> list[Result]:
    probe = probe_smtp(address, 25, cfg.host_name, options.helo, options.timeout, options.ca_file)
    dane = [check_tlsa(cfg, probe, lookups)] if cfg.dnssec else []
    return [check_banner(cfg, probe), check_starttls(cfg, probe), check_certificate(cfg, probe),
            check_auth_25(probe), *dane, check_etrn(probe)]


def _submission_checks(cfg: HostConfig, address: str, options: Options) -> list[Result]:
    probe = probe_smtp(address, 587, cfg.host_name, options.helo, options.timeout, options.ca_file)
    return [check_starttls(cfg, probe, "submission"), check_submission_auth(probe), check_etrn(probe, "submission")]


def _relay_checks(cfg: HostConfig, address: str, options: Options) -> list[Result]:
    reply = probe_relay(address, cfg.host_name, options.helo, options.relay_to, options.timeout)
    return [check_relay(reply), check_soft_bounce_live(reply)]


# The order of the report: by check, then by address (in the stack's order).
ORDER = ["dns.mx", "dns.mx-cname", "dns.srv", "dns.a", "dns.aaaa", "dns.ptr", "spf.record", "spf.lookups", "spf.all",
         "spf.pass", "spf.helo", "dkim.record", "dkim.key", "dkim.selectors", "dmarc.record", "dmarc.policy", "mta-sts.record",
         "mta-sts.policy", "tls-rpt.record", "smtp.banner",
         "smtp.starttls", "smtp.cert", "smtp.auth", "dane.tlsa", "dane.dnssec", "smtp.vrfy", "smtp.etrn", "smtp.relay",
         "smtp.soft_bounce", "submission.starttls", "submission.auth", "submission.etrn", "imap.tls",
         "postfix.soft_bounce", "postfix.notify_classes", "rspamd.listening", "rspamd.milter", "redis.ping",
         "rspamd.learned"]
# What each kind of stack checks (a check with an address runs once per address of the host).
HOST_CHECKS = ["dns.a", "dns.aaaa", "dns.ptr", "spf.helo", "smtp.banner", "smtp.starttls", "smtp.cert", "smtp.auth",
               "dane.tlsa", "dane.dnssec", "smtp.vrfy", "smtp.etrn", "smtp.relay", "smtp.soft_bounce",
               "submission.starttls", "submission.auth", "submission.etrn", "imap.tls", "postfix.soft_bounce",
               "postfix.notify_classes", "rspamd.listening", "rspamd.milter", "redis.ping", "rspamd.learned"]
DOMAIN_CHECKS = ["dns.mx", "dns.mx-cname", "dns.srv", "spf.record", "spf.lookups", "spf.all", "spf.pass", "dkim.record",
                 "dkim.key", "dkim.selectors", "dmarc.record", "dmarc.policy", "mta-sts.record", "mta-sts.policy", "tls-rpt.record"]


def _order(target: Target, result: Result) -> tuple[int, int]:
    base, _, address = result.name.partition("[")
    position = target.addresses.index(address.rstrip("]")) if address else -1
    return ORDER.index(base) if base in ORDER else len(ORDER), position


def _host_tasks(cfg: HostConfig, lookups: Dns, options: Options) -> list[Callable[[], list[Result]]]:
    helo = options.helo
    tasks: list[Callable[[], list[Result]]] = [
        lambda: [check_addresses(cfg, lookups, "A"), check_addresses(cfg, lookups, "AAAA")],
        lambda: [check_spf_helo(cfg, lookups)],
        *([lambda: [check_dnssec(cfg, lookups)]] if cfg.dnssec else []),
        lambda: _postfix_settings(cfg, options),
        *([lambda: _spam_filter_checks(cfg, options)] if cfg.spam_filter else []),
    ]
    for a in cfg.addresses:
        tasks += [
            lambda a=a: [check_ptr(cfg, lookups, a)],
            lambda a=a: _smtp_checks(cfg, a, options, lookups),
            lambda a=a: [check_vrfy(probe_vrfy(a, cfg.host_name, helo, options.timeout))],
            lambda a=a: _relay_checks(cfg, a, options),
            lambda a=a: _submission_checks(cfg, a, options),
            lambda a=a: [check_imap(probe_imap(a, cfg.host_name, options.timeout, options.ca_file))],
        ]
    return tasks


def _domain_tasks(target: Target, lookups: Dns, options: Options) -> list[Callable[[], list[Result]]]:
    cfg, facts = target.domain, target.facts
    tasks: list[Callable[[], list[Result]]] = [
        lambda: [check_mx(cfg, facts, lookups), check_mx_cname(cfg, facts, lookups)],
        lambda: [check_srv(cfg, facts, lookups)],
        lambda: check_spf(cfg, facts, lookups),
        lambda: _dkim_checks(target, lookups, options),
        lambda: check_dmarc(cfg, facts, lookups),
    ]
    tasks += [lambda a=a: [check_spf_pass(cfg, facts, lookups, a)] for a in facts.addresses]
    tasks.append(lambda: _sts_checks(cfg, facts, lookups, options))
    return tasks


def _sts_checks(cfg: DomainConfig, facts: HostFacts, lookups: Dns, options: Options) -> list[Result]:
    """MTA-STS (the policy fetched only when the stack publishes one) and TLS-RPT."""
    results = [check_mta_sts_record(cfg, facts, lookups)]
    if "mta-sts" in published(cfg, facts):
        policy_host = mta_sts_host(cfg.domain)
        try:
            addresses = lookups.addresses(policy_host, "A") + lookups.addresses(policy_host, "AAAA")
        except DnsError as err:
            fetch = PolicyFetch(f"https://{policy_host}/.well-known/mta-sts.txt", error=str(err))
        else:
            fetch = fetch_policy(policy_host, addresses, options.timeout, options.ca_file)
        results.append(check_mta_sts_policy(cfg, facts, fetch))
    results.append(check_tls_rpt(cfg, facts, lookups))
    return results


def run_checks(target: Target, options: Options, lookups: Dns | None = None) -> list[Result]:
    """Every check of the target's kind, run concurrently (threads), in report order."""
    lookups = lookups or Dns(options.nameservers or None, timeout=options.timeout)
    helo = options.helo or socket.getfqdn()
    relay_to = options.relay_to or default_relay_to([target.host.host_name, *target.hosted])
    options = Options(options.nameservers, helo, relay_to, options.dkim_key, options.ssh, options.timeout,
                      options.ca_file)
    # checkdmarc caches answers process-wide by name, whatever the resolver: start clean.
    checkdmarc.utils.DNS_CACHE.clear()
    if target.domain is None:
        tasks = _host_tasks(target.host, lookups, options)
    else:
        tasks = _domain_tasks(target, lookups, options)
    with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="verify") as pool:
        futures = [pool.submit(task) for task in tasks]
        results = [r for f in futures for r in f.result()]
    return sorted(results, key=lambda r: _order(target, r))


# --- output ---------------------------------------------------------------------------------------


def counts(results: list[Result]) -> dict[str, int]:
    return {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL)}


def report(stack: str, target: Target, results: list[Result], seconds: float) -> dict:
    """The JSON form of a run (--json). `domain` is null for a host stack."""
    return {
        "stack": stack,
        "kind": "host" if target.domain is None else "domain",
        "domain": target.domain.domain if target.domain else None,
        "hostname": target.host.host_name,
        "addresses": target.addresses,
        "seconds": round(seconds, 2),
        "counts": counts(results),
        "ok": not any(r.status == FAIL for r in results),
        "checks": [asdict(r) for r in results],
    }


def table(stack: str, target: Target, results: list[Result], seconds: float) -> str:
    """The readable form: one line per check, the fix under a failing or warning one."""
    width = max([len(r.name) for r in results] + [5])
    what = f"{target.domain.domain}, mail host" if target.domain else "mail host"
    lines = [f"verify {stack}: {what} {target.host.host_name} ({', '.join(target.addresses)})", ""]
    lines.append(f"{'STATUS':<6}  {'CHECK':<{width}}  REASON")
    for r in results:
        lines.append(f"{r.status.upper() if r.status != PASS else r.status:<6}  {r.name:<{width}}  {r.reason}")
        if r.fix and r.status != PASS:
            lines.append(f"{'':<6}  {'':<{width}}  fix: {r.fix}")
    n = counts(results)
    lines += ["", f"{n[PASS]} passed, {n[WARN]} warnings, {n[FAIL]} failed in {seconds:.1f}s"]
    return "\n".join(lines) + "\n"
