"""Shared fixtures: a real SQLite cache built from a dataset document."""

from __future__ import annotations

# First: it wraps the decision functions before any module binds them by name.
from tests import reason_coverage  # isort: skip

import asyncio
import copy
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.clock import ManualClock
from gateway.config.models import Config, GatewaySection, MqttSection, SyncSection
from gateway.config.write import write_config
from gateway.core.credentials import pin_digest
from gateway.core.jws import Signer
from gateway.store.reader import CacheReader
from gateway.store.writer import CacheWriter
from gateway.tools.ports import free_port
from gateway.wire.dataset import parse_dataset

LONDON = ZoneInfo("Europe/London")


def local(text: str) -> int:
    """A London wall-clock time (``2026-03-10T14:00``) as Unix seconds (earlier fold)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=LONDON).timestamp())


def utc(text: str) -> int:
    """A UTC time (``2026-03-29T01:00``) as Unix seconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def _card(cid: str, member: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "member_id": member, "kind": "nfc_uid", "value": value, **extra}


def _ent(eid: str, member: str, plan: str, **extra: Any) -> dict[str, Any]:
    return {"id": eid, "member_id": member, "plan_id": plan, **extra}


def _booking(
    bid: str, member: str, resource: str, start: str, end: str, payment: str, **extra: Any
) -> dict[str, Any]:
    return {
        "id": bid,
        "member_id": member,
        "resource_id": resource,
        "start": start,
        "end": end,
        "payment": payment,
        **extra,
    }


