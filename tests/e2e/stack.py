"""The e2e stacks: one host stack for the lab's mx and a domain stack per mail domain.

- host stack "host-e2e": mx as mail.example.net (a name in none of the mail
  domains), the lab's addresses, SSH key and host key;
- domain stacks "example.com" and "example.org", both on host-e2e. Each has
  a user alice, with a password and a Sieve script of her own; example.com
  has an alias into example.org; example.org has a catch-all, its own DKIM
  selector and a strict DMARC policy.

Password hashes are made from the fixed test passwords below, with a fixed
salt, so that the stacks' inputs are the same on every run.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from .lab import Lab

HOST_STACK = "host-e2e"
# fail2ban's threshold in the lab's host stack: no test but test_fail2ban.py's fails that often.
LAB_FAIL2BAN_MAX_RETRY = 1000
# rspamd in the lab's host stack: greylisting's wait, and the controller's password (a secret).
LAB_GREYLIST_DELAY = "10s"
LAB_RSPAMD_PASSWORD = "lab-rspamd-controller-secret"
HOSTNAME = "mail.example.net"
POSTMASTER_ADDRESS = "alice@example.com"  # where root@ and postmaster@mail.example.net go


@dataclass(frozen=True)
class Mailbox:
    """A test user: a mailbox of one domain, logged in to with its full address."""

    name: str
    domain: str
    password: str
    addresses: tuple[str, ...]  # what the user may send as and receives at
    sieve: str = ""  # the user's Sieve script, if any

    @property
    def address(self) -> str:
        """The mailbox's own address: the login name too."""
        return f"{self.name}@{self.domain}"


GUIDE_SIEVE = """require [
  "fileinto", # Put mail in dirs
  "mailbox"]; # Create dirs

if allof (
  address :matches :all "from" "MAILER-DAEMON@mail.example.net",
  header :matches "subject" "Postfix SMTP server: errors from *") {
    fileinto :create "System";
}
"""

# alice@example.org's own script: mailing-list mail into Lists (and the guide's rule not at all).
LISTS_SIEVE = """require ["fileinto", "mailbox"];

if header :contains "subject" "[lists]" {
    fileinto :create "Lists";
}
"""

MAILBOXES = (
    Mailbox("alice", "example.com", "alice.com-Secret-1", ("alice@example.com", "bob@example.com"), GUIDE_SIEVE),
    Mailbox("carol", "example.com", "carol.com-Secret-2", ("carol@example.com",)),
    Mailbox("alice", "example.org", "alice.org-Secret-3", ("alice@example.org",), LISTS_SIEVE),
    Mailbox("dave", "example.org", "dave.org-Secret-4", ("dave@example.org",)),
)
MAILBOX = {m.address: m for m in MAILBOXES}  # "alice@example.com" -> Mailbox

# Settings of each domain stack besides its users.
DOMAIN_SETTINGS: dict[str, dict[str, Any]] = {
    "example.com": {
        # One target per domain: the alias crosses into example.org.
        "aliases": [{"address": "team@example.com", "to": ["alice@example.com", "dave@example.org"]}],
    },
    "example.org": {
        "catch_all": "dave",
        "dkim_selector": "s2026",
        "dmarc_policy": "reject",
    },
}
DOMAINS = tuple(DOMAIN_SETTINGS)
# The order the domain stacks are deployed in, after the host stack: example.org first,
# since example.com aliases into it (the host's assembler refuses an alias to an address
# that no hosted domain has).
DEPLOY_ORDER = ("example.org", "example.com")

# The Cloudflare API token of the lab: the one the lab's Cloudflare stand-in (cfapi.py) accepts.
# Not a secret of anyone's (the stand-in exists only in the lab), but handled as one: on stdin.
ACME_CLOUDFLARE_TOKEN = "mslLab-cfToken-0123456789abcdefghijklmno"
ACME_SECRET_KEYS = ["mailstack:acme_cloudflare_token"]
HOST_SECRET_KEYS = ["mailstack:ssh_private_key", "mailstack:ssh_host_key", *ACME_SECRET_KEYS]
DOMAIN_SECRET_KEYS = ["mailstack:users"]


def mailboxes_of(domain: str) -> list[Mailbox]:
    return [m for m in MAILBOXES if m.domain == domain]


def password(login: str) -> str:
    """The password of the mailbox whose address is `login`."""
    return MAILBOX[login].password


@cache
def password_hash(login: str) -> str:
    """A SHA-512 crypt hash of the mailbox's password, with a salt fixed per mailbox."""
    mailbox = MAILBOX[login]
    salt = re.sub(r"[^a-z0-9]", "", f"ms{mailbox.name}{mailbox.domain}")[:16]
    return sha512_crypt(mailbox.password, salt)


def sha512_crypt(secret: str, salt: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=secret,
                          capture_output=True, text=True, check=True).stdout.strip()


