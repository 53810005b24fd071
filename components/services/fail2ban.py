"""fail2ban: bans, with nftables, the addresses that keep attacking the host.

Host level only, and only with mailstack:fail2ban true (the default). The
guide recommends fail2ban and says no more; mailstack runs Debian's package
with four jails, all on Debian's own filters (/etc/fail2ban/filter.d/):

- postfix-sasl: SASL authentication failures (Postfix's submission),
- postfix: clients Postfix keeps rejecting (filter postfix, mode "more":
  unknown client hostname, bad HELO, relay denied, unknown sender domain,
  protocol errors, "too many errors"),
- dovecot: IMAP login failures,
- sshd: the host is reached over SSH.

The jails keep Debian's jail names, so that they replace Debian's own sshd
jail (enabled by defaults-debian.conf) rather than run beside it. A ban
rejects the address's packets to every mail port (nftables-multiport: 25, 465, 587, 143, 993;
sshd: the SSH port), IPv6 as IPv4. ignoreip: loopback and
mailstack:fail2ban_ignore_addresses.

Where the logs are is the host's business, decided when the unit runs:
with systemd (/run/systemd/system), fail2ban reads the journal (backend
systemd, each jail matching its daemon's unit: bookworm's Postfix runs as
postfix@-.service, not the filter's postfix.service); without it, the files
rsyslog writes (/var/log/mail.log, /var/log/auth.log). Both variants are
rendered here (the preview shows both); BACKEND_PICK puts the host's into the
stage before the check, so the checked file is the one installed.

Files: /etc/fail2ban/jail.d/mailstack.conf (the jails),
/etc/fail2ban/jail.d/mailstack-backend.local (where they read: read after
every .conf), /etc/fail2ban/fail2ban.d/mailstack.conf (allowipv6).
APPLY starts fail2ban, or reloads it (never a restart: the bans stay).
"""

from __future__ import annotations

from components import paths
from components.checks import staged
from components.config import HostConfig
from components.render import HostFile, here_document, host_file, render_template

NAME = "fail2ban"
# python3-systemd: the systemd backend (the journal); nftables: the ban action's tool.
PACKAGES = ("fail2ban", "nftables", "python3-systemd")
FAIL2BAN_DIR = "/etc/fail2ban"
JAIL_CONF = f"{FAIL2BAN_DIR}/jail.d/mailstack.conf"
BACKEND_CONF = f"{FAIL2BAN_DIR}/jail.d/mailstack-backend.local"
FAIL2BAN_CONF = f"{FAIL2BAN_DIR}/fail2ban.d/mailstack.conf"
CONFIG_DIRS = [FAIL2BAN_DIR]

APPLY = "fail2ban/apply.sh.j2"

# The ports a mail jail's ban closes: SMTP, submissions, submission, IMAP, IMAPS.
MAIL_PORTS = (25, 465, 587, 143, 993)
# Each jail: its Debian filter, and the systemd unit whose journal it reads.
JAILS = {
    "postfix-sasl": {"filter": "postfix[mode=auth]", "unit": "postfix@-.service", "log": "mail"},
    "postfix": {"filter": "postfix[mode=more]", "unit": "postfix@-.service", "log": "mail"},
    "dovecot": {"filter": "dovecot", "unit": "dovecot.service", "log": "mail"},
    "sshd": {"filter": "sshd", "unit": "ssh.service", "log": "auth"},
}
# The log files rsyslog writes on Debian (its default rules, /etc/rsyslog.conf).
LOG_FILES = {"mail": paths.SYSLOG_MAIL, "auth": paths.SYSLOG_AUTH}
BACKENDS = ("logfiles", "systemd")


def packages(cfg: HostConfig) -> tuple[str, ...]:
    """Installed by the packages unit, after the others (none when fail2ban is off)."""
    return PACKAGES if cfg.fail2ban else ()


def ignore_addresses(cfg: HostConfig) -> list[str]:
    """Never banned: loopback, and the exemptions of the config (the deployer's address)."""
    return ["127.0.0.1/8", "::1", *cfg.fail2ban_ignore_addresses]


def backend_file(backend: str) -> str:
    """jail.d/mailstack-backend.local for a host whose daemons log to `backend` (BACKENDS)."""
    return render_template("fail2ban/backend.local.j2", backend=backend, jails=JAILS, log_files=LOG_FILES)


def files(cfg: HostConfig) -> list[HostFile]:
    """Every file of the unit; none when fail2ban is off (then there is no unit)."""
    if not cfg.fail2ban:
        return []
    return [
        host_file(FAIL2BAN_CONF, "fail2ban/fail2ban.conf.j2"),
        host_file(
            JAIL_CONF, "fail2ban/jail.conf.j2", cfg=cfg, jails=JAILS, mail_ports=",".join(map(str, MAIL_PORTS)),
            ignore=ignore_addresses(cfg),
        ),
        # What the preview shows: the log files' variant; BACKEND_PICK swaps in the journal's on a systemd host.
        HostFile(path=BACKEND_CONF, content=backend_file("logfiles")),
    ]


# A preparation before the check: the stage gets this host's backend file.
BACKEND_PICK = (
    "# fail2ban reads the journal where systemd runs the daemons, else rsyslog's files.\n"
    "if [ -d /run/systemd/system ]; then\n"
    f"  cat >{staged(BACKEND_CONF)} <<{here_document(backend_file('systemd'))}\n"
    "fi"
)

# `fail2ban-client -c DIR --test` reads the whole staged folder: fail2ban.conf,
# jail.conf and every jail.d file, the filters and the actions the jails name.
# It refuses what it cannot read, but only warns about a value it cannot use
# ("Wrong value for 'maxretry' ... Using default"), so any warning fails the
# check, save one: with --dump too (its output thrown away), a jail whose log
# file does not exist yet is a warning rather than an error (rsyslog makes
# mail.log at its first line; APPLY makes a missing one before fail2ban
# starts). Neither option starts a server.
_TEST = (
    f"( rc=0; out=$(fail2ban-client -c {staged(FAIL2BAN_DIR)} --dump --test 2>&1 >/dev/null) || rc=$?; "
    "bad=$(printf '%s\\n' \"$out\" | grep -E 'WARNING|ERROR' | grep -v 'Have not found any log file for ' || true); "
    "if [ \"${rc:-0}\" -ne 0 ] || [ -n \"$bad\" ]; then printf '%s\\n' \"${bad:-$out}\" >&2; exit 1; fi )"
)

CHECKS: list[tuple[str | None, str]] = [
    (None, BACKEND_PICK),
    ("fail2ban-client --test", _TEST),
]
