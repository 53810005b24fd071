"""The host's table assembler (mailstack-assemble), run for real on folders a test writes.

Each test renders the script (components.services.tables.assembler_script),
writes domain folders under a temporary root and runs the script with bash and
MAILSTACK_ROOT=<root>, then asks the tables what Postfix would ask them:
`postmap -q <key> hash:<table>` (Postfix's own postmap, from the postfix package).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from components import paths
from components.services.tables import HEADER, assembler_script

pytestmark = pytest.mark.skipif(
    shutil.which("postmap") is None, reason="postmap is missing (Debian package postfix; scripts/setup installs it)"
)

HOST_NAME = "mail.example.net"

# Fake crypt hashes: the shape the assembler accepts, distinct enough to spot in any output.
HASH_ALICE_ORG = "$6$saltorg$" + "A" * 86
HASH_ALICE_COM = "$6$saltcom$" + "C" * 86
HASH_ALICE_ORG_NEW = "$6$saltorg$" + "B" * 86  # same length as HASH_ALICE_ORG
EVERY_HASH = [HASH_ALICE_ORG, HASH_ALICE_COM, HASH_ALICE_ORG_NEW]

# Every output, as the host names it.
OUTPUTS = [
    paths.DOMAINS_TABLE,
    paths.MAILBOXES_TABLE,
    paths.ALIASES_TABLE,
    paths.SENDER_LOGINS_TABLE,
    paths.RETIRED_TABLE,
    paths.DOVECOT_USERS,
    paths.DKIM_KEY_TABLE,
    paths.DKIM_SIGNING_TABLE,
]
POSTFIX_TABLES = OUTPUTS[:5]


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("assembler") / "mailstack-assemble"
    path.write_text(assembler_script(HOST_NAME, 5000))
    return path


class Host:
    """A temporary root with the folders a deployed host stack has, and the domains' folders."""

    def __init__(self, root: Path, script: Path):
        self.root = root
        self.script = script
        for folder in (paths.DOMAINS_DIR, paths.DOVECOT_DIR, paths.DKIM_KEY_DIR):
            self.path(folder).mkdir(parents=True, exist_ok=True)

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def write(self, host_path: str, text: str, mode: int = 0o644) -> None:
        path = self.path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    def write_domain(
        self,
        domain: str,
        mailboxes: list[str],
        aliases: dict[str, str] | None = None,
        sender_logins: dict[str, str] | None = None,
        passwd: dict[str, str] | None = None,
        catch_all: str | None = None,
        selector: str = "mail",
    ) -> None:
        """A domain folder as its domain stack writes it; `owner` last (until then the assembler skips it)."""
        folder = paths.domain_dir(domain)
        self.write(f"{folder}/mailboxes", "".join(f"{m}\n" for m in mailboxes))
        self.write(f"{folder}/aliases", "".join(f"{a} {t}\n" for a, t in (aliases or {}).items()))
        self.write(f"{folder}/sender_logins", "".join(f"{a} {lo}\n" for a, lo in (sender_logins or {}).items()))
        self.write(f"{folder}/passwd", "".join(f"{m}:{h}\n" for m, h in (passwd or {}).items()), 0o600)
        if catch_all:
            self.write(f"{folder}/catch_all", f"{catch_all}\n")
        self.write(f"{folder}/dkim_selector", f"{selector}\n")
        self.write(paths.domain_dkim_key(domain, selector), "-----BEGIN PRIVATE KEY-----\n", 0o600)
        self.write(f"{folder}/owner", f"organization/mailstack/{domain}\n")

    def run(self) -> subprocess.CompletedProcess:
        env = {**os.environ, "MAILSTACK_ROOT": str(self.root)}
        return subprocess.run(["bash", str(self.script)], env=env, capture_output=True, text=True, timeout=60)

    def query(self, table: str, key: str) -> str | None:
        """What Postfix finds for `key` in the hash: table (None: not found)."""
        result = subprocess.run(
            ["postmap", "-q", key, f"hash:{self.path(table)}"], capture_output=True, text=True, timeout=30
        )
        if result.returncode == 1:
            return None
        assert result.returncode == 0, result.stderr
        return result.stdout.rstrip("\n")

    def lines(self, host_path: str) -> list[str]:
        return self.path(host_path).read_text().splitlines()

    def snapshot(self) -> dict[str, tuple[bytes, int, int]]:
        """Every live output (with Postfix's .db files): content, mtime (ns), mode."""
        state = {}
        for output in OUTPUTS + [f"{t}.db" for t in POSTFIX_TABLES]:
            path = self.path(output)
            if path.exists():
                st = path.stat()
                state[output] = (path.read_bytes(), st.st_mtime_ns, st.st_mode)
        return state

    def leftovers(self) -> list[str]:
        """Stage folders or half-placed files the script should have cleaned up."""
        found = list(self.path(paths.POSTFIX_TABLES_DIR).glob(".stage.*"))
        found += list(self.root.rglob("*.mailstack-new"))
        return [str(p) for p in found]


