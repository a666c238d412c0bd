"""``doorgw bench decide | qr | api | idle``: the gateway's own benchmarks, each against its floor.

``bench sync`` needs the simulator's broker and joins from the simulator
(:mod:`sim.commands`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.clock import Clock
from gateway.commands.common import Groups, positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``bench`` with ``decide``, ``qr``, ``api`` and ``idle``; others may add to
    ``groups["bench"]``."""
    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    b = bench.add_parser(
        "decide", help="time access decisions on a large cache against bare SQLite lookups"
    )
    b.add_argument("--members", type=positive_int(10_000_000), default=100_000)
    b.add_argument("--bookings", type=positive_int(100_000_000), default=1_000_000)
    b.add_argument("--taps", type=positive_int(10_000_000), default=20_000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--dir", type=Path, help="build the cache here (default: a temp dir)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_decide)
    b = bench.add_parser(
        "qr", help="scanned-code checks per second and latency against a bare Ed25519 verify"
    )
    b.add_argument("--members", type=positive_int(10_000_000), default=20_000)
    b.add_argument("--bookings", type=positive_int(100_000_000), default=200_000)
    b.add_argument("--codes", type=positive_int(10_000_000), default=20_000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_qr)
    b = bench.add_parser(
        "api", help="staff API latency on a kept-alive connection against bare uvicorn"
    )
    b.add_argument("--requests", type=positive_int(1_000_000), default=2000)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_api)
    b = bench.add_parser(
        "idle", help="what the first work after a pause costs on this machine, against back to back"
    )
    b.add_argument(
        "--pause",
        type=positive_float(60.0),
        default=0.5,
        metavar="SECONDS",
        help="idle time before each timed piece of work (default 0.5, about a tap's spacing)",
    )
    b.add_argument("--samples", type=positive_int(100_000), default=25)
    b.add_argument(
        "--pages", type=positive_int(65_536), default=2048, help="memory pages read (default 2048)"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_idle)
    groups["bench"] = bench


def bench_decide(args: argparse.Namespace, clock: Clock) -> int:
    """``bench decide``."""
    from gateway.commands.bench_decide import bench_decide

    return bench_decide(args)


def bench_qr(args: argparse.Namespace, clock: Clock) -> int:
    """``bench qr``."""
    from gateway.commands.bench_qr import bench_qr

    return bench_qr(args)


def bench_api(args: argparse.Namespace, clock: Clock) -> int:
    """``bench api``."""
    from gateway.commands.bench_api import bench_api

    return bench_api(args)


def bench_idle(args: argparse.Namespace, clock: Clock) -> int:
    """``bench idle``."""
    from gateway.commands.bench_idle import bench_idle

    return bench_idle(args)
