"""JSON Schema files of the sync protocol, generated from the models the gateway validates with.

``doorgw schemas --out DIR`` writes them; ``docs/schemas/`` holds the
committed copy, and a test fails if it drifts from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from gateway.wire.dataset import ENTITY_DOCS, ChangeDoc, DatasetDoc, SiteDoc
from gateway.wire.protocol import (
    ROW_TYPES,
    SNAPSHOT_PART,
    AckMsg,
    BeaconMsg,
    CommandMsg,
    DeltaMsg,
    EventsMsg,
    HeartbeatMsg,
    ResyncRequestMsg,
    SnapshotChunkMsg,
    StatusMsg,
)

_BASE = "https://doorgw.dev/schemas/v1/"


def _schema(
    model: type[BaseModel] | TypeAdapter[Any], name: str, title: str, *, sent: bool = False
) -> dict[str, Any]:
    # What the gateway sends is described as written (every field present);
    # what it receives as it is validated.
    mode: Literal["validation", "serialization"] = "serialization" if sent else "validation"
    schema = (
        model.json_schema(mode=mode)
        if isinstance(model, TypeAdapter)
        else model.model_json_schema(mode=mode)
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _BASE + name,
        "title": title,
        **schema,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every message and document of the protocol."""
    out = {
        "delta.schema.json": _schema(
            DeltaMsg, "delta.schema.json", "Signed payload: delta (cloud -> gateways)"
        ),
        "snapshot-chunk.schema.json": _schema(
            SnapshotChunkMsg, "snapshot-chunk.schema.json", "Signed payload: snapshot chunk"
        ),
        "snapshot-part.schema.json": _schema(
            SNAPSHOT_PART, "snapshot-part.schema.json", "A snapshot chunk's data, decompressed"
        ),
        "beacon.schema.json": _schema(BeaconMsg, "beacon.schema.json", "Signed payload: beacon"),
        "ack.schema.json": _schema(AckMsg, "ack.schema.json", "Signed payload: event ack"),
        "command.schema.json": _schema(
            CommandMsg, "command.schema.json", "Signed payload: command"
        ),
        "events.schema.json": _schema(
            EventsMsg, "events.schema.json", "Gateway -> cloud: a batch of events", sent=True
        ),
        "status.schema.json": _schema(
            StatusMsg, "status.schema.json", "Gateway -> cloud: retained presence", sent=True
        ),
        "heartbeat.schema.json": _schema(
            HeartbeatMsg, "heartbeat.schema.json", "Gateway -> cloud: heartbeat", sent=True
        ),
        "resync.schema.json": _schema(
            ResyncRequestMsg, "resync.schema.json", "Gateway -> cloud: resync request", sent=True
        ),
        "change.schema.json": _schema(ChangeDoc, "change.schema.json", "One change inside a delta"),
        "dataset.schema.json": _schema(
            DatasetDoc, "dataset.schema.json", "A whole dataset in object form"
        ),
        "site.schema.json": _schema(SiteDoc, "site.schema.json", "Entity: site"),
    }
    for entity, doc in ENTITY_DOCS.items():
        out[f"{entity}.schema.json"] = _schema(doc, f"{entity}.schema.json", f"Entity: {entity}")
    assert set(ROW_TYPES)  # the row forms are inside snapshot-part.schema.json
    return out


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in sorted(all_schemas().items()):
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
