"""Every `python -m components` command runs in an environment made from requirements.txt alone.

That is what the README's quick start and the deploy workflow install: a
command that imports a test-only package (requirements-dev.txt) would fail
there with ModuleNotFoundError. A fresh venv gets `pip install -r
requirements.txt` (pip's cache makes it quick), then runs each command on a
copy of the program holding the fixture stacks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
FIXTURE_STACKS = PROJECT_DIR / "tests" / "fixtures" / "stacks"
COVERED = {"render", "check", "diff", "touched", "verify"}

# What pip says when it cannot reach the package index at all.
UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|ConnectTimeoutError|Read timed out|ProxyError"
)


def clean_env() -> dict[str, str]:
    """This process's environment without its venv, so only the new one is seen."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> Path:
    """The python of a fresh venv holding requirements.txt and nothing else."""
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_env())
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--retries", "1", "--timeout", "20",
         "-r", str(PROJECT_DIR / "requirements.txt")],
        capture_output=True, text=True, env=clean_env(),
    )
    if install.returncode != 0:
        output = install.stdout + install.stderr
        if UNREACHABLE.search(output):
            pytest.skip(f"the package index (PyPI) is unreachable: {output.strip().splitlines()[-1]}")
        pytest.fail(f"pip install -r requirements.txt failed:\n{output}")
    return python


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git checkout of the program whose stacks/ holds the fixture stacks, host-mail changed since HEAD."""
    project = tmp_path_factory.mktemp("project")
    for folder in ("components", "templates"):
        shutil.copytree(PROJECT_DIR / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Pulumi.yaml", "requirements.txt"):
        shutil.copy(PROJECT_DIR / name, project / name)
    shutil.copytree(FIXTURE_STACKS, project / "stacks")
    git = ["git", "-C", str(project), "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "base"], check=True)
    stack = project / "stacks" / "Pulumi.host-mail.yaml"
    stack.write_text(stack.read_text().replace("mailstack:soft_bounce: true", "mailstack:soft_bounce: false"))
    return project


def run(python: Path, project: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*prefix, str(python), "-m", "components", *args],
        cwd=project, capture_output=True, text=True, env=clean_env(), timeout=300,
    )
    for broken in ("ModuleNotFoundError", "ImportError", "Traceback"):
        assert broken not in result.stdout + result.stderr, f"{args[0]}:\n{result.stdout}{result.stderr}"
    return result


def test_the_test_covers_every_command(python, project):
    usage = run(python, project, "--help")
    assert usage.returncode == 0
    commands = set(re.search(r"\{([a-z,]+)\}", usage.stdout)[1].split(","))
    assert commands == COVERED, "a command is not run in the requirements.txt environment"


def test_the_environment_lacks_the_test_only_packages(python):
    # Otherwise the test proves nothing: requirements-dev.txt's own packages must not be there.
    probe = subprocess.run([str(python), "-c", "import pytest"], capture_output=True, text=True, env=clean_env())
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


def test_render(python, project, tmp_path):
    result = run(python, project, "render", "host-mail", "--out", str(tmp_path / "host"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "host/etc/postfix/main.cf").is_file() and (tmp_path / "host/dns/example.net.zone").is_file()
    result = run(python, project, "render", "example.com", "--out", str(tmp_path / "domain"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "domain/etc/mailstack/domains/example.com/aliases").is_file()
    assert (tmp_path / "domain/dns/example.com.zone").is_file()


def test_check(python, project):
    result = run(python, project, "check", "host-mail", "example.com")
    if os.geteuid() == 0 and result.returncode != 2:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok   postfix: postconf -n" in result.stdout
        assert "ok   sieve: sievec users' ~/.dovecot.sieve" in result.stdout
    else:
        # No root or no checkers here: said so, not crashed.
        assert result.returncode == 2 and result.stderr.startswith("error:"), result.stdout + result.stderr


def test_touched(python, project):
    result = run(python, project, "touched", "--base", "HEAD", "--json")
    assert (result.returncode, result.stdout.strip()) == (0, '["host-mail"]'), result.stderr


def test_diff(python, project):
    result = run(python, project, "diff", "host-mail", "--base", "HEAD")
    assert result.returncode == 0, result.stderr
    assert "-soft_bounce = yes" in result.stdout and "+soft_bounce = no" in result.stdout


def test_verify_help(python, project):
    result = run(python, project, "verify", "--help")
    assert result.returncode == 0 and "--nameserver" in result.stdout


def test_verify_gets_past_its_imports(python, project):
    """A real run that fails for want of a network: every lookup and connection is refused, none crashes."""
    # An empty network namespace: nothing leaves this machine (the stack's
    # addresses are documentation addresses), and 127.0.0.1 is unreachable there.
    prefix = ("unshare", "-n") if os.geteuid() == 0 else ("unshare", "-r", "-n")
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("cannot make an empty network namespace (unshare -n) for a run that reaches nothing")
    for stack, check in (("host-mail", "dns.a"), ("example.com", "dns.mx")):
        result = run(python, project, "verify", stack, "--no-ssh", "--nameserver", "127.0.0.1",
                     "--timeout", "1", prefix=prefix)
        assert result.returncode == 1, result.stdout + result.stderr
        assert re.search(rf"^FAIL +{re.escape(check)} ", result.stdout, re.M), result.stdout
        assert "Network is unreachable" in result.stdout