#: A site in London with every kind of grant; see tests/test_decision.py for the story.
BASE_DATASET: dict[str, Any] = {
    "version": 1,
    "site": {"id": "t", "timezone": "Europe/London", "closures": ["2026-03-13"]},
    "resources": [{"id": "r1", "name": "Room 1"}, {"id": "r2", "name": "Room 2"}],
    "doors": [
        {"id": "front", "name": "Front door", "groups": ["building"]},
        {"id": "room1", "name": "Room 1", "resources": ["r1"], "groups": ["rooms"]},
        {"id": "room2", "name": "Room 2", "resources": ["r2"], "groups": ["rooms"]},
        {"id": "lab", "name": "Lab", "groups": ["lab"]},
    ],
    "plans": [
        {
            "id": "day",
            "name": "Day",
            "door_groups": ["building"],
            "schedule": ["Mon-Fri 08:00-20:00"],
        },
        {
            "id": "night",
            "name": "Night",
            "door_groups": ["building"],
            "schedule": ["Mon-Fri 22:00-06:00"],
        },
        {
            "id": "always",
            "name": "Resident",
            "door_groups": ["building", "lab"],
            "around_the_clock": True,
        },
        {
            "id": "dst",
            "name": "Sunday early",
            "door_groups": ["building"],
            "schedule": ["Sun 00:30-03:00"],
        },
        {
            "id": "gapstart",
            "name": "Gap start",
            "door_groups": ["lab"],
            "schedule": ["Sun 01:30-04:00"],
        },
        {
            "id": "repeated-end",
            "name": "Repeated end",
            "door_groups": ["rooms"],
            "schedule": ["Sun 00:00-01:30"],
        },
    ],
    "members": [
        {"id": m, "name": m.replace("_", " ").title(), "status": "active"}
        for m in (
            "day_m",
            "night_m",
            "all_m",
            "dst_m",
            "book_m",
            "pass_m",
            "future_m",
            "past_m",
            "none_m",
        )
    ]
    + [
        {"id": "sus_m", "name": "Suspended", "status": "suspended"},
        {"id": "can_m", "name": "Cancelled", "status": "cancelled"},
        {"id": "staff_m", "name": "Staff", "status": "active", "staff": True},
    ],
    "credentials": [
        _card("c-day", "day_m", "04000001"),
        _card("c-night", "night_m", "04000002"),
        _card("c-all", "all_m", "04000003"),
        _card("c-dst", "dst_m", "04000004"),
        _card("c-book", "book_m", "04000005"),
        _card("c-sus", "sus_m", "04000006"),
        _card("c-can", "can_m", "04000007"),
        _card("c-revoked", "day_m", "04000008", status="revoked"),
        _card("c-lost", "day_m", "04000009", status="lost"),
        _card("c-suspended", "day_m", "0400000A", status="suspended"),
        _card("c-early", "day_m", "0400000B", valid_from="2026-03-11T00:00:00Z"),
        _card("c-expired", "day_m", "0400000C", valid_until="2026-03-09T00:00:00Z"),
        _card("c-pass", "pass_m", "0400000D"),
        _card("c-future", "future_m", "0400000E"),
        _card("c-past", "past_m", "0400000F"),
        _card("c-none", "none_m", "04000010"),
        {"id": "w-day", "member_id": "day_m", "kind": "wiegand", "value": "26/12:345"},
        {"id": "p-day", "member_id": "day_m", "kind": "pin", "value": pin_digest("t", "1234")},
        {"id": "p-all", "member_id": "all_m", "kind": "pin", "value": pin_digest("t", "5678")},
        {
            "id": "p-day-old",
            "member_id": "day_m",
            "kind": "pin",
            "value": pin_digest("t", "1111"),
            "status": "revoked",
        },
        _card("c-staff", "staff_m", "04000011"),
    ],
    "entitlements": [
        _ent(
            "e-day",
            "day_m",
            "day",
            valid_from="2026-01-01T00:00:00Z",
            valid_until="2027-01-01T00:00:00Z",
        ),
        _ent("e-night", "night_m", "night"),
        _ent("e-all", "all_m", "always"),
        _ent("e-dst", "dst_m", "dst"),
        _ent("e-gap", "dst_m", "gapstart"),
        _ent("e-rep", "dst_m", "repeated-end"),
        _ent("e-book", "book_m", "day"),
        _ent("e-sus", "sus_m", "day"),
        _ent("e-future", "future_m", "day", valid_from="2026-04-01T00:00:00+01:00"),
        _ent("e-past", "past_m", "day", valid_until="2026-02-01T00:00:00Z"),
        _ent("e-staff", "staff_m", "day"),
    ],
    "bookings": [
        _booking(
            "b-paid",
            "book_m",
            "r1",
            "2026-03-10T14:00:00Z",
            "2026-03-10T16:00:00Z",
            "paid",
            grace_before_min=10,
            grace_after_min=15,
        ),
        _booking(
            "b-unpaid", "book_m", "r2", "2026-03-10T10:00:00Z", "2026-03-10T11:00:00Z", "unpaid"
        ),
        _booking(
            "b-refunded", "book_m", "r2", "2026-03-11T10:00:00Z", "2026-03-11T11:00:00Z", "refunded"
        ),
        _booking(
            "b-cancelled",
            "book_m",
            "r2",
            "2026-03-12T10:00:00Z",
            "2026-03-12T11:00:00Z",
            "cancelled",
        ),
        _booking(
            "b-included",
            "book_m",
            "r1",
            "2026-03-11T09:00:00Z",
            "2026-03-11T10:00:00Z",
            "included_in_plan",
        ),
    ],
    "passes": [
        {
            "id": "inv-1",
            "member_id": "pass_m",
            "kind": "visitor",
            "name": "visitor invite",
            "doors": ["front", "room1"],
            "valid_from": "2026-03-10T09:00:00Z",
            "valid_until": "2026-03-10T17:00:00Z",
        },
    ],
}


def base_dataset() -> dict[str, Any]:
    """A fresh deep copy of :data:`BASE_DATASET` to modify."""
    return copy.deepcopy(BASE_DATASET)


def write_cache(path: Path, doc: dict[str, Any]) -> None:
    """Replace the cache at ``path`` with the dataset document ``doc``."""

    async def go() -> None:
        async with CacheWriter(path, ManualClock(datetime(2026, 3, 1, tzinfo=UTC))) as w:
            await w.replace_dataset(parse_dataset(doc))

    asyncio.run(go())


@pytest.fixture
def make_reader(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], CacheReader]]:
    """Build a real cache file from a dataset document and open it for reading."""
    readers: list[CacheReader] = []

    def make(doc: dict[str, Any]) -> CacheReader:
        path = tmp_path / f"cache-{len(readers)}.sqlite3"
        write_cache(path, doc)
        reader = CacheReader(path)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()


