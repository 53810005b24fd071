"""DKIM rotation under the SDK's mocks: the resources, their order, aliases and exports in each state.

The domain stack reads its own previous outputs (a StackReference to itself):
here the mocks answer it with the outputs each test gives for "example.com".
"""

from __future__ import annotations

import time

import pytest

from components.records import txt_content
from tests.program.harness import MailMocks
from tests.program.stacks import (
    COMMAND,
    DNS_RECORD,
    _example_host,
    dkim_public_key,
    evaluate_domain,
    stack_values,
    with_secrets,
)

# The URNs the single DKIM unit and record had before rotations (the layout of main until now).
OLD_KEY_UNIT = "urn:pulumi:example.com::mailstack::mailstack:index:MailDomain$command:remote:Command::domain-dkim"
OLD_RECORD = ("urn:pulumi:example.com::mailstack::mailstack:index:MailDns$cloudflare:index/dnsRecord:DnsRecord::"
              "domain-dns-dkim")
DAY = 86400


def evaluate_with_previous(previous: dict | None, selector: str = "mail", **config):
    """example.com with mailstack:dkim_selector `selector`, its last `up` having exported `previous`."""
    values = with_secrets(stack_values("example.com"))
    values["mailstack:dkim_selector"] = selector
    values.update({f"mailstack:{k}": v for k, v in config.items()})
    host = _example_host()
    stacks = {"host-mail": host.stack_outputs}
    if previous is not None:
        stacks["example.com"] = previous
    mocks = MailMocks(dkim_public_key(), stacks=stacks, secret_outputs={"host-mail": host.secret_outputs})
    return evaluate_domain(values, mocks=mocks)


def units(evaluation) -> list[str]:
    return sorted(r.name for r in evaluation.of_type(COMMAND))


def dkim_records(evaluation) -> dict[str, str]:
    return {r.name: r.inputs["name"] for r in evaluation.of_type(DNS_RECORD) if "_domainkey" in r.inputs["name"]}


def test_the_first_up_makes_one_key_unit_one_record_and_signs_with_it():
    first = evaluate_with_previous(None)
    assert units(first) == ["domain-dkim-key-mail", "domain-dkim-signing", "domain-files", "domain-passwords"]
    assert dkim_records(first) == {"domain-dns-dkim-mail": "mail._domainkey.example.com"}
    assert first.stack_outputs["dkim_keys"] == {"mail": {"retired_at": None}}
    assert first.stack_outputs["dkim_signing"] == "mail"


def test_an_old_single_key_stack_is_adopted_without_replacing_anything():
    """A stack from before rotations exported dkim_selector alone; its `dkim` unit and record keep their state."""
    upgraded = evaluate_with_previous({"dkim_selector": "mail", "domain": "example.com"})
    key_unit = upgraded.named("domain-dkim-key-mail")
    record = upgraded.named("domain-dns-dkim-mail")
    assert OLD_KEY_UNIT in key_unit.aliases, key_unit.aliases
    assert OLD_RECORD in record.aliases, record.aliases
    assert units(upgraded) == ["domain-dkim-key-mail", "domain-dkim-signing", "domain-files", "domain-passwords"]


def test_an_old_stack_that_changes_its_selector_in_the_same_up_keeps_the_old_key_as_the_one_signing():
    upgraded = evaluate_with_previous({"dkim_selector": "mail"}, selector="s2026")
    assert OLD_KEY_UNIT in upgraded.named("domain-dkim-key-mail").aliases
    assert not upgraded.named("domain-dkim-key-s2026").aliases, "the new key is a new resource"
    assert set(dkim_records(upgraded).values()) == {"mail._domainkey.example.com", "s2026._domainkey.example.com"}


