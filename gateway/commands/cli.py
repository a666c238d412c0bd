"""The ``doorgw`` command.

Every subcommand returns an exit status instead of calling :func:`sys.exit`:
0 for success (for ``explain``: the door would open), 1 for ``explain``
when the door would stay shut, 2 for bad input of any kind.  Errors the
gateway raises on purpose are printed as one line; anything else is a bug
and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway import __version__
from gateway.clock import Clock, SystemClock
from gateway.config.models import DEFAULT_CONFIG_PATH, Config, load_config
from gateway.core.access import access_json, member_access
from gateway.core.credentials import parse_read
from gateway.core.decision import REASON_DOCS, Conditions, Decision, decide, decide_code
from gateway.core.localtime import parse_instant, to_iso, to_local
from gateway.errors import DoorgwError, UsageError
from gateway.store.reader import CacheReader, SqliteView
from gateway.tools import issuing, provision


def _config_path(value: str) -> Path:
    return Path(value)


def _positive_int(limit: int) -> Any:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not 1 <= number <= limit:
            raise argparse.ArgumentTypeError(f"{number} is not between 1 and {limit}")
        return number

    return parse


def _positive_float(limit: float) -> Any:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not 0 < number <= limit:
            raise argparse.ArgumentTypeError(f"{value} is not above 0 and at most {limit:g}")
        return number

    return parse


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str) -> timedelta:
    """``90s``, ``45m``, ``8h`` or ``2d``."""
    number, unit = value[:-1], value[-1:]
    if unit not in _DURATION_UNITS or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number and s, m, h or d, e.g. 8h")
    return timedelta(seconds=int(number) * _DURATION_UNITS[unit])


def _local_start(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO time") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``doorgw`` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="doorgw",
        description="Edge access-control gateway for coworking spaces.",
    )
    parser.add_argument("--version", action="version", version=f"doorgw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file", type=_config_path, metavar="FILE")

    config_help = f"configuration file (default: {DEFAULT_CONFIG_PATH})"
    p = sub.add_parser(
        "explain",
        help="decide one credential at one door and say why",
        description="Decide as the door would, from the local cache, and explain the answer. "
        "Exit status: 0 the door opens, 1 it stays shut, 2 bad input.",
    )
    p.add_argument("--config", type=_config_path, default=DEFAULT_CONFIG_PATH, help=config_help)
    p.add_argument("--door", required=True, help="door id, e.g. room-3")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--credential",
        metavar="KIND:VALUE",
        help="e.g. nfc:04A2B3C4D5E6F7, wiegand:12:34567, pin:1234, app:<key>",
    )
    what.add_argument(
        "--code",
        metavar="TEXT",
        help="a scanned QR code (DG1:...): a signed pass or a member-app code; "
        "decided as if the clock were trusted",
    )
    p.add_argument(
        "--at",
        metavar="ISO-TIME",
        help="instant to decide at (default: now); without an offset it is site-local time",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("access", help="list which doors a member can open, and when")
    p.add_argument("--config", type=_config_path, default=DEFAULT_CONFIG_PATH, help=config_help)
    p.add_argument("--member", required=True, help="member id")
    p.add_argument(
        "--days", type=_positive_int(366), default=7, help="how many days ahead (default 7)"
    )
    p.add_argument("--from", dest="start", metavar="ISO-TIME", help="start (default: now)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("demo", help="load the bundled example site and answer example taps")
    p.add_argument(
        "--dir", type=Path, help="keep the demo's config and cache here (default: a temp dir)"
    )

    p = sub.add_parser("schemas", help="write the sync protocol's JSON Schema files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")

    p = sub.add_parser("run", help="run the gateway daemon")
    p.add_argument("--config", type=_config_path, default=DEFAULT_CONFIG_PATH, help=config_help)

    issuing.add_parser(sub)
    provision.add_parser(sub)

    p = sub.add_parser("token", help="staff API tokens: add (shown once), list, remove")
    tokens = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument(
        "--config", type=_config_path, default=DEFAULT_CONFIG_PATH, help=config_help
    )
    t = tokens.add_parser(
        "add", parents=[with_config], help="make a token; it is printed once and stored as a hash"
    )
    t.add_argument("name", help="who or what holds it, e.g. front-desk or alice")
    tokens.add_parser("list", parents=[with_config], help="the tokens' names and ages")
    t = tokens.add_parser("remove", parents=[with_config], help="revoke a token")
    t.add_argument("name")

    p = sub.add_parser(
        "sim",
        help="the simulated site: run it live, run scripted scenarios, measure a fleet",
        description="Without an ACTION: run a whole virtual site (broker, platform stand-in, "
        "gateways on emulated hardware) with a live view until Ctrl-C or --for has passed. "
        "Exit status 0 when the platform received every event.",
    )
    p.add_argument(
        "--gateways",
        type=_positive_int(1000),
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
        type=_positive_float(100_000),
        default=60.0,
        help="site seconds per real second (default 60: an hour a minute)",
    )
    p.add_argument(
        "--for", dest="duration", type=_duration, help="stop after this much site time, e.g. 8h"
    )
    p.add_argument("--start", type=_local_start, help="site-local ISO start (default today 07:30)")
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
        help="N gateway processes of one site on one Mosquitto: how long a delta takes to "
        "reach them all, memory and CPU per gateway, against bare MQTT clients",
    )
    f.add_argument("--gateways", type=_positive_int(5000), default=10, metavar="N")
    f.add_argument("--deltas", type=_positive_int(10_000), default=20)
    f.add_argument(
        "--idle", type=_positive_int(3600), default=10, help="seconds to measure idle CPU over"
    )
    f.add_argument("--json", action="store_true", help="print one JSON object")
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

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    b = bench.add_parser(
        "decide", help="time access decisions on a large cache against bare SQLite lookups"
    )
    b.add_argument("--members", type=_positive_int(10_000_000), default=100_000)
    b.add_argument("--bookings", type=_positive_int(100_000_000), default=1_000_000)
    b.add_argument("--taps", type=_positive_int(10_000_000), default=20_000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--dir", type=Path, help="build the cache here (default: a temp dir)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b = bench.add_parser(
        "sync", help="snapshot throughput, revocation lag and outbox drain over a real Mosquitto"
    )
    b.add_argument("--members", type=_positive_int(10_000_000), default=100_000)
    b.add_argument("--bookings", type=_positive_int(100_000_000), default=1_000_000)
    b.add_argument("--revocations", type=_positive_int(100_000), default=200)
    b.add_argument("--events", type=_positive_int(10_000_000), default=100_000)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b = bench.add_parser(
        "qr", help="scanned-code checks per second and latency against a bare Ed25519 verify"
    )
    b.add_argument("--members", type=_positive_int(10_000_000), default=20_000)
    b.add_argument("--bookings", type=_positive_int(100_000_000), default=200_000)
    b.add_argument("--codes", type=_positive_int(10_000_000), default=20_000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run ``doorgw`` with ``argv``; return the exit status."""
    args = build_parser().parse_args(argv)
    clock = clock or SystemClock()
    try:
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "explain":
            return _explain(args, clock)
        if args.command == "access":
            return _access(args, clock)
        if args.command == "demo":
            from gateway.tools.demo import run_demo

            return run_demo(args.dir)
        if args.command == "schemas":
            from gateway.wire.schemas import write_schemas

            for path in write_schemas(args.out):
                print(path)
            return 0
        if args.command == "run":
            from gateway.commands.run import run_daemon

            return run_daemon(load_config(args.config), clock)
        if args.command == "pass":
            return issuing.run(args, clock)
        if args.command == "provision":
            return provision.run(args, clock.now())
        if args.command == "sim" and args.sim_command == "fleet":
            from sim.fleet import fleet_command

            return fleet_command(args)
        if args.command == "sim":
            return _sim(args)
        if args.command == "token":
            return _token(args, clock)
        if args.command == "bench" and args.bench == "qr":
            from gateway.commands.bench_qr import bench_qr

            return bench_qr(args)
        if args.command == "bench" and args.bench == "sync":
            from sim.bench_sync import bench_sync

            return bench_sync(args)
        if args.command == "bench":
            from gateway.commands.bench_decide import bench_decide

            return bench_decide(args)
    except DoorgwError as exc:
        print(f"doorgw: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command!r}")


