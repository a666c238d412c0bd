"""``doorgw demo``: the bundled example site, answering example taps.

It builds a real cache from ``gateway/data/example_site.json`` through the
same writer the sync uses, then runs each tap through :func:`decide` at the
tap's own (simulated) instant, so the output never depends on today's date.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime
from importlib import resources
from pathlib import Path

from gateway.access import member_access
from gateway.cache import CacheReader, CacheWriter
from gateway.clock import ManualClock
from gateway.config import load_config
from gateway.credentials import parse_read
from gateway.dataset import parse_dataset
from gateway.decision import decide
from gateway.localtime import to_local
from gateway.model import Dataset

#: (who, door, credential, site-local time) for each example tap.
DEMO_TAPS: tuple[tuple[str, str, str, str], ...] = (
    ("Ada, hot desk plan", "front", "nfc:04A1B2C3D4E5F6", "2026-03-10T09:55"),
    ("Ada, booked Room 3 14:00", "room-3", "nfc:04A1B2C3D4E5F6", "2026-03-10T09:56"),
    ("Ada, booked Room 3 14:00", "room-3", "nfc:04A1B2C3D4E5F6", "2026-03-10T13:52"),
    ("Ada, after plan hours", "front", "nfc:04A1B2C3D4E5F6", "2026-03-10T21:30"),
    ("Ada, not in her plan", "office-12", "nfc:04A1B2C3D4E5F6", "2026-03-10T10:00"),
    ("Ada, on Christmas Day", "front", "nfc:04A1B2C3D4E5F6", "2026-12-25T10:00"),
    ("Grace, unpaid booking", "studio", "nfc:04112233445566", "2026-03-10T10:05"),
    ("Alan, 24/7 resident", "office-12", "wiegand:12:34567", "2026-03-10T03:00"),
    ("Alan, by PIN", "front", "pin:4711", "2026-03-10T03:01"),
    ("Margaret, visitor invite", "room-3", "nfc:99887766", "2026-03-10T11:00"),
    ("Margaret, not invited", "studio", "nfc:99887766", "2026-03-10T11:01"),
    ("Ken, suspended", "front", "nfc:04DEADBEEF0001", "2026-03-10T10:00"),
    ("Barbara, revoked card", "front", "nfc:04CAFE00000002", "2026-03-10T10:00"),
    ("someone else's card", "front", "nfc:04FFFFFFFFFFFF", "2026-03-10T10:00"),
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
"""


def example_dataset() -> Dataset:
    """The bundled example site, validated like any dataset from the platform."""
    raw = resources.files("gateway").joinpath("data/example_site.json").read_bytes()
    return parse_dataset(raw)


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
                print(
                    f"{at.strftime('%a %d %b %H:%M')}  {(door.name if door else door_id):<15} "
                    f"{who:<26} {'OPEN ' if decision.granted else 'SHUT '} "
                    f"{decision.reason.value:<20} {decision.message}"
                )
            day = int(datetime(2026, 3, 10, tzinfo=tz).timestamp())
            access = member_access(view, "ada", day, day + 86_400)
    finally:
        reader.close()
    print(f"\n{granted} of {len(DEMO_TAPS)} taps opened a door.")
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
            f"  doorgw access --config {config_path} --member ada --from 2026-03-09T00:00"
        )
    return 0
