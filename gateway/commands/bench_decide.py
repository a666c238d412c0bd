"""``doorgw bench decide``: decision latency on a large cache, against its floor.

The floor is measured in the same run, on the same taps: the bare indexed
SQLite statements a decision for that tap cannot avoid (site, door,
credential, and for a known active member also member, bookings, passes and
entitlements), fetched as raw rows inside one read transaction, with no
Python work on top.  The ratio says what the decision logic costs beyond
the reads it needs.  Decision and floor runs are interleaved tap by tap, so
both see the same machine noise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite

from gateway.clock import ManualClock
from gateway.core import model
from gateway.core.credentials import CredentialRead
from gateway.core.decision import LOOKBACK_SECONDS, Reason, decide
from gateway.core.schedule import WeeklySchedule
from gateway.store.reader import HOT_PATH_SQL, CacheReader
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


def _floor_plan(reason: Reason) -> tuple[str, ...]:
    """The statements a decision with this outcome cannot avoid."""
    if reason in (Reason.NO_DATA,):
        return ("site",)
    if reason is Reason.UNKNOWN_DOOR:
        return ("site", "door")
    if reason in (
        Reason.UNKNOWN_CREDENTIAL,
        Reason.CREDENTIAL_REVOKED,
        Reason.CREDENTIAL_LOST,
        Reason.CREDENTIAL_SUSPENDED,
        Reason.CREDENTIAL_NOT_YET_VALID,
        Reason.CREDENTIAL_EXPIRED,
    ):
        return ("site", "door", "credential")
    if reason in (Reason.MEMBER_SUSPENDED, Reason.MEMBER_CANCELLED):
        return ("site", "door", "credential", "member")
    return tuple(HOT_PATH_SQL)


def _percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1000


async def write_bench_cache(path: Path, ds: model.Dataset) -> None:
    """Write ``ds`` to a new cache at ``path`` through the sync's own writer."""
    async with CacheWriter(path, ManualClock(datetime.fromtimestamp(T0, TZ))) as writer:
        await writer.replace_dataset(ds)


