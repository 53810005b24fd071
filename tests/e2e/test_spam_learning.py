"""Learning from Junk and filing spam into it (README, "Learning from Junk"), on the lab's mx
with rspamd (mailstack:spam_filter, on by default).

What a user sees, and what rspamd counts:

- a message moved into Junk over IMAP raises rspamd's learned-spam count
  (`rspamc stat`, read on mx), moved out of Junk raises its learned-ham count;
  each time the learning program logs rspamd's answer in the mail log;
- a message rspamd puts in its header band arrives with X-Spam: Yes and is
  filed into Junk; one that only claims X-Spam: Yes from outside is not;
- a user whose own Sieve script files such a message keeps it where the script
  says; normal mail stays in INBOX.

rspamd's Bayes classifier learns only a message with enough words, and never
the same message twice as one class: each message here is a paragraph of text
with its own token. rspamd refreshes the counts `rspamc stat` shows from
Redis about once a minute: the tests poll for up to three minutes.

The module leaves carol@example.com as it found her: her script as it was,
none of its messages in her mailbox.
"""

from __future__ import annotations

import email.utils
import re
import time
import uuid

import pytest

from components import paths
from components.services import rspamd

from .conftest import run_client, wait_for
from .stack import password, stack_users
from .test_submission import OUTSIDE

COM = "example.com"
CAROL = "carol@example.com"
PARAGRAPH = (
    "The committee met on Tuesday to review the harbour budget, the timetable for the new pier and "
    "the contracts for dredging the northern channel. Several members asked for a clearer summary of "
    "the environmental survey before the next meeting, and the engineers agreed to present revised "
    "drawings within two weeks. Please read the attached notes and send your comments to the "
    "secretary by Friday, so that the minutes can be approved at the start of next month."
)
# carol's own script for the last test: she files what rspamd marked into a folder of her choice.
OWN_SIEVE = """require ["fileinto", "mailbox"];

if header :is "X-Spam" "Yes" {
    fileinto :create "Suspect";
    stop;
}
"""


def message(token: str, extra_headers: str = "") -> str:
    """A well-formed message with a paragraph of text: rspamd finds nothing wrong with it."""
    return (f"From: Harbour Office <{OUTSIDE}>\r\nTo: <{CAROL}>\r\nSubject: Harbour committee {token}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{token}@example.net>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n{extra_headers}\r\n"
            f"Dear Carol,\r\n\r\n{PARAGRAPH}\r\n\r\nHarbour Office\r\n{token}\r\n")


def header_band(token: str) -> str:
    """No Date, no Message-ID, no To, a subject in capitals: rspamd's header symbols add up to its
    header band with the lab's scores (tests/e2e/test_spam_filter.py's message, whose score that
    module checks; the same text here)."""
    return (f"From: <{OUTSIDE}>\r\nSubject: FREE MONEY WAITING FOR YOU NOW {token.upper()}\r\n\r\n"
            f"Claim your free money now, click here.\r\n{token}\r\n")


def from_peer(lab, text: str) -> None:
    """`text` from the peer to carol; a 4xx (greylisting) is retried, as a mail server does."""
    deadline = time.monotonic() + 180
    while True:
        answer = run_client(lab, "peer", "send", host=lab.mx.ipv4, helo="peer.example.net", mail_from=OUTSIDE,
                            rcpt_to=[CAROL], message=text)
        if answer["ok"] or answer["code"] // 100 != 4 or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert answer["ok"], answer


def folder(lab, name: str) -> list[str]:
    answer = run_client(lab, "client", "imap", host=lab.mx.ipv4, user=CAROL, password=password(CAROL),
                        folder=name)
    assert answer["ok"], answer
    return answer["messages"]


def arrived(lab, token: str, timeout: float = 120) -> str:
    """The folder of carol's mailbox the message arrived in (waited for)."""
    def where():
        for name in ("INBOX", "Junk", "Suspect"):
            if any(token in m for m in folder(lab, name)):
                return name
        return None

    found = wait_for(where, timeout=timeout, every=1)
    assert found, f"{token} did not arrive"
    return found


def move(lab, token: str, source: str, target: str) -> None:
    answer = run_client(lab, "client", "move", host=lab.mx.ipv4, user=CAROL, password=password(CAROL),
                        subject=token, source=source, target=target)
    assert answer["ok"] and answer["moved"] == 1, answer


