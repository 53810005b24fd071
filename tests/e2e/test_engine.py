"""The real `pulumi` CLI and engine against the lab: what only the engine does.

The CLI is the one scripts/build-pulumi builds (v3.274.1); the program runs
under the Python SDK's own language server (tests/e2e/engine/launcher.py, a
stand-in for the Go language host), and the `command` and `cloudflare`
providers are stand-ins that follow the real ones' rules
(tests/e2e/engine/). State is a local file backend in a temporary folder with
the lab's stacks in it: the host stack host-e2e and the domain stacks
example.org and example.com, all encrypted with one passphrase (a domain
stack's StackReference decrypts the host stack's secret outputs with it).

The tests run in order, as a person would use the stacks: config with the
README's commands, preview, up of the host stack, then of each domain stack,
preview again, one change, a change a checker refuses, the policy pack,
outputs, destroy of a domain stack and up again, destroy of the host stack.
The mail behaviours on the deployed host are the other e2e modules' tests,
run with MAILSTACK_LAB_DEPLOYER=engine (README, "The real engine in the lab").
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
import yaml

from .conftest import run_client, wait_for
from .engine.deployer import REPO, Engine, find_pulumi
from .stack import (DEPLOY_ORDER, DOMAIN_SETTINGS, HOST_STACK, HOSTNAME, MAILBOXES, domain_config, host_config,
                    password_hash, stack_users)

pytestmark = pytest.mark.skipif(find_pulumi() is None, reason="no Pulumi CLI built: run scripts/setup "
                                                                "(scripts/build-pulumi builds it)")

HOST_UNITS = ["host-packages", "host-tls", "host-tables", "host-opendkim", "host-policyd-spf", "host-resolver",
              "host-rspamd", "host-dovecot", "host-postfix", "host-fail2ban",
              "host-web"]  # host-web: tls acme (nginx for MTA-STS)
# mta-sts and autoconfig: on an acme host. The DKIM key unit is named by its selector (example.org: s2026).
DOMAIN_UNITS = ["domain-dkim-signing", "domain-files", "domain-passwords", "domain-mta-sts", "domain-autoconfig"]


def domain_units(domain: str) -> list[str]:
    """The units of `domain`'s stack: its DKIM key unit (one selector), then DOMAIN_UNITS."""
    selector = DOMAIN_SETTINGS[domain].get("dkim_selector", "mail")
    return [f"domain-dkim-key-{selector}", *DOMAIN_UNITS]
POSTFIX_UNIT = "host-postfix"
FILES_UNIT = "domain-files"
COMMAND = "command:remote:Command"
RECORD = "cloudflare:index/dnsRecord:DnsRecord"
ORG, COM = "example.org", "example.com"
# The config model refuses every Postfix value known to break main.cf; a
# user's Sieve script is the stack's own program, which only sievec judges.
BAD_SIEVE_LINE = 'frobnicate "INBOX";\n'
# The host stack's name as a StackReference may give it in a file backend: the stack alone
# (this project's), or organization/project/stack.
HOST_STACK_FULL = f"organization/mailstack/{HOST_STACK}"


@pytest.fixture(scope="module")
def engine(lab, world, tmp_path_factory) -> Engine:
    """The host stack's Engine: project, file backend, PULUMI_HOME and passphrase in a temporary folder."""
    return Engine(tmp_path_factory.mktemp("engine"), stack=HOST_STACK).prepare()


@pytest.fixture(scope="module")
def domains(engine) -> dict[str, Engine]:
    """Each domain stack's Engine: the same project, backend and passphrase."""
    return {domain: engine.for_stack(domain) for domain in DEPLOY_ORDER}


@pytest.fixture(scope="module")
def secrets(lab, engine) -> list[str]:
    """Every secret value of the stacks: none may appear in a preview, an output or the state in clear."""
    key_lines = [line for line in lab.mx_ssh_private_key.read_text().splitlines() if "PRIVATE KEY" not in line]
    return [*key_lines, *(password_hash(m.address) for m in MAILBOXES), engine.passphrase_file.read_text().strip()]


