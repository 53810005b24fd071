"""Rendering: the guide's settings, with config values flowing through.

The daemons' own checkers confirm the whole files in tests/validate.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest

from components import render
from components.render import HostFile, TemplateError, render_template
from components.services import mailboxes as mailboxes_service
from components.services import opendkim, web
from components.services import render_host_files
from components.services import sieve as sieve_service
from components.hostfacts import HostFacts
from components.units import domain_files
from tests.conftest import stack_config

# The host stack's files are the host's config; a domain stack's, its folder's and its users' scripts.
HOST_STACKS = ["host-mail"]
DOMAIN_STACKS = ["example.com", "example.org"]

# --- parsers -------------------------------------------------------------------------------


def parse_main_cf(text: str) -> dict[str, str]:
    """main.cf as postconf reads it: comments dropped, continuation lines joined."""
    logical: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            logical[-1] += " " + line.strip()
        else:
            logical.append(line.strip())
    settings: dict[str, str] = {}
    for entry in logical:
        name, sep, value = entry.partition("=")
        assert sep, f"not a name = value line: {entry!r}"
        assert name.strip() not in settings, f"{name.strip()} is set twice"
        settings[name.strip()] = value.strip()
    return settings


def parse_master_cf(text: str) -> dict[tuple[str, str], list[str]]:
    """master.cf: (service, type) -> the entry's words (fields, then -o options/arguments)."""
    entries: dict[tuple[str, str], list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            assert current is not None, f"continuation without a service: {line!r}"
            current.extend(line.split())
        else:
            current = line.split()
            key = (current[0], current[1])
            assert key not in entries, f"service {key} is defined twice"
            entries[key] = current
    return entries


def parse_opendkim(text: str) -> dict[str, str]:
    settings = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, value = line.partition("\t") if "\t" in line else line.partition(" ")
            assert name not in settings, f"{name} is set twice"
            settings[name] = value.strip()
    return settings


def files(cfg) -> dict[str, HostFile]:
    return {f.path: f for group in render_host_files(cfg).values() for f in group}


def content(cfg, path: str) -> str:
    return files(cfg)[path].content


# --- the guide's main.cf --------------------------------------------------------------------

# Settings whose value the guide fixes, for every stack.
GUIDE_MAIN_CF = {
    "smtpd_tls_security_level": "may",
    "smtpd_tls_auth_only": "yes",
    "smtpd_delay_reject": "yes",
    "smtpd_etrn_restrictions": "reject",
    # Refused, so not offered (README, Where mailstack departs from the guide).
    "smtpd_discard_ehlo_keywords": "silent-discard, etrn",
    # A domain that does not exist does not appear by retrying (README, What Postfix tells others).
    "unknown_address_reject_code": "550",
    "fast_flush_domains": "",
    "disable_vrfy_command": "yes",
    "strict_rfc821_envelopes": "yes",
    "show_user_unknown_table_name": "no",
    "smtpd_client_restrictions": "reject_unknown_client_hostname",
    "smtpd_helo_required": "yes",
    "smtpd_helo_restrictions": "reject_invalid_helo_hostname reject_non_fqdn_helo_hostname",
    "smtpd_sender_restrictions": "reject_non_fqdn_sender reject_unknown_sender_domain",
    # Which login may send as which address: every hosted domain's (the assembler's table).
    "smtpd_sender_login_maps": "hash:/etc/postfix/mailstack/sender_logins",
    # Then unknown mailboxes, and last a full mailbox (Dovecot's quota-status: 552 5.2.2 at RCPT).
    "smtpd_recipient_restrictions": "reject_non_fqdn_recipient reject_unknown_recipient_domain "
    "check_policy_service unix:private/policyd-spf reject_unlisted_recipient "
    "check_policy_service unix:private/quota-status",
    # The guide's three, after the check that refuses a retired domain's mail (550 5.1.2).
    "smtpd_relay_restrictions": "check_recipient_access hash:/etc/postfix/mailstack/retired_domains "
    "permit_mynetworks permit_sasl_authenticated reject_unauth_destination",
    "smtpd_data_restrictions": "reject_unauth_pipelining",
    "milter_default_action": "accept",
    # OpenDKIM with the guide's accept; then rspamd (spam_filter), whose own tempfail holds mail while it restarts.
    "smtpd_milters": "unix:/opendkim/opendkim.sock, { inet:127.0.0.1:11332, default_action=tempfail }",
    # Local mail is signed, not scanned.
    "non_smtpd_milters": "unix:/opendkim/opendkim.sock",
    # Every hosted domain is a virtual mailbox domain, delivered to Dovecot over LMTP.
    "virtual_transport": "lmtp:unix:private/dovecot-lmtp",
    "virtual_mailbox_domains": "hash:/etc/postfix/mailstack/domains",
    "virtual_mailbox_maps": "hash:/etc/postfix/mailstack/mailboxes",
    "virtual_alias_maps": "hash:/etc/postfix/mailstack/aliases",
    # What the guide leaves implicit.
    "myorigin": "$myhostname",
    # Never a hosted domain: those are virtual mailbox domains.
    "mydestination": "$myhostname, localhost.$mydomain, localhost",
    "alias_maps": "hash:/etc/aliases",
    "alias_database": "hash:/etc/aliases",
    # The host's own names take root@ and postmaster@ (the aliases) only, not every account on the host.
    "local_recipient_maps": "$alias_maps",
    "smtpd_sasl_type": "dovecot",
    "smtpd_sasl_path": "private/auth",
    "smtpd_sasl_auth_enable": "no",
    # The guide's `may`, raised to DANE where the receiver publishes TLSA (README, departures):
    # answers the host's own validating resolver vouches for.
    "smtp_tls_security_level": "dane",
    "smtp_dns_support_level": "dnssec",
    "compatibility_level": "3.6",
}

# Settings whose value comes from the stack; the example stacks' expected values.
STACK_MAIN_CF = {
    "host-mail": {
        "smtpd_banner": "$myhostname ESMTP $mail_name",
        "message_size_limit": "25000000",
        "inet_interfaces": "192.0.2.10, 2001:db8::10, 127.0.0.1, ::1",
        "inet_protocols": "all",
        "smtpd_error_sleep_time": "8s",
        "smtpd_soft_error_limit": "1",
        "smtpd_hard_error_limit": "3",
        "smtpd_tls_cert_file": "/etc/ssl/private/postfix.cacert.pem",
        "smtpd_tls_key_file": "/etc/ssl/private/postfix.privkey.pem",
        "soft_bounce": "yes",
        "notify_classes": "bounce, 2bounce, data, delay, policy, protocol, resource, software",
        "policyd-spf_time_limit": "3600",
        "unknown_client_reject_code": "450",
        "myhostname": "mail.example.net",
        "mynetworks": "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128",
    },
}

MAIN_CASES = [
    (stack, name, value)
    for stack in HOST_STACKS
    for name, value in {**GUIDE_MAIN_CF, **STACK_MAIN_CF[stack]}.items()
]


@pytest.mark.parametrize(("stack", "name", "value"), MAIN_CASES)
def test_main_cf_has_the_guides_setting(stack, name, value):
    settings = parse_main_cf(content(stack_config(stack), "/etc/postfix/main.cf"))
    assert name in settings, f"{stack}: main.cf lacks {name}"
    assert settings[name] == value, f"{stack}: {name} = {settings[name]!r}, expected {value!r}"


@pytest.mark.parametrize("stack", HOST_STACKS)
def test_main_cf_banner_has_no_os_or_version(stack):
    banner = parse_main_cf(content(stack_config(stack), "/etc/postfix/main.cf"))["smtpd_banner"]
    assert "Debian" not in banner and "$mail_version" not in banner


# --- master.cf ------------------------------------------------------------------------------

GUIDE_SUBMISSION_OPTIONS = [
    "syslog_name=postfix/submission",
    "smtpd_sasl_auth_enable=yes",
    "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
    "smtpd_client_restrictions=",
    "smtpd_sender_restrictions=reject_authenticated_sender_login_mismatch,reject_non_fqdn_sender,"
    "reject_unknown_sender_domain",
    # A retired domain's mail is refused first on submission too.
    "smtpd_recipient_restrictions=check_recipient_access,hash:/etc/postfix/mailstack/retired_domains,"
    "reject_non_fqdn_recipient,reject_unknown_recipient_domain,reject_unlisted_recipient,"
    "check_policy_service,unix:private/quota-status",
    # Not the guide's: the user's own address stays out of the Received header (README).
    "cleanup_service_name=submission-cleanup",
]


@pytest.mark.parametrize("stack", HOST_STACKS)
def test_master_cf_submission_has_exactly_the_guides_overrides(stack):
    entry = parse_master_cf(content(stack_config(stack), "/etc/postfix/master.cf"))[("submission", "inet")]
    # chroot "y" (Debian's), not the guide's "-": the milter socket path is relative to the chroot.
    assert entry[:8] == ["submission", "inet", "n", "-", "y", "-", "-", "smtpd"]
    rest = entry[8:]
    assert rest[0::2] == ["-o"] * len(GUIDE_SUBMISSION_OPTIONS), rest
    assert rest[1::2] == GUIDE_SUBMISSION_OPTIONS


@pytest.mark.parametrize("stack", HOST_STACKS)
def test_master_cf_policyd_spf_is_the_guides(stack):
    entry = parse_master_cf(content(stack_config(stack), "/etc/postfix/master.cf"))[("policyd-spf", "unix")]
    assert entry == [
        "policyd-spf", "unix", "-", "n", "n", "-", "0", "spawn",
        "user=policyd-spf", "argv=/usr/bin/policyd-spf", "/etc/postfix-policyd-spf-python/policyd-spf.conf",
    ]


STOCK_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")


@pytest.mark.skipif(not STOCK_MASTER_CF.exists(), reason="Debian's postfix package is not installed")
@pytest.mark.parametrize("stack", HOST_STACKS)
def test_master_cf_keeps_every_stock_service(stack):
    stock = parse_master_cf(STOCK_MASTER_CF.read_text())
    rendered = parse_master_cf(content(stack_config(stack), "/etc/postfix/master.cf"))
    assert {k: v for k, v in rendered.items() if k in stock} == stock
    assert set(rendered) - set(stock) == {("submission", "inet"), ("policyd-spf", "unix"),
                                          ("submission-cleanup", "unix")}


@pytest.mark.parametrize("stack", HOST_STACKS)
def test_master_cf_submission_cleanup_hides_the_client_on_submission_only(stack):
    master = parse_master_cf(content(stack_config(stack), "/etc/postfix/master.cf"))
    assert master[("submission-cleanup", "unix")] == [
        "submission-cleanup", "unix", "n", "-", "y", "-", "0", "cleanup",
        "-o", "header_checks=regexp:/etc/postfix/submission_header_checks", "-o", "nested_header_checks=",
    ]
    # Port 25's smtpd hands its mail to the stock cleanup: MTAs' Received headers stay whole.
    assert not any(word.startswith("cleanup_service_name") for word in master[("smtp", "inet")])


# --- Postfix tables -------------------------------------------------------------------------


def table(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def domain_file(cfg, name: str) -> str:
    """One file of a domain's folder on the host (/etc/mailstack/domains/<domain>/<name>)."""
    files = [*domain_files(cfg), opendkim.selector_file(cfg)]  # dkim_selector: the signing unit's
    return {f.path: f for f in files}[f"/etc/mailstack/domains/{cfg.domain}/{name}"].content


@pytest.mark.parametrize(
    ("stack", "mailboxes", "senders", "aliases", "catch_all"),
    [
        (
            "example.com",
            [("alice@example.com",)],
            [("alice@example.com", "alice@example.com"), ("bob@example.com", "alice@example.com")],
            [("bob@example.com", "alice@example.com"), ("postmaster@example.com", "alice@example.com"),
             ("team@example.com", "alice@example.com,carol@example.org")],
            [],
        ),
        (
            "example.org",
            [("alice@example.org",), ("carol@example.org",)],
            [("alice@example.org", "alice@example.org"), ("carol@example.org", "carol@example.org")],
            [("postmaster@example.org", "alice@example.org")],
            [("carol@example.org",)],
        ),
    ],
)
def test_domain_tables(stack, mailboxes, senders, aliases, catch_all):
    """The domain's inputs of the shared tables (the host's assembler builds those from every domain's)."""
    cfg = stack_config(stack)
    assert table(domain_file(cfg, "mailboxes")) == mailboxes
    assert table(domain_file(cfg, "sender_logins")) == senders
    assert table(domain_file(cfg, "aliases")) == aliases
    assert table(domain_file(cfg, "catch_all")) == catch_all
    assert table(domain_file(cfg, "dkim_selector")) == [(cfg.dkim_selector,)]


def test_host_aliases_send_root_and_postmaster_to_the_postmaster_address():
    cfg = stack_config("host-mail")
    assert table(content(cfg, "/etc/aliases")) == [("postmaster:", "alice@example.com"), ("root:", "alice@example.com")]
    other = stack_config("host-mail", postmaster_address="ops@example.org")
    assert table(content(other, "/etc/aliases")) == [("postmaster:", "ops@example.org"), ("root:", "ops@example.org")]


def test_a_user_removed_from_the_stack_is_no_mailbox_any_more():
    both = stack_config("example.org")
    assert "carol@example.org" in domain_file(both, "mailboxes")
    fewer = stack_config("example.org", users=[{"name": "alice"}], catch_all=None)
    assert table(domain_file(fewer, "mailboxes")) == [("alice@example.org",)]
    assert table(domain_file(fewer, "sender_logins")) == [("alice@example.org", "alice@example.org")]


def test_postmaster_key_picks_the_user():
    cfg = stack_config("example.org", postmaster="carol")
    assert ("postmaster@example.org", "carol@example.org") in table(domain_file(cfg, "aliases"))


# --- OpenDKIM and policyd-spf ---------------------------------------------------------------


@pytest.mark.parametrize("stack", HOST_STACKS)
def test_opendkim_conf_is_the_guides(stack):
    settings = parse_opendkim(content(stack_config(stack), "/etc/opendkim.conf"))
    assert settings == {
        "AlwaysAddARHeader": "T",
        "Canonicalization": "relaxed/relaxed",
        # DisableADSP: rejected by OpenDKIM 2.11 (see tests/validate).
        # The guide's Domain/KeyFile/Selector, as one line in each table (below).
        "KeyTable": "file:/etc/opendkim/KeyTable",
        "SigningTable": "file:/etc/opendkim/SigningTable",
        "Socket": "local:/var/spool/postfix/opendkim/opendkim.sock",
        "Syslog": "yes",
        "SyslogSuccess": "yes",
        "UMask": "000",
        "UserID": "opendkim:postfix",
        "OversignHeaders": "From",
        "PidFile": "/run/opendkim/opendkim.pid",
        "TrustAnchorFile": "/usr/share/dns/root.key",
    }


@pytest.mark.parametrize(("stack", "selector"), [("example.com", "mail"), ("example.org", "s2026")])
def test_a_domain_names_its_dkim_selector_for_the_signing_tables(stack, selector):
    # The host's assembler makes the KeyTable and SigningTable lines from it (tests/validate/test_assembler.py).
    assert table(domain_file(stack_config(stack), "dkim_selector")) == [(selector,)]


def test_policyd_spf_conf_keeps_debians_defaults():
    text = content(stack_config("host-mail"), "/etc/postfix-policyd-spf-python/policyd-spf.conf")
    for line in ["debugLevel = 1", "TestOnly = 1", "HELO_reject = Fail", "Mail_From_reject = Fail",
                 "PermError_reject = False", "TempError_Defer = False",
                 "skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1"]:
        assert line in text.splitlines()


# --- Dovecot and Sieve ----------------------------------------------------------------------


def squash(text: str) -> str:
    """Dovecot config without comments and with whitespace runs collapsed, for block matching."""
    return " ".join(line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip())


DOVECOT = "/etc/dovecot/conf.d/"
DOVECOT_CASES = [
    (
        f"{DOVECOT}10-master.conf",
        "unix_listener /var/spool/postfix/private/dovecot-lmtp { mode = 0600 user = postfix group = postfix }",
    ),
    (
        f"{DOVECOT}10-master.conf",
        "unix_listener /var/spool/postfix/private/auth { mode = 0660 user = postfix group = postfix }",
    ),
    (f"{DOVECOT}10-master.conf", "service imap-login {"),
    (f"{DOVECOT}10-master.conf", "service auth {"),
    (f"{DOVECOT}10-mail.conf", "mail_location = maildir:~/Maildir"),
    (f"{DOVECOT}20-lmtp.conf", "protocol lmtp { mail_plugins = $mail_plugins sieve }"),
    (f"{DOVECOT}10-auth.conf", "auth_username_format = %Lu"),
    (f"{DOVECOT}10-auth.conf", "disable_plaintext_auth = yes"),
    # Every hosted domain's mailboxes: logins are mailbox addresses; one vmail account owns the mail.
    (f"{DOVECOT}10-auth.conf",
     "passdb { driver = passwd-file args = scheme=CRYPT username_format=%Lu /etc/dovecot/mailstack-users }"),
    # The same file is the userdb: it carries each mailbox's quota rule.
    (f"{DOVECOT}10-auth.conf", "userdb { driver = passwd-file args = username_format=%Lu /etc/dovecot/mailstack-users "
     "default_fields = uid=vmail gid=vmail home=/var/vmail/%Ld/%Ln }"),
    # Quotas: counted by the quota plugin, shown over IMAP, asked by Postfix at RCPT.
    (f"{DOVECOT}10-mail.conf", "mail_plugins = $mail_plugins quota"),
    (f"{DOVECOT}90-quota.conf", "protocol imap { mail_plugins = $mail_plugins imap_quota }"),
    (f"{DOVECOT}90-quota.conf", "quota = count:User quota quota_vsizes = yes"),
    (f"{DOVECOT}90-quota.conf", "quota_warning = storage=90%% quota-warning 90 %u"),
    (f"{DOVECOT}90-quota.conf", 'quota_status_overquota = "552 5.2.2 Mailbox is full"'),
    (f"{DOVECOT}90-quota.conf", "service quota-warning { executable = script /usr/local/sbin/mailstack-quota-warning"),
    (f"{DOVECOT}90-quota.conf", "service quota-status { executable = quota-status -p postfix client_limit = 1 "
     "unix_listener /var/spool/postfix/private/quota-status { mode = 0600 user = postfix group = postfix } }"),
    (f"{DOVECOT}10-mail.conf", "first_valid_uid = 5000 last_valid_uid = 5000"),
    (f"{DOVECOT}90-sieve.conf", "sieve = file:~/sieve;active=~/.dovecot.sieve"),
    (f"{DOVECOT}90-sieve.conf", "sieve_default = /etc/dovecot/sieve/default.sieve"),
    (f"{DOVECOT}10-ssl.conf", "ssl = required"),
    (f"{DOVECOT}10-ssl.conf", "ssl_cert = </etc/ssl/private/postfix.cacert.pem"),
    (f"{DOVECOT}10-ssl.conf", "ssl_key = </etc/ssl/private/postfix.privkey.pem"),
    (f"{DOVECOT}10-ssl.conf", "ssl_min_protocol = TLSv1.2"),
]


@pytest.mark.parametrize("stack", HOST_STACKS)
@pytest.mark.parametrize(("path", "expected"), DOVECOT_CASES)
def test_dovecot(stack, path, expected):
    assert expected in squash(content(stack_config(stack), path))


@pytest.mark.parametrize(("stack", "host"), [("host-mail", "mail.example.net")])
def test_default_sieve_is_the_guides_script(stack, host):
    text = squash(content(stack_config(stack), "/etc/dovecot/sieve/default.sieve"))
    assert text == (
        'require [ "fileinto", "mailbox"]; if allof ( '
        f'address :matches :all "from" "MAILER-DAEMON@{host}", '
        'header :matches "subject" "Postfix SMTP server: errors from *") { fileinto :create "System"; }'
    )


def test_tls_paths_flow_into_postfix_and_dovecot():
    cfg = stack_config(
        "host-mail", smtpd_tls_cert_file="/etc/ssl/mail/cert.pem", smtpd_tls_key_file="/etc/ssl/mail/key.pem"
    )
    settings = parse_main_cf(content(cfg, "/etc/postfix/main.cf"))
    assert settings["smtpd_tls_cert_file"] == "/etc/ssl/mail/cert.pem"
    assert settings["smtpd_tls_key_file"] == "/etc/ssl/mail/key.pem"
    ssl = squash(content(cfg, f"{DOVECOT}10-ssl.conf"))
    assert "ssl_cert = </etc/ssl/mail/cert.pem" in ssl and "ssl_key = </etc/ssl/mail/key.pem" in ssl


# --- config flows through -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "path", "name", "value"),
    [
        ({"message_size_limit": 1000}, "/etc/postfix/main.cf", "message_size_limit", "1000"),
        ({"soft_bounce": False}, "/etc/postfix/main.cf", "soft_bounce", "no"),
        ({"soft_bounce": True}, "/etc/postfix/main.cf", "soft_bounce", "yes"),
        ({"notify_classes": ["bounce", "resource"]}, "/etc/postfix/main.cf", "notify_classes", "bounce, resource"),
        ({"smtpd_error_sleep_time": "2s"}, "/etc/postfix/main.cf", "smtpd_error_sleep_time", "2s"),
        ({"smtpd_hard_error_limit": 9}, "/etc/postfix/main.cf", "smtpd_hard_error_limit", "9"),
        ({"policyd_spf_time_limit": 60}, "/etc/postfix/main.cf", "policyd-spf_time_limit", "60"),
        ({"unknown_client_reject_code": 550}, "/etc/postfix/main.cf", "unknown_client_reject_code", "550"),
        ({"smtpd_banner": "$myhostname ESMTP"}, "/etc/postfix/main.cf", "smtpd_banner", "$myhostname ESMTP"),
        ({"hostname": "smtp.example.com"}, "/etc/postfix/main.cf", "myhostname", "smtp.example.com"),
        ({"vmail_uid": 6000}, f"{DOVECOT}10-mail.conf", "first_valid_uid", "6000"),
        ({"ipv6": []}, "/etc/postfix/main.cf", "inet_protocols", "ipv4"),
        ({"ipv6": []}, "/etc/postfix/main.cf", "mynetworks", "127.0.0.0/8"),
        ({"ipv6": []}, "/etc/postfix/main.cf", "inet_interfaces", "192.0.2.10, 127.0.0.1"),
        ({"ipv4": []}, "/etc/postfix/main.cf", "mynetworks", "[::1]/128"),
        ({"inet_interfaces": ["all"]}, "/etc/postfix/main.cf", "inet_interfaces", "all"),
        ({"opendkim_nameservers": ["198.51.100.53"]}, "/etc/opendkim.conf", "Nameservers", "198.51.100.53"),
    ],
)
def test_config_flows_through(overrides, path, name, value):
    cfg = stack_config("host-mail", **overrides)
    parse = {"/etc/opendkim.conf": parse_opendkim, "/etc/postfix/main.cf": parse_main_cf}.get(path, parse_dovecot)
    assert parse(content(cfg, path))[name] == value


def parse_dovecot(text: str) -> dict[str, str]:
    """Top-level `name = value` lines of a Dovecot config file."""
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in text.splitlines()
                if "=" in line and not line.startswith((" ", "#", "\t")))