@pytest.fixture
def host(tmp_path: Path, script: Path) -> Host:
    return Host(tmp_path / "root", script)


def two_domains(host: Host) -> None:
    """example.org with a catch-all, and example.com whose team alias reaches into example.org."""
    host.write_domain(
        "example.org",
        mailboxes=["alice@example.org", "carol@example.org"],
        aliases={
            "postmaster@example.org": "alice@example.org",
            "info@example.org": "alice@example.org,carol@example.org",
        },
        sender_logins={
            "alice@example.org": "alice@example.org",
            "carol@example.org": "carol@example.org",
            "info@example.org": "alice@example.org",
        },
        passwd={"alice@example.org": HASH_ALICE_ORG, "carol@example.org": "!"},
        catch_all="carol@example.org",
        selector="s2026",
    )
    host.write_domain(
        "example.com",
        mailboxes=["alice@example.com"],
        aliases={
            "bob@example.com": "alice@example.com",
            "postmaster@example.com": "alice@example.com",
            "team@example.com": "alice@example.com,carol@example.org",
        },
        sender_logins={"alice@example.com": "alice@example.com", "bob@example.com": "alice@example.com"},
        passwd={"alice@example.com": HASH_ALICE_COM},
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}; stderr:\n{result.stderr}"


def updated(result: subprocess.CompletedProcess) -> set[str]:
    return {line.removeprefix("updated ") for line in result.stderr.splitlines() if line.startswith("updated ")}


# --- what the tables answer ------------------------------------------------------------------


def test_two_domains_answer_as_postfix_asks(host: Host) -> None:
    two_domains(host)
    result = host.run()
    assert_ok(result)
    # First run: every output is new, and OpenDKIM's tables changed.
    assert updated(result) == set(OUTPUTS)
    assert "would reload opendkim" in result.stderr

    assert host.query(paths.DOMAINS_TABLE, "example.org") == "OK"
    assert host.query(paths.DOMAINS_TABLE, "example.com") == "OK"
    assert host.query(paths.DOMAINS_TABLE, HOST_NAME) is None

    assert host.query(paths.MAILBOXES_TABLE, "alice@example.org") == "OK"
    assert host.query(paths.MAILBOXES_TABLE, "carol@example.org") == "OK"
    assert host.query(paths.MAILBOXES_TABLE, "alice@example.com") == "OK"
    assert host.query(paths.MAILBOXES_TABLE, "bob@example.com") is None  # an alias, not a mailbox

    aliases = paths.ALIASES_TABLE
    assert host.query(aliases, "info@example.org") == "alice@example.org,carol@example.org"
    assert host.query(aliases, "team@example.com") == "alice@example.com,carol@example.org"
    assert host.query(aliases, "bob@example.com") == "alice@example.com"
    # The catch-all, and the self-maps that keep it off example.org's own mailboxes.
    assert host.query(aliases, "@example.org") == "carol@example.org"
    assert host.query(aliases, "alice@example.org") == "alice@example.org"
    assert host.query(aliases, "carol@example.org") == "carol@example.org"
    # An alias keeps its own target; example.com has no catch-all, so no self-maps.
    assert host.query(aliases, "postmaster@example.org") == "alice@example.org"
    assert host.query(aliases, "@example.com") is None
    assert host.query(aliases, "alice@example.com") is None

    assert host.query(paths.SENDER_LOGINS_TABLE, "bob@example.com") == "alice@example.com"
    assert host.query(paths.SENDER_LOGINS_TABLE, "info@example.org") == "alice@example.org"
    assert host.query(paths.SENDER_LOGINS_TABLE, "carol@example.org") == "carol@example.org"

    assert host.lines(paths.RETIRED_TABLE) == [HEADER]

    assert host.lines(paths.DOVECOT_USERS) == [
        HEADER,
        f"alice@example.com:{HASH_ALICE_COM}::::::",
        f"alice@example.org:{HASH_ALICE_ORG}::::::",
        "carol@example.org:!::::::",
    ]
    assert host.lines(paths.DKIM_KEY_TABLE) == [
        HEADER,
        f"mail._domainkey.example.com example.com:mail:{paths.domain_dkim_key('example.com', 'mail')}",
        f"s2026._domainkey.example.org example.org:s2026:{paths.domain_dkim_key('example.org', 's2026')}",
    ]
    assert host.lines(paths.DKIM_SIGNING_TABLE) == [
        HEADER,
        "example.com mail._domainkey.example.com",
        "example.org s2026._domainkey.example.org",
    ]
    # Modes: the hashes only for Dovecot's group, OpenDKIM's tables for its group.
    assert oct(host.path(paths.DOVECOT_USERS).stat().st_mode & 0o777) == "0o640"
    assert oct(host.path(paths.DKIM_KEY_TABLE).stat().st_mode & 0o777) == "0o640"
    assert oct(host.path(paths.MAILBOXES_TABLE + ".db").stat().st_mode & 0o777) == "0o644"
    assert host.leftovers() == []


