"""The network side of `verify`: DNS lookups, SMTP/IMAP probes, the DKIM key over SSH.

Everything here talks to the network and returns plain data; deciding what the
data means is components/verify.py's job. Probes never raise for what a server
does (a refused connection, a failed handshake): they record it, and the
judge reports it.

- `Dns`: lookups through one dnspython resolver (the system's, or the
  `--nameserver` given), cached for the run. pyspf and checkdmarc are pointed
  at the same resolver, so every answer comes from the same server.
- `probe_smtp`, `probe_vrfy`, `probe_relay`, `probe_imap`: one session each.
  They connect to an *address* while naming the *host* (SNI and certificate
  checks use the host name, as a sending server does after its MX lookup).
- `read_host_dkim_key`: the public half of the key OpenDKIM signs with.
- `fetch_policy`: a domain's MTA-STS policy over HTTPS, the certificate
  checked against the trust store (or the CA file given with --ca-file).
"""

from __future__ import annotations

import functools
import http.client
import imaplib
import shlex
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.flags
import dns.message
import dns.query
import dns.rdata
import dns.resolver
import spf

from components import paths
from components.config import HostConfig

# --- DNS ----------------------------------------------------------------------------------------


class DnsError(Exception):
    """A lookup got no usable answer (timeout, SERVFAIL, no server): neither yes nor no."""


