"""The protocol's published artefacts match the code, and its messages round-trip."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.core.jws import KeySet, Signer, keyset_of
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


def test_key_sets_load_from_jwks_and_rotate() -> None:
    old, new = Signer.generate("2026-a"), Signer.generate("2026-b")
    keys = KeySet.from_jwks({"keys": [old.public_jwk(), new.public_jwk()]})
    assert keys.kids == ["2026-a", "2026-b"]
    for signer in (old, new):
        assert keys.verify(signer.sign(b"{}"))[1] == b"{}"
    assert KeySet.from_jwks(keys.to_jwks()).kids == keys.kids
