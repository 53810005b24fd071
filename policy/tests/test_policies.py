"""Each policy's validate function, on resource properties shaped as the engine gives them.

Properties are the inputs the program registers (camelCase, numbers as floats),
taken from what `tests/program` records for the example stacks; a violation
names the resource's URN.
"""

from __future__ import annotations

import json

import pytest
from conftest import COMMAND, DNS_RECORD, UNKNOWN, secret, urn, validate, validate_stack
from keys import ED25519, RSA_1024, RSA_2048, RSA_2048_PKCS1, RSA_4096

import pack
import rules

HOST = "mail.example.com"
HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDkE8zVn7sM0j5jmyTxt0Q3yGMsyYB5OOSb8fT2KcNXpwAAAJhq3fs2at37\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
RUNNER = 'umask 077\nf=$(mktemp) || exit 1\ntrap \'rm -f "$f"\' EXIT\ncat >"$f" && bash "$f"\n'


def txt(value: str) -> str:
    """TXT content as the program sends it: quoted strings of at most 255 bytes, one space apart."""
    data = value.encode()
    return " ".join('"' + data[i : i + 255].decode() + '"' for i in range(0, len(data), 255))


def record(type_: str, name: str, content: str, **extra) -> dict:
    return {
        "zoneId": "0123456789abcdef0123456789abcdef",
        "name": name,
        "type": type_,
        "content": content,
        "ttl": 1.0,
        "proxied": False,
        "comment": "Required: ...",
        **extra,
    }


def command(stdin: str = "echo ok\n", create: str = RUNNER, **extra) -> dict:
    connection = {"host": "192.0.2.10", "port": 22.0, "user": "root", "perDialTimeout": 15.0, "dialErrorLimit": 10.0}
    return {"create": create, "stdin": stdin, "connection": secret(connection), **extra}


def dkim(key: str, tags: str = "v=DKIM1; h=sha256; k=rsa; s=email") -> dict:
    return record("TXT", "mail._domainkey.example.com", txt(f"{tags}; p={key}"))


# --- mail-host-not-proxied ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "violates"),
    [
        (record("A", HOST, "192.0.2.10"), False),
        (record("AAAA", HOST, "2001:db8::10"), False),
        (record("A", HOST, "192.0.2.10", proxied=True), True),
        (record("AAAA", HOST, "2001:db8::10", proxied=True), True),
        ({k: v for k, v in record("A", HOST, "192.0.2.10").items() if k != "proxied"}, False),  # provider default
        (record("CNAME", "www.example.com", "example.com", proxied=True), False),  # not the mail host's
    ],
)
def test_mail_host_records_are_never_proxied(props, violates):
    outcome = validate(pack.mail_host_not_proxied, DNS_RECORD, props, name="mail-dns-a")
    assert bool(outcome.violations) == violates
    if violates:
        [(message, where)] = outcome.violations
        assert f"{props['type']} {HOST} is proxied by Cloudflare" in message
        assert where == urn(DNS_RECORD, "mail-dns-a")


# --- records-in-their-stack ----------------------------------------------------------------


def stack(*records):
    return [(DNS_RECORD, f"r{i}", props) for i, props in enumerate(records)]


HOST_STACK = {"mailstack:hostname": HOST}
DOMAIN_STACK = {"mailstack:domain": "example.com", "mailstack:host_stack": "host-mail"}
HOST_SPF = record("TXT", HOST, txt("v=spf1 ip4:192.0.2.10 -all"))