def test_users_flow_through():
    users = [
        {
            "name": "erin",
            "addresses": ["erin@example.com", "sales@example.com"],
            "sieve": 'require ["fileinto"];\nfileinto "Sales";\n',
        },
        {"name": "frank"},
    ]
    cfg = stack_config("example.com", users=users, aliases=[])
    assert table(domain_file(cfg, "sender_logins")) == [
        ("erin@example.com", "erin@example.com"), ("sales@example.com", "erin@example.com"),
        ("frank@example.com", "frank@example.com"),
    ]
    assert table(domain_file(cfg, "aliases")) == [
        ("sales@example.com", "erin@example.com"), ("postmaster@example.com", "erin@example.com"),
    ]
    sieve = sieve_service.files(cfg)
    assert [(f.path, f.mode, f.owner, f.group) for f in sieve] == [
        ("/var/vmail/example.com/erin/.dovecot.sieve", "0600", "vmail", "vmail")
    ]
    assert sieve[0].content.endswith('require ["fileinto"];\nfileinto "Sales";\n')


def test_domain_quotas_file_lists_each_limited_mailbox_in_bytes():
    users = [{"name": "erin", "quota": "100K"}, {"name": "frank"}, {"name": "gina", "quota": "unlimited"}]
    cfg = stack_config("example.com", users=users, aliases=[], mailbox_quota="1G")
    assert table(domain_file(cfg, "quotas")) == [
        ("erin@example.com", "102400"), ("frank@example.com", str(1024**3)),
    ]
    # No quota set anywhere: the file lists nobody (every mailbox unlimited).
    assert table(domain_file(stack_config("example.com", users=[{"name": "erin"}], aliases=[]), "quotas")) == []


