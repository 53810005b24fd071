"""The host scripts, run for real where they can be: quoting, swapping, refusing.

Two kinds of units: a host stack's (packages, tls, tables, the services), each
behind templates/units/owner.sh.j2, and a domain stack's (dkim, files,
passwords, and the files unit's retire command), each behind
templates/units/domain-owner.sh.j2. Scripts that would touch /etc/mailstack,
/var/vmail or the assembler run against a folder of the test's own instead.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import subprocess
import types
from pathlib import Path

import pytest

from components import paths, units
from components.config import load_config
from components.hostfacts import HostFacts
from components.render import HostFile, here_document, render_template
from components.services import render_host_files

HOST = {
    "mailstack:hostname": "mail.example.com",
    "mailstack:ipv4": ["192.0.2.10"],
    "mailstack:postmaster_address": "alice@example.com",
}
DOMAIN = {"mailstack:domain": "example.com", "mailstack:host_stack": "host-mail", "mailstack:users": [{"name": "alice"}]}
HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
# Everything a shell could misread: quotes, expansions, a fake here-doc end.
NASTY = "a 'single' \"double\" $HOME `id` $(touch /tmp/pwned) \\ \\n ${x:-y}\nMAILSTACK_EOFX\n  MAILSTACK_EOF\n!#*?[]{}|&;<>\n"

HOST_OWNER = "mailstack/host-mail"
OWNER = "mailstack/example.com"  # the domain stack


def host_cfg(**overrides):
    return load_config(dict(HOST, **{f"mailstack:{k}": v for k, v in overrides.items()}))


def cfg(**overrides):
    """A domain stack's config."""
    return load_config(dict(DOMAIN, **{f"mailstack:{k}": v for k, v in overrides.items()}))


def facts(ssh_user: str = "root", host_id: str = HOST_OWNER) -> HostFacts:
    """What the domain stack reads of its host stack."""
    return HostFacts(host_id=host_id, hostname="mail.example.com", addresses=["192.0.2.10"], ssh_user=ssh_user)


def host_scripts(h):
    yield "packages", units.packages_unit(h, HOST_OWNER).stdin
    yield "tls", units.tls_unit(h, HOST_OWNER).stdin
    yield "tables", units.tables_unit(h, HOST_OWNER).stdin
    for service, files in render_host_files(h).items():
        yield service, units.service_unit(h, HOST_OWNER, service, files).stdin


def domain_scripts(c, host=None):
    """(name, script, is_command_line): the scripts of a domain stack's units."""
    host = host or facts()
    yield "dkim", units.dkim_unit(c, OWNER, host).stdin, False
    yield "files", units.files_unit(c, OWNER, host, units.domain_files(c)).stdin, False
    yield "passwords", units.passwords_command(c, OWNER, host), True
    yield "retire", units.retire_command(c, OWNER, host), True


def _inner(command: str) -> str:
    """The script of a command line `[sudo -n ]bash -c '...'`."""
    argv = shlex.split(command)
    if argv[:2] == ["sudo", "-n"]:
        argv = argv[2:]
    assert argv[:2] == ["bash", "-c"] and len(argv) == 3, command
    return argv[2]


@pytest.mark.parametrize("stack_user", ["root", "deploy"])
def test_every_script_is_valid_bash(stack_user):
    h = host_cfg(ssh_user=stack_user)
    c = cfg(users=[{"name": "alice", "sieve": 'require "fileinto";\nfileinto "x";\n'}])
    scripts = [(name, script) for name, script in host_scripts(h)]
    scripts += [(name, _inner(s) if line else s) for name, s, line in domain_scripts(c, facts(stack_user))]
    for name, script in scripts:
        check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, f"{name}: {check.stderr}"
    commands = [units.packages_unit(h, HOST_OWNER).command, units.dkim_unit(c, OWNER, facts(stack_user)).command]
    commands += [s for _, s, line in domain_scripts(c, facts(stack_user)) if line]
    for command in commands:
        assert subprocess.run(["bash", "-n", "-c", command], capture_output=True).returncode == 0, command


