"""The door never waits for the disk: a tap's event is in the log before the relay
moves, synced to the storage within the flush window, and published only then."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock, SystemClock
from gateway.config.models import DoorConfig
from gateway.core.credentials import CredentialRead
from gateway.core.model import CredentialKind
from gateway.store.flush import CHECKPOINT_EVENTS
from gateway.store.outbox import Outbox
from sim.broker import Broker

from .conftest import base_dataset, until

LOCK = 17
REPO = Path(__file__).resolve().parent.parent
#: all_m's card: a 24/7 plan, so granted whatever the real time.
ALL_HOURS = CredentialRead(CredentialKind.NFC_UID, "04000003")


class HeldSync:
    """An fsync that, once :meth:`hold` is called, waits until :meth:`release`."""

    def __init__(self) -> None:
        self._holding = threading.Event()
        self._released = threading.Event()
        self.waiting = threading.Event()

    def hold(self) -> None:
        self._holding.set()

    def release(self) -> None:
        self._released.set()

    def __call__(self, fd: int) -> None:
        if self._holding.is_set():
            self.waiting.set()
            self._released.wait()
        os.fsync(fd)


def test_a_granted_tap_opens_while_the_flush_is_held_and_its_event_goes_once_it_is_done(
    broker: Broker, tmp_path: Path
) -> None:
    factory = MockFactory()
    sync = HeldSync()
    settings = broker.gateway_settings("gw-1", tmp_path / "gw-1", heartbeat_seconds=1)
    config = settings.model_copy(update={"doors": (DoorConfig(id="front", lock_pin=LOCK),)})

    async def go() -> None:
        cloud = broker.cloud_peer(base_dataset())
        cloud_task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        gw = Gateway(config, SystemClock(), pin_factory=factory, fsync=sync)
        try:
            async with gw.running():
                await until(lambda: gw.engine.version == 1 and gw.outbox.depth == 0)
                sync.hold()
                decision = await gw.taps.present("front", ALL_HOURS)
                assert decision.granted
                # The relay moved with the tap's event stored but not yet synced.
                assert factory.pin(LOCK).state is True
                stored = await gw.outbox.pending(gw.outbox.acked_seq, 100)
                assert [e["data"]["granted"] for e in stored if e["type"] == "access"] == [True]
                await until(sync.waiting.is_set)
                assert gw.outbox.durable_seq < gw.outbox.last_seq
                # Not published while it could still be lost to a power cut.
                await asyncio.sleep(1.0)
                assert not [e for e in cloud.events_of("gw-1") if e["type"] == "access"]
                sync.release()
                await until(lambda: any(e["type"] == "access" for e in cloud.events_of("gw-1")))
                await until(lambda: gw.outbox.depth == 0)
                assert gw.outbox.durable_seq == gw.outbox.last_seq
        finally:
            sync.release()
            cloud_task.cancel()
            await asyncio.gather(cloud_task, return_exceptions=True)

    asyncio.run(go())


#: A gateway process that kills itself (SIGKILL) the moment its lock relay is
#: energised, with every sync to the storage held back from before the tap.
_KILLED_AT_THE_RELAY = """
import asyncio, json, os, signal, sys, threading
from pathlib import Path
import pytest
from gpiozero.pins.mock import MockFactory
from gateway.app.gateway import Gateway
from gateway.clock import SystemClock
from gateway.config.models import DoorConfig
from gateway.core.credentials import CredentialRead
from gateway.core.jws import Signer
from gateway.core.model import CredentialKind
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset
from tests.conftest import base_dataset, gateway_config

tmp = Path(sys.argv[1])
signer = Signer.generate("platform")
config = gateway_config(tmp, signer, doors=(DoorConfig(id="front", lock_pin=17),))
factory = MockFactory()
holding, never = threading.Event(), threading.Event()

def sync(fd):
    if holding.is_set():
        never.wait()
    os.fsync(fd)

