"""Credential reads and their canonical values.

A reader reports what it saw (a card UID, a Wiegand number, a PIN, ...);
before the cache is asked, the value is normalised so that the same card is
the same string however it was typed or read.  The platform sends values in
the same canonical form (docs/model.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from gateway.core.model import CredentialKind
from gateway.errors import CredentialFormatError

#: Short names accepted on the command line, e.g. ``nfc:04A2B3C4``.
KIND_ALIASES: dict[str, CredentialKind] = {
    "nfc": CredentialKind.NFC_UID,
    "nfc_uid": CredentialKind.NFC_UID,
    "card": CredentialKind.NFC_UID,
    "wiegand": CredentialKind.WIEGAND,
    "pin": CredentialKind.PIN,
    "app": CredentialKind.APP_KEY,
    "app_key": CredentialKind.APP_KEY,
}

_HEX = re.compile(r"^[0-9A-F]+$")
_WIEGAND = re.compile(r"^(?:(?P<bits>\d{1,3})/(?=\d+:))?(?:(?P<fc>\d{1,10}):)?(?P<cn>\d{1,12})$")
_PIN = re.compile(r"^\d{4,12}$")


@dataclass(frozen=True, slots=True)
class CredentialRead:
    """One presentation of a credential at a reader, already normalised."""

    kind: CredentialKind
    value: str
    #: Also looked up when no credential has ``value``: a Wiegand card's number
    #: without its format, where the config allows that format's legacy mapping.
    legacy: str | None = None


def pin_digest(site_id: str, pin: str, key: bytes | None = None) -> str:
    """The stored form of a PIN, hex: HMAC-SHA256 with the site's PIN key over
    ``doorgw-pin:<site>:<pin>``, or (no key: the older, unkeyed form) SHA-256 of it.

    PINs are short: an unkeyed digest is reversed by trying every PIN, so it
    only keeps PINs out of logs and events.  Keyed, a copied cache file alone
    reveals nothing; the key lives in its own 0600 file, never in the cache.
    """
    message = f"doorgw-pin:{site_id}:{pin}".encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


#: PINs are this many digits at most and least, whatever the config narrows them to.
PIN_DIGITS = (4, 12)


def normalize(
    kind: CredentialKind, raw: str, *, site_id: str | None = None, pin_key: bytes | None = None
) -> str:
    """Return the canonical value of ``raw`` for ``kind``.

    * NFC UIDs: 4, 7 or 10 bytes of hex, separators ``: - space`` dropped, upper case.
    * Wiegand: ``BITS/FACILITY:CARD`` in decimal, leading zeros dropped
      (``26/12:34567``: the frame's length is part of the card); the legacy
      ``FACILITY:CARD`` or ``CARD``, without a format, is kept as given.
    * PIN: 4-12 digits, stored as :func:`pin_digest` (needs ``site_id``; keyed
      with ``pin_key`` when the site has one).
    * App keys: an Ed25519 public key, 32 bytes in unpadded base64url.

    Raises CredentialFormatError, naming the kind and what is wrong.
    """
    text = raw.strip()
    if kind is CredentialKind.NFC_UID:
        hexed = re.sub(r"[\s:\-]", "", text).upper()
        if not _HEX.match(hexed) or len(hexed) not in (8, 14, 20):
            raise CredentialFormatError(
                f"NFC UID {raw!r} is not 4, 7 or 10 bytes of hex (e.g. 04A2B3C4D5E6F7)"
            )
        return hexed
    if kind is CredentialKind.WIEGAND:
        m = _WIEGAND.match(text)
        if not m:
            raise CredentialFormatError(
                f"Wiegand number {raw!r} is not BITS/FACILITY:CARD in decimal (e.g. 26/12:34567)"
            )
        card = int(m["cn"])
        number = f"{int(m['fc'])}:{card}" if m["fc"] is not None else str(card)
        return f"{int(m['bits'])}/{number}" if m["bits"] is not None else number
    if kind is CredentialKind.PIN:
        if not _PIN.match(text):
            raise CredentialFormatError("a PIN is 4 to 12 digits")
        if site_id is None:
            raise CredentialFormatError("a PIN can only be looked up for a known site")
        return pin_digest(site_id, text, pin_key)
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise CredentialFormatError(
            f"app key {raw!r} is not a 32-byte Ed25519 public key in base64url"
        )
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def parse_read(
    text: str, *, site_id: str | None = None, pin_key: bytes | None = None
) -> CredentialRead:
    """Parse ``KIND:VALUE`` as staff type it: ``nfc:04A2B3C4``, ``wiegand:26/12:345``,
    ``pin:1234``."""
    kind_text, sep, value = text.partition(":")
    kind = KIND_ALIASES.get(kind_text.strip().lower())
    if not sep or kind is None:
        kinds = ", ".join(sorted(KIND_ALIASES))
        raise CredentialFormatError(
            f"credential {text!r} is not KIND:VALUE with KIND one of {kinds}"
        )
    return CredentialRead(kind, normalize(kind, value, site_id=site_id, pin_key=pin_key))


def wiegand_legacy(value: str, formats: frozenset[int]) -> str | None:
    """The format-less value a Wiegand read ``BITS/FACILITY:CARD`` may also match,
    when ``BITS`` is one of ``formats`` (the config's explicit legacy mapping)."""
    bits, sep, number = value.partition("/")
    return number if sep and bits.isdigit() and int(bits) in formats else None


def load_pin_key(text: str) -> bytes:
    """A site PIN key from its file's text: unpadded base64url of 32 bytes or more."""
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < 32 or not re.fullmatch(r"[A-Za-z0-9_-]+", raw):
        raise CredentialFormatError("a PIN key is 32 or more random bytes in unpadded base64url")
    return key
