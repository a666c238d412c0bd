"""The PN532 frame protocol over HSU (UART), sans-I/O.

Frames (PN532 user manual, section 6.2):

* information frame: ``00 00 FF LEN LCS TFI PD0..PDn DCS 00`` where
  ``LEN`` counts TFI and data, ``LEN + LCS == 0`` and
  ``TFI + PD0 + ... + PDn + DCS == 0`` (mod 256); TFI is ``D4`` from the host
  and ``D5`` from the PN532;
* extended information frame, for more than 254 bytes:
  ``00 00 FF FF FF LENM LENL LCS TFI ... DCS 00``;
* ACK ``00 00 FF 00 FF 00`` and NACK ``00 00 FF FF 00 00``;
* error frame ``00 00 FF 01 FF 7F 81 00`` (a syntax error in the command).

:class:`FrameParser` takes bytes as they come from the UART, in any pieces,
skips garbage up to the next start code, and returns typed frames or
:class:`BadFrame` records; it never raises on input.  The command helpers
build the host frames the reader task sends: wake-up, SAMConfiguration,
InListPassiveTarget.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST_TFI = 0xD4
PN532_TFI = 0xD5
START = b"\x00\xff"
ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
#: HSU wake-up: a long preamble of 0x55 then zeros, before the first command.
WAKE_UP = b"\x55\x55" + b"\x00" * 14

GET_FIRMWARE_VERSION = 0x02
SAM_CONFIGURATION = 0x14
IN_LIST_PASSIVE_TARGET = 0x4A


@dataclass(frozen=True, slots=True)
class Ack:
    """The PN532 accepted the last command."""


@dataclass(frozen=True, slots=True)
class Nack:
    """The other side asks for the last frame again."""


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """The PN532 found a syntax error in the last command."""


@dataclass(frozen=True, slots=True)
class Response:
    """A PN532 answer: ``command`` is the response code (the command + 1)."""

    command: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Bytes that were not a valid frame, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class TargetA:
    """An ISO 14443 type A card found by InListPassiveTarget."""

    uid: bytes
    sens_res: bytes
    sel_res: int


Frame = Ack | Nack | ErrorFrame | Response | BadFrame


def encode(command: int, params: bytes = b"", *, tfi: int = HOST_TFI) -> bytes:
    """The information frame for ``command`` with ``params`` (a host frame by default)."""
    body = bytes([tfi, command]) + params
    if len(body) > 255:
        length = len(body).to_bytes(2, "big")
        head = b"\x00\x00\xff\xff\xff" + length + bytes([(-sum(length)) & 0xFF])
    else:
        head = b"\x00\x00\xff" + bytes([len(body), (-len(body)) & 0xFF])
    return head + body + bytes([(-sum(body)) & 0xFF, 0x00])


def sam_configuration() -> bytes:
    """SAMConfiguration: normal mode, timeout 1 s, use the IRQ line."""
    return encode(SAM_CONFIGURATION, bytes([0x01, 0x14, 0x01]))


def in_list_passive_target() -> bytes:
    """InListPassiveTarget: at most one target, 106 kbps type A."""
    return encode(IN_LIST_PASSIVE_TARGET, bytes([0x01, 0x00]))


def parse_targets(response: Response) -> list[TargetA]:
    """The cards in an InListPassiveTarget response (empty when none answered)."""
    if response.command != IN_LIST_PASSIVE_TARGET + 1:
        raise ValueError(f"response 0x{response.command:02X} is not InListPassiveTarget's")
    data = response.data
    if not data:
        raise ValueError("InListPassiveTarget response without a target count")
    count, pos, out = data[0], 1, []
    for _ in range(count):
        # Tg, SENS_RES (2), SEL_RES, NFCIDLength, NFCID1
        if pos + 5 > len(data):
            raise ValueError("InListPassiveTarget response is truncated")
        uid_len = data[pos + 4]
        uid = data[pos + 5 : pos + 5 + uid_len]
        if len(uid) != uid_len or uid_len not in (4, 7, 10):
            raise ValueError(f"InListPassiveTarget target has a bad UID length {uid_len}")
        out.append(TargetA(bytes(uid), bytes(data[pos + 1 : pos + 3]), data[pos + 3]))
        pos += 5 + uid_len
        if pos < len(data) and data[pos] in (0x3B, 0x3A):  # optional ATS follows
            pos += data[pos + 1] if pos + 1 < len(data) else 0
    return out


class FrameParser:
    """Turns UART bytes into frames; garbage and partial frames never raise.

    By default it reads what a PN532 sends (TFI ``D5``); with
    ``tfi=HOST_TFI`` it reads what a host sends, as the simulated PN532 does.
    """

    def __init__(self, tfi: int = PN532_TFI) -> None:
        self._buf = bytearray()
        self._tfi = tfi

    def feed(self, data: bytes) -> list[Frame]:
        """Take the next bytes; return every frame they complete."""
        self._buf.extend(data)
        out: list[Frame] = []
        while True:
            start = self._buf.find(START)
            if start < 0:
                # Keep a trailing 0x00: it may be the first half of a start code.
                del self._buf[: max(0, len(self._buf) - 1)]
                return out
            if start:
                del self._buf[:start]
            frame = self._take()
            if frame is None:
                return out
            out.append(frame)

    def _take(self) -> Frame | None:
        buf = self._buf  # begins with 00 FF
        if len(buf) < 4:
            return None
        if buf[2:4] == b"\x00\xff":  # ACK: 00 FF 00 FF (postamble optional on the wire)
            del buf[:4]
            self._drop_postamble()
            return Ack()
        if buf[2:4] == b"\xff\x00":
            if len(buf) >= 5 and buf[4] != 0xFF:  # NACK; not an extended frame's FF FF
                del buf[:4]
                self._drop_postamble()
                return Nack()
            if len(buf) < 5:
                return None
        if buf[2:4] == b"\xff\xff":
            return self._take_extended()
        length, lcs = buf[2], buf[3]
        if (length + lcs) & 0xFF:
            del buf[:2]  # not a frame after all: look for the next start code
            return BadFrame("length checksum")
        total = 4 + length + 1  # header, TFI+data, DCS
        if len(buf) < total:
            return None
        body = bytes(buf[4 : 4 + length])
        dcs = buf[4 + length]
        del buf[:total]
        self._drop_postamble()
        return self._body(body, dcs)

    def _take_extended(self) -> Frame | None:
        buf = self._buf
        if len(buf) < 7:
            return None
        length = int.from_bytes(buf[4:6], "big")
        if (buf[4] + buf[5] + buf[6]) & 0xFF:
            del buf[:2]
            return BadFrame("length checksum")
        total = 7 + length + 1
        if len(buf) < total:
            return None
        body = bytes(buf[7 : 7 + length])
        dcs = buf[7 + length]
        del buf[:total]
        self._drop_postamble()
        return self._body(body, dcs)

    def _drop_postamble(self) -> None:
        if self._buf[:1] == b"\x00" and self._buf[1:2] != b"\xff":
            del self._buf[:1]

    def _body(self, body: bytes, dcs: int) -> Frame:
        if (sum(body) + dcs) & 0xFF:
            return BadFrame("data checksum")
        if body == b"\x7f":
            return ErrorFrame()
        if len(body) < 2 or body[0] != self._tfi:
            return BadFrame(f"not a frame with TFI 0x{self._tfi:02X}")
        return Response(body[1], body[2:])
