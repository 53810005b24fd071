"""Pulumi.yaml and the config model agree, and the program runs on what the real engine hands it.

The engine adds every default Pulumi.yaml declares for a key the stack does
not set, as text like any other value ("2048", "true", "[]"), and it does so
for both kinds of stack: the host stack gets every domain key's default and a
domain stack every host key's. A model that reads a default only in its typed
form passes every mock test and fails the first real `pulumi up` (it did,
with `dkim_bits`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from components.config import DomainConfig, HostConfig, load_config
from tests.conftest import stack_values

PROJECT_DIR = Path(__file__).resolve().parents[2]
KINDS = {"(host stack)": HostConfig, "(domain stack)": DomainConfig}


def _declared() -> dict:
    return yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]


def _as_the_engine_sends(values: dict) -> dict:
    """Stack values plus every declared default they lack, all as text (structured ones as JSON)."""
    out = {f"mailstack:{key}": spec["default"] for key, spec in _declared().items()}
    out.update(values)
    text = {}
    for key, value in out.items():
        if isinstance(value, (dict, list)):
            text[key] = json.dumps(value)
        elif isinstance(value, bool):
            text[key] = "true" if value else "false"
        else:
            text[key] = str(value)
    return text


def test_pulumi_yaml_declares_every_key_of_both_kinds_and_no_other():
    assert set(_declared()) == set(HostConfig.model_fields) | set(DomainConfig.model_fields)


@pytest.mark.parametrize("model", [HostConfig, DomainConfig], ids=["host", "domain"])
def test_pulumi_yaml_defaults_are_the_models(model):
    declared = _declared()
    kinds = {"string": str, "integer": int, "boolean": bool, "array": list}
    label = next(text for text, kind in KINDS.items() if kind is model)
    for key, field in model.model_fields.items():
        spec = declared[key]
        assert spec.get("description", "").startswith(label) or (
            # the keys both kinds have say so: "(host stack) or (domain stack) ..."
            key in HostConfig.model_fields and key in DomainConfig.model_fields
            and spec["description"].startswith("(host stack) or (domain stack)")
        ), f"Pulumi.yaml: {key}'s description does not start with {label}"
        # Every key has a default: the CLI demands a key declared without one in every stack.
        assert "default" in spec, f"Pulumi.yaml: {key} has no default"
        assert isinstance(spec["default"], kinds[spec["type"]]), f"Pulumi.yaml: {key} default does not match its type"
        if field.is_required() or field.get_default(call_default_factory=True) is None:
            # Required (hostname, domain, ...) or derived: declared "not set".
            assert spec["default"] in ("", []), f"Pulumi.yaml: {key} default {spec['default']!r} should say not set"
        else:
            default = field.get_default(call_default_factory=True)
            assert spec["default"] == default, f"Pulumi.yaml: {key} default {spec['default']!r} != model {default!r}"


@pytest.mark.parametrize("stack", ["host-mail", "example.com", "example.org"])
def test_example_stacks_load_with_pulumi_yaml_defaults_as_the_engine_sends_them(stack):
    values = stack_values(stack)
    sent = _as_the_engine_sends(values)
    assert sent["mailstack:dkim_bits"] == "2048" and sent["mailstack:vmail_uid"] == "5000"  # the text the engine sends
    assert load_config(sent) == load_config(values)


def test_no_key_pulumi_yaml_declares_secret_has_a_default():
    # The CLI demands that a key declared `secret: true` be encrypted in the stack
    # ("must be encrypted as it's secret"), defaults included: a plaintext default
    # refuses every stack that leaves the key unset (it did, for ssh_host_key).
    both = [key for key, spec in _declared().items() if spec.get("secret") and "default" in spec]
    assert both == [], f"declared secret with a plaintext default: {both}"


def test_readme_documents_every_key_with_its_kind():
    readme = (PROJECT_DIR / "README.md").read_text()
    for heading, model in (("### Host stack keys", HostConfig), ("### Domain stack keys", DomainConfig)):
        assert heading in readme, f"README.md has no {heading!r} section"
        section = readme.split(heading, 1)[1].split("\n#", 1)[0]
        rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M))
        missing = set(model.model_fields) - rows
        assert not missing, f"README.md {heading!r} table lacks: {sorted(missing)}"


@pytest.mark.parametrize("stack", ["host-mail", "example.com", "example.org"])
def test_example_stacks_evaluate_with_pulumi_yaml_defaults_as_the_engine_sends_them(stack):
    from tests.program.harness import evaluate
    from tests.program.stacks import host_mocks

    # A domain stack reads the host stack (evaluated the same way) through its StackReference.
    mocks = None if stack == "host-mail" else host_mocks()
    evaluation = evaluate(stack_values(stack), [], mocks, stack=stack)
    first_unit = "host-packages" if stack == "host-mail" else "domain-files"
    assert evaluation.named(first_unit) and evaluation.of_type("cloudflare:index/dnsRecord:DnsRecord")
