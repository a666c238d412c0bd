"""Weekly opening hours, evaluated on the site's wall clock.

A schedule is a list of entries such as ``"Mon-Fri 08:00-20:00"``,
``"Sat,Sun 10:00-16:00"`` or ``"Fri 22:00-06:00"`` (an overnight range that
starts on Friday and ends on Saturday morning).  An instant is inside the
schedule when the site's *local wall-clock* weekday and time of day are
inside one of the ranges; docs/model.md explains what that means on the two
days a year the clocks change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from gateway.core.localtime import offset_stable, to_local, wall_to_instant
from gateway.errors import DatasetError

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_INDEX = {name.lower(): i for i, name in enumerate(DAY_NAMES)}
_SECONDS_PER_DAY = 86_400
_ENTRY = re.compile(
    r"^\s*(?P<days>[A-Za-z][A-Za-z,\- ]*?)\s+"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)


class ScheduleFormatError(DatasetError):
    """A schedule entry is not of the form ``DAYS HH:MM-HH:MM``."""


def _parse_days(spec: str, entry: str) -> tuple[int, ...]:
    spec = spec.strip().lower()
    if spec in ("daily", "every day"):
        return tuple(range(7))
    days: list[int] = []
    for part in spec.replace(" ", "").split(","):
        first, sep, last = part.partition("-")
        try:
            a = _DAY_INDEX[first[:3]] if len(first) >= 3 else -1
            b = _DAY_INDEX[last[:3]] if sep and len(last) >= 3 else a
        except KeyError:
            a = b = -1
        if a < 0 or b < 0:
            raise ScheduleFormatError(
                f"schedule entry {entry!r}: {part!r} is not a day or day range "
                "(use Mon..Sun, e.g. 'Mon-Fri' or 'Sat,Sun' or 'daily')"
            )
        # Ranges may wrap the week: "Fri-Mon" is Fri, Sat, Sun, Mon.
        day = a
        while True:
            if day not in days:
                days.append(day)
            if day == b:
                break
            day = (day + 1) % 7
    return tuple(sorted(days))


def _parse_clock(text: str, entry: str, *, allow_24: bool) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise ScheduleFormatError(
            f"schedule entry {entry!r}: {text!r} is not a time of day "
            "(00:00-23:59, or 24:00 as an end)"
        )
    return hours * 3600 + minutes * 60


def format_days(days: Iterable[int]) -> str:
    """Render weekday numbers compactly: ``(0, 1, 2, 3, 4)`` -> ``"Mon-Fri"``."""
    ordered = sorted(set(days))
    if len(ordered) == 7:
        return "daily"
    runs: list[list[int]] = []
    for d in ordered:
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}")
        else:
            parts.extend(DAY_NAMES[d] for d in run)
    return ",".join(parts)


def format_clock(seconds: int) -> str:
    """Render seconds since local midnight as ``HH:MM``."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


