"""A simulated PN532 on the far side of a pseudo-terminal, with fault injection.

It answers the host commands the gateway uses (GetFirmwareVersion,
SAMConfiguration, RFConfiguration, InListPassiveTarget) with ACK and
response frames built by the same codec, and can be told to hold a card,
go silent, or spray garbage before its answers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os

from gateway.hw.readers.pn532.codec import ACK, HOST_TFI, PN532_TFI, FrameParser, Response, encode

#: Host commands kept in order (:attr:`SimulatedPn532.commands`).
KEPT_COMMANDS = 64


class SimulatedPn532:
    """Serves one pty master; point a reader at :attr:`port`."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        #: The UID of the card on the reader, or None.
        self.card: bytes | None = None
        #: Fault injection: answer nothing, or send garbage before each answer.
        self.silent = False
        self.garbage = b""
        #: Real seconds the chip takes to answer (a slow chip, a long cable).
        self.delay = 0.0
        #: The first :data:`KEPT_COMMANDS` host commands, in order (the handshake),
        #: and how many of each it was sent: a count, not a log, as a reader polls
        #: ten times a second for as long as a simulation runs.
        self.commands: list[int] = []
        self.counts: collections.Counter[int] = collections.Counter()
        self._parser = FrameParser(tfi=HOST_TFI)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return
        for frame in self._parser.feed(data):
            if isinstance(frame, Response):
                self._answer(frame.command, frame.data)

    def _answer(self, command: int, params: bytes) -> None:
        if len(self.commands) < KEPT_COMMANDS:
            self.commands.append(command)
        self.counts[command] += 1
        if self.silent:
            return
        if command == 0x02:
            data = bytes([0x32, 0x01, 0x06, 0x07])
        elif command == 0x4A:
            uid = self.card
            data = b"\x00" if uid is None else bytes([1, 1, 0x00, 0x04, 0x08, len(uid)]) + uid
        elif command in (0x14, 0x32):
            data = b""
        else:
            return
        answer = self.garbage + ACK + encode(command + 1, data, tfi=PN532_TFI)
        if self.delay:
            self._loop.call_later(self.delay, self._write, answer)
        else:
            self._write(answer)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # closed meanwhile
            os.write(self.master, data)

    def close(self) -> None:
        """Stop serving and close the master side."""
        self._loop.remove_reader(self.master)
        os.close(self.master)
