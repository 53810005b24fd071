"""`render`: every host file and the zone file of a stack, written to a folder.

What `pulumi up` would put on the host, without a host: for review in pull
requests and for the checker tests.
"""

from __future__ import annotations

from pathlib import Path

from components.config import MailConfig
from components.records import mail_records, ptr_records, zone_file
from components.render import render_host_files

# Offline there is no host to generate the DKIM key; the record shows where it goes.
DKIM_KEY_PLACEHOLDER = "PUBLIC-KEY-GENERATED-ON-THE-HOST"


def render_stack(cfg: MailConfig, out: Path, dkim_public_key: str = DKIM_KEY_PLACEHOLDER) -> list[Path]:
    """Write each host file at its remote path under `out`, and `out/dns/<domain>.zone`."""
    written = []
    for files in render_host_files(cfg).values():
        for file in files:
            target = out / file.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content)
            written.append(target)
    zone = out / "dns" / f"{cfg.zone_name}.zone"
    zone.parent.mkdir(parents=True, exist_ok=True)
    zone.write_text(zone_file(cfg, mail_records(cfg, dkim_public_key) + ptr_records(cfg)))
    written.append(zone)
    return written