def test_empty_host_gets_empty_tables(host: Host) -> None:
    result = host.run()
    assert_ok(result)
    for output in OUTPUTS:
        assert host.lines(output) == [HEADER], output
    for table in POSTFIX_TABLES:
        assert host.path(table + ".db").is_file(), table
    assert host.query(paths.DOMAINS_TABLE, "example.org") is None


def test_a_folder_without_owner_is_not_read(host: Host) -> None:
    two_domains(host)
    host.path(paths.domain_dir("example.com") + "/owner").unlink()
    assert_ok(host.run())
    assert host.query(paths.DOMAINS_TABLE, "example.com") is None
    # Its alias target in example.org is still fine; nothing of example.com is anywhere.
    assert host.query(paths.ALIASES_TABLE, "team@example.com") is None


def test_retired_domain_leaves_every_table_but_retired_domains(host: Host) -> None:
    two_domains(host)
    assert_ok(host.run())
    host.write(paths.domain_dir("example.com") + "/retired", "")
    result = host.run()
    assert_ok(result)
    assert host.query(paths.RETIRED_TABLE, "example.com") == "550 5.1.2 example.com is no longer hosted here"
    assert host.query(paths.RETIRED_TABLE, "example.org") is None
    assert host.query(paths.DOMAINS_TABLE, "example.com") is None
    assert host.query(paths.MAILBOXES_TABLE, "alice@example.com") is None
    assert host.query(paths.ALIASES_TABLE, "bob@example.com") is None
    assert host.query(paths.SENDER_LOGINS_TABLE, "bob@example.com") is None
    assert not any("example.com" in line for line in host.lines(paths.DOVECOT_USERS))
    assert not any("example.com" in line for line in host.lines(paths.DKIM_KEY_TABLE))
    assert not any("example.com" in line for line in host.lines(paths.DKIM_SIGNING_TABLE))
    # example.org is untouched.
    assert host.query(paths.MAILBOXES_TABLE, "alice@example.org") == "OK"
    assert host.lines(paths.DOVECOT_USERS)[1] == f"alice@example.org:{HASH_ALICE_ORG}::::::"

    # Coming back: the marker goes, the domain is hosted again.
    host.path(paths.domain_dir("example.com") + "/retired").unlink()
    assert_ok(host.run())
    assert host.query(paths.RETIRED_TABLE, "example.com") is None
    assert host.query(paths.MAILBOXES_TABLE, "alice@example.com") == "OK"


# --- runs that change nothing ----------------------------------------------------------------


def test_second_run_without_change_changes_nothing(host: Host) -> None:
    two_domains(host)
    assert_ok(host.run())
    before = host.snapshot()
    result = host.run()
    assert_ok(result)
    assert result.stderr == ""
    assert host.snapshot() == before


