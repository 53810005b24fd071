"""What Postfix tells others, as Postfix itself reads the rendered files.

The guide's loose ends (README, "What Postfix tells others" and "Where
mailstack departs from the guide"): ETRN is not offered, a sender or
recipient domain that does not exist gets a permanent 550, a client without
forward-confirmed reverse DNS gets the host's unknown_client_reject_code, and
mail a user submits loses the user's own address from its first Received
header while port 25's mail keeps its. `postconf -n`/`-P` read the rendered
main.cf and master.cf; `postmap -q` asks the rendered header_checks table
with headers as smtpd writes them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components import paths
from components.services import postfix
from tests.conftest import stack_config

pytestmark = pytest.mark.skipif(shutil.which("postconf") is None or shutil.which("postmap") is None,
                                reason="Postfix is not installed (scripts/setup installs it)")

HOST_STACK = "host-mail"


def rendered(tmp_path: Path, **overrides) -> Path:
    """The host stack's Postfix files in a config folder of their own."""
    folder = tmp_path / "postfix"
    folder.mkdir()
    for f in postfix.files(stack_config(HOST_STACK, **overrides)):
        if f.path.startswith(paths.POSTFIX_DIR + "/"):
            (folder / Path(f.path).name).write_text(f.content)
    return folder


def postconf(folder: Path, *args: str) -> dict[str, str]:
    result = subprocess.run(["postconf", "-c", str(folder), *args], capture_output=True, text=True, check=True)
    assert result.stderr == "", result.stderr
    return dict(line.split(" = ", 1) if " = " in line else (line.rstrip(" ="), "")
                for line in result.stdout.splitlines())


# --- main.cf -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, {"smtpd_discard_ehlo_keywords": "silent-discard, etrn", "smtpd_etrn_restrictions": "reject",
              "unknown_address_reject_code": "550", "unknown_client_reject_code": "450"}),
        ({"unknown_client_reject_code": 550}, {"unknown_client_reject_code": "550"}),
    ],
)
def test_main_cf_says_what_postfix_tells_others(tmp_path, overrides, expected):
    settings = postconf(rendered(tmp_path, **overrides), "-n")
    assert {name: settings.get(name) for name in expected} == expected


# Each restriction whose reply Postfix leaves at a temporary 450 by default, and the
# parameter that decides it (postconf(5)).
TEMPORARY_BY_DEFAULT = {
    "reject_unknown_client_hostname": "unknown_client_reject_code",
    "reject_unknown_reverse_client_hostname": "unknown_client_reject_code",
    "reject_unknown_sender_domain": "unknown_address_reject_code",
    "reject_unknown_recipient_domain": "unknown_address_reject_code",
    "reject_unknown_helo_hostname": "unknown_hostname_reject_code",
    "reject_unknown_hostname": "unknown_hostname_reject_code",
    "reject_unverified_sender": "unverified_sender_reject_code",
    "reject_unverified_recipient": "unverified_recipient_reject_code",
}


def test_every_restriction_in_use_has_its_reply_decided(tmp_path):
    """A restriction answering 450 unless told otherwise is used only with its code set in main.cf."""
    folder = rendered(tmp_path)
    main = postconf(folder, "-n")
    restrictions = " ".join(value for name, value in main.items() if name.endswith("_restrictions"))
    restrictions += " " + " ".join(value for name, value in postconf(folder, "-P").items()
                                   if name.endswith("_restrictions"))
    used = {word for word in re.split(r"[\s,]+", restrictions) if word in TEMPORARY_BY_DEFAULT}
    assert used == {"reject_unknown_client_hostname", "reject_unknown_sender_domain",
                    "reject_unknown_recipient_domain"}, used
    undecided = {r: TEMPORARY_BY_DEFAULT[r] for r in used if TEMPORARY_BY_DEFAULT[r] not in main}
    assert undecided == {}


# --- master.cf: submission's own cleanup -----------------------------------------------------------


def test_only_submission_uses_the_cleanup_that_hides_the_client(tmp_path):
    folder = rendered(tmp_path)
    services = postconf(folder, "-P")
    assert services["submission/inet/cleanup_service_name"] == "submission-cleanup"
    assert services["submission-cleanup/unix/header_checks"] == f"regexp:{paths.SUBMISSION_HEADER_CHECKS}"
    assert services["submission-cleanup/unix/nested_header_checks"] == ""
    # Port 25 and the host's own mail (pickup) go through the stock cleanup, with no header_checks.
    assert not any(name.startswith(("smtp/inet/", "pickup/unix/", "cleanup/unix/")) and
                   name.endswith(("cleanup_service_name", "header_checks")) for name in services)
    assert "header_checks" not in postconf(folder, "-n")


# --- the header_checks table, asked as cleanup asks it -----------------------------------------------

TLS = ("\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"
       "\t key-exchange X25519 server-signature RSA-PSS (4096 bits) server-digest SHA256)\n"
       "\t(No client certificate requested)\n")
TAIL = "\tby mail.example.net (Postfix) with ESMTPSA id 4QmZ3X1b2cz9sT\n\tfor <bob@example.org>; Thu,  3 Dec 2026 06:00:00 +0000 (UTC)"

SUBMITTED = [
    pytest.param("laptop.home", "unknown", "198.51.100.30", TLS, id="ipv4-no-reverse-dns"),
    pytest.param("[198.51.100.30]", "dsl-30.isp.example", "198.51.100.30", TLS, id="address-literal-helo"),
    pytest.param("phone", "unknown", "IPv6:2001:db8::30", TLS, id="ipv6"),
    pytest.param("we(ird)[helo]", "unknown", "198.51.100.30", "", id="odd-helo-no-tls-details"),
]


def query(tmp_path: Path, header: str) -> subprocess.CompletedProcess:
    table = rendered(tmp_path) / Path(paths.SUBMISSION_HEADER_CHECKS).name
    return subprocess.run(["postmap", "-q", header, f"regexp:{table}"], capture_output=True, text=True)


@pytest.mark.parametrize(("helo", "rdns", "address", "tls"), SUBMITTED)
def test_a_submitted_mails_received_header_loses_the_client(tmp_path, helo, rdns, address, tls):
    header = f"Received: from {helo} ({rdns} [{address}])\n{tls}{TAIL}"
    result = query(tmp_path, header)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    # REPLACE with the header as it goes on: our host, the queue id, the date (and TLS) kept.
    assert result.stdout == f"REPLACE Received: from authenticated-user\n{tls}{TAIL}\n"
    for leak in (helo, rdns, address.removeprefix("IPv6:")):
        assert leak not in result.stdout.removeprefix("REPLACE ")


@pytest.mark.parametrize(
    "header",
    [
        # Port 25: an MTA's (with or without TLS), as smtpd writes them; never rewritten.
        f"Received: from peer.example.org (peer.example.org [198.51.100.20])\n{TLS}"
        "\tby mail.example.net (Postfix) with ESMTPS id 4QmZ3X1b2cz9sT\n\tfor <bob@example.org>; Thu",
        "Received: from peer.example.org (peer.example.org [198.51.100.20])\n"
        "\tby mail.example.net (Postfix) with ESMTP id 4QmZ3X1b2cz9sT; Thu",
        # The host's own mail (pickup).
        "Received: by mail.example.net (Postfix, from userid 0)\n\tid 4QmZ3X1b2cz9sT; Thu",
        # Other headers that mention ESMTPSA.
        "Subject: Received: from laptop (unknown [198.51.100.30]) by x with ESMTPSA id 1",
    ],
)
def test_other_headers_are_left_alone(tmp_path, header):
    result = query(tmp_path, header)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")