async def main():
    gw = Gateway(config, SystemClock(), pin_factory=factory, fsync=sync)
    async with gw.running():
        for chunk in CloudSigner(signer, "t").snapshot(parse_dataset(base_dataset())):
            await gw.engine.handle(chunk)
        await gw.engine.wait_snapshot()
        while gw.outbox.durable_seq < gw.outbox.last_seq:
            await asyncio.sleep(0.01)
        holding.set()
        pin = factory.pin(17)
        original = pin._set_state

        def relay(value):
            original(value)
            if value:
                os.kill(os.getpid(), signal.SIGKILL)

        pin._set_state = relay
        print(json.dumps({"durable_seq": gw.outbox.durable_seq}), flush=True)
        await gw.taps.present("front", CredentialRead(CredentialKind.NFC_UID, "04000003"))
        print("the relay moved and the process lived on", flush=True)

asyncio.run(main())
"""


def test_kill_9_the_moment_the_relay_moves_loses_no_event(tmp_path: Path) -> None:
    """A real process, a real file: SIGKILL as the relay is energised, every sync
    held back since before the tap; the tap's event is in the outbox afterwards."""
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_THE_RELAY, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    before = json.loads(done.stdout.splitlines()[0])["durable_seq"]
    assert "lived on" not in done.stdout
    db = sqlite3.connect(tmp_path / "data" / "events.sqlite3")
    try:
        rows = db.execute("SELECT seq, type, data FROM events WHERE seq > ?", (before,)).fetchall()
    finally:
        db.close()
    access = [json.loads(data) for _, type_, data in rows if type_ == "access"]
    assert [(a["granted"], a["credential"]) for a in access] == [(True, "c-all")]

    async def reopened() -> tuple[int, list[str]]:
        clock = SystemClock()
        async with Outbox(tmp_path / "data" / "events.sqlite3", clock, flush_window=0.05) as box:
            return box.last_seq, [e["type"] for e in await box.pending(before, 100)]

    last, types = asyncio.run(reopened())
    assert last == rows[-1][0]
    assert "access" in types


def test_no_event_stays_unsynced_longer_than_the_window(tmp_path: Path) -> None:
    """On an injected clock: events stored at irregular moments are each synced
    within 50 ms of being stored; a burst shares a sync or a few; a sync slower
    than the window is counted late and the next one starts at once."""
    clock = ManualClock(datetime(2026, 3, 10, 9, 0, tzinfo=UTC))
    window = 0.05
    syncs: list[float] = []
    slow = threading.Event()
    slow.set()
    in_sync = threading.Event()

    def sync(fd: int) -> None:
        in_sync.set()
        slow.wait()
        os.fsync(fd)
        syncs.append(clock.monotonic())

    async def go() -> None:
        async with Outbox(tmp_path / "e.sqlite3", clock, flush_window=window, fsync=sync) as box:
            assert box.flusher is not None
            flusher = box.flusher
            task = asyncio.create_task(flusher.run())
            stored: dict[int, float] = {}

            async def synced_within_the_window() -> None:
                # Everything stored a window ago or more must be durable now:
                # the fake clock stands still while this waits.
                due = [s for s, at in stored.items() if clock.monotonic() - at >= window]
                await until(lambda: all(s <= box.durable_seq for s in due), limit=10)

            steps = [0.002, 0.013, 0.001, 0.03, 0.004, 0.05, 0.0, 0.021, 0.008, 0.07] * 6
            for n, step in enumerate(steps):
                seq = await box.append("door_event", {"n": n})
                assert seq is not None
                stored[seq] = clock.monotonic()
                for _ in range(int(step / 0.002) + 1):
                    clock.advance(min(step, 0.002))
                    await asyncio.sleep(0)
                    await synced_within_the_window()
            clock.advance(window)
            await synced_within_the_window()
            assert box.durable_seq == box.last_seq
            # A burst shares one sync.
            before = flusher.flushes
            for n in range(20):
                await box.append("door_event", {"burst": n})
            clock.advance(window)
            await until(lambda: box.durable_seq == box.last_seq)
            # One sync for the first, and the rest share what follows it.
            assert flusher.flushes <= before + 3

            # A disk slower than the window: counted, and the next sync starts at once.
            late = flusher.late
            slow.clear()
            in_sync.clear()
            await box.append("door_event", {"n": "slow"})
            clock.advance(window)
            await until(in_sync.is_set)
            clock.advance(0.2)  # the disk takes 200 ms
            await box.append("door_event", {"n": "during"})
            slow.set()
            await until(lambda: flusher.late == late + 1)
            assert flusher.max_seconds == pytest.approx(0.2)
            await until(lambda: box.durable_seq == box.last_seq)  # no further wait
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


