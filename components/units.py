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
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from components.checks import CHECKS, CONFIG_DIRS
from components.config import MailConfig
from components.render import TEMPLATES, HostFile, render_template

# What the guide installs, plus openssl for the keys the units generate.
PACKAGES = (
    "postfix",
    "postfix-policyd-spf-python",
    "dovecot-core",
    "dovecot-imapd",
    "dovecot-lmtpd",
    "dovecot-sieve",
    "opendkim",
    "opendkim-tools",
    "openssl",
    "ca-certificates",
)


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
    script = render_template(
        "units/tls.sh.j2", host_name=cfg.host_name, cert_file=cfg.smtpd_tls_cert_file, key_file=cfg.smtpd_tls_key_file
    )
    return _script_unit(cfg, owner, script)


def dkim_unit(cfg: MailConfig, owner: str) -> Unit:
    script = render_template("units/dkim.sh.j2", domain=cfg.domain, selector=cfg.dkim_selector, bits=cfg.dkim_bits)
    return _script_unit(cfg, owner, script)


def accounts_script() -> str:
    """The accounts unit's own work (without the owner check): reads `accounts_stdin`."""
    return render_template("units/accounts.sh.j2")


def accounts_command(cfg: MailConfig, owner: str) -> str:
    """The accounts script as a command line; it reads `accounts_stdin` on stdin."""
    sudo = "" if cfg.ssh_user == "root" else "sudo -n "
    return f"{sudo}bash -c {shlex.quote(_owned(cfg, owner, accounts_script()))}"


def accounts_stdin(cfg: MailConfig) -> str:
    """One `name<TAB>hash` line per user ("-" for no hash). Secret: hold it in a secret Output."""
    lines = []
    for user in cfg.users:
        secret = user.password_hash.get_secret_value() if user.password_hash else "-"
        lines.append(f"{user.name}\t{secret}\n")
    return "".join(lines)


def staging_script(files: list[HostFile]) -> str:
    """The part of a service unit that writes `files` under "$STAGE" (byte for byte)."""
    for file in files:
        if "\0" in file.content:
            raise ValueError(f"{file.path}: contains a NUL byte, which no shell script can carry")
    return render_template("units/stage-files.sh.j2", files=files)


def service_script(cfg: MailConfig, service: str, files: list[HostFile]) -> str:
    """Stage `files`, check them with CHECKS[service], swap the changed ones, apply."""
    return render_template(
        "units/service.sh.j2",
        service=service,
        host_name=cfg.host_name,
        config_dirs=CONFIG_DIRS.get(service, []),
        staging=staging_script(files),
        files=files,
        checks=CHECKS.get(service, []),
        before=_optional(f"before-{service}.sh.j2", cfg),
        apply=_optional(f"apply-{service}.sh.j2", cfg),
    )


def service_unit(cfg: MailConfig, owner: str, service: str, files: list[HostFile]) -> Unit:
    """The service's unit: `service_script`, behind the owner check."""
    return _script_unit(cfg, owner, service_script(cfg, service, files))


def _optional(template: str, cfg: MailConfig) -> str:
    if not (TEMPLATES / "units" / template).exists():
        return ""
    return render_template(f"units/{template}", cfg=cfg)
