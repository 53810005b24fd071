"""Shared fixtures: the example stacks as loaded config."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from components.config import DomainConfig, HostConfig, load_config  # noqa: E402

# The tests' own stack files: never the ones a user keeps in stacks/.
FIXTURE_STACKS = ROOT / "tests" / "fixtures" / "stacks"
EXAMPLE_STACKS = ["host-mail", "example.com", "example.org"]


def stack_values(stack_name: str) -> dict[str, Any]:
    """The `config:` mapping of tests/fixtures/stacks/Pulumi.<stack_name>.yaml."""
    return yaml.safe_load((FIXTURE_STACKS / f"Pulumi.{stack_name}.yaml").read_text())["config"]


def stack_config(stack_name: str, **overrides: Any) -> HostConfig | DomainConfig:
    """A stack's config, with `mailstack:<key>` values replaced by `overrides` (key without prefix)."""
    values = stack_values(stack_name)
    values.update({f"mailstack:{key}": value for key, value in overrides.items()})
    return load_config(values)


def message_of_size(head: str, size: int) -> str:
    """`head` (header lines, each ending in CRLF) and a body of filler lines, exactly `size` bytes as
    SMTP counts them (CRLF line ends): the size a client announces with SIZE= (RFC 1870)."""
    line = "quota filler " * 6 + "\r\n"
    lines, rest = divmod(size - len(head) - 2, len(line))
    assert lines >= 1, f"{size} bytes leave no room for a body after {len(head)} bytes of header"
    # The last line takes up the rest.
    message = head + "\r\n" + line * (lines - 1) + "x" * (len(line) + rest - 2) + "\r\n"
    assert len(message.encode()) == size
    return message


@pytest.fixture
def example_config() -> Callable[..., HostConfig | DomainConfig]:
    """example_config("example.com", soft_bounce=False) -> HostConfig or DomainConfig."""
    return stack_config
