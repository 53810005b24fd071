"""`python -m components diff`: the rendered-config diff a reviewer reads, in a throwaway git repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
# What rendering needs; the copy's own code renders both sides.
PROJECT_FILES = ["components", "templates", "Pulumi.yaml", "__main__.py", "requirements.txt"]
# The stacks are the tests' own (never the ones a user keeps in stacks/).
FIXTURE_STACKS = PROJECT_DIR / "tests" / "fixtures" / "stacks"


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=Reviewer", "-c", "user.email=reviewer@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the project, committed on `main`."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in PROJECT_FILES:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, repo / name)
    shutil.copytree(FIXTURE_STACKS, repo / "stacks")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def diff(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "components", "diff", "--all", "--base", "main", "--project", str(repo)],
        cwd=repo,
        capture_output=True,
        text=True,
    )


def changed_files(output: str) -> dict[str, set[str]]:
    """stack → the files its section of the diff changes."""
    sections: dict[str, set[str]] = {}
    stack = None
    for line in output.splitlines():
        if m := re.match(r"^### (\S+): ", line):
            stack = m[1]
            sections[stack] = set()
        elif m := re.match(r"^\+\+\+ b/([^/]+)/(.+)$", line):
            assert m[1] == stack, f"{line!r} is under the section of {stack}"
            sections[stack].add(m[2])
    return sections


def test_a_template_change_shows_in_every_stack_and_nowhere_else(repo):
    template = repo / "templates" / "postfix" / "main.cf.j2"
    template.write_text(template.read_text() + "# Reviewed in a pull request.\n")

    result = diff(repo)

    assert result.returncode == 0, result.stderr
    assert changed_files(result.stdout) == {
        "example.com": {"etc/postfix/main.cf"},
        "example.net": {"etc/postfix/main.cf"},
    }
    added = [line for line in result.stdout.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert added == ["+# Reviewed in a pull request."] * 2


def test_a_stack_file_change_shows_only_in_that_stack(repo):
    stack_file = repo / "stacks" / "Pulumi.example.net.yaml"
    stack_file.write_text(
        stack_file.read_text().replace("message_size_limit: 50000000", "message_size_limit: 40000000")
    )

    result = diff(repo)

    assert result.returncode == 0, result.stderr
    assert changed_files(result.stdout) == {"example.net": {"etc/postfix/main.cf"}}
    changes = [line for line in result.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changes == ["-message_size_limit = 50000000", "+message_size_limit = 40000000"]


def test_no_change_gives_an_empty_diff_and_exit_0(repo):
    result = diff(repo)

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_broken_stack_in_the_working_tree_exits_2_naming_every_bad_key(repo):
    stack_file = repo / "stacks" / "Pulumi.example.net.yaml"
    stack_file.write_text(
        stack_file.read_text()
        .replace("message_size_limit: 50000000", "message_size_limit: 25MB")
        .replace("dmarc_policy: reject", "dmarc_policy: strict")
    )

    result = diff(repo)

    assert result.returncode == 2, result.stdout
    assert "example.net: cannot render the working tree" in result.stderr, result.stderr
    assert "mailstack:message_size_limit: '25MB'" in result.stderr, result.stderr
    assert "mailstack:dmarc_policy: 'strict'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
