"""tls: acme, seen from outside: what a client on the Internet checks (issue 13).

With the lab's stacks deployed as they always are, with tls: acme
(stack.acme_settings in the host stack; MTA-STS mode testing, the default, in
each domain stack):

- mx serves a certificate that Pebble issued for mail.example.net on 25 and
  587 (STARTTLS) and 993, and one for mta-sts.example.com on 443 (SNI); a
  client that trusts only Pebble's roots (pebble-roots.pem) validates each,
  host name checked;
- `mailstack-tls renew --force` serves new certificates (new serial, same
  key: DANE 3 1 1 records stay true) on every port, and no daemon restarts:
  the Postfix, Dovecot and nginx masters keep their pids;
- with Pebble unreachable a forced renewal fails (non-zero), the old
  certificates keep serving and `mailstack-tls status` says failed;
- a peer fetches example.com's MTA-STS policy with an independent
  implementation (postfix-mta-sts-resolver's STSResolver, against the lab
  DNS, trusting Pebble's roots): mode testing, mx mail.example.net; the
  `_mta-sts` id changes when the policy does (mode enforce) and only then;
- `_smtp._tls.<domain>` is a TLS-RPT record reporting to postmaster@<domain>.

"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import wait_for
from .lab import REPO
from .stack import ACME_DOMAIN_SETTINGS, DOMAINS, HOSTNAME
from .test_deployment import PIDS, pids

COM = "example.com"
TLS_TOOL = "/usr/local/sbin/mailstack-tls"
NGINX_PID = "/run/nginx.pid"

# Runs on a lab host: one TLS handshake with mx, validated against the given roots only,
# host name checked; the certificate's serial, key (SPKI SHA-256) and issuer.
# kind: smtp (EHLO, STARTTLS), tls (TLS at once: 993), https (SNI, then GET `path`).
PROBE = """
import hashlib, json, socket, ssl, sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization

job = json.load(sys.stdin)
context = ssl.create_default_context(cafile=job["cafile"])

def smtp_reply(f):
    while True:
        line = f.readline().decode()
        if len(line) < 4 or line[3] != "-":
            return line

try:
    sock = socket.create_connection((job["address"], job["port"]), timeout=20)
    if job["kind"] == "smtp":
        f = sock.makefile("rb")
        smtp_reply(f)
        sock.sendall(b"EHLO peer.example.net\\r\\n")
        smtp_reply(f)
        sock.sendall(b"STARTTLS\\r\\n")
        reply = smtp_reply(f)
        if not reply.startswith("220"):
            raise RuntimeError("STARTTLS refused: " + reply)
    tls = context.wrap_socket(sock, server_hostname=job["name"])
    body = None
    if job["kind"] == "https":
        tls.sendall(("GET %s HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n"
                     % (job.get("path", "/"), job["name"])).encode())
        raw = b""
        while chunk := tls.recv(65536):
            raw += chunk
        head, _, content = raw.partition(b"\\r\\n\\r\\n")
        body = {"status": int(head.split()[1]), "head": head.decode(), "content": content.decode()}
    cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    print(json.dumps({"ok": True, "serial": format(cert.serial_number, "x"),
                      "spki_sha256": hashlib.sha256(spki).hexdigest(),
                      "issuer": cert.issuer.rfc4514_string(),
                      "not_after": cert.not_valid_after_utc.isoformat(), "http": body}))
except Exception as e:
    print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
