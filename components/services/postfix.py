"""Postfix: the MTA. Its packages, files, checks and how it takes a change.

Host level only: main.cf, master.cf, submission's header_checks and
/etc/aliases (templates/postfix/).
The mail domains reach Postfix through lookup tables that every domain stack
shares, assembled on the host from the domains' own files
(components/services/tables.py), which reloads Postfix when one of them
changed (an idle daemon would answer one more client from the old table).
"""

from __future__ import annotations

from components import paths
from components.checks import silent, staged
from components.config import HostConfig
from components.render import HostFile, host_file
from components.services import rspamd

NAME = "postfix"
PACKAGES = ("postfix",)

# /etc/aliases (a file) is written into the stage with the rendered files.
CONFIG_DIRS = [paths.POSTFIX_DIR]

# Runs after the checks, before the swap: notes what Postfix listens on now.
BEFORE = "postfix/before.sh.j2"
# Rebuilds /etc/aliases' database, then starts, restarts or reloads Postfix.
APPLY = "postfix/apply.sh.j2"


def _mynetworks(cfg: HostConfig) -> str:
    """Loopback only, for the protocols Postfix uses (Debian's stock value when both)."""
    nets = []
    if cfg.inet_protocols in ("all", "ipv4"):
        nets.append("127.0.0.0/8")
    if cfg.inet_protocols == "all":
        nets.append("[::ffff:127.0.0.0]/104")
    if cfg.inet_protocols in ("all", "ipv6"):
        nets.append("[::1]/128")
    return " ".join(nets)


def files(cfg: HostConfig) -> list[HostFile]:
    """Every file of the unit, in the order it installs them."""
    return [
        host_file(paths.MAIN_CF, "postfix/main.cf.j2", cfg=cfg, mynetworks=_mynetworks(cfg), milter=rspamd.MILTER),
        host_file(paths.MASTER_CF, "postfix/master.cf.j2", cfg=cfg),
        host_file(
            paths.ALIASES, "postfix/aliases.j2", host_name=cfg.host_name, postmaster_address=cfg.postmaster_address
        ),
        host_file(paths.SUBMISSION_HEADER_CHECKS, "postfix/submission_header_checks.j2", host_name=cfg.host_name),
    ]


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

# The Received header smtpd writes for mail a user submits, and what submission's
# cleanup must make of it: a regexp that does not compile only warns (and then
# matches nothing), so the check asks the staged file itself.
SUBMITTED_RECEIVED = ("Received: from laptop.home.example (unknown [192.0.2.7])\n"
                      "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\n"
                      "\tby mail.example.net (Postfix) with ESMTPSA id 4ABCD123\n"
                      "\tfor <bob@example.org>; Thu,  3 Dec 2026 06:00:00 +0000 (UTC)")
HIDDEN_RECEIVED = "REPLACE Received: from authenticated-user\n\t(using TLSv1.3"


def _ansi_c(text: str) -> str:
    """`text` as a bash $'...' string (its newlines and tabs escaped: the script stays one line)."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
    return f"$'{escaped}'"


_HEADER_CHECKS = (
    f"( out=$(postmap -c {_STAGED_DIR} -q {_ansi_c(SUBMITTED_RECEIVED)} "
    f"regexp:{staged(paths.SUBMISSION_HEADER_CHECKS)} 2>&1) || true; "
    f"case \"$out\" in {_ansi_c(HIDDEN_RECEIVED)}*) ;; *) printf '%s\\n' "
    f"\"{paths.SUBMISSION_HEADER_CHECKS} does not hide the client of a submitted mail's Received header: "
    f"${{out:-no match}}\" >&2; exit 1 ;; esac )"
)

# Each check with the name `python -m components check` reports it under
# (None: a preparation, not a check of its own). The shared tables are checked
# by the assembler that builds them.
CHECKS: list[tuple[str | None, str]] = [
    (None, _SETTLED),
    ("postconf -n", silent(f"postconf -c {_STAGED_DIR} -n")),
    ("postconf -M", silent(f"postconf -c {_STAGED_DIR} -M")),
    ("postalias aliases", silent(f"postalias -c {_STAGED_DIR} hash:{staged(paths.ALIASES)}")),
    ("postmap submission_header_checks", _HEADER_CHECKS),
    ("postfix check", _POSTFIX_CHECK),
]
