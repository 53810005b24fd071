"""components/services/web.py: the mail client settings file and the server block of autoconfig.<domain>."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from components.config import load_config
from components.hostfacts import HostFacts
from components.services import web

HOST = HostFacts(host_id="mailstack/host-mail", hostname="mx1.example.net", addresses=["192.0.2.10", "2001:db8::10"],
                 tls="acme")


def config(domain: str = "example.com"):
    return load_config({"mailstack:domain": domain, "mailstack:host_stack": "host-mail",
                        "mailstack:users": [{"name": "alice"}]})


def servers(xml: str) -> list[tuple]:
    provider = ET.fromstring(xml).find("emailProvider")
    return [(s.tag, s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"),
             s.findtext("authentication"), s.findtext("username"))
            for s in provider if s.tag in ("incomingServer", "outgoingServer")]


def test_the_settings_file_names_the_hosts_imap_and_submission_ports_tls_first():
    xml = web.autoconfig_xml(config(), HOST)
    root = ET.fromstring(xml)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider.get("id") == "example.com" and [d.text for d in provider.findall("domain")] == ["example.com"]
    assert servers(xml) == [
        ("incomingServer", "imap", "mx1.example.net", "993", "SSL", "password-cleartext", "%EMAILADDRESS%"),
        ("incomingServer", "imap", "mx1.example.net", "143", "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
        ("outgoingServer", "smtp", "mx1.example.net", "587", "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
    ]
    # No plaintext port, no POP3, no 465: only what the host offers, always inside TLS.
    assert "<socketType>plain</socketType>" not in xml and 'type="pop3"' not in xml and "465" not in xml


def test_each_domain_has_its_own_file_and_server_block():
    files = {f.path: f.content for f in web.autoconfig_files(config("example.org"), HOST)}
    assert set(files) == {"/etc/mailstack/domains/example.org/config-v1.1.xml",
                          "/etc/nginx/mailstack/example.org.autoconfig.conf"}
    block = files["/etc/nginx/mailstack/example.org.autoconfig.conf"]
    assert "server_name autoconfig.example.org;" in block
    assert "listen 192.0.2.10:443 ssl;" in block and "listen [2001:db8::10]:443 ssl;" in block
    assert "ssl_certificate /etc/mailstack/tls/autoconfig.example.org/fullchain.pem;" in block
    assert "ssl_certificate_key /etc/mailstack/tls/autoconfig.example.org/key.pem;" in block
    for path in web.AUTOCONFIG_PATHS:
        assert f"location = {path} {{" in block
    assert block.count("alias /etc/mailstack/domains/example.org/config-v1.1.xml;") == 2
    assert "return 404;" in block
    # Not the MTA-STS block's file: the two never overwrite each other.
    assert web.autoconfig_conf("example.org") != web.server_conf("example.org")
