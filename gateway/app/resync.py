"""When the gateway asks the platform for data, and how often.

A resync request is sent at most every :data:`RESYNC_INTERVAL` seconds
unless forced (a command, a reconnect).  After snapshots the gateway had
to reject (``bad_snapshot``), that interval doubles with each one in a
row, up to :data:`RESYNC_RETRY_MAX`, so a platform that keeps sending the
same bad data is asked less and less often; a snapshot that applies
resets it.  A gateway still waiting for its data asks again after a silence
that doubles from :data:`RESYNC_INTERVAL` up to :data:`RESYNC_RETRY_MAX`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.clock import Clock
from gateway.events import Record
from gateway.wire.protocol import ResyncRequestMsg

RequestResync = Callable[[ResyncRequestMsg], Awaitable[object]]

#: A new resync request is sent at most this often (seconds, monotonic).
RESYNC_INTERVAL = 10.0
#: A gateway still waiting for its data asks again after this much silence,
#: doubling from RESYNC_INTERVAL up to this (seconds).
RESYNC_RETRY_MAX = 300.0
#: Reasons that ask for the whole data again, even at the version held.
FULL_REASONS = frozenset({"command"})


class ResyncPacer:
    """Sends resync requests, no more often than the rules above allow."""

    def __init__(
        self, gateway_id: str, clock: Clock, record: Record, request: RequestResync
    ) -> None:
        self._gateway_id = gateway_id
        self._clock = clock
        self._record = record
        self._request = request
        self._last: float | None = None
        #: Requests after bad snapshots, in a row: the wait before the next doubles with each.
        self.bad_snapshots = 0
        #: When a resync was last asked for or a snapshot chunk last arrived.
        self._progress = clock.monotonic()
        #: Until when (monotonic) a snapshot at the version held is wanted too:
        #: the platform ordered a resync, which it may answer with the same version.
        self._full_until: float | None = None

    async def ask(
        self,
        reason: str,
        have_version: int | None,
        *,
        snapshot_id: str | None = None,
        missing: list[tuple[int, int]] | None = None,
        force: bool = False,
    ) -> None:
        """Ask for data (a whole snapshot, or a transfer's ``missing`` chunks)."""
        now = self._clock.monotonic()
        interval = RESYNC_INTERVAL
        if reason == "bad_snapshot" and self.bad_snapshots:
            interval = min(RESYNC_INTERVAL * 2 ** (self.bad_snapshots - 1), RESYNC_RETRY_MAX)
        if not force and self._last is not None and now - self._last < interval:
            return
        if reason == "bad_snapshot":
            self.bad_snapshots += 1
        if reason in FULL_REASONS:
            self._full_until = now + RESYNC_RETRY_MAX
        self._last = self._progress = now
        await self._record("resync_requested", {"reason": reason, "have_version": have_version})
        await self._request(
            ResyncRequestMsg(
                gateway=self._gateway_id,
                have_version=have_version,
                reason=reason,
                snapshot_id=snapshot_id,
                missing=missing,
            )
        )

    def progressed(self) -> None:
        """Something the platform sent in answer arrived (a snapshot chunk)."""
        self._progress = self._clock.monotonic()

    def answered(self) -> None:
        """The data asked for is in: the next need may ask at once."""
        self._last = None
        self.bad_snapshots = 0
        self._full_until = None

    def wants_same_version(self) -> bool:
        """True while a resync the platform ordered waits for its snapshot, which
        may be at the version the gateway holds (a gateway already current)."""
        return self._full_until is not None and self._clock.monotonic() < self._full_until

    def silence(self) -> float:
        """Seconds since the last request or answer."""
        return self._clock.monotonic() - self._progress
