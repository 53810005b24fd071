"""MailDns: a stack's DNS records on Cloudflare.

Thin: `components/records.py` decides every record; this file only turns them
into `cloudflare.DnsRecord` resources. A host stack publishes the host's own
records (and PTRs in the reverse zones it has on Cloudflare); a domain stack
its domain's. Names and types always come from config; a content that waits
on something (the DKIM key the host generates, the host stack's name and
addresses) is an Output, everything else shows its real value in preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import pulumi
import pulumi_cloudflare as cloudflare

from components import records as rec

# Cloudflare allows 100 characters of comment on Free zones (more on paid plans).
COMMENT_LIMIT = 100


@dataclass(frozen=True)
class Published:
    """One record to publish, in which zone, and its content when config alone does not give it."""

    record: rec.Record
    zone: str
    content: Any = None  # pulumi.Input[str]: the unquoted value (TXT), when not record.content
    aliases: tuple[pulumi.Alias, ...] = ()  # the record's earlier names (kept, not replaced)


class MailDnsArgs(TypedDict):
    """Inputs of MailDns."""

    zone_ids: dict[str, str | None]
    """Every zone the records go in -> its configured Cloudflare id, or None to look it up by name."""

    records: list[Published]
    """The records, in order."""

    after: NotRequired[list[pulumi.Resource]]
    """What every record waits for (e.g. the unit that serves what they announce); default nothing."""

    prefix: NotRequired[str]
    """The records' resource names start with it (default: the component's name)."""


def _comment(reason: str) -> str:
    # Comments take no newlines; cut at a word so a truncated reason still reads.
    text = " ".join(reason.split())
    if len(text) <= COMMENT_LIMIT:
        return text
    return text[: COMMENT_LIMIT - 3].rsplit(" ", 1)[0] + "..."


class MailDns(pulumi.ComponentResource):
    """The records of one stack, each in its zone."""

    records: list[dict[str, Any]]
    """Every record: name, type, content (TXT unquoted; an Output where it waits), priority, reason."""
    resources: dict[str, cloudflare.DnsRecord]
    """The DnsRecord resources by record key ("mx", "dkim", "ptr-192-0-2-10", ...)."""
    zone_ids: dict[str, pulumi.Output[str]]
    """Each zone's Cloudflare id (configured, or looked up by name)."""

    def __init__(self, name: str, args: MailDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:index:MailDns", name, None, opts)
        zone_ids = {
            zone: pulumi.Output.from_input(given) if given else self._lookup_zone(zone)
            for zone, given in args["zone_ids"].items()
        }
        self.zone_ids = zone_ids
        self.resources = {}
        self.records = []
        for item in args["records"]:
            r = item.record
            value = pulumi.Output.from_input(item.content if item.content is not None else r.content)
            content = value.apply(rec.txt_content) if r.type == "TXT" else value
            # Cloudflare takes a TLSA or SRV record's fields as `data`, not as content.
            to_data = {"TLSA": rec.tlsa_data, "SRV": rec.srv_data}.get(r.type)
            data = value.apply(lambda v, f=to_data: cloudflare.DnsRecordDataArgs(**f(v))) if to_data else None
            # name: the FQDN without trailing dot (Cloudflare stores it so; no drift).
            # ttl=1: automatic. proxied=False on every type: the provider defaults it to
            # false anyway, the API rejects only `true` on MX/TXT/PTR, and a proxied A/AAAA
            # would send SMTP to Cloudflare, which does not relay port 25.
            self.resources[r.key] = cloudflare.DnsRecord(
                f"{args.get('prefix', name)}-{r.key}",
                zone_id=zone_ids[item.zone],
                name=r.name,
                type=r.type,
                content=None if data is not None else content,
                data=data,
                ttl=1,
                proxied=False,
                priority=r.priority,
                comment=_comment(r.reason),
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=args.get("after", []), aliases=list(item.aliases) or None
                ),
            )
            shown = item.content if item.content is not None else r.content
            self.records.append(
                {"name": r.name, "type": r.type, "content": shown, "priority": r.priority, "reason": r.reason}
            )
        self.register_outputs({"records": self.records})

    def _lookup_zone(self, zone_name: str) -> pulumi.Output[str]:
        # `zone_id`, not `id`: with a filter the provider leaves `id` empty
        # (cloudflare/terraform-provider-cloudflare#5245, #6111).
        result = cloudflare.get_zone_output(
            filter=cloudflare.GetZoneFilterArgs(name=zone_name, match="all"),
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        return result.zone_id
