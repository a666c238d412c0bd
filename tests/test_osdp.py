"""OSDP readers: libosdp as control panel against libosdp's own peripheral device on a pty."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import osdp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import SystemClock
from gateway.core.credentials import CredentialRead
from gateway.core.model import CredentialKind
from gateway.errors import CredentialFormatError
from gateway.hw.readers.osdp.keys import (
    SCBK_D,
    KeyFileError,
    create_key,
    load_key,
    load_or_create_key,
)
from gateway.hw.readers.osdp.reader import OsdpReader, card_read
from gateway.hw.readers.wiegand.codec import encode_card
from sim.osdp import SimulatedOsdpReader

from .conftest import background, until

KEY = bytes.fromhex("8f1e2d3c4b5a69788796a5b4c3d2e1f0")


class Bench:
    def __init__(self) -> None:
        self.reads: list[CredentialRead] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def types(self) -> list[str]:
        return [t for t, _ in self.events]


def run(
    device_key: bytes | None,
    body: Callable[[Bench, OsdpReader, SimulatedOsdpReader], Awaitable[None]],
    *,
    key: bytes = KEY,
    install_mode: bool = False,
) -> Bench:
    bench = Bench()

    async def on_read(read: CredentialRead) -> None:
        bench.reads.append(read)

    async def record(type_: str, data: dict[str, Any]) -> None:
        bench.events.append((type_, data))

    async def go() -> None:
        device = SimulatedOsdpReader(address=5, key=device_key)
        reader = OsdpReader(
            "osdp-front",
            device.port,
            address=5,
            key=key,
            install_mode=install_mode,
            on_read=on_read,
            record=record,
            clock=SystemClock(),
            sc_timeout=2.0,
            retry_min=0.2,
            retry_max=1.0,
        )
        try:
            async with background(reader.run()):
                await body(bench, reader, device)
        finally:
            device.close()

    asyncio.run(go())
    return bench


def test_a_card_read_over_the_secure_channel_and_feedback_on_the_reader() -> None:
    async def body(bench: Bench, reader: OsdpReader, device: SimulatedOsdpReader) -> None:
        await until(lambda: reader.secure and device.secure)
        device.card(bytes.fromhex("04a2b3c4d5e6f7"))
        device.wiegand(encode_card(26, 12, 34567))
        await until(lambda: len(bench.reads) == 2)
        await reader.show("granted")
        await until(lambda: device.sent(osdp.Command.LED) and device.sent(osdp.Command.Buzzer))

    bench = run(KEY, body)
    assert bench.reads == [
        CredentialRead(CredentialKind.NFC_UID, "04A2B3C4D5E6F7"),
        CredentialRead(CredentialKind.WIEGAND, "26/12:34567"),
    ]
    assert bench.types()[:2] == ["reader_secure_channel", "reader_online"]
    assert "reader_insecure" not in bench.types()


def test_feedback_patterns_reach_the_reader_as_led_and_beeps() -> None:
    async def body(bench: Bench, reader: OsdpReader, device: SimulatedOsdpReader) -> None:
        await until(lambda: reader.secure)
        await reader.show("denied")
        await until(lambda: device.sent(osdp.Command.LED) and device.sent(osdp.Command.Buzzer))
        led, beep = device.sent(osdp.Command.LED)[0], device.sent(osdp.Command.Buzzer)[0]
        assert (led["on_color"], led["timer_count"]) == (osdp.CommandLEDColor.Red, 20)
        assert beep["rep_count"] == 3

    run(KEY, body)


def test_the_fault_pattern_is_the_readers_lasting_state_until_cleared() -> None:
    async def body(bench: Bench, reader: OsdpReader, device: SimulatedOsdpReader) -> None:
        await reader.show("fault")  # before the reader is up: kept, sent once it is
        await until(lambda: device.sent(osdp.Command.LED))
        await reader.show("granted")
        await until(lambda: len(device.sent(osdp.Command.LED)) == 2)
        await reader.clear_fault()
        await until(lambda: len(device.sent(osdp.Command.LED)) == 3)
        fault, granted, cleared = device.sent(osdp.Command.LED)
        assert (fault["temporary"], fault["on_color"]) == (False, osdp.CommandLEDColor.Red)
        assert (granted["temporary"], granted["on_color"]) == (True, osdp.CommandLEDColor.Green)
        assert (cleared["temporary"], cleared["on_color"]) == (False, osdp.CommandLEDColor.Black)
        await asyncio.sleep(0.5)
        assert reader.secure  # every command was accepted: none took the reader offline

    run(KEY, body)


def test_a_reader_with_another_key_is_reported_and_its_cards_never_arrive() -> None:
    async def body(bench: Bench, reader: OsdpReader, device: SimulatedOsdpReader) -> None:
        await until(lambda: "reader_insecure" in bench.types())
        device.card(bytes.fromhex("04a2b3c4"))
        await asyncio.sleep(0.5)

    bench = run(bytes(16), body)
    insecure = [d for t, d in bench.events if t == "reader_insecure"]
    assert insecure[0]["reason"] == "key_rejected"
    assert bench.reads == []
    assert "reader_online" not in bench.types()


def test_a_reader_on_the_install_mode_key_is_refused_outside_install_mode() -> None:
    async def body(bench: Bench, reader: OsdpReader, device: SimulatedOsdpReader) -> None:
        await until(lambda: "reader_insecure" in bench.types())

    bench = run(None, body)
    assert next(d["reason"] for t, d in bench.events if t == "reader_insecure") == "key_rejected"
    assert "reader_key_set" not in bench.types()


def test_install_mode_reports_the_default_key_then_sets_the_readers_own() -> None:
    async def body(bench: Bench, reader: OsdpReader, device: SimulatedOsdpReader) -> None:
        await until(lambda: reader.secure)
        device.card(bytes.fromhex("04a2b3c4"))
        await until(lambda: bench.reads)

    bench = run(None, body, install_mode=True)
    types = bench.types()
    insecure = [d for t, d in bench.events if t == "reader_insecure"]
    assert insecure[0]["reason"] == "install_mode_key"
    assert ("reader_key_set", {"reader": "osdp-front", "ok": True}) in bench.events
    assert types.index("reader_insecure") < types.index("reader_key_set")
    assert bench.reads == [CredentialRead(CredentialKind.NFC_UID, "04A2B3C4")]


def test_an_unplugged_reader_is_reported_offline() -> None:
    async def body(bench: Bench, reader: OsdpReader, device: SimulatedOsdpReader) -> None:
        await until(lambda: reader.secure)
        device.close()  # unplugged: the other end of the pty is gone
        await until(lambda: "reader_offline" in bench.types())

    bench = run(KEY, body)
    assert bench.types().count("reader_online") == 1


def test_a_reader_that_stops_answering_is_reported_and_comes_back_when_it_answers() -> None:
    async def body(bench: Bench, reader: OsdpReader, device: SimulatedOsdpReader) -> None:
        await until(lambda: reader.secure)
        device.go_silent()
        await until(lambda: "reader_offline" in bench.types())
        device.resume()
        await until(lambda: bench.types().count("reader_online") == 2)
        device.card(bytes.fromhex("04a2b3c4"))
        await until(lambda: bench.reads)

    bench = run(KEY, body)
    assert [t for t in bench.types() if t.startswith("reader_o")] == [
        "reader_online",
        "reader_offline",
        "reader_online",
    ]
    assert "reader_insecure" not in bench.types()  # it lost its channel, not its key


# Card data and key files, without a bus.


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"format": 0, "length": 32, "data": bytes.fromhex("04a2b3c4")},
            CredentialRead(CredentialKind.NFC_UID, "04A2B3C4"),
        ),
        (
            {"format": 2, "length": 8, "data": b"04:A2:B3:C4"},
            CredentialRead(CredentialKind.NFC_UID, "04A2B3C4"),
        ),
    ],
)
def test_card_data_formats(event: dict[str, Any], expected: CredentialRead) -> None:
    assert card_read(event) == expected


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"format": 1, "length": 40, "data": b"\x00"}, "40 bits in 1 bytes"),
        ({"format": 1, "length": 26, "data": b"\xff\xff\xff\xff"}, "parity"),
        ({"format": 0, "length": 24, "data": b"\x01\x02\x03"}, "not 4, 7 or 10 bytes"),
    ],
)
def test_bad_card_data_says_why(event: dict[str, Any], message: str) -> None:
    with pytest.raises(CredentialFormatError, match=message):
        card_read(event)


@given(
    fmt=st.sampled_from([0, 1, 2, 7, None]),
    length=st.integers(-5, 600),
    data=st.binary(max_size=80),
)
def test_no_card_data_crashes_the_decoder(fmt: int | None, length: int, data: bytes) -> None:
    try:
        read = card_read({"format": fmt, "length": length, "data": data})
    except CredentialFormatError:
        return
    assert read.kind in (CredentialKind.NFC_UID, CredentialKind.WIEGAND)


def test_keys_are_made_with_mode_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "osdp-front.key"
    key, created = load_or_create_key(path, create=True)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key(path) == key
    assert load_or_create_key(path, create=True) == (key, False)
    with pytest.raises(FileExistsError):
        create_key(path)
    assert load_key(path) == key
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (KEY.hex(), 0o644, "mode 0644 lets others read the key; it must be 0600"),
        ("not hex", 0o600, "not a key"),
        (KEY.hex()[:20], 0o600, "not a key"),
        (SCBK_D.hex(), 0o600, "public install-mode key"),
    ],
)
def test_bad_key_files_are_refused(tmp_path: Path, content: str, mode: int, message: str) -> None:
    path = tmp_path / "osdp.key"
    path.write_text(content)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=message):
        load_key(path)


def test_a_missing_key_is_an_error_outside_install_mode(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such key file"):
        load_or_create_key(tmp_path / "none.key", create=False)
