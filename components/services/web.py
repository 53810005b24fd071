"""nginx: the web server of the MTA-STS policies (RFC 8461 3.3) and the mail clients' settings files.

Only with mailstack:tls acme (a policy host needs a certificate senders
trust). Two levels, like the mail tables:

- host level (the host stack's `web` unit): nginx-light, installed by
  mailstack itself (an nginx someone else installed is refused, never
  touched), Debian's default site disabled, and `CONF` (conf.d/mailstack.conf):
  a default server on 443 of the host's addresses that refuses every
  handshake (`ssl_reject_handshake`), and the include of `SITES_DIR`;
- domain level (a domain stack's `mta-sts` unit): the policy file in the
  domain's folder and the server block `SITES_DIR/<domain>.conf` for
  mta-sts.<domain>, with the certificate lineage `mta-sts.<domain>` that
  the host's `mailstack-tls` obtains and renews (templates/tls/);
- domain level too (a domain stack's `autoconfig` unit, mailstack:autoconfig):
  Thunderbird's settings file `config-v1.1.xml` in the domain's folder and the
  server block `SITES_DIR/<domain>.autoconfig.conf` for autoconfig.<domain>,
  with its own lineage `autoconfig.<domain>`, made and removed the same way.

Both stage their files beside a copy of /etc/nginx, check the staged config
with `nginx -t`, swap, and start or reload nginx (templates/web/).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from components import paths
from components.config import DomainConfig, HostConfig
from components.hostfacts import HostFacts
from components.records import (
    Record,
    autoconfig_host,
    autoconfig_records,
    domain_mta_sts_policy,
    mta_sts_host,
    mta_sts_records,
    publishes_autoconfig,
    publishes_mta_sts,
)
from components.render import HostFile, host_file, render_template

NAME = "web"
PACKAGES = ("nginx-light",)

NGINX_DIR = "/etc/nginx"
CONF = f"{NGINX_DIR}/conf.d/mailstack.conf"
# One server block per domain stack, included by CONF.
SITES_DIR = f"{NGINX_DIR}/mailstack"
CONFIG_DIRS = [NGINX_DIR]
# Says mailstack installed nginx here (and may change and reload it).
MARKER = f"{paths.MAILSTACK_DIR}/nginx"
# One nginx change at a time: the host stack's and every domain stack's units.
LOCK = "/run/lock/mailstack-nginx.lock"

# The host's ACME tool (templates/tls/mailstack-tls.sh.j2).
TLS_TOOL = paths.MAILSTACK_TLS

APPLY = "web/apply.sh.j2"


def listen(addresses: list[str]) -> list[str]:
    """nginx `listen` addresses on 443: 192.0.2.10:443, [2001:db8::10]:443."""
    return [f"[{a}]:443" if ipaddress.ip_address(a).version == 6 else f"{a}:443" for a in addresses]


def host_files(cfg: HostConfig) -> list[HostFile]:
    """The host level: conf.d/mailstack.conf."""
    return [host_file(CONF, "web/mailstack.conf.j2", host_name=cfg.host_name, listen=listen(cfg.addresses),
                      sites_dir=SITES_DIR)]


# --- a domain's policy host -------------------------------------------------------------------


def lineage(domain: str) -> str:
    """The certificate lineage of the policy host, as `mailstack-tls` names it."""
    return mta_sts_host(domain)


def lineage_key(domain: str) -> str:
    return f"{paths.tls_lineage_dir(lineage(domain))}/key.pem"


def lineage_fullchain(domain: str) -> str:
    return f"{paths.tls_lineage_dir(lineage(domain))}/fullchain.pem"


def policy_file(domain: str) -> str:
    """The policy nginx serves, in the domain's own folder."""
    return f"{paths.domain_dir(domain)}/mta-sts.txt"


def server_conf(domain: str) -> str:
    return f"{SITES_DIR}/{domain}.conf"


def domain_files(cfg: DomainConfig, host: HostFacts) -> list[HostFile]:
    """The policy file and the server block of mta-sts.<domain>."""
    domain = cfg.domain
    policy = HostFile(path=policy_file(domain), content=domain_mta_sts_policy(cfg, host))
    server = host_file(
        server_conf(domain),
        "web/mta-sts.conf.j2",
        domain=domain,
        policy_host=mta_sts_host(domain),
        listen=listen(host.addresses),
        fullchain=lineage_fullchain(domain),
        key=lineage_key(domain),
        policy_file=policy_file(domain),
    )
    return [policy, server]


# --- checks ---------------------------------------------------------------------------------

# nginx names its includes by absolute path (/etc/nginx/conf.d/*.conf,
# /etc/nginx/mailstack/*.conf), so `nginx -t` reads a copy of the staged tree
# made to name itself: every /etc/nginx/ in its config files points into the
# copy (links in it, e.g. sites-enabled/default, become files there). The
# staged files themselves, which are swapped in, and the live tree stay as
# they are.
_NGINX_TEST = (
    f'( t="$STAGE/.nginx-t"; rm -rf "$t"; mkdir -p "$t"; cp -a "$STAGE{NGINX_DIR}" "$t/nginx"; '
    'find "$t/nginx" \\( -type f -o -type l \\) \\( -name "*.conf" -o -path "*/sites-enabled/*" \\) -print0 '
    f'| xargs -0 -r sed -i "s#{NGINX_DIR}/#$t/nginx/#g"; '
    'if ! out=$(nginx -t -q -c "$t/nginx/nginx.conf" 2>&1); then '
    'printf "%s\\n" "${out:-nginx -t: failed without a message}" >&2; exit 1; fi )'
)

CHECKS: list[tuple[str | None, str]] = [("nginx -t", _NGINX_TEST)]


