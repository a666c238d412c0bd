"""Damaged database files: set aside (never deleted) and, for the outbox, salvaged.

SD cards fail, and a power cut mid-write on a bad card can leave a SQLite
file that no longer opens or fails its integrity check.  A gateway that
refuses to start over it would loop under systemd for ever, so:

* the **cache** is moved aside (:func:`set_aside`) and the gateway starts
  empty and resyncs: the platform has every byte of it;
* the **outbox** holds the only copy of unsent events, so it is moved aside
  too, and every event that can still be read is copied into the new one
  (:func:`salvage_events`).  Sequence numbers go on above any the old file
  used; numbers that cannot be accounted for are declared lost in an
  ``outbox_salvaged`` event (docs/protocol.md), so the platform neither
  waits for them nor mistakes a new event for an old one.

A damaged file keeps its name with ``.damaged-<UTC time>`` added, with its
``-wal`` and ``-shm`` files beside it; the newest :data:`KEEP_DAMAGED` of
each are kept, older ones removed so repeated failures cannot fill the disk.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Damaged copies kept per file (the newest).
KEEP_DAMAGED = 3
#: Rows read per query while salvaging; a damaged range is retried row by row.
SALVAGE_BATCH = 1000


def quick_check(db: sqlite3.Connection) -> str | None:
    """None if ``PRAGMA quick_check`` passes, else its first complaint."""
    rows = db.execute("PRAGMA quick_check").fetchall()
    if rows == [("ok",)]:
        return None
    return "; ".join(str(r[0]) for r in rows[:3])


def set_aside(path: Path, now: datetime) -> Path:
    """Rename ``path`` (and its WAL and shared-memory files) out of the way; return
    the new name.  Older damaged copies beyond :data:`KEEP_DAMAGED` are removed."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    copies = sorted(
        (
            p
            for p in path.parent.glob(f"{path.name}.damaged-*")
            if not p.name.endswith(("-wal", "-shm"))
        ),
        key=lambda p: p.stat().st_mtime_ns,
    )
    for old in copies[:-KEEP_DAMAGED]:
        for victim in (old, old.with_name(old.name + "-wal"), old.with_name(old.name + "-shm")):
            with contextlib.suppress(OSError):
                victim.unlink()
    log.warning("%s was damaged; kept as %s", path, target.name)
    return target


@dataclass
class Salvage:
    """What could be read back from a damaged outbox."""

    #: Events as stored: (seq, at, type, data JSON), in order.
    rows: list[tuple[int, int, str, str]] = field(default_factory=list)
    #: The stored last and acknowledged sequence numbers, when still readable.
    last_seq: int | None = None
    acked_seq: int | None = None
    #: Drop counts owed (type -> count), when still readable.
    dropped: dict[str, int] = field(default_factory=dict)
    #: Why parts could not be read.
    problems: list[str] = field(default_factory=list)


def salvage_events(path: Path) -> Salvage:
    """Read every event still readable from the damaged outbox at ``path``."""
    out = Salvage()
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        out.problems.append(f"cannot open: {exc}")
        return out
    try:
        try:
            meta = dict(db.execute("SELECT key, value FROM outbox_meta").fetchall())
            out.last_seq = int(meta["last_seq"])
            out.acked_seq = int(meta["acked_seq"])
        except (sqlite3.Error, KeyError, TypeError, ValueError) as exc:
            out.problems.append(f"sequence numbers unreadable: {exc}")
        with contextlib.suppress(sqlite3.Error):
            out.dropped = {str(t): int(n) for t, n in db.execute("SELECT type, count FROM dropped")}
        try:
            low, high = db.execute("SELECT min(seq), max(seq) FROM events").fetchone()
        except sqlite3.Error as exc:
            # The table's own pages are gone: look between the numbers we know.
            out.problems.append(f"events index unreadable: {exc}")
            low, high = (out.acked_seq or 0) + 1, out.last_seq
        if low is None or high is None:
            return out
        start = int(low)
        while start <= int(high):
            end = start + SALVAGE_BATCH - 1
            try:
                out.rows.extend(_rows(db, start, end))
            except sqlite3.Error:
                for seq in range(start, end + 1):  # the damage is in here: row by row
                    with contextlib.suppress(sqlite3.Error):
                        out.rows.extend(_rows(db, seq, seq))
            start = end + 1
    finally:
        db.close()
    return out


def continue_numbering(
    salvage: Salvage, max_events: int, now: int
) -> tuple[int, int, dict[str, Any]]:
    """How numbering goes on after a salvage: (acked, marker, the marker event's data).

    ``marker``, the ``outbox_salvaged`` event's number, is above any number
    the old file can have used; from ``first`` to ``last`` (just below the
    marker) only the salvaged events will ever be sent.  When the old
    file's own count is unreadable, at most ``max_events`` (and a warning)
    were ever unacknowledged, all from the oldest one still held; with
    nothing held either, no gateway has used numbers as high as the time
    now in milliseconds.
    """
    seqs = [r[0] for r in salvage.rows]
    last = max([salvage.last_seq or 0, *seqs])
    if salvage.last_seq is None:
        last = max(last, seqs[0] + max_events) if seqs else now * 1000
    first = (salvage.acked_seq or 0) + 1
    lost = None if salvage.last_seq is None else max(0, last - first + 1 - len(seqs))
    data = {"first": first, "last": last, "salvaged": len(seqs), "lost": lost}
    return first - 1, last + 1, data


def _rows(db: sqlite3.Connection, first: int, last: int) -> list[tuple[int, int, str, str]]:
    rows = db.execute(
        "SELECT seq, at, type, data FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq",
        (first, last),
    ).fetchall()
    return [(int(s), int(a), str(t), str(d)) for s, a, t, d in rows]
