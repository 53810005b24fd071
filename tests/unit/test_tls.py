"""The host's certificate: mailstack:tls (acme | self-signed | files), its unit, and mailstack-tls.

mailstack-tls runs for real here, with its folders moved under the test's own
and a `certbot` stand-in on PATH that signs the CSR it is given with a test CA
(openssl), as an ACME server would sign it after the DNS-01 challenge, or fails
as certbot does. Postfix, Dovecot and nginx are stand-ins that log what they
are asked to do (a reload, never a restart).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from components import paths, units
from components.config import ConfigError, load_config
from components.hostfacts import HostFacts
from components.services import tls
from components.services.tls import unit_facts

HOST = {
    "mailstack:hostname": "mail.example.com",
    "mailstack:ipv4": ["192.0.2.10"],
    "mailstack:postmaster_address": "alice@example.com",
}
TOKEN = "cfTOKEN_" + "a1B2c3D4e5" * 3 + "zz"
OWNER = "mailstack/host-mail"


def host_cfg(**overrides):
    return load_config(dict(HOST, **{f"mailstack:{k}": v for k, v in overrides.items()}))


def acme_cfg(**overrides):
    return host_cfg(**{"tls": "acme", "acme_cloudflare_token": TOKEN, **overrides})


def problems(**overrides) -> list[str]:
    with pytest.raises(ConfigError) as err:
        host_cfg(**overrides)
    return err.value.problems


# --- the config keys --------------------------------------------------------------------------


def test_defaults_keep_todays_self_signed_pair():
    h = host_cfg()
    assert h.tls == "self-signed"
    assert h.acme_directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert h.acme_account_email == "alice@example.com"  # postmaster_address
    assert h.acme_propagation_seconds == 30
    assert host_cfg(acme_email="certs@example.com").acme_account_email == "certs@example.com"


def test_acme_without_a_token_names_the_key():
    assert problems(tls="acme") == [
        "mailstack:acme_cloudflare_token: is required when mailstack:tls is acme (expected a Cloudflare API token "
        "with Zone:DNS:Edit on the host's zone and every hosted domain's zone, set with "
        "`pulumi config set --secret acme_cloudflare_token`)"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tls", "letsencrypt", "mailstack:tls: 'letsencrypt' is not one of acme, self-signed, files (expected e.g. acme)"),
        ("acme_directory", "http://acme.example.net/dir",
         "mailstack:acme_directory: 'http://acme.example.net/dir' is not an https URL (expected e.g. "
         "https://acme-v02.api.letsencrypt.org/directory)"),
        ("acme_directory", "https://acme.example.net/dir?x=$(id)", "mailstack:acme_directory: "),
        ("acme_email", "certs", "mailstack:acme_email: 'certs' is not an e-mail address (expected e.g. alice@example.com)"),
        ("acme_propagation_seconds", 601,
         "mailstack:acme_propagation_seconds: 601 is more than 600 (expected a number of seconds from 0 to 600, e.g. 30)"),
        ("acme_propagation_seconds", -1,
         "mailstack:acme_propagation_seconds: -1 is less than 0 (expected a number of seconds from 0 to 600, e.g. 30)"),
        ("acme_propagation_seconds", True,
         "mailstack:acme_propagation_seconds: true is not a number of seconds from 0 to 600 (expected e.g. 30)"),
    ],
)
def test_a_bad_value_names_its_key(key, value, message):
    found = problems(**{"tls": "acme", "acme_cloudflare_token": TOKEN, key: value})
    assert len(found) == 1 and found[0].startswith(message), found


@pytest.mark.parametrize("token", ["has space " + "x" * 30, "short", "x" * 39 + "'", "x" * 30 + "\n" + "y" * 10])
def test_a_bad_token_is_refused_without_showing_it(token):
    found = problems(tls="acme", acme_cloudflare_token=token)
    assert found == [
        "mailstack:acme_cloudflare_token: is not a Cloudflare API token (expected the token's value: letters, "
        "digits, '_' and '-', e.g. `pulumi config set --secret acme_cloudflare_token` and paste it)"
    ]
    found = problems(tls="acme", acme_cloudflare_token=[token])
    assert all(token not in line and "x" * 20 not in line for line in found), found


def test_an_encrypted_token_in_a_stack_file_counts_as_set_offline():
    # `render`, `check` and `verify` read the stack file without Pulumi: the value is `secure:`.
    h = load_config({**HOST, "mailstack:tls": "acme", "mailstack:acme_cloudflare_token": {"secure": "v1:abc"}})
    assert h.tls == "acme" and h.acme_cloudflare_token is not None
    assert h.acme_cloudflare_token.get_secret_value() not in tls.tls_script(h)


def test_host_facts_know_the_hosts_tls_mode_and_default_for_older_host_stacks():
    outputs = {"host_id": OWNER, "hostname": "mail.example.com", "addresses": ["192.0.2.10"], "ssh_user": "root"}
    assert HostFacts.from_outputs(outputs).tls == "self-signed"
    assert HostFacts.from_outputs({**outputs, "tls": "acme"}).tls == "acme"


# --- the unit ---------------------------------------------------------------------------------


def test_self_signed_is_todays_unit():
    unit = units.tls_unit(host_cfg(), OWNER)
    assert not unit.secret and "openssl req -x509 -newkey rsa:4096" in unit.stdin
    assert "mailstack-tls" not in unit.stdin and "read -r token" not in unit.stdin


def test_the_token_travels_only_on_the_acme_units_stdin():
    h = acme_cfg()
    unit = units.tls_unit(h, OWNER)
    assert unit.secret and unit.stdin == TOKEN + "\n"
    assert TOKEN not in unit.command
    assert TOKEN not in units.packages_unit(h, OWNER).stdin
    assert TOKEN not in tls.mailstack_tls_script() + tls.acme_conf(h)


def test_acme_packages_only_with_acme():
    assert "certbot" not in units.packages_unit(host_cfg(), OWNER).stdin
    assert "packages=(postfix " in units.packages_unit(host_cfg(), OWNER).stdin
    script = units.packages_unit(acme_cfg(), OWNER).stdin
    assert re.search(r"packages=\(.* certbot python3-certbot-dns-cloudflare ", script), script


def test_acme_conf_reads_back_as_the_config_says(tmp_path):
    h = acme_cfg(acme_email="o'b+$x@example.com", acme_directory="https://acme.example.net:14000/dir",
                 acme_propagation_seconds=0)
    conf = tmp_path / "acme.conf"
    conf.write_text(tls.acme_conf(h))
    out = subprocess.run(["bash", "-c", f'. {shlex.quote(str(conf))}; printf "%s\\n" "$ACME_DIRECTORY" "$ACME_EMAIL" '
                          '"$ACME_PROPAGATION_SECONDS"'], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["https://acme.example.net:14000/dir", "o'b+$x@example.com", "0"]


# --- running the scripts against a folder of the test's own -------------------------------------

CERTBOT_SHIM = r"""#!/bin/bash
# certbot, as far as mailstack-tls sees it: sign the CSR (with the test CA) or fail.
set -euo pipefail
printf '%s\n' "$*" >>"$T/certbot.log"
if [ -s "$T/certbot.fail" ]; then cat "$T/certbot.fail"; exit 1; fi
while [ "$#" -gt 0 ]; do
  case "$1" in
    --csr) csr=$2; shift ;;
    --cert-path) cert=$2; shift ;;
    --chain-path) chain=$2; shift ;;
    --fullchain-path) fullchain=$2; shift ;;
  esac
  shift