@pytest.fixture
def reader(make_reader: Callable[[dict[str, Any]], CacheReader]) -> CacheReader:
    """A reader over :data:`BASE_DATASET`."""
    return make_reader(base_dataset())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    """A running Mosquitto with TLS, client certificates and an ACL for gw-1 and gw-2."""
    from sim.broker import Broker

    b = Broker(tmp_path / "broker", site="t", gateways=["gw-1", "gw-2"])
    b.start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def _keep_the_umask() -> Iterator[None]:
    """``doorgw run`` sets the process's umask for good (it is the daemon's whole
    life); run in-process by a test, it must not change the next test's files."""
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


class SmallDisk:
    """A real, small filesystem (tmpfs) that a test can fill up and free again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Take every free byte, as a big log file or a stuck download would."""
        import os

        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 4096, 1):
                block = b"\0" * size
                try:
                    while True:
                        os.write(fd, block)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        """Give the space back."""
        self._filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 16 MiB tmpfs of its own (needs root to mount, as CI runs the suite)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs the suite as root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def revoke_day_card(status: str = "revoked") -> dict[str, Any]:
    """The change a platform sends to revoke day_m's card (c-day)."""
    return {
        "op": "upsert",
        "entity": "credential",
        "data": {
            "id": "c-day",
            "member_id": "day_m",
            "kind": "nfc_uid",
            "value": "04000001",
            "status": status,
        },
    }


async def until(predicate: Callable[[], object], limit: float = 20.0) -> None:
    """Wait (real time) until ``predicate()`` holds; TimeoutError after ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - polling state other threads change
            await asyncio.sleep(0.01)


@asynccontextmanager
async def background(coro: Coroutine[Any, Any, object]) -> AsyncIterator[asyncio.Task[object]]:
    """Run ``coro`` as a task for the ``with`` block; cancel it and wait for it on leaving."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class LoopTicks:
    """Counts the event loop's 10 ms turns while :meth:`run` runs: whether other
    doors' work went on meanwhile (``async with background(ticks.run())``)."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        """Count turns until cancelled."""
        while True:
            await asyncio.sleep(0.01)
            self.count += 1


def _hold(path: Path, seconds: float, holding: threading.Event) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        holding.set()
        threading.Event().wait(seconds)
        db.execute("COMMIT")
    finally:
        db.close()


async def held_for(path: Path, seconds: float) -> threading.Thread:
    """Another connection holds ``path``'s write lock for ``seconds``, as a flusher
    starting the log again does; returns its thread once the lock is held."""
    holding = threading.Event()
    holder = threading.Thread(target=_hold, args=(path, seconds, holding))
    holder.start()
    await asyncio.to_thread(holding.wait)
    return holder


def gateway_config(tmp_path: Path, signer: Signer, **sections: Any) -> Config:
    """The test gateway ``gw-1`` of site ``t``: data under ``tmp_path/data``, the
    platform keys of ``signer`` pinned, and a broker URL nothing listens on (so the
    broker is unreachable unless a test says otherwise).  ``sections`` replace
    whole sections of the config (``doors=(DoorConfig(...),)``, ``api=...``)."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [signer.public_jwk()]}))
    settings: dict[str, Any] = {
        "gateway": GatewaySection(id="gw-1", site_id="t", data_dir=tmp_path / "data"),
        "mqtt": MqttSection(urls=(f"mqtt://127.0.0.1:{free_port()}",)),
        "sync": SyncSection(keys_file=keys),
        **sections,
    }
    return Config(**settings)


def write_gateway_config(tmp_path: Path, config: Config) -> Path:
    """``config`` written as ``tmp_path/doorgw.toml`` (for code that reads files)."""
    return write_config(config, tmp_path / "doorgw.toml")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the whole suite passed: fail if a reason code was never returned."""
    if exitstatus != 0 or not reason_coverage.whole_suite(session.config):
        return
    missing = reason_coverage.never_returned()
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "reason codes no decision function returned in this run (a test must "
                f"reach each): {', '.join(missing)}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
