"""Commands: `python -m components render STACK --out DIR`, `check STACK`, `diff STACK --base REF`, `touched`,
`verify STACK`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components import check, diff, verify_cli
from components.offline import DKIM_KEY_PLACEHOLDER, render_stack
from components.config import ConfigError
from components.stackfile import PROJECT_DIR, load_stack_or_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser(
        "render", help="write a stack's files (at their host paths) and its zone file under a folder",
        description="A host stack: the host's config files and the zone of its host name. A domain stack: its "
                    "files in its folder on the host, its users' Sieve scripts, and its zone (MX and SPF name the "
                    "host stack that mailstack:host_stack names, read from that stack's file).")
    render.add_argument("stack", help="stack name, e.g. example.com (reads stacks/Pulumi.STACK.yaml)")
    render.add_argument("--out", required=True, type=Path, help="folder to write into")
    render.add_argument(
        "--project", type=Path, default=PROJECT_DIR, help="project folder holding stacks/ (default: this checkout)"
    )
    render.add_argument(
        "--dkim-key",
        default=DKIM_KEY_PLACEHOLDER,
        help="a domain stack's base64 DKIM public key to put in the zone file (default: a placeholder)",
    )
    render.set_defaults(run=_render)
    # `check`: the daemons' own checkers on the rendered config (components/check.py).
    check.add_parser(commands)
    # `diff` and `touched`: rendered-config review against a git revision (components/diff.py).
    diff.add_parsers(commands)
    # `verify`: the live check of a deployed stack (components/verify.py).
    verify_cli.add_parser(commands)
    args = parser.parse_args(argv)
    return args.run(args)


def _render(args: argparse.Namespace) -> int:
    cfg = load_stack_or_report(args.stack, args.project)
    if cfg is None:
        return 2
    try:
        written = render_stack(cfg, args.out, args.dkim_key, project_dir=args.project)
    except ConfigError as err:  # a domain stack's host stack file
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
