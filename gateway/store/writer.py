"""The cache's write side: whole datasets and incremental changes, atomically."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from gateway.clock import Clock
from gateway.core import model
from gateway.errors import CacheError, CacheSchemaError, DatasetError
from gateway.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    STAGE_PREFIX,
    TABLES_CHILDREN_FIRST,
    entity_tables,
)

log = logging.getLogger(__name__)

#: WAL pages between automatic checkpoints: SQLite's default, and while a snapshot loads.
CHECKPOINT_PAGES = 1000
BULK_CHECKPOINT_PAGES = 20_000


def _list(values: Iterable[str]) -> str:
    return json.dumps(sorted(values))


# Entity type -> (table, columns, row builder).  The first column is the key.
_Row = tuple[Any, ...]
_TABLES: dict[type, tuple[str, tuple[str, ...], Callable[[Any], _Row]]] = {
    model.Site: (
        "site",
        ("singleton", "id", "timezone", "closures"),
        lambda s: (1, s.id, s.timezone, json.dumps(sorted(d.isoformat() for d in s.closures))),
    ),
    model.Resource: ("resources", ("id", "name"), lambda r: (r.id, r.name)),
    model.Door: (
        "doors",
        ("id", "name", "resources", "groups"),
        lambda d: (d.id, d.name, _list(d.resources), _list(d.groups)),
    ),
    model.Member: (
        "members",
        ("id", "name", "status", "extended_unlock", "staff"),
        lambda m: (m.id, m.name, m.status.value, int(m.extended_unlock), int(m.staff)),
    ),
    model.Credential: (
        "credentials",
        ("id", "member_id", "kind", "value", "status", "valid_from", "valid_until"),
        lambda c: (
            c.id,
            c.member_id,
            c.kind.value,
            c.value,
            c.status.value,
            c.valid_from,
            c.valid_until,
        ),
    ),
    model.Plan: (
        "plans",
        ("id", "name", "door_groups", "schedule", "around_the_clock"),
        lambda p: (
            p.id,
            p.name,
            _list(p.door_groups),
            json.dumps(p.schedule.texts()),
            int(p.around_the_clock),
        ),
    ),
    model.Entitlement: (
        "entitlements",
        ("id", "member_id", "plan_id", "valid_from", "valid_until"),
        lambda e: (e.id, e.member_id, e.plan_id, e.valid_from, e.valid_until),
    ),
    model.Booking: (
        "bookings",
        (
            "id",
            "member_id",
            "resource_id",
            "start_ts",
            "end_ts",
            "payment",
            "grace_before",
            "grace_after",
            "closes_at",
        ),
        lambda b: (
            b.id,
            b.member_id,
            b.resource_id,
            b.start,
            b.end,
            b.payment.value,
            b.grace_before,
            b.grace_after,
            b.closes_at,
        ),
    ),
    model.Pass: (
        "passes",
        ("id", "member_id", "kind", "name", "doors", "door_groups", "valid_from", "valid_until"),
        lambda p: (
            p.id,
            p.member_id,
            p.kind.value,
            p.name,
            _list(p.doors),
            _list(p.door_groups),
            p.valid_from,
            p.valid_until,
        ),
    ),
    model.RevokedPass: ("revoked_passes", ("id", "until"), lambda r: (r.id, r.until)),
}
#: Table -> its columns, in insert order.
_COLUMNS = {table: columns for table, columns, _ in _TABLES.values()}
_ENTITY_TABLE = model.ENTITY_TABLES


def table_rows(items: Sequence[Any]) -> tuple[str, Iterator[_Row]]:
    """The table of a non-empty sequence of one entity type, and its database rows."""
    table, _, row = _TABLES[type(items[0])]
    return table, (row(i) for i in items)


def stage_insert_sql(table: str) -> str:
    """The plain INSERT into a stage table, columns in :func:`table_rows` order."""
    return _insert_sql(STAGE_PREFIX + table, _COLUMNS[table], upsert=False)


def _insert_sql(table: str, columns: Sequence[str], *, upsert: bool) -> str:
    cols = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"
    if upsert:
        # Not INSERT OR REPLACE: that deletes whatever row conflicts on *any*
        # unique key (another member's card) and fires cascades.
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        sql += f" ON CONFLICT({columns[0]}) DO UPDATE SET {updates}"
    return sql


def _integrity_message(exc: sqlite3.IntegrityError) -> str:
    text = str(exc)
    if "credentials.kind, credentials.value" in text:
        return "a credential value is already held by another credential"
    if "FOREIGN KEY" in text:
        return "an entity refers to a member, plan or resource that is not in the cache"
    return text


class CacheWriter:
    """Opens (creating and migrating) the cache file and writes to it.

    Use as ``async with CacheWriter(path, clock) as writer: ...``.
    """

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = Path(path)
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._tx_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"{self.path}: cannot open the cache: {exc}") from None
        try:
            await self._setup()
        except BaseException:
            await self._db.close()
            self._db = None
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
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
        except sqlite3.DatabaseError as exc:
            raise CacheSchemaError(f"{self.path}: not a doorgw cache: {exc}") from None
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise CacheSchemaError(
                f"{self.path}: cache schema version {current} is newer than this doorgw "
                f"understands ({SCHEMA_VERSION}); upgrade doorgw or remove the file to resync"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            log.info("migrating cache %s to schema version %d", self.path, version)
            await db.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[version - 1]}\n"
                f"PRAGMA user_version = {version};\nCOMMIT;"
            )

    async def replace_dataset(self, dataset: model.Dataset) -> None:
        """Replace everything with ``dataset``: load it into stage tables, then swap.

        Readers keep seeing the previous data until the swap commits; if
        anything fails, the previous data stays as it was.
        """
        await self.begin_stage()
        try:
            for items in dataset.tables():
                if items:
                    # A generator, so rows are built in aiosqlite's worker thread
                    # instead of blocking the event loop for a million bookings.
                    await self.stage_rows(*table_rows(items))
            await self.swap_stage(dataset.version)
        except BaseException:
            await self.drop_stage()
            raise
        log.info("cache replaced with dataset version %d", dataset.version)

    async def begin_stage(self) -> None:
        """Create empty stage tables for a snapshot, dropping any left from before."""
        await self.drop_stage()
        suffix = "b" if await self._live_suffix() == "a" else "a"
        # A snapshot commits chunk by chunk; checkpointing the WAL every 4 MB
        # (SQLite's default) costs ~12 % of a 1M-booking load, every 80 MB
        # does not.  Restored when the stage is swapped in or dropped.
        async with self._tx_lock:
            await self.db.execute(f"PRAGMA wal_autocheckpoint={BULK_CHECKPOINT_PAGES}")
            await self.db.executescript(
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
        async with self._transaction("snapshot not applied"):
            await self.db.executemany(sql, rows)

    async def swap_stage(
        self, version: int, replay: Sequence[tuple[int, Sequence[model.Change]]] = ()
    ) -> None:
        """Make the stage tables live, at ``version``, then re-apply ``replay``.

        ``replay`` holds (version, changes) of deltas newer than the
        snapshot that were applied to the old tables meanwhile.  All of it
        is one transaction: readers see the old data, then the new data
        with those deltas, never anything in between.
        """
        db = self.db
        # Dropping a parent table with enforcement on would first delete its
        # rows one by one; referential integrity is checked whole below.  The
        # lock spans the pragmas: no delta may run while enforcement is off.
        await self._tx_lock.acquire()
        await db.execute("PRAGMA foreign_keys=OFF")
        try:
            async with self._unlocked_transaction("snapshot not applied"):
                for table in TABLES_CHILDREN_FIRST:
                    await db.execute(f"DROP TABLE {table}")
                for table in TABLES_CHILDREN_FIRST:
                    await db.execute(f"ALTER TABLE {STAGE_PREFIX}{table} RENAME TO {table}")
                await self._set_meta(version)
                for delta_version, changes in replay:
                    await self._apply(changes)
                    await self._set_meta(delta_version)
                # The stage tables were filled with enforcement on; only replayed
                # deltas (applied with it off, above) can have broken a reference.
                problems = (
                    list(await (await db.execute("PRAGMA foreign_key_check")).fetchall())
                    if replay
                    else []
                )
                if problems:
                    table, _, parent, _ = problems[0]
                    raise sqlite3.IntegrityError(
                        f"FOREIGN KEY: {len(problems)} rows of {table} name a missing {parent}"
                    )
        finally:
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            self._tx_lock.release()

    async def drop_stage(self) -> None:
        """Drop the stage tables, if any (an abandoned or failed snapshot)."""
        db = self.db
        async with self._tx_lock:
            await db.execute("PRAGMA foreign_keys=OFF")
            try:
                async with self._unlocked_transaction("stage not dropped"):
                    for table in TABLES_CHILDREN_FIRST:
                        await db.execute(f"DROP TABLE IF EXISTS {STAGE_PREFIX}{table}")
            finally:
                await db.execute("PRAGMA foreign_keys=ON")
                await db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")

    async def _live_suffix(self) -> str:
        row = await (
            await self.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'bookings' "
                "AND name LIKE 'bookings_by_member_%'"
            )
        ).fetchone()
        return "a" if row is None else str(row[0])[-1]

    async def apply_changes(
        self, changes: Sequence[model.Change], version: int | None = None
    ) -> None:
        """Apply upserts and deletes in order, in one transaction: all or nothing."""
        async with self._transaction("changes not applied"):
            await self._apply(changes)
            await self._set_meta(version)

    async def _apply(self, changes: Sequence[model.Change]) -> None:
        db = self.db
        for change in changes:
            if isinstance(change, model.Upsert):
                table, columns, row = _TABLES[type(change.item)]
                await db.execute(_insert_sql(table, columns, upsert=True), row(change.item))
            else:
                table_name = _ENTITY_TABLE.get(change.entity)
                if table_name is None:
                    raise DatasetError(f"cannot delete entity of kind {change.entity!r}")
                await db.execute(f"DELETE FROM {table_name} WHERE id = ?", (change.id,))

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
            raise DatasetError(f"{failure}: {_integrity_message(exc)}") from None
        except sqlite3.Error as exc:
            await self._rollback()
            raise CacheError(f"{failure}: {exc}") from exc
        except BaseException:
            # Cancellation included: never leave a transaction open on the connection.
            await self._rollback()
            raise

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
                    table = _ENTITY_TABLE.get(change.entity)
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

    async def store_chunk(
        self, snapshot_id: str, index: int, count: int, version: int, sha256: str, data: bytes
    ) -> int:
        """Keep one snapshot chunk (duplicates ignored); return how many of it are stored.

        Chunks of any other snapshot are dropped: one transfer at a time.
        """
        async with self._transaction("chunk not stored"):
            await self.db.execute(
                "DELETE FROM snapshot_chunks WHERE snapshot_id != ?", (snapshot_id,)
            )
            await self.db.execute(
                "INSERT OR IGNORE INTO snapshot_chunks VALUES (?, ?, ?, ?, ?, ?)",
                (snapshot_id, index, count, version, sha256, data),
            )
            row = await (
                await self.db.execute(
                    "SELECT count(*) FROM snapshot_chunks WHERE snapshot_id = ?", (snapshot_id,)
                )
            ).fetchone()
        return int(row[0]) if row else 0

    async def pending_snapshot(self) -> tuple[str, int, int, str, list[int]] | None:
        """The transfer in progress: (id, version, count, sha256, indexes held), if any."""
        rows = list(
            await (
                await self.db.execute(
                    "SELECT snapshot_id, version, count, sha256, idx FROM snapshot_chunks "
                    "ORDER BY idx"
                )
            ).fetchall()
        )
        if not rows:
            return None
        sid, version, count, sha = rows[0][:4]
        return str(sid), int(version), int(count), str(sha), [int(r[4]) for r in rows]

    async def snapshot_chunks(self, snapshot_id: str) -> list[bytes]:
        """The stored chunks of a snapshot, in index order."""
        rows = await (
            await self.db.execute(
                "SELECT data FROM snapshot_chunks WHERE snapshot_id = ? ORDER BY idx",
                (snapshot_id,),
            )
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    async def claim_nonce(self, nonce: str, exp: int, now: int) -> bool:
        """Record a command's one-time nonce; False if it was seen before (a replay).

        Nonces are kept until their command's expiry, after which the expiry
        check alone refuses the command.
        """
        async with self._transaction("nonce not recorded"):
            await self.db.execute("DELETE FROM seen_nonces WHERE exp < ?", (now,))
            cursor = await self.db.execute(
                "INSERT OR IGNORE INTO seen_nonces VALUES (?, ?)", (nonce, exp)
            )
        return cursor.rowcount == 1

    async def use_pass(self, pass_id: str, max_uses: int, until: int, now: int) -> int | None:
        """Count one use of a pass allowed ``max_uses`` uses; None if they are all used.

        Returns the uses so far, this one included.  The count is kept until
        the pass ends (``until``), after which the pass is refused anyway.
        """
        async with self._transaction("pass use not recorded"):
            await self.db.execute("DELETE FROM pass_uses WHERE until < ?", (now,))
            row = await (
                await self.db.execute(
                    "INSERT INTO pass_uses (pass_id, uses, until) VALUES (?, 1, ?) "
                    "ON CONFLICT(pass_id) DO UPDATE SET uses = uses + 1 WHERE uses < ? "
                    "RETURNING uses",
                    (pass_id, until, max_uses),
                )
            ).fetchone()
        return None if row is None else int(row[0])

    async def drop_chunks(self) -> None:
        """Forget any snapshot transfer."""
        async with self._transaction("chunks not dropped"):
            await self.db.execute("DELETE FROM snapshot_chunks")

    async def _set_meta(self, version: int | None) -> None:
        values = {"updated_at": str(int(self._clock.now().timestamp()))}
        if version is not None:
            values["dataset_version"] = str(version)
        await self.db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    async def updated_at(self) -> int | None:
        """When the cache last took data from the platform (Unix seconds), if ever."""
        row = await (
            await self.db.execute("SELECT value FROM meta WHERE key = 'updated_at'")
        ).fetchone()
        return None if row is None else int(row[0])

    async def dataset_version(self) -> int | None:
        """The version of the data in the cache, or None when it holds none."""
        row = await (
            await self.db.execute("SELECT value FROM meta WHERE key = 'dataset_version'")
        ).fetchone()
        return None if row is None else int(row[0])
