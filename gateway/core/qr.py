"""QR credentials: issuer-signed passes and rotating member-app codes.

Both are one compact binary layout, signed with Ed25519 and written as
``DG1:`` followed by base45 text, so a QR code holds them in alphanumeric
mode (5.5 bits a character).  docs/credentials.md is the reference for
platform developers; this module is the gateway's reader and the issuing
side for sites, the simulator and the tests.

Parsing (:func:`parse`) checks only the layout; signatures are checked by
:func:`verify_pass` (against the platform's pinned key set) and
:func:`verify_app_code` (against the member app's key from the cache), so
each failure has its own reason.  Nothing here reads a clock.
"""

from __future__ import annotations

import functools
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core import base45
from gateway.core.ed25519 import check_public_key
from gateway.core.jws import KeySet
from gateway.errors import DoorgwError

#: Every doorgw code starts with this; the digit is the layout version.
PREFIX = "DG1:"
#: Longer scanner lines are refused unread (the largest pass is far smaller).
MAX_CODE_CHARS = 1024
#: The first byte of the signed bytes: the token type.  Not ASCII, so no
#: signed pass or app code is ever also a JWS signing input, which is ASCII.
PASS_TYPE = 0xD1
APP_CODE_TYPE = 0xD2
SIGNATURE_BYTES = 64
NONCE_BYTES = 8
#: A holder name longer than this (UTF-8 bytes) is refused when issuing.
MAX_HOLDER_BYTES = 64
_U32_MAX = 0xFFFF_FFFF


class CodeError(DoorgwError, ValueError):
    """A scanned code that is not a usable doorgw code; ``reason`` says why.

    ``not_doorgw``: no ``DG1:`` prefix (another barcode); ``malformed``: the
    prefix, but the rest does not parse; ``too_long``: refused unread;
    ``unknown_key`` / ``bad_signature``: the signature check failed.
    """

    REASONS = ("not_doorgw", "malformed", "too_long", "unknown_key", "bad_signature")

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS
        self.reason = reason
        super().__init__(message)


class PassKind(IntEnum):
    """What the platform issued the pass as."""

    DAY_PASS = 1
    VISITOR = 2
    BOOKING = 3

    @property
    def label(self) -> str:
        """The kind as a lower-case name (``day_pass``)."""
        return self.name.lower()


class Target(IntEnum):
    """What a pass's target names."""

    DOOR = 1
    DOOR_GROUP = 2
    RESOURCE = 3


@dataclass(frozen=True, slots=True)
class SignedPass:
    """What a signed pass grants: where, when, how often and to whom.

    ``max_uses`` 0 means "any number of times" within the window; ``holder``
    is a display name ("" when none).  Instants are Unix seconds; the pass
    is valid for ``not_before <= t < not_after``.
    """

    kid: str
    site: str
    pass_id: str
    kind: PassKind
    not_before: int
    not_after: int
    max_uses: int = 0
    doors: frozenset[str] = frozenset()
    door_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    holder: str = ""

    def covers(self, door_id: str, groups: Iterable[str], resources: Iterable[str]) -> bool:
        """True when this pass names the door, one of its groups or one of its resources."""
        return (
            door_id in self.doors
            or not self.door_groups.isdisjoint(groups)
            or not self.resources.isdisjoint(resources)
        )


@dataclass(frozen=True, slots=True)
class AppCode:
    """One code the member app shows: its credential, when it was made, and a nonce."""

    credential_id: str
    issued_at: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class ScannedCode:
    """A parsed code, its signature not yet checked."""

    body: SignedPass | AppCode
    signed: bytes = field(repr=False)
    signature: bytes = field(repr=False)


# Encoding.


def _str8(text: str, what: str, limit: int = 255) -> bytes:
    raw = text.encode()
    if not raw:
        raise ValueError(f"{what} is empty")
    if len(raw) > limit:
        raise ValueError(f"{what} is longer than {limit} bytes")
    return bytes([len(raw)]) + raw


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"{what} {value} is not an instant this format can hold (1970-2106)")
    return struct.pack(">I", value)