def leaked(text: str, secrets: list[str]) -> list[str]:
    return [s[:12] + "..." for s in secrets if s and s in text]


def state_text(engine: Engine) -> str:
    """Every state file of the backend, as they are on disk."""
    files = sorted((engine.backend / ".pulumi").rglob("*.json"))
    assert files, f"no state under {engine.backend}"
    return "\n".join(path.read_text() for path in files)


def stack_checkpoint(engine: Engine) -> dict:
    """The stack's state file as it is on disk (secrets encrypted)."""
    (path,) = (engine.backend / ".pulumi" / "stacks").rglob(f"{engine.stack}.json")
    return json.loads(path.read_text())


def steps(engine: Engine, *args: str) -> list[dict]:
    """The steps of `pulumi preview --json` (op and urn of each)."""
    result = engine.run(["preview", "--json", *args])
    return json.loads(result.stdout).get("steps", [])


def names(step_list: list[dict], op: str) -> list[str]:
    return sorted(s["urn"].split("::")[-1] for s in step_list if s["op"] == op)


def changes(step_list: list[dict]) -> list[tuple[str, str]]:
    """(op, name) of every step that is no `same` (a StackReference's read is no change)."""
    return [(s["op"], s["urn"].split("::")[-1]) for s in step_list if s["op"] not in ("same", "read")]


def ehlo(lab) -> str:
    answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=["EHLO peer.example.net", "QUIT"])
    code, text = answer["replies"][0]
    assert code == 250, answer
    return text


def rcpt(lab, address: str) -> tuple[int, str]:
    """The reply to RCPT TO:<address> from the peer, on port 25."""
    answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4,
                        lines=["EHLO peer.example.net", "MAIL FROM:<someone@example.net>", f"RCPT TO:<{address}>"])
    return tuple(answer["replies"][-1])


def send(lab, address: str, subject: str) -> None:
    sent = run_client(lab, "peer", "send", host=lab.mx.ipv4, mail_from="someone@example.net", rcpt_to=[address],
                      message=f"From: someone@example.net\r\nTo: {address}\r\nSubject: {subject}\r\n\r\nhi\r\n")
    assert sent["ok"], sent


def maildir(address: str) -> str:
    local, domain = address.split("@")
    return f"/var/vmail/{domain}/{local}/Maildir"


def delivered(lab, address: str, subject: str) -> bool:
    return bool(wait_for(lambda: lab.ssh(f"grep -rlF {subject!r} {maildir(address)}", check=False).stdout.strip()))


# --- 1. stack init and config, as the README's quick start says -------------------------------------


def test_stack_config_with_the_readme_commands_is_encrypted_and_typed_by_pulumi_yaml(lab, engine, domains, secrets):
    readme = (REPO / "README.md").read_text()
    for command in ("pulumi config set --secret ssh_private_key <",
                    "pulumi config set --secret ssh_host_key",
                    "pulumi config set --secret --path 'users[0].password_hash'"):
        assert command in readme, f"the README's quick start no longer says `{command}`"

    # The stack files' plain values, then those very commands (the keys in the host stack,
    # the password hashes in each domain stack).
    engine.write_config(host_config(lab))
    for domain, stack in domains.items():
        stack.write_config(domain_config(lab, domain))

    host_file = engine.stack_file.read_text()
    assert not leaked(host_file, secrets), "a secret is in the host stack's file in clear"
    config = yaml.safe_load(host_file)["config"]
    assert set(config["mailstack:ssh_private_key"]) == {"secure"}
    assert set(config["mailstack:ssh_host_key"]) == {"secure"}
    assert engine.run(["config", "get", "ssh_private_key"]).stdout.strip() == \
        lab.mx_ssh_private_key.read_text().strip()
    for domain, stack in domains.items():
        domain_file = stack.stack_file.read_text()
        assert not leaked(domain_file, secrets), f"a secret is in {domain}'s stack file in clear"
        users = yaml.safe_load(domain_file)["config"]["mailstack:users"]
        assert all(set(user["password_hash"]) == {"secure"} for user in users)
        got = stack.run(["config", "get", "--path", "users[0].password_hash"]).stdout.strip()
        assert got == password_hash(f"{users[0]['name']}@{domain}")

    # Pulumi.yaml's typed `config:` block is the CLI's to enforce: users must be a list of objects.
    org = domains[ORG]
    org.run(["config", "set", "users", "alice"])
    refused = org.run(["preview"], check=False)
    assert refused.returncode != 0
    assert "array<object>" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    org.write_config(domain_config(lab, ORG))
    assert org.run(["config", "get", "--path", "users[1].name"]).stdout.strip() == "dave"


