"""A simulated Wiegand reader with a keypad, driving gpiozero mock pins.

It pulls DATA0 low for a 0 and DATA1 low for a 1, as a reader does, so the
gateway's own :class:`~gateway.hw.readers.wiegand.reader.WiegandReader` sees the
same edges it would see on a Raspberry Pi.  The bits of one frame are sent
back to back; between frames the caller lets the clock run past the reader's
inter-frame gap (``await clock.run_for(...)``), as a real reader's silence
would.
"""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory

from gateway.hw.readers.wiegand.codec import encode_card

#: Keypad keys as 4-bit codes.
_KEY_CODES = {k: i for i, k in enumerate("0123456789*#")}


class SimulatedWiegand:
    """A reader wired to ``data0`` / ``data1`` of a MockFactory."""

    def __init__(self, factory: MockFactory, data0: int, data1: int) -> None:
        self._pins = (factory.pin(data0), factory.pin(data1))
        for pin in self._pins:
            pin.drive_high()  # idle lines are high

    def send(self, bits: list[int]) -> None:
        """Send raw bits (a frame, or a broken one)."""
        for bit in bits:
            pin = self._pins[1 if bit else 0]
            pin.drive_low()  # a 50 us pulse, as far as the gateway can tell
            pin.drive_high()

    def card(self, facility: int, number: int, length: int = 26) -> None:
        """Present a card in one of the supported formats (26, 34, 35 or 37 bits)."""
        self.send(encode_card(length, facility, number))

    def key(self, key: str, *, burst: int = 4) -> None:
        """Press one key, sent as a 4-bit or an 8-bit burst (key and its complement)."""
        code = _KEY_CODES[key]
        if burst == 8:
            code |= (~code & 0xF) << 4
        self.send([(code >> (burst - 1 - i)) & 1 for i in range(burst)])
