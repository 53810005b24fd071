"""Postfix: the MTA. Its packages, files, checks and how it takes a change.

Host level: main.cf and master.cf (templates/postfix/). Domain level: the
lookup tables of the domain's addresses and /etc/aliases
(templates/postfix/domain/). The unit stages, checks, swaps and applies them
together (templates/postfix/before.sh.j2, then apply.sh.j2).
"""

from __future__ import annotations

from components import paths
from components.checks import silent, staged
from components.config import MailConfig
from components.render import HostFile, host_file

NAME = "postfix"
PACKAGES = ("postfix",)

# /etc/aliases (a file) is written into the stage with the rendered files.
CONFIG_DIRS = [paths.POSTFIX_DIR]

# Runs after the checks, before the swap: notes what Postfix listens on now, and
# puts a first recipients database in place (see the template).
BEFORE = "postfix/before.sh.j2"
# Rebuilds the lookup tables, then starts, restarts or reloads Postfix.
APPLY = "postfix/apply.sh.j2"


# --- host level: main.cf, master.cf -----------------------------------------------------------


def _mynetworks(cfg: MailConfig) -> str:
    """Loopback only, for the protocols Postfix uses (Debian's stock value when both)."""
    nets = []
    if cfg.inet_protocols in ("all", "ipv4"):
        nets.append("127.0.0.0/8")
    if cfg.inet_protocols == "all":
        nets.append("[::ffff:127.0.0.0]/104")
    if cfg.inet_protocols in ("all", "ipv6"):
        nets.append("[::1]/128")
    return " ".join(nets)


def host_files(cfg: MailConfig) -> list[HostFile]:
    return [
        host_file(paths.MAIN_CF, "postfix/main.cf.j2", cfg=cfg, mynetworks=_mynetworks(cfg)),
        host_file(paths.MASTER_CF, "postfix/master.cf.j2", cfg=cfg),
    ]


# --- domain level: the domain's addresses ----------------------------------------------------


def _senders(cfg: MailConfig) -> list[tuple[str, str]]:
    """controlled_auth_senders: every address a user may send as -> the user."""
    return [(address, user.name) for user in cfg.users for address in cfg.addresses_of(user)]


def _recipients(cfg: MailConfig) -> list[str]:
    """Every address the stack's users receive at: Postfix accepts these (and the aliases) alone."""
    return [address for address, _ in _senders(cfg)]


def _virtual_aliases(cfg: MailConfig) -> list[tuple[str, str]]:
    """Addresses whose local part is not the owner's login name need a virtual alias."""
    return [(address, user) for address, user in _senders(cfg) if address.rpartition("@")[0] != user]


def lookup_tables(cfg: MailConfig) -> list[HostFile]:
    """Who may send as which address, which addresses are accepted, and their virtual aliases."""
    return [
        host_file(paths.SENDER_LOGINS, "postfix/domain/controlled_auth_senders.j2", senders=_senders(cfg)),
        host_file(paths.RECIPIENTS, "postfix/domain/recipients.j2", recipients=_recipients(cfg)),
        host_file(paths.VIRTUAL_ALIASES, "postfix/domain/virtual.j2", aliases=_virtual_aliases(cfg)),
    ]


def aliases(cfg: MailConfig) -> HostFile:
    """/etc/aliases: postmaster@ and root@ go to the stack's postmaster mailbox."""
    return host_file(paths.ALIASES, "postfix/domain/aliases.j2", postmaster=cfg.postmaster_user)


def files(cfg: MailConfig) -> list[HostFile]:
    """Every file of the unit, in the order it installs them.

    The lookup tables come before main.cf: on a host that lacks one, its
    database is built before the main.cf that names it is swapped in
    (templates/postfix/before.sh.j2).
    """
    return [*lookup_tables(cfg), *host_files(cfg), aliases(cfg)]


# --- checks ---------------------------------------------------------------------------------

_STAGED_DIR = staged(paths.POSTFIX_DIR)

# `postfix check` (postfix-script check-fatal/check-warn) logs only to syslog
# unless stderr is a terminal, so a failing check would exit 1 with no message.
# script(1) (bsdutils, Essential in Debian) gives it a terminal; its output is
# passed on to stderr with the terminal's CRs removed. On Debian bookworm,
# `postfix -c DIR` needs no alternate_config_directories entry when run as root
# (only the set-gid postdrop/postqueue check that list); -c also makes
# postfix-script's own postconf/postsuper calls read the staged main.cf.
_POSTFIX_CHECK = (
    "( set -o pipefail; "
    f"script -qec \"postfix -c '$STAGE{paths.POSTFIX_DIR}' check\" /dev/null </dev/null "
    "| tr -d '\\r' >&2 )"
)

# Postfix reads a main.cf or master.cf changed less than two seconds ago again and
# again, 0.3 s apart, until it is older, lest it read a file that an editor is still
# writing (dict_load_file_xt, load_file: "pausing to let ... cool down"). Staged
# files are written whole before any check reads them: dated two seconds back,
# the first check does not wait (-c: never create a file the stage lacks).
_SETTLED = f"touch -c -d '2 seconds ago' {staged(paths.MAIN_CF)} {staged(paths.MASTER_CF)}"

# Each check with the name `python -m components check` reports it under
# (None: a preparation, not a check of its own). The recipients table is
# checked in BEFORE, where its first database is installed.
CHECKS: list[tuple[str | None, str]] = [
    (None, _SETTLED),
    ("postconf -n", silent(f"postconf -c {_STAGED_DIR} -n")),
    ("postconf -M", silent(f"postconf -c {_STAGED_DIR} -M")),
    ("postmap controlled_auth_senders", silent(f"postmap -c {_STAGED_DIR} hash:{staged(paths.SENDER_LOGINS)}")),
    ("postmap virtual", silent(f"postmap -c {_STAGED_DIR} hash:{staged(paths.VIRTUAL_ALIASES)}")),
    ("postalias aliases", silent(f"postalias -c {_STAGED_DIR} hash:{staged(paths.ALIASES)}")),
    ("postfix check", _POSTFIX_CHECK),
]
