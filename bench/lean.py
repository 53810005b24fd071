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

from bench.stacks import DKIM_PUBLIC_KEY
from tests.program.harness import Evaluation, MailMocks, evaluate


class LeanMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor; `registrations` only so that the harness's `evaluate` can return."""

    registrations: ClassVar[list] = []


def evaluate_lean(config: dict[str, Any], secret_keys: list[str]) -> Evaluation:
    mocks = MailMocks(DKIM_PUBLIC_KEY)  # the harness's mocks; the monitor below records nothing
    return evaluate(config, secret_keys, mocks, monitor=LeanMonitor(mocks))