# --- files: paths, modes, owners ------------------------------------------------------------

EXPECTED_FILES = {
    "postfix": ["/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/aliases",
                "/etc/postfix/submission_header_checks"],
    "opendkim": ["/etc/opendkim.conf"],
    "policyd-spf": ["/etc/postfix-policyd-spf-python/policyd-spf.conf"],
    "dovecot": [
        *(f"{DOVECOT}{name}" for name in ["10-master.conf", "10-mail.conf", "20-lmtp.conf", "10-auth.conf"]),
        *(f"{DOVECOT}{name}" for name in ["90-sieve.conf", "10-ssl.conf", "90-quota.conf", "90-spam.conf"]),
        "/etc/dovecot/sieve/default.sieve",
        "/usr/local/sbin/mailstack-quota-warning",
        *(f"/etc/dovecot/sieve-spam/{name}.sieve" for name in ["junk", "learn-spam", "learn-ham"]),
        "/usr/local/lib/mailstack/sieve-pipe/mailstack-learn",
    ],
    "resolver": ["/etc/unbound/unbound.conf.d/mailstack.conf"],
    "fail2ban": [
        "/etc/fail2ban/fail2ban.d/mailstack.conf",
        "/etc/fail2ban/jail.d/mailstack.conf",
        "/etc/fail2ban/jail.d/mailstack-backend.local",
    ],
    "rspamd": [
        *(f"/etc/rspamd/local.d/{name}" for name in [
            "worker-normal.inc", "worker-controller.inc", "worker-proxy.inc", "redis.conf", "greylist.conf",
            "milter_headers.conf", "settings.conf", "dkim_signing.conf", "arc.conf", "dmarc.conf",
        ]),
        "/etc/rspamd/override.d/actions.conf",
    ],
}


