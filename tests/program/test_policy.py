"""The policy pack's checks (policy/rules.py) over what the program really registers, for both kinds.

The pack itself runs in its own environment (policy/.venv, tested by
policy/tests); its checks are plain functions, so they run here too, on the
inputs the program sends the engine under mocks: camelCase, secrets unwrapped,
as pulumi-policy hands them to a policy, and on the stack's config as the
engine passes it (PULUMI_CONFIG: every declared default included, so that a
host stack has `domain: ""`). The example stacks of both kinds must pass every
check that applies to their kind (policy/pack.py says which), and the
soft_bounce check must notice a host stack that forgets `testing`.
"""

from __future__ import annotations

import base64
import importlib.util
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import stack_values
from tests.program.harness import PROJECT_DIR, config_for_pulumi, with_project_defaults
from tests.program.stacks import evaluate_domain, evaluate_host, host_mocks, with_secrets


def _load_rules():
    spec = importlib.util.spec_from_file_location("mailstack_policy_rules", PROJECT_DIR / "policy" / "rules.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is made
    spec.loader.exec_module(module)
    return module


rules = _load_rules()


def violations(stack: str, values: dict, dkim_key: str | None = None, mocks=None) -> list[str]:
    """Every problem the pack's checks find in the stack `values` (stack-file style), by resource name."""
    if "mailstack:hostname" in values:
        evaluation = evaluate_host(values, stack=stack)
    else:
        evaluation = evaluate_domain(values, stack=stack, mocks=mocks or host_mocks(dkim_key=dkim_key))
    config = config_for_pulumi(with_project_defaults(values))  # what the engine passes the pack
    kind = rules.stack_kind(config)
    secrets = rules.stack_secrets(config)
    found = []
    for r in evaluation.registrations:
        if r.type == rules.DNS_RECORD:
            checks = [rules.mail_host_not_proxied, rules.spf_problems, rules.dkim_problems]
        elif r.type in rules.COMMANDS:
            checks = [lambda props: rules.command_secret_problems(props, secrets)]
            if kind == "host":  # policy/pack.py: soft_bounce is a host-stack rule
                checks.append(lambda props: rules.soft_bounce_problems(props, rules.is_testing(config)))
        else:
            continue
        found += [f"{r.name}: {problem}" for check in checks for problem in check(r.inputs)]
    resources = [rules.Resource(r.urn, r.type, r.inputs) for r in evaluation.registrations]
    urns = {r.urn: r.name for r in evaluation.registrations}
    found += [f"{urns[urn]}: {problem}" for urn, problem in rules.record_problems(resources, kind)]
    return found


@pytest.mark.parametrize(("stack", "kind"), [("host-mail", "host"), ("example.com", "domain"),
                                             ("example.org", "domain")])
def test_the_example_stacks_pass_every_policy(stack, kind):
    values = with_secrets(stack_values(stack))
    config = config_for_pulumi(with_project_defaults(values))
    assert rules.stack_kind(config) == kind
    # The host's SSH keys, or a domain's password hashes: the secret check has values to look for.
    assert len(rules.stack_secrets(config)) >= (2 if kind == "host" else 1)
    assert violations(stack, values) == []


def test_soft_bounce_without_testing_is_refused_on_the_host_postfix_unit():
    values = with_secrets(stack_values("host-mail"))
    values["mailstack:testing"] = False
    [problem] = violations("host-mail", values)
    assert problem.startswith("host-postfix: Postfix would run with soft_bounce = yes")


def test_a_1024_bit_dkim_key_from_the_host_is_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = weak.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    [problem] = violations("example.org", stack_values("example.org"), base64.b64encode(der).decode())
    assert problem.startswith("domain-dns-dkim-s2026: DKIM key at s2026._domainkey.example.org is a 1024-bit RSA key")


def test_a_domain_on_an_acme_host_passes_with_its_mta_sts_policy_host():
    from tests.program.harness import HOST_SECRET_OUTPUTS, MailMocks
    from tests.program.stacks import dkim_public_key

    outputs = {**evaluate_host().stack_outputs, "tls": "acme"}
    mocks = MailMocks(dkim_public_key(), stacks={"host-mail": outputs}, secret_outputs={"host-mail": HOST_SECRET_OUTPUTS})
    values = with_secrets(stack_values("example.com"))
    assert violations("example.com", values, mocks=mocks) == []
    evaluation = evaluate_domain(values, mocks=mocks)
    # (sorted: the two register concurrently, in either order)
    assert sorted(r.inputs["type"] for r in evaluation.registrations if r.type == rules.DNS_RECORD
                  and r.inputs["name"] == "mta-sts.example.com") == ["A", "AAAA"]  # what the check let through
