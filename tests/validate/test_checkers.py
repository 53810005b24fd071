"""The rendered files, checked by the daemons' own tools (components/services/<service>.py).

Each test builds a stage in tmp_path exactly as the deploy script does (copy
the machine's installed config dirs, write the rendered files over them) and
runs the service's CHECKS with bash -euo pipefail and STAGE set, through
`python -m components check`'s own runner (components/check.py).

The host stack's services are checked on the host stack's files; a domain
stack's users' Sieve scripts with sievec, under its host stack's Dovecot
config (the shared tables are checked by the host's assembler:
tests/validate/test_assembler.py).

The checks assume what is true on the mail host once the earlier units have
run: it owns the host's addresses (postfix refuses an inet_interfaces address
no interface has) and has the tables the tables unit makes. The runner gives
them that in private mount and network namespaces (unshare -m -n) without
touching the machine: the host's addresses on a private loopback, an overlay
over /etc, and one over /var/spool/postfix (postfix check creates missing
queue directories).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from components import check
from components.services import CHECKS
from components.config import DomainConfig, HostConfig
from tests.conftest import FIXTURE_STACKS, stack_config

SERVICES = check.SERVICES
# The project folder of the fixture stacks: a domain stack's host stack file is there.
FIXTURES = FIXTURE_STACKS.parent
HOST_STACK = "host-mail"
DOMAIN_STACKS = ["example.com", "example.org"]
# Each stack with the checks of its kind.
STACK_CHECKS = [(HOST_STACK, service) for service in SERVICES] + [(stack, "sieve") for stack in DOMAIN_STACKS]


def need(service: str) -> None:
    missing = check.missing_programs([service], zone=False)
    if missing:
        pytest.skip(f"{service} checker not installed: {', '.join(missing)}")


@pytest.fixture(scope="session")
def namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("the checks run as root, as on the host")
    for tool in check.NAMESPACES:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is needed to give the checks the host's addresses and DKIM key")
    problem = check.namespaces_problem()
    if problem:
        pytest.skip(problem)


def run_checks(tmp_path: Path, cfg: HostConfig | DomainConfig, service: str, stage: Path
               ) -> subprocess.CompletedProcess:
    """The service's checks on `stage`: exit 1 if any failed, their messages on stderr."""
    results = check.run_checks(cfg, stage, tmp_path / "host", [service])
    failed = not all(r.ok for r in results)
    return subprocess.CompletedProcess(service, int(failed), "", "".join(r.output for r in results))


def staged(tmp_path: Path, cfg: HostConfig | DomainConfig, service: str) -> Path:
    need(service)
    return check.build_stage(tmp_path / "stage", cfg, [service], project_dir=FIXTURES)


# --- every example stack passes every check -------------------------------------------------


@pytest.mark.parametrize(("stack", "service"), STACK_CHECKS)
def test_rendered_config_passes_the_checks(namespaces, tmp_path, stack, service):
    cfg = stack_config(stack)
    stage = staged(tmp_path, cfg, service)
    result = run_checks(tmp_path, cfg, service, stage)
    assert result.returncode == 0, f"{stack}/{service} failed:\n{result.stderr}"
    # A warning counts: the only one allowed is postfix-script's about the staged
    # makedefs.out symlink (Debian's own, copied with /etc/postfix; its check
    # exempts only the path /etc/postfix/./makedefs.out).
    noise = [
        line
        for line in result.stderr.splitlines()
        if "symlink leaves directory" not in line or "makedefs.out" not in line
    ]
    assert noise == [], f"{stack}/{service} printed:\n{result.stderr}"


