"""Opening a SQLite file for asyncio, without leaving aiosqlite's thread behind.

When :func:`aiosqlite.connect` fails (a path that is a directory, a
permission refused), aiosqlite queues its worker thread's stop and returns
at once; a process that then exits closes its event loop under that thread,
which dies with "RuntimeError: Event loop is closed" after the real
message.  So the file is opened once with the standard library first: a
path that cannot be opened fails there, in this thread, and aiosqlite is
only asked for files that open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite


async def connect(path: Path) -> aiosqlite.Connection:
    """An aiosqlite connection to ``path`` in autocommit mode (sqlite3.Error if it
    cannot be opened)."""
    sqlite3.connect(path).close()
    return await aiosqlite.connect(path, isolation_level=None)
