"""Conversions between instants and the site's wall clock.

Schedules are written in wall-clock time; bookings, passes and validity
bounds are instants.  A schedule window becomes one contiguous span of real
time: from the *first* instant the wall clock shows its start to the *last*
instant the wall clock shows its end.  So, on the days the clocks change:

* a wall time that does not exist (inside the spring-forward gap) maps to
  the first instant after the gap, when the wall clock shows the gap's end;
* a wall time that exists twice (inside the autumn fall-back hour) maps to
  its earlier occurrence as a start and its later occurrence as an end.

A window is never cut in two by a clock change, and is never shorter than
the wall-clock hours it names except where the spring gap removes them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import UsageError


def to_local(ts: float, tz: ZoneInfo) -> datetime:
    """The aware local datetime of Unix time ``ts`` in ``tz``."""
    return datetime.fromtimestamp(ts, tz)


def to_iso(ts: int | None) -> str | None:
    """Format Unix seconds as an ISO 8601 UTC instant (``None`` stays ``None``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def wall_to_instant(wall: datetime, tz: ZoneInfo, *, latest: bool = False) -> int:
    """Resolve the naive wall-clock ``wall`` in ``tz`` to Unix seconds.

    Ambiguous times give their earlier occurrence, or the later one with
    ``latest``; times in a gap give the end of the gap (see module doc).
    """
    if wall.tzinfo is not None:
        raise ValueError("wall_to_instant takes a naive wall-clock datetime")
    candidates = sorted({int(wall.replace(tzinfo=tz, fold=fold).timestamp()) for fold in (0, 1)})
    existing = [c for c in candidates if datetime.fromtimestamp(c, tz).replace(tzinfo=None) == wall]
    if not existing:
        return _gap_end(candidates[0], candidates[-1], tz)
    return existing[-1] if latest else existing[0]


def offset_stable(ts: int, tz: ZoneInfo, margin: int = 86_400) -> bool:
    """True when ``tz``'s UTC offset is the same ``margin`` seconds either side of ``ts``.

    On such instants wall-clock order and real-time order agree, so
    schedules can be checked on the wall clock alone.
    """
    return to_local(ts - margin, tz).utcoffset() == to_local(ts + margin, tz).utcoffset()


def _gap_end(lo: int, hi: int, tz: ZoneInfo) -> int:
    """The first instant in ``(lo, hi]`` whose UTC offset differs from ``lo``'s."""
    before = datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi


#: What an IANA zone name can look like (the longest today has 32 characters).
_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+){0,3}$")


def check_timezone(name: str) -> str:
    """Return ``name`` if it is an IANA zone this machine knows; raise ValueError if not."""
    # Names are short and plain: a long or odd one never reaches the file system
    # (ZoneInfo raises OSError for a 300-character name).
    if not isinstance(name, str) or len(name) > 64 or not _ZONE_NAME.match(name):
        raise ValueError(f"{str(name)[:80]!r} is not an IANA timezone (e.g. Europe/London)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is not an IANA timezone (e.g. Europe/London)") from None
    return name


def parse_instant(text: str, tz: ZoneInfo | None, option: str) -> int:
    """Unix seconds of an ISO 8601 time a person typed for ``option``; local to ``tz``
    when it has no UTC offset.  UsageError names the option and what is wrong."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-03-10T14:05 or "
            "2026-03-10T14:05:00+00:00)"
        ) from None
    if dt.tzinfo is None:
        if tz is None:
            raise UsageError(f"{option} {text!r} has no UTC offset and the site's zone is unknown")
        dt = dt.replace(tzinfo=tz)
    return int(dt.timestamp())
