"""Every path on the host that more than one file names, named once.

A path two services share (Postfix and the daemon behind a socket), or a
service and a command (`check`, `verify`), is spelled here and nowhere else:
the services' Python reads these names, and every template gets them as
`paths` (components/render.py hands this module to each template). A path
only one file ever names stays in that file.

Host level: one of each per host, whatever the domains (the host stack's).
Domain level: one per mail domain, in its own folders (its domain stack's).
The shared tables join the two: built on the host from every domain's folder.
The TLS certificate and key are settings (mailstack:smtpd_tls_cert_file,
mailstack:smtpd_tls_key_file), not names: they come from the config.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- host level -----------------------------------------------------------------------------

POSTFIX_DIR = "/etc/postfix"
MAIN_CF = f"{POSTFIX_DIR}/main.cf"
MASTER_CF = f"{POSTFIX_DIR}/master.cf"
# header_checks of submission's own cleanup service (master.cf): hides the client's address.
SUBMISSION_HEADER_CHECKS = f"{POSTFIX_DIR}/submission_header_checks"

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
# Dovecot's quota-status policy service: Postfix asks it at RCPT whether the mailbox has room.
QUOTA_STATUS_SOCKET = PostfixSocket("private/quota-status")

OPENDKIM_CONF = "/etc/opendkim.conf"

# The host's validating resolver (unbound on loopback): its own drop-in, and the
# resolv.conf that points the host, Postfix's chroot copy included, at it.
UNBOUND_DIR = "/etc/unbound"
UNBOUND_CONF = f"{UNBOUND_DIR}/unbound.conf.d/mailstack.conf"
RESOLV_CONF = "/etc/resolv.conf"
RESOLV_CONF_BEFORE = "/etc/resolv.conf.pre-mailstack"

# Postfix spawns policyd-spf with this file (master.cf); policyd-spf's unit writes it.
POLICYD_SPF_DIR = "/etc/postfix-policyd-spf-python"
POLICYD_SPF_CONF = f"{POLICYD_SPF_DIR}/policyd-spf.conf"

# The logs Debian's rsyslog writes the daemons' lines to: on a host without
# systemd, fail2ban's jails read them (components/services/fail2ban.py).
SYSLOG_MAIL = "/var/log/mail.log"
SYSLOG_AUTH = "/var/log/auth.log"

DOVECOT_DIR = "/etc/dovecot"
DOVECOT_CONF = f"{DOVECOT_DIR}/dovecot.conf"
DOVECOT_CONF_D = f"{DOVECOT_DIR}/conf.d"
# Dovecot's sieve_default (90-sieve.conf), compiled beside itself.
DEFAULT_SIEVE_DIR = f"{DOVECOT_DIR}/sieve"
DEFAULT_SIEVE = f"{DEFAULT_SIEVE_DIR}/default.sieve"
# Learning from Junk and filing spam into it (mailstack:spam_filter; README, "Learning from Junk"):
# Dovecot's global Sieve scripts, compiled beside themselves, and the one program they may pipe a
# message to (sieve_pipe_bin_dir: the scripts name programs in it, never a path).
JUNK_MAILBOX = "Junk"
SPAM_SIEVE_DIR = f"{DOVECOT_DIR}/sieve-spam"
JUNK_SIEVE = f"{SPAM_SIEVE_DIR}/junk.sieve"  # sieve_after: spam into Junk, after the user's script
LEARN_SPAM_SIEVE = f"{SPAM_SIEVE_DIR}/learn-spam.sieve"  # IMAPSieve: a message put into Junk
LEARN_HAM_SIEVE = f"{SPAM_SIEVE_DIR}/learn-ham.sieve"  # IMAPSieve: a message taken out of Junk
SIEVE_PIPE_DIR = "/usr/local/lib/mailstack/sieve-pipe"
LEARN_PROGRAM = "mailstack-learn"  # in SIEVE_PIPE_DIR: `mailstack-learn spam|ham`, the message on stdin
# Dovecot's quota-warning service runs this when a mailbox passes 90 % of its quota.
QUOTA_WARNING_SCRIPT = "/usr/local/sbin/mailstack-quota-warning"

# --- the mail domains: what the host stack and the domain stacks share ------------------

# Who converges what: the host stack records itself ("project/stack") in
# HOST_CLAIM; each domain stack in its domain's folder (DOMAIN_OWNER_FILE).
MAILSTACK_DIR = "/etc/mailstack"
HOST_CLAIM = f"{MAILSTACK_DIR}/host"
# The single-domain layout's claim (one stack converged the whole host), and
# where it goes when a host stack adopts that host (mailstack:adopt): the old
# stack's domain stack finds it there and takes over its accounts' mail.
OLD_OWNER_CLAIM = f"{MAILSTACK_DIR}/owner"
ADOPTED_OWNER_CLAIM = f"{OLD_OWNER_CLAIM}.pre-multidomain"
# The single-domain layout's mailbox accounts: system users in this group, mail in ~/Maildir.
OLD_MAILBOX_GROUP = "mailstack-mailbox"
DOMAINS_DIR = f"{MAILSTACK_DIR}/domains"


def domain_dir(domain: str) -> str:
    """The folder of one mail domain's files, written by its domain stack alone."""
    return f"{DOMAINS_DIR}/{domain}"