def test_only_the_changed_tables_are_replaced(host: Host) -> None:
    two_domains(host)
    assert_ok(host.run())
    before = host.snapshot()
    folder = paths.domain_dir("example.com")
    host.write(f"{folder}/sender_logins", "alice@example.com alice@example.com\n")
    result = host.run()
    assert_ok(result)
    # Postfix is reloaded (a table of its changed), OpenDKIM's tables did not: no reload.
    assert result.stderr == f"updated {paths.SENDER_LOGINS_TABLE}\nwould reload postfix (if it runs)\n"
    assert host.query(paths.SENDER_LOGINS_TABLE, "bob@example.com") is None
    after = host.snapshot()
    replaced = {output for output in before if before[output] != after[output]}
    assert replaced == {paths.SENDER_LOGINS_TABLE, paths.SENDER_LOGINS_TABLE + ".db"}


def test_same_size_users_file_in_the_same_second_gets_a_later_mtime(host: Host) -> None:
    """Dovecot re-reads the users file only when its mtime (seconds) or size changed."""
    two_domains(host)
    assert_ok(host.run())
    users = host.path(paths.DOVECOT_USERS)
    passwd = paths.domain_dir("example.org") + "/passwd"
    for _attempt in range(3):
        # Start early in a second, so that both the old file's stamp (set here)
        # and the new file's (written by the run) fall in the same second.
        time.sleep(1 - time.time() % 1 + 0.01)
        second = int(time.time())
        os.utime(users, (second, second))
        old_size = users.stat().st_size
        new_hash = HASH_ALICE_ORG_NEW if HASH_ALICE_ORG in users.read_text() else HASH_ALICE_ORG
        host.write(passwd, f"alice@example.org:{new_hash}\ncarol@example.org:!\n", 0o600)
        result = host.run()
        if int(time.time()) == second:
            break
    else:
        pytest.skip("could not run the assembler within one second three times (machine too slow)")
    assert_ok(result)
    assert updated(result) == {paths.DOVECOT_USERS}
    st = users.stat()
    assert f"alice@example.org:{new_hash}" in users.read_text()
    assert st.st_size == old_size
    assert int(st.st_mtime) == second + 1


# --- refusals: exit 1, a message naming the folder and the problem, nothing changed -----------


def _set(host: Host, domain: str, name: str, text: str, mode: int = 0o644) -> None:
    host.write(f"{paths.domain_dir(domain)}/{name}", text, mode)


