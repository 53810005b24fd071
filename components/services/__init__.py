"""One module per service: everything mailstack does with that daemon, in one place.

Each service module (postfix, dovecot, opendkim, policyd_spf, sieve) says:

- NAME: its unit's name (the host's `<stack>-<name>` command);
- PACKAGES: the Debian packages it needs;
- files(cfg): the files it installs (rendered from templates/<service>/),
  split into its host-level and domain-level parts;
- CONFIG_DIRS: the live folders copied into the stage before the check;
- CHECKS: the daemon's own checkers on the staged files, each with the name
  `python -m components check` reports it under;
- APPLY: the template of how it takes a change (reload, restart), run after
  the swap; BEFORE, when it has one: what runs between the check and the swap
  (templates/<service>/apply.sh.j2, before.sh.j2).

tls and accounts are the host's other units, with their scripts alone.

Host level (once per host, whatever its domains): the packages, the TLS pair,
each daemon's own config (main.cf, master.cf, opendkim.conf, Dovecot's conf.d,
policyd-spf.conf). Domain level (one set per mail domain): the DKIM key, the
accounts, Postfix's address tables and /etc/aliases, users' Sieve scripts.
Their templates live in a `domain/` folder of the service's template folder.

Paths that two services share are named in components/paths.py.
"""

from __future__ import annotations

from components.config import MailConfig
from components.render import HostFile
from components.services import dovecot, opendkim, policyd_spf, postfix, sieve, tls

# The services whose units stage, check, swap and apply files, in the order of their files.
SERVICES = {service.NAME: service for service in (postfix, opendkim, policyd_spf, dovecot, sieve)}

# Installed by the first unit, in this order (a new order would change that unit's script).
PACKAGES = (*postfix.PACKAGES, *policyd_spf.PACKAGES, *dovecot.PACKAGES, *opendkim.PACKAGES, *tls.PACKAGES)

# Each service's checks, in the order `python -m components check` runs and reports them.
NAMED_CHECKS: dict[str, list[tuple[str | None, str]]] = {
    service.NAME: service.CHECKS for service in (postfix, dovecot, opendkim, policyd_spf, sieve)
}

# What the deploy script runs, service by service (the names are for `check` alone).
CHECKS: dict[str, list[str]] = {
    name: [command for _, command in checks] for name, checks in NAMED_CHECKS.items()
}

CONFIG_DIRS: dict[str, list[str]] = {name: service.CONFIG_DIRS for name, service in SERVICES.items()}


def render_host_files(cfg: MailConfig) -> dict[str, list[HostFile]]:
    """Every rendered file, by service (the keys of SERVICES)."""
    return {name: service.files(cfg) for name, service in SERVICES.items()}
