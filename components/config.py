"""The stack's configuration as a typed model.

One model serves `pulumi up` (values from `pulumi.Config`) and the offline
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
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

PROJECT = "mailstack"

# Postfix's notify_classes values (postconf(5)).
NOTIFY_CLASSES = ("bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software")

# Names that already belong to something on a Debian (bookworm) mail host, so
# never a mailbox mailstack creates: the users and groups of base-passwd
# (/usr/share/base-passwd/passwd.master and group.master), those the packages
# mailstack installs create (postfix, postdrop, dovecot, dovenull, opendkim,
# policyd-spf), those of a usual server install (systemd, D-Bus, polkit,
# OpenSSH, ssl-cert) and gnats, left on hosts installed before bookworm.
# Making a mailbox of one would set a password on, and deliver mail to, an
# account that is not mailstack's. SYSTEM_ACCOUNT_PREFIXES covers the families:
# systemd's own users (systemd-network, systemd-timesync, ...) and Debian's
# newer system users, whose names start with "_" (_apt, _ssh, _chrony, ...).
SYSTEM_ACCOUNTS = frozenset(
    {
        # base-passwd users
        "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
        "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody",
        # base-passwd groups (a user of the same name would join or shadow them)
        "adm", "tty", "disk", "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape",
        "sudo", "audio", "dip", "operator", "src", "shadow", "utmp", "video", "sasl",
        "plugdev", "staff", "users", "nogroup",
        # the mail system's packages
        "postfix", "postdrop", "dovecot", "dovenull", "opendkim", "policyd-spf",
        # a usual Debian server
        "messagebus", "polkitd", "sshd", "ssl-cert", "tss", "uuidd", "tcpdump", "ntp", "ntpsec",
        "statd", "dnsmasq", "avahi", "unbound", "knot", "bind",
    }
)
SYSTEM_ACCOUNT_PREFIXES = ("systemd-", "_")

# Role names the host already routes: /etc/aliases sends postmaster@ to
# mailstack:postmaster, and MAILER-DAEMON is the name Postfix sends bounces as.
ROLE_NAMES = frozenset({"postmaster", "mailer-daemon"})

# Dovecot Pigeonhole's default sieve_max_script_size.
MAX_SIEVE_BYTES = 1024 * 1024

# Postfix reads its integer parameters into a C int.
MAX_POSTFIX_INT = 2**31 - 1

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HOST_TEXT = re.compile(r"[A-Za-z0-9.-]+")
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

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
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A Postfix parameter reference in main.cf: $name, ${name} or $(name).
_PARAMETER_REF = re.compile(r"\$(?:([A-Za-z0-9_]+)|\{([A-Za-z0-9_]+)\}|\(([A-Za-z0-9_]+)\))")
# The parameters a banner may show: who we are, and the software's name (never its version).
BANNER_PARAMETERS = ("myhostname", "mydomain", "myorigin", "mail_name")
_SSH_PUBLIC_KEY = re.compile(r"[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}(?: [ -~]*)?")


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


def system_account_reason(name: str) -> str | None:
    """Why `name` can never be a mailbox mailstack creates, or None."""
    if name in SYSTEM_ACCOUNTS or name.startswith(SYSTEM_ACCOUNT_PREFIXES):
        return (
            f"{name!r} is a system account on Debian hosts; mailstack only manages mailbox accounts "
            "it creates (choose another name)"
        )
    if name in ROLE_NAMES:
        return (
            f"{name!r} is a role name the host routes itself (postmaster@ goes to mailstack:postmaster, "
            "bounces come from MAILER-DAEMON) (choose another name)"
        )
    return None


# List items are checked one by one, so that an error names e.g. mailstack:ipv4[1].
IPv4 = Annotated[Line, AfterValidator(lambda v: _address(v, 4, "192.0.2.10"))]
IPv6 = Annotated[Line, AfterValidator(lambda v: _address(v, 6, "2001:db8::10"))]
MailAddress = Annotated[Line, AfterValidator(_mail_address)]
RuaAddress = Annotated[Line, AfterValidator(lambda v: _mail_address(v, rua=True))]
Interface = Annotated[Line, AfterValidator(_interface)]
IPAddress = Annotated[Line, AfterValidator(_ip_address)]
ReverseZone = Annotated[Line, AfterValidator(_reverse_zone)]
NotifyClass = Annotated[Line, AfterValidator(_notify_class)]
Int = Annotated[int, BeforeValidator(_not_a_bool)]


# --- the model ----------------------------------------------------------------------------


class User(BaseModel):
    """A mailbox: a system user on the host (the guide's Dovecot uses PAM)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Line = Field(description="Login name of the system user (and IMAP/SMTP AUTH user)")
    password_hash: SecretStr | None = Field(
        default=None,
        description="crypt(3) hash for /etc/shadow (e.g. from `openssl passwd -6`); a secret. "
        "Without one the account is locked: mail is delivered but nobody can log in.",
    )
    addresses: list[MailAddress] = Field(
        default_factory=list,
        description="Addresses this user receives at and may send as (default: <name>@<domain>)",
    )
    sieve: Script | None = Field(default=None, description="The user's Sieve script (~/.dovecot.sieve)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        _user_name(value, "alice")
        reason = system_account_reason(value)
        if reason:
            raise ValueError(reason)
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _CRYPT_HASH.fullmatch(value.get_secret_value()):
            # Never echo the value: it is a secret.
            raise ValueError("is not a crypt(3) password hash (expected e.g. the output of `openssl passwd -6`)")
        return value


class MailConfig(BaseModel):
    """Everything one stack (one mail domain) says. Field names are the config keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- the domain and its host
    domain: Line = Field(description="The mail domain, e.g. example.com")
    hostname: Line | None = Field(default=None, description="The mail host's name (default: mail.<domain>)")
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

    # -- Cloudflare
    cloudflare_zone_id: Line | None = Field(default=None, description="Zone id (default: looked up by name)")
    cloudflare_zone_name: Line | None = Field(default=None, description="Zone name (default: the domain)")
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
    postmaster: Line | None = Field(
        default=None, description="User who gets postmaster@ and root@ mail (default: the first user)"
    )

    # -- TLS
    smtpd_tls_cert_file: Line = Field(default="/etc/ssl/private/postfix.cacert.pem", description="TLS certificate")
    smtpd_tls_key_file: Line = Field(default="/etc/ssl/private/postfix.privkey.pem", description="TLS private key")

    # -- DKIM and DMARC
    dkim_selector: Line = Field(default="mail", description="DKIM selector")
    dkim_bits: Literal[2048, 3072, 4096] = Field(default=2048, description="RSA key size of a new DKIM key")
    opendkim_nameservers: list[IPAddress] = Field(
        default_factory=list, description="Resolvers OpenDKIM asks (default: its own resolver, from the root)"
    )
    opendkim_dnssec: bool = Field(default=True, description="OpenDKIM validates DNSSEC from the root trust anchor")
    dmarc_policy: Literal["none", "quarantine", "reject"] = Field(default="quarantine", description="DMARC p=")
    dmarc_rua: list[RuaAddress] | None = Field(
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
            raise ValueError(
                f"{shown(value)} is not a Cloudflare zone id (expected 32 hex digits, from the zone's overview page)"
            )
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

    @field_validator("dkim_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not _LABEL.fullmatch(value):
            raise ValueError(
                f"{shown(value)} is not a valid DKIM selector (expected one DNS label: lower-case letters, "
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
            if user.name == self.ssh_user:
                problems.append(
                    (
                        f"users[{i}].name",
                        f"{user.name!r} is mailstack:ssh_user, the account mailstack logs in as; mailstack only "
                        "manages mailbox accounts it creates (choose another name)",
                    )
                )
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
                elif address in owner_of:
                    problems.append((f"users[{i}].addresses[{j}]", f"{address!r} is listed twice (each address once)"))
                owner_of.setdefault(address, user.name)
        if self.postmaster is not None and self.postmaster not in seen_users:
            problems.append(
                ("postmaster", f"{shown(self.postmaster)} is not one of the users (expected one of: {', '.join(sorted(seen_users)) or 'none'})")
            )
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


# --- what each key looks like, for messages about a value of the wrong kind ---------------

# key path ("[]" for a list item) -> (what it is, an example as a stack file writes it)
FORMS: dict[str, tuple[str, str]] = {
    "domain": ("a domain name", "example.com"),
    "hostname": ("a host name", "mail.example.com"),
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
    "cloudflare_zone_id": ("a Cloudflare zone id", "32 hex digits"),
    "cloudflare_zone_name": ("a zone name", "example.com"),
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
    "postmaster": ("a user name from mailstack:users", "alice"),
    "smtpd_tls_cert_file": ("an absolute file path", "/etc/ssl/private/postfix.cacert.pem"),
    "smtpd_tls_key_file": ("an absolute file path", "/etc/ssl/private/postfix.privkey.pem"),
    "dkim_selector": ("a DKIM selector", "mail"),
    "dkim_bits": ("one of 2048, 3072, 4096", "2048"),
    "opendkim_nameservers": ("a list of IP addresses", "[192.0.2.53]"),
    "opendkim_nameservers[]": ("an IP address", "192.0.2.53"),
    "opendkim_dnssec": ("true or false", "true"),
    "dmarc_policy": ("one of none, quarantine, reject", "quarantine"),
    "dmarc_rua": ("a list of e-mail addresses", "[dmarc@example.com]"),
    "dmarc_rua[]": ("an e-mail address", "dmarc@example.com"),
    "users": ("a list of users", "[{name: alice}]"),
    "users[]": ("a user", "{name: alice, addresses: [alice@example.com]}"),
    "users[].name": ("a user name", "alice"),
    "users[].password_hash": ("a crypt(3) password hash", "the output of `openssl passwd -6`"),
    "users[].addresses": ("a list of e-mail addresses", "[alice@example.com]"),
    "users[].addresses[]": ("an e-mail address", "alice@example.com"),
    "users[].sieve": ("a Sieve script", "'keep;'"),
}

# Keys whose values are never shown: secrets, and everything under `users`
# (a wrongly shaped users list may hold password hashes anywhere).
SECRET_KEYS = frozenset({"ssh_private_key", "ssh_host_key", "password_hash"})


# --- loading --------------------------------------------------------------------------------


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


def _unknown_key(loc: tuple[Any, ...]) -> str:
    name = str(loc[-1])
    known = User.model_fields if len(loc) > 1 and loc[0] == "users" else MailConfig.model_fields
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


def _means_derived(key: str, value: Any) -> bool:
    """Pulumi.yaml declares "" or [] for keys whose default is derived (e.g. hostname)."""
    field = MailConfig.model_fields.get(key)
    return field is not None and field.default is None and value in ("", [])


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
            if key in MailConfig.model_fields:
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


def load_config(values: Mapping[str, Any]) -> MailConfig:
    """Build the model from `mailstack:<key>` → value; other namespaces are ignored."""
    keys = [str(key) for key in values]
    problems, bare = _namespace_problems(keys)
    prefix, legacy = f"{PROJECT}:", f"{PROJECT}:config:"
    raw = {}
    for key, value in values.items():
        key = str(key)
        if key.startswith(legacy):  # Pulumi's older spelling of the same key
            key = prefix + key[len(legacy) :]
        if key.startswith(prefix):
            raw[key[len(prefix) :]] = _strip_secure(_decode(value))
    raw = {k: v for k, v in raw.items() if v is not None and not _means_derived(k, v)}
    try:
        cfg = MailConfig.model_validate(raw)
    except ValidationError as err:
        problems += [p for p in _messages(err) if p not in {f"{PROJECT}:{b}: is required" for b in bare}]
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
            problems.append(f"{key}: is required")
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
