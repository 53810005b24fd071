"""MailDns: the stack's DNS records on Cloudflare.

Thin: `components/records.py` decides every record; this file only turns them
into `cloudflare.DnsRecord` resources. Only the DKIM content waits for the host
(its key is generated there); everything else comes from config, so preview
shows real values.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pulumi
import pulumi_cloudflare as cloudflare

from components import records as rec
from components.config import MailConfig

# Cloudflare allows 100 characters of comment on Free zones (more on paid plans).
COMMENT_LIMIT = 100


class MailDnsArgs(TypedDict):
    """Inputs of MailDns."""

    config: MailConfig
    """The stack's configuration: domain, host name and addresses, DKIM selector, DMARC, zones."""

    dkim_public_key: pulumi.Input[str]
    """Base64 DER public key: the stdout of the host's DKIM unit (an Output)."""


def _comment(reason: str) -> str:
    # Comments take no newlines; cut at a word so a truncated reason still reads.
    text = " ".join(reason.split())
    if len(text) <= COMMENT_LIMIT:
        return text
    return text[: COMMENT_LIMIT - 3].rsplit(" ", 1)[0] + "..."


def _summary(r: rec.Record, content: pulumi.Input[str]) -> dict[str, Any]:
    return {"name": r.name, "type": r.type, "content": content, "priority": r.priority, "reason": r.reason}


class MailDns(pulumi.ComponentResource):
    """A, AAAA, MX, SPF, DKIM, DMARC in the mail domain's zone, and PTRs in configured reverse zones."""

    zone_id: pulumi.Output[str]
    """The mail domain's zone id (configured, or looked up by name)."""
    records: list[dict[str, Any]]
    """Every record: name, type, content (TXT unquoted; DKIM's an Output), priority, reason."""
    expected_ptrs: list[dict[str, str]]
    """For every address, the PTR it needs ({address, name, target}), published here or not."""
    resources: dict[str, cloudflare.DnsRecord]
    """The DnsRecord resources by record key ("mx", "dkim", "ptr-192-0-2-10", ...)."""

    def __init__(self, name: str, args: MailDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:index:MailDns", name, None, opts)
        cfg = args["config"]

        self.zone_id = (
            pulumi.Output.from_input(cfg.cloudflare_zone_id)
            if cfg.cloudflare_zone_id
            else self._lookup_zone(cfg.zone_name)
        )

        # name: the FQDN without trailing dot (Cloudflare stores it so; no drift).
        # ttl=1: automatic. proxied=False on every type: the provider defaults it to
        # false anyway, the API rejects only `true` on MX/TXT/PTR, and a proxied A/AAAA
        # would send SMTP to Cloudflare, which does not relay port 25.
        def record(r: rec.Record, zone_id: pulumi.Input[str], content: pulumi.Input[str]) -> cloudflare.DnsRecord:
            return cloudflare.DnsRecord(
                f"{name}-{r.key}",
                zone_id=zone_id,
                name=r.name,
                type=r.type,
                content=content,
                ttl=1,
                proxied=False,
                priority=r.priority,
                comment=_comment(r.reason),
                opts=pulumi.ResourceOptions(parent=self),
            )

        def content_of(r: rec.Record) -> str:
            return rec.txt_content(r.content) if r.type == "TXT" else r.content

        self.resources = {}
        summary: list[dict[str, Any]] = []
        for r in rec.static_records(cfg):
            self.resources[r.key] = record(r, self.zone_id, content_of(r))
            summary.append(_summary(r, r.content))

        # The DKIM key is only known once the host has generated it: compute the
        # content in apply, create the resource outside it (preview matches up).
        dkim_value = pulumi.Output.from_input(args["dkim_public_key"]).apply(
            lambda key: rec.dkim_value(cfg, rec.dkim_public_key(cfg, key))
        )
        # The Record only names the resource; its content is the Output above.
        dkim = rec.Record(rec.dkim_name(cfg), "TXT", "(from the host)", rec.DKIM_REASON, key=rec.DKIM_KEY)
        self.resources[dkim.key] = record(dkim, self.zone_id, dkim_value.apply(rec.txt_content))
        summary.append(_summary(dkim, dkim_value))

        # PTRs only where the reverse zone is ours on Cloudflare; the rest are listed
        # in expected_ptrs for the hosting provider's panel.
        reverse_ids: dict[str, pulumi.Output[str]] = {}
        expected: list[dict[str, str]] = []
        for address, r in zip(cfg.addresses, rec.ptr_records(cfg), strict=True):
            expected.append({"address": address, "name": r.name, "target": r.content})
            zone = rec.reverse_zone_for(cfg, address)
            if zone is None:
                continue
            if zone not in reverse_ids:
                reverse_ids[zone] = self._lookup_zone(zone)
            self.resources[r.key] = record(r, reverse_ids[zone], r.content)
            summary.append(_summary(r, r.content))

        # Plain lists, so that preview shows every value known from config; only the
        # DKIM content inside is an Output.
        self.records = summary
        self.expected_ptrs = expected
        self.register_outputs({"zone_id": self.zone_id, "records": self.records, "expected_ptrs": self.expected_ptrs})

    def _lookup_zone(self, zone_name: str) -> pulumi.Output[str]:
        # `zone_id`, not `id`: with a filter the provider leaves `id` empty
        # (cloudflare/terraform-provider-cloudflare#5245, #6111).
        result = cloudflare.get_zone_output(
            filter=cloudflare.GetZoneFilterArgs(name=zone_name, match="all"),
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        return result.zone_id