def test_after_a_checkpoint_the_log_starts_again_short_and_events_append_to_it(
    tmp_path: Path,
) -> None:
    """Once the flusher has checkpointed the whole log, the log file is cut to a
    frame or so: the door's next commits append to new pages instead of
    rewriting pages the kernel may have dropped (a disk read in a tap's commit),
    and nothing stored is lost."""
    clock = ManualClock(datetime(2026, 3, 10, 9, 0, tzinfo=UTC))
    path = tmp_path / "e.sqlite3"
    wal = path.with_name(path.name + "-wal")

    async def go() -> None:
        async with Outbox(path, clock, flush_window=0.05) as box:
            assert box.flusher is not None
            flusher = box.flusher
            task = asyncio.create_task(flusher.run())
            for n in range(CHECKPOINT_EVENTS + 50):
                await box.append("door_event", {"n": n, "pad": "x" * 200})
                if n % 25 == 0:
                    clock.advance(0.05)
                    await until(lambda: box.durable_seq == box.last_seq)
            grown = wal.stat().st_size
            assert grown > 50 * 4096  # the log held many frames
            # The next sync is due to checkpoint (an hour since the last one).
            clock.advance(3600)
            await box.append("door_event", {"n": "after"})
            await until(lambda: box.durable_seq == box.last_seq)
            await until(lambda: wal.stat().st_size <= 4 * 4096)
            # The door's next commit goes after the restart's, in a short log.
            await box.append("door_event", {"n": "next"})
            assert wal.stat().st_size <= 6 * 4096
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        with sqlite3.connect(path) as db:
            rows = [json.loads(d)["n"] for (d,) in db.execute("SELECT data FROM events")]
        assert rows == [*range(CHECKPOINT_EVENTS + 50), "after", "next"]

    asyncio.run(go())


def test_a_scans_nonce_claim_is_synced_to_the_storage_within_the_window(
    tmp_path: Path,
) -> None:
    """What a scan writes (its nonce, a pass's use) is committed with
    ``synchronous=NORMAL`` like an event, and synced within the window: a power
    cut after that cannot give a one-time code a second use."""
    from gateway.store.claims import claims_path
    from gateway.store.flush import WalFlusher
    from gateway.store.writer import CacheWriter

    clock = ManualClock(datetime(2026, 3, 10, 9, 0, tzinfo=UTC))
    path = tmp_path / "cache.sqlite3"
    synced: list[str] = []

    def sync(fd: int) -> None:
        os.fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    claims = claims_path(path)
    flusher = WalFlusher(claims, clock, window=0.05, sync=sync)

    async def go() -> None:
        async with CacheWriter(path, clock, flusher) as writer:
            task = asyncio.create_task(flusher.run())
            at = int(clock.now().timestamp())
            assert await writer.claim_nonce("n-1", at + 30, at - 60)
            await until(lambda: flusher.durable_seq == 1)
            # The log's file, and its directory the first time (its name is new).
            assert synced == [str(tmp_path), str(claims) + "-wal"]
            # A replay commits nothing new, and is refused.
            assert not await writer.claim_nonce("n-1", at + 30, at - 60)
            await until(lambda: flusher.durable_seq == 2)
            assert flusher.error is None
            assert flusher.late == 0
            # A small delta, written to the cache file, waits for no sync:
            # one a power cut takes back is asked for again.
            await writer.apply_changes([], version=7)
            await asyncio.sleep(0.05)
            assert (flusher.durable_seq, flusher.flushes, len(synced)) == (2, 2, 3)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await flusher.close()
        assert set(synced) == {str(tmp_path), str(claims) + "-wal"}

    asyncio.run(go())
