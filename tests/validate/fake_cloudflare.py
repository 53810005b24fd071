"""A Cloudflare API stand-in for tests/validate/test_mailstack_tls_acme.py (test infrastructure only).

It answers the calls certbot-dns-cloudflare makes through python3-cloudflare
(GET /client/v4/zones?name=, POST/GET/DELETE .../dns_records) for the zones it
is given, refuses any other bearer token (403, as Cloudflare does), and puts
each TXT record into pebble-challtestsrv's DNS (its management API), where
Pebble's validation looks it up.
"""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeCloudflare:
    def __init__(self, token: str, zones: list[str], challtestsrv: str):
        self.token = token
        self.zones = {uuid.uuid4().hex: zone for zone in zones}
        self.records: dict[str, dict] = {}
        self.calls: list[tuple[str, str, bool]] = []  # method, path, authorised
        self.challtestsrv = challtestsrv  # http://127.0.0.1:PORT (its management API)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

            def do_DELETE(self):
                fake._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/client/v4"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeCloudflare:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _dns(self, path: str, body: dict) -> None:
        request = urllib.request.Request(self.challtestsrv + path, data=json.dumps(body).encode(), method="POST")
        urllib.request.urlopen(request, timeout=5).read()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        authorised = handler.headers.get("Authorization") == f"Bearer {self.token}"
        self.calls.append((method, url.path, authorised))
        parts = url.path.strip("/").split("/")[2:]  # after client/v4
        if not authorised:
            return self._reply(handler, 403, None, [{"code": 9109, "message": "Invalid access token"}])
        if parts == ["zones"] and method == "GET":
            found = [{"id": i, "name": name} for i, name in self.zones.items() if name == query.get("name")]
            return self._reply(handler, 200, found, listing=True)
        if len(parts) >= 3 and parts[0] == "zones" and parts[1] in self.zones and parts[2] == "dns_records":
            if method == "POST":
                data = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
                record_id = uuid.uuid4().hex
                self.records[record_id] = {**data, "id": record_id, "zone_id": parts[1]}
                self._dns("/set-txt", {"host": data["name"] + ".", "value": data["content"]})
                return self._reply(handler, 200, self.records[record_id])
            if method == "GET" and len(parts) == 3:
                wanted = {k: v for k, v in query.items() if k in ("type", "name", "content")}
                found = [r for r in self.records.values() if all(r.get(k) == v for k, v in wanted.items())]
                return self._reply(handler, 200, found, listing=True)
            if method == "DELETE" and len(parts) == 4 and parts[3] in self.records:
                record = self.records.pop(parts[3])
                self._dns("/clear-txt", {"host": record["name"] + "."})
                return self._reply(handler, 200, {"id": parts[3]})
        return self._reply(handler, 404, None, [{"code": 7003, "message": "No route for that URI"}])

    @staticmethod
    def _reply(handler, code: int, result, errors=None, listing: bool = False) -> None:
        body = {"success": code == 200, "errors": errors or [], "messages": [], "result": result}
        if listing:
            body["result_info"] = {"page": 1, "per_page": 50, "count": len(result), "total_count": len(result),
                                   "total_pages": 1}
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
