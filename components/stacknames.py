"""Where a project's stacks are: stacks/Pulumi.<stack>.yaml, one file per stack.

Standard library only: `python -m components.diff touched` imports this
before the project's dependencies are installed (the workflows run it with
the runner's bare python3). Reading a stack file's config is
components/stackfile.py's job.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    return project_dir / "stacks" / f"Pulumi.{stack}.yaml"


def stack_names(project_dir: Path = PROJECT_DIR) -> list[str]:
    """The stacks a project has: one per stacks/Pulumi.<stack>.yaml."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in (project_dir / "stacks").glob("Pulumi.*.yaml"))
