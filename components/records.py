"""The stacks' DNS records as plain data.

A host stack publishes the host's own records (A, AAAA, the HELO name's SPF,
PTRs); a domain stack its domain's (MX, SPF, DKIM, DMARC, TLS-RPT, and
MTA-STS when its host has a trusted certificate), pointing at the host it
names (a HostFacts: the host stack's outputs).

One list of `Record`s feeds the Cloudflare component (`components/dns.py`), the
zone-file export and the tests. Each record carries a one-line reason, in the
manner of Mail-in-a-Box's `dns_update.py`.

Names are FQDNs, lower-case, without the trailing dot. TXT contents are the
*unquoted* values; `txt_content` turns a value into what Cloudflare and zone
files expect.

This module is pure: no Pulumi import, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.name
import dns.reversename

from components.config import DomainConfig, HostConfig
from components.hostfacts import HostFacts

# The guide: "mail is handled by 10 mail.example.com".
MX_PRIORITY = 10

# RFC 1035 3.3: a <character-string> is one length octet and at most 255 octets.
TXT_CHUNK = 255

# What a zone file and Cloudflare's "automatic" TTL use (Cloudflare: auto = 300 s).
ZONE_TTL = 300

DKIM_KEY = "dkim"
DKIM_REASON = "Required: receivers verify the DKIM-Signature that OpenDKIM adds with this public key"


@dataclass(frozen=True)
class Record:
    """One DNS record, with why it exists."""

    name: str  # FQDN, lower-case, no trailing dot
    type: str  # "A", "AAAA", "MX", "TXT", "PTR", "TLSA", "SRV"
    content: str  # TXT: the unquoted value; MX/PTR: the target host (no trailing dot); SRV: "0 1 587 host"
    reason: str  # one line: why this record exists
    priority: int | None = None  # MX only
    key: str = ""  # stable short id, used in Pulumi resource names: never change one


# --- values ---------------------------------------------------------------------------------


def spf_value(ipv4: Sequence[str], ipv6: Sequence[str]) -> str:
    """SPF policy allowing exactly the host's addresses.

    Only ip4/ip6 mechanisms: no `mx` or `a`, so evaluation costs receivers no DNS
    lookups (RFC 7208 4.6.4 allows at most 10). `-all` fails everyone else.
    """
    mechanisms = [f"ip4:{a}" for a in ipv4] + [f"ip6:{a}" for a in ipv6]
    return " ".join(["v=spf1", *mechanisms, "-all"])


def dkim_public_key(cfg: DomainConfig, text: str) -> str:
    """The host's DKIM public key, checked: base64 of a DER SubjectPublicKeyInfo.

    `text` is the DKIM unit's stdout; whitespace (line breaks) is removed. MailDns
    checks the key with this before publishing it, so that an error message on
    stdout never becomes a DNS record.
    """
    key = "".join(text.split())
    where = f"DKIM public key for selector {cfg.dkim_selector!r}"
    if not key:
        raise ValueError(f"{where} is empty (expected base64 DER)")
    try:
        der = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        der = b""
    # Every DER SubjectPublicKeyInfo is a SEQUENCE: it starts with 0x30.
    if not der.startswith(b"\x30"):
        raise ValueError(
            f"{where} is not base64 DER (expected the output of "
            f"`openssl rsa -pubout -outform DER | base64 -w0`): {key[:20]!r}..."
        )
    return key


def dkim_value(cfg: DomainConfig, public_key_b64: str) -> str:
    """The DKIM key record (RFC 6376 3.6.1) as `opendkim-genkey -r` writes it.

    `public_key_b64` is the base64 of the DER SubjectPublicKeyInfo (check one from
    the host with `dkim_public_key`; the offline render passes a placeholder).
    Whitespace is removed. An empty `p=` would publish a *revoked* key, so an
    empty key is an error, not an empty record.
    """
    key = "".join(public_key_b64.split())
    if not key:
        raise ValueError(f"DKIM public key for selector {cfg.dkim_selector!r} is empty (expected base64 DER)")
    return f"v=DKIM1; h=sha256; k=rsa; s=email; p={key}"


def dmarc_value(cfg: DomainConfig) -> str:
    """DMARC policy (RFC 7489) with aggregate reports to `cfg.rua`.

    No adkim/aspf: the defaults (relaxed) let mail from a subdomain's address
    align with the organisational domain; strict would refuse it.
    """
    rua = ",".join(f"mailto:{address}" for address in cfg.rua)
    return f"v=DMARC1; p={cfg.dmarc_policy}; rua={rua}"


# RFC 8461 3.2: a policy's id is 1 to 32 letters and digits; ours, 20 hex digits of its text's SHA-256.
MTA_STS_ID_DIGITS = 20


def mta_sts_policy(mode: str, mx: Sequence[str], max_age: int) -> str:
    """The MTA-STS policy file (RFC 8461 3.2): `key: value` lines, LF line ends.

    `mx`: the host names senders may deliver to (the domain's MX: its host).
    """
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {name}" for name in mx), f"max_age: {max_age}"]
    return "\n".join(lines) + "\n"


def domain_mta_sts_policy(cfg: DomainConfig, host: HostFacts) -> str:
    """The domain's policy: its mode and max_age, its host as the one MX."""
    return mta_sts_policy(cfg.mta_sts_mode, [host.hostname], cfg.mta_sts_max_age)


def mta_sts_id(policy: str) -> str:
    """The policy's id: it changes exactly when the policy text does (senders refetch on a new id)."""
    return hashlib.sha256(policy.encode("utf-8")).hexdigest()[:MTA_STS_ID_DIGITS]


def mta_sts_value(policy: str) -> str:
    """The `_mta-sts` TXT record (RFC 8461 3.1): there is a policy, and which one."""
    return f"v=STSv1; id={mta_sts_id(policy)}"


def tls_rpt_value(cfg: DomainConfig) -> str:
    """The `_smtp._tls` TXT record (RFC 8460 3): where senders report TLS failures."""
    rua = ",".join(f"mailto:{address}" for address in cfg.tls_rpt)
    return f"v=TLSRPTv1; rua={rua}"


def publishes_mta_sts(cfg: DomainConfig, host: HostFacts) -> bool:
    """MTA-STS needs a trusted certificate on the MX and on mta-sts.<domain>: the host's tls is acme."""
    return cfg.mta_sts_mode != "none" and host.trusted_tls


def _escape(chunk: bytes) -> str:
    # RFC 1035 5.1: inside a quoted string, \" and \\ are literal; any other
    # octet that is not printable ASCII is written \DDD (decimal).
    out = []
    for byte in chunk:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def txt_content(value: str) -> str:
    """A TXT value as quoted character-strings of at most 255 bytes, one space apart.

    Cloudflare re-splits one long string into 255-byte pieces and then reports
    drift on every preview, so we send exactly the form it stores:
    `"chunk1" "chunk2"`. Splitting is by bytes of the UTF-8 value (what the wire
    carries); receivers of SPF, DKIM and DMARC concatenate the strings without
    separators (RFC 7208 3.3, RFC 6376 3.6.2.2).
    """
    data = value.encode("utf-8")
    chunks = [data[i : i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)] or [b""]
    return " ".join(f'"{_escape(chunk)}"' for chunk in chunks)


# --- names ----------------------------------------------------------------------------------


def _key_part(address: str) -> str:
    return address.replace(".", "-").replace(":", "-")


def ptr_name(address: str) -> str:
    """The reverse-lookup name of an address, e.g. 10.2.0.192.in-addr.arpa."""
    return dns.reversename.from_address(address).to_text(omit_final_dot=True).lower()


def dkim_name(cfg: DomainConfig) -> str:
    return f"{cfg.dkim_selector}._domainkey.{cfg.domain}"


def mta_sts_host(domain: str) -> str:
    """The policy host (RFC 8461 3.3): https://mta-sts.<domain>/.well-known/mta-sts.txt."""
    return f"mta-sts.{domain}"


def reverse_zone_for(cfg: HostConfig, address: str) -> str | None:
    """The configured reverse zone holding the address's PTR name (the most specific one), or None."""
    name = dns.reversename.from_address(address)
    matches = [zone for zone in cfg.reverse_zones if name.is_subdomain(dns.name.from_text(zone))]
    return max(matches, key=lambda zone: zone.count("."), default=None)


# --- record sets ----------------------------------------------------------------------------


def dkim_record(cfg: DomainConfig, public_key_b64: str) -> Record:
    return Record(dkim_name(cfg), "TXT", dkim_value(cfg, public_key_b64), DKIM_REASON, key=DKIM_KEY)


DKIM_RETIRED_REASON = "Kept after a DKIM key rotation: mail signed with this key verifies until dkim_retention ends"


def dkim_selector_record(cfg: DomainConfig, selector: str, public_key_b64: str, retired: bool = False) -> Record:
    """The DKIM record of one of the domain's selectors (a rotation publishes two), key `dkim-<selector>`."""
    of_selector = cfg.model_copy(update={"dkim_selector": selector})
    return Record(
        dkim_name(of_selector), "TXT", dkim_value(of_selector, public_key_b64),
        DKIM_RETIRED_REASON if retired else DKIM_REASON, key=f"{DKIM_KEY}-{selector}",
    )


# Reasons fit Cloudflare's 100-character comment limit on Free zones.
_REASONS = {
    "A": "Required: the mail host's IPv4 address, for the MX target and HELO checks",
    "AAAA": "Required: the mail host's IPv6 address, for the MX target and HELO checks",
    "mx": "Required: mail for the domain is delivered to this host (priority 10)",
    "spf": "Required: receivers check the sender's IP against SPF (-all: no one else)",
    "spf-helo": "Recommended: SPF for the HELO name, checked for bounces (empty MAIL FROM)",
    "dmarc": "Recommended: DMARC policy p={policy} for mail failing SPF and DKIM, and where reports go",
    "ptr": "Required: receivers reject clients whose IP has no matching name (reject_unknown_client_hostname)",
    "mta-sts": "Recommended: MTA-STS (mode {mode}): senders require TLS to our MX; id changes with the policy",
    "mta-sts-A": "Recommended: the MTA-STS policy host (mta-sts.<domain>) on the mail host, IPv4",
    "mta-sts-AAAA": "Recommended: the MTA-STS policy host (mta-sts.<domain>) on the mail host, IPv6",
    "tls-rpt": "Recommended: TLS-RPT, where senders report failed TLS to our MX (RFC 8460)",
    "srv": "Optional: mail clients find {what} on the mail host, port {port} (RFC 6186/8314)",
    "srv-none": "Optional: tells mail clients there is no {what} here (target .)",
    "autoconfig-A": "Optional: autoconfig.<domain>, mail clients' settings file on the mail host, IPv4",
    "autoconfig-AAAA": "Optional: autoconfig.<domain>, mail clients' settings file on the mail host, IPv6",
}


def host_records(cfg: HostConfig) -> list[Record]:
    """The host's own records: A, AAAA and the SPF of its HELO name (the host stack's)."""
    host, spf = cfg.host_name, spf_value(cfg.ipv4, cfg.ipv6)
    records = [Record(host, "A", a, _REASONS["A"], key=f"a-{_key_part(a)}") for a in cfg.ipv4]
    records += [Record(host, "AAAA", a, _REASONS["AAAA"], key=f"aaaa-{_key_part(a)}") for a in cfg.ipv6]
    # Bounces have an empty MAIL FROM, so SPF checks the HELO name (RFC 7208 2.3).
    records.append(Record(host, "TXT", spf, _REASONS["spf-helo"], key="spf-helo"))
    return records


# DANE (RFC 7672): "3 1 1" = the server's own key (DANE-EE), its SubjectPublicKeyInfo, SHA-256.
TLSA_USAGE_SELECTOR_MATCHING = (3, 1, 1)
TLSA_REASON = "DANE: a TLS key of the host (served, or next), checked by senders that validate DNSSEC"


def tlsa_name(cfg: HostConfig) -> str:
    """Where senders look for the MX host's TLSA records: port 25, TCP."""
    return f"_25._tcp.{cfg.host_name}"


def tlsa_value(spki_sha256: str) -> str:
    """TLSA 3 1 1 of a key, from the hex SHA-256 of its SubjectPublicKeyInfo."""
    digest = spki_sha256.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{spki_sha256!r} is not a SHA-256 digest in hex (64 hex digits)")
    return "{} {} {} ".format(*TLSA_USAGE_SELECTOR_MATCHING) + digest


def tlsa_records(cfg: HostConfig) -> list[Record]:
    """The MX host's two TLSA records (dnssec: true), one for each of its keys: the served one and the next.

    Key number n (the host's count of key rolls) has record tlsa-<n mod 2>. A
    roll serves key n+1, already published, and makes key n+2, whose record
    replaces key n's: one record changes, and two records never hold the same
    key (Cloudflare refuses identical records). Their content is the host's:
    `tlsa_digest` picks it from what the TLS unit printed.
    """
    return [Record(tlsa_name(cfg), "TLSA", "", TLSA_REASON, key=f"tlsa-{slot}") for slot in (0, 1)]


def tlsa_digest(record: Record, facts: dict[str, str]) -> str:
    """The digest of the key whose record `record` is, from the TLS unit's facts (spki, spki_next, generation)."""
    slot = int(record.key.rpartition("-")[2])
    return facts["spki"] if int(facts["generation"]) % 2 == slot else facts["spki_next"]


def tlsa_data(value: str) -> dict[str, int | str]:
    """A TLSA value ("3 1 1 ab12...") as Cloudflare takes it: the `data` of a TLSA record."""
    usage, selector, matching, certificate = value.split()
    return {"usage": int(usage), "selector": int(selector), "matching_type": int(matching),
            "certificate": certificate}


def ptr_records(cfg: HostConfig) -> list[Record]:
    """One PTR per address, pointing at the host name (forward-confirmed reverse DNS)."""
    host = cfg.host_name
    return [Record(ptr_name(a), "PTR", host, _REASONS["ptr"], key=f"ptr-{_key_part(a)}") for a in cfg.addresses]


def tls_rpt_record(cfg: DomainConfig) -> Record:
    """`_smtp._tls.<domain>`: published whatever the host's TLS (reports help most when TLS fails)."""
    return Record(f"_smtp._tls.{cfg.domain}", "TXT", tls_rpt_value(cfg), _REASONS["tls-rpt"], key="tls-rpt")


def mta_sts_records(cfg: DomainConfig, host: HostFacts) -> list[Record]:
    """`_mta-sts.<domain>` TXT and `mta-sts.<domain>` A/AAAA (the host's addresses), or none.

    None when the mode is `none` or the host has no trusted certificate
    (`publishes_mta_sts`): a policy senders cannot fetch, or whose MX fails
    their certificate check, would only stop mail (in enforce mode).
    """
    if not publishes_mta_sts(cfg, host):
        return []
    name = mta_sts_host(cfg.domain)
    policy = domain_mta_sts_policy(cfg, host)
    reason = _REASONS["mta-sts"].format(mode=cfg.mta_sts_mode)
    records = [Record(f"_mta-sts.{cfg.domain}", "TXT", mta_sts_value(policy), reason, key="mta-sts")]
    records += [Record(name, "A", a, _REASONS["mta-sts-A"], key=f"mta-sts-a-{_key_part(a)}") for a in host.ipv4]
    records += [Record(name, "AAAA", a, _REASONS["mta-sts-AAAA"], key=f"mta-sts-aaaa-{_key_part(a)}")
                for a in host.ipv6]
    return records


# --- client autoconfiguration (RFC 6186, RFC 8314 5.1; Thunderbird's autoconfig file) ----------

# What the host offers mail clients (templates/postfix/master.cf.j2, templates/dovecot/): submission on
# 587 with STARTTLS, IMAP on 993 (implicit TLS) and on 143 with STARTTLS. Not offered: submissions on
# 465 (commented out in master.cf), POP3 (dovecot-pop3d is not installed). For those a record
# with target "." says so (RFC 2782; RFC 6186 3.4): clients then do not try them.
# (service label, port or None when not offered, what the record tells a client)
CLIENT_SERVICES: tuple[tuple[str, int | None, str], ...] = (
    ("_submissions._tcp", None, "submission on 465"),
    ("_submission._tcp", 587, "submission with STARTTLS"),
    ("_imaps._tcp", 993, "IMAP with implicit TLS"),
    ("_imap._tcp", 143, "IMAP with STARTTLS"),
    ("_pop3s._tcp", None, "POP3 with implicit TLS"),
    ("_pop3._tcp", None, "POP3"),
)
# RFC 8314 5.1: priority 0 for the one server; weight 1 (RFC 2782: 0 only when there is no choice).
SRV_PRIORITY, SRV_WEIGHT = 0, 1


def autoconfig_host(domain: str) -> str:
    """Where Thunderbird-style clients fetch the settings file: https://autoconfig.<domain>/mail/config-v1.1.xml."""
    return f"autoconfig.{domain}"


def publishes_autoconfig(cfg: DomainConfig, host: HostFacts) -> bool:
    """The settings file needs a certificate clients trust on autoconfig.<domain>: the host's tls is acme."""
    return cfg.autoconfig and host.trusted_tls


def srv_value(port: int | None, target: str) -> str:
    """`priority weight port target` (target without trailing dot; "0 0 0 ." for a service not offered)."""
    if port is None:
        return "0 0 0 ."
    return f"{SRV_PRIORITY} {SRV_WEIGHT} {port} {target}"


def srv_data(value: str) -> dict[str, int | str]:
    """An SRV value ("0 1 587 mail.example.com") as Cloudflare takes it: the `data` of an SRV record."""
    priority, weight, port, target = value.split()
    return {"priority": int(priority), "weight": int(weight), "port": int(port), "target": target}


def srv_records(cfg: DomainConfig, host: HostFacts) -> list[Record]:
    """The RFC 6186/8314 SRV records: the host for what it offers, "." for what it does not (none if autoconfig off)."""
    if not cfg.autoconfig:
        return []
    records = []
    for label, port, what in CLIENT_SERVICES:
        reason = _REASONS["srv" if port else "srv-none"].format(what=what, port=port)
        key = "srv-" + label.split(".")[0].lstrip("_")
        records.append(Record(f"{label}.{cfg.domain}", "SRV", srv_value(port, host.hostname), reason, key=key))
    return records


def autoconfig_records(cfg: DomainConfig, host: HostFacts) -> list[Record]:
    """`autoconfig.<domain>` A/AAAA (the host's addresses), or none (see `publishes_autoconfig`)."""
    if not publishes_autoconfig(cfg, host):
        return []
    name = autoconfig_host(cfg.domain)
    records = [Record(name, "A", a, _REASONS["autoconfig-A"], key=f"autoconfig-a-{_key_part(a)}") for a in host.ipv4]
    records += [Record(name, "AAAA", a, _REASONS["autoconfig-AAAA"], key=f"autoconfig-aaaa-{_key_part(a)}")
                for a in host.ipv6]
    return records


def static_records(cfg: DomainConfig, host: HostFacts) -> list[Record]:
    """A domain's records except DKIM: MX, SPF, DMARC, TLS-RPT, MTA-STS, SRV and autoconfig.<domain>."""
    domain = cfg.domain
    records = [
        Record(domain, "MX", host.hostname, _REASONS["mx"], priority=MX_PRIORITY, key="mx"),
        Record(domain, "TXT", spf_value(host.ipv4, host.ipv6), _REASONS["spf"], key="spf"),
    ]
    dmarc_reason = _REASONS["dmarc"].format(policy=cfg.dmarc_policy)
    records.append(Record(f"_dmarc.{domain}", "TXT", dmarc_value(cfg), dmarc_reason, key="dmarc"))
    records.append(tls_rpt_record(cfg))
    records += mta_sts_records(cfg, host)
    records += srv_records(cfg, host)
    records += autoconfig_records(cfg, host)
    return records


def mail_records(cfg: DomainConfig, host: HostFacts, dkim_public_key: str) -> list[Record]:
    """MX, SPF, DKIM, DMARC, TLS-RPT and (when the host's TLS is trusted) MTA-STS of the domain."""
    records = static_records(cfg, host)
    dmarc_at = next(i for i, r in enumerate(records) if r.key == "dmarc")
    records.insert(dmarc_at, dkim_record(cfg, dkim_public_key))
    return records


# --- zone file ------------------------------------------------------------------------------


def _absolute(name: str) -> str:
    return name + "."


def _rdata(record: Record) -> str:
    if record.type == "TXT":
        return txt_content(record.content)
    if record.type == "MX":
        return f"{record.priority} {_absolute(record.content)}"
    if record.type in ("PTR", "CNAME", "NS"):
        return _absolute(record.content)
    if record.type == "SRV":
        priority, weight, port, target = record.content.split()
        return f"{priority} {weight} {port} {'.' if target == '.' else _absolute(target)}"
    return record.content


def zone_file(
    origin: str,
    records: Sequence[Record],
    *,
    ns_addresses: Sequence[str],
    about: str,
    serial: int = 1,
) -> str:
    """A zone file for the zone `origin` holding `records`, each preceded by its reason.

    Records outside the zone (PTRs live in reverse zones) are listed at the end as
    comments, for review. Cloudflare serves its own SOA and NS; the ones here are
    placeholders that make the file complete for `named-checkzone` and a lab name
    server: `ns1.<zone>` with addresses `ns_addresses` (e.g. the mail host's);
    `about` says whose records they are ("the mail domain example.com").
    The serial is fixed so that the file only changes when a record does.
    """
    origin_name = dns.name.from_text(origin)
    inside = [r for r in records if dns.name.from_text(r.name).is_subdomain(origin_name)]
    outside = [r for r in records if r not in inside]

    ns = f"ns1.{origin}"
    addresses = list(ns_addresses)
    if not addresses:
        raise ValueError(f"ns_addresses is empty (expected at least one address for {ns})")
    lines = [
        f"; Zone {origin}: {about}, generated by mailstack.",
        "; SOA and NS are placeholders: Cloudflare serves its own.",
        f"$ORIGIN {_absolute(origin)}",
        f"$TTL {ZONE_TTL}",
        f"@ IN SOA {_absolute(ns)} hostmaster.{_absolute(origin)} ({serial} 10800 3600 604800 {ZONE_TTL})",
        f"@ IN NS {_absolute(ns)}",
    ]
    for address in addresses:
        kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        lines.append(f"{_absolute(ns)} IN {kind} {address}")
    for record in inside:
        lines.append("")
        lines.append(f"; {' '.join(record.reason.split())}")
        lines.append(f"{_absolute(record.name)} IN {record.type} {_rdata(record)}")
    if outside:
        lines.append("")
        lines.append(f"; Outside {origin}: published in a reverse zone, or to be set at the hosting provider.")
        for record in outside:
            lines.append(f";   {_absolute(record.name)} IN {record.type} {_rdata(record)}")
    return "\n".join(lines) + "\n"
