"""`python -m components check`: the daemons' checkers on a stack's rendered config, as a user runs it.

Every run goes through the real command line, on stacks copied from
tests/fixtures/stacks into a project folder of the test's own (--project).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import check
from components.services.sieve import files as render_user_sieve
from tests.conftest import EXAMPLE_STACKS, FIXTURE_STACKS, stack_config, stack_values

PROJECT_DIR = Path(__file__).resolve().parents[2]

# A host stack's checks (its zone is its host name's: example.net for mail.example.net).
HOST_CHECK_LINES = [
    "ok   postfix: postconf -n",
    "ok   postfix: postconf -M",
    "ok   postfix: postalias aliases",
    "ok   postfix: postmap submission_header_checks",
    "ok   postfix: postfix check",
    "ok   dovecot: doveconf -n",
    "ok   dovecot: sievec default.sieve",
    "ok   dovecot: sievec spam scripts",
    "ok   opendkim: opendkim -n",
    "ok   policyd-spf: policyd-spf.conf read by policyd-spf",
    "ok   resolver: unbound's drop-in read by unbound-checkconf",
    "ok   fail2ban: fail2ban-client --test",
    "ok   rspamd: rspamadm configtest",
    "ok   dns: named-checkzone example.net",
]


def domain_check_lines(domain: str) -> list[str]:
    """A domain stack's checks: its users' scripts, the table check it cannot run here, its zone."""
    return [
        "ok   sieve: sievec users' ~/.dovecot.sieve",
        "skip mailboxes: mailstack-assemble --check",
        "     runs on the host at deployment: it checks this domain's files with every other domain's there",
        f"ok   dns: named-checkzone {domain}",
    ]


EXPECTED = {"host-mail": HOST_CHECK_LINES, "example.com": domain_check_lines("example.com"),
            "example.org": domain_check_lines("example.org")}


def run(*args: str, cwd: Path = PROJECT_DIR, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "components", "check", *args], cwd=cwd, capture_output=True, text=True, env=env
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder whose stacks/ holds the fixture stacks."""
    stacks = tmp_path / "project" / "stacks"
    stacks.mkdir(parents=True)
    for path in FIXTURE_STACKS.glob("Pulumi.*.yaml"):
        shutil.copy(path, stacks / path.name)
    return tmp_path / "project"


def write_stack(project: Path, name: str, config: dict) -> None:
    (project / "stacks" / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))


@pytest.fixture
def checkers() -> None:
    """The checks need root (private namespaces) and the checkers the host has."""
    missing = check.missing_programs(check.SERVICES)
    if missing:
        pytest.skip(f"checkers not installed: {', '.join(missing)}")
    problem = check.namespaces_problem()
    if problem:
        pytest.skip(problem)


# --- passing ----------------------------------------------------------------------------------


def test_the_example_stacks_pass_every_check(checkers, project):
    result = run("--all", "--project", str(project))
    assert (result.returncode, result.stderr) == (0, ""), result.stdout
    # Host stacks first, as they are deployed.
    expected = [line for stack in ["host-mail", "example.com", "example.org"] for line in [f"{stack}:", *EXPECTED[stack]]]
    assert result.stdout.splitlines() == expected, result.stdout
    assert sorted(EXPECTED) == sorted(EXAMPLE_STACKS)


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_one_stack_prints_one_line_per_check(checkers, project, stack):
    result = run(stack, "--project", str(project))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == EXPECTED[stack]


def test_a_domain_stack_without_its_host_stack_file_exits_2_naming_the_key(checkers, project):
    (project / "stacks" / "Pulumi.host-mail.yaml").unlink()
    result = run("example.com", "--project", str(project))
    assert result.returncode == 2, result.stdout
    assert "mailstack:host_stack: 'host-mail' names the host stack host-mail" in result.stderr
    assert "stacks/Pulumi.host-mail.yaml, which does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# --- users' Sieve scripts: the stack's own line numbers ---------------------------------------


def stack_with_second_user_script(project: Path, script: str) -> None:
    config = stack_values("example.com")
    config["mailstack:users"] = [*config["mailstack:users"], {"name": "carol", "sieve": script}]
    write_stack(project, "sieve", config)


SYNTAX_ERROR = 'require "fileinto";\nif header :contains "subject" "[list]" {\n  fileinto "Lists";\n}}\n'
NO_REQUIRE = 'keep;\nif header :contains "subject" "[list]" {\n  fileinto "Lists";\n}\n'


@pytest.mark.parametrize(
    ("script", "message"),
    [
        pytest.param(SYNTAX_ERROR, "mailstack:users[1].sieve line 4: unexpected '}' found at", id="syntax-error"),
        pytest.param(NO_REQUIRE, "mailstack:users[1].sieve line 3: unknown command 'fileinto'", id="missing-require"),
    ],
)
def test_a_users_sieve_error_names_the_user_and_the_line_of_their_script(checkers, project, script, message):
    stack_with_second_user_script(project, script)
    result = run("sieve", "--project", str(project))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert failed == ["FAIL sieve: sievec users' ~/.dovecot.sieve"], result.stdout
    # The message follows its FAIL line, and is about the stack's own line (not the rendered file's).
    after = lines[lines.index(failed[0]) + 1 :]
    assert after[0].strip().startswith(message), result.stdout
    assert "Traceback" not in result.stderr


