"""The only way out of the lab: an HTTP relay to Debian's package archive.

Two small processes, standard library only:

  proxy    runs in the machine's own namespace and listens on a *unix socket*.
           It serves plain-HTTP proxy requests (`GET http://host/path`) for the
           Debian archive host(s) only, on port 80; anything else gets 403.
  forward  runs inside the `mx` network namespace, listens on 127.0.0.1:3142
           and passes each connection to the proxy's unix socket.

A unix socket is reached through the filesystem, so the lab needs no network
link to the root namespace. apt in the chroot is configured with
`Acquire::http::Proxy "http://127.0.0.1:3142";`.

Each proxied request gets its own upstream connection and the reply is sent
with `Connection: close`; apt then reconnects for the next file. Slower than
keep-alive, but the relay never has to find where one response ends.

Usage:
  python aptrelay.py proxy   SOCKET HOST [HOST...]
  python aptrelay.py forward SOCKET [LISTEN_ADDR:PORT]
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
# Request headers that concern the hop to the proxy, not the archive.
HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"}


def read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """Read an HTTP message head (up to the blank line); return (head, bytes read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_HEAD:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes from src to dst until src closes."""
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class ArchiveProxy(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allowed_hosts: set[str] = set()


class ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        client = self.request
        got = read_head(client)
        if got is None:
            return
        head, _ = got  # GET and HEAD have no body
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ")
        except ValueError:
            return self.refuse(400, "bad request line")
        url = urlsplit(target)
        host = (url.hostname or "").lower()
        if method not in ("GET", "HEAD") or url.scheme != "http":
            return self.refuse(405, f"only GET/HEAD of http:// URLs are relayed, not {method} {target}")
        if host not in self.server.allowed_hosts or (url.port or 80) != 80:
            sys.stderr.write(f"refused {method} {target}\n")
            return self.refuse(403, f"{host} is not the Debian archive")
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        headers = [l for l in lines[1:] if l.split(":", 1)[0].strip().lower() not in HOP_HEADERS | {"host"}]
        request = "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {host}", *headers, "Connection: close", "", ""])
        try:
            upstream = socket.create_connection((host, 80), timeout=60)
        except OSError as e:
            return self.refuse(502, f"cannot reach {host}: {e}")
        with upstream:
            upstream.sendall(request.encode("latin-1"))
            self.relay_response(upstream, client)

    def relay_response(self, upstream: socket.socket, client: socket.socket) -> None:
        """Pass the archive's reply on, marked `Connection: close`, then the body as it comes."""
        got = read_head(upstream)
        if got is None:
            return self.refuse(502, "no reply from archive")
        head, rest = got
        lines = head.decode("latin-1").split("\r\n")
        kept = [lines[0]] + [l for l in lines[1:] if l.split(":", 1)[0].strip().lower() not in HOP_HEADERS]
        client.sendall(("\r\n".join(kept + ["Connection: close", "", ""])).encode("latin-1") + rest)
        pipe(upstream, client)

    def refuse(self, code: int, why: str) -> None:
        body = (why + "\n").encode()
        self.request.sendall(
            f"HTTP/1.1 {code} Refused by mailstack lab relay\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )


def run_proxy(socket_path: str, hosts: list[str]) -> None:
    server = ArchiveProxy(socket_path, ProxyHandler)
    server.allowed_hosts = {h.lower() for h in hosts}
    print(f"apt relay on {socket_path} for {', '.join(sorted(server.allowed_hosts))}", flush=True)
    server.serve_forever()


class Forwarder(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    socket_path = ""


class ForwardHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as proxy:
            proxy.connect(self.server.socket_path)
            back = threading.Thread(target=pipe, args=(proxy, self.request), daemon=True)
            back.start()
            pipe(self.request, proxy)
            back.join()


def run_forwarder(socket_path: str, listen: str = "127.0.0.1:3142") -> None:
    addr, _, port = listen.rpartition(":")
    server = Forwarder((addr, int(port)), ForwardHandler)
    server.socket_path = socket_path
    print(f"forwarding {listen} to {socket_path}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    mode, sock, *args = sys.argv[1:]
    if mode == "proxy":
        run_proxy(sock, args)
    elif mode == "forward":
        run_forwarder(sock, *args)
    else:
        sys.exit(f"unknown mode {mode!r}: use proxy or forward")