# --- 2. preview of the host stack on a bare host -----------------------------------------------------


def test_host_preview_diff_lists_every_resource_with_config_lines_and_no_secret(engine, secrets):
    # On a create the CLI shortens each long input to its first lines; --show-full-output shows it all.
    preview = engine.run(["preview", "--diff", "--show-full-output"])
    text = preview.stdout + preview.stderr
    plan = steps(engine)
    created = names(plan, "create")
    assert set(HOST_UNITS) <= set(created), created
    records = [s for s in plan if s["op"] == "create" and s["urn"].split("::")[-2].endswith(RECORD)]
    assert len(records) >= 3, created  # A, AAAA, the HELO name's SPF (PTRs besides)
    for name in created:  # every resource the plan creates is listed in the text a reviewer reads
        assert re.search(rf"^\s*\+ .*\b{re.escape(name)}\b|\[urn=urn:pulumi:.*::{re.escape(name)}\]", text, re.M), name
    # A reviewer reads the service units' config lines, not hashes of them.
    assert "smtpd_banner" in text and "message_size_limit = 25000000" in text, text[-3000:]
    assert "[secret]" in text
    assert not leaked(text, secrets), "a secret is in the preview"


# --- 3. up of the host stack, then of each domain stack ------------------------------------------------


def test_host_up_deploys_mx_and_the_state_keeps_secrets_encrypted(lab, engine, secrets):
    engine.take_runs()
    result = engine.run(["up", "--yes"])
    text = result.stdout + result.stderr
    assert {run["name"] for run in engine.take_runs()} == set(HOST_UNITS)
    assert not leaked(text, secrets), "a secret is in the output of `pulumi up`"
    assert lab.ssh("postconf -h myhostname").stdout.strip() == HOSTNAME
    assert "ESMTP" in run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=["QUIT"])["banner"][1]
    state = state_text(engine)
    assert not leaked(state, secrets), "a secret is in the state file in clear"
    assert "ciphertext" in state
    outputs = engine.outputs()
    assert outputs["host_id"] == f"mailstack/{HOST_STACK}" and outputs["hostname"] == HOSTNAME
    assert outputs["ssh_private_key"].strip() == lab.mx_ssh_private_key.read_text().strip()
    shown = engine.run(["stack", "output", "--json"]).stdout  # without --show-secrets
    assert json.loads(shown)["ssh_private_key"] == "[secret]" and not leaked(shown, secrets)


def test_domain_preview_shows_mx_and_spf_from_the_host_stacks_outputs(lab, domains, secrets):
    org = domains[ORG]
    plan = steps(org)
    assert set(domain_units(ORG)) <= set(names(plan, "create")), names(plan, "create")
    # The StackReference is read by the engine at preview: the host's name and addresses are known,
    # so the MX and SPF records' contents are in the plan (the DKIM key is not: the host makes it).
    planned = {}
    for step in plan:
        if step["op"] == "create" and step["urn"].split("::")[-2].endswith(RECORD):
            inputs = step.get("newState", {}).get("inputs", {})
            planned[(inputs.get("type"), inputs.get("name"))] = inputs.get("content")
    assert planned[("MX", ORG)] == HOSTNAME, planned
    spf = [c for (rtype, name), c in planned.items() if rtype == "TXT" and name == ORG and "v=spf1" in str(c)]
    assert spf and f"ip4:{lab.mx.ipv4}" in spf[0] and f"ip6:{lab.mx.ipv6}" in spf[0], planned
    text = org.run(["preview", "--diff", "--show-full-output"]).stdout
    assert HOSTNAME in text and f"ip4:{lab.mx.ipv4}" in text, text[-3000:]
    assert not leaked(text, secrets), "a secret (the host stack's SSH key?) is in the domain's preview"


