"""Dovecot: IMAP, final delivery over LMTP (with Sieve), and SMTP AUTH for Postfix.

Host level only: the conf.d files mailstack owns, the default Sieve script and
the quota warning script (templates/dovecot/). The sockets Postfix uses are
paths.DOVECOT_LMTP_SOCKET, paths.DOVECOT_AUTH_SOCKET and quota-status's
paths.QUOTA_STATUS_SOCKET. Users' own Sieve scripts are domain level:
components/services/sieve.py.
"""

from __future__ import annotations

from components import paths
from components.checks import silent, staged
from components.config import HostConfig
from components.render import HostFile, host_file

NAME = "dovecot"
PACKAGES = ("dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "dovecot-sieve")

# Includes are relative to dovecot.conf, so the staged conf.d is what is read.
CONFIG_DIRS = [paths.DOVECOT_DIR]

# Compiles the default script, then starts or reloads Dovecot.
APPLY = "dovecot/apply.sh.j2"

_CONF_D = [
    "10-master.conf", "10-mail.conf", "20-lmtp.conf", "10-auth.conf", "90-sieve.conf", "10-ssl.conf", "90-quota.conf",
]


def files(cfg: HostConfig) -> list[HostFile]:
    """The conf.d files mailstack owns, plus the default Sieve script: all host level."""
    return [
        *(host_file(f"{paths.DOVECOT_CONF_D}/{name}", f"dovecot/{name}.j2", cfg=cfg) for name in _CONF_D),
        host_file(paths.DEFAULT_SIEVE, "dovecot/default.sieve.j2", cfg=cfg),
        host_file(paths.QUOTA_WARNING_SCRIPT, "dovecot/quota-warning.sh.j2", mode="0755", cfg=cfg),
    ]


# The default script (sieve_default) is compiled next to itself, in the stage.
_DEFAULT_SIEVE = (
    f'( for script in "$STAGE"{paths.DEFAULT_SIEVE_DIR}/*.sieve; do '
    '[ -e "$script" ] || continue; '
    f'sievec -c {staged(paths.DOVECOT_CONF)} "$script" || exit 1; '
    "done )"
)

CHECKS: list[tuple[str | None, str]] = [
    ("doveconf -n", silent(f"doveconf -c {staged(paths.DOVECOT_CONF)} -n")),
    ("sievec default.sieve", _DEFAULT_SIEVE),
]