def test_runner_uses_sudo_only_for_other_users():
    assert "sudo" not in units.packages_unit(host_cfg(), HOST_OWNER).command
    assert 'sudo -n bash "$f"' in units.packages_unit(host_cfg(ssh_user="deploy"), HOST_OWNER).command
    # A domain stack connects as its host stack's ssh_user (an output of the host stack).
    assert "sudo" not in units.dkim_unit(cfg(), OWNER, facts("root")).command
    assert 'sudo -n bash "$f"' in units.dkim_unit(cfg(), OWNER, facts("deploy")).command
    assert units.passwords_command(cfg(), OWNER, facts("deploy")).startswith("sudo -n bash -c ")
    assert units.retire_command(cfg(), OWNER, facts("deploy")).startswith("sudo -n bash -c ")
    assert units.passwords_command(cfg(), OWNER, facts("root")).startswith("bash -c ")


def test_password_hashes_travel_only_on_stdin():
    c = cfg(users=[{"name": "alice", "password_hash": HASH}, {"name": "bob"}])
    assert HASH not in units.passwords_command(c, OWNER, facts())
    assert all(HASH not in script for _, script, _ in domain_scripts(c))
    assert units.passwords_stdin(c) == f"alice@example.com\t{HASH}\nbob@example.com\t-\n"


def _me():
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def _run(script: str) -> subprocess.CompletedProcess:
    """Run a unit's script (without the owner check, which would claim this machine) as the runner does."""
    return subprocess.run(["bash", "-c", units.packages_unit(host_cfg(), HOST_OWNER).command], input=script,
                          text=True, capture_output=True)


@pytest.fixture
def demo(monkeypatch):
    """A service "demo" with no apply step, so that its script can run on this machine."""
    monkeypatch.setitem(units.SERVICES, "demo", types.SimpleNamespace(NAME="demo"))


def test_service_script_installs_exact_content_and_is_idempotent(tmp_path, demo):
    owner, group = _me()
    target = tmp_path / "etc" / "demo" / "demo.conf"
    file = HostFile(path=str(target), content=NASTY, mode="0640", owner=owner, group=group)
    script = units.service_script(host_cfg(), "demo", [file])

    first = _run(script)
    assert first.returncode == 0, first.stderr
    assert target.read_text() == NASTY
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert not Path("/tmp/pwned").exists()
    assert f"updated {target}" in first.stderr

    mtime = target.stat().st_mtime_ns
    second = _run(script)
    assert second.returncode == 0, second.stderr
    assert "updated" not in second.stderr
    assert target.stat().st_mtime_ns == mtime, "an unchanged file must not be rewritten"
    assert not list(target.parent.glob("*.mailstack-new"))


def test_a_failing_check_swaps_nothing(tmp_path, monkeypatch, demo):
    owner, group = _me()
    target = tmp_path / "live.conf"
    target.write_text("old\n")
    monkeypatch.setitem(units.CHECKS, "demo", ['grep -q "^good" "$STAGE"' + str(target) + ' || { echo "demo: bad config" >&2; exit 1; }'])
    bad = units.service_script(host_cfg(), "demo", [HostFile(path=str(target), content="bad\n", owner=owner, group=group)])
    result = _run(bad)
    assert result.returncode != 0
    assert "demo: bad config" in result.stderr
    assert target.read_text() == "old\n"
    good = units.service_script(host_cfg(), "demo", [HostFile(path=str(target), content="good\n", owner=owner, group=group)])
    assert _run(good).returncode == 0
    assert target.read_text() == "good\n"


def test_config_values_reach_the_shell_quoted():
    """The model already refuses shell syntax in these values; the scripts quote them anyway."""
    script = units.tls_unit(host_cfg(smtpd_tls_cert_file="/etc/ssl/private/mail.example.com.pem"), HOST_OWNER).stdin
    assert "cert=/etc/ssl/private/mail.example.com.pem" in script
    assert "-subj /CN=mail.example.com -addext subjectAltName=DNS:mail.example.com" in script
    from components.render import _ENV

    quote = _ENV.filters["q"]
    assert quote("a b$(id)") == "'a b$(id)'"


