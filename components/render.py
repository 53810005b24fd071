"""Turn a stack's `MailConfig` into the files each service needs on the host.

Pure: no Pulumi import, no I/O beyond loading the templates in `templates/`.
Templates hold the text (and the guide's one-line reasons); this module only
picks templates, computes a few small values and says where each file goes,
with which mode and owner. Uploading, validating (components/checks.py) and
reloading are someone else's job.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from components.config import MailConfig

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

POSTFIX_DIR = "/etc/postfix"
DOVECOT_CONF_D = "/etc/dovecot/conf.d"
DEFAULT_SIEVE = "/etc/dovecot/sieve/default.sieve"
OPENDKIM_CONF = "/etc/opendkim.conf"
POLICYD_SPF_CONF = "/etc/postfix-policyd-spf-python/policyd-spf.conf"


@dataclass(frozen=True)
class HostFile:
    """One file to install on the host."""

    path: str  # absolute remote path, e.g. /etc/postfix/main.cf
    content: str
    mode: str = "0644"  # octal string
    owner: str = "root"
    group: str = "root"


class TemplateError(RuntimeError):
    """A template failed to render; the message names the template and line."""


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,  # config files, not HTML
    # Templates do not change while a process renders: no stat of the file on
    # every use (10,000 users' Sieve files are 10,000 uses of one template).
    auto_reload=False,
)


# --- for the host scripts (templates/units) ------------------------------------------------

# The first here-document delimiter tried; then MAILSTACK_EOF_1, MAILSTACK_EOF_2, ...
HEREDOC_MARK = "MAILSTACK_EOF"


def here_document(text: str) -> str:
    """`text` as a quoted here-document: `'DELIM'`, a newline, the text, DELIM.

    Written after `<<` in a script, it carries `text` byte for byte: the quoted
    delimiter turns off every expansion ($, backticks, backslashes), and the
    delimiter is the first of MAILSTACK_EOF, MAILSTACK_EOF_1, ... that is not
    a line of `text`, so no content can end it early. The same text always
    gets the same delimiter: previews of an unchanged file stay unchanged.

    A here-document always ends with a newline; when `text` does not, one is
    added here, and the script must cut it off again (see stage-files.sh.j2).
    Bash drops NUL bytes from a script, so text holding one is refused.
    """
    if "\0" in text:
        raise ValueError("contains a NUL byte, which no shell script can carry")
    body = text if text.endswith("\n") else text + "\n"
    lines = set(body.split("\n")[:-1])
    delimiter, n = HEREDOC_MARK, 0
    while delimiter in lines:
        n += 1
        delimiter = f"{HEREDOC_MARK}_{n}"
    return f"'{delimiter}'\n{body}{delimiter}"


# Every config value reaches the shell through `q`, or inside `heredoc`.
_ENV.filters["q"] = lambda value: shlex.quote(str(value))
_ENV.filters["dirname"] = posixpath.dirname
_ENV.filters["heredoc"] = here_document


def _template_line(err: BaseException) -> int | None:
    """The template line being rendered when `err` was raised.

    Jinja rewrites the traceback of a render error so that its last frames
    point at the template source: their line numbers are template lines.
    """
    line = None
    tb = err.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_name
        if name in ("top-level template code", "template") or name.startswith("block "):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_template(name: str, **values: Any) -> str:
    """Render templates/<name>; any error names the template and line."""
    try:
        return _ENV.get_template(name).render(**values)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"templates/{name}:{err.lineno}: {err.message}") from err
    except (jinja2.UndefinedError, TypeError, AttributeError, ValueError) as err:
        line = _template_line(err)
        where = f"templates/{name}:{line}" if line else f"templates/{name}"
        raise TemplateError(f"{where}: {err}") from err


def _file(
    path: str, template: str, mode: str = "0644", owner: str = "root", group: str = "root", **values: Any
) -> HostFile:
    return HostFile(path=path, content=render_template(template, **values), mode=mode, owner=owner, group=group)


# --- small derived values --------------------------------------------------------------------


def _mynetworks(cfg: MailConfig) -> str:
    """Loopback only, for the protocols Postfix uses (Debian's stock value when both)."""
    nets = []
    if cfg.inet_protocols in ("all", "ipv4"):
        nets.append("127.0.0.0/8")
    if cfg.inet_protocols == "all":
        nets.append("[::ffff:127.0.0.0]/104")
    if cfg.inet_protocols in ("all", "ipv6"):
        nets.append("[::1]/128")
    return " ".join(nets)


def _senders(cfg: MailConfig) -> list[tuple[str, str]]:
    """controlled_auth_senders: every address a user may send as -> the user."""
    return [(address, user.name) for user in cfg.users for address in cfg.addresses_of(user)]


def _recipients(cfg: MailConfig) -> list[str]:
    """Every address the stack's users receive at: Postfix accepts these (and the aliases) alone."""
    return [address for address, _ in _senders(cfg)]


def _virtual_aliases(cfg: MailConfig) -> list[tuple[str, str]]:
    """Addresses whose local part is not the owner's login name need a virtual alias."""
    return [(address, user) for address, user in _senders(cfg) if address.rpartition("@")[0] != user]


# --- per service ----------------------------------------------------------------------------


def render_postfix(cfg: MailConfig) -> list[HostFile]:
    """main.cf, master.cf, controlled_auth_senders, recipients, virtual and /etc/aliases.

    The lookup tables come before main.cf: on a host that lacks one, its
    database is built before the main.cf that names it is swapped in
    (templates/units/before-postfix.sh.j2).
    """
    return [
        _file(f"{POSTFIX_DIR}/controlled_auth_senders", "postfix/controlled_auth_senders.j2", senders=_senders(cfg)),
        _file(f"{POSTFIX_DIR}/recipients", "postfix/recipients.j2", recipients=_recipients(cfg)),
        _file(f"{POSTFIX_DIR}/virtual", "postfix/virtual.j2", aliases=_virtual_aliases(cfg)),
        _file(f"{POSTFIX_DIR}/main.cf", "postfix/main.cf.j2", cfg=cfg, mynetworks=_mynetworks(cfg)),
        _file(f"{POSTFIX_DIR}/master.cf", "postfix/master.cf.j2", cfg=cfg),
        _file("/etc/aliases", "postfix/aliases.j2", postmaster=cfg.postmaster_user),
    ]


def render_opendkim(cfg: MailConfig) -> list[HostFile]:
    """/etc/opendkim.conf."""
    return [_file(OPENDKIM_CONF, "opendkim/opendkim.conf.j2", cfg=cfg)]


def render_policyd_spf(cfg: MailConfig) -> list[HostFile]:
    """/etc/postfix-policyd-spf-python/policyd-spf.conf."""
    return [_file(POLICYD_SPF_CONF, "policyd-spf/policyd-spf.conf.j2", cfg=cfg)]


def render_dovecot(cfg: MailConfig) -> list[HostFile]:
    """The conf.d files mailstack owns, plus the default Sieve script."""
    conf_d = ["10-master.conf", "10-mail.conf", "20-lmtp.conf", "10-auth.conf", "90-sieve.conf", "10-ssl.conf"]
    return [
        *(_file(f"{DOVECOT_CONF_D}/{name}", f"dovecot/{name}.j2", cfg=cfg) for name in conf_d),
        _file(DEFAULT_SIEVE, "dovecot/default.sieve.j2", cfg=cfg),
    ]


def render_user_sieve(cfg: MailConfig) -> list[HostFile]:
    """~/.dovecot.sieve of each user with a script, private to that user."""
    return [
        _file(
            f"/home/{user.name}/.dovecot.sieve",
            "sieve/user.sieve.j2",
            mode="0600",
            owner=user.name,
            group=user.name,
            user=user,
        )
        for user in cfg.users
        if user.sieve is not None
    ]


def render_host_files(cfg: MailConfig) -> dict[str, list[HostFile]]:
    """Every rendered file, by service (the keys of components.checks.CHECKS)."""
    return {
        "postfix": render_postfix(cfg),
        "opendkim": render_opendkim(cfg),
        "policyd-spf": render_policyd_spf(cfg),
        "dovecot": render_dovecot(cfg),
        "sieve": render_user_sieve(cfg),
    }
