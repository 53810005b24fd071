"""The e2e stack: the guide's setup for the lab's mail host.

Addresses are the lab's (198.51.100.0/24, 2001:db8:100::/64); the SSH key
and host key are the ones the lab made for mx; password hashes are made
from the fixed test passwords below, with a fixed salt so that the stack's
inputs are the same on every run.
"""

from __future__ import annotations

import subprocess
from functools import cache
from typing import Any

from .lab import Lab

DOMAIN = "example.com"
HOSTNAME = "mail.example.com"

# Test users: name -> (password, addresses, has the guide's Sieve script).
USERS = {
    "alice": ("alice-Secret-1", ["alice@example.com", "bob@example.com"], True),
    "carol": ("carol-Secret-2", ["carol@example.com"], False),
}

GUIDE_SIEVE = """require [
  "fileinto", # Put mail in dirs
  "mailbox"]; # Create dirs

if allof (
  address :matches :all "from" "MAILER-DAEMON@mail.example.com",
  header :matches "subject" "Postfix SMTP server: errors from *") {
    fileinto :create "System";
}
"""

SECRET_KEYS = ["mailstack:ssh_private_key", "mailstack:ssh_host_key", "mailstack:users"]


@cache
def password_hash(name: str) -> str:
    password = USERS[name][0]
    return subprocess.run(
        ["openssl", "passwd", "-6", "-salt", f"mailstack{name}", "-stdin"],
        input=password, capture_output=True, text=True, check=True,
    ).stdout.strip()


def e2e_config(lab: Lab, **overrides: Any) -> dict[str, Any]:
    """Stack values (as in a stack file, secrets in clear) for the lab's mx."""
    values: dict[str, Any] = {
        "mailstack:domain": DOMAIN,
        "mailstack:hostname": HOSTNAME,
        "mailstack:ipv4": [lab.mx.ipv4],
        "mailstack:ipv6": [lab.mx.ipv6],
        "mailstack:ssh_host": lab.mx.ipv4,
        "mailstack:ssh_private_key": lab.mx_ssh_private_key.read_text(),
        "mailstack:ssh_host_key": lab.mx_host_key,
        "mailstack:reverse_zones": list(lab.reverse_zones),
        # OpenDKIM resolves from the root unless told otherwise; the lab's
        # zones are private, so they cannot be DNSSEC-validated from the root.
        "mailstack:opendkim_nameservers": [lab.dns.ipv4],
        "mailstack:opendkim_dnssec": False,
        "mailstack:soft_bounce": False,
        "mailstack:users": [
            {
                "name": name,
                "password_hash": password_hash(name),
                "addresses": addresses,
                **({"sieve": GUIDE_SIEVE} if has_sieve else {}),
            }
            for name, (_, addresses, has_sieve) in USERS.items()
        ],
    }
    values.update({f"mailstack:{k}": v for k, v in overrides.items()})
    return values
