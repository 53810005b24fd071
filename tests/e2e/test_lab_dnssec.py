"""The lab's DNSSEC (tests/e2e/dnssec.py): what DANE tests stand on.

Knot signs example.net; the lab's validating resolver, anchored at that zone's
DS, vouches (AD) for its answers, refuses a forged one, and leaves the unsigned
zones insecure (no AD), as the Internet's resolvers do.
"""

from __future__ import annotations

import pytest

from . import dnssec


@pytest.fixture(scope="module")
def signed(lab):
    # The lab signs example.net and starts its resolver when it comes up (dnssec.secure_the_lab).
    return lab.dnssec_anchors


def test_a_signed_zone_validates_and_an_unsigned_one_does_not(lab, signed):
    lab.dns_update("example.net", "dnssec-probe", "A", 300, "198.51.100.99", replace=True)
    lab.dns_update("example.org", "dnssec-probe", "A", 300, "198.51.100.98", replace=True)
    secure = dnssec.validated_query(lab, "dnssec-probe.example.net", "A", from_host="peer")
    insecure = dnssec.validated_query(lab, "dnssec-probe.example.org", "A", from_host="peer")
    assert signed["example.net"], "no DS for example.net"
    assert (secure["rcode"], [r["text"] for r in secure["records"]], secure["ad"]) == (
        "NOERROR", ["198.51.100.99"], True)
    assert (insecure["rcode"], [r["text"] for r in insecure["records"]], insecure["ad"]) == (
        "NOERROR", ["198.51.100.98"], False)


def test_a_record_added_later_is_signed_too(lab, signed):
    lab.dns_update("example.net", "_25._tcp.dnssec-probe", "TLSA", 300, "3 1 1 " + "ab" * 32, replace=True)
    answer = dnssec.validated_query(lab, "_25._tcp.dnssec-probe.example.net", "TLSA")
    assert answer["ad"] and [r["text"] for r in answer["records"]] == ["3 1 1 " + "ab" * 32]


def test_a_resolver_whose_anchor_matches_no_key_gives_no_answer(lab, signed):
    # The same zone behind a DS that matches none of its keys is bogus: SERVFAIL, never the data.
    dnssec.start_resolver(lab, {"example.net": ["1 13 2 " + "00" * 32]},
                          v4="198.51.100.55", v6="2001:db8:100::55", name="bogus-resolver")
    answer = dnssec.validated_query(lab, "example.net", "SOA", server="198.51.100.55")
    assert (answer["rcode"], answer["records"]) == ("SERVFAIL", [])
