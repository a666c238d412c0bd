"""The staff API's answers, as models: what ``/openapi.json`` tells a client to expect.

Most routes validate their answer against these (``response_model``);
``GET /api/status`` builds plain JSON for speed and only declares this
shape, and ``tests/test_api.py`` checks a real answer against it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Live(_Answer):
    """``GET /health/live``."""

    status: Literal["alive"]


class Ready(_Answer):
    """``GET /health/ready``: 200 ``ready``, or 503 ``not_ready`` with why."""

    status: Literal["ready", "not_ready"]
    why: list[str] = Field(description="why not: no data yet, or every grant kind stale")


class DoorStatus(_Answer):
    """One configured door."""

    id: str
    name: str
    state: str = Field(
        description="as in a heartbeat: locked/unlocked, /open or /closed, an alarm; not_driven"
    )
    locked: bool | None = Field(description="null for a door without a lock relay")
    open: bool | None = Field(description="null without a contact, or not driven")
    alarm: str | None = Field(description="door_forced or door_held_open while raised")
    held: bool | None = Field(description="standing unlocked in its scheduled hours")


class ReaderStatus(_Answer):
    """One configured reader."""

    id: str
    online: bool


class SyncStatus(_Answer):
    """The platform link and the data."""

    connected: bool
    dataset_version: int | None
    platform_version: int | None = Field(description="the latest version the platform announced")
    data_age_s: int | None
    stale_classes: list[str]
    last_delta_lag_s: float | None = Field(description="from signing to applying, last delta")


class FlushStatus(_Answer):
    """How syncing events to the storage goes (docs/doors.md, "What survives a crash")."""

    window_ms: int
    flushes: int
    late: int
    last_ms: float
    max_ms: float
    error: str | None


class OutboxStatus(_Answer):
    """Events waiting for the platform."""

    depth: int = Field(description="events stored and not acknowledged")
    last_seq: int
    acked_seq: int
    storage_error: str | None
    durable_seq: int
    flush: FlushStatus | None = Field(description="null where every commit syncs")


class ClaimsStatus(_Answer):
    """The claims file: nonces of scanned app codes, and pass uses (docs/doors.md,
    "What survives a crash")."""

    flush: FlushStatus


class ClockStatus(_Answer):
    """Whether time-bound codes are accepted (docs/credentials.md, "Time")."""

    trusted: bool
    source: str | None
    skew_s: float | None


class ApiConnections(_Answer):
    """This API's connections since it started (docs/api.md, "Limits")."""

    max_connections: int
    open: int
    refused: int
    dropped_idle: int


class Status(_Answer):
    """``GET /api/status``."""

    gateway: str
    site: str
    version: str = Field(description="the doorgw release")
    lockdown: bool
    doors: list[DoorStatus]
    readers: list[ReaderStatus]
    sync: SyncStatus
    outbox: OutboxStatus
    claims: ClaimsStatus
    services_down: list[str]
    service_failures: dict[str, int]
    clock: ClockStatus
    api: ApiConnections | None


class Event(_Answer):
    """One recent event (docs/protocol.md lists the types and their data)."""

    id: int = Field(description="this API's own counter, for paging")
    seq: int | None = Field(description="the outbox's sequence number; null if not stored")
    at: int
    type: str
    data: dict[str, object]


class EventsPage(_Answer):
    """``GET /api/events``."""

    events: list[Event]
    next: int | None = Field(description="the `before` of the next page; null at the end")


class Unlocked(_Answer):
    """``POST /api/doors/{door}/unlock``."""

    door: str
    state: str


class Lockdown(_Answer):
    """``POST /api/lockdown``."""

    lockdown: bool


class Grant(_Answer):
    """What a window of access comes from."""

    kind: str
    id: str


class Window(_Answer):
    """When the member can open a door (ISO 8601, UTC)."""

    door: str
    start: str
    end: str
    grant: Grant
    label: str


class CredentialSummary(_Answer):
    """A credential of the member (never its value)."""

    id: str
    kind: str
    status: str


class MemberAccess(_Answer):
    """``GET /api/members/{member}/access``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    member: str
    name: str
    status: str
    blocked: str | None = Field(description="the reason code that blocks everything, if one")
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    credentials: list[CredentialSummary]
    windows: list[Window]


class EnrolStarted(_Answer):
    """``POST /api/readers/{reader}/enrol``."""

    reader: str
    waiting_seconds: float


class Card(_Answer):
    """A card read while enrolling."""

    reader: str
    door: str
    kind: str
    value: str
    at: int


class Enrolled(_Answer):
    """``GET /api/readers/{reader}/enrol``."""

    reader: str
    card: Card | None = Field(description="null until a card is tapped")


class Problem(_Answer):
    """Every error answer."""

    detail: str
