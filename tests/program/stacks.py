"""The example stacks of both kinds, evaluated under the mocks, the domain stacks against the host's.

A domain stack reads its host stack through a StackReference: here the host
stack (tests/fixtures/stacks/Pulumi.host-mail.yaml) is evaluated first and its
exports, with the names of the secret ones, answer the domain stack's read, as
the engine would answer it from the host stack's state.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import stack_values
from tests.program.harness import Evaluation, MailMocks, evaluate

COMMAND = "command:remote:Command"
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
HOST_UNITS = ["packages", "tls", "tables", "opendkim", "policyd-spf", "resolver", "dovecot", "rspamd", "postfix",
              "fail2ban"]
DOMAIN_UNITS = ["dkim-key-mail", "dkim-signing", "files", "passwords"]

SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAtestkeymaterial\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"
PASSWORD_HASH = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"

SECRET_KEYS = ["mailstack:ssh_private_key", "mailstack:ssh_host_key", "mailstack:users"]


def with_secrets(values: dict) -> dict:
    """A stack's values with its secrets set: the host's SSH keys, or the domain's password hashes."""
    values = json.loads(json.dumps(values))
    if "mailstack:hostname" in values:
        values["mailstack:ssh_private_key"] = SSH_KEY
        values["mailstack:ssh_host_key"] = HOST_KEY
    for user in values.get("mailstack:users", []):
        user["password_hash"] = PASSWORD_HASH
    return values


@functools.cache
def dkim_public_key(bits: int = 2048) -> str:
    """A real RSA public key, as the DKIM unit prints it (base64 DER)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def evaluate_host(values: dict | None = None, stack: str = "host-mail") -> Evaluation:
    """The host stack (by default the example's, with its SSH keys set as secrets)."""
    values = with_secrets(stack_values("host-mail")) if values is None else values
    return evaluate(values, SECRET_KEYS, MailMocks(dkim_public_key()), stack=stack)


@functools.cache
def _example_host() -> Evaluation:
    return evaluate_host()


def host_mocks(host: Evaluation | None = None, dkim_key: str | None = None, *, host_stack: str = "host-mail",
               secret_outputs: list[str] | None = None, **mock_args: Any) -> MailMocks:
    """Mocks that answer a StackReference to `host_stack` with `host`'s exports (secret ones marked)."""
    host = host or _example_host()
    secret = host.secret_outputs if secret_outputs is None else secret_outputs
    return MailMocks(dkim_key or dkim_public_key(), stacks={host_stack: host.stack_outputs},
                     secret_outputs={host_stack: secret}, **mock_args)


def evaluate_domain(values: dict | None = None, stack: str = "example.com", mocks: MailMocks | None = None,
                    **kwargs: Any) -> Evaluation:
    """A domain stack (by default example.com's, with password hashes) against the example host stack."""
    values = with_secrets(stack_values(stack)) if values is None else values
    return evaluate(values, SECRET_KEYS, mocks or host_mocks(), stack=stack, **kwargs)
