"""The whole program under the SDK's mocks: what a reviewer of `pulumi preview` cares about."""

from __future__ import annotations

import base64
import json

import pulumi
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components.config import load_config
from components.records import dkim_value, txt_content
from tests.program.harness import PROJECT_DIR, MailMocks, RecordingMonitor, evaluate

COMMAND = "command:remote:Command"
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
UNITS = ["packages", "tls", "dkim", "accounts", "opendkim", "policyd-spf", "dovecot", "postfix", "sieve"]

SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAtestkeymaterial\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"
PASSWORD_HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"


def stack_values(stack: str) -> dict:
    return yaml.safe_load((PROJECT_DIR / "tests" / "fixtures" / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


def with_secrets(values: dict) -> dict:
    values = json.loads(json.dumps(values))
    values["mailstack:ssh_private_key"] = SSH_KEY
    values["mailstack:ssh_host_key"] = HOST_KEY
    for user in values.get("mailstack:users", []):
        user["password_hash"] = PASSWORD_HASH
    return values


SECRET_KEYS = ["mailstack:ssh_private_key", "mailstack:ssh_host_key", "mailstack:users"]


@pytest.fixture(scope="module")
def dkim_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def example(dkim_key):
    return evaluate(with_secrets(stack_values("example.com")), SECRET_KEYS, MailMocks(dkim_key))


def test_components_and_units_exist(example):
    assert [r.name for r in example.of_type("mailstack:index:MailDomain")] == ["mail"]
    assert [r.name for r in example.of_type("mailstack:index:MailHost")] == ["mail-host"]
    assert [r.name for r in example.of_type("mailstack:index:MailDns")] == ["mail-dns"]
    assert sorted(r.name for r in example.of_type(COMMAND)) == sorted(f"mail-host-{u}" for u in UNITS)


def test_every_record_of_the_guide_is_registered(example):
    records = {(r.inputs["type"], r.inputs["name"]) for r in example.of_type(DNS_RECORD)}
    assert records == {
        ("A", "mail.example.com"),
        ("AAAA", "mail.example.com"),
        ("MX", "example.com"),
        ("TXT", "example.com"),  # SPF
        ("TXT", "mail.example.com"),  # SPF for the HELO name
        ("TXT", "mail._domainkey.example.com"),
        ("TXT", "_dmarc.example.com"),
    }


def test_records_have_fqdn_names_and_mail_host_is_never_proxied(example):
    for record in example.of_type(DNS_RECORD):
        name = record.inputs["name"]
        assert "." in name and not name.endswith("."), f"{record.urn}: name {name!r} is not a FQDN"
        assert name == name.lower(), record.urn
        if record.inputs["type"] in ("A", "AAAA"):
            assert record.inputs.get("proxied") is False, f"{record.urn}: a proxied A/AAAA record breaks SMTP"


def test_mx_points_at_the_host(example):
    [mx] = [r for r in example.of_type(DNS_RECORD) if r.inputs["type"] == "MX"]
    assert mx.inputs["content"] == "mail.example.com", mx.urn
    assert mx.inputs["priority"] == 10, mx.urn


def test_a_and_aaaa_are_the_configured_addresses(example):
    contents = {r.inputs["type"]: r.inputs["content"] for r in example.of_type(DNS_RECORD) if r.inputs["type"] in ("A", "AAAA")}
    assert contents == {"A": "192.0.2.10", "AAAA": "2001:db8::10"}


def test_spf_lists_the_addresses_and_ends_in_fail_all(example):
    spf = {r.inputs["name"]: r.inputs["content"] for r in example.of_type(DNS_RECORD) if "v=spf1" in r.inputs.get("content", "")}
    assert spf == {
        "example.com": '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"',
        "mail.example.com": '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"',
    }


def test_dkim_record_comes_from_the_dkim_units_stdout(example, dkim_key):
    cfg = load_config(stack_values("example.com"))
    [dkim_record] = [r for r in example.of_type(DNS_RECORD) if r.inputs["name"] == "mail._domainkey.example.com"]
    assert dkim_record.inputs["content"] == txt_content(dkim_value(cfg, dkim_key))
    # A 2048-bit key does not fit one TXT string: it arrives pre-split.
    assert dkim_record.inputs["content"].count('" "') >= 1
    dkim_unit = example.named("mail-host-dkim")
    assert dkim_unit.urn in dkim_record.dependencies, "the DKIM record must wait for the key the host generates"


def test_dmarc_record(example):
    [dmarc] = [r for r in example.of_type(DNS_RECORD) if r.inputs["name"] == "_dmarc.example.com"]
    assert dmarc.inputs["content"].startswith('"v=DMARC1; p=quarantine')
    assert "rua=mailto:postmaster@example.com" in dmarc.inputs["content"]


def test_every_child_is_parented_and_names_are_unique(example):
    urns = [r.urn for r in example.registrations]
    assert len(urns) == len(set(urns)), f"duplicate URNs: {sorted(u for u in urns if urns.count(u) > 1)}"
    by_urn = {r.urn: r for r in example.registrations}
    for r in example.registrations:
        if r.type in ("pulumi:pulumi:Stack", "mailstack:index:MailDomain"):
            continue
        assert r.parent in by_urn, f"{r.urn} has no component parent (parent {r.parent!r})"
    domain = example.named("mail")
    assert example.named("mail-host").parent == domain.urn
    assert example.named("mail-dns").parent == domain.urn
    host = example.named("mail-host")
    for unit in UNITS:
        assert example.named(f"mail-host-{unit}").parent == host.urn


def test_units_run_in_the_order_of_the_design(example):
    urn = {u: example.named(f"mail-host-{u}").urn for u in UNITS}
    deps = {u: set(example.named(f"mail-host-{u}").dependencies) for u in UNITS}
    for unit in UNITS[1:]:
        assert urn["packages"] in deps[unit], f"{unit} must wait for packages"
    assert {urn["tls"], urn["opendkim"], urn["policyd-spf"], urn["dovecot"], urn["accounts"]} <= deps["postfix"]
    assert urn["dkim"] in deps["opendkim"]
    assert {urn["tls"], urn["accounts"]} <= deps["dovecot"]
    assert urn["accounts"] in deps["sieve"]


def test_users_sieve_scripts_are_checked_before_dovecot_or_postfix_change(example):
    """No unit applies a change that a later unit of the same `up` refuses: a broken script fails first."""
    urn = {u: example.named(f"mail-host-{u}").urn for u in UNITS}
    deps = {u: set(example.named(f"mail-host-{u}").dependencies) for u in UNITS}
    assert urn["sieve"] in deps["dovecot"], "dovecot must wait for the users' Sieve scripts to pass sievec"
    assert urn["sieve"] in deps["postfix"], "postfix must wait for the users' Sieve scripts to pass sievec"
    assert not {urn["dovecot"], urn["postfix"]} & deps["sieve"]
    assert "sievec" in example.named("mail-host-sieve").inputs["stdin"]


def test_every_unit_checks_that_the_host_is_this_stacks(example, dkim_key):
    check = 'owner=mailstack/example.com\nif [ -e /etc/mailstack/owner ]; then'
    for unit in UNITS:
        inputs = example.named(f"mail-host-{unit}").inputs
        script = inputs["create"] if unit == "accounts" else inputs["stdin"]
        assert check in script, f"{unit} does not check the host's owner"
    # Another stack of the project, aimed at the same host, carries its own name.
    net = evaluate(with_secrets(stack_values("example.com")), SECRET_KEYS, MailMocks(dkim_key), stack="staging")
    assert "owner=mailstack/staging\n" in net.named("mail-host-packages").inputs["stdin"]


def test_service_units_carry_their_config_text_in_plain_sight(example):
    """`pulumi preview --diff` shows the changed config lines, not a hash."""
    postfix = example.named("mail-host-postfix")
    assert "stdin" not in postfix.secret_paths
    assert "message_size_limit = 25000000" in postfix.inputs["stdin"]
    assert "smtpd_banner = $myhostname ESMTP $mail_name" in postfix.inputs["stdin"]
    dovecot = example.named("mail-host-dovecot")
    assert "auth_username_format = %Ln" in dovecot.inputs["stdin"]
    sieve = example.named("mail-host-sieve")
    assert 'fileinto :create "System";' in sieve.inputs["stdin"]


def test_no_secret_appears_outside_secret_values(example):
    secrets = [SSH_KEY, HOST_KEY, PASSWORD_HASH]
    for r in example.registrations:
        text = json.dumps(_without(r.inputs, r.secret_paths))
        for secret in secrets:
            assert json.dumps(secret)[1:-1] not in text, f"{r.urn} carries a secret in plain text"
    for r in example.of_type(COMMAND):
        assert PASSWORD_HASH not in r.inputs["create"], f"{r.urn}: password hash in a command line"
        # The SDK marks the whole connection secret when any member is.
        assert r.secret_paths & {"connection", "connection.privateKey"}, f"{r.urn}: the SSH key must be a secret"
        assert r.secret_paths & {"connection", "connection.hostKey"}, f"{r.urn}: the host key must be a secret"
    accounts = example.named("mail-host-accounts")
    assert "stdin" in accounts.secret_paths
    assert PASSWORD_HASH in accounts.inputs["stdin"]
    assert accounts.inputs["logging"] == "none", "the accounts unit must not log"


def _without(value, secret_paths, path=""):
    if path in secret_paths:
        return "<secret>"
    if isinstance(value, dict):
        return {k: _without(v, secret_paths, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, secret_paths, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def test_a_second_evaluation_registers_identical_inputs(example, dkim_key):
    """So a no-op `pulumi up` runs no remote command."""
    again = evaluate(with_secrets(stack_values("example.com")), SECRET_KEYS, MailMocks(dkim_key))
    first = {r.urn: json.dumps(r.inputs, sort_keys=True) for r in example.registrations}
    second = {r.urn: json.dumps(r.inputs, sort_keys=True) for r in again.registrations}
    assert first == second


def test_changing_message_size_limit_touches_only_postfix(example, dkim_key):
    values = with_secrets(stack_values("example.com"))
    values["mailstack:message_size_limit"] = 30000000
    changed = evaluate(values, SECRET_KEYS, MailMocks(dkim_key))
    before = {r.urn: json.dumps(r.inputs, sort_keys=True) for r in example.registrations}
    after = {r.urn: json.dumps(r.inputs, sort_keys=True) for r in changed.registrations}
    assert before.keys() == after.keys()
    assert [urn.rsplit("::", 1)[1] for urn in before if before[urn] != after[urn]] == ["mail-host-postfix"]


def test_stack_outputs(example):
    outputs = example.stack_outputs
    assert outputs["hostname"] == "mail.example.com"
    assert outputs["addresses"] == ["192.0.2.10", "2001:db8::10"]
    assert outputs["dkim_selector"] == "mail"
    assert {p["address"]: p["target"] for p in outputs["expected_ptrs"]} == {
        "192.0.2.10": "mail.example.com",
        "2001:db8::10": "mail.example.com",
    }
    assert {(r["type"], r["name"]) for r in outputs["records"]} >= {("MX", "example.com"), ("A", "mail.example.com")}


def test_second_stack_publishes_ptr_in_its_reverse_zone(dkim_key):
    net = evaluate(with_secrets(stack_values("example.net")), SECRET_KEYS, MailMocks(dkim_key), stack="example.net")
    ptrs = [r for r in net.of_type(DNS_RECORD) if r.inputs["type"] == "PTR"]
    assert [(r.inputs["name"], r.inputs["content"]) for r in ptrs] == [("20.2.0.192.in-addr.arpa", "mx.example.net")]
    assert ptrs[0].inputs["zoneId"] == "zone-2.0.192.in-addr.arpa"
    [dkim] = [r for r in net.of_type(DNS_RECORD) if "_domainkey" in r.inputs["name"]]
    assert dkim.inputs["name"] == "s2026._domainkey.example.net"


def test_bad_config_fails_before_any_resource(dkim_key):
    values = stack_values("example.com")
    values["mailstack:hostname"] = "mail"
    mocks = MailMocks(dkim_key)
    monitor = RecordingMonitor(mocks)
    with pytest.raises(pulumi.RunError) as err:
        evaluate(values, [], mocks, monitor=monitor)
    assert [r.type for r in monitor.registrations] == ["pulumi:pulumi:Stack"], "nothing may be created"
    assert "mailstack:hostname: 'mail' is not a fully-qualified domain name (expected e.g. mail.example.com)" in str(err.value)