REFUSALS = {
    "malformed mailbox line": (
        lambda h: _set(h, "example.org", "mailboxes", "alice@example.org OK\ncarol@example.org\n"),
        "/etc/mailstack/domains/example.org: mailboxes line 1: expected one field",
    ),
    "not an address": (
        lambda h: _set(h, "example.org", "mailboxes", "alice\ncarol@example.org\n"),
        "mailboxes line 1: 'alice' is not an e-mail address",
    ),
    "mailbox of another domain": (
        lambda h: _set(h, "example.org", "mailboxes", "alice@example.org\ncarol@example.org\nalice@example.com\n"),
        "/etc/mailstack/domains/example.org: mailboxes line 3: 'alice@example.com' is not in example.org",
    ),
    "alias of another domain": (
        lambda h: _set(
            h, "example.org", "aliases", "info@example.org carol@example.org\nbob@example.com carol@example.org\n"
        ),
        "example.org: aliases line 2: 'bob@example.com' is not in example.org",
    ),
    "sender login of another domain": (
        lambda h: _set(h, "example.org", "sender_logins", "alice@example.com alice@example.org\n"),
        "example.org: sender_logins line 1: 'alice@example.com' is not in example.org",
    ),
    "sender login not a mailbox": (
        lambda h: _set(h, "example.org", "sender_logins", "info@example.org info@example.org\n"),
        "example.org: sender_logins line 1: the login 'info@example.org' is not a mailbox of example.org",
    ),
    "catch-all of another domain": (
        lambda h: _set(h, "example.org", "catch_all", "alice@example.com\n"),
        "example.org: catch_all line 1: 'alice@example.com' is not in example.org",
    ),
    "mailbox claimed twice": (
        lambda h: _set(h, "example.org", "mailboxes", "alice@example.org\ncarol@example.org\nalice@example.org\n"),
        "example.org: mailboxes line 3: alice@example.org is listed twice (also mailboxes line 1)",
    ),
    "alias claimed twice": (
        lambda h: _set(
            h, "example.com", "aliases", "bob@example.com alice@example.com\nbob@example.com carol@example.org\n"
        ),
        "example.com: aliases line 2: bob@example.com is listed twice (also aliases line 1)",
    ),
    "alias target not hosted": (
        lambda h: _set(h, "example.com", "aliases", "bob@example.com bob@gmail.example\n"),
        "example.com: aliases line 1: bob@gmail.example is not a mailbox or alias of a domain hosted here",
    ),
    "alias target unknown in a hosted domain": (
        lambda h: _set(h, "example.com", "aliases", "bob@example.com dave@example.org\n"),
        "example.com: aliases line 1: dave@example.org is not a mailbox or alias",
    ),
    "empty alias target": (
        lambda h: _set(h, "example.com", "aliases", "bob@example.com alice@example.com,\n"),
        "example.com: aliases line 1: an empty target",
    ),
    "catch-all target not hosted": (
        lambda h: _set(h, "example.org", "catch_all", "nobody@example.org\n"),
        "example.org: catch_all line 1: nobody@example.org is not a mailbox or alias",
    ),
    "retired domain still aliased into": (
        lambda h: _set(h, "example.com", "retired", ""),
        # example.com's team alias is gone with it; example.org aliases into example.com:
        "example.org: aliases line 3: bob@example.com is in example.com, which is retired",
    ),
    "hosted domain is the host's name": (
        lambda h: h.write_domain(HOST_NAME, mailboxes=[f"root@{HOST_NAME}"]),
        f"/etc/mailstack/domains/{HOST_NAME}: {HOST_NAME} is the host's own name (myhostname), whose mail Postfix "
        "delivers locally; a hosted domain needs another name",
    ),
    "folder name not a domain": (
        lambda h: h.write_domain("Example.NET", mailboxes=[]),
        "/etc/mailstack/domains/Example.NET: the folder's name is not a lower-case domain name",
    ),
    "DKIM key missing": (
        lambda h: h.path(paths.domain_dkim_key("example.org", "s2026")).unlink(),
        "example.org: the DKIM key /etc/mailstack/domains/example.org/dkim/s2026.private does not exist",
    ),
    "DKIM key readable by group": (
        lambda h: h.path(paths.domain_dkim_key("example.org", "s2026")).chmod(0o640),
        "example.org: the DKIM key /etc/mailstack/domains/example.org/dkim/s2026.private is open to group or others"
        " (mode 0640",
    ),
    "DKIM selector missing": (
        lambda h: h.path(paths.domain_dir("example.com") + "/dkim_selector").unlink(),
        "example.com: dkim_selector: expected one line",
    ),
    "passwd line without mailbox": (
        lambda h: _set(h, "example.org", "passwd", f"{HASH_ALICE_ORG}\n", 0o600),
        "example.org: passwd line 1: expected <mailbox>:<crypt hash>",
    ),
    "passwd hash malformed": (
        lambda h: _set(h, "example.org", "passwd", f"alice@example.org:{HASH_ALICE_ORG} {HASH_ALICE_COM}\n", 0o600),
        "example.org: passwd line 1: the password of alice@example.org is not a crypt(3) hash",
    ),
    "quota for a mailbox not listed": (
        lambda h: _set(h, "example.org", "quotas", "dave@example.org 1024\n"),
        "example.org: quotas line 1: dave@example.org is not a mailbox of example.org",
    ),
    "quota for another domain's mailbox": (
        lambda h: _set(h, "example.org", "quotas", "alice@example.com 1024\n"),
        "example.org: quotas line 1: 'alice@example.com' is not in example.org",
    ),
    "quota not in bytes": (
        lambda h: _set(h, "example.org", "quotas", "alice@example.org 500M\n"),
        "example.org: quotas line 1: '500M' is not a quota in bytes",
    ),
    "quota of zero": (
        lambda h: _set(h, "example.org", "quotas", "alice@example.org 0\n"),
        "example.org: quotas line 1: '0' is not a quota in bytes",
    ),
    "quota listed twice": (
        lambda h: _set(h, "example.org", "quotas", "alice@example.org 1024\nalice@example.org 2048\n"),
        "example.org: quotas line 2: alice@example.org is listed twice (also quotas line 1)",
    ),
    "passwd mailbox twice": (
        lambda h: _set(
            h,
            "example.org",
            "passwd",
            f"alice@example.org:{HASH_ALICE_ORG}\nalice@example.org:{HASH_ALICE_COM}\n",
            0o600,
        ),
        "example.org: passwd line 2: alice@example.org is listed twice (also line 1)",
    ),
}


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory, script: Path) -> Path:
    """A root with two domains, assembled once; each refusal test works on a copy."""
    host = Host(tmp_path_factory.mktemp("assembled") / "root", script)
    two_domains(host)
    # example.org also aliases into example.com (for the retired case).
    _set(
        host,
        "example.org",
        "aliases",
        "postmaster@example.org alice@example.org\ninfo@example.org alice@example.org,carol@example.org\n"
        "relay@example.org bob@example.com\n",
    )
    assert_ok(host.run())
    return host.root


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_changes_nothing(tmp_path: Path, script: Path, assembled: Path, case: str) -> None:
    shutil.copytree(assembled, tmp_path / "root")  # contents, modes and mtimes
    host = Host(tmp_path / "root", script)
    before = host.snapshot()
    time.sleep(0.01)  # a replaced file would show a later mtime

    change, message = REFUSALS[case]
    change(host)
    result = host.run()

    assert result.returncode == 1, f"{case}: exit {result.returncode}; stderr:\n{result.stderr}"
    assert message in result.stderr
    assert result.stderr.startswith("mailstack-assemble: ") and result.stderr.count("\n") == 1, result.stderr
    assert host.snapshot() == before
    assert host.leftovers() == []
    for secret in EVERY_HASH:
        assert secret not in result.stderr and secret[:12] not in result.stderr


