"""Proof that the lab's ACME side works, before the program's tls: acme relies on it.

- Pebble answers at https://acme.example.net:14000/dir and mx trusts its HTTPS
  certificate (the lab CA); its issuing root is in the file lab.json names;
- the Cloudflare stand-in answers like Cloudflare's v4 API, and what it says
  is what the lab's DNS serves: a record it creates is published, a record
  it deletes is gone; a wrong token gets Cloudflare's 9109 error; its call
  log never holds the token;
- Debian's certbot with its Cloudflare plugin, installed on mx, gets a
  certificate for mail.example.net from Pebble through the stand-in, for the
  key of the CSR it is given (`--csr`: the key never leaves mx's hands),
  valid for that name under Pebble's root, and cleans its challenge up; a
  second order (a new account's) goes through DNS again; with
  a wrong token it fails with Cloudflare's error;
- lab.acme_down() makes Pebble unreachable, lab.acme_up() brings the same
  Pebble back (same process, same root); acme and cfapi have no way out.

No part of mailstack is deployed here: this checks the lab, with the tools
the program's ACME unit uses.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from .acmeserver import ACME_PORT
from .lab import STATE_FILE
from .stack import ACME_CLOUDFLARE_TOKEN, HOSTNAME

WORK = "/root/lab-acme"  # on mx: the CSR, keys, certbot's dirs; removed at the end
CERTBOT_PACKAGES = "certbot python3-certbot-dns-cloudflare"

# Runs on a lab host: one call to the Cloudflare stand-in; the request (with its token) on stdin.
CF_CALL = """
import json, ssl, sys, urllib.error, urllib.request
job = json.load(sys.stdin)
request = urllib.request.Request(job["url"], method=job["method"],
                                 data=json.dumps(job["body"]).encode() if job["body"] is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": "Bearer " + job["token"]} if job["token"] else {})})
context = ssl.create_default_context(cafile=job["cafile"])
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as reply:
        status, body = reply.status, reply.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
print(json.dumps({"status": status, "body": json.loads(body)}))
"""


def cf(lab, method: str, path: str, token: str | None = ACME_CLOUDFLARE_TOKEN, body=None) -> tuple[int, dict]:
    """(HTTP status, JSON body) of one API call from the admin host, trusting the lab CA only."""
    job = {"url": lab.cfapi_base_url + path, "method": method, "token": token, "body": body,
           "cafile": str(lab.lab_ca_file)}
    answer = json.loads(lab.run_python("admin", ["-c", CF_CALL], input=json.dumps(job)).stdout)
    return answer["status"], answer["body"]


def zone_of(lab, name: str) -> str:
    status, answer = cf(lab, "GET", f"/zones?name={name}&per_page=1")
    assert status == 200 and answer["success"], answer
    (zone,) = answer["result"]
    return zone["id"]


# --- Pebble and the lab CA ------------------------------------------------------------------------------


def test_mx_reaches_pebble_over_https_it_trusts(lab):
    # mx's own python3 and CA store: the name from the lab DNS, the certificate from the lab CA.
    probe = ("import json, urllib.request\n"
             f"print(json.load(urllib.request.urlopen({lab.acme_directory!r}, timeout=10))['newOrder'])\n")
    assert lab.ssh("python3", stdin=probe).stdout.startswith(f"https://{lab.acme_hostname}:{ACME_PORT}/")


def test_lab_state_names_pebbles_root(lab):
    state = json.loads(STATE_FILE.read_text())
    roots = Path(state["ca_root_file"]).read_text()
    assert state["acme_directory"] == lab.acme_directory
    assert roots.count("BEGIN CERTIFICATE") >= 1
    # The root Pebble serves now is in the file (its last one).
    assert lab._fetch_pebble_root() and Path(state["ca_root_file"]).read_text() == roots


def test_mx_points_python_cloudflare_at_the_stand_in(lab):
    assert lab.ssh("cat /root/.cloudflare.cfg").stdout == f"[CloudFlare]\nbase_url = {lab.cfapi_base_url}\n"


def test_acme_and_cfapi_have_no_way_out_either(lab):
    for host in lab.services.values():
        route = subprocess.run(["ip", "-n", host.netns, "route", "get", "192.0.2.1"], capture_output=True, text=True)
        assert route.returncode != 0 and "unreachable" in route.stderr, (host.name, route.stdout)


# --- the Cloudflare stand-in ---------------------------------------------------------------------------------


def test_zone_ids_look_like_cloudflares(lab):
    status, answer = cf(lab, "GET", "/zones?name=example.net&per_page=1")
    assert status == 200 and answer["success"] and answer["errors"] == []
    (zone,) = answer["result"]
    assert zone["name"] == "example.net" and re.fullmatch(r"[0-9a-f]{32}", zone["id"])
    assert answer["result_info"]["total_count"] == 1
    # A zone the account does not have: an empty list, as Cloudflare answers it.
    status, answer = cf(lab, "GET", "/zones?name=mail.example.net&per_page=1")
    assert status == 200 and answer["result"] == []


def test_records_created_and_deleted_through_the_api_are_in_dns(lab):
    zone = zone_of(lab, "example.net")
    name, content = "_acme-challenge.api-probe.example.net", "probe-" + str(time.time_ns())
    status, answer = cf(lab, "POST", f"/zones/{zone}/dns_records",
                        body={"type": "TXT", "name": name, "content": content, "ttl": 120})
    assert status == 200 and answer["success"], answer
    created = answer["result"]
    assert lab.dns_txt(name, from_host="peer") == [[content]]

    # Found again by type, name and content (how certbot's plugin finds what to delete), same id.
    status, answer = cf(lab, "GET", f"/zones/{zone}/dns_records?type=TXT&name={name}&content={content}&per_page=1")
    assert status == 200 and [r["id"] for r in answer["result"]] == [created["id"]]
    # The same record again: Cloudflare refuses it.
    status, answer = cf(lab, "POST", f"/zones/{zone}/dns_records",
                        body={"type": "TXT", "name": name, "content": content, "ttl": 120})
    assert status == 400 and answer["errors"][0]["code"] == 81058

    status, answer = cf(lab, "DELETE", f"/zones/{zone}/dns_records/{created['id']}")
    assert status == 200 and answer["result"] == {"id": created["id"]}
    assert lab.dns_txt(name, from_host="peer") == []
    status, answer = cf(lab, "DELETE", f"/zones/{zone}/dns_records/{created['id']}")
    assert status == 404 and answer["errors"][0]["code"] == 81044


def test_wrong_or_missing_token_gets_cloudflares_errors(lab):
    status, answer = cf(lab, "GET", "/zones?name=example.net", token="not-the-lab-token")
    assert (status, answer["success"]) == (403, False)
    assert answer["errors"] == [{"code": 9109, "message": "Invalid access token"}]
    status, answer = cf(lab, "GET", "/zones?name=example.net", token=None)
    assert status == 400 and answer["errors"][0]["code"] == 9106
    zone = zone_of(lab, "example.net")
    status, answer = cf(lab, "POST", f"/zones/{zone}/dns_records", token="not-the-lab-token",
                        body={"type": "TXT", "name": "refused.example.net", "content": "x", "ttl": 120})
    assert status == 403
    assert lab.dns_txt("refused.example.net") == []


def test_call_log_records_calls_but_never_the_token(lab):
    cf(lab, "GET", "/zones?name=example.org")
    calls = [json.loads(line) for line in lab.cfapi_call_log.read_text().splitlines()]
    assert calls[-1]["method"] == "GET" and calls[-1]["path"] == "/client/v4/zones"
    assert calls[-1]["query"]["name"] == "example.org" and calls[-1]["status"] == 200
    assert ACME_CLOUDFLARE_TOKEN not in lab.cfapi_call_log.read_text()


# --- certbot on mx, as the program's ACME unit drives it ------------------------------------------------------


@pytest.fixture(scope="module")
def certbot(lab):
    """certbot and its Cloudflare plugin on mx (Debian's, through the lab's apt relay), and a work dir."""
    started = time.monotonic()
    lab.ssh(f"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
            f"{CERTBOT_PACKAGES}", timeout=900)
    print(f"\ncertbot install on mx: {time.monotonic() - started:.1f}s")
    lab.ssh(f"rm -rf {WORK} && install -d -m 700 {WORK}")
    yield
    lab.ssh(f"rm -rf {WORK}")


def write_credentials(lab, path: str, token: str) -> None:
    """The plugin's INI, written from stdin (the token is never on a command line), 0600."""
    lab.ssh(f"umask 077 && cat > {path}", stdin=f"dns_cloudflare_api_token = {token}\n")


def make_csr(lab, name: str, tag: str) -> None:
    """A key and a CSR for `name` on mx, as the unit makes them (the key stays where it is)."""
    lab.ssh(f"cd {WORK} && openssl req -new -newkey rsa:2048 -nodes -keyout {tag}.key -out {tag}.csr "
            f"-subj /CN={name} -addext subjectAltName=DNS:{name} 2>/dev/null && chmod 600 {tag}.key")


def run_certbot(lab, tag: str, credentials: str, account: str = "") -> tuple[subprocess.CompletedProcess, float]:
    """certbot --csr for {tag}.csr; `account` names its ACME account's directories (default: the tag's)."""
    account = account or tag
    argv = ["certbot", "certonly", "--non-interactive", "--agree-tos", "--email", "postmaster@example.net",
            "--server", lab.acme_directory,
            # Each run its own ACME account: nothing one run validated helps another.
            "--config-dir", f"{WORK}/certbot-{account}/config", "--work-dir", f"{WORK}/certbot-{account}/work",
            "--logs-dir", f"{WORK}/certbot-{account}/logs",
            "--authenticator", "dns-cloudflare", "--dns-cloudflare-credentials", credentials,
            "--dns-cloudflare-propagation-seconds", "0",
            "--csr", f"{WORK}/{tag}.csr", "--cert-path", f"{WORK}/{tag}.cert.pem",
            "--fullchain-path", f"{WORK}/{tag}.fullchain.pem", "--chain-path", f"{WORK}/{tag}.chain.pem"]
    started = time.monotonic()
    result = lab.ssh(shlex.join(argv), check=False, timeout=300)
    return result, time.monotonic() - started


def openssl_verify(roots: Path, fullchain: Path, name: str) -> subprocess.CompletedProcess:
    """The machine's openssl: the chain up to one of Pebble's roots, for `name`, as a TLS server."""
    return subprocess.run(["openssl", "verify", "-CAfile", str(roots), "-untrusted", str(fullchain),
                           "-purpose", "sslserver", "-verify_hostname", name, str(fullchain)],
                          capture_output=True, text=True)


def test_certbot_gets_a_certificate_for_the_csr_key_through_the_stand_in(lab, certbot, tmp_path):
    write_credentials(lab, f"{WORK}/cloudflare.ini", ACME_CLOUDFLARE_TOKEN)
    make_csr(lab, HOSTNAME, "mail")
    calls_before = len(lab.cfapi_call_log.read_text().splitlines())
    result, seconds = run_certbot(lab, "mail", f"{WORK}/cloudflare.ini")
    print(f"\ncertbot certonly (account, order, DNS-01 through the stand-in): {seconds:.1f}s")
    assert result.returncode == 0, result.stdout + result.stderr

    fullchain = tmp_path / "fullchain.pem"
    fullchain.write_text(lab.ssh(f"cat {WORK}/mail.fullchain.pem").stdout)
    assert fullchain.read_text().count("BEGIN CERTIFICATE") >= 2  # the host's and Pebble's intermediate
    verified = openssl_verify(lab.ca_root_file, fullchain, HOSTNAME)
    assert verified.returncode == 0 and verified.stdout.strip().endswith("OK"), verified.stdout + verified.stderr
    # Not for another name.
    assert openssl_verify(lab.ca_root_file, fullchain, "mail.example.com").returncode != 0
    # The certificate is for the key of the CSR: the key never left mx's own files.
    keys = lab.ssh(f"cd {WORK} && openssl x509 -in mail.cert.pem -noout -pubkey && "
                   "openssl pkey -in mail.key -pubout").stdout
    cert_key, own_key = keys.split("-----END PUBLIC KEY-----")[:2]
    assert cert_key.strip() == own_key.strip()

    # The challenge went through the API: published, then deleted; and DNS holds nothing of it now.
    calls = [json.loads(line) for line in lab.cfapi_call_log.read_text().splitlines()[calls_before:]]
    assert [c["method"] for c in calls if c["path"].endswith("/dns_records")].count("POST") == 1
    assert any(c["method"] == "DELETE" and c["status"] == 200 for c in calls)
    assert lab.dns_txt(f"_acme-challenge.{HOSTNAME}") == []


def test_a_second_order_is_validated_through_dns_again(lab, certbot):
    # The same key and name as above, but a new ACME account: the first account holds a valid
    # authorization for the name, and Pebble reuses one now and then even at PEBBLE_AUTHZREUSE=0
    # (acmeserver.py). A new account has none, so this order is proven to go through the stand-in
    # and Pebble's DNS check again (and the first order's cleanup left nothing in the way).
    # certbot --csr never overwrites its output paths (FileExistsError): they must be new (stage) paths.
    lab.ssh(f"cd {WORK} && rm -f mail.cert.pem mail.fullchain.pem mail.chain.pem")
    calls_before = len(lab.cfapi_call_log.read_text().splitlines())
    result, _ = run_certbot(lab, "mail", f"{WORK}/cloudflare.ini", account="mail-again")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [json.loads(line) for line in lab.cfapi_call_log.read_text().splitlines()[calls_before:]]
    assert [c["method"] for c in calls if c["path"].endswith("/dns_records")].count("POST") == 1


def test_certbot_with_a_wrong_token_fails_with_cloudflares_error(lab, certbot):
    write_credentials(lab, f"{WORK}/wrong.ini", "not-the-lab-token")
    make_csr(lab, HOSTNAME, "wrong")
    result, _ = run_certbot(lab, "wrong", f"{WORK}/wrong.ini")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "9109 Invalid access token" in output, output
    assert lab.ssh(f"test -e {WORK}/wrong.cert.pem", check=False).returncode != 0
    assert lab.dns_txt(f"_acme-challenge.{HOSTNAME}") == []
    assert "not-the-lab-token" not in lab.cfapi_call_log.read_text()


# --- acme_down / acme_up ----------------------------------------------------------------------------------------


def test_acme_down_makes_pebble_unreachable_and_acme_up_brings_the_same_pebble_back(lab):
    roots = lab.ca_root_file.read_text()
    pebble = lab.pids["pebble"]
    lab.acme_down()
    try:
        probe = lab.ssh(f"python3 -c \"import urllib.request; urllib.request.urlopen({lab.acme_directory!r}, "
                        "timeout=5)\"", check=False, timeout=60)
        assert probe.returncode != 0
        assert not lab.can_connect("peer", lab.acme.ipv6, ACME_PORT, timeout=2.0)
    finally:
        lab.acme_up()
    assert lab.can_connect("admin", lab.acme.ipv6, ACME_PORT)
    assert lab.ssh("python3", stdin=f"import urllib.request\nurllib.request.urlopen({lab.acme_directory!r}, "
                   "timeout=10)\nprint('ok')\n").stdout.strip() == "ok"
    # The same process, so the same root: certificates issued before stay valid under pebble-roots.pem.
    assert lab.pids["pebble"] == pebble and Path(f"/proc/{pebble}").exists()
    assert lab._fetch_pebble_root() and lab.ca_root_file.read_text() == roots
