"""The rendered nginx config, judged by nginx itself: `nginx -t`, and a real nginx serving it.

The host level (conf.d/mailstack.conf: the default server that refuses
unknown names) and domains' server blocks are written over a copy of this
machine's Debian /etc/nginx, as the units stage them, and the units' own check
(components/services/web.py CHECKS) runs on that stage. Then an nginx started
on loopback with the same files serves the policy to a client that trusts
the test's CA, as a sending MTA fetches it (RFC 8461 3.3).
"""

from __future__ import annotations

import datetime
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.config import load_config
from components.hostfacts import HostFacts
from components.records import domain_mta_sts_policy
from components.services import web

pytestmark = [
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is missing (scripts/setup installs nginx-light)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="nginx -t opens its log files as root"),
]

HOST = {"mailstack:hostname": "mail.example.net", "mailstack:ipv4": ["192.0.2.10"], "mailstack:ipv6": ["2001:db8::10"],
        "mailstack:postmaster_address": "alice@example.com"}
FACTS = HostFacts("mailstack/host-mail", "mail.example.net", ["192.0.2.10", "2001:db8::10"], tls="acme")


def domain(name: str, **settings):
    return load_config({"mailstack:domain": name, "mailstack:host_stack": "host-mail",
                        "mailstack:users": [{"name": "alice"}], **{f"mailstack:{k}": v for k, v in settings.items()}})


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = folder / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_lineage(folder: Path, ca, names: list[str]) -> tuple[Path, Path]:
    """key.pem and fullchain.pem for `names`, as mailstack-tls leaves them."""
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    key_path, chain_path = folder / "key.pem", folder / "fullchain.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    chain_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM))
    return key_path, chain_path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def stage(tmp_path: Path, domains: list, facts: HostFacts = FACTS, host=None) -> Path:
    """/etc/nginx of this machine (Debian's) with the rendered files over it, under STAGE; the lineages made.

    The server blocks name the lineages' and policies' live paths
    (/etc/mailstack/...): here they point under the test's folder instead.
    """
    root = tmp_path / "stage"
    shutil.copytree("/etc/nginx", root / "etc/nginx", symlinks=True)
    ca = make_ca(tmp_path)
    files = web.host_files(host or load_config(HOST))
    for cfg in domains:
        make_lineage(tmp_path / f"etc/mailstack/tls/mta-sts.{cfg.domain}", ca, [f"mta-sts.{cfg.domain}"])
        files += web.domain_files(cfg, facts)
        if cfg.autoconfig:
            make_lineage(tmp_path / f"etc/mailstack/tls/autoconfig.{cfg.domain}", ca, [f"autoconfig.{cfg.domain}"])
            files += web.autoconfig_files(cfg, facts)
    for file in files:
        write(root / file.path.lstrip("/"), file.content.replace("/etc/mailstack/", f"{tmp_path}/etc/mailstack/"))
    return root


def check(root: Path, addresses: tuple[str, ...] = ("192.0.2.10", "2001:db8::10")) -> subprocess.CompletedProcess:
    """The units' own check (web.CHECKS), on the stage, in a network namespace holding the host's addresses.

    nginx -t opens the listening sockets it would serve (a running nginx on
    them is no obstacle): on the host its addresses are there, as here.
    """
    (command,) = [c for _, c in web.CHECKS]
    setup = ["ip link set lo up"] + [
        f"ip addr add {a}/32 dev lo" if "." in a else f"ip addr add {a}/128 dev lo nodad" for a in addresses]
    script = "set -euo pipefail\n" + "\n".join(setup) + "\n" + command
    return subprocess.run(["unshare", "-n", "bash", "-c", script], env={**os.environ, "STAGE": str(root)},
                          capture_output=True, text=True)


