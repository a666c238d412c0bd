"""A serial line reader (QR / barcode scanners): pyserial in a thread, lines on the loop.

The port is opened by URL with :func:`serial.serial_for_url`, so a real
device (``/dev/ttyACM0``), a pty from the simulator or ``loop://`` all work
unchanged.  Reading blocks in a worker thread until the scanner sends
something (or a short timeout), and returns what it sent at once; every
result hops onto the event loop here.  A port that disappears is reopened
with exponential backoff; ``reader_offline`` and ``reader_online`` events
say when.  Nothing a scanner sends can stop the task, or flood the outbox:
one read (one burst) is at most one presentation, codes closer together
than :data:`MIN_LINE_INTERVAL` are dropped, and everything thrown away is
counted into one ``reader_input_discarded`` event per
:data:`~gateway.hw.readers.discards.REPORT_INTERVAL`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import serial

from gateway.clock import Clock
from gateway.events import Record
from gateway.hw.readers.discards import REPORT_INTERVAL, InputReports
from gateway.hw.readers.scanner.framer import Discarded, LineFramer
from gateway.hw.readers.serial_port import SerialPortTask

OnLine = Callable[[str], Awaitable[object]]

#: Seconds a scanner must leave between two codes; one faster is thrown away.
MIN_LINE_INTERVAL = 0.3
#: Bytes closer together than this are one burst (one presentation at most).
BURST_GAP = 0.05


class SerialLineReader(SerialPortTask):
    """Reads lines from one serial scanner until cancelled."""

    def __init__(
        self,
        reader_id: str,
        url: str,
        *,
        on_line: OnLine,
        record: Record,
        clock: Clock,
        baudrate: int = 9600,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            reader_id,
            url,
            record=record,
            clock=clock,
            baudrate=baudrate,
            # A read returns as soon as the scanner sends anything: the timeout
            # only says how soon what a burst discarded is reported (an idle
            # reader with nothing to report waits without one), and, on a port
            # read through the reader's thread, how long a close waits.
            read_timeout=1.0,
            retry_min=retry_min,
            retry_max=retry_max,
            rng=rng,
        )
        self._on_line = on_line
        self._last_line = float("-inf")
        self._discards = InputReports(reader_id, "reader_input_discarded", record, clock)

    async def _session(self, port: serial.SerialBase) -> None:
        await self._set_online(True)
        framer = LineFramer()
        try:
            await self._lines(port, framer)
        finally:
            self._discards.close()  # what is counted is reported in the next session

    async def _lines(self, port: serial.SerialBase, framer: LineFramer) -> None:
        # A burst: bytes coming less than BURST_GAP apart, however many reads
        # they take (a read returns as soon as anything came).  One burst is
        # one presentation at most, and what it threw away is reported once
        # it is over (a read came back empty), or every report interval.
        last = began = float("-inf")
        presented = False
        while True:
            # With nothing counted there is nothing to report: an idle scanner
            # sleeps until it sends something, instead of waking every second.
            data = await self._read(port, 4096, until_data=not self._discards.pending)
            now = self._clock.monotonic()  # the clock MIN_LINE_INTERVAL is on
            if data:
                if now - last > BURST_GAP:
                    presented, began = False, now
                last = now
            for item in framer.feed(data):
                if isinstance(item, Discarded):
                    self._discards.count(item.reason, size=item.size)
                elif presented:
                    self._discards.count("extra_line", size=len(item.text))
                elif self._clock.monotonic() - self._last_line < MIN_LINE_INTERVAL:
                    self._discards.count("too_fast", size=len(item.text))
                else:
                    presented = True
                    self._last_line = self._clock.monotonic()
                    await self._on_line(item.text)
            if not data or now - began >= REPORT_INTERVAL:
                await self._discards.report()