class Dns:
    """Lookups for one run, through one dnspython resolver, cached.

    NXDOMAIN and NODATA are both an empty list: for every check here "no
    record" is what matters. Anything else that is not an answer raises
    DnsError. Safe to use from several threads.
    """

    def __init__(self, nameservers: list[str] | None = None, port: int = 53, timeout: float = 10.0):
        if nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = list(nameservers)
            resolver.port = port
        else:
            resolver = dns.resolver.Resolver()  # /etc/resolv.conf
        resolver.lifetime = timeout
        resolver.timeout = min(2.0, timeout)
        # EDNS with a 1232-byte payload (the DNS flag day value): a 2048-bit DKIM
        # record does not fit the classic 512 bytes; TCP remains the fallback.
        resolver.use_edns(0, 0, 1232)
        self.resolver = resolver
        self._cache: dict[tuple[str, str], list[dns.rdata.Rdata] | DnsError] = {}
        self._lock = threading.Lock()

    def records(self, name: str, rtype: str) -> list[dns.rdata.Rdata]:
        """The rdatas of (name, rtype), CNAMEs followed; [] when there are none."""
        key = (name.lower().rstrip("."), rtype.upper())
        with self._lock:
            cached = self._cache.get(key)
        if isinstance(cached, DnsError):
            raise cached
        if cached is not None:
            return cached
        try:
            answer = self.resolver.resolve(dns.name.from_text(key[0]), key[1], raise_on_no_answer=False, search=False)
            result: list[dns.rdata.Rdata] | DnsError = list(answer.rrset) if answer.rrset is not None else []
        except dns.resolver.NXDOMAIN:
            result = []
        except (dns.exception.DNSException, OSError) as err:
            result = DnsError(f"{key[1]} lookup of {key[0]} failed: {err}")
        with self._lock:
            self._cache[key] = result
        if isinstance(result, DnsError):
            raise result
        return result

    def authenticated(self, name: str, rtype: str) -> bool:
        """Whether the resolver vouches for the answer (AD: it validated DNSSEC). False when it does not say so."""
        query = dns.message.make_query(name, rtype, want_dnssec=True)
        query.flags |= dns.flags.AD
        for server in self.resolver.nameservers:
            try:
                reply = dns.query.udp(query, server, port=self.resolver.port, timeout=self.resolver.timeout)
                if reply.flags & dns.flags.TC:
                    reply = dns.query.tcp(query, server, port=self.resolver.port, timeout=self.resolver.timeout)
            except (dns.exception.DNSException, OSError):
                continue
            return bool(reply.flags & dns.flags.AD)
        raise DnsError(f"{rtype} lookup of {name} failed: no resolver answered")

    def texts(self, name: str) -> list[str]:
        """Each TXT record at name, its character-strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.records(name, "TXT")]

    def targets(self, name: str, rtype: str) -> list[str]:
        """The names an MX, PTR or CNAME record points at: lower-case, no trailing dot."""
        out = []
        for r in self.records(name, rtype):
            target = r.exchange if rtype.upper() == "MX" else r.target
            out.append(target.to_text(omit_final_dot=True).lower())
        return out

    def addresses(self, name: str, rtype: str) -> list[str]:
        return [r.address for r in self.records(name, rtype)]


# pyspf asks DNS through its module-level `DNSLookup` hook (it swaps in pydns or
# dnspython the same way). Ours answers from the run's `Dns` when one is set for
# the current thread, and hands over to pyspf's own otherwise.
_pyspf_dns = threading.local()
_PYSPF_LOOKUP = getattr(spf.DNSLookup, "mailstack_original", spf.DNSLookup)


def _pyspf_lookup(name, qtype, strict=True, timeout=30):
    lookups: Dns | None = getattr(_pyspf_dns, "dns", None)
    if lookups is None:
        return _PYSPF_LOOKUP(name, qtype, strict, timeout)
    if qtype == "SPF":  # type 99 is obsolete (RFC 7208 3.1); nobody publishes it
        return []
    try:
        rdatas = lookups.records(name, qtype)
    except DnsError as err:
        raise spf.TempError(f"DNS {err}") from None
    out = []
    for r in rdatas:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), r.address))
        elif qtype == "MX":
            out.append(((name, qtype), (r.preference, r.exchange.to_text(omit_final_dot=True))))
        elif qtype == "PTR":
            out.append(((name, qtype), r.target.to_text(omit_final_dot=True)))
        elif qtype == "TXT":
            out.append(((name, qtype), list(r.strings)))
    return out


_pyspf_lookup.mailstack_original = _PYSPF_LOOKUP
spf.DNSLookup = _pyspf_lookup


def spf_check(lookups: Dns, address: str, sender: str, helo: str) -> tuple[str, str]:
    """pyspf's check_host() for a client address: (result, explanation), e.g. ("pass", "sender SPF authorized").

    An empty sender checks the HELO identity, as receivers do for bounces (RFC 7208 2.3).
    """
    query = spf.query(i=address, s=sender, h=helo, timeout=lookups.resolver.lifetime)
    _pyspf_dns.dns = lookups
    try:
        result, _code, explanation = query.check()
    finally:
        _pyspf_dns.dns = None
    return result, explanation


# --- SMTP and IMAP --------------------------------------------------------------------------------


@dataclass
class TlsInfo:
    """What a TLS handshake showed."""

    ok: bool = False
    error: str = ""  # why the handshake failed (when not ok)
    version: str = ""  # e.g. TLSv1.3
    cert_der: bytes | None = None  # the server's certificate
    verified: bool = False  # the chain verifies against the system's CAs and names the host
    verify_error: str = ""  # why not (e.g. "self-signed certificate")


@dataclass
class SmtpProbe:
    """One SMTP session: banner, EHLO, STARTTLS, EHLO again."""

    address: str
    port: int
    error: str = ""  # the session could not be had at all (connect, banner)
    banner: tuple[int, str] | None = None
    features: list[str] = field(default_factory=list)  # EHLO keywords before TLS, lower-case ("auth", "starttls")
    auth_before_tls: str | None = None  # the AUTH line's mechanisms before TLS, None when not offered
    starttls_reply: tuple[int, str] | None = None  # None when STARTTLS was not offered
    tls: TlsInfo | None = None
    features_tls: list[str] = field(default_factory=list)
    auth_after_tls: str | None = None


@dataclass
class SmtpReply:
    """A session that asks one question (VRFY, a relay attempt): the reply that matters."""

    address: str
    command: str  # what was asked, for messages: "VRFY postmaster", "RCPT TO:<x@example.net>"
    reply: tuple[int, str] | None = None  # None when the session ended before the question
    error: str = ""  # why there is no reply
    before: list[tuple[str, int, str]] = field(default_factory=list)  # earlier commands' replies


@dataclass
class ImapProbe:
    address: str
    imaps: TlsInfo = field(default_factory=TlsInfo)  # 993
    starttls: TlsInfo = field(default_factory=TlsInfo)  # 143 + STARTTLS
    capabilities_before_tls: list[str] = field(default_factory=list)  # on 143


class _SMTP(smtplib.SMTP):
    """smtplib, connected to one address while the host name is used for SNI and certificate checks."""

    def __init__(self, address: str, host_name: str, **kwargs):
        self._address = address
        super().__init__(**kwargs)  # no host: connect() is ours to call, so that we see the banner
        self._host = host_name  # what starttls() gives as server_hostname (smtplib sets it only from host)

    def _get_socket(self, host, port, timeout):
        return socket.create_connection((self._address, port), timeout, self.source_address)


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


def _auth(smtp: smtplib.SMTP) -> str | None:
    """The SASL mechanisms of the EHLO's AUTH line ("PLAIN LOGIN"), or None when AUTH is not offered."""
    mechanisms = smtp.esmtp_features.get("auth")
    return None if mechanisms is None else " ".join(mechanisms.split())


