"""The MTA-STS policy host on the lab's mx: the host's web unit and a domain's mta-sts unit, run for real.

The units' own scripts (components/units.py) go to mx over SSH as a
deployment sends them: nginx-light installed from Debian by the web unit,
its default server refusing unknown names, a domain's policy served at
https://mta-sts.<domain>/.well-known/mta-sts.txt to the peer, a new mode
swapped in with a reload (the master process stays), and the delete
command taking it all away again.

The certificates come from a stand-in for the host's `mailstack-tls`
(ISSUER below: the same `issue`/`remove` interface, a test CA instead of
ACME), installed only on the lab's mx and removed after the module; the
ACME path itself is tests/e2e/test_tls.py's. The stacks' own `pulumi up`
runs these units once the host stack's tls is acme.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components import units
from components.config import load_config
from components.services import web
from components.stackfile import host_facts

from .stack import HOST_STACK, HOSTNAME, domain_config, host_config

DOMAIN = "example.com"
OWNER = f"mailstack/{DOMAIN}"
HOST_OWNER = f"mailstack/{HOST_STACK}"
CA_DIR = "/root/mailstack-test-ca"

# `mailstack-tls issue LINEAGE KEY FULLCHAIN NAME...` and `remove LINEAGE`, with a test CA:
# the key is made once and kept; the certificate is signed for exactly NAME...
ISSUER = f"""#!/bin/bash
set -euo pipefail
echo "$*" >>{CA_DIR}/calls.log
case "$1" in
  issue)
    lineage=$2 key=$3 chain=$4; shift 4
    install -d -m 0700 "$(dirname "$key")" "$(dirname "$chain")"
    [ -s "$key" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key" 2>/dev/null
    san=$(printf 'DNS:%s,' "$@"); san=${{san%,}}
    openssl req -new -key "$key" -subj "/CN=$1" -addext "subjectAltName=$san" -out "$chain.csr" 2>/dev/null
    openssl x509 -req -in "$chain.csr" -CA {CA_DIR}/ca.pem -CAkey {CA_DIR}/ca.key -CAcreateserial -days 2 \\
      -copy_extensions copyall -out "$chain.new" 2>/dev/null
    cat {CA_DIR}/ca.pem >>"$chain.new"
    mv -f "$chain.new" "$chain"; rm -f "$chain.csr"
    mkdir -p /etc/mailstack/tls/lineages; echo "key=$key" >/etc/mailstack/tls/lineages/$lineage.conf ;;
  remove)
    rm -rf "/etc/mailstack/tls/$2" "/etc/mailstack/tls/lineages/$2.conf" ;;
