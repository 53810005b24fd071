"""Hostile values in every string key: refused at load, or carried inert.

Each value of HOSTILE is put, in a few places, into every string key of the
config (and every field of a user). Then either

* `load_config` refuses it with a ConfigError whose message names that key,
  keeps to one line per problem and never shows a secret, or
* the stack loads, and the rendered files hold exactly what the config holds,
  as the daemons' own tools read them back: `postconf -n` lists the same
  main.cf parameters as a clean stack with the config's values, `postmap -s`
  and `postalias -s` list exactly the config's table entries, `sievec`
  compiles a script whose hostile text sits in a comment or a string, no
  other rendered file gains or loses a line, and the deploy script's
  here-documents (components/units.py) take every file.

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

from components.config import ConfigError, MailConfig, load_config
from components.render import HostFile
from components.services import render_host_files

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

BASE: dict[str, Any] = {
    "domain": "example.com",
    "hostname": "mail.example.com",
    "ipv4": ["192.0.2.10"],
    "ipv6": ["2001:db8::10"],
    "inet_interfaces": ["192.0.2.10", "2001:db8::10"],
    "ssh_host": "192.0.2.10",
    "ssh_user": "root",
    "ssh_private_key": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n-----END OPENSSH PRIVATE KEY-----\n",
    "ssh_host_key": f"ssh-ed25519 AAAAC3Nza{SECRET}",
    "cloudflare_zone_id": "0123456789abcdef0123456789abcdef",
    "cloudflare_zone_name": "example.com",
    "reverse_zones": ["2.0.192.in-addr.arpa"],
    "smtpd_banner": "$myhostname ESMTP $mail_name",
    "smtpd_error_sleep_time": "8s",
    "notify_classes": ["bounce", "delay"],
    "postmaster": "carol",
    "smtpd_tls_cert_file": "/etc/ssl/private/postfix.cacert.pem",
    "smtpd_tls_key_file": "/etc/ssl/private/postfix.privkey.pem",
    "dkim_selector": "mail",
    "opendkim_nameservers": ["192.0.2.53"],
    "dmarc_policy": "quarantine",
    "dmarc_rua": ["dmarc@example.com"],
    "users": [
        {
            "name": "carol",
            "password_hash": f"$y$j9T${SECRET}$hash",
            "addresses": ["carol.x@example.com", "carol@example.com"],
            "sieve": "keep;\n",
        },
        {"name": "dave"},
    ],
}

SECRET_PATHS = {("ssh_private_key",), ("ssh_host_key",), ("users", 0, "password_hash")}


def _sieve_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# Where each hostile text goes in each key: (path, [(placement, value builder)]).
def _around(base: str) -> list[tuple[str, Any]]:
    return [("alone", lambda h: h), ("after", lambda h: base + h), ("before", lambda h: h + base)]


KEYS: list[tuple[tuple[Any, ...], list[tuple[str, Any]]]] = [
    ((key,), _around(value))
    for key, value in BASE.items()
    if isinstance(value, str) and (key,) not in SECRET_PATHS
]
KEYS += [(("inet_interfaces", 1), _around(BASE["inet_interfaces"][1]))]
KEYS += [((key, 0), _around(BASE[key][0])) for key in ("ipv4", "ipv6", "inet_interfaces", "reverse_zones",
                                                        "notify_classes", "opendkim_nameservers", "dmarc_rua")]
KEYS += [((key,), [("inside", lambda h, b=BASE[key]: b.replace(SECRET, SECRET + h))]) for (key,) in
         [("ssh_private_key",), ("ssh_host_key",)]]
KEYS += [
    (("users", 0, "name"), _around("carol")),
    (("users", 0, "password_hash"), [("inside", lambda h: f"$y$j9T${SECRET}{h}$hash"), ("after", lambda h: f"$y$j9T${SECRET}$hash{h}")]),
    (("users", 0, "addresses", 0), [
        ("local-part", lambda h: f"carol{h}.x@example.com"),
        ("local-start", lambda h: f"{h}carol.z@example.com"),
        ("domain", lambda h: f"carol.z@example.com{h}"),
    ]),
    (("users", 0, "sieve"), [
        ("comment", lambda h: f"# {h}\nkeep;\n"),
        ("string", lambda h: f'if header :contains "subject" "{_sieve_string(h)}" {{ discard; }}\nkeep;\n'),
        ("code", lambda h: f"keep;\n{h}\n"),
    ]),
]

CASES = [
    pytest.param(path, name, build, id=f"{'.'.join(map(str, path))}-{name}")
    for path, placements in KEYS
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


def _config(path: tuple[Any, ...], value: str) -> dict[str, Any]:
    values = copy.deepcopy(BASE)
    _set(values, path, value)
    return {f"mailstack:{k}": v for k, v in values.items()}


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


def _expected_main_cf(cfg: MailConfig) -> dict[str, str]:
    return {
        "myhostname": cfg.host_name,
        "mydomain": cfg.domain,
        "smtpd_banner": cfg.smtpd_banner,
        "inet_interfaces": ", ".join(cfg.listen_addresses),
        "smtpd_error_sleep_time": cfg.smtpd_error_sleep_time,
        "smtpd_tls_cert_file": cfg.smtpd_tls_cert_file,
        "smtpd_tls_key_file": cfg.smtpd_tls_key_file,
        "notify_classes": ", ".join(cfg.notify_classes),
        "relayhost": "",
    }


@pytest.fixture(scope="module")
def tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the daemons' checkers are not installed: {', '.join(missing)}")


@pytest.fixture(scope="module")
def baseline(tools, tmp_path_factory) -> dict[str, Any]:
    """The clean stack's main.cf parameter names, each file's line count, and a folder for the checkers."""
    files = render_host_files(load_config(_config(("domain",), "example.com")))
    directory = tmp_path_factory.mktemp("checked")
    return {
        "main.cf": set(_main_cf(directory, files)),
        "lines": {f.path: f.content.count("\n") for service in files.values() for f in service},
        "dir": directory,
    }


@pytest.mark.parametrize("path,placement,build", CASES)
def test_hostile_values_are_refused_or_carried_inert(baseline, path, placement, build):
    failures = []
    for label, hostile in HOSTILE.items():
        value = build(hostile)
        try:
            try:
                cfg = load_config(_config(path, value))
            except ConfigError as err:
                _refused_cleanly(err, path)
                continue
            _carried_inert(cfg, path, placement, value, hostile, baseline, baseline["dir"])
        except AssertionError as err:
            failures.append(f"{label} ({value[:80]!r}): {err}")
    assert not failures, "\n".join(failures)


def _refused_cleanly(err: ConfigError, path: tuple[Any, ...]) -> None:
    key = _key(path)
    assert any(p.startswith((f"{key}:", f"{key}[")) for p in err.problems), err.problems
    for problem in err.problems:
        assert "\n" not in problem and "\r" not in problem, problem
        assert SECRET not in problem, problem


def _carried_inert(cfg: MailConfig, path, placement, value, hostile, baseline, tmp_path: Path) -> None:
    held = _get(cfg, path)
    # What the model holds is the value itself, or at most trimmed and lower-cased
    # ("" for a derived key such as hostname means its default).
    assert held in (value, value.strip(), value.strip().lower()) or (value == "" and held is None), f"{value!r} became {held!r}"
    files = render_host_files(cfg)

    # main.cf: the same parameters as a clean stack, each with the config's value.
    main_cf = _main_cf(tmp_path, files)
    assert set(main_cf) == baseline["main.cf"]
    for name, expected in _expected_main_cf(cfg).items():
        assert main_cf[name] == expected, f"{name}: {main_cf[name]!r} != {expected!r}"

    # The lookup tables: exactly the config's entries.
    senders = {a: u.name for u in cfg.users for a in cfg.addresses_of(u)}
    aliases = {a: name for a, name in senders.items() if a.split("@")[0] != name}
    assert _table(tmp_path, files, "/etc/postfix/controlled_auth_senders") == senders
    assert _table(tmp_path, files, "/etc/postfix/virtual") == aliases
    postmaster = cfg.postmaster_user
    assert _table(tmp_path, files, "/etc/aliases", "postalias") == {"postmaster": postmaster, "root": postmaster}

    # Sieve: the file is the script; hostile text in a comment or a string compiles.
    for user in cfg.users:
        if user.sieve is None:
            continue
        sieve = _file(files, f"/home/{user.name}/.dovecot.sieve")
        header, _, body = sieve.content.partition("\n")
        assert header.startswith("# ") and body == user.sieve.rstrip("\n") + "\n"
        if path[-1] == "sieve" and (placement == "string" or (placement == "comment" and not set(hostile) & set("\r\n"))):
            script = _staged(tmp_path, "user.sieve", sieve.content)
            _run("sievec", str(script), str(script.with_suffix(".svbin")))

    # No other file gained or lost a line.
    for service, rendered in files.items():
        for f in rendered:
            if service == "sieve" or f.path.endswith(("/virtual", "/controlled_auth_senders", "/aliases")):
                continue
            assert f.content.count("\n") == baseline["lines"][f.path], f"{f.path} changed shape"
            assert SECRET not in f.content

    # The deploy script's here-documents take every file (units.service_unit refuses what they cannot).
    from components import units

    for service, rendered in files.items():
        units.service_unit(cfg, "mailstack/hostile", service, rendered)
