"""STAND-IN for the `cloudflare` resource provider: `cloudflare:index/dnsRecord:DnsRecord`
and the `cloudflare:index/getZone:getZone` invoke, published to the lab's Knot.

Test infrastructure: the real provider cannot be built here (its schema is
generated from a patched upstream at build time). The lab's zones are served
by Knot, so a record is published by a DNS dynamic update (TSIG-signed), as
the mock deployer does (tests/e2e/deploy.py, through tests/e2e/lab.py):

- Check: inputs as the installed SDK's `DnsRecordArgs` declares them (an
  unknown input fails, name/ttl/type/zoneId are required), ttl 1 (automatic)
  or 30..86400, a known record type;
- Diff: a change of zone, name or type replaces the record; any other change
  updates it in place;
- Create/Update/Delete: the record is added, swapped, removed in the zone
  (`ttl: 1`, Cloudflare's "automatic", is served as 300 s);
- Read (refresh): the record as the zone serves it, or gone;
- getZone: the lab zone whose name the filter gives; its id is the zone's name.
"""

from __future__ import annotations

import secrets
import sys
from datetime import datetime, timezone
from typing import Any

import grpc
import pulumi_cloudflare as cloudflare
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2

from .standin import (
    UNKNOWN,
    type_of,
    StandInProvider,
    check_against,
    function_schema,
    has_unknown,
    keep_secrets,
    plain,
    serve,
    to_dict,
    to_struct,
)

