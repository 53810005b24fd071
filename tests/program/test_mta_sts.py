"""MTA-STS and TLS-RPT in the program: what a domain stack registers, by its host's TLS and its mode.

The host stack's `tls` output says whether the host has certificates senders
trust (acme); only then does a domain stack publish MTA-STS and run its
policy host unit. A host stack of an older mailstack exports no `tls`: self-signed.
"""

from __future__ import annotations

import logging

import pytest

from components import records as rec
from components.config import HostConfig
from tests.conftest import stack_values
from tests.program.harness import HOST_SECRET_OUTPUTS, MailMocks
from tests.program.stacks import COMMAND, DNS_RECORD, dkim_public_key, evaluate_domain, evaluate_host, with_secrets

POLICY = "version: STSv1\nmode: {mode}\nmx: mail.example.net\nmax_age: {max_age}\n"


def _host_outputs(**changes) -> dict:
    outputs = dict(evaluate_host().stack_outputs)
    outputs.update(changes)
    return outputs


def _mocks(outputs: dict, **kwargs) -> MailMocks:
    return MailMocks(dkim_public_key(), stacks={"host-mail": outputs}, secret_outputs={"host-mail": HOST_SECRET_OUTPUTS},
                     **kwargs)


def _domain(tls: str | None = "acme", preview: bool = False, **settings):
    values = with_secrets(stack_values("example.com"))
    values.update({f"mailstack:{k}": v for k, v in settings.items()})
    outputs = _host_outputs(tls=tls)
    if tls is None:
        del outputs["tls"]  # a host stack of an older mailstack
    return evaluate_domain(values, mocks=_mocks(outputs, commands_ran=not preview), preview=preview)


def _records(evaluation) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for r in evaluation.of_type(DNS_RECORD):
        out.setdefault((r.inputs["type"], r.inputs["name"]), []).append(r.inputs.get("content", r.inputs.get("data")))
    return out


@pytest.fixture(scope="module")
def acme():
    return _domain()


def test_on_an_acme_host_the_domain_publishes_its_policy_and_the_policy_host(acme):
    records = _records(acme)
    policy = POLICY.format(mode="testing", max_age=604800)
    assert records[("TXT", "_mta-sts.example.com")] == [rec.txt_content(f"v=STSv1; id={rec.mta_sts_id(policy)}")]
    assert records[("A", "mta-sts.example.com")] == ["192.0.2.10"]
    assert records[("AAAA", "mta-sts.example.com")] == ["2001:db8::10"]
    assert records[("TXT", "_smtp._tls.example.com")] == ['"v=TLSRPTv1; rua=mailto:postmaster@example.com"']
    exported = {(r["type"], r["name"]) for r in acme.stack_outputs["records"]}
    assert {("TXT", "_mta-sts.example.com"), ("A", "mta-sts.example.com"), ("TXT", "_smtp._tls.example.com")} <= exported


def test_the_policy_host_unit_issues_the_certificate_stages_checks_and_serves_the_policy(acme):
    unit = acme.named("domain-mta-sts")
    script = unit.inputs["stdin"]
    assert "owner=mailstack/example.com" in script  # the domain's owner check first
    issue = ('"$tool" issue mta-sts.example.com /etc/mailstack/tls/mta-sts.example.com/key.pem '
             "/etc/mailstack/tls/mta-sts.example.com/fullchain.pem mta-sts.example.com")
    assert "tool=/usr/local/sbin/mailstack-tls" in script and issue in script
    assert POLICY.format(mode="testing", max_age=604800) in script
    assert "server_name mta-sts.example.com;" in script and "alias /etc/mailstack/domains/example.com/mta-sts.txt;" in script
    assert script.index(issue) < script.index("nginx -t -q") < script.index('mv -f "$path.mailstack-new"')
    assert "service nginx reload" in script
    # It runs after the domain's files unit; its records wait for it (the policy is served first).
    assert acme.named("domain-files").urn in unit.dependencies
    sts_txt = next(r for r in acme.of_type(DNS_RECORD) if r.inputs["name"] == "_mta-sts.example.com")
    assert unit.urn in sts_txt.dependencies


