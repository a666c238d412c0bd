"""The access decision: credential read + door + instant -> :class:`Decision`.

:func:`decide` is pure.  It reads a consistent, read-only :class:`CacheView`
(one SQLite read transaction in the daemon) and the instant it is given; it
never touches the network, never writes and never reads a clock, so the
daemon, ``doorgw explain``, the simulator and the tests all get the same
answer for the same inputs.

When nothing grants access, the member is told the *most useful* reason:
the one closest to opening this door (see :data:`DENY_PRECEDENCE` and
docs/model.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Literal, Protocol

from gateway.core import qr
from gateway.core.credentials import CredentialRead
from gateway.core.jws import KeySet, b64url_decode
from gateway.core.localtime import to_local, wall_to_instant
from gateway.core.model import (
    Booking,
    Credential,
    CredentialKind,
    CredentialStatus,
    Door,
    EntitlementPlan,
    Member,
    MemberStatus,
    Pass,
    PaymentStatus,
    Site,
)

#: How far back bookings and passes are read, so "your booking ended at ..." can be said.
LOOKBACK_SECONDS = 86_400


class Reason(StrEnum):
    """The closed set of reason codes; every decision carries exactly one."""

    GRANTED_BOOKING = "granted_booking"
    GRANTED_PLAN = "granted_plan"
    GRANTED_PASS = "granted_pass"
    NO_DATA = "no_data"
    UNKNOWN_DOOR = "unknown_door"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    CREDENTIAL_REVOKED = "credential_revoked"
    CREDENTIAL_LOST = "credential_lost"
    CREDENTIAL_SUSPENDED = "credential_suspended"
    CREDENTIAL_NOT_YET_VALID = "credential_not_yet_valid"
    CREDENTIAL_EXPIRED = "credential_expired"
    MEMBER_SUSPENDED = "member_suspended"
    MEMBER_CANCELLED = "member_cancelled"
    BOOKING_UNPAID = "booking_unpaid"
    BOOKING_REFUNDED = "booking_refunded"
    BOOKING_CANCELLED = "booking_cancelled"
    BOOKING_NOT_STARTED = "booking_not_started"
    BOOKING_ENDED = "booking_ended"
    PASS_NOT_STARTED = "pass_not_started"
    PASS_EXPIRED = "pass_expired"
    SITE_CLOSED = "site_closed"
    OUTSIDE_PLAN_HOURS = "outside_plan_hours"
    PLAN_NOT_STARTED = "plan_not_started"
    PLAN_EXPIRED = "plan_expired"
    DOOR_NOT_IN_PLAN = "door_not_in_plan"
    NO_ENTITLEMENT = "no_entitlement"
    DATA_STALE = "data_stale"
    LOCKDOWN = "lockdown"
    PIN_REQUIRED = "pin_required"
    PIN_MISMATCH = "pin_mismatch"
    CARD_REQUIRED = "card_required"
    CODE_UNRECOGNISED = "code_unrecognised"
    CODE_MALFORMED = "code_malformed"
    CODE_UNKNOWN_KEY = "code_unknown_key"
    CODE_BAD_SIGNATURE = "code_bad_signature"
    CODE_REPLAYED = "code_replayed"
    CODE_OUTSIDE_WINDOW = "code_outside_window"
    CLOCK_UNTRUSTED = "clock_untrusted"
    PASS_WRONG_SITE = "pass_wrong_site"
    PASS_REVOKED = "pass_revoked"
    PASS_USED_UP = "pass_used_up"
    DOOR_NOT_IN_PASS = "door_not_in_pass"
    CODE_UNRECORDED = "code_unrecorded"

    @property
    def granted(self) -> bool:
        """True for the three ``granted_*`` codes."""
        return self.value.startswith("granted_")


#: One line per reason code, for docs, ``doorgw explain`` and the API.
REASON_DOCS: dict[Reason, str] = {
    Reason.GRANTED_BOOKING: "a paid or plan-included booking of a resource behind this door is on",
    Reason.GRANTED_PLAN: "the member's plan includes this door at this time",
    Reason.GRANTED_PASS: "a day pass or visitor invite covers this door now",
    Reason.NO_DATA: "the gateway has not received any access data yet",
    Reason.UNKNOWN_DOOR: "the door is not in the site's synced data",
    Reason.UNKNOWN_CREDENTIAL: "no member holds this card, PIN or key",
    Reason.CREDENTIAL_REVOKED: "the credential was revoked",
    Reason.CREDENTIAL_LOST: "the credential was reported lost",
    Reason.CREDENTIAL_SUSPENDED: "the credential is suspended",
    Reason.CREDENTIAL_NOT_YET_VALID: "the credential's validity has not started",
    Reason.CREDENTIAL_EXPIRED: "the credential's validity has ended",
    Reason.MEMBER_SUSPENDED: "the member's account is suspended",
    Reason.MEMBER_CANCELLED: "the member's account is cancelled",
    Reason.BOOKING_UNPAID: "the booking for this door is not paid",
    Reason.BOOKING_REFUNDED: "the booking for this door was refunded",
    Reason.BOOKING_CANCELLED: "the booking for this door was cancelled",
    Reason.BOOKING_NOT_STARTED: "the member's booking for this door starts later",
    Reason.BOOKING_ENDED: "the member's booking for this door has ended",
    Reason.PASS_NOT_STARTED: "the member's pass for this door starts later",
    Reason.PASS_EXPIRED: "the member's pass for this door has ended",
    Reason.SITE_CLOSED: "the site is closed today and the plan is not 24/7",
    Reason.OUTSIDE_PLAN_HOURS: "the plan includes this door, but not at this time",
    Reason.PLAN_NOT_STARTED: "the plan that includes this door has not started",
    Reason.PLAN_EXPIRED: "the plan that includes this door has ended",
    Reason.DOOR_NOT_IN_PLAN: "the member's plan does not include this door",
    Reason.NO_ENTITLEMENT: "no booking, plan or pass relates to this door",
    Reason.DATA_STALE: "a grant matched, but the gateway has not heard from the platform "
    "for longer than that kind of grant may be trusted",
    Reason.LOCKDOWN: "the site is in lockdown: only staff credentials open doors",
    Reason.PIN_REQUIRED: "card and PIN door: the card would open it; the member's PIN is "
    "awaited on the keypad",
    Reason.PIN_MISMATCH: "card and PIN door: the PIN typed is not the card holder's active PIN",
    Reason.CARD_REQUIRED: "card and PIN door: a PIN alone, or a signed QR pass, does not open "
    "it; present the card (or app code) first, then type the PIN",
    Reason.CODE_UNRECOGNISED: "the scanned code is not a doorgw pass or app code",
    Reason.CODE_MALFORMED: "the scanned code looks like a doorgw code but does not parse "
    "(damaged, cut short or altered)",
    Reason.CODE_UNKNOWN_KEY: "the pass is signed with a key that is not in the pinned key set",
    Reason.CODE_BAD_SIGNATURE: "the code's signature does not verify: forged or altered",
    Reason.CODE_REPLAYED: "this app code was already used; the app shows a new one every "
    "few seconds",
    Reason.CODE_OUTSIDE_WINDOW: "the app code was made too long ago (or too far ahead) for this "
    "gateway's clock: a screenshot, or a phone with the wrong time",
    Reason.CLOCK_UNTRUSTED: "the gateway cannot vouch for its clock (no NTP, no recent platform "
    "timestamp), so time-bound QR codes are refused",
    Reason.PASS_WRONG_SITE: "the pass was issued for another site",
    Reason.PASS_REVOKED: "the platform withdrew this pass",
    Reason.PASS_USED_UP: "the pass has been used as many times as it allows",
    Reason.DOOR_NOT_IN_PASS: "the pass does not include this door",
    Reason.CODE_UNRECORDED: "the gateway could not record the code's nonce or use (a storage "
    "fault), so it cannot rule out a copy: the door stays shut",
}

#: Among deny reasons about the member's grants, lower ranks win; within a
#: rank, the grant nearest in time wins.  Problems with the credential or the
#: member come first and stop the search, so they are not ranked here.
DENY_PRECEDENCE: dict[Reason, int] = {
    # A booking for this door covers the instant but does not pay for it
    # (at other times, an unpaid booking ranks with the bookings below).
    Reason.BOOKING_UNPAID: 0,
    Reason.BOOKING_REFUNDED: 0,
    Reason.BOOKING_CANCELLED: 0,
    # A booking or pass for this door, at another time.
    Reason.BOOKING_NOT_STARTED: 1,
    Reason.BOOKING_ENDED: 1,
    Reason.PASS_NOT_STARTED: 1,
    Reason.PASS_EXPIRED: 1,
    # A plan that includes this door, at another time.
    Reason.SITE_CLOSED: 2,
    Reason.OUTSIDE_PLAN_HOURS: 2,
    Reason.PLAN_NOT_STARTED: 2,
    Reason.PLAN_EXPIRED: 2,
    # A current plan, but for other doors.
    Reason.DOOR_NOT_IN_PLAN: 3,
}

#: Reasons only a scanned code can get (:func:`decide_code`); they are final,
#: not ranked against the member's other grants.
CODE_REASONS = frozenset(
    {
        Reason.CODE_UNRECOGNISED,
        Reason.CODE_MALFORMED,
        Reason.CODE_UNKNOWN_KEY,
        Reason.CODE_BAD_SIGNATURE,
        Reason.CODE_REPLAYED,
        Reason.CODE_OUTSIDE_WINDOW,
        Reason.CLOCK_UNTRUSTED,
        Reason.PASS_WRONG_SITE,
        Reason.PASS_REVOKED,
        Reason.PASS_USED_UP,
        Reason.DOOR_NOT_IN_PASS,
        Reason.CODE_UNRECORDED,
    }
)

GrantKind = Literal["booking", "plan", "pass"]
_GRANT_ORDER: dict[str, int] = {"booking": 0, "pass": 1, "plan": 2}
_GRANT_REASON = {
    "booking": Reason.GRANTED_BOOKING,
    "plan": Reason.GRANTED_PLAN,
    "pass": Reason.GRANTED_PASS,
}


class CacheView(Protocol):
    """A read-only, consistent view of the cache: all the decision may read."""

    def site(self) -> Site | None:
        """The site, or None before the first dataset arrived."""
        ...

    def door(self, door_id: str) -> Door | None:
        """One door by id."""
        ...

    def resource_name(self, resource_id: str) -> str:
        """A resource's display name (its id when unknown)."""
        ...

    def credential(self, kind: CredentialKind, value: str) -> Credential | None:
        """The credential with this canonical value."""
        ...

    def member(self, member_id: str) -> Member | None:
        """One member by id."""
        ...

    def bookings(self, member_id: str, since: int) -> Sequence[Booking]:
        """The member's bookings that close at or after ``since``, any payment state."""
        ...

    def entitlements(self, member_id: str) -> Sequence[EntitlementPlan]:
        """The member's entitlements with their plans."""
        ...

    def passes(self, member_id: str, since: int) -> Sequence[Pass]:
        """The member's passes valid until at or after ``since``."""
        ...


