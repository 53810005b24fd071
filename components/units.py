"""The scripts that converge the host, one per unit (pure: config → text).

Each unit is one SSH command. Most units send their script on stdin, so that
`pulumi preview --diff` shows the lines that change (a service unit carries
its config files inside the script, as quoted here-documents), and so that
nothing of the script shows in the host's process list. The accounts unit
is the exception: its stdin holds the password hashes, which are secret, so
its script (which holds none) is the command itself.

Every value from the stack config reaches the shell through `q`
(shlex.quote) or inside a quoted here-document, never bare.
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

# The here-document delimiter around every file; no file may contain it as a line.
EOF_MARK = "MAILSTACK_EOF"


@dataclass(frozen=True)
class Unit:
    """One SSH command: what runs (`command`) and what it reads (`stdin`)."""

    command: str
    stdin: str


def _runner(cfg: MailConfig) -> str:
    sudo = "" if cfg.ssh_user == "root" else "sudo -n "
    return render_template("units/run-stdin.sh", sudo=sudo)


def _script_unit(cfg: MailConfig, script: str) -> Unit:
    return Unit(command=_runner(cfg), stdin=script)


def packages_unit(cfg: MailConfig) -> Unit:
    script = render_template("units/packages.sh.j2", host_name=cfg.host_name, packages=PACKAGES)
    return _script_unit(cfg, script)


def tls_unit(cfg: MailConfig) -> Unit:
    script = render_template("units/tls.sh.j2", 
        host_name=cfg.host_name, cert_file=cfg.smtpd_tls_cert_file, key_file=cfg.smtpd_tls_key_file
    )
    return _script_unit(cfg, script)


def dkim_unit(cfg: MailConfig) -> Unit:
    script = render_template("units/dkim.sh.j2", 
        domain=cfg.domain, selector=cfg.dkim_selector, bits=cfg.dkim_bits
    )
    return _script_unit(cfg, script)


def accounts_command(cfg: MailConfig) -> str:
    """The accounts script as a command line; it reads `accounts_stdin` on stdin."""
    script = render_template("units/accounts.sh")
    sudo = "" if cfg.ssh_user == "root" else "sudo -n "
    return f"{sudo}bash -c {shlex.quote(script)}"


def accounts_stdin(cfg: MailConfig) -> str:
    """One `name<TAB>hash` line per user ("-" for no hash). Secret: hold it in a secret Output."""
    lines = []
    for user in cfg.users:
        secret = user.password_hash.get_secret_value() if user.password_hash else "-"
        lines.append(f"{user.name}\t{secret}\n")
    return "".join(lines)


def service_unit(cfg: MailConfig, service: str, files: list[HostFile]) -> Unit:
    """Stage `files`, check them with CHECKS[service], swap the changed ones, apply."""
    for file in files:
        if not file.content.endswith("\n"):
            raise ValueError(f"{file.path}: rendered text must end with a newline")
        if f"\n{EOF_MARK}\n" in f"\n{file.content}":
            raise ValueError(f"{file.path}: contains the line {EOF_MARK}, which the deploy script reserves")
    before = _optional(f"before-{service}.sh.j2", cfg)
    script = render_template(
        "units/service.sh.j2",
        service=service,
        host_name=cfg.host_name,
        config_dirs=CONFIG_DIRS.get(service, []),
        files=files,
        eof=EOF_MARK,
        checks=CHECKS.get(service, []),
        before=before,
        apply=_optional(f"apply-{service}.sh.j2", cfg),
    )
    return _script_unit(cfg, script)


def _optional(template: str, cfg: MailConfig) -> str:
    if not (TEMPLATES / "units" / template).exists():
        return ""
    return render_template(f"units/{template}", cfg=cfg)