# One of each per process: loading the system's CAs takes ~50 ms, and contexts are shared safely.
@functools.cache
def _verifying_context(ca_file: str | None = None) -> ssl.SSLContext:
    # The system's CAs, or only those of `ca_file` (verify --ca-file); the host name checked.
    return ssl.create_default_context(cafile=ca_file)


@functools.cache
def _accepting_context() -> ssl.SSLContext:
    # To read a certificate that does not verify (e.g. the guide's self-signed one).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _tls_info(sock: ssl.SSLSocket, verified: bool, verify_error: str = "") -> TlsInfo:
    return TlsInfo(ok=True, version=sock.version() or "", cert_der=sock.getpeercert(binary_form=True),
                   verified=verified, verify_error=verify_error)


def _smtp_session(address: str, port: int, host_name: str, helo: str, timeout: float,
                  context: ssl.SSLContext) -> tuple[SmtpProbe, str | None]:
    """One SMTP session; the second value is ssl's reason when the certificate failed verification."""
    probe = SmtpProbe(address, port)
    smtp = _SMTP(address, host_name, local_hostname=helo, timeout=timeout)
    try:
        try:
            code, message = smtp.connect(host_name, port)
            probe.banner = (code, _text(message))
            if code != 220:
                return probe, None
            smtp.ehlo()
        except (OSError, smtplib.SMTPException) as err:
            probe.error = f"{type(err).__name__}: {err}"
            return probe, None
        probe.features = sorted(smtp.esmtp_features)
        probe.auth_before_tls = _auth(smtp)
        if not smtp.has_extn("starttls"):
            return probe, None
        try:
            # smtplib names the host it connected to (the host name) for SNI and the
            # certificate check, and forgets the pre-TLS EHLO (RFC 3207 4.2).
            code, message = smtp.starttls(context=context)
            probe.starttls_reply = (code, _text(message))
        except smtplib.SMTPResponseException as err:
            probe.starttls_reply = (err.smtp_code, _text(err.smtp_error))
            return probe, None
        except ssl.SSLCertVerificationError as err:
            return probe, err.verify_message or str(err)
        except (OSError, smtplib.SMTPException) as err:
            probe.tls = TlsInfo(ok=False, error=f"{type(err).__name__}: {err}")
            return probe, None
        probe.tls = _tls_info(smtp.sock, verified=context.verify_mode == ssl.CERT_REQUIRED)
        try:
            smtp.ehlo()
        except (OSError, smtplib.SMTPException) as err:
            probe.tls.error = f"EHLO after STARTTLS failed: {type(err).__name__}: {err}"
            return probe, None
        probe.features_tls = sorted(smtp.esmtp_features)
        probe.auth_after_tls = _auth(smtp)
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        return probe, None
    finally:
        smtp.close()


def probe_smtp(address: str, port: int, host_name: str, helo: str, timeout: float = 10.0,
               ca_file: str | None = None) -> SmtpProbe:
    """Banner, EHLO, STARTTLS (the certificate verified if it can be), EHLO again.

    When the certificate does not verify, a second session reads it without
    verification, so that the judge can tell a self-signed certificate for
    the right name from a wrong one.
    """
    probe, verify_error = _smtp_session(address, port, host_name, helo, timeout, _verifying_context(ca_file))
    if verify_error is None:
        return probe
    probe, _ = _smtp_session(address, port, host_name, helo, timeout, _accepting_context())
    if probe.tls is not None:
        probe.tls.verify_error = verify_error
    return probe


