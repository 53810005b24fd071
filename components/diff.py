"""`diff` and `touched`: what a change does to each stack, for review before `pulumi up`.

`diff` renders a stack twice, each time with that tree's own renderer and
templates: once at the git revision REF (exported with `git archive` into a
temporary folder) and once in the working tree. It then prints a unified diff
of every host file and of the zone file, grouped by stack. When nothing
changes it prints nothing and exits 0. A change to shared code or templates
shows up in every stack it affects.

A stack is either kind: a host stack's diff covers the host's files and its
zone file, a domain stack's its files on the host (its folder, its users'
Sieve scripts) and its zone file, whose MX and SPF come from its host stack's
file: a change of the host's name or addresses shows in every domain on it.

`touched` lists the stacks that a change since REF concerns: a stack file
concerns its own stack; the program, its templates, its dependencies and the
policy pack concern every stack. Host stacks come first, then domain stacks:
the order of deployment (a domain stack reads its host stack's outputs).
The pull-request workflow runs previews for exactly these stacks.

Only the standard library is used here: `python -m components.diff touched`
runs before the project's dependencies are installed, and each render runs
in a subprocess (`python -m components render STACK --out DIR`) from the tree
being rendered, so that each side uses its own code.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.stacknames import PROJECT_DIR, stack_names

# Paths whose change can alter every stack's deployment.
SHARED_DIRS = ("components/", "templates/", "policy/")
SHARED_FILES = re.compile(r"^(__main__\.py|Pulumi\.yaml|requirements[^/]*\.txt)$")
STACK_FILE = re.compile(r"^stacks/Pulumi\.(?P<stack>[^/]+)\.yaml$")
# A stack name as the workflows may pass it on: no shell or path syntax.
STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class DiffError(RuntimeError):
    """The diff cannot be made (bad revision, broken working tree); the message says why."""


@dataclass(frozen=True)
class Rendering:
    """One side of a stack's diff: its files (path → text), or why there are none."""

    files: dict[str, str]
    note: str = ""  # non-empty when the side could not be rendered and counts as empty


# --- git ------------------------------------------------------------------------------------