def test_domain_up_deploys_each_domain_with_the_host_stacks_secret_connection(lab, engine, domains, secrets):
    for domain, stack in domains.items():
        stack.take_runs()
        result = stack.run(["up", "--yes"])
        assert not leaked(result.stdout + result.stderr, secrets), f"a secret is in {domain}'s `pulumi up`"
        assert sorted(run["name"] for run in stack.take_runs()) == sorted(domain_units(domain)), domain
    assert not leaked(state_text(engine), secrets), "a secret is in a state file in clear"
    # No sidecar beside the state files (metadata=skip, README "Deploy"): the file backend rewrites
    # it in place, and a domain stack's StackReference reading it half-written fails the `up`.
    assert not list((engine.backend / ".pulumi").rglob("*.attrs"))
    # The connection each domain unit was given (the host stack's private key) is secret in the
    # domain stack's own state: encrypted on disk, as the real pulumi-command keeps it.
    for resource in stack_checkpoint(domains[ORG])["checkpoint"]["latest"]["resources"]:
        if resource["type"] == COMMAND:
            for part in ("inputs", "outputs"):
                connection = resource[part]["connection"]
                assert "ciphertext" in connection and "privateKey" not in json.dumps(connection), resource["urn"]
    # Both domains receive; each DKIM key the host made is in its published record.
    for address in ("alice@example.org", "alice@example.com"):
        subject = f"engine {uuid.uuid4()}"
        send(lab, address, subject)
        assert delivered(lab, address, subject), address
    dkim = domains[ORG].resources()[f"{COMMAND}::domain-dkim-key-s2026"]["outputs"]["stdout"]
    published = "".join("".join(s) for s in lab.dns_txt(f"s2026._domainkey.{ORG}"))
    assert "".join(dkim.split()) in published


def test_host_stack_named_with_or_without_organization_and_project_is_the_same_stack(lab, domains):
    com = domains[COM]
    com.write_config(domain_config(lab, COM, host_stack=HOST_STACK_FULL))
    try:
        assert changes(steps(com)) == [], "the long name of the host stack changed the plan"
    finally:
        com.write_config(domain_config(lab, COM))
    missing = domains[ORG]
    missing.write_config(domain_config(lab, ORG, host_stack="host-none"))
    try:
        refused = missing.run(["preview"], check=False)
        assert refused.returncode != 0 and "host-none" in refused.stdout + refused.stderr, refused.stdout[-2000:]
    finally:
        missing.write_config(domain_config(lab, ORG))


# --- 4. nothing changed, nothing runs -----------------------------------------------------------------


def test_preview_expects_no_changes_and_a_second_up_runs_no_command(engine, domains):
    for stack in (engine, *domains.values()):
        stack.run(["preview", "--expect-no-changes"])  # exit 0, or PulumiFailed with the diff
        stack.take_runs()
        result = stack.run(["up", "--yes"])
        assert stack.take_runs() == [], f"a command ran on the host with nothing changed ({stack.stack})"
        assert re.search(r"\b\d+ unchanged\b", result.stdout), result.stdout[-2000:]


# --- 5. one setting changed -----------------------------------------------------------------------------


def test_message_size_limit_change_updates_only_the_postfix_unit_with_one_reload(lab, engine, domains):
    new_size = 31_457_280
    engine.write_config(host_config(lab, message_size_limit=new_size))
    try:
        plan = steps(engine)
        assert names(plan, "update") == [POSTFIX_UNIT], plan
        assert changes(plan) == [("update", POSTFIX_UNIT)], plan
        diff = engine.run(["preview", "--diff"]).stdout
        assert f"message_size_limit = {new_size}" in diff and "message_size_limit = 25000000" in diff, diff[-3000:]

        engine.take_runs()
        engine.run(["up", "--yes"])
        runs = engine.take_runs()
        assert [run["name"] for run in runs] == [POSTFIX_UNIT], runs
        stderr = runs[0]["stderr"]
        assert stderr.count("reloaded postfix") == 1 and "restarted postfix" not in stderr, stderr
        assert lab.ssh("postconf -h message_size_limit").stdout.strip() == str(new_size)
        assert f"SIZE {new_size}" in ehlo(lab)
        # The domain stacks read none of it: their plans stay empty.
        assert all(changes(steps(stack)) == [] for stack in domains.values())
    finally:
        engine.write_config(host_config(lab))
        engine.run(["up", "--yes"])
    assert "SIZE 25000000" in ehlo(lab)


