"""The wire form of the platform's data, validated, and its conversion to the model.

These pydantic models are the single definition of what the platform sends:
the cache writer accepts only what they accept, and the JSON Schema files of
the sync protocol are generated from them.  Instants are ISO 8601 strings
with an offset; grace periods are minutes.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.core import credentials, model
from gateway.core.localtime import check_timezone
from gateway.core.schedule import WeeklySchedule
from gateway.errors import CredentialFormatError, DatasetError

#: The form of every id: 1-128 characters, starting with a letter or digit.
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]


#: A JSON integer: not `true` (1 in lax pydantic), not the string "10".  (A
#: whole number written 10.0 is read as 10 with the JSON: :func:`unique_json`.)
Integer = Annotated[int, Strict()]
#: A JSON boolean: not 1, "yes" or "true", which lax pydantic takes as true.
Flag = Annotated[bool, Strict()]


def _iso_text(value: Any) -> Any:
    # Lax pydantic reads a number, or a string of digits, as Unix seconds;
    # every ISO 8601 date it reads has its year's dash fifth.
    if type(value) is not str or value[4:5] != "-":
        raise ValueError(
            "an instant is an ISO 8601 string with an offset, such as 2026-03-10T09:00:00Z"
        )
    return value


#: An instant: an ISO 8601 string with its offset (docs/model.md).
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


def _date_text(value: Any) -> Any:
    # Lax pydantic reads a number as Unix seconds, and takes an instant at midnight.
    if type(value) is not str or len(value) != 10 or value[4:5] != "-":
        raise ValueError("a date is an ISO 8601 calendar date, such as 2026-12-25")
    return value


#: A local calendar date: YYYY-MM-DD (docs/model.md).
CalendarDate = Annotated[date, BeforeValidator(_date_text)]


def unique_json(data: bytes | str) -> Any:
    """The platform's JSON text parsed, as its schemas read it.

    A number written with a zero fraction is the integer (JSON Schema's
    ``integer`` takes ``10.0``; some JSON writers print whole numbers so),
    for the strict integer types to accept; no field the platform sends
    tells ``10`` from ``10.0``.  ValueError if any object names a member
    twice: two readers of one document could otherwise see two documents.
    """
    return json.loads(data, object_pairs_hook=_unique_members, parse_float=_number)


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        names = [k for k, _ in pairs]
        raise ValueError(f"member {next(k for k in names if names.count(k) > 1)!r} given twice")
    return out


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() else value


def _ts(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def _check_schedule(entries: list[str]) -> list[str]:
    return WeeklySchedule.parse(entries).texts()


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteDoc(_Wire):
    """The site: id, IANA timezone and local closure dates."""

    id: Id
    timezone: str = Field(examples=["Europe/London"])
    closures: list[CalendarDate] = Field(default_factory=list)

    _known_zone = field_validator("timezone")(check_timezone)

    def to_model(self) -> model.Site:
        """The decision core's :class:`~gateway.core.model.Site`."""
        return model.Site(self.id, self.timezone, frozenset(self.closures), ZoneInfo(self.timezone))


class DoorDoc(_Wire):
    """A door, the resources behind it and the door groups it is in."""

    id: Id
    name: Name
    resources: list[Id] = Field(default_factory=list)
    groups: list[Id] = Field(default_factory=list)

    def to_model(self) -> model.Door:
        """The decision core's :class:`~gateway.core.model.Door`."""
        return model.Door(self.id, self.name, frozenset(self.resources), frozenset(self.groups))


class ResourceDoc(_Wire):
    """A bookable resource."""

    id: Id
    name: Name

    def to_model(self) -> model.Resource:
        """The decision core's :class:`~gateway.core.model.Resource`."""
        return model.Resource(self.id, self.name)


class MemberDoc(_Wire):
    """A member and the state of their account."""

    id: Id
    name: Name
    status: model.MemberStatus
    extended_unlock: Flag = False
    staff: Flag = False

    def to_model(self) -> model.Member:
        """The decision core's :class:`~gateway.core.model.Member`."""
        return model.Member(self.id, self.name, self.status, self.extended_unlock, self.staff)


