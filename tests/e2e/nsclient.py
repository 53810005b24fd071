"""Small network clients that the lab runs *inside* a lab namespace.

The test process lives in the machine's own namespace, which has no route to
the lab. So the lab runs this file with `ip netns exec NS python nsclient.py
COMMAND JSON` and reads a JSON answer from stdout. Commands:

  query    {"server", "name", "rtype", "dnssec"?}         -> {"rcode", "ad", "signed", "records": [...]}
  update   {"server", "zone", "key": {name, algorithm, secret},
            "add": [[name, ttl, rtype, content]], "delete": [[name, rtype|null, content|null]],
            "replace": bool}                              -> {"rcode"}
  connect  {"host", "port", "timeout"}                    -> {"ok", "error"}

Each record in a query answer is {"text": presentation form, "strings": [..]}
where "strings" is only set for TXT/SPF (the character-strings, decoded).
With "dnssec": true the query sets DO and AD; "ad" is the answer's AD flag (a
validating resolver vouches for it) and "signed" whether an RRSIG came with it.
"""

from __future__ import annotations

import json
import socket
import sys

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsigkeyring
import dns.update


def query(server: str, name: str, rtype: str, timeout: float = 3.0, dnssec: bool = False) -> dict:
    msg = dns.message.make_query(name, rtype, want_dnssec=dnssec)
    if dnssec:
        msg.flags |= dns.flags.AD
    reply = dns.query.udp(msg, server, timeout=timeout)
    if reply.flags & dns.flags.TC:
        reply = dns.query.tcp(msg, server, timeout=timeout)
    records = []
    wanted = dns.rdatatype.from_text(rtype)
    for rrset in reply.answer:
        if rrset.rdtype != wanted:
            continue
        for rdata in rrset:
            entry = {"text": rdata.to_text(), "ttl": rrset.ttl}
            if hasattr(rdata, "strings"):
                entry["strings"] = [s.decode("utf-8", "replace") for s in rdata.strings]
            records.append(entry)
    return {"rcode": dns.rcode.to_text(reply.rcode()), "records": records,
            "ad": bool(reply.flags & dns.flags.AD),
            "signed": any(rrset.rdtype == dns.rdatatype.RRSIG for rrset in reply.answer)}


def rdata_from_text(rtype: str, content: str) -> dns.rdata.Rdata:
    """Record data in presentation form; names in it are absolute, trailing dot or not
    (as in Cloudflare's API: MX content 'mail.example.com' means mail.example.com.)."""
    return dns.rdata.from_text("IN", rtype, content, origin=dns.name.root, relativize=False)


def update(server: str, zone: str, key: dict, add=(), delete=(), replace=False, timeout: float = 5.0) -> dict:
    keyring = dns.tsigkeyring.from_text({key["name"]: (key["algorithm"], key["secret"])})
    upd = dns.update.UpdateMessage(zone, keyring=keyring, keyalgorithm=key["algorithm"])
    for name, rtype, content in delete:
        if content is not None:
            upd.delete(name, rdata_from_text(rtype, content))
        elif rtype is not None:
            upd.delete(name, rtype)
        else:
            upd.delete(name)
    for name, ttl, rtype, content in add:
        rdata = rdata_from_text(rtype, content)
        (upd.replace if replace else upd.add)(name, ttl, rdata)
    reply = dns.query.tcp(upd, server, timeout=timeout)
    return {"rcode": dns.rcode.to_text(reply.rcode())}


def connect(host: str, port: int, timeout: float = 3.0) -> dict:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return {"ok": True, "error": None}
    except OSError as e:
        return {"ok": False, "error": str(e)}


COMMANDS = {"query": query, "update": update, "connect": connect}

if __name__ == "__main__":
    command, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(COMMANDS[command](**args)))