done
openssl x509 -req -in "$csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -set_serial "$RANDOM$RANDOM" \
  -days "$(cat "$T/days")" -copy_extensions copy -out "$cert" 2>/dev/null
cp "$T/ca.pem" "$chain"
cat "$cert" "$T/ca.pem" >"$fullchain"
echo "Successfully received certificate."
"""

DAEMON_SHIMS = {
    # Each daemon "runs" and logs what it is told.
    "postfix": 'echo "postfix $*" >>"$T/daemons.log"',
    "doveadm": 'echo "doveadm $*" >>"$T/daemons.log"',
    "service": 'echo "service $*" >>"$T/daemons.log"',
    "nginx": "true",
}


class Host:
    """mailstack-tls with /etc/mailstack/tls, /var/lib/mailstack moved under `root`."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(exist_ok=True)
        shims = root / "shims"
        shims.mkdir()
        (shims / "certbot").write_text(CERTBOT_SHIM)
        for name, body in DAEMON_SHIMS.items():
            (shims / name).write_text(f"#!/bin/sh\n{body}\n")
        for shim in shims.iterdir():
            shim.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "T": str(root)}
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-subj",
                        "/CN=Test ACME CA", "-keyout", str(root / "ca.key"), "-out", str(root / "ca.pem")],
                       check=True, capture_output=True)
        self.days(90)
        self.tool = root / "mailstack-tls"
        self.tool.write_text(self.moved(tls.mailstack_tls_script()))
        self.tool.chmod(0o755)
        self.tls_dir = Path(self.moved(paths.TLS_DIR))
        self.tls_dir.mkdir(parents=True)
        (self.tls_dir / "acme.conf").write_text(self.moved(tls.acme_conf(acme_cfg())))
        (self.tls_dir / "cloudflare.ini").write_text(f"dns_cloudflare_api_token = {TOKEN}\n")
        self.key = root / "ssl/private/host.key"
        self.cert = root / "ssl/host.pem"

    def make_key(self, *keys: Path) -> None:
        """Keys made beforehand, small (mailstack-tls keeps an existing key; a 4096-bit one takes seconds)."""
        for key in keys:
            key.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out",
                            str(key)], check=True, capture_output=True)

    def moved(self, text: str) -> str:
        for path in (paths.TLS_DIR, "/var/lib/mailstack", paths.MAILSTACK_TLS, "/etc/systemd/system"):
            text = text.replace(path, str(self.root / path.lstrip("/")))
        return text

    def days(self, n: int) -> None:
        (self.root / "days").write_text(str(n))

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.tool), *args], env=self.env, capture_output=True, text=True)

    def issue(self, *names: str) -> subprocess.CompletedProcess:
        return self.run("issue", "host", str(self.key), str(self.cert), *(names or ("mail.example.com",)))

    def certbot_calls(self) -> list[str]:
        log = self.root / "certbot.log"
        return log.read_text().splitlines() if log.exists() else []

    def daemons(self) -> list[str]:
        log = self.root / "daemons.log"
        return log.read_text().splitlines() if log.exists() else []

    def status(self, lineage: str = "host") -> dict[str, str]:
        text = Path(self.moved(f"{paths.TLS_STATE_DIR}/{lineage}.status")).read_text()
        return dict(line.split("=", 1) for line in text.splitlines())


