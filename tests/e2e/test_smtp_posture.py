"""What mx's SMTP server says to the Internet: the guide's restrictions, seen from peer, stranger and client.

Every rejection is asserted by the reply code and the text a mail admin looks
for in a transcript. The guide sets smtpd_delay_reject = yes, so client, HELO
and sender restrictions all show at RCPT TO, not earlier.

The guide also makes Postfix slow down after one error (smtpd_soft_error_limit
= 1: every later reply waits smtpd_error_sleep_time = 8s) and hang up after
three; so each dialog here makes at most one mistake, except the one that tests
those limits (with a shorter sleep).

Tests that need other settings redeploy the host stack with them and restore
it afterwards, even when they fail (`redeployed`): the deployment is shared
by the whole session. The settings here are all the host's: they hold for
every domain on it.
"""

from __future__ import annotations

import base64
import re
import uuid
from contextlib import contextmanager

from .conftest import PEER_DOMAIN, run_client
from .stack import HOSTNAME, password

BANNER = f"{HOSTNAME} ESMTP Postfix"  # the guide's smtpd_banner = $myhostname ESMTP $mail_name
PEER_HELO = "peer.example.net"  # peer's name, with forward-confirmed reverse DNS
LAPTOP_HELO = "laptop.example.org"  # what a mail user's machine calls itself
SENDER = f"someone@{PEER_DOMAIN}"  # a sender at peer's domain (resolvable, SPF allows peer)
LOCAL_USER = "alice@example.com"
OTHER_DOMAIN_USER = "alice@example.org"  # a user of the host's other domain
FOREIGN = f"friend@{PEER_DOMAIN}"  # at a domain mx is not the final destination for
NXDOMAIN = "nowhere.example.com"  # the lab DNS answers NXDOMAIN for it
ALICE = (LOCAL_USER, password(LOCAL_USER))


# --- dialogs -------------------------------------------------------------------------------


def dialog(lab, on: str, lines: list[str], port: int = 25, **args) -> dict:
    """A raw SMTP dialog with mx from lab host `on` (mailclient.dialog's answer)."""
    return run_client(lab, on, "dialog", host=lab.mx.ipv4, port=port, lines=lines, **args)