def test_hostile_values_past_the_config_model_stay_text(tmp_path):
    """An owner or host id that the model would never give: the checks quote it, nothing runs."""
    odd = "x'; touch MARKER; echo '$(touch MARKER)`touch MARKER`"
    for template, values in (
        ("units/owner.sh.j2", {"host_name": "mail.example.com", "owner": odd}),
        ("units/domain-owner.sh.j2", {"domain": "example.com", "owner": odd, "host_id": odd}),
    ):
        check = _in(tmp_path, render_template(template, **values))
        result = subprocess.run(["bash", "-c", check], capture_output=True, text=True, cwd=tmp_path)
        assert not (tmp_path / "MARKER").exists(), template
        if template == "units/owner.sh.j2":
            assert result.returncode == 0, result.stderr
            assert (tmp_path / "etc/mailstack/host").read_text() == odd + "\n"
        else:  # the host's claim is the odd text too, so the domain is claimed under it
            assert result.returncode == 0, result.stderr
            assert (tmp_path / "etc/mailstack/domains/example.com/owner").read_text() == odd + "\n"


# --- files travel in here-documents that no content can end ---------------------------------------

HOSTILE = [
    "a\nMAILSTACK_EOF\ntouch MARKER\n",  # the first delimiter, as a line (then what would run)
    "MAILSTACK_EOF\nMAILSTACK_EOF_1\nMAILSTACK_EOF_2\n",  # and the next ones
    "$(touch MARKER)\n`touch MARKER`\n${HOME} $HOME \\$(touch MARKER)\n",  # expansions
    "dos\r\nMAILSTACK_EOF\r\nMAILSTACK_EOF\n",  # carriage returns, then the delimiter after all
    "no final newline",
    "MAILSTACK_EOF",  # the delimiter as the last line, without its newline
    "ends with a backslash \\",
    "",
    "\n",
    "\r",
    "line\n\n\n",
    "'MAILSTACK_EOF'\n MAILSTACK_EOF\nMAILSTACK_EOF \n",  # near misses stay text
    "ünïcödé ✓\ttab\n",
]


def test_staging_writes_hostile_contents_byte_for_byte(tmp_path):
    files = [HostFile(path=f"/etc/demo/{i}/file.conf", content=text) for i, text in enumerate(HOSTILE)]
    staging = units.staging_script(files)
    stage = tmp_path / "stage"
    stage.mkdir()
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + staging], cwd=tmp_path, capture_output=True,
                            env={**os.environ, "STAGE": str(stage)})
    assert result.returncode == 0, result.stderr.decode()
    for file in files:
        staged = stage / file.path.lstrip("/")
        assert staged.read_bytes() == file.content.encode(), file.path
    assert not (tmp_path / "MARKER").exists(), "the content was run by the shell"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_the_same_content_always_gets_the_same_delimiter_and_stays_readable():
    assert here_document("smtpd_banner = $myhostname ESMTP\n") == "'MAILSTACK_EOF'\nsmtpd_banner = $myhostname ESMTP\nMAILSTACK_EOF"
    assert here_document("x\nMAILSTACK_EOF\n") == "'MAILSTACK_EOF_1'\nx\nMAILSTACK_EOF\nMAILSTACK_EOF_1"
    assert here_document("MAILSTACK_EOF\nMAILSTACK_EOF_1\n").startswith("'MAILSTACK_EOF_2'\n")
    c = cfg(users=[{"name": "alice", "sieve": "keep;\n# MAILSTACK_EOF\n"}])
    first = units.files_unit(c, OWNER, facts(), units.domain_files(c)).stdin
    assert first == units.files_unit(c, OWNER, facts(), units.domain_files(c)).stdin
    h = host_cfg()
    # The config travels in plain sight (the preview shows it), not encoded.
    postfix = units.service_unit(h, HOST_OWNER, "postfix", render_host_files(h)["postfix"]).stdin
    assert "\nsmtpd_banner = $myhostname ESMTP $mail_name\n" in postfix
    assert "\nalice@example.com\n" in first  # the mailboxes file, as the preview shows it
    packages = units.packages_unit(h, HOST_OWNER).stdin
    assert "<<'MAILSTACK_EOF'\npostfix postfix/main_mailer_type select Internet Site\n" in packages
    assert "postfix postfix/mailname string mail.example.com\nMAILSTACK_EOF\n" in packages


