"""Hostile values in every string key of both kinds of stack: refused at load, or carried inert.

Each value of HOSTILE is put, in a few places, into every string key of the
host stack's config and of a domain stack's (and every field of a user and
of an alias). Then either

* `load_config` refuses it with a ConfigError whose message names that key,
  keeps to one line per problem and never shows a secret, or
* the stack loads, the model holds the value as given (at most trimmed and
  lower-cased), and the rendered files hold exactly what the config holds,
  as the daemons' own tools read them back:
  - host stack: `postconf -n` lists the same main.cf parameters as a clean
    stack with the config's values, `postalias -s` lists exactly root and
    postmaster -> postmaster_address, no other file gains or loses a line,
    and the deploy script's here-documents (components/units.py) take every
    file;
  - domain stack: the domain's files for the assembler list exactly the
    config's mailboxes, aliases, sender logins, catch-all and selector
    (`postmap -s` reads the two tables back), `sievec` compiles a script
    whose hostile text sits in a comment or a string, and the files unit's
    here-documents take every file.

A table rather than random generation: every run tries the same cases, and
they are the ones a fuzz run found or that break these file formats.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from components.config import ConfigError, DomainConfig, HostConfig, load_config

TOOLS = ["postconf", "postmap", "postalias", "sievec"]

SECRET = "SECRETMARKER"

HOSTILE = {
    "shell": "$(touch /tmp/mailstack-hostile)",
    "backticks": "`touch /tmp/mailstack-hostile`",
    "semicolon": ";rm -rf /",
    "quotes": "a'b\"c",
    "heredoc-mark": "MAILSTACK_EOF",
    "heredoc-line": "x\nMAILSTACK_EOF\ntouch /tmp/mailstack-hostile",
    "lf": "x\ny",
    "cr": "x\ry",
    "crlf": "x\r\ny",
    "vt": "x\vy",
    "ff": "x\fy",
    "nul": "x\0y",
    "esc": "x\x1b[2Jy",
    "del": "x\x7fy",
    "nel": "x\x85y",
    "line-separator": "x\u2028y",
    "long": "a" * 5000,
    "cyrillic-a": "ex\u0430mple",
    "fullwidth": "\uff58",
    "kelvin": "\u212a",
    "zero-width": "x\u200by",
    "bidi": "\u202ex",
    "maincf-line": "x\nrelayhost = [198.51.100.66]",
    "maincf-cr": "x\rrelayhost=[198.51.100.66]",
    "maincf-continuation": "x\n relayhost",
    "table-catchall": "\n@example.com\tcarol",
    "table-entry": "x@example.com\tcarol\nanyone",
    "table-comment": "#x",
    "leading-at": "@x",
    "space": "x y",
    "tab": "x\ty",
    "colon": "x:y",
    "comma": "x,y",
    "percent": "x%y",
    "ipv6-zone-index": "%x\nrelayhost = [198.51.100.66]",
    "bang": "x!y",
    "postfix-param": "$relayhost",
    "jinja": "{{ cfg }}",
    "backslash": "x\\y",
    "empty": "",
    "blank": " ",
}

HOST_BASE: dict[str, Any] = {
    "hostname": "mail.example.net",
    "ipv4": ["192.0.2.10"],
    "ipv6": ["2001:db8::10"],
    "inet_interfaces": ["192.0.2.10", "2001:db8::10"],
    "ssh_host": "192.0.2.10",
    "ssh_user": "root",
    "ssh_private_key": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n-----END OPENSSH PRIVATE KEY-----\n",
    "ssh_host_key": f"ssh-ed25519 AAAAC3Nza{SECRET}",
    "cloudflare_zone_id": "0123456789abcdef0123456789abcdef",
    "cloudflare_zone_name": "example.net",
    "reverse_zones": ["2.0.192.in-addr.arpa"],
    "smtpd_banner": "$myhostname ESMTP $mail_name",
    "smtpd_error_sleep_time": "8s",
    "notify_classes": ["bounce", "delay"],
    # A number, as Pulumi hands every config value over: text.
    "unknown_client_reject_code": "450",
    "smtpd_tls_cert_file": "/etc/ssl/private/postfix.cacert.pem",
    "smtpd_tls_key_file": "/etc/ssl/private/postfix.privkey.pem",
    "opendkim_nameservers": ["192.0.2.53"],
    "postmaster_address": "carol@example.com",
    "tls": "acme",
    "acme_directory": "https://acme.example.net:14000/dir",
    "acme_email": "certs@example.com",
    "acme_cloudflare_token": f"tok_{SECRET}_0123456789abcdef",
    "fail2ban_find_time": "10m",
    "fail2ban_ban_time": "1h",
    "fail2ban_ignore_addresses": ["203.0.113.5", "2001:db8:5::/48"],
    # Numbers and booleans, as Pulumi hands every config value over: text.
    "spam_filter": "true",
    "spam_reject_score": "15",
    "spam_header_score": "6",
    "spam_greylist_score": "4",
    "greylisting": "true",
    "greylist_delay": "5m",
    "spam_controller_password": f"pw-{SECRET}-0123456789",
}

DOMAIN_BASE: dict[str, Any] = {
    "domain": "example.com",
    "host_stack": "host-mail",
    "cloudflare_zone_id": "0123456789abcdef0123456789abcdef",
    "cloudflare_zone_name": "example.com",
    "dkim_selector": "mail",
    "dkim_retention": "7d",
    "dkim_publish_timeout": "5m",
    "dmarc_policy": "quarantine",
    "dmarc_rua": ["dmarc@example.com"],
    "mta_sts_mode": "testing",
    "tls_rpt_rua": ["tls@example.com"],
    # A boolean, as Pulumi hands every config value over: text.
    "autoconfig": "true",
    "users": [
        {
            "name": "carol",
            "password_hash": f"$y$j9T${SECRET}$hash",
            "addresses": ["carol.x@example.com", "carol@example.com"],
            "sieve": "keep;\n",
            "quota": "500M",
        },
        {"name": "dave"},
    ],
    "postmaster": "carol",
    "aliases": [{"address": "team@example.com", "to": ["dave@example.com", "x@example.org"]}],
    "catch_all": "dave",
    "mailbox_quota": "1G",
}

SECRET_PATHS = {("ssh_private_key",), ("ssh_host_key",), ("acme_cloudflare_token",), ("spam_controller_password",),
                ("users", 0, "password_hash")}


def _sieve_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# Where each hostile text goes in each key: (path, [(placement, value builder)]).
def _around(base: str) -> list[tuple[str, Any]]:
    return [("alone", lambda h: h), ("after", lambda h: base + h), ("before", lambda h: h + base)]


def _top_level(base: dict[str, Any]) -> list[tuple[tuple[Any, ...], list[tuple[str, Any]]]]:
    keys = [((key,), _around(value)) for key, value in base.items() if isinstance(value, str) and (key,) not in SECRET_PATHS]
    keys += [((key, 0), _around(value[0])) for key, value in base.items() if isinstance(value, list) and isinstance(value[0], str)]
    return keys


HOST_KEYS = _top_level(HOST_BASE)
HOST_KEYS += [(("inet_interfaces", 1), _around(HOST_BASE["inet_interfaces"][1]))]
HOST_KEYS += [((key,), [("inside", lambda h, b=HOST_BASE[key]: b.replace(SECRET, SECRET + h))]) for key in
              ("ssh_private_key", "ssh_host_key", "acme_cloudflare_token", "spam_controller_password")]

DOMAIN_KEYS = _top_level(DOMAIN_BASE)
DOMAIN_KEYS += [
    (("users", 0, "name"), _around("carol")),
    (("users", 0, "password_hash"), [("inside", lambda h: f"$y$j9T${SECRET}{h}$hash"), ("after", lambda h: f"$y$j9T${SECRET}$hash{h}")]),
    (("users", 0, "addresses", 0), [
        ("local-part", lambda h: f"carol{h}.x@example.com"),
        ("local-start", lambda h: f"{h}carol.z@example.com"),
        ("domain", lambda h: f"carol.z@example.com{h}"),
    ]),
    (("users", 0, "quota"), _around("500M")),
    (("users", 0, "sieve"), [
        ("comment", lambda h: f"# {h}\nkeep;\n"),
        ("string", lambda h: f'if header :contains "subject" "{_sieve_string(h)}" {{ discard; }}\nkeep;\n'),
        ("code", lambda h: f"keep;\n{h}\n"),
    ]),
    (("aliases", 0, "address"), [
        ("local-part", lambda h: f"team{h}@example.com"),
        ("domain", lambda h: f"team@example.com{h}"),
    ]),
    (("aliases", 0, "to", 0), [
        ("local-part", lambda h: f"dave{h}@example.com"),
        ("domain", lambda h: f"dave@example.com{h}"),
    ]),
    (("aliases", 0, "to", 1), [
        ("local-part", lambda h: f"x{h}@example.org"),
        ("domain", lambda h: f"x@example.org{h}"),
    ]),
]

CASES = [
    pytest.param(kind, path, name, build, id=f"{kind}-{'.'.join(map(str, path))}-{name}")
    for kind, keys in (("host", HOST_KEYS), ("domain", DOMAIN_KEYS))
    for path, placements in keys
    for name, build in placements
]


def _set(values: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        values = values[part]
    values[path[-1]] = value


def _get(cfg: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        cfg = cfg[part] if isinstance(part, int) else getattr(cfg, part)
    return cfg.get_secret_value() if hasattr(cfg, "get_secret_value") else cfg


def _key(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + part
    return f"mailstack:{text}"


def _config(kind: str, path: tuple[Any, ...], value: str) -> dict[str, Any]:
    values = copy.deepcopy(HOST_BASE if kind == "host" else DOMAIN_BASE)
    _set(values, path, value)
    return {f"mailstack:{k}": v for k, v in values.items()}


def _refused_cleanly(err: ConfigError, path: tuple[Any, ...]) -> None:
    key = _key(path)
    # Named first, or named in a message about two keys (hostname "" leaves the stack of no kind).
    assert any(p.startswith((f"{key}:", f"{key}[")) or f" {key} " in p for p in err.problems), err.problems
    for problem in err.problems:
        assert "\n" not in problem and "\r" not in problem, problem
        assert SECRET not in problem, problem


def _held_as_given(cfg: Any, path: tuple[Any, ...], value: str) -> None:
    held = _get(cfg, path)
    if isinstance(held, bool):
        held = str(held).lower()  # a boolean key given as text (autoconfig)
    if isinstance(held, int) and not isinstance(held, bool):
        held = str(held)  # a number key given as text (unknown_client_reject_code)
    # What the model holds is the value itself, or at most trimmed and lower-cased
    # (None for a derived key such as ssh_host given as "").
    assert held in (value, value.strip(), value.strip().lower()) or (value == "" and held is None), f"{value!r} became {held!r}"


def _loaded(kind: str, path: tuple[Any, ...], value: str) -> HostConfig | DomainConfig | None:
    """The stack's config, or None when it was refused (cleanly: that is checked here)."""
    try:
        cfg = load_config(_config(kind, path, value))
    except ConfigError as err:
        _refused_cleanly(err, path)
        return None
    assert isinstance(cfg, HostConfig if kind == "host" else DomainConfig)
    _held_as_given(cfg, path, value)
    return cfg