def test_user_sieve_check_covers_every_user(namespaces, tmp_path):
    users = [
        {"name": "alice", "sieve": 'require ["fileinto"];\nfileinto "A";\n'},
        {"name": "bob", "sieve": "keep;\n"},
        {"name": "carol"},
    ]
    cfg = stack_config("example.com", users=users)
    stage = staged(tmp_path, cfg, "sieve")
    assert sorted(p.parent.name for p in stage.glob("var/vmail/example.com/*/.dovecot.sieve")) == ["alice", "bob"]
    result = run_checks(tmp_path, cfg, "sieve", stage)
    assert (result.returncode, result.stderr) == (0, "")
    # Compiled outside the stage: Dovecot compiles ~/.dovecot.svbin itself, as the user.
    assert list(stage.rglob("*.svbin")) == []


def test_a_users_script_compiles_under_the_host_stacks_dovecot_config(namespaces, tmp_path):
    """sievec reads the Dovecot config the host stack renders (beside the stage), not this machine's."""
    cfg = stack_config("example.com", users=[{"name": "alice", "sieve": "keep;\n"}])
    stage = staged(tmp_path, cfg, "sieve")
    conf = stage.parent / check.HOST_DOVECOT / "etc/dovecot/conf.d/90-sieve.conf"
    assert conf.is_file()
    # A setting only the host's config has: sievec must read it, and fail on a broken one.
    conf.write_text(conf.read_text() + "bogus_setting = 1\n")
    result = run_checks(tmp_path, cfg, "sieve", stage)
    assert result.returncode != 0 and "bogus_setting" in result.stderr, result.stderr


def test_default_sieve_is_compiled_next_to_itself(namespaces, tmp_path):
    cfg = stack_config(HOST_STACK)
    stage = staged(tmp_path, cfg, "dovecot")
    assert run_checks(tmp_path, cfg, "dovecot", stage).returncode == 0
    assert (stage / "etc/dovecot/sieve/default.svbin").is_file()


def test_postfix_tables_are_built_in_the_stage(namespaces, tmp_path):
    # The host's own aliases; the shared tables are the assembler's (tests/validate/test_assembler.py).
    cfg = stack_config(HOST_STACK)
    stage = staged(tmp_path, cfg, "postfix")
    assert run_checks(tmp_path, cfg, "postfix", stage).returncode == 0
    assert (stage / "etc/aliases.db").is_file()


# --- the checks can fail ---------------------------------------------------------------------


def break_file(stage: Path, path: str, edit) -> None:
    target = stage / path.lstrip("/")
    target.write_text(edit(target.read_text()))


