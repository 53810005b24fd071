"""WHAT-IF ONLY, never used by the program: Cloudflare without the generated SDK.

`python -m bench` puts this folder first on the path of one extra child to
measure what README's "Performance" proposes for the example stack's missed
target: the program uses two things of pulumi_cloudflare (DnsRecord and
get_zone_output), but importing the SDK loads all of it (~780 modules, every
Cloudflare resource type). Here both are declared directly against the
provider (same type tokens, same input names, the installed SDK's version),
and the bench checks that the program registers exactly the same inputs.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pulumi


def _installed_version() -> str:
    """The real package's provider version (its pulumi-plugin.json), without importing it."""
    for location in find_spec("pulumi").submodule_search_locations or []:  # site-packages/pulumi
        plugin = Path(location).parent / "pulumi_cloudflare" / "pulumi-plugin.json"
        if plugin.is_file():
            return json.loads(plugin.read_text())["version"]
    raise RuntimeError("pulumi_cloudflare is not installed")


_VERSION = _installed_version()


class GetZoneFilterArgs(dict):
    def __init__(self, name: str | None = None, match: str | None = None):
        super().__init__({k: v for k, v in (("name", name), ("match", match)) if v is not None})


class _ZoneResult:
    def __init__(self, result: pulumi.Output[dict]):
        self.zone_id = result.apply(lambda value: value["zoneId"])


def get_zone_output(filter: dict | None = None, opts: pulumi.InvokeOutputOptions | None = None) -> _ZoneResult:
    options = pulumi.InvokeOutputOptions.merge(pulumi.InvokeOutputOptions(version=_VERSION), opts)
    return _ZoneResult(pulumi.runtime.invoke_output("cloudflare:index/getZone:getZone",
                                                    {"filter": dict(filter or {})}, options))


class DnsRecord(pulumi.CustomResource):
    def __init__(self, resource_name: str, *, zone_id: Any, name: Any, type: Any, ttl: Any, content: Any = None,
                 proxied: Any = None, priority: Any = None, comment: Any = None,
                 opts: pulumi.ResourceOptions | None = None):
        props = {
            "comment": comment, "content": content, "data": None, "includeShadowMetadata": None, "name": name,
            "priority": priority, "privateRouting": None, "proxied": proxied, "settings": None, "tags": None,
            "ttl": ttl, "type": type, "zoneId": zone_id,
            # Outputs, as the SDK declares them.
            "commentModifiedOn": None, "createdOn": None, "meta": None, "modifiedOn": None, "proxiable": None,
            "tagsModifiedOn": None,
        }
        options = pulumi.ResourceOptions.merge(pulumi.ResourceOptions(version=_VERSION), opts)
        options = pulumi.ResourceOptions.merge(
            options, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_="cloudflare:index/record:Record")]))
        super().__init__("cloudflare:index/dnsRecord:DnsRecord", resource_name, props, options)
