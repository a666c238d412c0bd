"""The door's own writes, in a file beside the cache: nonces claimed and pass uses.

A scanned app code's nonce and a pass's use are written on every scan,
while a member waits at the door.  They once lived in the cache file
itself, and each such commit cost the next card tap dearly: in WAL mode
a read transaction that finds the file changed by another connection
empties that connection's whole page cache, so the decision after a scan
read every page it needed again (``doorgw bench tap``: a PN532 tap's added
p99 went from about 0.7 ms alone to about 1.2 ms beside a QR scanner).
In a file of their own, a claim resets only the small file's pages: the
cache's stay warm for the next tap.

The file is ``<cache stem>-claims<suffix>`` (``cache-claims.sqlite3``), is
never part of a snapshot, and outlives every rebuild of the cache: a
nonce once used stays used until its command expires, and a pass keeps
the uses counted here until it ends.  The tap path's reader attaches it
read-only as ``claims`` (:mod:`gateway.store.reader`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from datetime import datetime
from pathlib import Path

from gateway.errors import CacheError
from gateway.store.repair import quick_check, set_aside

log = logging.getLogger(__name__)

#: The claims file's tables (created when missing; the file has no migrations yet).
CLAIMS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen_nonces "
    "(nonce TEXT PRIMARY KEY, exp INTEGER NOT NULL) WITHOUT ROWID;\n"
    "CREATE TABLE IF NOT EXISTS pass_uses (pass_id TEXT PRIMARY KEY, uses INTEGER NOT NULL, "
    "until INTEGER NOT NULL) WITHOUT ROWID;"
)


def claims_path(cache_path: Path) -> Path:
    """The claims file kept beside the cache file at ``cache_path``."""
    return cache_path.with_name(f"{cache_path.stem}-claims{cache_path.suffix}")


def open_claims(path: Path, now: datetime) -> sqlite3.Connection:
    """A connection to the claims file at ``path`` (created when missing) for the
    event loop's thread: WAL, ``synchronous=NORMAL``, never checkpointing itself
    (its :class:`~gateway.store.flush.WalFlusher` does, in its worker thread).

    A damaged file is set aside (:func:`~gateway.store.repair.set_aside`) and a
    new one started: claims lost that way are at worst a nonce or a pass use
    counted again, which a gateway that would not start cannot do better.
    """
    try:
        return _open(path)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
            raise CacheError(f"{path}: cannot open the claims file: {exc}") from None
        damage = str(exc)
    except CacheError as exc:
        damage = str(exc)
    aside = set_aside(path, now)
    log.error("%s: the claims file is damaged (%s); set aside as %s", path, damage, aside.name)
    try:
        return _open(path)
    except (sqlite3.Error, CacheError) as exc:
        raise CacheError(f"{path}: cannot start a new claims file: {exc}") from None


def _open(path: Path) -> sqlite3.Connection:
    # A URI, so that a path attached to it (move_claims) may say ``mode=ro``.
    db = sqlite3.connect(path.resolve().as_uri(), uri=True, isolation_level=None)
    try:
        if db.execute("PRAGMA journal_mode=WAL").fetchone() != ("wal",):
            raise sqlite3.OperationalError("cannot switch the claims file to WAL mode")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("PRAGMA busy_timeout=20")  # opening; DoorWrites sets 0 (it waits itself)
        problem = quick_check(db)
        if problem is not None:
            raise CacheError(f"{path}: {problem}")
        db.executescript(CLAIMS_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def move_claims(cache_path: Path, now: datetime) -> None:
    """Copy the claims an older cache held in its own tables into the claims file.

    Run before the cache migration that drops those tables, in its own
    transaction on the claims file: a crash between the two copies again
    next time (the copy ignores rows already there), and loses nothing.
    """
    try:
        _copy(open_claims(claims_path(cache_path), now), cache_path)
    except sqlite3.Error as exc:
        raise CacheError(f"{cache_path}: cannot move its claims out: {exc}") from None


def _copy(db: sqlite3.Connection, cache_path: Path) -> None:
    try:
        db.execute("PRAGMA synchronous=FULL")  # on the storage before the old tables go
        db.execute("ATTACH DATABASE ? AS old", (f"{cache_path.resolve().as_uri()}?mode=ro",))
        tables = {r[0] for r in db.execute("SELECT name FROM old.sqlite_master")}
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("seen_nonces", "pass_uses"):
                if table in tables:
                    db.execute(f"INSERT OR IGNORE INTO main.{table} SELECT * FROM old.{table}")
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
    finally:
        db.close()
