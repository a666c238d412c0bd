"""Serial scanners: line framing, garbage, and a port that is unplugged and plugged back.

Real pyserial over real pseudo-terminals: the test holds the pty's master
side as the scanner would.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import select
import threading
from pathlib import Path
from typing import Any

import serial
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import SystemClock
from gateway.hw.readers.scanner.framer import Discarded, Line, LineFramer
from gateway.hw.readers.scanner.reader import MIN_LINE_INTERVAL, SerialLineReader
from gateway.hw.readers.serial_port import SerialPortTask, SessionError, loop_fd, read_some
from sim.scanner import SimulatedScanner

from .conftest import background, until


def test_framing_across_pieces_and_terminators() -> None:
    framer = LineFramer()
    assert framer.feed(b"ab") == []
    assert framer.feed(b"c\r\nde") == [Line("abc")]
    assert framer.feed(b"f\n\n\rg\r") == [Line("def"), Line("g")]


def test_garbage_is_discarded_with_a_reason_and_reading_goes_on() -> None:
    framer = LineFramer(max_line=10)
    out = framer.feed(b"\xff\xfe\n" + b"x" * 25 + b"\n" + b"ok\x07\n" + b"fine\n")
    assert out == [
        Discarded("not_utf8", 2),
        Discarded("too_long", 25),
        Discarded("control_chars", 3),
        Line("fine"),
    ]


Scanner = SimulatedScanner


def _reader(
    scanner: SimulatedScanner, **options: Any
) -> tuple[SerialLineReader, list[str], list[tuple[str, dict[str, Any]]]]:
    """A reader on ``scanner``'s port, with the lines and events it hands over."""
    lines: list[str] = []
    events: list[tuple[str, dict[str, Any]]] = []

    async def on_line(text: str) -> None:
        lines.append(text)

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append((type_, data))

    reader = SerialLineReader(
        "qr-front",
        str(scanner.path),
        on_line=on_line,
        record=record,
        clock=SystemClock(),
        **options,
    )
    return reader, lines, events


def test_lines_arrive_and_an_unplugged_scanner_comes_back(tmp_path: Path) -> None:
    scanner = Scanner(tmp_path / "scanner")
    reader, lines, events = _reader(scanner, retry_min=0.05, retry_max=0.2)

    async def go() -> None:
        async with background(reader.run()):
            await until(lambda: reader.online)
            scanner.send(b"DP1.abc")
            scanner.send(b".def\r\n\xff\n")
            await until(lambda: lines == ["DP1.abc.def"])
            await until(lambda: any(t == "reader_input_discarded" for t, _ in events))
            scanner.unplug()
            await until(lambda: not reader.online)
            scanner.plug()
            await until(lambda: reader.online)
            await asyncio.sleep(MIN_LINE_INTERVAL)  # a person shows the next code
            scanner.send(b"second\n")
            await until(lambda: lines == ["DP1.abc.def", "second"])

    asyncio.run(go())
    kinds = [t for t, _ in events]
    assert kinds == ["reader_online", "reader_input_discarded", "reader_offline", "reader_online"]
    assert events[1][1] == {
        "reader": "qr-front",
        "reason": "not_utf8",
        "bytes": 1,
        "count": 1,
        "reasons": {"not_utf8": 1},
    }


@given(chunks=st.lists(st.binary(max_size=200), max_size=30))
def test_arbitrary_scanner_bytes_give_clean_lines_or_reasons(chunks: list[bytes]) -> None:
    framer = LineFramer(max_line=64)
    for chunk in chunks:
        for item in framer.feed(chunk):
            if isinstance(item, Line):
                assert 0 < len(item.text) <= 64
                assert item.text.isprintable()
            else:
                assert isinstance(item, Discarded)
                assert item.reason in ("not_utf8", "too_long", "control_chars")


