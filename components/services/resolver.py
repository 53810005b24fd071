"""unbound: the host's own validating resolver, on loopback only.

Host level only. Postfix's DANE (RFC 7672: `smtp_tls_security_level = dane`)
believes a TLSA record only when the resolver says it validated it (the AD
bit), and only a resolver on the host itself can be trusted to say so: the
link to any other could be forged. So the host runs Debian's unbound, which
validates from the root's trust anchor (Debian's own
unbound.conf.d/root-auto-trust-anchor-file.conf), and /etc/resolv.conf
points at it (the original is kept beside it, paths.RESOLV_CONF_BEFORE).

Files: /etc/unbound/unbound.conf.d/mailstack.conf (templates/resolver/).
BEFORE refuses a resolv.conf that another program manages (a link: to
systemd-resolved, resolvconf); APPLY starts or reloads unbound, points
resolv.conf at it once it answers, and refreshes Postfix's chroot copy.
"""

from __future__ import annotations

from components import paths
from components.checks import staged
from components.config import HostConfig
from components.render import HostFile, host_file

NAME = "resolver"
# bind9-dnsutils: dig, with which the unit asks unbound before trusting it.
PACKAGES = ("unbound", "bind9-dnsutils")
CONFIG_DIRS = [paths.UNBOUND_DIR]

BEFORE = "resolver/before.sh.j2"
APPLY = "resolver/apply.sh.j2"


def files(cfg: HostConfig) -> list[HostFile]:
    """Every file of the unit: all host level."""
    return [host_file(paths.UNBOUND_CONF, "resolver/unbound.conf.j2", cfg=cfg)]


CHECKS: list[tuple[str | None, str]] = [
    ("unbound's drop-in read by unbound-checkconf", f"unbound-checkconf {staged(paths.UNBOUND_CONF)} >/dev/null"),
]