@contextlib.contextmanager
def _workdir(directory: Path | None) -> Iterator[Path]:
    """``--dir`` (made if missing, kept), or a temporary directory removed afterwards."""
    import tempfile

    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="doorgw-sim-") as tmp:
        yield Path(tmp)


def _sim(args: argparse.Namespace) -> int:
    from sim.scenario import DEMO, run_file

    # The account (or the view) says what happened; the daemons' own warnings (a
    # broker gone, a door forced) are part of the story, not news on stderr.
    logging.basicConfig(level=logging.ERROR)
    if args.sim_command is None:
        return _sim_live(args)
    path = DEMO if args.sim_command == "demo" else args.file

    def live(line: str) -> None:
        print(line, flush=True)

    with _workdir(args.dir) as workdir:
        text, passed = run_file(path, workdir, broker=args.broker, live=live, watch=args.watch)
    print(text.splitlines()[-1])
    return 0 if passed else 1


def _sim_live(args: argparse.Namespace) -> int:
    from sim.live import run_live

    with _workdir(args.dir) as workdir:
        return run_live(
            workdir,
            gateways=args.gateways,
            broker=args.broker,
            speed=args.speed,
            duration=args.duration,
            start=args.start,
            seed=args.seed,
            plain=args.plain or not sys.stdout.isatty(),
            site=args.site,
        )


