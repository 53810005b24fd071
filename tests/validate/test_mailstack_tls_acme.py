"""mailstack-tls against a real ACME server: Debian's Pebble, certbot and its Cloudflare plugin.

Pebble (with pebble-challtestsrv as the DNS it validates against) runs on
loopback; certbot-dns-cloudflare talks to a Cloudflare API stand-in
(tests/validate/fake_cloudflare.py) through python3-cloudflare's
CLOUDFLARE_API_URL. mailstack-tls runs as the host runs it, its folders moved
under the test's own. Skipped where the packages are missing
(apt-get install pebble certbot python3-certbot-dns-cloudflare).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from components import paths
from components.config import load_config
from components.services import tls
from tests.validate.fake_cloudflare import FakeCloudflare

TOKEN = "cfTOKEN_validate_0123456789abcdefABCDEF"
HOST = "mail.example.net"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("pebble", "pebble-challtestsrv", "certbot"))
    or not Path("/usr/lib/python3/dist-packages/certbot_dns_cloudflare").is_dir(),
    reason="pebble, certbot or python3-certbot-dns-cloudflare is not installed",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(argv: list[str], ready: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a server and return once it prints `ready` (its own word that it listens)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen = []
    while True:
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            process.kill()
            raise AssertionError(f"{argv[0]} did not say {ready!r}:\n{''.join(seen)}") from None
        seen.append(line)
        if ready in line:
            return process


@pytest.fixture(scope="module")
def acme(tmp_path_factory):
    """Pebble and its DNS, and the Cloudflare stand-in for example.net: (directory URL, CA bundle, fake, roots)."""
    work = tmp_path_factory.mktemp("pebble")
    # Pebble's own HTTPS certificate (its WFE), which certbot must trust.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem")], check=True, capture_output=True)
    wfe, management, dns, dns_api = (_free_port() for _ in range(4))
    (work / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{wfe}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(work / "cert.pem"), "privateKey": str(work / "key.pem"),
        "httpPort": _free_port(), "tlsPort": _free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    challtestsrv = _start(["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-management", f"127.0.0.1:{dns_api}",
                           "-http01", "", "-https01", "", "-tlsalpn01", ""], "Starting management server")
    pebble = _start(["pebble", "-config", str(work / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
                    "ACME directory available",
                    # AUTHZREUSE=0: every order is challenged (Pebble reuses half of valid authorizations
                    # by default, which would let a renewal with a refused token pass by chance).
                    env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                         "PEBBLE_AUTHZREUSE": "0"})
    try:
        context = ssl.create_default_context(cafile=str(work / "cert.pem"))
        # Pebble says its directory is up before its management API may listen: ask until it answers.
        for attempt in range(50):
            try:
                roots = urllib.request.urlopen(f"https://127.0.0.1:{management}/roots/0", context=context).read()
                break
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.2)
        (work / "roots.pem").write_bytes(roots)
        with FakeCloudflare(TOKEN, ["example.net"], f"http://127.0.0.1:{dns_api}") as fake:
            yield f"https://127.0.0.1:{wfe}/dir", work / "cert.pem", fake, work / "roots.pem"
    finally:
        for process in (pebble, challtestsrv):
            process.terminate()
            process.wait(10)


class Host:
    """mailstack-tls with its settings, its folders under `root`, certbot pointed at the stand-ins."""

    def __init__(self, root: Path, acme):
        directory, wfe_cert, fake, _ = acme
        self.root, self.fake = root, fake
        cfg = load_config({"mailstack:hostname": HOST, "mailstack:ipv4": ["192.0.2.10"],
                           "mailstack:postmaster_address": "alice@example.com", "mailstack:tls": "acme",
                           "mailstack:acme_cloudflare_token": TOKEN, "mailstack:acme_directory": directory,
                           "mailstack:acme_propagation_seconds": 0})
        self.tool = root / "mailstack-tls"
        self.tool.write_text(self.moved(tls.mailstack_tls_script()))
        self.tool.chmod(0o755)
        self.tls_dir = Path(self.moved(paths.TLS_DIR))
        self.tls_dir.mkdir(parents=True)
        (self.tls_dir / "acme.conf").write_text(tls.acme_conf(cfg))
        self.token(TOKEN)
        self.key, self.cert = root / "ssl/private/host.key", root / "ssl/host.pem"
        # No daemon here to reload; python3-cloudflare's API base and Pebble's HTTPS CA as the lab sets them.
        self.env = {**os.environ, "CLOUDFLARE_API_URL": fake.url, "REQUESTS_CA_BUNDLE": str(wfe_cert),
                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def moved(self, text: str) -> str:
        for path in (paths.TLS_DIR, "/var/lib/mailstack"):
            text = text.replace(path, str(self.root / path.lstrip("/")))
        return text

    def token(self, token: str) -> None:
        ini = self.tls_dir / "cloudflare.ini"
        ini.write_text(f"dns_cloudflare_api_token = {token}\n")
        ini.chmod(0o600)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.tool), *args], env=self.env, capture_output=True, text=True, timeout=300)


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout.strip()


def test_issue_renew_and_a_refused_token(tmp_path, acme):
    _, _, fake, roots = acme
    host = Host(tmp_path, acme)
    done = host.run("issue", "host", str(host.key), str(host.cert), HOST)
    assert done.returncode == 0, done.stderr
    # The full chain verifies against Pebble's root, and names the host; the key is ours.
    chain = _openssl("verify", "-CAfile", str(roots), "-untrusted", str(host.cert), str(host.cert))
    assert chain == f"{host.cert}: OK"
    assert f"DNS:{HOST}" in _openssl("x509", "-in", str(host.cert), "-noout", "-ext", "subjectAltName")
    assert _openssl("x509", "-in", str(host.cert), "-noout", "-pubkey") == _openssl("pkey", "-in", str(host.key),
                                                                                   "-pubout")
    # DNS-01 through the API: the record made, then removed; every call with the token.
    assert ("POST", f"/client/v4/zones/{next(iter(fake.zones))}/dns_records", True) in fake.calls
    assert fake.records == {} and all(authorised for _, _, authorised in fake.calls)
    assert host.run("status").stdout.startswith(f"host not_after=")

    # A forced renewal: a new certificate for the same key, by a new challenge.
    posts = sum(method == "POST" for method, _, _ in fake.calls)
    key, serial = host.key.read_bytes(), _openssl("x509", "-in", str(host.cert), "-noout", "-serial")
    renewed = host.run("renew", "--force")
    assert renewed.returncode == 0, renewed.stderr
    assert host.key.read_bytes() == key
    assert _openssl("x509", "-in", str(host.cert), "-noout", "-serial") != serial
    assert sum(method == "POST" for method, _, _ in fake.calls) == posts + 1

    # A token Cloudflare refuses: the renewal fails, says so in one line, and the old certificate stays.
    cert = host.cert.read_bytes()
    host.token("cfTOKEN_revoked_0123456789abcdefABCDEF")
    # Pebble may still hand back a valid authorization without a challenge (some of its versions ignore
    # PEBBLE_AUTHZREUSE); such an attempt never asks Cloudflare, so it proves nothing: try again until the CA
    # challenged, which is the attempt a refused token must fail.
    for _ in range(5):
        calls = len(fake.calls)
        refused = host.run("renew", "--force")
        if refused.returncode != 0 or len(fake.calls) > calls:
            break
        cert = host.cert.read_bytes()
    assert refused.returncode == 1 and host.cert.read_bytes() == cert
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("mailstack-tls: host: certbot failed")]
    assert "cfTOKEN_" not in refused.stderr + line
    assert host.run("status").stdout.rstrip().endswith("last=failed")
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    assert TOKEN not in logs and "cfTOKEN_revoked" not in logs
