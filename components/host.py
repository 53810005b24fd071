"""MailHost: the host stack. Everything on the mail server that is the server's.

Thin by design: the scripts come from `components.units`, the files from
`components.services`, the records from `components.records`; this module
only turns them into `remote.Command` and DNS resources, in this order
(docs/design.md):

    packages ─┬─ tls ──────────────────────────────┬─ dovecot ─┬─ postfix
              ├─ tables ─┬─ opendkim ──────────────┼───────────┤
              │          └─────────────────────────┘           │
              ├─ policyd-spf ──────────────────────────────────┤
              └─ resolver ─────────────────────────────────────┘
    packages, tables, resolver ── rspamd ── postfix   (mailstack:spam_filter: Postfix's milter)
    dovecot, postfix ── fail2ban   (mailstack:fail2ban: it reads their logs)
    packages ── tls ── web     (mailstack:tls acme: nginx for MTA-STS policies)

The packages unit runs first and claims the host for this stack (project and
stack name, in /etc/mailstack/host); every unit checks that claim before it
changes anything, so a second host stack aimed at the same host fails at
once. The tables unit makes the vmail account that owns every mailbox,
installs the assembler of the tables that every domain stack shares, and
builds them (empty until a domain stack runs), before the daemons that read
them are configured.

It exports what its domain stacks need: the host's name and addresses, the
SSH connection (its keys as secrets), and `tls`, where its certificate comes
from (with tls: acme the TLS unit's stdin is the Cloudflare token, a secret).

A unit runs again only when its inputs change, so a `pulumi up` with nothing
changed runs no command at all. A unit has no delete command: destroying the
stack never deletes keys, mailboxes or mail.
"""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_cloudflare as cloudflare
from pulumi_command import remote

from components import records as rec
from components import units
from components.config import HostConfig
from components.dns import MailDns, Published
from components.services import render_host_files
from components.services import tls as tls_service


class MailHostArgs(TypedDict):
    config: HostConfig
    """The host stack's validated configuration."""