def test_nginx_accepts_the_host_level_config_and_two_domains_blocks(tmp_path):
    root = stage(tmp_path, [domain("example.com"), domain("example.org", mta_sts_mode="enforce")])
    result = check(root)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # Each domain's two server blocks: its MTA-STS policy host and its autoconfig host.
    assert sorted(p.name for p in (root / "etc/nginx/mailstack").iterdir()) == [
        "example.com.autoconfig.conf", "example.com.conf", "example.org.autoconfig.conf", "example.org.conf"]
    # The check read a retargeted copy; the staged files (those swapped in) name the live folders.
    assert "include /etc/nginx/mailstack/*.conf;" in (root / "etc/nginx/conf.d/mailstack.conf").read_text()


def test_nginx_accepts_the_host_level_config_alone_and_an_ipv4_only_host(tmp_path):
    host = load_config({**HOST, "mailstack:ipv6": []})
    facts = HostFacts("mailstack/host-mail", "mail.example.net", ["192.0.2.10"], tls="acme")
    assert check(stage(tmp_path / "alone", [])).returncode == 0
    result = check(stage(tmp_path / "v4", [domain("example.com")], facts, host), ("192.0.2.10",))
    assert result.returncode == 0, result.stderr


def test_a_broken_server_block_is_refused_with_nginx_s_message(tmp_path):
    root = stage(tmp_path, [domain("example.com")])
    block = root / "etc/nginx/mailstack/example.com.conf"
    block.write_text(block.read_text().replace("ssl_certificate_key", "ssl_certificate_kee"))
    result = check(root)
    assert result.returncode == 1
    assert 'unknown directive "ssl_certificate_kee"' in result.stderr and "example.com.conf" in result.stderr


def test_a_block_naming_a_missing_certificate_is_refused(tmp_path):
    root = stage(tmp_path, [domain("example.com")])
    (tmp_path / "etc/mailstack/tls/mta-sts.example.com/fullchain.pem").unlink()
    result = check(root)
    assert result.returncode == 1 and "fullchain.pem" in result.stderr


