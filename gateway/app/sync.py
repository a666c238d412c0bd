"""The sync engine: verified cloud messages in, a correct cache out.

:meth:`SyncEngine.handle` takes the raw bytes of one MQTT message.  Nothing
it receives can raise out of it or half-apply: a message that is unsigned,
badly signed, signed with an unknown key, malformed or for another site is
rejected whole and recorded as a ``message_rejected`` event with its reason.

Versions (docs/protocol.md): a delta applies only on top of the version it
names.  Older or repeated ones are ignored.  A gap is buffered, its
restrictive changes (revocations, suspensions, cancellations, deletes) are
applied at once, and a resync is requested; the snapshot that answers is
staged beside the live tables while deltas keep applying, then swapped in
with the newer deltas replayed.  Chunks are kept in the cache file, so a
restart resumes the transfer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.app.rejections import Rejections
from gateway.app.resync import RESYNC_INTERVAL, RESYNC_RETRY_MAX, RequestResync, ResyncPacer
from gateway.app.snapshots import abandon_snapshot, chunk_bytes, reject_snapshot, stage_snapshot
from gateway.clock import Clock
from gateway.core import model
from gateway.core.jws import KeySet, SignatureError
from gateway.errors import CacheError, DatasetError
from gateway.events import Record
from gateway.store.writer import CacheWriter
from gateway.wire.protocol import (
    AckMsg,
    BeaconMsg,
    CommandMsg,
    DeltaMsg,
    SnapshotChunkMsg,
    parse_cloud_message,
)

log = logging.getLogger(__name__)

#: At most this many out-of-order deltas are held while waiting for a resync.
MAX_BUFFERED_DELTAS = 10_000


def ranges(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted indexes as inclusive ``(first, last)`` runs: [0, 1, 2, 5] -> [(0, 2), (5, 5)]."""
    out: list[tuple[int, int]] = []
    for i in indexes:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


