"""A Wiegand reader on gpiozero's MockFactory: framing on the gap, cards, PINs, bad frames."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from gpiozero.pins.mock import MockFactory

from gateway.clock import ManualClock
from gateway.hw.readers.wiegand.codec import CardRead, encode_card
from gateway.hw.readers.wiegand.reader import WiegandReader
from sim.wiegand import SimulatedWiegand

from .conftest import background

D0, D1 = 5, 6


class Bench:
    def __init__(self) -> None:
        self.factory = MockFactory()
        self.clock = ManualClock(datetime(2026, 3, 10, 10, tzinfo=UTC))
        self.cards: list[CardRead] = []
        self.pins: list[str] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

        self.wire = SimulatedWiegand(self.factory, D0, D1)

    def send(self, bits: list[int]) -> None:
        self.wire.send(bits)

    def key(self, code: int) -> None:
        self.send([(code >> (3 - i)) & 1 for i in range(4)])


def run(body: Callable[[Bench, WiegandReader], Awaitable[None]]) -> Bench:
    bench = Bench()

    async def on_card(read: CardRead) -> None:
        bench.cards.append(read)

    async def on_pin(pin: str) -> None:
        bench.pins.append(pin)

    async def record(type_: str, data: dict[str, Any]) -> None:
        bench.events.append((type_, data))

    async def go() -> None:
        reader = WiegandReader(
            "wg-front",
            factory=bench.factory,
            clock=bench.clock,
            data0=D0,
            data1=D1,
            on_card=on_card,
            on_pin=on_pin,
            record=record,
        )
        try:
            async with background(reader.run()):
                await body(bench, reader)
        finally:
            reader.close()

    asyncio.run(go())
    return bench


def test_two_cards_framed_on_the_gap() -> None:
    async def body(bench: Bench, reader: WiegandReader) -> None:
        bench.send(encode_card(26, 12, 34567))
        await bench.clock.run_for(0.05, step=0.005)
        bench.send(encode_card(37, 1000, 500_000))
        await bench.clock.run_for(0.05, step=0.005)

    bench = run(body)
    assert bench.cards == [CardRead(26, 12, 34567), CardRead(37, 1000, 500_000)]
    assert [c.value for c in bench.cards] == ["26/12:34567", "37/1000:500000"]


def test_frames_that_reach_a_busy_loop_together_are_split_on_their_edge_times() -> None:
    import time

    async def body(bench: Bench, reader: WiegandReader) -> None:
        # The loop is blocked while both frames arrive (nothing awaits in
        # between), 40 ms of silence apart on the wire, as the edge ticks show.
        bench.send(encode_card(26, 12, 34567))
        time.sleep(0.04)  # noqa: ASYNC251 - blocking the loop is the point
        bench.send(encode_card(35, 1234, 567890))
        await bench.clock.run_for(0.05, step=0.005)

    bench = run(body)
    assert bench.cards == [CardRead(26, 12, 34567), CardRead(35, 1234, 567890)]


def test_a_bad_frame_is_recorded_and_reading_goes_on() -> None:
    async def body(bench: Bench, reader: WiegandReader) -> None:
        frame = encode_card(26, 1, 2)
        frame[5] ^= 1
        bench.send(frame)
        await bench.clock.run_for(0.05, step=0.005)
        bench.send([1, 0, 1])  # a truncated burst
        await bench.clock.run_for(0.05, step=0.005)
        bench.send(encode_card(26, 1, 2))
        await bench.clock.run_for(0.05, step=0.005)
        bad = [d for t, d in bench.events if t == "reader_bad_frame"]
        assert [d["reason"] for d in bad] == ["26-bit frame: even parity (bit 0) fails"]
        # Bad frames are one event per 10 s: the second comes when that has passed.
        await bench.clock.run_for(10, step=0.5)

    bench = run(body)
    bad = [d for t, d in bench.events if t == "reader_bad_frame"]
    assert [(d["reason"], d["bits"], d["count"]) for d in bad] == [
        ("26-bit frame: even parity (bit 0) fails", 26, 1),
        ("3-bit frame: not a supported format (4, 8, 26, 34, 35 or 37 bits)", 3, 1),
    ]
    assert bench.cards == [CardRead(26, 1, 2)]


def test_noise_on_the_lines_is_bounded_and_one_event_per_interval() -> None:
    """A noisy cable: 300 bad bursts, and one that never pauses."""

    async def body(bench: Bench, reader: WiegandReader) -> None:
        for _ in range(300):
            bench.send([1, 0, 1])
            await bench.clock.run_for(0.05, step=0.005)
        bench.send([1, 0] * 5000)  # 10,000 edges without a gap
        await bench.clock.run_for(10.5, step=0.5)
        bench.send(encode_card(26, 1, 2))
        await bench.clock.run_for(0.05, step=0.005)

    bench = run(body)
    bad = [d for t, d in bench.events if t == "reader_bad_frame"]
    assert len(bad) <= 3  # not 301: the first, one per 10 s after it
    # 301 bad frames or a few more: framing on the gap follows real edge times,
    # and a loaded machine can cut the long burst in two.
    assert 301 <= sum(d["count"] for d in bad) <= 305, bad
    assert any("-bit burst: longer than any" in r for d in bad for r in d["reasons"])
    assert bench.cards == [CardRead(26, 1, 2)]


def test_pins_end_with_hash_clear_with_star_and_time_out() -> None:
    async def body(bench: Bench, reader: WiegandReader) -> None:
        for code in (1, 2, 3, 4, 11):  # 1234#
            bench.key(code)
            await bench.clock.run_for(0.05, step=0.005)
        for code in (9, 9, 10, 4, 7, 1, 1, 11):  # 99*4711#
            bench.key(code)
            await bench.clock.run_for(0.05, step=0.005)
        bench.key(5)
        await bench.clock.run_for(11, step=0.5)  # walked away mid-PIN
        for code in (6, 11):
            bench.key(code)
            await bench.clock.run_for(0.05, step=0.005)

    bench = run(body)
    assert bench.pins == ["1234", "4711", "6"]
