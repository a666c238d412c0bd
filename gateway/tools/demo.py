"""``doorgw demo``: the bundled example site, answering example taps and QR scans.

It builds a real cache from ``gateway/data/example_site.json`` through the
same writer the sync uses, then runs each tap through :func:`decide` at the
tap's own (simulated) instant, so the output never depends on today's date.
QR codes are issued with fresh keys (a platform key for a day pass, an app
key for Alan's phone) and decided with :func:`decide_code` the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.clock import ManualClock
from gateway.config.models import load_config
from gateway.core import qr
from gateway.core.access import member_access
from gateway.core.credentials import parse_read
from gateway.core.decision import Conditions, Decision, decide, decide_code
from gateway.core.jws import KeySet, Signer, b64url
from gateway.core.localtime import to_local
from gateway.core.model import Credential, CredentialKind, CredentialStatus, Dataset
from gateway.store.reader import CacheReader
from gateway.store.writer import CacheWriter
from gateway.wire.dataset import parse_dataset

#: (who, door, credential, site-local time) for each example tap.
DEMO_TAPS: tuple[tuple[str, str, str, str], ...] = (
    ("Ada, hot desk plan", "front", "nfc:04A1B2C3D4E5F6", "2026-03-10T09:55"),
    ("Ada, booked Room 3 14:00", "room-3", "nfc:04A1B2C3D4E5F6", "2026-03-10T09:56"),
    ("Ada, booked Room 3 14:00", "room-3", "nfc:04A1B2C3D4E5F6", "2026-03-10T13:52"),
    ("Ada, after plan hours", "front", "nfc:04A1B2C3D4E5F6", "2026-03-10T21:30"),
    ("Ada, not in her plan", "office-12", "nfc:04A1B2C3D4E5F6", "2026-03-10T10:00"),
    ("Ada, on Christmas Day", "front", "nfc:04A1B2C3D4E5F6", "2026-12-25T10:00"),
    ("Grace, unpaid booking", "studio", "nfc:04112233445566", "2026-03-10T10:05"),
    ("Alan, 24/7 resident", "office-12", "wiegand:26/12:34567", "2026-03-10T03:00"),
    ("Alan, by PIN", "front", "pin:4711", "2026-03-10T03:01"),
    ("Margaret, visitor invite", "room-3", "nfc:99887766", "2026-03-10T11:00"),
    ("Margaret, not invited", "studio", "nfc:99887766", "2026-03-10T11:01"),
    ("Ken, suspended", "front", "nfc:04DEADBEEF0001", "2026-03-10T10:00"),
    ("Barbara, revoked card", "front", "nfc:04CAFE00000002", "2026-03-10T10:00"),
    ("someone else's card", "front", "nfc:04FFFFFFFFFFFF", "2026-03-10T10:00"),
)

#: (who, door, which code, site-local time) for each example scan.
DEMO_SCANS: tuple[tuple[str, str, str, str], ...] = (
    ("Linus, day pass QR", "front", "day_pass", "2026-03-10T10:00"),
    ("Linus, day pass QR", "studio", "day_pass", "2026-03-10T10:01"),
    ("Linus, day pass QR", "front", "day_pass", "2026-03-10T19:00"),
    ("a forged day pass", "front", "forged", "2026-03-10T10:02"),
    ("Alan, app code", "office-12", "app_code", "2026-03-10T03:02"),
    ("Alan's code, screenshot", "office-12", "app_code", "2026-03-10T03:07"),
)

_CONFIG = """\
# doorgw demo configuration, written by `doorgw demo`.
[gateway]
id = "demo-gw-1"
site_id = "shoreditch"
data_dir = "."

[time]
timezone = "Europe/London"

[[doors]]
id = "front"

[[doors]]
id = "room-3"

[sync]
# The demo platform's pinned key, for `doorgw explain --code`.
keys_file = "platform-keys.json"
"""


def example_document() -> dict[str, Any]:
    """The bundled example site as the platform would send it (a fresh copy)."""
    raw = resources.files("gateway").joinpath("data/example_site.json").read_bytes()
    doc: dict[str, Any] = json.loads(raw)
    return doc


def example_dataset() -> Dataset:
    """The bundled example site, validated like any dataset from the platform."""
    return parse_dataset(example_document())


async def _load(cache: Path, dataset: Dataset, at: datetime) -> None:
    async with CacheWriter(cache, ManualClock(at)) as writer:
        await writer.replace_dataset(dataset)


def run_demo(directory: Path | None) -> int:
    """Build the example cache in ``directory`` (or a temp dir) and print the taps."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="doorgw-demo-") as tmp:
            return _run(Path(tmp), keep=False)
    return _run(directory, keep=True)


