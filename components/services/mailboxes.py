"""A mail domain's mailboxes: addresses, aliases, who may send as what, passwords.

Domain level only. The domain stack writes its own files into its folder on
the host (paths.domain_dir), and the host's assembler builds the tables that
Postfix, Dovecot and OpenDKIM read from every domain's folder
(components/services/tables.py, docs/tables.md). Two units:

- files: mailboxes, aliases, sender_logins, catch_all, quotas and the users' Sieve
  scripts (dkim_selector is the DKIM signing unit's: services/opendkim.py) (components/services/sieve.py), staged, checked and
  swapped like a service's files (templates/mailboxes/before.sh.j2,
  apply.sh.j2); its delete command retires the domain (retire.sh.j2);
- passwords: the password hashes, a secret, on the unit's stdin
  (`passwords_stdin`), so that its script is the command line itself.
"""

from __future__ import annotations

import shlex

from components import paths
from components.config import DomainConfig
from components.render import HostFile, host_file, render_template

NAME = "mailboxes"

BEFORE = "mailboxes/before.sh.j2"
APPLY = "mailboxes/apply.sh.j2"


def mailboxes(cfg: DomainConfig) -> list[str]:
    """Every mailbox address of the domain, e.g. alice@example.com."""
    return [cfg.mailbox_of(user) for user in cfg.users]


def sender_logins(cfg: DomainConfig) -> list[tuple[str, str]]:
    """Every address a user may send as -> the login (mailbox address) that owns it."""
    return [(address, cfg.mailbox_of(user)) for user in cfg.users for address in cfg.addresses_of(user)]


def aliases(cfg: DomainConfig) -> list[tuple[str, list[str]]]:
    """Address -> the mailboxes it delivers to.

    Users' other addresses go to their own mailbox; postmaster@<domain> to the
    postmaster's (RFC 5321 4.5.1: every domain has one); then mailstack:aliases.
    """
    entries = [(address, [login]) for address, login in sender_logins(cfg) if address != login]
    postmaster = cfg.postmaster_user
    if postmaster is not None:
        entries.append((f"postmaster@{cfg.domain}", [f"{postmaster}@{cfg.domain}"]))
    entries += [(alias.address, list(alias.to)) for alias in cfg.aliases]
    return entries


def quotas(cfg: DomainConfig) -> list[tuple[str, int]]:
    """Mailbox -> its quota in bytes, for the mailboxes that have one (README, "Mailbox quotas")."""
    entries = [(cfg.mailbox_of(user), cfg.quota_of(user)) for user in cfg.users]
    return [(mailbox, size) for mailbox, size in entries if size is not None]


def catch_all(cfg: DomainConfig) -> str:
    """The mailbox that gets unknown addresses' mail, or "" for none."""
    return f"{cfg.catch_all}@{cfg.domain}" if cfg.catch_all else ""


def files(cfg: DomainConfig) -> list[HostFile]:
    """The domain's files for the assembler, in its folder (docs/tables.md)."""
    folder = paths.domain_dir(cfg.domain)
    values = {
        "domain": cfg.domain,
        "mailboxes": mailboxes(cfg),
        "aliases": aliases(cfg),
        "sender_logins": sender_logins(cfg),
        "catch_all": catch_all(cfg),
        "quotas": quotas(cfg),
    }
    names = [name for name in paths.DOMAIN_TABLE_FILES if name != paths.DOMAIN_SELECTOR_FILE]
    return [host_file(f"{folder}/{name}", f"mailboxes/{name}.j2", **values) for name in names]


def tables_check(cfg: DomainConfig) -> str:
    """The staged files, checked with every other domain's by the host's assembler (nothing changes).

    An alias to a mailbox no domain hosts, or an address another domain
    claims, fails here, before anything is swapped in.
    """
    folder = paths.domain_dir(cfg.domain)
    return f'{paths.ASSEMBLER} --check {cfg.domain} "$STAGE"{folder}'


def stage_selector(cfg: DomainConfig) -> str:
    """Before the tables check: the domain's own dkim_selector copied into the stage.

    The selector is the DKIM signing unit's file, not this unit's; an assembler
    installed before rotations existed reads it from the stage only (a host
    stack not yet `up` with this version), and would refuse the stage without it.
    """
    live = f"{paths.domain_dir(cfg.domain)}/{paths.DOMAIN_SELECTOR_FILE}"
    return f'if [ -f {shlex.quote(live)} ]; then cp -p {shlex.quote(live)} "$STAGE"{shlex.quote(live)}; fi'


def passwords_script(cfg: DomainConfig) -> str:
    """The passwords unit's work (without the owner check): reads `passwords_stdin`."""
    return render_template("mailboxes/passwords.sh.j2", domain=cfg.domain)


def passwords_stdin(cfg: DomainConfig) -> str:
    """One `mailbox<TAB>hash` line per user ("-": no hash). Secret: hold it in a secret Output."""
    lines = []
    for user in cfg.users:
        secret = user.password_hash.get_secret_value() if user.password_hash else "-"
        lines.append(f"{cfg.mailbox_of(user)}\t{secret}\n")
    return "".join(lines)


def retire_script(cfg: DomainConfig) -> str:
    """The files unit's delete command (without the owner check): the domain is no longer hosted."""
    return render_template("mailboxes/retire.sh.j2", domain=cfg.domain)


def before_values(cfg: DomainConfig) -> dict:
    """What before.sh.j2 and apply.sh.j2 need."""
    return {"domain": cfg.domain, "locals": [user.name for user in cfg.users]}
