"""MailHost: everything on the mail server, as a few SSH commands.

Thin by design: the scripts come from `components.units`, the files from
`components.services`; this module only turns them into `remote.Command`
resources, in the order docs/design.md describes:

    packages ─┬─ tls ────────────────────────┬─ dovecot ─┬─ postfix
              ├─ accounts ─┬─ sieve (users') ─┤           │
              │            └──────────────────┘           │
              ├─ dkim ─ opendkim ────────────────────────┤
              └─ policyd-spf ────────────────────────────┘

The packages unit runs first and claims the host for this stack (project and
stack name, in /etc/mailstack/owner); every unit checks that claim before it
changes anything, so a second stack aimed at the same host fails at once.
Users' Sieve scripts are checked (and installed) before Dovecot and Postfix
are touched: a script that `sievec` refuses fails the `up` while both daemons
still run on their old config.

A unit runs again only when its inputs change, so a `pulumi up` with nothing
changed runs no command at all. A unit has no delete command: destroying the
stack never deletes keys, mailboxes or mail.
"""

from __future__ import annotations

from typing import TypedDict

import pulumi
from pulumi_command import remote

from components import units
from components.config import MailConfig
from components.services import render_host_files


class MailHostArgs(TypedDict):
    config: MailConfig
    """The stack's validated configuration."""


class MailHost(pulumi.ComponentResource):
    """The mail server of one domain, converged over SSH."""

    dkim_public_key: pulumi.Output[str]
    """Base64 DER public key of the DKIM selector, as the host generated it."""

    def __init__(self, name: str, args: MailHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:index:MailHost", name, None, opts)
        cfg = args["config"]
        # Who converges this host: recorded on it by the first unit, checked by every unit.
        owner = f"{pulumi.get_project()}/{pulumi.get_stack()}"
        connection = _connection(cfg)
        files = render_host_files(cfg)

        def command(unit: str, spec: units.Unit, after: list[pulumi.Resource], **extra) -> remote.Command:
            return remote.Command(
                f"{name}-{unit}",
                connection=connection,
                create=spec.command,
                stdin=spec.stdin,
                # The provider would hand the previous run's output over as environment
                # variables, which Debian's sshd refuses (no AcceptEnv for them): a
                # warning on every update, for values no unit reads.
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
                **extra,
            )

        packages = command("packages", units.packages_unit(cfg, owner), [])
        tls = command("tls", units.tls_unit(cfg, owner), [packages])
        dkim = command("dkim", units.dkim_unit(cfg, owner), [packages])
        accounts = remote.Command(
            f"{name}-accounts",
            connection=connection,
            create=units.accounts_command(cfg, owner),
            # The password hashes: secret in state, never in a command line or log.
            stdin=pulumi.Output.secret(units.accounts_stdin(cfg)),
            logging=remote.Logging.NONE,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[packages]),
        )

        def service(unit: str, after: list[pulumi.Resource]) -> remote.Command:
            return command(unit, units.service_unit(cfg, owner, unit, files[unit]), after)

        # Users' scripts first: no daemon is reloaded in an `up` that a script will fail.
        sieve = service("sieve", [packages, accounts])
        opendkim = service("opendkim", [packages, dkim])
        policyd_spf = service("policyd-spf", [packages])
        dovecot = service("dovecot", [packages, tls, accounts, sieve])
        postfix = service("postfix", [packages, tls, accounts, sieve, opendkim, policyd_spf, dovecot])

        self.dkim_public_key = dkim.stdout
        self.tls_fingerprint = tls.stdout.apply(str.strip)
        self.units = [packages, tls, dkim, accounts, sieve, opendkim, policyd_spf, dovecot, postfix]
        self.register_outputs(
            {
                "hostname": cfg.host_name,
                "dkimPublicKey": self.dkim_public_key,
                "tlsFingerprint": self.tls_fingerprint,
                "packages": packages.stdout,
            }
        )


def _connection(cfg: MailConfig) -> remote.ConnectionArgs:
    private_key = cfg.ssh_private_key.get_secret_value() if cfg.ssh_private_key else None
    host_key = cfg.ssh_host_key.get_secret_value() if cfg.ssh_host_key else None
    return remote.ConnectionArgs(
        host=cfg.connect_host,
        port=cfg.ssh_port,
        user=cfg.ssh_user,
        private_key=pulumi.Output.secret(private_key) if private_key else None,
        host_key=pulumi.Output.secret(host_key) if host_key else None,
    )
