"""Synthetic sites of any size, for the benchmarks and the fleet simulator.

A site of 20 room doors over 40 resources, a front door and four plans, with
as many members and bookings as asked for; the same seed gives the same site.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import ManualClock
from gateway.core import model
from gateway.core.jws import b64url
from gateway.core.schedule import WeeklySchedule
from gateway.store.writer import CacheWriter

TZ = ZoneInfo("Europe/London")
#: The benchmark's "now": a Wednesday morning.
T0 = int(datetime(2026, 3, 11, 10, 30, tzinfo=TZ).timestamp())
_DAY = 86_400
_PAYMENTS = (
    [model.PaymentStatus.PAID] * 85
    + [model.PaymentStatus.INCLUDED] * 5
    + [model.PaymentStatus.UNPAID] * 5
    + [model.PaymentStatus.REFUNDED] * 3
    + [model.PaymentStatus.CANCELLED] * 2
)


def _uid(i: int) -> str:
    return f"04{i:012X}"


def build_dataset(members: int, bookings: int, rng: random.Random) -> model.Dataset:
    """A synthetic site: 20 room doors over 40 resources, a front door, 4 plans."""
    resources = tuple(model.Resource(f"res-{i}", f"Room {i}") for i in range(40))
    doors = [model.Door("front", "Front door", frozenset(), frozenset({"building"}))]
    doors += [
        model.Door(
            f"room-{i}",
            f"Room door {i}",
            frozenset({f"res-{2 * i}", f"res-{2 * i + 1}"}),
            frozenset({"meeting-rooms"}),
        )
        for i in range(20)
    ]
    plans = (
        model.Plan(
            "hot-desk",
            "Hot Desk",
            frozenset({"building"}),
            WeeklySchedule.parse(["Mon-Fri 08:00-20:00"]),
        ),
        model.Plan(
            "night-owl",
            "Night Owl",
            frozenset({"building"}),
            WeeklySchedule.parse(["Mon-Fri 22:00-06:00"]),
        ),
        model.Plan(
            "weekend",
            "Weekend",
            frozenset({"building"}),
            WeeklySchedule.parse(["Sat,Sun 09:00-18:00"]),
        ),
        model.Plan(
            "resident",
            "Resident",
            frozenset({"building", "meeting-rooms"}),
            WeeklySchedule.parse([]),
            around_the_clock=True,
        ),
    )
    statuses = [model.MemberStatus.ACTIVE] * 97 + [model.MemberStatus.SUSPENDED] * 3
    member_rows = tuple(
        model.Member(f"m{i}", f"Member {i}", rng.choice(statuses)) for i in range(members)
    )
    cred_statuses = [model.CredentialStatus.ACTIVE] * 98 + [model.CredentialStatus.REVOKED] * 2
    credentials = tuple(
        model.Credential(
            f"c{i}", f"m{i}", model.CredentialKind.NFC_UID, _uid(i), rng.choice(cred_statuses)
        )
        for i in range(members)
    )
    entitlements = tuple(
        model.Entitlement(f"e{i}", f"m{i}", rng.choice(plans).id, T0 - 90 * _DAY, T0 + 90 * _DAY)
        for i in range(members)
        if rng.random() < 0.6
    )
    booking_rows = []
    for j in range(bookings):
        start = T0 + rng.randrange(-15 * _DAY, 15 * _DAY) // 900 * 900
        booking_rows.append(
            model.Booking(
                f"b{j}",
                f"m{rng.randrange(members)}",
                f"res-{rng.randrange(40)}",
                start,
                start + rng.choice((1800, 3600, 7200, 14400)),
                rng.choice(_PAYMENTS),
                600,
                600,
            )
        )
    passes = tuple(
        model.Pass(
            f"p{i}",
            f"m{i}",
            model.PassKind.DAY_PASS,
            "day pass",
            frozenset(),
            frozenset({"building"}),
            day,
            day + _DAY,
        )
        for i in range(0, members, 20)
        for day in [T0 - T0 % _DAY + rng.randrange(-3, 4) * _DAY]
    )
    site = model.Site("bench", TZ.key, frozenset({date(2026, 4, 3)}), TZ)
    return model.Dataset(
        1,
        site,
        tuple(doors),
        resources,
        member_rows,
        credentials,
        plans,
        entitlements,
        tuple(booking_rows),
        passes,
    )


def make_taps(ds: model.Dataset, count: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """(credential value, door id, instant): a mix of hits and misses of every kind."""
    door_of = {r: d.id for d in ds.doors for r in d.resources}
    taps = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.5:  # someone arriving for a booking, early, on time or late
            b = ds.bookings[rng.randrange(len(ds.bookings))]
            member = int(b.member_id[1:])
            at = b.start + rng.randrange(-3600, b.end - b.start + 3600)
            taps.append((_uid(member), door_of[b.resource_id], at))
        elif roll < 0.8:  # the front door, any hour of the coming week
            taps.append(
                (_uid(rng.randrange(len(ds.members))), "front", T0 + rng.randrange(-_DAY, 6 * _DAY))
            )
        elif roll < 0.9:  # a room door nobody booked
            taps.append(
                (
                    _uid(rng.randrange(len(ds.members))),
                    f"room-{rng.randrange(20)}",
                    T0 + rng.randrange(0, _DAY),
                )
            )
        else:  # a card the site has never seen
            taps.append((_uid(len(ds.members) + rng.randrange(10**6)), "front", T0))
    return taps


def app_credential(
    credential_id: str, member_id: str
) -> tuple[model.Credential, Ed25519PrivateKey]:
    """A member app's key credential, with the private key the app would hold."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    credential = model.Credential(
        credential_id,
        member_id,
        model.CredentialKind.APP_KEY,
        b64url(raw),
        model.CredentialStatus.ACTIVE,
    )
    return credential, key


def rank(count: int, q: float) -> int:
    """The index of the ``q`` quantile among ``count`` sorted values (nearest rank).

    The smallest value with at least ``q`` of all values at or below it: of 100
    samples the p99 is the 99th, not the largest (that is the max).
    """
    return min(count - 1, max(0, math.ceil(count * q) - 1))


def percentile(sorted_ns: list[int], q: float) -> float:
    """The ``q`` quantile of sorted nanoseconds, in microseconds (:func:`rank`)."""
    return sorted_ns[rank(len(sorted_ns), q)] / 1000


async def write_bench_cache(path: Path, ds: model.Dataset) -> None:
    """Write ``ds`` to a new cache at ``path`` through the sync's own writer."""
    async with CacheWriter(path, ManualClock(datetime.fromtimestamp(T0, TZ))) as writer:
        await writer.replace_dataset(ds)
