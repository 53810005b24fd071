"""The scripts that converge the host, one per unit (pure: config → text).

Each unit is one SSH command. Most units send their script on stdin, so that
`pulumi preview --diff` shows the lines that change (a service unit carries
its config files inside the script, as quoted here-documents), and so that
nothing of the script shows in the host's process list. The passwords unit
is the exception: its stdin holds the password hashes, which are secret, so
its script (which holds none) is the command itself; so is the TLS unit's
with tls: acme, whose stdin is the Cloudflare API token.

Every script starts with the owner check: a host stack's units with
templates/units/owner.sh.j2 (the host is this host stack's, or no stack's
yet and is claimed), a domain stack's with templates/units/domain-owner.sh.j2
(the host is converged by the host stack the domain stack names, and the
domain's folder is this domain stack's). Anything else is refused before
anything changes.

Every value from the stack config reaches the shell through `q`
(shlex.quote) or inside a quoted here-document (`heredoc`, whose delimiter
no content can hold), never bare.

What a unit does is its service's business (components/services/: the
packages, the files, the checks, the before and apply steps); this module
wraps it into a unit: the runner, the owner check, the stage-check-swap
script (templates/units/service.sh.j2).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from components.config import DomainConfig, HostConfig
from components.hostfacts import HostFacts
from components.render import HostFile, render_template
from components.services import (
    CHECKS, CONFIG_DIRS, PACKAGES, SERVICES, fail2ban, mailboxes, opendkim, rspamd, sieve, tables, tls, web,
)


@dataclass(frozen=True)
class Unit:
    """One SSH command: what runs (`command`) and what it reads (`stdin`)."""

    command: str
    stdin: str
    # The stdin is secret (a token): the resource keeps it secret and logs nothing.
    secret: bool = False


def _sudo(ssh_user: str) -> str:
    return "" if ssh_user == "root" else "sudo -n "


def _runner(ssh_user: str) -> str:
    return render_template("units/run-stdin.sh", sudo=_sudo(ssh_user))


def _inline(ssh_user: str, script: str) -> str:
    """`script` as the command line itself (for a unit whose stdin is secret data)."""
    return f"{_sudo(ssh_user)}bash -c {shlex.quote(script)}"


# --- the host stack's units ------------------------------------------------------------------


def _host_owned(cfg: HostConfig, owner: str, script: str) -> Unit:
    """`script`, behind the check that the host is this host stack's (`owner`: "project/stack")."""
    check = render_template("units/owner.sh.j2", host_name=cfg.host_name, owner=owner, adopt=cfg.adopt)
    return Unit(command=_runner(cfg.ssh_user), stdin=check + script)


def packages_unit(cfg: HostConfig, owner: str) -> Unit:
    """The first unit: it claims the host for `owner` (every unit checks the claim)."""
    script = render_template("units/packages.sh.j2", host_name=cfg.host_name, packages=(*PACKAGES, *tls.packages(cfg), *fail2ban.packages(cfg),
                                                                                         *rspamd.packages(cfg)))
    return _host_owned(cfg, owner, script)


def tls_unit(cfg: HostConfig, owner: str) -> Unit:
    """The host's TLS pair (components/services/tls.py).

    With tls: acme its stdin is the Cloudflare API token (secret), so its
    script is the command itself, as the passwords unit's is.
    """
    if cfg.tls == "acme":
        check = render_template("units/owner.sh.j2", host_name=cfg.host_name, owner=owner, adopt=cfg.adopt)
        return Unit(_inline(cfg.ssh_user, check + tls.tls_script(cfg)), tls.token_stdin(cfg), secret=True)
    return _host_owned(cfg, owner, tls.tls_script(cfg))


def tables_unit(cfg: HostConfig, owner: str) -> Unit:
    """The vmail account, the assembler and the first (empty) tables (components/services/tables.py)."""
    script = render_template(
        "tables/install.sh.j2",
        host_name=cfg.host_name,
        vmail_uid=cfg.vmail_uid,
        assembler=tables.assembler_script(cfg.host_name, cfg.vmail_uid),
    )
    return _host_owned(cfg, owner, script)


def staging_script(files: list[HostFile]) -> str:
    """The part of a service unit that writes `files` under "$STAGE" (byte for byte)."""
    for file in files:
        if "\0" in file.content:
            raise ValueError(f"{file.path}: contains a NUL byte, which no shell script can carry")
    return render_template("units/stage-files.sh.j2", files=files)


def _stage_check_swap(
    name: str, where: str, files: list[HostFile], config_dirs: list[str], checks: list[str], before: str, apply: str
) -> str:
    return render_template(
        "units/service.sh.j2",
        service=name,
        host_name=where,
        config_dirs=config_dirs,
        staging=staging_script(files),
        files=files,
        checks=checks,
        before=before,
        apply=apply,
    )


def service_script(cfg: HostConfig, service: str, files: list[HostFile]) -> str:
    """Stage `files`, check them with CHECKS[service], swap the changed ones, apply.

    The service's BEFORE and APPLY templates (components/services/<service>.py)
    run before the swap and after it.
    """
    module = SERVICES[service]
    step = lambda template: render_template(template, cfg=cfg, service=module) if template else ""  # noqa: E731
    return _stage_check_swap(
        service,
        cfg.host_name,
        files,
        CONFIG_DIRS.get(service, []),
        CHECKS.get(service, []),
        step(getattr(module, "BEFORE", None)),
        step(getattr(module, "APPLY", None)),
    )


def service_unit(cfg: HostConfig, owner: str, service: str, files: list[HostFile]) -> Unit:
    """The service's unit: `service_script`, behind the owner check."""
    return _host_owned(cfg, owner, service_script(cfg, service, files))


