"""Client autoconfiguration, seen from a mail client in the lab (issue 17).

With the lab's stacks deployed as they always are (tls: acme in the host
stack; autoconfig on, the default, in each domain stack):

- the SRV records of RFC 6186/8314 resolve from the lab DNS: submission 587,
  IMAP 993 and 143 at mail.example.net; submissions (465) and POP3 with
  target "." (not offered);
- https://autoconfig.<domain>/mail/config-v1.1.xml (and the .well-known
  path) is served with a certificate Pebble issued for that name, and names
  the host's IMAP and submission ports;
- a client that knows only an address and its password (autoconfigclient.py)
  follows the SRV records and the autoconfig file to mail.example.net, 993
  and 587, and logs in over IMAP and submission, TLS checked against
  Pebble's roots.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from .stack import DOMAINS, HOSTNAME, MAILBOX
from .test_tls import PROBE

CLIENT = "client"

EXPECTED_SRV = {
    "_submissions._tcp": ["0 0 0 ."],
    "_submission._tcp": [f"0 1 587 {HOSTNAME}."],
    "_imaps._tcp": [f"0 1 993 {HOSTNAME}."],
    "_imap._tcp": [f"0 1 143 {HOSTNAME}."],
    "_pop3s._tcp": ["0 0 0 ."],
    "_pop3._tcp": ["0 0 0 ."],
}


def follow(lab, address: str) -> dict:
    """autoconfigclient.py on the client host, from the address and its password only."""
    job = {"address": address, "password": MAILBOX[address].password, "nameserver": lab.dns.ipv4,
           "cafile": str(lab.ca_root_file)}
    result = lab.run_python(CLIENT, [str(Path(__file__).parent / "autoconfigclient.py"), json.dumps(job)],
                            check=False, timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_srv_records_resolve_from_the_lab_dns(lab, deployment, domain):
    for service, expected in EXPECTED_SRV.items():
        assert sorted(lab.dns_query(f"{service}.{domain}", "SRV", from_host=CLIENT)) == expected, service


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_autoconfig_host_resolves_to_the_mail_host(lab, deployment, domain):
    for rtype, address in (("A", lab.mx.ipv4), ("AAAA", lab.mx.ipv6)):
        found = [ipaddress.ip_address(a) for a in lab.dns_query(f"autoconfig.{domain}", rtype, from_host=CLIENT)]
        assert found == [ipaddress.ip_address(address)], rtype


@pytest.mark.parametrize("path", ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"])
def test_the_autoconfig_file_is_served_over_https_with_a_certificate_clients_trust(lab, deployment, path):
    # One TLS handshake to mx's 443 as autoconfig.example.com, validated against Pebble's roots only.
    job = {"address": lab.mx.ipv4, "port": 443, "kind": "https", "name": "autoconfig.example.com", "path": path,
           "cafile": str(lab.ca_root_file)}
    served = json.loads(lab.run_python(CLIENT, ["-c", PROBE], input=json.dumps(job), timeout=60).stdout)
    assert served["ok"], served
    assert served["http"]["status"] == 200, served["http"]["head"]
    assert "content-type: application/xml" in served["http"]["head"].lower()
    body = served["http"]["content"]
    for port, socket_type in (("993", "SSL"), ("143", "STARTTLS"), ("587", "STARTTLS")):
        assert f"<port>{port}</port>\n      <socketType>{socket_type}</socketType>" in body, body
    assert f"<hostname>{HOSTNAME}</hostname>" in body and "%EMAILADDRESS%" in body


@pytest.mark.parametrize("address", ["alice@example.com", "alice@example.org"])
def test_a_client_knowing_only_the_address_finds_the_host_and_logs_in(lab, deployment, address):
    found = follow(lab, address)
    domain = address.rpartition("@")[2]
    # RFC 8314 5.1: implicit TLS for IMAP; submission only with STARTTLS (465 says "not offered").
    assert found["imap"] == {"service": "_imaps._tcp", "host": HOSTNAME, "port": 993, "socket": "SSL"}, found["srv"]
    assert found["submission"] == {"service": "_submission._tcp", "host": HOSTNAME, "port": 587,
                                   "socket": "STARTTLS"}, found["srv"]
    # The autoconfig file agrees with the SRV records, and names the address as the login.
    autoconfig = found["autoconfig"]
    assert autoconfig["status"] == 200, f"autoconfig.{domain}"
    assert [(s["kind"], s["host"], s["port"], s["socket"]) for s in autoconfig["servers"]] == [
        ("imap", HOSTNAME, 993, "SSL"), ("imap", HOSTNAME, 143, "STARTTLS"), ("smtp", HOSTNAME, 587, "STARTTLS")]
    assert {s["username"] for s in autoconfig["servers"]} == {address}
    assert found["imap_login"] == {"ok": True}, found["imap_login"]
    assert found["submission_login"] == {"ok": True}, found["submission_login"]
