"""`python -m components verify` against the lab's deployment: healthy, then broken one way at a time.

verify runs inside the lab, on peer: a mail server of the lab's Internet with
forward-confirmed reverse DNS (the `world` fixture), so that Postfix judges
its relay attempt by the relay rules and not by reverse DNS. It reads the
stack files written here (host-e2e, example.com, example.org) and asks the
lab's DNS server (--nameserver). For the host stack it checks the host's
records and services; for a domain stack that domain's records, reading its
DKIM key from mx over SSH with the host stack's key.

Each broken variant must fail exactly the check it breaks, with a reason or
fix that names the record or setting; everything it changes is put back
(DNS records as they were, the stacks as deployed), and the last test proves it.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components import records as rec
from components.services import postfix
from components.config import load_config

from . import dnssec
from .conftest import PEER_NAME, wait_for
from .deploy import record_content
from .stack import (DOMAIN_SETTINGS, DOMAINS, HOST_STACK, HOSTNAME, banner_rewrite, domain_config, host_config,
                    main_cf_rewritten)

VERIFY_FROM = "peer"
TTL = 300  # what the deployment publishes (Cloudflare's automatic TTL in the lab)
STACK = "example.com"  # the domain stack whose records the broken variants break


@pytest.fixture(scope="module")
def project(lab, tmp_path_factory) -> Path:
    """A project folder with the lab's stack files, as deployed (secrets in clear: test files)."""
    folder = tmp_path_factory.mktemp("verify-project")
    (folder / "stacks").mkdir()
    stacks = [(HOST_STACK, host_config(lab)), *((d, domain_config(lab, d)) for d in DOMAINS)]
    for name, values in stacks:
        stack_file = folder / "stacks" / f"Pulumi.{name}.yaml"
        stack_file.touch(mode=0o600)
        stack_file.write_text(yaml.safe_dump({"config": values}))
    return folder


@pytest.fixture(scope="module", autouse=True)
def registered_records(lab, deployment) -> None:
    """Every record the deployment registered is served, as `pulumi up --refresh` would see to.

    The lab is shared with the other modules, and one of them may have taken a
    deployed record away; verify is tested against the deployment, not against
    what other tests left. Adding a record that is already there changes nothing
    (RFC 2136 3.4.2.2).
    """
    for key, resource in [item for stack in deployment.all for item in stack.state.items()]:
        if key.startswith("cloudflare:index/dnsRecord:DnsRecord::"):
            r = resource["inputs"]
            content = record_content(r)
            lab.dns_update(r["zoneId"], r["name"], r["type"], TTL, content)


@pytest.fixture(scope="module")
def cfg(lab):
    """The domain stack's config; `cfg.addresses`: the host's addresses (the host stack's keys)."""
    domain = load_config(domain_config(lab, STACK))
    return SimpleNamespace(domain=domain.domain, domain_config=domain, addresses=[lab.mx.ipv4, lab.mx.ipv6],
                           tls=host_config(lab).get("mailstack:tls", "self-signed"),
                           dnssec=host_config(lab).get("mailstack:dnssec", False),
                           spam_filter=host_config(lab).get("mailstack:spam_filter", True))


def verify(lab, project: Path, stack: str, *options: str) -> tuple[int, dict]:
    """Run verify --json for `stack` on peer; (exit status, report).

    The host's relay test writes to a domain the lab DNS resolves (the peer's):
    verify's default foreign domain, relay-test.example, resolves nowhere, and
    Postfix refuses an unresolvable recipient domain even when it would relay.
    """
    relay = ["--relay-to", f"postmaster@{PEER_NAME}"] if stack == HOST_STACK else []
    # Through the lab's validating resolver (DANE's checks need its AD flag), trusting the lab's ACME CA.
    argv = ["-m", "components", "verify", stack, "--project", str(project), "--nameserver", dnssec.RESOLVER_V4,
            "--helo", PEER_NAME, "--json", "--ca-file", str(lab.ca_root_file), *relay, *options]
    result = lab.run_python(VERIFY_FROM, argv, check=False, timeout=180)
    assert result.returncode in (0, 1), f"verify exited {result.returncode}: {result.stderr}"
    assert result.stdout.strip(), f"verify exited {result.returncode} without a report: {result.stderr[-3000:]}"
    return result.returncode, json.loads(result.stdout)


def with_status(report: dict, *statuses: str) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"] if c["status"] in statuses}


# The checks of each kind of stack: (once, once per address of the host).
HOST_CHECKS = (["dns.a", "dns.aaaa", "spf.helo", "postfix.soft_bounce", "postfix.notify_classes"],
               ["dns.ptr", "smtp.banner", "smtp.starttls", "smtp.cert", "smtp.auth", "smtp.vrfy", "smtp.etrn",
                "smtp.relay", "smtp.soft_bounce", "submission.starttls", "submission.auth", "submission.etrn",
                "imap.tls"])
