"""OpenDKIM: signs outgoing mail and verifies incoming DKIM signatures.

Host level: /etc/opendkim.conf (templates/opendkim/) and the milter socket
Postfix reaches it on (paths.OPENDKIM_SOCKET). Its KeyTable and SigningTable
(which key signs mail from which domain) are assembled from every hosted
domain's files (components/services/tables.py), which also checks each key.

Domain level (a domain stack's units, planned by components/dkim_rotation.py):
- a key unit per selector: the key made once on the host
  (templates/opendkim/domain/dkim-key.sh.j2), whose public half becomes the
  selector's DKIM record (components/records.py); its delete removes the
  private key of a retired selector (dkim-remove.sh.j2);
- the signing unit: the domain's selector file, which the assembler turns
  into the SigningTable, switched to a new selector only once its record is
  visible through the host's resolver (dkim-signing.sh.j2).
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


def dkim_key_script(cfg: DomainConfig, selector: str | None = None) -> str:
    """A domain's DKIM key unit: make the selector's key once; print its public half (base64 DER)."""
    return render_template(
        "opendkim/domain/dkim-key.sh.j2", domain=cfg.domain, selector=selector or cfg.dkim_selector, bits=cfg.dkim_bits
    )


def dkim_remove_script(cfg: DomainConfig, selector: str) -> str:
    """A key unit's delete: the selector's private key goes (never the one that signs)."""
    return render_template(
        "opendkim/domain/dkim-remove.sh.j2", domain=cfg.domain, selector=selector,
        selector_file=paths.DOMAIN_SELECTOR_FILE,
    )


def selector_file(cfg: DomainConfig) -> HostFile:
    """The domain's dkim_selector (the assembler's SigningTable input), as the signing unit writes it."""
    return host_file(
        f"{paths.domain_dir(cfg.domain)}/{paths.DOMAIN_SELECTOR_FILE}", "mailboxes/dkim_selector.j2",
        domain=cfg.domain, selector=cfg.dkim_selector,
    )


def dkim_signing_script(cfg: DomainConfig) -> str:
    """The signing unit: mailstack:dkim_selector signs, once its record is visible (a rotation)."""
    return render_template(
        "opendkim/domain/dkim-signing.sh.j2", domain=cfg.domain, selector=cfg.dkim_selector,
        selector_file=paths.DOMAIN_SELECTOR_FILE, content=selector_file(cfg).content,
        timeout=cfg.dkim_publish_timeout_seconds,
    )


# `opendkim -n` reads the staged opendkim.conf and the live tables it names
# (the host's tables unit has made them); it fails on a table it cannot open.
CHECKS: list[tuple[str | None, str]] = [
    ("opendkim -n", f"opendkim -n -x {staged(paths.OPENDKIM_CONF)}"),
]