@pytest.mark.parametrize(
    ("config", "records", "problem"),
    [
        # The host stack: the host's own records.
        (HOST_STACK, [record("A", HOST, "192.0.2.10"), record("AAAA", HOST, "2001:db8::10"), HOST_SPF], None),
        (HOST_STACK, [record("PTR", "10.2.0.192.in-addr.arpa", HOST)], None),
        (HOST_STACK, [record("A", HOST, "192.0.2.10"), record("MX", "example.com", HOST, priority=10.0)],
         "MX of example.com in the host stack: MX records are the domain stacks'"),
        # A domain stack: MX to the host stack's name, SPF, DKIM, DMARC.
        (DOMAIN_STACK, [record("MX", "example.com", HOST, priority=10.0), record("TXT", "example.com", txt("v=spf1 -all"))],
         None),
        (DOMAIN_STACK, [record("MX", "example.com", "Mail.Example.com.", priority=10.0)], None),
        (DOMAIN_STACK, [record("A", HOST, "192.0.2.10"), record("MX", "example.com", HOST, priority=10.0)],
         "A of mail.example.com in a domain stack: the host's addresses are its host stack's records"),
        (DOMAIN_STACK, [record("AAAA", HOST, "2001:db8::10")], "AAAA of mail.example.com in a domain stack"),
        # MTA-STS: the domain's policy host, beside its MX, is the domain stack's.
        (DOMAIN_STACK, [record("MX", "example.com", HOST, priority=10.0), record("A", "mta-sts.example.com", "192.0.2.10"),
                        record("AAAA", "mta-sts.example.com", "2001:db8::10")], None),
        (DOMAIN_STACK, [record("MX", "example.com", HOST, priority=10.0), record("A", "autoconfig.example.com", "192.0.2.10"),
                        record("AAAA", "autoconfig.example.com", "2001:db8::10")], None),
        (DOMAIN_STACK, [record("MX", "example.com", HOST, priority=10.0), record("A", "autoconfig.example.org", "192.0.2.10")],
         "A of autoconfig.example.org in a domain stack"),
        (DOMAIN_STACK, [record("MX", "example.com", HOST, priority=10.0), record("A", "mta-sts.example.org", "192.0.2.10")],
         "A of mta-sts.example.org in a domain stack"),
        (DOMAIN_STACK, [record("MX", "example.com", "192.0.2.10", priority=10.0)],
         "MX of example.com points at '192.0.2.10', not at a host name (RFC 5321 5.1)"),
        # The DKIM key is unknown during preview; the check never needs it.
        (DOMAIN_STACK, [record("MX", "example.com", HOST, priority=10.0),
                        record("TXT", "mail._domainkey.example.com", UNKNOWN)], None),
    ],
)
def test_records_are_in_the_stack_of_their_kind(stack_config, config, records, problem):
    stack_config(config)
    outcome = validate_stack(pack.records_in_their_stack, stack(*records))
    assert outcome.not_applicable is None
    if problem is None:
        assert outcome.violations == []
    else:
        [(message, where)] = outcome.violations
        assert message.startswith(problem), message
        assert where == urn(DNS_RECORD, f"r{len(records) - 1}") or where == urn(DNS_RECORD, "r0")


def test_the_stack_kind_comes_from_the_config():
    assert rules.stack_kind(HOST_STACK) == "host"
    assert rules.stack_kind(DOMAIN_STACK) == "domain"
    # The engine sends every declared default: a host stack gets domain = "".
    assert rules.stack_kind({"mailstack:domain": "", "mailstack:hostname": HOST}) == "host"
    assert rules.stack_kind({}) == ""


# --- spf-ends-in-all ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all", None),
        ("v=spf1 ip4:192.0.2.10 ~all", None),
        ("v=spf1 ip4:192.0.2.10 -ALL", None),
        ("v=spf1 ip4:192.0.2.10 +all", "allows every sender with +all"),
        ("v=spf1 ip4:192.0.2.10 all", "allows every sender with +all"),
        ("v=spf1 ip4:192.0.2.10 ?all", "does not end in -all or ~all (it ends in '?all')"),
        ("v=spf1 ip4:192.0.2.10", "does not end in -all or ~all (it ends in 'ip4:192.0.2.10')"),
        ("v=spf1 redirect=_spf.example.net", "does not end in -all or ~all"),
        ("v=spf1 -all ip4:192.0.2.10", "does not end in -all or ~all"),
        # Not SPF: the checks leave them alone.
        ("v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com", None),
        ("google-site-verification=abc +all", None),
    ],
)
def test_spf_ends_in_minus_or_tilde_all_and_never_plus_all(value, problem):
    outcome = validate(pack.spf_ends_in_all, DNS_RECORD, record("TXT", "example.com", txt(value)))
    if problem is None:
        assert outcome.violations == []
    else:
        assert any(problem in message for message in outcome.messages), outcome.messages
        assert all(message.startswith("SPF record at example.com (") for message in outcome.messages)


