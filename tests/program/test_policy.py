"""The policy pack's checks (policy/rules.py) over what the program really registers.

The pack itself runs in its own environment (policy/.venv, tested by
policy/tests); its checks are plain functions, so they run here too, on the
inputs the program sends the engine under mocks: camelCase, secrets unwrapped,
as pulumi-policy hands them to a policy. The example stacks must pass every
check, and the soft_bounce check must notice a stack that forgets `testing`.
"""

from __future__ import annotations

import base64
import importlib.util
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.program.harness import PROJECT_DIR, MailMocks, config_for_pulumi, evaluate
from tests.program.test_program import SECRET_KEYS, stack_values, with_secrets


def _load_rules():
    spec = importlib.util.spec_from_file_location("mailstack_policy_rules", PROJECT_DIR / "policy" / "rules.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is made
    spec.loader.exec_module(module)
    return module


rules = _load_rules()


@pytest.fixture(scope="module")
def dkim_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def violations(values: dict, dkim_key: str) -> list[str]:
    """Every problem the pack's checks find in the stack `values` (stack-file style), by resource name."""
    evaluation = evaluate(values, SECRET_KEYS, MailMocks(dkim_key))
    config = config_for_pulumi(values)  # what the engine passes the pack in PULUMI_CONFIG
    secrets = rules.stack_secrets(config)
    found = []
    for r in evaluation.registrations:
        if r.type == rules.DNS_RECORD:
            checks = [rules.mail_host_not_proxied, rules.spf_problems, rules.dkim_problems]
        elif r.type in rules.COMMANDS:
            checks = [
                lambda props: rules.soft_bounce_problems(props, rules.is_testing(config)),
                lambda props: rules.command_secret_problems(props, secrets),
            ]
        else:
            continue
        found += [f"{r.name}: {problem}" for check in checks for problem in check(r.inputs)]
    resources = [rules.Resource(r.urn, r.type, r.inputs) for r in evaluation.registrations]
    urns = {r.urn: r.name for r in evaluation.registrations}
    found += [f"{urns[urn]}: {problem}" for urn, problem in rules.mx_problems(resources)]
    return found


@pytest.mark.parametrize("stack", ["example.com", "example.net"])
def test_the_example_stacks_pass_every_policy(stack, dkim_key):
    values = with_secrets(stack_values(stack))
    assert len(rules.stack_secrets(config_for_pulumi(values))) >= 3  # the key, the host key, a hash
    assert violations(values, dkim_key) == []


def test_soft_bounce_without_testing_is_refused_on_the_postfix_unit(dkim_key):
    values = with_secrets(stack_values("example.com"))
    values["mailstack:testing"] = False
    [problem] = violations(values, dkim_key)
    assert problem.startswith("mail-host-postfix: Postfix would run with soft_bounce = yes")


def test_a_1024_bit_dkim_key_from_the_host_is_refused(dkim_key):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = weak.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    [problem] = violations(stack_values("example.net"), base64.b64encode(der).decode())
    assert problem.startswith("mail-dns-dkim: DKIM key at s2026._domainkey.example.net is a 1024-bit RSA key")