def spki_of(key: Path) -> str:
    """Hex SHA-256 of the key's SubjectPublicKeyInfo (what a TLSA 3 1 1 record holds)."""
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"], capture_output=True,
                         check=True).stdout
    return hashlib.sha256(der).hexdigest()


def x509(path: Path, *args: str) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(path), "-noout", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def public_key(key: Path) -> str:
    return subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def host(tmp_path):
    """A host whose key for the lineage `host` is already there."""
    made = Host(tmp_path / "host")
    made.make_key(made.key)
    return made


def test_issue_makes_a_key_once_and_gets_a_certificate_for_it(tmp_path):
    host = Host(tmp_path / "host")
    done = host.issue()
    assert done.returncode == 0, done.stderr
    assert oct(host.key.stat().st_mode & 0o777) == "0o600"
    assert "Private-Key: (4096 bit" in subprocess.run(["openssl", "pkey", "-in", str(host.key), "-noout", "-text"],
                                                       capture_output=True, text=True).stdout
    assert x509(host.cert, "-pubkey") + "\n" == public_key(host.key)
    assert x509(host.cert, "-issuer") == "issuer=CN = Test ACME CA"
    assert "DNS:mail.example.com" in x509(host.cert, "-ext", "subjectAltName")
    # The full chain: the certificate, then the CA's.
    assert host.cert.read_text().count("BEGIN CERTIFICATE") == 2
    lineage = Path(host.moved(f"{paths.TLS_LINEAGES_DIR}/host.conf")).read_text()
    assert lineage == f"key={host.key}\nfullchain={host.cert}\nnames=mail.example.com\n"
    assert host.status()["result"] == "ok"
    # certbot signed our CSR, with the settings of acme.conf; no token on its command line.
    [call] = host.certbot_calls()
    for arg in ("--non-interactive", "--agree-tos", "--email alice@example.com", "--authenticator dns-cloudflare",
                "--server https://acme-v02.api.letsencrypt.org/directory", "--dns-cloudflare-propagation-seconds 30",
                f"--dns-cloudflare-credentials {host.tls_dir}/cloudflare.ini", "--csr "):
        assert arg in call
    assert TOKEN not in call
    # Again: the certificate holds, so nothing is asked and nothing changes.
    before = (host.key.read_bytes(), host.cert.read_bytes())
    again = host.issue()
    assert again.returncode == 0 and len(host.certbot_calls()) == 1, again.stderr
    assert (host.key.read_bytes(), host.cert.read_bytes()) == before