def _run(directory: Path, *, keep: bool) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "doorgw.toml"
    config_path.write_text(_CONFIG)
    config = load_config(config_path)
    dataset = example_dataset()
    tz = dataset.site.tz
    platform = Signer.generate("demo-platform")
    (directory / "platform-keys.json").write_text(json.dumps({"keys": [platform.public_jwk()]}))
    codes, app_credential = _demo_codes(platform, dataset, tz)
    dataset = dataclasses.replace(dataset, credentials=(*dataset.credentials, app_credential))
    first = datetime.fromisoformat(DEMO_TAPS[0][3]).replace(tzinfo=tz)
    asyncio.run(_load(config.cache_path, dataset, first))

    print(
        f"doorgw demo: site {dataset.site.id!r} ({tz.key}), {len(dataset.doors)} doors, "
        f"{len(dataset.members)} members, dataset version {dataset.version}"
    )
    print("Each tap is decided offline from the local cache at its own (simulated) time.\n")
    reader = CacheReader(config.cache_path)
    granted = 0
    try:
        with reader.view() as view:
            for who, door_id, credential, local in DEMO_TAPS:
                at = datetime.fromisoformat(local).replace(tzinfo=tz)
                read = parse_read(credential, site_id=dataset.site.id)
                decision = decide(view, read, door_id, at)
                granted += decision.granted
                door = view.door(door_id)
                print(_line(at, door.name if door else door_id, who, decision))
            print("\nQR codes, verified offline against the pinned key and the member's app key:\n")
            keys = KeySet({platform.kid: platform.key.public_key()})
            scanned = 0
            for who, door_id, name, local in DEMO_SCANS:
                at = datetime.fromisoformat(local).replace(tzinfo=tz)
                result = decide_code(
                    view,
                    codes[name],
                    door_id,
                    at,
                    Conditions(code_window=30, clock_trusted=True),
                    keys=keys,
                )
                scanned += result.decision.granted
                door = view.door(door_id)
                print(_line(at, door.name if door else door_id, who, result.decision))
            day = int(datetime(2026, 3, 10, tzinfo=tz).timestamp())
            access = member_access(view, "ada", day, day + 86_400)
    finally:
        reader.close()
    print(
        f"\n{granted} of {len(DEMO_TAPS)} taps and {scanned} of {len(DEMO_SCANS)} "
        "QR codes opened a door."
    )
    if access is not None:
        print("\nWhat Ada may open on Tue 10 Mar 2026 (doorgw access):")
        for w in access.windows:
            start = to_local(w.start, tz).strftime("%H:%M")
            end = "-" if w.end is None else to_local(w.end, tz).strftime("%H:%M")
            print(f"  {w.door.name:<15} {start}-{end}  {w.label}")
    if keep:
        print(
            f"\nThe demo cache is kept in {directory}. Try:\n"
            f"  doorgw explain --config {config_path} --door room-3 "
            f"--credential nfc:04A1B2C3D4E5F6 --at 2026-03-10T13:00\n"
            f"  doorgw access --config {config_path} --member ada --from 2026-03-09T00:00\n"
            f"  doorgw explain --config {config_path} --door front --at 2026-03-10T12:00 "
            f"--code '{codes['day_pass']}'"
        )
    return 0


def _line(at: datetime, door: str, who: str, decision: Decision) -> str:
    return (
        f"{at.strftime('%a %d %b %H:%M')}  {door:<15} {who:<26} "
        f"{'OPEN ' if decision.granted else 'SHUT '} {decision.reason.value:<20} "
        f"{decision.message}"
    )


def _demo_codes(
    platform: Signer, dataset: Dataset, tz: ZoneInfo
) -> tuple[dict[str, str], Credential]:
    """The demo's QR codes, and the app-key credential Alan's phone registered."""

    def ts(local: str) -> int:
        return int(datetime.fromisoformat(local).replace(tzinfo=tz).timestamp())

    def day_pass(issuer: qr.PassIssuer, holder: str = "") -> str:
        return issuer.issue(
            site=dataset.site.id,
            pass_id="dp-0310-linus",  # noqa: S106 - a pass id, not a password
            door_groups=["building"],
            not_before=ts("2026-03-10T09:00"),
            not_after=ts("2026-03-10T18:00"),
            holder=holder,
        )

    # A forger can copy everything but the platform's private key.
    forger = qr.PassIssuer(Signer.generate(platform.kid).key, platform.kid)
    phone = Signer.generate("alan-phone").key
    codes = {
        "day_pass": day_pass(qr.PassIssuer(platform.key, platform.kid), holder="Linus"),
        "forged": day_pass(forger),
        "app_code": qr.app_code(phone, "app-alan", ts("2026-03-10T03:02")),
    }
    raw = phone.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    credential = Credential(
        "app-alan", "alan", CredentialKind.APP_KEY, b64url(raw), CredentialStatus.ACTIVE
    )
    return codes, credential
