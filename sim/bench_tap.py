"""``doorgw bench tap``: from the last byte of a read leaving its reader to the lock relay.

A real gateway runs in this process exactly as ``doorgw run`` builds it: a
cache of ``--bookings`` bookings (the site of ``bench decide``), the event
outbox with its flusher, doors on gpiozero's mock pins, and at each door
three emulated readers: a PN532 on a pseudo-terminal, a Wiegand reader
on mock pins and a QR scanner on a pseudo-terminal (``--doors``: one by
default, as a gateway at each door has).  Each tap is timed from
the moment the emulator has written the read's last byte (the PN532's
answer with the card, the last Wiegand bit, the scanner's line end) to the
moment the door's lock output changes.

The floor, measured in the same run and interleaved tap by tap, is the same
reader code on its own emulator, handing each read to a sink that drives an
output pin at once: the same pty read (or pin edges, and the Wiegand
inter-frame gap) and pin write, with no decision and no storage.  What the
gateway adds is the difference (``added_*``).

``--fsync-delay-ms N`` makes every sync of the event outbox to the storage
take N ms longer (in the outbox flusher's own sync step), as an SD card
would: the relay must not wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory, MockPin

from gateway.app.clocktrust import ClockTrust
from gateway.app.gateway import Gateway
from gateway.clock import SystemClock
from gateway.config.models import (
    Config,
    DoorConfig,
    GatewaySection,
    MqttSection,
    Pn532ReaderConfig,
    ReaderConfig,
    ScannerReaderConfig,
    SyncSection,
    WiegandReaderConfig,
)
from gateway.core import model, qr
from gateway.core.credentials import CredentialRead
from gateway.core.jws import Signer
from gateway.hw.readers.build import ReaderContext, build_reader
from gateway.tools.ports import free_port
from gateway.tools.sitegen import (
    T0,
    app_credential,
    build_dataset,
    percentile,
    write_bench_cache,
)
from sim.pn532 import SimulatedPn532
from sim.scanner import SimulatedScanner
from sim.wiegand import SimulatedWiegand

READERS = ("pn532", "wiegand", "qr")
#: The doors used, each with one reader of every kind: room doors and the front door.
DOORS = ("front", "room-0", "room-1", "room-2")
#: Lock outputs, Wiegand DATA0/DATA1 per door; the floor's own pins.
LOCK_PINS = (2, 3, 4, 14)
WIEGAND_PINS = ((5, 6), (7, 8), (9, 10), (11, 12))
#: The floor: one output, and a Wiegand pair per door's floor readers.
FLOOR_PIN = 16
FLOOR_WIEGAND = ((13, 15), (17, 18), (19, 20), (21, 22))
#: A card reader may present 2 cards a second (the gateway's rate limit, after
#: a burst): each reader is tapped at most this often.
READER_INTERVAL = 0.55
TAP_TIMEOUT = 5.0


class _BenchClock(SystemClock):
    """Real time, as if it were the benchmark site's morning (when its bookings are)."""

    def __init__(self) -> None:
        self._shift = T0 - time.time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self._shift, UTC)


class _Output:
    """An output pin whose next change is timed (``perf_counter_ns``)."""

    def __init__(self, pin: MockPin) -> None:
        self.changed = asyncio.Event()
        self.at = 0
        set_state = pin._set_state

        def timed(value: Any) -> None:
            set_state(value)
            if value and not self.changed.is_set():
                self.at = time.perf_counter_ns()
                self.changed.set()

        pin._set_state = timed

    def arm(self) -> None:
        self.changed.clear()


