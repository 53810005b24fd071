"""The stack's configuration as a typed model.

A stack is one of two kinds: the host stack (HostConfig: the mail host, its
daemons and its own DNS records) or a domain stack (DomainConfig: one mail
domain on that host, its mailboxes, aliases, DKIM key and DNS records).
`load_config` tells them apart by `mailstack:domain` and `mailstack:hostname`.

The model serves `pulumi up` (values from `pulumi.Config`) and the offline
commands (values read from `stacks/Pulumi.<stack>.yaml`): both hand
`load_config` a plain mapping of `mailstack:<key>` to value.

Defaults are the guide's values. Every check fails before any resource is
created, with a message that names the key, the bad value and the expected
form, e.g. ``mailstack:hostname: 'mail' is not a fully-qualified domain name
(expected e.g. mail.example.com)``. A secret's value is never shown, and
nothing under `users` is shown when it has the wrong shape (it may hold
password hashes): the message says what kind of value it got instead.

Every value ends up in a file the daemons read (main.cf, a Postfix lookup
table, opendkim.conf, a Sieve script), in a DNS record or on a command line,
so each key either has a validator as tight as the place it goes, or is
carried as a whole file (a Sieve script) that only refuses what would break
the file itself. No key takes control characters, and one-line keys take
printable ASCII only.

This module is pure: no Pulumi import, no I/O.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import ipaddress
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import dns.reversename
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

PROJECT = "mailstack"

# Postfix's notify_classes values (postconf(5)).
NOTIFY_CLASSES = ("bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software")

# Role names mailstack routes itself: postmaster@<domain> goes to the user
# mailstack:postmaster names, and MAILER-DAEMON is the name Postfix sends bounces as.
ROLE_NAMES = frozenset({"postmaster", "mailer-daemon"})

# Dovecot Pigeonhole's default sieve_max_script_size.
MAX_SIEVE_BYTES = 1024 * 1024

# Let's Encrypt's production ACME directory.
ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
# An ACME directory: https, a host name or address, an optional port and a plain path.
_HTTPS_URL = re.compile(
    r"https://(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%/+=-]*)?"
)
# A Cloudflare API token: 40 characters of [A-Za-z0-9_-] today; a little room either way.
_CLOUDFLARE_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,200}")

# Postfix reads its integer parameters into a C int.
MAX_POSTFIX_INT = 2**31 - 1

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HOST_TEXT = re.compile(r"[A-Za-z0-9.-]+")
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# A mailbox's name is its address's local part; no "..", no final "." (checked apart).
_MAILBOX_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Pulumi's stack names.
_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")

# E-mail local parts: RFC 5321's dot-atom (atoms of atext joined by single
# dots, none at either end; quoted local parts are refused), lower-case, with
# three atext characters left out because Postfix gives them a meaning:
# "!" and "%" are routing operators (swap_bangpath, allow_percent_hack) and
# "#" starts a comment in its lookup tables.
_ATEXT = r"[a-z0-9&'*+/=?^_`{|}~$-]"
_LOCAL_PART = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
# A DMARC report address is written as a mailto: URI in a TXT record, where
# most punctuation would need %-escaping and "," and "!" mean something.
_RUA_LOCAL_PART = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*")

# A crypt(3) hash as /etc/shadow holds it: $id$[params$]salt$hash, printable
# ASCII without ":" (the shadow field separator) or whitespace.
_CRYPT_HASH = re.compile(r"\$[0-9a-z]+\$[!-9;-~]+")
_SAFE_PATH = re.compile(r"(?:/[A-Za-z0-9._-]+)+")
_POSTFIX_TIME = re.compile(r"([0-9]{1,10})([smhdw]?)")
# A fail2ban time (jail.conf(5) "TIME ABBREVIATION FORMAT"), the units it shares with Postfix.
_FAIL2BAN_TIME = re.compile(r"([0-9]{1,7})([smhdw]?)")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A mailbox quota (mailstack:mailbox_quota, users[].quota): a number of bytes, or
# with a unit K, M, G or T (powers of 1024, as Dovecot counts them), e.g. 500M.
_QUOTA = re.compile(r"([0-9]{1,15})([KMGT]?)", re.IGNORECASE)
_QUOTA_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# More than a mailbox can hold on any disk: a typo.
MAX_QUOTA_BYTES = 1024**5
# users[].quota: this user has no quota even where the domain sets mailbox_quota.
UNLIMITED = "unlimited"
# A Postfix parameter reference in main.cf: $name, ${name} or $(name).
_PARAMETER_REF = re.compile(r"\$(?:([A-Za-z0-9_]+)|\{([A-Za-z0-9_]+)\}|\(([A-Za-z0-9_]+)\))")
# The parameters a banner may show: who we are, and the software's name (never its version).
BANNER_PARAMETERS = ("myhostname", "mydomain", "myorigin", "mail_name")
# rspamd's controller password (mailstack:spam_controller_password): plain text that
# rspamd's config syntax keeps as it is (no quote, backslash or $ variable), or the
# hash `rspamadm pw` prints ($2$salt$hash).
_RSPAMD_PASSWORD = re.compile(r"[!#%-\[\]-~]{12,128}")
_RSPAMD_PASSWORD_HASH = re.compile(r"\$[0-9]\$[a-z0-9]{8,64}\$[a-z0-9]{16,128}")
_SSH_PUBLIC_KEY = re.compile(r"[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}(?: [ -~]*)?")


# The longest duration a key takes (a year): a longer one is a typo.
MAX_DURATION = 366 * 86400


def duration_seconds(value: str) -> int:
    """A duration as config writes it (7d, 5m, 30s, 300: seconds) in seconds."""
    match = _POSTFIX_TIME.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration (expected e.g. 7d)")
    return int(match[1]) * _TIME_UNITS[match[2]]


def quota_bytes(value: str) -> int:
    """A quota as config writes it (500M, 2G, 102400: bytes) in bytes."""
    match = _QUOTA.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (expected e.g. 500M)")
    return int(match[1]) * _QUOTA_UNITS[match[2].upper()]


def _quota(value: str) -> str:
    """A size with unit K/M/G/T (or bytes), more than 0 and less than a petabyte; else the reason."""
    if value.startswith("-"):
        raise ValueError(f"{shown(value)} is negative (expected a size, e.g. 500M; leave the key out for no quota)")
    if not _QUOTA.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a size (expected a number with K, M, G or T, e.g. 500M or 2G)")
    size = quota_bytes(value)
    if size <= 0:
        raise ValueError(f"{shown(value)} is not more than 0 (expected a size, e.g. 500M; leave the key out for no quota)")
    if size > MAX_QUOTA_BYTES:
        raise ValueError(f"{shown(value)} is more than a petabyte (expected a size, e.g. 500M or 2G)")
    return value


class ConfigError(ValueError):
    """The stack's configuration is not usable; `problems` has one line per bad key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --- text every key shares ------------------------------------------------------------


def shown(value: str, limit: int = 60) -> str:
    """A value for an error message: quoted, escapes visible, long ones cut."""
    if len(value) > limit:
        return repr(value[:limit])[:-1] + f"...' ({len(value)} characters)"
    return repr(value)


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    code = f"U+{ord(char):04X}"
    if unicodedata.category(char) == "Cc" or not name:
        return f"the control character {code}"
    return f"the non-ASCII character {char!r} ({code} {name})"


def _one_line(value: str) -> str:
    """Every one-line key: printable ASCII only (no control or lookalike characters)."""
    for char in value:
        if not " " <= char <= "~":
            raise ValueError(f"{shown(value)} contains {_describe(char)} (expected printable ASCII on one line)")
    return value