"""

# (port, kind, the name the client checks, the lab host it connects from)
ENDPOINTS = {
    "smtp-25": (25, "smtp", HOSTNAME, "peer"),
    "submission-587": (587, "smtp", HOSTNAME, "client"),
    "imaps-993": (993, "tls", HOSTNAME, "client"),
    "mta-sts-443": (443, "https", f"mta-sts.{COM}", "peer"),
}


def probe(lab, endpoint: str, family: str = "ipv4", path: str = "/") -> dict:
    port, kind, name, on = ENDPOINTS[endpoint]
    job = {"address": getattr(lab.mx, family), "port": port, "kind": kind, "name": name, "path": path,
           "cafile": str(lab.ca_root_file)}
    return json.loads(lab.run_python(on, ["-c", PROBE], input=json.dumps(job), timeout=60).stdout)


def served(lab) -> dict[str, dict]:
    return {endpoint: probe(lab, endpoint) for endpoint in ENDPOINTS}


def masters(lab) -> dict[str, int]:
    """The pids of the Postfix, Dovecot and nginx masters, each a running process."""
    return pids(lab, {"postfix": PIDS["postfix"], "dovecot": PIDS["dovecot"], "nginx": NGINX_PID})


def status_lines(lab) -> dict[str, dict[str, str]]:
    """`mailstack-tls status`: lineage -> its key=value fields (a value may hold spaces and upper-case
    keys: an issuer's name, "CN=Pebble Intermediate CA 1a2b")."""
    out = lab.ssh(f"{TLS_TOOL} status").stdout
    lines = {}
    for line in out.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name:
            lines[name] = dict(re.findall(r"([a-z_]+)=(.*?)(?= [a-z_]+=|$)", rest))
    return lines


def mta_sts_txt(lab, domain: str) -> list[list[str]]:
    return lab.dns_txt(f"_mta-sts.{domain}", from_host="peer")


def policy_id(domain_txt: list[list[str]]) -> str:
    (strings,) = domain_txt
    fields = dict(f.strip().split("=", 1) for f in "".join(strings).split(";") if f.strip())
    assert fields["v"] == "STSv1", domain_txt
    return fields["id"]


# Runs on the peer: postfix-mta-sts-resolver's own resolver (DNS from the peer's resolv.conf,
# the lab's Knot; HTTPS through aiohttp, trusting SSL_CERT_FILE: Pebble's roots only).
STS_RESOLVE = """
import asyncio, json, sys
from postfix_mta_sts_resolver.resolver import STSResolver

async def main():
    resolver = STSResolver(loop=asyncio.get_running_loop(), timeout=20)
    status, answer = await resolver.resolve(sys.argv[1])
    print(json.dumps({"status": status.name, "id": answer[0] if answer else None,
                      "policy": answer[1] if answer else None}))

asyncio.run(main())
"""


def sts_resolve(lab, domain: str) -> dict:
    """STSResolver.resolve(domain) on the peer: {"status", "id", "policy"}."""
    argv = ["ip", "netns", "exec", lab.hosts["peer"].netns, sys.executable, "-c", STS_RESOLVE, domain]
    env = dict(os.environ, PYTHONPATH=str(REPO), SSL_CERT_FILE=str(lab.ca_root_file))
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=True)
    return json.loads(result.stdout)


# --- the certificates mx serves -------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_port_serves_a_pebble_certificate_for_its_name(lab, deployment, endpoint):
    answer = probe(lab, endpoint)
    assert answer["ok"], answer  # validated against pebble-roots.pem only, host name checked
    assert "Pebble" in answer["issuer"], answer


@pytest.mark.parametrize("endpoint", ["smtp-25", "imaps-993", "mta-sts-443"])
def test_the_same_certificate_over_ipv6(lab, deployment, endpoint):
    assert probe(lab, endpoint, "ipv6")["serial"] == probe(lab, endpoint)["serial"]


def test_the_host_serves_one_certificate_on_its_mail_ports(lab, deployment):
    found = served(lab)
    host_serials = {found[e]["serial"] for e in ("smtp-25", "submission-587", "imaps-993")}
    assert len(host_serials) == 1, found
    assert found["mta-sts-443"]["serial"] not in host_serials  # its own lineage, its own key
    assert found["mta-sts-443"]["spki_sha256"] != found["smtp-25"]["spki_sha256"]


def test_status_lists_every_lineage_as_ok(lab, deployment):
    lines = status_lines(lab)
    # The host's, and each domain's MTA-STS policy host and autoconfig host (autoconfig on, the default).
    assert set(lines) == {"host", *(f"{name}.{d}" for d in DOMAINS for name in ("mta-sts", "autoconfig"))}, lines
    for name, fields in lines.items():
        assert fields["last"] == "ok", (name, fields)
        assert int(fields["days_left"]) > 30, (name, fields)


# --- renewal ----------------------------------------------------------------------------------------------