def _git(project: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout


def resolve(project: Path, ref: str) -> str:
    """The commit REF names, or DiffError."""
    try:
        return _git(project, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except DiffError:
        raise DiffError(f"--base {ref!r} is not a commit in {project} (expected e.g. main or HEAD~1)") from None


def export_tree(project: Path, commit: str, dest: Path) -> Path:
    """The files of `commit` under `dest` (committed content only, as `git archive` gives it)."""
    with subprocess.Popen(
        ["git", "-C", str(project), "archive", "--format=tar", commit], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(dest, filter="data")
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise DiffError(f"git archive {commit}: {stderr.strip() or 'failed'}")
    return dest


def changed_paths(project: Path, ref: str) -> list[str]:
    """Paths that differ between REF and the working tree, untracked files included."""
    commit = resolve(project, ref)
    tracked = _git(project, "diff", "--name-only", "--no-renames", commit, "--").splitlines()
    untracked = _git(project, "ls-files", "--others", "--exclude-standard").splitlines()
    return sorted(set(tracked) | set(untracked))


# --- stacks ---------------------------------------------------------------------------------


# A domain stack's file sets mailstack:domain (components/config.py load_config tells the kinds
# apart by it); read with a pattern, since `touched` runs before PyYAML is installed.
_DOMAIN_KEY = re.compile(r"^[ \t]+[\"']?mailstack:domain[\"']?[ \t]*:[ \t]*(?![\"']{2}|~|null\b)[^\s#]", re.M)


def host_stacks(project: Path, stacks: list[str]) -> set[str]:
    """The host stacks among `stacks`: those whose file does not set mailstack:domain."""
    hosts = set()
    for stack in stacks:
        try:
            text = (project / "stacks" / f"Pulumi.{stack}.yaml").read_text(errors="replace")
        except OSError:
            continue
        if not _DOMAIN_KEY.search(text):
            hosts.add(stack)
    return hosts


def deploy_order(stacks: list[str], hosts: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Host stacks first, then domain stacks, each sorted by name."""
    return sorted(stacks, key=lambda stack: (stack not in hosts, stack))


def touched_stacks(paths: list[str], stacks: list[str], hosts: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The stacks among `stacks` that a change to `paths` concerns (every stack for shared code).

    `hosts`: which of them are host stacks; they come first (deployment order).
    A host stack's file concerns that host stack alone, not the domain stacks
    on the host: a domain stack reads its host only through the host stack's
    outputs, and most host settings (banner, limits, TLS, SSH) are nothing to
    a domain. Those that are (the host's name and addresses, in the domain's
    MX and SPF records) change the domain's rendered zone file, which its
    `diff` shows; the domain stack's own `pulumi up` then publishes them.
    """
    if any(p.startswith(SHARED_DIRS) or SHARED_FILES.match(p) for p in paths):
        return deploy_order(stacks, hosts)
    named = {m["stack"] for p in paths if (m := STACK_FILE.match(p))}
    return deploy_order([s for s in stacks if s in named], hosts)


# --- rendering ------------------------------------------------------------------------------


def render(tree: Path, stack: str, out: Path) -> Rendering:
    """Render `stack` with the tree's own renderer into `out`; raise DiffError when that fails."""
    if not (tree / "stacks" / f"Pulumi.{stack}.yaml").is_file():
        return Rendering({}, f"no stacks/Pulumi.{stack}.yaml")
    # Run from the tree, without --project: `-m components` then imports the tree's own
    # code, whose default project folder is the tree itself (older renderers lack --project).
    result = subprocess.run(
        [sys.executable, "-m", "components", "render", stack, "--out", str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    if result.returncode != 0:
        text = result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}"
        # A renderer that crashed (an older revision's) ends its traceback with the line that
        # matters; a config error is every line it printed, one per bad key.
        raise DiffError(text.splitlines()[-1] if "Traceback" in text else text)
    return Rendering({str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()})


def _clean_env() -> dict[str, str]:
    # PYTHONPATH could put another checkout's `components` first.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def unified(stack: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    """A unified diff of two renderings of one stack, file by file in path order."""
    lines: list[str] = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        lines += difflib.unified_diff(
            (old or "").splitlines(),
            (new or "").splitlines(),
            fromfile=f"a/{stack}/{path}" if old is not None else "/dev/null",
            tofile=f"b/{stack}/{path}" if new is not None else "/dev/null",
            lineterm="",
        )
    return lines


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def diff_stacks(project: Path, base: str, stacks: list[str] | None, warn: Callable[[str], None] = _stderr) -> str:
    """The diff text for `stacks` (None: every stack at REF or in the working tree)."""
    commit = resolve(project, base)
    short = commit[:12]
    with tempfile.TemporaryDirectory(prefix="mailstack-diff-") as tmp:
        base_tree = export_tree(project, commit, Path(tmp) / "base")
        if stacks is None:
            every = sorted(set(stack_names(base_tree)) | set(stack_names(project)))
            names = deploy_order(every, host_stacks(project, every) | host_stacks(base_tree, every))
        else:
            names = stacks
        out: list[str] = []
        for stack in names:
            try:
                before = render(base_tree, stack, Path(tmp) / "out" / stack / "base")
            except DiffError as err:
                # The revision may predate the renderer or hold a broken stack: then
                # there is nothing to compare with, and every file shows as added.
                before = Rendering({}, f"cannot render at {short}: {err}")
            try:
                after = render(project, stack, Path(tmp) / "out" / stack / "work")
            except DiffError as err:
                raise DiffError(f"{stack}: cannot render the working tree: {err}") from None
            if not before.files and not after.files:
                raise DiffError(f"no stack {stack!r} at {short} or in the working tree")
            lines = unified(stack, before.files, after.files)
            if not lines:
                continue
            if before.note:
                warn(f"note: {stack}: {before.note}; every file shows as added")
            if after.note:
                warn(f"note: {stack}: {after.note} in the working tree; every file shows as removed")
            count = sum(before.files.get(f) != after.files.get(f) for f in set(before.files) | set(after.files))
            out.append(f"### {stack}: {count} file{'' if count == 1 else 's'} changed since {short}")
            out += lines
    return "\n".join(out) + ("\n" if out else "")


# --- command line ---------------------------------------------------------------------------


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Add `diff` and `touched` to a `python -m components` command parser."""
    diff = commands.add_parser(
        "diff", help="unified diff of a stack's rendered files and zone file against a git revision"
    )
    diff.add_argument("stacks", nargs="*", metavar="STACK", help="stack names, e.g. example.com")
    diff.add_argument("--all", action="store_true", help="every stack at REF or in the working tree")
    diff.add_argument("--base", required=True, metavar="REF", help="git revision to compare with, e.g. main or HEAD~1")
    diff.add_argument("--project", type=Path, default=PROJECT_DIR, help="the git checkout (default: this one)")
    diff.set_defaults(run=run_diff)

    touched = commands.add_parser(
        "touched", help="the stacks a change since a git revision concerns, host stacks first (deployment order)"
    )
    start = touched.add_mutually_exclusive_group(required=True)
    start.add_argument("--base", metavar="REF", help="git revision the change starts from")
    start.add_argument("--all", action="store_true", help="every stack (when where the change starts is unknown)")
    touched.add_argument("--project", type=Path, default=PROJECT_DIR, help="the git checkout (default: this one)")
    touched.add_argument("--json", action="store_true", help="print a JSON list (for a workflow matrix)")
    touched.set_defaults(run=run_touched)


def run_diff(args: argparse.Namespace) -> int:
    if bool(args.stacks) == bool(args.all):
        print("error: name one or more stacks, or --all", file=sys.stderr)
        return 2
    bad = [s for s in args.stacks if not STACK_NAME.match(s)]
    if bad:
        print(f"error: not a stack name: {', '.join(map(repr, bad))} (expected e.g. example.com)", file=sys.stderr)
        return 2
    try:
        text = diff_stacks(args.project, args.base, None if args.all else args.stacks)
    except DiffError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def run_touched(args: argparse.Namespace) -> int:
    stacks = stack_names(args.project)
    hosts = host_stacks(args.project, stacks)
    if args.all:
        stacks = deploy_order(stacks, hosts)
    else:
        try:
            stacks = touched_stacks(changed_paths(args.project, args.base), stacks, hosts)
        except DiffError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    bad = [s for s in stacks if not STACK_NAME.match(s)]
    if bad:
        print(
            f"error: stack names must be letters, digits, '.', '_' or '-': {', '.join(map(repr, bad))}", file=sys.stderr
        )
        return 2
    print(json.dumps(stacks) if args.json else "\n".join(stacks))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.diff", description=__doc__.split("\n\n")[0])
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