def test_a_passwd_line_of_a_mailbox_not_listed_is_left_out(host: Host) -> None:
    """A mailbox just taken out of `mailboxes` keeps its passwd line until the passwords unit runs: no login."""
    two_domains(host)
    _set(host, "example.org", "passwd",
         f"alice@example.org:{HASH_ALICE_ORG}\ndave@example.org:{HASH_ALICE_ORG_NEW}\ncarol@example.org:!\n", 0o600)
    result = host.run()
    assert_ok(result)
    users = host.lines(paths.DOVECOT_USERS)
    assert f"alice@example.org:{HASH_ALICE_ORG}::::::" in users and "carol@example.org:!::::::" in users
    assert not [line for line in users if line.startswith("dave@")]
    assert HASH_ALICE_ORG_NEW not in host.path(paths.DOVECOT_USERS).read_text()
    assert not any(h in result.stderr for h in EVERY_HASH)


def test_quotas_reach_dovecot_as_userdb_quota_rules(host: Host) -> None:
    """A mailbox with a quota gets Dovecot's quota rule in the users file; one without has no rule (unlimited)."""
    two_domains(host)
    _set(host, "example.org", "quotas", "# made by the domain stack\nalice@example.org 102400\n")
    result = host.run()
    assert_ok(result)
    assert host.lines(paths.DOVECOT_USERS) == [
        HEADER,
        f"alice@example.com:{HASH_ALICE_COM}::::::",
        f"alice@example.org:{HASH_ALICE_ORG}::::::userdb_quota_rule=*:storage=102400B",
        "carol@example.org:!::::::",
    ]
    # Dropping the quota takes the rule out again.
    _set(host, "example.org", "quotas", "")
    assert_ok(host.run())
    assert f"alice@example.org:{HASH_ALICE_ORG}::::::" in host.lines(paths.DOVECOT_USERS)


# --- --check DOMAIN FOLDER: a domain unit's staged files, checked with every other domain's ----