def test_forced_renewal_serves_new_certificates_for_the_same_keys_without_restarts(lab, deployment):
    before, pids_before = served(lab), masters(lab)
    assert all(answer["ok"] for answer in before.values()), before

    result = lab.ssh(f"{TLS_TOOL} renew --force", check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    def renewed():
        now = served(lab)
        return now if all(now[e]["ok"] and now[e]["serial"] != before[e]["serial"] for e in ENDPOINTS) else None

    # Reloaded daemons answer new connections with the new files; an idle process may serve one
    # more from the old ones, so the probe is repeated until every port shows the new certificate.
    after = wait_for(renewed, timeout=60)
    assert after, f"not every port serves a new certificate: {served(lab)}"
    for endpoint in ENDPOINTS:
        assert after[endpoint]["spki_sha256"] == before[endpoint]["spki_sha256"], endpoint  # same key
    assert masters(lab) == pids_before  # reloaded, never restarted
    assert all(fields["last"] == "ok" for fields in status_lines(lab).values())


def test_renewal_without_the_acme_server_fails_and_keeps_serving_the_old_certificates(lab, deployment):
    before = served(lab)
    lab.acme_down()
    try:
        result = lab.ssh(f"{TLS_TOOL} renew --force", check=False, timeout=600)
        after = served(lab)
        lines = status_lines(lab)
    finally:
        lab.acme_up()
    assert result.returncode != 0
    assert result.stderr.strip(), "a failed renewal says why"
    assert {e: a["serial"] for e, a in after.items()} == {e: b["serial"] for e, b in before.items()}
    assert all(a["ok"] for a in after.values()), after  # still valid: the old files were kept
    assert {name: fields["last"] for name, fields in lines.items()} == dict.fromkeys(lines, "failed"), lines
    # Pebble back: the next renewal succeeds and clears the failures.
    assert lab.ssh(f"{TLS_TOOL} renew --force", check=False, timeout=600).returncode == 0
    assert {fields["last"] for fields in status_lines(lab).values()} == {"ok"}


# --- MTA-STS and TLS-RPT ------------------------------------------------------------------------------------


def expected_policy(mode: str, max_age: int = 604800) -> str:
    return f"version: STSv1\nmode: {mode}\nmx: {HOSTNAME}\nmax_age: {max_age}\n"


def test_peer_fetches_the_mta_sts_policy_with_an_independent_resolver(lab, deployment):
    answer = sts_resolve(lab, COM)
    assert answer["status"] == "VALID", answer
    policy = answer["policy"]
    assert policy["mode"] == "testing" and policy["mx"] == [HOSTNAME] and policy["max_age"] == 604800, policy
    assert answer["id"] == policy_id(mta_sts_txt(lab, COM))


def test_policy_is_served_as_text_and_nothing_else_is(lab, deployment):
    got = probe(lab, "mta-sts-443", path="/.well-known/mta-sts.txt")["http"]
    assert got["status"] == 200 and got["content"] == expected_policy("testing")
    assert "content-type: text/plain" in got["head"].lower()
    assert policy_id(mta_sts_txt(lab, COM)) == hashlib.sha256(got["content"].encode()).hexdigest()[:20]
    assert probe(lab, "mta-sts-443", path="/")["http"]["status"] == 404
    assert probe(lab, "mta-sts-443", path="/.well-known/mta-sts.txt.bak")["http"]["status"] == 404


def test_policy_id_changes_exactly_when_the_policy_does(lab, deployment):
    testing_id = policy_id(mta_sts_txt(lab, COM))
    try:
        deployment.up_domain(COM, **{**ACME_DOMAIN_SETTINGS, "mta_sts_mode": "enforce"})
        enforce_id = policy_id(mta_sts_txt(lab, COM))
        assert enforce_id != testing_id
        answer = sts_resolve(lab, COM)
        assert answer["policy"]["mode"] == "enforce" and answer["id"] == enforce_id, answer

        deployment.up_domain(COM, **{**ACME_DOMAIN_SETTINGS, "mta_sts_mode": "enforce"})  # unchanged
        assert policy_id(mta_sts_txt(lab, COM)) == enforce_id
    finally:
        deployment.up_domain(COM, **ACME_DOMAIN_SETTINGS)
    assert policy_id(mta_sts_txt(lab, COM)) == testing_id  # the id is the policy's: the same text, the same id


@pytest.mark.parametrize("domain", DOMAINS)
def test_tls_rpt_reports_go_to_the_postmaster(lab, deployment, domain):
    assert lab.dns_txt(f"_smtp._tls.{domain}", from_host="peer") == [[f"v=TLSRPTv1; rua=mailto:postmaster@{domain}"]]
