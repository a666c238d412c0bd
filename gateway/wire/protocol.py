"""The sync protocol between the platform and its gateways: topics and messages.

docs/protocol.md is the human contract; the JSON Schema files in
``docs/schemas/`` are generated from the models here (``doorgw schemas``),
so what the gateway validates and what the platform is told are one thing.

Cloud -> gateway messages are compact JWS (see :mod:`gateway.core.jws`) whose
payload is one of the ``*Msg`` models below; gateway -> cloud messages are
plain JSON (the broker authenticates the gateway by its client certificate).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)

from gateway.core import model
from gateway.core.credentials import normalize
from gateway.core.schedule import WeeklySchedule
from gateway.errors import CredentialFormatError, DatasetError
from gateway.wire.dataset import (
    CalendarDate,
    ChangeDoc,
    Id,
    describe_validation_error,
    unique_json,
)

#: The protocol version every message carries as ``v``.
PROTOCOL_VERSION: Literal[1] = 1

#: Largest decompressed snapshot chunk accepted (a zip bomb stops here).
MAX_CHUNK_ROWS_BYTES = 8 * 1024 * 1024
#: Most rows one snapshot chunk may hold (what decoding one costs in memory).
MAX_CHUNK_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree under a configurable prefix.

    Site-wide topics reach every gateway of a site with one publish;
    per-gateway topics carry what concerns one gateway.
    """

    prefix: str
    site: str
    gateway: str

    # Cloud -> gateways of the site.
    @property
    def site_delta(self) -> str:
        """Signed deltas for the whole site."""
        return f"{self.prefix}/site/{self.site}/delta"

    @property
    def site_snapshot(self) -> str:
        """Signed snapshot chunks for the whole site."""
        return f"{self.prefix}/site/{self.site}/snapshot"

    @property
    def site_beacon(self) -> str:
        """Signed periodic beacons: the platform's current version."""
        return f"{self.prefix}/site/{self.site}/beacon"

    # Cloud -> this gateway.
    @property
    def gw_snapshot(self) -> str:
        """Signed snapshot chunks sent to this gateway only (resync answers)."""
        return f"{self.prefix}/gw/{self.gateway}/snapshot"

    @property
    def gw_delta(self) -> str:
        """Signed deltas sent to this gateway only (catch-up)."""
        return f"{self.prefix}/gw/{self.gateway}/delta"

    @property
    def gw_command(self) -> str:
        """Signed commands for this gateway."""
        return f"{self.prefix}/gw/{self.gateway}/command"

    @property
    def gw_ack(self) -> str:
        """Signed event acknowledgements for this gateway."""
        return f"{self.prefix}/gw/{self.gateway}/ack"

    # This gateway -> cloud.
    @property
    def events(self) -> str:
        """Batches of events (QoS 1)."""
        return f"{self.prefix}/gw/{self.gateway}/events"

    @property
    def status(self) -> str:
        """Retained presence: online / offline (also the last will)."""
        return f"{self.prefix}/gw/{self.gateway}/status"

    @property
    def heartbeat(self) -> str:
        """Periodic health."""
        return f"{self.prefix}/gw/{self.gateway}/heartbeat"

    @property
    def resync(self) -> str:
        """Requests for a snapshot."""
        return f"{self.prefix}/gw/{self.gateway}/resync"

    def inbound(self) -> list[str]:
        """What the gateway subscribes to."""
        return [
            self.site_delta,
            self.site_snapshot,
            self.site_beacon,
            self.gw_snapshot,
            self.gw_delta,
            self.gw_command,
            self.gw_ack,
        ]


#: Every number in a message stays below 2**53: what JSON numbers hold exactly
#: everywhere (a version of 10**30 used to be accepted and freeze every later
#: delta as "old"; one of 2**63 raised OverflowError in SQLite).
MAX_SAFE_INT = 2**53 - 1
#: Chunks per snapshot: 10,000 chunks of 192 KiB hold far more than a site has.
MAX_CHUNKS = 10_000


#: What the gateway sends: every field is always written (nulls included), so
#: its schema lists them all as required.
_OUT = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class _Msg(BaseModel):
    # Strict: a number is a JSON number, a flag a JSON boolean, as the schemas
    # say; `"v": true` is not protocol version 1, nor `"seq": "5"` an ack.
    # (A whole number written 5.0 is read as 5 with the JSON: unique_json.)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: Required: a message that does not say its protocol version is not believed.
    v: Literal[1]
    site: Id
    #: When set, the message is for this gateway only.
    gateway: Id | None = None
    #: When the platform signed it (Unix seconds).
    iat: int = Field(ge=0, le=MAX_SAFE_INT)

    @field_validator("v", mode="before")
    @classmethod
    def _a_version_is_a_number(cls, value: Any) -> Any:
        # A literal matches by equality, and true == 1 in Python.
        if isinstance(value, bool):
            raise ValueError("the protocol version is a JSON number")
        return value


