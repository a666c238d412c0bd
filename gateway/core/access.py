"""What a member may open, and when: the windows behind ``doorgw access``.

This is the decision turned around: instead of "does this read open this
door now", it lists every span of time in a horizon during which the
member's bookings, plans and passes open each door.  It reads the same
:class:`~gateway.core.decision.CacheView`, uses the same schedule spans and the
same grace rules, so a tap inside a listed window of an active credential
is granted, and every grant lies inside a listed window (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.decision import CacheView, Grant, Reason
from gateway.core.localtime import to_iso
from gateway.core.model import Credential, Door, Member, MemberStatus


class AccessView(CacheView, Protocol):
    """A cache view that can also list doors and a member's credentials."""

    def doors(self) -> list[Door]:
        """Every door."""
        ...

    def credentials_of(self, member_id: str) -> list[Credential]:
        """All of a member's credentials."""
        ...


@dataclass(frozen=True, slots=True)
class AccessWindow:
    """A span during which a grant opens a door; ``end`` None means open-ended."""

    door: Door
    start: int
    end: int | None
    grant: Grant
    label: str


@dataclass(frozen=True, slots=True)
class MemberAccess:
    """A member, their credentials, and the windows they may open doors in.

    ``blocked`` is set (and ``windows`` empty) when the member's account
    stops every door from opening.
    """

    member: Member
    credentials: Sequence[Credential]
    windows: Sequence[AccessWindow]
    blocked: Reason | None = None


def member_access(
    view: AccessView, member_id: str, start: int, end: int, *, lockdown: bool = False
) -> MemberAccess | None:
    """The member's access windows overlapping ``[start, end)``; None if no such member.

    During a ``lockdown`` only staff members have windows: everyone else is
    ``blocked`` with ``lockdown``, as the doors would refuse them.
    """
    member = view.member(member_id)
    if member is None:
        return None
    creds = view.credentials_of(member_id)
    if member.status is not MemberStatus.ACTIVE:
        blocked = (
            Reason.MEMBER_SUSPENDED
            if member.status is MemberStatus.SUSPENDED
            else Reason.MEMBER_CANCELLED
        )
        return MemberAccess(member, creds, (), blocked)
    if lockdown and not member.staff:
        return MemberAccess(member, creds, (), Reason.LOCKDOWN)
    site = view.site()
    if site is None:
        return MemberAccess(member, creds, (), Reason.NO_DATA)

    bookings = [
        b for b in view.bookings(member_id, start) if b.payment.opens_doors and b.opens_at < end
    ]
    passes = [p for p in view.passes(member_id, start) if p.valid_from < end]
    entitlements = view.entitlements(member_id)
    windows: list[AccessWindow] = []
    for door in view.doors():
        for b in bookings:
            if b.resource_id in door.resources:
                windows.append(
                    AccessWindow(
                        door,
                        b.opens_at,
                        b.closes_at,
                        Grant("booking", b.id),
                        f"booking {b.id} for {view.resource_name(b.resource_id)}",
                    )
                )
        for p in passes:
            if p.covers(door):
                windows.append(
                    AccessWindow(
                        door, p.valid_from, p.valid_until, Grant("pass", p.id), f"{p.name} {p.id}"
                    )
                )
        for ep in entitlements:
            ent, plan = ep.entitlement, ep.plan
            if plan.door_groups.isdisjoint(door.groups):
                continue
            lo = start if ent.valid_from is None else max(start, ent.valid_from)
            hi = end if ent.valid_until is None else min(end, ent.valid_until)
            if lo >= hi:
                continue
            label = f"plan {plan.name}"
            if plan.around_the_clock:
                windows.append(
                    AccessWindow(
                        door, ent.valid_from or lo, ent.valid_until, Grant("plan", ent.id), label
                    )
                )
                continue
            for s, e in plan.schedule.instant_spans(lo, hi, site.tz, site.closures.__contains__):
                s = s if ent.valid_from is None else max(s, ent.valid_from)
                if ent.valid_until is not None:
                    e = ent.valid_until if e is None else min(e, ent.valid_until)
                if e is None or s < e:
                    windows.append(AccessWindow(door, s, e, Grant("plan", ent.id), label))
    windows.sort(key=lambda w: (w.door.id, w.start))
    return MemberAccess(member, creds, windows)


def access_json(result: MemberAccess, start: int, end: int) -> dict[str, Any]:
    """A member's access as JSON (instants in ISO 8601 UTC): for ``doorgw access`` and the API."""
    return {
        "member": result.member.id,
        "name": result.member.name,
        "status": result.member.status.value,
        "blocked": None if result.blocked is None else result.blocked.value,
        "from": to_iso(start),
        "to": to_iso(end),
        "credentials": [
            {"id": c.id, "kind": c.kind.value, "status": c.status.value} for c in result.credentials
        ],
        "windows": [
            {
                "door": w.door.id,
                "start": to_iso(w.start),
                "end": to_iso(w.end),
                "grant": {"kind": w.grant.kind, "id": w.grant.id},
                "label": w.label,
            }
            for w in result.windows
        ],
    }