def _question_session(address: str, host_name: str, helo: str, timeout: float,
                      steps: list[tuple[str, Callable[[smtplib.SMTP], tuple[int, bytes]]]], question: str) -> SmtpReply:
    """EHLO, then each step; the last step's reply is the answer.

    The session is closed without QUIT: after a refusal Postfix counts an error
    and delays every later reply (smtpd_error_sleep_time), QUIT's included.
    """
    answer = SmtpReply(address, question)
    smtp = _SMTP(address, host_name, local_hostname=helo, timeout=timeout)
    try:
        code, message = smtp.connect(host_name, 25)
        answer.before.append(("banner", code, _text(message)))
        if code != 220:
            answer.error = f"banner {code} {_text(message)}"
            return answer
        code, message = smtp.ehlo()
        answer.before.append((f"EHLO {helo}", code, _text(message)))
        if code != 250:
            answer.error = f"EHLO {helo} refused: {code} {_text(message)}"
            return answer
        for i, (label, step) in enumerate(steps):
            code, message = step(smtp)
            if i == len(steps) - 1:
                answer.reply = (code, _text(message))
            else:
                answer.before.append((label, code, _text(message)))
                if code >= 400:
                    answer.error = f"{label} refused: {code} {_text(message)}"
                    return answer
        if answer.reply and answer.reply[0] < 400:
            smtp.rset()  # never send DATA: nothing is ever relayed
    except (OSError, smtplib.SMTPException) as err:
        answer.error = f"{type(err).__name__}: {err}"
    finally:
        smtp.close()
    return answer


def probe_vrfy(address: str, host_name: str, helo: str, timeout: float = 10.0) -> SmtpReply:
    """VRFY postmaster on port 25 (after EHLO: the guide requires HELO first)."""
    return _question_session(address, host_name, helo, timeout,
                             [("VRFY postmaster", lambda s: s.verify("postmaster"))], "VRFY postmaster")


def probe_relay(address: str, host_name: str, helo: str, recipient: str, timeout: float = 10.0) -> SmtpReply:
    """MAIL FROM:<> and RCPT TO:<recipient> on port 25, unauthenticated; never DATA."""
    steps = [("MAIL FROM:<>", lambda s: s.mail("")), (f"RCPT TO:<{recipient}>", lambda s: s.rcpt(recipient))]
    return _question_session(address, host_name, helo, timeout, steps, f"RCPT TO:<{recipient}>")


class _IMAP4(imaplib.IMAP4):
    def __init__(self, address: str, host_name: str, port: int, timeout: float):
        self._address = address
        super().__init__(host_name, port, timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self._address, self.port), timeout)


