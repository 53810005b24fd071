"""The config model: two kinds of stack, defaults are the guide's, bad input names the key, the value and the form."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config import (
    FORMS,
    Alias,
    ConfigError,
    DomainConfig,
    HostConfig,
    User,
    load_config,
)
from components.stackfile import load_stack_or_report

PROJECT_DIR = Path(__file__).resolve().parents[2]
HOST = {
    "mailstack:hostname": "mail.example.net",
    "mailstack:ipv4": ["192.0.2.10"],
    "mailstack:postmaster_address": "alice@example.com",
}
DOMAIN = {"mailstack:domain": "example.com", "mailstack:host_stack": "host-mail", "mailstack:users": [{"name": "alice"}]}


def _with(base, overrides):
    values = dict(base)
    values.update({f"mailstack:{k}": v for k, v in overrides.items()})
    return load_config(values)


def host(**overrides) -> HostConfig:
    return _with(HOST, overrides)


def domain(**overrides) -> DomainConfig:
    return _with(DOMAIN, overrides)


# --- the two kinds of stack -------------------------------------------------------------------


def test_a_stack_with_a_hostname_is_the_host_stack():
    cfg = host()
    assert isinstance(cfg, HostConfig)
    assert (cfg.host_name, cfg.zone_name, cfg.connect_host) == ("mail.example.net", "example.net", "mail.example.net")
    assert cfg.postmaster_address == "alice@example.com"


def test_a_stack_with_a_domain_is_a_domain_stack():
    cfg = domain()
    assert isinstance(cfg, DomainConfig)
    assert (cfg.domain, cfg.host_stack, cfg.zone_name) == ("example.com", "host-mail", "example.com")
    assert cfg.mailbox_of(cfg.users[0]) == "alice@example.com"


def test_a_stack_with_neither_names_both_keys():
    message = (
        "mailstack:domain: is not set, and neither is mailstack:hostname (expected mailstack:domain in the stack "
        "of a mail domain, e.g. example.com, or mailstack:hostname in the host stack, e.g. mail.example.net)"
    )
    for values in ({}, {"mailstack:ipv4": ["192.0.2.10"]}, {"mailstack:domain": "", "mailstack:hostname": ""}):
        with pytest.raises(ConfigError) as err:
            load_config(values)
        assert err.value.problems == [message]


HOST_KEYS_IN_A_DOMAIN_STACK = [
    ("hostname", "mail.example.com"), ("ipv4", ["192.0.2.10"]), ("ssh_host", "192.0.2.10"), ("soft_bounce", False),
    ("message_size_limit", 50000000), ("postmaster_address", "alice@example.com"), ("vmail_uid", 6000),
    ("notify_classes", ["bounce"]), ("reverse_zones", ["2.0.192.in-addr.arpa"]),
]
DOMAIN_KEYS_IN_THE_HOST_STACK = [
    ("users", [{"name": "alice"}]), ("host_stack", "host-mail"), ("dkim_selector", "s2026"), ("dkim_bits", 4096),
    ("dmarc_policy", "reject"), ("dmarc_rua", ["dmarc@example.com"]), ("postmaster", "alice"),
    ("aliases", [{"address": "team@example.com", "to": ["alice@example.com"]}]), ("catch_all", "alice"),
]


@pytest.mark.parametrize("key,value", HOST_KEYS_IN_A_DOMAIN_STACK, ids=[k for k, _ in HOST_KEYS_IN_A_DOMAIN_STACK])
def test_a_host_key_in_a_domain_stack_says_where_it_belongs(key, value):
    with pytest.raises(ConfigError) as err:
        domain(**{key: value})
    assert err.value.problems == [
        f"mailstack:{key}: is a host-stack key; set it in the host stack (mailstack:host_stack names it)"
    ]


@pytest.mark.parametrize("key,value", DOMAIN_KEYS_IN_THE_HOST_STACK, ids=[k for k, _ in DOMAIN_KEYS_IN_THE_HOST_STACK])
def test_a_domain_key_in_the_host_stack_says_where_it_belongs(key, value):
    with pytest.raises(ConfigError) as err:
        host(**{key: value})
    assert err.value.problems == [
        f"mailstack:{key}: is a domain-stack key; set it in the stack of its domain "
        "(the stack with mailstack:domain and mailstack:host_stack)"
    ]


def _engine_text(value):
    """A Pulumi.yaml default as the engine hands it to the program."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_every_declared_default_of_the_other_kind_is_no_key_set():
    """The engine sends every default Pulumi.yaml declares, to both kinds of stack, as text."""
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    defaults = {f"mailstack:{k}": _engine_text(spec["default"]) for k, spec in declared.items()}
    assert load_config({**defaults, **HOST}) == host()
    assert load_config({**defaults, **DOMAIN}) == domain()


def test_values_as_pulumi_hands_them_over():
    """Pulumi passes every value as a string, structured ones as JSON."""
    cfg = load_config(
        {
            "mailstack:hostname": "Mail.Example.NET.",
            "mailstack:ipv4": '["192.0.2.10"]',
            "mailstack:ipv6": '["2001:DB8::10"]',
            "mailstack:message_size_limit": "30000000",
            "mailstack:soft_bounce": "false",
            "mailstack:vmail_uid": "6000",
            "mailstack:unknown_client_reject_code": "550",
            "mailstack:postmaster_address": "Alice@Example.com",
            "cloudflare:apiToken": "ignored: another namespace",
        }
    )
    assert (cfg.host_name, cfg.ipv6, cfg.postmaster_address) == ("mail.example.net", ["2001:db8::10"], "alice@example.com")
    assert (cfg.message_size_limit, cfg.soft_bounce, cfg.vmail_uid) == (30000000, False, 6000)
    assert cfg.unknown_client_reject_code == 550
    assert cfg.inet_protocols == "all"
    cfg = load_config(
        {
            "mailstack:domain": "Example.COM.",
            "mailstack:host_stack": "organization/mailstack/host-mail",
            "mailstack:dkim_bits": "3072",
            "mailstack:users": '[{"name": "alice", "addresses": ["Alice@Example.com"]}]',
            "mailstack:aliases": '[{"address": "Team@example.com", "to": ["alice@example.com"]}]',
        }
    )
    assert (cfg.domain, cfg.dkim_bits, cfg.addresses_of(cfg.users[0])) == ("example.com", 3072, ["alice@example.com"])
    assert cfg.aliases == [Alias(address="team@example.com", to=["alice@example.com"])]


# --- the host stack ---------------------------------------------------------------------------------


def test_host_defaults_are_the_guides_values():
    cfg = host()
    assert cfg.smtpd_banner == "$myhostname ESMTP $mail_name"
    assert cfg.message_size_limit == 25000000
    assert (cfg.smtpd_error_sleep_time, cfg.smtpd_soft_error_limit, cfg.smtpd_hard_error_limit) == ("8s", 1, 3)
    assert cfg.soft_bounce is True
    assert cfg.testing is False  # the policy pack then refuses soft_bounce: a stack must choose
    assert cfg.notify_classes == ["bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software"]
    assert cfg.policyd_spf_time_limit == 3600
    assert cfg.unknown_client_reject_code == 450
    assert cfg.smtpd_tls_cert_file == "/etc/ssl/private/postfix.cacert.pem"
    assert cfg.smtpd_tls_key_file == "/etc/ssl/private/postfix.privkey.pem"
    assert cfg.listen_addresses == ["192.0.2.10", "127.0.0.1"]
    assert cfg.inet_protocols == "ipv4"
    assert (cfg.ssh_port, cfg.ssh_user, cfg.vmail_uid) == (22, "root", 5000)


