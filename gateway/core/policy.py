"""The rules around a decision: what it is made under, and what follows from it.

:func:`gateway.core.decision.decide` answers one question.  The rules here
are the ones a site operator asks about next, each a pure function of plain
values, readable and testable without a database or an event loop:

* **conditions**: how old the data may be for each kind of grant
  (:func:`stale_kinds`), and the :class:`~gateway.core.decision.Conditions`
  a tap is decided under (:func:`conditions`);
* **feedback**: which light and sound a decision shows (:func:`feedback_for`);
* **keypads**: which outcomes of a typed PIN count as a wrong guess
  (:func:`pin_outcome`);
* **code settlement**: a scanned code's decision once its nonce and its use
  have been recorded, or could not be (:func:`settle_code`);
* **commands**: when a signed command from the platform is refused
  (:func:`command_timing`, :func:`command_action_refusal`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from enum import Enum, StrEnum

from gateway.core.decision import CodeDecision, Conditions, Decision, Reason

# Conditions.


@dataclass(frozen=True, slots=True)
class StalenessLimits:
    """Hours without hearing from the platform before each kind of grant stops
    opening doors (None: no bound); ``staff_hours`` covers every kind for staff."""

    plan_hours: float | None = 72.0
    booking_hours: float | None = 72.0
    pass_hours: float | None = 24.0
    staff_hours: float | None = None


#: The kinds of grant, as :func:`stale_kinds` names them.
GRANT_KINDS = frozenset({"plan", "booking", "pass"})


def data_age(now: int, last_contact: int | None) -> int | None:
    """Seconds since the newest message the platform signed (None: never heard)."""
    return None if last_contact is None else max(0, now - last_contact)


def stale_kinds(
    age: int | None, limits: StalenessLimits | None, *, staff: bool = False
) -> frozenset[str]:
    """The grant kinds whose data, ``age`` seconds old, is older than its bound."""
    if age is None or limits is None:
        return frozenset()
    if staff:
        hours = dict.fromkeys(GRANT_KINDS, limits.staff_hours)
    else:
        hours = {
            "plan": limits.plan_hours,
            "booking": limits.booking_hours,
            "pass": limits.pass_hours,
        }
    return frozenset(k for k, h in hours.items() if h is not None and age > h * 3600)


def conditions(
    *,
    age: int | None,
    limits: StalenessLimits | None,
    lockdown: bool,
    pin_required: bool = False,
    clock_trusted: bool = False,
    code_window: int = 30,
) -> Conditions:
    """What a tap is decided under, from the data's age and the site's state."""
    return Conditions(
        stale=stale_kinds(age, limits),
        stale_staff=stale_kinds(age, limits, staff=True),
        lockdown=lockdown,
        pin_required=pin_required,
        clock_trusted=clock_trusted,
        code_window=code_window,
    )


def at_fault(version: int | None, stale: frozenset[str]) -> bool:
    """True while no grant can open a door for want of data: none yet, or all stale."""
    return version is None or stale >= GRANT_KINDS


# Feedback.


class Pattern(StrEnum):
    """The feedback patterns a door's LEDs, buzzer and OSDP readers can show."""

    GRANTED = "granted"
    DENIED = "denied"
    #: "Not yet", not "no": the member is early for a booking.
    BOOKING_SOON = "booking_soon"
    PIN_NEEDED = "pin_needed"
    #: A card read for enrolment, not decided.
    CARD_READ = "card_read"
    #: The gateway is at fault, not the member.
    FAULT = "fault"


#: Refusals that are the gateway's fault, not the member's: shown as the fault pattern.
GATEWAY_FAULTS = frozenset(
    {Reason.NO_DATA, Reason.DATA_STALE, Reason.CLOCK_UNTRUSTED, Reason.CODE_UNRECORDED}
)


def feedback_for(decision: Decision) -> Pattern:
    """The pattern a member sees and hears for ``decision``."""
    if decision.granted:
        return Pattern.GRANTED
    if decision.reason in GATEWAY_FAULTS:
        return Pattern.FAULT
    if decision.reason is Reason.BOOKING_NOT_STARTED:
        return Pattern.BOOKING_SOON
    if decision.reason is Reason.PIN_REQUIRED:
        return Pattern.PIN_NEEDED
    return Pattern.DENIED


