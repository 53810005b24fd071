"""The whole program under the SDK's mocks: what a reviewer of `pulumi preview` cares about.

Two kinds of stack: the host stack (tests/fixtures/stacks/Pulumi.host-mail.yaml)
and the domain stacks (Pulumi.example.com.yaml, Pulumi.example.org.yaml), each
evaluated against the host stack's exports (tests/program/stacks.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import shlex

import pulumi
import pytest

from components.records import dkim_value, txt_content
from tests.conftest import stack_config, stack_values
from tests.program.harness import HOST_MAIL_OUTPUTS, UNKNOWN, MailMocks, RecordingMonitor, evaluate
from tests.program.stacks import (
    COMMAND,
    DNS_RECORD,
    DOMAIN_UNITS,
    HOST_KEY,
    HOST_UNITS,
    PASSWORD_HASH,
    SECRET_KEYS,
    SSH_KEY,
    dkim_public_key,
    evaluate_domain,
    evaluate_host,
    host_mocks,
    with_secrets,
)

UNKNOWN_VALUE = UNKNOWN


@pytest.fixture(scope="module")
def host():
    return evaluate_host()


@pytest.fixture(scope="module")
def example():
    """The domain stack example.com."""
    return evaluate_domain()


def _names(evaluation, type_):
    return sorted(r.name for r in evaluation.of_type(type_))


# --- the host stack --------------------------------------------------------------------------------


def test_host_components_and_units_exist(host):
    assert _names(host, "mailstack:index:MailHost") == ["host"]
    assert _names(host, "mailstack:index:MailDns") == ["host-dns"]
    assert host.of_type("mailstack:index:MailDomain") == []
    assert _names(host, COMMAND) == sorted(f"host-{u}" for u in HOST_UNITS)
    assert host.reads == [], "a host stack reads no other stack"


def test_host_records_are_the_hosts_own(host):
    records = {(r.inputs["type"], r.inputs["name"], r.inputs["content"]) for r in host.of_type(DNS_RECORD)}
    assert records == {
        ("A", "mail.example.net", "192.0.2.10"),
        ("AAAA", "mail.example.net", "2001:db8::10"),
        # SPF for the HELO name: bounces (empty MAIL FROM) are checked against it.
        ("TXT", "mail.example.net", '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"'),
    }
    # No reverse zone configured: the expected PTRs are exported, none is published.
    assert {p["address"]: p["target"] for p in host.stack_outputs["expected_ptrs"]} == {
        "192.0.2.10": "mail.example.net",
        "2001:db8::10": "mail.example.net",
    }
    assert {r.inputs["zoneId"] for r in host.of_type(DNS_RECORD)} == {"zone-example.net"}


def test_host_units_run_in_the_order_of_the_design(host):
    urn = {u: host.named(f"host-{u}").urn for u in HOST_UNITS}
    deps = {u: set(host.named(f"host-{u}").dependencies) for u in HOST_UNITS}
    for unit in HOST_UNITS[1:]:
        assert urn["packages"] in deps[unit], f"{unit} must wait for packages"
    assert deps["packages"] == set()
    # The tables (vmail, the assembler, the first tables) exist before a daemon reads them.
    assert urn["tables"] in deps["opendkim"] and urn["tables"] in deps["dovecot"] and urn["tables"] in deps["postfix"]
    assert {urn["tls"], urn["opendkim"], urn["policyd-spf"], urn["dovecot"]} <= deps["postfix"]
    # Postfix's DANE needs the validating resolver in place before Postfix uses it.
    assert urn["resolver"] in deps["postfix"]
    assert urn["tls"] in deps["dovecot"]
    # fail2ban's jails read Postfix's and Dovecot's logs.
    assert {urn["postfix"], urn["dovecot"]} <= deps["fail2ban"]


def _host_script(host, unit: str) -> str:
    """A host unit's script: its stdin, or its command for rspamd's (whose stdin is the controller's password)."""
    if unit == "rspamd":
        sudo_bash, script = host.named("host-rspamd").inputs["create"].split(" -c ", 1)
        assert sudo_bash in ("bash", "sudo -n bash")
        return shlex.split(script)[0]
    return host.named(f"host-{unit}").inputs["stdin"]


def test_every_host_unit_checks_that_the_host_is_this_host_stacks(host):
    for unit in HOST_UNITS:
        script = _host_script(host, unit)
        assert script.startswith("# mailstack: host stack mailstack/host-mail converges mail.example.net."), unit
        assert "owner=mailstack/host-mail\n" in script and "/etc/mailstack/host" in script, unit
    # Another host stack of the project carries its own name.
    staging = evaluate_host(stack="host-staging")
    assert "owner=mailstack/host-staging\n" in staging.named("host-packages").inputs["stdin"]
    assert staging.stack_outputs["host_id"] == "mailstack/host-staging"


def test_host_service_units_carry_their_config_text_in_plain_sight(host):
    """`pulumi preview --diff` shows the changed config lines, not a hash."""
    postfix = host.named("host-postfix")
    assert "stdin" not in postfix.secret_paths
    assert "message_size_limit = 25000000" in postfix.inputs["stdin"]
    assert "smtpd_banner = $myhostname ESMTP $mail_name" in postfix.inputs["stdin"]
    assert "soft_bounce = yes" in postfix.inputs["stdin"]  # the example host is being tested
    dovecot = host.named("host-dovecot")
    assert "auth_username_format = %Lu" in dovecot.inputs["stdin"]
    tables = host.named("host-tables")
    assert "/usr/local/sbin/mailstack-assemble" in tables.inputs["stdin"]


def test_rspamd_unit_carries_its_config_in_plain_sight_and_its_password_as_a_secret(host):
    rspamd = host.named("host-rspamd")
    assert "stdin" in rspamd.secret_paths
    script = _host_script(host, "rspamd")
    assert "reject = 15;" in script and "greylist = 4;" in script and 'bind_socket = "127.0.0.1:11332";' in script
    # It reads the password before anything else reads stdin; the password's file is the stage's.
    assert script.index('IFS= read -r rspamd_password') < script.index("STAGE=$(mktemp")


def test_host_secrets_stay_secret(host):
    for r in host.registrations:
        text = json.dumps(_without(r.inputs, r.secret_paths))
        for secret in (SSH_KEY, HOST_KEY):
            assert json.dumps(secret)[1:-1] not in text, f"{r.urn} carries a secret in plain text"
    for r in host.of_type(COMMAND):
        assert r.secret_paths & {"connection", "connection.privateKey"}, f"{r.urn}: the SSH key must be a secret"
        assert r.secret_paths & {"connection", "connection.hostKey"}, f"{r.urn}: the host key must be a secret"
    # What the domain stacks read: the keys, as secrets.
    assert host.secret_outputs == ["ssh_host_key", "ssh_private_key"]
    assert host.stack_outputs["ssh_private_key"] == SSH_KEY


def test_host_stack_outputs(host):
    outputs = host.stack_outputs
    # The harness answers domain stacks' StackReferences with HOST_MAIL_OUTPUTS: they are what
    # the example host stack really exports (its keys are secrets, unset in the fixture).
    plain = ("host_id", "hostname", "addresses", "ssh_host", "ssh_port", "ssh_user", "postmaster_address")
    assert {k: outputs[k] for k in plain} == {k: HOST_MAIL_OUTPUTS[k] for k in plain}
    assert {(r["type"], r["name"]) for r in outputs["records"]} == {
        ("A", "mail.example.net"), ("AAAA", "mail.example.net"), ("TXT", "mail.example.net")}


ACME_TOKEN = "cfTokenForProgramTests_0123456789abcdef"


def test_an_acme_host_sends_the_token_to_the_tls_unit_as_a_secret_and_exports_its_mode(host):
    assert host.stack_outputs["tls"] == "self-signed"
    values = with_secrets(stack_values("host-mail"))
    values.update({"mailstack:tls": "acme", "mailstack:acme_cloudflare_token": ACME_TOKEN})
    acme = evaluate_host(values)
    tls = acme.named("host-tls")
    assert "stdin" in tls.secret_paths and tls.inputs["logging"] == "none"
    assert "mailstack-tls" in tls.inputs["create"] and "python3-certbot-dns-cloudflare" in acme.named(
        "host-packages").inputs["stdin"]
    for r in acme.registrations:
        assert ACME_TOKEN not in json.dumps(_without(r.inputs, r.secret_paths)), f"{r.urn} carries the token"
    assert ACME_TOKEN not in json.dumps(acme.stack_outputs)
    assert acme.stack_outputs["tls"] == "acme"
    # The other units are as they were: only the TLS and packages units change, and the web unit
    # (nginx for the domains' MTA-STS policies) comes with acme.
    assert _changed(host, acme, added=["host-web"]) == ["host-packages", "host-tls"]


def test_a_host_with_a_reverse_zone_publishes_its_ptr_there():
    values = with_secrets(stack_values("host-mail"))
    values["mailstack:reverse_zones"] = ["2.0.192.in-addr.arpa"]
    host = evaluate_host(values)
    ptrs = [r for r in host.of_type(DNS_RECORD) if r.inputs["type"] == "PTR"]
    assert [(r.name, r.inputs["name"], r.inputs["content"]) for r in ptrs] == [
        ("host-dns-ptr-192-0-2-10", "10.2.0.192.in-addr.arpa", "mail.example.net")]
    assert ptrs[0].inputs["zoneId"] == "zone-2.0.192.in-addr.arpa"


def test_a_second_host_evaluation_registers_identical_inputs(host):
    """So a no-op `pulumi up` runs no remote command."""
    assert _inputs(evaluate_host()) == _inputs(host)


def test_changing_message_size_limit_touches_only_postfix(host):
    values = with_secrets(stack_values("host-mail"))
    values["mailstack:message_size_limit"] = 30000000
    assert _changed(host, evaluate_host(values)) == ["host-postfix"]


def test_bad_host_config_fails_before_any_resource():
    values = stack_values("host-mail")
    values["mailstack:hostname"] = "mail"
    message = "mailstack:hostname: 'mail' is not a fully-qualified domain name (expected e.g. mail.example.com)"
    _assert_refused(values, message, stack="host-mail")


# --- a domain stack --------------------------------------------------------------------------------


def test_domain_components_and_units_exist(example):
    assert _names(example, "mailstack:index:MailDomain") == ["domain"]
    assert _names(example, "mailstack:index:MailDns") == ["domain-dkim-dns", "domain-dns"]
    assert example.of_type("mailstack:index:MailHost") == []
    assert _names(example, COMMAND) == sorted(f"domain-{u}" for u in DOMAIN_UNITS)
    # The host stack is read, never created: by the name mailstack:host_stack gives; and the
    # stack's own previous outputs (its DKIM state).
    reads = {r.name: r for r in example.reads}
    assert sorted(reads) == ["domain-host-stack", "domain-previous"]
    read = reads["domain-host-stack"]
    assert (read.type, read.inputs["name"]) == ("pulumi:pulumi:StackReference", "host-mail")
    assert read.parent == example.named("domain").urn
    assert (reads["domain-previous"].type, reads["domain-previous"].inputs["name"]) == (read.type, "example.com")


def test_the_host_stack_may_be_named_in_full():
    values = with_secrets(stack_values("example.com"))
    values["mailstack:host_stack"] = "organization/mailstack/host-mail"
    evaluation = evaluate_domain(values)
    assert [r.inputs["name"] for r in evaluation.reads if r.name == "domain-host-stack"] == [
        "organization/mailstack/host-mail"]


SRV_NAMES = {("SRV", f"{label}.example.com") for label in (
    "_submissions._tcp", "_submission._tcp", "_imaps._tcp", "_imap._tcp", "_pop3s._tcp", "_pop3._tcp")}


def test_domain_records_point_at_the_host_of_the_host_stack(example):
    records = {(r.inputs["type"], r.inputs["name"]) for r in example.of_type(DNS_RECORD)}
    assert records == {
        ("MX", "example.com"),
        ("TXT", "example.com"),  # SPF
        ("TXT", "mail._domainkey.example.com"),
        ("TXT", "_dmarc.example.com"),
        ("TXT", "_smtp._tls.example.com"),  # TLS-RPT; no MTA-STS: the example host is self-signed
        *SRV_NAMES,  # RFC 6186 SRV for mail clients; no autoconfig.<domain>: self-signed too
    }, "the host's A/AAAA and HELO SPF are the host stack's, never a domain stack's"
    by_name = {(r.inputs["type"], r.inputs["name"]): r for r in example.of_type(DNS_RECORD)}
    mx = by_name[("MX", "example.com")]
    assert (mx.inputs["content"], mx.inputs["priority"]) == ("mail.example.net", 10), mx.urn
    spf = by_name[("TXT", "example.com")]
    assert spf.inputs["content"] == '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"', spf.urn
    dmarc = by_name[("TXT", "_dmarc.example.com")]
    assert dmarc.inputs["content"] == '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"'
    read = next(r for r in example.reads if r.name == "domain-host-stack").urn
    assert read in mx.dependencies and read in spf.dependencies, "MX and SPF come from the host stack's outputs"
    assert {r.inputs["zoneId"] for r in example.of_type(DNS_RECORD)} == {"zone-example.com"}


def test_a_host_stack_of_another_name_and_address_changes_mx_and_spf_alone():
    values = with_secrets(stack_values("host-mail"))
    values.update({"mailstack:hostname": "mx.example.net", "mailstack:ipv4": ["192.0.2.20"], "mailstack:ipv6": []})
    other = evaluate_domain(mocks=host_mocks(evaluate_host(values)))
    records = {r.name: r.inputs.get("content") for r in other.of_type(DNS_RECORD)}
    assert records["domain-dns-mx"] == "mx.example.net"
    assert records["domain-dns-spf"] == '"v=spf1 ip4:192.0.2.20 -all"'
    # The SRV records of the services the host offers name it too.
    assert _changed(evaluate_domain(), other) == ["domain-dns-mx", "domain-dns-spf", "domain-dns-srv-imap",
                                                  "domain-dns-srv-imaps", "domain-dns-srv-submission"]


def test_dkim_record_comes_from_the_dkim_units_stdout(example):
    cfg = stack_config("example.com")
    [dkim_record] = [r for r in example.of_type(DNS_RECORD) if r.inputs["name"] == "mail._domainkey.example.com"]
    assert dkim_record.inputs["content"] == txt_content(dkim_value(cfg, dkim_public_key()))
    # A 2048-bit key does not fit one TXT string: it arrives pre-split.
    assert dkim_record.inputs["content"].count('" "') >= 1
    assert example.named("domain-dkim-key-mail").urn in dkim_record.dependencies, "the DKIM record waits for the key"


def test_example_org_has_its_own_selector_and_policy():
    org = evaluate_domain(stack="example.org")
    records = {r.name: (r.inputs["name"], r.inputs.get("content")) for r in org.of_type(DNS_RECORD)}
    assert records["domain-dns-dkim-s2026"][0] == "s2026._domainkey.example.org"
    assert records["domain-dns-dmarc"][1].startswith('"v=DMARC1; p=reject;')
    assert records["domain-dns-mx"] == ("example.org", "mail.example.net")
    files = org.named("domain-files").inputs["stdin"]
    assert "\ncarol@example.org\n" in files  # the catch-all file


def test_domain_units_run_in_the_order_of_the_design(example):
    urn = {u: example.named(f"domain-{u}").urn for u in DOMAIN_UNITS}
    deps = {u: set(example.named(f"domain-{u}").dependencies) for u in DOMAIN_UNITS}
    # The key exists before the assembler names it in KeyTable; the passwords after the mailboxes.
    assert urn["dkim-signing"] in deps["files"]
    assert urn["dkim-key-mail"] in deps["dkim-signing"]
    assert example.named("domain-dns-dkim-mail").urn in deps["dkim-signing"], "the record exists before the wait"
    assert urn["files"] in deps["passwords"]
    assert not (deps["dkim-key-mail"] - {r.urn for r in example.reads}), "the key unit waits for nothing"


def test_every_domain_unit_checks_its_host_stack_and_its_domain(example):
    check = "owner=mailstack/example.com\nhost_stack=mailstack/host-mail\n"
    for unit in DOMAIN_UNITS:
        inputs = example.named(f"domain-{unit}").inputs
        script = inputs["create"] if unit == "passwords" else inputs["stdin"]
        assert check in script, f"{unit} does not check the host stack and the domain's owner"
    assert check in example.named("domain-files").inputs["delete"]


def test_a_domain_stack_checks_the_host_id_its_host_stack_exports():
    """The host stack's own name on the host (host_id), not the name the domain stack gave it."""
    host = evaluate_host(stack="host-staging")
    values = with_secrets(stack_values("example.com"))
    values["mailstack:host_stack"] = "host-staging"
    staging = evaluate_domain(values, mocks=host_mocks(host, host_stack="host-staging"))
    assert "host_stack=mailstack/host-staging\n" in staging.named("domain-dkim-key-mail").inputs["stdin"]
    # A second stack for the same domain carries its own name (and is refused on the host).
    copy = evaluate_domain(stack="example.com", mocks=host_mocks())
    assert "owner=mailstack/example.com\n" in copy.named("domain-dkim-key-mail").inputs["stdin"]
    again = evaluate(with_secrets(stack_values("example.com")), SECRET_KEYS, host_mocks(), stack="example.com-copy")
    assert "owner=mailstack/example.com-copy\n" in again.named("domain-dkim-key-mail").inputs["stdin"]


def test_the_files_unit_carries_the_checks_and_retires_on_destroy(example):
    files = example.named("domain-files").inputs
    # The users' Sieve scripts, in plain sight, checked with sievec and the assembler before the swap.
    assert 'fileinto :create "System";' in files["stdin"]
    assert "sievec" in files["stdin"]
    assert '/usr/local/sbin/mailstack-assemble --check example.com "$STAGE"/etc/mailstack/domains/example.com' \
        in files["stdin"]
    assert "team@example.com alice@example.com,carol@example.org\n" in files["stdin"]
    assert "/usr/local/sbin/mailstack-assemble --retire example.com\n" in files["delete"]


def test_domain_secrets_come_from_the_host_stack_and_stay_secret(example):
    for r in example.registrations:
        text = json.dumps(_without(r.inputs, r.secret_paths))
        for secret in (SSH_KEY, HOST_KEY, PASSWORD_HASH):
            assert json.dumps(secret)[1:-1] not in text, f"{r.urn} carries a secret in plain text"
    for r in example.of_type(COMMAND):
        assert PASSWORD_HASH not in r.inputs["create"], f"{r.urn}: password hash in a command line"
        # The host stack's SSH key, a secret output there, stays one here.
        assert r.inputs["connection"]["privateKey"] == SSH_KEY, r.urn
        assert r.secret_paths & {"connection", "connection.privateKey"}, f"{r.urn}: the SSH key must be a secret"
        assert r.secret_paths & {"connection", "connection.hostKey"}, f"{r.urn}: the host key must be a secret"
        assert r.inputs["connection"]["host"] == "192.0.2.10" and r.inputs["connection"]["user"] == "root"
    passwords = example.named("domain-passwords")
    assert "stdin" in passwords.secret_paths
    assert passwords.inputs["stdin"] == f"alice@example.com\t{PASSWORD_HASH}\n"
    assert passwords.inputs["logging"] == "none", "the passwords unit must not log"
    assert example.secret_outputs == []
    assert PASSWORD_HASH not in json.dumps(example.stack_outputs)


def test_the_ssh_key_is_secret_because_the_host_stack_exports_it_as_one():
    """The secrecy travels with the host stack's output (its secretOutputNames), not with its value.

    (pulumi_command marks a Command's whole `connection` secret in any case; the
    domain stack's exports and records must not hold the key either way.)
    """
    def secrecy(secret_outputs):
        found = {}

        def program():
            ref = pulumi.StackReference("domain-host-stack", stack_name="host-mail")
            keys = ("ssh_private_key", "ssh_host_key", "hostname")
            checks = [ref.get_output(key).is_secret() for key in keys]
            return pulumi.Output.from_input(asyncio.gather(*checks)).apply(
                lambda values: found.update(zip(keys, values)))

        def isolated():
            pulumi.runtime.settings.ROOT.set(None)
            pulumi.runtime.set_mocks(host_mocks(secret_outputs=secret_outputs), project="mailstack", stack="t")
            pulumi.runtime.test(program)()

        contextvars.copy_context().run(isolated)
        return found

    assert secrecy(None) == {"ssh_private_key": True, "ssh_host_key": True, "hostname": False}
    assert secrecy([]) == {"ssh_private_key": False, "ssh_host_key": False, "hostname": False}


def test_a_host_stack_without_keys_leaves_the_connection_to_the_agent():
    values = stack_values("host-mail")  # no ssh_private_key, no ssh_host_key
    domain = evaluate_domain(mocks=host_mocks(evaluate_host(values)))
    connection = domain.named("domain-dkim-key-mail").inputs["connection"]
    assert "privateKey" not in connection and "hostKey" not in connection, connection


def test_a_second_domain_evaluation_registers_identical_inputs(example):
    assert _inputs(evaluate_domain()) == _inputs(example)


def test_a_new_password_touches_only_the_passwords_unit(example):
    values = with_secrets(stack_values("example.com"))
    values["mailstack:users"][0]["password_hash"] = PASSWORD_HASH.replace("abc", "xyz")
    assert _changed(example, evaluate_domain(values)) == ["domain-passwords"]


def test_a_new_alias_touches_only_the_files_unit(example):
    values = with_secrets(stack_values("example.com"))
    values["mailstack:aliases"].append({"address": "info@example.com", "to": ["alice@example.com"]})
    assert _changed(example, evaluate_domain(values)) == ["domain-files"]


def test_domain_stack_outputs(example):
    outputs = example.stack_outputs
    assert outputs["domain"] == "example.com"
    assert outputs["hostname"] == "mail.example.net"  # from the host stack
    assert outputs["dkim_selector"] == "mail"
    assert outputs["mailboxes"] == ["alice@example.com"]
    assert {(r["type"], r["name"]) for r in outputs["records"]} == {
        ("MX", "example.com"), ("TXT", "example.com"), ("TXT", "mail._domainkey.example.com"),
        ("TXT", "_dmarc.example.com"), ("TXT", "_smtp._tls.example.com"), *SRV_NAMES}


def test_in_preview_only_the_dkim_content_waits():
    """Preview: no command has run, so the DKIM key is unknown; MX and SPF are known from the host stack."""
    preview = evaluate_domain(mocks=host_mocks(commands_ran=False), preview=True)
    srv = [r for r in preview.of_type(DNS_RECORD) if r.inputs["type"] == "SRV"]
    assert len(srv) == 6 and all(r.inputs["data"]["target"] in ("mail.example.net", ".") for r in srv)
    records = {r.name: r.inputs["content"] for r in preview.of_type(DNS_RECORD) if r.inputs["type"] != "SRV"}
    assert records.pop("domain-dns-dkim-mail") == UNKNOWN_VALUE
    assert records == {
        "domain-dns-mx": "mail.example.net",
        "domain-dns-spf": '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"',
        "domain-dns-dmarc": '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"',
        "domain-dns-tls-rpt": '"v=TLSRPTv1; rua=mailto:postmaster@example.com"',
    }
    # Every unit's script is known in preview (the reviewer reads what will run).
    for unit in ("dkim-key-mail", "dkim-signing", "files"):
        assert "owner=mailstack/example.com" in preview.named(f"domain-{unit}").inputs["stdin"]


def test_a_host_stack_that_exports_nothing_is_a_clear_error():
    mocks = MailMocks(dkim_public_key(), stacks={"host-mail": {"hostname": "mail.example.net"}})
    with pytest.raises(Exception) as err:
        evaluate_domain(mocks=mocks)
    assert ("the host stack exports no host_id, addresses, ssh_user (is mailstack:host_stack a host stack, "
            "and has `pulumi up` run for it?)") in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ipv4", ["192.0.2.10"], "mailstack:ipv4: is a host-stack key; set it in the host stack "
                                 "(mailstack:host_stack names it)"),
        # Pulumi.yaml's default is true: only a value other than the default is refused.
        ("soft_bounce", False, "mailstack:soft_bounce: is a host-stack key; set it in the host stack "
                              "(mailstack:host_stack names it)"),
    ],
)
def test_a_host_key_in_a_domain_stack_fails_before_any_resource(key, value, message):
    values = stack_values("example.com")
    values[f"mailstack:{key}"] = value
    _assert_refused(values, message)


