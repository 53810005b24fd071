"""Dovecot: IMAP, final delivery over LMTP (with Sieve), and SMTP AUTH for Postfix.

Host level only: the conf.d files mailstack owns, the default Sieve script,
the quota warning script, and the spam scripts (templates/dovecot/): the
global Sieve scripts that learn from Junk over IMAPSieve and file spam into
Junk (90-spam.conf, README "Learning from Junk"), and the program they pipe a
message to, which asks rspamd's controller to learn it. The sockets Postfix
uses are paths.DOVECOT_LMTP_SOCKET, paths.DOVECOT_AUTH_SOCKET and quota-status's
paths.QUOTA_STATUS_SOCKET. Users' own Sieve scripts are domain level:
components/services/sieve.py.
"""

from __future__ import annotations

from components import paths
from components.checks import silent, staged
from components.config import HostConfig
from components.render import HostFile, host_file
from components.services import rspamd

NAME = "dovecot"
PACKAGES = ("dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "dovecot-sieve")

# Includes are relative to dovecot.conf, so the staged conf.d is what is read.
CONFIG_DIRS = [paths.DOVECOT_DIR]

# Compiles the default script, then starts or reloads Dovecot.
APPLY = "dovecot/apply.sh.j2"

_CONF_D = [
    "10-master.conf", "10-mail.conf", "20-lmtp.conf", "10-auth.conf", "90-sieve.conf", "10-ssl.conf", "90-quota.conf",
    "90-spam.conf",
]

# How the learning program asks rspamd's controller to learn the message on its stdin
# (rspamd's: its learning socket, for vmail), and how long it waits (Dovecot kills a pipe
# program after 10 s: sieve_pipe_exec_timeout).
LEARN_SPAM_COMMAND = rspamd.LEARN_SPAM_COMMAND
LEARN_HAM_COMMAND = rspamd.LEARN_HAM_COMMAND
LEARN_TIMEOUT_SECONDS = 5

# The global scripts of spam_filter, each compiled beside itself: installed and compiled
# with or without it (90-spam.conf runs them only with it).
SPAM_SIEVE = {
    paths.JUNK_SIEVE: "dovecot/junk.sieve.j2",
    paths.LEARN_SPAM_SIEVE: "dovecot/learn-spam.sieve.j2",
    paths.LEARN_HAM_SIEVE: "dovecot/learn-ham.sieve.j2",
}


def files(cfg: HostConfig) -> list[HostFile]:
    """The conf.d files mailstack owns, the global Sieve scripts and the programs Dovecot runs: all host level."""
    return [
        *(host_file(f"{paths.DOVECOT_CONF_D}/{name}", f"dovecot/{name}.j2", cfg=cfg) for name in _CONF_D),
        host_file(paths.DEFAULT_SIEVE, "dovecot/default.sieve.j2", cfg=cfg),
        host_file(paths.QUOTA_WARNING_SCRIPT, "dovecot/quota-warning.sh.j2", mode="0755", cfg=cfg),
        *(host_file(path, template, cfg=cfg) for path, template in SPAM_SIEVE.items()),
        host_file(f"{paths.SIEVE_PIPE_DIR}/{paths.LEARN_PROGRAM}", "dovecot/learn.sh.j2", mode="0755",
                  learn_spam=LEARN_SPAM_COMMAND, learn_ham=LEARN_HAM_COMMAND, learn_timeout=LEARN_TIMEOUT_SECONDS),
    ]


# The default script (sieve_default) is compiled next to itself, in the stage.
_DEFAULT_SIEVE = (
    f'( for script in "$STAGE"{paths.DEFAULT_SIEVE_DIR}/*.sieve; do '
    '[ -e "$script" ] || continue; '
    f'sievec -c {staged(paths.DOVECOT_CONF)} "$script" || exit 1; '
    "done )"
)

# The spam scripts likewise, under the staged config (its sieve_plugins and global extensions).
_STAGED_SPAM_SIEVE = " ".join(f'"$STAGE"{path}' for path in SPAM_SIEVE)
_SPAM_SIEVE = (
    f"( for script in {_STAGED_SPAM_SIEVE}; do "
    f'sievec -c {staged(paths.DOVECOT_CONF)} "$script" || exit 1; '
    "done )"
)

CHECKS: list[tuple[str | None, str]] = [
    ("doveconf -n", silent(f"doveconf -c {staged(paths.DOVECOT_CONF)} -n")),
    ("sievec default.sieve", _DEFAULT_SIEVE),
    ("sievec spam scripts", _SPAM_SIEVE),
]
