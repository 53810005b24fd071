"""The stack's configuration as a typed model.

One model serves `pulumi up` (values from `pulumi.Config`) and the offline
commands (values read from `stacks/Pulumi.<stack>.yaml`): both hand
`load_config` a plain mapping of `mailstack:<key>` to value.

Defaults are the guide's values. Every check fails before any resource is
created, with a message that names the key, the bad value and the expected
form, e.g. ``mailstack:hostname: 'mail' is not a fully-qualified domain name
(expected e.g. mail.example.com)``.

This module is pure: no Pulumi import, no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import dns.name
import dns.reversename
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

PROJECT = "mailstack"

# Postfix's notify_classes values (postconf(5)).
NOTIFY_CLASSES = ("bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A crypt(3) hash as /etc/shadow holds it: $id$[params$]salt$hash.
_CRYPT_HASH = re.compile(r"^\$[0-9a-z]+\$[^\s:]+$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
_POSTFIX_TIME = re.compile(r"^[0-9]+[smhdw]?$")


class ConfigError(ValueError):
    """The stack's configuration is not usable; `problems` has one line per bad key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --- value checks shared by several keys ------------------------------------------------


# Cached: every address of every user names the same domain, and dnspython's
# parser took over half the time a stack of 10,000 mailboxes took to load.
@functools.lru_cache(maxsize=1024)
def fqdn(value: str, example: str = "mail.example.com") -> str:
    """A fully-qualified domain name, lower-cased, without a trailing dot."""
    text = value.strip().rstrip(".").lower()
    try:
        name = dns.name.from_text(text)
    except dns.exception.DNSException:
        raise ValueError(f"{value!r} is not a valid domain name (expected e.g. {example})") from None
    labels = [label.decode("ascii", "replace") for label in name.labels if label]
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{value!r} is not a fully-qualified domain name (expected e.g. {example})")
    return ".".join(labels)


def _address(value: str, version: int, example: str) -> str:
    kind = f"IPv{version}"
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a valid {kind} address (expected e.g. {example})") from None
    if ip.version != version:
        raise ValueError(f"{value!r} is not an {kind} address (expected e.g. {example})")
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        raise ValueError(f"{value!r} cannot receive mail from other hosts (expected a routable {kind} address)")
    return str(ip)


def _mail_address(value: str) -> str:
    local, sep, domain = value.strip().lower().rpartition("@")
    if not sep or not local or any(c in local for c in ' \t,:;<>"'):
        raise ValueError(f"{value!r} is not an e-mail address (expected e.g. alice@example.com)")
    return f"{local}@{fqdn(domain, 'example.com')}"


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (expected e.g. 192.0.2.53)") from None


def _interface(value: str) -> str:
    if value in ("all", "loopback-only"):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (expected e.g. 192.0.2.10, or 'all')") from None


def _reverse_zone(value: str) -> str:
    name = fqdn(value, "2.0.192.in-addr.arpa")
    if not name.endswith((".in-addr.arpa", ".ip6.arpa")):
        raise ValueError(f"{value!r} is not a reverse zone (expected e.g. 2.0.192.in-addr.arpa)")
    return name


def _notify_class(value: str) -> str:
    if value not in NOTIFY_CLASSES:
        raise ValueError(f"{value!r} is not a notify class (expected some of: {', '.join(NOTIFY_CLASSES)})")
    return value


# List items are checked one by one, so that an error names e.g. mailstack:ipv4[1].
IPv4 = Annotated[str, AfterValidator(lambda v: _address(v, 4, "192.0.2.10"))]
IPv6 = Annotated[str, AfterValidator(lambda v: _address(v, 6, "2001:db8::10"))]
MailAddress = Annotated[str, AfterValidator(_mail_address)]
Interface = Annotated[str, AfterValidator(_interface)]
IPAddress = Annotated[str, AfterValidator(_ip_address)]
ReverseZone = Annotated[str, AfterValidator(_reverse_zone)]
NotifyClass = Annotated[str, AfterValidator(_notify_class)]


# --- the model ----------------------------------------------------------------------------


