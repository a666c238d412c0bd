"""The rules around a decision (gateway.core.policy), alone: no SQLite, no event loop."""

from __future__ import annotations

import pytest

from gateway.core import policy
from gateway.core.decision import CodeDecision, Conditions, Decision, Grant, Reason
from gateway.core.policy import Pattern, PinOutcome, StalenessLimits

HOUR = 3600
LIMITS = StalenessLimits(plan_hours=72, booking_hours=48, pass_hours=24, staff_hours=None)


@pytest.mark.parametrize(
    ("age", "stale"),
    [
        (None, set()),  # never heard: nothing to be stale against
        (0, set()),
        (24 * HOUR, set()),  # the bound itself still holds
        (24 * HOUR + 1, {"pass"}),
        (48 * HOUR + 1, {"pass", "booking"}),
        (72 * HOUR + 1, {"pass", "booking", "plan"}),
    ],
)
def test_each_kind_of_grant_goes_stale_after_its_own_bound(
    age: int | None, stale: set[str]
) -> None:
    assert policy.stale_kinds(age, LIMITS) == stale


def test_staff_keep_their_access_unless_a_staff_bound_is_set() -> None:
    assert policy.stale_kinds(1000 * HOUR, LIMITS, staff=True) == frozenset()
    bounded = StalenessLimits(staff_hours=100)
    assert policy.stale_kinds(100 * HOUR + 1, bounded, staff=True) == policy.GRANT_KINDS
    assert policy.stale_kinds(100 * HOUR, bounded, staff=True) == frozenset()


def test_no_limits_configured_means_nothing_is_ever_stale() -> None:
    assert policy.stale_kinds(10**9, None) == frozenset()


def test_data_age_is_never_negative_and_unknown_before_any_contact() -> None:
    assert policy.data_age(1000, None) is None
    assert policy.data_age(1000, 400) == 600
    assert policy.data_age(1000, 1200) == 0  # a platform clock a little ahead


def test_conditions_carry_the_site_state_and_both_staleness_sets() -> None:
    c = policy.conditions(
        age=30 * HOUR,
        limits=LIMITS,
        lockdown=True,
        pin_required=True,
        clock_trusted=True,
        code_window=45,
    )
    assert c == Conditions(
        stale=frozenset({"pass"}),
        stale_staff=frozenset(),
        lockdown=True,
        pin_required=True,
        clock_trusted=True,
        code_window=45,
    )


def test_the_gateway_is_at_fault_without_data_or_when_every_kind_is_stale() -> None:
    assert policy.at_fault(None, frozenset())
    assert policy.at_fault(7, policy.GRANT_KINDS)
    assert not policy.at_fault(7, frozenset({"pass", "booking"}))


def _decision(reason: Reason, **kw: object) -> Decision:
    return Decision(reason.granted, reason, "msg", "front", 1000, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "pattern"),
    [
        (Reason.GRANTED_BOOKING, Pattern.GRANTED),
        (Reason.GRANTED_PASS, Pattern.GRANTED),
        (Reason.NO_DATA, Pattern.FAULT),
        (Reason.DATA_STALE, Pattern.FAULT),
        (Reason.CLOCK_UNTRUSTED, Pattern.FAULT),
        (Reason.CODE_UNRECORDED, Pattern.FAULT),
        (Reason.BOOKING_NOT_STARTED, Pattern.BOOKING_SOON),
        (Reason.PIN_REQUIRED, Pattern.PIN_NEEDED),
        (Reason.UNKNOWN_CREDENTIAL, Pattern.DENIED),
        (Reason.LOCKDOWN, Pattern.DENIED),
    ],
)
def test_each_decision_shows_its_pattern(reason: Reason, pattern: Pattern) -> None:
    assert policy.feedback_for(_decision(reason)) is pattern


