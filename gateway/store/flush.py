"""Making stored events durable against power loss, in groups, off the door's path.

The outbox commits each event to SQLite's write-ahead log with
``synchronous=NORMAL``: the commit is a ``write()`` into the kernel's page
cache, which outlives any crash of this process (kill -9 included), and
costs no wait for the disk.  What a power cut can still take is the part
of the log not yet on the storage itself.  :class:`WalFlusher` closes that
gap: after the first commit it has not yet made durable, it syncs the log
file (``fsync`` on the log's own file, from a worker thread, never the
database's) so that every event is on the storage within ``window``
seconds of being stored, one sync for every event committed meanwhile.

A sync starts as soon as something is committed and no sync is under way;
what is committed during a sync waits for it to end and then shares the
next one.  So a lone tap is synced at once (its event reaches the platform
as soon as it can), and a burst of events costs a sync per sync-time, not
one each.  Each sync is to end within the window of the oldest event it
covers; a disk slower than that is synced back to back, and each sync that
ended late is counted (:attr:`WalFlusher.late`) and shown in the status.

Nothing may leave the gateway before it is durable: the platform
acknowledges sequence numbers, and an event it saw that a power cut then
took would have its number used again for another event.  So the
publisher sends only up to :attr:`WalFlusher.durable_seq`.

Checkpoints (copying the log into the database file, which SQLite would
otherwise do in the middle of some tap's commit) are done here too, on the
flusher's own connection, every :data:`CHECKPOINT_EVENTS` events or
:data:`CHECKPOINT_SECONDS`; after one that copied the whole log, the log is
started again here, short (:mod:`gateway.store.wal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from gateway.clock import Clock
from gateway.store.wal import fully_checkpointed, restart_script

log = logging.getLogger(__name__)

#: Checkpoint after this many events (each commit adds a few pages to the
#: log: this keeps it to a few MB, near SQLite's own 1000-page default) ...
CHECKPOINT_EVENTS = 500
#: ... or this many seconds after the last one, if anything was written since.
CHECKPOINT_SECONDS = 60.0

#: Seconds the checkpointer waits for the outbox's own commit to let go of the
#: log before it starts the log again (one commit takes well under this).
RESTART_WAIT = 0.05

#: Seconds between attempts after the disk refused a sync.
RETRY_SECONDS = 5.0

#: How a file is made durable: ``os.fsync`` (tests and benchmarks may wrap it).
Sync = Callable[[int], None]


class WalFlusher:
    """Syncs one SQLite file's write-ahead log in groups, within a window.

    ``delay`` seconds are added to every sync, in the syncing thread, as a
    slow storage would (``doorgw bench tap --fsync-delay-ms``).  ``sync``
    is the call that makes the log's file durable.  ``checkpoints=False``
    leaves checkpoints to the file's own writer (the cache's); ``what``
    names what the log holds, in the log's messages.
    """

    def __init__(
        self,
        path: Path,
        clock: Clock,
        *,
        window: float,
        delay: float = 0.0,
        sync: Sync = os.fsync,
        on_durable: Callable[[], None] = lambda: None,
        checkpoints: bool = True,
        what: str = "events",
    ) -> None:
        self.path = Path(path)
        self.what = what
        self._checkpoints = checkpoints
        self.wal_path = self.path.with_name(self.path.name + "-wal")
        self.window = window
        self.delay = delay
        self._clock = clock
        self._sync = sync
        self._on_durable = on_durable
        #: Every event up to this sequence number is on the storage.
        self.durable_seq = 0
        #: The last sequence number committed to the log.
        self._committed = 0
        #: When (monotonic) the oldest commit not yet synced was made.
        self._since: float | None = None
        self._wake = asyncio.Event()
        self._stopping = threading.Event()
        #: One worker thread at a time uses the log's file and the checkpointer: a
        #: sync still under way when the flusher is cancelled finishes before close.
        self._io = threading.Lock()
        self._closed = False
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._checkpointer: sqlite3.Connection | None = None
        #: The sequence number, and the monotonic time, of the last checkpoint.
        self._checkpointed: tuple[int, float] = (0, 0.0)
        #: Syncs done, syncs that ended after the window, and the last and longest took.
        self.flushes = 0
        self.late = 0
        self.last_seconds = 0.0
        self.max_seconds = 0.0
        #: Why the last sync failed, or None.
        self.error: str | None = None

    async def open(self, committed: int) -> None:
        """Start with everything up to ``committed`` (left by the last run) made durable."""
        self._committed = committed
        self._checkpointed = (committed, self._clock.monotonic())
        self._stopping.clear()
        self._closed = False
        await asyncio.to_thread(self._sync_now)
        self.durable_seq = committed

    def committed(self, seq: int) -> None:
        """Events up to ``seq`` are in the log now: have them synced within the window."""
        self._committed = seq
        if self._since is None:
            self._since = self._clock.monotonic()
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: sync what was committed, as soon as no sync is under way."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await self._clock.sleep(RETRY_SECONDS)

    async def flush(self) -> bool:
        """Sync now what was committed; False (and the reason kept) if the disk refused."""
        target, since = self._committed, self._since
        if target <= self.durable_seq:
            self._since = None
            return True
        self._since = None  # commits from now on belong to the next sync
        started = self._clock.monotonic()
        last, at = self._checkpointed
        checkpoint = self._checkpoints and (
            target - last >= CHECKPOINT_EVENTS or started - at >= CHECKPOINT_SECONDS
        )
        try:
            # Shielded: a sync under way completes and is accounted for.  The
            # executor's own future, not to_thread's coroutine: shielding that
            # would cost a task for every sync, one a delta or a tap.
            sync = functools.partial(self._sync_now, checkpoint=checkpoint)
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, sync))
        except (OSError, sqlite3.Error) as exc:
            if since is not None:
                self._since = since if self._since is None else min(since, self._since)
            self._wake.set()
            detail = str(exc) or type(exc).__name__
            if self.error is None:
                log.error("%s: %s cannot be made durable (%s)", self.wal_path, self.what, detail)
            self.error = detail
            return False
        took = self._clock.monotonic() - started
        if checkpoint:
            self._checkpointed = (target, started)
        self.flushes += 1
        self.last_seconds = took
        self.max_seconds = max(self.max_seconds, took)
        if since is not None and self._clock.monotonic() - since > self.window:
            self.late += 1
        if self.error is not None:
            log.warning("%s: %s are made durable again", self.wal_path, self.what)
            self.error = None
        self.durable_seq = max(self.durable_seq, target)
        self._on_durable()
        return True

    async def close(self) -> None:
        """Sync what is left, then let go of the log's file."""
        self._stopping.set()
        if self._committed > self.durable_seq:
            self.delay = 0.0
            with contextlib.suppress(OSError, sqlite3.Error):
                await asyncio.to_thread(self._sync_now)
                self.durable_seq = self._committed
        await asyncio.to_thread(self._release)

    # In the worker thread.

    def _sync_now(self, *, checkpoint: bool = False) -> None:
        if self.delay > 0:
            self._stopping.wait(self.delay)
        with self._io:
            self._sync_locked(checkpoint=checkpoint)

    def _sync_locked(self, *, checkpoint: bool) -> None:
        if self._closed:
            return  # a sync that started after close: the file was synced on closing
        fd = self._log_fd()
        if fd is None:
            return  # no log yet: nothing was committed to one
        self._sync(fd)
        if checkpoint:
            self._checkpoint()

    def _log_fd(self) -> int | None:
        """The log's file, opened again if SQLite replaced it (a new file is also
        synced into its directory, or a power cut could lose the name)."""
        try:
            st = os.stat(self.wal_path)
        except FileNotFoundError:
            return None
        if self._fd is not None and self._inode == (st.st_dev, st.st_ino):
            return self._fd
        self._close_fd()
        self._fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
        self._inode = (st.st_dev, st.st_ino)
        directory = os.open(self.wal_path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._sync(directory)
        finally:
            os.close(directory)
        return self._fd

    def _checkpoint(self) -> None:
        db = self._checkpointer
        if db is None:
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=RESTART_WAIT
            )
            db.execute("PRAGMA synchronous=NORMAL")
            self._checkpointer = db
        # PASSIVE: never waits for, nor holds up, the outbox's own connection.
        if not fully_checkpointed(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()):
            return  # a reader still needs the log: it is started again after a later one
        # Started again here, not in the next tap's commit (gateway.store.wal).
        version = db.execute("PRAGMA user_version").fetchone()[0]
        try:
            db.executescript(restart_script(version))
        except sqlite3.OperationalError:
            # The door's commit held the log: started again after a later checkpoint.
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")

    def _release(self) -> None:
        with self._io:
            self._release_locked()

    def _release_locked(self) -> None:
        self._closed = True
        self._close_fd()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._inode = None, None
