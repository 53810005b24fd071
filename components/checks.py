"""How the daemons' own checkers run against a *staged* config (the contract).

Each service's checks and config folders are declared by the service itself
(``CHECKS`` and ``CONFIG_DIRS`` in components/services/<service>.py, gathered
in components/services/__init__.py); this module holds what they share.

A stage is a directory, ``$STAGE``, that mirrors the filesystem: the deploy
script copies each service's ``CONFIG_DIRS`` into it (``cp -a /etc/postfix
"$STAGE/etc/postfix"``), writes the rendered files over them at ``$STAGE`` +
path (creating parent directories), then runs that service's ``CHECKS`` with
bash under ``set -euo pipefail``, as root. Every command exits non-zero with
the checker's message on stderr when the config is bad; only then is nothing
swapped in. Each command is a subshell, so it leaves no variables behind.

What the checks need from the host besides the stage (true on the host once
the earlier units have run, see docs/design.md):

* Postfix: the host owns the addresses in ``inet_interfaces`` (postfix, postmap
  and postalias refuse a main.cf naming an address no local interface has).
  ``postfix check`` also creates missing queue directories in the real
  queue directory (``paths.POSTFIX_CHROOT``), as it always does.
* OpenDKIM: the DKIM key ``paths.dkim_key(selector)`` (the staged KeyTable
  names it; the unit's own check wants it there, owned by opendkim and not
  readable by others, as OpenDKIM does when it signs).

Side effects inside the stage, on purpose (the staged config is then complete):
``postmap``/``postalias`` build ``controlled_auth_senders.db``, ``virtual.db``
and ``aliases.db`` next to the staged sources, and ``sievec`` compiles the
default script (``paths.DEFAULT_SIEVE_DIR``) to ``*.svbin`` next to it: install
those too, or rerun ``postmap``/``newaliases``/``sievec`` after the swap
(Dovecot's LMTP runs as the user and cannot write that folder itself). Users' scripts are
compiled into a temporary directory instead: Dovecot compiles
``~/.dovecot.svbin`` as the user, and a root-owned one there would be in its way.

Postfix "cools down": it reads a main.cf or master.cf changed less than two
seconds ago again and again until it is older. Staged files are dated two
seconds back before the first check (components/services/postfix.py), and so
are the swapped-in ones before the reload (templates/postfix/apply.sh.j2).
"""

from __future__ import annotations


def staged(path: str) -> str:
    """`path` inside the stage, double-quoted for the shell: "$STAGE/etc/postfix"."""
    return f'"$STAGE{path}"'


def silent(command: str) -> str:
    """Run `command`; any output on stderr is a failure, printed to stderr.

    postconf, postmap and postalias only *warn* (exit 0) about unknown
    parameters and malformed table lines; doveconf warns about obsolete
    settings the same way. A staged config must produce no warning at all.
    """
    return (
        f'( err=$({command} 2>&1 >/dev/null) && [ -z "$err" ] '
        f'|| {{ printf "%s\\n" "${{err:-{command.split()[0]}: failed without a message}}" >&2; exit 1; }} )'
    )
