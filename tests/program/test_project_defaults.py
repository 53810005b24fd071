"""The program under the config the real engine hands it: the stack's values and Pulumi.yaml's defaults.

The engine adds every default Pulumi.yaml declares for a key the stack does
not set, as text like any other value ("2048", "true", "[]"). A model that
reads a default only in its typed form passes every mock test and fails the
first real `pulumi up` (it did, with `dkim_bits`).
"""

from __future__ import annotations

import pytest

from tests.conftest import stack_values
from tests.program.harness import config_for_pulumi, evaluate, with_project_defaults


@pytest.mark.parametrize("stack", ["example.com", "example.net"])
def test_example_stacks_evaluate_with_pulumi_yaml_defaults_as_the_engine_sends_them(stack):
    values = with_project_defaults(stack_values(stack))
    assert config_for_pulumi(values)["mailstack:dkim_bits"] == "2048"  # the text the engine sends
    evaluation = evaluate(values, ["mailstack:ssh_private_key", "mailstack:ssh_host_key"], stack=stack)
    assert evaluation.named("mail-host-postfix") and evaluation.of_type("cloudflare:index/dnsRecord:DnsRecord")


def test_no_key_pulumi_yaml_declares_secret_has_a_default():
    # The CLI demands that a key declared `secret: true` be encrypted in the stack
    # ("must be encrypted as it's secret"), defaults included: a plaintext default
    # refuses every stack that leaves the key unset (it did, for ssh_host_key).
    import yaml

    from tests.program.harness import PROJECT_DIR

    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    both = [key for key, spec in declared.items() if spec.get("secret") and "default" in spec]
    assert both == [], f"declared secret with a plaintext default: {both}"
