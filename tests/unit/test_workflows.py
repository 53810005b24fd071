"""The GitHub workflows: actionlint finds nothing, and they do what README.md's review flow says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.check import PACKAGES as CHECKER_PACKAGES
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
    # Every checker's package (components/check.py), but those Debian's image has (Essential: yes).
    essential = {"bsdutils", "util-linux", "mount"}
    for package in {"postfix-policyd-spf-python", "opendkim-tools", *CHECKER_PACKAGES.values()} - essential:
        assert f" {package} " in runs[check], package
    assert "pip install -q -r requirements.txt" in runs[check]
    # A step fails on the first failing command (bash -e): a failed check stops the job.
    assert "bash -euo pipefail" in runs[check]


def test_both_workflows_take_their_stacks_from_touched():
    for name, base in (("preview.yml", "--base HEAD^1"), ("deploy.yml", '--base "$BEFORE"')):
        job = workflow(name)["jobs"]["stacks"]
        [touched] = [step for step in job["steps"] if step.get("id") == "touched"]
        # The program's environment: a stack's kind is read from its config (components/config.py).
        assert ".venv/bin/python -m pip install -q -r requirements.txt" in touched["run"], name
        assert f".venv/bin/python -m components touched {base} --json" in touched["run"], name
        assert workflow(name)["jobs"][name.split(".")[0]]["strategy"]["matrix"]["stack"] == (
            "${{ fromJSON(needs.stacks.outputs.stacks) }}")


def test_deploy_brings_host_stacks_up_before_domain_stacks():
    """`touched` lists host stacks first; one matrix job at a time, in the order of the list."""
    job = workflow("deploy.yml")["jobs"]["deploy"]
    assert job["strategy"]["max-parallel"] == 1
    assert "--all --json" in workflow("deploy.yml")["jobs"]["stacks"]["steps"][-1]["run"]


def test_touched_lists_host_stacks_first():
    result = subprocess.run([sys.executable, "-m", "components", "touched", "--all", "--json"], cwd=PROJECT_DIR,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["host-mail", "example.com", "example.org"]


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


EVERY_STACK = ["host-mail", "example.com", "example.org"]


@pytest.mark.parametrize(
    ("paths", "stacks"),
    [
        (["stacks/Pulumi.example.org.yaml"], ["example.org"]),
        (["stacks/Pulumi.host-mail.yaml"], ["host-mail"]),
        (["stacks/Pulumi.example.org.yaml", "README.md", "tests/unit/test_config.py"], ["example.org"]),
        (["templates/postfix/main.cf.j2"], EVERY_STACK),
        (["templates/tables/assemble.sh.j2"], EVERY_STACK),
        (["components/records.py"], EVERY_STACK),
        (["__main__.py"], EVERY_STACK),
        (["Pulumi.yaml"], EVERY_STACK),
        (["requirements.txt"], EVERY_STACK),
        (["policy/rules.py"], EVERY_STACK),
        (["stacks/Pulumi.gone.example.yaml"], []),  # a removed stack: nothing left to preview
        (["README.md", ".github/workflows/preview.yml", "tests/e2e/lab.py"], []),
    ],
)
def test_the_matrix_holds_the_stacks_a_change_touches(paths, stacks):
    # Which stacks, of both kinds; their order (hosts first) is test_touched_lists_host_stacks_first's.
    assert sorted(touched_stacks(paths, EVERY_STACK)) == sorted(stacks)