def test_a_user_sieve_script_holding_the_delimiter_is_staged_whole(tmp_path):
    c = cfg(users=[{"name": "alice", "sieve": 'require "fileinto";\nMAILSTACK_EOF\nfileinto "x";\n'}])
    (sieve,) = [f for f in units.domain_files(c) if f.path.endswith("/.dovecot.sieve")]
    assert sieve.path == "/var/vmail/example.com/alice/.dovecot.sieve"
    script = units.files_unit(c, OWNER, facts(), [sieve]).stdin  # a ValueError before
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    assert "<<'MAILSTACK_EOF_1'\n" in script


def test_a_nul_byte_is_refused_naming_the_file():
    with pytest.raises(ValueError, match="/etc/x: contains a NUL byte"):
        units.staging_script([HostFile(path="/etc/x", content="a\0b\n")])


# --- running a unit's script against a folder of the test's own ----------------------------------


def _in(tmp_path: Path, script: str) -> str:
    """`script` with the host's folders and the assembler moved under `tmp_path`.

    The assembler becomes a stub that logs its arguments to tmp_path/assembler.log
    and fails when tmp_path/assembler.fail holds a message (it prints it).
    """
    stub = tmp_path / "mailstack-assemble"
    if not stub.exists():
        stub.write_text(
            "#!/bin/sh\n"
            f'echo "$*" >>"{tmp_path}/assembler.log"\n'
            f'if [ -s "{tmp_path}/assembler.fail" ]; then cat "{tmp_path}/assembler.fail" >&2; exit 1; fi\n'
        )
        stub.chmod(0o755)
    assert paths.MAILSTACK_DIR in script
    return (
        script.replace(paths.ASSEMBLER, str(stub))
        .replace(paths.MAILSTACK_DIR, str(tmp_path / "etc/mailstack"))
        .replace(paths.VMAIL_DIR, str(tmp_path / "vmail"))
    )


def _shims(tmp_path: Path, **commands: str) -> dict[str, str]:
    """An environment whose PATH finds `commands` (name -> shell body) first."""
    shims = tmp_path / "shims"
    shims.mkdir(exist_ok=True)
    for name, body in commands.items():
        (shims / name).write_text(f"#!/bin/sh\n{body}\n")
        (shims / name).chmod(0o755)
    return {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}


def _assembler_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "assembler.log"
    return log.read_text().splitlines() if log.exists() else []


def _claim_host(tmp_path: Path, host_stack: str = HOST_OWNER) -> None:
    (tmp_path / "etc/mailstack").mkdir(parents=True, exist_ok=True)
    (tmp_path / "etc/mailstack/host").write_text(host_stack + "\n")


# --- the owner checks: one host stack per host, one domain stack per domain ------------------------


def test_every_unit_starts_with_its_owner_check():
    h = host_cfg()
    c = cfg(users=[{"name": "alice", "sieve": "keep;\n"}])
    host_check = render_template("units/owner.sh.j2", host_name=h.host_name, owner=HOST_OWNER)
    for name, script in host_scripts(h):
        assert script.startswith(host_check), f"host unit {name} does not start with the owner check"
    assert "owner=mailstack/host-mail\n" in host_check
    domain_check = render_template("units/domain-owner.sh.j2", domain="example.com", owner=OWNER, host_id=HOST_OWNER)
    for name, script, line in domain_scripts(c):
        if line:  # the script is the command line: bash -c '...'
            script = _inner(script)
        assert script.startswith(domain_check), f"domain unit {name} does not start with the domain owner check"
    assert "owner=mailstack/example.com\nhost_stack=mailstack/host-mail\n" in domain_check
    odd = render_template("units/owner.sh.j2", host_name=h.host_name, owner="mailstack/it's $(odd)")
    assert "owner='mailstack/it'\"'\"'s $(odd)'\n" in odd


def _owner_check(tmp_path, owner: str) -> subprocess.CompletedProcess:
    """The host stack's owner check, run against a folder of the test's own in place of /etc/mailstack."""
    check = render_template("units/owner.sh.j2", host_name="mail.example.com", owner=owner)
    assert check.count("/etc/mailstack") >= 4
    return subprocess.run(["bash", "-c", _in(tmp_path, check) + "echo converging\n"], capture_output=True, text=True)