def _script(value: str) -> str:
    """A whole-file value (a Sieve script): text with tabs and line breaks, nothing that breaks the file."""
    for number, line in enumerate(value.split("\n"), start=1):
        text = line[:-1] if line.endswith("\r") else line
        for char in text:
            if unicodedata.category(char) in ("Cc", "Cs") and char != "\t":
                what = "a CR not followed by LF" if char == "\r" else _describe(char)
                raise ValueError(f"line {number} contains {what} (expected text: only tabs and line breaks)")
    size = len(value.encode("utf-8"))
    if size > MAX_SIEVE_BYTES:
        raise ValueError(f"is {size} bytes (expected at most {MAX_SIEVE_BYTES}, Dovecot's sieve_max_script_size)")
    return value


def _not_a_bool(value: Any) -> Any:
    """YAML true/false is not a number, though Python's bool is an int."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_for_int", "a bool is not a number")
    return value


Line = Annotated[str, AfterValidator(_one_line)]
Script = Annotated[str, AfterValidator(_script)]


# --- value checks shared by several keys ------------------------------------------------


# Cached: every address of every user names the same domain.
@functools.lru_cache(maxsize=1024)
def fqdn(value: str, example: str = "mail.example.com") -> str:
    """A fully-qualified domain name, lower-cased, without a trailing dot."""
    text = value.strip().rstrip(".")
    if not text.isascii():
        raise ValueError(
            f"{shown(value)} is not an ASCII domain name (expected e.g. {example}; "
            "write an internationalised name in its xn-- form)"
        )
    labels = text.lower().split(".")
    if (
        not _HOST_TEXT.fullmatch(text)
        or len(text) > 253
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError(f"{shown(value)} is not a fully-qualified domain name (expected e.g. {example})")
    return ".".join(labels)


def _ip(value: str, what: str, example: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = value.strip()
    if "%" in text:
        # Python accepts an IPv6 zone index (fe80::1%eth0) of any text.
        raise ValueError(f"{shown(value)} has a zone index ('%...'), which is not allowed here (expected e.g. {example})")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{shown(value)} is not {what} (expected e.g. {example})") from None


def _address(value: str, version: int, example: str) -> str:
    kind = f"IPv{version}"
    ip = _ip(value, f"a valid {kind} address", example)
    if ip.version != version:
        raise ValueError(f"{shown(value)} is not an {kind} address (expected e.g. {example})")
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        raise ValueError(f"{shown(value)} cannot receive mail from other hosts (expected a routable {kind} address)")
    return str(ip)


def _local_part(local: str, value: str, pattern: re.Pattern[str], allowed: str) -> None:
    if not pattern.fullmatch(local):
        raise ValueError(
            f"{shown(value)} has a local part mailstack does not accept (expected {allowed}, "
            "single dots not at either end, e.g. alice.smith@example.com)"
        )
    if len(local) > 64:
        raise ValueError(f"{shown(value)} has a local part longer than 64 characters (RFC 5321)")


def _mail_address(value: str, rua: bool = False) -> str:
    local, sep, domain = value.strip().rpartition("@")
    if not sep or not local or '"' in local or "@" in local:
        raise ValueError(f"{shown(value)} is not an e-mail address (expected e.g. alice@example.com)")
    local = local.lower()
    if rua:
        _local_part(local, value, _RUA_LOCAL_PART, "letters, digits, '.', '_', '+' and '-'")
    else:
        _local_part(local, value, _LOCAL_PART, "letters, digits and &'*+/=?^_`{|}~$-")
    address = f"{local}@{fqdn(domain, 'example.com')}"
    if len(address) > 254:
        raise ValueError(f"{shown(value)} is longer than 254 characters (RFC 5321)")
    return address


def _ip_address(value: str) -> str:
    return str(_ip(value, "an IP address", "192.0.2.53"))


def _interface(value: str) -> str:
    if value in ("all", "loopback-only"):
        return value
    return str(_ip(value, "an IP address", "192.0.2.10, or 'all'"))


def _network(value: str) -> str:
    """An address or a network (CIDR), as fail2ban's ignoreip takes it: 192.0.2.7, 2001:db8::/48."""
    text = value.strip()
    example = "203.0.113.5, 198.51.100.0/24 or 2001:db8::/48"
    if "%" in text:
        raise ValueError(
            f"{shown(value)} has a zone index ('%...'), which is not allowed here (expected e.g. {example})"
        )
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        if "host bits set" in str(err):
            raise ValueError(
                f"{shown(value)} has bits set after its prefix (expected a network, e.g. {example})"
            ) from None
        raise ValueError(f"{shown(value)} is not an IP address or network (expected e.g. {example})") from None
    return str(network.network_address) if network.num_addresses == 1 and "/" not in text else str(network)


def _reverse_zone(value: str) -> str:
    name = fqdn(value, "2.0.192.in-addr.arpa")
    if not name.endswith((".in-addr.arpa", ".ip6.arpa")):
        raise ValueError(f"{shown(value)} is not a reverse zone (expected e.g. 2.0.192.in-addr.arpa)")
    return name


def _notify_class(value: str) -> str:
    if value not in NOTIFY_CLASSES:
        raise ValueError(f"{shown(value)} is not a notify class (expected some of: {', '.join(NOTIFY_CLASSES)})")
    return value


def _user_name(value: str, example: str) -> str:
    if not _USER_NAME.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not a valid user name (expected lower-case letters, digits, '_' or '-', "
            f"starting with a letter, at most 32 characters, e.g. {example})"
        )
    return value


def _mailbox_name(value: str) -> str:
    """A mailbox's name is the local part of its address (alice -> alice@<domain>)."""
    if not _MAILBOX_NAME.fullmatch(value) or ".." in value or value.endswith("."):
        raise ValueError(
            f"{shown(value)} is not a mailbox name (expected the local part of its address: lower-case letters, "
            "digits, '.', '_' or '-', starting with a letter or digit, single dots not at the end, "
            "at most 64 characters, e.g. alice or alice.smith)"
        )
    if value in ROLE_NAMES:
        raise ValueError(
            f"{value!r} is a role name the host routes itself (postmaster@ goes to mailstack:postmaster, "
            "bounces come from MAILER-DAEMON) (choose another name)"
        )
    return value


def _host_stack(value: str) -> str:
    """The host stack as a StackReference names it: its name, or organization/mailstack/<name>."""
    form = (
        'expected e.g. host-mail, or organization/mailstack/host-mail: with the file backend the '
        'organization is "organization" and the project is "mailstack"'
    )
    parts = value.split("/")
    if len(parts) == 3 and parts[:2] == ["organization", PROJECT]:
        name = parts[2]
    elif len(parts) == 1:
        name = value
    else:
        raise ValueError(f"{shown(value)} is not a stack mailstack can reference ({form})")
    if not _STACK_NAME.fullmatch(name):
        raise ValueError(
            f"{shown(value)} is not a Pulumi stack name (expected letters, digits, '_', '.' and '-', "
            "at most 100 characters, e.g. host-mail)"
        )
    return value


# List items are checked one by one, so that an error names e.g. mailstack:ipv4[1].
IPv4 = Annotated[Line, AfterValidator(lambda v: _address(v, 4, "192.0.2.10"))]
IPv6 = Annotated[Line, AfterValidator(lambda v: _address(v, 6, "2001:db8::10"))]
MailAddress = Annotated[Line, AfterValidator(_mail_address)]
RuaAddress = Annotated[Line, AfterValidator(lambda v: _mail_address(v, rua=True))]
Interface = Annotated[Line, AfterValidator(_interface)]
IPAddress = Annotated[Line, AfterValidator(_ip_address)]
ReverseZone = Annotated[Line, AfterValidator(_reverse_zone)]
Network = Annotated[Line, AfterValidator(_network)]
NotifyClass = Annotated[Line, AfterValidator(_notify_class)]
Int = Annotated[int, BeforeValidator(_not_a_bool)]


