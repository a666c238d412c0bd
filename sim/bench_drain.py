"""``doorgw bench drain``: the outbox drained through a broker that keeps restarting.

A gateway that was offline holds ``--events`` events.  It connects, and
while it sends them the broker (a real Mosquitto) is restarted
``--restarts`` times, 0.3 to 1.5 s apart (seeded).  Reported: the time
until the platform stand-in holds every event in order and the gateway's
outbox is empty, and how many events were sent more than once.  The floor
is the same drain, measured in the same run, through a broker left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.app.gateway import Gateway
from gateway.clock import SystemClock
from gateway.config.models import load_config
from gateway.net.mqtt import ignore_stale_socket_callbacks
from gateway.tools.demo import example_document


async def drain(
    broker: Any, directory: Path, name: str, events: int, restarts: int, seed: int
) -> dict[str, Any]:
    """Queue ``events``, then drain them while restarting the broker ``restarts`` times."""
    cloud = broker.cloud_peer(example_document(), client_id=f"cloud-{name}")
    cloud.answer_resyncs = False
    cloud_task = asyncio.create_task(cloud.run())
    await cloud.connected.wait()
    # The reconnect backoff a gateway has in production, not the tests' quick one.
    config = load_config(
        broker.gateway_config(name, directory / name, reconnect_min=0.5, reconnect_max=60.0)
    )
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not secrets
    done_restarts = 0
    async with Gateway(config, SystemClock()) as gw:
        data = {"door": "front", "granted": True, "reason": "granted_plan"}
        for i in range(0, events, 10_000):
            chunk = min(10_000, events - i)
            await gw.outbox.append_many(
                [("access", {**data, "n": i + k}, None) for k in range(chunk)]
            )
        last = gw.outbox.last_seq
        got = cloud.received[name]
        t0 = time.perf_counter()
        run = asyncio.create_task(gw.run())

        flap_end: tuple[float, int] | None = None

        async def flap() -> None:
            nonlocal done_restarts, flap_end
            while done_restarts < restarts:
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                if got.contiguous >= last:
                    break
                await asyncio.to_thread(broker.restart)
                done_restarts += 1
            flap_end = (time.perf_counter() - t0, got.contiguous)

        flapping = asyncio.create_task(flap())
        async with asyncio.timeout(900):
            while got.contiguous < last or gw.outbox.depth:  # noqa: ASYNC110 - the finish line
                await asyncio.sleep(0.01)
        drain_s = time.perf_counter() - t0
        flapping.cancel()
        await asyncio.gather(flapping, return_exceptions=True)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    cloud_task.cancel()
    await asyncio.gather(cloud_task, return_exceptions=True)
    flapped_s, during = flap_end if flap_end is not None else (drain_s, last)
    return {
        "events": last,
        "restarts_during_drain": done_restarts,
        "restarting_s": round(flapped_s, 2),
        "delivered_while_restarting": during,
        "drain_s": round(drain_s, 2),
        "duplicates": got.duplicates,
        "batches": got.batches,
    }


def bench_drain(args: argparse.Namespace) -> int:
    """The ``doorgw bench drain`` command."""
    from sim.broker import Broker

    async def go(directory: Path) -> dict[str, Any]:
        ignore_stale_socket_callbacks(asyncio.get_running_loop())
        broker = Broker(directory / "broker", site="s", gateways=["gw-quiet", "gw-flap"])
        broker.start()
        try:
            quiet = await drain(broker, directory, "gw-quiet", args.events, 0, args.seed)
            flap = await drain(broker, directory, "gw-flap", args.events, args.restarts, args.seed)
        finally:
            broker.stop()
        return {
            "flapping": flap,
            "floor": quiet,
            "ratio": round(flap["drain_s"] / quiet["drain_s"], 2),
        }

    with tempfile.TemporaryDirectory(prefix="doorgw-bench-drain-") as tmp:
        result = asyncio.run(go(Path(tmp)))
    if args.json:
        print(json.dumps(result))
        return 0
    f, q = result["flapping"], result["floor"]
    print(
        f"drain       {f['events']:,} events through {f['restarts_during_drain']} broker restarts "
        f"in {f['drain_s']} s, {f['duplicates']:,} sent twice ({f['batches']:,} batches);\n"
        f"            {f['delivered_while_restarting']:,} of them in order at the platform "
        f"by the last restart, {f['restarting_s']} s in\n"
        f"floor       the same drain, broker left alone: {q['drain_s']} s, "
        f"{q['duplicates']:,} sent twice\n"
        f"ratio       {result['ratio']}"
    )
    return 0
