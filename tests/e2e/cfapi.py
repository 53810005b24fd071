"""A stand-in for Cloudflare's v4 API, on the lab's `cfapi` host (https://cfapi.example.net/client/v4).

It answers the calls that certbot's Cloudflare plugin makes through
python3-cloudflare (Debian's certbot_dns_cloudflare 2.0, CloudFlare 2.11):

  GET    /client/v4/zones?name=N&per_page=1            the zone's id, by name
  POST   /client/v4/zones/{id}/dns_records             {"type","name","content","ttl"}
  GET    /client/v4/zones/{id}/dns_records?type&name&content[&per_page&page]
  GET    /client/v4/zones/{id}/dns_records/{rid}
  DELETE /client/v4/zones/{id}/dns_records/{rid}

with answers shaped like Cloudflare's ({"success", "errors", "messages",
"result", "result_info"}) and Cloudflare's own error codes: 9106 without an
Authorization header, 9109 (403) for a token that is not the lab's, 7003 for
an unknown route or zone, 81044 for an unknown record, 81058 for a record
that exists already.

The records are the lab's Knot's: a POST is a TSIG-signed dynamic update (as
Lab.dns_update sends, through nsclient.py), a DELETE removes the record from
Knot, and a GET reads the zone back by a TSIG-signed AXFR. So what the API says
is what DNS serves. A record's id is derived from the record itself (zone,
name, type, data): the same record has the same id on every call, and the
server keeps no state of its own.

Every call is logged, one JSON line each, to the call log (method, path,
query, status, Cloudflare code): never a header, so never the token.

Standard library only for HTTP and TLS (http.server, ssl); DNS through
nsclient.py and dnspython, like the rest of the lab. Test infrastructure:
no user of mailstack runs it.

Usage: python cfapi.py CONFIG.json   (see Lab._start_cfapi; the file holds the
token and the TSIG key, so it is 0600 and never on a command line)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dns.name
import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.zone

try:  # run as a script (the lab does): nsclient.py is next to it
    from nsclient import rdata_from_text, update
except ImportError:  # imported as tests.e2e.cfapi (e.g. by a test reading its helpers)
    from .nsclient import rdata_from_text, update

API_PREFIX = "/client/v4"
EPOCH = "2026-01-01T00:00:00.000000Z"  # created_on/modified_on: the stand-in keeps no history

# Types the stand-in publishes; certbot needs TXT only, the rest keep records readable.
TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "CAA", "NS", "PTR", "SRV", "TLSA")


def zone_id(zone: str) -> str:
    """32 hex digits, like Cloudflare's zone ids, derived from the zone's name."""
    return hashlib.sha256(f"zone:{zone.rstrip('.').lower()}".encode()).hexdigest()[:32]


def record_id(zone: str, name: str, rtype: str, data: str) -> str:
    return hashlib.sha256(f"record:{zone}|{name}|{rtype}|{data}".encode()).hexdigest()[:32]


def txt_content(strings: list[bytes]) -> str:
    """A TXT record as Cloudflare shows its content: the text of a single string, else the quoted strings."""
    if len(strings) == 1:
        return strings[0].decode("utf-8", "replace")
    return " ".join('"' + s.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for s in strings)


def txt_presentation(content: str) -> str:
    """Cloudflare's TXT content as DNS presentation form: already quoted strings are kept, plain text
    is quoted and cut into 255-byte strings."""
    if content.startswith('"'):
        return content
    data = content.encode()
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return " ".join('"' + c.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for c in chunks)


class Api:
    """The API's logic, apart from HTTP: each method returns (status, body)."""

    def __init__(self, config: dict):
        self.token = config["token"]
        self.zones = [z.rstrip(".").lower() for z in config["zones"]]
        self.dns_server = config["dns_server"]
        self.tsig = config["tsig"]
        self.nameservers = config.get("nameservers", [])
        self.lock = threading.Lock()  # one change to Knot at a time: a GET sees every finished POST

    # --- answers -----------------------------------------------------------------------------

    @staticmethod
    def ok(result, result_info: dict | None = None, status: int = 200) -> tuple[int, dict]:
        body = {"success": True, "errors": [], "messages": [], "result": result}
        if result_info is not None:
            body["result_info"] = result_info
        return status, body

    @staticmethod
    def error(status: int, code: int, message: str) -> tuple[int, dict]:
        return status, {"success": False, "errors": [{"code": code, "message": message}], "messages": [],
                        "result": None}

    @staticmethod
    def page(items: list, query: dict) -> tuple[list, dict]:
        per_page = max(1, min(int(query.get("per_page", 100)), 5000))
        page = max(1, int(query.get("page", 1)))
        chunk = items[(page - 1) * per_page: page * per_page]
        pages = (len(items) + per_page - 1) // per_page
        return chunk, {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(items),
                       "total_pages": pages}

    # --- dispatch ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, authorization: str | None, body: bytes) -> tuple[int, dict]:
        if not authorization:
            return self.error(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            return self.error(403, 9109, "Invalid access token")
        parts = [p for p in path[len(API_PREFIX):].split("/") if p] if path.startswith(API_PREFIX + "/") else None
        not_routed = self.error(404, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?")
        if not parts or parts[0] != "zones":
            return not_routed
        if len(parts) == 1 and method == "GET":
            return self.list_zones(query)
        zone = next((z for z in self.zones if zone_id(z) == parts[1]), None) if len(parts) > 1 else None
        if zone is None:
            return not_routed
        if len(parts) == 2 and method == "GET":
            return self.ok(self.zone_object(zone))
        if len(parts) >= 3 and parts[2] == "dns_records":
            if len(parts) == 3 and method == "GET":
                return self.list_records(zone, query)
            if len(parts) == 3 and method == "POST":
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    return self.error(400, 9207, "Request body is invalid.")
                return self.create_record(zone, data)
            if len(parts) == 4 and method in ("GET", "DELETE"):
                record = next((r for r in self.records(zone) if r["id"] == parts[3]), None)
                if record is None:
                    return self.error(404, 81044, "Record does not exist.")
                if method == "GET":
                    return self.ok(record)
                return self.delete_record(zone, record)
        return not_routed

    # --- zones -------------------------------------------------------------------------------

    def zone_object(self, zone: str) -> dict:
        return {"id": zone_id(zone), "name": zone, "status": "active", "paused": False, "type": "full",
                "name_servers": self.nameservers, "created_on": EPOCH, "modified_on": EPOCH}

    def list_zones(self, query: dict) -> tuple[int, dict]:
        name = query.get("name", "").rstrip(".").lower()
        zones = [self.zone_object(z) for z in self.zones if not name or z == name]
        chunk, info = self.page(zones, query)
        return self.ok(chunk, info)

    # --- records -----------------------------------------------------------------------------

    def keyring(self):
        return dns.tsigkeyring.from_text({self.tsig["name"]: (self.tsig["algorithm"], self.tsig["secret"])})

    def records(self, zone: str) -> list[dict]:
        """The zone's records as Knot serves them (a TSIG-signed AXFR), in Cloudflare's shape.
        The SOA and the apex NS are the provider's, not the user's: Cloudflare lists neither."""
        xfr = dns.query.xfr(self.dns_server, zone, keyring=self.keyring(), keyname=self.tsig["name"],
                            keyalgorithm=self.tsig["algorithm"], timeout=5, lifetime=10, relativize=False)
        zone_obj = dns.zone.from_xfr(xfr, relativize=False)
        origin = dns.name.from_text(zone)
        found = []
        for name, node in zone_obj.nodes.items():
            fqdn = name.to_text(omit_final_dot=True).lower()
            for rdataset in node.rdatasets:
                rtype = dns.rdatatype.to_text(rdataset.rdtype)
                if rtype not in TYPES or (rtype == "NS" and name == origin):
                    continue
                for rdata in rdataset:
                    found.append(self.record_object(zone, fqdn, rtype, rdataset.ttl, rdata))
        return sorted(found, key=lambda r: (r["name"], r["type"], r["content"]))

    def record_object(self, zone: str, fqdn: str, rtype: str, ttl: int, rdata) -> dict:
        priority = None
        if rtype == "TXT":
            content = txt_content(list(rdata.strings))
        elif rtype == "MX":
            priority, content = rdata.preference, rdata.exchange.to_text(omit_final_dot=True)
        elif rtype in ("CNAME", "NS", "PTR"):
            content = rdata.target.to_text(omit_final_dot=True)
        else:
            content = rdata.to_text()
        record = {"id": record_id(zone, fqdn, rtype, rdata.to_text()), "zone_id": zone_id(zone), "zone_name": zone,
                  "name": fqdn, "type": rtype, "content": content, "proxiable": rtype in ("A", "AAAA", "CNAME"),
                  "proxied": False, "ttl": ttl, "locked": False, "meta": {"auto_added": False, "source": "primary"},
                  "comment": None, "tags": [], "created_on": EPOCH, "modified_on": EPOCH,
                  "_rdata": rdata.to_text()}
        if priority is not None:
            record["priority"] = priority
        return record

    def list_records(self, zone: str, query: dict) -> tuple[int, dict]:
        wanted = {k: query[k] for k in ("type", "name", "content") if k in query}
        if "name" in wanted:
            wanted["name"] = self.fqdn(zone, wanted["name"])
        records = [self.public(r) for r in self.records(zone)
                   if all(str(r[k]).lower() == str(v).lower() if k != "content" else r[k] == v
                          for k, v in wanted.items())]
        chunk, info = self.page(records, query)
        return self.ok(chunk, info)

    @staticmethod
    def public(record: dict) -> dict:
        return {k: v for k, v in record.items() if not k.startswith("_")}

    @staticmethod
    def fqdn(zone: str, name: str) -> str:
        """Cloudflare's record names: '@' is the apex, a name outside the zone gets the zone appended."""
        name = name.rstrip(".").lower()
        if name in ("@", ""):
            return zone
        return name if name == zone or name.endswith("." + zone) else f"{name}.{zone}"

    def create_record(self, zone: str, data: dict) -> tuple[int, dict]:
        rtype, name, content = str(data.get("type", "")).upper(), data.get("name"), data.get("content")
        if rtype not in TYPES:
            return self.error(400, 9004, "This record type cannot be used with this endpoint.")
        if not name or content is None:
            return self.error(400, 9005, "DNS record name and content are required.")
        ttl = int(data.get("ttl", 1))
        ttl = 300 if ttl == 1 else ttl  # 1 is Cloudflare's "automatic"
        fqdn = self.fqdn(zone, name)
        if rtype == "TXT":
            text = txt_presentation(content)
        elif rtype == "MX":
            text = f"{int(data.get('priority', 0))} {content}"
        else:
            text = content
        try:
            rdata = rdata_from_text(rtype, text)
        except Exception as e:  # dnspython's syntax errors have no common base
            return self.error(400, 9005, f"Content for {rtype} record is invalid: {e}")
        with self.lock:
            if any(r["_rdata"] == rdata.to_text() for r in self.records(zone)
                   if r["name"] == fqdn and r["type"] == rtype):
                return self.error(400, 81058, "An identical record already exists.")
            answer = update(self.dns_server, zone, self.tsig, add=[[fqdn + ".", ttl, rtype, text]])
            if answer["rcode"] != "NOERROR":
                return self.error(400, 1004, f"DNS Validation Error: the zone refused the record ({answer['rcode']})")
        return self.ok(self.public(self.record_object(zone, fqdn, rtype, ttl, rdata)))

    def delete_record(self, zone: str, record: dict) -> tuple[int, dict]:
        with self.lock:
            answer = update(self.dns_server, zone, self.tsig,
                            delete=[[record["name"] + ".", record["type"], record["_rdata"]]])
        if answer["rcode"] != "NOERROR":
            return self.error(400, 1004, f"DNS Validation Error: the zone refused the deletion ({answer['rcode']})")
        return self.ok({"id": record["id"]})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as python-requests' session expects
    server_version = "cloudflare"
    sys_version = ""
    api: Api
    call_log: Path

    def _serve(self) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, answer = self.api.handle(self.command, url.path, query, self.headers.get("Authorization"), body)
        except Exception as e:  # report, keep serving: a failing test then shows why
            status, answer = Api.error(500, 10000, f"stand-in error: {type(e).__name__}: {e}")
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.log_call(url.path, query, status, answer, time.monotonic() - started)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_call(self, path: str, query: dict, status: int, answer: dict, seconds: float) -> None:
        """One JSON line: what was asked and answered; never a header (the token is in one)."""
        entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                 "client": self.client_address[0], "method": self.command, "path": path, "query": query,
                 "status": status, "codes": [e["code"] for e in answer.get("errors") or []],
                 "seconds": round(seconds, 3)}
        with self.server.log_lock, open(self.call_log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def log_message(self, format, *args) -> None:  # http.server's own access log: replaced by log_call
        pass


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too, as ::ffff:a.b.c.d
        super().server_bind()


def serve(config: dict) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(config["cert"], config["key"])
    Handler.api = Api(config)
    Handler.call_log = Path(config["call_log"])
    server = DualStackServer(("::", int(config.get("port", 443))), Handler)
    server.log_lock = threading.Lock()
    # The handshake happens on the handler's thread (first read), not in accept(): a slow client
    # never holds up the others.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(json.loads(Path(sys.argv[1]).read_text()))