# The files in a domain's folder (docs/tables.md has their formats).
DOMAIN_OWNER_FILE = "owner"
DOMAIN_RETIRED_FILE = "retired"
DOMAIN_PASSWD_FILE = "passwd"
DOMAIN_TABLE_FILES = ("mailboxes", "aliases", "sender_logins", "catch_all", "quotas", "dkim_selector")
# The selector that signs: written by the domain's DKIM signing unit, not its files unit
# (a rotation switches it only once the new record is visible).
DOMAIN_SELECTOR_FILE = "dkim_selector"


def domain_dkim_key(domain: str, selector: str) -> str:
    """A domain's DKIM private key, e.g. /etc/mailstack/domains/example.com/dkim/mail.private."""
    return f"{domain_dir(domain)}/dkim/{selector}.private"


# The mailboxes: one vmail account owns them all, one folder per domain and user.
VMAIL_DIR = "/var/vmail"
VMAIL_USER = "vmail"


def mailbox_home(domain: str, local: str) -> str:
    """A mailbox's home (Dovecot's ~), e.g. /var/vmail/example.com/alice."""
    return f"{VMAIL_DIR}/{domain}/{local}"


# The shared tables, assembled under TABLES_LOCK from every domain's folder by ASSEMBLER.
ASSEMBLER = "/usr/local/sbin/mailstack-assemble"
TABLES_LOCK = "/run/lock/mailstack-tables.lock"
POSTFIX_TABLES_DIR = f"{POSTFIX_DIR}/mailstack"
DOMAINS_TABLE = f"{POSTFIX_TABLES_DIR}/domains"  # virtual_mailbox_domains
MAILBOXES_TABLE = f"{POSTFIX_TABLES_DIR}/mailboxes"  # virtual_mailbox_maps
ALIASES_TABLE = f"{POSTFIX_TABLES_DIR}/aliases"  # virtual_alias_maps
SENDER_LOGINS_TABLE = f"{POSTFIX_TABLES_DIR}/sender_logins"  # smtpd_sender_login_maps
RETIRED_TABLE = f"{POSTFIX_TABLES_DIR}/retired_domains"  # check_recipient_access
# Dovecot's passdb (passwd-file): every hosted domain's passwd lines.
DOVECOT_USERS = f"{DOVECOT_DIR}/mailstack-users"

# --- host level, continued -----------------------------------------------------------------

# The host's own role addresses (root@, postmaster@ the host name).
ALIASES = "/etc/aliases"

# OpenDKIM's tables (opendkim.conf names them; the assembler writes them):
# which key signs (KeyTable: one line per domain) mail from which domain
# (SigningTable: one line per domain).
DKIM_KEY_DIR = "/etc/opendkim"
DKIM_KEY_TABLE = f"{DKIM_KEY_DIR}/KeyTable"
DKIM_SIGNING_TABLE = f"{DKIM_KEY_DIR}/SigningTable"

# A mailbox's active Sieve script, in its home (Dovecot's `active=~/.dovecot.sieve`).
USER_SIEVE_NAME = ".dovecot.sieve"


def user_sieve(domain: str, local: str) -> str:
    """The active Sieve script of a mailbox."""
    return f"{mailbox_home(domain, local)}/{USER_SIEVE_NAME}"


# --- ACME certificates (tls: acme) ----------------------------------------------------------
# mailstack-tls (templates/tls/mailstack-tls.sh.j2) obtains and renews them; the
# host's TLS unit installs it with its settings, the renewal timer runs it, and
# a domain stack's units call it for their own names (`issue mta-sts.<domain> ...`).

MAILSTACK_TLS = "/usr/local/sbin/mailstack-tls"
TLS_DIR = "/etc/mailstack/tls"
# ACME_DIRECTORY, ACME_EMAIL, ACME_PROPAGATION_SECONDS (shell-quoted KEY=VALUE).
ACME_CONF = f"{TLS_DIR}/acme.conf"
# certbot-dns-cloudflare's credentials file: the API token, root 0600.
ACME_CREDENTIALS = f"{TLS_DIR}/cloudflare.ini"
# One LINEAGE.conf per certificate mailstack-tls keeps (key, fullchain, names).
TLS_LINEAGES_DIR = f"{TLS_DIR}/lineages"
# LINEAGE.status: the last attempt, its result and message.
TLS_STATE_DIR = "/var/lib/mailstack/tls"
# certbot's own --config-dir, --work-dir and --logs-dir live under it.
CERTBOT_DIR = "/var/lib/mailstack/certbot"
TLS_RENEW_SERVICE = "/etc/systemd/system/mailstack-tls-renew.service"
TLS_RENEW_TIMER = "/etc/systemd/system/mailstack-tls-renew.timer"
# The host's own lineage (names: [hostname]; its files: smtpd_tls_key_file, smtpd_tls_cert_file).
HOST_LINEAGE = "host"
# The last mailstack:tls_key_roll the host carried out (the TLS unit's).
TLS_KEY_ROLL = f"{TLS_DIR}/host.key-roll"


def tls_lineage_dir(lineage: str) -> str:
    """Where mailstack-tls keeps a lineage's own files (a domain's mta-sts.<domain>: key.pem, fullchain.pem)."""
    return f"{TLS_DIR}/{lineage}"
