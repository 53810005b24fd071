"""Every path on the host that more than one file names, named once.

A path two services share (Postfix and the daemon behind a socket), or a
service and a command (`check`, `verify`), is spelled here and nowhere else:
the services' Python reads these names, and every template gets them as
`paths` (components/render.py hands this module to each template). A path
only one file ever names stays in that file.

Host level: one of each per host, whatever the domains. Domain level: one per
mail domain (today a stack has one domain; a second domain adds its own).
The TLS certificate and key are settings (mailstack:smtpd_tls_cert_file,
mailstack:smtpd_tls_key_file), not names: they come from the config.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- host level -----------------------------------------------------------------------------

POSTFIX_DIR = "/etc/postfix"
MAIN_CF = f"{POSTFIX_DIR}/main.cf"
MASTER_CF = f"{POSTFIX_DIR}/master.cf"

# Postfix's queue directory, where its chrooted daemons live (Debian: chroot "y").
POSTFIX_CHROOT = "/var/spool/postfix"


@dataclass(frozen=True)
class PostfixSocket:
    """A Unix socket that another daemon creates inside Postfix's chroot.

    `postfix`: how Postfix's main.cf names it, relative to the chroot
    (queue directory); `host`: where the other daemon creates it.
    """

    postfix: str

    @property
    def host(self) -> str:
        return f"{POSTFIX_CHROOT}/{self.postfix.lstrip('/')}"


# OpenDKIM's milter socket: OpenDKIM writes it, Postfix's smtpd (chrooted) talks to it.
OPENDKIM_SOCKET = PostfixSocket("/opendkim/opendkim.sock")
# Dovecot's listeners for Postfix: final delivery (LMTP) and SMTP AUTH.
DOVECOT_LMTP_SOCKET = PostfixSocket("private/dovecot-lmtp")
DOVECOT_AUTH_SOCKET = PostfixSocket("private/auth")

OPENDKIM_CONF = "/etc/opendkim.conf"

# Postfix spawns policyd-spf with this file (master.cf); policyd-spf's unit writes it.
POLICYD_SPF_DIR = "/etc/postfix-policyd-spf-python"
POLICYD_SPF_CONF = f"{POLICYD_SPF_DIR}/policyd-spf.conf"

DOVECOT_DIR = "/etc/dovecot"
DOVECOT_CONF = f"{DOVECOT_DIR}/dovecot.conf"
DOVECOT_CONF_D = f"{DOVECOT_DIR}/conf.d"
# Dovecot's sieve_default (90-sieve.conf), compiled beside itself.
DEFAULT_SIEVE_DIR = f"{DOVECOT_DIR}/sieve"
DEFAULT_SIEVE = f"{DEFAULT_SIEVE_DIR}/default.sieve"
DEFAULT_SIEVE_BINARY = f"{DEFAULT_SIEVE_DIR}/default.svbin"

# --- many domains on one host (docs/plan-multi-domain.md) ---------------------------------

# Which stacks own this host and its domains: the host stack's "project/stack"
# in HOST_CLAIM; each domain's own folder, written only by that domain's stack.
MAILSTACK_DIR = "/etc/mailstack"
HOST_CLAIM = f"{MAILSTACK_DIR}/host"
DOMAINS_DIR = f"{MAILSTACK_DIR}/domains"


def domain_dir(domain: str) -> str:
    """The folder of one hosted (or retired) domain, e.g. /etc/mailstack/domains/example.org."""
    return f"{DOMAINS_DIR}/{domain}"


def domain_dkim_key(domain: str, selector: str) -> str:
    """The DKIM private key of a domain's selector, in that domain's folder."""
    return f"{domain_dir(domain)}/dkim/{selector}.private"


# The shared tables that the assembler (ASSEMBLER) builds from every domain's
# folder; main.cf names them as hash: tables (postmap adds <table>.db).
POSTFIX_TABLES_DIR = f"{POSTFIX_DIR}/mailstack"
DOMAINS_TABLE = f"{POSTFIX_TABLES_DIR}/domains"  # virtual_mailbox_domains
MAILBOXES_TABLE = f"{POSTFIX_TABLES_DIR}/mailboxes"  # virtual_mailbox_maps
ALIASES_TABLE = f"{POSTFIX_TABLES_DIR}/aliases"  # virtual_alias_maps
SENDER_LOGINS_TABLE = f"{POSTFIX_TABLES_DIR}/sender_logins"  # smtpd_sender_login_maps
RETIRED_TABLE = f"{POSTFIX_TABLES_DIR}/retired_domains"  # check_recipient_access
# Dovecot's passdb (passwd-file): every hosted domain's passwd lines.
DOVECOT_USERS = f"{DOVECOT_DIR}/mailstack-users"
# Every mailbox's home: /var/vmail/<domain>/<local part>, owned by the vmail account.
VMAIL_DIR = "/var/vmail"
# The assembler and the lock that lets one deployment at a time run it.
ASSEMBLER = "/usr/local/sbin/mailstack-assemble"
TABLES_LOCK = "/run/lock/mailstack-tables.lock"

# --- domain level ---------------------------------------------------------------------------

# Postfix's lookup tables of the domain's addresses (postmap builds <table>.db beside each).
SENDER_LOGINS = f"{POSTFIX_DIR}/controlled_auth_senders"
RECIPIENTS = f"{POSTFIX_DIR}/recipients"
VIRTUAL_ALIASES = f"{POSTFIX_DIR}/virtual"
ALIASES = "/etc/aliases"

# The DKIM private keys, one per selector: the DKIM unit makes them, OpenDKIM signs with them.
DKIM_KEY_DIR = "/etc/opendkim"


def dkim_key(selector: str) -> str:
    """The private key of a DKIM selector, e.g. /etc/opendkim/default.private."""
    return f"{DKIM_KEY_DIR}/{selector}.private"


# OpenDKIM's tables (opendkim.conf names them; its unit writes them, its check reads
# them): which key signs (KeyTable: one line per domain and selector) mail from
# which domain (SigningTable: one line per domain). A second domain adds lines.
DKIM_KEY_TABLE = f"{DKIM_KEY_DIR}/KeyTable"
DKIM_SIGNING_TABLE = f"{DKIM_KEY_DIR}/SigningTable"


# A user's active Sieve script, in their home (Dovecot's `active=~/.dovecot.sieve`).
USER_SIEVE_NAME = ".dovecot.sieve"


def user_sieve(user: str) -> str:
    """The active Sieve script of a mailbox's system user."""
    return f"/home/{user}/{USER_SIEVE_NAME}"
