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
import yaml

from components import records as rec
from components.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DKIM_KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtest+key/ABC="
ZONE_IDS = {"example.com": "zone-com", "example.net": "zone-net", "2.0.192.in-addr.arpa": "zone-rev"}


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


def stack(name: str):
    return load_config(yaml.safe_load((ROOT / "tests" / "fixtures" / "stacks" / f"Pulumi.{name}.yaml").read_text())["config"])


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


def run_dns(cfg, dkim_public_key, *, preview: bool = False) -> tuple[Mocks, dict]:
    """MailDns("mail", ...) under mocks: the mocks, and the component's outputs once resolved.

    `dkim_public_key` is a value, or a function making the Output inside the program.
    """
    outputs: dict = {}

    def body(mocks):
        from components.dns import MailDns  # imported under the mocks, as the program does

        key = dkim_public_key() if callable(dkim_public_key) else dkim_public_key
        dns = MailDns("mail", {"config": cfg, "dkim_public_key": key})
        outputs.update(component=dns)
        names = ("zone_id", "records", "expected_ptrs")
        resolved = pulumi.Output.all(*(pulumi.Output.from_input(getattr(dns, n)) for n in names))
        return resolved.apply(lambda v: outputs.update(zip(names, v)))

    return run(body, preview=preview), outputs


def records_of(mocks: Mocks) -> dict[str, pulumi.runtime.MockResourceArgs]:
    return {r.name: r for r in mocks.resources if r.typ == "cloudflare:index/dnsRecord:DnsRecord"}


def urn(name: str) -> str:
    return f"urn:pulumi:test::mailstack::mailstack:index:MailDns$cloudflare:index/dnsRecord:DnsRecord::{name}"


def test_example_com_records():
    cfg = stack("example.com")
    # As a remote command's stdout: an Output, maybe wrapped, with a trailing newline.
    stdout = DKIM_KEY[:20] + "\n" + DKIM_KEY[20:] + "\n"
    mocks, outputs = run_dns(cfg, lambda: pulumi.Output.from_input(stdout))
    records = records_of(mocks)

    keys = ["a-192-0-2-10", "aaaa-2001-db8--10", "mx", "spf", "spf-helo", "dkim", "dmarc"]
    assert sorted(records) == sorted(f"mail-{key}" for key in keys)
    dkim = records["mail-dkim"].inputs
    assert dkim["name"] == "mail._domainkey.example.com"
    assert dkim["content"] == rec.txt_content(f"v=DKIM1; h=sha256; k=rsa; s=email; p={DKIM_KEY}")
    mx = records["mail-mx"].inputs
    assert (mx["name"], mx["content"], mx["priority"]) == ("example.com", "mail.example.com", 10)
    assert records["mail-spf"].inputs["content"] == '"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"'
    assert records["mail-a-192-0-2-10"].inputs["content"] == "192.0.2.10"

    # No reverse zone configured: no PTR resources, but the expected PTRs are listed.
    assert outputs["expected_ptrs"] == [
        {"address": "192.0.2.10", "name": "10.2.0.192.in-addr.arpa", "target": "mail.example.com"},
        {"address": "2001:db8::10", "name": rec.ptr_name("2001:db8::10"), "target": "mail.example.com"},
    ]
    assert outputs["zone_id"] == "zone-com"
    contents = {(r["name"], r["type"]): r["content"] for r in outputs["records"]}
    assert contents[("mail._domainkey.example.com", "TXT")] == rec.dkim_value(cfg, DKIM_KEY)
    assert contents[("example.com", "MX")] == "mail.example.com"


def test_example_net_publishes_ptr_in_its_reverse_zone():
    mocks, _ = run_dns(stack("example.net"), lambda: pulumi.Output.from_input(DKIM_KEY))
    records = records_of(mocks)

    ptr = records["mail-ptr-192-0-2-20"].inputs
    assert (ptr["name"], ptr["type"], ptr["content"]) == ("20.2.0.192.in-addr.arpa", "PTR", "mx.example.net")
    assert ptr["zoneId"] == "zone-rev"
    # The IPv6 address has no configured reverse zone: no PTR resource for it.
    assert "mail-ptr-2001-db8--20" not in records
    for name, r in records.items():
        if r.inputs["type"] != "PTR":
            assert r.inputs["zoneId"] == "zone-net", urn(name)
    assert sorted(c.args["filter"]["name"] for c in mocks.calls) == ["2.0.192.in-addr.arpa", "example.net"]
    assert all(c.args["filter"]["match"] == "all" for c in mocks.calls)


def test_configured_zone_id_is_used_without_lookup():
    values = {"domain": "example.org", "ipv4": ["192.0.2.30"], "cloudflare_zone_id": "0123456789abcdef0123456789abcdef"}
    cfg = load_config({f"mailstack:{k}": v for k, v in values.items()})
    mocks, outputs = run_dns(cfg, DKIM_KEY)
    assert mocks.calls == []
    assert {r.inputs["zoneId"] for r in records_of(mocks).values()} == {"0123456789abcdef0123456789abcdef"}
    assert outputs["zone_id"] == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("stack_name", ["example.com", "example.net"])
@pytest.mark.parametrize("preview", [False, True])
def test_policy(stack_name, preview):
    cfg = stack(stack_name)
    mocks, _ = run_dns(cfg, lambda: pulumi.Output.from_input(DKIM_KEY), preview=preview)
    component = [r for r in mocks.resources if r.typ == "mailstack:index:MailDns"]
    assert [c.name for c in component] == ["mail"]
    records = records_of(mocks)
    # The mock monitor accepts duplicate names that the engine rejects.
    names = [r.name for r in mocks.resources if r.typ == "cloudflare:index/dnsRecord:DnsRecord"]
    assert len(names) == len(set(names)), names

    for name, r in records.items():
        inputs = r.inputs
        where = urn(name)
        assert inputs["proxied"] is False, where  # a proxied A/AAAA breaks SMTP
        assert inputs["ttl"] == 1, where
        assert inputs["name"] == inputs["name"].lower() and not inputs["name"].endswith("."), where
        assert inputs["name"].count(".") >= 1 and not inputs["name"].startswith("@"), where
        assert 0 < len(inputs["comment"]) <= 100 and "\n" not in inputs["comment"], where
        if inputs["type"] == "TXT":
            assert inputs["content"].startswith('"') and inputs["content"].endswith('"'), where
        if inputs["type"] == "TXT" and inputs["content"].startswith('"v=spf1'):
            assert inputs["content"].endswith(' -all"'), where
        if inputs["type"] == "MX":
            assert inputs["content"] == cfg.host_name and inputs["priority"] == 10, where
        else:
            assert "priority" not in inputs, where


def test_dkim_content_waits_for_the_key_in_preview():
    """In preview the host has not run yet: the DKIM content is unknown, every other record is known."""
    cfg = stack("example.com")

    mocks, outputs = run_dns(cfg, unknown_output, preview=True)
    records = records_of(mocks)
    assert isinstance(records["mail-dkim"].inputs["content"], pulumi.output.Unknown)
    for name, r in records.items():
        if name != "mail-dkim":
            assert isinstance(r.inputs["content"], str) and r.inputs["content"], name
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