@pytest.mark.parametrize("kind,path,placement,build", CASES)
def test_hostile_values_are_refused_or_held_as_given(kind, path, placement, build):
    failures = []
    for label, hostile in HOSTILE.items():
        value = build(hostile)
        try:
            _loaded(kind, path, value)
        except AssertionError as err:
            failures.append(f"{label} ({value[:80]!r}): {err}")
    assert not failures, "\n".join(failures)


# --- what a carried value becomes in the rendered files ---------------------------------------


@cache
def _run(*args: str) -> str:
    """A checker's output; cached, as most hostile values leave most files as they were."""
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", f"{' '.join(args)}:\n{result.stderr}"
    return result.stdout


def _file(files: dict[str, list[HostFile]], path: str) -> HostFile:
    return next(f for service in files.values() for f in service if f.path == path)


def _staged(directory: Path, name: str, content: str) -> Path:
    """A file named after its content, so that a cached checker run is about this very text."""
    folder = directory / hashlib.sha256(content.encode()).hexdigest()[:16]
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(content)
    return folder / name


def _main_cf(directory: Path, files: dict[str, list[HostFile]]) -> dict[str, str]:
    """main.cf as Postfix reads it: every parameter the file sets, with its value (postconf -n)."""
    main_cf = _file(files, "/etc/postfix/main.cf").content
    folder = _staged(directory, "main.cf", main_cf).parent
    (folder / "master.cf").write_text(_file(files, "/etc/postfix/master.cf").content)
    settings = {}
    for line in _run("postconf", "-c", str(folder), "-n").splitlines():
        name, _, value = line.partition(" =")
        settings[name] = value[1:]
    settings.pop("config_directory")  # postconf adds it for -c
    return settings


