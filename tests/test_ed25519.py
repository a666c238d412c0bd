"""Ed25519 keys of small order or with non-canonical encodings are refused wherever loaded."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core import qr
from gateway.core.decision import Conditions, Reason, decide_code
from gateway.core.ed25519 import check_public_key
from gateway.core.jws import KeySet, Signer, b64url, keyset_of
from gateway.store.reader import CacheReader

from .conftest import base_dataset, local

P = 2**255 - 19
IDENTITY = bytes([1]) + bytes(31)
#: The curve's 8-torsion and other encodings no honest key has.
BAD = {
    "identity": IDENTITY,
    "order 4 (y = 0)": bytes(32),
    "order 2 (y = -1)": (P - 1).to_bytes(32, "little"),
    "order 8": bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    "order 8, the other": bytes.fromhex(
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
    ),
    "y = p (non-canonical zero)": P.to_bytes(32, "little"),
    "identity with the sign bit": bytes([1]) + bytes(30) + bytes([0x80]),
}


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_real_keys_are_accepted() -> None:
    for _ in range(100):
        check_public_key(raw(Ed25519PrivateKey.generate()))


@pytest.mark.parametrize("name", sorted(BAD))
def test_small_order_and_non_canonical_keys_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"small order|not a canonical"):
        check_public_key(BAD[name])


def test_a_key_set_with_a_small_order_key_is_refused() -> None:
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "p1", "x": b64url(IDENTITY)}]}
    with pytest.raises(ValueError, match=r"keys\[0\]: an Ed25519 key of small order"):
        KeySet.from_jwks(jwks)


def test_an_app_code_forged_for_an_identity_app_key_is_not_genuine(
    make_reader: Any,
) -> None:
    # The audit's forgery: app key = identity, R = identity, S = 0 "verifies"
    # for any message, so no private key is needed.
    doc = base_dataset()
    doc["credentials"].append(
        {"id": "app-forged", "member_id": "all_m", "kind": "app_key", "value": b64url(IDENTITY)}
    )
    reader: CacheReader = make_reader(doc)
    at = local("2026-03-10T12:00")
    signed = qr.app_code_bytes(qr.AppCode("app-forged", at, b"\x07" * qr.NONCE_BYTES))
    text = qr.to_text(signed, IDENTITY + bytes(32))
    conditions = Conditions(code_window=30, clock_trusted=True)
    with reader.view() as view:
        result = decide_code(
            view, text, "front", at, conditions, keys=keyset_of([Signer.generate("p1")])
        )
    assert result.decision.reason is Reason.CODE_BAD_SIGNATURE
    assert not result.decision.granted
