"""Every event the gateway records: durable in the outbox, the latest also in memory.

Every part of the gateway reports through one :data:`~gateway.events.Record`
callable, :meth:`EventLog.record`.  The outbox keeps events until the
platform acknowledges them; the staff API's "recent events" come from the
in-memory copy here, which keeps the last :data:`RECENT_EVENTS` whether sent
or not.
"""

from __future__ import annotations

import collections
from typing import Any

from gateway.clock import Clock
from gateway.store.outbox import Outbox

#: Events kept in memory for the staff API's "recent events".
RECENT_EVENTS = 2000


class EventLog:
    """The gateway's one way to record an event."""

    def __init__(self, outbox: Outbox, clock: Clock) -> None:
        self._outbox = outbox
        self._clock = clock
        #: The latest events, newest last: ``{id, seq, at, type, data}``.
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_EVENTS)
        self._ids = 0

    async def record(self, type_: str, data: dict[str, Any], at: int | None = None) -> None:
        """Store one event in the outbox (``at``: when it happened, default now)."""
        seq = await self._outbox.append(type_, data, at)
        when = int(self._clock.now().timestamp()) if at is None else at
        self._ids += 1
        self.recent.append({"id": self._ids, "seq": seq, "at": when, "type": type_, "data": data})
