"""The GitHub workflows: actionlint finds nothing, and they do what README.md's review flow says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.diff import touched_stacks

PROJECT_DIR = Path(__file__).resolve().parents[2]
WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
ACTIONLINT = Path(sys.executable).parent / "actionlint"  # requirements-dev.txt


def workflow(name: str) -> dict:
    # YAML 1.1 reads the key `on` as True.
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps_using(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(action + "@")]


def test_actionlint_finds_nothing():
    # actionlint checks every `run:` script with shellcheck when it is on PATH (scripts/setup installs it).
    assert shutil.which("shellcheck"), "shellcheck is missing: run scripts/setup"
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["deploy.yml", "preview.yml"]
    result = subprocess.run(
        [str(ACTIONLINT), "-no-color", "-oneline", *map(str, files)], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_preview_comments_per_stack_and_runs_the_policy_pack():
    preview = workflow("preview.yml")
    assert preview[True] == {"pull_request": {"branches": ["main"]}}
    job = preview["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    [pulumi] = steps_using(job, "pulumi/actions")
    assert {
        k: pulumi["with"][k]
        for k in ("command", "stack-name", "diff", "policyPacks", "comment-on-pr", "edit-pr-comment")
    } == {
        "command": "preview",
        "stack-name": "${{ matrix.stack }}",
        "diff": True,
        "policyPacks": "policy",
        "comment-on-pr": True,
        "edit-pr-comment": True,
    }
    assert any('python -m components diff "$STACK" --base HEAD^1' in step.get("run", "") for step in job["steps"])
    assert steps_using(job, "actions/github-script"), "the rendered-config diff is not commented"


def test_preview_runs_the_checkers_before_the_preview():
    job = workflow("preview.yml")["jobs"]["preview"]
    runs = [step.get("run", "") for step in job["steps"]]
    [check] = [i for i, run in enumerate(runs) if 'python -m components check "$STACK"' in run]
    [pulumi] = steps_using(job, "pulumi/actions")
    assert check < job["steps"].index(pulumi), "check runs after the preview"
    # With Debian 12's checkers, as root in private namespaces, from requirements.txt alone.
    assert "docker run" in runs[check] and "--privileged" in runs[check] and "debian:bookworm" in runs[check]
    for package in ("postfix", "postfix-policyd-spf-python", "dovecot-core", "dovecot-sieve", "opendkim-tools",
                    "bind9-utils", "iproute2"):
        assert f" {package} " in runs[check], package
    assert "pip install -q -r requirements.txt" in runs[check]
    # A step fails on the first failing command (bash -e): a failed check stops the job.
    assert "bash -euo pipefail" in runs[check]


def test_deploy_runs_up_one_at_a_time_per_stack_then_verify():
    deploy = workflow("deploy.yml")
    assert deploy[True] == {"push": {"branches": ["main"]}}
    job = deploy["jobs"]["deploy"]
    assert job["concurrency"] == {"group": "deploy-${{ matrix.stack }}", "cancel-in-progress": False}
    [pulumi] = steps_using(job, "pulumi/actions")
    assert (pulumi["with"]["command"], pulumi["with"]["policyPacks"]) == ("up", "policy")
    runs = [step.get("run", "") for step in job["steps"]]
    up = job["steps"].index(pulumi)
    assert any('python -m components verify "$STACK"' in run for run in runs[up + 1 :]), "no verify after up"


@pytest.mark.parametrize(
    ("paths", "stacks"),
    [
        (["stacks/Pulumi.example.net.yaml"], ["example.net"]),
        (["stacks/Pulumi.example.net.yaml", "README.md", "tests/unit/test_config.py"], ["example.net"]),
        (["templates/postfix/main.cf.j2"], ["example.com", "example.net"]),
        (["components/records.py"], ["example.com", "example.net"]),
        (["__main__.py"], ["example.com", "example.net"]),
        (["Pulumi.yaml"], ["example.com", "example.net"]),
        (["requirements.txt"], ["example.com", "example.net"]),
        (["policy/rules.py"], ["example.com", "example.net"]),
        (["stacks/Pulumi.gone.example.yaml"], []),  # a removed stack: nothing left to preview
        (["README.md", ".github/workflows/preview.yml", "tests/e2e/lab.py"], []),
    ],
)
def test_the_matrix_holds_the_stacks_a_change_touches(paths, stacks):
    assert touched_stacks(paths, ["example.com", "example.net"]) == stacks
