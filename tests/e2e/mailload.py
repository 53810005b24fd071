"""A load of mail from the peer to mx, counted message by message (issue 17, "Load, and nothing lost").

The sender is what a busy site on the Internet has: an MTA with a queue. In
the peer namespace Postfix's own load generator, `smtp-source`, opens
parallel SMTP sessions to a peer Postfix (peermta.py, with a loopback
listener for it); that Postfix relays to mx by the domains' MX records, as
any peer does, and keeps in its queue whatever mx refuses for now (4xx, e.g.
while mx's milter restarts), retrying every few seconds (the lab's short
backoff). So a message that mx does not take now is delivered later, and the
load proves nothing is lost: each message is counted in the mailboxes'
Maildirs on mx by its Message-ID.

    load = MailLoad.start(lab)                  # the sending Postfix, one per lab run
    run = load.send(total=2000, sessions=20)    # smtp-source in the background
    run.wait_delivered(500, timeout=300)        # ... reload something on mx ...
    run.wait_delivered(2000, timeout=300)
    run.delivered()                             # Counter: Message-ID -> copies in the Maildirs
    load.stop(); run.forget()                   # the sender stops, the run's mail is expunged

Message-IDs: smtp-source writes `Message-Id: <PID.N.0000@HELO>` with a counter
N per process, and the HELO name is given per run and per process
(load-<token>-<i>.peer.example.net), so the IDs of a run are distinct by
construction and never mistaken for another run's; the peer's cleanup logs
each one it queued (the sent set). The Subject carries the run's token, so the
run's mail can be expunged afterwards (the mailboxes are the lab's own users').

Test infrastructure only (never used by users).
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .peermta import PeerMta

SMTP_SOURCE = "/usr/sbin/smtp-source"
LISTEN = "127.0.0.1:10025"
SENDER = "someone@example.net"  # the peer's domain: its SPF names the peer
# One mailbox of each of the lab's two domains, neither with a Sieve script or a quota of its own.
MAILBOXES = ("carol@example.com", "dave@example.org")
PAYLOAD_BYTES = 1024
# The sending Postfix: up to 10 parallel deliveries per domain, so 20 to mx in all,
# as smtp-source's 20 sessions; retry deferred mail soon (mx's milter is back within seconds).
SENDER_SETTINGS = {
    "smtp_destination_concurrency_limit": "10",
    "queue_run_delay": "5s",
    "minimal_backoff_time": "5s",
    "maximal_backoff_time": "10s",
}
MESSAGE_ID = re.compile(rb"^Message-Id:[ \t]*<([^>\r\n]+)>", re.IGNORECASE | re.MULTILINE)
SPAMD_RESULT = re.compile(rb"^X-Spamd-Result:", re.IGNORECASE | re.MULTILINE)
CLEANUP_ID = re.compile(r"cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=<([^>]+)>")
QUEUE_STATUS = re.compile(r"\]: ([0-9A-Za-z]+): to=<[^>]*>,.*\bstatus=(sent|deferred|bounced|expired)\b")


def maildir(lab, mailbox: str) -> Path:
    """The mailbox's Maildir as seen from the machine (mx's root, lab.mx_root)."""
    local, domain = mailbox.split("@")
    return lab.mx_root / "var/vmail" / domain / local / "Maildir"


def message_files(root: Path) -> list[Path]:
    """Every message of a Maildir: new/ and cur/ of INBOX and of each folder (.Junk, ...)."""
    folders = [root]
    try:
        folders += [entry for entry in root.iterdir() if entry.name.startswith(".") and entry.is_dir()]
    except OSError:
        return []
    files = []
    for folder in folders:
        for part in ("new", "cur"):
            try:
                files += [entry for entry in (folder / part).iterdir()]
            except OSError:
                pass
    return files


@dataclass
class LoadRun:
    """One run of smtp-source: its processes, and the counts of its mail at the peer and on mx."""

    lab: object
    mta: PeerMta
    token: str
    total: int
    sessions: int
    log_start: int  # the peer's log offset when the run began
    processes: list[subprocess.Popen]
    started: float  # time.monotonic() at the start
    mailboxes: tuple[str, ...] = MAILBOXES
    _seen: dict[Path, tuple[str, bool] | None] = field(default_factory=dict)  # file -> (Message-ID, judged)
    last_at: float | None = None  # monotonic time when the last message was counted on mx

    def ours(self, message_id: str) -> bool:
        return f"@load-{self.token}-" in message_id

    # --- the sender ---------------------------------------------------------------------------

    def wait_sent(self, timeout: float = 300) -> list[tuple[int, str]]:
        """Wait for smtp-source to finish; each process's (exit status, output)."""
        results = []
        for process in self.processes:
            try:
                out, _ = process.communicate(timeout=max(1.0, self.started + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            results.append((process.returncode, out))
        return results

    def queued_ids(self) -> list[str]:
        """The Message-IDs the peer's cleanup queued in this run (one line per message it took)."""
        return [mid for _, mid in CLEANUP_ID.findall(self.mta.log(self.log_start)) if self.ours(mid)]

    def statuses(self) -> Counter:
        """How the peer's deliveries of this run went: status -> count of log lines (sent, deferred...)."""
        return Counter(status for _, status in QUEUE_STATUS.findall(self.mta.log(self.log_start)))

    # --- mx ---------------------------------------------------------------------------------------

    def delivered(self) -> Counter:
        """Message-ID -> how many copies of it are in the mailboxes' Maildirs (this run's only)."""
        found: Counter = Counter()
        for mailbox in self.mailboxes:
            for path in message_files(maildir(self.lab, mailbox)):
                if path not in self._seen:
                    self._seen[path] = self._message_id(path)
                seen = self._seen[path]
                if seen is not None:
                    found[seen[0]] += 1
        # Files gone (moved new/ -> cur/ by an IMAP client) are no longer counted twice.
        present = {p for mailbox in self.mailboxes for p in message_files(maildir(self.lab, mailbox))}
        for path in [p for p in self._seen if p not in present]:
            del self._seen[path]
        return found

    def _message_id(self, path: Path) -> tuple[str, bool] | None:
        """(Message-ID, judged by rspamd: an X-Spamd-Result header) of one of the run's messages; None for
        any other file."""
        try:
            head = path.read_bytes()[:65536].split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
        except OSError:
            return None  # moved away meanwhile: counted at its new name on the next look
        match = MESSAGE_ID.search(head)
        message_id = match.group(1).decode(errors="replace") if match else None
        if not message_id or not self.ours(message_id):
            return None
        return message_id, SPAMD_RESULT.search(head) is not None

    def not_judged(self) -> list[str]:
        """The run's delivered messages without rspamd's X-Spamd-Result header (call delivered() first)."""
        return sorted(seen[0] for seen in self._seen.values() if seen is not None and not seen[1])

    def delivered_count(self) -> int:
        return sum(self.delivered().values())

    def wait_delivered(self, count: int, timeout: float = 300, every: float = 0.5) -> int:
        """Wait until at least `count` of the run's messages are in the Maildirs; how many there are."""
        deadline = time.monotonic() + timeout
        previous = -1
        while True:
            now = self.delivered_count()
            if now != previous:
                previous, self.last_at = now, time.monotonic()
            if now >= count or time.monotonic() > deadline:
                return now
            time.sleep(every)

    def messages_per_second(self) -> float:
        """The run's messages over the time from smtp-source's start to the last one counted on mx."""
        end = self.last_at or time.monotonic()
        return self.total / max(end - self.started, 1e-6)

    def forget(self) -> None:
        """Expunge the run's mail from the mailboxes (every folder), so that the lab's users are as before."""
        failed = [self.lab.ssh(f"doveadm expunge -u {mailbox} mailbox '*' subject {self.token}", check=False,
                               timeout=300) for mailbox in self.mailboxes]
        left = self.delivered_count()
        if left:
            raise RuntimeError(f"{left} of the load's messages are still in {', '.join(self.mailboxes)}: "
                               + " ".join(r.stderr for r in failed if r.returncode))


class MailLoad:
    """The peer's sending Postfix with its loopback listener, and smtp-source runs through it."""

    def __init__(self, lab, mta: PeerMta):
        self.lab = lab
        self.mta = mta

    @classmethod
    def start(cls, lab, name: str = "peer-load") -> "MailLoad":
        if not Path(SMTP_SOURCE).exists():
            raise RuntimeError(f"{SMTP_SOURCE} is missing (Debian's postfix package has it)")
        return cls(lab, PeerMta.start(lab, name=name, listen=LISTEN, **SENDER_SETTINGS))

    def stop(self) -> None:
        self.mta.stop()

    def send(self, total: int = 2000, sessions: int = 20, mailboxes: tuple[str, ...] = MAILBOXES,
             payload: int = PAYLOAD_BYTES) -> LoadRun:
        """Start smtp-source in the peer namespace: `total` messages over `sessions` parallel sessions,
        split evenly between the mailboxes (one smtp-source per mailbox); return at once."""
        token = uuid.uuid4().hex[:12]
        log_start = self.mta.log_size()
        processes = []
        started = time.monotonic()
        for i, mailbox in enumerate(mailboxes):
            count = total // len(mailboxes) + (1 if i < total % len(mailboxes) else 0)
            argv = ["ip", "netns", "exec", self.mta.netns, SMTP_SOURCE,
                    "-s", str(max(1, sessions // len(mailboxes))), "-m", str(count),
                    "-M", f"load-{token}-{i}.peer.example.net", "-f", SENDER, "-t", mailbox,
                    "-S", f"load {token}", "-l", str(payload), LISTEN]
            processes.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True, cwd="/"))
        return LoadRun(self.lab, self.mta, token, total, sessions, log_start, processes, started, tuple(mailboxes))
