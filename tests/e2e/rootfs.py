"""The Debian root filesystem that the lab's `mx` host runs in.

Built once with debootstrap and cached as a plain directory; every lab run
puts a throw-away overlay on top of it, so a run starts from the pristine
cache (no mail packages installed) and leaves the cache untouched.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

CACHE_DIR = Path(os.environ.get("MAILSTACK_LAB_CACHE", "/var/cache/mailstack-lab"))
SUITE = "bookworm"
# openssh-server: the deployment reaches the host over SSH, like a real one.
# python3: Ansible-style tools and our own checks expect it on a Debian host.
# rsyslog: the daemons log to /var/log/mail.log and auth.log as on a Debian host with
# rsyslog (the lab has no journald), which fail2ban reads (mxhost.py starts it).
INCLUDE = "openssh-server,python3,ca-certificates,rsyslog"

# Debian's archive keyring: the stanzas signed with it are Debian's own archive
# (this machine's sources.list.d also lists third-party repositories).
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
FALLBACK_MIRROR = "http://deb.debian.org/debian"


def debian_sources(sources_dir: Path = Path("/etc/apt/sources.list.d")) -> list[dict[str, str]]:
    """The Debian archive stanzas of this machine's deb822 `.sources` files.

    Each is a dict of the stanza's fields (URIs, Suites, Components, ...).
    Only stanzas signed by Debian's archive keyring are kept.
    """
    stanzas = []
    for path in sorted(sources_dir.glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
            if fields.get("URIs") and fields.get("Signed-By") == DEBIAN_KEYRING:
                stanzas.append(fields)
    return stanzas


def debian_mirror() -> str:
    """The main Debian mirror URL this machine's apt uses (not the security one)."""
    for stanza in debian_sources():
        for uri in stanza["URIs"].split():
            if not uri.rstrip("/").endswith("-security"):
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def archive_hosts() -> list[str]:
    """Host names of Debian's archive: the only hosts the apt relay will reach."""
    hosts = {urlparse(uri).hostname for s in debian_sources() for uri in s["URIs"].split()}
    hosts.discard(None)
    return sorted(hosts) or [urlparse(FALLBACK_MIRROR).hostname]


def chroot_sources_text() -> str:
    """A sources.list for the chroot: the same Debian archive this machine uses."""
    stanzas = debian_sources()
    if not stanzas:
        return f"deb {FALLBACK_MIRROR} {SUITE} main\n"
    lines = []
    for s in stanzas:
        for uri in s["URIs"].split():
            for suite in s.get("Suites", SUITE).split():
                lines.append(f"deb {uri} {suite} {s.get('Components', 'main')}")
    return "\n".join(lines) + "\n"


def cached_rootfs() -> Path:
    # Named by what debootstrap put in it: a cache built before a package joined INCLUDE is not used.
    return CACHE_DIR / f"rootfs-{SUITE}-{hashlib.sha256(INCLUDE.encode()).hexdigest()[:8]}"


def apt_install_on_machine(*packages: str) -> None:
    """Install Debian packages on this machine without letting them start daemons.

    knot's package would otherwise start a knotd in the machine's own namespace;
    the lab runs its own. A policy-rc.d we add is removed again afterwards.
    """
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                       check=True, env=env)
    finally:
        if added_policy:
            policy.unlink()


def ensure_debootstrap() -> None:
    if not shutil.which("debootstrap"):
        apt_install_on_machine("debootstrap")


def build_rootfs(log=print) -> Path:
    """Return the cached rootfs directory, running debootstrap first if there is none.

    debootstrap writes into a temporary directory that is renamed only when it
    succeeded, so an interrupted build is never mistaken for a finished one.
    """
    final = cached_rootfs()
    if (final / "usr/sbin/sshd").exists():
        return final
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # Two labs starting at once (MAILSTACK_LAB) build the cache once: the
    # second waits for the first's lock, then finds the finished rootfs.
    with open(cached_rootfs().with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "usr/sbin/sshd").exists():
            return final
        return _debootstrap(final, log)


def _debootstrap(final: Path, log) -> Path:
    ensure_debootstrap()
    partial = cached_rootfs().with_suffix(".partial")
    if partial.exists():
        remove_tree(partial)
    started = time.monotonic()
    log(f"debootstrap {SUITE} into {partial} from {debian_mirror()} (takes a few minutes)")
    # In a private mount namespace: the /proc and /sys that debootstrap mounts
    # into the target vanish with it, even when it is interrupted.
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private",
         "debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(partial), debian_mirror()],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    prepare_cached_rootfs(partial)
    partial.rename(final)
    log(f"debootstrap done in {time.monotonic() - started:.0f}s")
    return final


def prepare_cached_rootfs(root: Path) -> None:
    """One-time changes that every run wants, done before the cache is sealed."""
    # Host keys are made per run (the test pins the run's key), so none is cached.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Packages must not start daemons while apt installs them: there is no init
    # here, and the deployment starts them itself with `service NAME start`.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# mailstack lab: never start daemons from maintainer scripts.\nexit 101\n")
    policy.chmod(0o755)
    (root / "etc/apt/sources.list").write_text(chroot_sources_text())
    # Downloaded .debs of the bootstrap are not needed any more.
    subprocess.run(["chroot", str(root), "apt-get", "clean"], check=True)


def unmount_under(path: Path) -> None:
    """Lazily unmount every mount at or below path, deepest first."""
    prefix = str(path.resolve())
    with open("/proc/self/mounts") as f:
        targets = [line.split()[1].replace("\\040", " ") for line in f]
    below = [t for t in targets if t == prefix or t.startswith(prefix + "/")]
    for target in reversed(below):
        subprocess.run(["umount", "--lazy", target], check=False, capture_output=True)


def remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount (a bound /dev or /proc is never emptied)."""
    unmount_under(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def mount_overlay(lower: Path, run_dir: Path) -> Path:
    """A writable copy of `lower` for one run: an overlay whose changes go to run_dir."""
    upper, work, merged = run_dir / "rootfs-upper", run_dir / "rootfs-work", run_dir / "rootfs"
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "overlay", "mx-rootfs", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
        check=True,
    )
    return merged


if __name__ == "__main__":
    print(build_rootfs())
