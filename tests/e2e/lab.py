"""The mailstack end-to-end lab: a small private Internet in network namespaces.

    LAN 198.51.100.0/24 and 2001:db8:100::/64 (a bridge in namespace msl-lan)
      admin     .5   ::5    the operator's workstation: ssh, DNS updates, pulumi
      mx        .10  ::10   Debian chroot with sshd: the host the program deploys
      peer      .20  ::20   another mail server on the Internet (python clients)
      stranger  .30  ::30   an unknown, unauthenticated sender
      client    .40  ::40   a mail user's machine (submission)
      dns       .53  ::53   Knot DNS, authoritative for the lab's zones
      acme      .60  ::60   Pebble, the lab's ACME CA: https://acme.example.net:14000/dir
      cfapi     .70  ::70   the Cloudflare API stand-in: https://cfapi.example.net/client/v4

acme and cfapi serve HTTPS with certificates of a lab CA made per run, which
mx trusts (like its resolv.conf, that is the lab's network, not the program's
doing); mx's /root/.cloudflare.cfg points python3-cloudflare at the stand-in.
Pebble's issuing roots are in RUN_DIR/pebble-roots.pem (lab.json: ca_root_file).

Nothing in the lab has a route to the machine's own network or beyond; the
one way out is the apt relay from mx to Debian's archive (aptrelay.py).

Use from Python:

    with Lab() as lab:                       # up() ... down()
        lab.ssh("hostname -f")
        lab.dns_update("example.net", "mail", "A", 300, lab.mx.ipv4)

or from a shell (the lab stays up until `down`):

    python -m tests.e2e.lab up      # also deploys the lab's stacks (host-e2e, example.com,
                                    # example.org) and starts the peer; prints and writes
                                    # .lab/lab.json (hosts, domains, users and passwords);
                                    # deployed by the mock deployer (tests/e2e/deploy.py)
    python -m tests.e2e.lab down
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import acmeserver, aptrelay, dnsserver, mxhost, netns, rootfs

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
# Several labs can run side by side under different names (MAILSTACK_LAB=name):
# namespaces, run folder and state file are named after the lab.
LAB_NAME = os.environ.get("MAILSTACK_LAB", "msl")
STATE_FILE = REPO / ".lab" / ("lab.json" if LAB_NAME == "msl" else f"lab-{LAB_NAME}.json")
RUN_DIR = Path(os.environ.get("MAILSTACK_LAB_RUN", f"/var/tmp/mailstack-lab-{LAB_NAME}"))

# Documentation ranges only (RFC 5737, RFC 3849): the machine itself uses others.
LAN_V4 = "198.51.100.0/24"
LAN_V6 = "2001:db8:100::/64"
NS_PREFIX = f"{LAB_NAME}-"
HOST_NUMBERS = {"admin": 5, "mx": 10, "peer": 20, "stranger": 30, "client": 40, "dns": 53}
# The ACME side (acmeserver.py, cfapi.py): kept apart from `hosts` so that the lab state
# of older checkouts (test_migration.py's old layout) still names exactly its own hosts.
SERVICE_NUMBERS = {"acme": 60, "cfapi": 70}
ACME_ZONE = "example.net"  # acme.example.net, cfapi.example.net
CFAPI_PATH = "/client/v4"


@dataclass
class Host:
    name: str  # role in the lab: mx, dns, ...
    netns: str  # network namespace, for `ip netns exec`
    ipv4: str
    ipv6: str


def lan_host(name: str) -> Host:
    n = {**HOST_NUMBERS, **SERVICE_NUMBERS}[name]
    return Host(name, NS_PREFIX + name, f"198.51.100.{n}", f"2001:db8:100::{n}")


class LabError(RuntimeError):
    pass


class Lab:
    """The lab's hosts and the operations tests need on them.

    mx_hostname: the mail host's name (mx's /etc/hostname), mail.example.net:
    it lies in none of the mail domains, as on a host serving several.
    zones: forward zones the DNS server is authoritative for: the two mail
    domains (example.com, example.org) and example.net, the zone of the mail
    host's name and of the peer's. The reverse zones of the LAN are always served.
    """

    def __init__(self, mx_hostname: str = "mail.example.net",
                 zones: tuple[str, ...] = ("example.com", "example.org", "example.net"), run_dir: Path = RUN_DIR):
        self.mx_hostname = mx_hostname
        self.forward_zones = list(dict.fromkeys(zones))
        self.reverse_zones = [dnsserver.reverse_zone_v4(LAN_V4), dnsserver.reverse_zone_v6(LAN_V6)]
        self.run_dir = run_dir
        self.hosts = {name: lan_host(name) for name in HOST_NUMBERS}
        self.services = {name: lan_host(name) for name in SERVICE_NUMBERS}  # acme, cfapi
        self.lan_netns = NS_PREFIX + "lan"
        self.ns_name = f"ns1.{self.forward_zones[0]}"
        self.mx_ssh_private_key = run_dir / "id_ed25519"
        self.known_hosts_file = run_dir / "known_hosts"
        self.mx_host_key = ""  # "ssh-ed25519 AAAA...", set by up()
        self.tsig_secret = ""
        self.dnssec_anchors: dict[str, list[str]] = {}  # signed zone -> its DS records (tests/e2e/dnssec.py)
        self.pids: dict[str, int] = {}  # processes the lab started: relay, forwarder, knotd, sshd, pebble, cfapi, resolver
        self.timings: dict[str, float] = {}

    # --- hosts --------------------------------------------------------------------------

    @property
    def mx(self) -> Host:
        return self.hosts["mx"]

    @property
    def dns(self) -> Host:
        return self.hosts["dns"]

    @property
    def admin(self) -> Host:
        return self.hosts["admin"]

    @property
    def acme(self) -> Host:
        return self.services["acme"]

    @property
    def cfapi(self) -> Host:
        return self.services["cfapi"]

    @property
    def acme_hostname(self) -> str:
        return f"acme.{ACME_ZONE}"

    @property
    def cfapi_hostname(self) -> str:
        return f"cfapi.{ACME_ZONE}"

    @property
    def acme_directory(self) -> str:
        """Pebble's ACME directory URL, as the host stack's acme_directory names it."""
        return acmeserver.directory_url(self.acme_hostname)

    @property
    def cfapi_base_url(self) -> str:
        return f"https://{self.cfapi_hostname}{CFAPI_PATH}"

    @property
    def lab_ca_file(self) -> Path:
        """The lab CA's certificate: it signs acme's and cfapi's HTTPS certificates."""
        return self.run_dir / "lab-ca" / "ca.pem"

    @property
    def ca_root_file(self) -> Path:
        """Pebble's issuing roots (PEM): what a client trusts to validate certificates mx got over ACME."""
        return self.run_dir / "pebble-roots.pem"

    @property
    def cfapi_call_log(self) -> Path:
        """One JSON line per call the Cloudflare stand-in answered (no token in it)."""
        return self.run_dir / "cfapi-calls.log"

    @property
    def mx_root(self) -> Path:
        """The mx chroot as seen from the machine (its per-run overlay)."""
        return self.run_dir / "rootfs"

    # --- up and down --------------------------------------------------------------------

    def up(self, log=print) -> "Lab":
        """Build (or reuse) the rootfs, create the namespaces, start DNS, relay and sshd, then Pebble and
        the Cloudflare stand-in."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, mounts, chroot)")
        if any(netns.exists(h.netns) for h in self.all_hosts()) or netns.exists(self.lan_netns):
            log("a previous lab is still up: taking it down first")
            self.down(log=log)
        try:
            self._stage("rootfs (cache or debootstrap)", rootfs.build_rootfs, log)
            self._stage("network", self._make_network, log)
            self._stage("mx rootfs copy (overlay)", self._make_mx_root, log)
            self._stage("dns start", self._start_dns, log)
            self._stage("dnssec (example.net signed, validating resolver)", self._secure_dns, log)
            self._stage("apt relay start", self._start_apt_relay, log)
            self._stage("mx start (sshd)", self._start_mx, log)
            self._stage("acme + cfapi start", self._start_acme, log)
        except BaseException:
            log("lab up failed: tearing down what was made")
            self.down(log=log)
            raise
        self.write_state()
        return self

    def down(self, log=print) -> None:
        """Stop the lab's processes by pid, unmount the chroot, remove the namespaces and run dir.

        Every process still inside a lab network namespace was started by the
        lab (directly or through its sshd), so all of them are stopped.
        """
        for host in self.all_hosts():
            netns.kill_pids(netns.pids(host.netns))
        relay = self.pids.get("apt_relay") or _state_pids().get("apt_relay")
        if relay and _is_our_relay(relay):
            netns.kill_pids([relay])
        for host in self.all_hosts():
            netns.delete(host.netns)
        netns.delete(self.lan_netns)
        if self.run_dir.exists():
            self._keep_logs()
            rootfs.remove_tree(self.run_dir)
        STATE_FILE.unlink(missing_ok=True)
        self.pids = {}

    def _keep_logs(self) -> None:
        """Copy the daemons' logs to .lab/logs/ before the run dir goes: they explain failures."""
        keep = STATE_FILE.parent / "logs"
        keep.mkdir(parents=True, exist_ok=True)
        for log_file in self.run_dir.glob("*.log"):
            shutil.copy(log_file, keep / log_file.name)

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def _stage(self, name: str, step, log) -> None:
        started = time.monotonic()
        step()
        self.timings[name] = round(time.monotonic() - started, 2)
        log(f"  {name}: {self.timings[name]:.1f}s")

    def all_hosts(self) -> list[Host]:
        return [*self.hosts.values(), *self.services.values()]

    def _make_network(self) -> None:
        netns.create_lan(self.lan_netns)
        for host in self.all_hosts():
            netns.create(host.netns)
            netns.plug_host(self.lan_netns, host.netns, f"p-{host.name}", [f"{host.ipv4}/24", f"{host.ipv6}/64"])
            netns.set_resolver(host.netns, [self.dns.ipv4, self.dns.ipv6])

    def _make_mx_root(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o711)  # knot (a system user) must reach its directory below
        rootfs.mount_overlay(rootfs.cached_rootfs(), self.run_dir)
        public_key = mxhost.make_client_key(self.mx_ssh_private_key)
        mxhost.write_files(self.mx_root, self.mx_hostname, {"ipv4": self.mx.ipv4, "ipv6": self.mx.ipv6},
                           [self.dns.ipv4, self.dns.ipv6], public_key)
        self.mx_host_key = mxhost.make_host_key(self.mx_root)
        names = ",".join([self.mx.ipv4, self.mx.ipv6, self.mx_hostname])
        self.known_hosts_file.write_text(f"{names} {self.mx_host_key}\n")

    def _start_dns(self) -> None:
        dnsserver.ensure_knot()
        self.tsig_secret = dnsserver.new_tsig_secret()
        dns_dir = self.run_dir / "dns"
        conf = dnsserver.write_config(
            dns_dir, [self.dns.ipv4, self.dns.ipv6, "127.0.0.1", "::1"],
            self.forward_zones + self.reverse_zones, self.ns_name,
            {"A": self.dns.ipv4, "AAAA": self.dns.ipv6}, self.tsig_secret)
        self._spawn("knotd", ["ip", "netns", "exec", self.dns.netns, "knotd", "-c", str(conf)])
        self._wait_for("DNS server", lambda: self.dns_query(self.forward_zones[0], "SOA") != [])

    def _secure_dns(self) -> None:
        from . import dnssec

        self.dnssec_anchors = dnssec.secure_the_lab(self)

    def _start_apt_relay(self) -> None:
        sock = self.run_dir / "apt-relay.sock"
        relay = [sys.executable, aptrelay.__file__]
        self._spawn("apt-relay", [*relay, "proxy", str(sock), *rootfs.archive_hosts()])
        self._wait_for("apt relay socket", sock.exists)
        self._spawn(
            "apt-forwarder", ["ip", "netns", "exec", self.mx.netns, *relay, "forward", str(sock), "127.0.0.1:3142"])

    def _start_mx(self) -> None:
        self._spawn("mx-sshd", mxhost.boot_argv(self.mx.netns, self.mx_root, self.mx_hostname))
        self._wait_for("sshd on mx", lambda: self.can_connect("admin", self.mx.ipv4, 22))

    def _start_acme(self) -> None:
        """Pebble on acme, the Cloudflare stand-in on cfapi, their names in DNS, mx's trust in the lab CA.

        The slow steps overlap: mx's update-ca-certificates (about 2s) and the
        two daemons' start run while the names are published; Pebble's root is
        fetched last (it is also the proof that Pebble answers).
        """
        from .stack import ACME_CLOUDFLARE_TOKEN  # stack.py imports this module

        acmeserver.ensure_pebble()
        ca_dir = self.lab_ca_file.parent
        acmeserver.make_lab_ca(ca_dir, LAB_NAME)
        mxhost.write_acme_files(self.mx_root, self.lab_ca_file.read_text(), self.cfapi_base_url)
        trust_argv, trust_env = self._in("mx", ["update-ca-certificates"])
        trust = subprocess.Popen(trust_argv, env=trust_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        acme_cert, acme_key = acmeserver.issue_server_cert(ca_dir, self.acme_hostname, [self.acme.ipv4, self.acme.ipv6])
        cfapi_cert, cfapi_key = acmeserver.issue_server_cert(ca_dir, self.cfapi_hostname,
                                                             [self.cfapi.ipv4, self.cfapi.ipv6])
        pebble_conf = acmeserver.write_pebble_config(self.run_dir / "pebble", acme_cert, acme_key)
        self._spawn("pebble", acmeserver.pebble_argv(self.acme.netns, pebble_conf, self.dns.ipv4),
                    env=acmeserver.PEBBLE_ENV)

        # The token and the TSIG key go in a file only root reads, never on a command line.
        cfapi_conf = self.run_dir / "cfapi.json"
        cfapi_conf.touch(mode=0o600)
        cfapi_conf.write_text(json.dumps({
            "cert": str(cfapi_cert), "key": str(cfapi_key), "port": 443, "token": ACME_CLOUDFLARE_TOKEN,
            "zones": self.forward_zones + self.reverse_zones, "nameservers": [self.ns_name],
            "dns_server": self.dns.ipv4, "call_log": str(self.cfapi_call_log),
            "tsig": {"name": dnsserver.TSIG_KEY_NAME, "algorithm": dnsserver.TSIG_ALGORITHM,
                     "secret": self.tsig_secret}}))
        self._spawn("cfapi", ["ip", "netns", "exec", self.cfapi.netns, sys.executable, str(E2E_DIR / "cfapi.py"),
                              str(cfapi_conf)])

        if ACME_ZONE in self.forward_zones:
            self._dns_send(ACME_ZONE, add=[[f"{h}.", 300, rtype, getattr(host, family)]
                                           for h, host in ((self.acme_hostname, self.acme),
                                                           (self.cfapi_hostname, self.cfapi))
                                           for rtype, family in (("A", "ipv4"), ("AAAA", "ipv6"))])

        self._wait_for("Pebble's management port", self._fetch_pebble_root)
        self._wait_for("the Cloudflare stand-in", lambda: self.can_connect("admin", self.cfapi.ipv4, 443))
        output, _ = trust.communicate(timeout=60)
        if trust.returncode != 0:
            raise LabError(f"update-ca-certificates on mx failed: {output}")

    def _fetch_pebble_root(self) -> bool:
        """Append Pebble's current issuing root to pebble-roots.pem (from the admin host, trusting the lab CA)."""
        root = self.run_python("admin", ["-c", acmeserver.FETCH_ROOT, str(self.lab_ca_file),
                                         acmeserver.root_url(self.acme_hostname)], timeout=15).stdout
        if "BEGIN CERTIFICATE" not in root:
            return False
        known = self.ca_root_file.read_text() if self.ca_root_file.exists() else ""
        if root.strip() not in known:
            with open(self.ca_root_file, "a") as f:
                f.write(root if root.endswith("\n") else root + "\n")
        return True

    def acme_down(self) -> None:
        """Pebble unreachable from every other lab host, at once: a route `unreachable` to its addresses
        in each of them, so a client fails straight away ("No route to host") instead of waiting out
        neighbour discovery on every retry (certbot needed 50s to give up on a link that was down).
        Pebble keeps running: its roots stay the same."""
        for host in self._not_acme():
            netns.ip("route", "replace", "unreachable", f"{self.acme.ipv4}/32", ns=host.netns)
            netns.ip("-6", "route", "replace", "unreachable", f"{self.acme.ipv6}/128", ns=host.netns)
        if self.can_connect("admin", self.acme.ipv4, acmeserver.ACME_PORT, timeout=1.0):
            raise LabError("Pebble is still reachable after acme_down")

    def acme_up(self) -> None:
        """Pebble reachable again (the same process, the same roots); returns once it answers."""
        for host in self._not_acme():
            netns.ip("route", "del", "unreachable", f"{self.acme.ipv4}/32", ns=host.netns, check=False)
            netns.ip("-6", "route", "del", "unreachable", f"{self.acme.ipv6}/128", ns=host.netns, check=False)
        self._wait_for("Pebble after acme_up",
                       lambda: self.can_connect("admin", self.acme.ipv4, acmeserver.ACME_PORT, timeout=1.0))

    def _not_acme(self) -> list[Host]:
        return [h for h in self.all_hosts() if h.name != self.acme.name]

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start a long-running process, detached from us (own session, output to a log file)."""
        log_file = open(self.run_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/", env={**os.environ, **(env or {})})
        log_file.close()
        self.pids[name.replace("-", "_")] = proc.pid
        self.write_state()  # so that `down` finds it even if this run is killed
        return proc.pid

    def _wait_for(self, what: str, ready, timeout: float = 20.0) -> None:
        """Poll ready() until it is true; a probe that fails (raises) counts as not ready yet."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (subprocess.SubprocessError, OSError, ValueError):
                pass
            time.sleep(0.2)
        raise LabError(f"{what} not ready after {timeout:.0f}s; see the logs in {STATE_FILE.parent / 'logs'}")

    # --- running things in the lab ---------------------------------------------------------

    def run_in(self, host: str, argv: list[str], input: str | None = None, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess:
        """Run argv on a lab host, without SSH. On mx it runs inside the chroot."""
        full_argv, env = self._in(host, argv)
        return subprocess.run(full_argv, input=input, capture_output=True, text=True, check=check, timeout=timeout,
                              env=env)

    def _in(self, host: str, argv: list[str]) -> tuple[list[str], dict[str, str] | None]:
        """(argv, env) that run argv on a lab host (on mx: in its chroot, with a clean environment)."""
        if host == "mx":
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
            return [*mxhost.enter_argv(self.pids["mx_sshd"]), *argv], env
        return ["ip", "netns", "exec", self._host(host).netns, *argv], None

    def run_python(self, host: str, args: list[str], input: str | None = None, check: bool = True,
                   timeout: float = 120) -> subprocess.CompletedProcess:
        """Run this venv's python on a host other than mx, with the repo importable (tests.e2e...)."""
        if host == "mx":
            raise LabError("mx is a chroot: use ssh() or run_in('mx', ['python3', ...])")
        argv = ["ip", "netns", "exec", self._host(host).netns, sys.executable, *args]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return subprocess.run(argv, input=input, capture_output=True, text=True, check=check,
                              timeout=timeout, env=env, cwd=REPO)

    def _host(self, name: str) -> Host:
        return self.hosts[name] if name in self.hosts else self.services[name]

    def ssh_argv(self, command: str | None = None, address: str | None = None) -> list[str]:
        """The ssh command line (run from the admin namespace) for root on mx, host key pinned."""
        argv = ["ip", "netns", "exec", self.admin.netns, "ssh", "-F", "/dev/null",
                "-i", str(self.mx_ssh_private_key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_file}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR", f"root@{address or self.mx.ipv4}"]
        return argv + (["--", command] if command else [])

    def ssh(self, command: str, stdin: str | None = None, check: bool = True, timeout: float = 900,
            address: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command on mx as root over SSH (as the deployment does)."""
        return subprocess.run(self.ssh_argv(command, address), input=stdin if stdin is not None else "",
                              capture_output=True, text=True, check=check, timeout=timeout)

    def can_connect(self, from_host: str, address: str, port: int, timeout: float = 3.0) -> bool:
        """True when a TCP connection from from_host to address:port succeeds."""
        return self._nsclient(from_host, "connect", host=address, port=port, timeout=timeout)["ok"]

    # --- DNS ----------------------------------------------------------------------------------

    def dns_update(self, zone: str, name: str, rtype: str, ttl: int, content: str, replace: bool = False) -> None:
        """Publish one record, as the program registers it.

        name: relative to zone ("mail", "@", "mail._domainkey") or absolute
        ("mail.example.com" or with a trailing dot). content: presentation
        syntax, e.g. '10 mail.example.com' for MX (names in content are
        absolute, with or without the trailing dot, as Cloudflare takes them), '"v=DKIM1; k=rsa; " "p=MIIB..."'
        for a TXT of two strings (each string at most 255 bytes).
        replace=True replaces the whole RRset (name, type) instead of adding to it.
        """
        self._dns_send(zone, add=[[self._absolute(zone, name), ttl, rtype, content]], replace=replace)

    def dns_delete(self, zone: str, name: str, rtype: str | None = None, content: str | None = None) -> None:
        """Delete one record (content given), an RRset (rtype given) or every record at name."""
        self._dns_send(zone, delete=[[self._absolute(zone, name), rtype, content]])

    def dns_query(self, name: str, rtype: str, from_host: str = "admin") -> list[str]:
        """The answer's records in presentation form, asked of the lab DNS from a lab host."""
        return [r["text"] for r in self._dns_answer(name, rtype, from_host)["records"]]

    def dns_txt(self, name: str, from_host: str = "admin") -> list[list[str]]:
        """Each TXT record at name as its list of character-strings."""
        return [r["strings"] for r in self._dns_answer(name, "TXT", from_host)["records"]]

    def _dns_answer(self, name: str, rtype: str, from_host: str) -> dict:
        return self._nsclient(from_host, "query", server=self.dns.ipv4, name=name, rtype=rtype)

    def _dns_send(self, zone: str, add=(), delete=(), replace: bool = False) -> None:
        key = {"name": dnsserver.TSIG_KEY_NAME, "algorithm": dnsserver.TSIG_ALGORITHM, "secret": self.tsig_secret}
        answer = self._nsclient("admin", "update", server=self.dns.ipv4, zone=zone, key=key,
                                add=list(add), delete=list(delete), replace=replace)
        if answer["rcode"] != "NOERROR":
            raise LabError(f"DNS update of {zone} refused: {answer['rcode']} (add={add}, delete={delete})")

    @staticmethod
    def _absolute(zone: str, name: str) -> str:
        zone = zone.rstrip(".")
        if name.endswith("."):
            return name
        if name == "@":
            return zone + "."
        if name == zone or name.endswith("." + zone):
            return name + "."
        return f"{name}.{zone}."

    def _nsclient(self, on_host: str, command: str, **args) -> dict:
        out = self.run_python(on_host, [str(E2E_DIR / "nsclient.py"), command, json.dumps(args)]).stdout
        return json.loads(out)

    # --- state ----------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "mx_hostname": self.mx_hostname,
            "zones": self.forward_zones + self.reverse_zones,
            "hosts": {name: asdict(h) for name, h in self.hosts.items()},
            "services": {name: asdict(h) for name, h in self.services.items()},
            "lan_netns": self.lan_netns,
            "mx_root": str(self.mx_root),
            "mx_ssh_private_key": str(self.mx_ssh_private_key),
            "mx_host_key": self.mx_host_key,
            "known_hosts_file": str(self.known_hosts_file),
            "ssh_command": self.ssh_argv(),
            "dns_server": self.dns.ipv4,
            "tsig": {"name": dnsserver.TSIG_KEY_NAME, "algorithm": dnsserver.TSIG_ALGORITHM,
                     "secret": self.tsig_secret},
            # Zones the lab signed and their DS records: trust anchors for a validating resolver.
            "dnssec_anchors": self.dnssec_anchors,
            # ACME: Pebble's directory, the issuing roots to validate mx's certificates with,
            # the Cloudflare stand-in (its token is stack.ACME_CLOUDFLARE_TOKEN) and its call log.
            "acme_directory": self.acme_directory,
            "ca_root_file": str(self.ca_root_file),
            "lab_ca_file": str(self.lab_ca_file),
            "cloudflare_api": self.cfapi_base_url,
            "cfapi_call_log": str(self.cfapi_call_log),
            "pids": self.pids,
            "run_dir": str(self.run_dir),
            "timings": self.timings,
        }

    def write_state(self) -> None:
        STATE_FILE.parent.mkdir(exist_ok=True)
        STATE_FILE.write_text(json.dumps(self.state(), indent=2) + "\n")
        STATE_FILE.chmod(0o600)  # holds the TSIG secret

    @classmethod
    def from_state(cls) -> "Lab":
        """The lab described by .lab/lab.json (a lab started by `python -m tests.e2e.lab up`)."""
        state = json.loads(STATE_FILE.read_text())
        lab = cls(state["mx_hostname"], tuple(z for z in state["zones"] if not z.endswith(".arpa")),
                  Path(state["run_dir"]))
        lab.mx_host_key, lab.tsig_secret = state["mx_host_key"], state["tsig"]["secret"]
        lab.dnssec_anchors = state.get("dnssec_anchors", {})
        lab.pids, lab.timings = state["pids"], state["timings"]
        return lab


def _state_pids() -> dict:
    try:
        return json.loads(STATE_FILE.read_text()).get("pids", {})
    except (OSError, ValueError):
        return {}


def _is_our_relay(pid: int) -> bool:
    """Guard against a recycled pid: only the relay we started is ever stopped."""
    try:
        return "aptrelay.py" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def _deploy_world(lab: Lab) -> dict:
    """The peer's world and the lab's stacks deployed on mx; what a person needs to use them."""
    from .deploy import LabStacks
    from .stack import DOMAIN_SETTINGS, HOST_STACK, HOSTNAME, POSTMASTER_ADDRESS, mailboxes_of
    from .world import PEER_NAME, make_world, sink_dir

    make_world(lab, detached=True)  # runs until `down` stops the processes in the lab's namespaces
    deployer = _deployer_for_up()
    if deployer == "engine":
        from .engine.deployer import EngineLabStacks

        stacks = EngineLabStacks.engine(lab)
    else:
        stacks = LabStacks.mock(lab)
    started = time.monotonic()
    stacks.up()
    return {
        "lab": LAB_NAME,
        "deployer": deployer,
        # `pulumi` by hand: one project and backend for every stack (`--stack NAME` chooses).
        **({"engine": stacks.host.engine.by_hand()} if deployer == "engine" else {}),
        "mx_hostname": lab.mx_hostname,
        "hosts": {name: asdict(h) for name, h in lab.hosts.items()},
        "host_stack": {"stack": HOST_STACK, "hostname": HOSTNAME, "postmaster_address": POSTMASTER_ADDRESS},
        "domains": {
            domain: {
                "stack": domain,
                **settings,
                "users": [{"login": m.address, "password": m.password, "addresses": list(m.addresses)}
                          for m in mailboxes_of(domain)],
            }
            for domain, settings in DOMAIN_SETTINGS.items()
        },
        "peer": {"name": PEER_NAME, "address": lab.hosts["peer"].ipv4, "received_mail": str(sink_dir(lab))},
        "ssh_command": lab.ssh_argv(),
        "deployment": {
            "seconds": round(time.monotonic() - started, 1),
            "stacks": {d.stack: {"seconds": stacks.seconds.get("host" if d is stacks.host else d.stack),
                                 "units": {run.name: round(run.seconds, 1) for run in d.runs}}
                       for d in stacks.all},
        },
    }


def _how_to_reach(lab: Lab, summary: dict) -> str:
    """What to try once the lab is up: mail in, mail out over IMAP."""
    name = "" if LAB_NAME == "msl" else f"MAILSTACK_LAB={LAB_NAME} "
    py = f"{REPO}/.venv/bin/python {E2E_DIR}/mailclient.py"
    lines = [f"lab {LAB_NAME!r} is up, deployed by the {summary['deployer']} deployer; state in {STATE_FILE}",
             f"  a shell on mx:        {name}python -m tests.e2e.lab ssh"]
    for domain, about in summary["domains"].items():
        user = about["users"][0]
        send = json.dumps({"host": lab.mx.ipv4, "mail_from": "someone@example.net", "rcpt_to": [user["login"]],
                           "message": "Subject: hello\r\n\r\nHello from the peer.\r\n"})
        imap = json.dumps({"host": lab.mx.ipv4, "user": user["login"], "password": user["password"]})
        lines += [f"  {domain}: send mail from peer:  ip netns exec {lab.hosts['peer'].netns} {py} send '{send}'",
                  f"  {domain}: read it over IMAP:    ip netns exec {lab.hosts['client'].netns} {py} imap '{imap}'"]
    lines.append(f"  ACME (Pebble):        {lab.acme_directory}; validate mx's certificates with {lab.ca_root_file}")
    if summary.get("engine"):
        lines.append(f"  pulumi by hand:       {summary['engine']['shell']}")
        lines.append("                        pulumi preview --diff --stack example.com    # then: pulumi up, "
                     "pulumi stack output")
    lines.append(f"  take it down:         {name}python -m tests.e2e.lab down")
    return "\n".join(lines)


def _deployer_for_up() -> str:
    """`engine` (a real `pulumi up` of each stack) when the CLI is built, else `mock`; MAILSTACK_LAB_DEPLOYER chooses."""
    from .engine.deployer import deployer_choice

    deployer = deployer_choice(default="auto")
    if deployer == "mock":
        why = ("MAILSTACK_LAB_DEPLOYER=mock" if os.environ.get("MAILSTACK_LAB_DEPLOYER")
               else "no Pulumi CLI is built (scripts/setup builds one)")
        print(f"deploying with the mock deployer (tests/e2e/deploy.py): {why}", file=sys.stderr)
    else:
        print("deploying with the real `pulumi up` (tests/e2e/engine/)", file=sys.stderr)
    return deployer


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    if command == "up":
        lab = Lab().up()
        try:
            summary = _deploy_world(lab)
        except BaseException:
            if os.environ.get("MAILSTACK_LAB_KEEP") == "1":
                print(f"deployment failed; the lab stays up (MAILSTACK_LAB_KEEP=1): {STATE_FILE}", file=sys.stderr)
            else:
                print("deployment failed: taking the lab down", file=sys.stderr)
                lab.down()
            raise
        STATE_FILE.write_text(json.dumps({**lab.state(), **summary}, indent=2) + "\n")  # 0600 (write_state)
        print(json.dumps(summary, indent=2))
        print(_how_to_reach(lab, summary))
    elif command == "down":
        lab = Lab.from_state() if STATE_FILE.exists() else Lab()
        lab.down()
        print("lab is down")
    elif command == "ssh":
        return subprocess.call(Lab.from_state().ssh_argv(" ".join(argv[1:]) or None))
    else:
        print("usage: python -m tests.e2e.lab up|down|ssh [command]")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
