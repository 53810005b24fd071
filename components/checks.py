"""The daemons' own checkers, as shell commands run against a *staged* config.

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
  /var/spool/postfix, as it always does.
* OpenDKIM: the DKIM key /etc/opendkim/<selector>.private (``opendkim -n``
  opens it, and requires it and its directories not to be writable by others).

Side effects inside the stage, on purpose (the staged config is then complete):
``postmap``/``postalias`` build ``controlled_auth_senders.db``, ``virtual.db``
and ``aliases.db`` next to the staged sources, and ``sievec`` compiles
/etc/dovecot/sieve/*.sieve to ``*.svbin`` next to them: install those too, or
rerun ``postmap``/``newaliases``/``sievec`` after the swap (Dovecot's LMTP runs
as the user and cannot write /etc/dovecot/sieve itself). Users' scripts are
compiled into a temporary directory instead: Dovecot compiles
``~/.dovecot.svbin`` as the user, and a root-owned one there would be in its way.
"""

from __future__ import annotations


def _silent(command: str) -> str:
    """Run `command`; any output on stderr is a failure, printed to stderr.

    postconf, postmap and postalias only *warn* (exit 0) about unknown
    parameters and malformed table lines; doveconf warns about obsolete
    settings the same way. A staged config must produce no warning at all.
    """
    return (
        f'( err=$({command} 2>&1 >/dev/null) && [ -z "$err" ] '
        f'|| {{ printf "%s\\n" "${{err:-{command.split()[0]}: failed without a message}}" >&2; exit 1; }} )'
    )


_POSTFIX = '"$STAGE/etc/postfix"'

# `postfix check` (postfix-script check-fatal/check-warn) logs only to syslog
# unless stderr is a terminal, so a failing check would exit 1 with no message.
# script(1) (bsdutils, Essential in Debian) gives it a terminal; its output is
# passed on to stderr with the terminal's CRs removed. On Debian bookworm,
# `postfix -c DIR` needs no alternate_config_directories entry when run as root
# (only the set-gid postdrop/postqueue check that list); -c also makes
# postfix-script's own postconf/postsuper calls read the staged main.cf.
_POSTFIX_CHECK = (
    "( set -o pipefail; "
    "script -qec \"postfix -c '$STAGE/etc/postfix' check\" /dev/null </dev/null "
    "| tr -d '\\r' >&2 )"
)

# policyd-spf has no checker: read the file with its own reader
# (spf_engine.policydspfsupp._readConfigFile). That reader only logs unknown
# names and malformed lines to syslog and goes on, so collect what it would log.
_POLICYD_SPF_PARSE = (
    "/usr/bin/python3 -c '"
    "import sys, syslog\n"
    "msgs = []\n"
    "syslog.syslog = lambda *args: msgs.append(str(args[-1]))\n"
    "from spf_engine import policydspfsupp as spf\n"
    "path = sys.argv[1]\n"
    "try:\n"
    "    spf._readConfigFile(path, dict(spf.defaultConfigData), {\"debugLevel\": 1})\n"
    "except Exception as err:\n"
    "    msgs.append(\"%s: %s\" % (path, err))\n"
    "for msg in msgs:\n"
    "    print(\"policyd-spf: \" + msg, file=sys.stderr)\n"
    "sys.exit(1 if msgs else 0)\n"
    "' \"$STAGE/etc/postfix-policyd-spf-python/policyd-spf.conf\""
)

# The default script (sieve_default) is compiled next to itself, in the stage.
_DEFAULT_SIEVE = (
    '( for script in "$STAGE"/etc/dovecot/sieve/*.sieve; do '
    '[ -e "$script" ] || continue; '
    'sievec -c "$STAGE/etc/dovecot/dovecot.conf" "$script" || exit 1; '
    "done )"
)

# Users' scripts: $STAGE/home/<user>/.dovecot.sieve, compiled with the host's
# Dovecot config (Dovecot's own unit comes later) into a throw-away directory.
# sievec names a script only ".dovecot", so each message is prefixed with the
# user it is about; every user's script is compiled, then the check fails if
# any of them did not compile.
_USER_SIEVE = (
    '( out=$(mktemp -d); trap \'rm -rf "$out"\' EXIT; failed=0; '
    'for script in "$STAGE"/home/*/.dovecot.sieve; do '
    '[ -e "$script" ] || continue; '
    'user=${script%/.dovecot.sieve}; user=${user##*/}; '
    'if ! err=$(sievec "$script" "$out/$user.svbin" 2>&1); then failed=1; fi; '
    '[ -z "$err" ] || printf "%s\\n" "$err" | sed "s/^/user $user: /" >&2; '
    "done; exit $failed )"
)

# Postfix reads a main.cf or master.cf changed less than two seconds ago again and
# again, 0.3 s apart, until it is older, lest it read a file that an editor is still
# writing (dict_load_file_xt, load_file: "pausing to let ... cool down"). Staged
# files are written whole before any check reads them: dated two seconds back,
# the first check does not wait (-c: never create a file the stage lacks).
_POSTFIX_SETTLED = "touch -c -d '2 seconds ago' \"$STAGE/etc/postfix/main.cf\" \"$STAGE/etc/postfix/master.cf\""

CONFIG_DIRS: dict[str, list[str]] = {
    # /etc/aliases (a file) is written into the stage with the rendered files.
    "postfix": ["/etc/postfix"],
    # Includes are relative to dovecot.conf, so the staged conf.d is what is read.
    "dovecot": ["/etc/dovecot"],
    # Its config is the single file /etc/opendkim.conf; the keys stay where they are.
    "opendkim": [],
    "policyd-spf": ["/etc/postfix-policyd-spf-python"],
    # Users' scripts live in their homes: only the rendered scripts are staged.
    "sieve": [],
}

# Each check with the name `python -m components check` reports it under
# (None: a preparation, not a check of its own).
NAMED_CHECKS: dict[str, list[tuple[str | None, str]]] = {
    "postfix": [
        (None, _POSTFIX_SETTLED),
        ("postconf -n", _silent(f"postconf -c {_POSTFIX} -n")),
        ("postconf -M", _silent(f"postconf -c {_POSTFIX} -M")),
        (
            "postmap controlled_auth_senders",
            _silent(f'postmap -c {_POSTFIX} hash:"$STAGE/etc/postfix/controlled_auth_senders"'),
        ),
        ("postmap virtual", _silent(f'postmap -c {_POSTFIX} hash:"$STAGE/etc/postfix/virtual"')),
        ("postalias aliases", _silent(f'postalias -c {_POSTFIX} hash:"$STAGE/etc/aliases"')),
        ("postfix check", _POSTFIX_CHECK),
    ],
    "dovecot": [
        ("doveconf -n", _silent('doveconf -c "$STAGE/etc/dovecot/dovecot.conf" -n')),
        ("sievec default.sieve", _DEFAULT_SIEVE),
    ],
    "opendkim": [
        ("opendkim -n", 'opendkim -n -x "$STAGE/etc/opendkim.conf"'),
    ],
    "policyd-spf": [
        ("policyd-spf.conf read by policyd-spf", _POLICYD_SPF_PARSE),
    ],
    "sieve": [
        ("sievec users' ~/.dovecot.sieve", _USER_SIEVE),
    ],
}

# What the deploy script runs, service by service, in this order.
CHECKS: dict[str, list[str]] = {
    service: [command for _, command in checks] for service, checks in NAMED_CHECKS.items()
}
