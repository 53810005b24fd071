"""The peer's mail server: accepts every message on port 25 and keeps it.

Run inside the peer namespace:
`python smtpsink.py DIR ADDRESS... [--hostname NAME] [--cert PEM --key PEM]`.
Each message is written to DIR as <n>.eml, with the envelope as X-Sink-*
headers on top, so that a test can read what mx relayed out exactly as it
arrived. With --cert and --key it offers STARTTLS with that certificate
(world.py makes one per lab run and publishes its TLSA record); X-Sink-TLS
then tells how the message came: "none", or the protocol and cipher.
--hostname: the name in its greeting and EHLO reply (peer.example.net unless
given; world.py gives another, since the peer's own Postfix, peermta.py, is
peer.example.net and takes a server greeting with its own name for a loop).
"""

from __future__ import annotations

import argparse
import itertools
import ssl
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
        tls = "none"
        if session.ssl is not None:  # set by aiosmtpd once STARTTLS is done: the transport's extra info
            name, version, _bits = session.ssl.get("cipher") or ("?", "?", 0)
            tls = f"{version} {name}"
        head = (
            f"X-Sink-Peer: {session.peer[0]}\r\n"
            f"X-Sink-Helo: {session.host_name}\r\n"
            f"X-Sink-Mail-From: {envelope.mail_from}\r\n"
            f"X-Sink-Rcpt-To: {','.join(envelope.rcpt_tos)}\r\n"
            f"X-Sink-TLS: {tls}\r\n"
        )
        with self.lock:
            path = self.folder / f"{next(self.numbers):04d}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(head.encode() + envelope.original_content)
        tmp.rename(path)
        return "250 OK kept"


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for STARTTLS: the lab's certificate, no client certificates asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("addresses", nargs="+")
    parser.add_argument("--hostname", default="peer.example.net")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    keep = Keep(args.folder)
    tls = {"tls_context": tls_context(args.cert, args.key)} if args.cert else {}
    controllers = [
        Controller(keep, hostname=address, port=25, server_hostname=args.hostname, **tls)
        for address in args.addresses
    ]
    for controller in controllers:
        controller.start()
    print("ready", flush=True)
    threading.Event().wait()  # until the lab ends this process


if __name__ == "__main__":
    main()
