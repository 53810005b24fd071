"""How a template becomes text: the Jinja2 environment every service renders with.

Pure: no Pulumi import, no I/O beyond loading the templates in `templates/`.
Templates hold the text (and the guide's one-line reasons). Which files a
service has, where each goes and with which mode and owner is the service's
own business (components/services/<service>.py); uploading, checking and
reloading are its unit's (components/units.py).

Every template sees `paths` (components/paths.py): the paths that several
files share are spelled there once, never in a template.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from components import paths

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


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
# The shared paths, by name, in every template: {{ paths.OPENDKIM_SOCKET.host }}.
_ENV.globals["paths"] = paths


# --- for the host scripts (the units' templates) ------------------------------------------------

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
    added here, and the script must cut it off again (see templates/units/stage-files.sh.j2).
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


def host_file(
    path: str, template: str, mode: str = "0644", owner: str = "root", group: str = "root", **values: Any
) -> HostFile:
    """The file at `path`, rendered from templates/<template> with `values`."""
    return HostFile(path=path, content=render_template(template, **values), mode=mode, owner=owner, group=group)
