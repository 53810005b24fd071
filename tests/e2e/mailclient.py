"""Mail clients that the tests run *inside* a lab namespace (peer, stranger, client).

Run as `ip netns exec NS python mailclient.py COMMAND JSON`; prints a JSON
answer. The test side calls them through `run_client(lab, host, command, **args)`.

  dialog {"host", "port", "lines": [...], "starttls": bool, "tls_first_ehlo": str, "pipeline": bool, "timeout",
          "linger": seconds}
      Speaks SMTP line by line and returns the banner and each reply:
      {"banner": [code, text], "replies": [[code, text], ...], "closed": bool, "ehlo_after_tls": [code, text],
       "seconds": [float, ...], "after": [[code, text], ...]}.
      "seconds"[i] is the time from sending lines[i] to reading its reply (with "pipeline", from the one
      write to that reply): how long the server delayed it.
      With "starttls", it sends EHLO tls_first_ehlo, STARTTLS and EHLO again first.
      With "pipeline", all lines are sent in one write (to test unauthorised pipelining).
      With "linger", after the last reply it keeps reading for up to that many seconds: replies the
      server sends unasked (e.g. "421 ... too many errors") go to "after", and "closed" is set when
      the server closes the connection.
  send {"host", "port", "helo", "mail_from", "rcpt_to": [...], "message", "starttls", "login": [user, password],
        "quit": bool, "size": bool}
      smtplib end to end: {"ok": bool, "code": int, "error": str, "stage": str, "esmtp": [...], "auth_before_tls": bool}
      With "quit": false it closes the connection without QUIT (whose reply Postfix delays after an error).
      With "size", MAIL FROM announces the message's size (SIZE=, RFC 1870), as MTAs do.
  imap {"host", "user", "password", "folder", "tls": "imaps"|"starttls"}
      {"ok", "folders": [...], "messages": [raw message text, ...]} from the folder.
  move {"host", "user", "password", "subject", "source", "target"}
      MOVE over IMAPS of every message of folder "source" whose Subject contains "subject" into "target":
      {"ok", "error", "moved": count}.
  quota {"host", "user", "password", "mailbox"}
      GETQUOTAROOT (RFC 2087) over IMAPS: {"ok", "roots": [...], "quotas": [...]}, the server's lines as text.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import smtplib
import socket
import ssl
import sys
import time


def _insecure_tls() -> ssl.SSLContext:
    # The lab's certificate is self-signed, as the guide makes it.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Lines:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.file = sock.makefile("rb")

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            raw = self.file.readline()
            if not raw:
                raise ConnectionError("connection closed")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(lines)

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")


def dialog(host, port=25, lines=(), starttls=False, tls_first_ehlo="client.example.net", pipeline=False, timeout=60,
           linger=0):
    sock = socket.create_connection((host, port), timeout=timeout)
    conn = _Lines(sock)
    answer: dict = {"banner": conn.reply(), "replies": [], "seconds": [], "after": [], "closed": False}
    try:
        if starttls:
            conn.send(f"EHLO {tls_first_ehlo}")
            answer["ehlo_before_tls"] = conn.reply()
            conn.send("STARTTLS")
            answer["starttls"] = conn.reply()
            tls = _insecure_tls().wrap_socket(sock, server_hostname=host)
            conn = _Lines(tls)
            conn.send(f"EHLO {tls_first_ehlo}")
            answer["ehlo_after_tls"] = conn.reply()
        if pipeline:
            sent = time.monotonic()
            conn.sock.sendall("".join(f"{line}\r\n" for line in lines).encode())
            for _ in lines:
                answer["replies"].append(conn.reply())
                answer["seconds"].append(round(time.monotonic() - sent, 3))
        else:
            for line in lines:
                sent = time.monotonic()
                conn.send(line)
                answer["replies"].append(conn.reply())
                answer["seconds"].append(round(time.monotonic() - sent, 3))
        if linger:
            conn.sock.settimeout(linger)
            try:
                while True:  # until the server closes the connection or stays silent for `linger` seconds
                    answer["after"].append(conn.reply())
            except TimeoutError:
                pass  # the server kept the connection open and said nothing more
    except (ConnectionError, OSError) as err:
        answer["closed"] = True
        answer["error"] = str(err)
    return answer


def send(host, port=25, helo="peer.example.net", mail_from="", rcpt_to=(), message="", starttls=False,
         login=None, timeout=60, quit=True, size=False):
    answer: dict = {"ok": False, "stage": "connect"}
    try:
        smtp = smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout)
        # quit=False hangs up without QUIT: after an error, Postfix delays every reply, QUIT's too.
        with smtp if quit else contextlib.closing(smtp):
            answer["stage"] = "ehlo"
            smtp.ehlo()
            answer["auth_before_tls"] = smtp.has_extn("auth")
            if starttls:
                answer["stage"] = "starttls"
                smtp.starttls(context=_insecure_tls())
                smtp.ehlo()
            answer["esmtp"] = sorted(smtp.esmtp_features)
            if login:
                answer["stage"] = "auth"
                smtp.login(*login)
            answer["stage"] = "mail"
            options = [f"SIZE={len(message.encode())}"] if size and smtp.has_extn("size") else []
            code, text = smtp.mail(mail_from, options)
            if code >= 400:
                return {**answer, "code": code, "error": text.decode("utf-8", "replace")}
            for rcpt in rcpt_to:
                answer["stage"] = "rcpt"
                code, text = smtp.rcpt(rcpt)
                if code >= 400:
                    return {**answer, "code": code, "error": text.decode("utf-8", "replace")}
            answer["stage"] = "data"
            code, text = smtp.data(message.encode())
            if code >= 400:
                return {**answer, "code": code, "error": text.decode("utf-8", "replace")}
            return {**answer, "ok": True, "code": code, "error": ""}
    except smtplib.SMTPResponseException as err:
        return {**answer, "code": err.smtp_code, "error": err.smtp_error.decode("utf-8", "replace")}
    except (smtplib.SMTPException, OSError) as err:
        return {**answer, "code": 0, "error": f"{type(err).__name__}: {err}"}


def imap(host, user, password, folder="INBOX", tls="imaps", timeout=30):
    if tls == "imaps":
        client = imaplib.IMAP4_SSL(host, 993, ssl_context=_insecure_tls(), timeout=timeout)
    else:
        client = imaplib.IMAP4(host, 143, timeout=timeout)
        client.starttls(ssl_context=_insecure_tls())
    try:
        client.login(user, password)
        _, listing = client.list()
        folders = [line.decode().rsplit(" ", 1)[-1].strip('"') for line in listing or [] if line]
        messages = []
        status, _ = client.select(f'"{folder}"', readonly=True)
        if status == "OK":
            _, data = client.search(None, "ALL")
            for number in data[0].split():
                _, parts = client.fetch(number, "(RFC822)")
                messages.append(parts[0][1].decode("utf-8", "replace"))
        return {"ok": True, "folders": folders, "messages": messages}
    except imaplib.IMAP4.error as err:
        return {"ok": False, "error": str(err), "folders": [], "messages": []}
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def quota(host, user, password, mailbox="INBOX", timeout=30):
    client = imaplib.IMAP4_SSL(host, 993, ssl_context=_insecure_tls(), timeout=timeout)
    try:
        client.login(user, password)
        status, data = client.getquotaroot(mailbox)
        if status != "OK":
            return {"ok": False, "error": str(data), "roots": [], "quotas": []}
        roots, quotas = data
        text = [line.decode("utf-8", "replace") for line in roots + quotas if isinstance(line, bytes)]
        return {"ok": True, "roots": [line.decode() for line in roots if isinstance(line, bytes)],
                "quotas": [line.decode() for line in quotas if isinstance(line, bytes)], "lines": text}
    except imaplib.IMAP4.error as err:
        return {"ok": False, "error": str(err), "roots": [], "quotas": []}
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def move(host, user, password, subject, source, target, timeout=30):
    """MOVE (RFC 6851) every message of `source` whose Subject contains `subject` into `target`."""
    client = imaplib.IMAP4_SSL(host, 993, ssl_context=_insecure_tls(), timeout=timeout)
    try:
        client.login(user, password)
        status, data = client.select(f'"{source}"')
        if status != "OK":
            return {"ok": False, "error": str(data), "moved": 0}
        _, data = client.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
        uids = data[0].split()
        for uid in uids:
            status, data = client.uid("MOVE", uid.decode(), f'"{target}"')
            if status != "OK":
                return {"ok": False, "error": str(data), "moved": 0}
        return {"ok": True, "error": "", "moved": len(uids)}
    except imaplib.IMAP4.error as err:
        return {"ok": False, "error": str(err), "moved": 0}
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


COMMANDS = {"dialog": dialog, "send": send, "imap": imap, "quota": quota, "move": move}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](**json.loads(sys.argv[2]))))