def test_a_rotation_publishes_both_and_the_signing_unit_waits_for_the_new_record():
    before = time.time()
    rotating = evaluate_with_previous({"dkim_keys": {"mail": {"retired_at": None}}, "dkim_signing": "mail"},
                                      selector="s2026")
    assert units(rotating) == ["domain-dkim-key-mail", "domain-dkim-key-s2026", "domain-dkim-signing",
                               "domain-files", "domain-passwords"]
    assert dkim_records(rotating) == {"domain-dns-dkim-mail": "mail._domainkey.example.com",
                                      "domain-dns-dkim-s2026": "s2026._domainkey.example.com"}
    signing = rotating.named("domain-dkim-signing")
    assert rotating.named("domain-dkim-key-s2026").urn in signing.dependencies
    assert rotating.named("domain-dns-dkim-s2026").urn in signing.dependencies, "the record exists before the wait"
    assert "dig +short" in signing.inputs["stdin"] and "s2026._domainkey.example.com" in signing.inputs["stdin"]
    assert "deadline=$((SECONDS + 300))" in signing.inputs["stdin"]  # dkim_publish_timeout: 5m
    assert signing.urn in rotating.named("domain-files").dependencies
    # Exported only if this up succeeds: then mail is retired from now.
    keys = rotating.stack_outputs["dkim_keys"]
    assert keys["s2026"] == {"retired_at": None} and before <= keys["mail"]["retired_at"] <= time.time()
    assert rotating.stack_outputs["dkim_signing"] == "s2026"
    # The old record says why it is still there.
    assert "rotation" in rotating.named("domain-dns-dkim-mail").inputs["comment"]


def test_each_key_units_delete_removes_its_key_but_never_the_signing_one():
    rotating = evaluate_with_previous({"dkim_keys": {"mail": {"retired_at": None}}, "dkim_signing": "mail"},
                                      selector="s2026")
    delete = rotating.named("domain-dkim-key-mail").inputs["delete"]
    assert "/etc/mailstack/domains/example.com/dkim/mail.private" in delete
    assert "refusing to remove the DKIM key" in delete
    assert "owner=mailstack/example.com" in delete


def test_within_retention_the_old_selector_stays_and_keeps_its_time():
    retired = time.time() - DAY
    within = evaluate_with_previous({"dkim_keys": {"s2026": {"retired_at": None}, "mail": {"retired_at": retired}},
                                     "dkim_signing": "s2026"}, selector="s2026")
    assert "domain-dkim-key-mail" in units(within) and "domain-dns-dkim-mail" in dkim_records(within)
    assert within.stack_outputs["dkim_keys"]["mail"] == {"retired_at": retired}


def test_after_retention_the_old_selector_has_no_key_unit_and_no_record():
    retired = time.time() - 8 * DAY
    after = evaluate_with_previous({"dkim_keys": {"s2026": {"retired_at": None}, "mail": {"retired_at": retired}},
                                    "dkim_signing": "s2026"}, selector="s2026")
    assert units(after) == ["domain-dkim-key-s2026", "domain-dkim-signing", "domain-files", "domain-passwords"]
    assert dkim_records(after) == {"domain-dns-dkim-s2026": "s2026._domainkey.example.com"}
    assert after.stack_outputs["dkim_keys"] == {"s2026": {"retired_at": None}}


@pytest.mark.parametrize(("retention", "kept"), [("0s", False), ("30d", True)])
def test_dkim_retention_sets_how_long_the_old_selector_stays(retention, kept):
    retired = time.time() - 8 * DAY
    after = evaluate_with_previous({"dkim_keys": {"s2026": {"retired_at": None}, "mail": {"retired_at": retired}},
                                    "dkim_signing": "s2026"}, selector="s2026", dkim_retention=retention)
    assert ("domain-dkim-key-mail" in units(after)) is kept


def test_the_records_content_is_each_key_units_public_key():
    rotating = evaluate_with_previous({"dkim_keys": {"mail": {"retired_at": None}}, "dkim_signing": "mail"},
                                      selector="s2026")
    for selector in ("mail", "s2026"):
        record = rotating.named(f"domain-dns-dkim-{selector}")
        assert record.inputs["content"] == txt_content(f"v=DKIM1; h=sha256; k=rsa; s=email; p={dkim_public_key()}")
        assert rotating.named(f"domain-dkim-key-{selector}").urn in record.dependencies
