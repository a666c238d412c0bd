"""Line framing for serial QR / barcode scanners (sans-I/O).

Scanners send each code as text ended by CR, LF or CR LF.  :class:`LineFramer`
turns whatever bytes arrive, in whatever pieces, into complete lines, and
reports what it had to throw away instead of raising: a scanner that sends
garbage, an oversized burst or invalid UTF-8 must not stop the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Longest line kept (a signed pass token is a few hundred characters).
MAX_LINE = 4096

# Found by the regular expression engine, not a loop over each byte in
# Python: a scan is on the door's path, and such a loop cost about 20 us
# for one 130-character code where this costs about 4 (docs/benchmarks.md).
_LINE_END = re.compile(rb"[\r\n]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab


@dataclass(frozen=True, slots=True)
class Line:
    """One scanned code."""

    text: str


@dataclass(frozen=True, slots=True)
class Discarded:
    """Input thrown away, and why (``too_long``, ``not_utf8``, ``control_chars``)."""

    reason: str
    size: int


class LineFramer:
    """Feed bytes with :meth:`feed`; get complete lines and discards back."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skipping = 0  # bytes dropped from an oversized line, until its end

    def feed(self, data: bytes) -> list[Line | Discarded]:
        """Take the next bytes; return what they completed, in order."""
        out: list[Line | Discarded] = []
        start = 0
        for end in _LINE_END.finditer(data):
            self._take(data[start : end.start()])
            if self._skipping:
                out.append(Discarded("too_long", self._skipping))
                self._skipping = 0
            elif self._buffer:
                out.append(self._finish(bytes(self._buffer)))
            self._buffer.clear()
            start = end.end()
        self._take(data[start:])
        return out

    def _take(self, piece: bytes) -> None:
        # Part of the current line.  The buffer never holds more than
        # max_line: a longer line is dropped and only its length counted.
        if self._skipping:
            self._skipping += len(piece)
        elif len(self._buffer) + len(piece) > self.max_line:
            self._skipping = len(self._buffer) + len(piece)
            self._buffer.clear()
        else:
            self._buffer += piece

    @staticmethod
    def _finish(raw: bytes) -> Line | Discarded:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Discarded("not_utf8", len(raw))
        if _CONTROL.search(text):
            return Discarded("control_chars", len(raw))
        text = text.strip()
        return Line(text) if text else Discarded("empty", len(raw))