def test_the_first_host_stack_claims_the_host_and_another_is_refused(tmp_path):
    mailstack = tmp_path / "etc/mailstack"
    first = _owner_check(tmp_path, "mailstack/host-mail")
    assert first.returncode == 0 and first.stdout == "converging\n", first.stderr
    assert (mailstack / "host").read_text() == "mailstack/host-mail\n"
    again = _owner_check(tmp_path, "mailstack/host-mail")
    assert again.returncode == 0 and again.stdout == "converging\n" and "claimed" not in again.stderr
    other = _owner_check(tmp_path, "mailstack/host-other")
    assert other.returncode == 1 and other.stdout == ""
    assert other.stderr == (
        "mail.example.com is converged by host stack mailstack/host-mail; this is mailstack/host-other. "
        "One host stack per host: point this stack at another host, or remove "
        f"{mailstack}/host on the host if stack mailstack/host-mail is gone.\n"
    )
    assert (mailstack / "host").read_text() == "mailstack/host-mail\n"
    assert sorted(p.name for p in mailstack.iterdir()) == ["host"]


def test_a_host_stack_does_not_take_over_a_single_domain_host(tmp_path):
    mailstack = tmp_path / "etc/mailstack"
    mailstack.mkdir(parents=True)
    (mailstack / "owner").write_text("mailstack/example.com\n")
    result = _owner_check(tmp_path, "mailstack/host-mail")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(
        "mail.example.com is converged by the single-domain stack mailstack/example.com of an older mailstack;"
    )
    assert sorted(p.name for p in mailstack.iterdir()) == ["owner"]


def _domain_check(tmp_path, owner: str = OWNER, host_id: str = HOST_OWNER, domain: str = "example.com"):
    check = render_template("units/domain-owner.sh.j2", domain=domain, owner=owner, host_id=host_id)
    return subprocess.run(["bash", "-c", _in(tmp_path, check) + "echo converging\n"], capture_output=True, text=True)


def test_a_domain_stack_needs_its_host_stack_to_have_converged_the_host(tmp_path):
    result = _domain_check(tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "this host is not converged by host stack mailstack/host-mail (it records: nothing); "
        "run `pulumi up` for the host stack first, or check mailstack:host_stack.\n"
    )
    assert not (tmp_path / "etc").exists(), "nothing may be created"


def test_a_domain_stack_aimed_at_the_wrong_host_stack_is_refused(tmp_path):
    _claim_host(tmp_path, "mailstack/host-other")
    result = _domain_check(tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "this host is not converged by host stack mailstack/host-mail (it records: mailstack/host-other); "
        "run `pulumi up` for the host stack first, or check mailstack:host_stack.\n"
    )
    assert sorted(p.name for p in (tmp_path / "etc/mailstack").iterdir()) == ["host"]


def test_the_first_domain_stack_claims_the_domain_and_a_second_one_is_refused(tmp_path):
    _claim_host(tmp_path)
    folder = tmp_path / "etc/mailstack/domains/example.com"
    first = _domain_check(tmp_path)
    assert first.returncode == 0 and first.stdout == "converging\n", first.stderr
    assert first.stderr == "claimed example.com for domain stack mailstack/example.com\n"
    assert (folder / "owner").read_text() == "mailstack/example.com\n"
    again = _domain_check(tmp_path)
    assert again.returncode == 0 and again.stdout == "converging\n" and again.stderr == ""

    second = _domain_check(tmp_path, owner="mailstack/example.com-copy")
    assert second.returncode == 1 and second.stdout == ""
    assert second.stderr == (
        "example.com belongs to domain stack mailstack/example.com; this is mailstack/example.com-copy. "
        f"One stack per domain: remove {folder}/owner on the host only if stack mailstack/example.com is gone.\n"
    )
    assert (folder / "owner").read_text() == "mailstack/example.com\n"
    assert sorted(p.name for p in folder.iterdir()) == ["owner"]
    # Another domain on the same host is another stack's business.
    other = _domain_check(tmp_path, owner="mailstack/example.org", domain="example.org")
    assert other.returncode == 0 and other.stdout == "converging\n", other.stderr


