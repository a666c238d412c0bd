"""The cache's schema and its migrations.

``PRAGMA user_version`` holds the number of migrations applied.  Each
migration runs in one transaction with the version bump, so a crash leaves
the file at the previous version, never half-migrated.  Append migrations;
never edit one that has been released.

The entity tables are described once, in :func:`entity_tables`, because a
snapshot is loaded into a second set of *stage* tables and then swapped in
by renaming.  Index names cannot be renamed in SQLite, so the live set and
the stage set use alternating index suffixes (``_a`` / ``_b``).
"""

from __future__ import annotations

#: (table, column definitions, [(index name, indexed columns, unique)]).
#: Parents before children: the order to create and fill them in.
ENTITY_TABLES: tuple[tuple[str, str, tuple[tuple[str, str, bool], ...]], ...] = (
    (
        "site",
        "singleton INTEGER PRIMARY KEY CHECK (singleton = 1), id TEXT NOT NULL, "
        "timezone TEXT NOT NULL, closures TEXT NOT NULL",
        (),
    ),
    ("resources", "id TEXT PRIMARY KEY, name TEXT NOT NULL", ()),
    (
        "doors",
        "id TEXT PRIMARY KEY, name TEXT NOT NULL, resources TEXT NOT NULL, groups TEXT NOT NULL",
        (),
    ),
    (
        "members",
        "id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, "
        "extended_unlock INTEGER NOT NULL, staff INTEGER NOT NULL",
        (),
    ),
    (
        "credentials",
        "id TEXT PRIMARY KEY, "
        "member_id TEXT NOT NULL REFERENCES {p}members(id) ON DELETE CASCADE, "
        "kind TEXT NOT NULL, value TEXT NOT NULL, status TEXT NOT NULL, "
        "valid_from INTEGER, valid_until INTEGER",
        (
            ("credentials_by_value", "kind, value", True),
            ("credentials_by_member", "member_id", False),
        ),
    ),
    (
        "plans",
        "id TEXT PRIMARY KEY, name TEXT NOT NULL, door_groups TEXT NOT NULL, "
        "schedule TEXT NOT NULL, around_the_clock INTEGER NOT NULL",
        (),
    ),
    (
        "entitlements",
        "id TEXT PRIMARY KEY, "
        "member_id TEXT NOT NULL REFERENCES {p}members(id) ON DELETE CASCADE, "
        "plan_id TEXT NOT NULL REFERENCES {p}plans(id) ON DELETE CASCADE, "
        "valid_from INTEGER, valid_until INTEGER",
        (
            ("entitlements_by_member", "member_id", False),
            ("entitlements_by_plan", "plan_id", False),
        ),
    ),
    (
        "bookings",
        "id TEXT PRIMARY KEY, "
        "member_id TEXT NOT NULL REFERENCES {p}members(id) ON DELETE CASCADE, "
        "resource_id TEXT NOT NULL REFERENCES {p}resources(id) ON DELETE CASCADE, "
        "start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, payment TEXT NOT NULL, "
        "grace_before INTEGER NOT NULL, grace_after INTEGER NOT NULL, closes_at INTEGER NOT NULL",
        # The tap path: a member's bookings that have not long closed.
        (
            ("bookings_by_member", "member_id, closes_at", False),
            ("bookings_by_resource", "resource_id", False),
        ),
    ),
    (
        "passes",
        "id TEXT PRIMARY KEY, "
        "member_id TEXT NOT NULL REFERENCES {p}members(id) ON DELETE CASCADE, "
        "kind TEXT NOT NULL, name TEXT NOT NULL, doors TEXT NOT NULL, door_groups TEXT NOT NULL, "
        "valid_from INTEGER NOT NULL, valid_until INTEGER NOT NULL",
        (("passes_by_member", "member_id, valid_until", False),),
    ),
    # Signed QR passes withdrawn by the platform (their own ids, no member).
    ("revoked_passes", "id TEXT PRIMARY KEY, until INTEGER NOT NULL", ()),
)

#: Child tables before parents: the order to empty or drop them in.
TABLES_CHILDREN_FIRST = tuple(name for name, _, _ in reversed(ENTITY_TABLES))

#: The prefix of the stage tables a snapshot is loaded into.
STAGE_PREFIX = "stage_"


