"""`python -m components render`: what a reviewer runs without a host or the Pulumi CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
# A project folder whose stacks/ holds the tests' own stack files.
FIXTURES = PROJECT_DIR / "tests" / "fixtures"


def run(*args: str, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "components", *args], cwd=cwd, capture_output=True, text=True)


def test_render_writes_every_host_file_and_the_zone(tmp_path):
    result = run("render", "example.com", "--out", str(tmp_path), "--project", str(FIXTURES))
    assert result.returncode == 0, result.stderr
    for path in [
        "etc/postfix/main.cf",
        "etc/postfix/master.cf",
        "etc/postfix/controlled_auth_senders",
        "etc/postfix/virtual",
        "etc/aliases",
        "etc/opendkim.conf",
        "etc/postfix-policyd-spf-python/policyd-spf.conf",
        "etc/dovecot/conf.d/10-master.conf",
        "etc/dovecot/conf.d/10-mail.conf",
        "etc/dovecot/conf.d/20-lmtp.conf",
        "etc/dovecot/conf.d/10-auth.conf",
        "etc/dovecot/conf.d/90-sieve.conf",
        "etc/dovecot/conf.d/10-ssl.conf",
        "etc/dovecot/sieve/default.sieve",
        "home/alice/.dovecot.sieve",
        "dns/example.com.zone",
    ]:
        assert (tmp_path / path).is_file(), f"{path} was not written"
    assert "message_size_limit = 25000000" in (tmp_path / "etc/postfix/main.cf").read_text()
    assert "bob@example.com alice" in " ".join((tmp_path / "etc/postfix/controlled_auth_senders").read_text().split())
    zone = (tmp_path / "dns/example.com.zone").read_text()
    assert "mail._domainkey" in zone and "PUBLIC-KEY-GENERATED-ON-THE-HOST" in zone
    assert sorted(result.stdout.split()) == sorted(str(p) for p in tmp_path.rglob("*") if p.is_file())


def test_render_takes_a_real_dkim_key(tmp_path):
    key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "A" * 300
    assert run("render", "example.net", "--out", str(tmp_path), "--dkim-key", key, "--project", str(FIXTURES)).returncode == 0
    assert key[:200] in (tmp_path / "dns/example.net.zone").read_text()


def test_bad_stack_file_exits_2_with_the_config_error(tmp_path):
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    config = {"config": {"mailstack:domain": "example.com", "mailstack:hostname": "mail", "mailstack:ipv4": ["192.0.2.10"]}}
    (project / "stacks" / "Pulumi.broken.yaml").write_text(yaml.safe_dump(config))
    result = run("render", "broken", "--out", str(tmp_path / "out"), "--project", str(project))
    assert result.returncode == 2
    assert "mailstack:hostname: 'mail' is not a fully-qualified domain name (expected e.g. mail.example.com)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_stack_names_the_stacks_there(tmp_path):
    result = run("render", "example.org", "--out", str(tmp_path), "--project", str(FIXTURES))
    assert result.returncode == 2
    assert "no stack 'example.org'" in result.stderr and "example.com, example.net" in result.stderr
