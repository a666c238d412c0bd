"""Bad input from one reader, reported as one event per interval with counts.

A reader on a noisy cable, a scanner sending garbage in a loop or a
misbehaving OSDP device can produce bad input as fast as it can send.  Each
piece becomes a count here, never an event of its own: the first is
recorded at once, and whatever follows within :data:`REPORT_INTERVAL` is
recorded as one event when the interval has passed (also when the input
has stopped by then), like ``message_rejected`` for the network.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from gateway.clock import Clock
from gateway.events import Record

#: At most one event per reader and event type this often (seconds).
REPORT_INTERVAL = 10.0


class InputReports:
    """Counts one reader's bad input of one event type; records it at a bounded rate.

    Each event is ``{"reader", "reason"`` (the commonest since the last
    event), ``"count"``, ``"reasons": {reason: count}``, ``"bytes"`` (when
    sizes are given) and any details of the last piece of input``}``.
    """

    def __init__(self, reader_id: str, type_: str, record: Record, clock: Clock) -> None:
        self.reader_id = reader_id
        self.type = type_
        self._record = record
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._bytes = 0
        self._sized = False
        self._detail: dict[str, Any] = {}
        self._last: float | None = None
        self._later: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """Whether anything counted is still to be recorded."""
        return bool(self._counts)

    def count(self, reason: str, *, size: int | None = None, **detail: Any) -> None:
        """One piece of bad input, counted; :meth:`report` records what is due."""
        self._counts[reason] += 1
        if size is not None:
            self._sized = True
            self._bytes += size
        self._detail = detail

    async def add(self, reason: str, *, size: int | None = None, **detail: Any) -> None:
        """:meth:`count` one piece, then :meth:`report`."""
        self.count(reason, size=size, **detail)
        await self.report()

    async def report(self) -> None:
        """Record what was counted if the interval has passed; else see that it is
        recorded when it has, even if no more bad input comes."""
        if not self._counts:
            return
        now = self._clock.monotonic()
        if self._last is None or now - self._last >= REPORT_INTERVAL:
            await self._flush()
        elif self._later is None:
            wait = self._last + REPORT_INTERVAL - now
            self._later = asyncio.create_task(self._flush_after(wait), name="input-report")

    async def _flush_after(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        self._later = None
        await self._flush()

    async def _flush(self) -> None:
        if not self._counts:
            return
        data: dict[str, Any] = {
            "reader": self.reader_id,
            "reason": self._counts.most_common(1)[0][0],
            **self._detail,
            "count": self._counts.total(),
            "reasons": dict(sorted(self._counts.items())),
        }
        if self._sized:
            data["bytes"] = self._bytes
        self._counts.clear()
        self._bytes, self._sized, self._detail = 0, False, {}
        self._last = self._clock.monotonic()
        await self._record(self.type, data)

    def close(self) -> None:
        """Stop a report waiting for its interval (the reader is going away)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
