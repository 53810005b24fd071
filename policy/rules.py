"""The mail invariants of a mailstack stack, as plain functions over resource properties.

Each check takes a resource's properties as the Pulumi engine hands them to a
policy pack: input names in camelCase (`zoneId`, `stdin`, `privateKey`),
numbers as floats, and secret values already unwrapped into plain values by
pulumi-policy (`Analyze` deserializes without its secret proxies, so a policy
cannot tell a secret by its shape). Each returns its problems, one line each;
an empty list means the resource complies.

Pure: no pulumi or pulumi_policy import. `pack.py` wires these checks into
CrossGuard policies; the program's own tests (tests/program/test_policy.py)
run them over what the program registers under mocks.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
COMMANDS = ("command:remote:Command", "command:local:Command")

# RFC 8301 3.2: signers MUST use at least 1024 bits and SHOULD use 2048; the guide uses 2048.
DKIM_MIN_BITS = 2048

# The stack config keys that hold secrets, all set with `pulumi config set --secret` (Pulumi.yaml
# cannot declare them `secret: true`: the CLI then refuses a stack that leaves one unset).
SECRET_CONFIG_KEYS = (
    "mailstack:ssh_private_key", "mailstack:ssh_host_key", "mailstack:acme_cloudflare_token", "cloudflare:apiToken"
)
# Shorter values could match by chance (and no real secret is this short).
MIN_SECRET_LENGTH = 8

# Secrets recognizable by their shape, whatever their source.
SECRET_SHAPES = (
    ("a PEM private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    # crypt(3) as /etc/shadow holds it: $id$[params$]salt$hash (yescrypt, SHA-crypt, bcrypt, MD5).
    (
        "a crypt(3) password hash",
        re.compile(r"\$(?:y|gy|7|2[abxy]?|5|6|1|md5|sha1)\$(?:[^\s$'\"]+\$){1,3}[./0-9A-Za-z]{20,}"),
    ),
)

# Postfix booleans are yes/no (true/false are accepted too); also `-o soft_bounce=yes` in master.cf.
SOFT_BOUNCE_ON = re.compile(r"(?im)^[ \t]*(?:-o[ \t]+)?soft_bounce[ \t]*=[ \t]*(?:yes|true)[ \t]*$")



@dataclass(frozen=True)
class Resource:
    """One resource of the stack, for the stack-wide checks."""

    urn: str
    type: str
    props: Mapping[str, Any]


# --- values -----------------------------------------------------------------------------------


def txt_value(content: str) -> str:
    """A TXT record's value as receivers read it: its quoted strings joined, escapes undone.

    The program sends `"chunk1" "chunk2"` (255-byte strings, RFC 1035 escapes);
    unquoted content is taken as one string.
    """
    text = content.strip()
    if not text.startswith('"'):
        return content
    out = bytearray()
    i, quoted = 0, False
    data = text.encode("utf-8")
    while i < len(data):
        c = data[i]
        if c == 0x22:  # "
            quoted = not quoted
        elif quoted and c == 0x5C and i + 1 < len(data):  # backslash
            digits = data[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit():
                out.append(int(digits) & 0xFF)
                i += 3
            else:
                out.append(data[i + 1])
                i += 1
        elif quoted:
            out.append(c)
        i += 1
    return out.decode("utf-8", "replace")


def _name(props: Mapping[str, Any]) -> str:
    return str(props.get("name") or "").strip().rstrip(".").lower()


def _txt(props: Mapping[str, Any]) -> str | None:
    """The value of a TXT record, or None for other types."""
    if props.get("type") != "TXT":
        return None
    return txt_value(str(props.get("content") or ""))


def dkim_tags(value: str) -> dict[str, str]:
    """A DKIM tag-list (RFC 6376 3.2): `v=DKIM1; k=rsa; p=...` → {tag: value}."""
    tags = {}
    for part in value.split(";"):
        tag, sep, val = part.partition("=")
        if sep:
            tags[tag.strip()] = val.strip()
    return tags


def rsa_key_bits(p: str) -> int:
    """Size in bits of the RSA key in a DKIM p= value (RFC 6376 3.6.1).

    p= is base64 of a DER SubjectPublicKeyInfo (what `opendkim-genkey` and the
    host's DKIM unit publish); a bare PKCS#1 RSAPublicKey is accepted too.
    ValueError when it is neither.
    """
    try:
        der = base64.b64decode("".join(p.split()), validate=True)
    except binascii.Error as err:
        raise ValueError(f"not base64 ({err})") from None
    try:
        key = serialization.load_der_public_key(der)  # SubjectPublicKeyInfo or PKCS#1
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not base64 DER of an RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    return key.key_size


# --- the checks on one resource -------------------------------------------------------------


def mail_host_not_proxied(props: Mapping[str, Any]) -> list[str]:
    """A/AAAA records are never proxied (every A/AAAA mailstack publishes is the mail host's)."""
    kind = props.get("type")
    if kind not in ("A", "AAAA") or props.get("proxied") is not True:
        return []
    return [
        f"{kind} {_name(props)} is proxied by Cloudflare: mail for the host would reach Cloudflare, "
        "which does not relay SMTP (port 25); the mail host's records must have proxied=false"
    ]


def spf_problems(props: Mapping[str, Any]) -> list[str]:
    """An SPF record ends in -all or ~all and never allows everyone (+all)."""
    value = _txt(props)
    if value is None or not re.match(r"(?i)^v=spf1(?:\s|$)", value):
        return []
    terms = value.split()[1:]
    where = f"SPF record at {_name(props)} ({value!r})"
    problems = []
    if any(term.lower() in ("all", "+all") for term in terms):
        problems.append(f"{where} allows every sender with +all: anyone may send as the domain")
    last = terms[-1].lower() if terms else ""
    if last not in ("-all", "~all"):
        problems.append(
            f"{where} does not end in -all or ~all (it ends in {terms[-1] if terms else 'v=spf1'!r}): "
            "receivers must be told to refuse (or mark) mail from other hosts"
        )
    return problems


def dkim_problems(props: Mapping[str, Any], minimum: int = DKIM_MIN_BITS) -> list[str]:
    """A DKIM key record holds an RSA key of at least `minimum` bits."""
    value = _txt(props)
    if value is None:
        return []
    tags = dkim_tags(value)
    name = _name(props)
    if tags.get("v") != "DKIM1" and not ("._domainkey." in f".{name}" and "p" in tags):
        return []
    where = f"DKIM key at {name}"
    kind = tags.get("k", "rsa").lower()
    if kind == "ed25519":
        return []  # RFC 8463: 256-bit Ed25519, stronger than RSA-2048; no RSA size applies
    if kind != "rsa":
        return [f"{where} has key type k={kind} (expected rsa or ed25519)"]
    p = "".join(tags.get("p", "").split())
    if not p:
        return []  # an empty p= revokes the selector (RFC 6376 3.6.1): there is no key to measure
    try:
        bits = rsa_key_bits(p)
    except ValueError as err:
        return [f"{where}: p= is {err}"]
    if bits < minimum:
        return [
            f"{where} is a {bits}-bit RSA key; at least {minimum} bits are required (RFC 8301; the guide "
            f"uses 2048): generate a new key under a new selector (mailstack:dkim_selector)"
        ]
    return []


def soft_bounce_problems(props: Mapping[str, Any], testing: bool) -> list[str]:
    """A command that installs Postfix config with soft_bounce on, in a stack that is not testing."""
    if testing:
        return []
    texts = [props.get(field) for field in ("stdin", "create", "update")]
    if not any(isinstance(text, str) and SOFT_BOUNCE_ON.search(text) for text in texts):
        return []
    return [
        "Postfix would run with soft_bounce = yes, but the stack does not say it is testing: the guide "
        "turns soft_bounce on only to test a new configuration (remote errors become temporary, mail "
        "waits in the queue instead of bouncing). Set mailstack:soft_bounce to false, or "
        "mailstack:testing to true while testing"
    ]


def command_secret_problems(props: Mapping[str, Any], secrets: Iterable[tuple[str, str]] = ()) -> list[str]:
    """No command line (create, update, delete) carries a secret.

    `secrets` are (where it comes from, value) pairs: the stack's secret config
    (`stack_secrets`); the command's own connection secrets are added here. A
    secret's value is never part of a message.
    """
    known = [*secrets, *connection_secrets(props)]
    problems = []
    for field in ("create", "update", "delete"):
        text = props.get(field)
        if not isinstance(text, str) or not text:
            continue
        found: list[str] = [what for what, shape in SECRET_SHAPES if shape.search(text)]
        for source, value in known:
            if any(fragment in text for fragment in _fragments(value)):
                found.append(f"the secret value of {source}")
        if found:
            problems.append(
                f"the {field} command line carries {' and '.join(found)}: command lines show in the host's "
                "process list and in Pulumi's state and diff; send secrets on stdin (as a secret) instead"
            )
    return problems


def _fragments(secret: str) -> list[str]:
    """The secret, and each long line of it (a key that reached the shell re-wrapped still shows)."""
    value = secret.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return []
    lines = [line.strip() for line in value.splitlines()]
    return [value, *(line for line in lines if len(line) >= 16 and not line.startswith("-----"))]


def connection_secrets(props: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The secret inputs of a command's SSH connection (and its proxy)."""
    found = []
    for path in ("connection", "connection.proxy"):
        node: Any = props
        for key in path.split("."):
            node = node.get(key) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            continue
        for key in ("password", "privateKey", "privateKeyPassword"):
            value = node.get(key)
            if isinstance(value, str) and value:
                found.append((f"{path}.{key}", value))
    return found


# --- the checks across the stack ------------------------------------------------------------


def record_problems(resources: Iterable[Resource], kind: str) -> list[tuple[str, str]]:
    """Each record is in the stack of its kind: (urn, problem) pairs.

    A host stack publishes the host's own records (A/AAAA, PTR, the HELO name's
    SPF); each domain stack its domain's (MX, SPF, DKIM, DMARC, TLS-RPT, MTA-STS, SRV:
    its policy host mta-sts.<domain> and autoconfig.<domain> are the A/AAAA it has). An A/AAAA in a
    domain stack would be published again by the next domain stack on the same
    host (Cloudflare refuses the duplicate), and an MX in the host stack would
    route a domain no domain stack describes. An MX names a host, never an
    address (RFC 5321 5.1: "MX records ... contain a domain name").
    """
    resources = list(resources)
    # A domain's own A/AAAA: its MTA-STS policy host, mta-sts.<domain> (RFC 8461 3.3), and its mail
    # clients' settings host, autoconfig.<domain>, beside its MX.
    policy_hosts = {f"{label}.{_name(r.props)}" for r in resources
                    if r.type == DNS_RECORD and r.props.get("type") == "MX" for label in ("mta-sts", "autoconfig")}
    problems = []
    for r in resources:
        if r.type != DNS_RECORD:
            continue
        type_ = r.props.get("type")
        if kind == "host" and type_ == "MX":
            problems.append(
                (r.urn, f"MX of {_name(r.props)} in the host stack: MX records are the domain stacks' "
                 "(a host stack publishes the host's A/AAAA, PTR and HELO SPF)")
            )
        if kind == "domain" and type_ in ("A", "AAAA") and _name(r.props) not in policy_hosts:
            problems.append(
                (r.urn, f"{type_} of {_name(r.props)} in a domain stack: the host's addresses are its host "
                 "stack's records (each domain stack on the host would publish them again)")
            )
        if kind == "domain" and type_ == "MX":
            target = str(r.props.get("content") or "").strip().rstrip(".")
            if not target or _is_address(target):
                problems.append(
                    (r.urn, f"MX of {_name(r.props)} points at {target or '(nothing)'!r}, not at a host name "
                     "(RFC 5321 5.1): it must be the host stack's hostname")
                )
    return problems


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- the stack's config, as the engine gives it to a policy pack ----------------------------


def stack_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The stack's config: the engine passes it to a policy pack in PULUMI_CONFIG.

    A JSON object of `namespace:key` → string (structured values as JSON text),
    secrets decrypted, as a program receives it.
    """
    try:
        config = json.loads(environ.get("PULUMI_CONFIG") or "{}")
    except json.JSONDecodeError:
        return {}
    return config if isinstance(config, dict) else {}


def stack_kind(config: Mapping[str, Any]) -> str:
    """"domain" (mailstack:domain set), "host" (mailstack:hostname set) or "" (neither)."""
    if str(config.get("mailstack:domain") or "").strip():
        return "domain"
    if str(config.get("mailstack:hostname") or "").strip():
        return "host"
    return ""


def is_testing(config: Mapping[str, Any]) -> bool:
    """The stack's `mailstack:testing` flag (default false)."""
    value = config.get("mailstack:testing", False)
    return value is True or str(value).strip().lower() == "true"


def stack_secrets(config: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(key, value) of every secret in the stack config: the keys mailstack declares secret,
    the users' password hashes, and any plain string under `secret_keys`."""
    found = []
    for key in dict.fromkeys([*SECRET_CONFIG_KEYS, *secret_keys]):
        value = config.get(key)
        if isinstance(value, str) and value and value[:1] not in "[{":
            found.append((key, value))
    users = config.get("mailstack:users")
    if isinstance(users, str):
        try:
            users = json.loads(users)
        except json.JSONDecodeError:
            users = []
    for i, user in enumerate(users if isinstance(users, list) else []):
        value = user.get("password_hash") if isinstance(user, Mapping) else None
        if isinstance(value, str) and value:
            found.append((f"mailstack:users[{i}].password_hash", value))
    return found