# With mailstack:spam_filter (the lab's host stack has it): rspamd's and Redis's state, over SSH.
SPAM_FILTER_CHECKS = ["rspamd.listening", "rspamd.milter", "redis.ping", "rspamd.learned"]
DOMAIN_CHECKS = (["dns.mx", "dns.mx-cname", "dns.srv", "spf.record", "spf.lookups", "spf.all", "dkim.record",
                  "dkim.key", "dkim.selectors", "dmarc.record", "dmarc.policy", "mta-sts.record", "tls-rpt.record"],
                 ["spf.pass"])


def acme(cfg) -> bool:
    """The host stack's tls is acme: its domains publish MTA-STS (and verify fetches the policy)."""
    return getattr(cfg, "tls", "self-signed") == "acme"


def expected_checks(cfg, kind: tuple[list[str], list[str]]) -> set[str]:
    single, per_address = kind
    if kind is DOMAIN_CHECKS and acme(cfg):
        single = [*single, "mta-sts.policy"]
    if kind is HOST_CHECKS and cfg.dnssec:
        single, per_address = [*single, "dane.dnssec"], [*per_address, "dane.tlsa"]
    if kind is HOST_CHECKS and cfg.spam_filter:
        single = [*single, *SPAM_FILTER_CHECKS]
    return set(single) | {f"{name}[{a}]" for name in per_address for a in cfg.addresses}


def stack_kind(stack: str) -> tuple[list[str], list[str]]:
    return HOST_CHECKS if stack == HOST_STACK else DOMAIN_CHECKS


def assert_healthy(cfg, stack: str, code: int, report: dict) -> None:
    assert {c["name"] for c in report["checks"]} == expected_checks(cfg, stack_kind(stack))
    not_passing = with_status(report, "warn", "fail")
    # The guide's certificate is self-signed: a warning, not a failure (tls: acme's is trusted).
    self_signed = {f"smtp.cert[{a}]" for a in cfg.addresses} if stack == HOST_STACK and not acme(cfg) else set()
    # ... and so its domains publish no MTA-STS: a warning naming the fix.
    no_sts = {"mta-sts.record"} if stack != HOST_STACK and not acme(cfg) else set()
    assert set(not_passing) == self_signed | no_sts, not_passing
    assert all(f"self-signed certificate for {HOSTNAME}" in c["reason"] for n, c in not_passing.items()
               if n in self_signed)
    assert all("mailstack:tls is self-signed, not acme" in c["reason"] for n, c in not_passing.items() if n in no_sts)
    assert code == 0 and report["ok"] is True


def assert_fails_exactly(code: int, report: dict, expected: set[str], named: str) -> None:
    failing = with_status(report, "fail")
    assert set(failing) == expected, {n: c["reason"] for n, c in failing.items()}
    assert code == 1 and report["ok"] is False
    for check in failing.values():
        assert named in check["reason"] + " " + check["fix"], check
        assert check["fix"], check


# --- healthy --------------------------------------------------------------------------------------------


def test_healthy_host_passes_every_check(lab, deployment, project, cfg):
    started = time.monotonic()
    code, report = verify(lab, project, HOST_STACK)
    assert_healthy(cfg, HOST_STACK, code, report)
    checks = {c["name"]: c for c in report["checks"]}
    # What was actually seen, from peer over both address families.
    assert "Relay access denied" in checks[f"smtp.relay[{lab.mx.ipv6}]"]["reason"]
    assert "VRFY command is disabled" in checks[f"smtp.vrfy[{lab.mx.ipv4}]"]["reason"]
    # The testing-time settings as mx's Postfix reads them (the lab's host stack is past testing).
    assert "soft_bounce = no (the host's postconf, over SSH)" in checks["postfix.soft_bounce"]["reason"]
    assert "notify_classes = resource, software (the host's postconf" in checks["postfix.notify_classes"]["reason"]
    # rspamd and Redis, as mx itself reports them over SSH.
    assert checks["rspamd.listening"]["reason"].endswith("on loopback only")
    assert "answers Postfix's milter negotiation" in checks["rspamd.milter"]["reason"]
    assert "answers PING" in checks["redis.ping"]["reason"]
    assert re.match(r"learned \d+ spam, \d+ ham", checks["rspamd.learned"]["reason"])
    # The whole run, a fresh Python process in the lab included.
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("domain", DOMAINS)
def test_healthy_domain_passes_every_check(lab, deployment, project, cfg, domain):
    code, report = verify(lab, project, domain)
    assert_healthy(cfg, domain, code, report)
    checks = {c["name"]: c for c in report["checks"]}
    assert "read over SSH" in checks["dkim.key"]["reason"]
    # The selector in DNS is the one the host's SigningTable names (read over SSH).
    selector = DOMAIN_SETTINGS[domain].get("dkim_selector", "mail")
    assert f"the host signs with {selector}" in checks["dkim.selectors"]["reason"], checks["dkim.selectors"]
    assert domain in checks["dns.mx"]["reason"] and domain in checks["dmarc.record"]["reason"]


