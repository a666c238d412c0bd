"""Wiegand frames to credential reads: card formats with their parity checks, keypads.

Sans-I/O: :func:`decode_frame` takes the bits of one frame (as framed on the
inter-bit gap by the GPIO side) and returns a :class:`CardRead` or a
:class:`KeyPress`, or raises :class:`WiegandError` saying why the frame is
not a valid one.  Formats (bit 0 is the first bit on the wire):

* 26-bit H10301: even parity (bit 0) over bits 1-12, 8-bit facility,
  16-bit card, odd parity (bit 25) over bits 13-24;
* 34-bit (H10306): even parity over bits 1-16, 16-bit facility, 16-bit
  card, odd parity over bits 17-32;
* 35-bit HID Corporate 1000: bit 1 even parity over bits 2-3, 5-6, ...,
  32-33; 12-bit company id (bits 2-13), 20-bit card (bits 14-33); bit 34
  odd parity over bits 1-2, 4-5, ..., 31-32; bit 0 odd parity over the
  whole frame;
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
    """A card number read over Wiegand (its credential value is ``BITS/FACILITY:CARD``)."""

    bits: int
    facility: int
    card: int

    @property
    def value(self) -> str:
        """The canonical Wiegand credential value (docs/model.md): the format is part
        of it, so a 26-bit card never stands in for a 37-bit one with the same numbers."""
        return f"{self.bits}/{self.facility}:{self.card}"


@dataclass(frozen=True, slots=True)
class KeyPress:
    """One key of a Wiegand keypad: ``0``-``9``, ``*`` or ``#``."""

    key: str


@dataclass(frozen=True, slots=True)
class _Parity:
    bit: int  # where the parity bit sits
    odd: bool  # odd parity (the ones, this bit included, are odd) or even
    covers: tuple[int, ...]  # the bits it is computed over, itself excluded


@dataclass(frozen=True, slots=True)
class _Format:
    length: int
    facility: tuple[int, int]  # first bit, bit count
    card: tuple[int, int]
    #: In the order an encoder computes them: a later one may cover an earlier one.
    parity: tuple[_Parity, ...]


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


def _linear(length: int, facility: tuple[int, int], card: tuple[int, int], half: int) -> _Format:
    """A format with an even parity bit first over bits 1..half and an odd one last."""
    return _Format(
        length,
        facility,
        card,
        (
            _Parity(0, odd=False, covers=_span(1, half)),
            _Parity(length - 1, odd=True, covers=_span(length - 1 - half, length - 2)),
        ),
    )


FORMATS: dict[int, _Format] = {
    26: _linear(26, (1, 8), (9, 16), 12),
    34: _linear(34, (1, 16), (17, 16), 16),
    # HID Corporate 1000: 12-bit company id, 20-bit card; three parity bits, two
    # over interleaved two-of-every-three bit sets and one over the whole frame.
    35: _Format(
        35,
        (2, 12),
        (14, 20),
        (
            _Parity(1, odd=False, covers=tuple(b for b in range(2, 34) if (b - 2) % 3 != 2)),
            _Parity(34, odd=True, covers=tuple(b for b in range(1, 34) if (b - 1) % 3 != 2)),
            _Parity(0, odd=True, covers=_span(1, 34)),
        ),
    ),
    37: _linear(37, (1, 16), (17, 19), 18),
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
        raise WiegandError(f"{n}-bit frame: not a supported format (4, 8, 26, 34, 35 or 37 bits)")
    for check in fmt.parity:
        ones = bits[check.bit] + sum(bits[b] for b in check.covers)
        if ones % 2 != check.odd:
            kind = "odd" if check.odd else "even"
            raise WiegandError(f"{n}-bit frame: {kind} parity (bit {check.bit}) fails")
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
    for check in fmt.parity:
        bits[check.bit] = (sum(bits[b] for b in check.covers) + check.odd) % 2
    return bits


def _key(code: int) -> KeyPress:
    if code >= len(_KEYS):
        raise WiegandError(f"keypad code {code} is not a key")
    return KeyPress(_KEYS[code])