# An rspamd score threshold (mailstack:spam_*_score): a whole number, as Pulumi.yaml
# declares it (rspamd itself would take a fraction; no careful setting needs one).
Score = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=1000)]


# --- the model ----------------------------------------------------------------------------
#
# Two kinds of stack share one host. The host stack (HostConfig) sets up the
# host: Postfix, Dovecot, OpenDKIM, policyd-spf, TLS, the host's own DNS
# records. Each domain stack (DomainConfig) adds one mail domain to it: the
# mailboxes, aliases and DKIM key of that domain, and its DNS records.


class User(BaseModel):
    """A mailbox of the domain: <name>@<domain>, under /var/vmail/<domain>/<name>/."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Line = Field(description="The mailbox's local part; its address is <name>@<domain> (the IMAP/SMTP login)")
    password_hash: SecretStr | None = Field(
        default=None,
        description="crypt(3) hash (e.g. from `openssl passwd -6`); a secret. "
        "Without one nobody can log in to the mailbox: mail is still delivered.",
    )
    addresses: list[MailAddress] = Field(
        default_factory=list,
        description="Addresses this user receives at and may send as (default: <name>@<domain>)",
    )
    sieve: Script | None = Field(default=None, description="The user's Sieve script (~/.dovecot.sieve)")
    quota: Line | None = Field(
        default=None,
        description="The mailbox's quota, e.g. 500M or 2G (K, M, G, T); 'unlimited': none even where the "
        "domain sets mailbox_quota (default: mailbox_quota)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _mailbox_name(value)

    @field_validator("quota", mode="before")
    @classmethod
    def _quota_number(cls, value: Any) -> Any:
        # YAML reads `102400` as a number: bytes.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("quota")
    @classmethod
    def _quota(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == UNLIMITED:
            return value
        try:
            return _quota(value)
        except ValueError as err:
            # Name the user: the message says whose mailbox the bad quota is for.
            name = info.data.get("name")
            raise ValueError(f"for user {name!r}: {err}" if name else str(err)) from None

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _CRYPT_HASH.fullmatch(value.get_secret_value()):
            # Never echo the value: it is a secret.
            raise ValueError("is not a crypt(3) password hash (expected e.g. the output of `openssl passwd -6`)")
        return value


class Alias(BaseModel):
    """An address of the domain that forwards to others (no mailbox of its own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: MailAddress = Field(description="The alias, an address of the domain")
    to: list[MailAddress] = Field(description="Where its mail goes: mailboxes or aliases here, or other domains' addresses")

    @field_validator("to")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("is empty (expected at least one address to deliver to, e.g. [alice@example.com])")
        return value


class _Stack(BaseModel):
    """What both kinds of stack have: the Cloudflare zone their records go in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cloudflare_zone_id: Line | None = Field(default=None, description="Zone id (default: looked up by name)")
    cloudflare_zone_name: Line | None = Field(default=None, description="Zone name (default: see zone_name)")

    @field_validator("cloudflare_zone_name")
    @classmethod
    def _zone_name(cls, value: str | None) -> str | None:
        return None if value is None else fqdn(value, "example.com")

    @field_validator("cloudflare_zone_id")
    @classmethod
    def _zone_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{32}", value):
            raise ValueError(
                f"{shown(value)} is not a Cloudflare zone id (expected 32 hex digits, from the zone's overview page)"
            )
        return value


class HostConfig(_Stack):
    """The host stack: the mail host and its daemons. Field names are the config keys."""

    # -- the host
    hostname: Line = Field(description="The mail host's name, e.g. mail.example.net (Postfix's myhostname)")
    ipv4: list[IPv4] = Field(default_factory=list, description="The host's public IPv4 addresses")
    ipv6: list[IPv6] = Field(default_factory=list, description="The host's public IPv6 addresses")
    inet_interfaces: list[Interface] | None = Field(
        default=None,
        description="Addresses Postfix listens on (default: the host's addresses plus loopback)",
    )

    # -- how to reach the host
    ssh_host: Line | None = Field(default=None, description="Address or name to SSH to (default: hostname)")
    ssh_port: Int = Field(default=22, ge=1, le=65535, description="SSH port")
    ssh_user: Line = Field(default="root", description="SSH user: root, or a user with password-less sudo")
    ssh_private_key: SecretStr | None = Field(
        default=None, description="SSH private key (secret); without one, the SSH agent is used"
    )
    ssh_host_key: SecretStr | None = Field(
        default=None, description="The host's public SSH key, pinned (secret); without one it is not checked"
    )

    # -- Cloudflare (the zone of the hostname; cloudflare_zone_* come from _Stack)
    reverse_zones: list[ReverseZone] = Field(
        default_factory=list,
        description="Reverse zones on Cloudflare to publish PTR records in, e.g. 2.0.192.in-addr.arpa",
    )

    # -- Postfix: the guide's settings, named as in main.cf
    smtpd_banner: Line = Field(default="$myhostname ESMTP $mail_name", description="Banner: no version, no OS")
    message_size_limit: Int = Field(
        default=25_000_000, le=MAX_POSTFIX_INT, description="Largest message in bytes (never 0)"
    )
    smtpd_error_sleep_time: Line = Field(default="8s", description="Delay after each error")
    smtpd_soft_error_limit: Int = Field(default=1, ge=0, le=MAX_POSTFIX_INT, description="Errors before delaying")
    smtpd_hard_error_limit: Int = Field(
        default=3, ge=1, le=MAX_POSTFIX_INT, description="Errors before disconnecting"
    )
    soft_bounce: bool = Field(default=True, description="Turn 5xx into 4xx while testing; remove afterwards")
    testing: bool = Field(
        default=False,
        description="The stack is being tested: the policy pack (policy/) allows soft_bounce only then",
    )
    notify_classes: list[NotifyClass] = Field(
        default_factory=lambda: list(NOTIFY_CLASSES), description="What postmaster is told about"
    )
    policyd_spf_time_limit: Int = Field(
        default=3600, ge=1, le=MAX_POSTFIX_INT, description="policyd-spf_time_limit in seconds"
    )
    unknown_client_reject_code: Literal[450, 550] = Field(
        default=450,
        description="Reply to a client whose IP lacks forward-confirmed reverse DNS (450: it may retry, 550: refused)",
    )

    # -- TLS
    smtpd_tls_cert_file: Line = Field(default="/etc/ssl/private/postfix.cacert.pem", description="TLS certificate")
    smtpd_tls_key_file: Line = Field(default="/etc/ssl/private/postfix.privkey.pem", description="TLS private key")
    tls: Literal["acme", "self-signed", "files"] = Field(
        default="self-signed",
        description="Where the host's certificate comes from: acme (DNS-01 via Cloudflare), "
        "self-signed (made once), files (yours, at smtpd_tls_cert_file/smtpd_tls_key_file)",
    )
    acme_directory: Line = Field(default=ACME_DIRECTORY, description="The ACME server's directory URL (https)")
    acme_email: MailAddress | None = Field(
        default=None, description="The ACME account's e-mail address (default: postmaster_address)"
    )
    acme_cloudflare_token: SecretStr | None = Field(
        default=None,
        description="Cloudflare API token with Zone:DNS:Edit on the host's zone and every hosted domain's zone "
        "(secret); required when tls is acme",
    )
    acme_propagation_seconds: Int = Field(
        default=30, ge=0, le=600, description="Seconds certbot waits for the DNS-01 TXT record to propagate"
    )
    dnssec: bool = Field(
        default=False,
        description="Cloudflare signs the host's zone, and the host publishes TLSA records of its keys (DANE)",
    )
    tls_key_roll: Int = Field(
        default=0, ge=0, le=1_000_000,
        description="Raise by one to serve the next TLS key, whose TLSA record the last up published",
    )
    smtp_tls_security_level: Literal["dane", "may"] = Field(
        default="dane", description="Outgoing TLS: dane (verified where receivers publish TLSA) or may (the guide's)"
    )

    # -- OpenDKIM's resolver (the keys themselves are the domain stacks')
    opendkim_nameservers: list[IPAddress] = Field(
        default_factory=list, description="Resolvers OpenDKIM asks (default: its own resolver, from the root)"
    )
    opendkim_dnssec: bool = Field(default=True, description="OpenDKIM validates DNSSEC from the root trust anchor")

    # -- the host's own mail
    postmaster_address: MailAddress = Field(
        description="Where root@ and postmaster@ of the hostname go, e.g. alice@example.com"
    )
    vmail_uid: Int = Field(
        default=5000, ge=1000, le=60000, description="uid and gid of the vmail account that owns every mailbox"
    )

    # -- fail2ban (README, "fail2ban")
    fail2ban: bool = Field(
        default=True, description="Run fail2ban: ban addresses that keep failing logins or being rejected"
    )
    fail2ban_max_retry: Int = Field(
        default=5, ge=1, le=1000, description="Failures within fail2ban_find_time that get an address banned"
    )
    fail2ban_find_time: Line = Field(default="10m", description="How far back fail2ban counts failures, e.g. 10m")
    fail2ban_ban_time: Line = Field(default="1h", description="How long a ban lasts, e.g. 1h")
    fail2ban_ignore_addresses: list[Network] = Field(
        default_factory=list,
        description="Addresses or networks never banned, e.g. the address you deploy from (203.0.113.5, 2001:db8::/48)",
    )

    # -- spam filtering: rspamd and Redis (README, "Spam filtering")
    spam_filter: bool = Field(
        default=True, description="Run rspamd (with Redis) as a milter: reject, greylist or mark spam"
    )
    spam_reject_score: Score = Field(default=15, description="rspamd score at which mail is refused (5xx)")
    spam_header_score: Score = Field(
        default=6, description="rspamd score at which mail gets X-Spam: Yes (and goes to Junk)"
    )
    spam_greylist_score: Score = Field(
        default=4, description="rspamd score at which an unauthenticated sender's first delivery is greylisted (4xx)"
    )
    greylisting: bool = Field(default=True, description="Greylist mail scoring between spam_greylist_score and spam_header_score")
    greylist_delay: Line = Field(default="5m", description="How long a greylisted sender must wait before its retry is accepted")
    spam_controller_password: SecretStr | None = Field(
        default=None,
        description="Password of rspamd's web interface and controller (secret); none: no password logins",
    )

    # -- moving a host from the single-domain layout (README, "Moving a host to the multi-domain layout")
    adopt: Line = Field(
        default="",
        description="The single-domain stack (project/stack) whose host this host stack takes over; empty: none",
    )

    # ---- single values

    @field_validator("unknown_client_reject_code", mode="before")
    @classmethod
    def _reject_code_from_text(cls, value: Any) -> Any:
        # Pulumi hands every config value, Pulumi.yaml's defaults included, to the program as text.
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return fqdn(value)

    @field_validator("adopt")
    @classmethod
    def _adopt(cls, value: str) -> str:
        # As the older mailstack wrote it in /etc/mailstack/owner: "<project>/<stack>".
        parts = value.split("/")
        if value and (len(parts) != 2 or not all(_STACK_NAME.fullmatch(part) for part in parts)):
            raise ValueError(
                f"{shown(value)} is not a stack as /etc/mailstack/owner names it (expected <project>/<stack>, "
                "e.g. mailstack/example.com)"
            )
        return value

    @field_validator("fail2ban_find_time", "fail2ban_ban_time", mode="before")
    @classmethod
    def _fail2ban_time_number(cls, value: Any) -> Any:
        # YAML reads `600` as a number; fail2ban takes it as seconds.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("fail2ban_find_time", "fail2ban_ban_time")
    @classmethod
    def _fail2ban_time(cls, value: str) -> str:
        match = _FAIL2BAN_TIME.fullmatch(value)
        if not match or int(match[1]) == 0:
            raise ValueError(
                f"{shown(value)} is not a duration fail2ban takes (expected a number and a unit: s, m, h, d or w, "
                "e.g. 10m or 1h)"
            )
        return value

    @field_validator("greylist_delay", mode="before")
    @classmethod
    def _greylist_delay_number(cls, value: Any) -> Any:
        # YAML reads `300` as a number: seconds.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("greylist_delay")
    @classmethod
    def _greylist_delay(cls, value: str) -> str:
        match = _POSTFIX_TIME.fullmatch(value)
        if not match or match[2] == "w" or int(match[1]) == 0:
            raise ValueError(f"{shown(value)} is not a duration (expected a number with s, m, h or d, e.g. 5m)")
        if duration_seconds(value) > 86400:
            # rspamd forgets a greylisted sender after a day (greylist expire): a longer wait never ends.
            raise ValueError(f"{shown(value)} is longer than a day (expected e.g. 5m)")
        return value

    @field_validator("spam_controller_password", mode="before")
    @classmethod
    def _controller_password_empty(cls, value: Any) -> Any:
        # Pulumi.yaml's default "" (the engine sends it): no password.
        return None if value == "" else value

    @field_validator("spam_controller_password")
    @classmethod
    def _controller_password(cls, value: SecretStr | None) -> SecretStr | None:
        # Never echo the value: it is a secret.
        if value is None:
            return None
        secret = value.get_secret_value()
        if _RSPAMD_PASSWORD_HASH.fullmatch(secret):
            return value
        if not _RSPAMD_PASSWORD.fullmatch(secret):
            raise ValueError(
                "is not a password rspamd's config can hold (expected 12 to 128 printable ASCII characters without "
                "spaces, '\"', '\\' or '$', or a hash from `rspamadm pw`; set it with "
                "`pulumi config set --secret spam_controller_password`)"
            )
        return value

    @field_validator("inet_interfaces")
    @classmethod
    def _interfaces(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("is empty (expected addresses, or 'all')")
        return value

    @field_validator("ssh_host")
    @classmethod
    def _ssh_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "%" in value:
            _ip(value, "an IP address", "192.0.2.10")  # raises: no zone index
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            return fqdn(value)

    @field_validator("ssh_user")
    @classmethod
    def _ssh_user(cls, value: str) -> str:
        return _user_name(value, "root")

    @field_validator("ssh_private_key")
    @classmethod
    def _private_key(cls, value: SecretStr | None) -> SecretStr | None:
        # Never echo the value: it is a secret.
        if value is None:
            return None
        text = value.get_secret_value()
        if not re.fullmatch(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[ -~\r\n]*-----END [A-Z0-9 ]*PRIVATE KEY-----\s*", text):
            raise ValueError(
                "is not a private key in PEM form (expected the whole file, from "
                "-----BEGIN OPENSSH PRIVATE KEY----- to the END line, e.g. `pulumi config set --secret "
                "ssh_private_key < ~/.ssh/id_ed25519`)"
            )
        return value

    @field_validator("ssh_host_key")
    @classmethod
    def _host_key(cls, value: SecretStr | None) -> SecretStr | None:
        # Never echo the value: it is a secret.
        if value is not None and not _SSH_PUBLIC_KEY.fullmatch(value.get_secret_value().strip()):
            raise ValueError(
                "is not an SSH public key (expected one line like ssh-ed25519 AAAAC3Nza..., "
                "e.g. from `ssh-keyscan -t ed25519 HOST`)"
            )
        return value

    @field_validator("smtpd_banner")
    @classmethod
    def _banner(cls, value: str) -> str:
        if not value.startswith("$myhostname"):
            # RFC 5321 4.3.1: the greeting starts with the server's name.
            raise ValueError(f"{shown(value)} does not start with $myhostname (RFC 5321 requires the host name first)")
        if value != value.rstrip():
            raise ValueError(f"{shown(value)} ends with a space, which main.cf would drop (expected e.g. $myhostname ESMTP $mail_name)")
        if "$" in _PARAMETER_REF.sub("", value):
            raise ValueError(
                f"{shown(value)} has a '$' that is not a Postfix parameter (expected $name or ${{name}}, "
                "e.g. $myhostname ESMTP $mail_name)"
            )
        for match in _PARAMETER_REF.finditer(value):
            name = next(group for group in match.groups() if group)
            if name == "mail_version":
                raise ValueError(f"{shown(value)} shows Postfix's version (the guide: the banner shows no version)")
            if name not in BANNER_PARAMETERS:
                raise ValueError(
                    f"{shown(value)} refers to ${name}, which a banner does not show (expected some of: "
                    f"{', '.join('$' + p for p in BANNER_PARAMETERS)})"
                )
        if len(value) > 200:
            raise ValueError(f"{shown(value)} is longer than 200 characters (expected a short greeting)")
        return value

    @field_validator("message_size_limit")
    @classmethod
    def _size(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"{value!r} is not allowed: the guide forbids 0 (unlimited) (expected bytes, e.g. 25000000)")
        return value

    @field_validator("smtpd_error_sleep_time", mode="before")
    @classmethod
    def _sleep_number(cls, value: Any) -> Any:
        # YAML reads `8` as a number; Postfix takes it as seconds.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("smtpd_error_sleep_time")
    @classmethod
    def _sleep(cls, value: str) -> str:
        match = _POSTFIX_TIME.fullmatch(value)
        if not match:
            raise ValueError(f"{shown(value)} is not a Postfix time (expected e.g. 8s)")
        if int(match[1]) * _TIME_UNITS[match[2]] > MAX_POSTFIX_INT:
            raise ValueError(f"{shown(value)} is longer than Postfix can count (expected e.g. 8s)")
        return value

    @field_validator("smtpd_tls_cert_file", "smtpd_tls_key_file")
    @classmethod
    def _path(cls, value: str) -> str:
        parts = value.split("/")[1:]
        if not _SAFE_PATH.fullmatch(value) or any(part in (".", "..") for part in parts) or len(value) > 1024:
            raise ValueError(
                f"{shown(value)} is not an absolute file path (expected e.g. /etc/ssl/private/postfix.pem, with "
                "letters, digits, '.', '_' and '-' between single slashes)"
            )
        return value

    @field_validator("acme_directory")
    @classmethod
    def _acme_directory(cls, value: str) -> str:
        if not _HTTPS_URL.fullmatch(value) or len(value) > 1024:
            raise ValueError(f"{shown(value)} is not an https URL (expected e.g. {ACME_DIRECTORY})")
        return value

    @field_validator("acme_cloudflare_token")
    @classmethod
    def _acme_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Never echo the value: it is a secret.
        if value is not None and not _CLOUDFLARE_TOKEN.fullmatch(value.get_secret_value().strip()):
            raise ValueError(
                "is not a Cloudflare API token (expected the token's value: letters, digits, '_' and '-', "
                "e.g. `pulumi config set --secret acme_cloudflare_token` and paste it)"
            )
        return None if value is None else SecretStr(value.get_secret_value().strip())

    # ---- checks across keys

    @model_validator(mode="after")
    def _whole(self) -> HostConfig:
        problems: list[tuple[str, str]] = []
        host = self.hostname
        zone = self.zone_name
        if host != zone and not host.endswith("." + zone):
            problems.append(("cloudflare_zone_name", f"{zone!r} does not contain {host} (its A/AAAA records go in that zone)"))
        if not self.ipv4 and not self.ipv6:
            problems.append(("ipv4", "is empty and so is mailstack:ipv6 (expected at least one address of the host)"))
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
        if self.tls == "files":
            # Your own key: mailstack cannot make the next one ahead, so it cannot publish it first.
            for key, on in (("dnssec", self.dnssec), ("tls_key_roll", self.tls_key_roll)):
                if on:
                    problems.append((key, f"{on!r} needs a key mailstack keeps, and mailstack:tls is files "
                                          "(expected tls: acme or self-signed, or leave DANE to the owner of the files)"))
        if self.postmaster_address.rpartition("@")[2] == host:
            # At the host's own name only root@ and postmaster@ exist (/etc/aliases), and they come here.
            problems.append(
                ("postmaster_address", f"{self.postmaster_address!r} is at the host's own name, whose mail comes to this very "
                 "address (expected a mailbox in a hosted domain, e.g. alice@example.com)")
            )
        if self.tls == "acme" and self.acme_cloudflare_token is None:
            problems.append(
                ("acme_cloudflare_token", "is required when mailstack:tls is acme (expected a Cloudflare API token "
                 "with Zone:DNS:Edit on the host's zone and every hosted domain's zone, set with "
                 "`pulumi config set --secret acme_cloudflare_token`)")
            )
        if self.tls == "acme" and self.smtpd_tls_cert_file == self.smtpd_tls_key_file:
            problems.append(
                ("smtpd_tls_key_file", f"{self.smtpd_tls_key_file!r} is also smtpd_tls_cert_file "
                 "(expected two files: the key and the certificate's full chain)")
            )
        # rspamd's actions in rising order: greylist, then the header, then reject.
        if self.spam_header_score >= self.spam_reject_score:
            problems.append(
                ("spam_header_score", f"{self.spam_header_score:g} is not below spam_reject_score "
                 f"({self.spam_reject_score:g}) (expected spam_greylist_score < spam_header_score < spam_reject_score)")
            )
        if self.spam_greylist_score >= self.spam_header_score:
            problems.append(
                ("spam_greylist_score", f"{self.spam_greylist_score:g} is not below spam_header_score "
                 f"({self.spam_header_score:g}) (expected spam_greylist_score < spam_header_score < spam_reject_score)")
            )
        if problems:
            raise _CrossKeyProblems(problems)
        return self

    # ---- derived values (one place each)

    @property
    def host_name(self) -> str:
        return self.hostname

    @property
    def acme_account_email(self) -> str:
        return self.acme_email or self.postmaster_address

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
        return self.ssh_host or self.hostname

    @property
    def zone_name(self) -> str:
        """The zone of the hostname: mail.example.net -> example.net (a two-label name is its own zone)."""
        if self.cloudflare_zone_name:
            return self.cloudflare_zone_name
        _, _, rest = self.hostname.partition(".")
        return rest if "." in rest else self.hostname


class DomainConfig(_Stack):
    """A domain stack: one mail domain on the host of `host_stack`. Field names are the config keys."""

    # -- the domain and its host
    domain: Line = Field(description="The mail domain, e.g. example.com")
    host_stack: Line = Field(description="The host stack this domain is hosted on, e.g. host-mail")

    # -- DKIM and DMARC
    dkim_selector: Line = Field(default="mail", description="DKIM selector")
    dkim_bits: Literal[2048, 3072, 4096] = Field(default=2048, description="RSA key size of a new DKIM key")
    # A rotation (README, "Rotating a DKIM key"): how long a retired selector's record and key stay,
    # and how long the signing unit waits for the new selector's record to be visible.
    dkim_retention: Line = Field(default="7d", description="How long a retired DKIM selector stays published")
    dkim_publish_timeout: Line = Field(
        default="5m", description="How long to wait for a new DKIM record before signing with it"
    )
    dmarc_policy: Literal["none", "quarantine", "reject"] = Field(default="quarantine", description="DMARC p=")
    dmarc_rua: list[RuaAddress] | None = Field(
        default=None, description="Where aggregate reports go (default: postmaster@<domain>)"
    )

    # -- MTA-STS and TLS-RPT (README, "MTA-STS and TLS-RPT")
    mta_sts_mode: Literal["none", "testing", "enforce"] = Field(
        default="testing", description="MTA-STS policy mode (none: no policy published)"
    )
    mta_sts_max_age: Int = Field(
        default=604800, ge=86400, le=31557600, description="MTA-STS policy max_age in seconds (1 day to 1 year)"
    )
    tls_rpt_rua: list[RuaAddress] | None = Field(
        default=None, description="Where TLS-RPT reports go (default: postmaster@<domain>)"
    )

    # -- client autoconfiguration (README, "Client autoconfiguration")
    autoconfig: bool = Field(
        default=True, description="Publish RFC 6186 SRV records and autoconfig.<domain> for mail clients"
    )

    # -- mailboxes and aliases
    users: list[User] = Field(default_factory=list, description="Mailboxes")
    postmaster: Line | None = Field(
        default=None, description="User who gets postmaster@<domain> (default: the first user)"
    )
    aliases: list[Alias] = Field(default_factory=list, description="Addresses that forward to others")
    catch_all: Line | None = Field(default=None, description="User who gets mail for unknown addresses (default: none)")
    # -- quotas (README, "Mailbox quotas")
    mailbox_quota: Line | None = Field(
        default=None, description="Every mailbox's quota unless its user sets one, e.g. 1G (default: none, unlimited)"
    )

    # ---- single values

    @field_validator("dkim_bits", mode="before")
    @classmethod
    def _dkim_bits_from_text(cls, value: Any) -> Any:
        # Pulumi hands every config value, Pulumi.yaml's defaults included, to the program as text.
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("dkim_retention", "dkim_publish_timeout", mode="before")
    @classmethod
    def _duration_number(cls, value: Any) -> Any:
        # YAML reads `300` as a number: seconds.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("dkim_retention", "dkim_publish_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        match = _POSTFIX_TIME.fullmatch(value)
        if not match:
            raise ValueError(f"{shown(value)} is not a duration (expected a number with s, m, h, d or w, e.g. 7d)")
        if duration_seconds(value) > MAX_DURATION:
            raise ValueError(f"{shown(value)} is longer than a year (expected e.g. 7d)")
        return value

    @property
    def dkim_retention_seconds(self) -> int:
        return duration_seconds(self.dkim_retention)

    @property
    def dkim_publish_timeout_seconds(self) -> int:
        return duration_seconds(self.dkim_publish_timeout)

    @field_validator("mailbox_quota", mode="before")
    @classmethod
    def _mailbox_quota_number(cls, value: Any) -> Any:
        # YAML reads `102400` as a number: bytes.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("mailbox_quota")
    @classmethod
    def _mailbox_quota(cls, value: str | None) -> str | None:
        return None if value is None else _quota(value)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty (expected the mail domain, e.g. example.com)")
        return fqdn(value, "example.com")

    @field_validator("host_stack")
    @classmethod
    def _host_stack(cls, value: str) -> str:
        return _host_stack(value)

    @field_validator("dkim_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not _LABEL.fullmatch(value):
            raise ValueError(
                f"{shown(value)} is not a valid DKIM selector (expected one DNS label: lower-case letters, "
                "digits and '-', e.g. mail or s2026)"
            )
        return value

    @field_validator("users", "aliases", mode="before")
    @classmethod
    def _list_before(cls, value: Any) -> Any:
        return value if value is not None else []

    # ---- checks across keys

    @model_validator(mode="after")
    def _whole(self) -> DomainConfig:
        problems: list[tuple[str, str]] = []
        domain = self.domain
        zone = self.zone_name
        if domain != zone and not domain.endswith("." + zone):
            problems.append(("cloudflare_zone_name", f"{zone!r} does not contain {domain} (its records go in that zone)"))
        if not self.users:
            problems.append(
                ("users", f"is empty (expected at least one mailbox: postmaster@{domain} must reach someone, RFC 5321 4.5.1)")
            )
        postmaster_address = f"postmaster@{domain}"
        made_here = "is made by mailstack for the user mailstack:postmaster names"
        names = [user.name for user in self.users]
        # Every mailbox's own address is its own, whatever its addresses list says.
        owner_of: dict[str, str] = {self.mailbox_of(user): user.name for user in self.users}
        claimed: set[str] = set()
        for i, user in enumerate(self.users):
            if user.name in names[:i]:
                problems.append((f"users[{i}].name", f"{user.name!r} is a duplicate user (each user is listed once)"))
            for j, address in enumerate(self.addresses_of(user)):
                where = f"users[{i}].addresses[{j}]"
                owner = owner_of.get(address)
                if address.rpartition("@")[2] != domain:
                    problems.append((where, f"{address!r} is outside {domain} (expected e.g. {user.name}@{domain})"))
                elif address == postmaster_address:
                    problems.append((where, f"{address!r} {made_here} (leave it out here)"))
                elif owner is not None and owner != user.name:
                    problems.append((where, f"{address!r} already belongs to {owner!r} (each address has one owner)"))
                elif address in claimed:
                    problems.append((where, f"{address!r} is listed twice (each address once)"))
                owner_of.setdefault(address, user.name)
                claimed.add(address)
        users = ", ".join(sorted(set(names))) or "none"
        for key in ("postmaster", "catch_all"):
            name = getattr(self, key)
            if name is not None and name not in names:
                problems.append((key, f"{shown(name)} is not one of the users (expected one of: {users})"))
        alias_addresses = {alias.address for alias in self.aliases}
        seen_aliases: set[str] = set()
        for i, alias in enumerate(self.aliases):
            address = alias.address
            where = f"aliases[{i}].address"
            if address.rpartition("@")[2] != domain:
                problems.append((where, f"{address!r} is outside {domain} (expected e.g. team@{domain})"))
            elif address == postmaster_address:
                problems.append((where, f"{address!r} {made_here} (use mailstack:postmaster)"))
            elif address in owner_of:
                problems.append((where, f"{address!r} is an address of user {owner_of[address]!r} (an address is a mailbox's or an alias, not both)"))
            elif address in seen_aliases:
                problems.append((where, f"{address!r} is listed twice (each alias once)"))
            seen_aliases.add(address)
            for j, target in enumerate(alias.to):
                if target == address:
                    problems.append((f"aliases[{i}].to[{j}]", f"{target!r} is the alias itself (expected where its mail goes)"))
                elif target.rpartition("@")[2] == domain and not (
                    target in owner_of or target in alias_addresses or (target == postmaster_address and self.users)
                ):
                    problems.append(
                        (f"aliases[{i}].to[{j}]", f"{target!r} is neither a user's address nor an alias of {domain} "
                         f"(expected one of mailstack:users or mailstack:aliases)")
                    )
        if problems:
            raise _CrossKeyProblems(problems)
        return self

    # ---- derived values (one place each)

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

    @property
    def tls_rpt(self) -> list[str]:
        """Where TLS-RPT reports go (RFC 8460 3): mailstack:tls_rpt_rua, or postmaster@<domain>."""
        return self.tls_rpt_rua if self.tls_rpt_rua is not None else [f"postmaster@{self.domain}"]

    def mailbox_of(self, user: User) -> str:
        return f"{user.name}@{self.domain}"

    def addresses_of(self, user: User) -> list[str]:
        return user.addresses or [self.mailbox_of(user)]

    def quota_of(self, user: User) -> int | None:
        """The user's quota in bytes: users[].quota, else mailbox_quota; None: unlimited."""
        quota = user.quota if user.quota is not None else self.mailbox_quota
        return None if quota is None or quota == UNLIMITED else quota_bytes(quota)


class _CrossKeyProblems(ValueError):
    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))