# --- a real nginx serving the rendered files ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """nginx on 127.0.0.1 with the host-level config and example.com's block; yields (port, CA file)."""
    port = _free_port()
    facts = HostFacts("mailstack/host-mail", "mail.example.net", ["127.0.0.1"], tls="acme")
    ca = make_ca(tmp_path)
    cfg = domain("example.com")
    make_lineage(tmp_path / "etc/mailstack/tls/mta-sts.example.com", ca, ["mta-sts.example.com"])
    make_lineage(tmp_path / "etc/mailstack/tls/autoconfig.example.com", ca, ["autoconfig.example.com"])
    files = web.domain_files(cfg, facts) + web.autoconfig_files(cfg, facts)
    # The host level for a host on loopback (which the config model refuses as a host address).
    level = web.render_template("web/mailstack.conf.j2", host_name="mail.example.net", listen=web.listen(["127.0.0.1"]),
                                sites_dir=web.SITES_DIR)
    files.append(web.HostFile(web.CONF, level))
    conf_root = tmp_path / "nginx"
    for file in files:
        text = (file.content.replace("/etc/mailstack/", f"{tmp_path}/etc/mailstack/")
                .replace(web.SITES_DIR, f"{conf_root}/mailstack").replace(":443", f":{port}"))
        inside = file.path.startswith("/etc/nginx/")
        target = conf_root / file.path.removeprefix("/etc/nginx/") if inside else tmp_path / file.path.lstrip("/")
        write(target, text)
    write(conf_root / "nginx.conf", f"""
user root;
pid {tmp_path}/nginx.pid;
error_log stderr;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    include {conf_root}/conf.d/mailstack.conf;
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf_root / "nginx.conf"), "-g", "daemon off;"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while True:  # ready when it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"nginx did not start: {proc.stderr.read()}")
            time.sleep(0.05)
    try:
        yield port, ca[2]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(port: int, ca_file: Path, path: str, name: str = "mta-sts.example.com") -> tuple[int, str, str]:
    """GET https://NAME/PATH from the nginx on loopback, as a sender would (SNI and certificate for NAME)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            reply = http.client.HTTPResponse(tls)
            reply.begin()
            return reply.status, reply.headers.get_content_type(), reply.read().decode()


def test_the_policy_is_served_as_text_plain_and_nothing_else(served):
    port, ca_file = served
    assert _get(port, ca_file, "/.well-known/mta-sts.txt") == (
        200, "text/plain", domain_mta_sts_policy(domain("example.com"), FACTS))
    for other in ("/", "/.well-known/mta-sts.txt.bak", "/.well-known/"):
        assert _get(port, ca_file, other)[0] == 404, other


def test_the_autoconfig_file_is_served_at_both_paths_as_xml_naming_the_hosts_ports(served):
    port, ca_file = served
    expected = web.autoconfig_xml(domain("example.com"), FACTS)
    for path in web.AUTOCONFIG_PATHS:
        # Thunderbird adds ?emailaddress=...; the file is the same.
        status, kind, body = _get(port, ca_file, f"{path}?emailaddress=alice%40example.com", name="autoconfig.example.com")
        assert (status, kind, body) == (200, "application/xml", expected), path
    provider = ET.fromstring(expected).find("emailProvider")
    assert provider.get("id") == "example.com" and provider.findtext("domain") == "example.com"
    servers = [(s.tag, s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"),
                s.findtext("username"), s.findtext("authentication")) for s in provider]
    servers = [s for s in servers if s[0] in ("incomingServer", "outgoingServer")]
    assert servers == [
        ("incomingServer", "imap", "mail.example.net", "993", "SSL", "%EMAILADDRESS%", "password-cleartext"),
        ("incomingServer", "imap", "mail.example.net", "143", "STARTTLS", "%EMAILADDRESS%", "password-cleartext"),
        ("outgoingServer", "smtp", "mail.example.net", "587", "STARTTLS", "%EMAILADDRESS%", "password-cleartext"),
    ]
    for other in ("/", "/mail/", "/.well-known/mta-sts.txt"):
        assert _get(port, ca_file, other, name="autoconfig.example.com")[0] == 404, other


def test_an_unknown_name_gets_no_certificate(served):
    port, ca_file = served
    with pytest.raises(ssl.SSLError) as err:
        _get(port, ca_file, "/.well-known/mta-sts.txt", name="www.example.com")
    assert "UNRECOGNIZED_NAME" in str(err.value).upper()


# --- the units' scripts ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is missing (scripts/setup installs it)")
@pytest.mark.parametrize("ssh_user", ["root", "deploy"])
def test_the_units_scripts_pass_shellcheck(tmp_path, ssh_user):
    import shlex

    from components import units

    facts = HostFacts("mailstack/host-mail", "mail.example.net", ["192.0.2.10", "2001:db8::10"], ssh_user, "acme")
    cfg = domain("example.com")
    scripts = {"web": units.web_unit(load_config({**HOST, "mailstack:ssh_user": ssh_user}), "mailstack/host-mail").stdin}
    for site in web.SITES:
        scripts[site.name] = units.site_unit(cfg, "mailstack/example.com", facts, site).stdin
        scripts[f"{site.name}-remove"] = shlex.split(
            units.site_remove_command(cfg, "mailstack/example.com", facts, site))[-1]
    for name, script in scripts.items():
        path = tmp_path / name
        path.write_text(script)
        result = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stdout}"


def test_verify_fetches_the_served_policy_and_judges_it_as_a_sender_would(served):
    from components import verify
    from components.verify_net import fetch_policy

    port, ca_file = served
    cfg = domain("example.com")
    facts = HostFacts("mailstack/host-mail", "mail.example.net", ["127.0.0.1"], tls="acme")
    fetch = fetch_policy("mta-sts.example.com", ["127.0.0.1"], timeout=5, ca_file=str(ca_file), port=port)
    result = verify.check_mta_sts_policy(cfg, facts, fetch)
    assert result.status == verify.PASS, result
    # Without the test CA (the system's trust store): the certificate does not verify, senders ignore the policy.
    untrusted = verify.check_mta_sts_policy(cfg, facts, fetch_policy("mta-sts.example.com", ["127.0.0.1"], 5,
                                                                     None, port))
    assert untrusted.status == verify.FAIL and "does not verify" in untrusted.reason
