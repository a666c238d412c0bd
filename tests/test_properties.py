"""Property-based tests: the decision and the access listing agree, everywhere.

Hypothesis draws small random sites (schedules with overnight ranges,
closures, validity bounds, bookings in every payment state, passes) in zones
with and without daylight saving (Lord Howe shifts by 30 minutes), and taps
at instants clustered around the 2026 clock changes.  For every tap:

* a grant implies the instant lies in one of the member's listed windows for
  that door, from the same grant, and the grant still holds a second before
  its ``until``;
* conversely, a usable credential tapped inside a listed window is granted;
* only paid or plan-included bookings ever grant; the answer is repeatable.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.core.access import member_access
from gateway.core.credentials import parse_read
from gateway.core.decision import Reason, decide
from gateway.store.reader import CacheReader

from .conftest import write_cache

ZONES = ["Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
# Periods around the 2026 clock changes of those zones.
PERIODS = [
    (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 12, tzinfo=UTC)),
    (datetime(2026, 9, 27, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC)),
]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


@st.composite
def instants(draw: st.DrawFn) -> int:
    start, end = draw(st.sampled_from(PERIODS))
    offset = draw(st.integers(0, int((end - start).total_seconds()) // 900)) * 900
    return int(start.timestamp()) + offset + draw(st.sampled_from([0, 1, 899]))


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@st.composite
def clock_times(draw: st.DrawFn) -> str:
    h = draw(st.integers(0, 23))
    m = draw(st.sampled_from([0, 15, 30, 45]))
    return f"{h:02d}:{m:02d}"


@st.composite
def schedule_entries(draw: st.DrawFn) -> str:
    first = draw(st.integers(0, 6))
    last = draw(st.integers(0, 6))
    days = DAYS[first] if first == last else f"{DAYS[first]}-{DAYS[last]}"
    start = draw(clock_times())
    end = draw(clock_times() | st.just("24:00"))
    if end == start:
        end = "24:00" if start != "00:00" else "12:00"
    return f"{days} {start}-{end}"


@st.composite
def windows(draw: st.DrawFn, optional: bool) -> tuple[str | None, str | None]:
    if optional and draw(st.booleans()):
        return None, None
    a = draw(instants())
    b = a + draw(st.integers(1, 40 * 96)) * 900
    lo = None if optional and draw(st.booleans()) else iso(a)
    hi = None if optional and draw(st.booleans()) else iso(b)
    return lo, hi


@st.composite
def datasets(draw: st.DrawFn) -> dict[str, Any]:
    zone = draw(st.sampled_from(ZONES))
    closures = draw(
        st.lists(st.dates(min_value=date(2026, 3, 1), max_value=date(2026, 11, 8)), max_size=4)
    )
    plans, entitlements = [], []
    for i in range(draw(st.integers(0, 3))):
        plans.append(
            {
                "id": f"p{i}",
                "name": f"Plan {i}",
                "door_groups": draw(
                    st.lists(st.sampled_from(["g1", "g2"]), min_size=1, max_size=2, unique=True)
                ),
                "schedule": draw(st.lists(schedule_entries(), max_size=3)),
                "around_the_clock": draw(st.integers(0, 9)) == 0,
            }
        )
        lo, hi = draw(windows(optional=True))
        entitlements.append(
            {
                "id": f"e{i}",
                "member_id": "m",
                "plan_id": f"p{i}",
                "valid_from": lo,
                "valid_until": hi,
            }
        )
    bookings = []
    for i in range(draw(st.integers(0, 3))):
        start = draw(instants())
        bookings.append(
            {
                "id": f"b{i}",
                "member_id": "m",
                "resource_id": draw(st.sampled_from(["r1", "r2"])),
                "start": iso(start),
                "end": iso(start + draw(st.integers(1, 20)) * 900),
                "payment": draw(
                    st.sampled_from(["paid", "included_in_plan", "unpaid", "refunded", "cancelled"])
                ),
                "grace_before_min": draw(st.sampled_from([0, 10, 30])),
                "grace_after_min": draw(st.sampled_from([0, 15])),
            }
        )
    passes = []
    for i in range(draw(st.integers(0, 2))):
        lo, hi = draw(windows(optional=False))
        passes.append(
            {
                "id": f"x{i}",
                "member_id": "m",
                "kind": "day_pass",
                "doors": draw(st.lists(st.sampled_from(["d1", "d2", "d3"]), max_size=2)),
                "door_groups": ["g2"],
                "valid_from": lo,
                "valid_until": hi,
            }
        )
    cred_from, cred_until = (
        draw(windows(optional=True)) if draw(st.integers(0, 3)) == 0 else (None, None)
    )
    return {
        "version": 1,
        "site": {"id": "s", "timezone": zone, "closures": [d.isoformat() for d in closures]},
        "resources": [{"id": "r1", "name": "R1"}, {"id": "r2", "name": "R2"}],
        "doors": [
            {"id": "d1", "name": "D1", "resources": ["r1"], "groups": ["g1"]},
            {"id": "d2", "name": "D2", "resources": ["r2"], "groups": ["g2"]},
            {"id": "d3", "name": "D3", "groups": ["g1", "g2"]},
        ],
        "members": [
            {
                "id": "m",
                "name": "M",
                "status": draw(st.sampled_from(["active"] * 8 + ["suspended", "cancelled"])),
            }
        ],
        "credentials": [
            {
                "id": "c",
                "member_id": "m",
                "kind": "nfc_uid",
                "value": "04000001",
                "status": draw(st.sampled_from(["active"] * 8 + ["revoked", "lost"])),
                "valid_from": cred_from,
                "valid_until": cred_until,
            }
        ],
        "plans": plans,
        "entitlements": entitlements,
        "bookings": bookings,
        "passes": passes,
    }


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=datasets(), data=st.data())
def test_decisions_and_access_windows_agree(doc: dict[str, Any], data: st.DataObject) -> None:
    # Half the taps anywhere, half near the start or end of a booking or pass.
    edges = [
        datetime.fromisoformat(x[k]).timestamp() for x in doc["bookings"] for k in ("start", "end")
    ]
    edges += [
        datetime.fromisoformat(x[k]).timestamp()
        for x in doc["passes"]
        for k in ("valid_from", "valid_until")
    ]
    near = (
        st.tuples(st.sampled_from(edges), st.integers(-3600, 3600)).map(lambda e: int(e[0]) + e[1])
        if edges
        else instants()
    )
    taps = data.draw(
        st.lists(
            st.tuples(st.sampled_from(["d1", "d2", "d3"]), instants() | near),
            min_size=1,
            max_size=6,
        )
    )
    read = parse_read("nfc:04000001")
    payments = {b["id"]: b["payment"] for b in doc["bookings"]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.sqlite3"
        write_cache(path, doc)
        reader = CacheReader(path)
        try:
            with reader.view() as view:
                for door, ts in taps:
                    d = decide(view, read, door, ts)
                    assert d == decide(view, read, door, ts)
                    event(d.reason.value)
                    assert d.granted == d.reason.granted
                    access = member_access(view, "m", ts - 1, ts + 1)
                    assert access is not None
                    inside = [
                        w
                        for w in access.windows
                        if w.door.id == door and w.start <= ts and (w.end is None or ts < w.end)
                    ]
                    cred = view.credential(read.kind, read.value)
                    assert cred is not None
                    usable = (
                        cred.status.value == "active"
                        and (cred.valid_from is None or cred.valid_from <= ts)
                        and (cred.valid_until is None or ts < cred.valid_until)
                    )
                    if d.granted:
                        assert d.grant is not None
                        assert usable
                        assert access.blocked is None
                        assert any(w.grant == d.grant for w in inside), (d, inside)
                        if d.grant.kind == "booking":
                            assert payments[d.grant.id] in ("paid", "included_in_plan")
                        if d.until is not None:
                            assert d.until > ts
                            late = decide(view, read, door, d.until - 1)
                            if cred.valid_until is None or d.until - 1 < cred.valid_until:
                                assert late.granted, (d, late)
                    elif usable and access.blocked is None:
                        assert not inside, (d, inside)
                    else:
                        assert d.reason not in (Reason.NO_ENTITLEMENT,)
        finally:
            reader.close()


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(schedule_entries(), max_size=4))
def test_schedule_text_round_trips(entries: list[str]) -> None:
    from gateway.core.schedule import WeeklySchedule

    schedule = WeeklySchedule.parse(entries)
    again = WeeklySchedule.parse(schedule.texts())
    assert again == schedule
    for weekday in range(7):
        assert again.intervals(weekday) == schedule.intervals(weekday)


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), ts=instants(), minutes=st.integers(0, 7 * 24 * 4))
def test_wall_times_resolve_to_an_instant_showing_that_time_or_the_gap_end(
    zone: str, ts: int, minutes: int
) -> None:
    from zoneinfo import ZoneInfo

    from gateway.core.localtime import to_local, wall_to_instant

    tz = ZoneInfo(zone)
    wall = to_local(ts, tz).replace(tzinfo=None, second=0) + timedelta(minutes=15 * minutes)
    early = wall_to_instant(wall, tz)
    late = wall_to_instant(wall, tz, latest=True)
    assert early <= late
    shown = to_local(early, tz).replace(tzinfo=None)
    if shown != wall:  # a time inside a spring-forward gap: the gap's end
        assert early == late
        assert to_local(early - 1, tz).utcoffset() != to_local(early, tz).utcoffset()
    else:
        assert to_local(late, tz).replace(tzinfo=None) == wall