class _IMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, address: str, host_name: str, port: int, context: ssl.SSLContext, timeout: float):
        self._address = address
        super().__init__(host_name, port, ssl_context=context, timeout=timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self._address, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def _imap_tls(connect, ca_file: str | None = None) -> TlsInfo:
    """Connect with a verifying context, then (if the certificate does not verify) an accepting one."""
    verify_error = ""
    for context in (_verifying_context(ca_file), _accepting_context()):
        try:
            client = connect(context)
        except ssl.SSLCertVerificationError as err:
            verify_error = err.verify_message or str(err)
            continue
        except (OSError, imaplib.IMAP4.error) as err:
            return TlsInfo(ok=False, error=f"{type(err).__name__}: {err}")
        try:
            return _tls_info(client.sock, context.verify_mode == ssl.CERT_REQUIRED, verify_error)
        finally:
            try:
                client.logout()
            except (OSError, imaplib.IMAP4.error):
                pass
    return TlsInfo(ok=False, error="no TLS handshake")


def probe_imap(address: str, host_name: str, timeout: float = 10.0, ca_file: str | None = None) -> ImapProbe:
    """IMAPS on 993, and STARTTLS on 143."""
    probe = ImapProbe(address)
    probe.imaps = _imap_tls(lambda ctx: _IMAP4_SSL(address, host_name, 993, ctx, timeout), ca_file)

    def starttls(context: ssl.SSLContext):
        client = _IMAP4(address, host_name, 143, timeout)
        probe.capabilities_before_tls = sorted(c.upper() for c in client.capabilities)
        try:
            client.starttls(ssl_context=context)
        except (OSError, imaplib.IMAP4.error):
            try:
                client.shutdown()
            except OSError:
                pass  # a failed handshake has already closed the socket
            raise
        return client

    probe.starttls = _imap_tls(starttls, ca_file)
    return probe


# --- the MTA-STS policy (RFC 8461 3.3) ------------------------------------------------------------


@dataclass
class PolicyFetch:
    """GET https://mta-sts.<domain>/.well-known/mta-sts.txt, as a sending MTA does it."""

    url: str
    address: str = ""  # where it was fetched from
    error: str = ""  # no HTTP reply at all (name, connection, TLS handshake)
    verified: bool = False  # the certificate verified (trust store or --ca-file) for the policy host
    verify_error: str = ""  # why not
    status: int | None = None
    content_type: str = ""  # e.g. text/plain (parameters left out)
    location: str = ""  # a redirect's target (senders do not follow it)
    body: str = ""


@functools.cache
def _policy_context(ca_file: str | None) -> ssl.SSLContext:
    # Senders validate the policy host's certificate like any HTTPS client (RFC 8461 3.3).
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


# RFC 8461 3.3: senders SHOULD limit the policy they read to 64 KiB.
POLICY_LIMIT = 64 * 1024


def fetch_policy(policy_host: str, addresses: list[str], timeout: float = 10.0, ca_file: str | None = None,
                 port: int = 443) -> PolicyFetch:
    """The policy from the first of `addresses` (the policy host's A/AAAA) that answers, certificate checked.

    Nothing is followed: senders must not follow redirects (RFC 8461 3.3).
    """
    url = f"https://{policy_host}/.well-known/mta-sts.txt"
    result = PolicyFetch(url)
    if not addresses:
        result.error = f"{policy_host} has no A or AAAA record"
        return result
    context = _policy_context(ca_file)
    for address in addresses:
        result = PolicyFetch(url, address)
        try:
            raw = socket.create_connection((address, port), timeout=timeout)
        except OSError as err:
            result.error = f"cannot connect to {address} port {port}: {err}"
            continue
        try:
            with context.wrap_socket(raw, server_hostname=policy_host) as tls:
                result.verified = True
                request = (f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {policy_host}\r\n"
                           "User-Agent: mailstack-verify\r\nConnection: close\r\n\r\n")
                tls.sendall(request.encode("ascii"))
                reply = http.client.HTTPResponse(tls)
                reply.begin()
                result.status = reply.status
                result.content_type = reply.headers.get_content_type() if reply.headers.get("Content-Type") else ""
                result.location = reply.headers.get("Location", "")
                result.body = reply.read(POLICY_LIMIT + 1).decode("utf-8", "replace")
        except ssl.SSLCertVerificationError as err:
            result.verified = False
            result.verify_error = err.verify_message or str(err)
            result.error = f"the certificate of {policy_host} at {address} does not verify: {result.verify_error}"
        except (OSError, http.client.HTTPException) as err:
            result.error = f"{type(err).__name__} from {address}: {err}"
        finally:
            raw.close()
        return result
    return result


# --- asking the host over SSH ------------------------------------------------------------------------


class HostUnavailable(Exception):
    """The host could not be asked over SSH; the message says why."""


class HostKeyUnavailable(HostUnavailable):
    """The host's DKIM key could not be read; the message says why."""


def dkim_key_command(cfg: HostConfig, key_path: str) -> str:
    """The shell command that prints the public half of a signing key (as the DKIM unit does)."""
    key = shlex.quote(key_path)
    sudo = "" if cfg.ssh_user == "root" else "sudo -n "
    return f"{sudo}openssl rsa -in {key} -pubout -outform DER 2>/dev/null | base64 -w0"


def ssh_command_argv(cfg: HostConfig, command: str, key_file: Path | None, known_hosts: Path | None,
                     timeout: float) -> list[str]:
    """ssh to the host (the host stack's connection) with its key and its pinned host key, to run `command`.

    Without a key in the stack, ssh's own identities (agent) are used; without
    a pinned host key, the user's known_hosts, and an unknown host is refused.
    It runs `command`, by default the one that prints the key at `key_path`.
    """
    argv = ["ssh"]
    if known_hosts is not None:
        argv += ["-F", "/dev/null", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
    if key_file is not None:
        argv += ["-i", str(key_file), "-o", "IdentitiesOnly=yes"]
    argv += ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(timeout))}",
             "-o", "LogLevel=ERROR", "-p", str(cfg.ssh_port), f"{cfg.ssh_user}@{cfg.connect_host}",
             "--", command]
    return argv