def test_dkim_key_from_the_stack_when_ssh_is_off(lab, deployment, project, cfg):
    # What the DKIM unit printed at deployment (the stack's DKIM record content comes from it).
    (exported,) = [r["outputs"]["stdout"] for key, r in deployment.domains[STACK].state.items()
                   if key.startswith("command:remote:Command::domain-dkim-key-")]
    domain = cfg.domain_config
    record = rec.dkim_value(domain, rec.dkim_public_key(domain, exported))  # as `pulumi stack output records` shows it
    code, report = verify(lab, project, STACK, "--no-ssh", "--dkim-key", record)
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 0 and checks["dkim.key"]["status"] == "pass", checks["dkim.key"]
    assert "the key given with --dkim-key" in checks["dkim.key"]["reason"]


# --- broken DNS -----------------------------------------------------------------------------------------


@contextmanager
def records_replaced(lab, zone: str, name: str, rtype: str, contents: list[str]) -> Iterator[None]:
    """The RRset (name, rtype) replaced by `contents` (none: deleted), then put back as it was."""
    saved = lab.dns_query(name, rtype)
    assert saved, f"{name} {rtype} is not published: the deployment is not as expected"
    if contents:
        lab.dns_update(zone, name, rtype, TTL, contents[0], replace=True)
        for content in contents[1:]:
            lab.dns_update(zone, name, rtype, TTL, content)
    else:
        lab.dns_delete(zone, name, rtype)
    _resolver_caught_up(lab, name, rtype)
    try:
        yield
    finally:
        lab.dns_update(zone, name, rtype, TTL, saved[0], replace=True)
        for content in saved[1:]:
            lab.dns_update(zone, name, rtype, TTL, content)
        _resolver_caught_up(lab, name, rtype)


def _resolver_caught_up(lab, name: str, rtype: str) -> None:
    """Wait until the resolver verify asks (it caches for seconds) answers as the lab's DNS server does."""
    def same() -> bool:
        served = sorted(lab.dns_query(name, rtype))
        answer = dnssec.validated_query(lab, name, rtype)
        return answer["rcode"] in ("NOERROR", "NXDOMAIN") and sorted(r["text"] for r in answer["records"]) == served
    assert wait_for(same, timeout=30), f"the lab's resolver still answers the old {name} {rtype}"


def _other_dkim_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def _variants(lab, cfg) -> dict[str, tuple[tuple[str, str, str, list[str]], set[str], str]]:
    """name: ((zone, name, type, new contents), the checks that fail, what their messages name)."""
    v4, v6 = lab.mx.ipv4, lab.mx.ipv6
    v4_zone, v6_zone = lab.reverse_zones
    return {
        "missing PTR": ((v4_zone, rec.ptr_name(v4), "PTR", []), {f"dns.ptr[{v4}]"}, rec.ptr_name(v4)),
        "PTR naming another host": ((v6_zone, rec.ptr_name(v6), "PTR", [PEER_NAME + "."]), {f"dns.ptr[{v6}]"},
                                    PEER_NAME),
        "SPF without the IPv6 address": ((cfg.domain, cfg.domain, "TXT", [f'"v=spf1 ip4:{v4} -all"']),
                                         {f"spf.pass[{v6}]"}, f'example.com TXT "v=spf1 ip4:{v4} -all"'),
        "DKIM record with another key": ((cfg.domain, rec.dkim_name(cfg.domain_config), "TXT",
                                          [rec.txt_content(rec.dkim_value(cfg.domain_config, _other_dkim_key()))]),
                                         {"dkim.key"}, "mail._domainkey.example.com"),
        "missing DMARC": ((cfg.domain, f"_dmarc.{cfg.domain}", "TXT", []), {"dmarc.record"}, "_dmarc.example.com"),
    }


VARIANT_NAMES = ["missing PTR", "PTR naming another host", "SPF without the IPv6 address",
                 "DKIM record with another key", "missing DMARC"]


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_broken_record_fails_exactly_its_check(lab, deployment, project, cfg, variant):
    (zone, name, rtype, contents), expected, named = _variants(lab, cfg)[variant]
    stack = HOST_STACK if rtype == "PTR" else STACK  # who owns the record
    with records_replaced(lab, zone, name, rtype, contents):
        code, report = verify(lab, project, stack)
    assert_fails_exactly(code, report, expected, named)
    # Beside the self-signed certificate, only checks that depend on the broken record warn, unchecked.
    others = {n: c for n, c in with_status(report, "warn").items()
              if not n.startswith("smtp.cert[") and not (n == "mta-sts.record" and not acme(cfg))}
    assert all(c["reason"].startswith("not checked") for c in others.values()), others