RECORD = "cloudflare:index/dnsRecord:DnsRecord"
ZONE_DNSSEC = "cloudflare:index/zoneDnssec:ZoneDnssec"
GET_ZONE = "cloudflare:index/getZone:getZone"
AUTO_TTL = 300  # what Cloudflare's ttl=1 ("automatic") stands for in the lab
TYPES = {"A", "AAAA", "CAA", "CERT", "CNAME", "DNSKEY", "DS", "HTTPS", "LOC", "MX", "NAPTR", "NS",
         "OPENPGPKEY", "PTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "TXT", "URI"}
COMPUTED = ("createdOn", "modifiedOn", "proxiable")


def the_lab():
    from tests.e2e.lab import Lab

    return Lab.from_state()


def content_of(record: dict[str, Any]) -> str:
    if record["type"] == "MX":
        return f"{int(record['priority'])} {record['content']}"
    if record["type"] == "TLSA":
        from tests.e2e.deploy import tlsa_content

        return tlsa_content(record["data"])
    if record["type"] == "SRV":
        from tests.e2e.deploy import srv_content

        return srv_content(record["data"])
    return record["content"]


class CloudflareProvider(StandInProvider):
    name = "cloudflare"
    version = "6.23.1"
    resource_type = RECORD
    args_class = cloudflare.DnsRecordArgs
    # Cloudflare's DNSSEC for a zone: the lab's Knot signs it (tests/e2e/deploy.py zone_dnssec_outputs).
    other_types = {ZONE_DNSSEC: cloudflare.ZoneDnssecArgs}
    replace_on = ("zoneId", "name", "type")
    computed = COMPUTED

    def more_check_failures(self, values: dict[str, Any]) -> list:
        failures = []
        ttl = values.get("ttl")
        if isinstance(ttl, (int, float)) and ttl != 1 and not 30 <= ttl <= 86400:
            failures.append(provider_pb2.CheckFailure(property="ttl", reason="ttl must be 1 (automatic) or 30..86400"))
        if isinstance(values.get("type"), str) and values["type"] != UNKNOWN and values["type"] not in TYPES:
            failures.append(provider_pb2.CheckFailure(property="type",
                                                      reason=f"unknown record type {values['type']!r}"))
        return failures

    def Create(self, request, context):
        inputs = to_dict(request.properties)
        if type_of(request) == ZONE_DNSSEC:
            return provider_pb2.CreateResponse(id=secrets.token_hex(16),
                                               properties=to_struct(self._dnssec(request, context, inputs)))
        now = _now()
        if request.preview or has_unknown(inputs):
            outputs = {**inputs, **{k: UNKNOWN for k in COMPUTED}}
            return provider_pb2.CreateResponse(id="", properties=to_struct(outputs))
        self._publish(context, plain(inputs))
        outputs = {**inputs, "createdOn": now, "modifiedOn": now, "proxiable": False}
        return provider_pb2.CreateResponse(id=secrets.token_hex(16),
                                           properties=to_struct(keep_secrets(inputs, outputs)))

    def Update(self, request, context):
        news, olds = to_dict(request.news), to_dict(request.olds)
        if type_of(request) == ZONE_DNSSEC:
            return provider_pb2.UpdateResponse(properties=to_struct(self._dnssec(request, context, news)))
        if request.preview:
            return provider_pb2.UpdateResponse(properties=to_struct({**news, "modifiedOn": UNKNOWN,
                                                                     "createdOn": olds.get("createdOn", UNKNOWN),
                                                                     "proxiable": False}))
        self._unpublish(context, plain(olds))
        self._publish(context, plain(news))
        outputs = {**news, "createdOn": olds.get("createdOn", _now()), "modifiedOn": _now(), "proxiable": False}
        return provider_pb2.UpdateResponse(properties=to_struct(keep_secrets(news, outputs)))

    def Delete(self, request, context):
        if type_of(request) == ZONE_DNSSEC:
            return empty_pb2.Empty()  # the lab's zones stay signed for the lab's life
        self._unpublish(context, plain(to_dict(request.properties)))
        return empty_pb2.Empty()

    def Read(self, request, context):
        state = plain(to_dict(request.properties))
        if type_of(request) == ZONE_DNSSEC:
            return provider_pb2.ReadResponse(id=request.id, properties=request.properties, inputs=request.inputs)
        if not state:
            return provider_pb2.ReadResponse(id=request.id)
        served = the_lab().dns_query(the_lab()._absolute(state["zoneId"], state["name"]), state["type"])
        wanted = content_of(state).rstrip(".")
        if not any(_same(s, wanted, state["type"]) for s in served):
            return provider_pb2.ReadResponse(id="")  # gone: the engine drops it from the state
        return provider_pb2.ReadResponse(id=request.id, properties=request.properties, inputs=request.inputs)

    def Invoke(self, request, context):
        if request.tok != GET_ZONE:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the cloudflare stand-in implements no {request.tok}")
        args = plain(to_dict(request.args))
        failures = check_against(args, function_schema(cloudflare.get_zone))
        if failures:
            return provider_pb2.InvokeResponse(failures=failures)
        lab = the_lab()
        zones = [*lab.forward_zones, *lab.reverse_zones]
        name = args.get("zoneId") or (args.get("filter") or {}).get("name", "")
        if name not in zones:
            context.abort(grpc.StatusCode.NOT_FOUND, f"getZone: no zone {name!r} in this account (zones: {zones})")
        result = {"id": "" if args.get("filter") else name, "zoneId": name, "name": name, "status": "active",
                  "type": "full", "paused": False, "nameServers": [lab.ns_name]}
        return provider_pb2.InvokeResponse(**{"return": to_struct(result)})

    # --- the lab's zones -------------------------------------------------------------------------------

    def _dnssec(self, request, context, inputs: dict[str, Any]) -> dict[str, Any]:
        if request.preview or has_unknown(inputs):
            return {**inputs, "status": inputs.get("status", UNKNOWN), "ds": UNKNOWN}
        from tests.e2e.deploy import DeploymentFailed, zone_dnssec_outputs

        try:
            outputs = zone_dnssec_outputs(the_lab(), plain(inputs))
        except DeploymentFailed as err:
            context.abort(grpc.StatusCode.UNKNOWN, str(err))
        return {**inputs, **outputs}

    def _publish(self, context, record: dict[str, Any]) -> None:
        ttl = AUTO_TTL if int(record["ttl"]) == 1 else int(record["ttl"])
        try:
            the_lab().dns_update(record["zoneId"], record["name"], record["type"], ttl, content_of(record))
        except Exception as err:  # noqa: BLE001 - the API's refusal, as the user would see it
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to create DNS record: {err}")

    def _unpublish(self, context, record: dict[str, Any]) -> None:
        if not record.get("zoneId"):
            return
        try:
            the_lab().dns_delete(record["zoneId"], record["name"], record["type"], content_of(record))
        except Exception as err:  # noqa: BLE001
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to delete DNS record: {err}")


def _same(served: str, wanted: str, rtype: str) -> bool:
    if rtype == "TXT":
        return "".join(served.split('" "')).strip('"') == "".join(wanted.split('" "')).strip('"')
    return served.rstrip(".").lower() == wanted.lower()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


if __name__ == "__main__":
    sys.exit(serve(CloudflareProvider, sys.argv[1:]))
