"""Self-repair: a damaged cache is set aside and resynced; a damaged outbox is salvaged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock, SystemClock
from gateway.config.models import load_config
from gateway.core.credentials import CredentialRead
from gateway.core.decision import Reason
from gateway.core.model import CredentialKind
from gateway.errors import ServiceFailedError
from gateway.store import recovery
from gateway.store.outbox import Outbox
from gateway.store.recovery import check_cache, damage_mark, open_outbox
from gateway.store.repair import Salvage, continue_numbering
from sim.broker import Broker

from .test_mqtt import cloud_for, run_async, until

CLOCK = ManualClock(datetime(2026, 3, 10, 10, tzinfo=UTC))
ALL_M_CARD = CredentialRead(CredentialKind.NFC_UID, "04000003")  # a 24/7 plan: always granted


def damage_pages(path: Path, fraction: float = 0.5, pages: int = 3) -> None:
    """Overwrite a few pages in the middle of a SQLite file, as a failing card would."""
    size = path.stat().st_size
    page = 4096
    at = int(size * fraction) // page * page
    with path.open("r+b") as f:
        f.seek(at)
        f.write(os.urandom(page * pages))


def damage_header(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(b"\xff" * 100)


def gateway_for(broker: Broker, tmp_path: Path) -> Gateway:
    return Gateway(load_config(broker.gateway_config("gw-1", tmp_path / "gw-1")), SystemClock())


@pytest.mark.parametrize("damage", [damage_header, damage_pages], ids=["header", "pages"])
def test_a_damaged_cache_is_set_aside_and_rebuilt_by_a_resync(
    broker: Broker, tmp_path: Path, damage: Any
) -> None:
    data = tmp_path / "gw-1"

    async def go() -> None:
        cloud = cloud_for(broker)
        cloud_task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        gw = gateway_for(broker, tmp_path)
        async with gw.running():
            await until(lambda: gw.engine.version == 1, "first snapshot")
        damage(data / "cache.sqlite3")
        gw = gateway_for(broker, tmp_path)
        async with gw.running():
            assert gw.engine.version is None  # started empty rather than refusing to start
            await until(lambda: gw.engine.version == 1, "resynced")
            assert (await gw.taps.tap(ALL_M_CARD, "front")).reason is Reason.GRANTED_PLAN
            await until(
                lambda: "cache_repaired" in [e["type"] for e in cloud.events_of("gw-1")], "reported"
            )
        repaired = [e["data"] for e in cloud.events_of("gw-1") if e["type"] == "cache_repaired"]
        assert len(repaired) == 1
        assert "the cache is damaged" in repaired[0]["detail"]
        kept = data / repaired[0]["moved_to"]
        assert kept.exists()  # kept for whoever wants to look at it
        assert kept.name.startswith("cache.sqlite3.damaged-")
        resyncs = [r["reason"] for r in cloud.resync_requests]
        assert resyncs[-1] == "no_data"
        cloud_task.cancel()

    run_async(go())


def test_damage_found_by_the_full_check_ends_the_run_and_the_restart_sets_it_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "FIRST_CHECK_AFTER", 0.0)
    cache = tmp_path / "cache.sqlite3"
    with sqlite3.connect(cache) as db:
        db.execute("CREATE TABLE t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [(os.urandom(200),) for _ in range(2000)])
    damage_pages(cache)
    recorded: list[tuple[str, dict[str, Any]]] = []

    async def record(type_: str, data: dict[str, Any], at: int | None = None) -> None:
        recorded.append((type_, data))

    with pytest.raises(ServiceFailedError, match="failed its integrity check"):
        asyncio.run(check_cache(cache, CLOCK, record))
    assert [t for t, _ in recorded] == ["cache_damaged"]
    assert damage_mark(cache).exists()

    async def reopen() -> list[tuple[str, dict[str, Any]]]:
        from gateway.store.writer import CacheWriter

        async with contextlib.AsyncExitStack() as stack:
            return await recovery.open_cache(stack, CacheWriter(cache, CLOCK), CLOCK)

    events = asyncio.run(reopen())
    assert [t for t, _ in events] == ["cache_repaired"]
    assert not damage_mark(cache).exists()
    assert (tmp_path / events[0][1]["moved_to"]).exists()


def test_a_damaged_outbox_is_kept_and_what_can_be_read_is_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"

    async def fill() -> None:
        async with Outbox(path, CLOCK) as box:
            await box.append_many(
                [("door_opened", {"n": i, "pad": "x" * 200}, None) for i in range(5000)]
            )
            await box.ack(1000)

    asyncio.run(fill())
    damage_pages(path)

    async def reopen() -> list[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            box = Outbox(path, CLOCK)
            await open_outbox(stack, box, CLOCK)
            events = await box.pending(0, 10_000)
            assert await box.append("access", {}) == 5002  # numbering goes on above the old
            return events

    events = asyncio.run(reopen())
    marker = events[-1]
    assert marker["seq"] == 5001
    assert marker["type"] == "outbox_salvaged"
    salvaged = events[:-1]
    assert 0 < len(salvaged) < 4000  # the damaged pages' events are gone, the rest kept
    assert all(1000 < e["seq"] <= 5000 for e in salvaged)
    assert [e["data"]["n"] for e in salvaged] == [e["seq"] - 1 for e in salvaged]  # intact
    data = marker["data"]
    assert (data["first"], data["last"]) == (1001, 5000)
    assert data["salvaged"] == len(salvaged)
    assert data["lost"] == 4000 - len(salvaged)
    assert (tmp_path / data["moved_to"]).exists()
    assert data["moved_to"].startswith("events.sqlite3.damaged-")


def test_numbering_after_a_salvage_never_reuses_a_number_the_old_file_may_have_used() -> None:
    rows = [(s, 0, "x", "{}") for s in (11, 12, 15)]
    # The old file's counts were readable: exactly above its last number.
    acked, marker, data = continue_numbering(Salvage(rows, 20, 10), 1000, 1_773_000_000)
    assert (acked, marker, data["lost"]) == (10, 21, 7)
    # Unreadable: at most max_events were ever pending above the oldest still held.
    acked, marker, data = continue_numbering(Salvage(rows), 1000, 1_773_000_000)
    assert (acked, marker, data["first"], data["lost"]) == (0, 1012, 1, None)
    # Nothing readable at all: above any count a gateway can have reached.
    acked, marker, _ = continue_numbering(Salvage(), 1000, 1_773_000_000)
    assert marker == 1_773_000_000_000 + 1


def test_the_platform_gets_every_salvaged_event_and_acks_past_the_lost_ones(
    broker: Broker, tmp_path: Path
) -> None:
    data = tmp_path / "gw-1"

    async def go() -> None:
        cloud = cloud_for(broker)
        cloud.answer_resyncs = False
        gw = gateway_for(broker, tmp_path)
        async with gw:  # not running: the events stay queued
            await gw.outbox.append_many(
                [("door_opened", {"n": i, "pad": "x" * 200}, None) for i in range(3000)]
            )
        damage_pages(data / "events.sqlite3")
        cloud_task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        gw = gateway_for(broker, tmp_path)
        async with gw.running():
            await until(lambda: gw.outbox.depth == 0, "all acknowledged", limit=60)
            assert await gw.outbox.append("door_closed", {}) is not None
            last = gw.outbox.last_seq
            await until(
                lambda: cloud.received["gw-1"].contiguous == last, "the platform up to date"
            )
        got = cloud.received["gw-1"]
        salvaged = next(e for e in cloud.events_of("gw-1") if e["type"] == "outbox_salvaged")
        # Every salvaged event arrived, each once; the lost ones were not waited for.
        held = [e for e in cloud.events_of("gw-1") if e["seq"] < salvaged["seq"]]
        assert len(held) == salvaged["data"]["salvaged"] < 3000
        assert got.contiguous == last
        cloud_task.cancel()

    run_async(go())


def test_after_a_salvage_of_nothing_new_events_are_kept_and_one_ack_settles_the_range(
    tmp_path: Path,
) -> None:
    # Nothing readable: the range the marker settles spans some 1.7e12 numbers
    # that will never be events. They must count as nothing: neither towards
    # the outbox's bound (new events would be dropped as "full") nor for the
    # ack, which deletes in chunks of events, not of numbers.
    path = tmp_path / "events.sqlite3"

    async def fill() -> None:
        async with Outbox(path, CLOCK) as box:
            await box.append_many([("door_opened", {"n": i}, None) for i in range(10)])

    asyncio.run(fill())
    damage_header(path)

    async def reopen() -> None:
        async with contextlib.AsyncExitStack() as stack:
            box = Outbox(path, CLOCK, max_events=100)
            await open_outbox(stack, box, CLOCK)
            marker = box.last_seq
            assert box.salvaged is not None
            assert box.salvaged["last"] == marker - 1 > 10**12
            assert box.depth == 1  # the marker alone
            seqs = await box.append_many([("access", {"n": i}, None) for i in range(80)])
            assert None not in seqs  # stored, not dropped as over the bound of 100
            assert box.depth == 81
            assert await asyncio.wait_for(box.ack(marker), 10) == 1
            assert (box.depth, box.acked_seq) == (80, marker)
            assert await asyncio.wait_for(box.ack(box.last_seq), 10) == 80
            assert box.depth == 0

    asyncio.run(reopen())
