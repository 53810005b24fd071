"""The `mx` host: a Debian chroot in its own network, mount and UTS namespaces.

It plays the freshly installed Debian server that the deployment configures
over SSH. What makes it behave like one:

* its own mount namespace, so /proc, /dev, /run and /tmp mounted for it are
  invisible to the machine and vanish with it;
* a fresh, small /dev (null, zero, full, random, urandom, tty, a private
  devpts with ptmx); the machine's /dev is never bound in;
* its own UTS namespace, so `hostname` says mail.example.net;
* /etc/resolv.conf pointing at the lab DNS server;
* /usr/sbin/policy-rc.d exiting 101 (set in the cached rootfs): installing a
  package never starts its daemon. There is no init system, so the deployment
  starts daemons itself with `service NAME start|restart|reload` (the
  sysvinit scripts in /etc/init.d; `service` uses them because /run/systemd
  does not exist);
* nothing detaches daemons for the deployment: a daemon started over SSH
  keeps the session open unless its stdio is detached, and the program's own
  scripts must (and do) start daemons with stdin, stdout and stderr away
  from the session, as they must on a real host;
* apt goes through the relay on 127.0.0.1:3142 (see aptrelay.py);
* sshd on port 22, root login with the lab's key only; its host key is made
  per run and pinned by the test.
* rsyslog (in the cached rootfs, without its kernel log) writes the daemons'
  lines to /var/log/mail.log and auth.log, as on a Debian host with rsyslog:
  fail2ban's jails read them there (there is no journald).
* it trusts the lab CA (acmeserver.py), which signs the HTTPS certificates of
  the lab's ACME server and Cloudflare API stand-in, and root's
  ~/.cloudflare.cfg points python3-cloudflare (certbot's Cloudflare plugin)
  at the stand-in: on a real host neither file exists.

The namespaces live as long as the sshd started by `boot_script`; that sshd is
the process everything else in mx descends from.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

APT_PROXY = "http://127.0.0.1:3142"

# Runs as: ip netns exec NS unshare --mount --uts --propagation private sh -s ROOT HOSTNAME
BOOT_SCRIPT = r"""
set -eu
root=$1
hostname "$2"

# Kernel file systems, private to this mount namespace.
mount -t proc proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"

# A fresh /dev: only the device nodes a server needs.
mount -t tmpfs -o mode=755,size=4m,nosuid,noexec mx-dev "$root/dev"
mknod -m 666 "$root/dev/null"    c 1 3
mknod -m 666 "$root/dev/zero"    c 1 5
mknod -m 666 "$root/dev/full"    c 1 7
mknod -m 666 "$root/dev/random"  c 1 8
mknod -m 666 "$root/dev/urandom" c 1 9
mknod -m 666 "$root/dev/tty"     c 5 0
mkdir -m 755 "$root/dev/pts"
mkdir -m 1777 "$root/dev/shm"
# newinstance: a devpts of our own, the machine's ptys stay out of sight.
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev mx-shm "$root/dev/shm"
ln -s /proc/self/fd   "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"

# /run and /tmp start empty on every boot, as on a real host.
mount -t tmpfs -o mode=755,nosuid,nodev,size=64m mx-run "$root/run"
mkdir -m 755 "$root/run/sshd"
mkdir -m 1777 "$root/run/lock"
mount -t tmpfs -o mode=1777,nosuid,nodev mx-tmp "$root/tmp"

# The daemons log as on a Debian host with rsyslog: /dev/log, then /var/log/mail.log and
# auth.log, which fail2ban reads. rsyslogd detaches itself; it runs until the lab's down.
if [ -x "$root/usr/sbin/rsyslogd" ]; then
  chroot "$root" /usr/sbin/rsyslogd </dev/null
fi

