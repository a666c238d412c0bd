"""Table-driven tests of the access decision, one row per situation a member meets.

The site (tests/conftest.py) is in Europe/London; Fri 13 Mar 2026 is a
closure day; the clocks go forward at 01:00 UTC on Sun 29 Mar 2026 and back
at 01:00 UTC on Sun 25 Oct 2026.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.credentials import parse_read
from gateway.core.decision import (
    CODE_REASONS,
    DENY_PRECEDENCE,
    REASON_DOCS,
    Conditions,
    Decision,
    Grant,
    Reason,
    decide,
)
from gateway.store.reader import CacheReader

from .conftest import local, utc

# (id, door, credential, instant, reason, grant id, until)
CASES: list[tuple[str, str, str, int, Reason, str | None, int | None]] = [
    # Plans: hours, boundaries, weekends, closure days.
    (
        "plan-in-hours",
        "front",
        "nfc:04000001",
        local("2026-03-10T09:00"),
        Reason.GRANTED_PLAN,
        "e-day",
        local("2026-03-10T20:00"),
    ),
    (
        "plan-opens-at-start",
        "front",
        "nfc:04000001",
        local("2026-03-10T08:00"),
        Reason.GRANTED_PLAN,
        "e-day",
        local("2026-03-10T20:00"),
    ),
    (
        "plan-shut-at-end",
        "front",
        "nfc:04000001",
        local("2026-03-10T20:00"),
        Reason.OUTSIDE_PLAN_HOURS,
        None,
        None,
    ),
    (
        "plan-weekend",
        "front",
        "nfc:04000001",
        local("2026-03-14T10:00"),
        Reason.OUTSIDE_PLAN_HOURS,
        None,
        None,
    ),
    (
        "plan-closure-day",
        "front",
        "nfc:04000001",
        local("2026-03-13T10:00"),
        Reason.SITE_CLOSED,
        None,
        None,
    ),
    (
        "24-7-on-closure-day",
        "lab",
        "nfc:04000003",
        local("2026-03-13T03:00"),
        Reason.GRANTED_PLAN,
        "e-all",
        None,
    ),
    (
        "plan-not-started",
        "front",
        "nfc:0400000E",
        local("2026-03-10T10:00"),
        Reason.PLAN_NOT_STARTED,
        None,
        None,
    ),
    (
        "plan-expired",
        "front",
        "nfc:0400000F",
        local("2026-03-10T10:00"),
        Reason.PLAN_EXPIRED,
        None,
        None,
    ),
    (
        "door-not-in-plan",
        "lab",
        "nfc:04000001",
        local("2026-03-10T10:00"),
        Reason.DOOR_NOT_IN_PLAN,
        None,
        None,
    ),
    (
        "no-entitlement",
        "front",
        "nfc:04000010",
        local("2026-03-10T10:00"),
        Reason.NO_ENTITLEMENT,
        None,
        None,
    ),
    # Overnight ranges.
    (
        "overnight-before-midnight",
        "front",
        "nfc:04000002",
        local("2026-03-10T23:00"),
        Reason.GRANTED_PLAN,
        "e-night",
        local("2026-03-11T06:00"),
    ),
    (
        "overnight-after-midnight",
        "front",
        "nfc:04000002",
        local("2026-03-11T03:00"),
        Reason.GRANTED_PLAN,
        "e-night",
        local("2026-03-11T06:00"),
    ),
    (
        "overnight-not-from-sunday",
        "front",
        "nfc:04000002",
        local("2026-03-09T03:00"),
        Reason.OUTSIDE_PLAN_HOURS,
        None,
        None,
    ),
    (
        "overnight-cut-by-closure",
        "front",
        "nfc:04000002",
        local("2026-03-12T23:00"),
        Reason.GRANTED_PLAN,
        "e-night",
        local("2026-03-13T00:00"),
    ),
    (
        "overnight-inside-closure",
        "front",
        "nfc:04000002",
        local("2026-03-13T03:00"),
        Reason.SITE_CLOSED,
        None,
        None,
    ),
    (
        "overnight-after-closure",
        "front",
        "nfc:04000002",
        local("2026-03-14T03:00"),
        Reason.GRANTED_PLAN,
        "e-night",
        local("2026-03-14T06:00"),
    ),
    # Every credential kind and state.
    (
        "wiegand",
        "front",
        "wiegand:26/012:0345",
        local("2026-03-10T09:00"),
        Reason.GRANTED_PLAN,
        "e-day",
        local("2026-03-10T20:00"),
    ),
    (
        "pin",
        "front",
        "pin:1234",
        local("2026-03-10T09:00"),
        Reason.GRANTED_PLAN,
        "e-day",
        local("2026-03-10T20:00"),
    ),
    (
        "wrong-pin",
        "front",
        "pin:1235",
        local("2026-03-10T09:00"),
        Reason.UNKNOWN_CREDENTIAL,
        None,
        None,
    ),
    (
        "unknown-card",
        "front",
        "nfc:04FFFFFF",
        local("2026-03-10T09:00"),
        Reason.UNKNOWN_CREDENTIAL,
        None,
        None,
    ),
    (
        "revoked-card",
        "front",
        "nfc:04000008",
        local("2026-03-10T09:00"),
        Reason.CREDENTIAL_REVOKED,
        None,
        None,
    ),
    (
        "lost-card",
        "front",
        "nfc:04000009",
        local("2026-03-10T09:00"),
        Reason.CREDENTIAL_LOST,
        None,
        None,
    ),
    (
        "suspended-card",
        "front",
        "nfc:0400000A",
        local("2026-03-10T09:00"),
        Reason.CREDENTIAL_SUSPENDED,
        None,
        None,
    ),
    (
        "card-not-yet-valid",
        "front",
        "nfc:0400000B",
        local("2026-03-10T09:00"),
        Reason.CREDENTIAL_NOT_YET_VALID,
        None,
        None,
    ),
    (
        "card-expired",
        "front",
        "nfc:0400000C",
        local("2026-03-10T09:00"),
        Reason.CREDENTIAL_EXPIRED,
        None,
        None,
    ),
    (
        "member-suspended",
        "front",
        "nfc:04000006",
        local("2026-03-10T09:00"),
        Reason.MEMBER_SUSPENDED,
        None,
        None,
    ),
    (
        "member-cancelled",
        "front",
        "nfc:04000007",
        local("2026-03-10T09:00"),
        Reason.MEMBER_CANCELLED,
        None,
        None,
    ),
    (
        "unknown-door",
        "nope",
        "nfc:04000001",
        local("2026-03-10T09:00"),
        Reason.UNKNOWN_DOOR,
        None,
        None,
    ),
    # Bookings: payment states and grace.
    (
        "booking-paid",
        "room1",
        "nfc:04000005",
        local("2026-03-10T14:30"),
        Reason.GRANTED_BOOKING,
        "b-paid",
        local("2026-03-10T16:15"),
    ),
    (
        "booking-grace-before",
        "room1",
        "nfc:04000005",
        local("2026-03-10T13:50"),
        Reason.GRANTED_BOOKING,
        "b-paid",
        local("2026-03-10T16:15"),
    ),
    (
        "booking-before-grace",
        "room1",
        "nfc:04000005",
        local("2026-03-10T13:49"),
        Reason.BOOKING_NOT_STARTED,
        None,
        None,
    ),
    (
        "booking-grace-after",
        "room1",
        "nfc:04000005",
        local("2026-03-10T16:14"),
        Reason.GRANTED_BOOKING,
        "b-paid",
        local("2026-03-10T16:15"),
    ),
    (
        "booking-after-grace",
        "room1",
        "nfc:04000005",
        local("2026-03-10T16:15"),
        Reason.BOOKING_ENDED,
        None,
        None,
    ),
    (
        "booking-unpaid",
        "room2",
        "nfc:04000005",
        local("2026-03-10T10:30"),
        Reason.BOOKING_UNPAID,
        None,
        None,
    ),
    (
        "booking-refunded",
        "room2",
        "nfc:04000005",
        local("2026-03-11T10:30"),
        Reason.BOOKING_REFUNDED,
        None,
        None,
    ),
    (
        "booking-cancelled",
        "room2",
        "nfc:04000005",
        local("2026-03-12T10:30"),
        Reason.BOOKING_CANCELLED,
        None,
        None,
    ),
    (
        "booking-included",
        "room1",
        "nfc:04000005",
        local("2026-03-11T09:30"),
        Reason.GRANTED_BOOKING,
        "b-included",
        local("2026-03-11T10:00"),
    ),
    (
        "booking-beats-plan-for-reason",
        "room1",
        "nfc:04000005",
        local("2026-03-10T12:00"),
        Reason.BOOKING_NOT_STARTED,
        None,
        None,
    ),
    (
        "plan-still-opens-front",
        "front",
        "nfc:04000005",
        local("2026-03-10T14:30"),
        Reason.GRANTED_PLAN,
        "e-book",
        local("2026-03-10T20:00"),
    ),
    # Passes.
    (
        "pass-in-window",
        "room1",
        "nfc:0400000D",
        local("2026-03-10T10:00"),
        Reason.GRANTED_PASS,
        "inv-1",
        local("2026-03-10T17:00"),
    ),
    (
        "pass-not-started",
        "front",
        "nfc:0400000D",
        local("2026-03-10T08:00"),
        Reason.PASS_NOT_STARTED,
        None,
        None,
    ),
    (
        "pass-expired",
        "front",
        "nfc:0400000D",
        local("2026-03-10T17:00"),
        Reason.PASS_EXPIRED,
        None,
        None,
    ),
    (
        "pass-other-door",
        "room2",
        "nfc:0400000D",
        local("2026-03-10T10:00"),
        Reason.NO_ENTITLEMENT,
        None,
        None,
    ),
    # Spring forward: 01:00 GMT becomes 02:00 BST on Sun 29 Mar 2026.
    # "Sun 00:30-03:00" runs from 00:30 GMT to 03:00 BST: 1.5 real hours.
    (
        "spring-before-gap",
        "front",
        "nfc:04000004",
        utc("2026-03-29T00:45"),
        Reason.GRANTED_PLAN,
        "e-dst",
        utc("2026-03-29T02:00"),
    ),
    (
        "spring-after-gap",
        "front",
        "nfc:04000004",
        utc("2026-03-29T01:30"),
        Reason.GRANTED_PLAN,
        "e-dst",
        utc("2026-03-29T02:00"),
    ),
    (
        "spring-end",
        "front",
        "nfc:04000004",
        utc("2026-03-29T02:00"),
        Reason.OUTSIDE_PLAN_HOURS,
        None,
        None,
    ),
    # "Sun 01:30-04:00": 01:30 does not exist, so it opens at the gap's end (02:00 BST).
    (
        "spring-start-in-gap-before",
        "lab",
        "nfc:04000004",
        utc("2026-03-29T00:59"),
        Reason.OUTSIDE_PLAN_HOURS,
        None,
        None,
    ),
    (
        "spring-start-in-gap-opens",
        "lab",
        "nfc:04000004",
        utc("2026-03-29T01:00"),
        Reason.GRANTED_PLAN,
        "e-gap",
        utc("2026-03-29T03:00"),
    ),
    # Fall back: 02:00 BST becomes 01:00 GMT on Sun 25 Oct 2026.
    # "Sun 00:30-03:00" runs from 00:30 BST to 03:00 GMT: 3.5 real hours.
    (
        "autumn-first-pass",
        "front",
        "nfc:04000004",
        utc("2026-10-25T00:30"),
        Reason.GRANTED_PLAN,
        "e-dst",
        utc("2026-10-25T03:00"),
    ),
    (
        "autumn-second-pass",
        "front",
        "nfc:04000004",
        utc("2026-10-25T01:30"),
        Reason.GRANTED_PLAN,
        "e-dst",
        utc("2026-10-25T03:00"),
    ),
    (
        "autumn-end",
        "front",
        "nfc:04000004",
        utc("2026-10-25T03:00"),
        Reason.OUTSIDE_PLAN_HOURS,
        None,
        None,
    ),
    (
        "autumn-start",
        "front",
        "nfc:04000004",
        utc("2026-10-24T23:30"),
        Reason.GRANTED_PLAN,
        "e-dst",
        utc("2026-10-25T03:00"),
    ),
    # "Sun 00:00-01:30" ends at the *later* 01:30, so it is not cut in two.
    (
        "autumn-end-in-repeated-hour",
        "room1",
        "nfc:04000004",
        utc("2026-10-25T00:45"),
        Reason.GRANTED_PLAN,
        "e-rep",
        utc("2026-10-25T01:30"),
    ),
    (
        "autumn-end-after-repeated-hour",
        "room1",
        "nfc:04000004",
        utc("2026-10-25T01:30"),
        Reason.OUTSIDE_PLAN_HOURS,
        None,
        None,
    ),
]


def _decide(reader: CacheReader, door: str, credential: str, at: int) -> Decision:
    with reader.view() as view:
        return decide(view, parse_read(credential, site_id="t"), door, at)


@pytest.mark.parametrize(
    ("door", "credential", "at", "reason", "grant", "until"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision_table(
    reader: CacheReader,
    door: str,
    credential: str,
    at: int,
    reason: Reason,
    grant: str | None,
    until: int | None,
) -> None:
    d = _decide(reader, door, credential, at)
    assert (d.reason, d.granted) == (reason, reason.granted)
    assert (d.grant.id if d.grant else None) == grant
    assert d.until == until
    assert d.message
    assert d.at == at


def test_every_reason_code_is_documented_and_ranked() -> None:
    # That each one is really returned is checked over the whole suite
    # (tests/reason_coverage.py), not from a list written here.
    assert set(REASON_DOCS) == set(Reason)
    assert all(
        r in DENY_PRECEDENCE
        for r in set(Reason) - CODE_REASONS
        if not r.granted and r.value.split("_")[0] in ("booking", "pass", "plan")
    )


def test_no_data_before_the_first_sync(tmp_path: Any) -> None:
    import asyncio
    from datetime import UTC, datetime

    from gateway.clock import ManualClock
    from gateway.store.writer import CacheWriter

    path = tmp_path / "empty.sqlite3"

    async def create() -> None:
        async with CacheWriter(path, ManualClock(datetime(2026, 3, 1, tzinfo=UTC))):
            pass

    asyncio.run(create())
    reader = CacheReader(path)
    try:
        d = _decide(reader, "front", "nfc:04000001", local("2026-03-10T09:00"))
    finally:
        reader.close()
    assert (d.granted, d.reason) == (False, Reason.NO_DATA)


@pytest.mark.parametrize(
    ("door", "credential", "at", "message"),
    [
        (
            "room1",
            "nfc:04000005",
            local("2026-03-10T12:00"),
            "your booking for Room 1 starts at 14:00; door opens 13:50",
        ),
        (
            "room1",
            "nfc:04000005",
            local("2026-03-10T16:20"),
            "your booking for Room 1 ended at 16:00",
        ),
        ("room2", "nfc:04000005", local("2026-03-10T10:30"), "booking for Room 2 is unpaid"),
        (
            "front",
            "nfc:04000001",
            local("2026-03-10T21:00"),
            "outside plan hours (Mon-Fri 08:00-20:00); opens Wed 11 Mar 08:00",
        ),
        (
            "front",
            "nfc:04000001",
            local("2026-03-12T21:00"),
            # Friday is a closure day, so the next opening is Monday.
            "outside plan hours (Mon-Fri 08:00-20:00); opens Mon 16 Mar 08:00",
        ),
        ("lab", "nfc:04000001", local("2026-03-10T10:00"), "Lab is not in your plan"),
        ("front", "nfc:04000008", local("2026-03-10T10:00"), "card revoked"),
        ("front", "nfc:04FFFFFF", local("2026-03-10T10:00"), "unknown card"),
        ("front", "pin:9999", local("2026-03-10T10:00"), "unknown PIN"),
        ("front", "nfc:04000006", local("2026-03-10T10:00"), "member suspended"),
        ("front", "nfc:04000001", local("2026-03-13T10:00"), "site closed today (Fri 13 Mar)"),
        ("room1", "nfc:04000001", local("2026-03-10T10:00"), "Room 1 is not in your plan"),
        # After the spring change, local times are shown in BST.
        (
            "front",
            "nfc:04000001",
            utc("2026-03-30T06:30"),  # 07:30 BST
            "outside plan hours (Mon-Fri 08:00-20:00); opens 08:00",
        ),
    ],
)
def test_messages_say_exactly_why(
    reader: CacheReader, door: str, credential: str, at: int, message: str
) -> None:
    assert _decide(reader, door, credential, at).message == message


def test_booking_in_another_week_names_the_day(reader: CacheReader) -> None:
    d = _decide(reader, "room1", "nfc:04000005", local("2026-03-03T10:00"))
    assert d.reason is Reason.BOOKING_NOT_STARTED
    assert d.message == "your booking for Room 1 starts at Tue 10 Mar 14:00; door opens 13:50"


def test_the_longest_grant_wins_when_several_apply(make_reader: Any) -> None:
    from .conftest import base_dataset

    doc = base_dataset()
    doc["entitlements"].append({"id": "e-book-all", "member_id": "book_m", "plan_id": "always"})
    reader = make_reader(doc)
    d = _decide(reader, "front", "nfc:04000005", local("2026-03-10T10:00"))
    assert (d.reason, d.grant and d.grant.id, d.until) == (Reason.GRANTED_PLAN, "e-book-all", None)


def test_extended_unlock_is_carried_for_members_who_need_it(make_reader: Any) -> None:
    from .conftest import base_dataset

    doc = base_dataset()
    doc["members"][0]["extended_unlock"] = True  # day_m
    d = _decide(make_reader(doc), "front", "nfc:04000001", local("2026-03-10T10:00"))
    assert d.granted
    assert d.extended_unlock


def test_decide_refuses_a_naive_datetime(reader: CacheReader) -> None:
    from datetime import datetime

    with reader.view() as view, pytest.raises(ValueError, match="naive"):
        decide(view, parse_read("nfc:04000001", site_id="t"), "front", datetime(2026, 3, 10))


def test_a_paid_booking_later_today_beats_an_unpaid_one_tomorrow(make_reader: Any) -> None:
    from .conftest import base_dataset

    doc = base_dataset()
    doc["bookings"].append(
        {
            "id": "b-tomorrow",
            "member_id": "book_m",
            "resource_id": "r1",
            "start": "2026-03-11T14:00:00Z",
            "end": "2026-03-11T15:00:00Z",
            "payment": "unpaid",
        }
    )
    reader = make_reader(doc)
    d = _decide(reader, "room1", "nfc:04000005", local("2026-03-10T12:00"))
    assert d.reason is Reason.BOOKING_NOT_STARTED
    # Once today's booking is over, tomorrow's unpaid one is the nearest news.
    d = _decide(reader, "room1", "nfc:04000005", local("2026-03-11T12:30"))
    assert d.reason is Reason.BOOKING_UNPAID
    assert d.message == "booking for Room 1 at 14:00 is unpaid"


def test_stale_grant_kinds_do_not_open_but_fresh_ones_do(make_reader: Any) -> None:
    from .conftest import base_dataset

    reader = make_reader(base_dataset())
    read = parse_read("nfc:04000005", site_id="t")
    at = local("2026-03-10T14:30")
    with reader.view() as view:
        # book_m has a paid booking for room1 and a plan for the front door.
        assert decide(view, read, "room1", at, Conditions(stale=frozenset({"plan"}))).granted
        stale = decide(view, read, "room1", at, Conditions(stale=frozenset({"booking"})))
        assert (stale.granted, stale.reason) == (False, Reason.DATA_STALE)
        assert stale.message == "access data out of date; please ask staff"
        # Denials that need no fresh data are unchanged.
        other = decide(
            view,
            parse_read("nfc:04000008", site_id="t"),
            "front",
            at,
            Conditions(stale=frozenset({"booking", "plan", "pass"})),
        )
        assert other.reason is Reason.CREDENTIAL_REVOKED


def test_lockdown_lets_only_staff_through(reader: CacheReader) -> None:
    at = local("2026-03-10T10:00")
    with reader.view() as view:
        member = decide(
            view, parse_read("nfc:04000001", site_id="t"), "front", at, Conditions(lockdown=True)
        )
        staff = decide(
            view, parse_read("nfc:04000011", site_id="t"), "front", at, Conditions(lockdown=True)
        )
        revoked = decide(
            view, parse_read("nfc:04000008", site_id="t"), "front", at, Conditions(lockdown=True)
        )
    assert (member.granted, member.reason, member.message) == (
        False,
        Reason.LOCKDOWN,
        "site in lockdown",
    )
    assert (staff.granted, staff.reason) == (True, Reason.GRANTED_PLAN)
    assert revoked.reason is Reason.CREDENTIAL_REVOKED


def test_card_and_pin_doors_want_the_card_holders_own_pin(reader: CacheReader) -> None:
    at = local("2026-03-10T10:00")

    def card_then(pin: str | None, card: str = "nfc:04000001") -> Decision:
        with reader.view() as view:
            return decide(
                view,
                parse_read(card, site_id="t"),
                "front",
                at,
                Conditions(pin_required=True),
                pin=None if pin is None else parse_read(pin, site_id="t"),
            )

    awaiting = card_then(None)
    assert (awaiting.granted, awaiting.reason, awaiting.message) == (
        False,
        Reason.PIN_REQUIRED,
        "enter your PIN",
    )
    assert (awaiting.member_id, awaiting.credential_id) == ("day_m", "c-day")
    opened = card_then("pin:1234")
    assert (opened.granted, opened.reason, opened.grant) == (
        True,
        Reason.GRANTED_PLAN,
        Grant("plan", "e-day"),
    )
    # Someone else's PIN, a revoked PIN of the holder's, an unknown PIN: all wrong.
    for pin in ("pin:5678", "pin:1111", "pin:9999"):
        wrong = card_then(pin)
        assert (wrong.granted, wrong.reason, wrong.message) == (
            False,
            Reason.PIN_MISMATCH,
            "wrong PIN for this card",
        ), pin
        assert wrong.credential_id == "c-day"
    # A card that would not open the door says why; no PIN is asked for.
    assert card_then(None, card="nfc:04000008").reason is Reason.CREDENTIAL_REVOKED
    assert card_then("pin:5678", card="nfc:04000002").reason is Reason.OUTSIDE_PLAN_HOURS
    # A PIN on its own is not enough at such a door.
    with reader.view() as view:
        alone = decide(
            view, parse_read("pin:1234", site_id="t"), "front", at, Conditions(pin_required=True)
        )
    assert (alone.granted, alone.reason) == (False, Reason.CARD_REQUIRED)