def test_spf_split_into_chunks_is_read_whole():
    # 40 addresses: longer than one 255-byte string, so "-all" sits in the second chunk.
    value = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(40)) + " -all"
    content = txt(value)
    assert content.count('" "') >= 1
    assert validate(pack.spf_ends_in_all, DNS_RECORD, record("TXT", "example.com", content)).violations == []
    broken = txt(value[: -len(" -all")] + " +all")
    assert validate(pack.spf_ends_in_all, DNS_RECORD, record("TXT", "example.com", broken)).violations


# --- dkim-key-2048-bits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "problem"),
    [
        (dkim(RSA_2048), None),
        (dkim(RSA_4096), None),  # three 255-byte strings
        (dkim(RSA_2048_PKCS1), None),
        (dkim(RSA_2048, tags="v=DKIM1; k=RSA"), None),
        (dkim(ED25519, tags="v=DKIM1; k=ed25519"), None),
        (dkim("", tags="v=DKIM1; k=rsa"), None),  # a revoked selector
        (dkim(RSA_1024), "is a 1024-bit RSA key; at least 2048 bits are required"),
        (dkim(RSA_1024, tags="k=rsa"), "is a 1024-bit RSA key"),  # v= is optional at a _domainkey name
        (dkim("bm90IGEga2V5"), "p= is not base64 DER of an RSA public key"),
        (dkim("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest"), "p= is not base64 DER"),
        (dkim(RSA_2048, tags="v=DKIM1; k=dsa"), "has key type k=dsa"),
        (record("TXT", "example.com", txt("v=spf1 ip4:192.0.2.10 -all")), None),
    ],
)
def test_dkim_keys_are_at_least_2048_bits(props, problem):
    outcome = validate(pack.dkim_key_size, DNS_RECORD, props)
    if problem is None:
        assert outcome.violations == []
    else:
        [message] = outcome.messages
        assert message.startswith(f"DKIM key at {props['name']}") and problem in message


def test_dkim_key_unknown_during_preview_is_checked_at_up():
    outcome = validate(pack.dkim_key_size, DNS_RECORD, record("TXT", "mail._domainkey.example.com", UNKNOWN))
    assert outcome.violations == []
    assert (
        outcome.not_applicable
        == "string value at .content can't be known during preview; checked again by `pulumi up` once it is known"
    )


@pytest.mark.parametrize(
    ("key", "bits"), [(RSA_1024, 1024), (RSA_2048, 2048), (RSA_4096, 4096), (RSA_2048_PKCS1, 2048)]
)
def test_rsa_key_bits_from_p(key, bits):
    assert rules.rsa_key_bits(key) == bits


# --- soft-bounce-only-while-testing ---------------------------------------------------------

MAIN_CF = (
    "cat > \"$stage/etc/postfix/main.cf\" <<'MAILSTACK_EOF'\n"
    "smtpd_banner = $myhostname ESMTP\nsoft_bounce = {}\nMAILSTACK_EOF\n"
)


@pytest.mark.parametrize(
    ("config", "stdin", "violates"),
    [
        ({}, MAIN_CF.format("yes"), True),  # testing defaults to false
        ({"mailstack:testing": "false"}, MAIN_CF.format("yes"), True),
        ({"mailstack:testing": "true"}, MAIN_CF.format("yes"), False),
        ({"mailstack:testing": "True"}, MAIN_CF.format("yes"), False),
        ({}, MAIN_CF.format("no"), False),
        ({}, MAIN_CF.format("true"), True),
        ({}, "-o soft_bounce=yes\n", True),  # a master.cf override
        ({}, "# soft_bounce = yes is for testing\n", False),
    ],
)
def test_soft_bounce_only_in_a_stack_that_is_testing(stack_config, config, stdin, violates):
    stack_config({**HOST_STACK, **config})
    outcome = validate(pack.soft_bounce_only_while_testing, COMMAND, command(stdin=stdin), name="mail-host-postfix")
    assert bool(outcome.violations) == violates
    if violates:
        [(message, where)] = outcome.violations
        assert "Set mailstack:soft_bounce to false, or mailstack:testing to true while testing" in message
        assert where == urn(COMMAND, "mail-host-postfix")


def test_soft_bounce_is_a_host_stack_rule(stack_config):
    """A domain stack (or a stack of no kind) has no soft_bounce to check: not applicable, no violation."""
    for config in (DOMAIN_STACK, {}):
        stack_config(config)
        outcome = validate(pack.soft_bounce_only_while_testing, COMMAND, command(stdin=MAIN_CF.format("yes")))
        assert outcome.violations == []
        assert outcome.not_applicable == "soft_bounce and testing are host-stack keys; this is not a host stack"