# --- 6. a config a checker refuses ---------------------------------------------------------------------


def test_config_sievec_refuses_fails_up_with_its_message_and_stops_what_depends_on_it(lab, domains):
    org = domains[ORG]
    users = stack_users(lab, ORG)
    users[0]["sieve"] += BAD_SIEVE_LINE
    users[1]["password_hash"] = password_hash("alice@example.org")  # a change the passwords unit would make
    paths = ("/etc/postfix/main.cf", "/etc/postfix/mailstack/mailboxes", f"{maildir('alice@example.org')}/../.dovecot.sieve",
             f"/etc/mailstack/domains/{ORG}/passwd")
    served = {path: lab.ssh(f"sha256sum {path}").stdout.split()[0] for path in paths}
    org.write_config(domain_config(lab, ORG, users=users))
    try:
        org.take_runs()
        failed = org.run(["up", "--yes"], check=False)
        text = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "unknown command 'frobnicate'" in text, text[-3000:]  # sievec's own words
        assert "Process exited with status 1" in text, text[-3000:]
        # The Sieve scripts are checked before any file of the domain changes; the passwords
        # unit, which depends on the files unit, does not run at all.
        assert [run["name"] for run in org.take_runs()] == [FILES_UNIT]
        assert {path: lab.ssh(f"sha256sum {path}").stdout.split()[0] for path in served} == served
        assert rcpt(lab, "alice@example.org")[0] == 250
    finally:
        org.write_config(domain_config(lab, ORG))
    # The failed update was not recorded: the good config is what the state holds.
    org.run(["preview", "--expect-no-changes"])


# --- 7. the policy pack ------------------------------------------------------------------------------------


def test_policy_pack_passes_the_host_stack_and_refuses_soft_bounce_outside_testing(lab, engine):
    pack = str(REPO / "policy")
    if not (REPO / "policy" / ".venv" / "bin" / "python").exists():
        pytest.skip("policy/.venv is missing: scripts/setup makes it")
    passed = engine.run(["preview", "--policy-pack", pack], check=False)
    assert passed.returncode == 0, passed.stdout[-4000:] + passed.stderr[-2000:]
    assert "mailstack" in passed.stdout  # the pack ran (its name is in the policy summary)

    engine.write_config(host_config(lab, soft_bounce=True, testing=False))
    try:
        refused = engine.run(["preview", "--policy-pack", pack], check=False)
        text = refused.stdout + refused.stderr
        assert refused.returncode != 0, text[-3000:]
        assert "soft_bounce = yes, but the stack does not say it is testing" in text, text[-4000:]
        engine.write_config(host_config(lab, soft_bounce=True, testing=True))
        allowed = engine.run(["preview", "--policy-pack", pack], check=False)
        assert allowed.returncode == 0, allowed.stdout[-4000:]
    finally:
        engine.write_config(host_config(lab))


def test_policy_pack_passes_a_domain_stack(domains):
    if not (REPO / "policy" / ".venv" / "bin" / "python").exists():
        pytest.skip("policy/.venv is missing: scripts/setup makes it")
    passed = domains[ORG].run(["preview", "--policy-pack", str(REPO / "policy")], check=False)
    assert passed.returncode == 0, passed.stdout[-4000:] + passed.stderr[-2000:]