@pytest.mark.parametrize("stack", HOST_STACKS)
def test_files_paths_modes_owners(stack):
    cfg = stack_config(stack)
    rendered = render_host_files(cfg)
    assert set(rendered) == set(EXPECTED_FILES)
    for service, paths in EXPECTED_FILES.items():
        assert [f.path for f in rendered[service]] == paths
        for f in rendered[service]:
            # Config files are root's and world-readable (daemons read them after dropping privileges);
            # scripts the daemons run are executable too.
            mode = "0755" if f.path.startswith(("/usr/local/sbin/", "/usr/local/lib/mailstack/")) else "0644"
            assert (f.mode, f.owner, f.group) == (mode, "root", "root"), f.path
            assert f.content.endswith("\n") and "\n\n\n" not in f.content, f.path


@pytest.mark.parametrize("stack", DOMAIN_STACKS)
def test_domain_files_paths_modes_owners(stack):
    cfg = stack_config(stack)
    rendered = domain_files(cfg)
    folder = f"/etc/mailstack/domains/{cfg.domain}"
    tables = [f for f in rendered if f.path.startswith(folder + "/")]
    assert [f.path for f in tables] == [f"{folder}/{name}" for name in
                                        ("mailboxes", "aliases", "sender_logins", "catch_all", "quotas")]
    for f in tables:
        assert (f.mode, f.owner, f.group) == ("0644", "root", "root"), f.path
        assert f.content.endswith("\n") and "\n\n\n" not in f.content, f.path
    sieve = [f for f in rendered if f not in tables]
    assert [f.path for f in sieve] == [
        f"/var/vmail/{cfg.domain}/{u.name}/.dovecot.sieve" for u in cfg.users if u.sieve is not None
    ]
    for f in sieve:
        assert (f.mode, f.owner, f.group) == ("0600", "vmail", "vmail"), f.path
    # No password hash among the files: the passwords unit sends them on its stdin.
    assert not any(f.path.endswith("/passwd") for f in rendered)


