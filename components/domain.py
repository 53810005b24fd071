"""MailDomain: a domain stack. One mail domain on the host its host stack converges.

The domain stack reads its host stack's outputs through a StackReference
(the host's name and addresses, the SSH connection with its keys as secrets)
and owns what is the domain's: its records (MX to the host, SPF allowing the
host, DKIM, DMARC, TLS-RPT, MTA-STS), its DKIM key, its mailboxes, aliases,
sender logins and Sieve scripts, and its MTA-STS policy host. Its units touch
only the domain's own folders on the host, its own nginx server block and
certificate lineage, and, through the host's assembler, the tables every
domain shares:

    dkim-key-<selector> ─ DKIM record ─ dkim-signing ─ files ─ passwords
                                                       ├─ mta-sts (the host's mailstack:tls acme,
                                                       │           mta_sts_mode not none)
                                                       └─ autoconfig (the host's mailstack:tls acme,
                                                                      mailstack:autoconfig true)

Each DKIM key unit prints the public key it generated; that Output becomes
the content of its selector's DKIM record. Which selectors have a key and a
record, and which one signs, is planned by components/dkim_rotation.py from
mailstack:dkim_selector and the stack's own previous outputs (read through a
StackReference to itself): a rotation publishes the new key beside the old
one, the signing unit switches only once the new record is visible, and the
old selector goes after mailstack:dkim_retention (its key unit's delete
removes the private key). The files unit's delete command (run by
`pulumi destroy`) retires the domain: its mail is refused, its mailboxes and
key stay on the host. The MTA-STS unit's delete command takes its policy host
off the host (server block, policy, certificate lineage).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypedDict

import pulumi
import pulumi.runtime.config as runtime_config
from pulumi_command import remote

from components import dkim_rotation
from components import records as rec
from components import units
from components.config import PROJECT, ConfigError, DomainConfig, HostConfig, load_config
from components.dns import MailDns, Published
from components.hostfacts import OUTPUTS, HostFacts
from components.services import mailboxes, web

# Only names and types of the domain's records are needed before the host
# stack's outputs are: they come from config alone.
_SHAPE = HostFacts(host_id="", hostname="host.invalid")


class MailDomainArgs(TypedDict):
    config: DomainConfig
    """The domain stack's validated configuration."""


