"""Spam filtering (README, "Spam filtering") on the lab's mx: rspamd as Postfix's milter, Redis on loopback.

What a sender and a user see, with the lab host stack's defaults (scores 4 / 6 /
15, greylist_delay 10s, tests/e2e/stack.py):

- GTUBE from the peer is refused at SMTP time with 5xx;
- a message that scores in the header band (rspamd's own score for it,
  asked on mx with the peer's address, is checked first) is greylisted on its
  first delivery, accepted on the retry after greylist_delay, and arrives with
  `X-Spam: Yes`, `X-Spamd-Result` and `X-Spam-Status`;
- a message in the greylist band gets 4xx on its first delivery, and the
  same message again after greylist_delay is accepted;
- a clean message that comes with a forged `X-Spam: Yes` arrives without it;
- alice submitting the very same messages on 587 is never greylisted nor
  refused, and her mail gets no X-Spam;
- rspamd's ports and Redis's answer on mx's loopback only: neither the peer
  nor the stranger reaches them, over IPv4 or IPv6;
- with `spam_filter: false` deployed, mail flows unjudged (GTUBE delivered
  without rspamd's headers); deployed with it again, GTUBE is refused again.

Every message carries a token of its own, so greylisting sees it for the first time.
"""

from __future__ import annotations

import email
import email.utils
import re
import time
import uuid

import pytest

from .conftest import run_client, wait_for
from .stack import LAB_GREYLIST_DELAY, LAB_RSPAMD_PASSWORD, password

OUTSIDE = "someone@example.net"  # the peer's sender address (SPF lets the peer send for it)
ALICE_COM = "alice@example.com"
ALICE_ORG = "alice@example.org"
GREYLIST_SECONDS = int(LAB_GREYLIST_DELAY.rstrip("s"))
REJECT, HEADER, GREYLIST = 15, 6, 4  # the lab host stack's scores (the defaults)
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SCAN = "rspamc -h 127.0.0.1:11333"
PORTS = {"Redis": 6379, "rspamd's milter": 11332, "rspamd's scanner": 11333, "rspamd's controller": 11334}


def clean(token: str, to: str = ALICE_COM, extra: str = "") -> str:
    """A well-formed message (Date, Message-ID, To, a plain text body)."""
    date = email.utils.formatdate(localtime=False)
    return (f"From: Someone <{OUTSIDE}>\r\nTo: <{to}>\r\nSubject: Lunch on Thursday {token}\r\n"
            f"Date: {date}\r\nMessage-ID: <{token}@example.net>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n{extra}\r\n"
            f"Hello Alice,\r\n\r\nshall we have lunch on Thursday at noon? The usual place.\r\n\r\n"
            f"Someone\r\n{token}\r\n")


def greylist_band(token: str, to: str = ALICE_COM) -> str:
    """No Date, no Message-ID, no To: enough to be greylisted, not enough to be marked."""
    return (f"From: Someone <{OUTSIDE}>\r\nSubject: Lunch on Thursday {token}\r\n\r\n"
            f"Hello Alice,\r\n\r\nshall we have lunch on Thursday at noon? The usual place.\r\n\r\n"
            f"Someone\r\n{token}\r\n")


def header_band(token: str, to: str = ALICE_COM) -> str:
    """As greylist_band, with a subject in capitals: enough to be marked, not to be refused."""
    return greylist_band(token, to).replace(f"Subject: Lunch on Thursday {token}",
                                            f"Subject: LUNCH ON THURSDAY {token.upper()}")


def gtube(token: str, to: str = ALICE_COM) -> str:
    return clean(token, to).replace("The usual place.", f"The usual place.\r\n{GTUBE}")


def score(lab, message: str, to: str = ALICE_COM, sender: str = OUTSIDE) -> tuple[float, str]:
    """rspamd's own score for `message` as if it came from the peer (its address and name, HELO, envelope)."""
    peer = lab.hosts["peer"].ipv4
    out = lab.ssh(f"{SCAN} -i {peer} --hostname peer.example.net --helo peer.example.net -F {sender} -r {to} "
                  "symbols", stdin=message).stdout
    found = re.search(r"^Score: (-?[0-9.]+) / ", out, re.MULTILINE)
    assert found, out
    return float(found[1]), out


