"""The config model: defaults are the guide's, bad input names the key, the value and the form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components.config import ConfigError, MailConfig, load_config

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
    ({"hostname": "mail"}, "mailstack:hostname: 'mail' is not a fully-qualified domain name (expected e.g. mail.example.com)"),
    ({"hostname": "mail_1.example.com"}, "mailstack:hostname: 'mail_1.example.com' is not a fully-qualified domain name (expected e.g. mail.example.com)"),
    ({"hostname": "mail.example.org"}, "mailstack:hostname: 'mail.example.org' is not inside example.com (its A/AAAA records go in that zone)"),
    ({"ipv4": ["192.0.2.300"]}, "mailstack:ipv4[0]: '192.0.2.300' is not a valid IPv4 address (expected e.g. 192.0.2.10)"),
    ({"ipv4": ["2001:db8::1"]}, "mailstack:ipv4[0]: '2001:db8::1' is not an IPv4 address (expected e.g. 192.0.2.10)"),
    ({"ipv6": ["2001:db8::g"]}, "mailstack:ipv6[0]: '2001:db8::g' is not a valid IPv6 address (expected e.g. 2001:db8::10)"),
    ({"ipv4": ["127.0.0.1"]}, "mailstack:ipv4[0]: '127.0.0.1' cannot receive mail from other hosts (expected a routable IPv4 address)"),
    ({"ipv4": []}, "mailstack:ipv4: is empty and so is mailstack:ipv6 (expected at least one address of the host)"),
    ({"inet_interfaces": ["eth0"]}, "mailstack:inet_interfaces[0]: 'eth0' is not an IP address (expected e.g. 192.0.2.10, or 'all')"),
    ({"dkim_selector": "mail.2026"}, "mailstack:dkim_selector: 'mail.2026' is not a valid DKIM selector (expected one DNS label: lower-case letters, digits and '-', e.g. mail or s2026)"),
    ({"dkim_selector": "-mail"}, "mailstack:dkim_selector: '-mail' is not a valid DKIM selector (expected one DNS label: lower-case letters, digits and '-', e.g. mail or s2026)"),
    ({"dkim_bits": 1024}, "mailstack:dkim_bits: 1024 is not valid (Input should be 2048, 3072 or 4096)"),
    ({"message_size_limit": 0}, "mailstack:message_size_limit: 0 is not allowed: the guide forbids 0 (unlimited) (expected bytes, e.g. 25000000)"),
    ({"message_size_limit": "big"}, "mailstack:message_size_limit: 'big' is not valid (Input should be a valid integer, unable to parse string as an integer)"),
    ({"smtpd_error_sleep_time": "8 seconds"}, "mailstack:smtpd_error_sleep_time: '8 seconds' is not a Postfix time (expected e.g. 8s)"),
    ({"smtpd_hard_error_limit": 1, "smtpd_soft_error_limit": 2}, "mailstack:smtpd_hard_error_limit: 1 is below smtpd_soft_error_limit (2)"),
    ({"smtpd_banner": "$myhostname ESMTP Postfix (Debian/GNU)\nX"}, "mailstack:smtpd_banner: '$myhostname ESMTP Postfix (Debian/GNU)\\nX' is not a one-line banner (expected e.g. $myhostname ESMTP $mail_name)"),
    ({"notify_classes": ["bounce", "everything"]}, "mailstack:notify_classes[1]: 'everything' is not a notify class (expected some of: bounce, 2bounce, data, delay, policy, protocol, resource, software)"),
    ({"smtpd_tls_key_file": "key.pem"}, "mailstack:smtpd_tls_key_file: 'key.pem' is not an absolute file path (expected e.g. /etc/ssl/private/postfix.pem)"),
    ({"dmarc_policy": "block"}, "mailstack:dmarc_policy: 'block' is not valid (Input should be 'none', 'quarantine' or 'reject')"),
    ({"ssh_port": 0}, "mailstack:ssh_port: 0 is not valid (Input should be greater than or equal to 1)"),
    ({"reverse_zones": ["example.com"]}, "mailstack:reverse_zones[0]: 'example.com' is not a reverse zone (expected e.g. 2.0.192.in-addr.arpa)"),
    ({"cloudflare_zone_name": "example.org"}, "mailstack:cloudflare_zone_name: 'example.org' does not contain example.com (its records go in that zone)"),
    ({"cloudflare_zone_id": "my-zone"}, "mailstack:cloudflare_zone_id: 'my-zone' is not a Cloudflare zone id (expected 32 hex digits, from the zone's overview page)"),
    ({"reverse_zones": ["100.51.198.in-addr.arpa"]}, "mailstack:reverse_zones[0]: '100.51.198.in-addr.arpa' holds none of the host's addresses (expected the zone of 192.0.2.10)"),
    ({"inet_interfaces": ["192.0.2.10", "2001:db8::10"]}, "mailstack:inet_interfaces[1]: '2001:db8::10' is IPv6 but mailstack:ipv6 is empty (Postfix would run IPv4 only)"),
    ({"opendkim_nameservers": ["ns1.example.com"]}, "mailstack:opendkim_nameservers[0]: 'ns1.example.com' is not an IP address (expected e.g. 192.0.2.53)"),
    ({"hostnmae": "mail.example.com"}, "mailstack:hostnmae: is not a known key (see the config table in README.md)"),
    ({"users": [{"name": "Alice"}]}, "mailstack:users[0].name: 'Alice' is not a valid user name (expected lower-case letters, digits, '_' or '-', starting with a letter, at most 32 characters)"),
    ({"users": [{"name": "alice", "password_hash": "hunter2"}]}, "mailstack:users[0].password_hash: is not a crypt(3) password hash (expected e.g. the output of `mkpasswd -m yescrypt`)"),
    ({"users": [{"name": "alice", "addresses": ["alice@example.org"]}]}, "mailstack:users[0].addresses[0]: 'alice@example.org' is outside example.com (expected e.g. alice@example.com)"),
    ({"users": [{"name": "alice", "addresses": ["alice"]}]}, "mailstack:users[0].addresses[0]: 'alice' is not an e-mail address (expected e.g. alice@example.com)"),
    ({"users": [{"name": "alice"}, {"name": "alice"}]}, "mailstack:users[1].name: 'alice' is a duplicate user (each user is listed once)"),
    ({"users": [{"name": "a", "addresses": ["x@example.com"]}, {"name": "b", "addresses": ["x@example.com"]}]}, "mailstack:users[1].addresses[0]: 'x@example.com' already belongs to 'a' (each address has one owner)"),
    ({"users": [{"name": "alice", "quota": 5}]}, "mailstack:users[0].quota: is not a known key (see the config table in README.md)"),
    ({"postmaster": "root"}, "mailstack:postmaster: 'root' is not one of the users (expected one of: none)"),
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
