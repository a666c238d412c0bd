"""``doorgw sim fleet --cluster nats --kill-node``: the node under part of the fleet dies.

Each gateway lists every node, starting from its own (gateway i on node
i mod 3), so a third of the fleet is on the node that is killed.  The
platform stand-in is on another node.  While that third moves, the
platform keeps publishing deltas; then the figures: how long each moved
gateway took to say ``online`` again, the deltas they did not receive as
deltas (recovered from a gap by a resync), whether every gateway caught
up, reach once they are back, and the events lost or received twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from sim.cloud import CloudPeer
from sim.nats_cluster import NatsCluster


class _Phase(Protocol):
    """What the fleet observed of its gateways (``sim.fleet._Phase``)."""

    arrivals: dict[int, dict[str, float]]
    versions: dict[str, int]
    online: dict[str, float]
    seqs: dict[str, Counter[int]]
    gaps: Counter[str]
    snapshots: Counter[str]


class Fleet(Protocol):
    """The running fleet (``sim.fleet.Fleet``), as this phase uses it."""

    n: int
    names: list[str]
    deltas: int

    def _say(self, text: str) -> None: ...

    def booking(self, booking_id: str) -> dict[str, Any]: ...

    async def _until(self, predicate: Callable[[], bool], seconds: float, what: str) -> None: ...

    async def _deltas(
        self, cloud: CloudPeer, phase: Any, *, count: int | None = None, tag: str = ""
    ) -> tuple[list[float], list[float]]: ...


#: Deltas published while the node's gateways move, one every this many seconds.
DELTA_EVERY = 0.2


async def kill_node(
    fleet: Fleet, cloud: CloudPeer, cluster: NatsCluster, phase: _Phase
) -> dict[str, Any]:
    """Kill the first node mid-run; the failover figures."""
    node = cluster.nodes[0].name
    under = [g for i, g in enumerate(fleet.names) if i % len(cluster.nodes) == 0]
    fleet._say(f"killing node {node}, under {len(under)} of {fleet.n} gateways ...")
    killed = time.perf_counter()
    await asyncio.to_thread(cluster.kill, node)
    during: list[int] = []
    for k in range(fleet.deltas):
        during.append(await cloud.send_delta([fleet.booking(f"fleet-kill-{k}")]))
        await asyncio.sleep(DELTA_EVERY)
    await fleet._until(
        lambda: all(phase.online.get(g, 0.0) > killed for g in under),
        120,
        "the killed node's gateways to say online again",
    )
    failover = sorted(phase.online[g] - killed for g in under)
    last = during[-1]
    await fleet._until(
        lambda: all(phase.versions.get(g, 0) >= last for g in fleet.names),
        300,
        "every gateway to hold the last version",
    )
    caught_up = time.perf_counter() - killed
    missed = {g: sum(1 for v in during if g not in phase.arrivals[v]) for g in fleet.names}
    fleet._say("reach once every gateway is back ...")
    after_ms, _ = await fleet._deltas(cloud, phase, count=max(5, fleet.deltas // 4), tag="after")
    lost, twice = await _events(fleet, cloud, phase)
    return {
        "killed_node": node,
        "gateways_on_node": len(under),
        "failover_p50_s": round(statistics.median(failover), 2),
        "failover_max_s": round(failover[-1], 2),
        "deltas_during": len(during),
        "deltas_missed": sum(missed.values()),
        "gateways_that_missed": sum(1 for n in missed.values() if n),
        "gateways_caught_up": sum(1 for g in fleet.names if phase.versions.get(g, 0) >= last),
        "all_caught_up_s": round(caught_up, 1),
        "gap_resyncs": sum(phase.gaps.values()),
        "snapshots_after_kill": sum(phase.snapshots.values()) - fleet.n,
        "after_p50_ms": round(statistics.median(after_ms), 1),
        "after_max_ms": round(max(after_ms), 1),
        "events_lost": lost,
        "events_duplicated": twice,
    }


async def _events(fleet: Fleet, cloud: CloudPeer, phase: _Phase) -> tuple[int, int]:
    """Once every gateway's events have arrived contiguously (or 60 s have passed):
    the seqs never received, and the events received more than once."""

    def contiguous() -> bool:
        return all(
            (got := cloud.received[g]).events and got.contiguous == max(got.events)
            for g in fleet.names
        )

    # What is missing after that is counted as lost.
    with contextlib.suppress(RuntimeError):
        await fleet._until(contiguous, 60, "every gateway's events")
    lost = sum(max(cloud.received[g].events) - len(cloud.received[g].events) for g in fleet.names)
    twice = sum(n - 1 for g in fleet.names for n in phase.seqs[g].values() if n > 1)
    return lost, twice
