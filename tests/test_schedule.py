"""Weekly schedules: parsing, canonical text, overnight ranges and spans."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from gateway.core.schedule import ScheduleFormatError, WeeklySchedule


@pytest.mark.parametrize(
    ("entries", "text"),
    [
        (["Mon-Fri 08:00-20:00"], "Mon-Fri 08:00-20:00"),
        (["mon-fri 8:00 - 20:00"], "Mon-Fri 08:00-20:00"),
        (["Sat,Sun 10:00-16:00"], "Sat,Sun 10:00-16:00"),
        (["Fri-Mon 09:00-17:00"], "Mon,Fri-Sun 09:00-17:00"),
        (["daily 00:00-24:00"], "daily 00:00-24:00"),
        (["Monday,Wednesday 22:00-06:00"], "Mon,Wed 22:00-06:00"),
        ([], "no hours"),
    ],
)
def test_parse_and_describe(entries: list[str], text: str) -> None:
    assert WeeklySchedule.parse(entries).describe() == text


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["Mon-Fri"], "is not of the form 'DAYS HH:MM-HH:MM'"),
        (["Someday 08:00-20:00"], "'someday' is not a day or day range"),
        (["Mon 25:00-26:00"], "'25:00' is not a time of day"),
        (["Mon 08:60-09:00"], "'08:60' is not a time of day"),
        (["Mon 24:00-06:00"], "'24:00' is not a time of day"),
        (["Mon 08:00-08:00"], "is empty"),
        ("Mon-Fri 08:00-20:00", "a list of entries"),
    ],
)
def test_bad_entries_say_what_is_wrong(entries: list[str], message: str) -> None:
    with pytest.raises(ScheduleFormatError, match=message):
        WeeklySchedule.parse(entries)


def test_overnight_range_belongs_to_two_days() -> None:
    s = WeeklySchedule.parse(["Fri 22:00-06:00"])
    assert s.intervals(4) == ((22 * 3600, 86400),)
    assert s.intervals(5) == ((0, 6 * 3600),)
    assert s.contains(datetime(2026, 3, 14, 5, 59))  # Saturday morning
    assert not s.contains(datetime(2026, 3, 14, 6, 0))
    assert not s.contains(datetime(2026, 3, 13, 21, 59))


def test_overlapping_entries_merge() -> None:
    s = WeeklySchedule.parse(["Mon 08:00-12:00", "Mon 11:00-14:00", "Mon 14:00-15:00"])
    assert s.intervals(0) == ((8 * 3600, 15 * 3600),)


def test_spans_join_at_midnight_and_stop_at_closures() -> None:
    s = WeeklySchedule.parse(["Fri 18:00-24:00", "Sat,Sun 00:00-24:00"])
    spans = list(s.spans(date(2026, 3, 9), date(2026, 3, 15), lambda d: False))
    assert spans == [(datetime(2026, 3, 13, 18), datetime(2026, 3, 16))]
    closed_sunday = list(
        s.spans(date(2026, 3, 9), date(2026, 3, 15), lambda d: d == date(2026, 3, 15))
    )
    assert closed_sunday == [(datetime(2026, 3, 13, 18), datetime(2026, 3, 15))]


def test_a_span_running_at_the_start_is_reported_from_midnight() -> None:
    s = WeeklySchedule.parse(["daily 00:00-24:00"])
    spans = list(s.spans(date(2026, 3, 9), date(2026, 3, 9), lambda d: d == date(2026, 3, 12)))
    assert spans == [(datetime(2026, 3, 9), datetime(2026, 3, 12))]
    assert list(s.spans(date(2026, 3, 9), date(2026, 3, 9), lambda d: False)) == [
        (datetime(2026, 3, 9), None)
    ]


def test_next_start_skips_closed_days() -> None:
    s = WeeklySchedule.parse(["Mon-Fri 08:00-20:00"])
    friday_evening = datetime(2026, 3, 12, 21, 0)  # Thursday, actually
    assert s.next_start(friday_evening, lambda d: d == date(2026, 3, 13)) == datetime(
        2026, 3, 16, 8, 0
    )
    assert WeeklySchedule.parse([]).next_start(friday_evening, lambda d: False) is None