def test_policy_pack_passes_the_example_host_stack(lab, engine):
    if not (REPO / "policy" / ".venv" / "bin" / "python").exists():
        pytest.skip("policy/.venv is missing: scripts/setup makes it")
    example = engine.for_stack("host-mail")  # the same project, backend and PULUMI_HOME
    example.stack_file.write_text((REPO / "tests" / "fixtures" / "stacks" / "Pulumi.host-mail.yaml").read_text())
    example.init_stack()
    try:
        result = example.run(["preview", "--policy-pack", str(REPO / "policy")], check=False)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    finally:
        example.run(["stack", "rm", "--yes", "--force", "host-mail"], check=False)


# --- 7b. a DKIM rotation: the stack reads its own previous outputs ----------------------------------------


def test_a_dkim_rotation_with_the_real_engine(lab, domains):
    """New selector: both keys and records, the switch; retention 0s: the old record and key go; and back."""
    org = domains[ORG]
    selector_file = f"/etc/mailstack/domains/{ORG}/dkim_selector"
    old_key = f"/etc/mailstack/domains/{ORG}/dkim/s2026.private"

    def outputs() -> dict:
        return json.loads(org.run(["stack", "output", "--json"]).stdout)

    def signing_on_host() -> str:
        return lab.ssh(f"grep -v '^#' {selector_file}").stdout.strip()

    try:
        org.write_config(domain_config(lab, ORG, dkim_selector="s2027"))
        org.take_runs()
        org.run(["up", "--yes"])
        ran = [run["name"] for run in org.take_runs()]
        assert "domain-dkim-key-s2027" in ran and "domain-dkim-signing" in ran, ran
        assert signing_on_host() == "s2027"
        out = outputs()  # numbers come back from the backend as floats
        assert out["dkim_signing"] == "s2027" and out["dkim_keys"]["s2027"] == {"retired_at": None}
        assert isinstance(out["dkim_keys"]["s2026"]["retired_at"], (int, float)), out["dkim_keys"]
        assert lab.dns_txt(f"s2026._domainkey.{ORG}") and lab.dns_txt(f"s2027._domainkey.{ORG}")
        org.run(["preview", "--expect-no-changes"])  # the state it left is the state it plans

        org.write_config(domain_config(lab, ORG, dkim_selector="s2027", dkim_retention="0s"))
        org.take_runs()
        org.run(["up", "--yes"])
        assert "domain-dkim-key-s2026" in [run["name"] for run in org.take_runs()], "the old key unit's delete ran"
        assert lab.dns_txt(f"s2026._domainkey.{ORG}") == []
        assert lab.ssh(f"test -e {old_key}", check=False).returncode != 0, "the old private key is still there"
        assert outputs()["dkim_keys"] == {"s2027": {"retired_at": None}}
        subject = f"rotated {uuid.uuid4()}"
        send(lab, "alice@example.org", subject)
        assert delivered(lab, "alice@example.org", subject)
    finally:
        # Back to the stack's own selector (a new key), and s2027 dropped.
        org.write_config(domain_config(lab, ORG, dkim_retention="0s"))
        org.run(["up", "--yes"])
        org.run(["up", "--yes"])
        org.write_config(domain_config(lab, ORG))
        org.run(["up", "--yes"])
        org.take_runs()
    assert signing_on_host() == "s2026"


# --- 8. outputs, then destroy of a domain stack, up again; destroy of the host stack -----------------------


def test_records_output_is_what_dns_serves(lab, engine, domains):
    for stack, zone in ((domains[ORG], ORG), (domains[COM], COM)):
        records = json.loads(stack.run(["stack", "output", "records", "--json"]).stdout)
        by_type = {}
        for record in records:
            by_type.setdefault(record["type"], []).append(record)
        assert {"MX", "TXT"} <= set(by_type), sorted(by_type)
        mx = by_type["MX"][0]
        assert lab.dns_query(zone, "MX") == [f"{int(mx['priority'])} {mx['content'].rstrip('.')}."]
    host_records = json.loads(engine.run(["stack", "output", "records", "--json"]).stdout)
    a = [r for r in host_records if r["type"] == "A"]
    assert a and lab.dns_query(HOSTNAME, "A") == [a[0]["content"]]


