"""`check`: every daemon's own checker on a stack's rendered config, without a host.

    python -m components check STACK [STACK ...] [--all] [--project DIR]

The stack is rendered into a stage the way its units stage it on the host
(components/checks.py, components/services/), then checked there:

- a host stack: the machine's installed config folders are copied, the
  rendered files written over them, and each host service's CHECKS run;
- a domain stack: its users' Sieve scripts are compiled with sievec, under
  the Dovecot config its host stack renders. The other check its files
  unit runs, the host's assembler over every domain's files
  (`mailstack-assemble --check`), needs the other domains' files on the
  host: it runs there, at deployment, and is reported as skipped here.

and `named-checkzone` runs on the stack's zone file. One line per check:

    ok   postfix: postconf -n
    FAIL sieve: sievec users' ~/.dovecot.sieve
         mailstack:users[1].sieve line 3: unknown command 'fileinto' (...)
    skip mailboxes: mailstack-assemble --check
         runs on the host at deployment (it reads every domain's files)

The checkers come from the same Debian packages as on the host, and need what
the host has once the earlier units ran: the host's addresses on an
interface (postfix refuses an inet_interfaces address no interface has) and
the tables the host's tables unit makes. Nothing on this machine is changed
for that: the checks run as root in private mount and network namespaces
(unshare -m -n) holding the host's addresses on their own loopback, an
overlay over /etc, and an overlay over /var/spool/postfix (postfix check
creates missing queue directories).

Exit status: 0 when every check passes, 1 when one fails, 2 when a stack
cannot be loaded or a checker cannot run (not root, a program missing: the
message names its Debian package).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components import paths
from components.config import DomainConfig, HostConfig
from components.offline import render_stack, zone_path
from components.render import render_template
from components.services import CONFIG_DIRS, NAMED_CHECKS, mailboxes, sieve
from components.stackfile import PROJECT_DIR, StackFileError, load_host_stack, load_stack_or_report, stack_names

# The programs each service's checks run (and the namespaces need), with the
# Debian package that provides each one.
PACKAGES = {
    "postconf": "postfix",
    "postmap": "postfix",
    "postalias": "postfix",
    "postfix": "postfix",
    "script": "bsdutils",
    "doveconf": "dovecot-core",
    "sievec": "dovecot-sieve",
    "opendkim": "opendkim",
    "named-checkzone": "bind9-utils",
    "unbound-checkconf": "unbound",
    "fail2ban-client": "fail2ban",
    "rspamadm": "rspamd",
    "unshare": "util-linux",
    "mount": "mount",
    "ip": "iproute2",
}
NEEDED = {
    "postfix": ["postconf", "postmap", "postalias", "postfix", "script"],
    "dovecot": ["doveconf", "sievec"],
    "opendkim": ["opendkim"],
    "policyd-spf": [],  # a Python module, see missing_programs
    "sieve": ["sievec"],
    "resolver": ["unbound-checkconf"],
    "fail2ban": ["fail2ban-client"],
    "rspamd": ["rspamadm"],
}
NAMESPACES = ["unshare", "mount", "ip"]
# A host stack's services, in the order their checks run and are reported.
SERVICES = list(NAMED_CHECKS)
# A domain stack's checks: its users' Sieve scripts (the files unit's other check runs on the host).
DOMAIN_SERVICES = ["sieve"]


class CheckError(RuntimeError):
    """The checks cannot run here (not root, no namespaces); the message says why."""


@dataclass(frozen=True)
class CheckResult:
    service: str
    name: str | None  # None: a preparation step (reported only when it fails)
    ok: bool
    output: str  # what the checker printed on stderr; for a skipped check, why it is skipped
    skipped: bool = False  # not run here (it can only run on the host)


# --- what this machine needs ----------------------------------------------------------------


def services_of(cfg: HostConfig | DomainConfig) -> list[str]:
    return SERVICES if isinstance(cfg, HostConfig) else DOMAIN_SERVICES


def missing_programs(services: list[str], zone: bool = True) -> list[str]:
    """'sievec (Debian package dovecot-sieve)' for each checker this machine lacks."""
    programs = [p for service in services for p in NEEDED[service]] + NAMESPACES
    if zone:
        programs.append("named-checkzone")
    missing = [f"{p} (Debian package {PACKAGES[p]})" for p in dict.fromkeys(programs) if shutil.which(p) is None]
    # policyd-spf's own reader, in the system Python (as on the host).
    if "policyd-spf" in services and (
        not Path("/usr/bin/python3").exists()
        or subprocess.run(["/usr/bin/python3", "-c", "import spf_engine"], capture_output=True).returncode
    ):
        missing.append("policyd-spf's spf_engine for /usr/bin/python3 (Debian package postfix-policyd-spf-python)")
    return missing


def namespaces_problem() -> str | None:
    """Why the checks cannot get private namespaces here, or None."""
    if os.geteuid() != 0:
        return "the checkers run as root, as on the host (private namespaces, postfix check): run check with sudo"
    probe = subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot create mount and network namespaces: {probe.stderr.strip()}"
    return None


# --- the stage and the host's shape ---------------------------------------------------------

# Beside a domain stack's stage: its host stack's Dovecot config, which sievec reads on the host.
HOST_DOVECOT = "host-dovecot"


def build_stage(
    stage: Path, cfg: HostConfig | DomainConfig, services: list[str] | None = None, project_dir: Path = PROJECT_DIR
) -> Path:
    """What the unit does: copy the live config folders, write the rendered files over them.

    A host stack: the folders and files of `services` (default all). A domain
    stack: its files, and its host stack's Dovecot files in a folder beside
    the stage (HOST_DOVECOT), which the checks put over /etc/dovecot. The zone
    file is rendered too, at `stage`/dns/<zone>.zone (as `render` writes it).
    """
    stage.mkdir(mode=0o700, parents=True)
    if isinstance(cfg, HostConfig):
        services = SERVICES if services is None else [s for s in services if s in SERVICES]
        for directory in dict.fromkeys(d for service in services for d in CONFIG_DIRS[service]):
            target = stage / directory.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", directory, str(target)], check=True)
        render_stack(cfg, stage, services=services)
    else:
        render_stack(cfg, stage, project_dir=project_dir)
        _, host = load_host_stack(cfg, project_dir)
        render_stack(host, stage.parent / HOST_DOVECOT, services=["dovecot"])
    return stage


def host_setup(addresses: list[str], scratch: Path, dovecot: Path | None = None) -> str:
    """Inside the namespaces: the host's addresses, its tables as the tables unit leaves them, a private queue.

    `dovecot`: a folder whose etc/dovecot/ goes over /etc/dovecot (a domain
    stack's host's Dovecot config).
    """
    q = shlex.quote
    lines = ["ip link set lo up"]
    for address in addresses:
        prefix = 32 if "." in address else 128
        lines.append(f"ip addr add {q(f'{address}/{prefix}')} dev lo")
    lines += [
        f"mount -t tmpfs mailstack-check {q(str(scratch))}",
        f"cd {q(str(scratch))}",
        "mkdir etc etc-work spool spool-work",
        "mount -t overlay overlay -o lowerdir=/etc,upperdir=$PWD/etc,workdir=$PWD/etc-work /etc",
        f"mount -t overlay overlay -o lowerdir={paths.POSTFIX_CHROOT},upperdir=$PWD/spool,workdir=$PWD/spool-work "
        f"{paths.POSTFIX_CHROOT}",
        "cd /",
        # The tables unit builds the shared tables (empty until a domain stack runs) before the daemons' units.
        f"mkdir -p {paths.DKIM_KEY_DIR} {paths.POSTFIX_TABLES_DIR}",
        f"touch {paths.DKIM_KEY_TABLE} {paths.DKIM_SIGNING_TABLE}",
        # ... and the vmail account (rspamd's learning socket is the vmail group's).
        f"getent group {paths.VMAIL_USER} >/dev/null || groupadd --system {paths.VMAIL_USER}",
    ]
    if dovecot is not None:
        lines.append(f"cp -r {q(str(dovecot / paths.DOVECOT_DIR.lstrip('/')))}/. {paths.DOVECOT_DIR}/")
    return "\n".join(lines)


def _steps(cfg: HostConfig | DomainConfig, services: list[str]) -> list[tuple[str, str | None, str]]:
    """(service, check name, command) of every check to run here."""
    if isinstance(cfg, HostConfig):
        return [(service, name, command) for service in services if service in NAMED_CHECKS
                for name, command in NAMED_CHECKS[service]]
    return [("sieve", name, command) for name, command in sieve.checks(cfg.domain)] if "sieve" in services else []


def run_checks(
    cfg: HostConfig | DomainConfig, stage: Path, scratch: Path, services: list[str] | None = None
) -> list[CheckResult]:
    """Every check of `services` (default: all of the stack's kind) on `stage`, each in its own subshell.

    All of them run, even after a failure. `scratch`: a folder outside the
    stage, made here (a tmpfs is mounted on it). Each check runs as the unit
    runs it (bash, set -euo pipefail, STAGE set); what it prints on stderr is
    its message.
    """
    steps = _steps(cfg, services_of(cfg) if services is None else services)
    if isinstance(cfg, HostConfig):
        setup = host_setup(cfg.addresses, scratch)
    else:
        dovecot = stage.parent / HOST_DOVECOT
        setup = host_setup([], scratch, dovecot if dovecot.is_dir() else None)
    scratch.mkdir()
    results = scratch.parent / f"{scratch.name}-results"
    results.mkdir()
    script = [
        "set -euo pipefail",
        setup,
        f"STAGE={shlex.quote(str(stage))}",
        f"RESULTS={shlex.quote(str(results))}",
        "set +e",
        'echo 0 >"$RESULTS/ready"',
    ]
    for i, (_, _, command) in enumerate(steps):
        script.append(f'( set -euo pipefail\n{command}\n) >/dev/null 2>"$RESULTS/{i}.err"; echo $? >"$RESULTS/{i}.rc"')
    try:
        proc = subprocess.run(["unshare", "-m", "-n", "bash", "-c", "\n".join(script)], capture_output=True, text=True)
        if not (results / "ready").exists():
            raise CheckError(f"could not give the checks the host's addresses and tables:\n{proc.stderr.strip()}")
        passed = [(results / f"{i}.rc").read_text().strip() == "0" for i in range(len(steps))]
        messages = [(results / f"{i}.err").read_text() for i in range(len(steps))]
        return [
            CheckResult(service, name, ok, output)
            for (service, name, _), ok, output in zip(steps, passed, messages, strict=True)
        ]
    finally:
        shutil.rmtree(results, ignore_errors=True)


def checkzone_command(zone_name: str, path: Path) -> list[str]:
    """BIND's named-checkzone, strict: bad names and MX/NS pointing at CNAMEs or addresses are errors."""
    # -i full: MX and NS targets inside the zone must have addresses.
    return ["named-checkzone", "-i", "full", "-k", "fail", "-m", "fail", "-n", "fail", zone_name, str(path)]


def check_zone(cfg: HostConfig | DomainConfig, path: Path) -> CheckResult:
    result = subprocess.run(checkzone_command(cfg.zone_name, path), capture_output=True, text=True)
    ok = result.returncode == 0 and result.stdout.rstrip().endswith("OK")
    return CheckResult("dns", f"named-checkzone {cfg.zone_name}", ok, "" if ok else result.stdout + result.stderr)


def tables_skipped(cfg: DomainConfig) -> CheckResult:
    """The files unit's other check, which only the host can run."""
    command = mailboxes.tables_check(cfg).split()[0].rsplit("/", 1)[-1]
    return CheckResult(
        "mailboxes", f"{command} --check", True,
        "runs on the host at deployment: it checks this domain's files with every other domain's there", skipped=True,
    )


# --- users' Sieve scripts: messages about their own lines -----------------------------------

# A line of the users' Sieve check (components/services/sieve.py prefixes "mailbox NAME@DOMAIN: "),
# e.g. "mailbox alice@example.com: .dovecot: line 4: error: unknown command 'fileinto' (...)".
_SIEVEC_LINE = re.compile(
    r"^mailbox (?P<user>[^@:]+)@[^:]*: (?:[^:]*: )?line (?P<line>\d+): (?:error: )?(?P<message>.*)$"
)
_SIEVEC_SUMMARY = re.compile(
    r"^mailbox (?P<user>[^@:]+)@[^:]*: (?:[^:]*: error: (?:validation|parse) failed\.|sievec: Fatal: )"
)
_SIEVEC_ANY = re.compile(r"^mailbox (?P<user>[^@:]+)@[^:]*: (?P<rest>.*)$")
_MARKER = "mailstack-user-script-starts-here"


def script_first_line(cfg: DomainConfig, index: int) -> int:
    """The line of the rendered ~/.dovecot.sieve where users[index]'s own script begins.

    Found by rendering the template with a marker for the script, so the
    header lines the template puts first are counted from the template itself.
    """
    user = cfg.users[index].model_copy(update={"sieve": _MARKER + "\n"})
    lines = render_template(sieve.TEMPLATE, user=user, mailbox=cfg.mailbox_of(user)).splitlines()
    return next(n for n, line in enumerate(lines, 1) if _MARKER in line)


def explain_user_sieve(cfg: DomainConfig, output: str) -> str:
    """sievec's messages about rendered lines, as `mailstack:users[i].sieve line N: ...` of the stack's lines."""
    index = {user.name: i for i, user in enumerate(cfg.users)}
    lines = output.splitlines()
    located = {m["user"] for m in map(_SIEVEC_LINE.match, lines) if m and m["user"] in index}
    explained = []
    for line in lines:
        m = _SIEVEC_LINE.match(line)
        if m and m["user"] in index:
            i = index[m["user"]]
            n = int(m["line"]) - script_first_line(cfg, i) + 1
            where = f"mailstack:users[{i}].sieve line {n}" if n >= 1 else f"mailstack:users[{i}].sieve"
            explained.append(f"{where}: {m['message']}")
            continue
        summary = _SIEVEC_SUMMARY.match(line)
        if summary and summary["user"] in located:
            continue  # "validation failed", "failed to compile": said better by the lines above
        other = _SIEVEC_ANY.match(line)
        if other and other["user"] in index:
            line = f"mailstack:users[{index[other['user']]}].sieve: {other['rest']}"
        explained.append(line)
    return "\n".join(explained) + ("\n" if explained else "")


# --- the command ----------------------------------------------------------------------------


def check_stack(cfg: HostConfig | DomainConfig, workdir: Path, project_dir: Path = PROJECT_DIR) -> list[CheckResult]:
    """Render `cfg` into `workdir`/stage and run every checker of its kind on it."""
    stage = build_stage(workdir / "stage", cfg, project_dir=project_dir)
    results = run_checks(cfg, stage, workdir / "host")
    if isinstance(cfg, DomainConfig):
        results = [
            CheckResult(r.service, r.name, r.ok, explain_user_sieve(cfg, r.output)) if r.service == "sieve" else r
            for r in results
        ]
        results.append(tables_skipped(cfg))
    return [*results, check_zone(cfg, zone_path(stage, cfg))]


def report(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        if r.ok and r.name is None:
            continue
        status = "skip" if r.skipped else "ok  " if r.ok else "FAIL"
        lines.append(f"{status} {r.service}: {r.name or 'preparing the stage'}")
        if r.skipped or not r.ok:
            message = r.output.strip() or "failed without a message"
            lines += ["     " + line for line in message.splitlines()]
    return "\n".join(lines) + "\n"


def add_parser(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check", help="run every daemon's own checker on a stack's rendered config (as root; no host needed)",
        description="Render a stack and run the checkers its units run before they swap a config in. A host "
                    "stack: postconf, postalias, postfix check, doveconf, sievec, opendkim -n, policyd-spf's "
                    "reader. A domain stack: sievec on its users' Sieve scripts (the cross-domain table check "
                    "runs on the host at deployment). Both: named-checkzone on the zone file. Exit status 1 "
                    "when a check fails, 2 when the stack is bad or a checker cannot run.")
    check.add_argument("stacks", nargs="*", metavar="STACK", help="stack names, e.g. host-mail or example.com")
    check.add_argument("--all", action="store_true", help="every stack in stacks/ (host stacks first)")
    check.add_argument("--project", type=Path, default=PROJECT_DIR,
                       help="project folder holding stacks/ (default: this checkout)")
    check.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    """0 when every check passes, 1 when one fails, 2 for a bad stack or a checker that cannot run."""
    if args.all:
        stacks = stack_names(args.project)
    else:
        stacks = args.stacks
    if not stacks:
        where = args.project / "stacks"
        print(f"error: no stack file in {where}" if args.all else "error: name a stack, or --all", file=sys.stderr)
        return 2
    # Every stack that cannot be loaded says why; the others are still checked.
    loaded = {stack: load_stack_or_report(stack, args.project) for stack in stacks}
    unloadable = [stack for stack, cfg in loaded.items() if cfg is None]
    configs = {stack: cfg for stack, cfg in loaded.items() if cfg is not None}
    if not configs:
        return 2
    if args.all:  # the order of deployment: host stacks first
        configs = dict(sorted(configs.items(), key=lambda item: isinstance(item[1], DomainConfig)))
    missing = missing_programs(list(dict.fromkeys(s for cfg in configs.values() for s in services_of(cfg))))
    if missing:
        print("error: checkers missing here (install them as on the host):\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    problem = namespaces_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    failed = False
    for stack, cfg in configs.items():
        if len(stacks) > 1:
            print(f"{stack}:")
        with tempfile.TemporaryDirectory(prefix="mailstack-check-") as tmp:
            try:
                results = check_stack(cfg, Path(tmp), args.project)
            except StackFileError as err:  # a domain stack's host stack file
                print(f"error: {stack}: {err}", file=sys.stderr)
                unloadable.append(stack)
                continue
            except CheckError as err:
                print(f"error: {stack}: {err}", file=sys.stderr)
                return 2
        print(report(results), end="")
        failed |= not all(r.ok for r in results)
    if unloadable:
        print(f"error: not checked, the stack file is unusable: {', '.join(unloadable)}", file=sys.stderr)
        return 2
    return 1 if failed else 0
