"""`python -m components render`: what a reviewer runs without a host or the Pulumi CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
# A project folder whose stacks/ holds the tests' own stack files.
FIXTURES = PROJECT_DIR / "tests" / "fixtures"


def run(*args: str, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "components", *args], cwd=cwd, capture_output=True, text=True)


def written(result: subprocess.CompletedProcess, out: Path) -> None:
    """The command prints every file it wrote, and only those."""
    assert sorted(result.stdout.split()) == sorted(str(p) for p in out.rglob("*") if p.is_file())


def test_render_of_the_host_stack_writes_every_host_file_and_its_zone(tmp_path):
    result = run("render", "host-mail", "--out", str(tmp_path), "--project", str(FIXTURES))
    assert result.returncode == 0, result.stderr
    for path in [
        "etc/postfix/main.cf",
        "etc/postfix/master.cf",
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
        "dns/example.net.zone",
    ]:
        assert (tmp_path / path).is_file(), f"{path} was not written"
    assert "message_size_limit = 25000000" in (tmp_path / "etc/postfix/main.cf").read_text()
    # No domain's files: those are the domain stacks'.
    assert not (tmp_path / "etc/mailstack").exists() and not (tmp_path / "var/vmail").exists()
    zone = (tmp_path / "dns/example.net.zone").read_text()
    assert "mail.example.net. IN A 192.0.2.10" in zone and "mail.example.net. IN AAAA 2001:db8::10" in zone
    assert 'mail.example.net. IN TXT "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"' in zone
    # PTRs live in reverse zones: listed as comments.
    assert ";   10.2.0.192.in-addr.arpa. IN PTR mail.example.net." in zone
    assert " IN MX " not in zone and "_domainkey" not in zone
    written(result, tmp_path)


def test_render_of_a_domain_stack_writes_its_files_at_their_host_paths_and_its_zone(tmp_path):
    result = run("render", "example.com", "--out", str(tmp_path), "--project", str(FIXTURES))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "etc/mailstack/domains/example.com"
    for name in ("mailboxes", "aliases", "sender_logins", "catch_all", "dkim_selector"):
        assert (folder / name).is_file(), f"{name} was not written"
    lines = lambda name: [l for l in (folder / name).read_text().splitlines() if l and not l.startswith("#")]  # noqa: E731
    assert lines("mailboxes") == ["alice@example.com"]
    assert "bob@example.com alice@example.com" in lines("sender_logins")
    sieve = tmp_path / "var/vmail/example.com/alice/.dovecot.sieve"
    assert "fileinto :create \"System\"" in sieve.read_text() and oct(sieve.stat().st_mode & 0o777) == "0o600"
    # No password hash is rendered (the passwords unit sends them), and nothing of the host's.
    assert not (folder / "passwd").exists() and not (tmp_path / "etc/postfix").exists()
    zone = (tmp_path / "dns/example.com.zone").read_text()
    # MX and SPF name the host of the host stack the domain stack names (its file: Pulumi.host-mail.yaml).
    assert "example.com. IN MX 10 mail.example.net." in zone
    assert 'example.com. IN TXT "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"' in zone
    assert "mail._domainkey" in zone and "PUBLIC-KEY-GENERATED-ON-THE-HOST" in zone
    written(result, tmp_path)


def test_render_takes_a_real_dkim_key(tmp_path):
    key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "A" * 300
    result = run("render", "example.org", "--out", str(tmp_path), "--dkim-key", key, "--project", str(FIXTURES))
    assert result.returncode == 0, result.stderr
    zone = (tmp_path / "dns/example.org.zone").read_text()
    assert key[:200] in zone and "s2026._domainkey.example.org." in zone


def test_a_domain_stack_reads_its_host_from_the_host_stack_file(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / "stacks", project / "stacks")
    host = project / "stacks" / "Pulumi.host-mail.yaml"
    host.write_text(host.read_text().replace("mail.example.net", "mx.example.net").replace("192.0.2.10", "192.0.2.20"))
    result = run("render", "example.com", "--out", str(tmp_path / "out"), "--project", str(project))
    assert result.returncode == 0, result.stderr
    zone = (tmp_path / "out/dns/example.com.zone").read_text()
    assert "IN MX 10 mx.example.net." in zone and "ip4:192.0.2.20 " in zone


def test_a_missing_or_wrong_host_stack_file_names_the_key_and_the_file(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / "stacks", project / "stacks")
    (project / "stacks" / "Pulumi.host-mail.yaml").unlink()
    result = run("render", "example.com", "--out", str(tmp_path / "out"), "--project", str(project))
    assert result.returncode == 2
    assert ("mailstack:host_stack: 'host-mail' names the host stack host-mail, read from "
            "stacks/Pulumi.host-mail.yaml, which does not exist") in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    # A domain stack named as the host stack.
    shutil.copy(project / "stacks" / "Pulumi.example.org.yaml", project / "stacks" / "Pulumi.host-mail.yaml")
    result = run("render", "example.com", "--out", str(tmp_path / "out"), "--project", str(project))
    assert result.returncode == 2 and "which is a domain stack (expected a host stack" in result.stderr
    # A host stack file with a bad value: its own message, under the key that led there.
    (project / "stacks" / "Pulumi.host-mail.yaml").write_text(
        yaml.safe_dump({"config": {"mailstack:hostname": "mail", "mailstack:postmaster_address": "a@example.com"}}))
    result = run("render", "example.com", "--out", str(tmp_path / "out"), "--project", str(project))
    assert result.returncode == 2, result.stderr
    assert "stacks/Pulumi.host-mail.yaml, which is not usable" in result.stderr
    assert "mailstack:hostname: 'mail' is not a fully-qualified domain name" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_stack_file_exits_2_with_the_config_error(tmp_path):
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    config = {"config": {"mailstack:hostname": "mail", "mailstack:ipv4": ["192.0.2.10"]}}
    (project / "stacks" / "Pulumi.broken.yaml").write_text(yaml.safe_dump(config))
    result = run("render", "broken", "--out", str(tmp_path / "out"), "--project", str(project))
    assert result.returncode == 2
    assert "mailstack:hostname: 'mail' is not a fully-qualified domain name (expected e.g. mail.example.com)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_stack_names_the_stacks_there(tmp_path):
    result = run("render", "example.net", "--out", str(tmp_path), "--project", str(FIXTURES))
    assert result.returncode == 2
    assert "no stack 'example.net'" in result.stderr and "example.com, example.org, host-mail" in result.stderr


def test_a_domain_on_an_acme_host_renders_its_policy_host_and_mta_sts_records(tmp_path, monkeypatch):
    from dataclasses import replace

    from components import offline
    from components.stackfile import host_facts_for, load_stack

    # The host stack's tls (a host key of the ACME change) as acme: what its file would say.
    monkeypatch.setattr(offline, "host_facts_for", lambda cfg, project: replace(host_facts_for(cfg, project), tls="acme"))
    cfg = load_stack("example.com", FIXTURES)
    written_files = offline.render_stack(cfg, tmp_path, project_dir=FIXTURES)
    assert tmp_path / "etc/mailstack/domains/example.com/mta-sts.txt" in written_files
    assert (tmp_path / "etc/mailstack/domains/example.com/mta-sts.txt").read_text() == (
        "version: STSv1\nmode: testing\nmx: mail.example.net\nmax_age: 604800\n")
    assert "server_name mta-sts.example.com;" in (tmp_path / "etc/nginx/mailstack/example.com.conf").read_text()
    zone = (tmp_path / "dns/example.com.zone").read_text()
    assert '_mta-sts.example.com. IN TXT "v=STSv1; id=' in zone
    assert "mta-sts.example.com. IN A 192.0.2.10" in zone and "mta-sts.example.com. IN AAAA 2001:db8::10" in zone
    # Its autoconfig host too (autoconfig: true, the default): the settings file, its block, its records.
    settings = tmp_path / "etc/mailstack/domains/example.com/config-v1.1.xml"
    assert settings in written_files and "<port>587</port>" in settings.read_text()
    block = (tmp_path / "etc/nginx/mailstack/example.com.autoconfig.conf").read_text()
    assert "server_name autoconfig.example.com;" in block
    assert "autoconfig.example.com. IN A 192.0.2.10" in zone and "autoconfig.example.com. IN AAAA 2001:db8::10" in zone
    assert "_submission._tcp.example.com. IN SRV 0 1 587 mail.example.net." in zone


def test_a_domain_on_a_self_signed_host_renders_tls_rpt_and_no_policy_host(tmp_path):
    result = run("render", "example.com", "--out", str(tmp_path), "--project", str(FIXTURES))
    assert result.returncode == 0, result.stderr
    zone = (tmp_path / "dns/example.com.zone").read_text()
    assert '_smtp._tls.example.com. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@example.com"' in zone
    assert "mta-sts" not in zone and not (tmp_path / "etc/nginx").exists()
    # No autoconfig.<domain> (clients would refuse its certificate); the SRV records all the same.
    assert "autoconfig.example.com." not in zone and "_imaps._tcp.example.com. IN SRV 0 1 993 mail.example.net." in zone


def test_an_acme_host_stack_without_its_token_yet_renders_with_a_note(tmp_path):
    """The offline commands need no secret: the token tls: acme requires may come later, from the CLI."""
    project = tmp_path / "project"
    shutil.copytree(FIXTURES, project)
    host_file = project / "stacks" / "Pulumi.host-mail.yaml"
    values = yaml.safe_load(host_file.read_text())
    values["config"]["mailstack:tls"] = "acme"
    host_file.write_text(yaml.safe_dump(values))
    for stack in ("host-mail", "example.com"):
        result = run("render", stack, "--out", str(tmp_path / stack), "--project", str(project))
        assert result.returncode == 0, result.stderr
        assert "mailstack:acme_cloudflare_token is not set yet; `pulumi up` needs it" in result.stderr
    assert (tmp_path / "example.com/etc/mailstack/domains/example.com/mta-sts.txt").exists()
