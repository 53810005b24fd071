"""`python -m components diff`: the rendered-config diff a reviewer reads, in a throwaway git repository."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.diff import host_stacks

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


def touched(repo: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "components", "touched", "--base", "main", "--json", "--project", str(repo)],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_a_host_template_change_shows_in_the_host_stack_and_nowhere_else(repo):
    template = repo / "templates" / "postfix" / "main.cf.j2"
    template.write_text(template.read_text() + "# Reviewed in a pull request.\n")

    result = diff(repo)

    assert result.returncode == 0, result.stderr
    assert changed_files(result.stdout) == {"host-mail": {"etc/postfix/main.cf"}}
    added = [line for line in result.stdout.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert added == ["+# Reviewed in a pull request."]
    # Shared code: every stack is touched, host stacks first (the order of deployment).
    assert touched(repo) == ["host-mail", "example.com", "example.org"]


def test_a_domain_template_change_shows_in_every_domain_stack(repo):
    template = repo / "templates" / "mailboxes" / "aliases.j2"
    template.write_text(template.read_text() + "# Reviewed in a pull request.\n")

    result = diff(repo)

    assert result.returncode == 0, result.stderr
    folder = "etc/mailstack/domains/{}/aliases"
    assert changed_files(result.stdout) == {
        "example.com": {folder.format("example.com")},
        "example.org": {folder.format("example.org")},
    }
    assert list(changed_files(result.stdout)) == ["example.com", "example.org"]


def test_a_host_stack_file_change_shows_only_in_the_host_stack(repo):
    edit(repo / "stacks" / "Pulumi.host-mail.yaml", "mailstack:soft_bounce: true", "mailstack:soft_bounce: false")

    result = diff(repo)

    assert result.returncode == 0, result.stderr
    assert changed_files(result.stdout) == {"host-mail": {"etc/postfix/main.cf"}}
    changes = [line for line in result.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changes == ["-soft_bounce = yes", "+soft_bounce = no"]
    assert touched(repo) == ["host-mail"]


def test_a_domain_stack_file_change_shows_only_in_that_domain(repo):
    edit(repo / "stacks" / "Pulumi.example.org.yaml", "mailstack:dmarc_policy: reject", "mailstack:dmarc_policy: none")

    result = diff(repo)

    assert result.returncode == 0, result.stderr
    assert changed_files(result.stdout) == {"example.org": {"dns/example.org.zone"}}
    changes = [line for line in result.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert any(line.startswith("-_dmarc.example.org. IN TXT \"v=DMARC1; p=reject;") for line in changes), changes
    assert any(line.startswith("+_dmarc.example.org. IN TXT \"v=DMARC1; p=none;") for line in changes), changes
    assert touched(repo) == ["example.org"]


def test_the_hosts_address_shows_in_every_domain_on_it_but_touches_the_host_alone(repo):
    edit(repo / "stacks" / "Pulumi.host-mail.yaml", "- 192.0.2.10", "- 192.0.2.20")

    result = diff(repo)

    assert result.returncode == 0, result.stderr
    sections = changed_files(result.stdout)
    assert list(sections) == ["host-mail", "example.com", "example.org"]
    assert sections["example.com"] == {"dns/example.com.zone"} and sections["example.org"] == {"dns/example.org.zone"}
    assert '+example.com. IN TXT "v=spf1 ip4:192.0.2.20 ip6:2001:db8::10 -all"' in result.stdout
    # The domain stacks read the host through its outputs: a host stack file touches the host stack.
    assert touched(repo) == ["host-mail"]


def test_no_change_gives_an_empty_diff_and_exit_0(repo):
    result = diff(repo)

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert touched(repo) == []


def test_a_broken_stack_in_the_working_tree_exits_2_naming_every_bad_key(repo):
    edit(repo / "stacks" / "Pulumi.example.org.yaml", "mailstack:dmarc_policy: reject",
         "mailstack:dmarc_policy: strict\n  mailstack:dkim_bits: 512")

    result = diff(repo)

    assert result.returncode == 2, result.stdout
    assert "example.org: cannot render the working tree" in result.stderr, result.stderr
    assert "mailstack:dmarc_policy: 'strict'" in result.stderr, result.stderr
    assert "mailstack:dkim_bits" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_host_stack_names_the_host_stack_file(repo):
    edit(repo / "stacks" / "Pulumi.host-mail.yaml", "- 192.0.2.10", "- 192.0.2.300")

    result = subprocess.run(
        [sys.executable, "-m", "components", "diff", "example.com", "--base", "main", "--project", str(repo)],
        cwd=repo, capture_output=True, text=True,
    )

    assert result.returncode == 2, result.stdout
    assert "example.com: cannot render the working tree" in result.stderr, result.stderr
    assert "stacks/Pulumi.host-mail.yaml, which is not usable" in result.stderr, result.stderr
    assert "192.0.2.300" in result.stderr and "Traceback" not in result.stderr


def test_touched_needs_the_standard_library_alone(repo):
    """The workflows run `python3 -m components.diff touched` before installing requirements.txt."""
    edit(repo / "stacks" / "Pulumi.host-mail.yaml", "mailstack:soft_bounce: true", "mailstack:soft_bounce: false")
    edit(repo / "stacks" / "Pulumi.example.org.yaml", "mailstack:dmarc_policy: reject", "mailstack:dmarc_policy: none")
    # -S: no site-packages, so neither PyYAML nor pydantic nor dnspython.
    result = subprocess.run(
        [sys.executable, "-S", "-m", "components.diff", "touched", "--base", "main", "--json"],
        cwd=repo, capture_output=True, text=True,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert json.loads(result.stdout) == ["host-mail", "example.org"]


@pytest.mark.parametrize(
    ("config", "host"),
    [
        ("  mailstack:domain: example.com\n  mailstack:host_stack: host-mail\n", False),
        ('  "mailstack:domain": example.com\n', False),
        ("  mailstack:hostname: mail.example.net\n", True),
        ('  mailstack:domain: ""\n  mailstack:hostname: mail.example.net\n', True),
        ("  mailstack:domain: null\n  mailstack:hostname: mail.example.net\n", True),
        ("  # mailstack:domain: example.com\n  mailstack:hostname: mail.example.net\n", True),
    ],
)
def test_a_stack_is_a_host_stack_unless_it_sets_mailstack_domain(tmp_path, config, host):
    """What `touched` orders by, without PyYAML: load_config's rule (a domain stack sets mailstack:domain)."""
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.s.yaml").write_text("config:\n" + config)
    assert host_stacks(tmp_path, ["s"]) == ({"s"} if host else set())