def _stage(host: Host, tmp_path: Path, domain: str, **files: str) -> Path:
    """A copy of `domain`'s folder, as a domain unit stages it, with `files` (name -> text) replaced."""
    stage = tmp_path / "stage" / paths.domain_dir(domain).lstrip("/")
    shutil.copytree(host.path(paths.domain_dir(domain)), stage)
    for name, text in files.items():
        (stage / name).write_text(text)
    return stage


def _run_with(host: Host, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAILSTACK_ROOT": str(host.root)}
    return subprocess.run(["bash", str(host.script), *args], env=env, capture_output=True, text=True, timeout=60)


def test_check_reads_the_staged_files_and_changes_nothing(host: Host, tmp_path: Path) -> None:
    two_domains(host)
    assert_ok(host.run())
    live = host.path(paths.domain_dir("example.com"))
    before, folder_before = host.snapshot(), {p.name: p.read_bytes() for p in live.iterdir() if p.is_file()}
    time.sleep(0.01)
    # A new alias into example.org and a new mailbox: fine with the other domain's files.
    stage = _stage(host, tmp_path, "example.com",
                   mailboxes="alice@example.com\ndave@example.com\n",
                   aliases="bob@example.com alice@example.com\nteam@example.com dave@example.com,alice@example.org\n")
    result = _run_with(host, "--check", "example.com", str(stage))
    assert_ok(result)
    assert result.stderr == ""
    assert host.snapshot() == before, "a check changes no table"
    assert {p.name: p.read_bytes() for p in live.iterdir() if p.is_file()} == folder_before
    assert host.query(paths.MAILBOXES_TABLE, "dave@example.com") is None
    assert host.leftovers() == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        # An alias into a domain this host does not host (only a hosted domain may be a target).
        ({"aliases": "team@example.com carol@example.net\n"},
         "example.com: aliases line 1: carol@example.net is not a mailbox or alias of a domain hosted here"),
        ({"aliases": "team@example.com dave@example.org\n"}, "example.com: aliases line 1: dave@example.org is not a mailbox or alias"),
        # An address example.org's folder already claims.
        ({"mailboxes": "alice@example.com\n", "aliases": "bob@example.com alice@example.com\n",
          "sender_logins": "carol@example.org alice@example.com\n"},
         "'carol@example.org' is not in example.com"),
    ],
)
def test_check_refuses_staged_files_the_tables_could_not_take(host: Host, tmp_path: Path, files, message) -> None:
    two_domains(host)
    assert_ok(host.run())
    before = host.snapshot()
    stage = _stage(host, tmp_path, "example.com", **files)
    result = _run_with(host, "--check", "example.com", str(stage))
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and result.stderr.startswith("mailstack-assemble: "), result.stderr
    assert host.snapshot() == before
    assert host.leftovers() == []


def test_check_sees_the_live_files_of_the_other_domains(host: Host, tmp_path: Path) -> None:
    """The staged domain's new alias names a mailbox another domain lists only in ITS stage: refused."""
    two_domains(host)
    assert_ok(host.run())
    stage = _stage(host, tmp_path, "example.com", aliases="team@example.com erin@example.org\n")
    _stage(host, tmp_path / "org", "example.org", mailboxes="alice@example.org\ncarol@example.org\nerin@example.org\n")
    result = _run_with(host, "--check", "example.com", str(stage))
    assert result.returncode == 1 and "erin@example.org is not a mailbox or alias" in result.stderr


@pytest.mark.parametrize("args", [["--check", "example.com"], ["--retire"], ["--bogus"], ["extra"]])
def test_wrong_arguments_get_the_usage(host: Host, args: list[str]) -> None:
    two_domains(host)
    result = _run_with(host, *args)
    assert result.returncode == 1
    assert "usage: mailstack-assemble [--check DOMAIN FOLDER | --retire DOMAIN]" in result.stderr
    assert not host.path(paths.DOMAINS_TABLE).exists()


# --- --retire DOMAIN: `pulumi destroy` of a domain stack --------------------------------------------