def _table(directory: Path, files: dict[str, list[HostFile]], path: str, command: str = "postmap") -> dict[str, str]:
    """A lookup table as Postfix reads it: postmap/postalias builds it, `-s` lists every entry."""
    source = _staged(directory, Path(path).name, _file(files, path).content)
    _run(command, f"hash:{source}")
    entries = {}
    for line in _run(command, "-s", f"hash:{source}").splitlines():
        key, _, value = line.partition(":\t" if command == "postalias" else "\t")
        if command == "postalias" and (key == "@" or key.startswith("YP_")):
            continue  # sendmail-compatibility entries postalias adds
        entries[key] = value
    return entries


def _entries(content: str) -> list[str]:
    """A domain file's data lines (the assembler skips comments and blank lines)."""
    return [line for line in content.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the daemons' checkers are not installed: {', '.join(missing)}")


@pytest.fixture(scope="module")
def baseline(tools, tmp_path_factory) -> dict[str, Any]:
    """The clean host stack's main.cf parameter names, each file's line count, and a folder for the checkers."""
    from components.services import render_host_files

    files = render_host_files(load_config(_config("host", ("hostname",), "mail.example.net")))
    directory = tmp_path_factory.mktemp("checked")
    return {
        "main.cf": set(_main_cf(directory, files)),
        "lines": {f.path: f.content.count("\n") for service in files.values() for f in service},
        "dir": directory,
    }


@pytest.mark.parametrize("kind,path,placement,build", CASES)
def test_carried_hostile_values_reach_the_files_inert(baseline, kind, path, placement, build):
    failures = []
    for label, hostile in HOSTILE.items():
        value = build(hostile)
        try:
            cfg = _loaded(kind, path, value)
            if cfg is None:
                continue
            if kind == "host":
                _host_files_inert(cfg, baseline)
            else:
                _domain_files_inert(cfg, path, placement, hostile, baseline["dir"])
        except AssertionError as err:
            failures.append(f"{label} ({value[:80]!r}): {err}")
    assert not failures, "\n".join(failures)


def _host_files_inert(cfg: HostConfig, baseline: dict[str, Any]) -> None:
    from components import units
    from components.services import render_host_files

    directory = baseline["dir"]
    files = render_host_files(cfg)

    # main.cf: the same parameters as a clean stack, each with the config's value.
    main_cf = _main_cf(directory, files)
    assert set(main_cf) == baseline["main.cf"]
    expected = {
        "myhostname": cfg.host_name,
        "smtpd_banner": cfg.smtpd_banner,
        "inet_interfaces": ", ".join(cfg.listen_addresses),
        "smtpd_error_sleep_time": cfg.smtpd_error_sleep_time,
        "smtpd_tls_cert_file": cfg.smtpd_tls_cert_file,
        "smtpd_tls_key_file": cfg.smtpd_tls_key_file,
        "notify_classes": ", ".join(cfg.notify_classes),
        "unknown_client_reject_code": str(cfg.unknown_client_reject_code),
    }
    for name, value in expected.items():
        assert main_cf[name] == value, f"{name}: {main_cf[name]!r} != {value!r}"
    assert "relayhost" not in main_cf or main_cf["relayhost"] == ""

    # /etc/aliases: the host's own role addresses, nothing else.
    aliases = _table(directory, files, "/etc/aliases", "postalias")
    assert aliases == {"postmaster": cfg.postmaster_address, "root": cfg.postmaster_address}

    # No other file gained or lost a line, and no secret is in any.
    for rendered in files.values():
        for f in rendered:
            assert SECRET not in f.content
            if f.path != "/etc/aliases":
                assert f.content.count("\n") == baseline["lines"][f.path], f"{f.path} changed shape"

    # fail2ban's jails: each reads the config's thresholds and exemptions, nothing more.
    jails = _file(files, "/etc/fail2ban/jail.d/mailstack.conf").content
    ignoreip = " ".join(["127.0.0.1/8", "::1", *cfg.fail2ban_ignore_addresses])
    for setting in (f"findtime = {cfg.fail2ban_find_time}", f"bantime = {cfg.fail2ban_ban_time}",
                    f"ignoreip = {ignoreip}"):
        assert jails.count(f"\n{setting}\n") == 4, setting

    # The deploy script's here-documents take every file (units.service_unit refuses what they cannot).
    for service, rendered in files.items():
        units.service_unit(cfg, "mailstack/hostile", service, rendered)

    # tls: acme: the TLS unit's ACME settings read back as the model holds them, and
    # the token travels on that unit's stdin alone, in no script and no command line.
    from components.services import tls

    assert cfg.tls == "acme" and cfg.acme_cloudflare_token is not None
    read_back = _run("bash", "-c", tls.acme_conf(cfg) + 'printf "%s\\n" "$ACME_DIRECTORY" "$ACME_EMAIL"')
    assert read_back == f"{cfg.acme_directory}\n{cfg.acme_account_email}\n"
    unit = units.tls_unit(cfg, "mailstack/hostile")
    token = cfg.acme_cloudflare_token.get_secret_value()
    assert unit.secret and unit.stdin == token + "\n" and token not in unit.command and SECRET not in unit.command
    assert SECRET not in units.packages_unit(cfg, "mailstack/hostile").stdin

    # rspamd's controller password: on that unit's stdin alone, in no file and no command line.
    assert cfg.spam_controller_password is not None
    password = cfg.spam_controller_password.get_secret_value()
    unit = units.rspamd_unit(cfg, "mailstack/hostile", files["rspamd"])
    assert unit.secret and unit.stdin == password + "\n" and SECRET not in unit.command
    assert all(SECRET not in f.content for f in files["rspamd"])


def _domain_files_inert(cfg: DomainConfig, path, placement, hostile, directory: Path) -> None:
    from components import units

    files = units.domain_files(cfg)
    by_name = {f.path.rsplit("/", 1)[1]: f for f in files if "/.dovecot.sieve" not in f.path}
    mailbox = {user.name: f"{user.name}@{cfg.domain}" for user in cfg.users}

    # The assembler's inputs: exactly the config's entries, one per line.
    assert _entries(by_name["mailboxes"].content) == list(mailbox.values())
    logins = {a: mailbox[u.name] for u in cfg.users for a in (u.addresses or [mailbox[u.name]])}
    aliases = {a: login for a, login in logins.items() if a != login}
    aliases[f"postmaster@{cfg.domain}"] = mailbox[cfg.postmaster_user]
    aliases.update({alias.address: ",".join(alias.to) for alias in cfg.aliases})
    for name, expected in (("sender_logins", logins), ("aliases", aliases)):
        source = _staged(directory, name, by_name[name].content)
        _run("postmap", f"hash:{source}")
        read = dict(line.split("\t", 1) for line in _run("postmap", "-s", f"hash:{source}").splitlines())
        assert read == expected, f"{name}: {read} != {expected}"
    assert _entries(by_name["catch_all"].content) == ([mailbox[cfg.catch_all]] if cfg.catch_all else [])
    # Quotas: one "<mailbox> <bytes>" line per limited mailbox, nothing else (a value that got
    # through is a plain size, or the user is exempt).
    quotas = [f"{mailbox[u.name]} {cfg.quota_of(u)}" for u in cfg.users if cfg.quota_of(u) is not None]
    assert _entries(by_name["quotas"].content) == quotas
    assert all(line.split()[1].isdigit() for line in quotas)
    # The selector file is the DKIM signing unit's; its script carries it in a here-document.
    from components.services import opendkim

    selector = opendkim.selector_file(cfg)
    assert _entries(selector.content) == [cfg.dkim_selector]
    assert selector.content in opendkim.dkim_signing_script(cfg)
    assert f"deadline=$((SECONDS + {cfg.dkim_publish_timeout_seconds}))" in opendkim.dkim_signing_script(cfg)
    for f in files:
        assert SECRET not in f.content, f.path

    # Sieve: the file is the script; hostile text in a comment or a string compiles.
    for user in cfg.users:
        if user.sieve is None:
            continue
        sieve = next(f for f in files if f.path.endswith(f"/{user.name}/.dovecot.sieve"))
        header, _, body = sieve.content.partition("\n")
        assert header.startswith("# ") and body == user.sieve.rstrip("\n") + "\n"
        if path[-1] == "sieve" and (placement == "string" or (placement == "comment" and not set(hostile) & set("\r\n"))):
            script = _staged(directory, "user.sieve", sieve.content)
            _run("sievec", str(script), str(script.with_suffix(".svbin")))

    # The files unit's here-documents take every file.
    units.files_script(cfg, files)