class WeeklySchedule:
    """Weekly ranges of wall-clock time, split per weekday and merged.

    Build one with :meth:`parse`; instances are immutable and hashable by
    their canonical text.
    """

    __slots__ = ("_by_day", "entries")

    def __init__(self, entries: tuple[tuple[tuple[int, ...], int, int], ...]) -> None:
        self.entries = entries
        per_day: list[list[tuple[int, int]]] = [[] for _ in range(7)]
        for days, start, end in entries:
            for d in days:
                if end > start:
                    per_day[d].append((start, end))
                else:
                    # Overnight: the tail of day d and the head of the next day.
                    per_day[d].append((start, _SECONDS_PER_DAY))
                    if end:
                        per_day[(d + 1) % 7].append((0, end))
        self._by_day = tuple(tuple(_merge(intervals)) for intervals in per_day)

    @classmethod
    def parse(cls, entries: Sequence[str]) -> WeeklySchedule:
        """Parse entries like ``"Mon-Fri 08:00-20:00"``; raise ScheduleFormatError if bad."""
        if isinstance(entries, str):
            raise ScheduleFormatError("a schedule is a list of entries, not a single string")
        parsed = []
        for entry in entries:
            m = _ENTRY.match(entry)
            if not m:
                raise ScheduleFormatError(
                    f"schedule entry {entry!r} is not of the form 'DAYS HH:MM-HH:MM' "
                    "(e.g. 'Mon-Fri 08:00-20:00' or 'Fri 22:00-06:00')"
                )
            days = _parse_days(m["days"], entry)
            start = _parse_clock(m["start"], entry, allow_24=False)
            end = _parse_clock(m["end"], entry, allow_24=True)
            if start == end:
                raise ScheduleFormatError(
                    f"schedule entry {entry!r} is empty (start equals end; "
                    "use 00:00-24:00 for a whole day)"
                )
            parsed.append((days, start, end))
        return cls(tuple(parsed))

    def describe(self) -> str:
        """The schedule as people write it: ``"Mon-Fri 08:00-20:00; Sat 10:00-14:00"``."""
        if not self.entries:
            return "no hours"
        return "; ".join(
            f"{format_days(days)} {format_clock(start)}-{format_clock(end)}"
            for days, start, end in self.entries
        )

    def texts(self) -> list[str]:
        """The canonical entry texts, the inverse of :meth:`parse`."""
        return [
            f"{format_days(days)} {format_clock(start)}-{format_clock(end)}"
            for days, start, end in self.entries
        ]

    def intervals(self, weekday: int) -> tuple[tuple[int, int], ...]:
        """Merged ``(start, end)`` seconds-of-day ranges for one weekday (Mon = 0)."""
        return self._by_day[weekday]

    def contains(self, local: datetime) -> bool:
        """True when the wall-clock weekday and time of ``local`` are inside the schedule."""
        sec = local.hour * 3600 + local.minute * 60 + local.second
        return any(start <= sec < end for start, end in self._by_day[local.weekday()])

    def spans(
        self, first: date, last: date, closed: Callable[[date], bool]
    ) -> Iterator[tuple[datetime, datetime | None]]:
        """Contiguous naive wall-clock spans starting on ``first`` .. ``last``.

        Ranges that meet at midnight are joined into one span, except where a
        closed date interrupts them.  A span already running at ``first``'s
        midnight is reported from that midnight.  A span's end is followed
        for up to 8 days past ``last``; None means it runs on beyond that.
        """
        start: datetime | None = None
        end: datetime | None = None
        d = first
        horizon = last + timedelta(days=8)
        while d <= horizon:
            midnight = datetime.combine(d, time())
            pieces = () if closed(d) else self._by_day[d.weekday()]
            # A span that reached midnight continues only into a range starting at 00:00.
            if start is not None and (not pieces or pieces[0][0] != 0):
                yield start, end
                start = None
            for s, e in pieces:
                if start is None:
                    if d > last:
                        return
                    start = midnight + timedelta(seconds=s)
                end = midnight + timedelta(seconds=e)
                if e != _SECONDS_PER_DAY:
                    yield start, end
                    start = None
            if start is None and d >= last:
                return
            d += timedelta(days=1)
        if start is not None:
            yield start, None

    def span_at(
        self, ts: int, tz: ZoneInfo, closed: Callable[[date], bool]
    ) -> tuple[int, int | None] | None:
        """The span of real time containing instant ``ts`` as ``(start, end)``, or None.

        ``end`` is None when the span runs on for more than a week.
        """
        local = to_local(ts, tz)
        day = local.date()
        if offset_stable(ts, tz):
            # No clock change within a day either side: wall-clock order is
            # real-time order, so a cheap wall-clock test rejects most taps.
            wall = local.replace(tzinfo=None)
            if closed(day) or not self.contains(local):
                return None
            for ws, we in self.spans(day - timedelta(days=1), day, closed):
                if ws <= wall and (we is None or wall < we):
                    return self._instants(ws, we, tz)
            return None
        for ws, we in self.spans(day - timedelta(days=1), day, closed):
            start, end = self._instants(ws, we, tz)
            if start <= ts and (end is None or ts < end):
                return start, end
        return None

    def instant_spans(
        self, start: int, end: int, tz: ZoneInfo, closed: Callable[[date], bool]
    ) -> list[tuple[int, int | None]]:
        """Every span of real time that overlaps ``[start, end)``, unclipped."""
        first = to_local(start, tz).date() - timedelta(days=1)
        last = to_local(end, tz).date()
        out = []
        for ws, we in self.spans(first, last, closed):
            s, e = self._instants(ws, we, tz)
            if s < end and (e is None or e > start):
                out.append((s, e))
        return out

    @staticmethod
    def _instants(ws: datetime, we: datetime | None, tz: ZoneInfo) -> tuple[int, int | None]:
        return (
            wall_to_instant(ws, tz),
            None if we is None else wall_to_instant(we, tz, latest=True),
        )

    def next_start(self, local: datetime, closed: Callable[[date], bool]) -> datetime | None:
        """The naive wall-clock start of the next range after ``local``, within 8 days."""
        sec = local.hour * 3600 + local.minute * 60 + local.second
        day = local.date()
        for offset in range(8):
            d = day + timedelta(days=offset)
            if closed(d):
                continue
            for start, _end in self._by_day[d.weekday()]:
                if offset or start > sec:
                    return datetime.combine(d, time()) + timedelta(seconds=start)
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeeklySchedule) and self.entries == other.entries

    def __hash__(self) -> int:
        return hash(self.entries)

    def __repr__(self) -> str:
        return f"WeeklySchedule.parse({self.texts()!r})"


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
