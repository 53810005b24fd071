"""OpenDKIM: signs outgoing mail and verifies incoming DKIM signatures.

Host level: /etc/opendkim.conf (templates/opendkim/) and the milter socket
Postfix reaches it on (paths.OPENDKIM_SOCKET). Domain level: the signing key
of the domain's selector, made once on the host by its own unit
(templates/opendkim/domain/dkim-key.sh.j2), whose public half becomes the
DKIM record (components/records.py); and the domain's lines in OpenDKIM's
KeyTable and SigningTable (templates/opendkim/domain/), which say which key
signs mail from which domain.
"""

from __future__ import annotations

from components import paths
from components.checks import staged
from components.config import MailConfig
from components.render import HostFile, host_file, render_template

NAME = "opendkim"
PACKAGES = ("opendkim", "opendkim-tools")

# Its config is /etc/opendkim.conf and the two tables; the keys stay where they are.
CONFIG_DIRS: list[str] = []

# Makes the socket's directory inside Postfix's chroot, then starts or restarts
# OpenDKIM (milter_default_action = accept: mail flows on during the restart).
APPLY = "opendkim/apply.sh.j2"


# --- host level -----------------------------------------------------------------------------


def files(cfg: MailConfig) -> list[HostFile]:
    """Every file of the unit: opendkim.conf and the domain's tables (the key has its own unit, below)."""
    # The tables sit beside the keys, in a folder only opendkim may enter: OpenDKIM
    # reads them again as the opendkim user when it restarts. Tables first, as
    # Postfix's: in place before the opendkim.conf that names them.
    table = {"mode": "0640", "owner": "root", "group": "opendkim", "cfg": cfg}
    return [
        host_file(paths.DKIM_KEY_TABLE, "opendkim/domain/KeyTable.j2", **table),
        host_file(paths.DKIM_SIGNING_TABLE, "opendkim/domain/SigningTable.j2", **table),
        host_file(paths.OPENDKIM_CONF, "opendkim/opendkim.conf.j2", cfg=cfg),
    ]


# --- domain level ---------------------------------------------------------------------------


def dkim_key_script(cfg: MailConfig) -> str:
    """The DKIM unit's work: make the selector's key once; print its public half (base64 DER)."""
    return render_template(
        "opendkim/domain/dkim-key.sh.j2", domain=cfg.domain, selector=cfg.dkim_selector, bits=cfg.dkim_bits
    )


# --- checks ---------------------------------------------------------------------------------

# opendkim.conf names the live tables: `opendkim -n` reads a copy of the staged
# opendkim.conf that names the staged ones (it fails on a table it cannot open).
_CHECK_CONF = '"$STAGE/opendkim-check.conf"'
_OPENDKIM_N = (
    f'( sed "s|file:{paths.DKIM_KEY_DIR}/|file:$STAGE{paths.DKIM_KEY_DIR}/|" '
    f"{staged(paths.OPENDKIM_CONF)} >{_CHECK_CONF}; "
    f"opendkim -n -x {_CHECK_CONF} )"
)

# `opendkim -n` does not open the key files a KeyTable names: each must exist,
# belong to opendkim and not be readable by others (OpenDKIM's RequireSafeKeys),
# or the domain's mail would leave unsigned. A line: name domain:selector:keyfile.
_KEYS_SAFE = (
    '( while read -r name value || [ -n "$name" ]; do '
    "case \"$name\" in ''|'#'*) continue ;; esac; "
    'key=${value#*:}; key=${key#*:}; '
    "where=\"KeyTable: the key of $name, $key,\"; "
    'if [ ! -f "$key" ]; then '
    'echo "$where does not exist (the DKIM unit makes it)" >&2; exit 1; fi; '
    'owner=$(stat -c %U "$key"); mode=$(stat -c %a "$key"); '
    'if [ "$owner" != opendkim ]; then echo "$where belongs to $owner, not to opendkim" >&2; exit 1; fi; '
    'if [ $(( 8#$mode & 4 )) -ne 0 ]; then '
    'echo "$where is readable by others (mode $mode; expected 0600)" >&2; exit 1; fi; '
    f"done <{staged(paths.DKIM_KEY_TABLE)} )"
)

# Nor does it look the SigningTable's key names up in the KeyTable: a name the
# KeyTable lacks would leave that domain's mail unsigned. A line: domain keyname.
_NAMES_KNOWN = (
    '( while read -r domain name rest || [ -n "$domain" ]; do '
    "case \"$domain\" in ''|'#'*) continue ;; esac; "
    f"awk -v name=\"$name\" '$1 == name {{ found = 1 }} END {{ exit !found }}' {staged(paths.DKIM_KEY_TABLE)} "
    '|| { echo "SigningTable: $domain names the key $name, which the KeyTable does not list" >&2; exit 1; }; '
    f"done <{staged(paths.DKIM_SIGNING_TABLE)} )"
)

CHECKS: list[tuple[str | None, str]] = [
    ("opendkim -n", _OPENDKIM_N),
    ("KeyTable's keys", _KEYS_SAFE),
    ("SigningTable's key names", _NAMES_KNOWN),
]
