"""Reading a stack's config straight from `stacks/Pulumi.<stack>.yaml`.

For the offline commands, which run without the Pulumi CLI: `secure:` values
cannot be decrypted here, so they count as not set (no offline command needs
a secret).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from components.config import ConfigError, MailConfig, load_config

PROJECT_DIR = Path(__file__).resolve().parent.parent


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    return project_dir / "stacks" / f"Pulumi.{stack}.yaml"


def load_stack(stack: str, project_dir: Path = PROJECT_DIR) -> MailConfig:
    """The stack's config model; FileNotFoundError or ConfigError when it can't be had."""
    path = stack_file(stack, project_dir)
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in path.parent.glob("Pulumi.*.yaml"))
        raise FileNotFoundError(f"no stack {stack!r}: {path} does not exist (stacks here: {', '.join(known) or 'none'})")
    data = yaml.safe_load(path.read_text()) or {}
    return load_config(data.get("config") or {})


def load_stack_or_report(stack: str, project_dir: Path = PROJECT_DIR) -> MailConfig | None:
    """For the commands: the stack's config, or None after printing why it can't be had."""
    try:
        return load_stack(stack, project_dir)
    except (FileNotFoundError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None
