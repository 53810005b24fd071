"""The config model: defaults are the guide's, bad input names the key, the value and the form."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config import (
    FORMS,
    SYSTEM_ACCOUNTS,
    ConfigError,
    MailConfig,
    User,
    load_config,
    system_account_reason,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
BASE = {"mailstack:domain": "example.com", "mailstack:ipv4": ["192.0.2.10"]}


def load(**overrides):
    values = dict(BASE)
    values.update({f"mailstack:{k}": v for k, v in overrides.items()})
    return load_config(values)


def test_defaults_are_the_guides_values():
    cfg = load()
    assert cfg.host_name == "mail.example.com"
    assert cfg.smtpd_banner == "$myhostname ESMTP $mail_name"
    assert cfg.message_size_limit == 25000000
    assert (cfg.smtpd_error_sleep_time, cfg.smtpd_soft_error_limit, cfg.smtpd_hard_error_limit) == ("8s", 1, 3)
    assert cfg.soft_bounce is True
    assert cfg.testing is False  # the policy pack then refuses soft_bounce: a stack must choose
    assert cfg.notify_classes == ["bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software"]
    assert cfg.policyd_spf_time_limit == 3600
    assert cfg.smtpd_tls_cert_file == "/etc/ssl/private/postfix.cacert.pem"
    assert cfg.smtpd_tls_key_file == "/etc/ssl/private/postfix.privkey.pem"
    assert (cfg.dkim_selector, cfg.dkim_bits) == ("mail", 2048)
    assert (cfg.dmarc_policy, cfg.rua) == ("quarantine", ["postmaster@example.com"])
    assert cfg.listen_addresses == ["192.0.2.10", "127.0.0.1"]
    assert cfg.inet_protocols == "ipv4"


def test_values_as_pulumi_hands_them_over():
    """Pulumi passes every value as a string, structured ones as JSON."""
    cfg = load_config(
        {
            "mailstack:domain": "Example.COM.",
            "mailstack:ipv4": '["192.0.2.10"]',
            "mailstack:ipv6": '["2001:DB8::10"]',
            "mailstack:message_size_limit": "30000000",
            "mailstack:soft_bounce": "false",
            "mailstack:users": '[{"name": "alice", "addresses": ["Alice@Example.com"]}]',
            "mailstack:hostname": "",  # Pulumi.yaml's "derived" default
            "cloudflare:apiToken": "ignored: another namespace",
        }
    )
    assert (cfg.domain, cfg.host_name, cfg.ipv6) == ("example.com", "mail.example.com", ["2001:db8::10"])
    assert (cfg.message_size_limit, cfg.soft_bounce) == (30000000, False)
    assert cfg.addresses_of(cfg.users[0]) == ["alice@example.com"]
    assert cfg.inet_protocols == "all"


def test_user_addresses_default_to_name_at_domain():
    cfg = load(users=[{"name": "bob"}])
    assert cfg.addresses_of(cfg.users[0]) == ["bob@example.com"]
    assert cfg.postmaster_user == "bob"


def test_password_hash_is_kept_secret():
    cfg = load(users=[{"name": "bob", "password_hash": "$6$salt$hash"}])
    assert "$6$salt$hash" not in repr(cfg)
    assert cfg.users[0].password_hash.get_secret_value() == "$6$salt$hash"


def test_offline_stack_file_secure_values_count_as_unset():
    cfg = load(ssh_private_key={"secure": "v1:abc"}, users=[{"name": "bob", "password_hash": {"secure": "v1:x"}}])
    assert cfg.ssh_private_key is None and cfg.users[0].password_hash is None


BAD = [
    ({"domain": ""}, "mailstack:domain: is empty (expected the mail domain, e.g. example.com)"),
    ({"domain": "localhost"}, "mailstack:domain: 'localhost' is not a fully-qualified domain name (expected e.g. example.com)"),
    ({"domain": "ex\\097mple.com"}, "mailstack:domain: 'ex\\\\097mple.com' is not a fully-qualified domain name (expected e.g. example.com)"),
    ({"domain": "exаmple.com"}, "mailstack:domain: 'exаmple.com' contains the non-ASCII character 'а' (U+0430 CYRILLIC SMALL LETTER A) (expected printable ASCII on one line)"),
    ({"domain": "example.com\n"}, "mailstack:domain: 'example.com\\n' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"domain": 2024}, "mailstack:domain: 2024 is not a domain name (expected e.g. example.com)"),
    ({"hostname": "mail"}, "mailstack:hostname: 'mail' is not a fully-qualified domain name (expected e.g. mail.example.com)"),
    ({"hostname": "mail_1.example.com"}, "mailstack:hostname: 'mail_1.example.com' is not a fully-qualified domain name (expected e.g. mail.example.com)"),
    ({"hostname": "mail.example.org"}, "mailstack:hostname: 'mail.example.org' is not inside example.com (its A/AAAA records go in that zone)"),
    ({"ipv4": ["192.0.2.300"]}, "mailstack:ipv4[0]: '192.0.2.300' is not a valid IPv4 address (expected e.g. 192.0.2.10)"),
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
    ({"dkim_selector": "mail.2026"}, "mailstack:dkim_selector: 'mail.2026' is not a valid DKIM selector (expected one DNS label: lower-case letters, digits and '-', e.g. mail or s2026)"),
    ({"dkim_selector": "-mail"}, "mailstack:dkim_selector: '-mail' is not a valid DKIM selector (expected one DNS label: lower-case letters, digits and '-', e.g. mail or s2026)"),
    ({"dkim_bits": 1024}, "mailstack:dkim_bits: 1024 is not one of 2048, 3072, 4096 (expected e.g. 2048)"),
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
    ({"dmarc_policy": "block"}, "mailstack:dmarc_policy: 'block' is not one of none, quarantine, reject (expected e.g. quarantine)"),
    ({"dmarc_rua": ["reports,x@example.com"]}, "mailstack:dmarc_rua[0]: 'reports,x@example.com' has a local part mailstack does not accept (expected letters, digits, '.', '_', '+' and '-', single dots not at either end, e.g. alice.smith@example.com)"),
    ({"ssh_port": 0}, "mailstack:ssh_port: 0 is less than 1 (expected a TCP port, e.g. 22)"),
    ({"ssh_port": "ssh"}, "mailstack:ssh_port: 'ssh' is not a TCP port (expected e.g. 22)"),
    ({"ssh_user": "root\n"}, "mailstack:ssh_user: 'root\\n' contains the control character U+000A (expected printable ASCII on one line)"),
    ({"soft_bounce": "maybe"}, "mailstack:soft_bounce: 'maybe' is not true or false (expected e.g. true)"),
    ({"reverse_zones": ["example.com"]}, "mailstack:reverse_zones[0]: 'example.com' is not a reverse zone (expected e.g. 2.0.192.in-addr.arpa)"),
    ({"cloudflare_zone_name": "example.org"}, "mailstack:cloudflare_zone_name: 'example.org' does not contain example.com (its records go in that zone)"),
    ({"cloudflare_zone_id": "my-zone"}, "mailstack:cloudflare_zone_id: 'my-zone' is not a Cloudflare zone id (expected 32 hex digits, from the zone's overview page)"),
    ({"reverse_zones": ["100.51.198.in-addr.arpa"]}, "mailstack:reverse_zones[0]: '100.51.198.in-addr.arpa' holds none of the host's addresses (expected the zone of 192.0.2.10)"),
    ({"inet_interfaces": ["192.0.2.10", "2001:db8::10"]}, "mailstack:inet_interfaces[1]: '2001:db8::10' is IPv6 but mailstack:ipv6 is empty (Postfix would run IPv4 only)"),
    ({"opendkim_nameservers": ["ns1.example.com"]}, "mailstack:opendkim_nameservers[0]: 'ns1.example.com' is not an IP address (expected e.g. 192.0.2.53)"),
    ({"hostnmae": "mail.example.com"}, "mailstack:hostnmae: is not a known key (did you mean mailstack:hostname?)"),
    ({"frobnicate": 1}, "mailstack:frobnicate: is not a known key (see the config table in README.md)"),
    ({"users": [{"name": "Alice"}]}, "mailstack:users[0].name: 'Alice' is not a valid user name (expected lower-case letters, digits, '_' or '-', starting with a letter, at most 32 characters, e.g. alice)"),
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
    ({"users": [{"name": "alice", "quota": 5}]}, "mailstack:users[0].quota: is not a known key (see the config table in README.md)"),
    ({"users": [{"name": "alice", "pasword_hash": "$6$x$y"}]}, "mailstack:users[0].pasword_hash: is not a known key (did you mean mailstack:users[0].password_hash?)"),
    ({"users": [{"name": "alice"}], "postmaster": "root"}, "mailstack:postmaster: 'root' is not one of the users (expected one of: alice)"),
    ({"postmaster": "root"}, "mailstack:postmaster: 'root' is not one of the users (expected one of: none)"),
    ({"ssh_private_key": "not a key"}, "mailstack:ssh_private_key: is not a private key in PEM form (expected the whole file, from -----BEGIN OPENSSH PRIVATE KEY----- to the END line, e.g. `pulumi config set --secret ssh_private_key < ~/.ssh/id_ed25519`)"),
    ({"ssh_host_key": "ssh-ed25519 AAAA\nrelay"}, "mailstack:ssh_host_key: is not an SSH public key (expected one line like ssh-ed25519 AAAAC3Nza..., e.g. from `ssh-keyscan -t ed25519 HOST`)"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m.split(":")[1] for _, m in BAD])
def test_bad_input_names_key_value_and_form(overrides, message):
    with pytest.raises(ConfigError) as err:
        load(**overrides)
    assert message in err.value.problems, err.value.problems


def test_missing_domain_is_required():
    with pytest.raises(ConfigError) as err:
        load_config({"mailstack:ipv4": ["192.0.2.10"]})
    assert err.value.problems == ["mailstack:domain: is required"]


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load(hostname="mail", message_size_limit=0, dkim_selector="a b")
    assert [p.split(":")[1] for p in err.value.problems] == ["hostname", "message_size_limit", "dkim_selector"]


def test_a_secret_is_never_echoed_in_an_error():
    with pytest.raises(ConfigError) as err:
        load(users=[{"name": "alice", "password_hash": "hunter2 secret"}])
    assert "hunter2" not in str(err.value)


def test_project_file_declares_every_key_with_the_models_default():
    project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())
    declared = project["config"]
    assert set(declared) == set(MailConfig.model_fields), "Pulumi.yaml and components/config.py list different keys"
    kinds = {"string": str, "integer": int, "boolean": bool, "array": list}
    for key, field in MailConfig.model_fields.items():
        spec = declared[key]
        assert spec.get("description"), f"Pulumi.yaml: {key} has no description"
        if field.is_required():
            assert "default" not in spec, f"Pulumi.yaml: {key} is required and must have no default"
            continue
        default = field.get_default(call_default_factory=True)
        expected = default if default is not None else ([] if spec["type"] == "array" else "")
        assert spec["default"] == expected, f"Pulumi.yaml: {key} default {spec['default']!r} != model {expected!r}"
        assert isinstance(spec["default"], kinds[spec["type"]]), f"Pulumi.yaml: {key} default does not match its type"


def test_readme_documents_every_key():
    readme = (PROJECT_DIR / "README.md").read_text()
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme, flags=re.M))
    missing = set(MailConfig.model_fields) - rows
    assert not missing, f"README.md config table lacks: {sorted(missing)}"


@pytest.mark.parametrize("stack", ["example.com", "example.net"])
def test_example_stacks_load(stack):
    values = yaml.safe_load((PROJECT_DIR / "tests" / "fixtures" / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    cfg = load_config(values)
    assert cfg.domain == stack


# --- accounts mailstack must never touch --------------------------------------------------

SYSTEM_NAMES = [
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "gnats", "_apt", "nobody", "systemd-network", "systemd-timesync",
    "systemd-resolve", "messagebus", "sshd", "_ssh", "postfix", "postdrop", "dovecot", "dovenull", "opendkim",
    "policyd-spf", "sudo", "adm", "shadow", "staff", "users",
]


@pytest.mark.parametrize("name", SYSTEM_NAMES)
def test_system_accounts_are_refused(name):
    with pytest.raises(ConfigError) as err:
        load(users=[{"name": "alice"}, {"name": name}])
    assert err.value.problems == [
        f"mailstack:users[1].name: {name!r} is a system account on Debian hosts; mailstack only manages "
        "mailbox accounts it creates (choose another name)"
    ]


@pytest.mark.parametrize("name", ["postmaster", "mailer-daemon"])
def test_role_names_are_refused(name):
    with pytest.raises(ConfigError) as err:
        load(users=[{"name": name}])
    assert err.value.problems == [
        f"mailstack:users[0].name: {name!r} is a role name the host routes itself (postmaster@ goes to "
        "mailstack:postmaster, bounces come from MAILER-DAEMON) (choose another name)"
    ]


def test_the_ssh_user_is_not_a_mailbox():
    with pytest.raises(ConfigError) as err:
        load(ssh_user="admin", users=[{"name": "alice"}, {"name": "admin"}])
    assert err.value.problems == [
        "mailstack:users[1].name: 'admin' is mailstack:ssh_user, the account mailstack logs in as; mailstack "
        "only manages mailbox accounts it creates (choose another name)"
    ]


def test_every_account_debian_and_the_mail_packages_create_is_refused():
    """base-passwd's users and groups, and the accounts of the packages mailstack installs."""
    names = set(SYSTEM_ACCOUNTS)
    for master in ("/usr/share/base-passwd/passwd.master", "/usr/share/base-passwd/group.master"):
        if Path(master).is_file():
            names |= {line.split(":")[0] for line in Path(master).read_text().splitlines() if line}
    for entry in Path("/etc/passwd").read_text().splitlines():
        name, _, uid, _, _, home, shell = entry.split(":")
        if name in ("postfix", "dovecot", "dovenull", "opendkim", "policyd-spf") or name.startswith("systemd-"):
            names.add(name)
    refused = {n for n in names if system_account_reason(n)}
    assert refused == names, f"accepted as mailboxes: {sorted(names - refused)}"
    assert system_account_reason("alice") is None


