"""Writes made at once in the event loop's thread: a scanned code's nonce, a
pass's use (which a member at a door waits for), and small deltas.

They run at once in the event loop's thread, on connections of their own:
a commit with ``synchronous=NORMAL`` in WAL mode is a page-cache write,
cheaper than a trip to aiosqlite's thread and back (the reads that decide
a tap are made the same way, see :mod:`gateway.store.reader`).  Small
deltas go to the cache file and take turns with the cache writer's
transactions (its lock), so they never meet another write transaction and
never wait for SQLite's busy handler; the cache writer checkpoints their
log, in its thread, after every :data:`CHECKPOINT_COMMITS` of them.
Nonces and pass uses go to the claims file (:mod:`gateway.store.claims`),
whose flusher syncs and checkpoints it; when its flusher holds the file
(starting the log again), a claim waits in steps on the event loop, not in
SQLite's busy handler, which would hold every door up with it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.errors import CacheError, DatasetError
from gateway.store.claims import claims_path, open_claims
from gateway.store.connect import WhenFree
from gateway.store.flush import WalFlusher

#: Seconds between forgetting expired nonces, and expired pass counts (kept
#: longer they are harmless: the code's or the pass's own time refuses it).
PURGE_SECONDS = 60.0
#: Commits here after which the cache writer checkpoints the log (each adds a
#: page or two: about SQLite's own 1000-page default).
CHECKPOINT_COMMITS = 400


def integrity_message(exc: sqlite3.IntegrityError) -> str:
    """What a constraint SQLite enforced means for the platform's data."""
    text = str(exc)
    if "credentials.kind, credentials.value" in text:
        return "a credential value is already held by another credential"
    if "FOREIGN KEY" in text:
        return "an entity refers to a member, plan or resource that is not in the cache"
    return text


class DoorWrites:
    """Nonce claims, pass uses and small transactions, written in the caller's thread."""

    def __init__(self, path: Path, clock: Clock, flusher: WalFlusher | None = None) -> None:
        self._clock = clock
        #: Syncs (and checkpoints) the claims file within its window: a power cut
        #: would otherwise take claims back.
        self._flusher = flusher
        #: Claims and uses committed here, ever (the flusher's sequence).
        self._written = 0
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.execute("PRAGMA busy_timeout=20")
        self._db.execute("PRAGMA foreign_keys=ON")  # as on the writer's connection
        try:
            self._claims = open_claims(claims_path(path), clock.now())
            self._claims.execute("PRAGMA busy_timeout=0")  # busy: waited for in _write
        except BaseException:
            self._db.close()
            raise
        #: When (monotonic) each table's expired rows were last forgotten.
        self._purged: dict[str, float] = {}
        #: The claims file's writes, waiting while its flusher holds it.
        self._when_free = WhenFree()
        #: Commits made here since the log was last checkpointed (see
        #: :meth:`checkpoint_due`): this connection never checkpoints itself.
        self.commits = 0

    def transaction(self, statements: Sequence[tuple[str, Sequence[Any]]], failure: str) -> None:
        """Run ``statements`` as one write transaction on the cache file, now:
        committed whole, or rolled back whole.  The caller holds the cache
        writer's lock, so no other write transaction is open on the file."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CacheError(f"{failure}: {exc}") from exc
        try:
            for sql, params in statements:
                db.execute(sql, params)
            db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise DatasetError(f"{failure}: {integrity_message(exc)}") from None
            if isinstance(exc, sqlite3.Error):
                raise CacheError(f"{failure}: {exc}") from exc
            raise
        # A delta needs no sync: one a power cut takes back is asked for again.
        self.commits += 1

    def checkpoint_due(self) -> bool:
        """Whether enough was committed here for the writer to checkpoint the log
        (in its own thread): else scans alone would grow it without bound."""
        if self.commits < CHECKPOINT_COMMITS:
            return False
        self.commits = 0
        return True

    def close(self) -> None:
        """Close the connections."""
        self._claims.close()
        self._db.close()

    async def claim_nonce(self, nonce: str, exp: int, forget_before: int) -> bool:
        """Record a command's one-time nonce; False if it was seen before (a replay).

        Nonces are kept until their command's expiry; those that expired
        before ``forget_before`` go (the caller makes sure a clock run ahead
        cannot move it early), after which the expiry check alone refuses
        the command.
        """
        rows = await self._write(
            "nonce not recorded",
            "INSERT OR IGNORE INTO seen_nonces VALUES (?, ?) RETURNING 1",
            (nonce, exp),
            purge=("DELETE FROM seen_nonces WHERE exp < ?", (forget_before,)),
        )
        return bool(rows)

    async def use_pass(self, pass_id: str, max_uses: int, until: int, now: int) -> int | None:
        """Count one use of a pass allowed ``max_uses`` uses; None if they are all used.

        Returns the uses so far, this one included.  The count is kept until
        the pass ends (``until``), after which the pass is refused anyway.
        """
        rows = await self._write(
            "pass use not recorded",
            "INSERT INTO pass_uses (pass_id, uses, until) VALUES (?, 1, ?) "
            "ON CONFLICT(pass_id) DO UPDATE SET uses = uses + 1 WHERE uses < ? "
            "RETURNING uses",
            (pass_id, until, max_uses),
            purge=("DELETE FROM pass_uses WHERE until < ?", (now,)),
        )
        return int(rows[0][0]) if rows else None

    async def _write(
        self,
        failure: str,
        sql: str,
        params: Sequence[Any],
        *,
        purge: tuple[str, Sequence[Any]],
    ) -> list[Any]:
        now = self._clock.monotonic()

        def write() -> list[Any]:
            if now - self._purged.get(purge[0], float("-inf")) >= PURGE_SECONDS:
                self._claims.execute(*purge)
                self._purged[purge[0]] = now
            return self._claims.execute(sql, params).fetchall()

        try:
            # No lock of ours: the claims file has no other writer than its
            # flusher, whose start of a new log holds the file for a moment.
            rows = await self._when_free(write)
        except sqlite3.Error as exc:
            raise CacheError(f"{failure}: {exc}") from exc
        self._written += 1
        if self._flusher is not None:
            self._flusher.committed(self._written)
        return rows