def ssh_argv(cfg: HostConfig, key_path: str, key_file: Path | None, known_hosts: Path | None, timeout: float
             ) -> list[str]:
    """The ssh command line that reads the DKIM key at `key_path` (see ssh_command_argv)."""
    return ssh_command_argv(cfg, dkim_key_command(cfg, key_path), key_file, known_hosts, timeout)


def run_on_host(cfg: HostConfig, command: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """`command` run on the host over SSH; HostUnavailable when ssh itself failed (exit 255, timeout).

    `cfg`: the host stack's config (its SSH connection; `secure:` values count
    as unset offline, so ssh's own identities and known_hosts are used then).
    """
    with tempfile.TemporaryDirectory(prefix="mailstack-verify-") as tmp:
        key_file = known_hosts = None
        if cfg.ssh_private_key is not None:
            key_file = Path(tmp) / "key"
            key_file.touch(mode=0o600)
            text = cfg.ssh_private_key.get_secret_value()
            key_file.write_text(text if text.endswith("\n") else text + "\n")
        if cfg.ssh_host_key is not None:
            known_hosts = Path(tmp) / "known_hosts"
            host_id = cfg.connect_host if cfg.ssh_port == 22 else f"[{cfg.connect_host}]:{cfg.ssh_port}"
            known_hosts.write_text(f"{host_id} {cfg.ssh_host_key.get_secret_value().strip()}\n")
        argv = ssh_command_argv(cfg, command, key_file, known_hosts, timeout)
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=timeout * 3)
        except FileNotFoundError:
            raise HostUnavailable("no ssh client installed") from None
        except subprocess.TimeoutExpired:
            raise HostUnavailable(f"ssh to {cfg.ssh_user}@{cfg.connect_host} timed out") from None
    if result.returncode == 255:
        where = f"{cfg.ssh_user}@{cfg.connect_host}"
        raise HostUnavailable(f"ssh to {where} failed: {result.stderr.strip() or 'exit 255'}")
    return result


def read_host_dkim_key(cfg: HostConfig, key_path: str, timeout: float = 10.0) -> str:
    """The base64 DER public key of the private key at `key_path` on the host, read over SSH."""
    return "".join(_over_ssh(cfg, dkim_key_command(cfg, key_path), key_path, timeout).split())


# --- Postfix's live settings on the host -----------------------------------------------------------


def read_postfix_settings(cfg: HostConfig, names: list[str], timeout: float = 10.0) -> dict[str, str]:
    """`postconf NAME...` on the host, over SSH: each setting's value as Postfix reads it (main.cf or default)."""
    command = "postconf " + " ".join(shlex.quote(name) for name in names)
    result = run_on_host(cfg, command, timeout)
    where = f"{cfg.ssh_user}@{cfg.connect_host}"
    values = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if not sep and line.rstrip().endswith(" ="):
            name, value = line.rstrip()[:-2], ""
        values[name.strip()] = value.strip()
    missing = [name for name in names if name not in values]
    if result.returncode != 0 or missing:
        raise HostUnavailable(f"postconf on {where} exited {result.returncode}: "
                              f"{result.stderr.strip() or 'no ' + ', '.join(missing)}")
    return values


def _over_ssh(cfg: HostConfig, command: str, what: str, timeout: float) -> str:
    """`command`'s stdout on the host; HostKeyUnavailable says why not (`what`: what it reads)."""
    try:
        result = run_on_host(cfg, command, timeout)
    except HostUnavailable as err:
        raise HostKeyUnavailable(str(err)) from None
    if result.returncode != 0 or not result.stdout.strip():
        raise HostKeyUnavailable(f"could not read {what} on {cfg.ssh_user}@{cfg.connect_host} "
                                 f"(exit {result.returncode}): {result.stderr.strip() or 'no output'}")
    return result.stdout


def dkim_signing_command(cfg: HostConfig, domain: str) -> str:
    """Prints `signing <name>` (the domain's line of OpenDKIM's SigningTable) and `key <selector>` per key file."""
    sudo = "" if cfg.ssh_user == "root" else "sudo -n "
    table, keys = shlex.quote(paths.DKIM_SIGNING_TABLE), shlex.quote(paths.domain_dir(domain) + "/dkim")
    script = (
        f"awk -v d={shlex.quote(domain)} '$1 == d {{ print \"signing\", $2 }}' {table}; "
        f'for f in {keys}/*.private; do [ -e "$f" ] && echo "key $(basename "$f" .private)"; done; echo end'
    )
    return f"{sudo}sh -c {shlex.quote(script)}"


