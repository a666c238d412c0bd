"""Rejected messages, recorded at a bounded rate.

Whoever can publish to the gateway's topics could otherwise fill the outbox
with rejections: each reason gets at most one ``message_rejected`` event per
:data:`REJECT_INTERVAL`, which counts the ones suppressed before it.
"""

from __future__ import annotations

import logging

from gateway.clock import Clock
from gateway.events import Record

log = logging.getLogger(__name__)

#: At most one ``message_rejected`` event per reason this often (seconds).
REJECT_INTERVAL = 10.0


class Rejections:
    """Records why messages were rejected, one event per reason per interval."""

    def __init__(self, clock: Clock, record: Record) -> None:
        self._clock = clock
        self._record = record
        #: Per reason: when its last event was recorded (monotonic), and how many since.
        self._last: dict[str, tuple[float | None, int]] = {}

    async def reject(self, reason: str, detail: str, topic: str) -> str:
        """Record one rejection (or count it); return the outcome code ``rejected:REASON``."""
        now = self._clock.monotonic()
        last, suppressed = self._last.get(reason, (None, 0))
        if last is not None and now - last < REJECT_INTERVAL:
            self._last[reason] = (last, suppressed + 1)
            return f"rejected:{reason}"
        self._last[reason] = (now, 0)
        log.warning("rejected a message on %s: %s", topic or "?", detail)
        await self._record(
            "message_rejected",
            {
                "reason": reason,
                "detail": detail[:300],
                "topic": topic,
                "suppressed_before": suppressed,
            },
        )
        return f"rejected:{reason}"