def from_peer(lab, message: str, to: str = ALICE_COM, sender: str = OUTSIDE) -> dict:
    return run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from=sender,
                      rcpt_to=[to], message=message)


def new_sender(token: str) -> str:
    """An envelope sender of the peer's (SPF passes) that greylisting has not seen: once a
    sender, recipient and network passed, rspamd lets that triplet's next mail through at once."""
    return f"{token}@example.net"


def submitted(lab, message: str, to: str = ALICE_ORG, user: str = ALICE_COM) -> dict:
    """`message` submitted by `user` on 587 (STARTTLS, AUTH) from the client."""
    return run_client(lab, "client", "send", host=lab.mx.ipv4, port=587, helo="laptop.home.example",
                      mail_from=user, rcpt_to=[to], message=message, starttls=True, login=[user, password(user)])


def delivered(lab, login: str, token: str) -> email.message.Message | None:
    """The message with `token` in any of `login`'s folders (INBOX, or Junk once spam is filed there)."""
    for folder in ("INBOX", "Junk"):
        answer = run_client(lab, "client", "imap", host=lab.mx.ipv4, user=login, password=password(login),
                            folder=folder)
        assert answer["ok"], answer
        for text in answer["messages"]:
            if token in text:
                return email.message_from_string(text)
    return None


def accepted_after_greylisting(lab, message: str, sender: str, to: str = ALICE_COM) -> tuple[dict, dict | None]:
    """The first delivery's answer, and (when it was refused) the retry's once greylist_delay has passed."""
    first = from_peer(lab, message, to, sender)
    if first["ok"]:
        return first, None
    started = time.monotonic()
    time.sleep(GREYLIST_SECONDS + 2)
    retry = from_peer(lab, message, to, sender)
    # On a busy machine the retry may still come early by rspamd's clock: a sender retries again.
    while not retry["ok"] and retry.get("code", 0) // 100 == 4 and time.monotonic() - started < 120:
        time.sleep(5)
        retry = from_peer(lab, message, to, sender)
    return first, retry


@pytest.fixture(scope="module")
def mx(lab, world, deployment):
    return lab


def test_rspamd_and_redis_run_and_the_milter_is_postfixs(mx):
    out = mx.ssh("postconf -h smtpd_milters non_smtpd_milters").stdout.splitlines()
    assert out[0] == "unix:/opendkim/opendkim.sock, { inet:127.0.0.1:11332, default_action=tempfail }", out
    assert "11332" not in out[1], out
    assert mx.ssh("redis-cli -h 127.0.0.1 ping").stdout.strip() == "PONG"
    # The learning socket answers root without a password (S's scripts use it as vmail).
    assert "Messages scanned:" in mx.ssh("rspamc -h /run/rspamd/learn.sock stat").stdout


def test_gtube_from_the_peer_is_refused_with_5xx(mx):
    token = f"gtube-{uuid.uuid4().hex[:12]}"
    answer = from_peer(mx, gtube(token))
    assert not answer["ok"] and answer["stage"] == "data" and answer["code"] // 100 == 5, answer
    assert answer["error"].startswith("5.7.1 "), answer  # rspamd's reason: "Gtube pattern"
    assert delivered(mx, ALICE_COM, token) is None


def test_a_message_in_the_header_band_arrives_marked(mx):
    token = f"band-{uuid.uuid4().hex[:12]}"
    message, sender = header_band(token), new_sender(token)
    value, symbols = score(mx, message, sender=sender)
    assert HEADER <= value < REJECT, f"the test message must score from {HEADER} to below {REJECT}:\n{symbols}"
    first, retry = accepted_after_greylisting(mx, message, sender)
    # It scores above the greylist score too: greylisted first, then accepted.
    assert not first["ok"] and first["code"] // 100 == 4, first
    assert retry is not None and retry["ok"], retry
    arrived = wait_for(lambda: delivered(mx, ALICE_COM, token), timeout=60)
    assert arrived is not None, token
    assert arrived.get_all("X-Spam") == ["Yes"], arrived.items()
    assert arrived["X-Spam-Status"].startswith("Yes, score="), arrived.items()
    assert arrived["X-Spamd-Result"] is not None, arrived.items()


