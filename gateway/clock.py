"""Injected time.

Nothing in the gateway calls :func:`time.time` or :func:`datetime.now`
directly: it asks a :class:`Clock`.  The daemon uses :class:`SystemClock`;
tests and the simulator use :class:`ManualClock`, which only moves when told
to, so a day-long scenario runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's monotonic time."""
        ...


class SystemClock:
    """The machine's real-time and monotonic clocks."""

    def now(self) -> datetime:
        """Return the wall-clock instant, in UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep`."""
        await asyncio.sleep(seconds)


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
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

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
        due = [f for deadline, f in self._sleepers if deadline <= self._mono]
        self._sleepers = [(d, f) for d, f in self._sleepers if d > self._mono]
        for future in due:
            if not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Wait until :meth:`advance` has moved the clock ``seconds`` further."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._mono + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            if not future.done() or future.cancelled():
                # Cancelled before its time: a clock that stands still must not keep it.
                with contextlib.suppress(ValueError):
                    self._sleepers.remove(entry)

    async def run_for(self, seconds: float, step: float = 0.05) -> None:
        """Advance ``seconds`` in steps, letting tasks run at each step.

        Timers due in a step fire in that step, so behaviour is resolved to
        ``step`` seconds of simulated time.
        """
        remaining = seconds
        while remaining > 1e-9:
            delta = min(step, remaining)
            self.advance(delta)
            remaining -= delta
            # Let woken tasks run (and start new timers) before the next step.
            for _ in range(5):
                await asyncio.sleep(0)

    def set(self, instant: datetime) -> None:
        """Step the wall clock to ``instant``, as NTP might; monotonic time is unchanged."""
        if instant.tzinfo is None:
            raise ValueError("ManualClock.set needs an aware datetime, got a naive one")
        self._now = instant.astimezone(UTC)
