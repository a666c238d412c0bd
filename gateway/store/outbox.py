"""The event outbox: every event stored with a gapless sequence number until acknowledged.

Events (access decisions, door events, system events) are written to their
own SQLite file: unlike the cache, they cannot be fetched again from
anywhere.  With a flush window (as the daemon runs it) a commit reaches
SQLite's write-ahead log, which survives a crash of the process, and a
:class:`~gateway.store.flush.WalFlusher` makes it durable against power
loss within the window; without one every commit is synced
(``synchronous=FULL``) before it returns.  Sequence numbers are per gateway, start at 1
and never skip.  The platform acknowledges the highest sequence it has
stored contiguously; only then are events deleted.

The outbox is bounded (``max_events``).  At ``warn_ratio`` of the bound it
records an ``outbox_nearly_full`` event, once per crossing.  When full, or
when the disk refuses the write (full, read-only, failing), new events are
*not* stored and get no sequence number (so there is no gap); they are
counted, by type, and as soon as there is room again (an ack, or space on
the disk: :meth:`Outbox.keep` tries every :data:`RETRY_SECONDS`) one
``events_dropped`` event says how many of which type were lost.  The counts
are stored with the events whenever the disk takes a write, so a restart
before the report goes out does not lose it.  Doors keep working
throughout: nothing here raises for a disk that refuses a write.  A file
held for a moment by another connection (the flusher starting the log
again) is waited for on the event loop, up to
:data:`~gateway.store.connect.HELD_WAIT`, and only then counted as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiosqlite

from gateway.clock import Clock
from gateway.errors import CacheCorruptError, CacheError
from gateway.flags import Flag
from gateway.store.connect import WhenFree, connect, held
from gateway.store.flush import Sync, WalFlusher
from gateway.store.repair import Salvage, continue_numbering

log = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO outbox_meta VALUES ('last_seq', 0), ('acked_seq', 0);
-- The last sequence number moves with every insert, in the same statement: a
-- tap's event is one statement, and one trip to the database thread.
CREATE TRIGGER IF NOT EXISTS events_last_seq AFTER INSERT ON events BEGIN
    UPDATE outbox_meta SET value = NEW.seq WHERE key = 'last_seq' AND value < NEW.seq;
END;
-- Events not stored, by type, until an events_dropped event reports them;
-- cause: why the disk refused them (NULL: only the outbox bound).
CREATE TABLE IF NOT EXISTS dropped (
    type TEXT PRIMARY KEY, count INTEGER NOT NULL, cause TEXT
);
"""

