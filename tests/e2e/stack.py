"""The e2e stack: the guide's setup for the lab's mail host.

Addresses are the lab's (198.51.100.0/24, 2001:db8:100::/64); the SSH key
and host key are the ones the lab made for mx; password hashes are made
from the fixed test passwords below, with a fixed salt so that the stack's
inputs are the same on every run.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
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


@contextmanager
def main_cf_rewritten(rewrite: Callable[[str], str]) -> Iterator[None]:
    """Inside the block, the program renders main.cf through `rewrite`.

    The config model refuses every stack value known to break Postfix or to go
    against the guide, so a main.cf that a checker refuses, or a banner that
    shows the version, can only reach the host through a wrong rendering (as a
    template change could make one). The e2e deployer runs the program in this
    process, so patching the renderer that `MailHost` calls is enough.
    """
    from components import host

    original = host.render_host_files

    def rendered(cfg):
        files = original(cfg)
        files["postfix"] = [
            replace(f, content=rewrite(f.content)) if f.path == "/etc/postfix/main.cf" else f
            for f in files["postfix"]
        ]
        return files

    host.render_host_files = rendered
    try:
        yield
    finally:
        host.render_host_files = original


def banner_rewrite(banner: str) -> Callable[[str], str]:
    """A `main_cf_rewritten` rewrite that sets smtpd_banner to `banner`, whatever the config says."""
    return lambda text: re.sub(r"(?m)^smtpd_banner = .*$", lambda _: f"smtpd_banner = {banner}", text)