class MailDomain(pulumi.ComponentResource):
    """Everything one domain stack owns."""

    def __init__(self, name: str, args: MailDomainArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:index:MailDomain", name, None, opts)
        cfg = args["config"]
        owner = f"{pulumi.get_project()}/{pulumi.get_stack()}"
        child = pulumi.ResourceOptions(parent=self)

        host_stack = pulumi.StackReference(f"{name}-host-stack", stack_name=cfg.host_stack, opts=child)
        outputs = pulumi.Output.all(*(host_stack.get_output(key) for key in OUTPUTS))
        self.host = outputs.apply(lambda values: HostFacts.from_outputs(dict(zip(OUTPUTS, values, strict=True))))

        def secret_or_none(key: str) -> pulumi.Output[Any]:
            # "" when the host stack has none: then the agent / no pinning, as there.
            return host_stack.get_output(key).apply(lambda value: value or None)

        connection = remote.ConnectionArgs(
            host=host_stack.get_output("ssh_host"),
            port=host_stack.get_output("ssh_port"),
            user=host_stack.get_output("ssh_user"),
            private_key=secret_or_none("ssh_private_key"),
            host_key=secret_or_none("ssh_host_key"),
        )

        def unit(make) -> pulumi.Output[units.Unit]:
            return self.host.apply(make)

        def command(unit_name: str, spec: pulumi.Input[units.Unit], after: list[pulumi.Resource], **extra):
            spec = pulumi.Output.from_input(spec)
            return remote.Command(
                f"{name}-{unit_name}",
                connection=connection,
                create=spec.apply(lambda u: u.command),
                stdin=spec.apply(lambda u: u.stdin),
                # See components/host.py: Debian's sshd refuses these variables.
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
                **extra,
            )

        # The DKIM state of the last successful `up`: this stack's own outputs (none on its first).
        previous = pulumi.StackReference(f"{name}-previous", stack_name=pulumi.get_stack(), opts=child)
        started = time.time()
        self.dkim_plan = pulumi.Output.all(
            *(previous.get_output(key) for key in ("dkim_keys", "dkim_signing", "dkim_selector"))
        ).apply(
            lambda values: dkim_rotation.plan(
                cfg.dkim_selector, dkim_rotation.previous_from_outputs(*values), cfg.dkim_retention_seconds, started
            )
        )
        zone_ids = {cfg.zone_name: cfg.cloudflare_zone_id}

        # Key units and records per selector, then the signing unit. Which selectors there are
        # is the plan's (the previous outputs are read in preview too, so preview shows them).
        def dkim(values: list[Any]) -> tuple[remote.Command, list[dict[str, Any]]]:
            host, plan = values
            # The stack's single `dkim` unit and `dns-dkim` record of before rotations: the
            # selector that signed then takes them over (no new key, no record replaced).
            legacy = plan.previous_signing or plan.signing
            keys: dict[str, remote.Command] = {}
            records: list[Published] = []
            for selector in plan.keys:
                spec = units.dkim_unit(cfg, owner, host, selector)
                keys[selector] = remote.Command(
                    f"{name}-dkim-key-{selector}",
                    connection=connection,
                    create=spec.command,
                    stdin=spec.stdin,
                    # Dropped from the plan (past retention): its private key goes too.
                    delete=units.dkim_remove_command(cfg, owner, host, selector),
                    add_previous_output_in_env=False,
                    opts=pulumi.ResourceOptions(
                        parent=self, aliases=[pulumi.Alias(name=f"{name}-dkim")] if selector == legacy else None
                    ),
                )
                retired = selector in plan.retired
                content = keys[selector].stdout.apply(
                    lambda key, s=selector, r=retired: rec.dkim_selector_record(
                        cfg, s, rec.dkim_public_key(cfg.model_copy(update={"dkim_selector": s}), key), r
                    ).content
                )
                shape = rec.dkim_selector_record(cfg, selector, "MA==", retired)
                aliases = (pulumi.Alias(name=f"{name}-dns-dkim", parent=self.dns),) if selector == legacy else ()
                records.append(Published(shape, cfg.zone_name, content, aliases))
            dkim_dns = MailDns(
                f"{name}-dkim-dns", {"zone_ids": zone_ids, "records": records, "prefix": f"{name}-dns"}, child
            )
            signing_spec = units.dkim_signing_unit(cfg, owner, host)
            signing = remote.Command(
                f"{name}-dkim-signing",
                connection=connection,
                create=signing_spec.command,
                stdin=signing_spec.stdin,
                add_previous_output_in_env=False,
                # The new selector's record exists before the unit waits to see it.
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[keys[plan.signing], dkim_dns.resources[f"{rec.DKIM_KEY}-{plan.signing}"]],
                ),
            )
            self.units.extend([*keys.values(), signing])
            return signing, dkim_dns.records

        self.units: list[remote.Command] = []
        # The main records first (the DKIM records' aliases name their component).
        published = []
        for shape in rec.mail_records(cfg, _SHAPE, "MA=="):
            if shape.key == rec.DKIM_KEY:
                continue  # per selector, below
            if shape.key in ("mx", "spf") or shape.type == "SRV":
                content = self.host.apply(
                    lambda h, key=shape.key: next(r.content for r in rec.static_records(cfg, h) if r.key == key)
                )
            else:
                content = None  # DMARC: config alone
            published.append(Published(shape, cfg.zone_name, content))
        self.dns = MailDns(f"{name}-dns", {"zone_ids": zone_ids, "records": published}, child)

        dkim_made = pulumi.Output.all(self.host, self.dkim_plan).apply(dkim)
        files = units.domain_files(cfg)
        domain_files = command(
            "files",
            unit(lambda h: units.files_unit(cfg, owner, h, files)),
            dkim_made.apply(lambda made: [made[0]]),
            # `pulumi destroy`: the domain is retired, its mailboxes stay.
            delete=self.host.apply(lambda h: units.retire_command(cfg, owner, h)),
        )
        passwords = remote.Command(
            f"{name}-passwords",
            connection=connection,
            create=self.host.apply(lambda h: units.passwords_command(cfg, owner, h)),
            # The password hashes: secret in state, never in a command line or log.
            stdin=pulumi.Output.secret(units.passwords_stdin(cfg)),
            logging=remote.Logging.NONE,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[domain_files]),
        )
        self.units.extend([domain_files, passwords])

        # The domain's sites on the host's nginx: the MTA-STS policy host (unless the mode is none)
        # and the mail client settings on autoconfig.<domain> (the SRV records are with the main
        # records above). Only when the host has trusted certificates (its mailstack:tls is acme).
        # Whether it has, and its addresses, are the host stack's outputs: known in preview too (a
        # StackReference is read), so the resources are made once they are.
        def serve(site: web.Site, why_not: Callable[[DomainConfig, HostFacts], str | None]) -> pulumi.Output:
            def resources(host: HostFacts) -> list[dict[str, Any]]:
                if not site.publishes(cfg, host):
                    if warning := why_not(cfg, host):
                        pulumi.log.warn(warning, self)
                    return []
                unit = command(
                    site.name,
                    units.site_unit(cfg, owner, host, site),
                    [domain_files],
                    # Gone from the program (destroy, the site turned off, a host without acme): its
                    # server block, its file and its certificate lineage go from the host.
                    delete=units.site_remove_command(cfg, owner, host, site),
                )
                self.units.append(unit)
                # The site serves before its records send senders or clients to it.
                site_dns = MailDns(
                    f"{name}-{site.name}-dns",
                    {"zone_ids": zone_ids,
                     "records": [Published(r, cfg.zone_name) for r in site.records(cfg, host)], "after": [unit]},
                    child,
                )
                return site_dns.records

            return self.host.apply(resources)

        sts_records = serve(web.MTA_STS, _no_mta_sts)
        autoconfig_records = serve(web.AUTOCONFIG, _no_autoconfig)
        self.records = pulumi.Output.all(
            pulumi.Output.from_input(self.dns.records), dkim_made.apply(lambda made: made[1]), sts_records,
            autoconfig_records,
        ).apply(lambda lists: [*lists[0], *lists[1], *lists[2], *lists[3]])
        self.register_outputs({"domain": cfg.domain, "records": self.records})