class DeltaMsg(_Msg):
    """Ordered changes taking the dataset from ``base_version`` to ``version``."""

    type: Literal["delta"]
    base_version: int = Field(ge=0, le=MAX_SAFE_INT)
    version: int = Field(ge=1, le=MAX_SAFE_INT)
    changes: list[ChangeDoc] = Field(max_length=10_000)


class SnapshotChunkMsg(_Msg):
    """One chunk of a snapshot; ``data`` is base64 of zlib-compressed JSON rows."""

    type: Literal["snapshot_chunk"]
    snapshot_id: Id
    version: int = Field(ge=0, le=MAX_SAFE_INT)
    index: int = Field(ge=0, lt=MAX_CHUNKS)
    count: int = Field(ge=1, le=MAX_CHUNKS)
    #: SHA-256 (hex) over the decoded ``data`` bytes of all chunks, in index order.
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    data: str


class BeaconMsg(_Msg):
    """The platform's current dataset version, sent periodically."""

    type: Literal["beacon"]
    version: int = Field(ge=0, le=MAX_SAFE_INT)


class AckMsg(_Msg):
    """The highest event sequence the platform has stored contiguously."""

    type: Literal["ack"]
    seq: int = Field(ge=0, le=MAX_SAFE_INT)


class CommandMsg(_Msg):
    """A one-time command with an expiry, for one named gateway."""

    #: Required: a command no gateway is named in would be carried out by all of them.
    gateway: Id
    type: Literal["command"]
    command_id: Id
    nonce: Annotated[str, Field(min_length=16, max_length=64)]
    exp: int = Field(ge=0, le=MAX_SAFE_INT)
    action: Literal["unlock", "lockdown", "resync", "set_mode"]
    door: Id | None = None
    seconds: float | None = Field(default=None, gt=0, le=3600)
    on: bool | None = None
    mode: Literal["normal", "unlocked", "lockdown"] | None = None


CloudMsg = Annotated[
    DeltaMsg | SnapshotChunkMsg | BeaconMsg | AckMsg | CommandMsg, Field(discriminator="type")
]
CLOUD_MESSAGE = TypeAdapter(CloudMsg)


