"""fail2ban on the lab's mx: who fails too often is banned on every mail port, for the ban time only.

The host stack is deployed here with real thresholds (THRESHOLDS: three
failures, a short ban) and two exemptions: the deployer (admin) and the
client, which keeps sending while the stranger is banned. The peer is not
exempt: it keeps delivering because it never fails. At the end the lab's
own host stack is deployed again and every ban is lifted.

mx runs without systemd: Postfix and Dovecot log through rsyslog to
/var/log/mail.log, which the jails read (tests/e2e/mxhost.py).
"""

from __future__ import annotations

import base64
import re
import time
import uuid

import pytest

from .conftest import run_client, wait_for, whole_message
from .deploy import DeploymentFailed

MAX_RETRY = 3
BAN_SECONDS = 40
JAIL_CONF = "/etc/fail2ban/jail.d/mailstack.conf"
MAIL_PORTS = (25, 587, 993)


def thresholds(lab) -> dict:
    return {
        "fail2ban_max_retry": MAX_RETRY,
        "fail2ban_find_time": "10m",
        "fail2ban_ban_time": f"{BAN_SECONDS}s",
        "fail2ban_ignore_addresses": [lab.admin.ipv4, lab.admin.ipv6, lab.hosts["client"].ipv4,
                                      lab.hosts["client"].ipv6],
    }


@pytest.fixture(scope="module")
def banning(lab, world, deployment):
    deployment.up_host(**thresholds(lab))
    try:
        yield deployment
    finally:
        deployment.up_host()
        lab.ssh("fail2ban-client unban --all", check=False)


def fail_auth(lab, on: str, address: str) -> None:
    """One SMTP AUTH on 587 with a wrong password, after STARTTLS: Postfix answers 535 and logs it."""
    token = base64.b64encode(b"\0alice@example.com\0not-the-password").decode()
    answer = run_client(lab, on, "dialog", host=address, port=587, starttls=True, lines=[f"AUTH PLAIN {token}"])
    assert answer["replies"] and answer["replies"][0][0] == 535, answer


def jail(lab, name: str = "postfix-sasl") -> dict[str, str]:
    """`fail2ban-client status <jail>` as {"Total failed": "3", "Banned IP list": "...", ...}."""
    out = lab.ssh(f"fail2ban-client status {name}").stdout
    lines = (re.search(r"[|`]- ([^:]+):[ \t]*(.*)$", line) for line in out.splitlines())
    return {m[1]: m[2].strip() for m in lines if m}


def reachable(lab, on: str, address: str) -> dict[int, bool]:
    return {port: lab.can_connect(on, address, port, timeout=3) for port in MAIL_PORTS}