# --- broken Postfix: variant stacks, deployed by the program ----------------------------------------------


@pytest.mark.patches_program
def test_banner_showing_the_version_fails_the_banner_check(lab, deployment, project, cfg):
    # The config model refuses $mail_version in the banner (the guide: no
    # version), so the variant is a rendering that puts it there.
    with main_cf_rewritten(banner_rewrite("$myhostname ESMTP $mail_name $mail_version")):
        deployment.up_host()
    try:
        code, report = verify(lab, project, HOST_STACK)
    finally:
        deployment.up_host()
    assert_fails_exactly(code, report, {f"smtp.banner[{a}]" for a in cfg.addresses}, "smtpd_banner")
    assert all("ESMTP Postfix 3." in c["reason"] for c in with_status(report, "fail").values())


@pytest.mark.patches_program
def test_open_relay_fails_the_relay_check(lab, deployment, project, cfg, monkeypatch):
    # The config model has no key for this, rightly: the variant is a program whose Postfix
    # trusts every address (mynetworks = 0.0.0.0/0 [::]/0, the classic open relay: the guide's
    # permit_mynetworks then lets anyone relay). `smtpd_relay_restrictions = permit` alone is no
    # variant: Postfix refuses to run smtpd without a reject_unauth_destination somewhere.
    with monkeypatch.context() as patch:
        patch.setattr(postfix, "_mynetworks", lambda cfg: "0.0.0.0/0 [::]/0")
        deployment.up_host()
    try:
        assert "mynetworks = 0.0.0.0/0 [::]/0" in lab.ssh("postconf mynetworks").stdout
        code, report = verify(lab, project, HOST_STACK)
    finally:
        deployment.up_host()  # render is itself again: the real mynetworks
    assert_fails_exactly(code, report, {f"smtp.relay[{a}]" for a in cfg.addresses}, "smtpd_relay_restrictions")
    assert all("open relay" in c["reason"] and "mynetworks" in c["fix"] for c in with_status(report, "fail").values())


# --- the guide's testing-time settings, still on ------------------------------------------------------------


def test_testing_time_settings_left_on_are_warned_about(lab, deployment, project, cfg):
    """soft_bounce and the guide's notify_classes, deployed: verify warns (mail still flows: exit 0)."""
    guide = ["bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software"]
    deployment.up_host(soft_bounce=True, testing=True, notify_classes=guide)
    try:
        code, report = verify(lab, project, HOST_STACK)  # the stack file still says off: the host's word counts
    finally:
        deployment.up_host()
    warned = with_status(report, "warn")
    expected = {"postfix.soft_bounce", "postfix.notify_classes", *(f"smtp.soft_bounce[{a}]" for a in cfg.addresses)}
    assert expected <= set(warned), warned
    assert set(warned) - expected <= {f"smtp.cert[{a}]" for a in cfg.addresses}, warned
    assert code == 0 and report["ok"] is True
    assert "soft_bounce = yes (the host's postconf, over SSH)" in warned["postfix.soft_bounce"]["reason"]
    assert "mailstack:soft_bounce: false" in warned["postfix.soft_bounce"]["fix"]
    assert "confidential" in warned["postfix.notify_classes"]["reason"]
    assert all("454" in warned[f"smtp.soft_bounce[{a}]"]["reason"] for a in cfg.addresses), warned


# --- and back ---------------------------------------------------------------------------------------------


def test_everything_put_back_passes_again(lab, deployment, project, cfg):
    assert "mynetworks = 127.0.0.0/8" in lab.ssh("postconf mynetworks").stdout
    for stack in (HOST_STACK, *DOMAINS):
        code, report = verify(lab, project, stack)
        assert_healthy(cfg, stack, code, report)


def test_a_stopped_redis_fails_the_spam_filter_checks(lab, deployment, project, cfg):
    """Redis down on mx: verify names it (not listening, no PONG), and nothing else of the host fails."""
    lab.run_in("mx", ["service", "redis-server", "stop"])
    try:
        code, report = verify(lab, project, HOST_STACK)
        failing = with_status(report, "fail")
        assert {"rspamd.listening", "redis.ping"} <= set(failing), failing
        assert set(failing) <= set(SPAM_FILTER_CHECKS), failing
        assert "not listening: Redis (6379)" in failing["rspamd.listening"]["reason"]
        assert "service redis-server start" in failing["redis.ping"]["fix"]
        assert code == 1 and report["ok"] is False
    finally:
        lab.run_in("mx", ["service", "redis-server", "start"])
        deadline = time.monotonic() + 60
        while lab.run_in("mx", ["redis-cli", "ping"], check=False).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "Redis on mx did not come back"
            time.sleep(0.5)