class SyncEngine:
    """Applies the platform's signed messages to the cache.

    ``record`` stores an event (the outbox); ``request_resync`` asks the
    platform for a snapshot.  ``on_ack`` and ``on_command`` receive verified
    acknowledgements and commands for the components that handle them.
    """

    def __init__(
        self,
        writer: CacheWriter,
        keys: KeySet,
        *,
        site_id: str,
        gateway_id: str,
        clock: Clock,
        record: Record,
        request_resync: RequestResync,
        on_ack: Callable[[int], Awaitable[object]] | None = None,
        on_command: Callable[[CommandMsg, str], Awaitable[object]] | None = None,
        on_signed_time: Callable[[int], object] | None = None,
    ) -> None:
        self._writer = writer
        self._keys = keys
        self.site_id = site_id
        self.gateway_id = gateway_id
        self._clock = clock
        self._record = record
        self._on_ack = on_ack
        self._on_command = on_command
        #: Told the signing time of every verified message (the clock's evidence).
        self._on_signed_time = on_signed_time
        #: The version of the live data (None: none yet).
        self.version: int | None = None
        #: The newest signing time (Unix seconds, capped at now) of a verified message.
        self.last_contact: int | None = None
        #: Seconds from signing to applying, of the last delta applied in order.
        self.delta_lag: float | None = None
        #: The latest version the platform has announced.
        self.cloud_version: int | None = None
        self._buffer: dict[int, tuple[int, list[model.Change]]] = {}
        self._applied_while_staging: list[tuple[int, list[model.Change]]] | None = None
        self._pacer = ResyncPacer(gateway_id, clock, record, request_resync)
        self._reject = Rejections(clock, record).reject
        self._behind_beacons = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._unstored = False  # a delta the disk refused: ask until a snapshot is in

    async def start(self) -> None:
        """Load the live version; ask to resume a transfer a restart interrupted."""
        self.version = await self._writer.dataset_version()
        self.last_contact = await self._writer.updated_at()
        await self._ask_again(force=False)

    async def on_connected(self) -> None:
        """A broker session started: repeat a resync request the outage may have lost."""
        await self._ask_again(force=True)

    async def _ask_again(self, *, force: bool) -> bool:
        """Ask for what is still missing (a whole snapshot, or a transfer's missing
        chunks); False when nothing is missing."""
        pending = await self._writer.stage.pending_snapshot()
        if pending is not None:
            sid, version, count, _, held = pending
            missing = ranges(sorted(set(range(count)) - set(held)))
            if not missing:
                if self._snapshot_task is None:
                    self._start_snapshot_apply(sid, version)  # a complete transfer, not yet in
                return True
            await self._pacer.ask(
                "resume", self.version, snapshot_id=sid, missing=missing, force=force
            )
            return True
        if self.version is None:
            await self._pacer.ask("no_data", self.version, force=force)
            return True
        if self._unstored:
            await self._pacer.ask("not_stored", self.version, force=force)
            return True
        return False

    async def keep_asking(self, connected: Callable[[], bool]) -> None:
        """Until cancelled: while the data is missing and nothing has arrived for a
        while, ask again, backing off.  A lost request or a lost answer must not
        leave a gateway without data until its next reconnect."""
        wait = RESYNC_INTERVAL
        while True:
            await self._clock.sleep(RESYNC_INTERVAL)
            silent = self._pacer.silence()
            if not connected() or self._snapshot_task is not None or silent < wait:
                continue
            if await self._ask_again(force=False):
                wait = min(wait * 2, RESYNC_RETRY_MAX)
            else:
                wait = RESYNC_INTERVAL  # has its data: gaps show up in deltas and beacons

    async def request_resync(self, reason: str) -> None:
        """Ask the platform for a snapshot now (a command, or staff)."""
        await self._pacer.ask(reason, self.version, force=True)

    async def handle(self, payload: bytes, topic: str = "") -> str:
        """Verify and apply one message; return a short outcome code (for tests and logs)."""
        try:
            _, body = self._keys.verify(payload)
            msg = parse_cloud_message(body)
        except SignatureError as exc:
            return await self._reject(exc.reason, str(exc), topic)
        except DatasetError as exc:
            return await self._reject("malformed", str(exc), topic)
        if msg.site != self.site_id:
            return await self._reject("wrong_site", f"message for site {msg.site!r}", topic)
        if msg.gateway is not None and msg.gateway != self.gateway_id:
            return await self._reject(
                "wrong_gateway", f"message for gateway {msg.gateway!r}", topic
            )
        # Freshness follows when the platform signed, not when a message arrived:
        # replaying old signed messages must not make stale data look fresh.  A
        # platform clock ahead of ours counts as now.
        now = int(self._clock.now().timestamp())
        self.last_contact = max(self.last_contact or 0, min(msg.iat, now))
        if self._on_signed_time is not None:
            self._on_signed_time(msg.iat)
        if isinstance(msg, DeltaMsg):
            outcome = await self._delta(msg)
            if outcome == "applied":
                # From the platform signing a change to it taking effect here.
                self.delta_lag = max(0.0, self._clock.now().timestamp() - msg.iat)
            return outcome
        if isinstance(msg, SnapshotChunkMsg):
            return await self._chunk(msg)
        if isinstance(msg, BeaconMsg):
            return await self._beacon(msg)
        if isinstance(msg, AckMsg):
            if self._on_ack is not None:
                await self._on_ack(msg.seq)
            return "ack"
        if self._on_command is not None:
            await self._on_command(msg, topic)
        return "command"

    # Deltas.

    async def _delta(self, msg: DeltaMsg) -> str:
        try:
            changes = [c.to_change() for c in msg.changes]  # validated with msg
        except DatasetError as exc:
            return await self._reject("malformed", str(exc), "delta")
        self.cloud_version = max(self.cloud_version or 0, msg.version)
        async with self._lock:
            if self.version is not None and msg.version <= self.version:
                return "ignored_old"
            if self.version is None or msg.base_version > self.version:
                return await self._gap(msg, changes)
            if msg.base_version < self.version:
                await self._pacer.ask("overlap", self.version)  # a replay must not force one
                return "resync_overlap"
            outcome = await self._apply_delta(msg.version, changes)
            # Deltas that arrived early may now fit.
            while self.version in self._buffer and outcome == "applied":
                version, buffered = self._buffer.pop(self.version)
                outcome = await self._apply_delta(version, buffered)
            return outcome

    async def _apply_delta(self, version: int, changes: list[model.Change]) -> str:
        try:
            await self._writer.apply_changes(changes, version)
        except DatasetError as exc:
            await self._record(
                "message_rejected",
                {"reason": "inconsistent", "detail": str(exc), "version": version},
            )
            await self._pacer.ask("inconsistent", self.version, force=True)
            return "rejected:inconsistent"
        except CacheError as exc:  # the disk refused it: a snapshot must replace it
            self._unstored = True
            await self._pacer.ask("not_stored", self.version, force=True)
            return await self._reject("not_stored", f"delta {version}: {exc}", "delta")
        self.version = version
        if self._applied_while_staging is not None:
            self._applied_while_staging.append((version, changes))
        await self._record("delta_applied", {"version": version, "changes": len(changes)})
        return "applied"

    async def _gap(self, msg: DeltaMsg, changes: list[model.Change]) -> str:
        if len(self._buffer) < MAX_BUFFERED_DELTAS:
            self._buffer[msg.base_version] = (msg.version, changes)
        restricted = 0
        if self.version is not None:
            restricted = await self._writer.apply_restrictions(changes)
        held, base, new = self.version, msg.base_version, msg.version
        gap = {"have_version": held, "base_version": base, "version": new}
        await self._record("delta_gap", {**gap, "restricted": restricted})
        await self._pacer.ask("gap", self.version)
        return "buffered_gap"

    # Beacons.

    async def _beacon(self, msg: BeaconMsg) -> str:
        self.cloud_version = msg.version
        if self.version is not None and msg.version <= self.version:
            self._behind_beacons = 0
            return "current"
        self._behind_beacons += 1
        # One beacon may overtake the delta it announces; two in a row may not.
        if self._behind_beacons >= 2 and self._snapshot_task is None:
            await self._pacer.ask("behind", self.version)
            return "behind"
        return "behind_wait"

    # Snapshots.

    async def _chunk(self, msg: SnapshotChunkMsg) -> str:
        # Never back to an older version; the same one only when it was asked
        # for (a resync command to a gateway already current reloads its data).
        same_asked = msg.version == self.version and self._pacer.wants_same_version()
        if self.version is not None and msg.version <= self.version and not same_asked:
            return "ignored_old"
        if self._snapshot_task is not None:
            return "busy"
        data = chunk_bytes(msg.data)
        if data is None:
            return await self._reject("malformed", "chunk data is not base64", "snapshot")
        if msg.index >= msg.count:
            return await self._reject("malformed", "chunk index beyond count", "snapshot")
        held = await self._writer.stage.store_chunk(
            msg.snapshot_id, msg.index, msg.count, msg.version, msg.sha256, data
        )
        self._pacer.progressed()
        if held is None:
            problem = DatasetError("its chunks disagree on version, count or sha256")
            return await self._bad_snapshot(msg.snapshot_id, problem)
        if held < msg.count:
            return "chunk_stored"
        self._start_snapshot_apply(msg.snapshot_id, msg.version)
        return "snapshot_complete"

    def _start_snapshot_apply(self, snapshot_id: str, version: int) -> None:
        # Applying takes seconds for a large site: it runs beside handle(), so
        # deltas (revocations above all) keep applying meanwhile.
        self._snapshot_task = asyncio.create_task(
            self._apply_snapshot(snapshot_id, version), name=f"snapshot-{snapshot_id}"
        )

    async def close(self) -> None:
        """Stop a snapshot load in progress (its chunks stay stored: it resumes later)."""
        task = self._snapshot_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def wait_snapshot(self) -> None:
        """Wait until a snapshot being applied is done (for tests and shutdown)."""
        if self._snapshot_task is not None:
            await asyncio.shield(self._snapshot_task)

    async def _bad_snapshot(self, snapshot_id: str, problem: DatasetError) -> str:
        await reject_snapshot(self._writer, self._reject, snapshot_id, problem)
        # Not forced, and backing off: a platform that sends the same bad
        # snapshot again must not make the two of them loop.
        await self._pacer.ask("bad_snapshot", self.version)
        return "bad_snapshot"

    async def _apply_snapshot(self, snapshot_id: str, version: int) -> None:
        try:
            await self._apply_snapshot_inner(snapshot_id, version)
        except DatasetError as exc:
            await self._bad_snapshot(snapshot_id, exc)
        except Exception as exc:  # noqa: BLE001 - a snapshot task must never die unseen
            await abandon_snapshot(self._writer, self._record, snapshot_id, exc)
        finally:
            self._applied_while_staging = None
            self._snapshot_task = None

    async def _apply_snapshot_inner(self, snapshot_id: str, version: int) -> None:
        pending = await self._writer.stage.pending_snapshot()
        if pending is None or pending[0] != snapshot_id:
            return
        # Deltas applied from here on are replayed on top of the snapshot.
        self._applied_while_staging = []
        await stage_snapshot(self._writer, snapshot_id, pending[3])
        async with self._lock:
            replay = [(v, c) for v, c in self._applied_while_staging if v > version]
            nxt = max([version, *(v for v, _ in replay)])
            # Buffered deltas that continue from the snapshot (or the replay) fit now.
            while nxt in self._buffer:
                v, changes = self._buffer.pop(nxt)
                replay.append((v, changes))
                nxt = v
            await self._writer.stage.swap_stage(version, replay)
            self.version = nxt
            self._buffer = {b: d for b, d in self._buffer.items() if b > nxt}
        await self._writer.stage.drop_chunks()
        self._unstored = False
        self._pacer.answered()
        await self._record(
            "snapshot_applied",
            {"snapshot_id": snapshot_id, "version": version, "now_version": self.version},
        )
        log.info("snapshot %s applied: dataset version %s", snapshot_id, self.version)