def test_a_domain_key_in_the_host_stack_fails_before_any_resource():
    values = stack_values("host-mail")
    values["mailstack:users"] = [{"name": "alice"}]
    _assert_refused(values, "mailstack:users: is a domain-stack key; set it in the stack of its domain "
                            "(the stack with mailstack:domain and mailstack:host_stack)", stack="host-mail")


# --- helpers ---------------------------------------------------------------------------------------


def _assert_refused(values: dict, message: str, stack: str = "example.com") -> None:
    mocks = host_mocks()
    monitor = RecordingMonitor(mocks)
    with pytest.raises(pulumi.RunError) as err:
        evaluate(values, [], mocks, monitor=monitor, stack=stack)
    assert [r.type for r in monitor.registrations] == ["pulumi:pulumi:Stack"], "nothing may be created"
    assert monitor.reads == [], "not even the host stack is read"
    assert str(err.value).startswith("invalid stack configuration:\n")
    assert message in str(err.value).splitlines()


def _inputs(evaluation) -> dict[str, str]:
    return {r.urn: json.dumps(r.inputs, sort_keys=True) for r in evaluation.registrations}


def _changed(before_eval, after_eval, added: list[str] = ()) -> list[str]:
    before, after = _inputs(before_eval), _inputs(after_eval)
    assert sorted(urn.rsplit("::", 1)[1] for urn in after.keys() - before.keys()) == sorted(added)
    assert before.keys() <= after.keys()
    return sorted(urn.rsplit("::", 1)[1] for urn in before if before[urn] != after[urn])


