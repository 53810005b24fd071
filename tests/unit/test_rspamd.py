"""rspamd's unit as rendered (components/services/rspamd.py): what each key puts where.

The config itself is judged by rspamd in tests/validate/test_rspamd.py; the
lab proves the behaviour (tests/e2e/test_spam_filter.py).
"""

from __future__ import annotations

from components import units
from components.services import render_host_files, rspamd
from tests.conftest import stack_config

OWNER = "mailstack/host-mail"


def _file(cfg, name: str) -> str:
    [content] = [f.content for f in render_host_files(cfg)["rspamd"] if f.path.endswith("/" + name)]
    return content


def _main_cf(cfg) -> dict[str, str]:
    [main] = [f.content for f in render_host_files(cfg)["postfix"] if f.path == "/etc/postfix/main.cf"]
    return dict(line.split(" = ", 1) for line in main.splitlines() if " = " in line and not line.startswith("#"))


def test_off_means_no_files_no_unit_no_packages_no_milter():
    cfg = stack_config("host-mail", spam_filter=False)
    assert render_host_files(cfg)["rspamd"] == []
    packages = units.packages_unit(cfg, OWNER).stdin
    assert "rspamd" not in packages and "redis-server" not in packages
    main = _main_cf(cfg)
    assert "11332" not in main["smtpd_milters"] and main["non_smtpd_milters"] == "$smtpd_milters"
    on = units.packages_unit(stack_config("host-mail"), OWNER).stdin
    assert " rspamd redis-server " in on


def test_postfix_names_rspamds_milter_with_its_own_tempfail_for_smtp_only():
    main = _main_cf(stack_config("host-mail"))
    assert main["smtpd_milters"] == "unix:/opendkim/opendkim.sock, { inet:127.0.0.1:11332, default_action=tempfail }"
    assert main["milter_default_action"] == "accept"  # OpenDKIM's, the guide's
    assert "11332" not in main["non_smtpd_milters"]


def test_actions_and_greylisting_come_from_the_keys():
    cfg = stack_config("host-mail", spam_reject_score=20, spam_header_score=8, spam_greylist_score=5,
                       greylist_delay="2m")
    actions = _file(cfg, "actions.conf")
    assert "reject = 20;\n" in actions and "add_header = 8;\n" in actions and "greylist = 5;\n" in actions
    greylist = _file(cfg, "greylist.conf")
    assert "enabled = true;\n" in greylist and "timeout = 120s;\n" in greylist
    off = stack_config("host-mail", greylisting=False)
    assert "greylist = null;\n" in _file(off, "actions.conf")
    assert "enabled = false;\n" in _file(off, "greylist.conf")


def test_workers_listen_on_loopback_and_learning_has_its_own_socket():
    cfg = stack_config("host-mail")
    assert _file(cfg, "worker-normal.inc").endswith('bind_socket = "127.0.0.1:11333";\n')
    assert 'bind_socket = "127.0.0.1:11332";\n' in _file(cfg, "worker-proxy.inc")
    controller = _file(cfg, "worker-controller.inc")
    assert ('bind_socket = ["127.0.0.1:11334", "[::1]:11334", '
            '"/run/rspamd/learn.sock mode=0660 owner=_rspamd group=vmail"];\n') in controller
    assert "secure_ip = [];\n" in controller
    assert rspamd.LEARN_SPAM_COMMAND == "rspamc -h /run/rspamd/learn.sock learn_spam"
    assert rspamd.LEARN_HAM_COMMAND == "rspamc -h /run/rspamd/learn.sock learn_ham"


def test_the_password_is_on_the_units_stdin_only():
    cfg = stack_config("host-mail", spam_controller_password="correct-horse-battery")
    unit = units.rspamd_unit(cfg, OWNER, render_host_files(cfg)["rspamd"])
    assert unit.secret and unit.stdin == "correct-horse-battery\n"
    assert "correct-horse-battery" not in unit.command
    # Without the key: an empty line (the host keeps or makes a random password).
    bare = stack_config("host-mail")
    assert units.rspamd_unit(bare, OWNER, render_host_files(bare)["rspamd"]).stdin == "\n"