def _token(args: argparse.Namespace, clock: Clock) -> int:
    from gateway.net.staff_tokens import TokenStore

    store = TokenStore(load_config(args.config).tokens_path)
    if args.token_command == "add":
        token = store.add(args.name, int(clock.now().timestamp()))
        print(token)
        print(
            f"# token {args.name!r} saved (as a hash) in {store.path}; "
            "this is the only time it is shown",
            file=sys.stderr,
        )
    elif args.token_command == "remove":
        store.remove(args.name)
        print(f"token {args.name!r} removed")
    else:
        for entry in store.tokens():
            print(f"{entry.name}\tmade {to_iso(entry.created)}")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    doors = ", ".join(d.id for d in config.doors) or "none"
    print(
        f"{args.file}: ok: gateway {config.gateway.id} at site {config.gateway.site_id}, "
        f"data in {config.gateway.data_dir}, doors: {doors}"
    )
    return 0


def _open(config: Config) -> CacheReader:
    return CacheReader(config.cache_path)


def _parse_instant(text: str | None, tz: ZoneInfo | None, clock: Clock, option: str) -> int:
    if text is None:
        return int(clock.now().timestamp())
    return parse_instant(text, tz, option)


def _site_zone(view: SqliteView, config: Config) -> ZoneInfo | None:
    site = view.site()
    if site is not None:
        return site.tz
    return ZoneInfo(config.time.timezone) if config.time.timezone else None


def _fmt_local(ts: int, tz: ZoneInfo | None) -> str:
    if tz is None:
        return to_iso(ts) or ""
    return to_local(ts, tz).strftime("%a %d %b %Y %H:%M")


def decision_json(decision: Decision) -> dict[str, Any]:
    """A decision as a JSON-ready dict (instants in ISO 8601 UTC)."""
    return {
        "granted": decision.granted,
        "reason": decision.reason.value,
        "message": decision.message,
        "door": decision.door_id,
        "at": to_iso(decision.at),
        "grant": None
        if decision.grant is None
        else {"kind": decision.grant.kind, "id": decision.grant.id},
        "until": to_iso(decision.until),
        "member": decision.member_id,
        "credential": decision.credential_id,
        "extended_unlock": decision.extended_unlock,
    }


