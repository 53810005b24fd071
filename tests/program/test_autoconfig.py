"""Client autoconfiguration in the program: SRV records in every domain stack, autoconfig.<domain> on acme hosts.

The SRV records (RFC 6186/8314) need no certificate: they are published with
the domain's other records whatever the host's TLS. The settings file on
autoconfig.<domain> is fetched over HTTPS, so its unit and its A/AAAA exist
only when the host stack's `tls` is acme (as MTA-STS); mailstack:autoconfig
false publishes neither.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import stack_values
from tests.program.harness import HOST_SECRET_OUTPUTS, MailMocks
from tests.program.stacks import COMMAND, DNS_RECORD, dkim_public_key, evaluate_domain, evaluate_host, with_secrets

HOST = "mail.example.net"  # the test host stack's hostname


def _domain(tls: str = "acme", preview: bool = False, **settings):
    values = with_secrets(stack_values("example.com"))
    values.update({f"mailstack:{k}": v for k, v in settings.items()})
    outputs = dict(evaluate_host().stack_outputs)
    outputs["tls"] = tls
    mocks = MailMocks(dkim_public_key(), stacks={"host-mail": outputs},
                      secret_outputs={"host-mail": HOST_SECRET_OUTPUTS}, commands_ran=not preview)
    return evaluate_domain(values, mocks=mocks, preview=preview)


def _srv(evaluation) -> dict[str, tuple]:
    found = {}
    for r in evaluation.of_type(DNS_RECORD):
        if r.inputs["type"] == "SRV":
            d = r.inputs["data"]
            found[r.inputs["name"]] = (int(d["priority"]), int(d["weight"]), int(d["port"]), d["target"])
    return found


@pytest.fixture(scope="module")
def acme():
    return _domain()


def test_the_srv_records_send_clients_to_the_host_as_cloudflare_takes_them(acme):
    assert _srv(acme) == {
        "_submission._tcp.example.com": (0, 1, 587, HOST),
        "_imaps._tcp.example.com": (0, 1, 993, HOST),
        "_imap._tcp.example.com": (0, 1, 143, HOST),
        "_submissions._tcp.example.com": (0, 0, 0, "."),
        "_pop3s._tcp.example.com": (0, 0, 0, "."),
        "_pop3._tcp.example.com": (0, 0, 0, "."),
    }
    srv = [r for r in acme.of_type(DNS_RECORD) if r.inputs["type"] == "SRV"]
    assert all("content" not in r.inputs for r in srv), "Cloudflare takes an SRV record as data"
    exported = {(r["type"], r["name"]) for r in acme.stack_outputs["records"]}
    assert ("SRV", "_submission._tcp.example.com") in exported


def test_on_an_acme_host_the_autoconfig_unit_serves_the_settings_file_before_its_records(acme):
    unit = acme.named("domain-autoconfig")
    script = unit.inputs["stdin"]
    assert "owner=mailstack/example.com" in script
    issue = ('"$tool" issue autoconfig.example.com /etc/mailstack/tls/autoconfig.example.com/key.pem '
             "/etc/mailstack/tls/autoconfig.example.com/fullchain.pem autoconfig.example.com")
    assert issue in script
    assert "server_name autoconfig.example.com;" in script
    assert "location = /mail/config-v1.1.xml" in script
    assert "location = /.well-known/autoconfig/mail/config-v1.1.xml" in script
    assert script.index(issue) < script.index("nginx -t -q") < script.index('mv -f "$path.mailstack-new"')
    # The settings file, as staged: it parses and names the host's ports.
    start = script.index("<?xml")
    xml = script[start:script.index("</clientConfig>", start) + len("</clientConfig>")]
    provider = ET.fromstring(xml).find("emailProvider")
    servers = [(s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
               for s in [*provider.findall("incomingServer"), *provider.findall("outgoingServer")]]
    assert servers == [("imap", HOST, "993", "SSL"), ("imap", HOST, "143", "STARTTLS"),
                       ("smtp", HOST, "587", "STARTTLS")]
    assert acme.named("domain-files").urn in unit.dependencies
    a = [r for r in acme.of_type(DNS_RECORD) if r.inputs["name"] == "autoconfig.example.com"]
    assert sorted((r.inputs["type"], r.inputs["content"]) for r in a) == [("A", "192.0.2.10"), ("AAAA", "2001:db8::10")]
    assert all(unit.urn in r.dependencies for r in a)


def test_destroying_the_autoconfig_unit_removes_its_server_block_file_and_lineage_only(acme):
    delete = acme.named("domain-autoconfig").inputs["delete"]
    assert "rm -f /etc/nginx/mailstack/example.com.autoconfig.conf" in delete
    assert "rm -f /etc/mailstack/domains/example.com/config-v1.1.xml" in delete
    assert "remove autoconfig.example.com" in delete
    assert "mta-sts" not in delete and "mailstack-assemble" not in delete and "/var/vmail" not in delete


@pytest.mark.parametrize("tls", ["self-signed", "files"])
def test_without_acme_only_the_srv_records_with_a_warning(tls, caplog):
    with caplog.at_level(logging.WARNING):
        evaluation = _domain(tls=tls)
    assert len(_srv(evaluation)) == 6
    assert not [r for r in evaluation.of_type(DNS_RECORD) if r.inputs["name"].startswith("autoconfig.")]
    assert not [r for r in evaluation.of_type(COMMAND) if r.name.endswith("-autoconfig")]
    warning = " ".join(r.getMessage() for r in caplog.records if "autoconfig" in r.getMessage())
    assert f"has mailstack:tls {tls}" in warning and "mailstack:autoconfig" in warning


def test_autoconfig_false_publishes_neither_and_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING):
        evaluation = _domain(autoconfig="false")
    assert _srv(evaluation) == {}
    assert not [r for r in evaluation.of_type(DNS_RECORD) if r.inputs["name"].startswith("autoconfig.")]
    assert not [r for r in evaluation.of_type(COMMAND) if r.name.endswith("-autoconfig")]
    assert not [r for r in caplog.records if "autoconfig" in r.getMessage()]


def test_in_preview_the_srv_records_and_the_autoconfig_unit_are_shown():
    preview = _domain(preview=True)
    assert len(_srv(preview)) == 6
    assert "server_name autoconfig.example.com;" in preview.named("domain-autoconfig").inputs["stdin"]
