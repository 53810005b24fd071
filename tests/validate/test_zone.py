"""The exported zone file, checked by BIND's own `named-checkzone` and parsed back by dnspython."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components import records as rec
from components.check import checkzone_command
from components.config import DomainConfig, HostConfig, load_config
from components.offline import stack_zone

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
STACKS = sorted((FIXTURES / "stacks").glob("Pulumi.*.yaml"))
NAMED_CHECKZONE = shutil.which("named-checkzone")


def stack_config(path: Path):
    return load_config(yaml.safe_load(path.read_text())["config"])


@pytest.fixture(scope="module")
def dkim_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def test_the_example_stacks_exist():
    assert [p.name for p in STACKS] == ["Pulumi.example.com.yaml", "Pulumi.example.org.yaml", "Pulumi.host-mail.yaml"]
    kinds = [type(stack_config(p)) for p in STACKS]
    assert kinds == [DomainConfig, DomainConfig, HostConfig]


@pytest.mark.skipif(NAMED_CHECKZONE is None, reason="named-checkzone not installed (apt-get install bind9utils)")
@pytest.mark.parametrize("stack", STACKS, ids=lambda p: p.stem)
def test_named_checkzone_accepts(stack, dkim_key, tmp_path):
    cfg = stack_config(stack)
    path = tmp_path / f"{cfg.zone_name}.zone"
    # As the offline render writes it: a host's PTRs (outside the zone) become comments.
    path.write_text(stack_zone(cfg, dkim_key, FIXTURES)[1])
    # As `python -m components check` runs it: -i full (MX and NS targets inside the zone must
    # have addresses); -k/-m/-n fail (bad names, MX/NS pointing at CNAMEs or addresses are errors).
    command = checkzone_command(cfg.zone_name, path)
    assert command[:9] == ["named-checkzone", "-i", "full", "-k", "fail", "-m", "fail", "-n", "fail"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{path.read_text()}"
    assert result.stdout.rstrip().endswith("OK"), result.stdout


@pytest.mark.parametrize("stack", STACKS, ids=lambda p: p.stem)
def test_zone_parses_back_to_the_records(stack, dkim_key):
    cfg = stack_config(stack)
    records, text = stack_zone(cfg, dkim_key, FIXTURES)
    zone = dns.zone.from_text(text, origin=cfg.zone_name, relativize=False)

    if isinstance(cfg, DomainConfig):
        dkim = zone.find_rdataset(rec.dkim_name(cfg) + ".", dns.rdatatype.TXT)
        assert [b"".join(r.strings).decode() for r in dkim] == [rec.dkim_value(cfg, dkim_key)]
        assert all(len(s) <= 255 for r in dkim for s in r.strings)
        assert {r.type for r in records} == {"MX", "TXT", "SRV"}  # SRV: RFC 6186, for mail clients
    else:
        # PTRs are in reverse zones: comments here, every other record in the zone.
        assert {r.type for r in records} == {"A", "AAAA", "TXT", "PTR"}
        ptrs = [r for r in records if r.type == "PTR"]
        assert all(f";   {r.name}. IN PTR {r.content}." in text for r in ptrs)
        records = [r for r in records if r.type != "PTR"]

    for record in records:
        rdataset = zone.find_rdataset(record.name + ".", record.type)
        if record.type == "TXT":
            values = {b"".join(r.strings).decode() for r in rdataset}
        elif record.type == "MX":
            values = {(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in rdataset}
            assert (record.priority, record.content) in values
            continue
        elif record.type == "SRV":
            # The target as written: absolute, "." where the service is not offered.
            values = {f"{r.priority} {r.weight} {r.port} {r.target.to_text(omit_final_dot=True) or '.'}"
                      for r in rdataset}
        else:
            values = {r.to_text() for r in rdataset}
        assert record.content in values, (record.key, values)