esac
"""

# Run on peer: verify's own fetch and judge of the policy, trusting the test CA.
_FETCH = """
import json, sys
from dataclasses import asdict
from components import verify
from components.config import load_config
from components.hostfacts import HostFacts
from components.verify_net import fetch_policy
values, facts, address, ca = json.loads(sys.argv[1])
cfg, facts = load_config(values), HostFacts(**facts)
fetch = fetch_policy("mta-sts." + cfg.domain, [address], 10, ca)
print(json.dumps({"fetch": asdict(fetch), "result": asdict(verify.check_mta_sts_policy(cfg, facts, fetch))}))
"""


def _ca(folder: Path) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailstack e2e test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "ca.pem").write_bytes(pem)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem, key_pem


@pytest.fixture(scope="module")
def host_cfg(lab):
    return load_config(host_config(lab))


@pytest.fixture(scope="module")
def facts(host_cfg):
    from dataclasses import replace

    return replace(host_facts(HOST_STACK, host_cfg), tls="acme")


@pytest.fixture(scope="module")
def ca_file(lab, deployment, tmp_path_factory):
    """The test CA: its certificate here (for the peer), its key and the stand-in issuer on mx."""
    folder = tmp_path_factory.mktemp("mta-sts-ca")
    pem, key = _ca(folder)
    lab.ssh(f"install -d -m 0700 {CA_DIR} && cat >{CA_DIR}/ca.pem", stdin=pem.decode())
    lab.ssh(f"umask 077 && cat >{CA_DIR}/ca.key", stdin=key.decode())
    lab.ssh(f"cat >{web.TLS_TOOL} && chmod 0755 {web.TLS_TOOL}", stdin=ISSUER)
    yield folder / "ca.pem"
    lab.ssh(f"rm -rf {CA_DIR} {web.TLS_TOOL}", check=False)


def run_unit(lab, unit: units.Unit, check: bool = True):
    return lab.ssh(unit.command, stdin=unit.stdin, check=check)


def nginx_master(lab) -> int:
    return int(lab.ssh("cat /run/nginx.pid").stdout.strip())


def fetch(lab, cfg_values: dict, facts, address: str, ca_file: Path) -> dict:
    facts_json = {"host_id": facts.host_id, "hostname": facts.hostname, "addresses": facts.addresses,
                  "ssh_user": facts.ssh_user, "tls": facts.tls}
    out = lab.run_python("peer", ["-c", _FETCH, json.dumps([cfg_values, facts_json, address, str(ca_file)])]).stdout
    return json.loads(out)


def handshake(lab, address: str, name: str, ca_file: Path) -> str:
    """'ok', or the TLS error, of a handshake from peer to address:443 naming `name`."""
    code = ("import socket, ssl, sys\n"
            "ctx = ssl.create_default_context(cafile=sys.argv[3])\n"
            "try:\n"
            "    with socket.create_connection((sys.argv[1], 443), timeout=5) as s:\n"
            "        with ctx.wrap_socket(s, server_hostname=sys.argv[2]): print('ok')\n"
            "except (OSError, ssl.SSLError) as e: print(type(e).__name__, e)\n")
    return lab.run_python("peer", ["-c", code, address, name, str(ca_file)]).stdout.strip()


def test_the_web_unit_installs_nginx_whose_default_server_refuses_unknown_names(lab, deployment, host_cfg, ca_file):
    result = run_unit(lab, units.web_unit(host_cfg, HOST_OWNER))
    assert "installing: nginx-light" in result.stderr, result.stderr
    # Started by the unit, or by the package's own postinst (where an init system runs) and then reloaded.
    assert "started nginx" in result.stderr or "reloaded nginx" in result.stderr, result.stderr
    assert lab.ssh("kill -0 \"$(cat /run/nginx.pid)\"", check=False).returncode == 0
    assert lab.ssh("cat /etc/mailstack/nginx").stdout.startswith("nginx installed by mailstack")
    assert lab.ssh("ls /etc/nginx/sites-enabled").stdout.strip() == ""  # Debian's default site is off
    for address in (lab.mx.ipv4, lab.mx.ipv6):
        assert "UNRECOGNIZED_NAME" in handshake(lab, address, "www.example.com", ca_file).upper()
    # Again: nothing changes, nothing is reloaded.
    master = nginx_master(lab)
    again = run_unit(lab, units.web_unit(host_cfg, HOST_OWNER))
    assert "reloaded" not in again.stderr and "installing" not in again.stderr
    assert nginx_master(lab) == master


def test_the_domains_policy_is_served_to_senders_on_both_addresses(lab, deployment, host_cfg, facts, ca_file):
    values = domain_config(lab, DOMAIN)
    result = run_unit(lab, units.mta_sts_unit(load_config(values), OWNER, facts))
    assert "updated /etc/nginx/mailstack/example.com.conf" in result.stderr, result.stderr
    issued = lab.ssh(f"cat {CA_DIR}/calls.log").stdout.splitlines()
    assert issued[-1] == ("issue mta-sts.example.com /etc/mailstack/tls/mta-sts.example.com/key.pem "
                          "/etc/mailstack/tls/mta-sts.example.com/fullchain.pem mta-sts.example.com")
    for address in (lab.mx.ipv4, lab.mx.ipv6):
        seen = fetch(lab, values, facts, address, ca_file)
        assert seen["result"]["status"] == "pass", seen
        assert seen["fetch"]["body"] == f"version: STSv1\nmode: testing\nmx: {HOSTNAME}\nmax_age: 604800\n"
    other = lab.run_python("peer", ["-c", (
        "import socket, ssl, sys, http.client\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
        "s = ctx.wrap_socket(socket.create_connection((sys.argv[1], 443), timeout=5), server_hostname='mta-sts.example.com')\n"
        "s.sendall(b'GET /index.html HTTP/1.1\\r\\nHost: mta-sts.example.com\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "r = http.client.HTTPResponse(s); r.begin(); print(r.status)\n"), lab.mx.ipv4, str(ca_file)]).stdout.strip()
    assert other == "404"


def test_a_new_mode_is_served_after_a_reload_not_a_restart(lab, deployment, facts, ca_file):
    master = nginx_master(lab)
    values = domain_config(lab, DOMAIN, mta_sts_mode="enforce")
    result = run_unit(lab, units.mta_sts_unit(load_config(values), OWNER, facts))
    assert "reloaded nginx" in result.stderr, result.stderr
    assert nginx_master(lab) == master
    seen = fetch(lab, values, facts, lab.mx.ipv4, ca_file)
    assert seen["result"]["status"] == "pass" and "mode: enforce\n" in seen["fetch"]["body"], seen


def test_an_nginx_mailstack_did_not_install_is_left_alone(lab, deployment, host_cfg):
    lab.ssh("mv /etc/mailstack/nginx /etc/mailstack/nginx.test-away")
    try:
        before = lab.ssh("md5sum /etc/nginx/conf.d/mailstack.conf").stdout
        result = run_unit(lab, units.web_unit(host_cfg, HOST_OWNER), check=False)
        assert result.returncode == 1
        assert "nginx is installed on mail.example.net, and not by mailstack" in result.stderr
        assert lab.ssh("md5sum /etc/nginx/conf.d/mailstack.conf").stdout == before
    finally:
        lab.ssh("mv /etc/mailstack/nginx.test-away /etc/mailstack/nginx")


def test_the_delete_command_takes_the_policy_host_away(lab, deployment, facts, ca_file):
    master = nginx_master(lab)
    cfg = load_config(domain_config(lab, DOMAIN))
    result = lab.ssh(units.mta_sts_remove_command(cfg, OWNER, facts))
    assert "no MTA-STS policy served any more" in result.stderr, result.stderr
    assert "UNRECOGNIZED_NAME" in handshake(lab, lab.mx.ipv4, "mta-sts.example.com", ca_file).upper()
    assert lab.ssh("ls /etc/mailstack/domains/example.com").stdout.split().count("mta-sts.txt") == 0
    assert lab.ssh(f"tail -1 {CA_DIR}/calls.log").stdout.strip() == "remove mta-sts.example.com"
    assert nginx_master(lab) == master
    # The domain itself is still hosted: its mailbox files stay.
    assert "mailboxes" in lab.ssh("ls /etc/mailstack/domains/example.com").stdout.split()
