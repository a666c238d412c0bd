"""Signed sync edges from the audit: what parses before the signature, and absurd signed values.

Each becomes a refused message (SignatureError or DatasetError, recorded by
the engine as one rate-limited rejection), never another exception.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib
from typing import Any

import pytest

from gateway.core.jws import SignatureError, Signer, b64url, b64url_decode, keyset_of
from gateway.errors import DatasetError
from gateway.wire.cloudkit import CHUNK_BYTES, _split
from gateway.wire.dataset import parse_dataset
from gateway.wire.protocol import MAX_CHUNK_ROWS, decode_part, parse_cloud_message

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


def _delta(**extra: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "site": "t",
        "iat": 1,
        "type": "delta",
        "base_version": 1,
        "version": 2,
        "changes": [],
        **extra,
    }


def test_a_payload_naming_a_member_twice_is_malformed_wherever_it_is() -> None:
    """Two readers of one signed message must not see two messages: the platform's
    JSON library may keep the first ``version``, ours would keep the last."""
    top = json.dumps(_delta())[:-1] + ', "version": 99}'
    with pytest.raises(DatasetError, match="'version' given twice"):
        parse_cloud_message(top.encode())
    change = {"op": "upsert", "entity": "member", "id": "m2"}
    inner = json.dumps(_delta(changes=[change])).replace('"id": "m2"', '"id": "m1", "id": "m2"')
    with pytest.raises(DatasetError, match="given twice"):
        parse_cloud_message(inner.encode())


def test_a_payload_nested_thousands_deep_is_malformed_not_a_recursion_error() -> None:
    deep = json.dumps(_delta())[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(DatasetError, match="not JSON"):
        parse_cloud_message(deep.encode())


def _chunk(rows: list[list[Any]], table: str = "revoked_passes", **doc: Any) -> bytes:
    return zlib.compress(json.dumps({"table": table, "rows": rows, **doc}).encode(), 9)


def test_a_chunk_of_too_many_rows_is_refused_before_its_rows_are_built() -> None:
    # The audit's chunk: 161 KiB that became 6.4 million rows and +1.46 GB.
    bomb = zlib.compress(
        b'{"table":"revoked_passes","rows":[' + b'["p",0],' * 6_400_000 + b'["p",0]]}', 9
    )
    assert len(bomb) < 200_000
    # In a process of its own, so that its peak memory is its own.
    probe = (
        "import resource, sys\n"
        "from gateway.wire.protocol import decode_part\n"
        "data = sys.stdin.buffer.read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    decode_part(data)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], input=bomb, capture_output=True, check=True
    ).stdout.decode()
    refusal, grown_kib = out.splitlines()
    assert refusal.startswith("DatasetError snapshot chunk")
    assert int(grown_kib) < 100 * 1024  # not the audit's 1.46 GB, nor even 100 MiB
    just_over = [[f"p{i}", 0] for i in range(MAX_CHUNK_ROWS + 1)]
    with pytest.raises(DatasetError, match=f"at most {MAX_CHUNK_ROWS} items"):
        decode_part(_chunk(just_over))
    table, rows = decode_part(_chunk(just_over[:MAX_CHUNK_ROWS]))
    assert (table, len(rows)) == ("revoked_passes", MAX_CHUNK_ROWS)


def test_a_chunk_naming_its_table_twice_is_refused() -> None:
    doubled = zlib.compress(b'{"table":"members","rows":[],"table":"revoked_passes"}')
    with pytest.raises(DatasetError, match="given twice"):
        decode_part(doubled)


def test_the_reference_chunker_keeps_within_the_row_limit() -> None:
    """Rows that compress very well would fit many more than the limit into one chunk."""
    rows = [[f"p{i}", 0] for i in range(3 * MAX_CHUNK_ROWS)]
    parts = _split("revoked_passes", rows, CHUNK_BYTES)
    decoded = [decode_part(p) for p in parts]
    assert sum(len(r) for _, r in decoded) == len(rows)
    assert max(len(r) for _, r in decoded) <= MAX_CHUNK_ROWS