def test_stranger_failing_auth_is_banned_on_every_mail_port_while_peer_and_client_go_on(lab, world, banning):
    stranger = lab.hosts["stranger"]
    addresses = (lab.mx.ipv4, lab.mx.ipv6)  # the stranger's IPv4 and IPv6 addresses, one ban each
    for address in addresses:
        assert reachable(lab, "stranger", address) == {p: True for p in MAIL_PORTS}
    total = int(jail(lab)["Total failed"])

    # One failure short of the threshold, from each address: counted, and nobody is banned.
    for _ in range(MAX_RETRY - 1):
        for address in addresses:
            fail_auth(lab, "stranger", address)
    counted = wait_for(lambda: int(jail(lab)["Total failed"]) >= total + 2 * (MAX_RETRY - 1), timeout=60)
    assert counted, jail(lab)
    assert jail(lab)["Currently banned"] == "0", jail(lab)
    assert reachable(lab, "stranger", lab.mx.ipv4)[587]

    # The last failure: refused at the TCP level on every mail port, over IPv4 and IPv6.
    for address in addresses:
        fail_auth(lab, "stranger", address)
    banned = wait_for(lambda: not any(lab.can_connect("stranger", a, 587, timeout=3) for a in addresses), timeout=60)
    banned_at = time.monotonic()
    assert banned, jail(lab)
    for address in addresses:
        assert reachable(lab, "stranger", address) == {p: False for p in MAIL_PORTS}, address
    assert set(jail(lab)["Banned IP list"].split()) == {stranger.ipv4, stranger.ipv6}

    # Meanwhile the peer delivers on 25 and the client sends on 587.
    subject = f"during a ban {uuid.uuid4()}"
    delivered = run_client(lab, "peer", "send", host=lab.mx.ipv4, port=25, helo="peer.example.net",
                           mail_from="someone@example.net", rcpt_to=["alice@example.com"],
                           message=whole_message("someone@example.net", "alice@example.com", subject, "still welcome"))
    assert delivered["ok"], delivered
    sent = run_client(lab, "client", "send", host=lab.mx.ipv4, port=587, helo="laptop.example.org", starttls=True,
                      login=["alice@example.com", "alice.com-Secret-1"], mail_from="alice@example.com",
                      rcpt_to=["carol@example.com"],
                      message=whole_message("alice@example.com", "carol@example.com", subject, "still sending"))
    assert sent["ok"], sent

    # The ban lasts its time (still on halfway through), then lifts by itself.
    time.sleep(max(0.0, banned_at + BAN_SECONDS / 2 - time.monotonic()))
    assert not lab.can_connect("stranger", lab.mx.ipv4, 587, timeout=3)
    lifted = wait_for(lambda: all(all(reachable(lab, "stranger", a).values()) for a in addresses),
                      timeout=BAN_SECONDS + 90, every=2)
    assert lifted, jail(lab)
    assert time.monotonic() - banned_at >= BAN_SECONDS / 2


def test_an_exempt_address_is_never_banned(lab, banning):
    client = lab.hosts["client"]
    ignored = lambda: len(re.findall(rf"\[postfix-sasl\] Ignore {re.escape(client.ipv4)} by ip",  # noqa: E731
                                     lab.ssh("cat /var/log/fail2ban.log").stdout))
    before = ignored()
    for _ in range(MAX_RETRY + 2):
        fail_auth(lab, "client", lab.mx.ipv4)
    # fail2ban read every failure, and let each go.
    read = wait_for(lambda: ignored() >= before + MAX_RETRY + 2, timeout=60)
    assert read, lab.ssh("tail -20 /var/log/fail2ban.log").stdout
    assert client.ipv4 not in jail(lab)["Banned IP list"].split()
    assert reachable(lab, "client", lab.mx.ipv4) == {p: True for p in MAIL_PORTS}


def test_a_changed_jail_is_reloaded_not_restarted(lab, banning):
    def server_pid() -> int:
        pid = int(lab.ssh("cat /run/fail2ban/fail2ban.pid").stdout)
        assert lab.ssh(f"kill -0 {pid}", check=False).returncode == 0
        return pid

    before = server_pid()
    banning.up_host(**{**thresholds(lab), "fail2ban_max_retry": MAX_RETRY + 1})
    try:
        assert sorted(run.name for run in banning.host.runs) == ["host-fail2ban"]
        assert "reloaded fail2ban" in banning.host.runs[0].stderr
        assert server_pid() == before
        for name in ("postfix-sasl", "postfix", "dovecot", "sshd"):
            assert lab.ssh(f"fail2ban-client get {name} maxretry").stdout.strip() == str(MAX_RETRY + 1)
    finally:
        banning.up_host(**thresholds(lab))
    assert server_pid() == before


def test_a_bad_value_is_refused_before_anything_changes_on_the_host(lab, banning):
    jails = lab.ssh(f"sha256sum {JAIL_CONF}").stdout
    with pytest.raises((DeploymentFailed, Exception)) as failure:
        banning.up_host(**{**thresholds(lab), "fail2ban_ban_time": "forever"})
    assert "mailstack:fail2ban_ban_time: 'forever' is not a duration" in str(failure.value), failure.value
    assert banning.host.runs == []
    assert lab.ssh(f"sha256sum {JAIL_CONF}").stdout == jails
