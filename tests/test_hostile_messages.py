"""Signed sync edges from the audit: what parses before the signature, and absurd signed values.

Each becomes a refused message (SignatureError or DatasetError, recorded by
the engine as one rate-limited rejection), never another exception.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.core.jws import SignatureError, Signer, b64url, b64url_decode, keyset_of
from gateway.errors import DatasetError
from gateway.wire.dataset import parse_dataset
from gateway.wire.protocol import parse_cloud_message

from .conftest import base_dataset

SIGNER = Signer.generate("p1")
KEYS = keyset_of([SIGNER])


def token(header: Any, payload: bytes = b"{}", signature: bytes = b"\0" * 64) -> bytes:
    head = b64url(header if isinstance(header, bytes) else json.dumps(header).encode())
    return f"{head}.{b64url(payload)}.{b64url(signature)}".encode()


def test_a_deeply_nested_header_is_malformed_not_a_recursion_error() -> None:
    nested = b'{"alg":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(SignatureError) as caught:
        KEYS.verify(token(nested))
    assert caught.value.reason == "malformed"


def test_a_header_that_nests_within_its_size_limit_is_refused_too() -> None:
    with pytest.raises(SignatureError, match="flat JSON object"):
        KEYS.verify(token({"alg": "EdDSA", "kid": "p1", "x": [[[1]]]}))


def test_a_header_naming_a_member_twice_is_malformed() -> None:
    doubled = b'{"alg":"none","alg":"EdDSA","kid":"p1"}'
    with pytest.raises(SignatureError) as caught:
        KEYS.verify(token(doubled))
    assert caught.value.reason == "malformed"


def test_base64url_has_one_spelling() -> None:
    assert b64url_decode("QQ") == b"A"
    with pytest.raises(ValueError, match="canonical"):
        b64url_decode("QR")  # the same byte, with unused bits set
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode("Q")  # no whole byte


def test_a_signature_re_spelled_with_unused_bits_set_does_not_verify() -> None:
    good = SIGNER.sign(b'{"v":1}')
    head, payload, sig = good.split(b".")
    last = sig[-1:]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = alphabet[alphabet.index(last) ^ 1 : alphabet.index(last) ^ 1 + 1]
    assert base64.urlsafe_b64decode(sig + b"==") == base64.urlsafe_b64decode(
        sig[:-1] + respelled + b"=="
    )
    with pytest.raises(SignatureError):
        KEYS.verify(b".".join([head, payload, sig[:-1] + respelled]))


@pytest.mark.parametrize("version", [2**53, 2**63, 10**30])
def test_versions_beyond_what_json_holds_exactly_are_malformed(version: int) -> None:
    body = json.dumps(
        {
            "v": 1,
            "site": "t",
            "iat": 1,
            "type": "delta",
            "base_version": 1,
            "version": version,
            "changes": [],
        }
    ).encode()
    with pytest.raises(DatasetError, match="version"):
        parse_cloud_message(body)


def test_a_snapshot_claiming_too_many_chunks_is_malformed() -> None:
    body = {
        "v": 1,
        "site": "t",
        "iat": 1,
        "type": "snapshot_chunk",
        "snapshot_id": "s",
        "version": 1,
        "index": 0,
        "count": 1_000_000,
        "sha256": "0" * 64,
        "data": "",
    }
    with pytest.raises(DatasetError, match="count"):
        parse_cloud_message(json.dumps(body).encode())


@pytest.mark.parametrize("zone", ["A" * 300, "Europe/../../etc/passwd", "Nowhere/Town", ""])
def test_a_timezone_that_is_no_zone_is_a_dataset_error(zone: str) -> None:
    doc = base_dataset()
    doc["site"]["timezone"] = zone
    with pytest.raises(DatasetError, match="timezone"):
        parse_dataset(doc)
