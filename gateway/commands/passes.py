"""``doorgw pass keygen | issue | app-code``: sign passes and member-app codes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import serialization

from gateway.clock import Clock
from gateway.commands.common import Groups
from gateway.core import qr
from gateway.core.jws import b64url, public_jwk
from gateway.core.localtime import check_timezone, parse_instant, to_iso
from gateway.errors import UsageError
from gateway.tools.issuing import load_signing_key, write_signing_key


def register(sub: Any, groups: Groups) -> None:
    """The ``doorgw pass`` subcommands."""
    p = sub.add_parser("pass", help="issue signed QR passes and member-app codes")
    p.set_defaults(handler=run)
    cmds = p.add_subparsers(dest="pass_command", required=True, metavar="ACTION")

    k = cmds.add_parser(
        "keygen",
        help="make an Ed25519 signing key (platform pass key or member-app key)",
        description="Writes a PEM private key (mode 0600) and prints its public forms: the JWK "
        "to pin in the gateways' keys_file, and the app_key credential value.",
    )
    k.add_argument("--out", type=Path, required=True, metavar="FILE")
    k.add_argument("--kid", default="passes-1", help="key id for the JWK (default passes-1)")

    i = cmds.add_parser(
        "issue",
        help="sign a pass and print it (and write its QR image)",
        description="Times are ISO 8601; without a UTC offset they are read in --tz.",
    )
    i.add_argument("--key", type=Path, required=True, help="the platform's signing key (PEM)")
    i.add_argument("--kid", required=True, help="the key's id in the pinned key set")
    i.add_argument("--site", required=True, help="site id")
    i.add_argument("--id", dest="pass_id", required=True, help="pass id (for revocation)")
    i.add_argument(
        "--kind", choices=[k.label for k in qr.PassKind], default="day_pass", help="pass kind"
    )
    i.add_argument("--door", action="append", default=[], help="door id (repeatable)")
    i.add_argument("--group", action="append", default=[], help="door group (repeatable)")
    i.add_argument("--resource", action="append", default=[], help="resource id (repeatable)")
    i.add_argument("--from", dest="start", required=True, metavar="ISO-TIME")
    i.add_argument("--until", dest="end", required=True, metavar="ISO-TIME")
    i.add_argument("--tz", default="UTC", help="zone for times without an offset (default UTC)")
    i.add_argument("--uses", type=int, default=0, help="use limit (default 0: unlimited)")
    i.add_argument("--holder", default="", help="holder's name, shown at the door")
    _output_options(i)

    a = cmds.add_parser("app-code", help="make the code a member app shows now")
    a.add_argument("--key", type=Path, required=True, help="the member app's key (PEM)")
    a.add_argument("--credential", required=True, help="the app key's credential id")
    a.add_argument("--at", metavar="ISO-TIME", help="when the code is made (default: now)")
    _output_options(a)


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--qr",
        type=Path,
        metavar="FILE",
        help="write the QR image; the extension picks the format (.png, .svg, .pdf, .eps)",
    )
    p.add_argument("--scale", type=int, default=8, help="image pixels per module (default 8)")
    p.add_argument("--terminal", action="store_true", help="also draw the QR code here")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, clock: Clock) -> int:
    """Carry out one ``doorgw pass`` action."""
    if args.pass_command == "keygen":
        key = write_signing_key(args.out)
        public = key.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        print(
            json.dumps(
                {
                    "key_file": str(args.out),
                    "jwk": public_jwk(public, args.kid),
                    "app_key": b64url(raw),
                }
            )
        )
        return 0
    if args.pass_command == "issue":
        return _issue(args)
    return _app_code(args, clock)


def _issue(args: argparse.Namespace) -> int:
    try:
        tz = ZoneInfo(check_timezone(args.tz))
    except ValueError as exc:
        raise UsageError(f"--tz: {exc}") from None
    start = parse_instant(args.start, tz, "--from")
    end = parse_instant(args.end, tz, "--until")
    if end <= start:
        raise UsageError(f"--until ({to_iso(end)}) must be after --from ({to_iso(start)})")
    key = load_signing_key(args.key)
    issuer = qr.PassIssuer(key, args.kid)
    try:
        text = issuer.issue(
            site=args.site,
            pass_id=args.pass_id,
            kind=qr.PassKind[args.kind.upper()],
            not_before=start,
            not_after=end,
            doors=args.door,
            door_groups=args.group,
            resources=args.resource,
            max_uses=args.uses,
            holder=args.holder,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    details = {
        "pass": args.pass_id,
        "site": args.site,
        "kind": args.kind,
        "from": to_iso(start),
        "until": to_iso(end),
        "uses": args.uses,
    }
    return _output(args, text, details)


def _app_code(args: argparse.Namespace, clock: Clock) -> int:
    at = (
        int(clock.now().timestamp())
        if args.at is None
        else parse_instant(args.at, ZoneInfo("UTC"), "--at")
    )
    key = load_signing_key(args.key)
    try:
        text = qr.app_code(key, args.credential, at)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _output(args, text, {"credential": args.credential, "at": to_iso(at)})


def _output(args: argparse.Namespace, text: str, details: dict[str, Any]) -> int:
    import segno

    symbol = segno.make(text, error="m", micro=False)
    details = {"token": text, "chars": len(text), **details}
    details["qr"] = {"version": symbol.version, "error": symbol.error, "mode": symbol.mode}
    if args.qr is not None:
        if args.scale < 1:
            raise UsageError("--scale must be at least 1")
        try:
            symbol.save(str(args.qr), scale=args.scale, border=4)
        except OSError as exc:
            raise UsageError(f"--qr {args.qr}: cannot write: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"--qr {args.qr}: {exc}") from None
        details["qr"]["file"] = str(args.qr)
    if args.json:
        print(json.dumps(details))
    else:
        print(text)
        print(
            f"# {len(text)} characters, QR version {symbol.version}-{symbol.error}"
            + (f", written to {args.qr}" if args.qr is not None else ""),
            file=sys.stderr,
        )
    if args.terminal:
        symbol.terminal(out=sys.stdout, compact=True)
    return 0