# --- no-secret-on-command-line --------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "props", "found"),
    [
        ({}, command(), []),
        # Secrets on stdin are where they belong.
        (
            {"mailstack:users": json.dumps([{"name": "alice", "password_hash": HASH}])},
            command(stdin=secret(f"alice\t{HASH}\n")),
            [],
        ),
        # The shapes of secrets, whatever their source.
        ({}, command(create=f"printf 'alice:{HASH}' | chpasswd -e"), ["a crypt(3) password hash"]),
        ({}, command(create=f"echo '{PRIVATE_KEY}' > /root/.ssh/id"), ["a PEM private key"]),
        # The stack's secret config, as the engine passes it.
        (
            {"cloudflare:apiToken": "Xy9-token-0123456789abcdefghij"},
            command(create="curl -H 'Authorization: Bearer Xy9-token-0123456789abcdefghij'"),
            ["the secret value of cloudflare:apiToken"],
        ),
        (
            {"mailstack:users": json.dumps([{"name": "alice"}, {"name": "bob", "password_hash": HASH}])},
            command(update=f"usermod -p '{HASH}' bob"),
            ["a crypt(3) password hash", "the secret value of mailstack:users[1].password_hash"],
        ),
        (
            {"mailstack:ssh_private_key": PRIVATE_KEY},
            command(create="echo " + PRIVATE_KEY.splitlines()[1]),
            ["the secret value of mailstack:ssh_private_key"],
        ),
        # tls: acme: the token belongs on the TLS unit's stdin, never in its script.
        (
            {"mailstack:acme_cloudflare_token": "Xy9-token-acme-0123456789abcdef"},
            command(create="bash -c 'printf %s Xy9-token-acme-0123456789abcdef > cloudflare.ini'"),
            ["the secret value of mailstack:acme_cloudflare_token"],
        ),
        (
            {"mailstack:acme_cloudflare_token": "Xy9-token-acme-0123456789abcdef"},
            command(create="bash -c 'read -r token'", stdin=secret("Xy9-token-acme-0123456789abcdef\n")),
            [],
        ),
        # The command's own connection secrets.
        (
            {},
            command(
                create="sshpass -p 'correct horse battery' ssh host",
                connection=secret({"host": "192.0.2.10", "password": "correct horse battery"}),
            ),
            ["the secret value of connection.password"],
        ),
        # Too short to tell from chance.
        ({"cloudflare:apiToken": "abc"}, command(create="echo abc"), []),
    ],
)
def test_no_remote_command_carries_a_secret_in_its_command_line(stack_config, config, props, found):
    stack_config(config)
    outcome = validate(pack.no_secret_on_command_line, COMMAND, props)
    field = next((f for f in ("create", "update", "delete") if f in props and props[f] != RUNNER), "create")
    expected = f"the {field} command line carries {' and '.join(found)}: command lines show in the host's process list"
    assert outcome.messages == (
        [f"{expected} and in Pulumi's state and diff; send secrets on stdin (as a secret) instead"] if found else []
    )
    secrets = [HASH, PRIVATE_KEY.splitlines()[1], "Xy9-token", "correct horse"]
    assert not any(s in message for s in secrets for message in outcome.messages), "a message shows a secret"


def test_only_commands_and_records_are_checked():
    proxied = record("A", HOST, "192.0.2.10", proxied=True)
    assert validate(pack.mail_host_not_proxied, "cloudflare:index/record:Record", proxied).violations == []
    assert validate(pack.no_secret_on_command_line, DNS_RECORD, command(create=HASH)).violations == []


# --- reading TXT content ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ('"v=spf1 -all"', "v=spf1 -all"),
        ('"v=DKIM1; p=MIIB" "IjAN"', "v=DKIM1; p=MIIBIjAN"),
        (r'"say \"hi\" \\ \059 done"', 'say "hi" \\ ; done'),
        ("v=spf1 -all", "v=spf1 -all"),  # unquoted, as another tool may send it
    ],
)
def test_txt_value_joins_quoted_strings(content, value):
    assert rules.txt_value(content) == value