def _no_mta_sts(cfg: DomainConfig, host: HostFacts) -> str:
    """Why a domain stack publishes no MTA-STS policy, and how to have one."""
    if cfg.mta_sts_mode == "none":
        return (f"{cfg.domain}: no MTA-STS policy (mailstack:mta_sts_mode is none); set it to testing or enforce "
                "to have senders require TLS to the MX")
    return (f"{cfg.domain}: no MTA-STS policy published: its host {host.hostname} has mailstack:tls {host.tls}, "
            "and MTA-STS needs certificates senders trust on the MX and on "
            f"{rec.mta_sts_host(cfg.domain)}. Set mailstack:tls to acme in the host stack and `pulumi up` it, "
            "then this stack; or set mailstack:mta_sts_mode to none. TLS-RPT is published all the same")


def _no_autoconfig(cfg: DomainConfig, host: HostFacts) -> str | None:
    """Why a domain stack serves no settings file on autoconfig.<domain>, and how to have one."""
    if not cfg.autoconfig:
        return None  # turned off: nothing to say
    return (f"{cfg.domain}: no autoconfig.{cfg.domain} settings file for mail clients: its host {host.hostname} has "
            f"mailstack:tls {host.tls}, and clients fetch the file over HTTPS with a certificate they trust. Set "
            "mailstack:tls to acme in the host stack and `pulumi up` it, then this stack; or set mailstack:autoconfig "
            "to false. The SRV records (RFC 6186) are published all the same")


def export_domain(cfg: DomainConfig, domain: MailDomain) -> None:
    """The domain stack's outputs."""
    pulumi.export("domain", cfg.domain)
    pulumi.export("hostname", domain.host.apply(lambda h: h.hostname))
    pulumi.export("dkim_selector", cfg.dkim_selector)
    # Read back by the next `up` (components/dkim_rotation.py): each selector with a key and
    # when it was retired (None: it signs), and the one that signs.
    pulumi.export("dkim_keys", domain.dkim_plan.apply(lambda plan: plan.outputs()))
    pulumi.export("dkim_signing", domain.dkim_plan.apply(lambda plan: plan.signing))
    pulumi.export("mailboxes", mailboxes.mailboxes(cfg))
    pulumi.export("records", domain.records)


def stack_config_values() -> dict[str, Any]:
    """Every `mailstack:*` value Pulumi hands the program, secrets decrypted."""
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {k: v for k, v in values.items() if k.startswith(f"{PROJECT}:")}


def load_stack_config() -> HostConfig | DomainConfig:
    """The stack's config (a host stack's or a domain stack's), or a clean error naming every bad key."""
    try:
        return load_config(stack_config_values())
    except ConfigError as err:
        raise pulumi.RunError("invalid stack configuration:\n" + str(err)) from None
