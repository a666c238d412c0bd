"""The simulator's commands, joined to ``doorgw`` through the ``doorgw.commands`` entry point.

``doorgw sim`` (the live site), ``sim run FILE``, ``sim demo``, ``sim fleet``,
``bench sync``, ``bench drain`` and ``bench restart``.  Installed with the
simulator only: a gateway on a Pi has none of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gateway.clock import Clock
from gateway.commands.common import (
    Groups,
    duration,
    local_start,
    make_dir,
    non_negative_float,
    positive_float,
    positive_int,
    workdir,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``sim`` and ``bench sync``."""
    p = sub.add_parser(
        "sim",
        help="the simulated site: run it live, run scripted scenarios, measure a fleet",
        description="Without an ACTION: run a whole virtual site (broker, platform stand-in, "
        "gateways on emulated hardware) with a live view until Ctrl-C or --for has passed. "
        "Exit status 0 when the platform received every event.",
    )
    p.add_argument(
        "--gateways",
        type=positive_int(1000),
        default=2,
        metavar="N",
        help="gateways sharing the site's doors, up to one per door (default 2)",
    )
    p.add_argument(
        "--site",
        type=Path,
        metavar="FILE",
        help="the site's data as the platform sends it (a dataset JSON document, "
        "docs/protocol.md); default: the bundled example site",
    )
    p.add_argument(
        "--speed",
        type=positive_float(100_000),
        default=60.0,
        help="site seconds per real second (default 60: an hour a minute)",
    )
    p.add_argument(
        "--for", dest="duration", type=duration, help="stop after this much site time, e.g. 8h"
    )
    p.add_argument("--start", type=local_start, help="site-local ISO start (default today 07:30)")
    p.add_argument("--seed", type=int, default=1, help="the site life script's seed")
    p.add_argument("--plain", action="store_true", help="events as lines, no live panel")
    p.add_argument("--dir", type=Path, help="keep the site's files here (default: a temp dir)")
    p.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto")
    sims = p.add_subparsers(dest="sim_command", metavar="ACTION")
    s = sims.add_parser(
        "run",
        help="run a scenario file against the real daemon, a real broker and emulated hardware",
        description="Exit status: 0 every expectation met, 1 some not, 2 a bad scenario file.",
    )
    s.add_argument("file", type=Path, metavar="FILE", help="e.g. sim/scenarios/book-and-pay.toml")
    d = sims.add_parser(
        "demo",
        help="run the demo scenario: a day at a site, in a few seconds (sim/scenarios/demo.toml)",
    )
    f = sims.add_parser(
        "fleet",
        help="N gateway processes of one site on one Mosquitto (or a NATS cluster): how long "
        "a delta takes to "
        "reach them all, memory and CPU per gateway, against bare MQTT clients",
    )
    f.add_argument("--gateways", type=positive_int(5000), default=10, metavar="N")
    f.add_argument("--deltas", type=positive_int(10_000), default=20)
    f.add_argument(
        "--idle", type=positive_int(3600), default=10, help="seconds to measure idle CPU over"
    )
    f.add_argument(
        "--cluster",
        choices=("nats",),
        help="a 3-node NATS JetStream cluster (the broker kit's config) instead of one Mosquitto",
    )
    f.add_argument(
        "--kill-node",
        action="store_true",
        help="with --cluster: SIGKILL the node under a third of the fleet mid-run",
    )
    f.add_argument(
        "--urls",
        action="append",
        metavar="URL",
        help="a broker someone else runs (repeat for each node), instead of starting one; "
        "it must trust --ca-dir and let the fleet's gateways in (docs/brokers.md)",
    )
    f.add_argument(
        "--ca-dir",
        type=Path,
        metavar="DIR",
        help="with --urls: the development CA (doorgw provision dev-ca) the broker trusts",
    )
    f.add_argument(
        "--connect-timeout",
        type=positive_int(120),
        metavar="SECONDS",
        help="the gateways' [mqtt] connect_timeout (default: theirs, 10)",
    )
    f.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=sim)
    s.set_defaults(handler=sim)
    d.set_defaults(handler=sim)
    f.set_defaults(handler=fleet)
    for q in (s, d, f):
        q.add_argument("--dir", type=Path, help="keep the run's files here (default: a temp dir)")
    for q in (s, d):
        q.add_argument(
            "--broker",
            choices=["auto", "mosquitto", "embedded"],
            default="auto",
            help="Mosquitto with mutual TLS when installed (auto), or the embedded pure-Python one",
        )
        q.add_argument(
            "--watch",
            action="store_true",
            help="after each step, show the doors (lock, contact, LED), readers, sync, "
            "outbox and the events it caused",
        )

    b = groups["bench"].add_parser(
        "sync", help="snapshot throughput, revocation lag and outbox drain over a real Mosquitto"
    )
    _site_size(b)
    b.add_argument("--revocations", type=positive_int(100_000), default=200)
    b.add_argument("--events", type=positive_int(10_000_000), default=100_000)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_sync)
    b = groups["bench"].add_parser(
        "drain",
        help="the outbox drained through a Mosquitto restarted again and again, "
        "against the same drain through a quiet one",
    )
    b.add_argument("--events", type=positive_int(10_000_000), default=100_000)
    b.add_argument("--restarts", type=positive_int(10_000), default=50)
    b.add_argument("--seed", type=int, default=1, help="the restart schedule's seed")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_drain)
    b = groups["bench"].add_parser(
        "restart",
        help="kill -9 a real daemon at a large cache and time it back to READY, against "
        "the same restart with an empty cache",
    )
    _site_size(b)
    b.add_argument("--times", type=positive_int(100), default=5, help="restarts to time")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_restart)
    b = groups["bench"].add_parser(
        "tap",
        help="from a read leaving an emulated reader to the lock relay, through the daemon "
        "at a large cache, against the same reader driving a pin directly",
    )
    _site_size(b)
    b.add_argument("--taps", type=positive_int(100_000), default=200, help="taps per reader kind")
    b.add_argument("--reader", choices=["all", "pn532", "wiegand", "qr"], default="all")
    b.add_argument("--doors", type=positive_int(4), default=1, help="doors, each with 3 readers")
    b.add_argument(
        "--fsync-delay-ms",
        type=non_negative_float(10_000),
        default=0.0,
        metavar="N",
        help="make every sync of the event outbox N ms slower (an SD card)",
    )
    b.add_argument("--plot", type=Path, metavar="FILE", help="draw the latencies (PNG)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_tap)
    b = groups["bench"].add_parser(
        "memory",
        help="one daemon's RSS and PSS at a large cache, idle and at the peak of a snapshot "
        "apply, against a bare MQTT client",
    )
    _site_size(b)
    b.add_argument(
        "--site",
        type=Path,
        metavar="FILE",
        help="the site's data as the platform sends it (a dataset JSON document); "
        "instead of --members and --bookings",
    )
    b.add_argument("--without-api", action="store_true", help="no [api] section")
    b.add_argument(
        "--settle",
        type=non_negative_float(600),
        default=5.0,
        metavar="SECONDS",
        help="how long each process is left alone before it is read as idle (default 5)",
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(handler=bench_memory)


def _site_size(parser: argparse.ArgumentParser) -> None:
    """The synthetic site's size, as every benchmark at a large cache takes it."""
    parser.add_argument("--members", type=positive_int(10_000_000), default=100_000)
    parser.add_argument("--bookings", type=positive_int(100_000_000), default=1_000_000)


def sim(args: argparse.Namespace, clock: Clock) -> int:
    """``doorgw sim``, ``sim run FILE`` and ``sim demo``."""
    from sim.scenario import DEMO, run_file

    # The account (or the view) says what happened; the daemons' own warnings (a
    # broker gone, a door forced) are part of the story, not news on stderr.
    logging.basicConfig(level=logging.ERROR)
    if args.sim_command is None:
        return _sim_live(args)
    path = DEMO if args.sim_command == "demo" else args.file

    def live(line: str) -> None:
        print(line, flush=True)

    with workdir(args.dir, "doorgw-sim-") as directory:
        text, passed = run_file(path, directory, broker=args.broker, live=live, watch=args.watch)
    print(text.splitlines()[-1])
    return 0 if passed else 1


def _sim_live(args: argparse.Namespace) -> int:
    from sim.live import run_live

    with workdir(args.dir, "doorgw-sim-") as directory:
        return run_live(
            directory,
            gateways=args.gateways,
            broker=args.broker,
            speed=args.speed,
            duration=args.duration,
            start=args.start,
            seed=args.seed,
            plain=args.plain or not sys.stdout.isatty(),
            site=args.site,
        )


def fleet(args: argparse.Namespace, clock: Clock) -> int:
    """``doorgw sim fleet``."""
    from sim.fleet import fleet_command

    if args.dir is not None:
        make_dir(args.dir, "--dir")
    return fleet_command(args)


def bench_restart(args: argparse.Namespace, clock: Clock) -> int:
    """``doorgw bench restart``."""
    from sim.bench_restart import bench_restart

    return bench_restart(args)


def bench_tap(args: argparse.Namespace, clock: Clock) -> int:
    """``doorgw bench tap``."""
    from sim.bench_tap import bench_tap

    return bench_tap(args)


def bench_memory(args: argparse.Namespace, clock: Clock) -> int:
    """``doorgw bench memory``."""
    from sim.bench_memory import bench_memory

    return bench_memory(args)


def bench_drain(args: argparse.Namespace, clock: Clock) -> int:
    """``doorgw bench drain``."""
    from sim.bench_drain import bench_drain

    return bench_drain(args)


def bench_sync(args: argparse.Namespace, clock: Clock) -> int:
    """``doorgw bench sync``."""
    from sim.bench_sync import bench_sync

    return bench_sync(args)