#: Seconds between attempts to store an owed drop report.
RETRY_SECONDS = 5.0
#: Events deleted per transaction when an ack covers many: taps go in between.
ACK_CHUNK = 500
#: Events a read of the publisher may span and still be made at once in the loop's
#: thread (the usual read: the event just recorded); longer ones go to the database
#: thread, so days of backlog never hold the loop.
INLINE_READ = 16
_PENDING_SQL = (
    "SELECT seq, at, type, data FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)


async def _open(
    path: Path, *, flushed: bool
) -> tuple[aiosqlite.Connection, bool, dict[str, int], list[tuple[Any, ...]]]:
    """Open (or create) an outbox file: its connection, whether it has a write-ahead log,
    its sequence numbers and its drop counts.  ``flushed``: commits only write to the
    log, which a flusher syncs and checkpoints."""
    db: aiosqlite.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await connect(path)
        damage = await db.execute_fetchall("PRAGMA quick_check")
        if list(damage) != [("ok",)]:
            raise CacheCorruptError(
                f"{path}: the event outbox is damaged: "
                + "; ".join(str(r[0]) for r in list(damage)[:3])
            )
        wal = list(await db.execute_fetchall("PRAGMA journal_mode=WAL")) == [("wal",)]
        if flushed and wal:
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA wal_autocheckpoint=0")
        else:
            await db.execute("PRAGMA synchronous=FULL")
        await db.executescript(_SCHEMA)
        meta = {str(k): int(v) for k, v in await db.execute_fetchall("SELECT * FROM outbox_meta")}
        dropped = list(await db.execute_fetchall("SELECT type, count, cause FROM dropped"))
    except (OSError, aiosqlite.Error, CacheCorruptError) as exc:
        if db is not None:
            await db.close()
        if isinstance(exc, CacheCorruptError):
            raise
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            # "file is not a database", "database disk image is malformed"
            raise CacheCorruptError(f"{path}: the event outbox is damaged: {exc}") from None
        raise CacheError(f"{path}: cannot open the event outbox: {exc}") from None
    return db, wal, meta, [tuple(r) for r in dropped]


def _writer(path: Path, *, flushed: bool) -> sqlite3.Connection:
    """The connection every write goes through, in the event loop's own thread.

    A commit to the write-ahead log with ``synchronous=NORMAL`` is a
    ``write()`` into the page cache, tens of microseconds: cheaper than the
    trip to a database thread and back (the reads that decide a tap are
    made the same way, see :mod:`gateway.store.reader`).  Only one
    connection writes, so a write never waits for another.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA synchronous={'NORMAL' if flushed else 'FULL'}")
    if flushed:
        db.execute("PRAGMA wal_autocheckpoint=0")  # the flusher checkpoints, off the loop
    # Held by another connection (the flusher starting the log again, a staff
    # command): waited for on the event loop (WhenFree), not in SQLite's busy
    # handler, which would stop the loop with it.
    db.execute("PRAGMA busy_timeout=0")
    return db


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed whole, or rolled back whole."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            if db.in_transaction:
                db.execute("ROLLBACK")
        raise


@dataclass
class _Losses:
    """Events not stored, by type, until an ``events_dropped`` event reports them."""

    counts: Counter[str] = field(default_factory=Counter)
    #: Why the disk last refused events still to be reported (None: only the bound).
    cause: str | None = None
    #: The counts changed since they were last written to the file.
    unsaved: bool = False

    def count(self, lost: Iterable[str] | Mapping[str, int]) -> None:
        """Count events lost (types, or counts by type)."""
        added = Counter(lost)
        if added:  # an empty call (the keeper's) has nothing new to write down
            self.counts.update(added)
            self.unsaved = True

    def copy(self) -> _Losses:
        """The state as it is now, to go back to."""
        return _Losses(Counter(self.counts), self.cause, self.unsaved)

    def report(self) -> dict[str, Any]:
        """The ``events_dropped`` event's data for what was counted; counted afresh after."""
        data = {
            "count": sum(self.counts.values()),
            "types": dict(sorted(self.counts.items())),
            "storage_error": self.cause,
        }
        self.counts.clear()
        return data

    def rows(self) -> list[tuple[str, int, str | None]] | None:
        """The ``dropped`` table's rows when they must be written (None: unchanged)."""
        return [(t, n, self.cause) for t, n in self.counts.items()] if self.unsaved else None

    def saved(self) -> None:
        """The counts are in the file."""
        self.unsaved = False
        if not self.counts:
            self.cause = None


class Outbox:
    """The durable, bounded, acknowledged event queue of one gateway.

    ``flush_window``: seconds to sync a stored event in (None: at its commit);
    ``fsync_delay``, ``fsync``: the :class:`~gateway.store.flush.WalFlusher`'s."""

    def __init__(
        self,
        path: Path,
        clock: Clock,
        *,
        max_events: int = 1_000_000,
        warn_ratio: float = 0.9,
        flush_window: float | None = None,
        fsync_delay: float = 0.0,
        fsync: Sync = os.fsync,
    ) -> None:
        if max_events < 10:
            raise ValueError("an outbox needs room for at least 10 events")
        self.path = Path(path)
        self.max_events = max_events
        self._warn_at = int(max_events * warn_ratio)
        self._clock = clock
        self._db: aiosqlite.Connection | None = None  # reads, in its own thread
        self._w: sqlite3.Connection | None = None  # writes (see _writer)
        self.last_seq = 0
        self.acked_seq = 0
        #: Events stored and not acknowledged: rows, not numbers (a salvaged range
        #: spans numbers that will never be events).
        self._pending = 0
        #: The ``outbox_salvaged`` event's data when this outbox took over a damaged one.
        self.salvaged: dict[str, Any] | None = None
        self._warned = False
        self._losses = _Losses()
        #: Why events cannot be stored right now, or None while they can.
        self.storage_error: str | None = None
        #: Held by the append under way; writes wait while the file is held (see
        #: :meth:`append_many`).
        self._turn = asyncio.Lock()
        self._when_free = WhenFree()
        #: Set whenever events are ready to publish (stored, and durable), for the
        #: publisher to wake on.
        self.appended = Flag()
        self.flusher: WalFlusher | None = None
        if flush_window is not None:
            self.flusher = WalFlusher(
                self.path,
                clock,
                window=flush_window,
                delay=fsync_delay,
                sync=fsync,
                on_durable=self.appended.set,
            )

    async def __aenter__(self) -> Self:
        self._db, wal, meta, dropped = await _open(self.path, flushed=self.flusher is not None)
        if not wal and self.flusher is not None:
            # No log to flush (a file system without shared memory): every commit is
            # synced as it is made, and a tap waits for the disk.
            log.warning("%s: no write-ahead log here; each event is synced as stored", self.path)
            self.flusher = None
        for type_, count, cause in dropped:
            self._losses.counts[str(type_)] += int(count)
            self._losses.cause = cause or self._losses.cause
        self.last_seq, self.acked_seq = meta["last_seq"], meta["acked_seq"]
        try:
            self._w = _writer(self.path, flushed=self.flusher is not None)
            self._pending = int(self._w.execute("SELECT count(*) FROM events").fetchone()[0])
            if self.flusher is not None:
                await self.flusher.open(self.last_seq)
        except (OSError, sqlite3.Error) as exc:
            await self.__aexit__()
            raise CacheError(f"{self.path}: cannot open the event outbox: {exc}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.flusher is not None:
            await self.flusher.close()
        if self._w is not None:
            self._w.close()
            self._w = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def adopt(self, salvage: Salvage, *, moved_to: str, detail: str) -> int:
        """Take in what was salvaged from a damaged outbox; this one must be new and empty.

        The salvaged events keep their numbers; the ``outbox_salvaged`` event
        takes the first number above any the old file can have used
        (:func:`~gateway.store.repair.continue_numbering`).  Returns it.
        """
        assert self._db is not None, "outbox is not open"
        assert self.last_seq == 0, "only a new outbox adopts a salvage"
        now = int(self._clock.now().timestamp())
        acked, marker, data = continue_numbering(salvage, self.max_events, now)
        data = {**data, "moved_to": moved_to, "detail": detail[:300]}
        self._losses.count(salvage.dropped)
        row = (marker, now, "outbox_salvaged", json.dumps(data, separators=(",", ":")))
        await self._when_free(lambda: self._commit([*salvage.rows, row], marker, acked=acked))
        self.last_seq, self.acked_seq = marker, acked
        self._pending, self.salvaged = len(salvage.rows) + 1, data
        self._stored()
        log.warning("%s: %d events salvaged; next is %d", self.path, len(salvage.rows), marker + 1)
        return marker

    @property
    def depth(self) -> int:
        """Events stored and not yet acknowledged."""
        return self._pending

    @property
    def durable_seq(self) -> int:
        """Every event up to this sequence number is synced to the storage."""
        return self.last_seq if self.flusher is None else self.flusher.durable_seq

    def _stored(self) -> None:
        """Events up to :attr:`last_seq` are committed: publishable now, or once synced."""
        if self.flusher is None:
            self.appended.set()
        else:
            self.flusher.committed(self.last_seq)

    async def append(self, type_: str, data: dict[str, Any], at: int | None = None) -> int | None:
        """Store one event; return its sequence number, or None if the outbox is full."""
        seqs = await self.append_many([(type_, data, at)])
        return seqs[0]

    async def append_many(
        self, events: Sequence[tuple[str, Mapping[str, Any], int | None]]
    ) -> list[int | None]:
        """Store events in one transaction (group commit); sequence numbers in order.

        An event that cannot be stored (the outbox is full, or the disk is
        full, read-only or failing) gets None and is counted, never raised:
        a door must not fail with the disk.  Written at once, in this thread
        (:func:`_writer`), unless another connection holds the file (the
        flusher starting the log again): then it waits, on the event loop, up
        to :data:`~gateway.store.connect.HELD_WAIT` in all, and after that is
        counted too.  Appends take turns, so sequence numbers are stored in
        the order they are taken; one cancelled while it waits is counted.
        """
        try:
            async with self._turn:
                try:
                    return await self._when_free(lambda: self._append_now(events))
                except sqlite3.OperationalError as exc:  # still held after the wait
                    self._losses.count(type_ for type_, _, _ in events)
                    self._storage_failed(exc)
                    return [None] * len(events)
        except asyncio.CancelledError:
            # Never stored nor numbered (a success returns without a pause): lost,
            # so counted, as the disk-full rules say.
            self._losses.count(type_ for type_, _, _ in events)
            raise

    def _append_now(
        self, events: Sequence[tuple[str, Mapping[str, Any], int | None]]
    ) -> list[int | None]:
        """One attempt; sqlite3.OperationalError, with nothing changed, if the file
        is :func:`~gateway.store.connect.held`."""
        now = int(self._clock.now().timestamp())
        before, warned_before = self._losses.copy(), self._warned
        out: list[int | None] = []
        rows: list[tuple[int, int, str, str]] = []
        seq = self.last_seq
        extra: list[tuple[str, Mapping[str, Any]]] = []
        if self._losses.counts and self.depth < self.max_events:
            extra.append(("events_dropped", self._losses.report()))
        for type_, data, at in [(t, d, None) for t, d in extra] + list(events):
            if self._pending + len(rows) >= self.max_events:
                self._losses.counts[type_] += 1
                out.append(None)
                continue
            seq += 1
            rows.append(
                (seq, now if at is None else at, type_, json.dumps(data, separators=(",", ":")))
            )
            out.append(seq)
            if not self._warned and self._pending + len(rows) >= self._warn_at:
                self._warned, seq = True, seq + 1
                depth = {"depth": self._pending + len(rows) + 1, "max_events": self.max_events}
                rows.append((seq, now, "outbox_nearly_full", json.dumps(depth)))
                log.warning("event outbox at %(depth)d of %(max_events)d events", depth)
        if self._losses.counts != before.counts:
            self._losses.unsaved = True
        if rows or self._losses.unsaved:
            try:
                self._commit(rows, seq)
            except (sqlite3.Error, OSError) as exc:
                self._losses, self._warned = before, warned_before
                if held(exc):
                    raise
                # Nothing of this call was stored: every one of its events is lost,
                # and a drop report taken out above is owed still.
                self._losses.count(t for t, _, _ in events)
                self._storage_failed(exc)
                return [None] * len(events)
            if rows:
                self.last_seq = seq
                self._pending += len(rows)
                self._stored()
            if self.storage_error is not None:
                log.warning("the event outbox can be written again")
                self.storage_error = None
        return out[len(extra) :]

    def _commit(
        self, rows: Sequence[tuple[int, int, str, str]], seq: int, *, acked: int | None = None
    ) -> None:
        """Store ``rows``, the last sequence (and ``acked``) and the drop counts if
        they changed, all or nothing."""
        assert self._w is not None, "outbox is not open"
        # The counts outlast a restart: a report owed is never forgotten.  Only
        # when they changed: a tap's commit must not pay for them otherwise.
        _store(self._w, rows, seq, acked=acked, drops=self._losses.rows())
        self._losses.saved()

    def _storage_failed(self, exc: BaseException) -> None:
        """Writing failed: remember why (for the drop report), and say so once."""
        detail = str(exc) or type(exc).__name__
        self._losses.cause = detail[:200]
        if self.storage_error is None:
            log.error("%s: events cannot be stored (%s); they are counted", self.path, detail)
        self.storage_error = detail

    async def keep(self) -> None:
        """Until cancelled: store what is owed (the drop report) as soon as there is room.

        Room comes back when the platform acknowledges events (which stores
        the report at once) or when the disk has space again: this notices
        the latter without waiting for a new event.
        """
        while True:
            await self._clock.sleep(RETRY_SECONDS)
            if self._losses.counts and self.depth < self.max_events:
                await self.append_many([])

    async def ping(self) -> None:
        """A trivial read through the database thread: it answers while writes can."""
        assert self._db is not None, "outbox is not open"
        await self._db.execute_fetchall("SELECT 1")

    async def pending(
        self, after: int, limit: int, *, upto: int | None = None
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` stored events with sequence above ``after`` (and at most
        ``upto``), in order."""
        assert self._db is not None, "outbox is not open"
        assert self._w is not None, "outbox is not open"
        upto = self.last_seq if upto is None else upto
        params = (after, upto, limit)
        if min(limit, upto - after) <= INLINE_READ:
            # A few rows from the page cache, on the connection that wrote them: far
            # cheaper than a trip to the database thread and back, once per event.
            rows = self._w.execute(_PENDING_SQL, params).fetchall()
        else:
            rows = list(await self._db.execute_fetchall(_PENDING_SQL, params))
        return [{"seq": r[0], "at": r[1], "type": r[2], "data": json.loads(r[3])} for r in rows]

    async def ack(self, seq: int) -> int:
        """The platform stored everything up to ``seq``: delete it; return how many.

        Deleted :data:`ACK_CHUNK` events per transaction, letting taps in
        between.  The room this makes is used at once for a drop report that
        is owed.  An ack the disk cannot take is logged and left: the
        platform acknowledges again.
        """
        if seq > self.last_seq:
            log.warning("ack %d beyond the last event %d; ignored", seq, self.last_seq)
            return 0
        deleted = 0
        db = self._w
        assert db is not None, "outbox is not open"
        try:
            while self.acked_seq < seq:
                deleted += await self._when_free(
                    lambda: self._ack_now(_chunk_end(db, self.acked_seq, seq))
                )
                if self.acked_seq < seq:
                    await asyncio.sleep(0)
        except (sqlite3.Error, OSError) as exc:
            self._storage_failed(exc)
            return deleted
        if self._losses.counts and self.depth < self.max_events:
            await self.append_many([])
        return deleted

    def _ack_now(self, seq: int) -> int:
        db = self._w
        assert db is not None, "outbox is not open"
        with _transaction(db):
            cursor = db.execute("DELETE FROM events WHERE seq <= ?", (seq,))
            db.execute("UPDATE outbox_meta SET value = ? WHERE key = 'acked_seq'", (seq,))
        self.acked_seq = seq
        self._pending -= cursor.rowcount
        if self.depth < self._warn_at:
            self._warned = False
        return cursor.rowcount


def _store(
    db: sqlite3.Connection,
    rows: Sequence[tuple[int, int, str, str]],
    seq: int,
    *,
    acked: int | None,
    drops: Sequence[tuple[str, int, str | None]] | None,
) -> None:
    """Write ``rows`` and the last sequence ``seq`` (with ``acked`` and the drop
    counts, when given) in one transaction."""
    if len(rows) == 1 and acked is None and drops is None:
        # The common case, a tap's event: one statement is its own transaction.
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", rows[0])
        return
    with _transaction(db):
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
        db.execute("UPDATE outbox_meta SET value = ? WHERE key = 'last_seq'", (seq,))
        if acked is not None:
            db.execute("UPDATE outbox_meta SET value = ? WHERE key = 'acked_seq'", (acked,))
        if drops is not None:
            db.execute("DELETE FROM dropped")
            db.executemany("INSERT INTO dropped VALUES (?, ?, ?)", drops)


def _chunk_end(db: sqlite3.Connection, acked: int, seq: int) -> int:
    """Where the next :data:`ACK_CHUNK` events after ``acked`` up to ``seq`` end:
    counted in rows, since a salvaged range may span a trillion numbers and no event."""
    row = db.execute(
        "SELECT seq FROM events WHERE seq > ? AND seq < ? ORDER BY seq LIMIT 1 OFFSET ?",
        (acked, seq, ACK_CHUNK - 1),
    ).fetchone()
    return seq if row is None else int(row[0])
