"""The SQLite cache: WAL, migrations, atomic replace and all-or-nothing changes."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.core import model
from gateway.core.credentials import parse_read
from gateway.core.decision import Reason, decide
from gateway.errors import CacheCorruptError, CacheError, CacheSchemaError, DatasetError
from gateway.store.claims import claims_path
from gateway.store.doorwrites import CHECKPOINT_COMMITS
from gateway.store.reader import CacheReader
from gateway.store.rows import table_rows
from gateway.store.schema import SCHEMA_VERSION
from gateway.store.writer import CacheWriter
from gateway.wire.dataset import parse_changes, parse_dataset

from .conftest import (
    LoopTicks,
    background,
    base_dataset,
    held_for,
    local,
    revoke_day_card,
    until,
    write_cache,
)

CLOCK = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
AT = local("2026-03-10T10:00")


def _reason(reader: CacheReader, credential: str, door: str = "front") -> Reason:
    with reader.view() as view:
        return decide(view, parse_read(credential, site_id="t"), door, AT).reason


def _apply(path: Path, changes: Any, version: int | None = None) -> None:
    async def go() -> None:
        async with CacheWriter(path, CLOCK) as w:
            await w.apply_changes(parse_changes(changes), version)

    asyncio.run(go())


def test_cache_is_wal_with_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    plan = " ".join(
        r[3]
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM bookings WHERE member_id = 'x' AND closes_at >= 0"
        )
    )
    assert "bookings_by_member" in plan
    conn.close()


def test_reader_sees_old_data_until_the_replace_commits(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    reader = CacheReader(path)
    newer = base_dataset()
    newer["version"] = 2
    newer["credentials"] = [c for c in newer["credentials"] if c["id"] != "c-day"]
    with reader.view() as view:
        read = parse_read("nfc:04000001", site_id="t")
        assert decide(view, read, "front", AT).granted
        write_cache(path, newer)  # commits while the view is open
        assert decide(view, read, "front", AT).granted
        assert view.dataset_version() == 1
    with reader.view() as view:
        assert decide(view, read, "front", AT).reason is Reason.UNKNOWN_CREDENTIAL
        assert view.dataset_version() == 2
    reader.close()


def test_a_failed_replace_leaves_the_previous_data(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    good = parse_dataset(base_dataset())
    # Bypass the wire validation to reach the database's own guard: a
    # credential of an unknown member fails on the last rows of the insert.
    broken = model.Dataset(
        version=9,
        site=good.site,
        doors=(),
        resources=(),
        members=(),
        credentials=(
            model.Credential(
                "x",
                "ghost",
                model.CredentialKind.NFC_UID,
                "04999999",
                model.CredentialStatus.ACTIVE,
            ),
        ),
        plans=(),
        entitlements=(),
        bookings=(),
        passes=(),
    )

    async def go() -> None:
        async with CacheWriter(path, CLOCK) as w:
            with pytest.raises(DatasetError, match="not in the cache"):
                await w.replace_dataset(broken)
            assert await w.dataset_version() == 1

    asyncio.run(go())
    reader = CacheReader(path)
    assert _reason(reader, "nfc:04000001") is Reason.GRANTED_PLAN
    reader.close()


def test_changes_revoke_suspend_and_cancel_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    reader = CacheReader(path)
    assert _reason(reader, "nfc:04000001") is Reason.GRANTED_PLAN
    assert _reason(reader, "nfc:0400000D") is Reason.GRANTED_PASS
    _apply(
        path,
        [
            revoke_day_card(),
            {
                "op": "upsert",
                "entity": "member",
                "data": {"id": "night_m", "name": "Night", "status": "suspended"},
            },
            {"op": "delete", "entity": "pass", "id": "inv-1"},
        ],
        version=2,
    )
    assert _reason(reader, "nfc:04000001") is Reason.CREDENTIAL_REVOKED
    assert _reason(reader, "nfc:04000002") is Reason.MEMBER_SUSPENDED
    assert _reason(reader, "nfc:0400000D") is Reason.NO_ENTITLEMENT
    with reader.view() as view:
        assert view.dataset_version() == 2
    reader.close()


def test_cancelled_booking_stops_opening_the_door(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    reader = CacheReader(path)
    at = local("2026-03-10T14:30")
    read = parse_read("nfc:04000005", site_id="t")
    with reader.view() as view:
        assert decide(view, read, "room1", at).granted
    booking = next(b for b in base_dataset()["bookings"] if b["id"] == "b-paid")
    _apply(
        path, [{"op": "upsert", "entity": "booking", "data": {**booking, "payment": "cancelled"}}]
    )
    with reader.view() as view:
        assert decide(view, read, "room1", at).reason is Reason.BOOKING_CANCELLED
    reader.close()


def test_deleting_a_member_deletes_what_hangs_off_them(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    _apply(path, [{"op": "delete", "entity": "member", "id": "book_m"}])
    conn = sqlite3.connect(path)
    for table in ("credentials", "bookings", "entitlements"):
        count = conn.execute(f"SELECT count(*) FROM {table} WHERE member_id = 'book_m'")
        assert count.fetchone()[0] == 0
    conn.close()


def test_a_change_set_with_one_bad_change_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    with pytest.raises(DatasetError, match="already held"):
        _apply(
            path,
            [
                {
                    "op": "upsert",
                    "entity": "member",
                    "data": {"id": "day_m", "name": "Day", "status": "suspended"},
                },
                # Another member's card: must not be stolen (no INSERT OR REPLACE).
                {
                    "op": "upsert",
                    "entity": "credential",
                    "data": {
                        "id": "c-new",
                        "member_id": "none_m",
                        "kind": "nfc_uid",
                        "value": "04000002",
                    },
                },
            ],
            version=5,
        )
    reader = CacheReader(path)
    assert _reason(reader, "nfc:04000001") is Reason.GRANTED_PLAN
    assert _reason(reader, "nfc:04000002") is Reason.OUTSIDE_PLAN_HOURS  # still night_m's
    with reader.view() as view:
        assert view.dataset_version() == 1
    reader.close()


def test_a_change_naming_a_missing_member_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    with pytest.raises(DatasetError, match="not in the cache"):
        _apply(
            path,
            [
                {"op": "delete", "entity": "pass", "id": "inv-1"},
                {
                    "op": "upsert",
                    "entity": "credential",
                    "data": {
                        "id": "c-ghost",
                        "member_id": "ghost",
                        "kind": "nfc_uid",
                        "value": "04ABABAB",
                    },
                },
            ],
        )
    reader = CacheReader(path)
    assert _reason(reader, "nfc:0400000D") is Reason.GRANTED_PASS
    reader.close()


def test_the_site_can_be_updated_by_a_change(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    _apply(
        path,
        [
            {
                "op": "upsert",
                "entity": "site",
                "data": {"id": "t", "timezone": "Europe/London", "closures": ["2026-03-10"]},
            }
        ],
    )
    reader = CacheReader(path)
    assert _reason(reader, "nfc:04000001") is Reason.SITE_CLOSED
    reader.close()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ("not json", "not JSON"),
        ('{"op": "upsert"}', "must be a JSON list"),
        ([{"op": "explode", "entity": "member", "id": "x"}], r"change \[0\]: op"),
        ([{"op": "delete", "entity": "member"}], "carries 'id'"),
        ([{"op": "delete", "entity": "site", "id": "t"}], "cannot be deleted"),
        ([{"op": "upsert", "entity": "booking", "data": {"id": "b"}}], r"change \[0\]"),
        (
            [
                {
                    "op": "upsert",
                    "entity": "member",
                    "data": {"id": "m", "name": "M", "status": "vip"},
                }
            ],
            "status",
        ),
    ],
)
def test_malformed_changes_are_refused_with_a_reason(changes: Any, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        parse_changes(changes)


def test_a_newer_schema_is_refused_not_downgraded(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()

    async def go() -> None:
        async with CacheWriter(path, CLOCK):
            pass

    with pytest.raises(CacheSchemaError, match="newer than this doorgw"):
        asyncio.run(go())
    with pytest.raises(CacheSchemaError, match="schema version"):
        CacheReader(path)


def test_a_file_that_is_not_a_cache_is_called_damaged(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)

    async def go() -> None:
        async with CacheWriter(path, CLOCK):
            pass

    with pytest.raises(CacheCorruptError, match="the cache is damaged: file is not a database"):
        asyncio.run(go())
    with pytest.raises(CacheSchemaError):
        CacheReader(path)


def test_reader_of_a_missing_cache_says_so(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="no cache here yet"):
        CacheReader(tmp_path / "none.sqlite3")


def test_reader_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    reader = CacheReader(path)
    with reader.view() as view, pytest.raises(sqlite3.OperationalError, match="readonly"):
        view._conn.execute("DELETE FROM members")
    reader.close()


def test_deltas_apply_while_a_snapshot_is_staged_and_replay_after_the_swap(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    reader = CacheReader(path)
    snapshot = parse_dataset({**base_dataset(), "version": 10})
    revoke = parse_changes([revoke_day_card()])

    async def go() -> None:
        async with CacheWriter(path, CLOCK) as w:
            await w.stage.begin_stage()
            for items in snapshot.tables():
                if not items:
                    continue
                table, rows = table_rows(items)
                await w.stage.stage_rows(table, rows)
                if table == "members":
                    # A revocation lands mid-transfer: it takes effect at once...
                    await w.apply_changes(revoke, version=2)
                    assert _reason(reader, "nfc:04000001") is Reason.CREDENTIAL_REVOKED
            # ...and survives the swap to the (older-content) snapshot as version 11.
            await w.stage.swap_stage(10, replay=[(11, revoke)])
            assert await w.dataset_version() == 11

    asyncio.run(go())
    assert _reason(reader, "nfc:04000001") is Reason.CREDENTIAL_REVOKED
    assert _reason(reader, "nfc:04000002") is Reason.OUTSIDE_PLAN_HOURS
    reader.close()


def test_a_swap_whose_replay_breaks_references_keeps_the_old_data(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    write_cache(path, base_dataset())
    snapshot = parse_dataset({**base_dataset(), "version": 10})
    orphan = [
        model.Upsert(
            model.Credential(
                "c-x",
                "ghost",
                model.CredentialKind.NFC_UID,
                "04ABCDEF",
                model.CredentialStatus.ACTIVE,
            )
        )
    ]

    async def go() -> None:
        async with CacheWriter(path, CLOCK) as w:
            await w.stage.begin_stage()
            for items in ((snapshot.site,), snapshot.members):
                await w.stage.stage_rows(*table_rows(items))
            with pytest.raises(DatasetError, match="not in the cache"):
                await w.stage.swap_stage(10, replay=[(11, orphan)])
            assert await w.dataset_version() == 1
            await w.stage.begin_stage()  # a new transfer starts from empty stage tables
            await w.stage.drop_stage()

    asyncio.run(go())
    reader = CacheReader(path)
    assert _reason(reader, "nfc:04000001") is Reason.GRANTED_PLAN
    reader.close()


def test_stage_tables_match_the_migrated_live_tables() -> None:
    # Snapshots are swapped in by renaming stage tables, so they must have
    # exactly the live tables' columns, keys and indexes.
    from gateway.store.schema import ENTITY_TABLES, MIGRATIONS, STAGE_PREFIX, entity_tables

    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    conn.executescript(entity_tables(STAGE_PREFIX, "b"))

    def shape(table: str) -> tuple[object, ...]:
        columns = conn.execute(f"PRAGMA table_info({table})").fetchall()
        keys = [
            (r[2].removeprefix(STAGE_PREFIX), r[3], r[4], r[6])
            for r in conn.execute(f"PRAGMA foreign_key_list({table})")
        ]
        indexes = sorted(
            (
                r[1].rsplit("_", 1)[0],
                r[2],
                tuple(c[2] for c in conn.execute(f"PRAGMA index_info({r[1]})")),
            )
            for r in conn.execute(f"PRAGMA index_list({table})")
            if r[3] == "c"
        )
        return (columns, sorted(keys), indexes)

    for table, _, _ in ENTITY_TABLES:
        assert shape(table) == shape(STAGE_PREFIX + table), table
    conn.close()


def test_pass_revocations_apply_early_and_their_removal_waits(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    write_cache(path, base_dataset())
    changes = parse_changes(
        [
            {
                "op": "upsert",
                "entity": "revoked_pass",
                "data": {"id": "dp-9", "until": "2026-03-11T00:00:00Z"},
            },
            {"op": "delete", "entity": "revoked_pass", "id": "dp-8"},
        ]
    )

    async def go() -> int:
        async with CacheWriter(path, CLOCK) as w:
            await w.apply_changes(
                parse_changes(
                    [
                        {
                            "op": "upsert",
                            "entity": "revoked_pass",
                            "data": {"id": "dp-8", "until": "2026-03-11T00:00:00Z"},
                        }
                    ]
                ),
                2,
            )
            # Over a version gap: the revocation takes effect, giving dp-8 back does not.
            return await w.apply_restrictions(changes)

    assert asyncio.run(go()) == 1
    reader = CacheReader(path)
    try:
        with reader.view() as view:
            assert view.pass_context("front", "dp-9")[2:] == (True, 0)
            assert view.pass_context("front", "dp-8")[2:] == (True, 0)
            assert view.pass_context("front", "dp-7")[2:] == (False, 0)
    finally:
        reader.close()


def test_sqlite_errors_leave_the_store_as_cache_errors_and_roll_back(tmp_path: Path) -> None:
    """A real SQLite failure inside a write (here the table it needs is gone) is a
    CacheError naming what was not recorded, and leaves no transaction open."""
    path = tmp_path / "cache.sqlite3"

    async def go() -> None:
        async with CacheWriter(path, ManualClock(datetime(2026, 3, 10, tzinfo=UTC))) as writer:
            with sqlite3.connect(claims_path(path)) as other:
                other.execute("DROP TABLE pass_uses")
            with pytest.raises(CacheError, match=r"^pass use not recorded: no such table"):
                await writer.use_pass("dp-1", 3, 2_000_000_000, 1_000)
            assert not writer.db.in_transaction
            # The writer is still usable for everything else.
            assert await writer.claim_nonce("n-1", 2_000_000_000, 1_000)

    asyncio.run(go())


def test_a_snapshot_stage_is_begun_while_other_reads_run_on_the_same_connection(
    tmp_path: Path,
) -> None:
    """SQLite refuses DROP TABLE while a statement is open on the connection; the
    sync engine's reads (a resume check on reconnect, the version) run beside the
    snapshot loader, and must never make it fail with "database table is locked"."""

    async def go() -> None:
        clock = ManualClock(datetime(2026, 3, 10, tzinfo=UTC))
        async with CacheWriter(tmp_path / "cache.sqlite3", clock) as writer:
            await writer.replace_dataset(parse_dataset(base_dataset()))
            for i in range(20):
                await writer.stage.store_chunk("s1", i, 50, 2, "x", b"y" * 1000)

            async def reads() -> None:
                for _ in range(5):
                    assert (await writer.stage.pending_snapshot()) is not None
                    assert await writer.dataset_version() == 1
                    assert await writer.updated_at() is not None

            for _ in range(50):
                await asyncio.gather(reads(), writer.stage.begin_stage(), reads())
            await writer.stage.drop_stage()
            assert not writer.db.in_transaction

    asyncio.run(go())


def test_after_the_writer_checkpoints_small_deltas_append_to_a_short_log(tmp_path: Path) -> None:
    """Once the writer has checkpointed the small deltas' log whole, it starts the
    log again, cut short: the next commits append to new pages instead of
    rewriting old ones the kernel may have dropped (a disk read on the loop)."""
    path = tmp_path / "cache.sqlite3"
    wal = tmp_path / "cache.sqlite3-wal"

    short = 3 * 4120 + 32  # the log's header and a few frames

    async def go() -> None:
        async with CacheWriter(path, ManualClock(datetime(2026, 3, 10, tzinfo=UTC))) as writer:
            for n in range(CHECKPOINT_COMMITS * 3):
                await writer.apply_changes([], version=n + 1)
                await asyncio.sleep(0)  # the checkpoint runs in aiosqlite's thread
                if n % CHECKPOINT_COMMITS == CHECKPOINT_COMMITS // 2:
                    assert wal.stat().st_size > 50 * 4120  # the log grows between them
                if n % CHECKPOINT_COMMITS == CHECKPOINT_COMMITS - 1:
                    await until(lambda: wal.stat().st_size <= short, limit=5)

    asyncio.run(go())


def test_a_scans_claims_leave_the_cache_file_and_the_tap_paths_pages_alone(
    tmp_path: Path,
) -> None:
    """A nonce claim and a pass use are written to the claims file, not the cache:
    the reader sees the cache unchanged (SQLite would otherwise empty its page
    cache before the next tap's decision), and still reads the pass's uses;
    the claims file's flusher checkpoints its log and starts it again short."""
    from gateway.store.flush import WalFlusher

    path = tmp_path / "cache.sqlite3"
    clock = ManualClock(datetime(2026, 3, 10, tzinfo=UTC))
    flusher = WalFlusher(claims_path(path), clock, window=0.05)
    claims_wal = tmp_path / "cache-claims.sqlite3-wal"

    async def go() -> None:
        async with CacheWriter(path, clock, flusher) as writer:
            await writer.replace_dataset(parse_dataset(base_dataset()))
            task = asyncio.create_task(flusher.run())
            reader = CacheReader(path)
            try:
                with reader.view():
                    pass
                seen = reader._conn.execute("PRAGMA main.data_version").fetchone()
                cache_log = (tmp_path / "cache.sqlite3-wal").stat().st_size
                for n in range(300):
                    assert await writer.claim_nonce(f"n-{n}", 2_000_000_000, 1_000)
                    assert await writer.use_pass("dp-7", 1000, 2_000_000_000, 1_000) == n + 1
                    clock.advance(0.2)
                    # Scans come a few a second: each is synced before the next.
                    async with asyncio.timeout(20):
                        while flusher.durable_seq < 2 * n + 2:  # noqa: ASYNC110 - a thread sets it
                            await asyncio.sleep(0.001)
                with reader.view() as view:
                    assert view.pass_context("front", "dp-7")[2:] == (False, 300)
                assert reader._conn.execute("PRAGMA main.data_version").fetchone() == seen
                assert (tmp_path / "cache.sqlite3-wal").stat().st_size == cache_log
                # Checkpointed (after 500 claims) and started again: it stays short.
                assert claims_wal.stat().st_size < 200 * 4120
            finally:
                reader.close()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await flusher.close()
            assert not await writer.claim_nonce("n-7", 2_000_000_000, 1_000)  # a replay

    asyncio.run(go())


def test_an_older_cache_hands_its_claims_to_the_claims_file(tmp_path: Path) -> None:
    """A cache from before the claims file (schema 4) keeps what it claimed across
    the upgrade: a used one-time nonce stays used, a pass keeps its uses."""
    from gateway.store.schema import CLAIMS_MOVED, MIGRATIONS

    path = tmp_path / "cache.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[: CLAIMS_MOVED - 1], start=1):
        old.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
    old.execute("INSERT INTO seen_nonces VALUES ('n-used', 2000000000)")
    old.execute("INSERT INTO pass_uses VALUES ('dp-7', 2, 2000000000)")
    old.close()

    async def go() -> None:
        async with CacheWriter(path, CLOCK) as writer:
            await writer.replace_dataset(parse_dataset(base_dataset()))
            assert not await writer.claim_nonce("n-used", 2_000_000_000, 1_000)  # a replay
            assert await writer.use_pass("dp-7", 3, 2_000_000_000, 1_000) == 3
            assert await writer.use_pass("dp-7", 3, 2_000_000_000, 1_000) is None

    asyncio.run(go())
    with sqlite3.connect(path) as cache:
        assert cache.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {r[0] for r in cache.execute("SELECT name FROM sqlite_master")}
    assert not tables & {"seen_nonces", "pass_uses"}
    reader = CacheReader(path)
    try:
        with reader.view() as view:
            assert view.pass_context("front", "dp-7")[2:] == (False, 3)
    finally:
        reader.close()


def test_a_damaged_claims_file_is_set_aside_and_started_again(tmp_path: Path) -> None:
    """Claims in a file that no longer opens cannot be read back: the file is
    set aside (kept, for a look), a new one started, and the gateway goes on."""
    path = tmp_path / "cache.sqlite3"
    claims_path(path).write_bytes(b"not a database, an SD card's bad day " * 200)

    async def go() -> None:
        async with CacheWriter(path, CLOCK) as writer:
            assert await writer.claim_nonce("n-1", 2_000_000_000, 1_000)
            assert not await writer.claim_nonce("n-1", 2_000_000_000, 1_000)

    asyncio.run(go())
    aside = list(tmp_path.glob("cache-claims.sqlite3.damaged-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"not a database")


def test_a_claim_waits_for_the_claims_file_without_stopping_the_event_loop(
    tmp_path: Path,
) -> None:
    """While another connection holds the claims file (its flusher starting the
    log again, on a slow card), a scan's claim waits for it on the event loop:
    other doors' work goes on meanwhile, and the claim succeeds once the file
    is free (no denial for a moment's lock); held for good, it fails as a
    CacheError after its wait."""
    from gateway.store.connect import HELD_WAIT

    path = tmp_path / "cache.sqlite3"

    async def go() -> None:
        async with CacheWriter(path, CLOCK) as writer:
            assert await writer.claim_nonce("n-0", 2_000_000_000, 1_000)  # the file exists
            for seconds, claimed in ((0.3, True), (HELD_WAIT + 0.5, False)):
                holder = await held_for(claims_path(path), seconds)
                ticks = LoopTicks()
                async with background(ticks.run()):
                    if claimed:
                        assert await writer.claim_nonce("n-1", 2_000_000_000, 1_000)
                    else:
                        with pytest.raises(CacheError, match="nonce not recorded"):
                            await writer.claim_nonce("n-2", 2_000_000_000, 1_000)
                await asyncio.to_thread(holder.join)
                # The loop ran on while the claim waited (about 30 ticks in 0.3 s).
                assert ticks.count >= 10, ticks.count
            assert not await writer.claim_nonce("n-1", 2_000_000_000, 1_000)  # it was recorded
            assert await writer.claim_nonce("n-2", 2_000_000_000, 1_000)  # it was not

    asyncio.run(go())
