"""The stacks the benchmarks evaluate: the example stacks, and generated ones.

The host stack is stacks/Pulumi.host-mail.yaml with its SSH keys set. A
domain stack is the example domain stack (stacks/Pulumi.example.com.yaml),
or that stack with its users replaced by N generated mailboxes, each with a
password hash, two addresses (the login's own and an alias, so that every
user also gets an alias line) and a Sieve script of its own; with
`domain=` the same for another domain (the 100-domain benchmark). A domain
stack reads its host stack through a StackReference: `HOST_OUTPUTS` are the
host stack's exports the mocks answer with (its keys secret). Configs are
made in memory, as stack-file values with the secrets in clear (as `pulumi
config` would hand them to the program once decrypted); no stack file is
written.

Pure and light: no Pulumi import, so that a benchmark's child process can
make its stack before it starts the clock.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXAMPLE = "example.com"
HOST = "host-mail"

# Placeholders shaped like the real secrets, as in tests/program/test_program.py.
SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAbenchkeymaterial\n-----END OPENSSH PRIVATE KEY-----\n"
)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForBenchmarks"
PASSWORD_HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
SECRET_KEYS = ["mailstack:ssh_private_key", "mailstack:ssh_host_key", "mailstack:users"]
# A real 2048-bit RSA public key (base64 DER), as the DKIM unit prints it: MailDns checks it.
DKIM_PUBLIC_KEY = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA20I608440KFQ7mj++YrSCatKxtCPcP+yKiyGxQaQhDmKhQtBJbRR"
    "s8/OxbhloBrdixhtL0ict6Xvm1gztbEKY8jhvTS4JKsHsRaXUjYmECrJquiUTrSGbAMKshluL35NdjcupHsb8Vxb3OyFp/3T"
    "dM/oJ8XbLMCsI8Zp7MwHPUbVcsodPSPP+E7aUYGtYPss9l84g/XivpAEWyFhi/2sk5gqODl6Me43jF+rbkkZwP8EbVGKd9kS"
    "sOfAFn09L/2M3bLENJUgWLEyB5T7DVAhCakWmDIF+uF58DxsFdz35Jb4/KeAI8S0LWkVt0xoj7+W1VIJfT3miq8HoXlsG9KU"
    "GwIDAQAB"
)

# The one-setting change of the churn benchmark, for a domain stack (the default is
# quarantine): only the DMARC record changes.
CHANGED_SETTING = ("mailstack:dmarc_policy", "reject")
CHANGED_RESOURCE = "domain-dns-dmarc"
# The same for the host stack (the default is 25000000): only the Postfix unit changes.
CHANGED_HOST_SETTING = ("mailstack:message_size_limit", 31_457_280)
CHANGED_HOST_RESOURCE = "host-postfix"

# A user's own script: file mail from a list into a folder of its own, and
# answer while away. Different text for every user, like real scripts.
USER_SIEVE = """require ["fileinto", "mailbox", "vacation"];
# {name}: lists go to their folder, everything else gets the away notice.
if header :contains "list-id" "<team-{n}.lists.{domain}>" {{
    fileinto :create "Lists/team-{n}";
    stop;
}}
vacation :days 7 :addresses ["{name}@{domain}", "{alias}@{domain}"]
    :subject "Away" "I am away until day {day}; {name} will answer then.";
"""


@cache
def _stack_file(stack: str) -> dict[str, Any]:
    path = PROJECT_DIR / "stacks" / f"Pulumi.{stack}.yaml"
    return yaml.safe_load(path.read_text())["config"]


def _with_password_hashes(values: dict[str, Any]) -> dict[str, Any]:
    for user in values.get("mailstack:users", []):
        user["password_hash"] = PASSWORD_HASH
    return values


def host_config(**overrides: Any) -> dict[str, Any]:
    """The host stack, its SSH keys in clear."""
    values = copy.deepcopy(_stack_file(HOST))
    values["mailstack:ssh_private_key"] = SSH_KEY
    values["mailstack:ssh_host_key"] = HOST_KEY
    values.update({f"mailstack:{k}": v for k, v in overrides.items()})
    return values


def host_outputs() -> dict[str, Any]:
    """The host stack's exports, as a domain stack's StackReference reads them (components/host.py)."""
    values = _stack_file(HOST)
    return {
        "host_id": f"mailstack/{HOST}",
        "hostname": values["mailstack:hostname"],
        "addresses": [*values.get("mailstack:ipv4", []), *values.get("mailstack:ipv6", [])],
        "ssh_host": values.get("mailstack:ssh_host", values["mailstack:hostname"]),
        "ssh_port": 22,
        "ssh_user": "root",
        "ssh_private_key": SSH_KEY,
        "ssh_host_key": HOST_KEY,
        "postmaster_address": values["mailstack:postmaster_address"],
        "records": [],
        "expected_ptrs": [],
        "tls_fingerprint": "",
    }


HOST_SECRET_OUTPUTS = ["ssh_private_key", "ssh_host_key"]


def generated_users(count: int, domain: str = EXAMPLE) -> list[dict[str, Any]]:
    users = []
    for n in range(count):
        name = f"user{n:05d}"
        alias = f"first{n}.last{n}"
        users.append({
            "name": name,
            "addresses": [f"{name}@{domain}", f"{alias}@{domain}"],
            "sieve": USER_SIEVE.format(name=name, alias=alias, n=n, day=n % 28 + 1, domain=domain),
        })
    return users


def stack_config(mailboxes: int | None = None, domain: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A domain stack: the example one (mailboxes=None) or one with `mailboxes` generated users.

    `domain`: the same stack for another domain (its aliases then stay in it).
    Password hashes in clear.
    """
    values = copy.deepcopy(_stack_file(EXAMPLE))
    if domain is not None:
        values["mailstack:domain"] = domain
    if mailboxes is not None:
        domain = domain or EXAMPLE
        values["mailstack:users"] = generated_users(mailboxes, domain)
        # The example's alias names its own users: a list to the first two users instead.
        team = [user["addresses"][0] for user in values["mailstack:users"][:2]]
        values["mailstack:aliases"] = [{"address": f"team@{domain}", "to": team}] if team else []
    elif domain is not None:
        values["mailstack:aliases"] = []  # the example's aliases name example.com addresses
    values.update({f"mailstack:{k}": v for k, v in overrides.items()})
    return _with_password_hashes(values)


def config_of(size: int | str | None) -> dict[str, Any]:
    """SIZE as the children take it: "host" (the host stack), None (the example domain stack), a number."""
    return host_config() if size == "host" else stack_config(size)


def label(mailboxes: int | str | None) -> str:
    if mailboxes == "host":
        return "host stack"
    return "example domain stack" if mailboxes is None else f"domain stack, {mailboxes:,} mailboxes"