def test_a_first_delivery_in_the_greylist_band_gets_4xx_and_the_retry_is_accepted(mx):
    token = f"grey-{uuid.uuid4().hex[:12]}"
    message, sender = greylist_band(token), new_sender(token)
    value, symbols = score(mx, message, sender=sender)
    assert GREYLIST <= value < HEADER, f"the test message must score from {GREYLIST} to below {HEADER}:\n{symbols}"
    first, retry = accepted_after_greylisting(mx, message, sender)
    assert not first["ok"] and first["stage"] == "data" and first["code"] // 100 == 4, first
    assert "Try again later" in first["error"], first
    assert retry is not None and retry["ok"], retry
    arrived = wait_for(lambda: delivered(mx, ALICE_COM, token), timeout=60)
    assert arrived is not None, token
    # Greylisted, not marked: it scored below the header score.
    assert arrived.get_all("X-Spam") is None and arrived["X-Spam-Status"].startswith("No, score="), arrived.items()


def test_a_forged_x_spam_header_from_outside_is_removed(mx):
    token = f"forged-{uuid.uuid4().hex[:12]}"
    sender = new_sender(token)
    value, symbols = score(mx, clean(token), sender=sender)
    assert value < GREYLIST, f"the clean message must score below {GREYLIST}:\n{symbols}"
    # The forged header itself counts (rspamd's SPAM_FLAG): the message may be greylisted
    # first, but it is not marked.
    message = clean(token, extra="X-Spam: Yes\r\n")
    value, symbols = score(mx, message, sender=sender)
    assert value < HEADER, f"the clean message with X-Spam must score below {HEADER}:\n{symbols}"
    first, retry = accepted_after_greylisting(mx, message, sender)
    assert first["ok"] or (retry is not None and retry["ok"]), (first, retry)
    arrived = wait_for(lambda: delivered(mx, ALICE_COM, token), timeout=60)
    assert arrived is not None, token
    assert arrived.get_all("X-Spam") is None, arrived.items()
    assert arrived["X-Spam-Status"].startswith("No, score="), arrived.items()


@pytest.mark.parametrize("make", [greylist_band, header_band], ids=["greylist-band", "header-band"])
def test_a_users_submission_is_never_greylisted_nor_refused(mx, make):
    token = f"submit-{make.__name__}-{uuid.uuid4().hex[:12]}"
    answer = submitted(mx, make(token, ALICE_ORG))
    assert answer["ok"], answer  # at the first try: no 4xx, no 5xx
    arrived = wait_for(lambda: delivered(mx, ALICE_ORG, token), timeout=60)
    assert arrived is not None, token
    assert arrived.get_all("X-Spam") is None, arrived.items()