def _explain(args: argparse.Namespace, clock: Clock) -> int:
    config = load_config(args.config)
    keys = None
    if args.code is not None:
        from gateway.store.files import load_platform_keys

        keys = load_platform_keys(config)
    reader = _open(config)
    code: Mapping[str, object] | None = None
    try:
        with reader.view() as view:
            tz = _site_zone(view, config)
            at = _parse_instant(args.at, tz, clock, "--at")
            if keys is not None:
                # Whether the clock may be trusted is the daemon's to know; here
                # the question is what the code itself allows at --at.
                result = decide_code(
                    view,
                    args.code,
                    args.door,
                    at,
                    Conditions(code_window=config.qr.app_code_window_seconds, clock_trusted=True),
                    keys=keys,
                )
                decision, code, read = result.decision, result.code, None
            else:
                read = parse_read(args.credential, site_id=config.gateway.site_id)
                decision = decide(view, read, args.door, at)
            door = view.door(args.door)
            member = view.member(decision.member_id) if decision.member_id else None
    finally:
        reader.close()
    if args.json:
        out = decision_json(decision)
        if code is not None:
            out["code"] = dict(code)
        print(json.dumps(out))
        return 0 if decision.granted else 1
    verdict = "GRANTED" if decision.granted else "DENIED"
    grant = f"  ({decision.grant.kind} {decision.grant.id})" if decision.grant else ""
    lines = [
        f"{verdict}  {decision.reason.value}{grant}",
        f"  {decision.message}",
        f"  door:       {args.door}" + (f" ({door.name})" if door else ""),
    ]
    if read is not None:
        shown_value = "<PIN>" if read.kind.value == "pin" else read.value
        lines.append(
            f"  credential: {read.kind.value} {shown_value}"
            + (f" -> {decision.credential_id}" if decision.credential_id else "")
        )
    if code is not None:
        details = ", ".join(f"{k} {v}" for k, v in code.items() if k != "type")
        lines.append(f"  code:       {code['type']}" + (f" ({details})" if details else ""))
    if member is not None:
        lines.append(f"  member:     {member.id} ({member.name}, {member.status.value})")
    zone = f" {tz.key}" if tz is not None else ""
    lines.append(f"  at:         {_fmt_local(at, tz)}{zone}  ({to_iso(at)})")
    if decision.granted:
        until = "no end" if decision.until is None else _fmt_local(decision.until, tz) + zone
        lines.append(f"  until:      {until}")
    lines.append(f"  why:        {REASON_DOCS[decision.reason]}")
    print("\n".join(lines))
    return 0 if decision.granted else 1


def _span_text(start: int, end: int | None, tz: ZoneInfo, year: int) -> str:
    """``Tue 10 Mar 08:00 - 20:00``; the year is shown when it is not ``year``."""
    s = to_local(start, tz)
    head = s.strftime("%a %d %b %H:%M" if s.year == year else "%a %d %b %Y %H:%M")
    if end is None:
        return f"{head} - (no end)"
    e = to_local(end, tz)
    if e.date() == s.date():
        return f"{head} - {e.strftime('%H:%M')}"
    return f"{head} - {e.strftime('%a %d %b %H:%M' if e.year == year else '%a %d %b %Y %H:%M')}"


def _access(args: argparse.Namespace, clock: Clock) -> int:
    config = load_config(args.config)
    reader = _open(config)
    try:
        with reader.view() as view:
            tz = _site_zone(view, config) or ZoneInfo("UTC")
            start = _parse_instant(args.start, tz, clock, "--from")
            end = start + args.days * 86_400
            result = member_access(view, args.member, start, end)
    finally:
        reader.close()
    if result is None:
        raise UsageError(f"no member {args.member!r} in the cache")
    if args.json:
        print(json.dumps(access_json(result, start, end)))
        return 0
    m = result.member
    print(f"{m.name} ({m.id}): {m.status.value}")
    creds = ", ".join(f"{c.id} {c.kind.value} {c.status.value}" for c in result.credentials)
    print(f"credentials: {creds or 'none'}")
    if not any(c.status.value == "active" for c in result.credentials):
        print("  no active credential: no door opens until one is issued")
    if result.blocked is not None:
        print(f"no access: {REASON_DOCS[result.blocked]}")
        return 0
    print(f"windows from {_fmt_local(start, tz)} to {_fmt_local(end, tz)} ({tz.key}):")
    if not result.windows:
        print("  none")
    current = None
    for w in result.windows:
        if w.door.id != current:
            current = w.door.id
            print(f"  {w.door.name} ({w.door.id})")
        print(f"    {_span_text(w.start, w.end, tz, to_local(start, tz).year):<36} {w.label}")
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
