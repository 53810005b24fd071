"""One module per service: everything mailstack does with that daemon, in one place.

Host level (the host stack's, once per host whatever its domains): postfix,
opendkim, policyd_spf, dovecot, resolver (unbound), fail2ban (with
mailstack:fail2ban: its files are none, and it has no unit, without), rspamd
(with Redis; likewise with mailstack:spam_filter), each with

- NAME: its unit's name (the host stack's `host-<name>` command);
- PACKAGES: the Debian packages it needs;
- files(cfg): the files it installs (rendered from templates/<service>/);
- CONFIG_DIRS: the live folders copied into the stage before the check;
- CHECKS: the daemon's own checkers on the staged files, each with the name
  `python -m components check` reports it under;
- APPLY: the template of how it takes a change (reload, restart), run after
  the swap; BEFORE, when it has one: what runs between the check and the swap
  (templates/<service>/apply.sh.j2, before.sh.j2).

tls (the host's TLS pair) and tables (the mail store and the assembler of the
shared tables) are the host's other units, with their scripts alone.

Domain level (a domain stack's, one set per mail domain): mailboxes (the
domain's files and password hashes), sieve (users' scripts) and the DKIM key
(opendkim.dkim_key_script). Their templates live in templates/mailboxes/,
templates/sieve/ and templates/opendkim/domain/.

Paths that two services share are named in components/paths.py.
"""

from __future__ import annotations

from components.config import HostConfig
from components.render import HostFile
from components.services import (
    dovecot, fail2ban, opendkim, policyd_spf, postfix, resolver, rspamd, sieve, tables, tls,
)

# The host's services whose units stage, check, swap and apply files.
SERVICES = {
    service.NAME: service for service in (postfix, opendkim, policyd_spf, dovecot, resolver, fail2ban, rspamd)
}

# Installed by the first unit, in this order (a new order would change that unit's script);
# then tls.packages(cfg), fail2ban.packages(cfg) and rspamd.packages(cfg), which depend on the config
# (units.packages_unit).
PACKAGES = (*postfix.PACKAGES, *policyd_spf.PACKAGES, *dovecot.PACKAGES, *opendkim.PACKAGES, *tls.PACKAGES,
            *resolver.PACKAGES)

# Each host service's checks, in the order `python -m components check` runs and reports them.
NAMED_CHECKS: dict[str, list[tuple[str | None, str]]] = {
    service.NAME: service.CHECKS
    for service in (postfix, dovecot, opendkim, policyd_spf, resolver, fail2ban, rspamd)
}

# What the deploy script runs, service by service (the names are for `check` alone).
CHECKS: dict[str, list[str]] = {
    name: [command for _, command in checks] for name, checks in NAMED_CHECKS.items()
}

CONFIG_DIRS: dict[str, list[str]] = {name: service.CONFIG_DIRS for name, service in SERVICES.items()}

__all__ = ["SERVICES", "PACKAGES", "NAMED_CHECKS", "CHECKS", "CONFIG_DIRS", "render_host_files", "sieve", "tables"]


def render_host_files(cfg: HostConfig) -> dict[str, list[HostFile]]:
    """Every rendered file of the host stack, by service (the keys of SERVICES)."""
    return {name: service.files(cfg) for name, service in SERVICES.items()}