def test_destroy_of_a_domain_stack_retires_it_and_up_brings_it_back(lab, engine, domains):
    com, org = domains[COM], domains[ORG]
    subject = f"before destroy {uuid.uuid4()}"
    send(lab, "alice@example.com", subject)
    assert delivered(lab, "alice@example.com", subject)

    com.take_runs()
    destroyed = com.run(["destroy", "--yes"])
    # The engine ran the deletes there are, from the state alone: the MTA-STS and autoconfig
    # units' (their hosts go; the two in either order), then the files unit's (the domain is
    # retired), then the DKIM key unit's. The key unit's delete last: the domain is retired, so
    # its key stays on the host.
    ran = [run["name"] for run in com.take_runs()]
    assert sorted(ran[:2]) == ["domain-autoconfig", "domain-mta-sts"], destroyed.stdout[-3000:]
    assert ran[2:] == [FILES_UNIT, "domain-dkim-key-mail"], destroyed.stdout[-3000:]
    assert lab.ssh(f"test -s /etc/mailstack/domains/{COM}/dkim/mail.private", check=False).returncode == 0
    assert com.resources() == {} or all(not k.startswith((COMMAND, RECORD)) for k in com.resources())
    assert lab.dns_query(COM, "MX") == []
    assert lab.ssh(f"test -e /etc/mailstack/domains/{COM}/retired", check=False).returncode == 0
    code, text = rcpt(lab, "alice@example.com")
    # Refused for good at RCPT, saying why (retired_domains, first in the relay restrictions).
    assert code == 550 and "5.1.2" in text, (code, text)
    # Its mail stays on the host; the host and the other domain keep working.
    assert lab.ssh(f"grep -rlF {subject!r} {maildir('alice@example.com')}", check=False).stdout.strip()
    other = f"after destroy {uuid.uuid4()}"
    send(lab, "alice@example.org", other)
    assert delivered(lab, "alice@example.org", other)
    assert lab.dns_query(ORG, "MX") and lab.dns_query(HOSTNAME, "A")
    for stack in (engine, org):
        stack.run(["preview", "--expect-no-changes"])

    com.write_config(domain_config(lab, COM))
    com.take_runs()
    com.run(["up", "--yes"])
    assert sorted(run["name"] for run in com.take_runs()) == sorted(domain_units(COM))
    assert lab.ssh(f"test -e /etc/mailstack/domains/{COM}/retired", check=False).returncode != 0
    assert rcpt(lab, "alice@example.com")[0] == 250
    back = f"back {uuid.uuid4()}"
    send(lab, "alice@example.com", back)
    assert delivered(lab, "alice@example.com", back)
    assert lab.ssh(f"grep -rlF {subject!r} {maildir('alice@example.com')}", check=False).stdout.strip()


def test_destroy_of_the_host_stack_removes_its_records_and_runs_nothing_on_the_host(lab, engine):
    engine.take_runs()
    engine.run(["destroy", "--yes"])
    assert engine.take_runs() == [], "destroy ran a command on the host (host units have no delete)"
    assert lab.dns_query(HOSTNAME, "A") == []
    # Mail, keys and accounts stay on the host, as the README promises; the domains keep receiving.
    assert lab.ssh("test -s /etc/ssl/private/postfix.privkey.pem && getent passwd vmail >/dev/null",
                   check=False).returncode == 0
    assert rcpt(lab, "alice@example.org")[0] == 250
    assert engine.resources() == {} or all(not k.startswith((COMMAND, RECORD)) for k in engine.resources())


# --- the stand-ins follow the real providers' rules (no lab needed) ------------------------------------------


