"""The cache's write side: whole datasets and incremental changes, atomically."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from gateway.clock import Clock
from gateway.core import model
from gateway.errors import CacheCorruptError, CacheError, CacheSchemaError, DatasetError
from gateway.store.claims import move_claims
from gateway.store.connect import connect
from gateway.store.doorwrites import DoorWrites, integrity_message
from gateway.store.flush import WalFlusher
from gateway.store.rows import (
    TABLES,
    insert_sql,
    table_rows,
)
from gateway.store.schema import (
    CLAIMS_MOVED,
    MIGRATIONS,
    SCHEMA_VERSION,
)
from gateway.store.stage import SnapshotStage
from gateway.store.wal import checkpoint

log = logging.getLogger(__name__)


#: Deltas of at most this many changes are written in the event loop's thread.
LOOP_DELTA_CHANGES = 64


def _change_statement(change: model.Change) -> tuple[str, Sequence[Any]]:
    """The one statement that applies ``change`` (DatasetError if it cannot be)."""
    if isinstance(change, model.Upsert):
        table, columns, row = TABLES[type(change.item)]
        return insert_sql(table, columns, upsert=True), row(change.item)
    table_name = model.ENTITY_TABLES.get(change.entity)
    if table_name is None:
        raise DatasetError(f"cannot delete entity of kind {change.entity!r}")
    return f"DELETE FROM {table_name} WHERE id = ?", (change.id,)


_UPSERT_META = "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
_META_TIME = "INSERT INTO meta (key, value) VALUES ('updated_at', ?) " + _UPSERT_META
_META_TIME_VERSION = (
    "INSERT INTO meta (key, value) VALUES ('updated_at', ?), ('dataset_version', ?) " + _UPSERT_META
)


def _meta_statements(clock: Clock, version: int | None) -> list[tuple[str, Sequence[Any]]]:
    """The statement that records a write's time (and the data's new version).

    One statement for both rows: it runs with every delta, and each statement
    is one more trip through SQLite on caches gone cold since the last delta."""
    at = str(int(clock.now().timestamp()))
    if version is None:
        return [(_META_TIME, (at,))]
    return [(_META_TIME_VERSION, (at, str(version)))]


class CacheWriter:
    """Opens (creating and migrating) the cache file and writes to it.

    Use as ``async with CacheWriter(path, clock) as writer: ...``.
    """

    def __init__(self, path: Path, clock: Clock, flusher: WalFlusher | None = None) -> None:
        self.path = Path(path)
        self._clock = clock
        self._flusher = flusher  # syncs the door's writes (gateway.store.doorwrites)
        self._db: aiosqlite.Connection | None = None
        self._tx_lock = asyncio.Lock()
        #: The writes a member at a door waits for, on a connection of their own.
        self._door_writes: DoorWrites | None = None
        #: A checkpoint of what they wrote, running in aiosqlite's thread.
        self._checkpoint: asyncio.Task[None] | None = None
        #: Snapshot transfers: chunks as they arrive, and the stage tables.
        self.stage = SnapshotStage(self)

    async def __aenter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"{self.path}: cannot open the cache: {exc}") from None
        try:
            await self._setup()
            self._door_writes = DoorWrites(self.path, self._clock, self._flusher)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        if self._door_writes is not None:
            self._door_writes.close()
            self._door_writes = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection (only inside ``async with``)."""
        if self._db is None:
            raise CacheError("the cache writer is not open")
        return self._db

    async def _setup(self) -> None:
        db = self.db
        try:
            mode = await (await db.execute("PRAGMA journal_mode=WAL")).fetchone()
            if mode is None or mode[0] != "wal":
                raise CacheError(f"{self.path}: cannot switch the cache to WAL mode")
            # The cache can always be rebuilt from a snapshot, so NORMAL (no fsync
            # per commit in WAL mode) trades a few seconds of changes on power loss
            # for far fewer SD-card writes.
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            row = await (await db.execute("PRAGMA user_version")).fetchone()
        except sqlite3.OperationalError as exc:
            raise CacheError(f"{self.path}: cannot open the cache: {exc}") from None
        except sqlite3.DatabaseError as exc:
            # "file is not a database", "database disk image is malformed"
            raise CacheCorruptError(f"{self.path}: the cache is damaged: {exc}") from None
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise CacheSchemaError(
                f"{self.path}: cache schema version {current} is newer than this doorgw "
                f"understands ({SCHEMA_VERSION}); upgrade doorgw or remove the file to resync"
            )
        try:
            # quick_check reads every page (a third of a second at a million
            # bookings); the full integrity_check runs later, beside the doors.
            damage = [str(r[0]) for r in await db.execute_fetchall("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            damage = [str(exc)]
        if damage != ["ok"]:
            detail = "; ".join(damage[:3])
            raise CacheCorruptError(f"{self.path}: the cache is damaged: {detail}")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            log.info("migrating cache %s to schema version %d", self.path, version)
            if version == CLAIMS_MOVED:
                await asyncio.to_thread(move_claims, self.path, self._clock.now())
            await db.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[version - 1]}\n"
                f"PRAGMA user_version = {version};\nCOMMIT;"
            )

    async def replace_dataset(self, dataset: model.Dataset) -> None:
        """Replace everything with ``dataset``: load it into stage tables, then swap.

        Readers keep seeing the previous data until the swap commits; if
        anything fails, the previous data stays as it was.
        """
        await self.stage.begin_stage()
        try:
            for items in dataset.tables():
                if items:
                    # A generator, so rows are built in aiosqlite's worker thread
                    # instead of blocking the event loop for a million bookings.
                    await self.stage.stage_rows(*table_rows(items))
            await self.stage.swap_stage(dataset.version)
        except BaseException:
            await self.stage.drop_stage()
            raise
        log.info("cache replaced with dataset version %d", dataset.version)

    async def apply_changes(
        self, changes: Sequence[model.Change], version: int | None = None
    ) -> None:
        """Apply upserts and deletes in order, in one transaction: all or nothing.
        Up to :data:`LOOP_DELTA_CHANGES` changes are written at once in this thread
        (:mod:`~gateway.store.doorwrites`): cheaper than four trips to aiosqlite's."""
        if len(changes) > LOOP_DELTA_CHANGES:
            async with self._transaction("changes not applied"):
                await self._apply(changes)
                await self._set_meta(version)
            return
        statements = [_change_statement(change) for change in changes]
        statements += _meta_statements(self._clock, version)
        async with self._tx_lock:
            self._doors().transaction(statements, "changes not applied")
        self._checkpoint_soon()

    async def _apply(self, changes: Sequence[model.Change]) -> None:
        for change in changes:
            await self.db.execute(*_change_statement(change))

    @asynccontextmanager
    async def _transaction(self, failure: str) -> AsyncIterator[None]:
        """One write transaction: committed whole, or rolled back whole.

        The connection is shared by the snapshot loader and the deltas, so
        transactions take turns; a delta waits at most for one chunk.
        """
        async with self._tx_lock, self._unlocked_transaction(failure):
            yield

    @asynccontextmanager
    async def _unlocked_transaction(self, failure: str) -> AsyncIterator[None]:
        # SQLite's own errors (a full disk, a damaged file) leave the store as
        # CacheError: no caller above this layer knows what sqlite3 is.
        db = self.db
        try:
            await db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CacheError(f"{failure}: {exc}") from exc
        try:
            yield
            await db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            await self._rollback()
            raise DatasetError(f"{failure}: {integrity_message(exc)}") from None
        except sqlite3.Error as exc:
            await self._rollback()
            raise CacheError(f"{failure}: {exc}") from exc
        except BaseException:
            # Cancellation included: never leave a transaction open on the connection.
            await self._rollback()
            raise

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement to its end and close it, inside a transaction already held.

        SQLite refuses to drop a table while any statement on the connection is
        still open ("database table is locked"): a cursor left open after a
        fetchone() would make the next snapshot's stage fail.
        """
        async with self.db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One query outside any transaction, taking turns with the writers (as rows)."""
        try:
            async with self._tx_lock:
                return await self._rows(sql, params)
        except sqlite3.Error as exc:
            raise CacheError(f"{self.path}: cannot read the cache: {exc}") from exc

    async def _rollback(self) -> None:
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                await self.db.execute("ROLLBACK")

    async def apply_restrictions(self, changes: Sequence[model.Change]) -> int:
        """Apply only what in ``changes`` takes access away, without a version bump.

        Used for deltas that cannot be applied in order yet (a version gap):
        deletes, and credentials, members and bookings whose new state opens
        nothing.  Taking access away early is always safe; the full delta is
        applied in order later.  Returns how many rows changed.
        """
        db = self.db
        changed = 0
        async with self._transaction("restrictions not applied"):
            for change in changes:
                if isinstance(change, model.Delete):
                    table = model.ENTITY_TABLES.get(change.entity)
                    # Deleting a revocation gives a pass back: that waits its turn.
                    if table is None or table == "revoked_passes":
                        continue
                    cursor = await db.execute(f"DELETE FROM {table} WHERE id = ?", (change.id,))
                else:
                    item = change.item
                    args: tuple[object, ...]
                    if isinstance(item, model.Credential) and (
                        item.status is not model.CredentialStatus.ACTIVE
                    ):
                        sql, args = (
                            "UPDATE credentials SET status = ? WHERE id = ?",
                            (item.status.value, item.id),
                        )
                    elif isinstance(item, model.Member) and (
                        item.status is not model.MemberStatus.ACTIVE
                    ):
                        sql, args = (
                            "UPDATE members SET status = ? WHERE id = ?",
                            (item.status.value, item.id),
                        )
                    elif isinstance(item, model.Booking) and not item.payment.opens_doors:
                        sql, args = (
                            "UPDATE bookings SET payment = ? WHERE id = ?",
                            (item.payment.value, item.id),
                        )
                    elif isinstance(item, model.RevokedPass):
                        sql, args = (
                            "INSERT INTO revoked_passes (id, until) VALUES (?, ?) "
                            "ON CONFLICT(id) DO UPDATE SET until = excluded.until",
                            (item.id, item.until),
                        )
                    else:
                        continue
                    cursor = await db.execute(sql, args)
                changed += max(cursor.rowcount, 0)
        return changed

    async def claim_nonce(self, nonce: str, exp: int, forget_before: int) -> bool:
        """Record a command's one-time nonce; False if it was seen before (a replay).
        See :meth:`~gateway.store.doorwrites.DoorWrites.claim_nonce`."""
        try:
            return await self._doors().claim_nonce(nonce, exp, forget_before)
        finally:
            self._checkpoint_soon()

    async def use_pass(self, pass_id: str, max_uses: int, until: int, now: int) -> int | None:
        """Count one use of a pass; None if they are all used.  See
        :meth:`~gateway.store.doorwrites.DoorWrites.use_pass`."""
        try:
            return await self._doors().use_pass(pass_id, max_uses, until, now)
        finally:
            self._checkpoint_soon()

    def _doors(self) -> DoorWrites:
        if self._door_writes is None:
            raise CacheError("the cache writer is not open")
        return self._door_writes

    def _checkpoint_soon(self) -> None:
        # The log, checkpointed in aiosqlite's thread after the door has its answer.
        doors = self._door_writes
        if doors is None or self._checkpoint is not None or not doors.checkpoint_due():
            return
        self._checkpoint = asyncio.create_task(self._run_checkpoint(), name="cache-checkpoint")

    async def _run_checkpoint(self) -> None:
        try:
            async with self._tx_lock:
                # Started again here, not in the next scan's commit.
                await checkpoint(self.db, SCHEMA_VERSION)
        except (sqlite3.Error, CacheError) as exc:
            log.warning("%s: checkpoint failed: %s", self.path, exc)  # tried again later
        finally:
            self._checkpoint = None

    async def _set_meta(self, version: int | None) -> None:
        for statement in _meta_statements(self._clock, version):
            await self.db.execute(*statement)

    async def updated_at(self) -> int | None:
        """When the cache last took data from the platform (Unix seconds), if ever."""
        rows = await self.read("SELECT value FROM meta WHERE key = 'updated_at'")
        return int(rows[0][0]) if rows else None

    async def dataset_version(self) -> int | None:
        """The version of the data in the cache, or None when it holds none."""
        rows = await self.read("SELECT value FROM meta WHERE key = 'dataset_version'")
        return int(rows[0][0]) if rows else None
