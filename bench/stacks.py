"""The stacks the benchmarks evaluate: the example stack, and generated ones.

A generated stack is the example stack (stacks/Pulumi.example.com.yaml) with
its users replaced by N generated mailboxes, each with a password hash, two
addresses (the login's own and an alias, so that every user also gets a
`virtual` line) and a Sieve script of its own. Configs are made in memory,
as stack-file values with the secrets in clear (as `pulumi config` would
hand them to the program once decrypted); no stack file is written.

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

# The one-setting change of the churn benchmark (the default is 25000000).
CHANGED_SETTING = ("mailstack:message_size_limit", 31_457_280)

# A user's own script: file mail from a list into a folder of its own, and
# answer while away. Different text for every user, like real scripts.
USER_SIEVE = """require ["fileinto", "mailbox", "vacation"];
# {name}: lists go to their folder, everything else gets the away notice.
if header :contains "list-id" "<team-{n}.lists.example.com>" {{
    fileinto :create "Lists/team-{n}";
    stop;
}}
vacation :days 7 :addresses ["{name}@example.com", "{alias}@example.com"]
    :subject "Away" "I am away until day {day}; {name} will answer then.";
"""


@cache
def _example_values() -> dict[str, Any]:
    path = PROJECT_DIR / "stacks" / f"Pulumi.{EXAMPLE}.yaml"
    return yaml.safe_load(path.read_text())["config"]


def _with_secrets(values: dict[str, Any]) -> dict[str, Any]:
    values["mailstack:ssh_private_key"] = SSH_KEY
    values["mailstack:ssh_host_key"] = HOST_KEY
    for user in values.get("mailstack:users", []):
        user["password_hash"] = PASSWORD_HASH
    return values


def generated_users(count: int) -> list[dict[str, Any]]:
    users = []
    for n in range(count):
        name = f"user{n:05d}"
        alias = f"first{n}.last{n}"
        users.append({
            "name": name,
            "addresses": [f"{name}@example.com", f"{alias}@example.com"],
            "sieve": USER_SIEVE.format(name=name, alias=alias, n=n, day=n % 28 + 1),
        })
    return users


def stack_config(mailboxes: int | None = None, **overrides: Any) -> dict[str, Any]:
    """The example stack (mailboxes=None) or one with `mailboxes` generated users; secrets in clear."""
    values = copy.deepcopy(_example_values())
    if mailboxes is not None:
        values["mailstack:users"] = generated_users(mailboxes)
    values.update({f"mailstack:{k}": v for k, v in overrides.items()})
    return _with_secrets(values)


def label(mailboxes: int | None) -> str:
    return "example stack" if mailboxes is None else f"{mailboxes:,} mailboxes"
