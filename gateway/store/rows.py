"""How each entity of :mod:`gateway.core.model` is stored: its table, columns and row."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from gateway.core import model
from gateway.store.schema import STAGE_PREFIX

#: WAL pages between automatic checkpoints: SQLite's default, and while a snapshot loads.
CHECKPOINT_PAGES = 1000
BULK_CHECKPOINT_PAGES = 20_000


def _list(values: Iterable[str]) -> str:
    return json.dumps(sorted(values))


# Entity type -> (table, columns, row builder).  The first column is the key.
_Row = tuple[Any, ...]
TABLES: dict[type, tuple[str, tuple[str, ...], Callable[[Any], _Row]]] = {
    model.Site: (
        "site",
        ("singleton", "id", "timezone", "closures"),
        lambda s: (1, s.id, s.timezone, json.dumps(sorted(d.isoformat() for d in s.closures))),
    ),
    model.Resource: ("resources", ("id", "name"), lambda r: (r.id, r.name)),
    model.Door: (
        "doors",
        ("id", "name", "resources", "groups"),
        lambda d: (d.id, d.name, _list(d.resources), _list(d.groups)),
    ),
    model.Member: (
        "members",
        ("id", "name", "status", "extended_unlock", "staff"),
        lambda m: (m.id, m.name, m.status.value, int(m.extended_unlock), int(m.staff)),
    ),
    model.Credential: (
        "credentials",
        ("id", "member_id", "kind", "value", "status", "valid_from", "valid_until"),
        lambda c: (
            c.id,
            c.member_id,
            c.kind.value,
            c.value,
            c.status.value,
            c.valid_from,
            c.valid_until,
        ),
    ),
    model.Plan: (
        "plans",
        ("id", "name", "door_groups", "schedule", "around_the_clock"),
        lambda p: (
            p.id,
            p.name,
            _list(p.door_groups),
            json.dumps(p.schedule.texts()),
            int(p.around_the_clock),
        ),
    ),
    model.Entitlement: (
        "entitlements",
        ("id", "member_id", "plan_id", "valid_from", "valid_until"),
        lambda e: (e.id, e.member_id, e.plan_id, e.valid_from, e.valid_until),
    ),
    model.Booking: (
        "bookings",
        (
            "id",
            "member_id",
            "resource_id",
            "start_ts",
            "end_ts",
            "payment",
            "grace_before",
            "grace_after",
            "closes_at",
        ),
        lambda b: (
            b.id,
            b.member_id,
            b.resource_id,
            b.start,
            b.end,
            b.payment.value,
            b.grace_before,
            b.grace_after,
            b.closes_at,
        ),
    ),
    model.Pass: (
        "passes",
        ("id", "member_id", "kind", "name", "doors", "door_groups", "valid_from", "valid_until"),
        lambda p: (
            p.id,
            p.member_id,
            p.kind.value,
            p.name,
            _list(p.doors),
            _list(p.door_groups),
            p.valid_from,
            p.valid_until,
        ),
    ),
    model.RevokedPass: ("revoked_passes", ("id", "until"), lambda r: (r.id, r.until)),
}
#: Table -> its columns, in insert order.
COLUMNS = {table: columns for table, columns, _ in TABLES.values()}


def table_rows(items: Sequence[Any]) -> tuple[str, Iterator[_Row]]:
    """The table of a non-empty sequence of one entity type, and its database rows."""
    table, _, row = TABLES[type(items[0])]
    return table, (row(i) for i in items)


def stage_insert_sql(table: str) -> str:
    """The plain INSERT into a stage table, columns in :func:`table_rows` order."""
    return insert_sql(STAGE_PREFIX + table, COLUMNS[table], upsert=False)


def insert_sql(table: str, columns: Sequence[str], *, upsert: bool) -> str:
    """INSERT (or, with ``upsert``, insert-or-update by the first column) of one row."""
    cols = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"
    if upsert:
        # Not INSERT OR REPLACE: that deletes whatever row conflicts on *any*
        # unique key (another member's card) and fires cascades.
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        sql += f" ON CONFLICT({columns[0]}) DO UPDATE SET {updates}"
    return sql
