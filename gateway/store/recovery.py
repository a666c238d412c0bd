"""Opening the cache and the outbox whatever state the card left them in.

:func:`open_cache` and :func:`open_outbox` are what the gateway calls at
start: a damaged file is set aside and replaced (:mod:`gateway.store.repair`),
so a bad SD-card sector costs a resync, never a gateway stuck restarting.
:func:`check_cache` is the long-running half: a full ``integrity_check``
of the cache shortly after start and then daily, on its own read-only
connection beside the doors; damage found there ends the process (the
cache in use cannot be swapped under the readers) after leaving a mark, so
the restart sets the file aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.errors import CacheCorruptError, ServiceFailedError
from gateway.events import Record
from gateway.store.outbox import Outbox
from gateway.store.repair import salvage_events, set_aside
from gateway.store.writer import CacheWriter

log = logging.getLogger(__name__)

#: Seconds after start before the first full check, and between checks.
FIRST_CHECK_AFTER = 120.0
CHECK_EVERY = 24 * 3600.0


def damage_mark(cache: Path) -> Path:
    """The file that says the cache failed its full check (set aside at next start)."""
    return cache.with_name(cache.name + ".check-failed")


async def open_cache(
    stack: contextlib.AsyncExitStack, writer: CacheWriter, clock: Clock
) -> list[tuple[str, dict[str, Any]]]:
    """Open the cache; if it is damaged, set it aside and start an empty one.

    Returns the events to record (``cache_repaired``) once the gateway runs.
    """
    mark = damage_mark(writer.path)
    detail = None
    if mark.exists():
        detail = mark.read_text(errors="replace").strip() or "failed its integrity check"
    else:
        try:
            await stack.enter_async_context(writer)
            return []
        except CacheCorruptError as exc:
            detail = str(exc)
    moved = set_aside(writer.path, clock.now()) if writer.path.exists() else None
    mark.unlink(missing_ok=True)
    log.error("%s; starting with an empty cache and asking the platform for data", detail)
    await stack.enter_async_context(writer)
    data = {"detail": detail[:300], "moved_to": None if moved is None else moved.name}
    return [("cache_repaired", data)]


async def open_outbox(stack: contextlib.AsyncExitStack, outbox: Outbox, clock: Clock) -> None:
    """Open the outbox; if it is damaged, set it aside and salvage its events into a new one."""
    try:
        await stack.enter_async_context(outbox)
        return
    except CacheCorruptError as exc:
        detail = str(exc)
    moved = set_aside(outbox.path, clock.now())
    salvage = await asyncio.to_thread(salvage_events, moved)
    await stack.enter_async_context(outbox)
    await outbox.adopt(salvage, moved_to=moved.name, detail="; ".join([detail, *salvage.problems]))


def _integrity_check(path: Path) -> str | None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("PRAGMA integrity_check(20)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    return None if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:3])


async def check_cache(path: Path, clock: Clock, record: Record) -> None:
    """Until cancelled: check the whole cache now and then; end the process if damaged."""
    await clock.sleep(FIRST_CHECK_AFTER)
    while True:
        damage = await asyncio.to_thread(_integrity_check, path)
        if damage is not None:
            detail = f"{path}: the cache failed its integrity check: {damage}"
            damage_mark(path).write_text(detail + "\n")
            await record("cache_damaged", {"detail": detail[:300]})
            raise ServiceFailedError(f"{detail}; restarting to set it aside and resync")
        await clock.sleep(CHECK_EVERY)