def test_issue_replaces_a_self_signed_certificate_and_keeps_its_key(host):
    host.key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mail.example.com",
                    "-addext", "subjectAltName=DNS:mail.example.com", "-keyout", str(host.key), "-out", str(host.cert)],
                   check=True, capture_output=True)
    key = host.key.read_bytes()
    done = host.issue()
    assert done.returncode == 0, done.stderr
    assert "is self-signed: asking the ACME server" in done.stderr
    assert host.key.read_bytes() == key and x509(host.cert, "-issuer") == "issuer=CN = Test ACME CA"
    # A new certificate is served at once: the running daemons reload, none restarts.
    assert host.daemons() == ["postfix status", "postfix reload", "service dovecot status", "doveadm reload",
                              "service nginx status", "service nginx reload"]


def test_issue_for_other_names_gets_a_new_certificate(host):
    assert host.issue().returncode == 0
    done = host.issue("mail.example.com", "mx.example.com")
    assert done.returncode == 0, done.stderr
    assert "is for mail.example.com, not mail.example.com mx.example.com" in done.stderr
    assert x509(host.cert, "-ext", "subjectAltName").splitlines()[1].strip() == "DNS:mail.example.com, DNS:mx.example.com"


def test_renew_renews_only_what_is_due_with_the_same_key(host):
    host.days(90)
    assert host.issue().returncode == 0
    other = [str(host.root / "o/key.pem"), str(host.root / "o/fullchain.pem")]
    host.make_key(Path(other[0]))
    host.days(10)
    assert host.run("issue", "mta-sts.example.com", *other, "mta-sts.example.com").returncode == 0
    host_cert, key = host.cert.read_bytes(), host.key.read_bytes()
    other_serial = x509(Path(other[1]), "-serial")
    (host.root / "daemons.log").unlink()
    host.days(90)
    done = host.run("renew")
    assert done.returncode == 0, done.stderr
    assert "mta-sts.example.com: the certificate at" in done.stderr and "expires within 30 days" in done.stderr
    assert host.cert.read_bytes() == host_cert  # not due
    assert x509(Path(other[1]), "-serial") != other_serial and x509(Path(other[1]), "-checkend", str(80 * 86400))
    assert x509(Path(other[1]), "-pubkey") + "\n" == public_key(Path(other[0]))
    assert "postfix reload" in host.daemons() and not any("restart" in call for call in host.daemons())
    # Nothing due: nothing asked, nothing reloaded.
    calls = len(host.certbot_calls())
    (host.root / "daemons.log").unlink()
    assert host.run("renew").returncode == 0 and len(host.certbot_calls()) == calls and host.daemons() == []
    # --force: every lineage (or the named ones), same keys.
    assert host.run("renew", "--force", "host").returncode == 0 and len(host.certbot_calls()) == calls + 1
    assert host.cert.read_bytes() != host_cert and host.key.read_bytes() == key
    assert host.run("renew", "--force").returncode == 0 and len(host.certbot_calls()) == calls + 3


