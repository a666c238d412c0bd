"""The event outbox: gapless sequences, acks, restarts, and what happens when it is full."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.store.outbox import INLINE_READ, Outbox

from .conftest import LoopTicks, SmallDisk, held_for

CLOCK = ManualClock(datetime(2026, 3, 10, 10, tzinfo=UTC))


def test_sequences_are_gapless_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"

    async def go() -> None:
        async with Outbox(path, CLOCK) as box:
            assert await box.append("a", {"n": 1}) == 1
            assert await box.append_many([("b", {}, None), ("c", {}, 5)]) == [2, 3]
            assert await box.ack(2) == 2
            assert (box.depth, box.acked_seq) == (1, 2)
        async with Outbox(path, CLOCK) as box:
            assert (box.last_seq, box.acked_seq, box.depth) == (3, 2, 1)
            assert await box.append("d", {}) == 4
            pending = await box.pending(box.acked_seq, 10)
            assert [(e["seq"], e["type"], e["at"]) for e in pending] == [
                (3, "c", 5),
                (4, "d", int(CLOCK.now().timestamp())),
            ]

    asyncio.run(go())


def test_short_and_long_reads_of_the_outbox_give_the_same_events(tmp_path: Path) -> None:
    """A read of a few events is made at once in the loop's thread, a longer one
    on the database thread: both give the same events, in order."""

    async def go() -> None:
        async with Outbox(tmp_path / "events.sqlite3", CLOCK) as box:
            for n in range(40):
                await box.append("access", {"n": n, "door": "front"})
            await box.ack(3)
            long_read = await box.pending(0, 100)  # spans 40 events: the thread
            short_reads: list[dict[str, object]] = []
            after = box.acked_seq
            while chunk := await box.pending(after, INLINE_READ):  # in the loop's thread
                short_reads += chunk
                after = chunk[-1]["seq"]
            assert [e["seq"] for e in long_read] == list(range(4, 41))
            assert short_reads == long_read
            assert await box.pending(10, INLINE_READ, upto=12) == long_read[7:9]  # seq 11, 12

    asyncio.run(go())


def test_acks_out_of_range_are_ignored(tmp_path: Path) -> None:
    async def go() -> None:
        async with Outbox(tmp_path / "e.sqlite3", CLOCK) as box:
            await box.append_many([("x", {}, None)] * 3)
            assert await box.ack(10) == 0  # beyond what exists: a confused platform
            assert await box.ack(2) == 2
            assert await box.ack(1) == 0  # older: harmless
            assert box.acked_seq == 2

    asyncio.run(go())


def test_a_full_outbox_warns_then_counts_what_it_drops_without_gaps(tmp_path: Path) -> None:
    async def go() -> None:
        async with Outbox(tmp_path / "e.sqlite3", CLOCK, max_events=10, warn_ratio=0.5) as box:
            seqs = await box.append_many([("access", {"i": i}, None) for i in range(12)])
            # Event 5 crosses the warning line, so a warning takes seq 6.
            assert seqs == [1, 2, 3, 4, 5, 7, 8, 9, 10, None, None, None]
            events = await box.pending(0, 100)
            assert events[5]["type"] == "outbox_nearly_full"
            assert [e["seq"] for e in events] == list(range(1, 11))
            await box.ack(10)
            assert await box.append("access", {"i": 99}) == 12
            tail = await box.pending(10, 10)
            assert tail[0]["type"] == "events_dropped"
            assert tail[0]["data"] == {"count": 3, "types": {"access": 3}, "storage_error": None}
            assert tail[0]["seq"] == 11

    asyncio.run(go())


def test_an_unusable_outbox_path_is_a_clear_error(tmp_path: Path) -> None:
    from gateway.errors import CacheError

    blocker = tmp_path / "file"
    blocker.write_text("x")

    async def go() -> None:
        async with Outbox(blocker / "events.sqlite3", CLOCK):
            pass

    with pytest.raises(CacheError, match="cannot open the event outbox"):
        asyncio.run(go())


def test_a_full_disk_drops_and_counts_events_without_raising_and_reports_once_room_returns(
    small_disk: SmallDisk,
) -> None:
    clock = ManualClock(datetime(2026, 3, 10, 10, tzinfo=UTC))

    async def go() -> None:
        async with Outbox(small_disk.path / "events.sqlite3", clock) as box:
            assert await box.append("access", {"i": 0}) == 1
            small_disk.fill()
            big = {"pad": "x" * 4000}  # more than a page: needs new space
            seqs = await box.append_many([("access", big, None)] * 3 + [("door_forced", big, None)])
            assert seqs == [None, None, None, None]
            assert box.storage_error is not None
            assert "full" in box.storage_error
            assert (box.last_seq, box.depth) == (1, 1)
            keeper = asyncio.create_task(box.keep())
            clock.advance(60)  # space still gone: the keeper's tries fail quietly
            await asyncio.sleep(0.1)
            assert box.last_seq == 1
            small_disk.free()
            clock.advance(60)  # no new event comes: the keeper stores the report
            for _ in range(100):
                if box.last_seq == 2:
                    break
                await asyncio.sleep(0.02)
            keeper.cancel()
            assert box.storage_error is None
            report = (await box.pending(1, 10))[0]
            assert report["seq"] == 2
            assert report["type"] == "events_dropped"
            assert report["data"]["count"] == 4
            assert report["data"]["types"] == {"access": 3, "door_forced": 1}
            assert "full" in report["data"]["storage_error"]
            assert await box.append("access", {"i": 5}) == 3  # gapless onwards

    asyncio.run(go())


def test_the_drop_report_goes_out_when_an_ack_makes_room_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "e.sqlite3"

    async def go() -> None:
        async with Outbox(path, CLOCK, max_events=10) as box:
            await box.append_many([("access", {}, None)] * 8)
            # The ninth crosses the warning line: the warning takes the last place.
            assert await box.append_many([("access", {}, None)] * 3) == [9, None, None]
        # A restart before room came back: the count is kept.
        async with Outbox(path, CLOCK, max_events=10) as box:
            await box.ack(4)  # the platform acks; no new event is needed
            assert box.last_seq == 11
            report = (await box.pending(10, 10))[0]
            assert report["type"] == "events_dropped"
            assert report["data"] == {"count": 2, "types": {"access": 2}, "storage_error": None}
        async with Outbox(path, CLOCK, max_events=10) as box:
            await box.ack(11)
            assert box.last_seq == 11  # reported once, not again

    asyncio.run(go())


def test_an_event_waits_for_a_held_outbox_on_the_event_loop_and_is_stored(
    tmp_path: Path,
) -> None:
    """The flusher starts the log again after a checkpoint with a commit that
    syncs the new log's header: one fsync with the file's write lock held (on
    an SD card tens of milliseconds, more while it collects garbage).  A tap's
    event meeting it used to stop the whole event loop for 20 ms in SQLite's
    busy handler and then be dropped.  Now it waits on the loop (other doors go
    on), is stored once the file is free, in the order the events were taken,
    and ack deletes wait the same way; held past the wait, it is counted as
    lost and reported, as the disk-full rules say, and so is an append
    cancelled while it waits; and while the file stays held, later events
    are counted at once rather than each holding its door up as long."""
    from gateway.store.connect import HELD_WAIT

    path = tmp_path / "events.sqlite3"

    async def go() -> None:
        async with Outbox(path, CLOCK, flush_window=0.05) as box:
            assert await box.append("access", {"n": 1}) == 1
            ticks = LoopTicks()
            beside = asyncio.create_task(ticks.run())
            holder = await held_for(path, 0.3)
            first = asyncio.create_task(box.append("access", {"n": 2}))
            await asyncio.sleep(0)  # the first has its turn and waits for the file
            second = asyncio.create_task(box.append("door_opened", {"n": 3}))
            assert await asyncio.gather(first, second) == [2, 3]
            await asyncio.to_thread(holder.join)
            assert ticks.count >= 10, ticks.count  # the loop ran on (about 30 in 0.3 s)
            assert box.storage_error is None

            holder = await held_for(path, 0.3)
            assert await box.ack(2) == 2  # the platform's ack waits too, then deletes
            await asyncio.to_thread(holder.join)
            assert (box.acked_seq, box.depth) == (2, 1)

            # Held 0.6 s beyond one wait: an append made just after the first
            # gives up would, kept waiting, see the file free and be stored.
            holder = await held_for(path, HELD_WAIT + 0.6)
            waited = asyncio.create_task(box.append("access", {"n": 4}))
            await asyncio.sleep(0.05)
            cancelled = asyncio.create_task(box.append("door_forced", {"n": 5}))
            await asyncio.sleep(0.05)  # it waits for its turn behind the first
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert await waited is None  # waited out: counted
            # Still held (another process keeping the file): the next events are
            # not kept waiting as long each, and are counted at once.
            assert await box.append("door_opened", {"n": 6}) is None
            assert holder.is_alive()
            await asyncio.to_thread(holder.join)
            beside.cancel()
            assert await box.append("access", {"n": 7}) == 5  # after the report, 4
            events = await box.pending(2, 10)
            assert [(e["seq"], e["type"]) for e in events] == [
                (3, "door_opened"),
                (4, "events_dropped"),
                (5, "access"),
            ]
            lost = {"access": 1, "door_forced": 1, "door_opened": 1}
            assert events[1]["data"]["types"] == lost
        async with Outbox(path, CLOCK, flush_window=0.05) as box:
            assert (box.last_seq, box.acked_seq) == (5, 2)  # all of it in the file

    asyncio.run(go())
