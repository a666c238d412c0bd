"""Injected time.

Nothing in the gateway calls :func:`time.time` or :func:`datetime.now`
directly: it asks a :class:`Clock`.  The daemon uses :class:`SystemClock`;
tests and the simulator use :class:`ManualClock`, which only moves when told
to, so a day-long scenario runs in milliseconds.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the gateway gets the time from."""

    def now(self) -> datetime:
        """Return the current instant as an aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Return seconds from an arbitrary origin that never go backwards."""
        ...


class SystemClock:
    """The machine's real-time and monotonic clocks."""

    def now(self) -> datetime:
        """Return the wall-clock instant, in UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()


class ManualClock:
    """A clock that stands still until :meth:`advance` or :meth:`set` moves it.

    Both its instant and its monotonic reading move together, as they would
    on a real machine whose clock is never stepped.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime, got a naive one")
        self._now = start.astimezone(UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        """Return the clock's current instant."""
        return self._now

    def monotonic(self) -> float:
        """Return seconds advanced since the clock was made."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds})")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, instant: datetime) -> None:
        """Step the wall clock to ``instant``, as NTP might; monotonic time is unchanged."""
        if instant.tzinfo is None:
            raise ValueError("ManualClock.set needs an aware datetime, got a naive one")
        self._now = instant.astimezone(UTC)
