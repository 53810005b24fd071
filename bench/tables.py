"""The table assembler on a host with many domains: `mailstack-assemble` run for real.

The rendered assembler (components/services/tables.py) runs with bash and
MAILSTACK_ROOT on a temporary folder, as tests/validate/test_assembler.py
runs it: DOMAINS domain folders of MAILBOXES mailboxes each (every mailbox
with an alias, a sender login and a password line; a DKIM key file of the
right mode), then three runs, each timed from outside:

- first: every table built from nothing (a new host, or the first domain
  stack's deployment after the host stack);
- again: nothing changed (every later domain deployment runs it, and the
  host stack's tables unit);
- one domain changed: one mailbox more in one domain (a domain stack's
  `pulumi up`), with its `--check` of the staged folder before it.

Postfix's postmap must be installed (the postfix package), as for the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import Row, seconds
from components import paths
from components.services.tables import assembler_script

DOMAINS = 100
MAILBOXES = 100
HOST_NAME = "mail.example.net"
HASH = "$6$benchsalt$" + "A" * 86
# Every domain unit runs the assembler twice (`--check`, then the build), under
# one lock that a run waits for at most 300 s (flock -w 300). When all 100
# domain stacks deploy at once (a change to shared code touches every stack),
# the last waits for 199 runs: each must take under 300 / 200 = 1.5 s.
TARGET_RUN_SECONDS = 1.5


def _write(root: Path, host_path: str, text: str, mode: int = 0o644) -> None:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _domain_files(domain: str, mailboxes: int) -> dict[str, tuple[str, int]]:
    boxes = [f"user{n:05d}@{domain}" for n in range(mailboxes)]
    alias = [f"first{n}.last{n}@{domain}" for n in range(mailboxes)]
    return {
        "mailboxes": ("".join(f"{m}\n" for m in boxes), 0o644),
        "aliases": ("".join(f"{a} {m}\n" for a, m in zip(alias, boxes, strict=True))
                    + f"postmaster@{domain} {boxes[0]}\n", 0o644),
        "sender_logins": ("".join(f"{m} {m}\n" for m in boxes)
                          + "".join(f"{a} {m}\n" for a, m in zip(alias, boxes, strict=True)), 0o644),
        "passwd": ("".join(f"{m}:{HASH}\n" for m in boxes), 0o600),
        "dkim_selector": ("mail\n", 0o644),
    }


def _write_domain(root: Path, domain: str, mailboxes: int) -> None:
    folder = paths.domain_dir(domain)
    for name, (text, mode) in _domain_files(domain, mailboxes).items():
        _write(root, f"{folder}/{name}", text, mode)
    _write(root, paths.domain_dkim_key(domain, "mail"), "-----BEGIN PRIVATE KEY-----\n", 0o600)
    _write(root, f"{folder}/owner", f"mailstack/{domain}\n")  # last: until then the assembler skips it


def _run(script: Path, root: Path, *args: str) -> float:
    env = {**os.environ, "MAILSTACK_ROOT": str(root)}
    started = time.perf_counter()
    result = subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"mailstack-assemble {' '.join(args)} failed: {result.stderr[-2000:]}")
    return elapsed


def why_not() -> str:
    return "" if shutil.which("postmap") else "postmap is missing (Debian package postfix; scripts/setup installs it)"


def measure(log, domains: int = DOMAINS, mailboxes: int = MAILBOXES) -> dict:
    with tempfile.TemporaryDirectory(prefix="mailstack-bench-tables-") as tmp:
        root, script = Path(tmp) / "root", Path(tmp) / "mailstack-assemble"
        script.write_text(assembler_script(HOST_NAME, 5000))
        for folder in (paths.DOMAINS_DIR, paths.DOVECOT_DIR, paths.DKIM_KEY_DIR):
            (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
        log(f"assembler: writing {domains} domains × {mailboxes} mailboxes")
        names = [f"d{i:03d}.example" for i in range(1, domains + 1)]
        for name in names:
            _write_domain(root, name, mailboxes)
        log("assembler: first run, a run with nothing changed, a domain's --check and build")
        first = _run(script, root)
        again = _run(script, root)
        stage = Path(tmp) / "stage"
        shutil.copytree(root / paths.domain_dir(names[0]).lstrip("/"), stage)
        (stage / "mailboxes").write_text((stage / "mailboxes").read_text() + f"new@{names[0]}\n")
        check = _run(script, root, "--check", names[0], str(stage))
        shutil.copy(stage / "mailboxes", root / paths.domain_dir(names[0]).lstrip("/") / "mailboxes")
        changed = _run(script, root)
        users = (root / paths.DOVECOT_USERS.lstrip("/")).read_text().count("\n")
    return {"domains": domains, "mailboxes": mailboxes, "first": first, "again": again, "check": check,
            "changed": changed, "users_lines": users}


def rows(r: dict) -> list[Row]:
    section = (f"Table assembler (mailstack-assemble, MAILSTACK_ROOT on a temp dir): {r['domains']} domains × "
               f"{r['mailboxes']} mailboxes")
    target = f"< {TARGET_RUN_SECONDS} s"
    note = "a domain deployment runs --check and the build, both under the 300 s lock; target: 200 runs in 300 s"
    return [
        Row(section, "first run: every table from nothing", seconds(r["first"]), target,
            r["first"] < TARGET_RUN_SECONDS, f"{r['users_lines']} lines in Dovecot's users file"),
        Row(section, "again, nothing changed", seconds(r["again"]), target, r["again"] < TARGET_RUN_SECONDS, note),
        Row(section, "--check of one domain's staged folder", seconds(r["check"]), target,
            r["check"] < TARGET_RUN_SECONDS, "changes nothing"),
        Row(section, "one domain changed (a mailbox more)", seconds(r["changed"]), target,
            r["changed"] < TARGET_RUN_SECONDS, "replaces the changed tables only"),
    ]
