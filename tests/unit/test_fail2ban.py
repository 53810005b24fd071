"""fail2ban's files by config: the jails, their thresholds and exemptions, where they read, and off."""

from __future__ import annotations

import configparser
import re

import pytest

from components import units
from components.config import ConfigError
from components.services import fail2ban, render_host_files
from tests.conftest import stack_config

OWNER = "mailstack/host-mail"
JAILS = ["postfix-sasl", "postfix", "dovecot", "sshd"]


def _files(**overrides) -> dict[str, str]:
    return {f.path: f.content for f in render_host_files(stack_config("host-mail", **overrides))["fail2ban"]}


def _ini(text: str) -> configparser.ConfigParser:
    """A jail file as fail2ban's reader sees it (sections, options; comments dropped)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


def _jails(**overrides) -> configparser.ConfigParser:
    return _ini(_files(**overrides)[fail2ban.JAIL_CONF])


def test_the_four_jails_on_debians_filters_ban_with_nftables():
    jails = _jails()
    assert jails.sections() == JAILS
    filters = {name: jails[name]["filter"] for name in JAILS}
    assert filters == {"postfix-sasl": "postfix[mode=auth]", "postfix": "postfix[mode=more]",
                       "dovecot": "dovecot", "sshd": "sshd"}
    for name in JAILS:
        assert jails[name]["enabled"] == "true"
        assert jails[name]["banaction"] == "nftables-multiport"


def test_mail_jails_close_every_mail_port_and_sshd_the_ssh_port():
    jails = _jails(ssh_port=2222)
    for name in ("postfix-sasl", "postfix", "dovecot"):
        assert jails[name]["port"].split(",") == ["25", "465", "587", "143", "993"]
    assert jails["sshd"]["port"] == "2222"


def test_defaults():
    for name in JAILS:
        jail = _jails()[name]
        assert (jail["maxretry"], jail["findtime"], jail["bantime"]) == ("5", "10m", "1h")
        assert jail["ignoreip"] == "127.0.0.1/8 ::1"


@pytest.mark.parametrize("retry,find,ban", [(1, "30s", "20s"), (10, "1d", "1w"), (3, 600, 3600)])
def test_thresholds_from_the_config(retry, find, ban):
    jails = _jails(fail2ban_max_retry=retry, fail2ban_find_time=find, fail2ban_ban_time=ban)
    for name in JAILS:
        assert (jails[name]["maxretry"], jails[name]["findtime"], jails[name]["bantime"]) == (
            str(retry), str(find), str(ban))


def test_exempt_addresses_join_loopback():
    jails = _jails(fail2ban_ignore_addresses=["203.0.113.5", "2001:db8:5::/48", " 198.51.100.0/24"])
    for name in JAILS:
        assert jails[name]["ignoreip"].split() == ["127.0.0.1/8", "::1", "203.0.113.5", "2001:db8:5::/48",
                                                   "198.51.100.0/24"]


def test_ipv6_bans_are_allowed():
    fail2ban_conf = _ini(_files()[fail2ban.FAIL2BAN_CONF])
    assert fail2ban_conf["Definition"]["allowipv6"] == "auto"


def test_backend_files_read_the_journal_or_rsyslogs_files():
    logfiles = _ini(_files()[fail2ban.BACKEND_CONF])
    systemd = _ini(fail2ban.backend_file("systemd"))
    assert logfiles.sections() == systemd.sections() == JAILS
    assert {name: (logfiles[name]["backend"], logfiles[name]["logpath"]) for name in JAILS} == {
        "postfix-sasl": ("auto", "/var/log/mail.log"), "postfix": ("auto", "/var/log/mail.log"),
        "dovecot": ("auto", "/var/log/mail.log"), "sshd": ("auto", "/var/log/auth.log")}
    # Debian runs Postfix as postfix@-.service (the filter's own journalmatch names postfix.service).
    assert {name: (systemd[name]["backend"], systemd[name]["journalmatch"]) for name in JAILS} == {
        "postfix-sasl": ("systemd", "_SYSTEMD_UNIT=postfix@-.service"),
        "postfix": ("systemd", "_SYSTEMD_UNIT=postfix@-.service"),
        "dovecot": ("systemd", "_SYSTEMD_UNIT=dovecot.service"), "sshd": ("systemd", "_SYSTEMD_UNIT=ssh.service")}


def test_the_unit_stages_the_journal_variant_on_a_systemd_host_before_the_check():
    cfg = stack_config("host-mail")
    script = units.service_unit(cfg, OWNER, "fail2ban", render_host_files(cfg)["fail2ban"]).stdin
    pick, check = script.index("if [ -d /run/systemd/system ]; then\n  cat >"), script.index("fail2ban-client -c")
    assert pick < check < script.index("# 3. Swap")
    assert fail2ban.backend_file("systemd") in script[pick:check]
    # Applied by a reload when running, a start when not; never a restart.
    apply = script[script.index("# 4. Apply"):]
    assert "fail2ban-client reload" in apply and "service fail2ban start" in apply
    commands = [line for line in apply.splitlines() if not line.lstrip().startswith("#")]
    assert not any("restart" in line for line in commands)


def test_off_means_no_files_no_unit_no_packages():
    cfg = stack_config("host-mail", fail2ban=False)
    assert render_host_files(cfg)["fail2ban"] == []
    assert "fail2ban" not in units.packages_unit(cfg, OWNER).stdin
    on = units.packages_unit(stack_config("host-mail"), OWNER).stdin
    assert re.search(r"packages=\(.* fail2ban nftables python3-systemd ", on)


@pytest.mark.parametrize("key,value,message", [
    ("fail2ban_max_retry", 0, "mailstack:fail2ban_max_retry: 0 is less than 1"),
    ("fail2ban_find_time", "10 minutes", "mailstack:fail2ban_find_time: '10 minutes' is not a duration fail2ban takes"),
    ("fail2ban_ban_time", "0", "mailstack:fail2ban_ban_time: '0' is not a duration fail2ban takes"),
    ("fail2ban_ban_time", "-1", "mailstack:fail2ban_ban_time: '-1' is not a duration fail2ban takes"),
    ("fail2ban_ignore_addresses", ["203.0.113.5/24"],
     "mailstack:fail2ban_ignore_addresses[0]: '203.0.113.5/24' has bits set after its prefix"),
    ("fail2ban_ignore_addresses", ["mail.example.net"],
     "mailstack:fail2ban_ignore_addresses[0]: 'mail.example.net' is not an IP address or network"),
    ("fail2ban_ignore_addresses", "203.0.113.5",
     "mailstack:fail2ban_ignore_addresses: '203.0.113.5' is not a list of addresses or networks"),
])
def test_bad_values_are_refused_naming_key_and_value(key, value, message):
    with pytest.raises(ConfigError) as err:
        stack_config("host-mail", **{key: value})
    assert any(problem.startswith(message) for problem in err.value.problems), err.value.problems