class _TimedPn532(SimulatedPn532):
    """The emulator, noting when its first answer with a newly placed card is written."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.sent = 0
        self._card_answer = False

    def place(self, uid: bytes) -> None:
        self.card, self.armed = uid, True

    def _answer(self, command: int, params: bytes) -> None:
        self._card_answer = command == 0x4A and self.card is not None
        super()._answer(command, params)

    def _write(self, data: bytes) -> None:
        super()._write(data)
        if self._card_answer and self.armed:
            self.sent, self.armed = time.perf_counter_ns(), False


class _FloorSink:
    """The floor's sink: every read drives the floor's output at once."""

    def __init__(self, device: DigitalOutputDevice) -> None:
        self._device = device

    async def card(self, door_id: str, reader_id: str, read: CredentialRead) -> None:
        self._device.on()

    async def pin(self, door_id: str, reader_id: str, pin: str) -> None:
        self._device.on()

    async def code(self, door_id: str, reader_id: str, text: str) -> None:
        self._device.on()


@dataclasses.dataclass
class _Kit:
    """One door's emulated readers (or the floor's), and how to present a read."""

    pn532: _TimedPn532
    wiegand: SimulatedWiegand
    scanner: SimulatedScanner
    cards: list[bytes]
    wiegand_cards: list[int]
    app: tuple[str, Ed25519PrivateKey]
    turn: int = 0

    def present(self, kind: str, clock: _BenchClock) -> Callable[[], int]:
        """Start a read of ``kind``; returns when (perf_counter_ns) its last byte left."""
        self.turn += 1
        if kind == "pn532":
            # Two cards in turn: the reader reports a card that is not the last one.
            self.pn532.place(self.cards[self.turn % 2])
            return lambda: self.pn532.sent
        if kind == "wiegand":
            self.wiegand.card(1, self.wiegand_cards[self.turn % 2])
            sent = time.perf_counter_ns()
            return lambda: sent
        cred, key = self.app
        self.scanner.scan(qr.app_code(key, cred, int(clock.now().timestamp())))
        sent = time.perf_counter_ns()
        return lambda: sent


def _residents(ds: model.Dataset, count: int) -> list[str]:
    """Active members on the around-the-clock plan whose card is active."""
    resident = {e.member_id for e in ds.entitlements if e.plan_id == "resident"}
    active = {m.id for m in ds.members if m.status is model.MemberStatus.ACTIVE}
    cards = {
        c.member_id
        for c in ds.credentials
        if c.status is model.CredentialStatus.ACTIVE and c.kind is model.CredentialKind.NFC_UID
    }
    return sorted(resident & active & cards, key=lambda m: int(m[1:]))[:count]


def _site(
    members: int, bookings: int, rng: random.Random
) -> tuple[model.Dataset, list[list[bytes]], list[list[int]], list[tuple[str, Ed25519PrivateKey]]]:
    """The bench site, plus per door: two cards, two Wiegand numbers and an app
    key, all of residents (granted at any hour)."""
    ds = build_dataset(members, bookings, rng)
    people = _residents(ds, 2 * len(DOORS))
    by_member = {c.member_id: c for c in ds.credentials if c.member_id in people}
    cards, numbers, apps, extra = [], [], [], []
    for i in range(len(DOORS)):
        pair = people[2 * i : 2 * i + 2]
        cards.append([bytes.fromhex(by_member[m].value) for m in pair])
        numbers.append([1000 + 2 * i, 1001 + 2 * i])
        for member, number in zip(pair, numbers[-1], strict=True):
            extra.append(
                model.Credential(
                    f"wg-bench-{number}",
                    member,
                    model.CredentialKind.WIEGAND,
                    f"26/1:{number}",
                    model.CredentialStatus.ACTIVE,
                )
            )
        credential, key = app_credential(f"app-bench-{i}", pair[0])
        extra.append(credential)
        apps.append((credential.id, key))
    ds = dataclasses.replace(ds, credentials=ds.credentials + tuple(extra))
    return ds, cards, numbers, apps


def _config(base: Path, kits: list[_Kit], keys: Path) -> Config:
    readers: list[ReaderConfig] = []
    doors = []
    for n, (door, kit) in enumerate(zip(DOORS, kits, strict=False)):
        doors.append(DoorConfig(id=door, lock_pin=LOCK_PINS[n]))
        d0, d1 = WIEGAND_PINS[n]
        readers += [
            Pn532ReaderConfig(id=f"nfc-{door}", door=door, kind="pn532", port=kit.pn532.port),
            WiegandReaderConfig(
                id=f"wg-{door}", door=door, kind="wiegand", data0_pin=d0, data1_pin=d1
            ),
            ScannerReaderConfig(
                id=f"qr-{door}", door=door, kind="scanner", port=str(kit.scanner.path)
            ),
        ]
    nowhere = free_port()  # no broker: taps are decided offline
    return Config(
        gateway=GatewaySection(id="bench-gw", site_id="bench", data_dir=base / "gw"),
        doors=tuple(doors),
        readers=tuple(readers),
        mqtt=MqttSection(urls=(f"mqtt://127.0.0.1:{nowhere}",)),
        sync=SyncSection(keys_file=keys),
    )


async def _measure(
    config: Config,
    factory: MockFactory,
    kits: list[_Kit],
    floor_kits: list[_Kit],
    *,
    kinds: tuple[str, ...],
    taps: int,
    fsync_delay: float,
    progress: Callable[[str], None],
) -> dict[str, tuple[list[int], list[int]]]:
    clock = _BenchClock()
    gw = Gateway(
        config,
        clock,
        pin_factory=factory,
        clock_trust=ClockTrust(clock, ntp=lambda: True),
        fsync_delay=fsync_delay,
    )
    locks = [_Output(factory.pin(p)) for p in LOCK_PINS[: len(kits)]]
    floor_out = _Output(factory.pin(FLOOR_PIN))
    results: dict[str, tuple[list[int], list[int]]] = {k: ([], []) for k in kinds}
    async with contextlib.AsyncExitStack() as stack:
        floor_device = DigitalOutputDevice(FLOOR_PIN, pin_factory=factory)
        stack.callback(floor_device.close)
        ctx = ReaderContext(
            sink=_FloorSink(floor_device),
            record=_discard,
            clock=clock,
            pin_factory=factory,
            osdp_key_file=lambda cfg: config.gateway.data_dir / "unused.key",
            closing=stack,
        )
        # A floor reader of each kind beside each door's, paced as the door's are.
        floor_readers = [
            build_reader(cfg, ctx)
            for n, kit in enumerate(floor_kits)
            for cfg in (
                Pn532ReaderConfig(
                    id=f"floor-nfc-{n}", door="floor", kind="pn532", port=kit.pn532.port
                ),
                WiegandReaderConfig(
                    id=f"floor-wg-{n}",
                    door="floor",
                    kind="wiegand",
                    data0_pin=FLOOR_WIEGAND[n][0],
                    data1_pin=FLOOR_WIEGAND[n][1],
                ),
                ScannerReaderConfig(
                    id=f"floor-qr-{n}", door="floor", kind="scanner", port=str(kit.scanner.path)
                ),
            )
        ]
        tasks = [asyncio.create_task(r.run()) for r in floor_readers if r is not None]
        stack.push_async_callback(_cancel, tasks)
        await stack.enter_async_context(gw.running())
        async with asyncio.timeout(30):
            # Polling on purpose: readers come online in their own tasks.
            while not all(gw.station.readers_online().values()) or not all(  # noqa: ASYNC110
                r is not None and r.online for r in floor_readers
            ):
                await asyncio.sleep(0.05)
        progress(f"timing {taps:,} taps per reader kind ({', '.join(kinds)}) and their floor ...")
        last_tap: dict[tuple[int, str], float] = {}
        gc.collect()
        gc.freeze()
        for _ in range(taps):
            for n, kit in enumerate(kits):
                for kind in kinds:
                    wait = last_tap.get((n, kind), 0.0) + READER_INTERVAL - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    last_tap[(n, kind)] = time.monotonic()
                    added = await _one(kit, kind, locks[n], clock)
                    await gw.station.doors[DOORS[n]].lock_now()
                    floor = await _one(floor_kits[n], kind, floor_out, clock)
                    floor_device.off()
                    results[kind][0].append(added)
                    results[kind][1].append(floor)
        gc.unfreeze()
    return results


async def _one(kit: _Kit, kind: str, out: _Output, clock: _BenchClock) -> int:
    """One read presented and its output awaited: nanoseconds from sent to output."""
    out.arm()
    sent = kit.present(kind, clock)
    try:
        async with asyncio.timeout(TAP_TIMEOUT):
            await out.changed.wait()
    except TimeoutError:
        raise RuntimeError(
            f"a {kind} read did not move its output within {TAP_TIMEOUT} s"
        ) from None
    return out.at - sent()


async def _discard(type_: str, data: dict[str, Any], at: int | None = None) -> None:
    """The floor records nothing."""


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def run(
    members: int,
    bookings: int,
    taps: int,
    kinds: tuple[str, ...],
    fsync_delay_ms: float,
    doors: int,
    directory: Path,
    progress: Callable[[str], None],
    *,
    compare_ms: float | None = None,
) -> dict[str, Any]:
    """Build the site in ``directory``, time the taps, return the figures.

    ``compare_ms``: also time the same taps with that sync delay (for the
    plot), under ``"compare"``."""
    rng = random.Random(7)  # noqa: S311 - reproducible synthetic data, not secrets
    progress(f"building a site of {members:,} members and {bookings:,} bookings ...")
    ds, cards, numbers, apps = _site(members, bookings, rng)
    (directory / "gw").mkdir(mode=0o700)
    asyncio.run(write_bench_cache(directory / "gw" / "cache.sqlite3", ds))
    del ds
    gc.collect()
    signer = Signer.generate("bench-platform")
    keys = directory / "keys.json"
    keys.write_text(json.dumps({"keys": [signer.public_jwk()]}))

    async def go(delay_ms: float) -> dict[str, tuple[list[int], list[int]]]:
        factory = MockFactory()
        kits = []
        for i in range(2 * doors):  # the doors', then the floor's
            door = i % doors
            d0, d1 = WIEGAND_PINS[door] if i < doors else FLOOR_WIEGAND[door]
            kits.append(
                _Kit(
                    _TimedPn532(),
                    SimulatedWiegand(factory, d0, d1),
                    SimulatedScanner(directory / f"scanner-{i}"),
                    cards[door],
                    numbers[door],
                    apps[door],
                )
            )
        try:
            config = _config(directory, kits[:doors], keys)
            return await _measure(
                config,
                factory,
                kits[:doors],
                kits[doors:],
                kinds=kinds,
                taps=max(1, taps // doors),
                fsync_delay=delay_ms / 1000,
                progress=progress,
            )
        finally:
            for kit in kits:
                kit.pn532.close()
                kit.scanner.unplug()

    link_log = logging.getLogger("gateway.net.mqtt")
    level = link_log.level
    link_log.setLevel(logging.ERROR)  # no broker, on purpose
    try:
        measured = asyncio.run(go(fsync_delay_ms))
        other = None
        if compare_ms is not None:
            progress(f"the same taps with outbox syncs {compare_ms:g} ms slower ...")
            other = asyncio.run(go(compare_ms))
    finally:
        link_log.setLevel(level)  # as it was: the bench may run inside a larger process
    per_reader = {kind: _figures(*measured[kind]) for kind in kinds}
    worst = max(kinds, key=lambda k: per_reader[k]["added_p99_us"])
    compare = None
    if other is not None:
        compare = {
            "fsync_delay_ms": compare_ms,
            "samples_ns": {k: sorted(other[k][0]) for k in kinds},
            "readers": {k: _figures(*other[k]) for k in kinds},
        }
    return {
        "compare": compare,
        **per_reader[worst],
        "reader": worst,
        "fsync_delay_ms": fsync_delay_ms,
        "members": members,
        "bookings": bookings,
        "doors": doors,
        "readers": per_reader,
        "samples_ns": {k: sorted(measured[k][0]) for k in kinds},
        "floor_samples_ns": {k: sorted(measured[k][1]) for k in kinds},
    }


def _figures(taps: list[int], floor: list[int]) -> dict[str, Any]:
    taps, floor = sorted(taps), sorted(floor)
    p50, p99 = percentile(taps, 0.50), percentile(taps, 0.99)
    f50, f99 = percentile(floor, 0.50), percentile(floor, 0.99)
    return {
        "taps": len(taps),
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "max_us": round(taps[-1] / 1000, 1),
        "floor_p50_us": round(f50, 1),
        "floor_p99_us": round(f99, 1),
        "added_p50_us": round(p50 - f50, 1),
        "added_p99_us": round(p99 - f99, 1),
        "ratio": round(p99 / f99, 2),
    }


def bench_tap(args: argparse.Namespace) -> int:
    """The ``doorgw bench tap`` command."""

    def progress(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    kinds = READERS if args.reader == "all" else (args.reader,)
    if args.plot is not None:
        from sim.bench_plot import check_plot_target

        check_plot_target(args.plot)
    with tempfile.TemporaryDirectory(prefix="doorgw-bench-tap-") as tmp:
        result = run(
            args.members,
            args.bookings,
            args.taps,
            kinds,
            args.fsync_delay_ms,
            args.doors,
            Path(tmp),
            progress,
            compare_ms=None if args.plot is None else (50.0 if not args.fsync_delay_ms else 0.0),
        )
    if args.plot is not None:
        from sim.bench_plot import plot_taps

        plot_taps(args.plot, result)
        progress(f"plot written to {args.plot}")
    for bulky in ("samples_ns", "floor_samples_ns"):
        result.pop(bulky)
    if result["compare"] is not None:
        result["compare"].pop("samples_ns")
    if args.json:
        print(json.dumps(result))
        return 0
    lines = [
        f"site: {result['members']:,} members, {result['bookings']:,} bookings; "
        f"{args.doors} door(s), each with a reader of every kind; "
        f"outbox syncs {args.fsync_delay_ms:g} ms slower than the disk's own",
        f"{'reader':<9}{'taps':>6}{'p50 us':>10}{'p99 us':>10}{'max us':>10}"
        f"{'floor p50':>11}{'floor p99':>11}{'added p99':>11}",
    ]
    for kind, f in result["readers"].items():
        lines.append(
            f"{kind:<9}{f['taps']:>6}{f['p50_us']:>10.1f}{f['p99_us']:>10.1f}{f['max_us']:>10.1f}"
            f"{f['floor_p50_us']:>11.1f}{f['floor_p99_us']:>11.1f}{f['added_p99_us']:>11.1f}"
        )
    met = result["added_p99_us"] <= 1000
    lines.append(
        "floor: the same reader code and emulator driving a pin, with no decision and no storage"
    )
    lines.append(
        f"target added p99 <= 1000 us (worst: {result['reader']}, "
        f"{result['added_p99_us']:.1f} us): {'met' if met else 'NOT met'}"
    )
    print("\n".join(lines))
    return 0