def test_user_sieve_keeps_the_users_script():
    cfg = stack_config("example.com")
    [alice] = sieve_service.files(cfg)
    assert alice.content.endswith(cfg.users[0].sieve)


@pytest.mark.parametrize("stack", HOST_STACKS)
def test_rendering_is_deterministic(stack):
    assert render_host_files(stack_config(stack)) == render_host_files(stack_config(stack))


@pytest.mark.parametrize("stack", DOMAIN_STACKS)
def test_domain_rendering_is_deterministic(stack):
    assert domain_files(stack_config(stack)) == domain_files(stack_config(stack))


def test_host_file_defaults():
    assert HostFile("/etc/x", "x\n") == HostFile("/etc/x", "x\n", "0644", "root", "root")


# --- template errors ------------------------------------------------------------------------


def test_missing_value_names_template_and_line():
    with pytest.raises(TemplateError) as err:
        render_template("postfix/main.cf.j2", mynetworks="127.0.0.0/8")
    text = (render.TEMPLATES / "postfix/main.cf.j2").read_text().splitlines()
    first = next(i for i, line in enumerate(text, 1) if "cfg." in line)
    assert str(err.value) == f"templates/postfix/main.cf.j2:{first}: 'cfg' is undefined"


def test_missing_attribute_names_template_and_line():
    cfg = stack_config("host-mail")
    with pytest.raises(TemplateError, match=r"^templates/postfix/main\.cf\.j2:\d+: 'mynetworks' is undefined$"):
        render_template("postfix/main.cf.j2", cfg=cfg)