# --- what each key looks like, for messages about a value of the wrong kind ---------------

# key path ("[]" for a list item) -> (what it is, an example as a stack file writes it)
FORMS: dict[str, tuple[str, str]] = {
    # the host stack
    "hostname": ("a host name", "mail.example.net"),
    "ipv4": ("a list of IPv4 addresses", "[192.0.2.10]"),
    "ipv4[]": ("an IPv4 address", "192.0.2.10"),
    "ipv6": ("a list of IPv6 addresses", "[2001:db8::10]"),
    "ipv6[]": ("an IPv6 address", "2001:db8::10"),
    "inet_interfaces": ("a list of addresses", "[192.0.2.10, 127.0.0.1]"),
    "inet_interfaces[]": ("an IP address or 'all'", "192.0.2.10"),
    "ssh_host": ("an address or host name", "192.0.2.10"),
    "ssh_port": ("a TCP port", "22"),
    "ssh_user": ("a user name", "root"),
    "ssh_private_key": ("a private key in PEM form", "the contents of ~/.ssh/id_ed25519"),
    "ssh_host_key": ("an SSH public key", "ssh-ed25519 AAAAC3Nza..."),
    "reverse_zones": ("a list of reverse zones", "[2.0.192.in-addr.arpa]"),
    "reverse_zones[]": ("a reverse zone", "2.0.192.in-addr.arpa"),
    "smtpd_banner": ("a one-line banner", "$myhostname ESMTP $mail_name"),
    "message_size_limit": ("a number of bytes", "25000000"),
    "smtpd_error_sleep_time": ("a Postfix time", "8s"),
    "smtpd_soft_error_limit": ("a number of errors", "1"),
    "smtpd_hard_error_limit": ("a number of errors", "3"),
    "soft_bounce": ("true or false", "true"),
    "testing": ("true or false", "false"),
    "notify_classes": ("a list of notify classes", "[bounce, 2bounce, delay]"),
    "notify_classes[]": ("a notify class", "bounce"),
    "policyd_spf_time_limit": ("a number of seconds", "3600"),
    "unknown_client_reject_code": ("one of 450, 550", "450"),
    "smtpd_tls_cert_file": ("an absolute file path", "/etc/ssl/private/postfix.cacert.pem"),
    "smtpd_tls_key_file": ("an absolute file path", "/etc/ssl/private/postfix.privkey.pem"),
    "smtp_tls_security_level": ("one of dane, may", "dane"),
    "dnssec": ("true or false", "false"),
    "tls_key_roll": ("a number, raised by one for each key roll", "0"),
    "opendkim_nameservers": ("a list of IP addresses", "[192.0.2.53]"),
    "opendkim_nameservers[]": ("an IP address", "192.0.2.53"),
    "opendkim_dnssec": ("true or false", "true"),
    "tls": ("one of acme, self-signed, files", "acme"),
    "acme_directory": ("an https URL", ACME_DIRECTORY),
    "acme_email": ("an e-mail address", "alice@example.com"),
    "acme_cloudflare_token": ("a Cloudflare API token", "the token's value, set with `pulumi config set --secret`"),
    "acme_propagation_seconds": ("a number of seconds from 0 to 600", "30"),
    "postmaster_address": ("an e-mail address", "alice@example.com"),
    "vmail_uid": ("a uid", "5000"),
    "adopt": ("the older stack, as /etc/mailstack/owner names it", "mailstack/example.com"),
    "fail2ban": ("true or false", "true"),
    "fail2ban_max_retry": ("a number of failures", "5"),
    "fail2ban_find_time": ("a duration", "10m"),
    "fail2ban_ban_time": ("a duration", "1h"),
    "fail2ban_ignore_addresses": ("a list of addresses or networks", "[203.0.113.5, 2001:db8::/48]"),
    "fail2ban_ignore_addresses[]": ("an address or a network", "203.0.113.5"),
    "spam_filter": ("true or false", "true"),
    "spam_reject_score": ("a whole number from 1 to 1000", "15"),
    "spam_header_score": ("a whole number from 1 to 1000", "6"),
    "spam_greylist_score": ("a whole number from 1 to 1000", "4"),
    "greylisting": ("true or false", "true"),
    "greylist_delay": ("a duration", "5m"),
    "spam_controller_password": ("a password or a hash from `rspamadm pw`", "set with `pulumi config set --secret`"),
    # both
    "cloudflare_zone_id": ("a Cloudflare zone id", "32 hex digits"),
    "cloudflare_zone_name": ("a zone name", "example.com"),
    # a domain stack
    "domain": ("a domain name", "example.com"),
    "host_stack": ("the host stack's name", "host-mail"),
    "dkim_selector": ("a DKIM selector", "mail"),
    "dkim_bits": ("one of 2048, 3072, 4096", "2048"),
    "dkim_retention": ("a duration", "7d"),
    "dkim_publish_timeout": ("a duration", "5m"),
    "dmarc_policy": ("one of none, quarantine, reject", "quarantine"),
    "dmarc_rua": ("a list of e-mail addresses", "[dmarc@example.com]"),
    "dmarc_rua[]": ("an e-mail address", "dmarc@example.com"),
    "mta_sts_mode": ("one of none, testing, enforce", "testing"),
    "mta_sts_max_age": ("a number of seconds from 86400 to 31557600", "604800"),
    "tls_rpt_rua": ("a list of e-mail addresses", "[tls-reports@example.com]"),
    "autoconfig": ("true or false", "true"),
    "tls_rpt_rua[]": ("an e-mail address", "tls-reports@example.com"),
    "users": ("a list of users", "[{name: alice}]"),
    "users[]": ("a user", "{name: alice, addresses: [alice@example.com]}"),
    "users[].name": ("a mailbox name", "alice"),
    "users[].password_hash": ("a crypt(3) password hash", "the output of `openssl passwd -6`"),
    "users[].addresses": ("a list of e-mail addresses", "[alice@example.com]"),
    "users[].addresses[]": ("an e-mail address", "alice@example.com"),
    "users[].sieve": ("a Sieve script", "'keep;'"),
    "users[].quota": ("a size with K, M, G or T, or unlimited", "500M"),
    "postmaster": ("a user name from mailstack:users", "alice"),
    "aliases": ("a list of aliases", "[{address: team@example.com, to: [alice@example.com]}]"),
    "aliases[]": ("an alias", "{address: team@example.com, to: [alice@example.com]}"),
    "aliases[].address": ("an e-mail address", "team@example.com"),
    "aliases[].to": ("a list of e-mail addresses", "[alice@example.com]"),
    "aliases[].to[]": ("an e-mail address", "alice@example.com"),
    "catch_all": ("a user name from mailstack:users", "alice"),
    "mailbox_quota": ("a size with K, M, G or T", "1G"),
}