def pass_bytes(p: SignedPass) -> bytes:
    """The bytes a pass's signature covers (docs/credentials.md, "Signed passes")."""
    if p.not_after <= p.not_before:
        raise ValueError("a pass must end after it starts")
    if not 0 <= p.max_uses <= 0xFFFF:
        raise ValueError("max_uses is 0 (unlimited) to 65535")
    targets = (
        [(Target.DOOR, t) for t in sorted(p.doors)]
        + [(Target.DOOR_GROUP, t) for t in sorted(p.door_groups)]
        + [(Target.RESOURCE, t) for t in sorted(p.resources)]
    )
    if not targets:
        raise ValueError("a pass needs at least one door, door group or resource")
    if len(targets) > 255:
        raise ValueError("a pass names at most 255 doors, groups and resources")
    holder = p.holder.encode()
    if len(holder) > MAX_HOLDER_BYTES:
        raise ValueError(f"the holder name is longer than {MAX_HOLDER_BYTES} bytes")
    out = bytearray([PASS_TYPE])
    out += _str8(p.kid, "key id")
    out += _str8(p.site, "site id")
    out += _str8(p.pass_id, "pass id")
    out += struct.pack(">B", int(p.kind))
    out += _u32(p.not_before, "not_before")
    out += _u32(p.not_after, "not_after")
    out += struct.pack(">HB", p.max_uses, len(targets))
    for tag, name in targets:
        out.append(int(tag))
        out += _str8(name, "a door, group or resource id")
    out.append(len(holder))
    out += holder
    return bytes(out)


