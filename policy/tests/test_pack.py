"""The pack as the engine runs it: `python -m pulumi.policy ENGINE DIR`, spoken to over gRPC.

This is what `pulumi preview --policy-pack policy` starts (the CLI's
pulumi-analyzer-policy-python shim runs exactly this command in policy/.venv),
with the stack's config in PULUMI_CONFIG. The requests carry properties as the
engine marshals them: a protobuf Struct, secrets wrapped, unknowns as sentinels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest
from conftest import COMMAND, DNS_RECORD, POLICY_DIR, UNKNOWN, secret, urn
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
# A host stack's config, as the engine sends it (every declared default too: domain is "").
CONFIG = {
    "mailstack:hostname": "mail.example.com",
    "mailstack:domain": "",
    "mailstack:soft_bounce": "true",
    "mailstack:ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAtestkeymaterial\n",
    "cloudflare:apiToken": "cf-token-0123456789abcdefghijklmnop",
}
# A domain stack's.
DOMAIN_CONFIG = {
    "mailstack:domain": "example.com",
    "mailstack:host_stack": "host-mail",
    "mailstack:hostname": "",
    "mailstack:soft_bounce": "true",  # the default the engine sends; it is the host stack's key
    "mailstack:users": json.dumps([{"name": "alice", "password_hash": HASH}]),
}


def _start(config):
    env = {**os.environ, "PULUMI_CONFIG": json.dumps(config)}
    # The engine address is only used to log; nothing listens there in this test.
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(POLICY_DIR)],
        cwd=POLICY_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = proc.stdout.readline().strip()
        assert port.isdigit(), (
            f"the pack did not start: {port!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        )
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def analyzer():
    yield from _start(CONFIG)


@pytest.fixture(scope="module")
def domain_analyzer():
    yield from _start(DOMAIN_CONFIG)


def struct(props: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(props, message)
    return message


def analyze(stub, type_: str, name: str, props: dict):
    request = analyzer_pb2.AnalyzeRequest(type=type_, name=name, urn=urn(type_, name), properties=struct(props))
    return stub.Analyze(request)


def test_the_pack_declares_every_policy_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "mailstack"
    assert {p.name: p.enforcementLevel for p in info.policies} == {
        name: analyzer_pb2.MANDATORY
        for name in [
            "mail-host-not-proxied",
            "records-in-their-stack",
            "spf-ends-in-all",
            "dkim-key-2048-bits",
            "soft-bounce-only-while-testing",
            "no-secret-on-command-line",
        ]
    }


def test_a_proxied_mail_host_is_refused(analyzer):
    props = {"name": "mail.example.com", "type": "A", "content": "192.0.2.10", "proxied": True, "ttl": 1}
    response = analyze(analyzer, DNS_RECORD, "mail-dns-a-192-0-2-10", props)
    assert [(d.policyName, d.enforcementLevel, d.urn) for d in response.diagnostics] == [
        ("mail-host-not-proxied", analyzer_pb2.MANDATORY, urn(DNS_RECORD, "mail-dns-a-192-0-2-10"))
    ]


def test_the_stack_config_reaches_the_policies(analyzer):
    """PULUMI_CONFIG of a host stack: soft_bounce without mailstack:testing, and its SSH key on a command line."""
    connection = secret({"host": "192.0.2.10", "user": "root", "port": 22})
    props = {"create": "echo b3BlbnNzaC1rZXktdjEAAAAAtestkeymaterial", "stdin": "soft_bounce = yes\n",
             "connection": connection}
    response = analyze(analyzer, COMMAND, "host-postfix", props)
    assert sorted(d.policyName for d in response.diagnostics) == [
        "no-secret-on-command-line",
        "soft-bounce-only-while-testing",
    ]
    [secret_found] = [d.message for d in response.diagnostics if d.policyName == "no-secret-on-command-line"]
    assert "carries the secret value of mailstack:ssh_private_key" in secret_found
    assert not any("testkeymaterial" in d.message for d in response.diagnostics)


def test_a_domain_stack_is_checked_as_one(domain_analyzer):
    """PULUMI_CONFIG of a domain stack: a password hash on a command line; soft_bounce is not its business."""
    connection = secret({"host": "192.0.2.10", "user": "root", "port": 22})
    props = {"create": f"echo 'alice@example.com:{HASH}'", "stdin": "soft_bounce = yes\n", "connection": connection}
    response = analyze(domain_analyzer, COMMAND, "domain-passwords", props)
    assert [d.policyName for d in response.diagnostics] == ["no-secret-on-command-line"]
    assert "the secret value of mailstack:users[0].password_hash" in response.diagnostics[0].message
    assert not any(HASH in d.message for d in response.diagnostics)
    assert {n.policy_name for n in response.not_applicable} == {"soft-bounce-only-while-testing"}


def test_a_clean_unit_passes_and_secrets_on_stdin_are_fine(analyzer):
    props = {"create": "bash -c 'read -r line'", "stdin": secret(f"alice\t{HASH}\n"), "logging": "none"}
    assert list(analyze(analyzer, COMMAND, "mail-host-accounts", props).diagnostics) == []


def test_an_unknown_dkim_key_is_not_applicable_in_preview(analyzer):
    props = {"name": "mail._domainkey.example.com", "type": "TXT", "content": UNKNOWN, "ttl": 1}
    response = analyze(analyzer, DNS_RECORD, "mail-dns-dkim", props)
    assert list(response.diagnostics) == []
    assert {n.policy_name for n in response.not_applicable} == {"spf-ends-in-all", "dkim-key-2048-bits"}


def _record(name, props):
    return analyzer_pb2.AnalyzerResource(type=DNS_RECORD, name=name, urn=urn(DNS_RECORD, name), properties=struct(props))


def test_the_stack_policy_sees_every_record(analyzer, domain_analyzer):
    a = _record("host-dns-a", {"name": "mail.example.com", "type": "A", "content": "192.0.2.10"})
    mx = _record("domain-dns-mx", {"name": "example.com", "type": "MX", "content": "mail.example.com", "priority": 10})

    # The host stack: its A record; an MX there is refused.
    assert list(analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[a])).diagnostics) == []
    response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[a, mx]))
    assert [(d.policyName, d.urn) for d in response.diagnostics] == [
        ("records-in-their-stack", urn(DNS_RECORD, "domain-dns-mx"))
    ]
    # A domain stack: its MX; the host's A there is refused.
    assert list(domain_analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[mx])).diagnostics) == []
    response = domain_analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[a, mx]))
    assert [(d.policyName, d.urn) for d in response.diagnostics] == [
        ("records-in-their-stack", urn(DNS_RECORD, "host-dns-a"))
    ]
