"""A mail client's setup from nothing but an address: RFC 6186/8314 SRV records, then the autoconfig file.

Run on a lab host (lab.run_python): `python autoconfigclient.py JSON` with
{"address", "password", "nameserver", "cafile"}. It knows no host name and no
port. As a careful client does (RFC 8314 5.1 prefers implicit TLS; RFC 6186
3.4 skips a target of "."), it

1. asks the lab DNS for the SRV records of the address's domain and picks,
   for IMAP and for submission, the lowest-priority offered record of the
   implicit-TLS service, else of the STARTTLS one;
2. fetches https://autoconfig.<domain>/mail/config-v1.1.xml (Thunderbird's
   first place), the certificate checked against `cafile` for that name;
3. logs in over IMAP and over submission at what it found, TLS checked
   against `cafile` for the server's host name, with the user name the file
   says (%EMAILADDRESS% replaced).

It prints one JSON object: what each step found, and whether each login
worked. Test infrastructure: standard library and dnspython only.
"""

from __future__ import annotations

import imaplib
import json
import smtplib
import socket
import ssl
import sys
import xml.etree.ElementTree as ET

import dns.resolver

SERVICES = ("_submissions._tcp", "_submission._tcp", "_imaps._tcp", "_imap._tcp", "_pop3s._tcp", "_pop3._tcp")


def resolver(nameserver: str) -> dns.resolver.Resolver:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [nameserver]
    r.lifetime = 10
    return r


def srv(res: dns.resolver.Resolver, domain: str) -> dict[str, list[dict]]:
    """Each service's SRV records, sorted by priority then weight (heaviest first)."""
    found = {}
    for service in SERVICES:
        answer = res.resolve(f"{service}.{domain}", "SRV", raise_on_no_answer=False)
        records = [{"priority": r.priority, "weight": r.weight, "port": r.port,
                    "target": r.target.to_text(omit_final_dot=True) or "."} for r in answer.rrset or []]
        found[service] = sorted(records, key=lambda r: (r["priority"], -r["weight"]))
    return found


def choose(found: dict[str, list[dict]], tls: str, starttls: str) -> dict | None:
    """Implicit TLS first (RFC 8314 5.1), then STARTTLS; a target "." means not offered (RFC 6186 3.4)."""
    for service, security in ((tls, "SSL"), (starttls, "STARTTLS")):
        offered = [r for r in found[service] if r["target"] != "."]
        if offered:
            return {"service": service, "host": offered[0]["target"], "port": offered[0]["port"], "socket": security}
    return None


def address_of(res: dns.resolver.Resolver, name: str) -> str:
    return res.resolve(name, "A")[0].address


def fetch_autoconfig(res: dns.resolver.Resolver, domain: str, email: str, cafile: str) -> dict:
    name = f"autoconfig.{domain}"
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((address_of(res, name), 443), timeout=20) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            path = f"/mail/config-v1.1.xml?emailaddress={email.replace('@', '%40')}"
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    servers = []
    if status == 200:
        provider = ET.fromstring(body).find("emailProvider")
        for element in provider:
            if element.tag in ("incomingServer", "outgoingServer"):
                servers.append({"kind": element.get("type"), "host": element.findtext("hostname"),
                                "port": int(element.findtext("port")), "socket": element.findtext("socketType"),
                                "username": element.findtext("username").replace("%EMAILADDRESS%", email),
                                "authentication": element.findtext("authentication")})
    return {"status": status, "servers": servers}


def imap_login(res, server: dict, user: str, password: str, cafile: str) -> dict:
    context = _named(ssl.create_default_context(cafile=cafile), server["host"])
    address = address_of(res, server["host"])
    try:
        if server["socket"] == "SSL":
            client = imaplib.IMAP4_SSL(address, server["port"], ssl_context=context, timeout=30)
        else:
            client = imaplib.IMAP4(address, server["port"], timeout=30)
            client.starttls(ssl_context=context)
        status, _ = client.login(user, password)
        client.logout()
        return {"ok": status == "OK"}
    except (imaplib.IMAP4.error, OSError) as err:
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def _named(context: ssl.SSLContext, name: str) -> ssl.SSLContext:
    """A context whose wrap_socket checks `name` whatever host the library passes."""
    wrap = context.wrap_socket

    def wrap_socket(sock, *args, server_hostname=None, **kwargs):
        return wrap(sock, *args, server_hostname=name, **kwargs)

    context.wrap_socket = wrap_socket  # type: ignore[method-assign]
    return context


def submission_login(res, server: dict, user: str, password: str, cafile: str) -> dict:
    context = _named(ssl.create_default_context(cafile=cafile), server["host"])
    address = address_of(res, server["host"])
    try:
        if server["socket"] == "SSL":
            smtp = smtplib.SMTP_SSL(address, server["port"], local_hostname="client.example.net", timeout=30,
                                    context=context)
        else:
            smtp = smtplib.SMTP(address, server["port"], local_hostname="client.example.net", timeout=30)
        with smtp:
            smtp.ehlo()
            if server["socket"] != "SSL":
                smtp.starttls(context=context)
                smtp.ehlo()
            code, _ = smtp.login(user, password)
            return {"ok": code == 235}
    except (smtplib.SMTPException, OSError) as err:
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def setup(address: str, password: str, nameserver: str, cafile: str) -> dict:
    res = resolver(nameserver)
    domain = address.rpartition("@")[2]
    found = srv(res, domain)
    imap = choose(found, "_imaps._tcp", "_imap._tcp")
    submission = choose(found, "_submissions._tcp", "_submission._tcp")
    autoconfig = fetch_autoconfig(res, domain, address, cafile)
    user = next((s["username"] for s in autoconfig["servers"]), address)
    answer = {"srv": found, "imap": imap, "submission": submission, "autoconfig": autoconfig, "user": user}
    if imap:
        answer["imap_login"] = imap_login(res, imap, user, password, cafile)
    if submission:
        answer["submission_login"] = submission_login(res, submission, user, password, cafile)
    return answer


if __name__ == "__main__":
    print(json.dumps(setup(**json.loads(sys.argv[1]))))
