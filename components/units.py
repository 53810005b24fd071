"""The scripts that converge the host, one per unit (pure: config → text).

Each unit is one SSH command. Most units send their script on stdin, so that
`pulumi preview --diff` shows the lines that change (a service unit carries
its config files inside the script, as quoted here-documents), and so that
nothing of the script shows in the host's process list. The accounts unit
is the exception: its stdin holds the password hashes, which are secret, so
its script (which holds none) is the command itself.

Every script starts with the same check (templates/units/owner.sh.j2): the
host belongs to this stack (`owner`, "project/stack"), or to no stack yet and
is claimed for it. A host converged by another stack is refused before
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

from components.config import MailConfig
from components.render import HostFile, render_template
from components.services import CHECKS, CONFIG_DIRS, PACKAGES, SERVICES, accounts, opendkim, tls


@dataclass(frozen=True)
class Unit:
    """One SSH command: what runs (`command`) and what it reads (`stdin`)."""

    command: str
    stdin: str


def _runner(cfg: MailConfig) -> str:
    sudo = "" if cfg.ssh_user == "root" else "sudo -n "
    return render_template("units/run-stdin.sh", sudo=sudo)


def _owned(cfg: MailConfig, owner: str, script: str) -> str:
    """`script`, behind the check that the host is this stack's (`owner`: "project/stack")."""
    return render_template("units/owner.sh.j2", host_name=cfg.host_name, owner=owner) + script


def _script_unit(cfg: MailConfig, owner: str, script: str) -> Unit:
    return Unit(command=_runner(cfg), stdin=_owned(cfg, owner, script))


def packages_unit(cfg: MailConfig, owner: str) -> Unit:
    """The first unit: it claims the host for `owner` (every unit checks the claim)."""
    script = render_template("units/packages.sh.j2", host_name=cfg.host_name, packages=PACKAGES)
    return _script_unit(cfg, owner, script)


def tls_unit(cfg: MailConfig, owner: str) -> Unit:
    """The host's TLS pair (components/services/tls.py)."""
    return _script_unit(cfg, owner, tls.tls_script(cfg))


def dkim_unit(cfg: MailConfig, owner: str) -> Unit:
    """The domain's DKIM key (components/services/opendkim.py); prints its public half."""
    return _script_unit(cfg, owner, opendkim.dkim_key_script(cfg))


# The accounts unit (components/services/accounts.py): its stdin is secret.
accounts_script = accounts.accounts_script
accounts_stdin = accounts.accounts_stdin


def accounts_command(cfg: MailConfig, owner: str) -> str:
    """The accounts script as a command line; it reads `accounts_stdin` on stdin."""
    sudo = "" if cfg.ssh_user == "root" else "sudo -n "
    return f"{sudo}bash -c {shlex.quote(_owned(cfg, owner, accounts_script()))}"


def staging_script(files: list[HostFile]) -> str:
    """The part of a service unit that writes `files` under "$STAGE" (byte for byte)."""
    for file in files:
        if "\0" in file.content:
            raise ValueError(f"{file.path}: contains a NUL byte, which no shell script can carry")
    return render_template("units/stage-files.sh.j2", files=files)


def service_script(cfg: MailConfig, service: str, files: list[HostFile]) -> str:
    """Stage `files`, check them with CHECKS[service], swap the changed ones, apply.

    The service's BEFORE and APPLY templates (components/services/<service>.py)
    run before the swap and after it.
    """
    module = SERVICES.get(service)
    return render_template(
        "units/service.sh.j2",
        service=service,
        host_name=cfg.host_name,
        config_dirs=CONFIG_DIRS.get(service, []),
        staging=staging_script(files),
        files=files,
        checks=CHECKS.get(service, []),
        before=_step(getattr(module, "BEFORE", None), cfg),
        apply=_step(getattr(module, "APPLY", None), cfg),
    )


def service_unit(cfg: MailConfig, owner: str, service: str, files: list[HostFile]) -> Unit:
    """The service's unit: `service_script`, behind the owner check."""
    return _script_unit(cfg, owner, service_script(cfg, service, files))


def _step(template: str | None, cfg: MailConfig) -> str:
    """A service's before or apply step; "" when it has none."""
    return render_template(template, cfg=cfg) if template else ""
