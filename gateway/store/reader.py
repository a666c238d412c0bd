"""The cache's read side, for the tap path: stdlib sqlite3, read-only, in the caller's thread."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core import model
from gateway.core.schedule import WeeklySchedule
from gateway.errors import CacheError, CacheSchemaError
from gateway.store.claims import CLAIMS_SCHEMA, claims_path
from gateway.store.schema import SCHEMA_VERSION

_CREDENTIAL_SQL = (
    "SELECT id, member_id, kind, value, status, valid_from, valid_until "
    "FROM credentials WHERE kind = ? AND value = ?"
)
_BOOKINGS_SQL = (
    "SELECT id, member_id, resource_id, start_ts, end_ts, payment, grace_before, grace_after "
    "FROM bookings WHERE member_id = ? AND closes_at >= ? ORDER BY closes_at LIMIT 500"
)
_ENTITLEMENTS_SQL = (
    "SELECT e.id, e.member_id, e.plan_id, e.valid_from, e.valid_until, "
    "p.id, p.name, p.door_groups, p.schedule, p.around_the_clock "
    "FROM entitlements e JOIN plans p ON p.id = e.plan_id WHERE e.member_id = ?"
)
_PASSES_SQL = (
    "SELECT id, member_id, kind, name, doors, door_groups, valid_from, valid_until "
    "FROM passes WHERE member_id = ? AND valid_until >= ?"
)

# Everything a signed pass is checked against, in one statement: it runs on every scan.
_PASS_CONTEXT_SQL = (
    "SELECT s.id, s.timezone, s.closures, d.id, d.name, d.resources, d.groups, "
    "EXISTS (SELECT 1 FROM revoked_passes WHERE id = ?2), "
    "COALESCE((SELECT uses FROM claims.pass_uses WHERE pass_id = ?2), 0) "
    "FROM site s LEFT JOIN doors d ON d.id = ?1"
)

#: The statements a decision for a known, active member cannot avoid, in the
#: order it runs them; the benchmark times these bare as its floor.
HOT_PATH_SQL: dict[str, str] = {
    "site": "SELECT id, timezone, closures FROM site",
    "door": "SELECT id, name, resources, groups FROM doors WHERE id = ?",
    "credential": _CREDENTIAL_SQL,
    "member": "SELECT id, name, status, extended_unlock, staff FROM members WHERE id = ?",
    "bookings": _BOOKINGS_SQL,
    "passes": _PASSES_SQL,
    "entitlements": _ENTITLEMENTS_SQL,
}


# Rows of the small, rarely changing tables are parsed once per distinct row:
# the cache key is the row itself, so a changed row simply misses.
@lru_cache(maxsize=64)
def _site(row: tuple[str, str, str]) -> model.Site:
    closures = frozenset(date.fromisoformat(d) for d in json.loads(row[2]))
    return model.Site(row[0], row[1], closures, ZoneInfo(row[1]))


@lru_cache(maxsize=4096)
def _door(row: tuple[str, str, str, str]) -> model.Door:
    return model.Door(row[0], row[1], frozenset(json.loads(row[2])), frozenset(json.loads(row[3])))


@lru_cache(maxsize=4096)
def _plan(row: tuple[str, str, str, str, int]) -> model.Plan:
    return model.Plan(
        row[0],
        row[1],
        frozenset(json.loads(row[2])),
        WeeklySchedule.parse(json.loads(row[3])),
        bool(row[4]),
    )


@lru_cache(maxsize=4096)
def _pass_places(doors: str, groups: str) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(json.loads(doors)), frozenset(json.loads(groups))


_MEMBER_STATUS = {s.value: s for s in model.MemberStatus}
_CRED_KIND = {k.value: k for k in model.CredentialKind}
_CRED_STATUS = {s.value: s for s in model.CredentialStatus}
_PAYMENT = {p.value: p for p in model.PaymentStatus}
_PASS_KIND = {k.value: k for k in model.PassKind}


class SqliteView:
    """A :class:`~gateway.core.decision.CacheView` over one open read transaction."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def site(self) -> model.Site | None:
        """The site, or None before the first dataset."""
        row = self._conn.execute(HOT_PATH_SQL["site"]).fetchone()
        return None if row is None else _site(row)

    def door(self, door_id: str) -> model.Door | None:
        """One door by id."""
        row = self._conn.execute(HOT_PATH_SQL["door"], (door_id,)).fetchone()
        return None if row is None else _door(row)

    def doors(self) -> list[model.Door]:
        """Every door, by id."""
        rows = self._conn.execute("SELECT id, name, resources, groups FROM doors ORDER BY id")
        return [_door(r) for r in rows]

    def resource_name(self, resource_id: str) -> str:
        """A resource's name, or its id if it is unknown."""
        row = self._conn.execute(
            "SELECT name FROM resources WHERE id = ?", (resource_id,)
        ).fetchone()
        return resource_id if row is None else str(row[0])

    def credential(self, kind: model.CredentialKind, value: str) -> model.Credential | None:
        """The credential with this canonical value."""
        row = self._conn.execute(_CREDENTIAL_SQL, (kind.value, value)).fetchone()
        if row is None:
            return None
        return model.Credential(
            row[0], row[1], _CRED_KIND[row[2]], row[3], _CRED_STATUS[row[4]], row[5], row[6]
        )

    def credentials_of(self, member_id: str) -> list[model.Credential]:
        """All of a member's credentials."""
        rows = self._conn.execute(
            "SELECT id, member_id, kind, value, status, valid_from, valid_until "
            "FROM credentials WHERE member_id = ? ORDER BY id",
            (member_id,),
        )
        return [
            model.Credential(r[0], r[1], _CRED_KIND[r[2]], r[3], _CRED_STATUS[r[4]], r[5], r[6])
            for r in rows
        ]

    def member(self, member_id: str) -> model.Member | None:
        """One member by id."""
        row = self._conn.execute(HOT_PATH_SQL["member"], (member_id,)).fetchone()
        if row is None:
            return None
        return model.Member(row[0], row[1], _MEMBER_STATUS[row[2]], bool(row[3]), bool(row[4]))

    def bookings(self, member_id: str, since: int) -> Sequence[model.Booking]:
        """The member's bookings closing at or after ``since``, soonest first."""
        return [
            model.Booking(r[0], r[1], r[2], r[3], r[4], _PAYMENT[r[5]], r[6], r[7])
            for r in self._conn.execute(_BOOKINGS_SQL, (member_id, since))
        ]

    def entitlements(self, member_id: str) -> Sequence[model.EntitlementPlan]:
        """The member's entitlements with their plans."""
        return [
            model.EntitlementPlan(model.Entitlement(r[0], r[1], r[2], r[3], r[4]), _plan(r[5:10]))
            for r in self._conn.execute(_ENTITLEMENTS_SQL, (member_id,))
        ]

    def passes(self, member_id: str, since: int) -> Sequence[model.Pass]:
        """The member's passes valid until at or after ``since``."""
        out = []
        for r in self._conn.execute(_PASSES_SQL, (member_id, since)):
            doors, groups = _pass_places(r[4], r[5])
            out.append(model.Pass(r[0], r[1], _PASS_KIND[r[2]], r[3], doors, groups, r[6], r[7]))
        return out

    def credential_by_id(self, credential_id: str) -> model.Credential | None:
        """One credential by its id (how a member-app code names its key)."""
        row = self._conn.execute(
            "SELECT id, member_id, kind, value, status, valid_from, valid_until "
            "FROM credentials WHERE id = ?",
            (credential_id,),
        ).fetchone()
        if row is None:
            return None
        return model.Credential(
            row[0], row[1], _CRED_KIND[row[2]], row[3], _CRED_STATUS[row[4]], row[5], row[6]
        )

    def pass_context(
        self, door_id: str, pass_id: str
    ) -> tuple[model.Site, model.Door | None, bool, int] | None:
        """The site, the door, whether the pass was withdrawn, its uses here (None: no data)."""
        row = self._conn.execute(_PASS_CONTEXT_SQL, (door_id, pass_id)).fetchone()
        if row is None:
            return None
        door = None if row[3] is None else _door(row[3:7])
        return _site(row[0:3]), door, bool(row[7]), int(row[8])

    def dataset_version(self) -> int | None:
        """The version of the data in the cache, or None when it holds none."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'dataset_version'").fetchone()
        return None if row is None else int(row[0])


class CacheReader:
    """A read-only connection to the cache file.

    Call :meth:`view` for a consistent snapshot: every read inside one
    ``with`` block sees the same committed data, whatever writers commit
    meanwhile.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: no cache here yet (has the gateway synced?)")
        try:
            # Read-only: the tap path cannot write, even by mistake.
            self._conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=64,
            )
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            self._attach_claims()
        except sqlite3.Error as exc:
            raise CacheSchemaError(f"{self.path}: not a readable doorgw cache: {exc}") from None
        if version != SCHEMA_VERSION:
            self._conn.close()
            raise CacheSchemaError(
                f"{self.path}: cache schema version {version}, this doorgw reads "
                f"{SCHEMA_VERSION}; let the gateway daemon migrate it first"
            )

    def _attach_claims(self) -> None:
        # The pass uses counted here, read in the same statement as the pass's
        # context; an empty stand-in where no gateway has claimed anything yet.
        claims = claims_path(self.path)
        if claims.exists():
            uri = f"{claims.resolve().as_uri()}?mode=ro"
            self._conn.execute("ATTACH DATABASE ? AS claims", (uri,))
        else:
            self._conn.execute("ATTACH DATABASE 'file:claims?mode=memory' AS claims")
            self._conn.executescript(CLAIMS_SCHEMA.replace("EXISTS ", "EXISTS claims."))

    @contextmanager
    def view(self) -> Iterator[SqliteView]:
        """A consistent read-only view for the duration of the ``with`` block."""
        self._conn.execute("BEGIN")
        try:
            yield SqliteView(self._conn)
        finally:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
