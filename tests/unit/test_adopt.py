"""mailstack:adopt: a host stack takes over the host of a single-domain stack (README,
"Moving a host to the multi-domain layout"). The mail itself moves in the lab
(tests/e2e/test_migration.py); here: the key, and the host stack's owner check."""

from __future__ import annotations

import subprocess

import pytest

from components.config import ConfigError, load_config
from components.render import render_template

HOST = {
    "mailstack:hostname": "mail.example.com",
    "mailstack:ipv4": ["192.0.2.10"],
    "mailstack:postmaster_address": "alice@example.com",
}
HOST_STACK = "mailstack/host-mail"


def test_adopt_is_empty_by_default_and_takes_a_project_and_stack():
    assert load_config(HOST).adopt == ""
    assert load_config({**HOST, "mailstack:adopt": "mailstack/example.com"}).adopt == "mailstack/example.com"


@pytest.mark.parametrize("value", ["example.com", "mailstack/example.com/x", "mailstack/", "mailstack/a b"])
def test_adopt_refuses_what_no_owner_file_holds(value):
    with pytest.raises(ConfigError) as err:
        load_config({**HOST, "mailstack:adopt": value})
    assert err.value.problems[0].startswith("mailstack:adopt: ")
    assert "expected <project>/<stack>, e.g. mailstack/example.com" in err.value.problems[0]


def test_adopt_is_a_host_stack_key():
    with pytest.raises(ConfigError) as err:
        load_config({"mailstack:domain": "example.com", "mailstack:host_stack": "host-mail",
                     "mailstack:users": [{"name": "alice"}], "mailstack:adopt": "mailstack/example.com"})
    assert err.value.problems == [
        "mailstack:adopt: is a host-stack key; set it in the host stack (mailstack:host_stack names it)"
    ]


def _owner_check(tmp_path, adopt: str) -> subprocess.CompletedProcess:
    """The host stack's owner check, run against a folder of the test's own in place of /etc/mailstack."""
    check = render_template("units/owner.sh.j2", host_name="mail.example.com", owner=HOST_STACK, adopt=adopt)
    check = check.replace("/etc/mailstack", str(tmp_path / "mailstack")) + "echo converging\n"
    return subprocess.run(["bash", "-c", check], capture_output=True, text=True)


def _old_layout(tmp_path):
    (tmp_path / "mailstack").mkdir()
    (tmp_path / "mailstack" / "owner").write_text("mailstack/example.com\n")


@pytest.mark.parametrize("adopt", ["", "mailstack/example.org"])
def test_a_host_of_the_old_layout_is_refused_unless_adopt_names_its_stack(tmp_path, adopt):
    _old_layout(tmp_path)
    run = _owner_check(tmp_path, adopt)
    assert run.returncode == 1 and run.stdout == ""
    assert "single-domain stack mailstack/example.com" in run.stderr
    assert "mailstack:adopt set to mailstack/example.com" in run.stderr
    assert sorted(p.name for p in (tmp_path / "mailstack").iterdir()) == ["owner"]  # nothing changed


def test_adopt_claims_the_host_and_keeps_the_old_claim_renamed(tmp_path):
    _old_layout(tmp_path)
    run = _owner_check(tmp_path, "mailstack/example.com")
    assert run.returncode == 0 and run.stdout == "converging\n", run.stderr
    folder = tmp_path / "mailstack"
    assert sorted(p.name for p in folder.iterdir()) == ["host", "owner.pre-multidomain"]
    assert (folder / "host").read_text() == f"{HOST_STACK}\n"
    assert (folder / "owner.pre-multidomain").read_text() == "mailstack/example.com\n"
    again = _owner_check(tmp_path, "mailstack/example.com")  # every later unit, and the next `up`
    assert again.returncode == 0 and again.stdout == "converging\n" and "adopted" not in again.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["host", "owner.pre-multidomain"]