def test_destroying_the_policy_host_removes_its_server_block_policy_and_lineage_only(acme):
    delete = acme.named("domain-mta-sts").inputs["delete"]
    assert "rm -f /etc/nginx/mailstack/example.com.conf" in delete
    assert "rm -f /etc/mailstack/domains/example.com/mta-sts.txt" in delete
    assert "remove mta-sts.example.com" in delete
    assert "mailstack-assemble" not in delete and "/var/vmail" not in delete  # the domain itself stays hosted


@pytest.mark.parametrize("tls", ["self-signed", "files", None], ids=["self-signed", "files", "older-host-stack"])
def test_on_a_host_without_acme_only_tls_rpt_is_published_with_a_warning(tls, caplog):
    with caplog.at_level(logging.WARNING):
        evaluation = _domain(tls=tls)
    records = _records(evaluation)
    assert ("TXT", "_smtp._tls.example.com") in records
    assert not [key for key in records if "mta-sts" in key[1]]
    assert not [r for r in evaluation.of_type(COMMAND) if r.name.endswith("-mta-sts")]
    warning = " ".join(r.getMessage() for r in caplog.records if "MTA-STS" in r.getMessage())
    assert f"has mailstack:tls {tls or 'self-signed'}" in warning and "Set mailstack:tls to acme" in warning


def test_mode_none_publishes_no_policy_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        evaluation = _domain(mta_sts_mode="none")
    assert not [key for key in _records(evaluation) if "mta-sts" in key[1]]
    assert not [r for r in evaluation.of_type(COMMAND) if r.name.endswith("-mta-sts")]
    assert any("mailstack:mta_sts_mode is none" in r.getMessage() for r in caplog.records)


def test_a_new_mode_changes_the_id_the_policy_and_nothing_else_of_mta_sts(acme):
    enforce = _domain(mta_sts_mode="enforce")
    before, after = _records(acme), _records(enforce)
    changed = sorted(key for key in before if before[key] != after[key])
    assert changed == [("TXT", "_mta-sts.example.com")]
    assert "mode: enforce" in enforce.named("domain-mta-sts").inputs["stdin"]
    # The same settings again: the same id (senders refetch only when it changes).
    assert _records(_domain())[("TXT", "_mta-sts.example.com")] == before[("TXT", "_mta-sts.example.com")]


def test_in_preview_the_policy_host_and_its_records_are_shown():
    preview = _domain(preview=True)
    assert "mode: testing" in preview.named("domain-mta-sts").inputs["stdin"]
    assert ("A", "mta-sts.example.com") in _records(preview)


def test_tls_rpt_addresses_come_from_the_stack():
    evaluation = _domain(tls="self-signed", tls_rpt_rua=["tls@example.com", "noc@example.net"])
    assert _records(evaluation)[("TXT", "_smtp._tls.example.com")] == [
        '"v=TLSRPTv1; rua=mailto:tls@example.com,mailto:noc@example.net"']


@pytest.mark.skipif("tls" not in HostConfig.model_fields, reason="needs HostConfig.tls (the ACME change)")
def test_an_acme_host_stack_runs_the_web_unit_after_tls():
    values = with_secrets(stack_values("host-mail"))
    values["mailstack:tls"] = "acme"
    values["mailstack:acme_cloudflare_token"] = "t" * 40
    host = evaluate_host(values)
    web = host.named("host-web")
    assert {host.named("host-packages").urn, host.named("host-tls").urn} <= set(web.dependencies)
    script = web.inputs["stdin"]
    assert "ssl_reject_handshake on;" in script and "include /etc/nginx/mailstack/*.conf;" in script
    assert "nginx is installed on mail.example.net, and not by mailstack" in script


def test_a_self_signed_host_stack_has_no_web_unit():
    host = evaluate_host()
    assert not [r for r in host.of_type(COMMAND) if r.name == "host-web"]