class CredentialDoc(_Wire):
    """A credential in canonical form (PINs as their digest, see docs/model.md)."""

    id: Id
    member_id: Id
    kind: model.CredentialKind
    value: str = Field(min_length=1, max_length=128)
    status: model.CredentialStatus = model.CredentialStatus.ACTIVE
    valid_from: Instant | None = None
    valid_until: Instant | None = None

    @model_validator(mode="after")
    def _canonical(self) -> CredentialDoc:
        if self.kind is model.CredentialKind.PIN:
            if len(self.value) != 64 or any(c not in "0123456789abcdef" for c in self.value):
                raise ValueError("a PIN credential's value is its digest: 64 lower-case hex digits")
        else:
            try:
                canonical = credentials.normalize(self.kind, self.value)
            except CredentialFormatError as exc:
                raise ValueError(str(exc)) from exc
            if canonical != self.value:
                raise ValueError(f"value is not canonical; send {canonical!r}")
        _ordered(self.valid_from, self.valid_until)
        return self

    def to_model(self) -> model.Credential:
        """The decision core's :class:`~gateway.core.model.Credential`."""
        return model.Credential(
            self.id,
            self.member_id,
            self.kind,
            self.value,
            self.status,
            _ts(self.valid_from),
            _ts(self.valid_until),
        )


class PlanDoc(_Wire):
    """A plan: door groups and weekly hours, or around the clock."""

    id: Id
    name: Name
    door_groups: list[Id]
    schedule: Annotated[list[str], AfterValidator(_check_schedule)] = Field(
        default_factory=list, examples=[["Mon-Fri 08:00-20:00", "Sat 10:00-16:00"]]
    )
    around_the_clock: Flag = False

    def to_model(self) -> model.Plan:
        """The decision core's :class:`~gateway.core.model.Plan`."""
        return model.Plan(
            self.id,
            self.name,
            frozenset(self.door_groups),
            WeeklySchedule.parse(self.schedule),
            self.around_the_clock,
        )


class EntitlementDoc(_Wire):
    """A member holding a plan between two instants."""

    id: Id
    member_id: Id
    plan_id: Id
    valid_from: Instant | None = None
    valid_until: Instant | None = None

    @model_validator(mode="after")
    def _window(self) -> EntitlementDoc:
        _ordered(self.valid_from, self.valid_until)
        return self

    def to_model(self) -> model.Entitlement:
        """The decision core's :class:`~gateway.core.model.Entitlement`."""
        return model.Entitlement(
            self.id, self.member_id, self.plan_id, _ts(self.valid_from), _ts(self.valid_until)
        )


class BookingDoc(_Wire):
    """A booking of a resource, with its payment state and grace minutes."""

    id: Id
    member_id: Id
    resource_id: Id
    start: Instant
    end: Instant
    payment: model.PaymentStatus
    grace_before_min: Integer = Field(default=0, ge=0, le=24 * 60)
    grace_after_min: Integer = Field(default=0, ge=0, le=24 * 60)

    @model_validator(mode="after")
    def _window(self) -> BookingDoc:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def to_model(self) -> model.Booking:
        """The decision core's :class:`~gateway.core.model.Booking`."""
        return model.Booking(
            self.id,
            self.member_id,
            self.resource_id,
            int(self.start.timestamp()),
            int(self.end.timestamp()),
            self.payment,
            self.grace_before_min * 60,
            self.grace_after_min * 60,
        )


class PassDoc(_Wire):
    """A day pass or visitor invite for its holder, with its own doors and window."""

    id: Id
    member_id: Id
    kind: model.PassKind
    name: Name = "pass"
    doors: list[Id] = Field(default_factory=list)
    door_groups: list[Id] = Field(default_factory=list)
    valid_from: Instant
    valid_until: Instant

    @model_validator(mode="after")
    def _window(self) -> PassDoc:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if not self.doors and not self.door_groups:
            raise ValueError("a pass needs at least one door or door group")
        return self

    def to_model(self) -> model.Pass:
        """The decision core's :class:`~gateway.core.model.Pass`."""
        return model.Pass(
            self.id,
            self.member_id,
            self.kind,
            self.name,
            frozenset(self.doors),
            frozenset(self.door_groups),
            int(self.valid_from.timestamp()),
            int(self.valid_until.timestamp()),
        )