def test_retire_marks_the_domain_and_refuses_its_mail(host: Host) -> None:
    two_domains(host)  # example.com aliases into example.org; nothing aliases into example.com
    assert_ok(host.run())
    result = _run_with(host, "--retire", "example.com")
    assert_ok(result)
    folder = host.path(paths.domain_dir("example.com"))
    assert (folder / "retired").exists()
    assert host.query(paths.RETIRED_TABLE, "example.com") == "550 5.1.2 example.com is no longer hosted here"
    assert host.query(paths.DOMAINS_TABLE, "example.com") is None
    assert host.query(paths.MAILBOXES_TABLE, "alice@example.com") is None
    assert host.query(paths.ALIASES_TABLE, "team@example.com") is None
    assert not [line for line in host.lines(paths.DOVECOT_USERS) if line.startswith("alice@example.com:")]
    assert "example.com" not in host.path(paths.DKIM_SIGNING_TABLE).read_text()
    # The domain's files, key and passwords stay: a later `pulumi up` brings it back.
    assert {"owner", "mailboxes", "passwd", "dkim"} <= {p.name for p in folder.iterdir()}
    assert host.query(paths.DOMAINS_TABLE, "example.org") == "OK"
    # A run without arguments keeps it retired (the marker).
    assert_ok(host.run())
    assert host.query(paths.DOMAINS_TABLE, "example.com") is None


def test_retire_is_refused_while_another_domain_aliases_into_it(tmp_path: Path, script: Path, assembled: Path) -> None:
    shutil.copytree(assembled, tmp_path / "root")
    host = Host(tmp_path / "root", script)  # example.org's relay@ goes to bob@example.com
    before = host.snapshot()
    result = _run_with(host, "--retire", "example.com")
    assert result.returncode == 1
    assert "example.org: aliases line 3: bob@example.com is in example.com, which is retired" in result.stderr
    assert "take it out of example.org's aliases first" in result.stderr
    assert not host.path(paths.domain_dir("example.com") + "/retired").exists(), "no marker after a refusal"
    assert host.snapshot() == before
    assert host.leftovers() == []


def test_retire_of_a_domain_not_on_the_host_is_refused(host: Host) -> None:
    two_domains(host)
    result = _run_with(host, "--retire", "example.net")
    assert result.returncode == 1
    assert "example.net is not a domain of this host (/etc/mailstack/domains/example.net/owner is missing)" \
        in result.stderr
    assert not host.path(paths.domain_dir("example.net")).exists()


# --- two deployments at once ------------------------------------------------------------------


def test_a_run_waits_for_the_lock(host: Host) -> None:
    two_domains(host)
    lock = host.path(paths.TABLES_LOCK)
    lock.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MAILSTACK_ROOT": str(host.root)}
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another deployment is assembling
        run = subprocess.Popen(["bash", str(host.script)], env=env, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        assert run.poll() is None, "the assembler did not wait for the lock"
        assert not host.path(paths.DOMAINS_TABLE).exists()
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert host.query(paths.DOMAINS_TABLE, "example.org") == "OK"


def test_concurrent_runs_both_succeed_and_both_domains_are_in(host: Host) -> None:
    two_domains(host)
    assert_ok(host.run())
    results: dict[str, subprocess.CompletedProcess] = {}
    start = threading.Barrier(2)

    def deploy(domain: str) -> None:
        start.wait()
        host.write_domain(
            domain,
            mailboxes=[f"dave@{domain}"],
            aliases={f"postmaster@{domain}": f"dave@{domain}"},
            sender_logins={f"dave@{domain}": f"dave@{domain}"},
            passwd={f"dave@{domain}": "!"},
        )
        results[domain] = host.run()

    threads = [threading.Thread(target=deploy, args=(d,)) for d in ("a.example", "b.example")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for domain in ("a.example", "b.example"):
        assert_ok(results[domain])
        assert host.query(paths.DOMAINS_TABLE, domain) == "OK"
        assert host.query(paths.MAILBOXES_TABLE, f"dave@{domain}") == "OK"
        assert f"dave@{domain}:!::::::" in host.lines(paths.DOVECOT_USERS)
    assert host.query(paths.MAILBOXES_TABLE, "alice@example.org") == "OK"
    assert host.leftovers() == []


# --- the script itself ------------------------------------------------------------------------


def test_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n"], input=assembler_script(HOST_NAME, 5000), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is missing (scripts/setup installs it)")
def test_script_passes_shellcheck(tmp_path: Path) -> None:
    path = tmp_path / "mailstack-assemble"
    path.write_text(assembler_script(HOST_NAME, 5000))
    result = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
