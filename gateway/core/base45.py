"""Base45 (RFC 9285): bytes as text in the QR code alphanumeric alphabet.

QR codes store the 45 characters ``0-9 A-Z space $ % * + - . / :`` at 5.5
bits each, against 8 bits for arbitrary bytes, so base45 text (3 characters
per 2 bytes) makes a smaller symbol than the raw bytes or base64 would.
This is what the EU Digital COVID Certificate used for the same reason.
"""

from __future__ import annotations

import struct

from gateway.errors import DoorgwError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_ALPHABET_BYTES = ALPHABET.encode("ascii")
_TO_VALUE = bytes.maketrans(_ALPHABET_BYTES, bytes(range(len(ALPHABET))))


class Base45Error(DoorgwError, ValueError):
    """Text that is not valid base45."""


def encode(data: bytes) -> str:
    """``data`` as base45 text."""
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += (ALPHABET[c], ALPHABET[d], ALPHABET[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (ALPHABET[c], ALPHABET[d])
    return "".join(out)


def decode(text: str) -> bytes:
    """The bytes of base45 ``text``; Base45Error says what is wrong."""
    if len(text) % 3 == 1:
        raise Base45Error(f"base45 text of {len(text)} characters cannot be whole bytes")
    # This runs on every scanned code, so it works on whole strings (translate,
    # one pack) rather than character by character.
    raw = text.encode("ascii", "replace")
    stray = raw.translate(None, _ALPHABET_BYTES)
    if stray:
        bad = next(c for c in text if c not in _VALUE)
        raise Base45Error(f"{bad!r} is not a base45 character")
    values = raw.translate(_TO_VALUE)
    whole = len(values) - len(values) % 3
    it = iter(values[:whole])
    groups = [c + d * 45 + e * 2025 for c, d, e in zip(it, it, it, strict=True)]
    try:
        out = struct.pack(f">{len(groups)}H", *groups)
    except struct.error:  # a group above 0xFFFF: cheaper to catch than to look for
        i = 3 * next(i for i, n in enumerate(groups) if n > 0xFFFF)
        raise Base45Error(f"base45 group {text[i : i + 3]!r} is out of range") from None
    if whole < len(values):
        n = values[whole] + values[whole + 1] * 45
        if n > 0xFF:
            raise Base45Error(f"base45 group {text[whole:]!r} is out of range")
        out += bytes([n])
    return out