def test_the_hosts_zone_is_its_name_minus_the_first_label():
    assert host(hostname="mx1.mail.example.net").zone_name == "mail.example.net"
    assert host(hostname="mx1.mail.example.net", cloudflare_zone_name="example.net").zone_name == "example.net"
    assert host(hostname="example.net").zone_name == "example.net"  # a zone of its own, never a TLD


def test_the_hostname_need_not_lie_in_a_hosted_domain():
    cfg = host(hostname="mx.provider.example", postmaster_address="alice@example.com")
    assert (cfg.host_name, cfg.zone_name) == ("mx.provider.example", "provider.example")


def test_offline_stack_file_secure_values_count_as_unset():
    cfg = host(ssh_private_key={"secure": "v1:abc"})
    assert cfg.ssh_private_key is None
    cfg = domain(users=[{"name": "bob", "password_hash": {"secure": "v1:x"}}])
    assert cfg.users[0].password_hash is None


def test_the_host_stack_needs_a_postmaster_address():
    values = {k: v for k, v in HOST.items() if k != "mailstack:postmaster_address"}
    for missing in (values, {**values, "mailstack:postmaster_address": ""}):
        with pytest.raises(ConfigError) as err:
            load_config(missing)
        assert err.value.problems == [
            "mailstack:postmaster_address: is required (expected an e-mail address, e.g. alice@example.com)"
        ]


