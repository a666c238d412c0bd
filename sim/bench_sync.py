"""``doorgw bench sync``: snapshot throughput, revocation lag and outbox drain, with floors.

Every figure comes with its floor, measured in the same run on the same
machine and broker:

* snapshot apply: signed chunks handled by the sync engine until the swap
  commits, against a bare ``executemany`` of the same database rows into
  the same (stage) tables;
* revocation lag: the platform publishes a revoking delta until a tap at the
  gateway is denied, against a bare QoS 1 publish-to-receive of a message of
  the same size through the same broker;
* outbox drain: 100,000 events queued during an outage until all are
  acknowledged, against publishing the same batches, pre-serialised, with
  QoS 1 to a subscriber that only counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from gateway.app.gateway import Gateway
from gateway.app.sync import SyncEngine
from gateway.clock import ManualClock, SystemClock
from gateway.config.models import load_config
from gateway.core.credentials import parse_read
from gateway.core.jws import Signer, keyset_of
from gateway.store.rows import stage_insert_sql, table_rows
from gateway.store.writer import CacheWriter
from gateway.tools.demo import example_document
from gateway.tools.sitegen import build_dataset, rank
from gateway.wire.cloudkit import CloudSigner

if TYPE_CHECKING:
    from sim.broker import Broker


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[rank(len(ordered), q)]


async def snapshot_figures(members: int, bookings: int, directory: Path) -> dict[str, Any]:
    """Apply a signed snapshot through the engine; time a bare insert of the same rows."""
    dataset = build_dataset(members, bookings, random.Random(3))  # noqa: S311 - synthetic data
    signer = Signer.generate("bench")
    chunks = CloudSigner(signer, dataset.site.id).snapshot(dataset, snapshot_id="bench")
    rows = sum(len(items) for items in dataset.tables())
    clock = ManualClock(datetime(2026, 3, 11, tzinfo=UTC))

    async def ignore(*_: Any) -> None:
        return None

    # Floor first, in a fresh file of the same schema: the same database rows,
    # prepared beforehand, inserted into the stage tables with bare executemany.
    floor_path = directory / "bench-floor.sqlite3"
    floor_path.unlink(missing_ok=True)
    async with CacheWriter(floor_path, clock) as writer:
        prepared = []
        for items in dataset.tables():
            if not items:
                continue
            table, rows_of_table = table_rows(items)
            prepared.append((stage_insert_sql(table), list(rows_of_table)))
        await writer.stage.begin_stage()
        db = writer.db
        t0 = time.perf_counter()
        for sql, table_rows_list in prepared:
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(sql, table_rows_list)
            await db.execute("COMMIT")
        floor_s = time.perf_counter() - t0
        del prepared
    floor_path.unlink()

    path = directory / "bench-sync.sqlite3"
    path.unlink(missing_ok=True)
    async with CacheWriter(path, clock) as writer:
        engine = SyncEngine(
            writer,
            keyset_of([signer]),
            site_id=dataset.site.id,
            gateway_id="bench",
            clock=clock,
            record=ignore,
            request_resync=ignore,
        )
        await engine.start()
        t0 = time.perf_counter()
        for chunk in chunks:
            await engine.handle(chunk)
        await engine.wait_snapshot()
        apply_s = time.perf_counter() - t0
        assert engine.version == dataset.version, "snapshot was not applied"
    return {
        "snapshot_rows": rows,
        "snapshot_chunks": len(chunks),
        "snapshot_mb": round(sum(len(c) for c in chunks) / 1e6, 1),
        "snapshot_seconds": round(apply_s, 2),
        "snapshot_rows_per_s": round(rows / apply_s),
        "floor_rows_per_s": round(rows / floor_s),
        "ratio": round(apply_s / floor_s, 2),
    }


async def mqtt_figures(directory: Path, revocations: int, events: int) -> dict[str, Any]:
    """Revocation lag and outbox drain over a real Mosquitto, each with its floor."""
    from sim.broker import Broker

    doc = example_document()
    broker = Broker(directory / "broker", site=doc["site"]["id"], gateways=["gw-bench"])
    broker.start()
    try:
        cloud = broker.cloud_peer(doc)
        cloud_task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        config = load_config(broker.gateway_config("gw-bench", directory / "gw-bench"))
        # Ada's plan opens the front door at this (simulated) instant.
        clock = ManualClock(datetime(2026, 3, 10, 9, 55, tzinfo=UTC))
        lags, floor_lags = [], []
        card = parse_read("nfc:04A1B2C3D4E5F6", site_id=doc["site"]["id"])
        async with Gateway(config, clock).running() as gw:
            applied = asyncio.Event()
            record = gw.events.record

            async def watch(type_: str, data: dict[str, Any], at: int | None = None) -> None:
                # Recorded right after the cache commits: the decision has changed.
                if type_ in ("delta_applied", "snapshot_applied"):
                    applied.set()
                await record(type_, data, at)

            gw.engine._record = watch  # observe without changing what is recorded
            async with asyncio.timeout(60):
                while gw.engine.version is None:
                    applied.clear()
                    await applied.wait()
            credential = next(c for c in doc["credentials"] if c["id"] == "card-ada")
            for i in range(revocations):
                status = "revoked" if i % 2 == 0 else "active"
                change = {
                    "op": "upsert",
                    "entity": "credential",
                    "data": {**credential, "status": status},
                }
                applied.clear()
                t0 = time.perf_counter()
                await cloud.send_delta([change])
                async with asyncio.timeout(30):
                    await applied.wait()
                from gateway.core.decision import decide

                with gw.cache.view() as view:
                    decision = decide(view, card, "front", clock.now())
                lags.append(time.perf_counter() - t0)
                assert decision.granted == (status == "active"), "decision did not follow"
            payload_size = len(
                cloud.cloud.delta(
                    1, 2, [{"op": "upsert", "entity": "credential", "data": credential}]
                )
            )
        floor_lags = await _bare_round_trips(broker, revocations, payload_size)

        drain_s, drain_floor_s = await _drain(broker, directory, events)
        cloud_task.cancel()
        await asyncio.gather(cloud_task, return_exceptions=True)
    finally:
        broker.stop()
    lag_p99 = _pct(lags, 0.99) * 1000
    floor_p99 = _pct(floor_lags, 0.99) * 1000
    return {
        "revocations": revocations,
        "revocation_lag_p50_ms": round(_pct(lags, 0.5) * 1000, 2),
        "revocation_lag_p99_ms": round(lag_p99, 2),
        "revocation_floor_p50_ms": round(_pct(floor_lags, 0.5) * 1000, 2),
        "revocation_floor_p99_ms": round(floor_p99, 2),
        "revocation_ratio": round(lag_p99 / floor_p99, 2),
        "drain_events": events,
        "drain_100k_s": round(drain_s * 100_000 / events, 2),
        "drain_s": round(drain_s, 2),
        "drain_floor_s": round(drain_floor_s, 2),
        "drain_ratio": round(drain_s / drain_floor_s, 2),
    }


def _client(broker: Broker, name: str, ident: str) -> aiomqtt.Client:
    return broker.client(
        name,
        ident,
        max_inflight_messages=100,
        max_queued_outgoing_messages=100_000,
        # The floor publishes all batches at once on purpose; aiomqtt would warn.
        logger=_QUIET,
    )


_QUIET = logging.getLogger("doorgw.bench.floor")
_QUIET.setLevel(logging.ERROR)


async def _bare_round_trips(broker: Any, count: int, size: int) -> list[float]:
    """QoS 1 publish (cloud identity) to receipt (gateway identity) through the same broker."""
    # A topic of the site that gateways may read but do not subscribe to.
    topic = f"doorgw/v1/site/{broker.site}/bench-floor"
    out = []
    async with (
        _client(broker, "cloud", "floor-pub") as pub,
        _client(broker, "gw-bench", "floor-sub") as sub,
    ):
        await sub.subscribe(topic, qos=1)
        messages = sub.messages.__aiter__()
        for _ in range(count):
            t0 = time.perf_counter()
            await pub.publish(topic, b"x" * size, qos=1)
            await messages.__anext__()
            out.append(time.perf_counter() - t0)
    return out


async def _drain(broker: Any, directory: Path, events: int) -> tuple[float, float]:
    """Seconds to drain ``events`` queued events, and to publish them bare."""
    doc = example_document()
    cloud = broker.cloud_peer(doc, client_id="cloud-drain")
    cloud.answer_resyncs = False
    task = asyncio.create_task(cloud.run())
    await cloud.connected.wait()
    config = load_config(broker.gateway_config("gw-bench", directory / "gw-drain"))
    sample: list[dict[str, Any]] = []
    async with Gateway(config, SystemClock()) as gw:
        # An outage: taps recorded while no broker is reachable.
        batch = [
            (
                "access",
                {
                    "door": "front",
                    "granted": True,
                    "reason": "granted_plan",
                    "member": f"m{i}",
                    "credential": f"c{i}",
                },
                None,
            )
            for i in range(events)
        ]
        for i in range(0, events, 10_000):
            await gw.outbox.append_many(batch[i : i + 10_000])
        sample = await gw.outbox.pending(0, 1000)
        t0 = time.perf_counter()
        run = asyncio.create_task(gw.run())
        async with asyncio.timeout(300):
            while gw.outbox.depth:  # noqa: ASYNC110 - a benchmark's finish line
                await asyncio.sleep(0.005)
        drain_s = time.perf_counter() - t0
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    # Floor: the same number of batches, serialised beforehand, QoS 1, counted on arrival.
    body = json.dumps(
        {"v": 1, "gateway": "gw-bench", "events": sample}, separators=(",", ":")
    ).encode()
    batches = (events + len(sample) - 1) // len(sample)
    topic = "doorgw/v1/gw/gw-bench/events"
    async with (
        _client(broker, "cloud", "floor-count") as sub,
        _client(broker, "gw-bench", "floor-send") as pub,
    ):
        await sub.subscribe(topic, qos=1)
        t0 = time.perf_counter()

        async def count() -> None:
            got = 0
            async for _ in sub.messages:
                got += 1
                if got == batches:
                    return

        counter = asyncio.create_task(count())
        await asyncio.gather(*(pub.publish(topic, body, qos=1) for _ in range(batches)))
        await counter
        floor_s = time.perf_counter() - t0
    return drain_s, floor_s


def bench_sync(args: argparse.Namespace) -> int:
    """The ``doorgw bench sync`` command."""

    async def go(directory: Path) -> dict[str, Any]:
        result = await snapshot_figures(args.members, args.bookings, directory)
        result.update(await mqtt_figures(directory, args.revocations, args.events))
        return result

    with tempfile.TemporaryDirectory(prefix="doorgw-bench-sync-") as tmp:
        if not args.json:
            print(
                f"snapshot of {args.members:,} members and {args.bookings:,} bookings, "
                f"{args.revocations} revocations, {args.events:,} queued events ...",
                flush=True,
            )
        result = asyncio.run(go(Path(tmp)))
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    met = r["ratio"] <= 1.5 and r["revocation_lag_p99_ms"] <= 100 and r["drain_100k_s"] <= 10
    print(
        f"snapshot    {r['snapshot_rows']:,} rows in {r['snapshot_chunks']} signed chunks "
        f"({r['snapshot_mb']} MB): {r['snapshot_seconds']} s\n"
        f"            {r['snapshot_rows_per_s']:,} rows/s; floor (bare executemany) "
        f"{r['floor_rows_per_s']:,} rows/s; ratio {r['ratio']}\n"
        f"revocation  lag p50 {r['revocation_lag_p50_ms']} ms, p99 "
        f"{r['revocation_lag_p99_ms']} ms; floor (bare QoS 1 round trip) p99 "
        f"{r['revocation_floor_p99_ms']} ms; ratio {r['revocation_ratio']}\n"
        f"drain       {r['drain_events']:,} events in {r['drain_s']} s "
        f"(100k: {r['drain_100k_s']} s); floor (bare batches) {r['drain_floor_s']} s; "
        f"ratio {r['drain_ratio']}\n"
        f"targets     ratio <= 1.5, lag p99 <= 100 ms, drain 100k <= 10 s: "
        f"{'met' if met else 'NOT met'}"
    )
    return 0