def rspamd_unit(cfg: HostConfig, owner: str, files: list[HostFile]) -> Unit:
    """rspamd's unit (mailstack:spam_filter): its stdin is the controller's password (secret).

    So its script is the command itself, as the TLS unit's with tls: acme; after
    the owner check, it reads the password into a variable (rspamd.PASSWORD_STAGE).
    """
    check = render_template("units/owner.sh.j2", host_name=cfg.host_name, owner=owner, adopt=cfg.adopt)
    read = f'{rspamd.PASSWORD_VARIABLE}=""\nIFS= read -r {rspamd.PASSWORD_VARIABLE} || true\n'
    script = check + read + service_script(cfg, rspamd.NAME, files)
    return Unit(_inline(cfg.ssh_user, script), rspamd.password_stdin(cfg), secret=True)


def web_script(cfg: HostConfig) -> str:
    """nginx (mailstack's own, or refused), then conf.d/mailstack.conf staged, checked, swapped, applied."""
    checks = [command for _, command in web.CHECKS]
    return web.install_script(cfg) + _stage_check_swap(
        web.NAME, cfg.host_name, web.host_files(cfg), web.CONFIG_DIRS, checks, "", web.apply_script()
    )


def web_unit(cfg: HostConfig, owner: str) -> Unit:
    """The host's web server for MTA-STS policies (mailstack:tls acme only; components/services/web.py)."""
    return _host_owned(cfg, owner, web_script(cfg))


# --- a domain stack's units ------------------------------------------------------------------


def _domain_check(cfg: DomainConfig, owner: str, host: HostFacts) -> str:
    return render_template("units/domain-owner.sh.j2", domain=cfg.domain, owner=owner, host_id=host.host_id)


def dkim_unit(cfg: DomainConfig, owner: str, host: HostFacts, selector: str | None = None) -> Unit:
    """A DKIM key unit: the key of `selector` (default: mailstack:dkim_selector); prints its public half."""
    return Unit(_runner(host.ssh_user), _domain_check(cfg, owner, host) + opendkim.dkim_key_script(cfg, selector))


def dkim_remove_command(cfg: DomainConfig, owner: str, host: HostFacts, selector: str) -> str:
    """A DKIM key unit's delete command: the retired selector's private key goes."""
    return _inline(host.ssh_user, _domain_check(cfg, owner, host) + opendkim.dkim_remove_script(cfg, selector))


def dkim_signing_unit(cfg: DomainConfig, owner: str, host: HostFacts) -> Unit:
    """The DKIM signing unit: mailstack:dkim_selector signs, once its record is visible."""
    return Unit(_runner(host.ssh_user), _domain_check(cfg, owner, host) + opendkim.dkim_signing_script(cfg))


def domain_files(cfg: DomainConfig) -> list[HostFile]:
    """Every file of the domain's files unit: the assembler's inputs, then users' Sieve scripts."""
    return [*mailboxes.files(cfg), *sieve.files(cfg)]


def files_script(cfg: DomainConfig, files: list[HostFile]) -> str:
    """Stage the domain's files, check the Sieve scripts, swap, rebuild the shared tables."""
    values = mailboxes.before_values(cfg)
    return _stage_check_swap(
        f"domain-{cfg.domain}",
        cfg.domain,
        files,
        [],
        [command for _, command in sieve.checks(cfg.domain)]
        + [mailboxes.stage_selector(cfg), mailboxes.tables_check(cfg)],
        render_template(mailboxes.BEFORE, **values),
        render_template(mailboxes.APPLY, **values),
    )


def files_unit(cfg: DomainConfig, owner: str, host: HostFacts, files: list[HostFile]) -> Unit:
    return Unit(_runner(host.ssh_user), _domain_check(cfg, owner, host) + files_script(cfg, files))


def retire_command(cfg: DomainConfig, owner: str, host: HostFacts) -> str:
    """The files unit's delete command: the domain is retired (its mail refused, its mailboxes kept)."""
    return _inline(host.ssh_user, _domain_check(cfg, owner, host) + mailboxes.retire_script(cfg))


def passwords_command(cfg: DomainConfig, owner: str, host: HostFacts) -> str:
    """The passwords unit's command line; it reads `mailboxes.passwords_stdin` on stdin."""
    return _inline(host.ssh_user, _domain_check(cfg, owner, host) + mailboxes.passwords_script(cfg))


passwords_stdin = mailboxes.passwords_stdin


# --- a domain's sites on the host's nginx: MTA-STS policy, client settings (components/services/web.py) ---


def site_script(cfg: DomainConfig, host: HostFacts, site: web.Site) -> str:
    """The site's certificate, then its files staged, `nginx -t`, swapped, nginx reloaded."""
    checks = [command for _, command in web.CHECKS]
    return site.issue(cfg) + _stage_check_swap(
        f"{site.name}-{cfg.domain}", cfg.domain, site.files(cfg, host), web.CONFIG_DIRS, checks, "",
        web.apply_script(),
    )


def site_unit(cfg: DomainConfig, owner: str, host: HostFacts, site: web.Site) -> Unit:
    return Unit(_runner(host.ssh_user), _domain_check(cfg, owner, host) + site_script(cfg, host, site))


def site_remove_command(cfg: DomainConfig, owner: str, host: HostFacts, site: web.Site) -> str:
    """The site's unit's delete command: the site goes from the host (the rest of the domain stays)."""
    return _inline(host.ssh_user, _domain_check(cfg, owner, host) + site.remove(cfg))
