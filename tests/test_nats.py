"""A gateway on a 3-node NATS JetStream cluster (Debian's nats-server) on the kit's config."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock
from gateway.config.models import load_config
from gateway.core.credentials import parse_read
from gateway.core.decision import Reason
from sim.nats_cluster import NatsCluster
from sim.refusing_node import RefusingNode

from .conftest import base_dataset, local, revoke_day_card
from .test_mqtt import until

#: Every step of a failover test is bounded by this (seconds): a test must fail, not hang.
LIMIT = 90


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path_factory.mktemp("nats"), site="t", gateways=["gw-1", "gw-2"])
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _gateway(cluster: NatsCluster, tmp_path: Path, name: str, urls: list[str]) -> Gateway:
    config = cluster.gateway_config(
        name, tmp_path / name, urls=urls, heartbeat_seconds=1, connect_timeout=5
    )
    at = datetime.fromtimestamp(local("2026-03-10T10:00"), UTC)
    return Gateway(load_config(config), ManualClock(at))


def test_a_gateway_survives_the_kill_of_its_node_losing_no_event(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    async def go() -> None:
        cloud = cluster.cloud_peer(base_dataset())  # on n2, failing over to n3, n1
        seen: list[int] = []
        cloud.observer = lambda gw, leaf, body: seen.extend(
            e["seq"] for e in body.get("events", []) if gw == "gw-1" and leaf == "events"
        )
        task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        gw = _gateway(cluster, tmp_path, "gw-1", cluster.urls)  # n1 first
        card = parse_read("nfc:04000001", site_id="t")
        try:
            async with gw.running():
                await until(lambda: gw.engine.version == 1, "snapshot applied", LIMIT)
                assert gw.link.broker == cluster.urls[0]
                for _ in range(5):
                    assert (await gw.taps.tap(card, "front")).reason is Reason.GRANTED_PLAN
                await until(lambda: gw.outbox.depth == 0, "events acknowledged", LIMIT)
                sessions = gw.link.sessions

                cluster.kill("n1")
                killed = time.monotonic()
                # Taps go on while the gateway has no broker: they must all arrive.
                for _ in range(5):
                    assert (await gw.taps.tap(card, "front")).reason is Reason.GRANTED_PLAN
                await until(lambda: gw.link.sessions > sessions, "reconnected", LIMIT)
                failover = time.monotonic() - killed
                assert gw.link.broker in cluster.urls[1:]
                await until(lambda: cloud.connected.is_set(), "platform connected", LIMIT)
                # The next delta arrives through the new node and is applied.
                await cloud.send_delta([revoke_day_card()])
                await until(lambda: gw.engine.version == 2, "delta after the kill", LIMIT)
                assert (await gw.taps.tap(card, "front")).reason is Reason.CREDENTIAL_REVOKED
                await until(lambda: gw.outbox.depth == 0, "every event acknowledged", LIMIT)
                last = gw.outbox.acked_seq
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if "n1" not in cluster.alive():
                await asyncio.to_thread(cluster.start_node, "n1")
        stored = sorted(cloud.received["gw-1"].events)
        assert stored == list(range(1, last + 1))  # none lost, in order, no gap
        access = [e["data"]["reason"] for e in cloud.events_of("gw-1") if e["type"] == "access"]
        assert access == ["granted_plan"] * 10 + ["credential_revoked"]
        print(f"failover {failover:.1f} s; {len(seen) - len(set(seen))} events sent twice")

    asyncio.run(asyncio.wait_for(go(), 4 * LIMIT))


def test_a_subscription_a_node_refuses_once_is_retried_until_granted(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    # NATS refuses subscriptions (0x80) while its JetStream elects a leader.
    node = cluster.nodes[2]
    relay = RefusingNode(cluster, "gw-2", target_port=node.mqtt_port)

    async def go() -> None:
        await relay.start()
        cloud = cluster.cloud_peer(base_dataset())
        task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        gw = _gateway(cluster, tmp_path, "gw-2", [relay.url])
        try:
            async with gw.running():
                await until(lambda: gw.engine.version == 1, "snapshot applied", LIMIT)
                assert relay.refused == 1
                assert gw.link.sessions == 1  # the refused session never counted as up
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await relay.stop()

    asyncio.run(asyncio.wait_for(go(), 2 * LIMIT))


def test_a_cluster_that_cannot_start_leaves_no_node_running(tmp_path: Path) -> None:
    """A node whose cluster port is taken exits at once: the cluster says so, and
    the nodes it had already started are stopped, not left behind."""
    c = NatsCluster(tmp_path / "nats", site="t", gateways=["gw-1"])
    started: list[int] = []
    start_node = c.start_node

    def start_and_note(name: str) -> None:
        try:
            start_node(name)
        finally:
            started.extend(c.pids())

    c.start_node = start_and_note  # type: ignore[method-assign]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", c.nodes[-1].cluster_port))
        taken.listen()
        with pytest.raises(RuntimeError, match="exited"):
            c.start()
    assert started  # the first nodes did run
    assert c.pids() == []
    for pid in set(started):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