def learned(lab) -> dict[str, int]:
    """rspamd's learned counts per class, from `rspamc stat` on mx."""
    out = lab.ssh(rspamd.STAT_COMMAND, timeout=120).stdout
    counts = {}
    for symbol, kind in (("BAYES_SPAM", "spam"), ("BAYES_HAM", "ham")):
        found = re.search(rf"Statfile: {symbol} .*?learned: (\d+)", out)
        assert found, out
        counts[kind] = int(found[1])
    return counts


SENT: list[str] = []


def new_token(kind: str) -> str:
    SENT.append(f"{kind}-{uuid.uuid4().hex[:12]}")
    return SENT[-1]


def learn_log(lab, kind: str) -> int:
    """How many times the mail log says mailstack-learn had a message of carol's learned as `kind`."""
    pattern = f"{paths.LEARN_PROGRAM}.*: learned as {kind} for {CAROL}: .*success = true"
    out = lab.ssh(f"grep -c -e '{pattern}' {paths.SYSLOG_MAIL}", check=False).stdout.strip()
    return int(out or 0)


@pytest.fixture(scope="module")
def mx(lab, deployment):
    """The deployed mx; at the end, the module's messages leave carol's mailbox."""
    yield lab
    for token in SENT:
        lab.ssh(f"doveadm expunge -u {CAROL} mailbox '*' body {token}", check=False)


def test_moving_into_junk_learns_spam_and_out_of_it_ham(mx):
    token = new_token("learn")
    from_peer(mx, message(token))
    assert arrived(mx, token) == "INBOX"
    before, logged = learned(mx), {kind: learn_log(mx, kind) for kind in ("spam", "ham")}
    move(mx, token, "INBOX", "Junk")
    # Learned through Dovecot's pipe (its program logs rspamd's answer), and counted by rspamd.
    assert wait_for(lambda: learn_log(mx, "spam") > logged["spam"], timeout=60), "mailstack-learn logged nothing"
    after_spam = wait_for(lambda: (c := learned(mx))["spam"] > before["spam"] and c, timeout=180, every=3)
    assert after_spam, (before, learned(mx))
    move(mx, token, "Junk", "INBOX")
    assert wait_for(lambda: learn_log(mx, "ham") > logged["ham"], timeout=60), "mailstack-learn logged nothing"
    after_ham = wait_for(lambda: (c := learned(mx))["ham"] > after_spam["ham"] and c, timeout=180, every=3)
    assert after_ham, (after_spam, learned(mx))
    assert any(token in m for m in folder(mx, "INBOX"))


def test_normal_mail_stays_in_the_inbox(mx):
    token = new_token("normal")
    from_peer(mx, message(token))
    assert arrived(mx, token) == "INBOX"
    assert not any(token in m for m in folder(mx, "Junk"))


def test_spam_in_the_header_band_is_filed_into_junk(mx):
    token = new_token("junk")
    from_peer(mx, header_band(token))
    assert arrived(mx, token) == "Junk"
    (filed,) = [m for m in folder(mx, "Junk") if token in m]
    assert re.search(r"(?m)^X-Spam: Yes\r?$", filed), filed[:3000]
    assert re.search(r"(?m)^X-Spamd-Result: ", filed), filed[:3000]


def test_an_x_spam_header_from_outside_is_not_believed(mx):
    token = new_token("forged")
    from_peer(mx, message(token, extra_headers="X-Spam: Yes\r\n"))
    assert arrived(mx, token) == "INBOX"


def test_a_users_own_script_decides_where_spam_goes(mx, deployment):
    users = stack_users(mx, COM)
    carol = next(u for u in users if u["name"] == "carol")
    carol["sieve"] = OWN_SIEVE
    deployment.up_domain(COM, users=users)
    try:
        token = new_token("own")
        from_peer(mx, header_band(token))
        assert arrived(mx, token) == "Suspect"
        assert not any(token in m for m in folder(mx, "Junk"))
    finally:
        deployment.up_domain(COM)
        # A script taken out of the config stays on the host (units never delete): removed here.
        home = paths.mailbox_home(COM, "carol")
        mx.ssh(f"rm -f {home}/{paths.USER_SIEVE_NAME} {home}/.dovecot.svbin")
