"""A serial line reader (QR / barcode scanners): pyserial in a thread, lines on the loop.

The port is opened by URL with :func:`serial.serial_for_url`, so a real
device (``/dev/ttyACM0``), a pty from the simulator or ``loop://`` all work
unchanged.  Reading blocks in a worker thread with a short timeout; every
result hops onto the event loop here.  A port that disappears is reopened
with exponential backoff; ``reader_offline`` and ``reader_online`` events
say when.  Nothing a scanner sends can stop the task.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import serial

from gateway.clock import Clock
from gateway.events import Record
from gateway.hw.readers.scanner.framer import Discarded, Line, LineFramer
from gateway.hw.readers.serial_port import SerialPortTask

OnLine = Callable[[str], Awaitable[object]]


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
            read_timeout=0.2,
            retry_min=retry_min,
            retry_max=retry_max,
            rng=rng,
        )
        self._on_line = on_line

    async def _session(self, port: serial.SerialBase) -> None:
        await self._set_online(True)
        framer = LineFramer()
        while True:
            data = await asyncio.to_thread(port.read, 4096)
            for item in framer.feed(data):
                if isinstance(item, Line):
                    await self._on_line(item.text)
                elif isinstance(item, Discarded):
                    await self._record(
                        "reader_input_discarded",
                        {"reader": self.reader_id, "reason": item.reason, "bytes": item.size},
                    )
