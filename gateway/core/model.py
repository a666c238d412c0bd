"""The entities the platform syncs to the gateway, as the decision core sees them.

These are plain frozen dataclasses: cheap to build on the tap path and safe
to share.  Instants are integer Unix seconds (UTC); local dates are
:class:`datetime.date`.  ``None`` for ``valid_from`` / ``valid_until`` means
"no bound".  The wire format that produces them lives in
:mod:`gateway.wire.dataset`; docs/model.md describes both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from zoneinfo import ZoneInfo

from gateway.core.schedule import WeeklySchedule


class MemberStatus(StrEnum):
    """Where a member's account stands with the operator."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"


class CredentialKind(StrEnum):
    """What a credential is; ``value`` is normalised per kind (:mod:`gateway.core.credentials`)."""

    NFC_UID = "nfc_uid"
    WIEGAND = "wiegand"
    PIN = "pin"
    APP_KEY = "app_key"


class CredentialStatus(StrEnum):
    """Whether a credential may be used at all."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    LOST = "lost"
    REVOKED = "revoked"


class PaymentStatus(StrEnum):
    """A booking's payment state; only PAID and INCLUDED open doors."""

    PAID = "paid"
    INCLUDED = "included_in_plan"
    UNPAID = "unpaid"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"

    @property
    def opens_doors(self) -> bool:
        """True for the two states that grant access."""
        return self is PaymentStatus.PAID or self is PaymentStatus.INCLUDED


class PassKind(StrEnum):
    """What a pass was issued as."""

    DAY_PASS = "day_pass"
    VISITOR = "visitor"


@dataclass(frozen=True, slots=True)
class Site:
    """The site a gateway belongs to: its zone and the local dates it is closed."""

    id: str
    timezone: str
    closures: frozenset[date]
    tz: ZoneInfo


@dataclass(frozen=True, slots=True)
class Door:
    """A door: the bookable resources behind it and the door groups it belongs to."""

    id: str
    name: str
    resources: frozenset[str]
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class Resource:
    """Something members book: a meeting room, a phone booth, a desk zone."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Member:
    """A person with an account.

    ``extended_unlock`` asks doors to stay open longer; ``staff`` marks site
    staff, whose access may be configured to outlast stale data.
    """

    id: str
    name: str
    status: MemberStatus
    extended_unlock: bool = False
    staff: bool = False


@dataclass(frozen=True, slots=True)
class Credential:
    """Something a member presents: a card, a PIN, an app key."""

    id: str
    member_id: str
    kind: CredentialKind
    value: str
    status: CredentialStatus
    valid_from: int | None = None
    valid_until: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A membership product: which door groups, on which weekly hours.

    ``around_the_clock`` (a "24/7" plan) ignores the schedule and the site's
    closure days.
    """

    id: str
    name: str
    door_groups: frozenset[str]
    schedule: WeeklySchedule
    around_the_clock: bool = False


@dataclass(frozen=True, slots=True)
class Entitlement:
    """A member holding a plan between two instants."""

    id: str
    member_id: str
    plan_id: str
    valid_from: int | None = None
    valid_until: int | None = None


@dataclass(frozen=True, slots=True)
class Booking:
    """A member's booking of a resource; grace is in seconds before start and after end."""

    id: str
    member_id: str
    resource_id: str
    start: int
    end: int
    payment: PaymentStatus
    grace_before: int = 0
    grace_after: int = 0

    @property
    def opens_at(self) -> int:
        """First instant the booking opens doors (start minus grace)."""
        return self.start - self.grace_before

    @property
    def closes_at(self) -> int:
        """First instant the booking no longer opens doors (end plus grace)."""
        return self.end + self.grace_after


@dataclass(frozen=True, slots=True)
class Pass:
    """A day pass or visitor invite: its own doors (by id or group) and window."""

    id: str
    member_id: str
    kind: PassKind
    name: str
    doors: frozenset[str]
    door_groups: frozenset[str]
    valid_from: int
    valid_until: int

    def covers(self, door: Door) -> bool:
        """True when this pass names ``door`` directly or through one of its groups."""
        return door.id in self.doors or not self.door_groups.isdisjoint(door.groups)


@dataclass(frozen=True, slots=True)
class RevokedPass:
    """A signed QR pass the platform withdrew (docs/credentials.md).

    ``until`` is when the pass would have ended anyway: after it, the entry
    no longer matters and the platform may delete it.
    """

    id: str
    until: int


@dataclass(frozen=True, slots=True)
class EntitlementPlan:
    """An entitlement together with its plan, as the decision reads them."""

    entitlement: Entitlement
    plan: Plan


@dataclass(frozen=True, slots=True)
class Dataset:
    """A whole, self-consistent copy of what one site's gateways need."""

    version: int
    site: Site
    doors: tuple[Door, ...]
    resources: tuple[Resource, ...]
    members: tuple[Member, ...]
    credentials: tuple[Credential, ...]
    plans: tuple[Plan, ...]
    entitlements: tuple[Entitlement, ...]
    bookings: tuple[Booking, ...]
    passes: tuple[Pass, ...]
    revoked_passes: tuple[RevokedPass, ...] = ()

    def tables(self) -> tuple[Sequence[Entity], ...]:
        """Every entity, one sequence per table, parents before children."""
        return (
            (self.site,),
            self.resources,
            self.doors,
            self.members,
            self.credentials,
            self.plans,
            self.entitlements,
            self.bookings,
            self.passes,
            self.revoked_passes,
        )


Entity = (
    Site | Door | Resource | Member | Credential | Plan | Entitlement | Booking | Pass | RevokedPass
)


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert an entity, or replace the one with the same id."""

    item: Entity


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete an entity by id; deleting what is not there is not an error.

    Deleting a member also deletes their credentials, entitlements, bookings
    and passes; deleting a plan or resource deletes what refers to it.
    """

    entity: str
    id: str


Change = Upsert | Delete

#: Entity name (in changes) -> its table and dataset section (the same word).
ENTITY_TABLES: dict[str, str] = {
    "door": "doors",
    "resource": "resources",
    "member": "members",
    "credential": "credentials",
    "plan": "plans",
    "entitlement": "entitlements",
    "booking": "bookings",
    "pass": "passes",
    "revoked_pass": "revoked_passes",
}
