"""Bare SQLite reads, the floor the decision benchmarks measure themselves against."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosqlite

from gateway.store.reader import HOT_PATH_SQL, CacheReader


def point_lookup_floor(path: Path, values: list[str]) -> tuple[float, float]:
    """p50 (microseconds) of one credential point lookup through sqlite3 and through aiosqlite.

    This is why the tap path does not use aiosqlite: every call hops to its
    worker thread and back.
    """
    sql = HOT_PATH_SQL["credential"]
    reader = CacheReader(path)
    sync_ns = []
    for value in values:
        t0 = time.perf_counter_ns()
        reader._conn.execute(sql, ("nfc_uid", value)).fetchone()
        sync_ns.append(time.perf_counter_ns() - t0)
    reader.close()

    uri = f"{path.resolve().as_uri()}?mode=ro"

    async def measure() -> list[int]:
        out = []
        async with aiosqlite.connect(uri, uri=True) as db:
            for value in values:
                t0 = time.perf_counter_ns()
                async with db.execute(sql, ("nfc_uid", value)) as cursor:
                    await cursor.fetchone()
                out.append(time.perf_counter_ns() - t0)
        return out

    async_ns = asyncio.run(measure())
    return _p50_us(sync_ns), _p50_us(async_ns)


def _p50_us(ns: list[int]) -> float:
    return sorted(ns)[len(ns) // 2] / 1000
