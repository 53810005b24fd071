"""Program evaluation under the SDK's own mocks, recording nothing.

`tests/program/harness.py` records every registration (a protobuf → dict
conversion of every input, secrets unwrapped) for the tests to inspect; a
real `pulumi preview` pays nothing of the kind in the program's process.
Here the SDK's plain `MockMonitor` answers, and the mocks hand each resource
its inputs back as outputs, as the engine does for a new resource, plus the
DKIM unit's public key, so that the DKIM record is computed too.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pulumi.runtime import mocks as pulumi_mocks

from bench.stacks import DKIM_PUBLIC_KEY, HOST, HOST_SECRET_OUTPUTS, host_outputs
from tests.program.harness import Evaluation, MailMocks, evaluate


def mocks() -> MailMocks:
    """The harness's mocks; a domain stack's StackReference gets the host stack's exports."""
    return MailMocks(DKIM_PUBLIC_KEY, stacks={HOST: host_outputs()}, secret_outputs={HOST: HOST_SECRET_OUTPUTS})


class LeanMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor; `registrations` only so that the harness's `evaluate` can return."""

    registrations: ClassVar[list] = []
    reads: ClassVar[list] = []


def evaluate_lean(config: dict[str, Any], secret_keys: list[str], stack: str = "example.com") -> Evaluation:
    answers = mocks()  # the monitor below records nothing
    return evaluate(config, secret_keys, answers, stack=stack, monitor=LeanMonitor(answers))