@pytest.mark.parametrize("source", ["peer", "stranger"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_redis_and_rspamd_are_not_reachable_from_outside(mx, source, family):
    address = getattr(mx.mx, family)
    assert mx.can_connect(source, address, 25), f"{source} cannot reach mx at all over {family}"
    reachable = [name for name, port in PORTS.items() if mx.can_connect(source, address, port)]
    assert reachable == [], f"{source} reaches {reachable} on {address}"


# Every listening TCP socket on mx, "address port" per line, from /proc (the lab's mx has no ss).
LISTENING = r"""
import socket, struct
for family, path in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
    for line in open(path).read().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":
            continue
        address, port = fields[1].split(":")
        raw = b"".join(struct.pack("<I", int(address[i:i + 8], 16)) for i in range(0, len(address), 8))
        print(socket.inet_ntop(family, raw), int(port, 16))
"""


def test_redis_and_rspamd_listen_on_loopback_only(mx):
    listening = [line.split() for line in mx.ssh("python3 -", stdin=LISTENING).stdout.splitlines()]
    for name, port in PORTS.items():
        local = [address for address, p in listening if int(p) == port]
        assert local, f"{name} does not listen on {port}"
        assert set(local) <= {"127.0.0.1", "::1"}, f"{name} listens on {local}"


def test_the_controller_over_tcp_wants_the_password_and_the_learning_socket_does_not(mx):
    """Loopback is not trusted (any local user could learn and use the web interface): TCP needs the
    password from mailstack:spam_controller_password; the unix socket is for root and vmail only."""
    for address in ("127.0.0.1:11334", "[::1]:11334"):
        without = mx.ssh(f"rspamc -h {address} stat", check=False)
        assert "Messages scanned:" not in without.stdout, without.stdout
        assert "403" in without.stdout + without.stderr or "nauthorized" in without.stdout + without.stderr, without
        # The password on rspamc's command line is this test's, on mx's own loopback.
        with_password = mx.ssh(f"rspamc -h {address} -P {LAB_RSPAMD_PASSWORD} stat", check=False)
        assert "Messages scanned:" in with_password.stdout, with_password
    socket = mx.ssh("stat -c '%a %U %G' /run/rspamd/learn.sock").stdout.split()
    assert socket == ["660", "_rspamd", "vmail"], socket
    # A local user outside the vmail group cannot connect to it.
    nobody = mx.ssh("setpriv --reuid=nobody --regid=nogroup --clear-groups rspamc -h /run/rspamd/learn.sock stat",
                    check=False)
    assert "Messages scanned:" not in nobody.stdout, nobody.stdout
    vmail = mx.ssh("setpriv --reuid=vmail --regid=vmail --init-groups rspamc -h /run/rspamd/learn.sock stat",
                   check=False)
    assert "Messages scanned:" in vmail.stdout, vmail


def test_while_rspamd_is_down_mail_waits_with_4xx_and_is_accepted_after(mx):
    """The milter's own default_action=tempfail: no mail passes unscanned, none is refused for good."""
    token = f"down-{uuid.uuid4().hex[:12]}"
    sender = new_sender(token)
    mx.ssh("service rspamd stop </dev/null >/dev/null 2>&1")
    try:
        answer = from_peer(mx, clean(token), sender=sender)
        assert not answer["ok"] and answer["code"] // 100 == 4, answer
    finally:
        # Its output to /dev/null: the daemon would hold the SSH session open.
        mx.ssh("service rspamd start </dev/null >/dev/null 2>&1")
        milter_up = "bash -c 'exec 3<>/dev/tcp/127.0.0.1/11332'"
        assert wait_for(lambda: mx.ssh(milter_up, check=False).returncode == 0, timeout=120)
    first, retry = accepted_after_greylisting(mx, clean(token), sender)
    assert first["ok"] or (retry is not None and retry["ok"]), (first, retry)
    arrived = wait_for(lambda: delivered(mx, ALICE_COM, token), timeout=60)
    assert arrived is not None and arrived["X-Spam-Status"].startswith("No, score="), token


def test_turned_off_mail_flows_unjudged_and_turned_on_again_it_is_judged(mx, deployment):
    """spam_filter: false (README, "Spam filtering"): Postfix no longer hands mail to rspamd, and mail
    still flows; deployed with the filter again, mail is judged again."""
    deployment.up_host(spam_filter=False)
    try:
        assert mx.ssh("postconf -h smtpd_milters").stdout.strip() == "unix:/opendkim/opendkim.sock"
        token = f"off-{uuid.uuid4().hex[:12]}"
        # GTUBE, which the filter refuses from anyone: taken and delivered, without rspamd's headers.
        answer = from_peer(mx, gtube(token))
        assert answer["ok"], answer
        arrived = wait_for(lambda: delivered(mx, ALICE_COM, token), timeout=60)
        assert arrived is not None, token
        assert arrived["X-Spamd-Result"] is None and arrived["X-Spam-Status"] is None, arrived.items()
    finally:
        deployment.up_host()
    token = f"on-again-{uuid.uuid4().hex[:12]}"
    answer = from_peer(mx, gtube(token))
    assert not answer["ok"] and answer["code"] // 100 == 5, answer
