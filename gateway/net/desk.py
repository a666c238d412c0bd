"""What the staff API sees of a running gateway: :class:`StaffDesk`, and what /metrics reads.

Kept apart from :mod:`gateway.net.api` so the gateway can implement the desk
(:class:`gateway.app.staff.GatewayDesk`) without loading FastAPI, uvicorn
and prometheus_client: a gateway without ``[api]`` never imports them
(about 30 MB of a small Pi's memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class DoorMetrics:
    """One driven door, as /metrics reports it."""

    door_id: str
    locked: bool
    is_open: bool | None
    alarm: str | None
    relay_cycles: int


@dataclass(frozen=True)
class GatewayMetrics:
    """What /metrics reports, read at scrape time."""

    decisions: Mapping[str, int]
    data_age_s: int | None
    dataset_version: int | None
    delta_lag_s: float | None
    outbox_depth: int
    clock_trusted: bool
    lockdown: bool
    mqtt_connected: bool
    readers_online: Mapping[str, bool]
    doors: Sequence[DoorMetrics] = field(default_factory=tuple)


class UnknownError(LookupError):
    """The door or reader named is not this gateway's; the API answers 404."""


class StaffDesk(Protocol):
    """What the staff API may see of a running gateway, and ask of it."""

    def monotonic(self) -> float:
        """The gateway's monotonic clock (for the wrong-token limiter)."""
        ...

    async def record(self, type_: str, data: dict[str, Any]) -> None:
        """Record one event (staff actions, auth failures, the API's own trouble)."""
        ...

    def not_ready(self) -> list[str]:
        """Why the gateway cannot grant access now; empty when it can."""
        ...

    def status(self) -> dict[str, Any]:
        """The body of ``GET /api/status``."""
        ...

    def metrics(self) -> GatewayMetrics:
        """What /metrics reports."""
        ...

    def recent_events(self) -> Sequence[Mapping[str, Any]]:
        """The latest events, oldest first, each with an ``id``."""
        ...

    def drives(self, door_id: str) -> bool:
        """Whether this gateway drives the door's lock."""
        ...

    async def unlock(self, door_id: str, *, by: str, seconds: float | None) -> str:
        """Unlock a driven door now, for staff member ``by``; the door's state after."""
        ...

    async def set_lockdown(self, on: bool, *, by: str) -> bool:
        """Enter or leave lockdown; whether the site is in lockdown after."""
        ...

    def member_access(self, member_id: str, days: int) -> dict[str, Any] | None:
        """Which doors a member can open in the next ``days`` (None: no such member)."""
        ...

    def start_enrolment(self, reader_id: str, seconds: float) -> None:
        """Report the next card at ``reader_id``.  UnknownError if there is no such reader."""
        ...

    def enrolled_card(self, reader_id: str) -> dict[str, Any] | None:
        """The card last enrolled at ``reader_id``.  UnknownError if there is no such reader."""
        ...