def rcpt_reply(lab, on: str, sender: str = SENDER, recipient: str = LOCAL_USER, helo: str = PEER_HELO,
               greeting: str = "EHLO") -> list:
    """The reply to RCPT TO on port 25 after EHLO and MAIL FROM, which must both be accepted:
    with smtpd_delay_reject every restriction (client, HELO, sender, relay, recipient) shows here."""
    answer = dialog(lab, on, [f"{greeting} {helo}", f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>"])
    greeted, mail, rcpt = answer["replies"]
    assert greeted[0] == 250 and mail[0] == 250, f"refused before RCPT TO (smtpd_delay_reject = yes): {answer}"
    return rcpt


def submission_rcpt_reply(lab, on: str, sender: str, recipient: str) -> list:
    """The reply to RCPT TO on 587 after STARTTLS and AUTH PLAIN as alice (MAIL FROM accepted)."""
    token = base64.b64encode(f"\0{ALICE[0]}\0{ALICE[1]}".encode()).decode()
    answer = dialog(lab, on, [f"AUTH PLAIN {token}", f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>"], port=587,
                    starttls=True, tls_first_ehlo=LAPTOP_HELO)
    auth, mail, rcpt = answer["replies"]
    assert auth[0] == 235, f"AUTH as alice after STARTTLS failed: {answer}"
    assert mail[0] == 250, answer
    return rcpt


def submit(lab, on: str, rcpt_to: list[str], subject: str, body: str = "From the lab.", quit: bool = True) -> dict:
    """A message from alice on 587 with STARTTLS and AUTH (smtplib), as a mail client sends it.
    quit=False: hang up without QUIT, whose reply Postfix delays after an error."""
    message = f"From: {LOCAL_USER}\r\nTo: {', '.join(rcpt_to)}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    return run_client(lab, on, "send", host=lab.mx.ipv4, port=587, helo=LAPTOP_HELO, starttls=True,
                      login=list(ALICE), mail_from=LOCAL_USER, rcpt_to=rcpt_to, message=message, quit=quit)


def relay_reply(lab, on: str = "peer") -> list:
    """RCPT TO a foreign domain without AUTH, on port 25."""
    return rcpt_reply(lab, on, recipient=f"nobody@{uuid.uuid4().hex[:8]}.{PEER_DOMAIN}")


def ehlo_keywords(lab, on: str = "peer") -> list[str]:
    answer = dialog(lab, on, [f"EHLO {PEER_HELO}"])
    return answer["replies"][0][1].splitlines()[1:]


def assert_reply(reply: list, code: int, *texts: str) -> None:
    assert reply[0] == code and all(t in reply[1] for t in texts), f"expected {code} {texts}, got {reply}"


@contextmanager
def redeployed(lab, deployment, **overrides):
    """The host stack redeployed with `overrides`; restored afterwards, whatever happens."""
    deployment.up_host(**overrides)
    try:
        yield deployment
    finally:
        deployment.up_host()


# --- 3. HELO ----------------------------------------------------------------------------------


def test_helo_is_required_and_must_be_a_valid_fully_qualified_name(lab, deployment):
    # smtpd_helo_required: MAIL FROM without HELO/EHLO is refused, on 25 and on 587.
    for on, port in (("peer", 25), ("client", 587)):
        answer = dialog(lab, on, [f"MAIL FROM:<{SENDER}>"], port=port)
        assert_reply(answer["replies"][0], 503, "5.5.1", "send HELO/EHLO first")

    # reject_invalid_helo_hostname: accepted at EHLO, rejected at RCPT TO (smtpd_delay_reject).
    assert_reply(rcpt_reply(lab, "peer", helo="[bad"), 501, "5.5.2 <[bad>: Helo command rejected: invalid ip address")
    assert_reply(rcpt_reply(lab, "peer", helo="foo..bar"), 501, "5.5.2 <foo..bar>: Helo command rejected: Invalid name")
    # reject_non_fqdn_helo_hostname, after EHLO and after HELO.
    for greeting in ("EHLO", "HELO"):
        assert_reply(rcpt_reply(lab, "peer", helo="peer", greeting=greeting), 504,
                     "5.5.2 <peer>: Helo command rejected: need fully-qualified hostname")

    # The same dialog with a proper name is accepted, for a user of either domain.
    assert_reply(rcpt_reply(lab, "peer"), 250, "2.1.5 Ok")
    assert_reply(rcpt_reply(lab, "peer", recipient=OTHER_DOMAIN_USER), 250, "2.1.5 Ok")


# --- 4. clients without forward-confirmed reverse DNS ----------------------------------------------


def test_client_without_reverse_dns_is_refused_on_25_but_submits_on_587_with_auth(lab, world, deployment):
    # reject_unknown_client_hostname: stranger has no PTR. unknown_client_reject_code is 450.
    for recipient in (LOCAL_USER, OTHER_DOMAIN_USER, FOREIGN):
        assert_reply(rcpt_reply(lab, "stranger", helo="stranger.example.org", recipient=recipient), 450,
                     "4.7.25 Client host rejected: cannot find your hostname, [198.51.100.30]")
    # peer, with forward-confirmed reverse DNS, passes.
    assert_reply(rcpt_reply(lab, "peer"), 250, "2.1.5 Ok")
    # The host key unknown_client_reject_code makes it a permanent refusal; peer still passes.
    with redeployed(lab, deployment, unknown_client_reject_code=550):
        assert_reply(rcpt_reply(lab, "stranger", helo="stranger.example.org"), 550,
                     "5.7.25 Client host rejected: cannot find your hostname, [198.51.100.30]")
        assert_reply(rcpt_reply(lab, "peer"), 250, "2.1.5 Ok")
    assert_reply(rcpt_reply(lab, "stranger", helo="stranger.example.org"), 450, "4.7.25 Client host rejected")

    # On submission the client restriction is removed: STARTTLS + AUTH as alice, to a local user and abroad.
    subject = f"stranger submits {uuid.uuid4()}"
    relayed_before = world.count()
    sent = submit(lab, "stranger", ["carol@example.com", OTHER_DOMAIN_USER, FOREIGN], subject)
    assert sent["ok"], sent
    assert sent["code"] == 250 and not sent["auth_before_tls"], sent
    assert any(subject in m for m in world.received(since=relayed_before)), "mx did not relay it to example.net"


# --- 5. sender and recipient domains ----------------------------------------------------------------


def test_non_fqdn_or_unresolvable_sender_and_recipient_domains_are_rejected(lab, deployment):
    # Port 25 (peer): reject_non_fqdn_sender, reject_unknown_sender_domain, reject_non_fqdn_recipient.
    assert_reply(rcpt_reply(lab, "peer", sender="someone@nowhere"), 504,
                 "5.5.2 <someone@nowhere>: Sender address rejected: need fully-qualified address")
    # A domain that does not exist (NXDOMAIN) will not exist on a retry: 550 (unknown_address_reject_code).
    assert_reply(rcpt_reply(lab, "peer", sender=f"someone@{NXDOMAIN}"), 550,
                 f"5.1.8 <someone@{NXDOMAIN}>: Sender address rejected: Domain not found")
    assert_reply(rcpt_reply(lab, "peer", recipient="alice"), 504,
                 "5.5.2 <alice>: Recipient address rejected: need fully-qualified address")
    # An unresolvable recipient domain on 25 is someone else's domain: relaying is refused first.
    assert_reply(rcpt_reply(lab, "peer", recipient=f"someone@{NXDOMAIN}"), 554, "5.7.1", "Relay access denied")

    # Port 587 (client, authenticated, so relaying is allowed): the recipient domain checks decide.
    assert_reply(submission_rcpt_reply(lab, "client", LOCAL_USER, "someone@nowhere"), 504,
                 "5.5.2 <someone@nowhere>: Recipient address rejected: need fully-qualified address")
    assert_reply(submission_rcpt_reply(lab, "client", LOCAL_USER, f"someone@{NXDOMAIN}"), 550,
                 f"5.1.2 <someone@{NXDOMAIN}>: Recipient address rejected: Domain not found")
    assert_reply(submission_rcpt_reply(lab, "client", LOCAL_USER, FOREIGN), 250, "2.1.5 Ok")


# --- 6. no open relay -----------------------------------------------------------------------------


def test_relaying_without_auth_is_refused(lab, deployment):
    # peer passes the client checks, then reject_unauth_destination refuses the foreign recipient.
    assert_reply(rcpt_reply(lab, "peer", recipient=FOREIGN), 554, f"5.7.1 <{FOREIGN}>: Relay access denied")
    # stranger is refused anyway (no reverse DNS), foreign recipient or not.
    assert_reply(rcpt_reply(lab, "stranger", helo="stranger.example.org", recipient=FOREIGN), 450,
                 "Client host rejected: cannot find your hostname")
    # On 587 without AUTH (client): permit_sasl_authenticated, reject.
    answer = dialog(lab, "client", [f"EHLO {LAPTOP_HELO}", f"MAIL FROM:<{LOCAL_USER}>", f"RCPT TO:<{FOREIGN}>"],
                    port=587)
    assert_reply(answer["replies"][2], 554, f"5.7.1 <{FOREIGN}>: Recipient address rejected: Access denied")


# --- 7. VRFY, ETRN (refused, and not offered), banner ----------------------------------------------------------------------


def test_vrfy_and_etrn_are_refused_and_the_banner_hides_version_and_os(lab, deployment):
    assert_reply(dialog(lab, "peer", [f"EHLO {PEER_HELO}", "VRFY alice"])["replies"][1], 502,
                 "5.5.1 VRFY command is disabled")
    assert_reply(dialog(lab, "peer", [f"EHLO {PEER_HELO}", "VRFY alice@example.org"])["replies"][1], 502,
                 "5.5.1 VRFY command is disabled")
    for domain in ("example.com", "example.org"):
        assert_reply(dialog(lab, "peer", [f"EHLO {PEER_HELO}", f"ETRN {domain}"])["replies"][1], 554,
                     f"5.7.1 <{domain}>: Etrn command rejected: Access denied")
    # ... and, refused, it is not offered: not in EHLO on 25 or 587, before or after STARTTLS
    # (smtpd_discard_ehlo_keywords). What else EHLO says is as before.
    for on, port, helo in (("peer", 25, PEER_HELO), ("client", 587, LAPTOP_HELO)):
        before = dialog(lab, on, [f"EHLO {helo}"], port=port)["replies"][0][1].splitlines()[1:]
        after = dialog(lab, on, [], port=port, starttls=True, tls_first_ehlo=helo)["ehlo_after_tls"][1].splitlines()[1:]
        for keywords in (before, after):
            assert not [k for k in keywords if k.upper().startswith("ETRN")], f"{on} → {port}: {keywords}"
            assert "PIPELINING" in keywords and "8BITMIME" in keywords, f"{on} → {port}: {keywords}"
        assert "STARTTLS" in before, f"{on} → {port}: {before}"

    for on, port in (("peer", 25), ("stranger", 25), ("client", 587)):
        banner = dialog(lab, on, [], port=port)["banner"]
        assert banner == [220, BANNER], f"{on} → {port}: {banner}"
        assert "Debian" not in banner[1] and "(" not in banner[1] and not re.search(r"\d", banner[1]), banner


# --- 8. pipelining ------------------------------------------------------------------------------


def test_pipelining_is_rejected_unless_ehlo_announced_it(lab, deployment):
    envelope = [f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{LOCAL_USER}>", "DATA"]
    # HELO announces no PIPELINING: the whole transaction in one write → DATA refused.
    answer = dialog(lab, "peer", [f"HELO {PEER_HELO}", *envelope], pipeline=True)
    assert [r[0] for r in answer["replies"][:3]] == [250, 250, 250], answer
    assert_reply(answer["replies"][3], 503,
                 "5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining")

    # After EHLO (PIPELINING announced), the same envelope in one write is fine.
    answer = dialog(lab, "peer", envelope, pipeline=True, starttls=True, tls_first_ehlo=PEER_HELO)
    assert "PIPELINING" in answer["ehlo_after_tls"][1].splitlines(), answer
    assert [r[0] for r in answer["replies"]] == [250, 250, 354], answer


# --- 12. message size -------------------------------------------------------------------------------


def test_message_over_message_size_limit_is_refused_at_data(lab, deployment):
    assert "SIZE 25000000" in ehlo_keywords(lab), "the guide's 25 MB limit is not announced"
    big = "\r\n".join(["x" * 75] * 400)  # 30 kB in lines of proper length
    with redeployed(lab, deployment, message_size_limit=20_000):
        assert "SIZE 20000" in ehlo_keywords(lab)
        # From peer on 25 (MAIL FROM without SIZE=, so the limit bites at the end of DATA) ...
        sent = run_client(lab, "peer", "send", host=lab.mx.ipv4, helo=PEER_HELO, mail_from=SENDER,
                          rcpt_to=[LOCAL_USER], message=f"Subject: too big\r\n\r\n{big}\r\n", quit=False)
        assert (sent["ok"], sent["stage"], sent["code"]) == (False, "data", 552), sent
        assert "5.3.4 Error: message file too big" in sent["error"], sent
        # A client that declares the size (MAIL FROM ... SIZE=) is refused at once.
        answer = dialog(lab, "peer", [f"EHLO {PEER_HELO}", f"MAIL FROM:<{SENDER}> SIZE={len(big)}"])
        assert_reply(answer["replies"][1], 552, "5.3.4 Message size exceeds fixed limit")
        # ... and from a mail user on 587; a message under the limit still goes through.
        sent = submit(lab, "client", ["carol@example.com"], "too big", body=big, quit=False)
        assert (sent["ok"], sent["stage"], sent["code"]) == (False, "data", 552), sent
        assert "5.3.4 Error: message file too big" in sent["error"], sent
        assert submit(lab, "client", ["carol@example.com"], "small enough", body=big[:10_000])["ok"]
    assert "SIZE 25000000" in ehlo_keywords(lab), "message_size_limit was not restored"


# --- 13. soft_bounce ----------------------------------------------------------------------------------


def test_soft_bounce_turns_policy_rejections_into_4xx(lab, deployment):
    assert_reply(relay_reply(lab), 554, "5.7.1", "Relay access denied")
    with redeployed(lab, deployment, soft_bounce=True):
        # Postfix turns the leading 5 of the reply (and of its enhanced status code) into a 4.
        assert_reply(relay_reply(lab), 454, "4.7.1", "Relay access denied")
        assert_reply(rcpt_reply(lab, "peer", sender="someone@nowhere"), 404,
                     "Sender address rejected: need fully-qualified address")
    assert_reply(relay_reply(lab), 554, "5.7.1", "Relay access denied")


# --- 14. error limits -----------------------------------------------------------------------------------


def test_after_one_error_replies_are_delayed_and_the_third_error_disconnects(lab, deployment):
    sleep = 2  # seconds; the guide's 8s, shortened for the suite's sake
    with redeployed(lab, deployment, smtpd_error_sleep_time=f"{sleep}s"):
        answer = dialog(lab, "peer", [
            f"EHLO {PEER_HELO}",
            f"MAIL FROM:<{SENDER}>",
            f"RCPT TO:<one@{PEER_DOMAIN}>",  # error 1 (relay denied): soft limit reached
            "NOOP",  # not an error, but delayed all the same
            f"RCPT TO:<two@{PEER_DOMAIN}>",  # error 2
            f"RCPT TO:<three@{PEER_DOMAIN}>",  # error 3: hard limit
        ], linger=3 * sleep)
    codes = [r[0] for r in answer["replies"]]
    assert codes == [250, 250, 554, 250, 554, 554], answer
    fast, slow = answer["seconds"][:3], answer["seconds"][3:]
    assert all(s < 1 for s in fast), f"replies up to the first error should not be delayed: {answer['seconds']}"
    assert all(s >= sleep for s in slow), f"replies after the first error should wait {sleep}s: {answer['seconds']}"
    # After the third error Postfix says why and hangs up, unasked.
    assert len(answer["after"]) == 1, answer
    assert_reply(answer["after"][0], 421, f"4.7.0 {HOSTNAME} Error: too many errors")
    assert answer["closed"], answer
    # The guide's values are back.
    settings = lab.ssh("postconf -h smtpd_error_sleep_time smtpd_soft_error_limit smtpd_hard_error_limit").stdout
    assert settings.split() == ["8s", "1", "3"], settings
