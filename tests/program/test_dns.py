"""MailDns under Pulumi mocks: the records it registers and what they carry.

`pulumi.runtime.set_mocks` is process-global (the runtime keeps its settings,
root stack and config in context variables). Each test here runs in a copy of
the current context, so nothing it sets leaks into other test modules, and
nothing they set leaks in.
"""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path

import pulumi
import pytest

from components import records as rec
from components.dns import Published
from components.hostfacts import HostFacts
from tests.conftest import stack_config
from tests.program.harness import UNKNOWN
from tests.program.stacks import DNS_RECORD, evaluate_domain, evaluate_host, host_mocks

ROOT = Path(__file__).resolve().parents[2]
DKIM_KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest+key/ABC="
ZONE_IDS = {"example.com": "zone-com", "example.org": "zone-org", "example.net": "zone-net",
            "2.0.192.in-addr.arpa": "zone-rev"}


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.calls: list[pulumi.runtime.MockCallArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append(args)
        if args.token == "cloudflare:index/getZone:getZone":
            name = args.args["filter"]["name"]
            # As the provider answers a filtered lookup: `zoneId` set, `id` empty
            # (cloudflare/terraform-provider-cloudflare#6111).
            return {"id": "", "zoneId": ZONE_IDS[name], "name": name}
        raise AssertionError(f"unexpected invoke {args.token}")


def stack(name: str, **overrides):
    return stack_config(name, **overrides)


HOST_FACTS = HostFacts(host_id="mailstack/host-mail", hostname="mail.example.net",
                       addresses=["192.0.2.10", "2001:db8::10"])


def host_published(cfg) -> tuple[dict, list[Published]]:
    """What MailHost hands MailDns: the host's records, PTRs where the reverse zone is configured."""
    zone_ids = {cfg.zone_name: cfg.cloudflare_zone_id}
    published = [Published(r, cfg.zone_name) for r in rec.host_records(cfg)]
    for address, ptr in zip(cfg.addresses, rec.ptr_records(cfg), strict=True):
        zone = rec.reverse_zone_for(cfg, address)
        if zone is not None:
            zone_ids.setdefault(zone, None)
            published.append(Published(ptr, zone))
    return zone_ids, published


def domain_published(cfg, dkim_content) -> tuple[dict, list[Published]]:
    """What MailDomain hands MailDns: the domain's records, the DKIM content an Output."""
    published = []
    for r in rec.mail_records(cfg, HOST_FACTS, "MA=="):
        content = dkim_content() if r.key == rec.DKIM_KEY else None
        published.append(Published(r, cfg.zone_name, content))
    return {cfg.zone_name: cfg.cloudflare_zone_id}, published


def run(body, *, preview: bool = False) -> Mocks:
    """Run `body(mocks)` as a Pulumi program under fresh mocks, isolated in its own context."""
    mocks = Mocks()

    def isolated():
        pulumi.runtime.settings.ROOT.set(None)  # a fresh root stack for this program
        pulumi.runtime.set_all_config({})
        pulumi.runtime.set_mocks(mocks, project="mailstack", stack="test", preview=preview)
        pulumi.runtime.test(lambda: body(mocks))()

    contextvars.copy_context().run(isolated)
    return mocks


def run_dns(make_args, *, preview: bool = False) -> tuple[Mocks, dict]:
    """MailDns("mail", make_args()) under mocks: the mocks, and the component's records once resolved.

    `make_args` runs inside the program (an Output may only be made there).
    """
    outputs: dict = {}

    def body(mocks):
        from components.dns import MailDns  # imported under the mocks, as the program does

        zone_ids, published = make_args()
        dns = MailDns("mail", {"zone_ids": zone_ids, "records": published})
        outputs.update(component=dns)
        return pulumi.Output.from_input(dns.records).apply(lambda v: outputs.update(records=v))

    return run(body, preview=preview), outputs


def records_of(mocks: Mocks) -> dict[str, pulumi.runtime.MockResourceArgs]:
    return {r.name: r for r in mocks.resources if r.typ == "cloudflare:index/dnsRecord:DnsRecord"}


def urn(name: str) -> str:
    return f"urn:pulumi:test::mailstack::mailstack:index:MailDns$cloudflare:index/dnsRecord:DnsRecord::{name}"


def test_example_com_records():
    cfg = stack("example.com")
    # As a remote command's stdout: an Output, maybe wrapped, with a trailing newline.
    stdout = DKIM_KEY[:20] + "\n" + DKIM_KEY[20:] + "\n"
    dkim = lambda: pulumi.Output.from_input(stdout).apply(lambda key: rec.dkim_value(cfg, key))  # noqa: E731
    mocks, outputs = run_dns(lambda: domain_published(cfg, dkim))
    records = records_of(mocks)

    # The example host is self-signed: TLS-RPT, no MTA-STS.
    # And the RFC 6186 SRV records, as Cloudflare takes them: `data`, no content.
    srv = ["srv-submissions", "srv-submission", "srv-imaps", "srv-imap", "srv-pop3s", "srv-pop3"]
    assert sorted(records) == sorted(f"mail-{key}" for key in ["mx", "spf", "dkim", "dmarc", "tls-rpt", *srv])
    assert records["mail-srv-submission"].inputs["data"] == {"priority": 0, "weight": 1, "port": 587,
                                                             "target": "mail.example.net"}
    assert records["mail-srv-pop3"].inputs["data"] == {"priority": 0, "weight": 0, "port": 0, "target": "."}
    assert "content" not in records["mail-srv-submission"].inputs
    assert records["mail-tls-rpt"].inputs["content"] == '"v=TLSRPTv1; rua=mailto:postmaster@example.com"'
    dkim_inputs = records["mail-dkim"].inputs
    assert dkim_inputs["name"] == "mail._domainkey.example.com"
    assert dkim_inputs["content"] == rec.txt_content(f"v=DKIM1; h=sha256; k=rsa; s=email; p={DKIM_KEY}")
    mx = records["mail-mx"].inputs
    assert (mx["name"], mx["content"], mx["priority"]) == ("example.com", "mail.example.net", 10)
    assert records["mail-spf"].inputs["content"] == '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"'
    assert {r.inputs["zoneId"] for r in records.values()} == {"zone-com"}

    contents = {(r["name"], r["type"]): r["content"] for r in outputs["records"]}
    assert contents[("mail._domainkey.example.com", "TXT")] == rec.dkim_value(cfg, DKIM_KEY)
    assert contents[("example.com", "MX")] == "mail.example.net"


def test_the_host_publishes_ptr_in_its_reverse_zone():
    cfg = stack("host-mail", reverse_zones=["2.0.192.in-addr.arpa"])
    mocks, outputs = run_dns(lambda: host_published(cfg))
    records = records_of(mocks)

    assert sorted(records) == ["mail-a-192-0-2-10", "mail-aaaa-2001-db8--10", "mail-ptr-192-0-2-10", "mail-spf-helo"]
    ptr = records["mail-ptr-192-0-2-10"].inputs
    assert (ptr["name"], ptr["type"], ptr["content"]) == ("10.2.0.192.in-addr.arpa", "PTR", "mail.example.net")
    assert ptr["zoneId"] == "zone-rev"
    # The IPv6 address has no configured reverse zone: no PTR resource for it.
    assert "mail-ptr-2001-db8--10" not in records
    for name, r in records.items():
        if r.inputs["type"] != "PTR":
            assert r.inputs["zoneId"] == "zone-net", urn(name)
    assert sorted(c.args["filter"]["name"] for c in mocks.calls) == ["2.0.192.in-addr.arpa", "example.net"]
    assert all(c.args["filter"]["match"] == "all" for c in mocks.calls)
    assert [(r["type"], r["content"]) for r in outputs["records"]][-1] == ("PTR", "mail.example.net")


def test_configured_zone_id_is_used_without_lookup():
    cfg = stack("example.org", cloudflare_zone_id="0123456789abcdef0123456789abcdef")
    mocks, _ = run_dns(lambda: domain_published(cfg, lambda: rec.dkim_value(cfg, DKIM_KEY)))
    assert mocks.calls == []
    assert {r.inputs["zoneId"] for r in records_of(mocks).values()} == {"0123456789abcdef0123456789abcdef"}
    host = stack("host-mail", cloudflare_zone_id="fedcba9876543210fedcba9876543210")
    mocks, _ = run_dns(lambda: host_published(host))
    assert mocks.calls == []
    assert {r.inputs["zoneId"] for r in records_of(mocks).values()} == {"fedcba9876543210fedcba9876543210"}


@pytest.mark.parametrize("stack_name", ["host-mail", "example.com", "example.org"])
@pytest.mark.parametrize("preview", [False, True])
def test_policy(stack_name, preview):
    """The records of each example stack, as the program registers them."""
    if stack_name == "host-mail":
        evaluation = evaluate_host()
    else:
        evaluation = evaluate_domain(stack=stack_name, mocks=host_mocks(commands_ran=not preview), preview=preview)
    component = evaluation.of_type("mailstack:index:MailDns")
    expected = ["host-dns"] if stack_name == "host-mail" else ["domain-dns", "domain-dkim-dns"]
    assert [c.name for c in component] == expected
    records = evaluation.of_type(DNS_RECORD)
    # The mock monitor accepts duplicate names that the engine rejects.
    names = [r.name for r in records]
    assert len(names) == len(set(names)), names

    for r in records:
        inputs, where = r.inputs, r.urn
        assert r.parent in {c.urn for c in component}, where
        assert inputs["proxied"] is False, where  # a proxied A/AAAA breaks SMTP
        assert inputs["ttl"] == 1, where
        assert inputs["name"] == inputs["name"].lower() and not inputs["name"].endswith("."), where
        assert inputs["name"].count(".") >= 1 and not inputs["name"].startswith("@"), where
        assert 0 < len(inputs["comment"]) <= 100 and "\n" not in inputs["comment"], where
        if preview and r.name.startswith("domain-dns-dkim-"):
            assert inputs["content"] == UNKNOWN, where  # the key is made by the DKIM unit
            continue
        if inputs["type"] == "TXT":
            assert inputs["content"].startswith('"') and inputs["content"].endswith('"'), where
        if inputs["type"] == "TXT" and inputs["content"].startswith('"v=spf1'):
            assert inputs["content"].endswith(' -all"'), where
        if inputs["type"] == "MX":
            assert inputs["content"] == "mail.example.net" and inputs["priority"] == 10, where
        else:
            assert "priority" not in inputs, where


def test_dkim_content_waits_for_the_key_in_preview():
    """In preview the host has not run yet: the DKIM content is unknown, every other record is known."""
    cfg = stack("example.com")

    mocks, outputs = run_dns(lambda: domain_published(cfg, unknown_output), preview=True)
    records = records_of(mocks)
    assert isinstance(records["mail-dkim"].inputs["content"], pulumi.output.Unknown)
    for name, r in records.items():
        if name != "mail-dkim":
            known = r.inputs["data"]["target"] if r.inputs["type"] == "SRV" else r.inputs["content"]
            assert isinstance(known, str) and known, name
    # The exported record list is known apart from the DKIM content.
    listed = outputs["component"].records
    assert [r["type"] for r in listed if isinstance(r["content"], pulumi.Output)] == ["TXT"]
    assert all(isinstance(r["content"], str) for r in listed if r["name"] != rec.dkim_name(cfg))


def unknown_output() -> pulumi.Output[str]:
    """What a remote command's stdout is during preview: not known yet (call inside the program)."""
    loop = asyncio.get_running_loop()

    def done(value):
        future = loop.create_future()
        future.set_result(value)
        return future

    return pulumi.Output(set(), done(None), done(False))
