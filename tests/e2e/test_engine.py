"""The real `pulumi` CLI and engine against the lab: what only the engine does.

The CLI is the one scripts/build-pulumi builds (v3.274.1); the program runs
under the Python SDK's own language server (tests/e2e/engine/launcher.py, a
stand-in for the Go language host), and the `command` and `cloudflare`
providers are stand-ins that follow the real ones' rules
(tests/e2e/engine/). State is a local file backend in a temporary folder,
secrets are encrypted with a passphrase.

The tests run in order, on one stack, as a person would use it: config with
the README's commands, preview, up, preview again, one change, a change a
checker refuses, the policy pack, outputs, destroy. The mail behaviours on the
deployed host are the other e2e modules' tests, run with
MAILSTACK_LAB_DEPLOYER=engine (README, "The real engine in the lab").
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
import yaml

from .conftest import run_client, wait_for
from .engine.deployer import REPO, Engine, find_pulumi
from .stack import USERS, e2e_config, password_hash

pytestmark = pytest.mark.skipif(find_pulumi() is None, reason="no Pulumi CLI built: run scripts/setup "
                                                                "(scripts/build-pulumi builds it)")

UNITS = ["packages", "tls", "dkim", "accounts", "opendkim", "policyd-spf", "dovecot", "postfix", "sieve"]
POSTFIX_UNIT = "mail-host-postfix"
COMMAND = "command:remote:Command"
RECORD = "cloudflare:index/dnsRecord:DnsRecord"
SIEVE_UNIT = "mail-host-sieve"
# The config model refuses every Postfix value known to break main.cf; a
# user's Sieve script is the stack's own program, which only sievec judges.
BAD_SIEVE_LINE = 'frobnicate "INBOX";\n'


@pytest.fixture(scope="module")
def engine(lab, world, tmp_path_factory) -> Engine:
    return Engine(tmp_path_factory.mktemp("engine"), stack="e2e").prepare()


@pytest.fixture(scope="module")
def secrets(lab, engine) -> list[str]:
    """Every secret value of the stack: none may appear in a preview, an output or the state in clear."""
    key_lines = [line for line in lab.mx_ssh_private_key.read_text().splitlines() if "PRIVATE KEY" not in line]
    return [*key_lines, *(password_hash(name) for name in USERS), engine.passphrase_file.read_text().strip()]


def leaked(text: str, secrets: list[str]) -> list[str]:
    return [s[:12] + "..." for s in secrets if s and s in text]


def state_text(engine: Engine) -> str:
    """Every state file of the backend, as they are on disk."""
    files = sorted((engine.backend / ".pulumi").rglob("*.json"))
    assert files, f"no state under {engine.backend}"
    return "\n".join(path.read_text() for path in files)


def steps(engine: Engine, *args: str) -> list[dict]:
    """The steps of `pulumi preview --json` (op and urn of each)."""
    result = engine.run(["preview", "--json", *args])
    return json.loads(result.stdout).get("steps", [])


def names(step_list: list[dict], op: str) -> list[str]:
    return sorted(s["urn"].split("::")[-1] for s in step_list if s["op"] == op)


def main_cf_sum(lab) -> str:
    return lab.ssh("sha256sum /etc/postfix/main.cf").stdout.split()[0]


def ehlo(lab) -> str:
    answer = run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=["EHLO peer.example.net", "QUIT"])
    code, text = answer["replies"][0]
    assert code == 250, answer
    return text


# --- 1. stack init and config, as the README's quick start says -------------------------------------


def test_stack_config_with_the_readme_commands_is_encrypted_and_typed_by_pulumi_yaml(lab, engine, secrets):
    readme = (REPO / "README.md").read_text()
    for command in ("pulumi config set --secret ssh_private_key <",
                    "pulumi config set --secret ssh_host_key",
                    "pulumi config set --secret --path 'users[0].password_hash'"):
        assert command in readme, f"the README's quick start no longer says `{command}`"

    engine.write_config(e2e_config(lab))  # the stack file's plain values, then those very commands

    stack_file = engine.stack_file.read_text()
    assert not leaked(stack_file, secrets), "a secret is in the stack file in clear"
    config = yaml.safe_load(stack_file)["config"]
    assert set(config["mailstack:ssh_private_key"]) == {"secure"}
    assert set(config["mailstack:ssh_host_key"]) == {"secure"}
    assert all(set(user["password_hash"]) == {"secure"} for user in config["mailstack:users"])
    got = engine.run(["config", "get", "--path", "users[0].password_hash"]).stdout.strip()
    assert got == password_hash("alice")
    assert engine.run(["config", "get", "ssh_private_key"]).stdout.strip() == \
        lab.mx_ssh_private_key.read_text().strip()

    # Pulumi.yaml's typed `config:` block is the CLI's to enforce: users must be a list of objects.
    engine.run(["config", "set", "users", "alice"])
    refused = engine.run(["preview"], check=False)
    assert refused.returncode != 0
    assert "array<object>" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    engine.write_config(e2e_config(lab))
    assert engine.run(["config", "get", "--path", "users[1].name"]).stdout.strip() == "carol"


# --- 2. preview on a bare host ---------------------------------------------------------------------


def test_preview_diff_lists_every_resource_with_config_lines_and_no_secret(engine, secrets):
    # On a create the CLI shortens each long input to its first lines; --show-full-output shows it all.
    preview = engine.run(["preview", "--diff", "--show-full-output"])
    text = preview.stdout + preview.stderr
    plan = steps(engine)
    created = names(plan, "create")
    assert {f"mail-host-{unit}" for unit in UNITS} <= set(created), created
    records = [s for s in plan if s["op"] == "create" and s["urn"].split("::")[-2].endswith(RECORD)]
    assert len(records) >= 7, created
    for name in created:  # every resource the plan creates is listed in the text a reviewer reads
        assert re.search(rf"^\s*\+ .*\b{re.escape(name)}\b|\[urn=urn:pulumi:.*::{re.escape(name)}\]", text, re.M), name
    # A reviewer reads the service units' config lines, not hashes of them.
    assert "smtpd_banner" in text and "message_size_limit = 25000000" in text, text[-3000:]
    assert "[secret]" in text
    assert not leaked(text, secrets), "a secret is in the preview"


# --- 3. up deploys the lab's mx --------------------------------------------------------------------


def test_up_deploys_mx_and_the_state_keeps_secrets_encrypted(lab, engine, secrets):
    engine.take_runs()
    result = engine.run(["up", "--yes"])
    text = result.stdout + result.stderr
    ran = {run["name"] for run in engine.take_runs()}
    assert {f"mail-host-{unit}" for unit in UNITS} == ran, sorted(ran)
    assert not leaked(text, secrets), "a secret is in the output of `pulumi up`"
    assert lab.ssh("postconf -h myhostname").stdout.strip() == "mail.example.com"
    assert "ESMTP" in run_client(lab, "peer", "dialog", host=lab.mx.ipv4, lines=["QUIT"])["banner"][1]
    state = state_text(engine)
    assert not leaked(state, secrets), "a secret is in the state file in clear"
    assert "ciphertext" in state
    # The DKIM key the host generated is in the published record.
    dkim = engine.resources()[f"{COMMAND}::mail-host-dkim"]["outputs"]["stdout"]
    published = "".join("".join(s) for s in lab.dns_txt("mail._domainkey.example.com"))
    assert "".join(dkim.split()) in published


# --- 4. nothing changed, nothing runs -----------------------------------------------------------------


def test_preview_expects_no_changes_and_a_second_up_runs_no_command(engine):
    engine.run(["preview", "--expect-no-changes"])  # exit 0, or PulumiFailed with the diff
    engine.take_runs()
    result = engine.run(["up", "--yes"])
    assert engine.take_runs() == [], "a command ran on the host with nothing changed"
    assert re.search(r"\b\d+ unchanged\b", result.stdout), result.stdout[-2000:]


# --- 5. one setting changed -----------------------------------------------------------------------------


def test_message_size_limit_change_updates_only_the_postfix_unit_with_one_reload(lab, engine):
    new_size = 31_457_280
    engine.write_config(e2e_config(lab, message_size_limit=new_size))
    try:
        plan = steps(engine)
        assert names(plan, "update") == [POSTFIX_UNIT], plan
        assert [s for s in plan if s["op"] not in ("same", "update")] == [], plan
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
    finally:
        engine.write_config(e2e_config(lab))
        engine.run(["up", "--yes"])
    assert "SIZE 25000000" in ehlo(lab)


# --- 8. a config a checker refuses ---------------------------------------------------------------------


def test_config_sievec_refuses_fails_up_with_its_message_and_mx_keeps_serving(lab, engine):
    users = e2e_config(lab)["mailstack:users"]
    users[0]["sieve"] += BAD_SIEVE_LINE
    served = {path: lab.ssh(f"sha256sum {path}").stdout.split()[0]
              for path in ("/etc/postfix/main.cf", "/etc/dovecot/conf.d/90-sieve.conf", f"/home/{users[0]['name']}/.dovecot.sieve")}
    engine.write_config(e2e_config(lab, users=users))
    try:
        engine.take_runs()
        failed = engine.run(["up", "--yes"], check=False)
        text = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "unknown command 'frobnicate'" in text, text[-3000:]  # sievec's own words
        assert "Process exited with status 1" in text, text[-3000:]
        # The users' Sieve scripts are checked before Dovecot and Postfix take any change.
        assert [run["name"] for run in engine.take_runs()] == [SIEVE_UNIT]
        assert {path: lab.ssh(f"sha256sum {path}").stdout.split()[0] for path in served} == served
        assert "mail.example.com ESMTP" in run_client(lab, "peer", "dialog", host=lab.mx.ipv4,
                                                      lines=["QUIT"])["banner"][1]
    finally:
        engine.write_config(e2e_config(lab))
    # The failed update was not recorded: the good config is what the state holds.
    engine.run(["preview", "--expect-no-changes"])


# --- 6. the policy pack ------------------------------------------------------------------------------------


def test_policy_pack_passes_the_stack_and_refuses_soft_bounce_outside_testing(lab, engine):
    pack = str(REPO / "policy")
    if not (REPO / "policy" / ".venv" / "bin" / "python").exists():
        pytest.skip("policy/.venv is missing: scripts/setup makes it")
    passed = engine.run(["preview", "--policy-pack", pack], check=False)
    assert passed.returncode == 0, passed.stdout[-4000:] + passed.stderr[-2000:]
    assert "mailstack" in passed.stdout  # the pack ran (its name is in the policy summary)

    engine.write_config(e2e_config(lab, soft_bounce=True, testing=False))
    try:
        refused = engine.run(["preview", "--policy-pack", pack], check=False)
        text = refused.stdout + refused.stderr
        assert refused.returncode != 0, text[-3000:]
        assert "soft_bounce = yes, but the stack does not say it is testing" in text, text[-4000:]
        engine.write_config(e2e_config(lab, soft_bounce=True, testing=True))
        allowed = engine.run(["preview", "--policy-pack", pack], check=False)
        assert allowed.returncode == 0, allowed.stdout[-4000:]
    finally:
        engine.write_config(e2e_config(lab))


def test_policy_pack_passes_the_example_stack(lab, engine):
    if not (REPO / "policy" / ".venv" / "bin" / "python").exists():
        pytest.skip("policy/.venv is missing: scripts/setup makes it")
    example = Engine(engine.workdir, stack="example")  # the same project, backend and PULUMI_HOME
    example.stack_file.write_text((REPO / "tests" / "fixtures" / "stacks" / "Pulumi.example.com.yaml").read_text())
    example.init_stack()
    try:
        result = example.run(["preview", "--policy-pack", str(REPO / "policy")], check=False)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    finally:
        example.run(["stack", "rm", "--yes", "--force", "example"], check=False)
        engine.run(["stack", "select", engine.stack])


# --- 7. outputs, then destroy -------------------------------------------------------------------------------


def test_records_output_is_what_dns_serves_and_destroy_removes_records_but_not_mail(lab, engine):
    records = json.loads(engine.run(["stack", "output", "records", "--json"]).stdout)
    assert len(records) >= 7, records
    by_type = {}
    for record in records:
        by_type.setdefault(record["type"], []).append(record)
    assert {"A", "AAAA", "MX", "TXT", "PTR"} <= set(by_type), sorted(by_type)
    mx = by_type["MX"][0]
    assert lab.dns_query("example.com", "MX") == [f"{int(mx['priority'])} {mx['content'].rstrip('.')}."]

    subject = f"before destroy {uuid.uuid4()}"
    sent = run_client(lab, "peer", "send", host=lab.mx.ipv4, mail_from="someone@example.net",
                      rcpt_to=["alice@example.com"],
                      message=f"From: someone@example.net\r\nTo: alice@example.com\r\nSubject: {subject}\r\n\r\nhi\r\n")
    assert sent["ok"], sent
    assert wait_for(lambda: lab.ssh(f"grep -rlF {subject!r} /home/alice/Maildir", check=False).stdout)

    engine.take_runs()
    engine.run(["destroy", "--yes"])
    assert engine.take_runs() == [], "destroy ran a command on the host (units have no delete)"
    assert lab.dns_query("example.com", "MX") == []
    assert lab.dns_query("mail.example.com", "A") == []
    assert lab.dns_txt("mail._domainkey.example.com") == []
    # Mail, keys and accounts stay on the host, as the README promises.
    assert lab.ssh(f"grep -rlF {subject!r} /home/alice/Maildir", check=False).stdout.strip()
    assert lab.ssh("test -s /etc/opendkim/mail.private && test -s /etc/ssl/private/postfix.privkey.pem "
                   "&& getent passwd alice carol >/dev/null", check=False).returncode == 0
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


def test_stand_in_cloudflare_replaces_a_record_on_zone_name_or_type_only(stand_in):
    from pulumi.runtime.proto import provider_pb2

    cloudflare = stand_in("cloudflare_provider")
    urn = f"urn:pulumi:e2e::mailstack::{RECORD}::mail-dns-mx"
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
