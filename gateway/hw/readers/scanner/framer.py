"""Line framing for serial QR / barcode scanners (sans-I/O).

Scanners send each code as text ended by CR, LF or CR LF.  :class:`LineFramer`
turns whatever bytes arrive, in whatever pieces, into complete lines, and
reports what it had to throw away instead of raising: a scanner that sends
garbage, an oversized burst or invalid UTF-8 must not stop the reader.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Longest line kept (a signed pass token is a few hundred characters).
MAX_LINE = 4096


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
        for byte in data:
            if byte in (0x0A, 0x0D):
                if self._skipping:
                    out.append(Discarded("too_long", self._skipping))
                    self._skipping = 0
                elif self._buffer:
                    out.append(self._finish(bytes(self._buffer)))
                self._buffer.clear()
                continue
            if self._skipping:
                self._skipping += 1
                continue
            self._buffer.append(byte)
            if len(self._buffer) > self.max_line:
                self._skipping = len(self._buffer)
                self._buffer.clear()
        return out

    @staticmethod
    def _finish(raw: bytes) -> Line | Discarded:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Discarded("not_utf8", len(raw))
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text if c != "\t"):
            return Discarded("control_chars", len(raw))
        text = text.strip()
        return Line(text) if text else Discarded("empty", len(raw))
