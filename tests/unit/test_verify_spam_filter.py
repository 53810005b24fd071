"""verify's spam filter checks: rspamd's and Redis's state as the host reports it over SSH."""

from __future__ import annotations

import subprocess

import pytest

from components import verify as v
from components import verify_net
from components.services import rspamd
from components.verify_net import HostUnavailable, parse_spam_filter_state

from .test_verify import config

PORTS = v.SPAM_FILTER_PORTS

STAT = """\
Results for command: stat (0.003 seconds)
Messages scanned: 12
Messages learned: 3
Statfile: BAYES_SPAM type: redis; length: 0; free blocks: 0; total blocks: 0; free: 0.00%; learned: 2; users: 1; languages: 0
Statfile: BAYES_HAM type: redis; length: 0; free blocks: 0; total blocks: 0; free: 0.00%; learned: 1; users: 1; languages: 0
Total learns: 3
"""

HOST_ANSWER = f"""\
== listen ==
0.0.0.0:25
[::]:25
127.0.0.1:11332
127.0.0.1:11333
127.0.0.1:11334
[::1]:11334
127.0.0.1:6379
[::1]:6379
127.0.0.53%lo:53
== milter ==
answered O
== redis ==
PONG
== stat ==
{STAT}== end ==
"""


def test_the_hosts_answer_is_read_section_by_section():
    state = parse_spam_filter_state(HOST_ANSWER)
    assert "[::1]:6379" in state.listeners and "0.0.0.0:25" in state.listeners
    assert state.milter == "answered O" and state.redis == "PONG"
    assert "BAYES_SPAM" in state.stat


def test_an_answer_cut_short_is_not_judged():
    with pytest.raises(HostUnavailable, match="cut short"):
        parse_spam_filter_state(HOST_ANSWER.split("== stat ==")[0])


def test_everything_on_loopback_passes():
    result = v.check_spam_filter_listeners(parse_spam_filter_state(HOST_ANSWER).listeners, PORTS)
    assert (result.name, result.status) == ("rspamd.listening", v.PASS)
    assert "on loopback only" in result.reason


@pytest.mark.parametrize("exposed", ["0.0.0.0:6379", "*:11334", "[::]:11332", "198.51.100.10:6379",
                                     "[2001:db8::10]:11333"])
def test_a_worker_or_redis_reachable_from_outside_fails(exposed):
    listeners = [*parse_spam_filter_state(HOST_ANSWER).listeners, exposed]
    result = v.check_spam_filter_listeners(listeners, PORTS)
    assert result.status == v.FAIL
    assert "reachable beyond the host" in result.reason and exposed.rpartition(":")[2] in result.reason


def test_a_missing_listener_fails_naming_it():
    listeners = [line for line in parse_spam_filter_state(HOST_ANSWER).listeners if not line.endswith(":6379")]
    result = v.check_spam_filter_listeners(listeners, PORTS)
    assert result.status == v.FAIL and "not listening: Redis (6379)" in result.reason


@pytest.mark.parametrize(("answer", "status"), [("answered O", v.PASS), ("refused Connection refused", v.FAIL),
                                                ("timeout", v.FAIL), ("closed", v.FAIL), ("", v.FAIL)])
def test_the_milter_must_answer_the_negotiation(answer, status):
    result = v.check_spam_filter_milter(answer, "127.0.0.1:11332")
    assert (result.name, result.status) == ("rspamd.milter", status)
    if status == v.FAIL:
        assert "tempfail" in result.reason


@pytest.mark.parametrize(("answer", "status"), [("PONG", v.PASS), ("Could not connect to Redis", v.FAIL)])
def test_redis_must_answer_ping(answer, status):
    assert v.check_redis_ping(answer, "127.0.0.1:6379").status == status


def test_the_learned_counts_are_reported():
    assert v.learned_counts(STAT) == {"BAYES_SPAM": 2, "BAYES_HAM": 1}
    result = v.check_spam_learned(STAT)
    assert (result.name, result.status) == ("rspamd.learned", v.PASS)
    assert result.reason.startswith("learned 2 spam, 1 ham") and "200" in result.reason


def test_no_statistics_fails():
    result = v.check_spam_learned("rspamc: cannot connect to 127.0.0.1:11334")
    assert result.status == v.FAIL and "cannot connect" in result.reason


def test_the_ports_are_rspamds_and_redis_own():
    assert sorted(PORTS.values()) == [6379, 11332, 11333, 11334]


def test_the_host_command_asks_loopback_only_and_quotes_what_it_names():
    command = verify_net.spam_filter_command(config().host, rspamd.PROXY_ADDRESS, v.REDIS_ADDRESS,
                                             rspamd.STAT_COMMAND)
    assert command.startswith("sh -c '") or command.startswith("sudo -n sh -c '")
    for section in ("listen", "milter", "redis", "stat", "end"):
        assert f"== {section} ==" in command


def test_the_checks_run_with_the_spam_filter_and_warn_without_ssh(monkeypatch):
    asked = []
    monkeypatch.setattr(v, "read_spam_filter_state", lambda *a: asked.append(a))
    results = v._spam_filter_checks(config().host, v.Options(ssh=False))
    assert asked == []
    assert [r.name for r in results] == ["rspamd.listening", "rspamd.milter", "redis.ping", "rspamd.learned"]
    assert all(r.status == v.WARN and "SSH is off" in r.reason for r in results)


def test_the_checks_judge_what_the_host_said(monkeypatch):
    def run(cfg, command, timeout):
        return subprocess.CompletedProcess([], 0, HOST_ANSWER, "")
    monkeypatch.setattr(verify_net, "run_on_host", run)
    results = {r.name: r for r in v._spam_filter_checks(config().host, v.Options())}
    assert {name: r.status for name, r in results.items()} == {
        "rspamd.listening": v.PASS, "rspamd.milter": v.PASS, "redis.ping": v.PASS, "rspamd.learned": v.PASS}


def test_no_spam_filter_no_checks(monkeypatch):
    """With mailstack:spam_filter false there is no rspamd to ask: the host's checks leave it out."""
    asked = []
    monkeypatch.setattr(v, "_spam_filter_checks", lambda *a: asked.append(a) or [])
    off = v._host_tasks(config(spam_filter=False).host, None, v.Options(ssh=False))
    cfg = config().host
    on = v._host_tasks(cfg, None, v.Options(ssh=False))
    assert len(on) == len(off) + 1
    on[len(on) - 6 * len(cfg.addresses) - 1]()  # the last of the host's own tasks, before the per-address ones
    assert len(asked) == 1
