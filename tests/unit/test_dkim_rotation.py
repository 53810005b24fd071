"""The DKIM rotation plan (components/dkim_rotation.py): every state a domain's selectors pass through."""

from __future__ import annotations

import pytest

from components.dkim_rotation import Plan, Previous, plan, previous_from_outputs

DAY = 86400.0
NOW = 1_800_000_000.0
WEEK = 7 * DAY


def test_the_first_up_of_a_domain_makes_one_key_that_signs_at_once():
    p = plan("mail", Previous(), WEEK, NOW)
    assert p == Plan(keys=("mail",), signing="mail", wait=False, retired={}, removed=(), previous_signing=None)
    assert p.outputs() == {"mail": {"retired_at": None}}


def test_an_up_without_a_change_keeps_the_one_key_and_does_not_wait():
    p = plan("mail", Previous({"mail": None}, "mail"), WEEK, NOW)
    assert (p.keys, p.signing, p.wait, p.retired, p.removed) == (("mail",), "mail", False, {}, ())


def test_a_new_selector_is_published_beside_the_old_and_signs_after_the_wait():
    p = plan("s2026", Previous({"mail": None}, "mail"), WEEK, NOW)
    assert p.keys == ("s2026", "mail"), "both keys and both records"
    assert (p.signing, p.wait, p.previous_signing) == ("s2026", True, "mail")
    # Retired now, which the stack records only if this up (and so the switch) succeeds.
    assert p.retired == {"mail": NOW} and p.removed == ()
    assert p.outputs() == {"s2026": {"retired_at": None}, "mail": {"retired_at": NOW}}


def test_a_failed_switch_leaves_the_outputs_as_they_were_so_the_next_up_plans_the_same():
    before = Previous({"mail": None}, "mail")
    assert plan("s2026", before, WEEK, NOW + 60) == plan("s2026", before, WEEK, NOW + 60)
    again = plan("s2026", before, WEEK, NOW + 3600)
    assert (again.keys, again.wait, again.retired) == (("s2026", "mail"), True, {"mail": NOW + 3600})


def test_within_retention_the_old_record_and_key_stay_with_their_time():
    after_switch = Previous({"s2026": None, "mail": NOW}, "s2026")
    p = plan("s2026", after_switch, WEEK, NOW + WEEK - 1)
    assert (p.keys, p.wait, p.retired, p.removed) == (("s2026", "mail"), False, {"mail": NOW}, ())


@pytest.mark.parametrize("later", [WEEK, WEEK + 1, 30 * DAY])
def test_after_retention_the_old_selector_is_removed(later):
    p = plan("s2026", Previous({"s2026": None, "mail": NOW}, "s2026"), WEEK, NOW + later)
    assert (p.keys, p.removed, p.retired) == (("s2026",), ("mail",), {})
    assert p.outputs() == {"s2026": {"retired_at": None}}


def test_retention_zero_keeps_a_selector_retired_in_this_up_until_the_next():
    p = plan("s2026", Previous({"mail": None}, "mail"), 0, NOW)
    assert p.keys == ("s2026", "mail") and p.removed == ()
    nxt = plan("s2026", previous_from_outputs(p.outputs(), p.signing, "s2026"), 0, NOW + 1)
    assert (nxt.keys, nxt.removed) == (("s2026",), ("mail",))


def test_going_back_to_a_retired_selector_within_retention_reuses_its_key():
    p = plan("mail", Previous({"s2026": None, "mail": NOW}, "s2026"), WEEK, NOW + DAY)
    assert p.keys == ("mail", "s2026")
    assert (p.signing, p.wait, p.retired) == ("mail", True, {"s2026": NOW + DAY})


def test_a_second_rotation_during_retention_keeps_every_earlier_time():
    p = plan("s2027", Previous({"s2026": None, "mail": NOW}, "s2026"), WEEK, NOW + DAY)
    assert p.keys == ("s2027", "s2026", "mail")
    assert p.retired == {"s2026": NOW + DAY, "mail": NOW}
    assert p.wait and p.previous_signing == "s2026"


def test_only_retired_selectors_past_retention_go_never_the_signing_one():
    p = plan("s2027", Previous({"s2027": None, "s2026": NOW, "mail": NOW - WEEK}, "s2027"), WEEK, NOW + 1)
    assert p.keys == ("s2027", "s2026") and p.removed == ("mail",)
    assert "s2027" not in p.retired


# --- the previous outputs, as the backend gives them back --------------------------------------------


def test_a_stack_without_outputs_has_no_previous_state():
    assert previous_from_outputs(None, None, None) == Previous()


def test_a_stack_from_before_rotations_has_its_one_selector_signing():
    # It exported dkim_selector only: that key exists, and it signs.
    assert previous_from_outputs(None, None, "mail") == Previous({"mail": None}, "mail")
    assert plan("mail", previous_from_outputs(None, None, "mail"), WEEK, NOW).wait is False


def test_outputs_read_back_numbers_as_floats_and_keep_the_order():
    outputs = {"s2026": {"retired_at": None}, "mail": {"retired_at": int(NOW)}}
    assert previous_from_outputs(outputs, "s2026", "s2026") == Previous({"s2026": None, "mail": NOW}, "s2026")


def test_what_a_plan_exports_reads_back_as_the_same_state():
    p = plan("s2026", Previous({"mail": None}, "mail"), WEEK, NOW)
    back = previous_from_outputs(p.outputs(), p.signing, "s2026")
    assert back == Previous({"s2026": None, "mail": NOW}, "s2026")
    assert plan("s2026", back, WEEK, NOW + 60).keys == p.keys


def test_unreadable_outputs_count_as_none():
    assert previous_from_outputs("garbage", 42, "") == Previous()
    assert previous_from_outputs({"mail": "x"}, "mail", "mail") == Previous({"mail": None}, "mail")