# --- the domain's units ----------------------------------------------------------------------------


def _passwords(tmp_path, c, stdin: str) -> subprocess.CompletedProcess:
    """The passwords unit as it runs (command line, hashes on stdin), against the test's folder."""
    _claim_host(tmp_path)
    script = _in(tmp_path, _inner(units.passwords_command(c, OWNER, facts())))
    return subprocess.run(["bash", "-c", script], input=stdin, text=True, capture_output=True)


def test_the_passwords_unit_writes_the_passwd_file_from_stdin(tmp_path):
    c = cfg(users=[{"name": "alice", "password_hash": HASH}, {"name": "bob"}])
    result = _passwords(tmp_path, c, units.passwords_stdin(c))
    assert result.returncode == 0, result.stderr
    passwd = tmp_path / "etc/mailstack/domains/example.com/passwd"
    # A mailbox without a hash cannot log in ("!"), but still receives.
    assert passwd.read_text() == f"alice@example.com:{HASH}\nbob@example.com:!\n"
    assert oct(passwd.stat().st_mode & 0o777) == "0o600"
    assert HASH not in result.stderr and HASH not in result.stdout
    assert result.stderr == "claimed example.com for domain stack mailstack/example.com\n" \
        "updated the password hashes of example.com\n"
    assert _assembler_calls(tmp_path) == [""]  # then the tables are rebuilt

    again = _passwords(tmp_path, c, units.passwords_stdin(c))
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert not list(passwd.parent.glob(".passwd.*")), "no temporary file stays behind"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"alice@example.org\t{HASH}\n", "refusing a password line: its mailbox is not in example.com\n"),
        (f"bad name@example.com\t{HASH}\n", "refusing the password line of bad name@example.com: unexpected characters\n"),
        ("alice@example.com\tx:y\n", "refusing the password line of alice@example.com: unexpected characters\n"),
    ],
)
def test_the_passwords_unit_refuses_a_line_past_the_config_model_before_any_change(tmp_path, line, message):
    c = cfg()
    result = _passwords(tmp_path, c, f"alice@example.com\t{HASH}\n" + line)
    assert result.returncode == 1
    assert result.stderr.endswith(message)
    assert HASH not in result.stderr
    folder = tmp_path / "etc/mailstack/domains/example.com"
    assert sorted(p.name for p in folder.iterdir()) == ["owner"], "no passwd file, no temporary file"
    assert _assembler_calls(tmp_path) == []


def _files(tmp_path, c, env=None) -> subprocess.CompletedProcess:
    """The files unit's script as it runs, against the test's folders (vmail is this test's user)."""
    _claim_host(tmp_path)
    me, group = _me()
    script = _in(tmp_path, units.files_unit(c, OWNER, facts(), units.domain_files(c)).stdin)
    script = script.replace("-o vmail -g vmail", f"-o {me} -g {group}")
    assert "vmail -g" not in script
    return subprocess.run(["bash", "-c", script], text=True, capture_output=True,
                          env=env or _shims(tmp_path, doveadm="exit 0"))


SIEVE = 'require ["fileinto", "mailbox"];\nif header :contains "subject" "x" { fileinto :create "X"; }\n'


def test_the_files_unit_checks_then_swaps_then_assembles(tmp_path):
    c = cfg(users=[{"name": "alice", "addresses": ["alice@example.com", "bob@example.com"], "sieve": SIEVE},
                   {"name": "carol"}])
    script = units.files_unit(c, OWNER, facts(), units.domain_files(c)).stdin
    # The checks: sievec on the users' scripts, and the host's assembler on the staged files.
    assert "sievec" in script
    check = f'{paths.ASSEMBLER} --check example.com "$STAGE"/etc/mailstack/domains/example.com'
    assert check in script.splitlines()
    assert script.index(check) < script.index("# 3. Swap")

    result = _files(tmp_path, c)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "etc/mailstack/domains/example.com"
    assert (folder / "mailboxes").read_text().splitlines()[-2:] == ["alice@example.com", "carol@example.com"]
    assert "bob@example.com alice@example.com" in (folder / "aliases").read_text()
    assert (tmp_path / "vmail/example.com/alice/.dovecot.sieve").read_text().endswith(SIEVE)
    assert oct((tmp_path / "vmail/example.com/carol").stat().st_mode & 0o777) == "0o700"
    calls = _assembler_calls(tmp_path)
    assert len(calls) == 2 and calls[0].startswith("--check example.com /var/tmp/mailstack-domain-example.com.")
    assert calls[0].endswith(f"{folder}"), calls  # the staged folder, not the live one
    assert calls[1] == ""  # then the tables are rebuilt from the live files


