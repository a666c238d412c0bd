"""A PN532 NFC reader over UART (HSU): wake it, configure it, poll for cards.

The exchange for every command is: send the frame, expect an ACK, then the
response (command + 1).  Anything else (a NACK, an error frame, garbage, a
timeout) counts as a failed exchange; after ``max_failures`` in a row the
reader is reported offline and the port is reopened and the PN532
re-initialised, with backoff.  A card that stays on the reader is reported
once, and again only after it has been away for ``quiet`` seconds.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import serial

from gateway.clock import Clock
from gateway.events import Record
from gateway.hw.readers.pn532.codec import (
    SAM_CONFIGURATION,
    WAKE_UP,
    Ack,
    FrameParser,
    Response,
    encode,
    in_list_passive_target,
    parse_targets,
    sam_configuration,
)
from gateway.hw.readers.serial_port import SerialPortTask, SessionError

OnUid = Callable[[bytes], Awaitable[object]]
RF_CONFIGURATION = 0x32


class ExchangeError(SessionError):
    """One command got no proper ACK and response."""


class Pn532Reader(SerialPortTask):
    """Polls one PN532 for ISO 14443A cards until cancelled."""

    def __init__(
        self,
        reader_id: str,
        url: str,
        *,
        on_uid: OnUid,
        record: Record,
        clock: Clock,
        baudrate: int = 115200,
        poll_interval: float = 0.1,
        timeout: float = 0.5,
        max_failures: int = 3,
        quiet: float = 2.0,
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
            read_timeout=0.02,
            retry_min=retry_min,
            retry_max=retry_max,
            rng=rng,
        )
        self._on_uid = on_uid
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_failures = max_failures
        self.quiet = quiet
        self._last_uid: bytes | None = None
        self._last_seen = 0.0

    async def _session(self, port: serial.SerialBase) -> None:
        parser = FrameParser()
        await self._write(port, WAKE_UP)
        await self._exchange(port, parser, sam_configuration(), SAM_CONFIGURATION)
        # Give up on a missing card after two tries, so polling returns promptly.
        await self._exchange(
            port, parser, encode(RF_CONFIGURATION, bytes([5, 0xFF, 1, 2])), RF_CONFIGURATION
        )
        await self._set_online(True)
        failures = 0
        while True:
            try:
                response = await self._exchange(port, parser, in_list_passive_target(), 0x4A)
                targets = parse_targets(response)
            except (ExchangeError, ValueError) as exc:
                failures += 1
                await self._record(
                    "reader_error", {"reader": self.reader_id, "detail": str(exc)[:200]}
                )
                if failures >= self.max_failures:
                    raise ExchangeError(f"{failures} failed exchanges in a row") from None
                continue
            failures = 0
            now = self._clock.monotonic()
            uid = targets[0].uid if targets else None
            if uid is not None:
                if uid != self._last_uid or now - self._last_seen > self.quiet:
                    await self._on_uid(uid)
                self._last_uid, self._last_seen = uid, now
            await self._clock.sleep(self.poll_interval)

    async def _exchange(
        self, port: serial.SerialBase, parser: FrameParser, frame: bytes, command: int
    ) -> Response:
        await self._write(port, frame)
        acked = False
        deadline = self._link_time() + self.timeout
        while self._link_time() < deadline:
            data = await self._read(port, 256)
            for item in parser.feed(data):
                if isinstance(item, Ack):
                    acked = True
                elif isinstance(item, Response) and acked and item.command == command + 1:
                    return item
                else:
                    raise ExchangeError(f"unexpected {item!r} after command 0x{command:02X}")
        raise ExchangeError(f"no {'response' if acked else 'ACK'} to command 0x{command:02X}")