@pytest.fixture(scope="module")
def stand_in():
    """Start a stand-in provider as the CLI does; a gRPC stub to it."""
    import subprocess
    import sys

    import grpc
    from pulumi.runtime.proto import provider_pb2_grpc

    started = []

    def start(module: str):
        proc = subprocess.Popen([sys.executable, "-m", f"tests.e2e.engine.{module}", "127.0.0.1:1"],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        port = int(proc.stdout.readline())
        return provider_pb2_grpc.ResourceProviderStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

    yield start
    for proc in started:
        proc.terminate()
        proc.wait()


def _struct(values):
    from tests.e2e.engine.standin import to_struct

    return to_struct(values)


def test_stand_in_command_checks_inputs_against_the_sdk_schema_and_diffs_as_pulumi_command(stand_in):
    from pulumi.runtime.proto import provider_pb2

    command = stand_in("command_provider")
    urn = f"urn:pulumi:e2e::mailstack::{COMMAND}::unit"
    good = {"connection": {"host": "198.51.100.10", "port": 22, "user": "root"}, "create": "true"}
    assert list(command.Check(provider_pb2.CheckRequest(urn=urn, type=COMMAND, news=_struct(good))).failures) == []
    bad = {**good, "connection": {**good["connection"], "hostKeyAlgo": "x"}, "script": "true"}
    failures = {f.property for f in command.Check(provider_pb2.CheckRequest(urn=urn, type=COMMAND,
                                                                           news=_struct(bad))).failures}
    assert failures == {"script", "connection.hostKeyAlgo"}
    missing = command.Check(provider_pb2.CheckRequest(urn=urn, type=COMMAND, news=_struct({"create": "true"})))
    assert [f.property for f in missing.failures] == ["connection"]

    def diff(old, new):
        return command.Diff(provider_pb2.DiffRequest(urn=urn, type=COMMAND, olds=_struct(old), news=_struct(new),
                                                     old_inputs=_struct(old)))

    update = diff(good, {**good, "stdin": "new"})
    assert update.changes == provider_pb2.DiffResponse.DIFF_SOME and list(update.replaces) == []
    replace = diff({**good, "triggers": ["a"]}, {**good, "triggers": ["b"]})
    assert list(replace.replaces) == ["triggers"]
    assert diff(good, dict(good)).changes == provider_pb2.DiffResponse.DIFF_NONE
    # A preview runs nothing: stdout is unknown until the command has run.
    preview = command.Create(provider_pb2.CreateRequest(urn=urn, type=COMMAND, properties=_struct(good), preview=True))
    from tests.e2e.engine.standin import UNKNOWN, to_dict

    assert to_dict(preview.properties)["stdout"] == UNKNOWN
    # Delete runs the state's `delete`, and nothing when there is none (no SSH: the host is unreachable).
    unreachable = {**good, "connection": {"host": "198.51.100.254", "port": 1, "user": "root", "dialErrorLimit": 1,
                                          "perDialTimeout": 1}}
    command.Delete(provider_pb2.DeleteRequest(urn=urn, type=COMMAND, id="unit1", properties=_struct(unreachable)))
    import grpc

    with pytest.raises(grpc.RpcError, match="Dial|status 255"):
        command.Delete(provider_pb2.DeleteRequest(urn=urn, type=COMMAND, id="unit1",
                                                  properties=_struct({**unreachable, "delete": "true"})))


def test_stand_in_cloudflare_replaces_a_record_on_zone_name_or_type_only(stand_in):
    from pulumi.runtime.proto import provider_pb2

    cloudflare = stand_in("cloudflare_provider")
    urn = f"urn:pulumi:e2e::mailstack::{RECORD}::domain-dns-mx"
    record = {"zoneId": "example.com", "name": "example.com", "type": "MX", "content": "mail.example.com",
              "priority": 10, "ttl": 1, "proxied": False}
    assert list(cloudflare.Check(provider_pb2.CheckRequest(urn=urn, type=RECORD, news=_struct(record))).failures) == []
    unknown = cloudflare.Check(provider_pb2.CheckRequest(urn=urn, type=RECORD, news=_struct({**record, "value": "x"})))
    assert [f.property for f in unknown.failures] == ["value"]

    def replaces(**change):
        return list(cloudflare.Diff(provider_pb2.DiffRequest(urn=urn, type=RECORD, olds=_struct(record),
                                                             news=_struct({**record, **change}),
                                                             old_inputs=_struct(record))).replaces)

    assert replaces(name="mx.example.com") == ["name"]
    assert replaces(type="TXT") == ["type"]
    assert replaces(zoneId="example.net") == ["zoneId"]
    assert replaces(priority=20) == [] and replaces(content="mx2.example.com") == []
