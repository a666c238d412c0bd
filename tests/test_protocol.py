"""The protocol's published artefacts match the code, and its messages round-trip."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from gateway.core.jws import KeySet, Signer, keyset_of
from gateway.errors import DatasetError
from gateway.wire.cloudkit import CloudSigner, snapshot_datas
from gateway.wire.dataset import parse_dataset
from gateway.wire.protocol import SnapshotChunkMsg, Topics, decode_part, parse_cloud_message
from gateway.wire.schemas import all_schemas

from .conftest import base_dataset

DOCS = Path(__file__).parent.parent / "docs"


def test_the_committed_json_schemas_are_the_generated_ones() -> None:
    committed = {p.name: json.loads(p.read_text()) for p in (DOCS / "schemas").glob("*.json")}
    assert committed == all_schemas(), "run: doorgw schemas --out docs/schemas"


def test_every_schema_is_named_in_the_protocol_document() -> None:
    text = (DOCS / "protocol.md").read_text()
    for name in all_schemas():
        assert f"schemas/{name}" in text


def test_topics_site_wide_and_per_gateway() -> None:
    t = Topics("acme/doorgw/v1", "shoreditch", "gw-7")
    assert t.site_delta == "acme/doorgw/v1/site/shoreditch/delta"
    assert t.gw_command == "acme/doorgw/v1/gw/gw-7/command"
    assert t.status == "acme/doorgw/v1/gw/gw-7/status"
    assert set(t.inbound()) >= {t.site_delta, t.site_snapshot, t.site_beacon, t.gw_ack}


def test_snapshot_chunks_round_trip_to_database_rows() -> None:
    dataset = parse_dataset(base_dataset())
    signer = Signer.generate("k1")
    chunks = CloudSigner(signer, "t").snapshot(dataset, chunk_bytes=300)
    keys = keyset_of([signer])
    tables = set()
    for token in chunks:
        _, body = keys.verify(token)
        msg = parse_cloud_message(body)
        assert isinstance(msg, SnapshotChunkMsg)
        assert msg.count == len(chunks)
    for data in snapshot_datas(dataset, 300):
        table, rows = decode_part(data)
        tables.add(table)
        assert rows
    assert tables == {
        "site",
        "resources",
        "doors",
        "members",
        "credentials",
        "plans",
        "entitlements",
        "bookings",
        "passes",
    }


def _part(table: str, rows: list[list[object]]) -> bytes:
    return zlib.compress(json.dumps({"table": table, "rows": rows}).encode())


_BOOKING = ["b1", "m1", "r1", 1773133200, 1773136800, "paid", 10, 10]


@pytest.mark.parametrize(
    ("table", "row", "where"),
    [
        # Lax validation took each of these: `true` as a minute or a second, 1 as a flag.
        ("bookings", [*_BOOKING[:6], True, 10], "6"),
        ("bookings", [*_BOOKING[:6], "10", 10], "6"),
        ("bookings", [*_BOOKING[:3], "1773133200", *_BOOKING[4:]], "3"),
        ("bookings", [*_BOOKING[:3], 1773133200.5, *_BOOKING[4:]], "3"),
        ("members", ["m1", "Ada", "active", 1, False], "3"),
        ("members", ["m1", "Ada", "active", False, "yes"], "4"),
        ("plans", ["p1", "Plan", ["g"], [], "true"], "4"),
        ("site", ["t", "Europe/London", [1766620800]], "2"),
        ("bookings", [*_BOOKING[:4], 10**26, *_BOOKING[5:]], "4"),
    ],
)
def test_a_snapshot_rows_numbers_and_flags_are_the_json_types_named(
    table: str, row: list[object], where: str
) -> None:
    with pytest.raises(DatasetError, match=rf"rows\[0\]\[{where}\]"):
        decode_part(_part(table, [row]))


def test_a_snapshot_row_may_write_a_whole_number_with_a_fraction() -> None:
    # JSON Schema's "integer" takes 10.0; some JSON writers print whole numbers so.
    row = [*_BOOKING[:3], 1773133200.0, 1773136800.0, "paid", 10.0, 0.0]
    table, rows = decode_part(_part("bookings", [row]))
    assert (table, rows) == (
        "bookings",
        [("b1", "m1", "r1", 1773133200, 1773136800, "paid", 10, 0)],
    )


def test_key_sets_load_from_jwks_and_rotate() -> None:
    old, new = Signer.generate("2026-a"), Signer.generate("2026-b")
    keys = KeySet.from_jwks({"keys": [old.public_jwk(), new.public_jwk()]})
    assert keys.kids == ["2026-a", "2026-b"]
    for signer in (old, new):
        assert keys.verify(signer.sign(b"{}"))[1] == b"{}"
    assert KeySet.from_jwks(keys.to_jwks()).kids == keys.kids


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", True),
        ("v", "1"),
        ("seq", "5"),
        ("seq", True),
        ("seq", 5.5),
        ("iat", "1700000000"),
    ],
)
def test_a_message_field_must_be_the_json_type_its_schema_names(field: str, value: object) -> None:
    """The schemas say integer; the gateway took a string or a boolean for one
    (pydantic's lax mode), so `"v": true` passed as protocol version 1 and
    `"seq": "5"` as an ack of 5.  A message is read as its schema says, or not at
    all: a platform that sends otherwise learns it from the rejection.  As JSON
    Schema reads an integer, 5.0 is one."""
    ack = {"v": 1, "site": "shoreditch", "iat": 1_700_000_000, "type": "ack", "seq": 5}
    assert parse_cloud_message(json.dumps(ack).encode()).seq == 5  # type: ignore[union-attr]
    whole = {**ack, "v": 1.0, "iat": 1_700_000_000.0, "seq": 5.0}
    assert parse_cloud_message(json.dumps(whole).encode()) == parse_cloud_message(
        json.dumps(ack).encode()
    )
    with pytest.raises(DatasetError, match=f"ack.{field}"):
        parse_cloud_message(json.dumps({**ack, field: value}).encode())


def test_a_commands_number_and_flag_take_json_numbers_and_booleans() -> None:
    base = {
        "v": 1,
        "site": "shoreditch",
        "gateway": "gw-1",
        "iat": 1_700_000_000,
        "type": "command",
        "command_id": "c-1",
        "nonce": "n" * 16,
        "exp": 1_700_000_060,
    }
    unlock = {**base, "action": "unlock", "door": "front", "seconds": 5}
    assert parse_cloud_message(json.dumps(unlock).encode()).seconds == 5.0  # type: ignore[union-attr]
    for field, bad in (
        ("seconds", {**unlock, "seconds": "5"}),
        ("on", {**base, "action": "set_mode", "on": 1}),
    ):
        with pytest.raises(DatasetError, match=f"command.{field}: "):
            parse_cloud_message(json.dumps(bad).encode())
