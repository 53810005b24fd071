"""OpenDKIM: signs outgoing mail and verifies incoming DKIM signatures.

Host level: /etc/opendkim.conf (templates/opendkim/) and the milter socket
Postfix reaches it on (paths.OPENDKIM_SOCKET). Domain level: the signing key
of the domain's selector, made once on the host by its own unit
(templates/opendkim/domain/dkim-key.sh.j2), whose public half becomes the
DKIM record (components/records.py).
"""

from __future__ import annotations

from components import paths
from components.checks import staged
from components.config import MailConfig
from components.render import HostFile, host_file, render_template

NAME = "opendkim"
PACKAGES = ("opendkim", "opendkim-tools")

# Its config is the single file /etc/opendkim.conf; the keys stay where they are.
CONFIG_DIRS: list[str] = []

# Makes the socket's directory inside Postfix's chroot, then starts or restarts OpenDKIM.
APPLY = "opendkim/apply.sh.j2"


# --- host level -----------------------------------------------------------------------------


def files(cfg: MailConfig) -> list[HostFile]:
    """Every file of the unit: all host level (the domain's key has its own unit, below)."""
    return [host_file(paths.OPENDKIM_CONF, "opendkim/opendkim.conf.j2", cfg=cfg)]


# --- domain level ---------------------------------------------------------------------------


def dkim_key_script(cfg: MailConfig) -> str:
    """The DKIM unit's work: make the selector's key once; print its public half (base64 DER)."""
    return render_template(
        "opendkim/domain/dkim-key.sh.j2", domain=cfg.domain, selector=cfg.dkim_selector, bits=cfg.dkim_bits
    )


# --- checks ---------------------------------------------------------------------------------

# `opendkim -n` also opens the key (paths.dkim_key): the DKIM unit runs first.
CHECKS: list[tuple[str | None, str]] = [
    ("opendkim -n", f"opendkim -n -x {staged(paths.OPENDKIM_CONF)}"),
]