# --- scripts --------------------------------------------------------------------------------


def install_script(cfg: HostConfig) -> str:
    """The host web unit's first part: nginx installed by mailstack, or the unit refuses."""
    return render_template("web/install.sh.j2", host_name=cfg.host_name, marker=MARKER, packages=PACKAGES,
                           sites_dir=SITES_DIR, lock=LOCK)


def _issue(policy_host: str, what: str) -> str:
    """A certificate for `policy_host` (its own lineage, of the same name) from the host's `mailstack-tls`."""
    return render_template("web/domain.sh.j2", policy_host=policy_host, what=what, tool=TLS_TOOL, host_conf=CONF,
                           lineage=policy_host, key=f"{paths.tls_lineage_dir(policy_host)}/key.pem",
                           fullchain=f"{paths.tls_lineage_dir(policy_host)}/fullchain.pem", lock=LOCK)


def issue_script(cfg: DomainConfig) -> str:
    """A domain's policy host: its certificate, from the host's `mailstack-tls`."""
    return _issue(mta_sts_host(cfg.domain), "the MTA-STS policy host")


def remove_script(cfg: DomainConfig) -> str:
    """The domain's MTA-STS unit's delete command: its server block, policy and lineage go."""
    domain = cfg.domain
    return render_template("web/remove.sh.j2", domain=domain, policy_host=mta_sts_host(domain),
                           server_conf=server_conf(domain), policy_file=policy_file(domain), tool=TLS_TOOL,
                           lineage=lineage(domain), lock=LOCK, what="an MTA-STS policy",
                           why="mta_sts_mode none", file_kind="policy",
                           served="MTA-STS policy")


# --- a domain's client settings (Thunderbird's autoconfig file) --------------------------------

# What mail clients are offered (components/records.py CLIENT_SERVICES): IMAP over TLS first.
AUTOCONFIG_INCOMING = ({"port": 993, "socket": "SSL"}, {"port": 143, "socket": "STARTTLS"})
AUTOCONFIG_OUTGOING = ({"port": 587, "socket": "STARTTLS"},)
# The two places Thunderbird asks (https://autoconfig.<domain>/mail/config-v1.1.xml first).
AUTOCONFIG_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")


def autoconfig_file(domain: str) -> str:
    """The settings file nginx serves, in the domain's own folder."""
    return f"{paths.domain_dir(domain)}/config-v1.1.xml"


def autoconfig_conf(domain: str) -> str:
    return f"{SITES_DIR}/{domain}.autoconfig.conf"


def autoconfig_xml(cfg: DomainConfig, host: HostFacts) -> str:
    """Thunderbird's config-v1.1.xml for the domain: the host's IMAP (993, 143) and submission (587) ports."""
    return render_template("web/autoconfig.xml.j2", domain=cfg.domain, hostname=host.hostname,
                           incoming=AUTOCONFIG_INCOMING, outgoing=AUTOCONFIG_OUTGOING)


def autoconfig_files(cfg: DomainConfig, host: HostFacts) -> list[HostFile]:
    """The settings file and the server block of autoconfig.<domain>."""
    domain, name = cfg.domain, autoconfig_host(cfg.domain)
    settings = HostFile(path=autoconfig_file(domain), content=autoconfig_xml(cfg, host))
    server = host_file(
        autoconfig_conf(domain),
        "web/autoconfig.conf.j2",
        domain=domain,
        server_name=name,
        listen=listen(host.addresses),
        fullchain=f"{paths.tls_lineage_dir(name)}/fullchain.pem",
        key=f"{paths.tls_lineage_dir(name)}/key.pem",
        settings_file=autoconfig_file(domain),
    )
    return [settings, server]


def autoconfig_issue_script(cfg: DomainConfig) -> str:
    return _issue(autoconfig_host(cfg.domain), "the mail client settings host")


def autoconfig_remove_script(cfg: DomainConfig) -> str:
    """The autoconfig unit's delete command: its server block, settings file and lineage go."""
    domain, name = cfg.domain, autoconfig_host(cfg.domain)
    return render_template("web/remove.sh.j2", domain=domain, policy_host=name, server_conf=autoconfig_conf(domain),
                           policy_file=autoconfig_file(domain), tool=TLS_TOOL, lineage=name, lock=LOCK,
                           what="mail client settings", why="autoconfig false", file_kind="settings",
                           served="mail client settings file")


def apply_script() -> str:
    return render_template(APPLY)


# --- a domain's sites, as its stack's units see them ----------------------------------------


@dataclass(frozen=True)
class Site:
    """One of a domain's HTTPS names on the host's nginx, served by a unit of the domain stack.

    The unit (`<stack>-<name>`, components/domain.py) gets the certificate,
    stages `files`, checks them with `nginx -t`, swaps and reloads; its delete
    command runs `remove`. Its records follow it, so nobody is sent to the
    name before it serves. `publishes` says whether the domain has the site
    on this host (both need a certificate others trust: tls acme).
    """

    name: str
    files: Callable[[DomainConfig, HostFacts], list[HostFile]]
    issue: Callable[[DomainConfig], str]
    remove: Callable[[DomainConfig], str]
    publishes: Callable[[DomainConfig, HostFacts], bool]
    records: Callable[[DomainConfig, HostFacts], list[Record]]


MTA_STS = Site("mta-sts", domain_files, issue_script, remove_script, publishes_mta_sts, mta_sts_records)
AUTOCONFIG = Site("autoconfig", autoconfig_files, autoconfig_issue_script, autoconfig_remove_script,
                  publishes_autoconfig, autoconfig_records)
SITES = (MTA_STS, AUTOCONFIG)