class RevokedPassDoc(_Wire):
    """A signed QR pass withdrawn before its end; ``until`` is that end."""

    id: Id
    until: Instant

    def to_model(self) -> model.RevokedPass:
        """The decision core's :class:`~gateway.core.model.RevokedPass`."""
        return model.RevokedPass(self.id, int(self.until.timestamp()))


def _ordered(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise ValueError("valid_until must be after valid_from")


class DatasetDoc(_Wire):
    """A complete dataset for one site, as a snapshot carries it."""

    version: Integer = Field(ge=0)
    site: SiteDoc
    doors: list[DoorDoc] = Field(default_factory=list)
    resources: list[ResourceDoc] = Field(default_factory=list)
    members: list[MemberDoc] = Field(default_factory=list)
    credentials: list[CredentialDoc] = Field(default_factory=list)
    plans: list[PlanDoc] = Field(default_factory=list)
    entitlements: list[EntitlementDoc] = Field(default_factory=list)
    bookings: list[BookingDoc] = Field(default_factory=list)
    passes: list[PassDoc] = Field(default_factory=list)
    revoked_passes: list[RevokedPassDoc] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetDoc:
        for section in (
            "doors",
            "resources",
            "members",
            "credentials",
            "plans",
            "entitlements",
            "bookings",
            "passes",
            "revoked_passes",
        ):
            counts = Counter(item.id for item in getattr(self, section))
            dupes = sorted(k for k, n in counts.items() if n > 1)
            if dupes:
                raise ValueError(f"{section}: duplicate ids {dupes[:5]}")
        values = Counter((c.kind, c.value) for c in self.credentials)
        dupes_v = [f"{k}:{v}" for (k, v), n in values.items() if n > 1]
        if dupes_v:
            raise ValueError(f"credentials: the same value is held twice: {dupes_v[:5]}")
        members = {m.id for m in self.members}
        plans = {p.id for p in self.plans}
        resources = {r.id for r in self.resources}
        for section, ids, attr in (
            ("credentials", members, "member_id"),
            ("entitlements", members, "member_id"),
            ("entitlements", plans, "plan_id"),
            ("bookings", members, "member_id"),
            ("bookings", resources, "resource_id"),
            ("passes", members, "member_id"),
        ):
            for item in getattr(self, section):
                if getattr(item, attr) not in ids:
                    raise ValueError(
                        f"{section}: {item.id!r} names {attr} {getattr(item, attr)!r}, "
                        "which is not in the dataset"
                    )
        for door in self.doors:
            for rid in door.resources:
                if rid not in resources:
                    raise ValueError(f"doors: {door.id!r} serves unknown resource {rid!r}")
        return self

    def to_model(self) -> model.Dataset:
        """The whole dataset as decision-core objects."""
        return model.Dataset(
            version=self.version,
            site=self.site.to_model(),
            doors=tuple(d.to_model() for d in self.doors),
            resources=tuple(r.to_model() for r in self.resources),
            members=tuple(m.to_model() for m in self.members),
            credentials=tuple(c.to_model() for c in self.credentials),
            plans=tuple(p.to_model() for p in self.plans),
            entitlements=tuple(e.to_model() for e in self.entitlements),
            bookings=tuple(b.to_model() for b in self.bookings),
            passes=tuple(p.to_model() for p in self.passes),
            revoked_passes=tuple(r.to_model() for r in self.revoked_passes),
        )


#: Entity name in a change -> its wire model.
ENTITY_DOCS: dict[str, type[_Wire]] = {
    "door": DoorDoc,
    "resource": ResourceDoc,
    "member": MemberDoc,
    "credential": CredentialDoc,
    "plan": PlanDoc,
    "entitlement": EntitlementDoc,
    "booking": BookingDoc,
    "pass": PassDoc,
    "revoked_pass": RevokedPassDoc,
}

EntityName = Literal[
    "site",
    "door",
    "resource",
    "member",
    "credential",
    "plan",
    "entitlement",
    "booking",
    "pass",
    "revoked_pass",
]


class ChangeDoc(_Wire):
    """One incremental change: upsert an entity, or delete one by id."""

    op: Literal["upsert", "delete"]
    entity: EntityName
    id: Id | None = None
    data: dict[str, Any] | None = None

    #: The entity an upsert carries, validated once (by ``_shape``).
    _entity: _Wire | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _shape(self) -> ChangeDoc:
        if self.op == "upsert":
            if self.data is None:
                raise ValueError("an upsert carries 'data'")
            doc_type: type[_Wire] = SiteDoc if self.entity == "site" else ENTITY_DOCS[self.entity]
            self._entity = doc_type.model_validate(self.data)
        elif self.entity == "site":
            raise ValueError("the site cannot be deleted")
        elif self.id is None:
            raise ValueError("a delete carries 'id'")
        return self

    def entity_doc(self) -> _Wire:
        """The validated entity an upsert carries."""
        assert self._entity is not None, "only an upsert carries an entity"
        return self._entity

    def to_change(self) -> model.Change:
        """The change for the core: a delete by id, or the upserted entity."""
        if self.op == "delete":
            assert self.id is not None
            return model.Delete(self.entity, self.id)
        return model.Upsert(self.entity_doc().to_model())  # type: ignore[attr-defined]


_FRIENDLY = {
    "missing": "required setting is missing",
    "extra_forbidden": "not a known field (check its spelling and section)",
}


def first_problem(err: ValidationError) -> tuple[str, str]:
    """The first error of ``err`` as (dotted location, readable message)."""
    e = err.errors()[0]
    message = _FRIENDLY.get(e["type"], e["msg"].removeprefix("Value error, "))
    return format_location(e["loc"]), message


def all_problems(err: ValidationError) -> list[tuple[str, str]]:
    """Every error of ``err`` as (dotted location, readable message), in order."""
    return [
        (
            format_location(e["loc"]),
            _FRIENDLY.get(e["type"], e["msg"].removeprefix("Value error, ")),
        )
        for e in err.errors()
    ]


def describe_validation_error(err: ValidationError, limit: int = 5) -> str:
    """Render pydantic's errors as ``where: what`` lines naming the exact field."""
    lines = []
    for e in err.errors()[:limit]:
        where = format_location(e["loc"])
        msg = _FRIENDLY.get(e["type"], e["msg"].removeprefix("Value error, "))
        lines.append(f"{where}: {msg}" if where else msg)
    more = err.error_count() - limit
    if more > 0:
        lines.append(f"... and {more} more")
    return "; ".join(lines)


def format_location(loc: tuple[int | str, ...]) -> str:
    """``('doors', 2, 'id')`` -> ``doors[2].id``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_dataset(data: bytes | str | dict[str, Any]) -> model.Dataset:
    """Validate a dataset document and convert it; raise DatasetError naming the field."""
    if not isinstance(data, dict):
        try:
            data = unique_json(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
            raise DatasetError(f"invalid dataset: not JSON with unique members ({exc})") from None
    try:
        doc = DatasetDoc.model_validate(data)
    except ValidationError as exc:
        raise DatasetError(f"invalid dataset: {describe_validation_error(exc)}") from None
    return doc.to_model()


def load_dataset_file(path: Path) -> model.Dataset:
    """Read and validate a dataset JSON file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return parse_dataset(raw)
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def parse_changes(data: bytes | str | list[Any]) -> list[model.Change]:
    """Validate a list of change documents; raise DatasetError naming the bad one."""
    try:
        raw: list[Any] = unique_json(data) if isinstance(data, bytes | str) else data
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"changes are not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise DatasetError("changes must be a JSON list")
    out: list[model.Change] = []
    for i, item in enumerate(raw):
        try:
            doc = ChangeDoc.model_validate(item)
        except ValidationError as exc:
            raise DatasetError(f"change [{i}]: {describe_validation_error(exc)}") from None
        out.append(doc.to_change())
    return out
