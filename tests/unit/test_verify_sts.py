"""verify's MTA-STS and TLS-RPT checks: records from the loopback name server, policies as fetched.

The records are those components/records.py builds (what `pulumi up`
publishes), served by tests/unit/test_verify.py's ZoneServer, then broken one
way at a time. The policy judge reads PolicyFetch data as verify_net's
fetch_policy returns it (tests/validate/test_web.py fetches one from a real
nginx).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from components import records as rec
from components import verify as v
from components.verify_net import PolicyFetch
from tests.unit.test_verify import ZoneServer, config, published, serve

URL = "https://mta-sts.example.com/.well-known/mta-sts.txt"


@pytest.fixture(scope="module")
def server():
    the_server = ZoneServer()
    yield the_server
    the_server.stop()


def acme(**values):
    stacks = config(**values)
    return replace(stacks, facts=replace(stacks.facts, tls="acme"))


def sts_results(stacks, lookups):
    return [v.check_mta_sts_record(stacks.domain, stacks.facts, lookups),
            v.check_tls_rpt(stacks.domain, stacks.facts, lookups)]


def test_the_records_pulumi_up_publishes_pass(server):
    stacks = acme()
    records = published(stacks, "MA==")
    assert {"mta-sts", "tls-rpt"} <= {r.key for r in records}
    results = sts_results(stacks, serve(server, records))
    assert [(r.name, r.status) for r in results] == [("mta-sts.record", v.PASS), ("tls-rpt.record", v.PASS)]


def _sts(records):
    return next(r for r in records if r.key == "mta-sts")


def test_an_old_id_fails_and_the_fix_is_the_stacks_record(server):
    old = acme(mta_sts_mode="testing")
    new = acme(mta_sts_mode="enforce")
    records = [r for r in published(new, "MA==") if r.key != "mta-sts"] + [_sts(published(old, "MA=="))]
    result = v.check_mta_sts_record(new.domain, new.facts, serve(server, records))
    assert result.status == v.FAIL and "senders that cached an older policy keep it" in result.reason
    assert result.fix.startswith(f"publish _mta-sts.example.com. TXT {rec.txt_content(_sts(published(new, 'MA==')).content)}")


@pytest.mark.parametrize(("change", "reason"), [
    (lambda rs: [r for r in rs if r.key != "mta-sts"], "no MTA-STS record at _mta-sts.example.com"),
    (lambda rs: rs + [replace(_sts(rs), content="v=STSv1; id=other")], "2 MTA-STS records"),
    (lambda rs: [replace(r, content="v=STSv1; id=not-alnum!") if r.key == "mta-sts" else r for r in rs],
     "is not 1 to 32 letters and digits"),
])
def test_a_missing_doubled_or_broken_record_fails(server, change, reason):
    stacks = acme()
    result = v.check_mta_sts_record(stacks.domain, stacks.facts, serve(server, change(published(stacks, "MA=="))))
    assert result.status == v.FAIL and reason in result.reason, result.reason


def test_a_self_signed_host_gets_a_warning_naming_the_fix(server):
    stacks = config()  # the host stack's tls: self-signed
    result = v.check_mta_sts_record(stacks.domain, stacks.facts, serve(server, published(stacks, "MA==")))
    assert result.status == v.WARN and "the host's mailstack:tls is self-signed, not acme" in result.reason
    assert "set mailstack:tls to acme in the host stack" in result.fix


def test_mode_none_passes_without_a_record_and_warns_about_a_stale_one(server):
    stacks = acme(mta_sts_mode="none")
    records = published(stacks, "MA==")
    assert v.check_mta_sts_record(stacks.domain, stacks.facts, serve(server, records)).status == v.PASS
    stale = _sts(published(acme(), "MA=="))
    result = v.check_mta_sts_record(stacks.domain, stacks.facts, serve(server, records + [stale]))
    assert result.status == v.WARN and result.fix.startswith("delete _mta-sts.example.com. TXT")


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no TLS-RPT record at _smtp._tls.example.com"),
    ("v=TLSRPTv1; rua=mailto:other@example.com", "reports to mailto:other@example.com, the stack says "
                                                 "mailto:postmaster@example.com"),
    ("v=TLSRPTv1;", "has no rua="),
    ("v=TLSRPTv1; rua=ftp://example.com/", "is neither mailto: nor https:"),
])
def test_tls_rpt(server, content, reason):
    stacks = acme()
    records = [r for r in published(stacks, "MA==") if r.key != "tls-rpt"]
    if content:
        records.append(rec.Record("_smtp._tls.example.com", "TXT", content, "test"))
    result = v.check_tls_rpt(stacks.domain, stacks.facts, serve(server, records))
    assert result.status == v.FAIL and reason in result.reason, result.reason
    assert result.fix == 'publish _smtp._tls.example.com. TXT "v=TLSRPTv1; rua=mailto:postmaster@example.com" ' \
                         "(`pulumi up --refresh` publishes it again)"


# --- the policy, as fetched ------------------------------------------------------------------------------


def fetched(body: str | None = None, **changes) -> PolicyFetch:
    stacks = acme()
    text = rec.domain_mta_sts_policy(stacks.domain, stacks.facts) if body is None else body
    return replace(PolicyFetch(URL, "198.51.100.10", verified=True, status=200, content_type="text/plain", body=text),
                   **changes)


def judge(fetch: PolicyFetch, **values) -> v.Result:
    stacks = acme(**values)
    return v.check_mta_sts_policy(stacks.domain, stacks.facts, fetch)


def test_the_stacks_policy_passes():
    result = judge(fetched())
    assert result.status == v.PASS
    assert result.reason.startswith("mode testing, mx mail.example.com, max_age 604800")


@pytest.mark.parametrize(("fetch", "reason"), [
    (fetched(error="the certificate of mta-sts.example.com at 198.51.100.10 does not verify: self-signed certificate",
             verify_error="self-signed certificate", verified=False), "senders ignore the policy"),
    (fetched(error="cannot connect to 198.51.100.10 port 443: [Errno 111] Connection refused", status=None),
     "Connection refused"),
    (fetched(status=404, body="not found"), "answered 404"),
    (fetched(status=301, location="https://www.example.com/"), "a redirect senders do not follow"),
    (fetched(content_type="text/html"), "not text/plain"),
    (fetched("version: STSv1\nmode: strict\nmx: mail.example.com\nmax_age: 86400\n"), "mode is strict"),
    (fetched("version: STSv1\nmode: enforce\nmax_age: 86400\n"), "has no mx: line"),
    (fetched("mode: enforce\nmx: mail.example.com\nmax_age: 86400\n"), "has no version: STSv1"),
    (fetched("version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 604800\n"),
     "mx mx.example.org does not match the MX host mail.example.com"),
    (fetched("version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 604800\n"),
     "mode enforce, the stack says testing"),
    (fetched("version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 86400\n"),
     "max_age 86400, the stack says 604800"),
    (fetched("version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"),
     "the text is not what the stack renders"),
])
def test_a_policy_senders_cannot_use_or_that_is_not_the_stacks_fails(fetch, reason):
    result = judge(fetch)
    assert result.status == v.FAIL and reason in result.reason, result.reason
    assert "mailstack-tls status" in result.fix


def test_a_wildcard_mx_pattern_matches_one_label():
    assert v._mx_matches("*.example.com", "mail.example.com")
    assert not v._mx_matches("*.example.com", "a.mail.example.com")
    assert v._mx_matches("MAIL.example.com.", "mail.example.com")


@pytest.mark.parametrize("text", ["v=STSv1; id=20160831085700Z", "v=STSv1;id=abc;", "v=STSv1; id=a; ext=x"])
def test_sts_records_as_rfc_8461_writes_them_parse(text):
    assert v.parse_sts_record(text)["v"] == "STSv1"
