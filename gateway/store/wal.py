"""Starting a write-ahead log again, short, once a checkpoint has copied all of it.

After a checkpoint that copied the whole log into the database, SQLite starts
the log again from its first byte at the next commit, rewriting pages last
written a checkpoint ago.  A commit's frames (a page and a 24-byte header)
do not fill whole pages of the file, so a page the kernel has dropped from
its cache meanwhile (idle page cache is reclaimed under memory pressure) is
read back from the storage first: a disk read inside whichever commit comes
next, often a tap's.  So whoever checkpoints also starts the log again, off
the door's path, with a commit that changes nothing and cuts the file to
what it wrote (``journal_size_limit``): later commits append to new pages,
which need no read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite


def fully_checkpointed(result: Sequence[Any] | None) -> bool:
    """Whether ``PRAGMA wal_checkpoint`` (its one row) copied a non-empty log whole."""
    if result is None:
        return False
    busy, frames, copied = (int(v) for v in result)
    return not busy and frames > 0 and copied == frames


def restart_script(user_version: int) -> str:
    """A transaction that rewrites the file's ``user_version`` as it is, with
    ``journal_size_limit=0`` while it commits: it starts the log again (when no
    reader still needs the old one) and cuts the file to its own frame."""
    return (
        "BEGIN IMMEDIATE;"
        "PRAGMA journal_size_limit=0;"
        f"PRAGMA user_version={int(user_version)};"
        "COMMIT;"
        "PRAGMA journal_size_limit=-1;"
    )


async def checkpoint(db: aiosqlite.Connection, user_version: int) -> None:
    """A PASSIVE checkpoint on ``db`` (autocommit, no transaction of its own open);
    the log started again short when it copied all of it (sqlite3.Error if refused)."""
    done = await db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
    if not fully_checkpointed(next(iter(done), None)):
        return
    try:
        await db.executescript(restart_script(user_version))
    except aiosqlite.Error:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