# -D: stay in the foreground (we hold its pid); -e: log to stderr (the lab keeps it).
exec chroot "$root" /usr/sbin/sshd -D -e
"""

SSHD_CONFIG = """\
# mailstack lab: root logs in with the lab's key, nothing else.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def write_files(root: Path, hostname: str, addresses: dict[str, str], nameservers: list[str],
                authorized_key: str) -> None:
    """Files that make the chroot the lab's mail host; written before it boots."""
    short = hostname.split(".")[0]
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/hosts").write_text(
        "127.0.0.1 localhost\n"
        "::1 localhost ip6-localhost ip6-loopback\n"
        f"{addresses['ipv4']} {hostname} {short}\n"
        f"{addresses['ipv6']} {hostname} {short}\n"
    )
    (root / "etc/resolv.conf").write_text("".join(f"nameserver {ns}\n" for ns in nameservers))
    mtab = root / "etc/mtab"
    if mtab.is_symlink() or mtab.exists():
        mtab.unlink()
    mtab.symlink_to("../proc/self/mounts")

    (root / "etc/apt/apt.conf.d/01mailstack-lab").write_text(
        "// mailstack lab: the only way to the archive is the relay (tests/e2e/aptrelay.py).\n"
        f'Acquire::http::Proxy "{APT_PROXY}";\n'
        "// The relay closes the connection after every file; do not pipeline.\n"
        'Acquire::http::Pipeline-Depth "0";\n'
        'Acquire::Languages "none";\n'
    )

    # rsyslog (rootfs.INCLUDE) without its kernel log: mx shares the machine's kernel,
    # and reading /proc/kmsg would take the machine's own kernel messages away.
    rsyslog_conf = root / "etc/rsyslog.conf"
    if rsyslog_conf.exists():
        text = rsyslog_conf.read_text()
        rsyslog_conf.write_text(re.sub(r'(?m)^module\(load="imklog"\)', r'# mailstack lab: \g<0>', text))

    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(authorized_key.strip() + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    (root / "etc/ssh/sshd_config.d/mailstack-lab.conf").write_text(SSHD_CONFIG)


LAB_CA_NAME = "mailstack-lab-ca.crt"


def write_acme_files(root: Path, lab_ca_pem: str, cloudflare_base_url: str) -> None:
    """The lab CA among the CAs to trust (update-ca-certificates, run in mx, adds it to
    /etc/ssl/certs/ca-certificates.crt, which python3-requests uses), and python3-cloudflare's
    base URL. Test infrastructure: the program itself writes neither."""
    ca_dir = root / "usr/local/share/ca-certificates"
    ca_dir.mkdir(parents=True, exist_ok=True)
    (ca_dir / LAB_CA_NAME).write_text(lab_ca_pem)
    (root / "root/.cloudflare.cfg").write_text(f"[CloudFlare]\nbase_url = {cloudflare_base_url}\n")


def make_host_key(root: Path) -> str:
    """A fresh ed25519 host key for this run; returns the public key line."""
    key = root / "etc/ssh/ssh_host_ed25519_key"
    for path in (key, key.with_suffix(".pub")):
        path.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mx-lab-host", "-f", str(key)], check=True)
    kind, blob, *_ = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    return f"{kind} {blob}"


def make_client_key(path: Path) -> str:
    """The key the tests (and the deployment) log in with; returns the public key line."""
    path.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailstack-lab", "-f", str(path)], check=True)
    return Path(str(path) + ".pub").read_text().strip()


def boot_argv(netns: str, root: Path, hostname: str) -> list[str]:
    """The command that enters mx's namespaces, mounts its file systems and runs sshd."""
    return ["ip", "netns", "exec", netns,
            "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", BOOT_SCRIPT, "mx-boot", str(root), hostname]


def enter_argv(sshd_pid: int) -> list[str]:
    """Prefix that runs a command inside mx (namespaces and chroot of the given sshd pid)."""
    return ["nsenter", "--target", str(sshd_pid), "--mount", "--uts", "--net", "--root", "--wd"]
