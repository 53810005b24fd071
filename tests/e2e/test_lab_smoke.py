"""Proof that the lab itself works, before any mail test relies on it."""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from .lab import LAN_V4, LAN_V6, LabError


def test_ssh_to_mx_with_pinned_host_key(lab):
    result = lab.ssh("hostname -f; id -u")
    assert result.stdout.split() == [lab.mx_hostname, "0"]
    # The pinned key is the one sshd serves: the known_hosts file has exactly it.
    assert lab.known_hosts_file.read_text().split()[1:] == lab.mx_host_key.split()


def test_ssh_to_mx_over_ipv6(lab):
    assert lab.ssh("echo ok", address=lab.mx.ipv6).stdout.strip() == "ok"


def test_ssh_refuses_a_different_host_key(lab, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = tmp_path / "known_hosts"
    other.write_text(f"{lab.mx.ipv4} {(tmp_path / 'other.pub').read_text()}")
    argv = [a.replace(str(lab.known_hosts_file), str(other)) for a in lab.ssh_argv("true")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 255


def test_mx_starts_with_no_mail_packages(lab):
    out = lab.ssh("dpkg-query -W -f '${Package} ${Status}\\n' postfix dovecot-core opendkim 2>&1 || true").stdout
    assert "install ok installed" not in out


def test_daemon_started_over_ssh_does_not_hold_the_session(lab):
    # start-stop-daemon --background, as sysvinit scripts do; the session must end at once.
    command = (
        "service ssh status; "
        "start-stop-daemon --start --background --make-pidfile --pidfile /run/lab-sleeper.pid "
        "--exec /bin/sleep -- 600; echo started"
    )
    result = lab.ssh(command, timeout=30)
    assert "sshd is running" in result.stdout and "started" in result.stdout
    lab.ssh("start-stop-daemon --stop --pidfile /run/lab-sleeper.pid --remove-pidfile")


def test_apt_install_through_the_relay(lab):
    result = lab.ssh("apt-get update -q && apt-get install -y -q --no-install-recommends file && file -b /bin/dash",
                     timeout=600)
    assert "ELF" in result.stdout


def test_relay_refuses_hosts_other_than_the_archive(lab):
    # The relay answers 403 itself; it never connects anywhere for such a request.
    probe = (
        "import urllib.request, urllib.error\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': 'http://127.0.0.1:3142'}))\n"
        "try:\n"
        "    opener.open('http://example.org/', timeout=10)\n"
        "    print('allowed')\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    assert lab.ssh("python3", stdin=probe).stdout.strip() == "403"


def test_mx_resolves_forward_and_reverse_names_from_lab_dns(lab):
    lab.dns_update("example.com", "www", "A", 300, lab.hosts["peer"].ipv4)
    lab.dns_update("example.com", "www", "AAAA", 300, lab.hosts["peer"].ipv6)
    lab.dns_update(lab.reverse_zones[0], "20", "PTR", 300, "peer.example.net.")
    v6_ptr = ipaddress.ip_address(lab.hosts["peer"].ipv6).reverse_pointer
    lab.dns_update(lab.reverse_zones[1], v6_ptr + ".", "PTR", 300, "peer.example.net.")

    forward = lab.ssh("getent ahosts www.example.com").stdout
    assert lab.hosts["peer"].ipv4 in forward and lab.hosts["peer"].ipv6 in forward
    assert lab.ssh(f"getent hosts {lab.hosts['peer'].ipv4}").stdout.split()[1] == "peer.example.net"
    assert lab.ssh(f"getent hosts {lab.hosts['peer'].ipv6}").stdout.split()[1] == "peer.example.net"

    lab.dns_delete("example.com", "www")
    assert lab.dns_query("www.example.com", "A") == []


def test_txt_record_keeps_its_strings(lab):
    # A name no deployment uses: the lab is shared with the mail tests.
    lab.dns_update("example.net", "smoke._domainkey", "TXT", 300, '"v=DKIM1; k=rsa; " "p=MIIBIjANBgkq"')
    assert lab.dns_txt("smoke._domainkey.example.net") == [["v=DKIM1; k=rsa; ", "p=MIIBIjANBgkq"]]
    # Seen from another lab host too: the same two strings.
    assert lab.dns_txt("smoke._domainkey.example.net", from_host="peer") == [["v=DKIM1; k=rsa; ", "p=MIIBIjANBgkq"]]
    lab.dns_delete("example.net", "smoke._domainkey")


def test_dns_update_without_the_key_is_refused(lab):
    saved = lab.tsig_secret
    lab.tsig_secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    try:
        with pytest.raises((LabError, subprocess.CalledProcessError)):
            lab.dns_update("example.com", "evil", "A", 300, "198.51.100.99")
    finally:
        lab.tsig_secret = saved
    assert lab.dns_query("evil.example.com", "A") == []


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_peer_reaches_mx_over_tcp(lab, family):
    assert lab.can_connect("peer", getattr(lab.mx, family), 22)


def test_lab_hosts_have_no_way_out(lab):
    # No default route in any lab host: 192.0.2.1 (the machine's network) is unreachable.
    for host in lab.hosts.values():
        for target in ("192.0.2.1", "fd00::1"):
            route = subprocess.run(["ip", "-n", host.netns, "route", "get", target], capture_output=True, text=True)
            assert route.returncode != 0 and "unreachable" in route.stderr, (host.name, target, route.stdout)


def test_root_namespace_has_no_link_into_the_lab(lab):
    # Checked with routing decisions only: a probe from here would leave through
    # the machine's own uplink, which the lab must never send traffic to.
    v4, v6 = ipaddress.ip_network(LAN_V4), ipaddress.ip_network(LAN_V6)
    addresses = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout)
    for link in addresses:
        for a in link.get("addr_info", []):
            assert ipaddress.ip_address(a["local"]) not in (v4 if a["family"] == "inet" else v6), link["ifname"]
    for target in (lab.mx.ipv4, lab.mx.ipv6):
        route = subprocess.run(["ip", "-j", "route", "get", target], capture_output=True, text=True)
        if route.returncode != 0:
            continue  # unreachable from here: fine
        (decision,) = json.loads(route.stdout)
        assert decision.get("gateway"), f"{target} would be on-link in the root namespace: {decision}"
        assert not decision["dev"].startswith("p-")


def test_run_in_mx_enters_the_chroot(lab):
    assert lab.run_in("mx", ["hostname"]).stdout.strip() == lab.mx_hostname
    assert lab.run_in("mx", ["cat", "/etc/resolv.conf"]).stdout.split()[1] == lab.dns.ipv4


def test_other_lab_hosts_resolve_through_lab_dns(lab):
    lab.dns_update("example.net", "peer", "A", 300, lab.hosts["peer"].ipv4)
    out = lab.run_in("client", ["getent", "hosts", "peer.example.net"]).stdout
    assert out.split()[0] == lab.hosts["peer"].ipv4


def test_names_in_record_content_are_absolute(lab):
    lab.dns_update("example.com", "@", "MX", 300, "10 mail.example.com")
    assert lab.dns_query("example.com", "MX") == ["10 mail.example.com."]
    lab.dns_delete("example.com", "@", "MX", "10 mail.example.com.")
    assert lab.dns_query("example.com", "MX") == []