# --- secrets never reach a message ---------------------------------------------------------

HASH = "$6$NEVERSHOWN$Xk9.aQ2hashvalue"

SHAPES = [
    ({"users": {"name": "alice", "password_hash": HASH}}, "mailstack:users: expected a list of users like [{name: alice}], got a mapping"),
    ({"users": f"alice:{HASH}"}, "mailstack:users: expected a list of users like [{name: alice}], got a text value"),
    ({"users": [[{"name": "alice", "password_hash": HASH}]]}, "mailstack:users[0]: expected a user like {name: alice, addresses: [alice@example.com]}, got a list"),
    ({"users": [f"alice {HASH}"]}, "mailstack:users[0]: expected a user like {name: alice, addresses: [alice@example.com]}, got a text value"),
    ({"users": [{"name": {"alice": HASH}}]}, "mailstack:users[0].name: expected a user name like alice, got a mapping"),
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
        load(**overrides)
    assert err.value.problems == [message]
    assert "NEVERSHOWN" not in str(err.value)


def test_a_wrongly_shaped_users_value_from_pulumi_is_not_shown():
    """Pulumi hands structured values over as JSON text."""
    with pytest.raises(ConfigError) as err:
        load_config({**BASE, "mailstack:users": json.dumps({"name": "alice", "password_hash": HASH})})
    assert err.value.problems == ["mailstack:users: expected a list of users like [{name: alice}], got a mapping"]


# --- what is accepted, and how it is carried --------------------------------------------------


def test_address_local_parts_in_the_accepted_subset_are_kept_lower_cased():
    addresses = ["O'Brien@Example.com", "a+tag@example.com", "x{y}|z~w@example.com", "first.last@example.com", "$x=y?@example.com"]
    cfg = load(users=[{"name": "alice", "addresses": addresses}])
    assert cfg.users[0].addresses == [a.lower() for a in addresses]


def test_a_sieve_script_is_carried_whole():
    script = 'require ["fileinto"];\r\n# ünïcödé and\ttabs\nif header :contains "subject" "$(touch /tmp/x)" { fileinto "X"; }\n'
    assert load(users=[{"name": "alice", "sieve": script}]).users[0].sieve == script


def test_every_key_has_a_form_for_wrong_kind_messages():
    for model, prefix in ((MailConfig, ""), (User, "users[].")):
        for name, field in model.model_fields.items():
            assert f"{prefix}{name}" in FORMS, f"FORMS lacks {prefix}{name}"
            if "list[" in str(field.annotation) and prefix + name != "users":
                assert f"{prefix}{name}[]" in FORMS, f"FORMS lacks {prefix}{name}[]"


def test_no_message_uses_pydantic_words():
    cases = [{"ssh_port": [1]}, {"dkim_bits": "big"}, {"testing": [True]}, {"domain": ["example.com"]},
             {"users": 5}, {"notify_classes": [5]}, {"smtpd_error_sleep_time": 8.5}, {"dmarc_rua": "a@example.com"},
             {"domain": datetime.date(2024, 1, 1)}]
    for overrides in cases:
        with pytest.raises(ConfigError) as err:
            load(**overrides)
        text = str(err.value)
        assert "Input should" not in text and "valid integer" not in text and "datetime" not in text, text
        assert text.startswith(f"mailstack:{next(iter(overrides))}"), text


# --- keys outside the mailstack: namespace ----------------------------------------------------


def test_a_bare_key_needs_the_prefix_and_other_namespaces_are_ignored():
    with pytest.raises(ConfigError) as err:
        load_config({"domain": "example.com", "mailstack:ipv4": ["192.0.2.10"], "hostnme": "x", "mailstak:hostname": "y",
                     "cloudflare:apiToken": "ignored"})
    assert err.value.problems == [
        "domain: needs the mailstack: prefix (write mailstack:domain; Pulumi reads only keys of the form <namespace>:<name>)",
        "hostnme: is not a known key and has no mailstack: prefix (did you mean mailstack:hostname?)",
        "mailstak:hostname: is not read by mailstack (did you mean mailstack:hostname?)",
    ]


def test_pulumis_older_key_spelling_is_the_same_key():
    assert load_config({"mailstack:config:domain": "example.com", "mailstack:ipv4": ["192.0.2.10"]}).domain == "example.com"


# --- the stack file, through the command line -------------------------------------------------


def render(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True, exist_ok=True)
    (project / "stacks" / "Pulumi.t.yaml").write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "components", "render", "t", "--project", str(project), "--out", str(tmp_path / "out")],
        cwd=PROJECT_DIR, capture_output=True, text=True,
    )


