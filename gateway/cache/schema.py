"""The cache's schema and its migrations.

``PRAGMA user_version`` holds the number of migrations applied.  Each
migration runs in one transaction with the version bump, so a crash leaves
the file at the previous version, never half-migrated.  Append migrations;
never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE site (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        id TEXT NOT NULL, timezone TEXT NOT NULL, closures TEXT NOT NULL
    );
    CREATE TABLE resources (id TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE doors (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, resources TEXT NOT NULL, groups TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE members (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
        extended_unlock INTEGER NOT NULL
    );
    CREATE TABLE credentials (
        id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, value TEXT NOT NULL, status TEXT NOT NULL,
        valid_from INTEGER, valid_until INTEGER
    );
    CREATE UNIQUE INDEX credentials_by_value ON credentials(kind, value);
    CREATE INDEX credentials_by_member ON credentials(member_id);
    CREATE TABLE plans (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, door_groups TEXT NOT NULL,
        schedule TEXT NOT NULL, around_the_clock INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE entitlements (
        id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
        plan_id TEXT NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
        valid_from INTEGER, valid_until INTEGER
    );
    CREATE INDEX entitlements_by_member ON entitlements(member_id);
    CREATE INDEX entitlements_by_plan ON entitlements(plan_id);
    CREATE TABLE bookings (
        id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
        resource_id TEXT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
        start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, payment TEXT NOT NULL,
        grace_before INTEGER NOT NULL, grace_after INTEGER NOT NULL,
        closes_at INTEGER NOT NULL
    );
    -- The tap path: a member's bookings that have not long closed.
    CREATE INDEX bookings_by_member ON bookings(member_id, closes_at);
    CREATE INDEX bookings_by_resource ON bookings(resource_id);
    CREATE TABLE passes (
        id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, name TEXT NOT NULL, doors TEXT NOT NULL, door_groups TEXT NOT NULL,
        valid_from INTEGER NOT NULL, valid_until INTEGER NOT NULL
    );
    CREATE INDEX passes_by_member ON passes(member_id, valid_until);
    """,
)

#: The schema version this code reads and writes.
SCHEMA_VERSION = len(MIGRATIONS)

#: Child tables before parents: the order to empty them in.
TABLES_CHILDREN_FIRST = (
    "bookings",
    "passes",
    "entitlements",
    "credentials",
    "plans",
    "members",
    "doors",
    "resources",
    "site",
)
