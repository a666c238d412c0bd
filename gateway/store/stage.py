"""A snapshot transfer in the cache file: its chunks as they arrive, and the stage tables.

Chunks are kept in the ``snapshot_chunks`` table as they arrive, so a
restart resumes a transfer instead of starting over.  A complete snapshot is
loaded into stage tables beside the live ones (deltas keep applying to the
live tables meanwhile) and swapped in whole, in one transaction, with the
deltas that arrived meanwhile replayed on top.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import aiosqlite

from gateway.core import model
from gateway.store.rows import BULK_CHECKPOINT_PAGES, CHECKPOINT_PAGES, stage_insert_sql
from gateway.store.schema import STAGE_PREFIX, TABLES_CHILDREN_FIRST, entity_tables


class _Writer(Protocol):
    """What the stage uses of its :class:`~gateway.store.writer.CacheWriter`."""

    _tx_lock: asyncio.Lock

    @property
    def db(self) -> aiosqlite.Connection: ...

    def _transaction(self, failure: str) -> AbstractAsyncContextManager[None]: ...

    def _unlocked_transaction(self, failure: str) -> AbstractAsyncContextManager[None]: ...

    async def _set_meta(self, version: int | None) -> None: ...

    async def _apply(self, changes: Sequence[model.Change]) -> None: ...

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...


class SnapshotStage:
    """The snapshot side of a :class:`~gateway.store.writer.CacheWriter` (its ``stage``)."""

    def __init__(self, writer: _Writer) -> None:
        # The writer's connection and transactions: stage and live writes take turns.
        self._w = writer

    async def begin_stage(self) -> None:
        """Create empty stage tables for a snapshot, dropping any left from before."""
        await self.drop_stage()
        # A snapshot commits chunk by chunk; checkpointing the WAL every 4 MB
        # (SQLite's default) costs ~12 % of a 1M-booking load, every 80 MB
        # does not.  Restored when the stage is swapped in or dropped.
        async with self._w._tx_lock:
            suffix = "b" if await self._live_suffix() == "a" else "a"
            await self._w.db.execute(f"PRAGMA wal_autocheckpoint={BULK_CHECKPOINT_PAGES}")
            await self._w.db.executescript(
                f"BEGIN IMMEDIATE;\n{entity_tables(STAGE_PREFIX, suffix)}\nCOMMIT;"
            )

    async def stage_rows(
        self, table: str, rows: Iterable[Sequence[Any]], values: str | None = None
    ) -> None:
        """Insert rows into one stage table, in their own transaction.

        ``values`` is the SQL VALUES expression when the rows are not already
        in column order (see ``gateway.wire.protocol.WIRE_VALUES``).  Live data is
        untouched, so deltas can be applied between calls.
        """
        sql = stage_insert_sql(table)
        if values is not None:
            sql = sql.rsplit(" VALUES ", 1)[0] + f" VALUES ({values})"
        async with self._w._transaction("snapshot not applied"):
            await self._w.db.executemany(sql, rows)

    async def swap_stage(
        self, version: int, replay: Sequence[tuple[int, Sequence[model.Change]]] = ()
    ) -> None:
        """Make the stage tables live, at ``version``, then re-apply ``replay``.

        ``replay`` holds (version, changes) of deltas newer than the
        snapshot that were applied to the old tables meanwhile.  All of it
        is one transaction: readers see the old data, then the new data
        with those deltas, never anything in between.
        """
        db = self._w.db
        # Dropping a parent table with enforcement on would first delete its
        # rows one by one; referential integrity is checked whole below.  The
        # lock spans the pragmas: no delta may run while enforcement is off.
        await self._w._tx_lock.acquire()
        await db.execute("PRAGMA foreign_keys=OFF")
        try:
            async with self._w._unlocked_transaction("snapshot not applied"):
                for table in TABLES_CHILDREN_FIRST:
                    await db.execute(f"DROP TABLE {table}")
                for table in TABLES_CHILDREN_FIRST:
                    await db.execute(f"ALTER TABLE {STAGE_PREFIX}{table} RENAME TO {table}")
                await self._w._set_meta(version)
                for delta_version, changes in replay:
                    await self._w._apply(changes)
                    await self._w._set_meta(delta_version)
                # The stage tables were filled with enforcement on; only replayed
                # deltas (applied with it off, above) can have broken a reference.
                problems = await self._w._rows("PRAGMA foreign_key_check") if replay else []
                if problems:
                    table, _, parent, _ = problems[0]
                    raise sqlite3.IntegrityError(
                        f"FOREIGN KEY: {len(problems)} rows of {table} name a missing {parent}"
                    )
        finally:
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            self._w._tx_lock.release()

    async def drop_stage(self) -> None:
        """Drop the stage tables, if any (an abandoned or failed snapshot)."""
        db = self._w.db
        async with self._w._tx_lock:
            await db.execute("PRAGMA foreign_keys=OFF")
            try:
                async with self._w._unlocked_transaction("stage not dropped"):
                    for table in TABLES_CHILDREN_FIRST:
                        await db.execute(f"DROP TABLE IF EXISTS {STAGE_PREFIX}{table}")
            finally:
                await db.execute("PRAGMA foreign_keys=ON")
                await db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")

    async def _live_suffix(self) -> str:
        rows = await self._w._rows(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'bookings' "
            "AND name LIKE 'bookings_by_member_%'"
        )
        return "a" if not rows else str(rows[0][0])[-1]

    async def store_chunk(
        self, snapshot_id: str, index: int, count: int, version: int, sha256: str, data: bytes
    ) -> int | None:
        """Keep one snapshot chunk (duplicates ignored); return how many of it are stored.

        Chunks of any other snapshot are dropped: one transfer at a time.  None,
        and nothing stored, when the chunk names another ``count``, ``version``
        or ``sha256`` than the chunks of its snapshot already held.
        """
        async with self._w._transaction("chunk not stored"):
            await self._w.db.execute(
                "DELETE FROM snapshot_chunks WHERE snapshot_id != ?", (snapshot_id,)
            )
            held = await self._w._rows(
                "SELECT count, version, sha256 FROM snapshot_chunks WHERE snapshot_id = ? LIMIT 1",
                (snapshot_id,),
            )
            if held and tuple(held[0]) != (count, version, sha256):
                return None
            await self._w.db.execute(
                "INSERT OR IGNORE INTO snapshot_chunks VALUES (?, ?, ?, ?, ?, ?)",
                (snapshot_id, index, count, version, sha256, data),
            )
            rows = await self._w._rows(
                "SELECT count(*) FROM snapshot_chunks WHERE snapshot_id = ?", (snapshot_id,)
            )
        return int(rows[0][0]) if rows else 0

    async def pending_snapshot(self) -> tuple[str, int, int, str, list[int]] | None:
        """The transfer in progress: (id, version, count, sha256, indexes held), if any."""
        rows = await self._w.read(
            "SELECT snapshot_id, version, count, sha256, idx FROM snapshot_chunks ORDER BY idx"
        )
        if not rows:
            return None
        sid, version, count, sha = rows[0][:4]
        return str(sid), int(version), int(count), str(sha), [int(r[4]) for r in rows]

    async def snapshot_chunks(self, snapshot_id: str) -> list[bytes]:
        """The stored chunks of a snapshot, in index order."""
        rows = await self._w.read(
            "SELECT data FROM snapshot_chunks WHERE snapshot_id = ? ORDER BY idx", (snapshot_id,)
        )
        return [bytes(r[0]) for r in rows]

    async def drop_chunks(self) -> None:
        """Forget any snapshot transfer."""
        async with self._w._transaction("chunks not dropped"):
            await self._w.db.execute("DELETE FROM snapshot_chunks")
