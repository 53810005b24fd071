"""The world around mx: a peer mail server on the lab's Internet, with proper DNS.

peer.example.net has forward-confirmed reverse DNS, its own MX and SPF
records, and an SMTP server (smtpsink.py) that keeps every message it gets.
That server offers STARTTLS with a certificate made for each lab run
(self-signed), and its DANE record is published beside the others:
`_25._tcp.peer.example.net TLSA 3 1 1 <SHA-256 of the key's SubjectPublicKeyInfo>`
(DANE-EE, RFC 7672): a DANE sender trusts it once example.net is signed
(dnssec.py); an opportunistic one (mx's Postfix) just uses the TLS.

Used by the `world` fixture (conftest.py, which stops the sink at the end of
the session) and by `python -m tests.e2e.lab up` (which leaves it running
until `down`: the lab stops every process in its namespaces).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .lab import Lab

PEER_NAME = "peer.example.net"
PEER_DOMAIN = "example.net"
PEER_TLSA_NAME = f"_25._tcp.{PEER_NAME}"
# The name the sink greets with: not PEER_NAME, which is the peer's own Postfix's
# myhostname (peermta.py): Postfix bounces mail to a server that greets it with
# its own name ("mail for example.net loops back to myself").
SINK_GREETING_NAME = f"sink.{PEER_NAME}"
SINK = Path(__file__).resolve().parent / "smtpsink.py"


@dataclass
class World:
    """What the tests talk to besides mx."""

    sink: Path  # messages the peer's mail server received, one .eml each

    def received(self, since: int = 0, timeout: float = 60, count: int = 1) -> list[str]:
        """Messages the peer got after the first `since`, waiting for `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            files = sorted(self.sink.glob("*.eml"))[since:]
            if len(files) >= count or time.monotonic() > deadline:
                return [f.read_text() for f in files]
            time.sleep(0.5)

    def count(self) -> int:
        return len(list(self.sink.glob("*.eml")))


def publish_peer_dns(lab: Lab) -> None:
    """peer.example.net's A, AAAA, MX, SPF, TLSA and PTR records."""
    peer = lab.hosts["peer"]
    lab.dns_update(PEER_DOMAIN, "peer", "A", 300, peer.ipv4)
    lab.dns_update(PEER_DOMAIN, "peer", "AAAA", 300, peer.ipv6)
    lab.dns_update(PEER_DOMAIN, "@", "MX", 300, f"10 {PEER_NAME}")
    lab.dns_update(PEER_DOMAIN, "@", "TXT", 300, f'"v=spf1 ip4:{peer.ipv4} ip6:{peer.ipv6} -all"')
    publish_peer_tlsa(lab)
    for address, zone in ((peer.ipv4, lab.reverse_zones[0]), (peer.ipv6, lab.reverse_zones[1])):
        lab.dns_update(zone, ipaddress.ip_address(address).reverse_pointer + ".", "PTR", 300, PEER_NAME + ".")


# --- the peer's TLS certificate and its TLSA record --------------------------------------------


def peer_tls_files(lab: Lab) -> tuple[Path, Path]:
    """The peer's certificate and key (PEM), made on first use in this lab run (its run dir)."""
    folder = lab.run_dir / "peer-tls"
    cert, key = folder / "cert.pem", folder / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    folder.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PEER_NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PEER_NAME)]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key_tmp = key.with_suffix(".tmp")
    key_tmp.touch(mode=0o600)
    key_tmp.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    key_tmp.rename(key)
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key


def spki_sha256(cert_file: Path) -> str:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo (DER): the data of a `3 1 1` TLSA."""
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def peer_tlsa(lab: Lab) -> str:
    """The TLSA record that matches the peer's certificate: `3 1 1 <hex>` (DANE-EE, SPKI, SHA-256)."""
    return f"3 1 1 {spki_sha256(peer_tls_files(lab)[0])}"


def publish_peer_tlsa(lab: Lab, content: str | None = None) -> str:
    """Replace the TLSA RRset of _25._tcp.peer.example.net with content (default: the true one); return it.

    A test publishes a wrong one to see a DANE sender refuse the peer, then calls
    this again with no content to put the right one back.
    """
    content = content or peer_tlsa(lab)
    lab.dns_update(PEER_DOMAIN, PEER_TLSA_NAME, "TLSA", 300, content, replace=True)
    return content


# --- the peer's mail server -----------------------------------------------------------------------


def start_peer_sink(lab: Lab, detached: bool = False) -> subprocess.Popen:
    """Start the peer's SMTP sink in the peer namespace; return once it listens.

    It offers STARTTLS with the peer's certificate (peer_tls_files).
    detached=True: in its own session, so that it outlives this process (the
    lab's `down` stops it with everything else in the lab's namespaces).
    """
    peer = lab.hosts["peer"]
    cert, key = peer_tls_files(lab)
    argv = ["ip", "netns", "exec", peer.netns, sys.executable, str(SINK), str(sink_dir(lab)), peer.ipv4, peer.ipv6,
            "--hostname", SINK_GREETING_NAME, "--cert", str(cert), "--key", str(key)]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=detached, cwd="/")
    if process.stdout.readline().strip() != "ready":
        process.kill()
        process.wait()
        raise RuntimeError("the peer's SMTP sink did not start")
    if detached:
        process.stdout.close()  # it prints nothing more
    return process


def sink_dir(lab: Lab) -> Path:
    return lab.run_dir / "peer-mail"


def make_world(lab: Lab, detached: bool = False) -> tuple[World, subprocess.Popen]:
    """Publish the peer's DNS (TLSA too) and start its mail server: the World, and the sink's process."""
    publish_peer_dns(lab)
    process = start_peer_sink(lab, detached=detached)
    return World(sink=sink_dir(lab)), process
