"""Base45 (RFC 9285): bytes as text in the QR code alphanumeric alphabet.

QR codes store the 45 characters ``0-9 A-Z space $ % * + - . / :`` at 5.5
bits each, against 8 bits for arbitrary bytes, so base45 text (3 characters
per 2 bytes) makes a smaller symbol than the raw bytes or base64 would.
This is what the EU Digital COVID Certificate used for the same reason.
"""

from __future__ import annotations

from gateway.errors import DoorgwError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}


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
    try:
        values = [_VALUE[c] for c in text]
    except KeyError as exc:
        raise Base45Error(f"{exc.args[0]!r} is not a base45 character") from None
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i : i + 3]
        if len(chunk) == 3:
            n = chunk[0] + chunk[1] * 45 + chunk[2] * 45 * 45
            if n > 0xFFFF:
                raise Base45Error(f"base45 group {text[i : i + 3]!r} is out of range")
            out += n.to_bytes(2, "big")
        else:
            n = chunk[0] + chunk[1] * 45
            if n > 0xFF:
                raise Base45Error(f"base45 group {text[i : i + 2]!r} is out of range")
            out.append(n)
    return bytes(out)