class User(BaseModel):
    """A mailbox: a system user on the host (the guide's Dovecot uses PAM)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Login name of the system user (and IMAP/SMTP AUTH user)")
    password_hash: SecretStr | None = Field(
        default=None,
        description="crypt(3) hash for /etc/shadow (e.g. from `mkpasswd -m yescrypt`); a secret. "
        "Without one the account is locked: mail is delivered but nobody can log in.",
    )
    addresses: list[MailAddress] = Field(
        default_factory=list,
        description="Addresses this user receives at and may send as (default: <name>@<domain>)",
    )
    sieve: str | None = Field(default=None, description="The user's Sieve script (~/.dovecot.sieve)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _USER_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid user name (expected lower-case letters, digits, '_' or '-', "
                "starting with a letter, at most 32 characters)"
            )
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _CRYPT_HASH.match(value.get_secret_value()):
            # Never echo the value: it is a secret.
            raise ValueError("is not a crypt(3) password hash (expected e.g. the output of `mkpasswd -m yescrypt`)")
        return value


class MailConfig(BaseModel):
    """Everything one stack (one mail domain) says. Field names are the config keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- the domain and its host
    domain: str = Field(description="The mail domain, e.g. example.com")
    hostname: str | None = Field(default=None, description="The mail host's name (default: mail.<domain>)")
    ipv4: list[IPv4] = Field(default_factory=list, description="The host's public IPv4 addresses")
    ipv6: list[IPv6] = Field(default_factory=list, description="The host's public IPv6 addresses")
    inet_interfaces: list[Interface] | None = Field(
        default=None,
        description="Addresses Postfix listens on (default: the host's addresses plus loopback)",
    )

    # -- how to reach the host
    ssh_host: str | None = Field(default=None, description="Address or name to SSH to (default: hostname)")
    ssh_port: int = Field(default=22, ge=1, le=65535, description="SSH port")
    ssh_user: str = Field(default="root", description="SSH user: root, or a user with password-less sudo")
    ssh_private_key: SecretStr | None = Field(
        default=None, description="SSH private key (secret); without one, the SSH agent is used"
    )
    ssh_host_key: SecretStr | None = Field(
        default=None, description="The host's public SSH key, pinned (secret); without one it is not checked"
    )

    # -- Cloudflare
    cloudflare_zone_id: str | None = Field(default=None, description="Zone id (default: looked up by name)")
    cloudflare_zone_name: str | None = Field(default=None, description="Zone name (default: the domain)")
    reverse_zones: list[ReverseZone] = Field(
        default_factory=list,
        description="Reverse zones on Cloudflare to publish PTR records in, e.g. 2.0.192.in-addr.arpa",
    )

    # -- Postfix: the guide's settings, named as in main.cf
    smtpd_banner: str = Field(default="$myhostname ESMTP $mail_name", description="Banner: no version, no OS")
    message_size_limit: int = Field(default=25_000_000, description="Largest message in bytes (never 0)")
    smtpd_error_sleep_time: str = Field(default="8s", description="Delay after each error")
    smtpd_soft_error_limit: int = Field(default=1, ge=0, description="Errors before delaying")
    smtpd_hard_error_limit: int = Field(default=3, ge=1, description="Errors before disconnecting")
    soft_bounce: bool = Field(default=True, description="Turn 5xx into 4xx while testing; remove afterwards")
    testing: bool = Field(
        default=False,
        description="The stack is being tested: the policy pack (policy/) allows soft_bounce only then",
    )
    notify_classes: list[NotifyClass] = Field(
        default_factory=lambda: list(NOTIFY_CLASSES), description="What postmaster is told about"
    )
    policyd_spf_time_limit: int = Field(default=3600, ge=1, description="policyd-spf_time_limit in seconds")
    postmaster: str | None = Field(
        default=None, description="User who gets postmaster@ and root@ mail (default: the first user)"
    )

    # -- TLS
    smtpd_tls_cert_file: str = Field(default="/etc/ssl/private/postfix.cacert.pem", description="TLS certificate")
    smtpd_tls_key_file: str = Field(default="/etc/ssl/private/postfix.privkey.pem", description="TLS private key")

    # -- DKIM and DMARC
    dkim_selector: str = Field(default="mail", description="DKIM selector")
    dkim_bits: Literal[2048, 3072, 4096] = Field(default=2048, description="RSA key size of a new DKIM key")
    opendkim_nameservers: list[IPAddress] = Field(
        default_factory=list, description="Resolvers OpenDKIM asks (default: its own resolver, from the root)"
    )
    opendkim_dnssec: bool = Field(default=True, description="OpenDKIM validates DNSSEC from the root trust anchor")
    dmarc_policy: Literal["none", "quarantine", "reject"] = Field(default="quarantine", description="DMARC p=")
    dmarc_rua: list[MailAddress] | None = Field(
        default=None, description="Where aggregate reports go (default: postmaster@<domain>)"
    )

    # -- mailboxes
    users: list[User] = Field(default_factory=list, description="Mailboxes")

    # ---- single values

    @field_validator("dkim_bits", mode="before")
    @classmethod
    def _dkim_bits_from_text(cls, value: Any) -> Any:
        # Pulumi hands every config value, Pulumi.yaml's defaults included, to the program as text.
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty (expected the mail domain, e.g. example.com)")
        return fqdn(value, "example.com")

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        return None if value is None else fqdn(value)

    @field_validator("cloudflare_zone_name")
    @classmethod
    def _zone_name(cls, value: str | None) -> str | None:
        return None if value is None else fqdn(value, "example.com")

    @field_validator("inet_interfaces")
    @classmethod
    def _interfaces(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("is empty (expected addresses, or 'all')")
        return value

    @field_validator("cloudflare_zone_id")
    @classmethod
    def _zone_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{32}", value):
            raise ValueError(f"{value!r} is not a Cloudflare zone id (expected 32 hex digits, from the zone's overview page)")
        return value

    @field_validator("ssh_host")
    @classmethod
    def _ssh_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return fqdn(value)

    @field_validator("ssh_user")
    @classmethod
    def _ssh_user(cls, value: str) -> str:
        if not _USER_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid user name (expected e.g. root)")
        return value

    @field_validator("smtpd_banner")
    @classmethod
    def _banner(cls, value: str) -> str:
        if not value.strip() or "\n" in value:
            raise ValueError(f"{value!r} is not a one-line banner (expected e.g. $myhostname ESMTP $mail_name)")
        if not value.startswith("$myhostname"):
            # RFC 5321 4.3.1: the greeting starts with the server's name.
            raise ValueError(f"{value!r} does not start with $myhostname (RFC 5321 requires the host name first)")
        return value

    @field_validator("message_size_limit")
    @classmethod
    def _size(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"{value!r} is not allowed: the guide forbids 0 (unlimited) (expected bytes, e.g. 25000000)")
        return value

    @field_validator("smtpd_error_sleep_time", mode="before")
    @classmethod
    def _sleep(cls, value: str) -> str:
        value = str(value)
        if not _POSTFIX_TIME.match(value):
            raise ValueError(f"{value!r} is not a Postfix time (expected e.g. 8s)")
        return value

    @field_validator("smtpd_tls_cert_file", "smtpd_tls_key_file")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _SAFE_PATH.match(value) or "/../" in value or value.endswith("/"):
            raise ValueError(f"{value!r} is not an absolute file path (expected e.g. /etc/ssl/private/postfix.pem)")
        return value

    @field_validator("dkim_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not _LABEL.match(value):
            raise ValueError(
                f"{value!r} is not a valid DKIM selector (expected one DNS label: lower-case letters, "
                "digits and '-', e.g. mail or s2026)"
            )
        return value

    @field_validator("users", mode="before")
    @classmethod
    def _users_before(cls, value: Any) -> Any:
        return value if value is not None else []

    # ---- checks across keys

    @model_validator(mode="after")
    def _whole(self) -> MailConfig:
        problems: list[tuple[str, str]] = []
        domain = self.domain
        host = self.host_name
        if host != domain and not host.endswith("." + domain):
            problems.append(("hostname", f"{host!r} is not inside {domain} (its A/AAAA records go in that zone)"))
        if not self.ipv4 and not self.ipv6:
            problems.append(("ipv4", "is empty and so is mailstack:ipv6 (expected at least one address of the host)"))
        seen_users: set[str] = set()
        owner_of: dict[str, str] = {}
        for i, user in enumerate(self.users):
            if user.name in seen_users:
                problems.append((f"users[{i}].name", f"{user.name!r} is a duplicate user (each user is listed once)"))
            seen_users.add(user.name)
            for j, address in enumerate(self.addresses_of(user)):
                if address.rpartition("@")[2] != domain:
                    problems.append(
                        (f"users[{i}].addresses[{j}]", f"{address!r} is outside {domain} (expected e.g. {user.name}@{domain})")
                    )
                elif address in owner_of and owner_of[address] != user.name:
                    problems.append(
                        (f"users[{i}].addresses[{j}]", f"{address!r} already belongs to {owner_of[address]!r} (each address has one owner)")
                    )
                owner_of.setdefault(address, user.name)
        if self.postmaster is not None and self.postmaster not in seen_users:
            problems.append(("postmaster", f"{self.postmaster!r} is not one of the users (expected one of: {', '.join(sorted(seen_users)) or 'none'})"))
        zone = self.zone_name
        if domain != zone and not domain.endswith("." + zone):
            problems.append(("cloudflare_zone_name", f"{zone!r} does not contain {domain} (its records go in that zone)"))
        pointers = [dns.reversename.from_address(a).to_text(omit_final_dot=True) for a in self.addresses]
        for i, reverse in enumerate(self.reverse_zones):
            if not any(p.endswith("." + reverse) for p in pointers):
                problems.append((f"reverse_zones[{i}]", f"{reverse!r} holds none of the host's addresses (expected the zone of {', '.join(self.addresses)})"))
        for i, item in enumerate(self.inet_interfaces or []):
            if ":" in item and not self.ipv6:
                problems.append((f"inet_interfaces[{i}]", f"{item!r} is IPv6 but mailstack:ipv6 is empty (Postfix would run IPv4 only)"))
            elif "." in item and not self.ipv4:
                problems.append((f"inet_interfaces[{i}]", f"{item!r} is IPv4 but mailstack:ipv4 is empty (Postfix would run IPv6 only)"))
        if self.smtpd_hard_error_limit < self.smtpd_soft_error_limit:
            problems.append(
                ("smtpd_hard_error_limit", f"{self.smtpd_hard_error_limit!r} is below smtpd_soft_error_limit ({self.smtpd_soft_error_limit})")
            )
        if problems:
            raise _CrossKeyProblems(problems)
        return self

    # ---- derived values (one place each)

    @property
    def host_name(self) -> str:
        return self.hostname or f"mail.{self.domain}"

    @property
    def addresses(self) -> list[str]:
        return [*self.ipv4, *self.ipv6]

    @property
    def listen_addresses(self) -> list[str]:
        if self.inet_interfaces is not None:
            return self.inet_interfaces
        loopback = (["127.0.0.1"] if self.ipv4 else []) + (["::1"] if self.ipv6 else [])
        return [*self.addresses, *loopback]

    @property
    def inet_protocols(self) -> str:
        if self.ipv4 and self.ipv6:
            return "all"
        return "ipv4" if self.ipv4 else "ipv6"

    @property
    def connect_host(self) -> str:
        return self.ssh_host or self.host_name

    @property
    def zone_name(self) -> str:
        return self.cloudflare_zone_name or self.domain

    @property
    def postmaster_user(self) -> str | None:
        if self.postmaster:
            return self.postmaster
        return self.users[0].name if self.users else None

    @property
    def rua(self) -> list[str]:
        return self.dmarc_rua if self.dmarc_rua is not None else [f"postmaster@{self.domain}"]

    def addresses_of(self, user: User) -> list[str]:
        return user.addresses or [f"{user.name}@{self.domain}"]


class _CrossKeyProblems(ValueError):
    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


# --- loading --------------------------------------------------------------------------------


def _key(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += ("." if key else "") + str(part)
    return f"{PROJECT}:{key}"


def _decode(value: Any) -> Any:
    """Pulumi hands structured values over as JSON text; a stack file on disk as YAML."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _strip_secure(value: Any) -> Any:
    """`secure:` values in a stack file can only be decrypted by Pulumi; offline they are absent."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return None
        stripped = {k: _strip_secure(v) for k, v in value.items()}
        return {k: v for k, v in stripped.items() if v is not None}
    if isinstance(value, list):
        return [_strip_secure(v) for v in value]
    return value


def _means_derived(key: str, value: Any) -> bool:
    """Pulumi.yaml declares "" or [] for keys whose default is derived (e.g. hostname)."""
    field = MailConfig.model_fields.get(key)
    return field is not None and field.default is None and value in ("", [])


def load_config(values: Mapping[str, Any]) -> MailConfig:
    """Build the model from `mailstack:<key>` → value; other namespaces are ignored."""
    prefix = f"{PROJECT}:"
    raw = {
        key[len(prefix) :]: _strip_secure(_decode(value))
        for key, value in values.items()
        if key.startswith(prefix)
    }
    raw = {k: v for k, v in raw.items() if v is not None and not _means_derived(k, v)}
    try:
        return MailConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_messages(err, raw)) from None


def _messages(err: ValidationError, raw: Mapping[str, Any]) -> list[str]:
    problems = []
    for e in err.errors():
        ctx_error = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossKeyProblems):
            problems.extend(f"{PROJECT}:{k}: {m}" for k, m in ctx_error.problems)
            continue
        loc = tuple(p for p in e["loc"] if p not in ("function-after", "function-before"))
        key = _key(loc)
        if e["type"] == "missing":
            problems.append(f"{key}: is required")
        elif e["type"] == "extra_forbidden":
            problems.append(f"{key}: is not a known key (see the config table in README.md)")
        elif e["type"] == "value_error":
            message = str(ctx_error) if ctx_error else e["msg"]
            problems.append(f"{key}: {message}")
        else:
            value = e.get("input")
            shown = "<secret>" if "password" in key or "private_key" in key or "host_key" in key else repr(value)
            problems.append(f"{key}: {shown} is not valid ({e['msg']})")
    return problems