@pytest.fixture
def broken_templates(monkeypatch):
    env = jinja2.Environment(
        loader=jinja2.DictLoader({
            "broken/syntax.j2": "a = 1\nb = {{ value \n",
            "broken/undefined.j2": "a = 1\nb = 2\nc = {{ value.missing }}\n",
        }),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    monkeypatch.setattr(render, "_ENV", env)


def test_syntax_error_names_template_and_line(broken_templates):
    with pytest.raises(TemplateError, match=r"^templates/broken/syntax\.j2:2: "):
        render_template("broken/syntax.j2", value=1)


def test_undefined_attribute_names_template_and_line(broken_templates):
    with pytest.raises(TemplateError, match=r"^templates/broken/undefined\.j2:3: .*'missing'"):
        render_template("broken/undefined.j2", value={})


def test_templates_all_used(monkeypatch):
    """Every template is rendered, by a service's files or by a unit (no stale templates)."""
    from components import units

    used = set()
    real = render._ENV.get_template

    def spy(name, *args, **kwargs):
        used.add(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(render._ENV, "get_template", spy)
    host, owner = stack_config("host-mail"), "mailstack/host-mail"
    for service, files in render_host_files(host).items():
        units.service_unit(host, owner, service, files)
    units.packages_unit(host, owner), units.tls_unit(host, owner), units.tables_unit(host, owner)
    acme = stack_config("host-mail", tls="acme", acme_cloudflare_token="t" * 40)
    units.tls_unit(acme, owner)
    facts = HostFacts(host_id=owner, hostname=host.host_name, addresses=host.addresses)
    for stack in DOMAIN_STACKS:
        cfg, domain_owner = stack_config(stack), f"mailstack/{stack}"
        units.dkim_unit(cfg, domain_owner, facts)
        units.dkim_signing_unit(cfg, domain_owner, facts), units.dkim_remove_command(cfg, domain_owner, facts, "old")
        units.files_unit(cfg, domain_owner, facts, domain_files(cfg))
        units.passwords_command(cfg, domain_owner, facts), units.retire_command(cfg, domain_owner, facts)
    # MTA-STS (a host with tls: acme): the host's web unit, a domain's mta-sts unit and its delete command.
    units.web_unit(host, owner)
    acme = HostFacts(host_id=owner, hostname=host.host_name, addresses=host.addresses, tls="acme")
    cfg = stack_config(DOMAIN_STACKS[0])
    # And client autoconfiguration (same host): a domain's autoconfig unit and its delete command.
    for site in web.SITES:
        units.site_unit(cfg, f"mailstack/{DOMAIN_STACKS[0]}", acme, site)
        units.site_remove_command(cfg, f"mailstack/{DOMAIN_STACKS[0]}", acme, site)
    on_disk = {str(p.relative_to(render.TEMPLATES)) for p in render.TEMPLATES.rglob("*") if p.is_file()}
    assert used == on_disk


def test_templates_carry_the_guides_reasons():
    main_cf = (render.TEMPLATES / "postfix/main.cf.j2").read_text()
    settings = ["smtpd_banner", "message_size_limit", "soft_bounce", "smtpd_client_restrictions", "smtpd_helo_required"]
    for setting in settings:
        lines = main_cf.splitlines()
        i = next(i for i, line in enumerate(lines) if line.startswith(setting + " "))
        assert lines[i - 1].startswith("#"), f"{setting} has no comment above it"
    assert re.search(r"#.*\n.*smtpd_data_restrictions", main_cf)


# --- outgoing TLS: DANE, or the guide's opportunistic TLS -----------------------------------


def test_outgoing_tls_may_is_the_guides_opportunistic_tls_without_dnssec_lookups():
    cfg = stack_config("host-mail").model_copy(update={"smtp_tls_security_level": "may"})
    main_cf = next(f for f in render_host_files(cfg)["postfix"] if f.path == "/etc/postfix/main.cf").content
    assert "\nsmtp_tls_security_level = may\n" in main_cf
    assert "smtp_dns_support_level" not in main_cf


def test_the_resolver_listens_on_loopback_only():
    for ipv6 in ([], ["2001:db8::10"]):
        cfg = stack_config("host-mail").model_copy(update={"ipv6": ipv6})
        conf = render_host_files(cfg)["resolver"][0].content
        interfaces = [line.split(":", 1)[1].strip() for line in conf.splitlines() if line.strip().startswith("interface:")]
        assert interfaces == (["127.0.0.1", "::1"] if ipv6 else ["127.0.0.1"])
