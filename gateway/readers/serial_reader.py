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
import logging
import random
from collections.abc import Awaitable, Callable

import serial

from gateway.clock import Clock
from gateway.events import Record
from gateway.mqtt import backoff
from gateway.readers.lines import Discarded, Line, LineFramer

log = logging.getLogger(__name__)

OnLine = Callable[[str], Awaitable[object]]


class SerialLineReader:
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
        self.reader_id = reader_id
        self.url = url
        self.baudrate = baudrate
        self._on_line = on_line
        self._record = record
        self._clock = clock
        self._retry = (retry_min, retry_max)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        #: True while the port is open and reading.
        self.online = False

    async def run(self) -> None:
        """Open, read, and reopen after failures, until cancelled."""
        attempt = 0
        while True:
            try:
                port = await asyncio.to_thread(
                    serial.serial_for_url, self.url, baudrate=self.baudrate, timeout=0.2
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                log.debug("reader %s: cannot open %s: %s", self.reader_id, self.url, exc)
            else:
                attempt = 0
                await self._set_online(True)
                try:
                    await self._read(port)
                except (serial.SerialException, OSError) as exc:
                    log.warning("reader %s: %s", self.reader_id, exc)
                finally:
                    await asyncio.to_thread(port.close)
                await self._set_online(False)
            await self._clock.sleep(backoff(attempt, *self._retry, self._rng))
            attempt += 1

    async def _set_online(self, online: bool) -> None:
        if online != self.online:
            self.online = online
            await self._record(
                "reader_online" if online else "reader_offline",
                {"reader": self.reader_id, "port": self.url},
            )

    async def _read(self, port: serial.SerialBase) -> None:
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