class MailHost(pulumi.ComponentResource):
    """The mail server, converged over SSH, and its own DNS records."""

    def __init__(self, name: str, args: MailHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:index:MailHost", name, None, opts)
        cfg = args["config"]
        # Who converges this host: recorded on it by the first unit, checked by every unit.
        self.host_id = f"{pulumi.get_project()}/{pulumi.get_stack()}"
        self.connection = connection(cfg)
        files = render_host_files(cfg)

        def command(unit: str, spec: units.Unit, after: list[pulumi.Resource]) -> remote.Command:
            # A secret stdin (the TLS unit's Cloudflare token, tls: acme) stays secret in
            # the state, and nothing of the unit's output goes to the log.
            secret = {"logging": remote.Logging.NONE} if spec.secret else {}
            return remote.Command(
                f"{name}-{unit}",
                connection=self.connection,
                create=spec.command,
                stdin=pulumi.Output.secret(spec.stdin) if spec.secret else spec.stdin,
                # The provider would hand the previous run's output over as environment
                # variables, which Debian's sshd refuses (no AcceptEnv for them): a
                # warning on every update, for values no unit reads.
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
                **secret,
            )

        def service(unit: str, after: list[pulumi.Resource]) -> remote.Command:
            return command(unit, units.service_unit(cfg, self.host_id, unit, files[unit]), after)

        packages = command("packages", units.packages_unit(cfg, self.host_id), [])
        tls = command("tls", units.tls_unit(cfg, self.host_id), [packages])
        tables = command("tables", units.tables_unit(cfg, self.host_id), [packages])
        opendkim = service("opendkim", [packages, tables])
        policyd_spf = service("policyd-spf", [packages])
        resolver = service("resolver", [packages])
        dovecot = service("dovecot", [packages, tls, tables])
        # rspamd and Redis (mailstack:spam_filter): Postfix's milter, so before Postfix
        # names it; after tables (its learning socket's group is vmail's).
        spam: list[pulumi.Resource] = []
        if cfg.spam_filter:
            spam = [command("rspamd", units.rspamd_unit(cfg, self.host_id, files["rspamd"]), [packages, tables, resolver])]
        postfix = service("postfix", [packages, tls, tables, opendkim, policyd_spf, dovecot, resolver, *spam])

        tls_facts = tls.stdout.apply(tls_service.unit_facts)
        self.tls_fingerprint = tls_facts.apply(lambda facts: facts["fingerprint"])
        self.units = [packages, tls, tables, opendkim, policyd_spf, resolver, dovecot, *spam, postfix]
        # fail2ban (mailstack:fail2ban): after the daemons whose logs its jails read.
        if cfg.fail2ban:
            self.units.append(service("fail2ban", [packages, dovecot, postfix]))

        # MTA-STS (mailstack:tls acme only): nginx for the domain stacks' policy hosts,
        # and its default server (components/services/web.py). Its files are the
        # domain stacks'; this unit has no delete command, like the others.
        # (getattr: HostConfig.tls comes with the ACME change; a config without it is self-signed.)
        if cfg.tls == "acme":
            self.units.append(command("web", units.web_unit(cfg, self.host_id), [packages, tls]))

        # The host's own records: A/AAAA and the HELO name's SPF in its zone, PTRs
        # where the reverse zone is ours on Cloudflare (the rest are listed in
        # expected_ptrs, for the hosting provider's panel).
        zone_ids: dict[str, str | None] = {cfg.zone_name: cfg.cloudflare_zone_id}
        published = [Published(r, cfg.zone_name) for r in rec.host_records(cfg)]
        self.expected_ptrs = []
        for address, ptr in zip(cfg.addresses, rec.ptr_records(cfg), strict=True):
            self.expected_ptrs.append({"address": address, "name": ptr.name, "target": ptr.content})
            zone = rec.reverse_zone_for(cfg, address)
            if zone is not None:
                zone_ids.setdefault(zone, None)
                published.append(Published(ptr, zone))
        # DANE: TLSA records of the served and the next key, in a zone Cloudflare signs.
        if cfg.dnssec:
            for record in rec.tlsa_records(cfg):
                digest = tls_facts.apply(lambda facts, r=record: rec.tlsa_digest(r, facts))
                published.append(Published(record, cfg.zone_name, content=digest.apply(rec.tlsa_value)))
        self.dns = MailDns(f"{name}-dns", {"zone_ids": zone_ids, "records": published}, pulumi.ResourceOptions(parent=self))
        self.dnssec_ds: pulumi.Output[str] | None = None
        if cfg.dnssec:
            zone_dnssec = cloudflare.ZoneDnssec(
                f"{name}-dnssec", zone_id=self.dns.zone_ids[cfg.zone_name], status="active",
                opts=pulumi.ResourceOptions(parent=self),
            )
            # What the registrar needs: the zone's DS record.
            self.dnssec_ds = zone_dnssec.ds

        self.register_outputs(
            {"hostname": cfg.host_name, "tlsFingerprint": self.tls_fingerprint, "packages": packages.stdout}
        )


def connection(cfg: HostConfig) -> remote.ConnectionArgs:
    private_key = cfg.ssh_private_key.get_secret_value() if cfg.ssh_private_key else None
    host_key = cfg.ssh_host_key.get_secret_value() if cfg.ssh_host_key else None
    return remote.ConnectionArgs(
        host=cfg.connect_host,
        port=cfg.ssh_port,
        user=cfg.ssh_user,
        private_key=pulumi.Output.secret(private_key) if private_key else None,
        host_key=pulumi.Output.secret(host_key) if host_key else None,
    )


def export_host(cfg: HostConfig, host: MailHost) -> None:
    """The host stack's outputs: what its domain stacks read (components/hostfacts.py), and more."""
    pulumi.export("host_id", host.host_id)
    pulumi.export("hostname", cfg.host_name)
    pulumi.export("addresses", cfg.addresses)
    pulumi.export("ssh_host", cfg.connect_host)
    pulumi.export("ssh_port", cfg.ssh_port)
    pulumi.export("ssh_user", cfg.ssh_user)
    # Secrets stay secrets in the domain stacks that read them (StackReference).
    private_key = cfg.ssh_private_key.get_secret_value() if cfg.ssh_private_key else ""
    host_key = cfg.ssh_host_key.get_secret_value() if cfg.ssh_host_key else ""
    pulumi.export("ssh_private_key", pulumi.Output.secret(private_key))
    pulumi.export("ssh_host_key", pulumi.Output.secret(host_key))
    pulumi.export("postmaster_address", cfg.postmaster_address)
    pulumi.export("records", host.dns.records)
    pulumi.export("expected_ptrs", host.expected_ptrs)
    pulumi.export("tls_fingerprint", host.tls_fingerprint)
    if host.dnssec_ds is not None:
        pulumi.export("dnssec_ds", host.dnssec_ds)
    # Where the certificate comes from: domain stacks publish MTA-STS only over acme.
    pulumi.export("tls", cfg.tls)