def test_every_broken_user_script_is_reported(checkers, project):
    config = stack_values("example.com")
    config["mailstack:users"] = [
        {"name": "carol", "sieve": NO_REQUIRE},
        *config["mailstack:users"],
        {"name": "dave", "sieve": SYNTAX_ERROR},
    ]
    write_stack(project, "two", config)
    result = run("two", "--project", str(project))
    assert result.returncode == 1
    assert "     mailstack:users[0].sieve line 3: unknown command 'fileinto'" in result.stdout
    assert "     mailstack:users[2].sieve line 4: unexpected '}'" in result.stdout


def test_the_script_offset_comes_from_the_template():
    """Line script_first_line of the rendered file is the user's first line, whatever the header."""
    cfg = stack_config("example.com", users=[{"name": "alice", "sieve": "keep;\n# second\nstop;\n"}])
    [rendered] = render_user_sieve(cfg)
    lines = rendered.content.splitlines()
    first = check.script_first_line(cfg, 0)
    assert lines[first - 1 :] == ["keep;", "# second", "stop;"]
    explained = check.explain_user_sieve(
        cfg, f"mailbox alice@example.com: .dovecot: line {first + 2}: error: unknown command 'x'.\n"
    )
    assert explained == "mailstack:users[0].sieve line 3: unknown command 'x'.\n"


# --- a broken Postfix config ------------------------------------------------------------------


def test_a_broken_main_cf_fails_and_names_the_checker(checkers, project, tmp_path):
    # The config model refuses bad values, so the checkers are shown a broken
    # template instead: a copy of the program whose main.cf gains an unknown parameter.
    code = tmp_path / "code"
    shutil.copytree(PROJECT_DIR / "components", code / "components", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROJECT_DIR / "templates", code / "templates")
    main_cf = code / "templates" / "postfix" / "main.cf.j2"
    main_cf.write_text(main_cf.read_text() + "bogus_parameter = 1\n")
    result = run("host-mail", "--project", str(project), cwd=code)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "FAIL postfix: postconf -n" in lines, result.stdout
    message = lines[lines.index("FAIL postfix: postconf -n") + 1]
    assert "unused parameter: bogus_parameter=1" in message
    # The other services' checks still ran, and passed.
    assert "ok   dovecot: doveconf -n" in lines and "ok   dns: named-checkzone example.net" in lines


# --- what cannot be checked: exit 2, a message, no traceback ----------------------------------


def test_a_bad_stack_exits_2_with_the_config_error(project):
    config = stack_values("host-mail")
    config["mailstack:hostname"] = "mail"
    write_stack(project, "broken", config)
    result = run("broken", "--project", str(project))
    assert result.returncode == 2
    assert "mailstack:hostname: 'mail' is not a fully-qualified domain name" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_bad_stack_among_all_exits_2_and_the_others_are_still_checked(checkers, project):
    config = stack_values("host-mail")
    config["mailstack:ipv4"] = ["192.0.2.300"]
    write_stack(project, "broken", config)
    result = run("--all", "--project", str(project))
    assert result.returncode == 2
    assert "mailstack:ipv4" in result.stderr and "192.0.2.300" in result.stderr
    assert "not checked, the stack file is unusable: broken" in result.stderr
    assert "Traceback" not in result.stderr
    for stack in EXAMPLE_STACKS:
        assert f"{stack}:\n" in result.stdout, result.stdout
    assert "FAIL" not in result.stdout
    assert "broken:" not in result.stdout


def test_an_unknown_stack_exits_2(project):
    result = run("example.net", "--project", str(project))
    assert result.returncode == 2
    assert "no stack 'example.net'" in result.stderr and "Traceback" not in result.stderr


def test_no_stack_named_exits_2(project):
    result = run("--project", str(project))
    assert result.returncode == 2 and "--all" in result.stderr


def test_a_missing_checker_names_its_debian_package(project, tmp_path):
    # A PATH without /usr/sbin and /sbin: postconf, postfix, opendkim, ip are not found.
    bin_only = ":".join(p for p in os.environ.get("PATH", "").split(":") if not p.endswith("sbin"))
    result = run("host-mail", "--project", str(project), env={**os.environ, "PATH": bin_only})
    assert result.returncode == 2, result.stdout
    assert "postconf (Debian package postfix)" in result.stderr
    assert "opendkim (Debian package opendkim)" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_all_without_stack_files_exits_2(tmp_path):
    (tmp_path / "stacks").mkdir()
    result = run("--all", "--project", str(tmp_path))
    assert result.returncode == 2 and "no stack file in" in result.stderr
