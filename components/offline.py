"""`render`: every host file and the zone file of a stack, written to a folder.

What `pulumi up` would put on the host, without a host: for review in pull
requests, and the stage `check` runs the checkers on (components/check.py).
"""

from __future__ import annotations

from pathlib import Path

from components.config import MailConfig
from components.records import mail_records, ptr_records, zone_file
from components.services import render_host_files

# Offline there is no host to generate the DKIM key; the record shows where it goes.
DKIM_KEY_PLACEHOLDER = "PUBLIC-KEY-GENERATED-ON-THE-HOST"


def render_stack(
    cfg: MailConfig, out: Path, dkim_public_key: str = DKIM_KEY_PLACEHOLDER, services: list[str] | None = None
) -> list[Path]:
    """Write each host file at its remote path under `out` (with its mode), and `out/dns/<domain>.zone`.

    `services`: only those services' files (keys of render_host_files; default all).
    """
    written = []
    for service, files in render_host_files(cfg).items():
        if services is not None and service not in services:
            continue
        for file in files:
            target = out / file.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content)
            target.chmod(int(file.mode, 8))
            written.append(target)
    zone = out / "dns" / f"{cfg.zone_name}.zone"
    zone.parent.mkdir(parents=True, exist_ok=True)
    zone.write_text(zone_file(cfg, mail_records(cfg, dkim_public_key) + ptr_records(cfg)))
    written.append(zone)
    return written