def _without(value, secret_paths, path=""):
    if path in secret_paths:
        return "<secret>"
    if isinstance(value, dict):
        return {k: _without(v, secret_paths, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, secret_paths, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def test_a_dnssec_host_signs_its_zone_and_publishes_tlsa_records_of_both_keys():
    values = with_secrets(stack_values("host-mail"))
    values["mailstack:dnssec"] = True
    host = evaluate_host(values)
    tlsa = {r.name: r.inputs for r in host.of_type(DNS_RECORD) if r.inputs["type"] == "TLSA"}
    # Key number 0 is served: its record is tlsa-0, the next key's tlsa-1 (harness TLS_UNIT_STDOUT).
    assert {name: (t["name"], t["data"]) for name, t in tlsa.items()} == {
        "host-dns-tlsa-0": ("_25._tcp.mail.example.net",
                            {"usage": 3, "selector": 1, "matchingType": 1, "certificate": "11" * 32}),
        "host-dns-tlsa-1": ("_25._tcp.mail.example.net",
                            {"usage": 3, "selector": 1, "matchingType": 1, "certificate": "22" * 32}),
    }
    assert all("content" not in t for t in tlsa.values()), "Cloudflare takes a TLSA record as data"
    dnssec = host.of_type("cloudflare:index/zoneDnssec:ZoneDnssec")
    assert [(r.name, r.inputs) for r in dnssec] == [("host-dnssec", {"zoneId": "zone-example.net", "status": "active"})]
    assert "dnssec_ds" in host.stack_outputs
    # Without dnssec: neither.
    plain = evaluate_host()
    assert not [r for r in plain.of_type(DNS_RECORD) if r.inputs["type"] == "TLSA"]
    assert plain.of_type("cloudflare:index/zoneDnssec:ZoneDnssec") == [] and "dnssec_ds" not in plain.stack_outputs
