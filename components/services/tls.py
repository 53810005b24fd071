"""The host's TLS key and certificate, which Postfix and Dovecot both serve.

Host level only: its own unit (templates/tls/tls.sh.j2) makes a self-signed
pair once, at the paths the config names (mailstack:smtpd_tls_cert_file,
mailstack:smtpd_tls_key_file); an existing pair is kept.
"""

from __future__ import annotations

from components.config import HostConfig
from components.render import render_template

NAME = "tls"
# openssl makes the keys the units generate (TLS here, DKIM's public half).
PACKAGES = ("openssl", "ca-certificates")


def tls_script(cfg: HostConfig) -> str:
    """The TLS unit's work: make the pair if missing; print the certificate's SHA-256 fingerprint."""
    return render_template(
        "tls/tls.sh.j2", host_name=cfg.host_name, cert_file=cfg.smtpd_tls_cert_file, key_file=cfg.smtpd_tls_key_file
    )
