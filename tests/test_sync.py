"""The sync engine against a real cache file: signatures, versions, gaps, snapshots."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.app.sync import SyncEngine
from gateway.clock import ManualClock
from gateway.core.credentials import parse_read
from gateway.core.decision import Reason, decide
from gateway.core.jws import Signer, b64url, b64url_decode, keyset_of
from gateway.errors import CacheError
from gateway.store.reader import CacheReader
from gateway.store.writer import CacheWriter
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset
from gateway.wire.protocol import ResyncRequestMsg

from .conftest import base_dataset, local, revoke_day_card

SIGNER = Signer.generate("platform-2026")
OTHER = Signer.generate("attacker")
AT = local("2026-03-10T10:00")


class Harness:
    """A sync engine on a real cache file, with its events and resync requests kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = ManualClock(datetime(2026, 3, 10, 10, tzinfo=UTC))
        self.cloud = CloudSigner(SIGNER, "t", self.clock.now)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.resyncs: list[ResyncRequestMsg] = []
        self.writer = CacheWriter(path, self.clock)
        self.engine: SyncEngine

    async def __aenter__(self) -> Harness:
        await self.writer.__aenter__()

        async def record(type_: str, data: dict[str, Any]) -> None:
            self.events.append((type_, data))

        async def resync(msg: ResyncRequestMsg) -> None:
            self.resyncs.append(msg)

        self.engine = SyncEngine(
            self.writer,
            keyset_of([SIGNER]),
            site_id="t",
            gateway_id="gw-1",
            clock=self.clock,
            record=record,
            request_resync=resync,
        )
        await self.engine.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.close()
        await self.writer.__aexit__(None, None, None)

    async def snapshot(self, doc: dict[str, Any], **kw: Any) -> None:
        for chunk in self.cloud.snapshot(parse_dataset(doc), **kw):
            await self.engine.handle(chunk)
        await self.engine.wait_snapshot()

    def reason(self, credential: str, door: str = "front", at: int = AT) -> Reason:
        reader = CacheReader(self.path)
        try:
            with reader.view() as view:
                return decide(view, parse_read(credential, site_id="t"), door, at).reason
        finally:
            reader.close()

    def rejected(self) -> list[str]:
        return [d["reason"] for t, d in self.events if t == "message_rejected"]


def run(path: Path, body: Callable[[Harness], Awaitable[None]]) -> None:
    async def go() -> None:
        async with Harness(path) as h:
            await body(h)

    asyncio.run(go())


def test_a_fresh_gateway_asks_for_data_then_applies_a_snapshot(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        assert [r.reason for r in h.resyncs] == ["no_data"]
        assert h.reason("nfc:04000001") is Reason.NO_DATA
        await h.snapshot(base_dataset())
        assert h.engine.version == 1
        assert h.reason("nfc:04000001") is Reason.GRANTED_PLAN
        assert ("snapshot_applied", {"snapshot_id": "s1", "version": 1, "now_version": 1}) in [
            (t, d) for t, d in h.events
        ]

    run(tmp_path / "c.sqlite3", lambda h: _with_id(h, body))


async def _with_id(h: Harness, body: Callable[[Harness], Awaitable[None]]) -> None:
    original = h.cloud.snapshot

    def snapshot(ds: Any, **kw: Any) -> list[bytes]:
        return original(ds, **{"snapshot_id": "s1", **kw})

    h.cloud.snapshot = snapshot  # type: ignore[method-assign]
    await body(h)


def _with_header(token: bytes, **fields: Any) -> bytes:
    head, payload, sig = token.split(b".")
    header = {**json.loads(b64url_decode(head)), **fields}
    return b64url(json.dumps(header).encode()).encode() + b"." + payload + b"." + sig


def _tamper(token: bytes) -> bytes:
    head, payload, sig = token.split(b".")
    doc = json.loads(b64url_decode(payload))
    doc["changes"][0]["data"]["status"] = "active"
    return head + b"." + b64url(json.dumps(doc).encode()).encode() + b"." + sig


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda h: _tamper(h.cloud.delta(1, 2, [revoke_day_card()])), "bad_signature"),
        (lambda h: CloudSigner(OTHER, "t").delta(1, 2, [revoke_day_card()]), "unknown_key"),
        (lambda h: json.dumps({"type": "delta", "site": "t"}).encode(), "unsigned"),
        (lambda h: b"garbage\x00\xff", "malformed"),
        (lambda h: b"a.b.c", "malformed"),
        (lambda h: h.cloud.sign({"type": "delta", "base_version": 1}), "malformed"),
        (
            lambda h: h.cloud.delta(
                1, 2, [{"op": "upsert", "entity": "member", "data": {"id": "x"}}]
            ),
            "malformed",
        ),
        (lambda h: CloudSigner(SIGNER, "elsewhere").delta(1, 2, [revoke_day_card()]), "wrong_site"),
        (lambda h: h.cloud.delta(1, 2, [revoke_day_card()], gateway="gw-2"), "wrong_gateway"),
        (
            lambda h: _with_header(h.cloud.delta(1, 2, [revoke_day_card()]), alg="HS256"),
            "bad_algorithm",
        ),
        (lambda h: _with_header(h.cloud.delta(1, 2, [revoke_day_card()]), alg="none"), "unsigned"),
        (
            lambda h: _with_header(h.cloud.delta(1, 2, [revoke_day_card()]), crit=["exp"]),
            "malformed",
        ),
    ],
    ids=[
        "tampered",
        "unknown-key",
        "unsigned",
        "garbage",
        "not-base64",
        "schema",
        "bad-change",
        "other-site",
        "other-gateway",
        "alg-hs256",
        "alg-none",
        "crit",
    ],
)
def test_bad_messages_are_rejected_whole_and_recorded(
    tmp_path: Path, make: Callable[[Harness], bytes], reason: str
) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        outcome = await h.engine.handle(make(h), "doorgw/v1/site/t/delta")
        assert outcome == f"rejected:{reason}"
        assert h.rejected() == [reason]
        assert h.engine.version == 1
        assert h.reason("nfc:04000001") is Reason.GRANTED_PLAN

    run(tmp_path / "c.sqlite3", body)


