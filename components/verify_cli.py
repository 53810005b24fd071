"""The `verify` command line (components/verify.py does the checking).

A host stack is checked on its own; a domain stack with its host stack's file
(mailstack:host_stack names it: stacks/Pulumi.<host stack>.yaml), which says
the host's name, addresses and SSH connection.

    python -m components verify STACK [--nameserver ADDR] [--json] [--helo NAME] [--relay-to ADDRESS]
                                      [--dkim-key BASE64] [--no-ssh] [--timeout SECONDS] [--ca-file PEM]
                                      [--project DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from components.config import ConfigError, HostConfig
from components.stackfile import PROJECT_DIR, host_facts, hosted_domains, load_host_stack, load_stack_or_report


def add_parser(commands: argparse._SubParsersAction) -> None:
    verify = commands.add_parser(
        "verify", help="check a deployed stack from outside: a host's A/AAAA, PTR, HELO SPF, SMTP, submission, "
                       "IMAP; a domain's MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT",
        description="Check what is live against what the stack says, like a receiving mail server would. "
                    "A host stack: its records and services. A domain stack: its records, against its host "
                    "stack's file. Exit status 1 when a check fails, 2 for a bad stack or option.")
    verify.add_argument("stack", help="stack name, e.g. host-mail or example.com (reads stacks/Pulumi.STACK.yaml)")
    verify.add_argument("--project", type=Path, default=PROJECT_DIR,
                        help="project folder holding stacks/ (default: this checkout)")
    verify.add_argument("--nameserver", action="append", metavar="ADDR", default=[],
                        help="DNS server to ask instead of /etc/resolv.conf's (repeatable)")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.add_argument("--helo", default="", help="our EHLO name (default: this machine's FQDN); give the name "
                                                   "your address's PTR points at, or the relay check is inconclusive")
    verify.add_argument("--relay-to", default="", metavar="ADDRESS",
                        help="host stack: recipient in a foreign domain for the relay test (default: "
                             "postmaster@ the first of example.net, example.org, example.com that is neither the "
                             "host's domain nor one of the project's domain stacks on it)")
    verify.add_argument("--dkim-key", metavar="BASE64",
                        help="domain stack: the key the host signs with (base64 DER, or the DKIM record's value "
                             "as the stack exports it), compared with the published record when SSH cannot read "
                             "it from the host")
    verify.add_argument("--no-ssh", action="store_true",
                        help="domain stack: do not read the DKIM key from the host over SSH")
    verify.add_argument("--timeout", type=float, default=10.0, help="seconds per connection or lookup (default 10)")
    verify.add_argument("--ca-file", type=Path, metavar="PEM",
                        help="trust the CA certificates in this file instead of the system's: the certificate on "
                             "the mail ports and the MTA-STS policy's (e.g. a test ACME server's root, as the e2e lab's "
                             "lab.json names it)")
    verify.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    """`python -m components verify`: 0 when nothing fails, 1 when a check fails, 2 for a bad stack or option."""
    # Imported here: checkdmarc and friends take a second to load, which `render` need not pay.
    from components.verify import FAIL, Options, Target, key_from_option, report, run_checks, table

    cfg = load_stack_or_report(args.stack, args.project)
    if cfg is None:
        return 2
    if isinstance(cfg, HostConfig):
        target = Target(cfg, hosted=tuple(hosted_domains(args.stack, args.project)))
    else:
        try:
            name, host = load_host_stack(cfg, args.project)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        target = Target(host, cfg, host_facts(name, host))
    try:
        dkim_key = key_from_option(args.dkim_key) if args.dkim_key else None
    except ValueError as err:
        print(f"error: --dkim-key: {err}", file=sys.stderr)
        return 2
    ca_file = None
    if args.ca_file is not None:
        if not args.ca_file.is_file():
            print(f"error: --ca-file: {args.ca_file} is not a file", file=sys.stderr)
            return 2
        ca_file = str(args.ca_file.resolve())
    options = Options(args.nameserver, args.helo, args.relay_to, dkim_key, not args.no_ssh, args.timeout, ca_file)
    started = time.monotonic()
    results = run_checks(target, options)
    seconds = time.monotonic() - started
    if args.json:
        print(json.dumps(report(args.stack, target, results, seconds), indent=2))
    else:
        print(table(args.stack, target, results, seconds), end="")
    return 1 if any(r.status == FAIL for r in results) else 0
