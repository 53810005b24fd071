"""The peer's mail server: accepts every message on port 25 and keeps it.

Run inside the peer namespace: `python smtpsink.py DIR ADDRESS...`. Each
message is written to DIR as <n>.eml, with the envelope as X-Sink-* headers
on top, so that a test can read what mx relayed out exactly as it arrived.
"""

from __future__ import annotations

import itertools
import sys
import threading
from pathlib import Path

from aiosmtpd.controller import Controller


class Keep:
    """One for all the listening addresses: file numbers give the order of arrival."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.numbers = itertools.count(len(list(folder.glob("*.eml"))) + 1)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        head = (
            f"X-Sink-Peer: {session.peer[0]}\r\n"
            f"X-Sink-Helo: {session.host_name}\r\n"
            f"X-Sink-Mail-From: {envelope.mail_from}\r\n"
            f"X-Sink-Rcpt-To: {','.join(envelope.rcpt_tos)}\r\n"
        )
        with self.lock:
            path = self.folder / f"{next(self.numbers):04d}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(head.encode() + envelope.original_content)
        tmp.rename(path)
        return "250 OK kept"


def main() -> None:
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    keep = Keep(folder)
    controllers = [
        Controller(keep, hostname=address, port=25, server_hostname="peer.example.net") for address in sys.argv[2:]
    ]
    for controller in controllers:
        controller.start()
    print("ready", flush=True)
    threading.Event().wait()  # until the lab ends this process


if __name__ == "__main__":
    main()
