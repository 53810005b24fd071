"""Users' Sieve scripts (mailstack:users[].sieve), each in its mailbox's home.

Domain level only: one script per mailbox that has one
(templates/sieve/user.sieve.j2), private to vmail, which Dovecot runs as.
Dovecot finds it at ~/.dovecot.sieve (paths.USER_SIEVE_NAME, see
90-sieve.conf). The domain stack's files unit installs them
(components/services/mailboxes.py).
"""

from __future__ import annotations

from components import paths
from components.config import DomainConfig
from components.render import HostFile, host_file

NAME = "sieve"
PACKAGES: tuple[str, ...] = ()  # sievec comes with Dovecot (dovecot-sieve)

TEMPLATE = "sieve/user.sieve.j2"


def files(cfg: DomainConfig) -> list[HostFile]:
    """~/.dovecot.sieve of each mailbox with a script, private to vmail."""
    return [
        host_file(
            paths.user_sieve(cfg.domain, user.name),
            TEMPLATE,
            mode="0600",
            owner=paths.VMAIL_USER,
            group=paths.VMAIL_USER,
            user=user,
            mailbox=cfg.mailbox_of(user),
        )
        for user in cfg.users
        if user.sieve is not None
    ]


def checks(domain: str) -> list[tuple[str | None, str]]:
    """sievec on every staged script of `domain`, each message prefixed with its mailbox.

    Compiled with the host's Dovecot config into a throw-away directory
    (Dovecot compiles ~/.dovecot.svbin itself, as vmail); every script is
    compiled, then the check fails if any of them did not compile.
    """
    scripts = f'"$STAGE"{paths.user_sieve(domain, "*")}'
    check = (
        '( out=$(mktemp -d); trap \'rm -rf "$out"\' EXIT; failed=0; '
        f"for script in {scripts}; do "
        '[ -e "$script" ] || continue; '
        f'name=${{script%/{paths.USER_SIEVE_NAME}}}; name=${{name##*/}}; '
        'if ! err=$(sievec "$script" "$out/$name.svbin" 2>&1); then failed=1; fi; '
        f'[ -z "$err" ] || printf "%s\\n" "$err" | sed "s/^/mailbox $name@{domain}: /" >&2; '
        "done; exit $failed )"
    )
    return [(f"sievec users' ~/{paths.USER_SIEVE_NAME}", check)]