BAD_HOST = [
    ({"hostname": "mail"}, "mailstack:hostname: 'mail' is not a fully-qualified domain name (expected e.g. mail.example.com)"),
    ({"hostname": "mail_1.example.com"}, "mailstack:hostname: 'mail_1.example.com' is not a fully-qualified domain name (expected e.g. mail.example.com)"),
    ({"ipv4": ["192.0.2.300"]}, "mailstack:ipv4[0]: '192.0.2.300' is not a valid IPv4 address (expected e.g. 192.0.2.10)"),
    ({"cloudflare_zone_name": "example.com"}, "mailstack:cloudflare_zone_name: 'example.com' does not contain mail.example.net (its A/AAAA records go in that zone)"),
    ({"ipv4": ["2001:db8::1"]}, "mailstack:ipv4[0]: '2001:db8::1' is not an IPv4 address (expected e.g. 192.0.2.10)"),
    ({"ipv4": "192.0.2.10"}, "mailstack:ipv4: '192.0.2.10' is not a list of IPv4 addresses (expected e.g. [192.0.2.10])"),
    ({"ipv6": ["2001:db8::g"]}, "mailstack:ipv6[0]: '2001:db8::g' is not a valid IPv6 address (expected e.g. 2001:db8::10)"),
    ({"ipv4": ["127.0.0.1"]}, "mailstack:ipv4[0]: '127.0.0.1' cannot receive mail from other hosts (expected a routable IPv4 address)"),
    ({"ipv4": []}, "mailstack:ipv4: is empty and so is mailstack:ipv6 (expected at least one address of the host)"),
    ({"inet_interfaces": ["eth0"]}, "mailstack:inet_interfaces[0]: 'eth0' is not an IP address (expected e.g. 192.0.2.10, or 'all')"),
    # Python's ipaddress takes any text after '%' as an IPv6 zone: it would reach main.cf.
    ({"inet_interfaces": ["2001:db8::10%x"]}, "mailstack:inet_interfaces[0]: '2001:db8::10%x' has a zone index ('%...'), which is not allowed here (expected e.g. 192.0.2.10, or 'all')"),
    ({"ipv6": ["2001:db8::10%eth0"]}, "mailstack:ipv6[0]: '2001:db8::10%eth0' has a zone index ('%...'), which is not allowed here (expected e.g. 2001:db8::10)"),
    ({"ssh_host": "2001:db8::10%eth0"}, "mailstack:ssh_host: '2001:db8::10%eth0' has a zone index ('%...'), which is not allowed here (expected e.g. 192.0.2.10)"),
    ({"message_size_limit": 0}, "mailstack:message_size_limit: 0 is not allowed: the guide forbids 0 (unlimited) (expected bytes, e.g. 25000000)"),
    ({"message_size_limit": "big"}, "mailstack:message_size_limit: 'big' is not a number of bytes (expected e.g. 25000000)"),
    ({"message_size_limit": "25MB"}, "mailstack:message_size_limit: '25MB' is not a number of bytes (expected e.g. 25000000)"),
    ({"message_size_limit": 2.5}, "mailstack:message_size_limit: 2.5 is not a number of bytes (expected e.g. 25000000)"),
    ({"message_size_limit": True}, "mailstack:message_size_limit: true is not a number of bytes (expected e.g. 25000000)"),
    ({"message_size_limit": 2**40}, "mailstack:message_size_limit: 1099511627776 is more than 2147483647 (expected a number of bytes, e.g. 25000000)"),
    ({"smtpd_error_sleep_time": "8 seconds"}, "mailstack:smtpd_error_sleep_time: '8 seconds' is not a Postfix time (expected e.g. 8s)"),
    ({"smtpd_error_sleep_time": "8s\n"}, "mailstack:smtpd_error_sleep_time: '8s\\n' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"smtpd_error_sleep_time": "9999999999w"}, "mailstack:smtpd_error_sleep_time: '9999999999w' is longer than Postfix can count (expected e.g. 8s)"),
    ({"smtpd_hard_error_limit": 1, "smtpd_soft_error_limit": 2}, "mailstack:smtpd_hard_error_limit: 1 is below smtpd_soft_error_limit (2)"),
    ({"smtpd_soft_error_limit": -1}, "mailstack:smtpd_soft_error_limit: -1 is less than 0 (expected a number of errors, e.g. 1)"),
    ({"smtpd_banner": "$myhostname ESMTP Postfix (Debian/GNU)\nX"}, "mailstack:smtpd_banner: '$myhostname ESMTP Postfix (Debian/GNU)\\nX' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"smtpd_banner": "$myhostname ESMTP\rrelayhost = [198.51.100.66]"}, "mailstack:smtpd_banner: '$myhostname ESMTP\\rrelayhost = [198.51.100.66]' contains the control character U+000D (expected printable ASCII on one line)"),
    ({"smtpd_banner": "ESMTP $myhostname"}, "mailstack:smtpd_banner: 'ESMTP $myhostname' does not start with $myhostname (RFC 5321 requires the host name first)"),
    ({"smtpd_banner": "$myhostname $(touch /tmp/x)"}, "mailstack:smtpd_banner: '$myhostname $(touch /tmp/x)' has a '$' that is not a Postfix parameter (expected $name or ${name}, e.g. $myhostname ESMTP $mail_name)"),
    ({"smtpd_banner": "$myhostname ESMTP $mail_name $mail_version"}, "mailstack:smtpd_banner: '$myhostname ESMTP $mail_name $mail_version' shows Postfix's version (the guide: the banner shows no version)"),
    ({"smtpd_banner": "$myhostname ESMTP $relayhost"}, "mailstack:smtpd_banner: '$myhostname ESMTP $relayhost' refers to $relayhost, which a banner does not show (expected some of: $myhostname, $mydomain, $myorigin, $mail_name)"),
    ({"smtpd_banner": "$myhostname ESMTP "}, "mailstack:smtpd_banner: '$myhostname ESMTP ' ends with a space, which main.cf would drop (expected e.g. $myhostname ESMTP $mail_name)"),
    ({"notify_classes": ["bounce", "everything"]}, "mailstack:notify_classes[1]: 'everything' is not a notify class (expected some of: bounce, 2bounce, data, delay, policy, protocol, resource, software)"),
    ({"notify_classes": "bounce"}, "mailstack:notify_classes: 'bounce' is not a list of notify classes (expected e.g. [bounce, 2bounce, delay])"),
    ({"smtpd_tls_key_file": "key.pem"}, "mailstack:smtpd_tls_key_file: 'key.pem' is not an absolute file path (expected e.g. /etc/ssl/private/postfix.pem, with letters, digits, '.', '_' and '-' between single slashes)"),
    ({"smtpd_tls_key_file": "/etc/ssl/.."}, "mailstack:smtpd_tls_key_file: '/etc/ssl/..' is not an absolute file path (expected e.g. /etc/ssl/private/postfix.pem, with letters, digits, '.', '_' and '-' between single slashes)"),
    ({"smtpd_tls_cert_file": "/etc/ssl/x.pem\n"}, "mailstack:smtpd_tls_cert_file: '/etc/ssl/x.pem\\n' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"ssh_port": 0}, "mailstack:ssh_port: 0 is less than 1 (expected a TCP port, e.g. 22)"),
    ({"ssh_port": "ssh"}, "mailstack:ssh_port: 'ssh' is not a TCP port (expected e.g. 22)"),
    ({"ssh_user": "root\n"}, "mailstack:ssh_user: 'root\\n' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"soft_bounce": "maybe"}, "mailstack:soft_bounce: 'maybe' is not true or false (expected e.g. true)"),
    ({"unknown_client_reject_code": 554}, "mailstack:unknown_client_reject_code: 554 is not one of 450, 550 (expected e.g. 450)"),
    ({"unknown_client_reject_code": "5xx"}, "mailstack:unknown_client_reject_code: '5xx' is not one of 450, 550 (expected e.g. 450)"),
    ({"reverse_zones": ["example.com"]}, "mailstack:reverse_zones[0]: 'example.com' is not a reverse zone (expected e.g. 2.0.192.in-addr.arpa)"),
    ({"cloudflare_zone_id": "my-zone"}, "mailstack:cloudflare_zone_id: 'my-zone' is not a Cloudflare zone id (expected 32 hex digits, from the zone's overview page)"),
    ({"reverse_zones": ["100.51.198.in-addr.arpa"]}, "mailstack:reverse_zones[0]: '100.51.198.in-addr.arpa' holds none of the host's addresses (expected the zone of 192.0.2.10)"),
    ({"inet_interfaces": ["192.0.2.10", "2001:db8::10"]}, "mailstack:inet_interfaces[1]: '2001:db8::10' is IPv6 but mailstack:ipv6 is empty (Postfix would run IPv4 only)"),
    ({"opendkim_nameservers": ["ns1.example.com"]}, "mailstack:opendkim_nameservers[0]: 'ns1.example.com' is not an IP address (expected e.g. 192.0.2.53)"),
    ({"hostnmae": "mail.example.net"}, "mailstack:hostnmae: is not a known key (did you mean mailstack:hostname?)"),
    ({"frobnicate": 1}, "mailstack:frobnicate: is not a known key (see the config table in README.md)"),
    ({"ssh_private_key": "not a key"}, "mailstack:ssh_private_key: is not a private key in PEM form (expected the whole file, from -----BEGIN OPENSSH PRIVATE KEY----- to the END line, e.g. `pulumi config set --secret ssh_private_key < ~/.ssh/id_ed25519`)"),
    ({"ssh_host_key": "ssh-ed25519 AAAA\nrelay"}, "mailstack:ssh_host_key: is not an SSH public key (expected one line like ssh-ed25519 AAAAC3Nza..., e.g. from `ssh-keyscan -t ed25519 HOST`)"),
    ({"postmaster_address": "alice"}, "mailstack:postmaster_address: 'alice' is not an e-mail address (expected e.g. alice@example.com)"),
    ({"postmaster_address": "root@mail.example.net"}, "mailstack:postmaster_address: 'root@mail.example.net' is at the host's own name, whose mail comes to this very address (expected a mailbox in a hosted domain, e.g. alice@example.com)"),
    ({"postmaster_address": "alice@example.com\nx"}, "mailstack:postmaster_address: 'alice@example.com\\nx' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"vmail_uid": 999}, "mailstack:vmail_uid: 999 is less than 1000 (expected a uid, e.g. 5000)"),
    ({"vmail_uid": 65534}, "mailstack:vmail_uid: 65534 is more than 60000 (expected a uid, e.g. 5000)"),
    ({"vmail_uid": "vmail"}, "mailstack:vmail_uid: 'vmail' is not a uid (expected e.g. 5000)"),
    ({"vmail_uid": True}, "mailstack:vmail_uid: true is not a uid (expected e.g. 5000)"),
    # Spam filtering: scores in rising order, each a whole number; a greylist delay rspamd can keep.
    ({"spam_reject_score": 3}, "mailstack:spam_header_score: 6 is not below spam_reject_score (3) (expected spam_greylist_score < spam_header_score < spam_reject_score)"),
    ({"spam_greylist_score": 10}, "mailstack:spam_greylist_score: 10 is not below spam_header_score (6) (expected spam_greylist_score < spam_header_score < spam_reject_score)"),
    ({"spam_header_score": 15}, "mailstack:spam_header_score: 15 is not below spam_reject_score (15) (expected spam_greylist_score < spam_header_score < spam_reject_score)"),
    ({"spam_reject_score": "lots"}, "mailstack:spam_reject_score: 'lots' is not a whole number from 1 to 1000 (expected e.g. 15)"),
    ({"spam_reject_score": 7.5}, "mailstack:spam_reject_score: 7.5 is not a whole number from 1 to 1000 (expected e.g. 15)"),
    ({"spam_reject_score": -1}, "mailstack:spam_reject_score: -1 is less than 1 (expected a whole number from 1 to 1000, e.g. 15)"),
    ({"spam_header_score": True}, "mailstack:spam_header_score: true is not a whole number from 1 to 1000 (expected e.g. 6)"),
    ({"spam_filter": "maybe"}, "mailstack:spam_filter: 'maybe' is not true or false (expected e.g. true)"),
    ({"greylisting": "sometimes"}, "mailstack:greylisting: 'sometimes' is not true or false (expected e.g. true)"),
    ({"greylist_delay": "soon"}, "mailstack:greylist_delay: 'soon' is not a duration (expected a number with s, m, h or d, e.g. 5m)"),
    ({"greylist_delay": "0s"}, "mailstack:greylist_delay: '0s' is not a duration (expected a number with s, m, h or d, e.g. 5m)"),
    ({"greylist_delay": "2d"}, "mailstack:greylist_delay: '2d' is longer than a day (expected e.g. 5m)"),
    ({"spam_controller_password": 'pass"word123456'}, "mailstack:spam_controller_password: is not a password rspamd's config can hold (expected 12 to 128 printable ASCII characters without spaces, '\"', '\\' or '$', or a hash from `rspamadm pw`; set it with `pulumi config set --secret spam_controller_password`)"),
    ({"spam_controller_password": "short"}, "mailstack:spam_controller_password: is not a password rspamd's config can hold (expected 12 to 128 printable ASCII characters without spaces, '\"', '\\' or '$', or a hash from `rspamadm pw`; set it with `pulumi config set --secret spam_controller_password`)"),
]


def test_spam_filter_keys_defaults_and_accepted_values():
    cfg = host()
    assert (cfg.spam_filter, cfg.spam_reject_score, cfg.spam_header_score, cfg.spam_greylist_score) == (True, 15, 6, 4)
    assert (cfg.greylisting, cfg.greylist_delay, cfg.spam_controller_password) == (True, "5m", None)
    # As Pulumi hands them over: text. A delay in seconds is a number in YAML.
    cfg = host(spam_reject_score="20", spam_header_score="8", spam_greylist_score="5", greylist_delay=30,
               spam_controller_password="correct-horse-battery")
    assert (cfg.spam_reject_score, cfg.spam_header_score, cfg.spam_greylist_score, cfg.greylist_delay) == (20, 8, 5, "30")
    assert cfg.spam_controller_password.get_secret_value() == "correct-horse-battery"
    # A hash from `rspamadm pw` is taken as it is.
    hashed = "$2$yhz1gnbi8xubyo3kbdxssaycgi35nbj4$ky3kfgsfgrfs4x3cgtmdeqtyp3jbqc8zcpfe3atd6hmr8f5f1uey"
    assert host(spam_controller_password=hashed).spam_controller_password.get_secret_value() == hashed
    # Off: the order of the scores is still checked (they stay in the stack file).
    assert host(spam_filter=False).spam_filter is False


@pytest.mark.parametrize("overrides,message", BAD_HOST, ids=[m.split(":")[1] for _, m in BAD_HOST])
def test_bad_host_input_names_key_value_and_form(overrides, message):
    with pytest.raises(ConfigError) as err:
        host(**overrides)
    assert message in err.value.problems, err.value.problems


# --- a domain stack ---------------------------------------------------------------------------------


def test_domain_defaults_are_the_guides_values():
    cfg = domain()
    assert (cfg.dkim_selector, cfg.dkim_bits) == ("mail", 2048)
    assert (cfg.dmarc_policy, cfg.rua) == ("quarantine", ["postmaster@example.com"])
    assert (cfg.postmaster_user, cfg.catch_all, cfg.aliases) == ("alice", None, [])
    # MTA-STS starts in testing mode (RFC 8461: senders only report), for a week; TLS-RPT to postmaster@.
    assert (cfg.mta_sts_mode, cfg.mta_sts_max_age, cfg.tls_rpt) == ("testing", 604800, ["postmaster@example.com"])
    assert domain(tls_rpt_rua=["TLS@Example.com"]).tls_rpt == ["tls@example.com"]


def test_user_addresses_default_to_name_at_domain():
    cfg = domain(users=[{"name": "bob"}])
    assert cfg.addresses_of(cfg.users[0]) == ["bob@example.com"]
    assert cfg.postmaster_user == "bob"


def test_password_hash_is_kept_secret():
    cfg = domain(users=[{"name": "bob", "password_hash": "$6$salt$hash"}])
    assert "$6$salt$hash" not in repr(cfg)
    assert cfg.users[0].password_hash.get_secret_value() == "$6$salt$hash"


@pytest.mark.parametrize("value", ["host-mail", "Host_1.x", "organization/mailstack/host-mail"])
def test_the_host_stack_is_named_as_a_stack_reference_takes_it(value):
    assert domain(host_stack=value).host_stack == value


FILE_BACKEND = (
    "(expected e.g. host-mail, or organization/mailstack/host-mail: with the file backend the organization "
    'is "organization" and the project is "mailstack")'
)


@pytest.mark.parametrize(
    "value,message",
    [
        ("mailstack/host-mail", f"'mailstack/host-mail' is not a stack mailstack can reference {FILE_BACKEND}"),
        ("org/x", f"'org/x' is not a stack mailstack can reference {FILE_BACKEND}"),
        ("acme/mailstack/host-mail", f"'acme/mailstack/host-mail' is not a stack mailstack can reference {FILE_BACKEND}"),
        ("organization/other/host-mail", f"'organization/other/host-mail' is not a stack mailstack can reference {FILE_BACKEND}"),
        ("host mail", "'host mail' is not a Pulumi stack name (expected letters, digits, '_', '.' and '-', at most 100 characters, e.g. host-mail)"),
        ("organization/mailstack/", "'organization/mailstack/' is not a Pulumi stack name (expected letters, digits, '_', '.' and '-', at most 100 characters, e.g. host-mail)"),
        ("", "is required (expected the host stack's name, e.g. host-mail)"),
    ],
)
def test_a_host_stack_of_another_form_is_refused(value, message):
    with pytest.raises(ConfigError) as err:
        domain(host_stack=value)
    assert err.value.problems == [f"mailstack:host_stack: {message}"]


@pytest.mark.parametrize("name", ["alice", "alice.smith", "a_b-c", "9lives", "x" * 64, "root", "mail", "dovecot", "www-data"])
def test_a_mailbox_name_is_a_local_part(name):
    """System account names are fine: a mailbox is no Unix account any more."""
    cfg = domain(users=[{"name": name}])
    assert cfg.mailbox_of(cfg.users[0]) == f"{name}@example.com"


MAILBOX_NAME = (
    "is not a mailbox name (expected the local part of its address: lower-case letters, digits, '.', '_' or '-', "
    "starting with a letter or digit, single dots not at the end, at most 64 characters, e.g. alice or alice.smith)"
)


@pytest.mark.parametrize("name", ["Alice", ".alice", "alice.", "al..ice", "_alice", "-alice", "al+ice", "al@ice", "al ice", ""])
def test_a_name_that_is_no_local_part_is_refused(name):
    with pytest.raises(ConfigError) as err:
        domain(users=[{"name": name}])
    assert err.value.problems == [f"mailstack:users[0].name: {name!r} {MAILBOX_NAME}"]


def test_a_name_longer_than_a_local_part_is_refused():
    with pytest.raises(ConfigError) as err:
        domain(users=[{"name": "x" * 65}])
    assert err.value.problems == [f"mailstack:users[0].name: '{'x' * 60}...' (65 characters) {MAILBOX_NAME}"]


@pytest.mark.parametrize("name", ["postmaster", "mailer-daemon"])
def test_role_names_are_refused(name):
    with pytest.raises(ConfigError) as err:
        domain(users=[{"name": name}])
    assert err.value.problems == [
        f"mailstack:users[0].name: {name!r} is a role name the host routes itself (postmaster@ goes to "
        "mailstack:postmaster, bounces come from MAILER-DAEMON) (choose another name)"
    ]


def test_aliases_and_catch_all_are_kept():
    cfg = domain(
        users=[{"name": "alice"}, {"name": "carol", "addresses": ["carol@example.com", "c@example.com"]}],
        aliases=[
            {"address": "team@example.com", "to": ["alice@example.com", "c@example.com", "carol@example.org"]},
            {"address": "all@example.com", "to": ["team@example.com", "postmaster@example.com"]},
        ],
        catch_all="carol",
    )
    assert [a.address for a in cfg.aliases] == ["team@example.com", "all@example.com"]
    assert cfg.aliases[0].to == ["alice@example.com", "c@example.com", "carol@example.org"]
    assert cfg.catch_all == "carol"


TWO = [{"name": "alice"}, {"name": "carol", "addresses": ["carol@example.com", "c@example.com"]}]

BAD_DOMAIN = [
    ({"domain": " "}, "mailstack:domain: is empty (expected the mail domain, e.g. example.com)"),
    ({"domain": "localhost"}, "mailstack:domain: 'localhost' is not a fully-qualified domain name (expected e.g. example.com)"),
    ({"domain": "ex\\097mple.com"}, "mailstack:domain: 'ex\\\\097mple.com' is not a fully-qualified domain name (expected e.g. example.com)"),
    ({"domain": "exаmple.com"}, "mailstack:domain: 'exаmple.com' contains the non-ASCII character 'а' (U+0430 CYRILLIC SMALL LETTER A) (expected printable ASCII on one line)"),
    ({"domain": "example.com\n"}, "mailstack:domain: 'example.com\\n' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"domain": 2024}, "mailstack:domain: 2024 is not a domain name (expected e.g. example.com)"),
    ({"dkim_selector": "mail.2026"}, "mailstack:dkim_selector: 'mail.2026' is not a valid DKIM selector (expected one DNS label: lower-case letters, digits and '-', e.g. mail or s2026)"),
    ({"dkim_selector": "-mail"}, "mailstack:dkim_selector: '-mail' is not a valid DKIM selector (expected one DNS label: lower-case letters, digits and '-', e.g. mail or s2026)"),
    ({"dkim_bits": 1024}, "mailstack:dkim_bits: 1024 is not one of 2048, 3072, 4096 (expected e.g. 2048)"),
    ({"dmarc_policy": "block"}, "mailstack:dmarc_policy: 'block' is not one of none, quarantine, reject (expected e.g. quarantine)"),
    ({"dmarc_rua": ["reports,x@example.com"]}, "mailstack:dmarc_rua[0]: 'reports,x@example.com' has a local part mailstack does not accept (expected letters, digits, '.', '_', '+' and '-', single dots not at either end, e.g. alice.smith@example.com)"),
    ({"cloudflare_zone_name": "example.org"}, "mailstack:cloudflare_zone_name: 'example.org' does not contain example.com (its records go in that zone)"),
    ({"mta_sts_mode": "strict"}, "mailstack:mta_sts_mode: 'strict' is not one of none, testing, enforce (expected e.g. testing)"),
    ({"mta_sts_max_age": 3600}, "mailstack:mta_sts_max_age: 3600 is less than 86400 (expected a number of seconds from 86400 to 31557600, e.g. 604800)"),
    ({"mta_sts_max_age": 31557601}, "mailstack:mta_sts_max_age: 31557601 is more than 31557600 (expected a number of seconds from 86400 to 31557600, e.g. 604800)"),
    ({"mta_sts_max_age": "1w"}, "mailstack:mta_sts_max_age: '1w' is not a number of seconds from 86400 to 31557600 (expected e.g. 604800)"),
    ({"tls_rpt_rua": ["tls!x@example.com"]}, "mailstack:tls_rpt_rua[0]: 'tls!x@example.com' has a local part mailstack does not accept (expected letters, digits, '.', '_', '+' and '-', single dots not at either end, e.g. alice.smith@example.com)"),
    ({"tls_rpt_rua": "tls@example.com"}, "mailstack:tls_rpt_rua: 'tls@example.com' is not a list of e-mail addresses (expected e.g. [tls-reports@example.com])"),
    ({"users": [{"name": "Alice"}]}, "mailstack:users[0].name: 'Alice' is not a mailbox name (expected the local part of its address: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, single dots not at the end, at most 64 characters, e.g. alice or alice.smith)"),
    ({"users": [{"name": "alice\n"}]}, "mailstack:users[0].name: 'alice\\n' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"users": [{"name": "alice", "password_hash": "hunter2"}]}, "mailstack:users[0].password_hash: is not a crypt(3) password hash (expected e.g. the output of `openssl passwd -6`)"),
    ({"users": [{"name": "alice", "password_hash": "$6$salt$hash\n"}]}, "mailstack:users[0].password_hash: is not a crypt(3) password hash (expected e.g. the output of `openssl passwd -6`)"),
    ({"users": [{"name": "alice", "addresses": ["alice@example.org"]}]}, "mailstack:users[0].addresses[0]: 'alice@example.org' is outside example.com (expected e.g. alice@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["alice"]}]}, "mailstack:users[0].addresses[0]: 'alice' is not an e-mail address (expected e.g. alice@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["carol.x\n@example.com"]}]}, "mailstack:users[0].addresses[0]: 'carol.x\\n@example.com' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"users": [{"name": "alice", "addresses": ["carol.x\rrelayhost=[198.51.100.66]@example.com"]}]}, "mailstack:users[0].addresses[0]: 'carol.x\\rrelayhost=[198.51.100.66]@example.com' contains the control character U+000D (expected printable ASCII on one line)"),
    ({"users": [{"name": "alice", "addresses": ["carol.x\v@example.com"]}]}, "mailstack:users[0].addresses[0]: 'carol.x\\x0b@example.com' contains the control character U+000B (expected printable ASCII on one line)"),
    ({"users": [{"name": "alice", "addresses": ["carol.x\f@example.com"]}]}, "mailstack:users[0].addresses[0]: 'carol.x\\x0c@example.com' contains the control character U+000C (expected printable ASCII on one line)"),
    ({"users": [{"name": "alice", "addresses": ['"carol x"@example.com']}]}, "mailstack:users[0].addresses[0]: '\"carol x\"@example.com' is not an e-mail address (expected e.g. alice@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["carol..x@example.com"]}]}, "mailstack:users[0].addresses[0]: 'carol..x@example.com' has a local part mailstack does not accept (expected letters, digits and &'*+/=?^_`{|}~$-, single dots not at either end, e.g. alice.smith@example.com)"),
    ({"users": [{"name": "alice", "addresses": [".carol@example.com"]}]}, "mailstack:users[0].addresses[0]: '.carol@example.com' has a local part mailstack does not accept (expected letters, digits and &'*+/=?^_`{|}~$-, single dots not at either end, e.g. alice.smith@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["#carol@example.com"]}]}, "mailstack:users[0].addresses[0]: '#carol@example.com' has a local part mailstack does not accept (expected letters, digits and &'*+/=?^_`{|}~$-, single dots not at either end, e.g. alice.smith@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["bob%evil.example@example.com"]}]}, "mailstack:users[0].addresses[0]: 'bob%evil.example@example.com' has a local part mailstack does not accept (expected letters, digits and &'*+/=?^_`{|}~$-, single dots not at either end, e.g. alice.smith@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["carol x@example.com"]}]}, "mailstack:users[0].addresses[0]: 'carol x@example.com' has a local part mailstack does not accept (expected letters, digits and &'*+/=?^_`{|}~$-, single dots not at either end, e.g. alice.smith@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["\u212aarol@example.com"]}]}, "mailstack:users[0].addresses[0]: '\u212aarol@example.com' contains the non-ASCII character '\u212a' (U+212A KELVIN SIGN) (expected printable ASCII on one line)"),
    ({"users": [{"name": "alice", "addresses": ["a@b@example.com"]}]}, "mailstack:users[0].addresses[0]: 'a@b@example.com' is not an e-mail address (expected e.g. alice@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["x" * 65 + "@example.com"]}]}, f"mailstack:users[0].addresses[0]: '{'x' * 60}...' (77 characters) has a local part longer than 64 characters (RFC 5321)"),
    ({"users": [{"name": "alice", "sieve": "keep;\x00\n"}]}, "mailstack:users[0].sieve: line 1 contains the control character U+0000 (expected text: only tabs and line breaks)"),
    ({"users": [{"name": "alice", "sieve": "keep;\n\x1b[31m\n"}]}, "mailstack:users[0].sieve: line 2 contains the control character U+001B (expected text: only tabs and line breaks)"),
    ({"users": [{"name": "alice", "sieve": "keep;\rdiscard;\n"}]}, "mailstack:users[0].sieve: line 1 contains a CR not followed by LF (expected text: only tabs and line breaks)"),
    ({"users": [{"name": "alice", "sieve": "#" * (1024 * 1024 + 1)}]}, "mailstack:users[0].sieve: is 1048577 bytes (expected at most 1048576, Dovecot's sieve_max_script_size)"),
    ({"users": [{"name": "alice", "sieve": ["keep;"]}]}, "mailstack:users[0].sieve: expected a Sieve script like 'keep;', got a list"),
    ({"users": [{"name": "alice"}, {"name": "alice"}]}, "mailstack:users[1].name: 'alice' is a duplicate user (each user is listed once)"),
    ({"users": [{"name": "a", "addresses": ["x@example.com"]}, {"name": "b", "addresses": ["x@example.com"]}]}, "mailstack:users[1].addresses[0]: 'x@example.com' already belongs to 'a' (each address has one owner)"),
    ({"users": [{"name": "a", "addresses": ["x@example.com", "X@example.com"]}]}, "mailstack:users[0].addresses[1]: 'x@example.com' is listed twice (each address once)"),
    ({"users": [{"name": "alice", "forward": 5}]}, "mailstack:users[0].forward: is not a known key (see the config table in README.md)"),
    ({"users": [{"name": "alice", "qouta": "1G"}]}, "mailstack:users[0].qouta: is not a known key (did you mean mailstack:users[0].quota?)"),
    ({"users": [{"name": "alice", "quota": "-500M"}]}, "mailstack:users[0].quota: for user 'alice': '-500M' is negative (expected a size, e.g. 500M; leave the key out for no quota)"),
    ({"users": [{"name": "alice", "quota": "0"}]}, "mailstack:users[0].quota: for user 'alice': '0' is not more than 0 (expected a size, e.g. 500M; leave the key out for no quota)"),
    ({"users": [{"name": "alice", "quota": "lots"}]}, "mailstack:users[0].quota: for user 'alice': 'lots' is not a size (expected a number with K, M, G or T, e.g. 500M or 2G)"),
    ({"users": [{"name": "alice", "quota": "5 G"}]}, "mailstack:users[0].quota: for user 'alice': '5 G' is not a size (expected a number with K, M, G or T, e.g. 500M or 2G)"),
    ({"users": [{"name": "alice", "quota": "2048T"}]}, "mailstack:users[0].quota: for user 'alice': '2048T' is more than a petabyte (expected a size, e.g. 500M or 2G)"),
    ({"users": [{"name": "alice", "quota": ["1G"]}]}, "mailstack:users[0].quota: expected a size with K, M, G or T, or unlimited like 500M, got a list"),
    ({"mailbox_quota": "-1G"}, "mailstack:mailbox_quota: '-1G' is negative (expected a size, e.g. 500M; leave the key out for no quota)"),
    ({"mailbox_quota": "1GB"}, "mailstack:mailbox_quota: '1GB' is not a size (expected a number with K, M, G or T, e.g. 500M or 2G)"),
    ({"mailbox_quota": "unlimited"}, "mailstack:mailbox_quota: 'unlimited' is not a size (expected a number with K, M, G or T, e.g. 500M or 2G)"),
    ({"mailbox_quota": 0}, "mailstack:mailbox_quota: '0' is not more than 0 (expected a size, e.g. 500M; leave the key out for no quota)"),
    ({"users": [{"name": "alice", "pasword_hash": "$6$x$y"}]}, "mailstack:users[0].pasword_hash: is not a known key (did you mean mailstack:users[0].password_hash?)"),
    ({"users": [{"name": "alice"}], "postmaster": "bob"}, "mailstack:postmaster: 'bob' is not one of the users (expected one of: alice)"),
    ({"postmaster": "bob"}, "mailstack:postmaster: 'bob' is not one of the users (expected one of: alice)"),
    ({"users": []}, "mailstack:users: is empty (expected at least one mailbox: postmaster@example.com must reach someone, RFC 5321 4.5.1)"),
    ({"users": [{"name": "a", "addresses": ["postmaster@example.com"]}]}, "mailstack:users[0].addresses[0]: 'postmaster@example.com' is made by mailstack for the user mailstack:postmaster names (leave it out here)"),
    ({"users": [{"name": "alice"}, {"name": "x", "addresses": ["alice@example.com"]}]}, "mailstack:users[1].addresses[0]: 'alice@example.com' already belongs to 'alice' (each address has one owner)"),
    ({"catch_all": "bob"}, "mailstack:catch_all: 'bob' is not one of the users (expected one of: alice)"),
    ({"catch_all": ["alice"]}, "mailstack:catch_all: expected a user name from mailstack:users like alice, got a list"),
    ({"aliases": {"team@example.com": ["alice@example.com"]}}, "mailstack:aliases: expected a list of aliases like [{address: team@example.com, to: [alice@example.com]}], got a mapping"),
    ({"aliases": [{"address": "team@example.com"}]}, "mailstack:aliases[0].to: is required (expected a list of e-mail addresses, e.g. [alice@example.com])"),
    ({"aliases": [{"address": "team@example.com", "to": []}]}, "mailstack:aliases[0].to: is empty (expected at least one address to deliver to, e.g. [alice@example.com])"),
    ({"aliases": [{"address": "team@example.com", "to": "alice@example.com"}]}, "mailstack:aliases[0].to: 'alice@example.com' is not a list of e-mail addresses (expected e.g. [alice@example.com])"),
    ({"aliases": [{"address": "team@example.com", "to": ["alice"]}]}, "mailstack:aliases[0].to[0]: 'alice' is not an e-mail address (expected e.g. alice@example.com)"),
    ({"aliases": [{"address": "team@example.com", "to": ["alice@example.com"], "from": "x"}]}, "mailstack:aliases[0].from: is not a known key (see the config table in README.md)"),
    ({"aliases": [{"adress": "team@example.com", "to": ["alice@example.com"]}]}, "mailstack:aliases[0].adress: is not a known key (did you mean mailstack:aliases[0].address?)"),
    ({"aliases": [{"address": "team@example.org", "to": ["alice@example.com"]}]}, "mailstack:aliases[0].address: 'team@example.org' is outside example.com (expected e.g. team@example.com)"),
    ({"aliases": [{"address": "team\n@example.com", "to": ["alice@example.com"]}]}, "mailstack:aliases[0].address: 'team\\n@example.com' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"users": TWO, "aliases": [{"address": "c@example.com", "to": ["alice@example.com"]}]}, "mailstack:aliases[0].address: 'c@example.com' is an address of user 'carol' (an address is a mailbox's or an alias, not both)"),
    ({"aliases": [{"address": "alice@example.com", "to": ["bob@example.org"]}]}, "mailstack:aliases[0].address: 'alice@example.com' is an address of user 'alice' (an address is a mailbox's or an alias, not both)"),
    ({"aliases": [{"address": "team@example.com", "to": ["alice@example.com"]}, {"address": "Team@example.com", "to": ["x@example.org"]}]}, "mailstack:aliases[1].address: 'team@example.com' is listed twice (each alias once)"),
    ({"aliases": [{"address": "postmaster@example.com", "to": ["x@example.org"]}]}, "mailstack:aliases[0].address: 'postmaster@example.com' is made by mailstack for the user mailstack:postmaster names (use mailstack:postmaster)"),
    ({"aliases": [{"address": "team@example.com", "to": ["nobody@example.com"]}]}, "mailstack:aliases[0].to[0]: 'nobody@example.com' is neither a user's address nor an alias of example.com (expected one of mailstack:users or mailstack:aliases)"),
    ({"aliases": [{"address": "team@example.com", "to": ["team@example.com"]}]}, "mailstack:aliases[0].to[0]: 'team@example.com' is the alias itself (expected where its mail goes)"),
]


@pytest.mark.parametrize(
    "overrides,message", BAD_DOMAIN, ids=[f"{i}-{m.split(':')[1]}" for i, (_, m) in enumerate(BAD_DOMAIN)]
)
def test_bad_domain_input_names_key_value_and_form(overrides, message):
    with pytest.raises(ConfigError) as err:
        domain(**overrides)
    assert message in err.value.problems, err.value.problems


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        host(hostname="mail", message_size_limit=0, vmail_uid=1)
    assert [p.split(":")[1] for p in err.value.problems] == ["hostname", "message_size_limit", "vmail_uid"]
    with pytest.raises(ConfigError) as err:
        domain(dkim_selector="a b", catch_all="nobody", ipv4=["192.0.2.10"])
    assert [p.split(":")[1] for p in err.value.problems] == ["ipv4", "dkim_selector"]


def test_a_secret_is_never_echoed_in_an_error():
    with pytest.raises(ConfigError) as err:
        domain(users=[{"name": "alice", "password_hash": "hunter2 secret"}])
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("stack,kind", [("host-mail", HostConfig), ("example.com", DomainConfig), ("example.org", DomainConfig)])
def test_example_stacks_load(stack, kind):
    values = yaml.safe_load((PROJECT_DIR / "tests" / "fixtures" / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    cfg = load_config(values)
    assert isinstance(cfg, kind)
    assert (cfg.host_name if kind is HostConfig else cfg.domain) == ("mail.example.net" if kind is HostConfig else stack)
    if kind is DomainConfig:
        assert cfg.host_stack == "host-mail"


# --- secrets never reach a message ---------------------------------------------------------

HASH = "$6$NEVERSHOWN$Xk9.aQ2hashvalue"

SHAPES = [
    ({"users": {"name": "alice", "password_hash": HASH}}, "mailstack:users: expected a list of users like [{name: alice}], got a mapping"),
    ({"users": f"alice:{HASH}"}, "mailstack:users: expected a list of users like [{name: alice}], got a text value"),
    ({"users": [[{"name": "alice", "password_hash": HASH}]]}, "mailstack:users[0]: expected a user like {name: alice, addresses: [alice@example.com]}, got a list"),
    ({"users": [f"alice {HASH}"]}, "mailstack:users[0]: expected a user like {name: alice, addresses: [alice@example.com]}, got a text value"),
    ({"users": [{"name": {"alice": HASH}}]}, "mailstack:users[0].name: expected a mailbox name like alice, got a mapping"),
    ({"users": [{"name": "alice", "password_hash": [HASH]}]}, "mailstack:users[0].password_hash: expected a crypt(3) password hash like the output of `openssl passwd -6`, got a list"),
    ({"users": [{"name": "alice", "password_hash": {"hash": HASH}}]}, "mailstack:users[0].password_hash: expected a crypt(3) password hash like the output of `openssl passwd -6`, got a mapping"),
    ({"users": [{"name": "alice", "addresses": {"alice@example.com": HASH}}]}, "mailstack:users[0].addresses: expected a list of e-mail addresses like [alice@example.com], got a mapping"),
    ({"users": [{"name": "alice", "password_hash": HASH + " x"}]}, "mailstack:users[0].password_hash: is not a crypt(3) password hash (expected e.g. the output of `openssl passwd -6`)"),
    ({"ssh_private_key": [HASH]}, "mailstack:ssh_private_key: expected a private key in PEM form like the contents of ~/.ssh/id_ed25519, got a list"),
    ({"ssh_private_key": HASH}, "mailstack:ssh_private_key: is not a private key in PEM form (expected the whole file, from -----BEGIN OPENSSH PRIVATE KEY----- to the END line, e.g. `pulumi config set --secret ssh_private_key < ~/.ssh/id_ed25519`)"),
    ({"ssh_host_key": {"key": HASH}}, "mailstack:ssh_host_key: expected an SSH public key like ssh-ed25519 AAAAC3Nza..., got a mapping"),
]


@pytest.mark.parametrize("overrides,message", SHAPES, ids=[m.split(": ")[0] + f"-{i}" for i, (_, m) in enumerate(SHAPES)])
def test_a_wrongly_shaped_secret_is_described_never_shown(overrides, message):
    with pytest.raises(ConfigError) as err:
        (domain if "users" in overrides else host)(**overrides)
    assert err.value.problems == [message]
    assert "NEVERSHOWN" not in str(err.value)


def test_a_wrongly_shaped_users_value_from_pulumi_is_not_shown():
    """Pulumi hands structured values over as JSON text."""
    with pytest.raises(ConfigError) as err:
        load_config({**DOMAIN, "mailstack:users": json.dumps({"name": "alice", "password_hash": HASH})})
    assert err.value.problems == ["mailstack:users: expected a list of users like [{name: alice}], got a mapping"]


# --- what is accepted, and how it is carried --------------------------------------------------


def test_address_local_parts_in_the_accepted_subset_are_kept_lower_cased():
    addresses = ["O'Brien@Example.com", "a+tag@example.com", "x{y}|z~w@example.com", "first.last@example.com", "$x=y?@example.com"]
    cfg = domain(users=[{"name": "alice", "addresses": addresses}])
    assert cfg.users[0].addresses == [a.lower() for a in addresses]


def test_a_sieve_script_is_carried_whole():
    script = 'require ["fileinto"];\r\n# ünïcödé and\ttabs\nif header :contains "subject" "$(touch /tmp/x)" { fileinto "X"; }\n'
    assert domain(users=[{"name": "alice", "sieve": script}]).users[0].sieve == script


def test_every_key_has_a_form_for_wrong_kind_messages():
    for model, prefix in ((HostConfig, ""), (DomainConfig, ""), (User, "users[]."), (Alias, "aliases[].")):
        for name, field in model.model_fields.items():
            assert f"{prefix}{name}" in FORMS, f"FORMS lacks {prefix}{name}"
            if "list[" in str(field.annotation) and prefix + name not in ("users", "aliases"):
                assert f"{prefix}{name}[]" in FORMS, f"FORMS lacks {prefix}{name}[]"


def test_no_message_uses_pydantic_words():
    cases = [(host, {"ssh_port": [1]}), (domain, {"dkim_bits": "big"}), (host, {"testing": [True]}),
             (domain, {"domain": ["example.com"]}), (domain, {"users": 5}), (host, {"notify_classes": [5]}),
             (host, {"smtpd_error_sleep_time": 8.5}), (domain, {"dmarc_rua": "a@example.com"}),
             (domain, {"domain": datetime.date(2024, 1, 1)}), (host, {"vmail_uid": [5000]}),
             (domain, {"aliases": [5]}), (domain, {"host_stack": 5})]
    for load, overrides in cases:
        with pytest.raises(ConfigError) as err:
            load(**overrides)
        text = str(err.value)
        assert "Input should" not in text and "valid integer" not in text and "datetime" not in text, text
        assert text.startswith(f"mailstack:{next(iter(overrides))}"), text


# --- keys outside the mailstack: namespace ----------------------------------------------------


def test_a_bare_key_needs_the_prefix_and_other_namespaces_are_ignored():
    with pytest.raises(ConfigError) as err:
        load_config({"domain": "example.com", "mailstack:host_stack": "host-mail", "hostnme": "x", "mailstak:hostname": "y",
                     "cloudflare:apiToken": "ignored"})
    assert err.value.problems == [
        "domain: needs the mailstack: prefix (write mailstack:domain; Pulumi reads only keys of the form <namespace>:<name>)",
        "hostnme: is not a known key and has no mailstack: prefix (did you mean mailstack:hostname?)",
        "mailstak:hostname: is not read by mailstack (did you mean mailstack:hostname?)",
    ]


def test_pulumis_older_key_spelling_is_the_same_key():
    values = {"mailstack:config:domain": "example.com", "mailstack:config:host_stack": "host-mail", "mailstack:users": [{"name": "a"}]}
    assert load_config(values).domain == "example.com"


# --- the stack file -----------------------------------------------------------------------------


def _report(tmp_path: Path, text: str, capsys) -> str:
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True, exist_ok=True)
    (project / "stacks" / "Pulumi.t.yaml").write_text(text)
    assert load_stack_or_report("t", project) is None
    return capsys.readouterr().err.strip()


STACK_FILES = [
    ("config:\n  mailstack:domain: example.com\n mailstack:host_stack: host-mail\n",
     "error: stacks/Pulumi.t.yaml line 3 column 2: expected <block end>, but found '<block mapping start>' (while parsing a block mapping); check this line's indentation"),
    ('config:\n  mailstack:domain: "example.com\n',
     "error: stacks/Pulumi.t.yaml line 3 column 1: found unexpected end of stream (while scanning a quoted scalar)"),
    ("config:\n  mailstack:hostname: mail.example.net\n  mailstack:ipv4: [192.0.2.10\n",
     "error: stacks/Pulumi.t.yaml line 4 column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"),
    ("config:\n  mailstack:domain: example.com\n  mailstack:domain: example.org\n",
     "error: stacks/Pulumi.t.yaml line 3 column 3: mailstack:domain is given twice (first at line 2)"),
    ("mailstack:domain: example.com\n",
     "error: stacks/Pulumi.t.yaml: has no top-level config: (the mailstack: keys are at the top level: indent them under config:) (expected a top-level config: holding mailstack:<key>: value lines, e.g. config: {mailstack:domain: example.com})"),
    ("confg:\n  mailstack:domain: example.com\n",
     "error: stacks/Pulumi.t.yaml: has no top-level config: (confg: looks like a misspelt config:) (expected a top-level config: holding mailstack:<key>: value lines, e.g. config: {mailstack:domain: example.com})"),
    ("secretsprovider: passphrase\n",
     "error: stacks/Pulumi.t.yaml: has no top-level config: (expected a top-level config: holding mailstack:<key>: value lines, e.g. config: {mailstack:domain: example.com})"),
    ("config:\n  - mailstack:domain: example.com\n",
     "error: stacks/Pulumi.t.yaml: config: is a list, not a mapping (expected a top-level config: holding mailstack:<key>: value lines, e.g. config: {mailstack:domain: example.com})"),
    ("",
     "error: stacks/Pulumi.t.yaml: is empty (expected a top-level config: holding mailstack:<key>: value lines, e.g. config: {mailstack:domain: example.com})"),
    ("config:\n  domain: example.com\n  mailstack:host_stack: host-mail\n",
     "error: domain: needs the mailstack: prefix (write mailstack:domain; Pulumi reads only keys of the form <namespace>:<name>)"),
    ("config:\n  mailstack:domain: example.com\n  mailstack:host_stack: host-mail\n  mailstack:ipv4: [192.0.2.10]\n  mailstack:dkim_bits: big\n"
     f"  mailstack:users: {{name: alice, password_hash: '{HASH}'}}\n  mailstack:hostnme: x\n",
     "error: mailstack:ipv4: is a host-stack key; set it in the host stack (mailstack:host_stack names it)\n"
     "mailstack:dkim_bits: 'big' is not one of 2048, 3072, 4096 (expected e.g. 2048)\n"
     "mailstack:users: expected a list of users like [{name: alice}], got a mapping\n"
     "mailstack:hostnme: is not a known key (did you mean mailstack:hostname?)"),
    ("config:\n  mailstack:hostname: mail.example.net\n  mailstack:ipv4: [192.0.2.10]\n  mailstack:message_size_limit: 25MB\n",
     "error: mailstack:message_size_limit: '25MB' is not a number of bytes (expected e.g. 25000000)\n"
     "mailstack:postmaster_address: is required (expected an e-mail address, e.g. alice@example.com)"),
]


@pytest.mark.parametrize("text,message", STACK_FILES, ids=[f"file-{i}" for i in range(len(STACK_FILES))])
def test_a_bad_stack_file_gets_one_clear_message(tmp_path, capsys, text, message):
    assert _report(tmp_path, text, capsys) == message
    assert "NEVERSHOWN" not in message


def test_a_stack_file_that_is_not_utf8_is_reported(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "stacks" / "Pulumi.t.yaml").write_bytes(b"config:\n  mailstack:domain: ex\xe4mple.com\n")
    assert load_stack_or_report("t", project) is None
    assert capsys.readouterr().err.strip() == "error: stacks/Pulumi.t.yaml line 2 column 23: is not UTF-8 text (invalid continuation byte)"


def test_a_bad_stack_file_exits_2_from_the_command_line(tmp_path):
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "stacks" / "Pulumi.t.yaml").write_text(STACK_FILES[-2][0])
    result = subprocess.run(
        [sys.executable, "-m", "components", "render", "t", "--project", str(project), "--out", str(tmp_path / "out")],
        cwd=PROJECT_DIR, capture_output=True, text=True,
    )
    assert (result.returncode, result.stderr.strip()) == (2, STACK_FILES[-2][1])
    assert "Traceback" not in result.stderr and "NEVERSHOWN" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("users", "mailbox_quota", "expected"),
    [
        # No quota anywhere: every mailbox is unlimited.
        ([{"name": "alice"}], None, [None]),
        # The domain's default, a user's own, and a user exempted with "unlimited".
        ([{"name": "alice"}, {"name": "bob", "quota": "500M"}, {"name": "carol", "quota": "unlimited"}], "2G",
         [2 * 1024**3, 500 * 1024**2, None]),
        # Units are powers of 1024, either case; a bare number (YAML reads it as one) is bytes.
        ([{"name": "alice", "quota": "100k"}, {"name": "bob", "quota": 102400}, {"name": "carol", "quota": "1T"}], None,
         [102400, 102400, 1024**4]),
    ],
)
def test_quota_of_each_user(users, mailbox_quota, expected):
    cfg = domain(users=users, **({"mailbox_quota": mailbox_quota} if mailbox_quota else {}))
    assert [cfg.quota_of(user) for user in cfg.users] == expected