def test_a_refusal_of_the_assembler_check_swaps_nothing(tmp_path):
    (tmp_path / "assembler.fail").write_text("mailstack-assemble: example.com: alias target carol@example.net: "
                                            "example.net is not hosted here\n")
    c = cfg(aliases=[{"address": "team@example.com", "to": ["carol@example.net"]}])
    result = _files(tmp_path, c)
    assert result.returncode == 1
    assert "example.net is not hosted here" in result.stderr
    folder = tmp_path / "etc/mailstack/domains/example.com"
    assert sorted(p.name for p in folder.iterdir()) == ["owner"], "nothing swapped in"
    assert [c.split()[0] for c in _assembler_calls(tmp_path)] == ["--check"], "no assembly after a refusal"


def test_a_sieve_script_that_does_not_compile_swaps_nothing(tmp_path):
    c = cfg(users=[{"name": "alice", "sieve": 'fileinto "x";\n'}])  # no `require "fileinto"`
    result = _files(tmp_path, c)
    assert result.returncode != 0
    assert "mailbox alice@example.com: " in result.stderr
    assert not (tmp_path / "etc/mailstack/domains/example.com/mailboxes").exists()
    assert not (tmp_path / "vmail/example.com/alice/.dovecot.sieve").exists()


def test_the_retire_command_retires_through_the_assembler(tmp_path):
    _claim_host(tmp_path)
    log = tmp_path / "doveadm.log"
    env = _shims(tmp_path, doveadm=f'echo "$*" >>"{log}"')
    script = _in(tmp_path, _inner(units.retire_command(cfg(), OWNER, facts())))
    assert f"{tmp_path}/mailstack-assemble --retire example.com\n" in script
    result = subprocess.run(["bash", "-c", script], text=True, capture_output=True, env=env)
    assert result.returncode == 0, result.stderr
    assert _assembler_calls(tmp_path) == ["--retire example.com"]
    assert log.read_text() == "kick *@example.com\n"  # open sessions of the domain end
    assert result.stderr.endswith(f"retired example.com: its mail is refused, its mailboxes stay in {tmp_path}/vmail/example.com\n")


def test_a_refused_retire_kicks_no_one(tmp_path):
    _claim_host(tmp_path)
    (tmp_path / "assembler.fail").write_text("example.com is still the target of an alias of example.org\n")
    log = tmp_path / "doveadm.log"
    env = _shims(tmp_path, doveadm=f'echo "$*" >>"{log}"')
    script = _in(tmp_path, _inner(units.retire_command(cfg(), OWNER, facts())))
    result = subprocess.run(["bash", "-c", script], text=True, capture_output=True, env=env)
    assert result.returncode == 1
    assert "still the target of an alias of example.org" in result.stderr and "retired" not in result.stderr
    assert not log.exists()


def test_the_retire_command_of_a_stack_that_does_not_own_the_domain_is_refused(tmp_path):
    _claim_host(tmp_path)
    folder = tmp_path / "etc/mailstack/domains/example.com"
    folder.mkdir(parents=True)
    (folder / "owner").write_text("mailstack/example.com-other\n")
    script = _in(tmp_path, _inner(units.retire_command(cfg(), OWNER, facts())))
    result = subprocess.run(["bash", "-c", script], text=True, capture_output=True, env=_shims(tmp_path, doveadm="exit 0"))
    assert result.returncode == 1 and "belongs to domain stack mailstack/example.com-other" in result.stderr
    assert _assembler_calls(tmp_path) == []