def run(
    members: int,
    bookings: int,
    taps: int,
    seed: int,
    directory: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Build the cache in ``directory``, time the taps, return the figures."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    t = time.perf_counter()
    progress(f"building a dataset of {members:,} members and {bookings:,} bookings ...")
    ds = build_dataset(members, bookings, rng)
    path = directory / "bench-cache.sqlite3"
    path.unlink(missing_ok=True)
    asyncio.run(write_bench_cache(path, ds))
    build_s = time.perf_counter() - t
    tap_list = make_taps(ds, taps, rng)
    del ds
    gc.collect()
    gc.freeze()

    reader = CacheReader(path)
    conn = reader._conn  # the floor uses the very same connection and statement cache
    reads = [
        (CredentialRead(model.CredentialKind.NFC_UID, uid), door, at) for uid, door, at in tap_list
    ]
    # Untimed pass: learn each tap's outcome (and so its floor) and warm the caches.
    plans = []
    reasons: Counter[str] = Counter()
    for read, door, at in reads:
        with reader.view() as view:
            d = decide(view, read, door, at)
        reasons[d.reason.value] += 1
        plans.append(_floor_params(_floor_plan(d.reason), read, door, at, d.member_id))

    decide_ns: list[int] = []
    floor_ns: list[int] = []
    clock = time.perf_counter_ns
    execute = conn.execute
    progress(f"timing {taps:,} decisions and their floor ...")
    for (read, door, at), statements in zip(reads, plans, strict=True):
        t0 = clock()
        with reader.view() as view:
            decide(view, read, door, at)
        t1 = clock()
        execute("BEGIN")
        for sql, params in statements:
            execute(sql, params).fetchall()
        execute("COMMIT")
        t2 = clock()
        decide_ns.append(t1 - t0)
        floor_ns.append(t2 - t1)
    reader.close()
    gc.unfreeze()
    point_sync, point_async = _point_lookups(path, [r.value for r, _, _ in reads[:2000]])
    decide_ns.sort()
    floor_ns.sort()
    p50, p99 = _percentile(decide_ns, 0.50), _percentile(decide_ns, 0.99)
    f50, f99 = _percentile(floor_ns, 0.50), _percentile(floor_ns, 0.99)
    granted = sum(n for r, n in reasons.items() if r.startswith("granted_"))
    return {
        "members": members,
        "bookings": bookings,
        "taps": taps,
        "build_seconds": round(build_s, 1),
        "cache_mb": round(path.stat().st_size / 1e6, 1),
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "max_us": round(decide_ns[-1] / 1000, 1),
        "floor_p50_us": round(f50, 1),
        "floor_p99_us": round(f99, 1),
        "ratio": round(p99 / f99, 2),
        "ratio_p50": round(p50 / f50, 2),
        "granted_share": round(granted / taps, 3),
        "point_lookup_sqlite3_p50_us": round(point_sync, 1),
        "point_lookup_aiosqlite_p50_us": round(point_async, 1),
        "reasons": dict(reasons.most_common()),
    }


def _point_lookups(path: Path, values: list[str]) -> tuple[float, float]:
    """p50 of one credential point lookup through sqlite3 and through aiosqlite.

    This is why the tap path does not use aiosqlite: every call hops to its
    worker thread and back.
    """
    sql = HOT_PATH_SQL["credential"]
    reader = CacheReader(path)
    sync_ns = []
    for value in values:
        t0 = time.perf_counter_ns()
        reader._conn.execute(sql, ("nfc_uid", value)).fetchone()
        sync_ns.append(time.perf_counter_ns() - t0)
    reader.close()

    uri = f"{path.resolve().as_uri()}?mode=ro"

    async def measure() -> list[int]:
        out = []
        async with aiosqlite.connect(uri, uri=True) as db:
            for value in values:
                t0 = time.perf_counter_ns()
                async with db.execute(sql, ("nfc_uid", value)) as cursor:
                    await cursor.fetchone()
                out.append(time.perf_counter_ns() - t0)
        return out

    async_ns = asyncio.run(measure())
    return _percentile(sorted(sync_ns), 0.5), _percentile(sorted(async_ns), 0.5)


def _floor_params(
    names: tuple[str, ...], read: CredentialRead, door: str, at: int, member: str | None
) -> list[tuple[str, tuple[Any, ...]]]:
    params: dict[str, tuple[Any, ...]] = {
        "site": (),
        "door": (door,),
        "credential": (read.kind.value, read.value),
        "member": (member,),
        "bookings": (member, at - LOOKBACK_SECONDS),
        "passes": (member, at - LOOKBACK_SECONDS),
        "entitlements": (member,),
    }
    return [(HOT_PATH_SQL[name], params[name]) for name in names]


def bench_decide(args: argparse.Namespace) -> int:
    """The ``doorgw bench decide`` command."""

    def progress(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        result = run(args.members, args.bookings, args.taps, args.seed, args.dir, progress)
    else:
        with tempfile.TemporaryDirectory(prefix="doorgw-bench-") as tmp:
            result = run(args.members, args.bookings, args.taps, args.seed, Path(tmp), progress)
    if args.json:
        print(json.dumps(result))
        return 0
    met = result["p99_us"] <= 250 and result["ratio"] <= 3
    print(
        f"cache: {result['members']:,} members, {result['bookings']:,} bookings, "
        f"{result['cache_mb']} MB, built in {result['build_seconds']} s\n"
        f"taps:  {result['taps']:,} ({result['granted_share']:.0%} granted)\n"
        f"decision  p50 {result['p50_us']:>7.1f} us   p99 {result['p99_us']:>7.1f} us   "
        f"max {result['max_us']:.1f} us\n"
        f"floor     p50 {result['floor_p50_us']:>7.1f} us   p99 {result['floor_p99_us']:>7.1f} us"
        "   (bare indexed SQLite reads of the same taps)\n"
        f"ratio     p50 {result['ratio_p50']:>7.2f}      p99 {result['ratio']:>7.2f}\n"
        f"one credential lookup, p50: sqlite3 {result['point_lookup_sqlite3_p50_us']} us, "
        f"aiosqlite {result['point_lookup_aiosqlite_p50_us']} us (why the tap path is sync)\n"
        f"targets   p99 <= 250 us and ratio <= 3: {'met' if met else 'NOT met'}"
    )
    return 0