@dataclass(frozen=True, slots=True)
class Grant:
    """What opened the door: a booking, a plan entitlement or a pass, by id."""

    kind: GrantKind
    id: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one credential read at one door at one instant.

    ``until`` is the instant the matching grant stops holding (None: no end
    known to the gateway).  ``message`` is short and meant for the member.
    """

    granted: bool
    reason: Reason
    message: str
    door_id: str
    at: int
    grant: Grant | None = None
    until: int | None = None
    member_id: str | None = None
    credential_id: str | None = None
    extended_unlock: bool = False


@dataclass(frozen=True, slots=True)
class Conditions:
    """What a decision is made under, besides the cache, the credential and the instant.

    ``stale`` names the grant kinds (``booking``, ``plan``, ``pass``) that may
    not open doors because the data behind them is too old; ``stale_staff``
    does the same for staff members (None: as ``stale``).  During a
    ``lockdown`` only staff members' grants open doors.  ``pin_required``
    marks a card and PIN door.  ``clock_trusted`` says whether time-bound QR
    codes may be checked against the instant, and an app code is accepted
    ``code_window`` seconds either side of its making.
    :func:`gateway.core.policy.conditions` builds one from the gateway's state.
    """

    stale: frozenset[str] = frozenset()
    stale_staff: frozenset[str] | None = None
    lockdown: bool = False
    pin_required: bool = False
    clock_trusted: bool = False
    code_window: int = 30


#: Conditions with nothing out of the ordinary: fresh data, no lockdown.
ORDINARY = Conditions()


def _when(ts: int, at: int, site: Site) -> str:
    """``14:00`` on the same local day as ``at``, ``Thu 17 Dec 14:00`` otherwise."""
    local = to_local(ts, site.tz)
    if local.date() == to_local(at, site.tz).date():
        return local.strftime("%H:%M")
    return local.strftime("%a %d %b %H:%M")


def _deny(
    reason: Reason, message: str, door_id: str, at: int, cred: Credential | None = None
) -> Decision:
    if cred is None:
        return Decision(False, reason, message, door_id, at)
    return Decision(
        False, reason, message, door_id, at, member_id=cred.member_id, credential_id=cred.id
    )


_CREDENTIAL_STATUS = {
    CredentialStatus.REVOKED: (Reason.CREDENTIAL_REVOKED, "card revoked"),
    CredentialStatus.LOST: (Reason.CREDENTIAL_LOST, "card reported lost"),
    CredentialStatus.SUSPENDED: (Reason.CREDENTIAL_SUSPENDED, "card suspended"),
}
_CREDENTIAL_NOUN = {
    CredentialKind.NFC_UID: "card",
    CredentialKind.WIEGAND: "card",
    CredentialKind.PIN: "PIN",
    CredentialKind.APP_KEY: "app key",
}
_PAYMENT_REASON = {
    PaymentStatus.UNPAID: (Reason.BOOKING_UNPAID, "is unpaid"),
    PaymentStatus.REFUNDED: (Reason.BOOKING_REFUNDED, "was refunded"),
    PaymentStatus.CANCELLED: (Reason.BOOKING_CANCELLED, "was cancelled"),
}


def decide(
    view: CacheView,
    read: CredentialRead,
    door_id: str,
    at: datetime | int,
    conditions: Conditions = ORDINARY,
    *,
    pin: CredentialRead | None = None,
) -> Decision:
    """Decide whether ``read`` opens ``door_id`` at instant ``at`` under ``conditions``.

    ``at`` is an aware datetime or Unix seconds.  The result always carries
    one :class:`Reason`; denials carry the most useful one for the member.

    At a card and PIN door (``conditions.pin_required``) ``read`` is the card
    and ``pin`` the PIN typed after it: a card that would open the door gives
    ``pin_required`` until a ``pin`` is given, and then opens only if that PIN
    is an active PIN credential of the same member.
    """
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("decide() needs an aware datetime or Unix seconds, got a naive one")
        ts = int(at.timestamp())
    else:
        ts = at

    site = view.site()
    if site is None:
        return _deny(Reason.NO_DATA, "gateway has no access data yet", door_id, ts)
    door = view.door(door_id)
    if door is None:
        return _deny(Reason.UNKNOWN_DOOR, f"door {door_id!r} is not configured", door_id, ts)
    pin_required = conditions.pin_required
    if pin_required and read.kind is CredentialKind.PIN:
        return _deny(
            Reason.CARD_REQUIRED, "present your card first, then type your PIN", door_id, ts
        )
    cred = view.credential(read.kind, read.value)
    if cred is None and read.legacy is not None:
        cred = view.credential(read.kind, read.legacy)
    noun = _CREDENTIAL_NOUN[read.kind]
    if cred is None:
        return _deny(Reason.UNKNOWN_CREDENTIAL, f"unknown {noun}", door_id, ts)

    unusable = _unusable(cred, noun, site, door_id, ts)
    if unusable is not None:
        return unusable
    member = view.member(cred.member_id)
    if member is None or member.status is MemberStatus.CANCELLED:
        return _deny(Reason.MEMBER_CANCELLED, "membership cancelled", door_id, ts, cred)
    if member.status is MemberStatus.SUSPENDED:
        return _deny(Reason.MEMBER_SUSPENDED, "member suspended", door_id, ts, cred)

    if conditions.lockdown and not member.staff:
        return _deny(Reason.LOCKDOWN, "site in lockdown", door_id, ts, cred)
    stale = conditions.stale
    if member.staff and conditions.stale_staff is not None:
        stale = conditions.stale_staff
    decision = _evaluate_grants(view, site, door, member, cred, ts, stale)
    if not (pin_required and decision.granted):
        return decision
    if pin is None:
        return _deny(Reason.PIN_REQUIRED, "enter your PIN", door_id, ts, cred)
    second = view.credential(pin.kind, pin.value) if pin.kind is CredentialKind.PIN else None
    if second is None and pin.kind is CredentialKind.PIN and pin.legacy is not None:
        second = view.credential(pin.kind, pin.legacy)
    if (
        second is None
        or second.member_id != member.id
        or _unusable(second, "PIN", site, door_id, ts) is not None
    ):
        return _deny(Reason.PIN_MISMATCH, "wrong PIN for this card", door_id, ts, cred)
    return decision


def _unusable(cred: Credential, noun: str, site: Site, door_id: str, ts: int) -> Decision | None:
    """The denial for a credential that is not active or not valid at ``ts``, if any."""
    if cred.status is not CredentialStatus.ACTIVE:
        reason, text = _CREDENTIAL_STATUS[cred.status]
        return _deny(reason, text.replace("card", noun), door_id, ts, cred)
    if cred.valid_from is not None and ts < cred.valid_from:
        return _deny(
            Reason.CREDENTIAL_NOT_YET_VALID,
            f"{noun} valid from {_when(cred.valid_from, ts, site)}",
            door_id,
            ts,
            cred,
        )
    if cred.valid_until is not None and ts >= cred.valid_until:
        return _deny(
            Reason.CREDENTIAL_EXPIRED,
            f"{noun} expired {_when(cred.valid_until, ts, site)}",
            door_id,
            ts,
            cred,
        )
    return None


def _evaluate_grants(
    view: CacheView,
    site: Site,
    door: Door,
    member: Member,
    cred: Credential,
    ts: int,
    stale: frozenset[str],
) -> Decision:
    # Best grant: the longest-holding one (None = open-ended), then booking > pass > plan.
    best: tuple[float, int, Grant, int | None] | None = None
    # Best denial: (rank, distance in seconds, reason, message).
    worst: tuple[int, int, Reason, str] | None = None

    stale_match = False

    def offer(kind: GrantKind, grant_id: str, until: int | None) -> None:
        nonlocal best, stale_match
        if kind in stale:
            stale_match = True
            return
        key = (float("inf") if until is None else until, -_GRANT_ORDER[kind])
        if best is None or key > best[:2]:
            best = (key[0], key[1], Grant(kind, grant_id), until)

    def refuse(reason: Reason, distance: int, message: str, rank: int | None = None) -> None:
        nonlocal worst
        rank = DENY_PRECEDENCE[reason] if rank is None else rank
        candidate = (rank, distance, reason, message)
        if worst is None or candidate[:2] < worst[:2]:
            worst = candidate

    if door.resources:
        for b in view.bookings(member.id, ts - LOOKBACK_SECONDS):
            if b.resource_id not in door.resources:
                continue
            if b.opens_at <= ts < b.closes_at:
                if b.payment.opens_doors:
                    offer("booking", b.id, b.closes_at)
                else:
                    reason, state = _PAYMENT_REASON[b.payment]
                    name = view.resource_name(b.resource_id)
                    refuse(reason, 0, f"booking for {name} {state}")
                continue
            name = view.resource_name(b.resource_id)
            distance = b.opens_at - ts if ts < b.opens_at else ts - b.closes_at
            if not b.payment.opens_doors:
                reason, state = _PAYMENT_REASON[b.payment]
                # Not now, so no better than any other booking at another time.
                refuse(
                    reason,
                    distance,
                    f"booking for {name} at {_when(b.start, ts, site)} {state}",
                    rank=DENY_PRECEDENCE[Reason.BOOKING_NOT_STARTED],
                )
            elif ts < b.opens_at:
                text = f"your booking for {name} starts at {_when(b.start, ts, site)}"
                if b.grace_before:
                    text += f"; door opens {_when(b.opens_at, b.start, site)}"
                refuse(Reason.BOOKING_NOT_STARTED, distance, text)
            else:
                refuse(
                    Reason.BOOKING_ENDED,
                    distance,
                    f"your booking for {name} ended at {_when(b.end, ts, site)}",
                )

    for p in view.passes(member.id, ts - LOOKBACK_SECONDS):
        if not p.covers(door):
            continue
        if p.valid_from <= ts < p.valid_until:
            offer("pass", p.id, p.valid_until)
        elif ts < p.valid_from:
            refuse(
                Reason.PASS_NOT_STARTED,
                p.valid_from - ts,
                f"your {p.name} starts at {_when(p.valid_from, ts, site)}",
            )
        else:
            refuse(
                Reason.PASS_EXPIRED,
                ts - p.valid_until,
                f"your {p.name} ended at {_when(p.valid_until, ts, site)}",
            )

    for ep in view.entitlements(member.id):
        ent, plan = ep.entitlement, ep.plan
        current = (ent.valid_from is None or ent.valid_from <= ts) and (
            ent.valid_until is None or ts < ent.valid_until
        )
        if plan.door_groups.isdisjoint(door.groups):
            if current:
                refuse(Reason.DOOR_NOT_IN_PLAN, 0, f"{door.name} is not in your plan")
            continue
        if ent.valid_from is not None and ts < ent.valid_from:
            refuse(
                Reason.PLAN_NOT_STARTED,
                ent.valid_from - ts,
                f"your {plan.name} plan starts {_when(ent.valid_from, ts, site)}",
            )
            continue
        if ent.valid_until is not None and ts >= ent.valid_until:
            refuse(
                Reason.PLAN_EXPIRED,
                ts - ent.valid_until,
                f"your {plan.name} plan ended {_when(ent.valid_until, ts, site)}",
            )
            continue
        if plan.around_the_clock:
            offer("plan", ent.id, ent.valid_until)
            continue
        closures = site.closures
        span = plan.schedule.span_at(ts, site.tz, closures.__contains__)
        if span is None:
            local = to_local(ts, site.tz)
            if local.date() in closures:
                refuse(Reason.SITE_CLOSED, 0, f"site closed today ({local.strftime('%a %d %b')})")
                continue
            text = f"outside plan hours ({plan.schedule.describe()})"
            nxt = plan.schedule.next_start(local.replace(tzinfo=None), closures.__contains__)
            distance = 0
            if nxt is not None:
                opens = wall_to_instant(nxt, site.tz)
                distance = max(0, opens - ts)
                text += f"; opens {_when(opens, ts, site)}"
            refuse(Reason.OUTSIDE_PLAN_HOURS, distance, text)
            continue
        until = span[1]
        if ent.valid_until is not None and (until is None or ent.valid_until < until):
            until = ent.valid_until
        offer("plan", ent.id, until)

    if best is not None:
        grant, until = best[2], best[3]
        message = "welcome" if until is None else f"welcome, until {_when(until, ts, site)}"
        return Decision(
            True,
            _GRANT_REASON[grant.kind],
            message,
            door.id,
            ts,
            grant=grant,
            until=until,
            member_id=member.id,
            credential_id=cred.id,
            extended_unlock=member.extended_unlock,
        )
    if stale_match:
        return _deny(
            Reason.DATA_STALE, "access data out of date; please ask staff", door.id, ts, cred
        )
    if worst is not None:
        return _deny(worst[2], worst[3], door.id, ts, cred)
    return _deny(
        Reason.NO_ENTITLEMENT, f"no booking, plan or pass for {door.name}", door.id, ts, cred
    )


# Scanned QR codes (docs/credentials.md).


class CodeView(CacheView, Protocol):
    """What deciding a scanned code reads, beyond :class:`CacheView`."""

    def credential_by_id(self, credential_id: str) -> Credential | None:
        """One credential by id (app codes name their key this way)."""
        ...

    def pass_context(
        self, door_id: str, pass_id: str
    ) -> tuple[Site, Door | None, bool, int] | None:
        """All a signed pass is checked against, in one read (None before any data).

        The site, the door, whether the platform withdrew the pass, and how
        often this gateway has let it in.
        """
        ...


@dataclass(frozen=True, slots=True)
class CodeDecision:
    """A scanned code decided, and the state the daemon must update for it.

    ``code`` describes what was scanned, for the access event (read-only).
    ``nonce`` (key, keep until) is set for an app code whose signature and
    window checked out: the daemon claims it, and a nonce already claimed
    turns the decision into ``code_replayed``.  ``use`` (pass id, max uses,
    until) is set for a granted pass with a use limit: the daemon counts the
    use, and finding none left turns the decision into ``pass_used_up``
    (:func:`gateway.core.policy.settle_code`).
    """

    decision: Decision
    code: Mapping[str, object] = field(default_factory=dict)
    nonce: tuple[str, int] | None = None
    use: tuple[str, int, int] | None = None
    #: A verified app code as the credential it stands for.
    read: CredentialRead | None = None

    def __post_init__(self) -> None:
        # A frozen decision stays frozen inside: the code's details cannot change either.
        object.__setattr__(self, "code", MappingProxyType(dict(self.code)))

    def with_decision(self, decision: Decision, **code: object) -> CodeDecision:
        """This code with another decision, and ``code`` added to its details."""
        return replace(self, decision=decision, code={**self.code, **code})


_PASS_NOUN = {
    qr.PassKind.DAY_PASS: "day pass",
    qr.PassKind.VISITOR: "visitor invite",
    qr.PassKind.BOOKING: "booking pass",
}

_CODE_ERROR_REASON = {
    "not_doorgw": (Reason.CODE_UNRECOGNISED, "not a door code"),
    "too_long": (Reason.CODE_UNRECOGNISED, "not a door code"),
    "malformed": (Reason.CODE_MALFORMED, "code damaged or altered; show it again"),
    "unknown_key": (Reason.CODE_UNKNOWN_KEY, "pass not issued by this operator"),
    "bad_signature": (Reason.CODE_BAD_SIGNATURE, "code not genuine"),
}


@dataclass(frozen=True, slots=True)
class VerifiedAppCode:
    """An app code whose signature and time window checked out, not yet decided."""

    credential: Credential
    #: The nonce to claim, and until when it must be kept (Unix seconds).
    nonce: tuple[str, int]
    code: dict[str, object]


def decide_code(
    view: CodeView,
    text: str,
    door_id: str,
    at: datetime | int,
    conditions: Conditions,
    *,
    keys: KeySet,
) -> CodeDecision:
    """Decide a code scanned at ``door_id``: a signed pass or a member-app code.

    Pure, like :func:`decide`: ``conditions.clock_trusted`` says whether
    time-bound codes may be checked against ``at``.  The code's own checks
    are :func:`check_code`; a verified app code is then decided as its
    member's credential, with :func:`decide`.
    """
    checked = check_code(view, text, door_id, at, conditions, keys=keys)
    if isinstance(checked, CodeDecision):
        return checked
    read = CredentialRead(CredentialKind.APP_KEY, checked.credential.value)
    decision = decide(view, read, door_id, _instant(at), conditions)
    return CodeDecision(decision, checked.code, nonce=checked.nonce, read=read)


def _instant(at: datetime | int) -> int:
    return int(at.timestamp()) if isinstance(at, datetime) else at


def check_code(
    view: CodeView,
    text: str,
    door_id: str,
    at: datetime | int,
    conditions: Conditions,
    *,
    keys: KeySet,
) -> CodeDecision | VerifiedAppCode:
    """The checks of the code itself: its layout, signature and validity.

    A signed pass carries its own grant, so its checks are its whole
    decision.  An app code that passes (known app key, genuine, within
    ``conditions.code_window`` of a trusted clock) comes back as a
    :class:`VerifiedAppCode` for its member's access to be decided; one that
    fails is a denial.
    """
    ts = _instant(at)
    try:
        scanned = qr.parse(text)
    except qr.CodeError as exc:
        reason, message = _CODE_ERROR_REASON[exc.reason]
        code: dict[str, object] = {"type": "unknown", "error": str(exc)[:200], "chars": len(text)}
        return CodeDecision(_deny(reason, message, door_id, ts), code)
    if isinstance(scanned.body, qr.SignedPass):
        return _decide_pass(view, scanned, door_id, ts, keys, conditions)
    return _check_app_code(
        view, scanned, door_id, ts, conditions.code_window, conditions.clock_trusted
    )


def _decide_pass(
    view: CodeView,
    scanned: qr.ScannedCode,
    door_id: str,
    ts: int,
    keys: KeySet,
    conditions: Conditions,
) -> CodeDecision:
    body = scanned.body
    assert isinstance(body, qr.SignedPass)
    code: dict[str, object] = {"type": "pass", "pass": body.pass_id, "kind": body.kind.label}
    if body.holder:
        code["holder"] = body.holder

    def deny(reason: Reason, message: str) -> CodeDecision:
        return CodeDecision(_deny(reason, message, door_id, ts), code)

    try:
        qr.verify_pass(scanned, keys)
    except qr.CodeError as exc:
        code["error"] = str(exc)[:200]
        return deny(*_CODE_ERROR_REASON[exc.reason])
    context = view.pass_context(door_id, body.pass_id)
    if context is None:
        return deny(Reason.NO_DATA, "gateway has no access data yet")
    site, door, revoked, uses = context
    if body.site != site.id:
        return deny(Reason.PASS_WRONG_SITE, "pass is for another site")
    if door is None:
        return deny(Reason.UNKNOWN_DOOR, f"door {door_id!r} is not configured")
    if revoked:
        return deny(Reason.PASS_REVOKED, "pass withdrawn; please ask staff")
    if not conditions.clock_trusted:
        return deny(Reason.CLOCK_UNTRUSTED, "gateway clock not verified; please ask staff")
    noun = _PASS_NOUN[body.kind]
    if ts < body.not_before:
        return deny(
            Reason.PASS_NOT_STARTED, f"your {noun} starts at {_when(body.not_before, ts, site)}"
        )
    if ts >= body.not_after:
        return deny(Reason.PASS_EXPIRED, f"your {noun} ended at {_when(body.not_after, ts, site)}")
    if not body.covers(door.id, door.groups, door.resources):
        return deny(Reason.DOOR_NOT_IN_PASS, f"your {noun} does not include {door.name}")
    if conditions.pin_required:
        return deny(Reason.CARD_REQUIRED, "this door needs a member card and PIN")
    if conditions.lockdown:
        return deny(Reason.LOCKDOWN, "site in lockdown")
    if "pass" in conditions.stale:
        return deny(Reason.DATA_STALE, "access data out of date; please ask staff")
    if body.max_uses and uses >= body.max_uses:
        return deny(Reason.PASS_USED_UP, f"your {noun} has been used")
    greeting = f"welcome, {body.holder}" if body.holder else "welcome"
    decision = Decision(
        True,
        Reason.GRANTED_PASS,
        f"{greeting}, until {_when(body.not_after, ts, site)}",
        door.id,
        ts,
        grant=Grant("pass", body.pass_id),
        until=body.not_after,
    )
    use = (body.pass_id, body.max_uses, body.not_after) if body.max_uses else None
    return CodeDecision(decision, code, use=use)


def _check_app_code(
    view: CodeView,
    scanned: qr.ScannedCode,
    door_id: str,
    ts: int,
    window: int,
    clock_trusted: bool,
) -> CodeDecision | VerifiedAppCode:
    body = scanned.body
    assert isinstance(body, qr.AppCode)
    code: dict[str, object] = {"type": "app_code", "credential": body.credential_id}

    def deny(reason: Reason, message: str, cred: Credential | None = None) -> CodeDecision:
        return CodeDecision(_deny(reason, message, door_id, ts, cred), code)

    if view.site() is None:
        return deny(Reason.NO_DATA, "gateway has no access data yet")
    cred = view.credential_by_id(body.credential_id)
    if cred is None or cred.kind is not CredentialKind.APP_KEY:
        return deny(Reason.UNKNOWN_CREDENTIAL, "unknown app key")
    try:
        qr.verify_app_code(scanned, b64url_decode(cred.value))
    except (qr.CodeError, ValueError):
        return deny(Reason.CODE_BAD_SIGNATURE, "code not genuine", cred)
    if not clock_trusted:
        return deny(Reason.CLOCK_UNTRUSTED, "gateway clock not verified; please ask staff", cred)
    if abs(ts - body.issued_at) > window:
        code["age_s"] = ts - body.issued_at
        return deny(Reason.CODE_OUTSIDE_WINDOW, "code out of date; check your phone's clock", cred)
    return VerifiedAppCode(
        cred, (f"app:{cred.id}:{body.nonce.hex()}", body.issued_at + window), code
    )