def host_config(lab: Lab, **overrides: Any) -> dict[str, Any]:
    """The host stack's values (as in a stack file, secrets in clear) for the lab's mx."""
    values: dict[str, Any] = {
        "mailstack:hostname": HOSTNAME,
        "mailstack:ipv4": [lab.mx.ipv4],
        "mailstack:ipv6": [lab.mx.ipv6],
        "mailstack:ssh_host": lab.mx.ipv4,
        "mailstack:ssh_private_key": lab.mx_ssh_private_key.read_text(),
        "mailstack:ssh_host_key": lab.mx_host_key,
        "mailstack:reverse_zones": list(lab.reverse_zones),
        # OpenDKIM resolves from the root unless told otherwise; the lab's
        # zones are private, so they cannot be DNSSEC-validated from the root.
        "mailstack:opendkim_nameservers": [lab.dns.ipv4],
        "mailstack:opendkim_dnssec": False,
        "mailstack:soft_bounce": False,
        # A host past its testing time: Postfix's own notify_classes (verify warns about the guide's list).
        "mailstack:notify_classes": ["resource", "software"],
        "mailstack:postmaster_address": POSTMASTER_ADDRESS,
        # As the example stacks: a trusted certificate (the lab's Pebble) and DANE in a
        # signed zone (the lab signs example.net; Cloudflare's DNSSEC is its stand-in).
        **{f"mailstack:{k}": v for k, v in acme_settings(lab).items()},
        "mailstack:dnssec": True,
        # fail2ban: the deployer's address (admin: ssh, pulumi) is never banned. The other
        # tests make the peer and the stranger fail on purpose, again and again: the lab's
        # threshold lets them, and test_fail2ban.py deploys real thresholds for itself.
        "mailstack:fail2ban_ignore_addresses": [lab.admin.ipv4, lab.admin.ipv6],
        "mailstack:fail2ban_max_retry": LAB_FAIL2BAN_MAX_RETRY,
        # rspamd: a greylisted sender's retry is accepted after seconds, not minutes
        # (tests/e2e/test_spam_filter.py waits that long); the web interface's password.
        "mailstack:greylist_delay": LAB_GREYLIST_DELAY,
        "mailstack:spam_controller_password": LAB_RSPAMD_PASSWORD,
    }
    values.update({f"mailstack:{k}": v for k, v in overrides.items()})
    return values


def acme_settings(lab: Lab) -> dict[str, Any]:
    """The host stack's keys for tls: acme against the lab's Pebble and Cloudflare stand-in
    (overrides for host_config: host_config(lab, **acme_settings(lab))). Propagation 0: the
    stand-in writes to the lab's only name server before it answers."""
    return {
        "tls": "acme",
        "acme_directory": lab.acme_directory,
        "acme_cloudflare_token": ACME_CLOUDFLARE_TOKEN,
        "acme_propagation_seconds": 0,
    }


ACME_DOMAIN_SETTINGS: dict[str, Any] = {"mta_sts_mode": "testing"}  # each domain stack's, with tls: acme


def user_entry(mailbox: Mailbox) -> dict[str, Any]:
    """The mailbox as an entry of mailstack:users."""
    return {
        "name": mailbox.name,
        "password_hash": password_hash(mailbox.address),
        "addresses": list(mailbox.addresses),
        **({"sieve": mailbox.sieve} if mailbox.sieve else {}),
    }


def domain_config(lab: Lab, domain: str, **overrides: Any) -> dict[str, Any]:
    """The values of the domain stack of `domain` (secrets in clear), on the host stack host-e2e."""
    values: dict[str, Any] = {
        "mailstack:domain": domain,
        "mailstack:host_stack": HOST_STACK,
        "mailstack:users": [user_entry(m) for m in mailboxes_of(domain)],
        **{f"mailstack:{k}": v for k, v in DOMAIN_SETTINGS[domain].items()},
    }
    values.update({f"mailstack:{k}": v for k, v in overrides.items()})
    return values


def stack_users(lab: Lab, domain: str) -> list[dict[str, Any]]:
    """A fresh copy of the domain stack's users, to change in a test."""
    return domain_config(lab, domain)["mailstack:users"]


@contextmanager
def main_cf_rewritten(rewrite: Callable[[str], str]) -> Iterator[None]:
    """Inside the block, the program renders main.cf through `rewrite`.

    The config model refuses every stack value known to break Postfix or to go
    against the guide, so a main.cf that a checker refuses, or a banner that
    shows the version, can only reach the host through a wrong rendering (as a
    template change could make one). The e2e deployer runs the program in this
    process, so patching the renderer that `MailHost` calls is enough.
    """
    from components import host

    original = host.render_host_files

    def rendered(cfg):
        files = original(cfg)
        files["postfix"] = [
            replace(f, content=rewrite(f.content)) if f.path == "/etc/postfix/main.cf" else f
            for f in files["postfix"]
        ]
        return files

    host.render_host_files = rendered
    try:
        yield
    finally:
        host.render_host_files = original


def banner_rewrite(banner: str) -> Callable[[str], str]:
    """A `main_cf_rewritten` rewrite that sets smtpd_banner to `banner`, whatever the config says."""
    return lambda text: re.sub(r"(?m)^smtpd_banner = .*$", lambda _: f"smtpd_banner = {banner}", text)