STACK_FILES = [
    ("config:\n  mailstack:domain: example.com\n mailstack:ipv4: [192.0.2.10]\n",
     "error: stacks/Pulumi.t.yaml line 3 column 2: expected <block end>, but found '<block mapping start>' (while parsing a block mapping); check this line's indentation"),
    ('config:\n  mailstack:domain: "example.com\n',
     "error: stacks/Pulumi.t.yaml line 3 column 1: found unexpected end of stream (while scanning a quoted scalar)"),
    ("config:\n  mailstack:domain: example.com\n  mailstack:ipv4: [192.0.2.10\n",
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
    ("config:\n  domain: example.com\n  mailstack:ipv4: [192.0.2.10]\n",
     "error: domain: needs the mailstack: prefix (write mailstack:domain; Pulumi reads only keys of the form <namespace>:<name>)"),
    ("config:\n  mailstack:domain: example.com\n  mailstack:ipv4: [192.0.2.10]\n  mailstack:message_size_limit: 25MB\n  mailstack:hostnme: x\n"
     f"  mailstack:users: {{name: alice, password_hash: '{HASH}'}}\n",
     "error: mailstack:message_size_limit: '25MB' is not a number of bytes (expected e.g. 25000000)\n"
     "mailstack:users: expected a list of users like [{name: alice}], got a mapping\n"
     "mailstack:hostnme: is not a known key (did you mean mailstack:hostname?)"),
]


@pytest.mark.parametrize("text,message", STACK_FILES, ids=[f"file-{i}" for i in range(len(STACK_FILES))])
def test_a_bad_stack_file_exits_2_with_one_clear_message(tmp_path, text, message):
    result = render(tmp_path, text)
    assert (result.returncode, result.stderr.strip()) == (2, message)
    assert "Traceback" not in result.stderr and "NEVERSHOWN" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_stack_file_that_is_not_utf8_is_reported(tmp_path):
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    (project / "stacks" / "Pulumi.t.yaml").write_bytes(b"config:\n  mailstack:domain: ex\xe4mple.com\n")
    result = subprocess.run(
        [sys.executable, "-m", "components", "render", "t", "--project", str(project), "--out", str(tmp_path / "out")],
        cwd=PROJECT_DIR, capture_output=True, text=True,
    )
    assert (result.returncode, result.stderr.strip()) == (
        2, "error: stacks/Pulumi.t.yaml line 2 column 23: is not UTF-8 text (invalid continuation byte)"
    )
