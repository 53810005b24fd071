"""The lab's ACME side: a lab CA for the lab's own HTTPS servers, and Pebble as the ACME CA.

- The lab CA (openssl, made per lab run) signs the HTTPS certificates of
  Pebble's ACME endpoint (acme.example.net) and of the Cloudflare API
  stand-in (cfapi.example.net, cfapi.py). mx trusts it as it trusts its
  resolver: it is the lab's "network", not something the program configures.
- Pebble (Debian package `pebble`, Let's Encrypt's small test CA) issues the
  certificates mx asks for over ACME, validating DNS-01 against the lab's
  Knot. It makes a new issuing root every time it starts; the roots are
  fetched from its management port and appended to `pebble-roots.pem`, the
  file people and tests validate mx's certificates with.

Test infrastructure only: no user of mailstack runs any of this.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

ACME_PORT = 14000  # Pebble's ACME endpoint: https://acme.example.net:14000/dir
MANAGEMENT_PORT = 15000  # Pebble's management interface: /roots/0 and friends

# Pebble's knobs (its README): no random sleeps before validating; never
# reject a good nonce (certbot retries a badNonce, but the retries only cost time);
# reuse a valid authorization as rarely as Pebble allows (its default: half the time).
# 0 is not never: Pebble makes a new authorization only when rand.Intn(100) > the
# percentage (wfe.go), so with 0 it still reuses one order in a hundred. A test that
# needs an order validated through DNS uses an ACME account of its own (authorizations
# belong to one account), and does not count on this knob.
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}

# A minimal openssl config: only the extensions asked for, nothing from the system's openssl.cnf.
OPENSSL_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[lab_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $ENV::LAB_SAN
"""


def ensure_pebble() -> None:
    """Install Pebble from Debian if it is missing (scripts/setup installs it too)."""
    if not shutil.which("pebble"):
        from .rootfs import apt_install_on_machine

        apt_install_on_machine("pebble")


def _openssl(args: list[str], conf: Path, san: str = "") -> None:
    env = {"PATH": "/usr/bin:/bin", "OPENSSL_CONF": str(conf), "LAB_SAN": san or "DNS:unused.invalid"}
    subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, env=env)


def make_lab_ca(ca_dir: Path, lab_name: str) -> Path:
    """A fresh CA (EC P-256: quick to make) for this lab run; returns its certificate's path."""
    ca_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.chmod(0o700)
    conf = ca_dir / "openssl.cnf"
    conf.write_text(OPENSSL_CONF)
    _openssl(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(ca_dir / "ca.key"), "-out", str(ca_dir / "ca.pem"), "-days", "30",
              "-subj", f"/O=mailstack lab/CN=mailstack lab CA ({lab_name})", "-extensions", "lab_ca",
              "-config", str(conf)], conf)
    return ca_dir / "ca.pem"


def issue_server_cert(ca_dir: Path, name: str, addresses: list[str]) -> tuple[Path, Path]:
    """A server certificate signed by the lab CA for `name` and its addresses: (cert, key) paths."""
    conf = ca_dir / "openssl.cnf"
    key, csr, cert = ca_dir / f"{name}.key", ca_dir / f"{name}.csr", ca_dir / f"{name}.pem"
    san = ",".join([f"DNS:{name}", *(f"IP:{a}" for a in addresses)])
    _openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", "-config", str(conf)], conf, san)
    _openssl(["x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.pem"), "-CAkey", str(ca_dir / "ca.key"),
              "-set_serial", "0x" + secrets.token_hex(16), "-days", "30",
              "-extfile", str(conf), "-extensions", "server", "-out", str(cert)], conf, san)
    csr.unlink()
    return cert, key


def write_pebble_config(pebble_dir: Path, cert: Path, key: Path) -> Path:
    """Pebble's config: ACME and management endpoints on every address of its host, the lab CA's
    certificate on both; no EAB. httpPort/tlsPort are only for http-01/tls-alpn-01, unused here."""
    pebble_dir.mkdir(parents=True, exist_ok=True)
    config = pebble_dir / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f":{ACME_PORT}",
        "managementListenAddress": f":{MANAGEMENT_PORT}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": 80,
        "tlsPort": 443,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}, indent=2) + "\n")
    return config


def pebble_argv(netns: str, config: Path, dns_server: str) -> list[str]:
    """Pebble in its namespace, resolving (for DNS-01) through the lab's Knot only."""
    return ["ip", "netns", "exec", netns, "pebble", "-config", str(config), "-dnsserver", f"{dns_server}:53"]


# Runs in a lab namespace (`python -c`): Pebble's issuing root, over its management HTTPS port.
FETCH_ROOT = """
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[1])
with urllib.request.urlopen(sys.argv[2], context=context, timeout=5) as reply:
    sys.stdout.write(reply.read().decode())
"""


def root_url(hostname: str, index: int = 0) -> str:
    return f"https://{hostname}:{MANAGEMENT_PORT}/roots/{index}"


def directory_url(hostname: str) -> str:
    return f"https://{hostname}:{ACME_PORT}/dir"
