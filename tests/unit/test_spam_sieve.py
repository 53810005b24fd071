"""Learning from Junk and filing spam into it: Dovecot's files by mailstack:spam_filter
(README, "Learning from Junk"). tests/validate/test_dovecot_spam.py runs them in a Dovecot."""

from __future__ import annotations

import re

import pytest

from components import paths, units
from components.services import dovecot, render_host_files
from tests.conftest import stack_config

SPAM_CONF = f"{paths.DOVECOT_CONF_D}/90-spam.conf"
LEARN = f"{paths.SIEVE_PIPE_DIR}/{paths.LEARN_PROGRAM}"


def files(**overrides) -> dict[str, str]:
    return {f.path: f.content for f in render_host_files(stack_config("host-mail", **overrides))["dovecot"]}


def settings(text: str) -> dict[str, str]:
    """Every `name = value` line of a Dovecot config file, whatever its section."""
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in text.splitlines()
                if "=" in line and not line.lstrip().startswith("#"))


def test_spam_filter_is_on_by_default():
    assert stack_config("host-mail").spam_filter is True


def test_with_spam_filter_learning_and_junk_filing_are_configured():
    conf = settings(files()[SPAM_CONF])
    assert conf["mail_plugins"] == "$mail_plugins imap_sieve"
    assert conf["imapsieve_mailbox1_name"] == "Junk"
    assert conf["imapsieve_mailbox1_causes"] == "COPY APPEND"
    assert conf["imapsieve_mailbox1_before"] == f"file:{paths.LEARN_SPAM_SIEVE}"
    assert (conf["imapsieve_mailbox2_name"], conf["imapsieve_mailbox2_from"]) == ("*", "Junk")
    assert conf["imapsieve_mailbox2_causes"] == "COPY"
    assert conf["imapsieve_mailbox2_before"] == f"file:{paths.LEARN_HAM_SIEVE}"
    assert conf["sieve_after"] == paths.JUNK_SIEVE
    assert conf["sieve_pipe_bin_dir"] == paths.SIEVE_PIPE_DIR
    assert (conf["special_use"], conf["auto"]) == ("\\Junk", "subscribe")


def test_without_spam_filter_nothing_learns_and_nothing_is_filed():
    conf = settings(files(spam_filter=False)[SPAM_CONF])
    for name in ("mail_plugins", "imapsieve_mailbox1_name", "imapsieve_mailbox2_name", "sieve_after", "auto"):
        assert name not in conf, name
    # The plugins stay loaded: the global scripts, installed either way, still compile.
    assert conf["sieve_plugins"] == "sieve_imapsieve sieve_extprograms"


def test_users_scripts_cannot_run_programs():
    every = "".join(files().values())
    # Only global scripts get the pipe extension; users' scripts are limited by sieve_extensions.
    assert "sieve_global_extensions = +vnd.dovecot.pipe +vnd.dovecot.environment" in every
    assert not re.search(r"(?m)^\s*sieve_extensions\b", every)


def test_the_junk_script_files_only_what_rspamd_marked():
    script = files()[paths.JUNK_SIEVE]
    assert 'if header :is "X-Spam" "Yes" {\n  fileinto :create "Junk";\n}' in script


@pytest.mark.parametrize("path, word", [(paths.LEARN_SPAM_SIEVE, "spam"), (paths.LEARN_HAM_SIEVE, "ham")])
def test_the_learning_scripts_pipe_the_message_and_never_fail_the_move(path, word):
    script = files()[path]
    assert f'pipe :copy :try "{paths.LEARN_PROGRAM}" ["{word}"];' in script


def test_moving_junk_to_the_trash_is_not_learned_as_ham():
    script = files()[paths.LEARN_HAM_SIEVE]
    assert script.index('if environment :is "imap.mailbox" "Trash" {\n  stop;\n}') < script.index("pipe ")


def test_the_learning_program_asks_rspamds_controller_on_loopback():
    program = files()[LEARN]
    timeout = dovecot.LEARN_TIMEOUT_SECONDS
    assert f"answer=$(timeout {timeout} {dovecot.LEARN_SPAM_COMMAND} 2>&1)" in program
    assert f"answer=$(timeout {timeout} {dovecot.LEARN_HAM_COMMAND} 2>&1)" in program
    assert dovecot.LEARN_SPAM_COMMAND.endswith(" learn_spam") and dovecot.LEARN_HAM_COMMAND.endswith(" learn_ham")
    assert dovecot.LEARN_TIMEOUT_SECONDS < 10  # Dovecot kills a pipe program after 10 s
    assert program.rstrip().endswith("exit 0")


def test_the_unit_checks_and_compiles_the_spam_scripts():
    cfg = stack_config("host-mail")
    script = units.service_unit(cfg, "mailstack/host-mail", "dovecot", render_host_files(cfg)["dovecot"]).stdin
    for path in (paths.JUNK_SIEVE, paths.LEARN_SPAM_SIEVE, paths.LEARN_HAM_SIEVE):
        assert f'"$STAGE"{path}' in script  # checked in the stage, under the staged config
        assert f"\n  sievec {path}\n" in script  # compiled in place after the swap
