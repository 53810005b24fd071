"""Run the pack's policies on properties shaped as the engine sends them.

The engine sends a resource's inputs as a protobuf Struct: camelCase names,
numbers as floats, secrets wrapped in `{SIG_KEY: SECRET_SIG, "value": ...}`,
values unknown during preview as sentinel strings. pulumi-policy's `Analyze`
unwraps the secrets and wraps the rest in a proxy that raises on unknowns;
`analyzed` does the same with pulumi-policy's own functions.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

POLICY_DIR = Path(__file__).resolve().parents[1]
if str(POLICY_DIR) not in sys.path:
    sys.path.insert(0, str(POLICY_DIR))

from pulumi_policy import PolicyResource, ResourceValidationArgs, StackValidationArgs  # noqa: E402
from pulumi_policy.deserialize import deserialize_properties  # noqa: E402
from pulumi_policy.policy import _NotApplicableError  # noqa: E402
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy  # noqa: E402

SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = UNKNOWN_STRING_VALUE

DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
COMMAND = "command:remote:Command"


def secret(value: Any) -> dict[str, Any]:
    """A value as the engine marks a secret."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def analyzed(props: Mapping[str, Any]) -> Mapping[str, Any]:
    """What a policy's validate function receives for `props` (as Analyze prepares it)."""
    return unknown_checking_proxy(deserialize_properties(dict(props)))


def urn(type_: str, name: str) -> str:
    return f"urn:pulumi:example.com::mailstack::{type_}::{name}"


@dataclass
class Outcome:
    violations: list[tuple[str, str | None]] = field(default_factory=list)
    not_applicable: str | None = None

    @property
    def messages(self) -> list[str]:
        return [message for message, _ in self.violations]


def validate(policy, type_: str, props: Mapping[str, Any], name: str = "r") -> Outcome:
    """Call a resource policy's validate function as the analyzer does."""
    outcome = Outcome()
    args = ResourceValidationArgs(type_, analyzed(props), urn(type_, name), name, None, None)
    try:
        policy.validate(args, lambda message, urn=None: outcome.violations.append((message, urn)))
    except _NotApplicableError as err:
        outcome.not_applicable = err.reason
    return outcome


def validate_stack(policy, resources: list[tuple[str, str, Mapping[str, Any]]]) -> Outcome:
    """Call a stack policy's validate function with (type, name, outputs) resources."""
    outcome = Outcome()
    policy_resources = [
        PolicyResource(type_, analyzed(props), urn(type_, name), name, None, None, None, [], {})
        for type_, name, props in resources
    ]
    try:
        policy.validate(StackValidationArgs(policy_resources), lambda m, urn=None: outcome.violations.append((m, urn)))
    except _NotApplicableError as err:
        outcome.not_applicable = err.reason
    return outcome


@pytest.fixture
def stack_config(monkeypatch):
    """stack_config({"mailstack:testing": "true"}): the config the engine passes in PULUMI_CONFIG."""
    import json

    def set_config(values: Mapping[str, str]) -> None:
        monkeypatch.setenv("PULUMI_CONFIG", json.dumps(dict(values)))

    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    return set_config