def test_a_failed_renewal_keeps_the_old_files_and_says_why(host):
    assert host.issue().returncode == 0
    cert = host.cert.read_bytes()
    (host.root / "daemons.log").unlink()
    (host.root / "certbot.fail").write_text("Some challenges have failed.\n")
    done = host.run("renew", "--force")
    assert done.returncode == 1
    assert "mailstack-tls: host: certbot failed for mail.example.com at https://acme-v02.api.letsencrypt.org/directory: " \
           "Some challenges have failed. (log: " in done.stderr
    assert host.cert.read_bytes() == cert and host.daemons() == []
    status = host.status()
    assert status["result"] == "failed" and status["message"].startswith("certbot failed for mail.example.com")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["last_attempt"])
    assert host.run("status").stdout.rstrip().endswith("last=failed")
    # issue for other names: the current certificate is not for them, so the unit fails (old files kept).
    other = host.issue("mail.example.com", "mx.example.com")
    assert other.returncode == 1 and host.cert.read_bytes() == cert


def test_issue_goes_on_while_a_certificate_due_for_renewal_still_holds(host):
    host.days(10)
    assert host.issue().returncode == 0
    cert = host.cert.read_bytes()
    (host.root / "certbot.fail").write_text("Some challenges have failed.\n")
    kept = host.issue()
    assert kept.returncode == 0 and "the current certificate is kept until renewal succeeds" in kept.stderr
    assert host.cert.read_bytes() == cert and host.status()["result"] == "failed"


def test_issue_without_any_certificate_fails_with_one_line(host):
    (host.root / "certbot.fail").write_text("An unexpected error occurred:\nError creating new order :: rate limited\n")
    done = host.issue()
    assert done.returncode == 1 and not host.cert.exists()
    assert done.stderr.splitlines()[-1].startswith(
        "mailstack-tls: host: certbot failed for mail.example.com at https://acme-v02.api.letsencrypt.org/directory: "
        "Error creating new order :: rate limited (log: ")


def test_status_lists_every_lineage(host):
    assert host.issue().returncode == 0
    line = host.run("status").stdout
    assert re.fullmatch(r'host not_after=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ days_left=(89|90) issuer="CN=Test ACME CA" '
                        r"last=ok\n", line), line


def test_remove_forgets_the_lineage_and_its_own_files_only(host):
    assert host.issue().returncode == 0
    own = host.tls_dir / "mta-sts.example.com"
    host.make_key(own / "key.pem")
    assert host.run("issue", "mta-sts.example.com", f"{own}/key.pem", f"{own}/fullchain.pem",
                    "mta-sts.example.com").returncode == 0
    assert host.run("remove", "mta-sts.example.com").returncode == 0
    assert not own.exists() and host.run("status").stdout.startswith("host ")
    assert len(host.run("status").stdout.splitlines()) == 1
    assert host.run("remove", "host").returncode == 0
    assert host.cert.exists() and host.key.exists() and host.run("status").stdout == ""  # served files stay
    assert (host.tls_dir / "acme.conf").exists() and (host.tls_dir / "cloudflare.ini").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "acme.conf", "/k", "/c", "mail.example.com"], "'acme.conf' is a name mailstack-tls uses itself"),
        (["issue", "../x", "/k", "/c", "mail.example.com"], "'../x' is not a lineage name"),
        (["issue", "host", "k", "/c", "mail.example.com"], "'k' is not an absolute file path"),
        (["issue", "host", "/a/../k", "/c", "mail.example.com"], "'/a/../k' is not an absolute file path"),
        (["issue", "host", "/k", "/c", "mail.example.com;id"], "'mail.example.com;id' is not a DNS name"),
        (["issue", "host", "/k", "/k", "mail.example.com"], "KEY_FILE and FULLCHAIN_FILE are the same file"),
        (["renew", "nope"], "nope: no such lineage"),
        (["frobnicate"], "usage: mailstack-tls issue"),
    ],
)
def test_bad_arguments_are_refused_before_anything_changes(host, args, message):
    done = host.run(*args)
    assert done.returncode == 1 and message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert host.certbot_calls() == [] and not (host.tls_dir / "lineages").exists()


