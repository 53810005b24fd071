"""OpenDKIM: signs outgoing mail and verifies incoming DKIM signatures.

Host level: /etc/opendkim.conf (templates/opendkim/) and the milter socket
Postfix reaches it on (paths.OPENDKIM_SOCKET). Its KeyTable and SigningTable
(which key signs mail from which domain) are assembled from every hosted
domain's files (components/services/tables.py), which also checks each key.

Domain level: the signing key of a domain's selector, made once on the host
by the domain stack's own unit (templates/opendkim/domain/dkim-key.sh.j2),
whose public half becomes the domain's DKIM record (components/records.py).
"""

from __future__ import annotations

from components import paths
from components.checks import staged
from components.config import DomainConfig, HostConfig
from components.render import HostFile, host_file, render_template

NAME = "opendkim"
PACKAGES = ("opendkim", "opendkim-tools")

# Its config is /etc/opendkim.conf alone; the tables and keys stay where they are.
CONFIG_DIRS: list[str] = []

# Makes the socket's directory inside Postfix's chroot, then starts or restarts
# OpenDKIM (milter_default_action = accept: mail flows on during the restart).
APPLY = "opendkim/apply.sh.j2"


def files(cfg: HostConfig) -> list[HostFile]:
    """Every file of the unit: opendkim.conf."""
    return [host_file(paths.OPENDKIM_CONF, "opendkim/opendkim.conf.j2", cfg=cfg)]


def dkim_key_script(cfg: DomainConfig) -> str:
    """A domain's DKIM unit: make the selector's key once; print its public half (base64 DER)."""
    return render_template(
        "opendkim/domain/dkim-key.sh.j2", domain=cfg.domain, selector=cfg.dkim_selector, bits=cfg.dkim_bits
    )


# `opendkim -n` reads the staged opendkim.conf and the live tables it names
# (the host's tables unit has made them); it fails on a table it cannot open.
CHECKS: list[tuple[str | None, str]] = [
    ("opendkim -n", f"opendkim -n -x {staged(paths.OPENDKIM_CONF)}"),
]
