"""Users' Sieve scripts (mailstack:users[].sieve), each in its owner's home.

Domain level only: one script per mailbox that has one
(templates/sieve/domain/user.sieve.j2), private to its user. Dovecot finds it
at ~/.dovecot.sieve (paths.USER_SIEVE_NAME, see 90-sieve.conf).
"""

from __future__ import annotations

from components import paths
from components.config import MailConfig
from components.render import HostFile, host_file

NAME = "sieve"
PACKAGES: tuple[str, ...] = ()  # sievec comes with Dovecot (dovecot-sieve)

# Users' scripts live in their homes: only the rendered scripts are staged.
CONFIG_DIRS: list[str] = []

# Nothing to reload (see the template).
APPLY = "sieve/apply.sh.j2"

TEMPLATE = "sieve/domain/user.sieve.j2"


def files(cfg: MailConfig) -> list[HostFile]:
    """~/.dovecot.sieve of each user with a script, private to that user."""
    return [
        host_file(paths.user_sieve(user.name), TEMPLATE, mode="0600", owner=user.name, group=user.name, user=user)
        for user in cfg.users
        if user.sieve is not None
    ]


# Users' scripts: $STAGE/home/<user>/.dovecot.sieve, compiled with the host's
# Dovecot config (Dovecot's own unit comes later) into a throw-away directory.
# sievec names a script only ".dovecot", so each message is prefixed with the
# user it is about; every user's script is compiled, then the check fails if
# any of them did not compile.
_USER_SIEVE = (
    '( out=$(mktemp -d); trap \'rm -rf "$out"\' EXIT; failed=0; '
    f'for script in "$STAGE"{paths.user_sieve("*")}; do '
    '[ -e "$script" ] || continue; '
    f'user=${{script%/{paths.USER_SIEVE_NAME}}}; user=${{user##*/}}; '
    'if ! err=$(sievec "$script" "$out/$user.svbin" 2>&1); then failed=1; fi; '
    '[ -z "$err" ] || printf "%s\\n" "$err" | sed "s/^/user $user: /" >&2; '
    "done; exit $failed )"
)

CHECKS: list[tuple[str | None, str]] = [
    (f"sievec users' ~/{paths.USER_SIEVE_NAME}", _USER_SIEVE),
]