def app_code_bytes(code: AppCode) -> bytes:
    """The bytes an app code's signature covers (docs/credentials.md, "App codes")."""
    if len(code.nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce is {NONCE_BYTES} bytes")
    return (
        bytes([APP_CODE_TYPE])
        + _str8(code.credential_id, "credential id")
        + _u32(code.issued_at, "issued_at")
        + code.nonce
    )


def to_text(signed: bytes, signature: bytes) -> str:
    """The QR text of signed bytes and their signature."""
    return PREFIX + base45.encode(signed + signature)


class PassIssuer:
    """Signs passes with one of the platform's keys (``kid`` names it in the key set)."""

    def __init__(self, key: Ed25519PrivateKey, kid: str) -> None:
        self.key = key
        self.kid = kid

    def issue(
        self,
        *,
        site: str,
        pass_id: str,
        not_before: int,
        not_after: int,
        kind: PassKind = PassKind.DAY_PASS,
        doors: Iterable[str] = (),
        door_groups: Iterable[str] = (),
        resources: Iterable[str] = (),
        max_uses: int = 0,
        holder: str = "",
    ) -> str:
        """A signed pass as QR text; ValueError says what is wrong with the arguments."""
        body = SignedPass(
            kid=self.kid,
            site=site,
            pass_id=pass_id,
            kind=kind,
            not_before=not_before,
            not_after=not_after,
            max_uses=max_uses,
            doors=frozenset(doors),
            door_groups=frozenset(door_groups),
            resources=frozenset(resources),
            holder=holder,
        )
        signed = pass_bytes(body)
        return to_text(signed, self.key.sign(signed))


def app_code(
    key: Ed25519PrivateKey, credential_id: str, issued_at: int, nonce: bytes | None = None
) -> str:
    """What the member app shows: a code for ``credential_id`` signed with its own key."""
    body = AppCode(
        credential_id, issued_at, secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
    )
    signed = app_code_bytes(body)
    return to_text(signed, key.sign(signed))


# Parsing.


_PASS_KINDS = {int(k): k for k in PassKind}
_TARGETS = frozenset(int(t) for t in Target)


def _text(data: bytes, pos: int, what: str, *, empty: bool = False) -> tuple[str, int]:
    """The length-prefixed UTF-8 string at ``pos``, and the position after it."""
    if pos >= len(data):
        raise CodeError("malformed", "the code ends too early")
    end = pos + 1 + data[pos]
    if end > len(data):
        raise CodeError("malformed", "the code ends too early")
    if end == pos + 1 and not empty:
        raise CodeError("malformed", f"the {what} is empty")
    try:
        return data[pos + 1 : end].decode(), end
    except UnicodeDecodeError:
        raise CodeError("malformed", f"the {what} is not UTF-8") from None


def parse(text: str) -> ScannedCode:
    """Parse the text a scanner read; CodeError says why it is not a doorgw code."""
    if len(text) > MAX_CODE_CHARS:
        raise CodeError("too_long", f"{len(text)} characters is longer than any doorgw code")
    text = text.strip()
    if not text.startswith(PREFIX):
        raise CodeError("not_doorgw", "not a doorgw code (no DG1: prefix)")
    try:
        data = base45.decode(text[len(PREFIX) :])
    except base45.Base45Error as exc:
        raise CodeError("malformed", f"not base45: {exc}") from None
    if len(data) <= SIGNATURE_BYTES:
        raise CodeError("malformed", "too short to carry a signature")
    signed, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    kind = signed[0]
    body: SignedPass | AppCode
    # This runs on every scan: plain offsets rather than a reader object.
    if kind == PASS_TYPE:
        body, pos = _parse_pass(signed)
    elif kind == APP_CODE_TYPE:
        credential_id, pos = _text(signed, 1, "credential id")
        end = pos + 4 + NONCE_BYTES
        if end > len(signed):
            raise CodeError("malformed", "the code ends too early")
        issued_at = int.from_bytes(signed[pos : pos + 4], "big")
        body, pos = AppCode(credential_id, issued_at, signed[pos + 4 : end]), end
    else:
        raise CodeError("malformed", f"unknown token type 0x{kind:02X}")
    if pos != len(signed):
        raise CodeError("malformed", "unexpected bytes after the token")
    return ScannedCode(body, signed, signature)


def _parse_pass(data: bytes) -> tuple[SignedPass, int]:
    kid, pos = _text(data, 1, "key id")
    site, pos = _text(data, pos, "site id")
    pass_id, pos = _text(data, pos, "pass id")
    if pos + 12 > len(data):
        raise CodeError("malformed", "the code ends too early")
    kind = _PASS_KINDS.get(data[pos])
    if kind is None:
        raise CodeError("malformed", "unknown pass kind")
    not_before, not_after, max_uses, count = struct.unpack_from(">IIHB", data, pos + 1)
    pos += 12
    places: tuple[set[str], set[str], set[str]] = (set(), set(), set())
    for _ in range(count):
        if pos >= len(data) or data[pos] not in _TARGETS:
            raise CodeError("malformed", "unknown target type")
        name, end = _text(data, pos + 1, "target id")
        places[data[pos] - 1].add(name)  # Target values are 1, 2, 3: the tuple's order
        pos = end
    if not count:
        raise CodeError("malformed", "the pass names no door, door group or resource")
    holder, pos = _text(data, pos, "holder", empty=True)
    if not_after <= not_before:
        raise CodeError("malformed", "the pass ends before it starts")
    body = SignedPass(
        kid=kid,
        site=site,
        pass_id=pass_id,
        kind=kind,
        not_before=not_before,
        not_after=not_after,
        max_uses=max_uses,
        doors=frozenset(places[0]),
        door_groups=frozenset(places[1]),
        resources=frozenset(places[2]),
        holder=holder,
    )
    return body, pos


# Verification.


def verify_pass(code: ScannedCode, keys: KeySet) -> SignedPass:
    """The pass, once its signature verifies against the pinned key set."""
    body = code.body
    assert isinstance(body, SignedPass)
    key = keys.get(body.kid)
    if key is None:
        raise CodeError("unknown_key", f"signed with unknown key {body.kid!r}")
    try:
        key.verify(code.signature, code.signed)
    except InvalidSignature:
        raise CodeError("bad_signature", f"signature by key {body.kid!r} does not verify") from None
    return body


@functools.lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    # Loading a key costs about as much as a third of a verify: members' app
    # keys are loaded once, not on every scan.  A small-order key would let a
    # code with no private key behind it verify: ValueError, never cached.
    check_public_key(raw)
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_app_code(code: ScannedCode, public_key: bytes) -> AppCode:
    """The app code, once its signature verifies against the member app's raw public key."""
    body = code.body
    assert isinstance(body, AppCode)
    try:
        _public_key(public_key).verify(code.signature, code.signed)
    except (InvalidSignature, ValueError):
        raise CodeError(
            "bad_signature", f"not signed by the app key of credential {body.credential_id!r}"
        ) from None
    return body
