"""The PN532 reader task against a simulated PN532 over a real pseudo-terminal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from gateway.clock import ManualClock, SystemClock
from gateway.hw.readers.pn532.reader import Pn532Reader
from sim.pn532 import SimulatedPn532

from .conftest import background, until

UID = bytes.fromhex("04A2B3C4D5E6F7")


def run(body: Any, clock: Any = None) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []

    async def go() -> None:
        device = SimulatedPn532()
        uids: list[bytes] = []

        async def on_uid(uid: bytes) -> None:
            uids.append(uid)

        async def record(type_: str, data: dict[str, Any]) -> None:
            events.append((type_, data))

        reader = Pn532Reader(
            "nfc-front",
            device.port,
            on_uid=on_uid,
            record=record,
            clock=clock or SystemClock(),
            poll_interval=0.02,
            timeout=0.3,
            quiet=0.5,
            retry_min=0.05,
            retry_max=0.2,
        )
        try:
            async with background(reader.run()):
                await body(device, reader, uids)
        finally:
            device.close()

    asyncio.run(go())
    return events


def test_it_initialises_then_reports_a_card_once_while_it_stays() -> None:
    async def body(device: SimulatedPn532, reader: Pn532Reader, uids: list[bytes]) -> None:
        await until(lambda: reader.online)
        assert device.commands[:2] == [0x14, 0x32]  # SAMConfiguration, RFConfiguration
        device.card = UID
        await until(lambda: uids == [UID])
        await asyncio.sleep(0.3)  # still on the reader: not reported again
        assert uids == [UID]
        device.card = None
        await asyncio.sleep(0.7)  # away for longer than 'quiet'
        device.card = UID
        await until(lambda: uids == [UID, UID])

    events = run(body)
    assert [t for t, _ in events] == ["reader_online"]


def test_garbage_before_answers_does_not_stop_it() -> None:
    async def body(device: SimulatedPn532, reader: Pn532Reader, uids: list[bytes]) -> None:
        await until(lambda: reader.online)
        device.garbage = b"\x13\x37\x42"
        device.card = UID
        await until(lambda: uids == [UID])

    run(body)


def test_a_silent_reader_goes_offline_and_comes_back() -> None:
    async def body(device: SimulatedPn532, reader: Pn532Reader, uids: list[bytes]) -> None:
        await until(lambda: reader.online)
        device.silent = True
        await until(lambda: not reader.online)
        device.silent = False
        await until(lambda: reader.online)
        device.card = UID
        await until(lambda: uids == [UID])

    events = run(body)
    kinds = [t for t, _ in events]
    assert kinds[0] == "reader_online"
    assert kinds.count("reader_error") >= 3
    assert "reader_offline" in kinds
    assert kinds[-1] == "reader_online"


def test_a_simulated_clock_jumping_ahead_does_not_fail_an_exchange() -> None:
    # Answer times are a property of the serial link: hours of simulated time
    # passing while a frame is on its way must not count as the chip not answering.
    clock = ManualClock(datetime(2026, 3, 10, 9, tzinfo=UTC))

    async def body(device: SimulatedPn532, reader: Pn532Reader, uids: list[bytes]) -> None:
        async def jumping() -> None:
            while not uids:
                clock.advance(60)
                await asyncio.sleep(0.001)

        await until(lambda: reader.online or clock.advance(0.05) is not None)
        device.delay = 0.05  # each answer takes 50 ms of real time
        device.card = UID
        await asyncio.wait_for(jumping(), 10)

    events = run(body, clock)
    assert [t for t, _ in events] == ["reader_online"]
