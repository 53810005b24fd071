"""The MTA-STS units' scripts, run for real against folders of the test's own.

A domain's `mta-sts` unit (its certificate from the host's mailstack-tls, its
policy and server block staged, `nginx -t`, swapped, nginx reloaded) and its
delete command; the host's `web` unit (nginx only if mailstack installed it).
/etc/mailstack, /etc/nginx, the lock, nginx's pid file and mailstack-tls are
moved under the test's folder; nginx, service and apt-get are shims that log.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from components import paths, units
from components.config import load_config
from components.hostfacts import HostFacts
from components.records import domain_mta_sts_policy
from components.services import web

DOMAIN = {"mailstack:domain": "example.com", "mailstack:host_stack": "host-mail", "mailstack:users": [{"name": "alice"}]}
HOST = {
    "mailstack:hostname": "mail.example.net",
    "mailstack:ipv4": ["192.0.2.10"],
    "mailstack:ipv6": ["2001:db8::10"],
    "mailstack:postmaster_address": "alice@example.com",
}
HOST_OWNER = "mailstack/host-mail"
OWNER = "mailstack/example.com"
FACTS = HostFacts(host_id=HOST_OWNER, hostname="mail.example.net", addresses=["192.0.2.10", "2001:db8::10"],
                  tls="acme")


def cfg(**settings):
    return load_config({**DOMAIN, **{f"mailstack:{k}": v for k, v in settings.items()}})


def _inner(command: str) -> str:
    import shlex

    argv = shlex.split(command)
    assert argv[:2] == ["bash", "-c"], command
    return argv[2]


class Host:
    """A host in a folder: /etc/mailstack, /etc/nginx, the tool and shims that log what they are asked."""

    def __init__(self, root: Path):
        self.root = root
        self.log = root / "calls.log"
        (root / "etc/mailstack").mkdir(parents=True)
        (root / "etc/mailstack/host").write_text(HOST_OWNER + "\n")
        (root / "etc/nginx/conf.d").mkdir(parents=True)
        (root / "etc/nginx/nginx.conf").write_text("events {}\nhttp { include /etc/nginx/conf.d/*.conf; }\n")
        (root / "etc/nginx/conf.d/mailstack.conf").write_text("include /etc/nginx/mailstack/*.conf;\n")
        (root / "run").mkdir()
        self.shims = root / "shims"
        self.shims.mkdir()
        log = self.log
        self.shim("mailstack-tls", f'echo "mailstack-tls $*" >>"{log}"\n'
                                   f'if [ -s "{root}/tls.fail" ]; then cat "{root}/tls.fail" >&2; exit 1; fi')
        # nginx -t: logs the config it was given and what the staged server block says; fails on request.
        self.shim("nginx", f'echo "nginx $*" >>"{log}"\n'
                           'for a; do case "$a" in *nginx.conf) conf="$a";; esac; done\n'
                           f'[ -z "${{conf:-}}" ] || cat "$(dirname "$conf")/mailstack/example.com.conf" >"{root}/checked.conf" 2>/dev/null || true\n'
                           f'if [ -s "{root}/nginx.fail" ]; then cat "{root}/nginx.fail" >&2; exit 1; fi')
        # A daemon started with the lock's descriptor open would hold the lock for ever (found in the lab).
        self.shim("service", f'echo "service $*" >>"{log}"\n'
                             f'if [ -e /proc/$$/fd/9 ]; then echo "service: fd 9 (the lock) is open" >>"{log}"; fi')
        self.shim("apt-get", f'echo "apt-get $*" >>"{log}"')

    def shim(self, name: str, body: str) -> None:
        path = self.shims / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def nginx_running(self) -> None:
        (self.root / "run/nginx.pid").write_text(f"{os.getpid()}\n")

    def script(self, text: str) -> str:
        r = str(self.root)
        return (text.replace('mkdir -p "$STAGE"/etc\n', f'mkdir -p "$STAGE"{r}/etc\n')  # the parent of /etc/nginx
                .replace(web.TLS_TOOL, f"{self.shims}/mailstack-tls")
                .replace(paths.MAILSTACK_DIR, f"{r}/etc/mailstack")
                .replace(web.NGINX_DIR, f"{r}/etc/nginx")
                .replace(web.LOCK, f"{r}/run/nginx.lock")
                .replace("/run/nginx.pid", f"{r}/run/nginx.pid")
                .replace("/var/tmp/mailstack-", f"{r}/stage-"))

    def run(self, text: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{self.shims}:{os.environ['PATH']}"}
        return subprocess.run(["bash", "-c", self.script(text)], text=True, capture_output=True, env=env)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def _unit(c=None) -> str:
    return units.site_unit(c or cfg(), OWNER, FACTS, web.MTA_STS).stdin


def test_the_unit_gets_the_certificate_checks_the_staged_config_swaps_and_reloads(host):
    host.nginx_running()
    result = host.run(_unit())
    assert result.returncode == 0, result.stderr
    root = host.root
    calls = host.calls()
    assert not [c for c in calls if "fd 9" in c], "no daemon inherits the lock"
    assert calls[0] == (f"mailstack-tls issue mta-sts.example.com {root}/etc/mailstack/tls/mta-sts.example.com/key.pem "
                        f"{root}/etc/mailstack/tls/mta-sts.example.com/fullchain.pem mta-sts.example.com")
    assert calls[1].startswith(f"nginx -t -q -c {root}/stage-mta-sts-example.com.")  # the staged tree, not the live one
    assert calls[1].endswith("/.nginx-t/nginx/nginx.conf")
    assert calls[2:] == ["service nginx reload"]
    policy = (root / "etc/mailstack/domains/example.com/mta-sts.txt").read_text()
    assert policy == "version: STSv1\nmode: testing\nmx: mail.example.net\nmax_age: 604800\n"
    served = (root / "etc/nginx/mailstack/example.com.conf").read_text()
    assert (root / "checked.conf").read_text() == served, "nginx -t read the block that was then swapped in"
    assert "listen 192.0.2.10:443 ssl;" in served and "listen [2001:db8::10]:443 ssl;" in served
    assert not list(root.glob("stage-*")), "the stage is gone"

    # Again with nothing changed: the certificate is checked again, nothing is reloaded.
    host.log.unlink()
    assert host.run(_unit()).returncode == 0
    assert [c.split()[0] for c in host.calls()] == ["mailstack-tls", "nginx"]


def test_nginx_is_started_when_it_is_not_running(host):
    result = host.run(_unit())
    assert result.returncode == 0, result.stderr
    assert host.calls()[-1] == "service nginx start"


def test_a_refused_config_swaps_nothing_and_reloads_nothing(host):
    host.nginx_running()
    (host.root / "nginx.fail").write_text('nginx: [emerg] unknown directive "bogus" in example.com.conf:3\n')
    result = host.run(_unit())
    assert result.returncode == 1
    assert 'unknown directive "bogus"' in result.stderr
    assert not (host.root / "etc/nginx/mailstack/example.com.conf").exists()
    assert not (host.root / "etc/mailstack/domains/example.com/mta-sts.txt").exists()
    assert not [c for c in host.calls() if c.startswith("service")]


def test_no_certificate_no_policy_host(host):
    host.nginx_running()
    (host.root / "tls.fail").write_text("mailstack-tls: mta-sts.example.com: the ACME server refused the order\n")
    result = host.run(_unit())
    assert result.returncode == 1
    assert "the ACME server refused the order" in result.stderr
    assert [c.split()[0] for c in host.calls()] == ["mailstack-tls"], "no check, no swap, no reload"
    assert not (host.root / "etc/nginx/mailstack/example.com.conf").exists()


def test_a_host_not_converged_with_acme_is_refused_with_the_fix(host):
    (host.root / "etc/nginx/conf.d/mailstack.conf").unlink()
    result = host.run(_unit())
    assert result.returncode == 1
    assert "run `pulumi up` for the host stack with mailstack:tls acme first" in result.stderr
    assert host.calls() == []


def test_a_new_mode_is_swapped_in_and_reloaded(host):
    host.nginx_running()
    assert host.run(_unit()).returncode == 0
    host.log.unlink()
    assert host.run(_unit(cfg(mta_sts_mode="enforce", mta_sts_max_age=86400))).returncode == 0
    assert (host.root / "etc/mailstack/domains/example.com/mta-sts.txt").read_text() == (
        "version: STSv1\nmode: enforce\nmx: mail.example.net\nmax_age: 86400\n")
    assert host.calls()[-1] == "service nginx reload"


def test_the_delete_command_removes_the_server_block_policy_and_lineage_and_nothing_else(host):
    host.nginx_running()
    assert host.run(_unit()).returncode == 0
    (host.root / "etc/mailstack/domains/example.com/mailboxes").write_text("alice@example.com\n")
    (host.root / "etc/nginx/mailstack/example.org.conf").write_text("# another domain's\n")
    host.log.unlink()
    result = host.run(_inner(units.site_remove_command(cfg(), OWNER, FACTS, web.MTA_STS)))
    assert result.returncode == 0, result.stderr
    assert not (host.root / "etc/nginx/mailstack/example.com.conf").exists()
    assert not (host.root / "etc/mailstack/domains/example.com/mta-sts.txt").exists()
    assert (host.root / "etc/mailstack/domains/example.com/mailboxes").exists()
    assert (host.root / "etc/nginx/mailstack/example.org.conf").exists()
    assert host.calls() == ["service nginx reload", "mailstack-tls remove mta-sts.example.com"]


def test_another_domain_stack_cannot_remove_the_policy_host(host):
    assert host.run(_unit()).returncode == 0
    result = host.run(_inner(units.site_remove_command(cfg(), "mailstack/intruder", FACTS, web.MTA_STS)))
    assert result.returncode == 1 and "belongs to domain stack mailstack/example.com" in result.stderr
    assert (host.root / "etc/nginx/mailstack/example.com.conf").exists()


# --- the host's web unit -----------------------------------------------------------------------------


def _web(host: Host) -> str:
    return units.web_unit(load_config(HOST), HOST_OWNER).stdin


def test_an_nginx_mailstack_did_not_install_is_refused_untouched(host):
    # The shim `nginx` is on PATH: an nginx is installed, and there is no marker.
    before = (host.root / "etc/nginx/conf.d/mailstack.conf").read_text()
    result = host.run(_web(host))
    assert result.returncode == 1
    assert "nginx is installed on mail.example.net, and not by mailstack" in result.stderr
    assert host.calls() == []
    assert (host.root / "etc/nginx/conf.d/mailstack.conf").read_text() == before


def test_the_web_unit_stages_checks_and_serves_the_default_server(host):
    (host.root / "etc/mailstack/nginx").write_text("nginx installed by mailstack\n")
    host.nginx_running()
    result = host.run(_web(host))
    assert result.returncode == 0, result.stderr
    conf = (host.root / "etc/nginx/conf.d/mailstack.conf").read_text()
    assert "listen 192.0.2.10:443 ssl default_server;" in conf and "ssl_reject_handshake on;" in conf
    # The file swapped in names the live folder (the stage's retargeted copy was only for nginx -t).
    assert f"include {host.root}/etc/nginx/mailstack/*.conf;" in conf and "stage-" not in conf
    assert [c.split()[0] for c in host.calls()] == ["nginx", "service"]


def test_the_policy_is_the_pure_functions_text():
    c = cfg(mta_sts_mode="enforce")
    assert web.domain_files(c, FACTS)[0].content == domain_mta_sts_policy(c, FACTS)
