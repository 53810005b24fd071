"""The host's TLS key and certificate, which Postfix and Dovecot both serve.

Host level only, at the paths the config names (mailstack:smtpd_tls_cert_file,
mailstack:smtpd_tls_key_file), from one of three sources (mailstack:tls):

- self-signed: the unit (templates/tls/tls.sh.j2) makes a pair once; an
  existing pair is kept;
- files: the operator's own pair; the unit checks that both are there and
  belong together, and never makes or replaces either;
- acme: the unit installs mailstack-tls (templates/tls/mailstack-tls.sh.j2),
  its ACME settings, the Cloudflare token (from the unit's stdin, never a
  command line) and the renewal timer, then runs `mailstack-tls issue host ...`:
  certbot --csr signs a CSR of a key mailstack keeps, by DNS-01 through
  Cloudflare. Domain stacks call the same command for their own names.
"""

from __future__ import annotations

from components import paths
from components.config import HostConfig
from components.render import render_template

NAME = "tls"
# openssl makes the keys the units generate (TLS here, DKIM's public half).
PACKAGES = ("openssl", "ca-certificates")
# tls: acme only: Debian's certbot and its Cloudflare DNS plugin (python3-cloudflare).
ACME_PACKAGES = ("certbot", "python3-certbot-dns-cloudflare")


def packages(cfg: HostConfig) -> tuple[str, ...]:
    """What the TLS unit needs beyond PACKAGES, for this config's mode."""
    return ACME_PACKAGES if cfg.tls == "acme" else ()


def mailstack_tls_script() -> str:
    """/usr/local/sbin/mailstack-tls: issue, renew, remove, status (the same on every host)."""
    return render_template("tls/mailstack-tls.sh.j2")


def acme_conf(cfg: HostConfig) -> str:
    """/etc/mailstack/tls/acme.conf: the ACME settings, as shell-quoted KEY=VALUE lines."""
    return render_template("tls/acme.conf.j2", cfg=cfg)


def tls_script(cfg: HostConfig) -> str:
    """The TLS unit's work, by mode; it prints the certificate's SHA-256 fingerprint.

    In acme mode the script reads the Cloudflare API token on stdin (the unit's
    command is the script itself: components/units.py tls_unit).
    """
    values = dict(host_name=cfg.host_name, cert_file=cfg.smtpd_tls_cert_file, key_file=cfg.smtpd_tls_key_file)
    if cfg.tls == "acme":
        values.update(
            mailstack_tls=mailstack_tls_script(),
            acme_conf=acme_conf(cfg),
            renew_service=render_template("tls/mailstack-tls-renew.service.j2"),
            renew_timer=render_template("tls/mailstack-tls-renew.timer.j2"),
        )
    return render_template("tls/tls.sh.j2", tls=cfg.tls, dnssec=cfg.dnssec, tls_key_roll=cfg.tls_key_roll, **values)


def unit_facts(stdout: str) -> dict[str, str]:
    """What the TLS unit printed: the certificate's fingerprint, and (acme, self-signed) the SHA-256
    of the served key's and the next key's SubjectPublicKeyInfo, for the TLSA records, and the
    number of the served key (how many key rolls the host has carried out)."""
    lines = [line.strip() for line in stdout.strip().splitlines() if line.strip()]
    facts = {"fingerprint": lines[0] if lines else ""}
    for line in lines[1:]:
        name, sep, value = line.partition("=")
        if sep and name in ("spki", "spki_next", "generation"):
            facts[name] = value
    return facts


def token_stdin(cfg: HostConfig) -> str:
    """What the acme-mode TLS unit reads on stdin: the token, one line (a secret)."""
    assert cfg.acme_cloudflare_token is not None, "tls: acme requires acme_cloudflare_token (config.py checks it)"
    return cfg.acme_cloudflare_token.get_secret_value() + "\n"
