"""A complete snapshot transfer, checked and staged beside the live tables.

The chunks a transfer left in the cache file are checked against the
snapshot's sha256 (over the chunks' bytes as sent, in index order), then
decoded and inserted into the stage tables.  Decoding is CPU work: it runs in
a thread, so taps are not held up, and one chunk ahead, so it overlaps with
inserting the previous one.  Swapping the stage in is the sync engine's, which
replays the deltas that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

from gateway.app.memory import give_back
from gateway.errors import DatasetError, DoorgwError
from gateway.events import Record
from gateway.store.writer import CacheWriter
from gateway.wire.protocol import WIRE_VALUES, decode_part

log = logging.getLogger(__name__)

#: Records one rejection (reason, detail, topic) at a bounded rate.
Reject = Callable[[str, str, str], Awaitable[str]]


async def stage_snapshot(writer: CacheWriter, snapshot_id: str, sha256: str) -> None:
    """Check and stage the stored chunks of ``snapshot_id``; DatasetError if they are bad."""
    try:
        await _stage(writer, snapshot_id, sha256)
    finally:
        # Staged or refused, the chunks and decoded rows are garbage now.
        await give_back()


async def _stage(writer: CacheWriter, snapshot_id: str, sha256: str) -> None:
    chunks = await writer.stage.snapshot_chunks(snapshot_id)
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise DatasetError("snapshot hash does not match its chunks")
    await writer.stage.begin_stage()
    seen: set[str] = set()
    ahead = asyncio.ensure_future(asyncio.to_thread(decode_part, chunks[0]))
    try:
        for i in range(len(chunks)):
            table, rows = await ahead
            if i + 1 < len(chunks):
                ahead = asyncio.ensure_future(asyncio.to_thread(decode_part, chunks[i + 1]))
            seen.add(table)
            await writer.stage.stage_rows(table, rows, WIRE_VALUES.get(table))
    finally:
        if not ahead.done():
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
    if "site" not in seen:
        raise DatasetError("snapshot has no site row")


def chunk_bytes(data: str) -> bytes | None:
    """A chunk's ``data`` decoded from base64, or None when it is not base64."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


async def reject_snapshot(
    writer: CacheWriter, reject: Reject, snapshot_id: str, exc: DatasetError
) -> None:
    """The snapshot itself is bad: forget it whole and say why (the platform sends anew).

    ``reject`` records it at the rejections' bounded rate: a platform that
    keeps sending the same bad row must not fill the outbox.
    """
    await writer.stage.drop_chunks()
    await writer.stage.drop_stage()
    await reject("bad_snapshot", f"snapshot {snapshot_id}: {exc}"[:300], "snapshot")


async def abandon_snapshot(
    writer: CacheWriter, record: Record, snapshot_id: str, exc: Exception
) -> None:
    """The gateway's own trouble (a full or failing disk), not the snapshot's.

    The stage goes, the chunks stay: applying them is tried again when the
    engine next asks for what it lacks (on reconnect, or after a silence).
    """
    log.error("snapshot %s not applied: %s", snapshot_id, exc)
    with contextlib.suppress(DoorgwError):
        await writer.stage.drop_stage()
    with contextlib.suppress(DoorgwError):
        await record("snapshot_failed", {"snapshot_id": snapshot_id, "detail": str(exc)[:300]})
