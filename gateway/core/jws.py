"""Compact JWS (RFC 7515) with EdDSA over Ed25519 (RFC 8037), and pinned key sets.

Everything the cloud sends is a compact JWS.  :class:`KeySet` holds the
pinned public keys by ``kid`` (several at once, so the platform can rotate
keys) and :meth:`KeySet.verify` either returns the verified header and
payload or raises :class:`SignatureError` whose ``reason`` says why.  There
is no "verify and return a bool": a check that fails cannot be ignored by
accident.

:class:`Signer` is the platform's side, used by the simulator, the tests
and platforms that want a reference implementation.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core.ed25519 import check_public_key
from gateway.errors import DoorgwError

_B64URL = re.compile(rb"^[A-Za-z0-9_-]*$")

#: Tokens larger than this are refused before any parsing.
MAX_TOKEN_BYTES = 4 * 1024 * 1024


class SignatureError(DoorgwError, ValueError):
    """A message failed verification; ``reason`` is one of ``REASONS``."""

    REASONS = ("malformed", "unsigned", "bad_algorithm", "unknown_key", "bad_signature")

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS
        self.reason = reason
        super().__init__(message)


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE uses it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode unpadded, canonical base64url strictly; raise ValueError on anything else.

    Canonical: the unused low bits of the last character are zero, so one
    value has one spelling (a message cannot be re-spelled and still pass).
    """
    raw = text.encode("ascii") if isinstance(text, str) else text
    if not _B64URL.match(raw) or len(raw) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise ValueError("not canonical base64url")
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, refusing a name given twice."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def public_jwk(key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The JWK (RFC 8037 OKP) of an Ed25519 public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64url(raw), "alg": "EdDSA"}


#: The longest protected header accepted, in base64url characters.
MAX_HEADER_B64 = 1024


class KeySet:
    """The pinned signing keys of the platform, by ``kid``."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        if not keys:
            raise ValueError("a key set needs at least one key")
        self._keys = dict(keys)

    @classmethod
    def from_jwks(cls, data: Mapping[str, Any]) -> KeySet:
        """Load ``{"keys": [JWK, ...]}``; only OKP/Ed25519 keys are accepted."""
        keys: dict[str, Ed25519PublicKey] = {}
        entries = data.get("keys") if isinstance(data, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError("a JWKS is an object with a non-empty 'keys' list")
        for i, jwk in enumerate(entries):
            if not isinstance(jwk, Mapping):
                raise ValueError(f"keys[{i}] is not an object")
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise ValueError(f"keys[{i}]: only OKP keys on Ed25519 are accepted")
            kid = jwk.get("kid")
            if not isinstance(kid, str) or not kid:
                raise ValueError(f"keys[{i}]: 'kid' is missing")
            if kid in keys:
                raise ValueError(f"keys[{i}]: duplicate kid {kid!r}")
            try:
                raw = b64url_decode(str(jwk.get("x", "")))
                keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
            except ValueError:
                raise ValueError(f"keys[{i}]: 'x' is not a 32-byte Ed25519 key") from None
            try:
                check_public_key(raw)
            except ValueError as exc:
                raise ValueError(f"keys[{i}]: {exc}") from None
        return cls(keys)

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The key set as a JWKS document."""
        return {"keys": [public_jwk(k, kid) for kid, k in sorted(self._keys.items())]}

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The pinned key named ``kid``, if there is one."""
        return self._keys.get(kid)

    @property
    def kids(self) -> list[str]:
        """The key ids in the set."""
        return sorted(self._keys)

    def verify(self, token: bytes | str) -> tuple[dict[str, Any], bytes]:
        """Verify a compact JWS; return (protected header, payload bytes)."""
        raw = token.encode("ascii", "replace") if isinstance(token, str) else token
        if len(raw) > MAX_TOKEN_BYTES:
            raise SignatureError("malformed", f"message of {len(raw)} bytes is too large")
        parts = raw.strip().split(b".")
        if len(parts) != 3:
            raise SignatureError(
                "unsigned" if raw[:1] in (b"{", b"[") else "malformed",
                "not a compact JWS (three base64url parts)",
            )
        head_b64, payload_b64, sig_b64 = parts
        # The header is parsed before the signature can be checked: small, flat
        # and unambiguous, or refused (a deeply nested one used to raise
        # RecursionError; duplicate keys could read differently elsewhere).
        if len(head_b64) > MAX_HEADER_B64:
            raise SignatureError("malformed", f"JWS header of {len(head_b64)} characters")
        try:
            header = json.loads(b64url_decode(head_b64), object_pairs_hook=_unique_keys)
            payload = b64url_decode(payload_b64)
            signature = b64url_decode(sig_b64)
        except (ValueError, RecursionError):
            raise SignatureError("malformed", "JWS parts are not base64url / JSON") from None
        if not isinstance(header, dict) or any(isinstance(v, dict | list) for v in header.values()):
            raise SignatureError("malformed", "JWS header is not a flat JSON object")
        if len(signature) != 64:
            raise SignatureError("malformed", "an EdDSA signature is 64 bytes")
        alg = header.get("alg")
        if alg == "none" or not signature:
            raise SignatureError("unsigned", "message is not signed")
        if alg != "EdDSA":
            raise SignatureError("bad_algorithm", f"algorithm {alg!r} is not accepted (EdDSA only)")
        if "crit" in header:
            raise SignatureError("malformed", "critical header parameters are not supported")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise SignatureError("unknown_key", f"signed with unknown key {kid!r}")
        try:
            key.verify(signature, head_b64 + b"." + payload_b64)
        except InvalidSignature:
            raise SignatureError(
                "bad_signature", f"signature by key {kid!r} does not verify"
            ) from None
        return header, payload


class Signer:
    """Signs compact JWS with one Ed25519 private key (the platform's side)."""

    def __init__(self, key: Ed25519PrivateKey, kid: str) -> None:
        self.key = key
        self.kid = kid

    @classmethod
    def generate(cls, kid: str) -> Signer:
        """A signer with a fresh key."""
        return cls(Ed25519PrivateKey.generate(), kid)

    def public_jwk(self) -> dict[str, str]:
        """This signer's public key as a JWK."""
        return public_jwk(self.key.public_key(), self.kid)

    def sign(self, payload: bytes, typ: str | None = None) -> bytes:
        """The compact JWS of ``payload``."""
        header: dict[str, str] = {"alg": "EdDSA", "kid": self.kid}
        if typ:
            header["typ"] = typ
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + b64url(payload)
        ).encode("ascii")
        return signing_input + b"." + b64url(self.key.sign(signing_input)).encode("ascii")


def keyset_of(signers: Iterable[Signer]) -> KeySet:
    """The key set that verifies what ``signers`` sign."""
    return KeySet({s.kid: s.key.public_key() for s in signers})
