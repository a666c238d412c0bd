"""``doorgw access --member M``: which doors a member can open, and when."""

from __future__ import annotations

import argparse
import json
from zoneinfo import ZoneInfo

from gateway.clock import Clock
from gateway.commands.common import Groups, add_config, positive_int
from gateway.commands.explain import fmt_local, instant_arg, open_cache, site_state, site_zone
from gateway.config.models import load_config
from gateway.core.access import access_json, member_access
from gateway.core.decision import REASON_DOCS
from gateway.core.localtime import to_local
from gateway.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``access``."""
    p = sub.add_parser("access", help="list which doors a member can open, and when")
    add_config(p)
    p.add_argument("--member", required=True, help="member id")
    p.add_argument(
        "--days", type=positive_int(366), default=7, help="how many days ahead (default 7)"
    )
    p.add_argument("--from", dest="start", metavar="ISO-TIME", help="start (default: now)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p.set_defaults(handler=access)


def access(args: argparse.Namespace, clock: Clock) -> int:
    config = load_config(args.config)
    lockdown = site_state(config).lockdown  # as the doors see it now
    reader = open_cache(config)
    try:
        with reader.view() as view:
            tz = site_zone(view, config) or ZoneInfo("UTC")
            start = instant_arg(args.start, tz, clock, "--from")
            end = start + args.days * 86_400
            result = member_access(view, args.member, start, end, lockdown=lockdown)
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
    print(f"windows from {fmt_local(start, tz)} to {fmt_local(end, tz)} ({tz.key}):")
    if not result.windows:
        print("  none")
    current = None
    for w in result.windows:
        if w.door.id != current:
            current = w.door.id
            print(f"  {w.door.name} ({w.door.id})")
        print(f"    {_span_text(w.start, w.end, tz, to_local(start, tz).year):<36} {w.label}")
    return 0


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
