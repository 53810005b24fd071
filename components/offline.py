"""`render`: every file and the zone file of a stack, written to a folder.

What `pulumi up` would put on the host, without a host: for review in pull
requests, and the stage `check` runs the checkers on (components/check.py).

- a host stack: the host's files (Postfix, Dovecot, OpenDKIM, policyd-spf)
  and the zone file of its host name's zone (A, AAAA, the HELO name's SPF;
  its PTRs, which live in reverse zones, listed as comments);
- a domain stack: its files in its folder on the host (the assembler's
  inputs) and its users' Sieve scripts in their mailboxes, its MTA-STS
  policy and nginx server block when its host's tls is acme, and its zone
  file (MX, SPF, DKIM, DMARC, TLS-RPT, MTA-STS). MX and SPF name its host: offline, the host stack's
  file stands in for its outputs (components/stackfile.py, host_facts_for).
"""

from __future__ import annotations

from pathlib import Path

from components.config import DomainConfig, HostConfig
from components.records import (
    Record,
    host_records,
    mail_records,
    ptr_records,
    zone_file,
)
from components.render import HostFile
from components.services import opendkim, render_host_files, web
from components.stackfile import PROJECT_DIR, host_facts_for
from components.units import domain_files

# Offline there is no host to generate the DKIM key; the record shows where it goes.
DKIM_KEY_PLACEHOLDER = "PUBLIC-KEY-GENERATED-ON-THE-HOST"


def _write(out: Path, files: list[HostFile]) -> list[Path]:
    """Each file at its host path under `out`, with its mode."""
    written = []
    for file in files:
        target = out / file.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file.content)
        target.chmod(int(file.mode, 8))
        written.append(target)
    return written


def zone_path(out: Path, cfg: HostConfig | DomainConfig) -> Path:
    return out / "dns" / f"{cfg.zone_name}.zone"


def stack_zone(
    cfg: HostConfig | DomainConfig, dkim_public_key: str = DKIM_KEY_PLACEHOLDER, project_dir: Path = PROJECT_DIR
) -> tuple[list[Record], str]:
    """The stack's records and its zone file's text (a domain's host from its host stack's file)."""
    if isinstance(cfg, HostConfig):
        records = host_records(cfg) + ptr_records(cfg)
        return records, zone_file(cfg.zone_name, records, ns_addresses=cfg.addresses,
                                  about=f"the mail host {cfg.host_name}")
    host = host_facts_for(cfg, project_dir)
    records = mail_records(cfg, host, dkim_public_key)
    return records, zone_file(cfg.zone_name, records, ns_addresses=host.addresses,
                              about=f"the mail domain {cfg.domain}")


def render_stack(
    cfg: HostConfig | DomainConfig,
    out: Path,
    dkim_public_key: str = DKIM_KEY_PLACEHOLDER,
    services: list[str] | None = None,
    project_dir: Path = PROJECT_DIR,
) -> list[Path]:
    """Write the stack's files at their host paths under `out` (with their modes), and `out/dns/<zone>.zone`.

    `services`: a host stack's services whose files are written (keys of
    render_host_files; default all). `project_dir`: where a domain stack's
    host stack file is (stacks/Pulumi.<host stack>.yaml); a StackFileError
    names mailstack:host_stack and that file when it cannot be used.
    `dkim_public_key`: a domain's DKIM key (unused for a host stack).
    """
    _, zone = stack_zone(cfg, dkim_public_key, project_dir)
    if isinstance(cfg, HostConfig):
        files = [f for service, fs in render_host_files(cfg).items() if services is None or service in services
                 for f in fs]
        # (getattr: HostConfig.tls comes with the ACME change.) nginx's host level, for MTA-STS.
        if cfg.tls == "acme" and (services is None or web.NAME in services):
            files += web.host_files(cfg)
    else:
        # Its folder as the host gets it: the files unit's files and the signing unit's selector.
        files = [*domain_files(cfg), opendkim.selector_file(cfg)]
        host = host_facts_for(cfg, project_dir)
        for site in web.SITES:  # mta-sts.<domain>, autoconfig.<domain>: a file and its nginx server block
            if site.publishes(cfg, host):
                files += site.files(cfg, host)
    written = _write(out, files)
    path = zone_path(out, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(zone)
    written.append(path)
    return written