def read_host_dkim_signing(cfg: HostConfig, domain: str, timeout: float = 10.0) -> tuple[str | None, list[str]]:
    """The selector the host signs `domain`'s mail with (None: none) and the selectors it has keys of."""
    text = _over_ssh(cfg, dkim_signing_command(cfg, domain), paths.DKIM_SIGNING_TABLE, timeout)
    signing, keys = None, []
    for line in text.splitlines():
        word, _, value = line.partition(" ")
        if word == "signing" and value:
            signing = value.split("._domainkey.", 1)[0]
        elif word == "key" and value:
            keys.append(value)
    return signing, sorted(keys)


# --- the spam filter's state, over SSH ----------------------------------------------------------------

# A milter's first exchange (Sendmail's milter protocol): the MTA offers version 6 with every action and
# protocol step (SMFIC_OPTNEG, 13 bytes: 'O' and three 32-bit numbers); a milter that works answers with
# its own 'O' packet. Perl is on every Debian host (perl-base is essential); no message is sent.
_MILTER_HELLO = (
    "perl -MIO::Socket::INET -e '"
    '$SIG{ALRM} = sub { print "timeout\\n"; exit 0 }; alarm 5; '
    '$s = IO::Socket::INET->new(PeerAddr => $ARGV[0], Timeout => 5) or do { print "refused $!\\n"; exit 0 }; '
    'print $s pack("NaNNN", 13, "O", 6, 0x1ff, 0x1fffff); '
    'if (sysread($s, $b, 5) == 5) { ($l, $c) = unpack("Na", $b); print "answered $c\\n" } else { print "closed\\n" }'
    "'"
)


@dataclass
class SpamFilterState:
    """What the host says of rspamd and Redis: raw outputs, judged by components/verify.py."""

    listeners: list[str]  # "ADDRESS:PORT" of every TCP listener on the host (ss -ltn)
    milter: str  # "answered O", "refused ...", "timeout", "closed"
    redis: str  # redis-cli PING's answer ("PONG")
    stat: str  # rspamc stat's output (learned counts)


def spam_filter_command(cfg: HostConfig, milter: str, redis: str, stat: str) -> str:
    """Prints four sections (== listen/milter/redis/stat ==) for read_spam_filter_state.

    `milter`, `redis`: HOST:PORT; `stat`: the command that prints rspamd's statistics (rspamd.STAT_COMMAND).
    """
    sudo = "" if cfg.ssh_user == "root" else "sudo -n "
    redis_host, _, redis_port = redis.rpartition(":")
    script = (
        "echo '== listen =='; ss -Hltn | awk '{ print $4 }'; "
        f"echo '== milter =='; {_MILTER_HELLO} {shlex.quote(milter)}; "
        f"echo '== redis =='; redis-cli -h {shlex.quote(redis_host)} -p {shlex.quote(redis_port)} ping 2>&1; "
        f"echo '== stat =='; {stat} 2>&1; echo '== end =='"
    )
    return f"{sudo}sh -c {shlex.quote(script)}"


def parse_spam_filter_state(text: str) -> SpamFilterState:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("== ") and line.endswith(" =="):
            current = line[3:-3]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if "end" not in sections:
        raise HostUnavailable("the host's answer was cut short")
    return SpamFilterState(
        listeners=[line.strip() for line in sections.get("listen", []) if line.strip()],
        milter="\n".join(sections.get("milter", [])).strip(),
        redis="\n".join(sections.get("redis", [])).strip(),
        stat="\n".join(sections.get("stat", [])).strip(),
    )


def read_spam_filter_state(cfg: HostConfig, milter: str, redis: str, stat: str,
                           timeout: float = 10.0) -> SpamFilterState:
    """rspamd's and Redis's state on the host, over SSH (HostUnavailable: why it could not be read)."""
    result = run_on_host(cfg, spam_filter_command(cfg, milter, redis, stat), timeout)
    return parse_spam_filter_state(result.stdout)
