"""components/records.py: the DNS records as data, table-driven."""

from __future__ import annotations

import base64
import dns.rdata
import dns.reversename
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components import records as rec
from components.config import load_config
from components.hostfacts import HostFacts


def host_config(**values):
    """A host stack's config: mail.example.com on 192.0.2.10 and 2001:db8::10."""
    base = {
        "hostname": "mail.example.com",
        "ipv4": ["192.0.2.10"],
        "ipv6": ["2001:db8::10"],
        "postmaster_address": "alice@example.com",
    }
    base.update(values)
    return load_config({f"mailstack:{k}": v for k, v in base.items() if v is not None})


def config(**values):
    """A domain stack's config: example.com on the host of stack host-mail."""
    base = {"domain": "example.com", "host_stack": "host-mail", "users": [{"name": "alice"}]}
    base.update(values)
    return load_config({f"mailstack:{k}": v for k, v in base.items() if v is not None})


def facts(hostname="mail.example.com", ipv4=("192.0.2.10",), ipv6=("2001:db8::10",)):
    """What a domain stack reads of its host stack (the host stack's outputs)."""
    return HostFacts(host_id="mailstack/host-mail", hostname=hostname, addresses=[*ipv4, *ipv6])


def dkim_key(bits: int = 2048) -> str:
    """A real RSA public key as the host's DKIM unit prints it (base64 DER SubjectPublicKeyInfo)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


@pytest.fixture(scope="module")
def key2048() -> str:
    return dkim_key(2048)


def parse_txt(content: str) -> list[bytes]:
    rdata = dns.rdata.from_text("IN", "TXT", content)
    return list(rdata.strings)


# --- TXT quoting and splitting ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("v=spf1 -all", '"v=spf1 -all"'),
        ("", '""'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("a" * 255, '"' + "a" * 255 + '"'),
        ("a" * 256, '"' + "a" * 255 + '" "a"'),
        ("a" * 510, '"' + "a" * 255 + '" "' + "a" * 255 + '"'),
        ("tab\there", r'"tab\009here"'),
    ],
)
def test_txt_content(value, expected):
    assert rec.txt_content(value) == expected
    assert b"".join(parse_txt(expected)) == value.encode()


@pytest.mark.parametrize("bits", [2048, 4096])
def test_txt_content_splits_a_real_dkim_record(bits):
    value = rec.dkim_value(config(), dkim_key(bits))
    content = rec.txt_content(value)

    chunks = parse_txt(content)
    assert len(chunks) == -(-len(value) // 255), content
    assert all(len(chunk) <= 255 for chunk in chunks), [len(c) for c in chunks]
    assert b"".join(chunks) == value.encode()
    # Exactly Cloudflare's stored form: quoted strings separated by one space.
    assert content == " ".join(f'"{chunk.decode()}"' for chunk in chunks)


def test_txt_content_splits_by_bytes_not_characters():
    value = "é" * 200  # 400 bytes in UTF-8
    chunks = parse_txt(rec.txt_content(value))
    assert [len(c) for c in chunks] == [255, 145]
    assert b"".join(chunks).decode("utf-8") == value


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ipv4", "ipv6", "expected"),
    [
        (["192.0.2.10"], [], "v=spf1 ip4:192.0.2.10 -all"),
        ([], ["2001:db8::10"], "v=spf1 ip6:2001:db8::10 -all"),
        (["192.0.2.10"], ["2001:db8::10"], "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"),
        (
            ["192.0.2.10", "198.51.100.7"],
            ["2001:DB8:0::10"],
            "v=spf1 ip4:192.0.2.10 ip4:198.51.100.7 ip6:2001:db8::10 -all",
        ),
    ],
)
def test_spf_value(ipv4, ipv6, expected):
    host = host_config(ipv4=ipv4 or None, ipv6=ipv6 or None)  # the config writes addresses canonically
    assert rec.spf_value(host.ipv4, host.ipv6) == expected
    # The host's HELO SPF and the domain's SPF (from the host stack's addresses): the same value.
    helo = {r.key: r.content for r in rec.host_records(host)}["spf-helo"]
    spf = {r.key: r.content for r in rec.static_records(config(), facts(ipv4=host.ipv4, ipv6=host.ipv6))}["spf"]
    assert helo == spf == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"),
        ({"dmarc_policy": "reject"}, "v=DMARC1; p=reject; rua=mailto:postmaster@example.com"),
        (
            {"dmarc_policy": "none", "dmarc_rua": ["a@example.com", "B@Example.com"]},
            "v=DMARC1; p=none; rua=mailto:a@example.com,mailto:b@example.com",
        ),
    ],
)
def test_dmarc_value(values, expected):
    assert rec.dmarc_value(config(**values)) == expected


def test_dkim_value(key2048):
    assert rec.dkim_value(config(), key2048) == f"v=DKIM1; h=sha256; k=rsa; s=email; p={key2048}"
    # Line breaks and a trailing newline in the unit's stdout are not part of the key.
    wrapped = "\n".join(key2048[i : i + 64] for i in range(0, len(key2048), 64)) + "\n"
    assert rec.dkim_value(config(), wrapped) == rec.dkim_value(config(), key2048)


def test_dkim_public_key(key2048):
    assert rec.dkim_public_key(config(), key2048) == key2048
    wrapped = "\n".join(key2048[i : i + 64] for i in range(0, len(key2048), 64)) + "\n"
    assert rec.dkim_public_key(config(), wrapped) == key2048


NOT_BASE64_DER = (
    "DKIM public key for selector 'mail' is not base64 DER "
    "(expected the output of `openssl rsa -pubout -outform DER | base64 -w0`): "
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "DKIM public key for selector 'mail' is empty (expected base64 DER)"),
        ("  \n", "DKIM public key for selector 'mail' is empty (expected base64 DER)"),
        ("-----BEGIN PUBLIC KEY-----", NOT_BASE64_DER + "'-----BEGINPUBLICKEY-'..."),
        ("opendkim: not found", NOT_BASE64_DER + "'opendkim:notfound'..."),
        # Base64, but not DER (a PEM body's text, base64-encoded again).
        (base64.b64encode(b"MIIBIjANBgkq").decode(), NOT_BASE64_DER + "'TUlJQklqQU5CZ2tx'..."),
    ],
)
def test_dkim_public_key_rejects(text, message):
    with pytest.raises(ValueError) as err:
        rec.dkim_public_key(config(), text)
    assert str(err.value) == message


def test_dkim_value_rejects_an_empty_key():
    # p= with nothing would publish a revoked key (RFC 6376 3.6.1).
    with pytest.raises(ValueError) as err:
        rec.dkim_value(config(dkim_selector="s2026"), " \n")
    assert str(err.value) == "DKIM public key for selector 's2026' is empty (expected base64 DER)"


# --- record sets ------------------------------------------------------------------------------


def by_key(records):
    return {r.key: r for r in records}


def test_host_records_mail_example_com():
    records = by_key(rec.host_records(host_config()))
    table = {k: (r.name, r.type, r.content, r.priority) for k, r in records.items()}
    assert table == {
        "a-192-0-2-10": ("mail.example.com", "A", "192.0.2.10", None),
        "aaaa-2001-db8--10": ("mail.example.com", "AAAA", "2001:db8::10", None),
        "spf-helo": ("mail.example.com", "TXT", "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all", None),
    }
    assert list(records) == ["a-192-0-2-10", "aaaa-2001-db8--10", "spf-helo"]


def test_mail_records_example_com(key2048):
    records = by_key(rec.mail_records(config(), facts(), key2048))
    # A self-signed host: no MTA-STS; the SRV records (RFC 6186) all the same.
    assert list(records) == ["mx", "spf", "dkim", "dmarc", "tls-rpt", *SRV_KEYS]
    table = {k: (r.name, r.type, r.content, r.priority) for k, r in records.items() if k not in SRV_KEYS}
    assert table == {
        "mx": ("example.com", "MX", "mail.example.com", 10),
        "spf": ("example.com", "TXT", "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all", None),
        "dkim": ("mail._domainkey.example.com", "TXT", f"v=DKIM1; h=sha256; k=rsa; s=email; p={key2048}", None),
        "dmarc": ("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com", None),
        "tls-rpt": ("_smtp._tls.example.com", "TXT", "v=TLSRPTv1; rua=mailto:postmaster@example.com", None),
    }


SRV_KEYS = ["srv-submissions", "srv-submission", "srv-imaps", "srv-imap", "srv-pop3s", "srv-pop3"]


# --- MTA-STS and TLS-RPT ------------------------------------------------------------------------

ACME = HostFacts(host_id="mailstack/host-mail", hostname="mail.example.com",
                 addresses=["192.0.2.10", "2001:db8::10"], tls="acme")


def test_the_policy_is_rfc_8461s_key_value_lines_with_lf():
    assert rec.domain_mta_sts_policy(config(), ACME) == (
        "version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 604800\n")
    policy = rec.domain_mta_sts_policy(config(mta_sts_mode="enforce", mta_sts_max_age=86400), ACME)
    assert policy == "version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n"
    assert "\r" not in policy


def test_the_id_changes_exactly_when_the_policy_does():
    variants = [config(), config(mta_sts_mode="enforce"), config(mta_sts_max_age=86400)]
    hosts = [ACME, HostFacts("mailstack/host-mail", "mx.example.com", ACME.addresses, tls="acme")]
    policies = {rec.domain_mta_sts_policy(c, h) for c in variants for h in hosts}
    ids = {rec.mta_sts_id(p) for p in policies}
    assert len(policies) == len(ids) == 6
    # What does not change the policy does not change the id: other addresses, users, TLS-RPT, DMARC.
    same = [config(users=[{"name": "bob"}], tls_rpt_rua=["tls@example.com"], dmarc_policy="reject")]
    other_addresses = HostFacts("mailstack/host-mail", "mail.example.com", ["192.0.2.99"], tls="acme")
    for c, h in [(same[0], ACME), (config(), other_addresses)]:
        assert rec.mta_sts_id(rec.domain_mta_sts_policy(c, h)) == rec.mta_sts_id(rec.domain_mta_sts_policy(config(), ACME))
    for i in ids:  # RFC 8461 3.1: 1 to 32 letters and digits
        assert len(i) == 20 and i.isalnum()


def test_on_an_acme_host_the_domain_publishes_mta_sts():
    records = by_key(r for r in rec.mail_records(config(), ACME, "MA==")
                     if r.type != "SRV" and not r.key.startswith("autoconfig-"))
    policy = rec.domain_mta_sts_policy(config(), ACME)
    assert list(records)[-4:] == ["tls-rpt", "mta-sts", "mta-sts-a-192-0-2-10", "mta-sts-aaaa-2001-db8--10"]
    assert (records["mta-sts"].name, records["mta-sts"].content) == (
        "_mta-sts.example.com", f"v=STSv1; id={rec.mta_sts_id(policy)}")
    assert [(r.name, r.type, r.content) for k, r in records.items() if k.startswith("mta-sts-")] == [
        ("mta-sts.example.com", "A", "192.0.2.10"), ("mta-sts.example.com", "AAAA", "2001:db8::10")]
    assert all(len(r.reason) <= 100 for r in records.values())


@pytest.mark.parametrize(("host", "settings"), [
    (facts(), {}),  # self-signed (the default): senders could not authenticate the MX
    (HostFacts("mailstack/host-mail", "mail.example.com", ["192.0.2.10"], tls="files"), {}),
    (ACME, {"mta_sts_mode": "none"}),
])
def test_no_mta_sts_without_acme_or_with_mode_none_but_tls_rpt_always(host, settings):
    keys = [r.key for r in rec.mail_records(config(**settings), host, "MA==")]
    assert "tls-rpt" in keys and not [k for k in keys if k.startswith("mta-sts")]


def test_tls_rpt_reports_go_to_the_configured_addresses():
    assert rec.tls_rpt_value(config(tls_rpt_rua=["tls@example.com", "NOC@Example.net"])) == (
        "v=TLSRPTv1; rua=mailto:tls@example.com,mailto:noc@example.net")


def test_a_domain_record_never_names_the_host():
    # The host's names belong to the host stack: two domain stacks on one host
    # would otherwise both publish its A/AAAA (Cloudflare refuses a duplicate).
    for cfg in (config(), config(domain="example.org")):
        assert {r.name for r in rec.static_records(cfg, facts())}.isdisjoint({"mail.example.com"})


@pytest.mark.parametrize(
    ("values", "expected_keys"),
    [
        ({"ipv6": None}, ["a-192-0-2-10", "spf-helo"]),
        ({"ipv4": None}, ["aaaa-2001-db8--10", "spf-helo"]),
        ({"ipv4": ["192.0.2.10", "192.0.2.11"], "ipv6": None}, ["a-192-0-2-10", "a-192-0-2-11", "spf-helo"]),
    ],
)
def test_host_records_keys(values, expected_keys):
    assert [r.key for r in rec.host_records(host_config(**values))] == expected_keys


@pytest.mark.parametrize(
    ("host", "expected_spf"),
    [
        (facts(ipv6=()), "v=spf1 ip4:192.0.2.10 -all"),
        (facts(ipv4=()), "v=spf1 ip6:2001:db8::10 -all"),
        (facts(ipv4=("192.0.2.10", "192.0.2.11"), ipv6=()), "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 -all"),
    ],
)
def test_mail_records_keys(host, expected_spf, key2048):
    records = rec.mail_records(config(), host, key2048)
    assert [r.key for r in records] == ["mx", "spf", "dkim", "dmarc", "tls-rpt", *SRV_KEYS]
    assert by_key(records)["spf"].content == expected_spf


@pytest.mark.parametrize("hostname", ["mail.example.com", "mx.example.com", "smtp.mail.example.net"])
def test_mx_points_at_host_with_priority_10(hostname, key2048):
    host = facts(hostname=hostname)
    mx = [r for r in rec.mail_records(config(), host, key2048) if r.type == "MX"]
    assert [(r.name, r.content, r.priority) for r in mx] == [("example.com", hostname, 10)]
    # The MX target has the host's addresses: the host stack publishes them at that name.
    records = rec.host_records(host_config(hostname=hostname))
    addresses = {r.content for r in records if r.type in ("A", "AAAA") and r.name == hostname}
    assert addresses == set(host.addresses)


def test_dkim_record_name_uses_selector(key2048):
    records = by_key(rec.mail_records(config(domain="example.net", dkim_selector="s2026"), facts(), key2048))
    assert records["dkim"].name == "s2026._domainkey.example.net"
    assert rec.dkim_name(config(domain="example.net", dkim_selector="s2026")) == "s2026._domainkey.example.net"


def test_static_records_are_mail_records_without_dkim(key2048):
    cfg = config()
    assert rec.static_records(cfg, facts()) == [r for r in rec.mail_records(cfg, facts(), key2048) if r.key != "dkim"]


@pytest.mark.parametrize(
    ("domain_values", "host_values"),
    [
        ({}, {}),
        (
            {"domain": "example.org", "dmarc_policy": "reject"},
            {"hostname": "example.com", "postmaster_address": "alice@example.org"},
        ),
        (
            {},
            {
                "ipv4": ["192.0.2.10", "192.0.2.11"],
                "ipv6": ["2001:db8::10", "2001:db8::11"],
                "reverse_zones": ["2.0.192.in-addr.arpa"],
            },
        ),
        (
            {"domain": "a-rather-long-mail-domain-name.example"},
            {"hostname": "outbound-mail-relay.a-rather-long-mail-domain-name.example"},
        ),
    ],
)
def test_records_are_well_formed(domain_values, host_values, key2048):
    host = host_config(**host_values)
    facts_of_host = HostFacts(host_id="mailstack/host-mail", hostname=host.host_name, addresses=host.addresses)
    for records in (
        rec.mail_records(config(**domain_values), facts_of_host, key2048),
        rec.host_records(host) + rec.ptr_records(host),
    ):
        keys = [r.key for r in records]
        assert len(keys) == len(set(keys)), keys
        for r in records:
            assert r.key, r
            assert r.reason.strip() and "\n" not in r.reason, r
            # Cloudflare keeps 100 characters of comment on Free zones: reasons fit whole.
            assert len(r.reason) <= 100, (r.key, len(r.reason))
            assert r.name == r.name.lower() and not r.name.endswith("."), r
            assert (r.priority is not None) == (r.type == "MX"), r


# --- PTR and reverse zones --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.0.2.10", "10.2.0.192.in-addr.arpa"),
        ("198.51.100.7", "7.100.51.198.in-addr.arpa"),
        ("2001:db8::10", "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
        ("2001:db8:0:0:0:0:0:abcd", "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
    ],
)
def test_ptr_name(address, expected):
    assert rec.ptr_name(address) == expected
    assert rec.ptr_name(address) == dns.reversename.from_address(address).to_text(omit_final_dot=True)


def test_ptr_records():
    cfg = host_config(hostname="mx.example.com", ipv4=["192.0.2.10"], ipv6=["2001:db8::10"])
    table = [(r.key, r.name, r.type, r.content) for r in rec.ptr_records(cfg)]
    assert table == [
        ("ptr-192-0-2-10", str(dns.reversename.from_address("192.0.2.10")).rstrip("."), "PTR", "mx.example.com"),
        ("ptr-2001-db8--10", str(dns.reversename.from_address("2001:db8::10")).rstrip("."), "PTR", "mx.example.com"),
    ]


@pytest.mark.parametrize(
    ("zones", "address", "expected"),
    [
        ([], "192.0.2.10", None),
        (["2.0.192.in-addr.arpa"], "192.0.2.10", "2.0.192.in-addr.arpa"),
        (["2.0.192.in-addr.arpa"], "192.0.3.10", None),
        # Label boundaries, not string suffixes: 12.0.192 is not inside 2.0.192.
        (["2.0.192.in-addr.arpa"], "192.0.12.10", None),
        (["0.192.in-addr.arpa", "2.0.192.in-addr.arpa"], "192.0.2.10", "2.0.192.in-addr.arpa"),
        (["2.0.192.in-addr.arpa", "0.192.in-addr.arpa"], "192.0.7.1", "0.192.in-addr.arpa"),
        (["2.0.192.in-addr.arpa"], "2001:db8::10", None),
        (["8.b.d.0.1.0.0.2.ip6.arpa"], "2001:db8::10", "8.b.d.0.1.0.0.2.ip6.arpa"),
        (["8.b.d.0.1.0.0.2.ip6.arpa"], "2001:db9::10", None),
        (["2.0.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"], "192.0.2.20", "2.0.192.in-addr.arpa"),
    ],
)
def test_reverse_zone_for(zones, address, expected):
    assert rec.reverse_zone_for(host_config(reverse_zones=zones), address) == expected


# --- zone file --------------------------------------------------------------------------------


def test_zone_file_has_reasons_and_records(key2048):
    records = rec.mail_records(config(), facts(), key2048)
    text = rec.zone_file("example.com", records, ns_addresses=["192.0.2.10"], about="the mail domain example.com")
    lines = text.splitlines()
    assert lines[0] == "; Zone example.com: the mail domain example.com, generated by mailstack."
    assert "$ORIGIN example.com." in lines and "$TTL 300" in lines
    assert "example.com. IN MX 10 mail.example.com." in lines
    assert '_dmarc.example.com. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"' in lines
    for r in records:
        assert f"; {r.reason}" in lines


def test_zone_file_lists_records_outside_the_zone_as_comments():
    cfg = host_config(reverse_zones=["2.0.192.in-addr.arpa"])
    text = rec.zone_file(
        "example.com", rec.host_records(cfg) + rec.ptr_records(cfg), ns_addresses=cfg.addresses, about="the host"
    )
    lines = text.splitlines()
    assert "mail.example.com. IN A 192.0.2.10" in lines
    assert lines[-3:] == [
        "; Outside example.com: published in a reverse zone, or to be set at the hosting provider.",
        ";   10.2.0.192.in-addr.arpa. IN PTR mail.example.com.",
        f";   {rec.ptr_name('2001:db8::10')}. IN PTR mail.example.com.",
    ]
    assert not any(line.startswith("10.2.0.192") for line in lines)


def test_zone_file_nameserver_addresses():
    lines = rec.zone_file("example.com", [], ns_addresses=["198.51.100.53"], about="x").splitlines()
    assert "@ IN NS ns1.example.com." in lines
    assert [line for line in lines if line.startswith("ns1.")] == ["ns1.example.com. IN A 198.51.100.53"]
    with pytest.raises(ValueError) as err:
        rec.zone_file("example.com", [], ns_addresses=[], about="x")
    assert str(err.value) == "ns_addresses is empty (expected at least one address for ns1.example.com)"


# --- client autoconfiguration ---------------------------------------------------------------------


def test_srv_records_point_clients_at_the_host_and_say_what_is_not_offered():
    records = by_key(rec.srv_records(config(), facts()))
    assert {k: (r.name, r.type, r.content) for k, r in records.items()} == {
        "srv-submissions": ("_submissions._tcp.example.com", "SRV", "0 0 0 ."),  # 465 is not enabled
        "srv-submission": ("_submission._tcp.example.com", "SRV", "0 1 587 mail.example.com"),
        "srv-imaps": ("_imaps._tcp.example.com", "SRV", "0 1 993 mail.example.com"),
        "srv-imap": ("_imap._tcp.example.com", "SRV", "0 1 143 mail.example.com"),
        "srv-pop3s": ("_pop3s._tcp.example.com", "SRV", "0 0 0 ."),  # no POP3 server
        "srv-pop3": ("_pop3._tcp.example.com", "SRV", "0 0 0 ."),
    }
    assert all(len(r.reason) <= 100 for r in records.values())
    # Each value parses as an SRV record, and as Cloudflare's data.
    for r in records.values():
        dns.rdata.from_text("IN", "SRV", rec._rdata(r))
    assert rec.srv_data("0 1 587 mail.example.com") == {"priority": 0, "weight": 1, "port": 587,
                                                        "target": "mail.example.com"}


def test_autoconfig_false_publishes_no_srv_and_no_autoconfig_host():
    keys = [r.key for r in rec.mail_records(config(autoconfig=False), ACME, "MA==")]
    assert not [k for k in keys if k.startswith(("srv-", "autoconfig-"))]
    assert rec.autoconfig_records(config(autoconfig=False), ACME) == []


def test_autoconfig_host_only_on_an_acme_host():
    keys = [r.key for r in rec.mail_records(config(), ACME, "MA==")]
    assert keys[-2:] == ["autoconfig-a-192-0-2-10", "autoconfig-aaaa-2001-db8--10"]
    assert [(r.name, r.type, r.content) for r in rec.autoconfig_records(config(), ACME)] == [
        ("autoconfig.example.com", "A", "192.0.2.10"), ("autoconfig.example.com", "AAAA", "2001:db8::10")]
    assert rec.autoconfig_records(config(), facts()) == []  # self-signed: clients would refuse the certificate


def test_the_zone_file_writes_srv_targets_absolute():
    zone = rec.zone_file("example.com", rec.srv_records(config(), facts()), ns_addresses=["192.0.2.10"],
                         about="test")
    assert "_submission._tcp.example.com. IN SRV 0 1 587 mail.example.com." in zone
    assert "_pop3._tcp.example.com. IN SRV 0 0 0 ." in zone


def test_autoconfig_is_a_boolean():
    with pytest.raises(Exception, match="mailstack:autoconfig"):
        config(autoconfig="maybe")