def test_every_refusal_shows_some_pattern_and_only_grants_show_green() -> None:
    for reason in Reason:
        shown = policy.feedback_for(_decision(reason))
        assert (shown is Pattern.GRANTED) == reason.granted


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        (Reason.UNKNOWN_CREDENTIAL, PinOutcome.FAILURE),
        (Reason.PIN_MISMATCH, PinOutcome.FAILURE),
        (Reason.CREDENTIAL_REVOKED, PinOutcome.FAILURE),
        (Reason.CREDENTIAL_EXPIRED, PinOutcome.FAILURE),
        # A good PIN that does not open this door now is not a guess.
        (Reason.OUTSIDE_PLAN_HOURS, PinOutcome.SUCCESS),
        (Reason.GRANTED_PLAN, PinOutcome.SUCCESS),
        # A PIN alone at a card and PIN door says nothing about the PIN.
        (Reason.CARD_REQUIRED, PinOutcome.NEUTRAL),
    ],
)
def test_which_pin_outcomes_count_as_wrong_guesses(reason: Reason, outcome: PinOutcome) -> None:
    assert policy.pin_outcome(reason) is outcome


PASS_GRANT = _decision(Reason.GRANTED_PASS, grant=Grant("pass", "dp-1"), until=5000)


def _pass_code(use: tuple[str, int, int] | None = ("dp-1", 3, 5000)) -> CodeDecision:
    return CodeDecision(PASS_GRANT, {"type": "pass", "pass": "dp-1"}, use=use)


def test_a_counted_use_stays_granted_and_says_which_use_it_was() -> None:
    settled = policy.settle_code(_pass_code(), uses=2)
    assert settled.decision == PASS_GRANT
    assert settled.code == {"type": "pass", "pass": "dp-1", "use": 2}


def test_a_pass_with_no_uses_left_is_refused_as_used_up() -> None:
    settled = policy.settle_code(_pass_code(), uses=None)
    assert (settled.decision.granted, settled.decision.reason) == (False, Reason.PASS_USED_UP)
    assert settled.decision.grant is None
    assert settled.decision.until is None


def test_a_replayed_app_code_is_refused_whatever_it_would_have_granted() -> None:
    code = CodeDecision(_decision(Reason.GRANTED_PLAN), {"type": "app_code"}, nonce=("n", 9))
    settled = policy.settle_code(code, replayed=True)
    assert (settled.decision.granted, settled.decision.reason) == (False, Reason.CODE_REPLAYED)


def test_an_unrecordable_code_fails_closed_and_the_event_says_why() -> None:
    settled = policy.settle_code(_pass_code(), uses=2, fault="database or disk is full" * 20)
    assert (settled.decision.granted, settled.decision.reason) == (False, Reason.CODE_UNRECORDED)
    assert str(settled.code["error"]).startswith("database or disk is full")
    assert len(str(settled.code["error"])) == 200


def test_a_code_without_a_use_limit_is_settled_as_it_was() -> None:
    code = _pass_code(use=None)
    assert policy.settle_code(code, uses=None) is code


def test_settling_never_changes_the_decision_it_was_given() -> None:
    original = _pass_code()
    policy.settle_code(original, uses=None)
    policy.settle_code(original, fault="x")
    assert original.decision == PASS_GRANT
    assert original.code == {"type": "pass", "pass": "dp-1"}
    with pytest.raises(TypeError):
        original.code["use"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("exp", "refusal"),
    [
        (999, "expired"),
        (1000, None),  # expiring this second is still in time
        (1000 + policy.MAX_COMMAND_LIFETIME, None),
        (1001 + policy.MAX_COMMAND_LIFETIME, "expiry_too_far"),
    ],
)
def test_commands_are_refused_outside_their_lifetime(exp: int, refusal: str | None) -> None:
    assert policy.command_timing(exp, 1000) == refusal


@pytest.mark.parametrize(
    ("action", "door", "on", "refusal"),
    [
        ("resync", None, None, None),
        ("unlock", "front", None, None),
        ("unlock", "attic", None, "door_not_driven"),
        ("unlock", None, None, "door_not_driven"),
        ("lockdown", None, True, None),
        ("lockdown", None, False, None),
        ("lockdown", None, None, "missing 'on'"),
        ("reboot", None, None, "unsupported"),
    ],
)
def test_what_each_command_action_needs(
    action: str, door: str | None, on: bool | None, refusal: str | None
) -> None:
    driven = {"front"}
    assert policy.command_action_refusal(action, door=door, on=on, driven=driven) == refusal