@given(
    data=st.binary(max_size=400).map(lambda b: b.replace(b"z", b"\n")),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_the_same_bytes_frame_the_same_however_the_reads_cut_them(
    data: bytes, cuts: list[int]
) -> None:
    whole = LineFramer(max_line=16).feed(data + b"\n")
    framer = LineFramer(max_line=16)
    pieces: list[Line | Discarded] = []
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    for a, b in itertools.pairwise(bounds):
        pieces += framer.feed(data[a:b])
    pieces += framer.feed(b"\n")
    assert pieces == whole
    # An oversized line is reported with its whole length.
    lines = [part for part in re.split(rb"[\r\n]", data + b"\n") if part]
    sizes = [len(part) for part in lines if len(part) > 16]
    assert [d.size for d in whole if isinstance(d, Discarded) and d.reason == "too_long"] == sizes


def test_one_burst_is_one_presentation_and_its_garbage_one_event(tmp_path: Path) -> None:
    # The audit's read: 500 short lines and 500 of control characters at once.
    scanner = Scanner(tmp_path / "scanner")
    reader, lines, events = _reader(scanner)

    async def go() -> None:
        async with background(reader.run()):
            await until(lambda: reader.online)
            scanner.send(b"".join(b"c%03d\n" % i + b"\x01\x02\n" for i in range(500)))
            await until(lambda: any(t == "reader_input_discarded" for t, _ in events))
            await asyncio.sleep(0.5)  # anything more would have come by now

    asyncio.run(go())
    assert len(lines) == 1
    discarded = [d for t, d in events if t == "reader_input_discarded"]
    assert len(discarded) == 1
    assert discarded[0]["count"] == 999
    assert set(discarded[0]["reasons"]) == {"extra_line", "control_chars"}


def test_an_idle_scanner_does_not_wake_until_it_has_something_to_report(tmp_path: Path) -> None:
    """With nothing counted the read has no timeout: an idle scanner costs no
    wakeups at all.  Garbage brings the timeout back, so the burst's end is
    seen and reported; once it is, the reader waits without one again."""
    scanner = Scanner(tmp_path / "scanner")
    reader, lines, events = _reader(scanner)
    reader.read_timeout = 0.05  # the port's: 20 empty reads a second wherever it applies
    empty: list[bool] = []
    read = reader._read

    async def counting(port: serial.SerialBase, limit: int, *, until_data: bool = False) -> bytes:
        data = await read(port, limit, until_data=until_data)
        if not data:
            empty.append(until_data)
        return data

    reader._read = counting  # type: ignore[method-assign]

    async def go() -> None:
        async with background(reader.run()):
            await until(lambda: reader.online)
            await asyncio.sleep(0.5)
            assert empty == [], "an idle reader with nothing to report woke up"
            scanner.send(b"\xff\n")
            await until(lambda: any(t == "reader_input_discarded" for t, _ in events))
            reported = len(empty)
            await asyncio.sleep(0.5)
            assert len(empty) == reported, "it kept waking after the report"
            scanner.send(b"ok\n")
            await until(lambda: lines == ["ok"])

    asyncio.run(go())
    # The one empty read that came was a timed one: the end of the garbage's burst.
    assert empty == [False]


def test_a_read_returns_what_the_device_sent_without_waiting_for_more(tmp_path: Path) -> None:
    """A port with no timeout at all: the read must still return the 12 bytes
    the scanner sent (``port.read(4096)`` would wait for 4,096 of them)."""
    scanner = SimulatedScanner(tmp_path / "scanner")
    port = serial.serial_for_url(str(scanner.path), timeout=None)
    got: list[bytes] = []
    try:
        scanner.send(b"0123456789\r\n")
        reading = threading.Thread(target=lambda: got.append(read_some(port, 4096)), daemon=True)
        reading.start()
        reading.join(10)
        assert not reading.is_alive(), "the read waited for more than the device sent"
        assert got == [b"0123456789\r\n"]
        scanner.send(b"abc" * 10)
        assert read_some(port, 8) == b"abcabcab"  # never more than asked for
    finally:
        if not got:
            scanner.unplug()  # ends the blocked read
        port.close()
        scanner.unplug()


def test_a_pty_is_read_in_the_loops_thread_and_loop_urls_on_the_readers_own(
    tmp_path: Path,
) -> None:
    """A device or pty has a descriptor the event loop waits on: it is read and
    written with no worker thread at all, an idle read ends after the port's
    timeout, and a port that goes away ends the session.  ``loop://`` has no
    descriptor: its reads and writes go to the reader's own thread."""
    scanner = SimulatedScanner(tmp_path / "scanner")
    pty = serial.serial_for_url(str(scanner.path), timeout=0.2)
    loopback = serial.serial_for_url("loop://", timeout=0.2)

    async def record(type_: str, data: dict[str, Any], at: int | None = None) -> None:
        pass

    def task(url: str) -> SerialPortTask:
        return SerialPortTask(
            "r1", url, record=record, clock=SystemClock(), baudrate=9600, read_timeout=0.2
        )

    async def go() -> None:
        assert isinstance(loop_fd(pty), int)
        assert loop_fd(loopback) is None
        on_pty = task(str(scanner.path))
        scanner.send(b"line\r\n")
        assert await on_pty._read(pty, 64) == b"line\r\n"
        assert await on_pty._read(pty, 64) == b""  # nothing within the timeout
        await on_pty._write(pty, b"beep")
        assert await asyncio.to_thread(scanner_read) == b"beep"
        assert on_pty._thread is None, "a pty needed no worker thread"
        on_loop = task("loop://")
        await on_loop._write(loopback, b"echo")
        assert await on_loop._read(loopback, 64) == b"echo"
        assert on_loop._thread is not None
        on_loop._thread.shutdown()
        pty.timeout = 30  # the unplug, not the timeout, must end this read
        reading = asyncio.ensure_future(on_pty._read(pty, 64))
        await asyncio.sleep(0.05)
        scanner.unplug()
        try:
            await reading
        except (SessionError, OSError):
            pass  # the session ends; the reader reopens the port
        else:
            raise AssertionError("a read on a port that went away returned")

    def scanner_read() -> bytes:
        master = scanner.master
        assert master is not None
        select.select([master], [], [], 5)
        return os.read(master, 64)

    try:
        asyncio.run(go())
    finally:
        pty.close()
        loopback.close()
        scanner.unplug()