def test_tampered_delta_records_bad_signature(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        assert await h.engine.handle(_tamper(h.cloud.delta(1, 2, [revoke_day_card()]))) == (
            "rejected:bad_signature"
        )
        assert (
            await h.engine.handle(CloudSigner(OTHER, "t").delta(1, 2, [revoke_day_card()]))
            == "rejected:unknown_key"
        )

    run(tmp_path / "c.sqlite3", body)


def test_a_revocation_denies_right_after_its_delta(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        booking = next(b for b in base_dataset()["bookings"] if b["id"] == "b-paid")
        at = local("2026-03-10T14:30")
        assert h.reason("nfc:04000005", "room1", at) is Reason.GRANTED_BOOKING
        cancel = {"op": "upsert", "entity": "booking", "data": {**booking, "payment": "cancelled"}}
        assert await h.engine.handle(h.cloud.delta(1, 2, [cancel, revoke_day_card()])) == "applied"
        assert h.reason("nfc:04000005", "room1", at) is Reason.BOOKING_CANCELLED
        assert h.reason("nfc:04000001") is Reason.CREDENTIAL_REVOKED
        assert h.engine.version == 2

    run(tmp_path / "c.sqlite3", body)


def test_old_and_repeated_deltas_are_ignored(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        revoke = h.cloud.delta(1, 2, [revoke_day_card()])
        assert await h.engine.handle(revoke) == "applied"
        unrevoke = h.cloud.delta(0, 1, [revoke_day_card("active")])
        assert await h.engine.handle(unrevoke) == "ignored_old"  # no rollback
        assert await h.engine.handle(revoke) == "ignored_old"  # idempotent
        assert h.engine.version == 2
        assert h.reason("nfc:04000001") is Reason.CREDENTIAL_REVOKED

    run(tmp_path / "c.sqlite3", body)


def test_a_gap_restricts_at_once_asks_for_resync_and_fills_in_order(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        h.resyncs.clear()
        suspend = {
            "op": "upsert",
            "entity": "member",
            "data": {"id": "night_m", "name": "Night", "status": "suspended"},
        }
        assert await h.engine.handle(h.cloud.delta(3, 4, [revoke_day_card(), suspend])) == (
            "buffered_gap"
        )
        assert [r.reason for r in h.resyncs] == ["gap"]
        assert h.resyncs[0].have_version == 1
        # Taking access away cannot wait for the missing versions...
        assert h.reason("nfc:04000001") is Reason.CREDENTIAL_REVOKED
        assert h.reason("nfc:04000002", at=local("2026-03-10T23:00")) is Reason.MEMBER_SUSPENDED
        assert h.engine.version == 1
        # ...and when they arrive, everything applies in order.
        assert await h.engine.handle(h.cloud.delta(1, 2, [])) == "applied"
        assert await h.engine.handle(h.cloud.delta(2, 3, [revoke_day_card("lost")])) == "applied"
        assert h.engine.version == 4
        assert h.reason("nfc:04000001") is Reason.CREDENTIAL_REVOKED

    run(tmp_path / "c.sqlite3", body)


def test_a_snapshot_answers_a_gap_and_newer_deltas_are_replayed(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        assert await h.engine.handle(h.cloud.delta(5, 6, [revoke_day_card()])) == "buffered_gap"
        await h.snapshot({**base_dataset(), "version": 5})
        assert h.engine.version == 6
        assert h.reason("nfc:04000001") is Reason.CREDENTIAL_REVOKED
        assert await h.engine.handle(h.cloud.delta(6, 7, [revoke_day_card("active")])) == (
            "applied"
        )
        assert h.reason("nfc:04000001") is Reason.GRANTED_PLAN

    run(tmp_path / "c.sqlite3", body)


def test_a_lost_request_or_answer_is_asked_again_with_backoff_until_data_arrives(
    tmp_path: Path,
) -> None:
    async def body(h: Harness) -> None:
        connected = True
        asking = asyncio.create_task(h.engine.keep_asking(lambda: connected))

        async def passes(seconds: float, step: float = 0.5) -> None:
            # Simulated time, with real moments for the cache's thread to answer.
            for _ in range(int(seconds / step)):
                h.clock.advance(step)
                await asyncio.sleep(0.003)

        async def asked(count: int) -> None:
            # A request may still be on its way through the cache's thread on a busy
            # machine: wait for it in real time, without moving the clock.
            async with asyncio.timeout(10):
                while len(h.resyncs) < count:  # noqa: ASYNC110 - the engine sets no event
                    await asyncio.sleep(0.005)

        try:
            # The first request (at start) gets no answer: asked again after 10 s of
            # silence, then after 20, 40 ... (never while the broker is away).
            await passes(10.5)
            await asked(2)
            assert [r.reason for r in h.resyncs] == ["no_data", "no_data"]
            await passes(15)
            assert len(h.resyncs) == 2
            await passes(10)
            await asked(3)
            assert len(h.resyncs) == 3
            connected = False
            await passes(120, step=2)
            assert len(h.resyncs) == 3
            connected = True
            # Chunks of a large snapshot keep arriving: that is progress, not silence.
            chunks = h.cloud.snapshot(parse_dataset(base_dataset()), chunk_bytes=200)
            for chunk in chunks[:-1]:
                await h.engine.handle(chunk)
                await passes(5)
            assert len(h.resyncs) == 3
            await h.engine.handle(chunks[-1])
            await h.engine.wait_snapshot()
            await passes(600, step=5)
            assert len(h.resyncs) == 3  # it has its data: nothing more to ask
        finally:
            asking.cancel()

    run(tmp_path / "c.sqlite3", body)


def test_two_beacons_ahead_ask_for_a_resync(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        h.resyncs.clear()
        assert await h.engine.handle(h.cloud.beacon(1)) == "current"
        assert await h.engine.handle(h.cloud.beacon(3)) == "behind_wait"
        assert await h.engine.handle(h.cloud.beacon(3)) == "behind"
        assert [r.reason for r in h.resyncs] == ["behind"]

    run(tmp_path / "c.sqlite3", body)


def test_a_snapshot_interrupted_by_a_restart_resumes(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    signer = CloudSigner(SIGNER, "t")
    chunks = signer.snapshot(parse_dataset(base_dataset()), snapshot_id="s-big", chunk_bytes=200)
    assert len(chunks) > 6

    async def first(h: Harness) -> None:
        for chunk in chunks[: len(chunks) // 2]:
            assert await h.engine.handle(chunk) == "chunk_stored"
        assert h.engine.version is None  # nothing applied yet: decisions use the old data

    run(path, first)

    async def second(h: Harness) -> None:
        resume = [r for r in h.resyncs if r.reason == "resume"]
        assert len(resume) == 1
        assert resume[0].snapshot_id == "s-big"
        assert resume[0].missing == [(len(chunks) // 2, len(chunks) - 1)]  # one range
        for chunk in chunks:  # the platform may resend everything; duplicates are ignored
            await h.engine.handle(chunk)
        await h.engine.wait_snapshot()
        assert h.engine.version == 1
        assert h.reason("nfc:04000001") is Reason.GRANTED_PLAN

    run(path, second)


def test_a_snapshot_that_fails_its_hash_keeps_the_old_data(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        newer = {**base_dataset(), "version": 2, "credentials": []}
        chunks = h.cloud.snapshot(parse_dataset(newer), snapshot_id="s2")
        evil = CloudSigner(SIGNER, "t", h.clock.now)
        # A correctly signed chunk whose data does not match the announced hash.
        head = json.loads(b64url_decode(chunks[0].split(b".")[1]))
        head["data"] = "eJwDAAAAAAE="
        chunks[0] = evil.sign({k: v for k, v in head.items() if k not in ("v", "site", "iat")})
        for chunk in chunks:
            await h.engine.handle(chunk)
        await h.engine.wait_snapshot()
        assert "bad_snapshot" in h.rejected()
        assert h.engine.version == 1
        assert h.reason("nfc:04000001") is Reason.GRANTED_PLAN

    run(tmp_path / "c.sqlite3", body)


def test_chunks_of_one_snapshot_that_disagree_on_their_hash_are_refused_whole(
    tmp_path: Path,
) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        newer = {**base_dataset(), "version": 2, "credentials": []}
        chunks = h.cloud.snapshot(parse_dataset(newer), snapshot_id="s2")
        assert len(chunks) > 2
        # Every chunk signed, the last one announcing another hash than the rest.
        last = json.loads(b64url_decode(chunks[-1].split(b".")[1]))
        last["sha256"] = "0" * 64
        chunks[-1] = h.cloud.sign({k: v for k, v in last.items() if k not in ("v", "site", "iat")})
        for chunk in chunks:
            await h.engine.handle(chunk)
        await h.engine.wait_snapshot()
        assert h.rejected() == ["bad_snapshot"]
        assert (h.engine.version, h.reason("nfc:04000001")) == (1, Reason.GRANTED_PLAN)
        assert await h.writer.stage.pending_snapshot() is None  # nothing of it kept
        # The same snapshot sent right applies whole.
        for chunk in h.cloud.snapshot(parse_dataset(newer), snapshot_id="s3"):
            await h.engine.handle(chunk)
        await h.engine.wait_snapshot()
        assert h.engine.version == 2

    run(tmp_path / "c.sqlite3", body)


def test_a_signed_snapshot_with_bad_rows_is_refused_whole(tmp_path: Path) -> None:
    import base64
    import hashlib
    import zlib

    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        data = zlib.compress(
            json.dumps(
                {"table": "bookings", "rows": [["b1", "day_m", "r1", 100, 50, "paid", 0, 0]]}
            ).encode()
        )
        site = zlib.compress(
            json.dumps({"table": "site", "rows": [["t", "Europe/London", []]]}).encode()
        )
        sha = hashlib.sha256(site + data).hexdigest()
        for i, d in enumerate((site, data)):
            await h.engine.handle(
                h.cloud.sign(
                    {
                        "type": "snapshot_chunk",
                        "snapshot_id": "s9",
                        "version": 9,
                        "index": i,
                        "count": 2,
                        "sha256": sha,
                        "data": base64.b64encode(d).decode(),
                    }
                )
            )
        await h.engine.wait_snapshot()
        assert h.rejected() == ["bad_snapshot"]
        assert h.engine.version == 1
        assert h.reason("nfc:04000001") is Reason.GRANTED_PLAN

    run(tmp_path / "c.sqlite3", body)


def test_a_million_booking_snapshot_syncs(tmp_path: Path) -> None:
    import random
    import sqlite3

    from gateway.tools.sitegen import build_dataset

    dataset = build_dataset(100_000, 1_000_000, random.Random(7))
    chunks = CloudSigner(SIGNER, "bench").snapshot(dataset, snapshot_id="big")
    assert all(len(c) < 400 * 1024 for c in chunks)

    async def body(h: Harness) -> None:
        h.engine.site_id = "bench"
        for chunk in chunks:
            await h.engine.handle(chunk)
        await h.engine.wait_snapshot()
        assert h.rejected() == []
        assert h.engine.version == dataset.version

    run(tmp_path / "c.sqlite3", body)
    conn = sqlite3.connect(tmp_path / "c.sqlite3")
    counts = {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("members", "credentials", "bookings", "snapshot_chunks")
    }
    conn.close()
    assert counts == {
        "members": 100_000,
        "credentials": 100_000,
        "bookings": 1_000_000,
        "snapshot_chunks": 0,
    }


def test_a_revocation_during_a_long_snapshot_load_applies_at_once_and_survives_it(
    tmp_path: Path,
) -> None:
    import random

    from gateway.tools.sitegen import build_dataset

    big = build_dataset(20_000, 200_000, random.Random(5))
    chunks = CloudSigner(SIGNER, "bench").snapshot(
        type(big)(**{**{f: getattr(big, f) for f in big.__dataclass_fields__}, "version": 7}),
        snapshot_id="big",
    )
    card = {"id": "c5", "member_id": "m5", "kind": "nfc_uid", "value": "04000000000005"}

    async def body(h: Harness) -> None:
        h.engine.site_id = "bench"
        h.cloud = CloudSigner(SIGNER, "bench", h.clock.now)
        for chunk in CloudSigner(SIGNER, "bench").snapshot(big, snapshot_id="small-first"):
            await h.engine.handle(chunk)
        await h.engine.wait_snapshot()
        assert h.engine.version == 1
        for chunk in chunks[:-1]:
            await h.engine.handle(chunk)
        assert await h.engine.handle(chunks[-1]) == "snapshot_complete"
        # The load of version 7 is under way; a revocation on top of version 1 arrives.
        revoke = {"op": "upsert", "entity": "credential", "data": {**card, "status": "revoked"}}
        assert await h.engine.handle(h.cloud.delta(1, 2, [revoke])) == "applied"
        assert h.engine._snapshot_task is not None, "the delta did not wait for the load"
        # The platform's next delta after the snapshot's version also revokes.
        assert await h.engine.handle(h.cloud.delta(7, 8, [revoke])) == "buffered_gap"
        await h.engine.wait_snapshot()
        assert h.engine.version == 8

    run(tmp_path / "c.sqlite3", body)
    import sqlite3

    conn = sqlite3.connect(tmp_path / "c.sqlite3")
    assert conn.execute("SELECT status FROM credentials WHERE id = 'c5'").fetchone() == ("revoked",)
    conn.close()


def test_a_flood_of_bad_messages_is_recorded_once_per_interval_with_a_count(
    tmp_path: Path,
) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        for _ in range(500):
            assert await h.engine.handle(b"garbage") == "rejected:malformed"
        assert h.rejected() == ["malformed"]
        h.clock.advance(11)
        await h.engine.handle(b"garbage")
        rejected = [d for t, d in h.events if t == "message_rejected"]
        assert [d["suppressed_before"] for d in rejected] == [0, 499]

    run(tmp_path / "c.sqlite3", body)


def test_a_snapshot_the_disk_fails_to_take_is_recorded_and_applied_on_the_next_try(
    tmp_path: Path,
) -> None:
    """Not the snapshot's fault (a full or failing disk): no silent dead task, the
    chunks are kept, and the engine applies them when it next asks for data."""

    async def body(h: Harness) -> None:
        real = h.writer.stage.stage_rows
        failures = []

        async def failing(*args: Any) -> None:
            if not failures:
                failures.append(1)
                raise CacheError("snapshot not applied: database or disk is full")
            await real(*args)

        h.writer.stage.stage_rows = failing  # type: ignore[method-assign]
        await h.snapshot(base_dataset())
        assert h.engine.version is None
        failed = [d for t, d in h.events if t == "snapshot_failed"]
        assert [d["detail"] for d in failed] == ["snapshot not applied: database or disk is full"]
        assert "bad_snapshot" not in h.rejected()  # the platform's data was fine
        assert (await h.writer.stage.pending_snapshot()) is not None  # chunks kept
        await h.engine.on_connected()  # the next time it asks for what it lacks
        await h.engine.wait_snapshot()
        assert h.engine.version == 1
        assert h.reason("nfc:04000001") is Reason.GRANTED_PLAN

    run(tmp_path / "c.sqlite3", body)


def _bad_snapshot(h: Harness, snapshot_id: str, version: int = 2) -> list[bytes]:
    """A signed snapshot whose first chunk does not match the announced hash."""
    chunks = h.cloud.snapshot(
        parse_dataset({**base_dataset(), "version": version}), snapshot_id=snapshot_id
    )
    head = json.loads(b64url_decode(chunks[0].split(b".")[1]))
    head["data"] = "eJwDAAAAAAE="
    body = {k: v for k, v in head.items() if k not in ("v", "site", "iat")}
    chunks[0] = CloudSigner(SIGNER, "t", h.clock.now).sign(body)
    return chunks


def test_a_bad_snapshot_sent_again_and_again_is_one_event_and_one_request_per_interval(
    tmp_path: Path,
) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        h.resyncs.clear()
        for attempt in range(6):  # the platform answers every request with the same bad data
            if attempt == 5:
                h.clock.advance(10)  # the interval has passed: one more of each
            for chunk in _bad_snapshot(h, f"bad-{attempt}"):
                await h.engine.handle(chunk)
            await h.engine.wait_snapshot()
            h.clock.advance(0.4)
        assert h.rejected() == ["bad_snapshot", "bad_snapshot"]
        assert [r.reason for r in h.resyncs] == ["bad_snapshot", "bad_snapshot"]
        last = [d for t, d in h.events if t == "message_rejected"][-1]
        assert last["suppressed_before"] == 4  # the four it stands for

    run(tmp_path / "c.sqlite3", body)


def test_a_replayed_overlapping_delta_does_not_force_a_request_each_time(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        await h.engine.handle(h.cloud.delta(1, 2, []))
        await h.engine.handle(h.cloud.delta(2, 3, []))
        h.resyncs.clear()
        overlapping = h.cloud.delta(1, 4, [])  # from before what the gateway holds
        for _ in range(1000):
            assert await h.engine.handle(overlapping) == "resync_overlap"
        assert len(h.resyncs) == 1

    run(tmp_path / "c.sqlite3", body)


def test_requests_after_bad_snapshots_back_off_until_one_applies(tmp_path: Path) -> None:
    """Each request after a bad snapshot doubles the wait before the next (10 s,
    20 s, 40 s ... up to 300 s); a snapshot that applies resets it."""

    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        h.resyncs.clear()
        asked_at = []
        for attempt in range(60):  # a bad snapshot every 5 s, for 5 minutes
            before = len(h.resyncs)
            for chunk in _bad_snapshot(h, f"bad-{attempt}"):
                await h.engine.handle(chunk)
            await h.engine.wait_snapshot()
            if len(h.resyncs) > before:
                asked_at.append(attempt * 5)
            h.clock.advance(5)
        gaps = [b - a for a, b in itertools.pairwise(asked_at)]
        assert gaps == [10, 20, 40, 80], asked_at
        await h.snapshot({**base_dataset(), "version": 9})  # good data at last
        assert h.engine.version == 9
        before = len(h.resyncs)
        for chunk in _bad_snapshot(h, "bad-again", 10):  # the next bad one: asked about at once
            await h.engine.handle(chunk)
        await h.engine.wait_snapshot()
        assert len(h.resyncs) == before + 1

    run(tmp_path / "c.sqlite3", body)


def test_a_resync_command_to_a_current_gateway_is_answered_by_a_snapshot_at_its_version(
    tmp_path: Path,
) -> None:
    """Unasked, a snapshot at the version held is ignored (a replay changes nothing);
    after the platform ordered a resync, it reloads the data at that version."""

    async def body(h: Harness) -> None:
        await h.snapshot(base_dataset())
        assert h.engine.version == 1
        changed = base_dataset()
        card = next(c for c in changed["credentials"] if c["id"] == "c-day")
        card["status"] = "revoked"  # the same version, other content: a diverged cache
        await h.snapshot(changed)
        assert h.reason("nfc:04000001") is Reason.GRANTED_PLAN
        await h.engine.request_resync("command")
        assert h.resyncs[-1].reason == "command"
        assert h.resyncs[-1].have_version == 1
        await h.snapshot(changed)
        assert h.reason("nfc:04000001") is Reason.CREDENTIAL_REVOKED
        assert h.engine.version == 1
        applied = [d for t, d in h.events if t == "snapshot_applied"]
        assert [d["version"] for d in applied] == [1, 1]
        # Answered: the next unasked snapshot at that version is ignored again.
        await h.snapshot(base_dataset())
        assert h.reason("nfc:04000001") is Reason.CREDENTIAL_REVOKED

    run(tmp_path / "c.sqlite3", body)
