"""Wiegand frames to credential reads: card formats with their parity checks, keypads.

Sans-I/O: :func:`decode_frame` takes the bits of one frame (as framed on the
inter-bit gap by the GPIO side) and returns a :class:`CardRead` or a
:class:`KeyPress`, or raises :class:`WiegandError` saying why the frame is
not a valid one.  Formats (bit 0 is the first bit on the wire):

* 26-bit H10301: even parity (bit 0) over bits 1-12, 8-bit facility,
  16-bit card, odd parity (bit 25) over bits 13-24;
* 34-bit (H10306): even parity over bits 1-16, 16-bit facility, 16-bit
  card, odd parity over bits 17-32;
* 37-bit H10304: even parity over bits 1-18, 16-bit facility, 19-bit card,
  odd parity over bits 18-35 (bit 18 counts in both halves);
* keypads: 4-bit bursts (one key) and 8-bit bursts (a key and its
  complement), keys 0-9, ``*`` (10) and ``#`` (11).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import DoorgwError

_KEYS = "0123456789*#"


class WiegandError(DoorgwError, ValueError):
    """A frame that is no known format, or fails its parity check."""


@dataclass(frozen=True, slots=True)
class CardRead:
    """A card number read over Wiegand (its credential value is ``FACILITY:CARD``)."""

    bits: int
    facility: int
    card: int

    @property
    def value(self) -> str:
        """The canonical Wiegand credential value (docs/model.md)."""
        return f"{self.facility}:{self.card}"


@dataclass(frozen=True, slots=True)
class KeyPress:
    """One key of a Wiegand keypad: ``0``-``9``, ``*`` or ``#``."""

    key: str


@dataclass(frozen=True, slots=True)
class _Format:
    length: int
    facility: tuple[int, int]  # first bit, bit count
    card: tuple[int, int]
    even: tuple[int, int]  # bits covered by the even parity bit 0 (inclusive range)
    odd: tuple[int, int]  # bits covered by the odd parity bit (the last one)


FORMATS: dict[int, _Format] = {
    26: _Format(26, (1, 8), (9, 16), (1, 12), (13, 24)),
    34: _Format(34, (1, 16), (17, 16), (1, 16), (17, 32)),
    37: _Format(37, (1, 16), (17, 19), (1, 18), (18, 35)),
}


def _field(bits: Sequence[int], start: int, count: int) -> int:
    value = 0
    for bit in bits[start : start + count]:
        value = (value << 1) | bit
    return value


def decode_frame(bits: Sequence[int]) -> CardRead | KeyPress:
    """Decode one frame; raise WiegandError naming the problem."""
    if any(b not in (0, 1) for b in bits):
        raise WiegandError("a Wiegand frame is made of 0 and 1 bits only")
    n = len(bits)
    if n == 4:
        return _key(_field(bits, 0, 4))
    if n == 8:
        high, low = _field(bits, 0, 4), _field(bits, 4, 4)
        if high != (~low & 0xF):
            raise WiegandError("8-bit keypad burst: the high nibble is not the complement")
        return _key(low)
    fmt = FORMATS.get(n)
    if fmt is None:
        raise WiegandError(f"{n}-bit frame: not a supported format (4, 8, 26, 34 or 37 bits)")
    even_ones = bits[0] + sum(bits[fmt.even[0] : fmt.even[1] + 1])
    if even_ones % 2:
        raise WiegandError(f"{n}-bit frame: even parity fails")
    odd_ones = bits[n - 1] + sum(bits[fmt.odd[0] : fmt.odd[1] + 1])
    if odd_ones % 2 == 0:
        raise WiegandError(f"{n}-bit frame: odd parity fails")
    return CardRead(n, _field(bits, *fmt.facility), _field(bits, *fmt.card))


def encode_card(length: int, facility: int, card: int) -> list[int]:
    """The frame a reader sends for a card (for the simulator and tests)."""
    fmt = FORMATS.get(length)
    if fmt is None:
        raise WiegandError(f"no {length}-bit format")
    if not 0 <= facility < 1 << fmt.facility[1] or not 0 <= card < 1 << fmt.card[1]:
        raise WiegandError(f"facility {facility} or card {card} does not fit {length} bits")
    bits = [0] * length
    for start, count, value in ((*fmt.facility, facility), (*fmt.card, card)):
        for i in range(count):
            bits[start + i] = (value >> (count - 1 - i)) & 1
    bits[0] = sum(bits[fmt.even[0] : fmt.even[1] + 1]) % 2
    bits[-1] = 1 - sum(bits[fmt.odd[0] : fmt.odd[1] + 1]) % 2
    return bits


def _key(code: int) -> KeyPress:
    if code >= len(_KEYS):
        raise WiegandError(f"keypad code {code} is not a key")
    return KeyPress(_KEYS[code])