def _unit_script(host: Host, h) -> str:
    unit = units.tls_unit(h, OWNER)
    script = shlex.split(unit.command)[2]
    script = script[script.index("# mailstack: TLS key"):]  # without the owner check, which would claim this machine
    return host.moved(script.replace("/usr/local/sbin", str(host.root / "sbin")))


def test_the_acme_unit_installs_mailstack_tls_and_writes_the_token_from_stdin(host):
    h = acme_cfg(smtpd_tls_cert_file=str(host.cert), smtpd_tls_key_file=str(host.key))
    script = _unit_script(host, h)
    assert "rsa_keygen_bits:4096" in script
    (host.tls_dir / "cloudflare.ini").unlink()
    done = subprocess.run(["bash", "-c", script], input=units.tls_unit(h, OWNER).stdin, env=host.env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    facts = unit_facts(done.stdout)
    assert facts["fingerprint"] == x509(host.cert, "-fingerprint", "-sha256").split("=", 1)[1]
    # The served key's and the next key's digests, for the TLSA records (DANE).
    assert facts["spki"] == spki_of(host.key) and facts["spki_next"] == spki_of(Path(f"{host.key}.next"))
    assert facts["spki"] != facts["spki_next"]
    ini = host.tls_dir / "cloudflare.ini"
    assert ini.read_text() == f"dns_cloudflare_api_token = {TOKEN}\n" and oct(ini.stat().st_mode & 0o777) == "0o600"
    assert TOKEN not in done.stderr + done.stdout
    assert (host.root / "sbin/mailstack-tls").stat().st_mode & 0o111
    assert (host.root / "etc/systemd/system/mailstack-tls-renew.timer").exists()
    # Again: nothing to update, no new certificate.
    again = subprocess.run(["bash", "-c", script], input=TOKEN + "\n", env=host.env, capture_output=True, text=True)
    assert again.returncode == 0 and "updated" not in again.stderr and len(host.certbot_calls()) == 1, again.stderr
    # No token: refused before anything.
    none = subprocess.run(["bash", "-c", script], input="", env=host.env, capture_output=True, text=True)
    assert none.returncode == 1 and "no Cloudflare API token on stdin" in none.stderr


def test_files_mode_checks_the_pair_and_never_makes_one(host, tmp_path):
    h = host_cfg(tls="files", smtpd_tls_cert_file=str(host.cert), smtpd_tls_key_file=str(host.key))
    script = tls.tls_script(h)
    missing = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert missing.returncode == 1 and not host.cert.exists()
    assert missing.stderr == (f"mailstack:tls is files, but there is no certificate at {host.cert} "
                              "(mailstack:smtpd_tls_cert_file): put your full chain there, or set mailstack:tls to "
                              "acme or self-signed\n")
    host.key.parent.mkdir(parents=True, exist_ok=True)
    other = tmp_path / "other.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mail.example.com",
                    "-keyout", str(host.key), "-out", str(host.cert)], check=True, capture_output=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(other)], check=True, capture_output=True)
    good = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert good.returncode == 0 and unit_facts(good.stdout) == {
        "fingerprint": x509(host.cert, "-fingerprint", "-sha256").split("=")[1]}
    mismatched = host_cfg(tls="files", smtpd_tls_cert_file=str(host.cert), smtpd_tls_key_file=str(other))
    bad = subprocess.run(["bash", "-c", tls.tls_script(mismatched)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith(f"the key at {other} does not match the certificate at ")


def test_a_reload_that_fails_is_reported_and_the_new_certificate_stays(host):
    assert host.issue().returncode == 0
    cert = host.cert.read_bytes()
    (host.root / "shims/postfix").write_text('#!/bin/sh\n[ "$1" = status ]\n')  # runs, but refuses to reload
    done = host.run("renew", "--force")
    assert done.returncode == 1
    assert "mailstack-tls: could not reload postfix: it serves the old certificate until it reloads" in done.stderr
    assert host.cert.read_bytes() != cert and "doveadm reload" in host.daemons()