def parse_cloud_message(
    payload: bytes,
) -> DeltaMsg | SnapshotChunkMsg | BeaconMsg | AckMsg | CommandMsg:
    """Validate a verified JWS payload; raise DatasetError naming the field."""
    try:
        # Parsed with every object's members checked unique: a name given twice
        # would let two readers of one signed message see two different messages.
        doc = unique_json(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise DatasetError(f"invalid message: not JSON with unique members ({exc})") from None
    try:
        return CLOUD_MESSAGE.validate_python(doc)
    except ValidationError as exc:
        raise DatasetError(f"invalid message: {describe_validation_error(exc)}") from None


# Gateway -> cloud.


class EventDoc(BaseModel):
    """One event in the outbox: access decisions, door events, system events."""

    model_config = _OUT

    seq: int = Field(ge=1)
    at: int
    type: str
    data: dict[str, Any] = Field(default_factory=dict)


class EventsMsg(BaseModel):
    """A batch of events, in sequence order, without gaps."""

    model_config = _OUT

    v: Literal[1] = PROTOCOL_VERSION
    gateway: Id
    events: list[EventDoc]


class StatusMsg(BaseModel):
    """Retained presence (also the last will, with ``state`` offline)."""

    model_config = _OUT

    v: Literal[1] = PROTOCOL_VERSION
    gateway: Id
    state: Literal["online", "offline"]
    #: When the gateway published it (Unix seconds, its clock); null in the
    #: last will, which the broker publishes when it notices the loss.
    at: int | None = None


class HeartbeatMsg(BaseModel):
    """Periodic health of one gateway."""

    model_config = _OUT

    v: Literal[1] = PROTOCOL_VERSION
    gateway: Id
    at: int
    dataset_version: int | None
    data_age_s: int | None
    outbox_depth: int
    acked_seq: int
    stale_classes: list[str]
    clock: Literal["trusted", "untrusted"]
    doors: dict[str, str]


class ResyncRequestMsg(BaseModel):
    """A gateway asking for a snapshot (and which one it is missing chunks of)."""

    model_config = _OUT

    v: Literal[1] = PROTOCOL_VERSION
    gateway: Id
    have_version: int | None
    reason: str
    snapshot_id: Id | None = None
    #: With ``resume``: the chunk indexes still wanted, as inclusive ``[first, last]`` ranges.
    missing: list[tuple[int, int]] | None = None


# Snapshot rows: one compact array per entity, in the order below.  Strict,
# as the messages are: lax pydantic took `true` as 1 (a grace minute, an
# instant) and 1 or "yes" as a flag.
#: An instant in a snapshot row: Unix seconds, held exactly by a JSON number
#: (a larger one stopped the apply in SQLite, not as ``bad_snapshot``).
UnixSeconds = Annotated[int, Strict(), Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
_Flag = Annotated[bool, Strict()]
_Pay = Literal["paid", "included_in_plan", "unpaid", "refunded", "cancelled"]
_MStatus = Literal["active", "suspended", "cancelled"]
_CKind = Literal["nfc_uid", "wiegand", "pin", "app_key"]
_CStatus = Literal["active", "suspended", "lost", "revoked"]
_PKind = Literal["day_pass", "visitor"]
_Name = Annotated[str, Field(min_length=1, max_length=200)]
_Grace = Annotated[int, Strict(), Field(ge=0, le=1440)]

ROW_TYPES: dict[str, Any] = {
    "site": tuple[Id, str, list[CalendarDate]],
    "resources": tuple[Id, _Name],
    "doors": tuple[Id, _Name, list[Id], list[Id]],
    "members": tuple[Id, _Name, _MStatus, _Flag, _Flag],
    "credentials": tuple[
        Id,
        Id,
        _CKind,
        Annotated[str, Field(min_length=1, max_length=128)],
        _CStatus,
        UnixSeconds | None,
        UnixSeconds | None,
    ],
    "plans": tuple[Id, _Name, list[Id], list[str], _Flag],
    "entitlements": tuple[Id, Id, Id, UnixSeconds | None, UnixSeconds | None],
    "bookings": tuple[Id, Id, Id, UnixSeconds, UnixSeconds, _Pay, _Grace, _Grace],
    "passes": tuple[Id, Id, _PKind, _Name, list[Id], list[Id], UnixSeconds, UnixSeconds],
    "revoked_passes": tuple[Id, UnixSeconds],
}


def _part_model(table: str) -> type[BaseModel]:
    # Built at run time from ROW_TYPES, so the types are dynamic for mypy.
    table_type: Any = Literal[table]
    rows_type: Any = Annotated[
        list[ROW_TYPES[table]],  # type: ignore[valid-type]
        Field(max_length=MAX_CHUNK_ROWS),
    ]
    part: type[BaseModel] = create_model(
        f"SnapshotPart_{table}",
        __config__=ConfigDict(extra="forbid", frozen=True),
        table=(table_type, ...),
        rows=(rows_type, ...),
    )
    return part


#: What one chunk's ``data`` decompresses to: ``{"table": NAME, "rows": [[...], ...]}``,
#: one model per table, told apart by ``table``.  Parsed and validated in one pass.
SNAPSHOT_PARTS: dict[str, type[BaseModel]] = {table: _part_model(table) for table in ROW_TYPES}
_ANY_PART: Any = Union[tuple(SNAPSHOT_PARTS.values())]  # noqa: UP007
SNAPSHOT_PART: TypeAdapter[Any] = TypeAdapter(Annotated[_ANY_PART, Field(discriminator="table")])

#: The VALUES expression that turns a wire row into a database row, where they differ.
WIRE_VALUES: dict[str, str] = {
    # grace minutes -> seconds, and closes_at = end + grace after.
    "bookings": "?1, ?2, ?3, ?4, ?5, ?6, ?7 * 60, ?8 * 60, ?5 + ?8 * 60",
}


def decode_part(data: bytes) -> tuple[str, list[tuple[Any, ...]]]:
    """Decompress and validate one chunk; return (table, rows for :data:`WIRE_VALUES`)."""
    try:
        decompressor = zlib.decompressobj()
        raw = decompressor.decompress(data, MAX_CHUNK_ROWS_BYTES)
        if decompressor.unconsumed_tail:
            raise DatasetError("snapshot chunk expands beyond the size limit")
    except zlib.error as exc:
        raise DatasetError(f"snapshot chunk is not zlib-compressed: {exc}") from None
    # Every row is an array holding at most two more: more brackets than that
    # means more rows than allowed, found before anything is built from them.
    if raw.count(b"[") > 3 * MAX_CHUNK_ROWS + 1:
        raise DatasetError(f"snapshot chunk holds more than {MAX_CHUNK_ROWS} rows")
    try:
        doc = unique_json(raw)
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"snapshot chunk: not JSON with unique members ({exc})") from None
    try:
        part = SNAPSHOT_PART.validate_python(doc)
    except ValidationError as exc:
        raise DatasetError(f"snapshot chunk: {describe_validation_error(exc)}") from None
    del doc
    table: str = part.table
    return table, _to_db_rows(table, part.rows)


def _to_db_rows(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    dumps = json.dumps
    if table == "bookings":
        # The conversion happens in SQL (WIRE_VALUES): here only what SQL does not check.
        bad = next((r for r in rows if r[4] <= r[3]), None)
        if bad is not None:
            raise DatasetError(f"snapshot bookings: {bad[0]!r} ends before it starts")
        return rows
    if table == "credentials":
        for r in rows:
            _check_credential(r[0], model.CredentialKind(r[2]), r[3])
            _check_window(table, r[0], r[5], r[6])
        return rows
    if table == "entitlements":
        for r in rows:
            _check_window(table, r[0], r[3], r[4])
        return rows
    if table == "site":
        if len(rows) != 1:
            raise DatasetError("snapshot site: exactly one row is needed")
        from gateway.core.localtime import check_timezone

        try:
            check_timezone(rows[0][1])
        except ValueError as exc:
            raise DatasetError(f"snapshot site: {exc}") from None
        return [(1, rows[0][0], rows[0][1], dumps(sorted(d.isoformat() for d in rows[0][2])))]
    if table == "doors":
        return [(r[0], r[1], dumps(sorted(r[2])), dumps(sorted(r[3]))) for r in rows]
    if table == "members":
        return [(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]
    if table == "plans":
        return [
            (r[0], r[1], dumps(sorted(r[2])), dumps(WeeklySchedule.parse(r[3]).texts()), int(r[4]))
            for r in rows
        ]
    if table == "passes":
        for r in rows:
            _check_window(table, r[0], r[6], r[7])
            if not r[4] and not r[5]:
                raise DatasetError(f"snapshot passes: {r[0]!r} has no door or door group")
        return [
            (r[0], r[1], r[2], r[3], dumps(sorted(r[4])), dumps(sorted(r[5])), r[6], r[7])
            for r in rows
        ]
    return rows


def _check_credential(cid: str, kind: model.CredentialKind, value: str) -> None:
    if kind is model.CredentialKind.PIN:
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise DatasetError(f"snapshot credentials: {cid!r}: a PIN value is its digest")
        return
    try:
        canonical = normalize(kind, value)
    except CredentialFormatError as exc:
        raise DatasetError(f"snapshot credentials: {cid!r}: {exc}") from None
    if canonical != value:
        raise DatasetError(f"snapshot credentials: {cid!r}: value is not canonical")


def _check_window(table: str, rid: str, start: int | None, end: int | None) -> None:
    if start is not None and end is not None and end <= start:
        raise DatasetError(f"snapshot {table}: {rid!r}: valid_until must be after valid_from")


def dataset_parts(ds: model.Dataset) -> list[tuple[str, list[list[Any]]]]:
    """A dataset as snapshot rows per table, parents first (the platform's side)."""
    return [
        ("site", [[ds.site.id, ds.site.timezone, sorted(d.isoformat() for d in ds.site.closures)]]),
        ("resources", [[r.id, r.name] for r in ds.resources]),
        ("doors", [[d.id, d.name, sorted(d.resources), sorted(d.groups)] for d in ds.doors]),
        (
            "members",
            [[m.id, m.name, m.status.value, m.extended_unlock, m.staff] for m in ds.members],
        ),
        (
            "credentials",
            [
                [
                    c.id,
                    c.member_id,
                    c.kind.value,
                    c.value,
                    c.status.value,
                    c.valid_from,
                    c.valid_until,
                ]
                for c in ds.credentials
            ],
        ),
        (
            "plans",
            [
                [p.id, p.name, sorted(p.door_groups), p.schedule.texts(), p.around_the_clock]
                for p in ds.plans
            ],
        ),
        (
            "entitlements",
            [[e.id, e.member_id, e.plan_id, e.valid_from, e.valid_until] for e in ds.entitlements],
        ),
        (
            "bookings",
            [
                [
                    b.id,
                    b.member_id,
                    b.resource_id,
                    b.start,
                    b.end,
                    b.payment.value,
                    b.grace_before // 60,
                    b.grace_after // 60,
                ]
                for b in ds.bookings
            ],
        ),
        (
            "passes",
            [
                [
                    p.id,
                    p.member_id,
                    p.kind.value,
                    p.name,
                    sorted(p.doors),
                    sorted(p.door_groups),
                    p.valid_from,
                    p.valid_until,
                ]
                for p in ds.passes
            ],
        ),
        ("revoked_passes", [[r.id, r.until] for r in ds.revoked_passes]),
    ]
