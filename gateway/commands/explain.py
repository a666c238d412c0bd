"""``doorgw explain``: decide one credential or scanned code at one door, and say why."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import Clock
from gateway.commands.common import Groups, add_config
from gateway.config.models import Config, load_config
from gateway.core.credentials import parse_read
from gateway.core.decision import REASON_DOCS, Conditions, Decision, decide, decide_code
from gateway.core.localtime import parse_instant, to_iso, to_local
from gateway.core.model import CredentialKind
from gateway.store.files import load_pin_key_file
from gateway.store.reader import CacheReader, SqliteView
from gateway.store.state import SiteState, SiteStateFile


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], groups: Groups) -> None:
    """Add ``explain``."""
    p = sub.add_parser(
        "explain",
        help="decide one credential at one door and say why",
        description="Decide as the door would, from the local cache, and explain the answer. "
        "Exit status: 0 the door opens, 1 it stays shut, 2 bad input.",
    )
    add_config(p)
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

    p.set_defaults(handler=explain)


def explain(args: argparse.Namespace, clock: Clock) -> int:
    config = load_config(args.config)
    keys = None
    if args.code is not None:
        from gateway.store.files import load_platform_keys

        keys = load_platform_keys(config)
    # The doors' own lockdown: a staff member asking "would it open?" gets the
    # answer the door would give now.
    lockdown = site_state(config).lockdown
    reader = open_cache(config)
    code: Mapping[str, object] | None = None
    try:
        with reader.view() as view:
            tz = site_zone(view, config)
            at = instant_arg(args.at, tz, clock, "--at")
            if keys is not None:
                # Whether the clock may be trusted is the daemon's to know; here
                # the question is what the code itself allows at --at.
                result = decide_code(
                    view,
                    args.code,
                    args.door,
                    at,
                    Conditions(
                        lockdown=lockdown,
                        code_window=config.qr.app_code_window_seconds,
                        clock_trusted=True,
                    ),
                    keys=keys,
                )
                decision, code, read = result.decision, result.code, None
            else:
                site, pin_key = config.gateway.site_id, load_pin_key_file(config)
                read = parse_read(args.credential, site_id=site, pin_key=pin_key)
                unkeyed_pins = config.sync is not None and config.sync.accept_unkeyed_pins
                if read.kind is CredentialKind.PIN and pin_key is not None and unkeyed_pins:
                    legacy = parse_read(args.credential, site_id=site).value
                    read = dataclasses.replace(read, legacy=legacy)
                decision = decide(view, read, args.door, at, Conditions(lockdown=lockdown))
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
    lines.append(f"  at:         {fmt_local(at, tz)}{zone}  ({to_iso(at)})")
    if decision.granted:
        until = "no end" if decision.until is None else fmt_local(decision.until, tz) + zone
        lines.append(f"  until:      {until}")
    lines.append(f"  why:        {REASON_DOCS[decision.reason]}")
    print("\n".join(lines))
    return 0 if decision.granted else 1


def open_cache(config: Config) -> CacheReader:
    return CacheReader(config.cache_path)


def instant_arg(text: str | None, tz: ZoneInfo | None, clock: Clock, option: str) -> int:
    if text is None:
        return int(clock.now().timestamp())
    return parse_instant(text, tz, option)


def site_zone(view: SqliteView, config: Config) -> ZoneInfo | None:
    site = view.site()
    if site is not None:
        return site.tz
    return ZoneInfo(config.time.timezone) if config.time.timezone else None


def fmt_local(ts: int, tz: ZoneInfo | None) -> str:
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


def site_state(config: Config) -> SiteState:
    """The site state the gateway's doors use (lockdown, first staff in)."""
    return SiteStateFile(config.site_state_path).load()[0]