BROKEN = [
    # Postfix only warns about an unknown parameter (exit 0): the warning must count.
    pytest.param(
        "postfix", "/etc/postfix/main.cf", lambda t: t + "bogus_parameter = 1\n",
        "unused parameter: bogus_parameter=1", id="postfix-unknown-main.cf-parameter",
    ),
    pytest.param(
        "postfix", "/etc/postfix/master.cf", lambda t: t.replace(
            "  -o syslog_name=postfix/submission\n", "  -o syslog_name=postfix/submission\n  -o bogus_option=1\n"
        ),
        "unused parameter: bogus_option=1", id="postfix-unknown-master.cf-option",
    ),
    pytest.param(
        "postfix", "/etc/aliases", lambda t: t + "no colon here\n",
        "need name:value pair", id="postfix-malformed-aliases",
    ),
    # A regexp that does not compile is only a warning to postmap: the check asks the file.
    pytest.param(
        "postfix", "/etc/postfix/submission_header_checks", lambda t: t.replace(r"\)([[:space:]]", r"\)(([[:space:]]"),
        "does not hide the client of a submitted mail's Received header: postmap: warning: regexp map",
        id="postfix-broken-submission-header-checks",
    ),
    # `postfix check` itself (logged via script(1)): an address the host does not have.
    pytest.param(
        "postfix",
        "/etc/postfix/main.cf",
        lambda t: t.replace("inet_interfaces = ", "inet_interfaces = 198.51.100.7, "),
        "no local interface found for 198.51.100.7", id="postfix-check-foreign-address",
    ),
    pytest.param(
        "dovecot", "/etc/dovecot/conf.d/10-mail.conf", lambda t: t + "bogus_setting = 1\n",
        # The staged conf.d is what doveconf reads (includes are relative to dovecot.conf).
        "/stage/etc/dovecot/conf.d/10-mail.conf line", id="dovecot-unknown-setting",
    ),
    pytest.param(
        "dovecot", "/etc/dovecot/conf.d/10-master.conf", lambda t: t + "service lmtp {\n",
        "doveconf: Fatal: Error in configuration file", id="dovecot-unbalanced-braces",
    ),
    pytest.param(
        "dovecot", "/etc/dovecot/sieve/default.sieve", lambda t: t.replace("fileinto :create", "fileintoo :create"),
        "unknown command 'fileintoo'", id="dovecot-broken-default-sieve",
    ),
    pytest.param(
        "dovecot", "/etc/dovecot/sieve-spam/junk.sieve", lambda t: t.replace("fileinto :create", "fileintoo :create"),
        "unknown command 'fileintoo'", id="dovecot-broken-junk-sieve",
    ),
    # The learning scripts compile under the staged config: without its pipe plugin they cannot.
    pytest.param(
        "dovecot", "/etc/dovecot/conf.d/90-spam.conf", lambda t: t.replace(" sieve_extprograms", ""),
        "learn-spam.sieve", id="dovecot-spam-scripts-without-extprograms",
    ),
    # The guide's own DisableADSP line: OpenDKIM 2.11 no longer knows it.
    pytest.param(
        "opendkim", "/etc/opendkim.conf", lambda t: t + "DisableADSP T\n",
        "unrecognized parameter", id="opendkim-guide-DisableADSP",
    ),
    pytest.param(
        "policyd-spf", "/etc/postfix-policyd-spf-python/policyd-spf.conf", lambda t: t + "Bogus_Name = 1\n",
        'Unknown name "Bogus_Name"', id="policyd-spf-unknown-name",
    ),
    pytest.param(
        "policyd-spf", "/etc/postfix-policyd-spf-python/policyd-spf.conf", lambda t: t + "debugLevel = high\n",
        "invalid literal for int()", id="policyd-spf-bad-value",
    ),
    pytest.param(
        "sieve", "/var/vmail/example.com/alice/.dovecot.sieve", lambda t: t.replace('"mailbox"]', '"mailboxx"]'),
        "unknown Sieve capability `mailboxx'", id="user-sieve-unknown-extension",
    ),
    pytest.param(
        "sieve", "/var/vmail/example.com/alice/.dovecot.sieve", lambda t: t + "if true {\n",
        "sievec: Fatal: failed to compile sieve script", id="user-sieve-syntax-error",
    ),
]


@pytest.mark.parametrize(("service", "path", "edit", "message"), BROKEN)
def test_broken_config_fails_with_the_checkers_message(namespaces, tmp_path, service, path, edit, message):
    cfg = stack_config("example.com" if service == "sieve" else HOST_STACK)
    stage = staged(tmp_path, cfg, service)
    break_file(stage, path, edit)
    result = run_checks(tmp_path, cfg, service, stage)
    assert result.returncode != 0, f"{service}: the broken {path} passed:\n{result.stderr}"
    assert message in result.stderr, result.stderr


def test_opendkim_n_reads_the_staged_config(namespaces, tmp_path):
    """The opendkim unit's check reads the staged opendkim.conf, not the live one."""
    cfg = stack_config(HOST_STACK)
    stage = staged(tmp_path, cfg, "opendkim")
    (stage / "etc/opendkim.conf").unlink()
    result = subprocess.run(
        ["bash", "-c", "\n".join(["set -euo pipefail", f"STAGE={shlex.quote(str(stage))}", *CHECKS["opendkim"]])],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert f"{stage}/etc/opendkim.conf" in result.stderr, result.stderr