# Keypads.


class PinOutcome(Enum):
    """What a typed PIN's decision means for its keypad's wrong-PIN count."""

    #: Not a usable PIN: counts towards locking the keypad.
    FAILURE = "failure"
    #: A usable PIN (even one that does not open this door now): clears the count.
    SUCCESS = "success"
    #: Says nothing about the PIN (a PIN alone at a card and PIN door).
    NEUTRAL = "neutral"


#: A PIN that is not a usable PIN counts towards locking its keypad; a good PIN
#: that does not open this door now (outside plan hours, say) does not.
PIN_FAILURES = frozenset(
    {
        Reason.UNKNOWN_CREDENTIAL,
        Reason.PIN_MISMATCH,
        Reason.CREDENTIAL_REVOKED,
        Reason.CREDENTIAL_LOST,
        Reason.CREDENTIAL_SUSPENDED,
        Reason.CREDENTIAL_NOT_YET_VALID,
        Reason.CREDENTIAL_EXPIRED,
    }
)


def pin_outcome(reason: Reason) -> PinOutcome:
    """How a typed PIN's decision counts at its keypad."""
    if reason in PIN_FAILURES:
        return PinOutcome.FAILURE
    if reason is Reason.CARD_REQUIRED:
        return PinOutcome.NEUTRAL
    return PinOutcome.SUCCESS


# Scanned codes, settled.


def refused(decision: Decision, reason: Reason, message: str) -> Decision:
    """``decision`` turned into a denial for ``reason`` (same door, instant and holder)."""
    return replace(decision, granted=False, reason=reason, message=message, grant=None, until=None)


#: A pass use that was counted: the uses so far (this one included), or None
#: when none were left.
Uses = int | None


def settle_code(
    result: CodeDecision,
    *,
    replayed: bool = False,
    uses: Uses = None,
    fault: str | None = None,
) -> CodeDecision:
    """A scanned code's decision once what it claims has been recorded.

    ``replayed``: its app-code nonce had been claimed before.  ``uses``: the
    count :meth:`~gateway.store.writer.CacheWriter.use_pass` returned for a
    granted pass with a use limit (None: none left).  ``fault``: the record
    could not be written at all; without the record of nonces and uses a copy
    cannot be told from the original, so the code is refused, and the access
    event says why.
    """
    if fault is not None:
        return result.with_decision(
            refused(result.decision, Reason.CODE_UNRECORDED, "gateway fault; please ask staff"),
            error=fault[:200],
        )
    if replayed:
        return result.with_decision(
            refused(result.decision, Reason.CODE_REPLAYED, "code already used; show a new one")
        )
    if result.decision.granted and result.use is not None:
        if uses is None:
            return result.with_decision(
                refused(result.decision, Reason.PASS_USED_UP, "your pass has been used")
            )
        return result.with_decision(result.decision, use=uses)
    return result


# Commands from the platform.

#: Commands may not be valid for longer than this (seconds): it bounds how long
#: their nonces must be kept.
MAX_COMMAND_LIFETIME = 3600


def command_timing(exp: int, now: int, *, max_lifetime: int = MAX_COMMAND_LIFETIME) -> str | None:
    """Why a command expiring at ``exp`` is refused at ``now`` (None: in time)."""
    if exp < now:
        return "expired"
    if exp > now + max_lifetime:
        return "expiry_too_far"
    return None


#: Actions that move doors: refused while the clock is not trusted, since their
#: expiry cannot be believed then (``resync`` only asks for data, and is taken).
CLOCK_BOUND_ACTIONS = frozenset({"unlock", "lockdown"})

#: The command actions a gateway carries out.
COMMAND_ACTIONS = frozenset({"resync", "unlock", "lockdown"})


def command_action_refusal(
    action: str, *, door: str | None, on: bool | None, driven: Collection[str]
) -> str | None:
    """Why a command that is in time and not replayed cannot be carried out (None: it can)."""
    if action not in COMMAND_ACTIONS:
        return "unsupported"
    if action == "unlock" and (door or "") not in driven:
        return "door_not_driven"
    if action == "lockdown" and on is None:
        return "missing 'on'"
    return None
