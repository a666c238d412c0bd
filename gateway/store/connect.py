"""SQLite from asyncio: opening a file without leaving aiosqlite's thread behind, and
waiting for a file another connection holds.

When :func:`aiosqlite.connect` fails (a path that is a directory, a
permission refused), aiosqlite queues its worker thread's stop and returns
at once; a process that then exits closes its event loop under that thread,
which dies with "RuntimeError: Event loop is closed" after the real
message.  So the file is opened once with the standard library first: a
path that cannot be opened fails there, in this thread, and aiosqlite is
only asked for files that open.

:class:`WhenFree` is the other side of using SQLite from the event loop's
thread: a write that finds the file held by another connection waits for
it in steps on the loop, never in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

#: Seconds a write made in the event loop's thread waits, in all, for another
#: connection that holds its file's write lock, then fails.  Its file's
#: flusher does, for a moment, when it starts the log again after a
#: checkpoint: that commit syncs the new log's header, one fsync while the
#: lock is held, tens of milliseconds on an SD card and more while the card
#: collects its garbage.  The wait is the event loop's, in steps of
#: :data:`HELD_RETRY`, never SQLite's busy handler, which would stop the
#: loop and every door with it.
HELD_WAIT = 1.0
HELD_RETRY = 0.002

_T = TypeVar("_T")


def held(exc: BaseException) -> bool:
    """Whether SQLite refused because another connection holds the file's
    write lock (SQLITE_BUSY: nothing was written)."""
    return (
        isinstance(exc, sqlite3.OperationalError)
        and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    )


class WhenFree:
    """Writes to one file, made again while another connection holds it.

    ``await when_free(write)`` calls ``write()`` (on a connection with
    ``busy_timeout=0``, which changes nothing when it is refused) and, while
    the file is :func:`held`, again every :data:`HELD_RETRY` seconds for up
    to :data:`HELD_WAIT`; then the error is raised.  A file held past a wait
    (another process keeping it) does not make every later write wait as
    long: until a write goes through again, each is tried once.
    """

    def __init__(self) -> None:
        #: A wait ran out and no write has gone through since.
        self.stuck = False

    async def __call__(self, write: Callable[[], _T]) -> _T:
        give_up: float | None = None  # set at the first refusal: a tap's write pays nothing
        while True:
            try:
                result = write()
            except sqlite3.OperationalError as exc:
                if not held(exc):
                    raise
                now = asyncio.get_running_loop().time()
                if give_up is None:
                    give_up = now + (0.0 if self.stuck else HELD_WAIT)
                if now >= give_up:
                    self.stuck = True
                    raise
            else:
                self.stuck = False
                return result
            await asyncio.sleep(HELD_RETRY)


async def connect(path: Path) -> aiosqlite.Connection:
    """An aiosqlite connection to ``path`` in autocommit mode (sqlite3.Error if it
    cannot be opened)."""
    sqlite3.connect(path).close()
    return await aiosqlite.connect(path, isolation_level=None)