def entity_tables(prefix: str, suffix: str, *, indexes: bool = True) -> str:
    """DDL for the entity tables named ``<prefix><table>``, indexes ending ``_<suffix>``."""
    statements = []
    for name, columns, index_list in ENTITY_TABLES:
        statements.append(f"CREATE TABLE {prefix}{name} ({columns.format(p=prefix)});")
        if indexes:
            statements.extend(
                entity_index(prefix, name, index, cols, unique, suffix)
                for index, cols, unique in index_list
            )
    return "\n".join(statements)


def entity_index(prefix: str, table: str, index: str, cols: str, unique: bool, suffix: str) -> str:
    """One CREATE INDEX statement of :data:`ENTITY_TABLES`."""
    kind = "UNIQUE INDEX" if unique else "INDEX"
    return f"CREATE {kind} {index}_{suffix} ON {prefix}{table}({cols});"


MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema.
    # Frozen text: ENTITY_TABLES may change later only together with a migration.
    """\
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE site (singleton INTEGER PRIMARY KEY CHECK (singleton = 1), id TEXT NOT NULL, timezone TEXT NOT NULL, closures TEXT NOT NULL);
CREATE TABLE resources (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE doors (id TEXT PRIMARY KEY, name TEXT NOT NULL, resources TEXT NOT NULL, groups TEXT NOT NULL);
CREATE TABLE members (id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, extended_unlock INTEGER NOT NULL, staff INTEGER NOT NULL);
CREATE TABLE credentials (id TEXT PRIMARY KEY, member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE, kind TEXT NOT NULL, value TEXT NOT NULL, status TEXT NOT NULL, valid_from INTEGER, valid_until INTEGER);
CREATE UNIQUE INDEX credentials_by_value_a ON credentials(kind, value);
CREATE INDEX credentials_by_member_a ON credentials(member_id);
CREATE TABLE plans (id TEXT PRIMARY KEY, name TEXT NOT NULL, door_groups TEXT NOT NULL, schedule TEXT NOT NULL, around_the_clock INTEGER NOT NULL);
CREATE TABLE entitlements (id TEXT PRIMARY KEY, member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE, plan_id TEXT NOT NULL REFERENCES plans(id) ON DELETE CASCADE, valid_from INTEGER, valid_until INTEGER);
CREATE INDEX entitlements_by_member_a ON entitlements(member_id);
CREATE INDEX entitlements_by_plan_a ON entitlements(plan_id);
CREATE TABLE bookings (id TEXT PRIMARY KEY, member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE, resource_id TEXT NOT NULL REFERENCES resources(id) ON DELETE CASCADE, start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, payment TEXT NOT NULL, grace_before INTEGER NOT NULL, grace_after INTEGER NOT NULL, closes_at INTEGER NOT NULL);
CREATE INDEX bookings_by_member_a ON bookings(member_id, closes_at);
CREATE INDEX bookings_by_resource_a ON bookings(resource_id);
CREATE TABLE passes (id TEXT PRIMARY KEY, member_id TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE, kind TEXT NOT NULL, name TEXT NOT NULL, doors TEXT NOT NULL, door_groups TEXT NOT NULL, valid_from INTEGER NOT NULL, valid_until INTEGER NOT NULL);
CREATE INDEX passes_by_member_a ON passes(member_id, valid_until);
""",
    # 2: snapshot chunks as they arrive, so a restart resumes the transfer.
    "CREATE TABLE snapshot_chunks (snapshot_id TEXT NOT NULL, idx INTEGER NOT NULL, "
    "count INTEGER NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL, "
    "data BLOB NOT NULL, PRIMARY KEY (snapshot_id, idx));",
    # 3: command nonces already used, kept until their command expires.
    "CREATE TABLE seen_nonces (nonce TEXT PRIMARY KEY, exp INTEGER NOT NULL) WITHOUT ROWID;",
    # 4: QR credentials: withdrawn signed passes (synced, an entity table), and
    # the uses counted here of passes with a use limit (local, outlives snapshots).
    "CREATE TABLE revoked_passes (id TEXT PRIMARY KEY, until INTEGER NOT NULL);\n"
    "CREATE TABLE pass_uses (pass_id TEXT PRIMARY KEY, uses INTEGER NOT NULL, "
    "until INTEGER NOT NULL) WITHOUT ROWID;",
    # 5: nonces and pass uses live in the claims file (gateway.store.claims),
    # which they are copied into first (CLAIMS_MOVED).
    "DROP TABLE seen_nonces;\nDROP TABLE pass_uses;",
)

#: The migration before which an older cache's claims are copied out.
CLAIMS_MOVED = 5

#: The schema version this code reads and writes.
SCHEMA_VERSION = len(MIGRATIONS)