# Keys whose values are never shown: secrets, and everything under `users`
# (a wrongly shaped users list may hold password hashes anywhere).
SECRET_KEYS = frozenset({"ssh_private_key", "ssh_host_key", "password_hash", "acme_cloudflare_token",
                         "spam_controller_password"})


# --- loading --------------------------------------------------------------------------------

# Secrets another key can require (tls: acme needs the token): offline (a stack
# file read without Pulumi), a `secure:` value of one is set, though unreadable,
# and this placeholder stands in. No unit renders it: the token travels on stdin.
REQUIRED_SECRETS = frozenset({"acme_cloudflare_token"})
OFFLINE_SECRET = "encrypted-in-the-stack-file-read-by-pulumi-only"


def _key(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            # A key name from the stack file is shown plainly unless it holds odd characters.
            name = str(part) if re.fullmatch(r"[A-Za-z0-9_-]+", str(part)) else shown(str(part))
            key += ("." if key else "") + name
    return f"{PROJECT}:{key}"


def _pattern(loc: tuple[Any, ...]) -> str:
    """('users', 0, 'addresses', 1) -> 'users[].addresses[]' (the FORMS key)."""
    pattern = ""
    for part in loc:
        pattern += "[]" if isinstance(part, int) else ("." if pattern else "") + str(part)
    return pattern


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a text value"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    if value is None:
        return "nothing (null)"
    return "a value of another kind"


def _scalar(value: Any) -> str | None:
    """A non-secret scalar as the stack file would write it; None for containers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return None


def _wrong_kind(loc: tuple[Any, ...], value: Any) -> str:
    """A value pydantic could not take: say what the key expects, in the stack file's words."""
    form, example = FORMS.get(_pattern(loc), ("a valid value", None))
    hidden = loc[:1] == ("users",) or any(part in SECRET_KEYS for part in loc)
    text = None if hidden else _scalar(value)
    if text is None:
        like = f" like {example}" if example else ""
        return f"{_key(loc)}: expected {form}{like}, got {_kind(value)}"
    expected = f" (expected e.g. {example})" if example else ""
    return f"{_key(loc)}: {text} is not {form}{expected}"


# Every top-level key, of either kind.
ALL_KEYS = {**HostConfig.model_fields, **DomainConfig.model_fields}


def _unknown_key(loc: tuple[Any, ...]) -> str:
    name = str(loc[-1])
    inner = {"users": User.model_fields, "aliases": Alias.model_fields}
    known = inner.get(str(loc[0]), ALL_KEYS) if len(loc) > 1 else ALL_KEYS
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"{_key(loc)}: is not a known key (did you mean {_key((*loc[:-1], close[0]))}?)"
    return f"{_key(loc)}: is not a known key (see the config table in README.md)"


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


def _means_unset(model: type[BaseModel], key: str, value: Any) -> bool:
    """Pulumi.yaml declares "" or [] for keys that are required or whose default is derived (e.g. hostname)."""
    field = model.model_fields.get(key)
    return field is not None and (field.is_required() or field.default is None) and value in ("", [])


def _as_text(value: Any) -> Any:
    """A scalar as the engine sends it ("2048", "true"); lists as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, (list, dict)) else str(value)


def _at_default(model: type[BaseModel], key: str, value: Any) -> bool:
    """True when `value` is what Pulumi.yaml declares for `key`: the engine sends every default it declares."""
    if _means_unset(model, key, value):
        return True
    field = model.model_fields[key]
    if field.is_required():
        return False
    default = field.get_default(call_default_factory=True)
    return default is not None and _as_text(value) == _as_text(default)


def _is_set(value: Any) -> bool:
    return value is not None and value not in ("", [])


def _namespace_problems(keys: list[str]) -> tuple[list[str], set[str]]:
    """Keys Pulumi would not hand to mailstack: bare ones, and a misspelt `mailstack:`."""
    problems, bare = [], set()
    for key in keys:
        namespace, sep, name = key.partition(":")
        plain = key if re.fullmatch(r"[A-Za-z0-9_.:-]+", key) else shown(key)
        if not sep:
            # Pulumi refuses a stack file with a key of no namespace ("could not
            # parse domain as a configuration key"); `pulumi config set domain`
            # writes it as mailstack:domain.
            bare.add(key)
            if key in ALL_KEYS:
                problems.append(
                    f"{plain}: needs the {PROJECT}: prefix (write {PROJECT}:{plain}; "
                    "Pulumi reads only keys of the form <namespace>:<name>)"
                )
            else:
                hint = _unknown_key((key,)).rpartition(" (")[2]
                problems.append(f"{plain}: is not a known key and has no {PROJECT}: prefix ({hint}")
        elif namespace != PROJECT and difflib.SequenceMatcher(None, namespace, PROJECT).ratio() >= 0.8:
            problems.append(f"{plain}: is not read by mailstack (did you mean {PROJECT}:{name}?)")
    return problems, bare


def _other_kind(key: str, model: type[BaseModel]) -> str:
    if model is DomainConfig:
        return f"{PROJECT}:{key}: is a host-stack key; set it in the host stack ({PROJECT}:host_stack names it)"
    return (
        f"{PROJECT}:{key}: is a domain-stack key; set it in the stack of its domain "
        f"(the stack with {PROJECT}:domain and {PROJECT}:host_stack)"
    )


def load_config(values: Mapping[str, Any]) -> HostConfig | DomainConfig:
    """Build the model from `mailstack:<key>` → value; other namespaces are ignored.

    The kind of stack is in the values: `mailstack:domain` set makes a domain
    stack (DomainConfig); otherwise `mailstack:hostname` set makes the host
    stack (HostConfig). A key of the other kind is refused unless it holds the
    default Pulumi.yaml declares for it (the engine sends every declared default).
    """
    keys = [str(key) for key in values]
    problems, bare = _namespace_problems(keys)
    prefix, legacy = f"{PROJECT}:", f"{PROJECT}:config:"
    raw = {}
    for key, value in values.items():
        key = str(key)
        if key.startswith(legacy):  # Pulumi's older spelling of the same key
            key = prefix + key[len(legacy) :]
        if key.startswith(prefix):
            name, value = key[len(prefix) :], _decode(value)
            if name in REQUIRED_SECRETS and isinstance(value, dict) and set(value) == {"secure"}:
                # Set, but encrypted: only Pulumi reads it. Offline it stands for itself.
                raw[name] = OFFLINE_SECRET
            else:
                raw[name] = _strip_secure(value)
    raw = {k: v for k, v in raw.items() if v is not None}
    if _is_set(raw.get("domain")):
        model, other = DomainConfig, HostConfig
    elif _is_set(raw.get("hostname")):
        model, other = HostConfig, DomainConfig
    else:
        if not bare & {"domain", "hostname"}:
            problems.append(
                f"{PROJECT}:domain: is not set, and neither is {PROJECT}:hostname (expected {PROJECT}:domain in "
                f"the stack of a mail domain, e.g. example.com, or {PROJECT}:hostname in the host stack, "
                "e.g. mail.example.net)"
            )
        raise ConfigError(problems)
    for key in [k for k in raw if k in other.model_fields and k not in model.model_fields]:
        if not _at_default(other, key, raw.pop(key)):
            problems.append(_other_kind(key, model))
    raw = {k: v for k, v in raw.items() if not _means_unset(model, k, v)}
    try:
        cfg = model.model_validate(raw)
    except ValidationError as err:
        problems += [p for p in _messages(err) if not any(p.startswith(f"{PROJECT}:{b}: is required") for b in bare)]
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def _messages(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        ctx_error = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossKeyProblems):
            problems.extend(f"{PROJECT}:{k}: {m}" for k, m in ctx_error.problems)
            continue
        loc = tuple(p for p in e["loc"] if p not in ("function-after", "function-before"))
        key = _key(loc)
        if e["type"] == "missing":
            form, example = FORMS.get(_pattern(loc), (None, None))
            problems.append(f"{key}: is required" + (f" (expected {form}, e.g. {example})" if form else ""))
        elif e["type"] == "extra_forbidden":
            problems.append(_unknown_key(loc))
        elif e["type"] == "value_error" and ctx_error is not None:
            problems.append(f"{key}: {ctx_error}")
        elif e["type"] in ("greater_than_equal", "less_than_equal"):
            form, example = FORMS.get(_pattern(loc), ("a valid value", "?"))
            ctx = e.get("ctx") or {}
            bound = f"less than {ctx['ge']}" if "ge" in ctx else f"more than {ctx.get('le')}"
            problems.append(f"{key}: {e['input']!r} is {bound} (expected {form}, e.g. {example})")
        else:
            # Wrong type, unparsable text, not one of a list: never pydantic's wording.
            problems.append(_wrong_kind(loc, e.get("input")))
    return problems
