"""A 3-node NATS JetStream cluster on loopback, serving MQTT, on the broker kit's config.

It has the PKI, site and gateway certificates of :class:`~sim.broker.Broker`
(whose methods it keeps: gateway configs, the platform stand-in, clients),
but the gateways get every node's URL and the platform stand-in fails over
between nodes.  :meth:`kill` ends a node with SIGKILL, as a crashed host.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from gateway.tools.brokerkit import NatsNode, nats_cluster_config
from gateway.tools.ports import free_port
from sim.broker import PREFIX, Broker

#: How long a fresh cluster may take to elect its JetStream leader and serve MQTT.
READY_TIMEOUT = 60.0


def find_nats_server() -> str:
    """The nats-server binary (Debian's package ``nats-server``)."""
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if found is None:
        raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
    return found


class NatsCluster(Broker):
    """Three (or more) NATS servers clustered on loopback, each with an MQTT listener."""

    def __init__(self, directory: Path, *, site: str, gateways: list[str], nodes: int = 3) -> None:
        super().__init__(directory, site=site, gateways=gateways)
        self.nodes = [
            NatsNode(
                f"n{i + 1}",
                "127.0.0.1",
                mqtt_port=free_port(),
                cluster_port=free_port(),
                store_dir=self.dir / f"n{i + 1}",
                client_port=free_port(),
            )
            for i in range(nodes)
        ]
        self.port = self.nodes[0].mqtt_port
        for name, text in nats_cluster_config(self.fleet(), self.tls(), self.nodes).items():
            (self.dir / name).write_text(text)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def urls(self) -> list[str]:
        """Every node's MQTT URL, in node order."""
        return [f"mqtts://127.0.0.1:{n.mqtt_port}" for n in self.nodes]

    def start(self) -> None:
        """Start every node; return once each serves MQTT (the cluster has a leader).
        If one cannot start, the ones already started are stopped again."""
        try:
            for node in self.nodes:
                self.start_node(node.name)
            for node in self.nodes:
                self._wait_serving(node)
        except BaseException:
            self.stop()
            raise

    def start_node(self, name: str) -> None:
        """Start one node (again, after :meth:`kill`)."""
        node = self._node(name)
        log = (self.dir / f"{name}.log").open("ab")
        with log:
            # Our own fixed binary on a config file the kit wrote.
            self._procs[name] = subprocess.Popen(  # noqa: S603
                [find_nats_server(), "-c", str(self.dir / f"{name}.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_listening(node)

    def kill(self, name: str) -> None:
        """SIGKILL one node, as a host that died: no goodbye to anyone."""
        proc = self._procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self._procs.values():
            proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pids(self) -> list[int]:
        """The running nodes' processes."""
        return [p.pid for p in self._procs.values() if p.poll() is None]

    def wait_serving(self) -> None:
        """Until every running node serves MQTT (after a node was started again)."""
        for node in self.nodes:
            if node.name in self._procs:
                self._wait_serving(node)

    def alive(self) -> list[str]:
        """The nodes running now."""
        return [n for n, p in self._procs.items() if p.poll() is None]

    def cloud_peer(self, dataset: dict[str, Any], **kw: Any) -> Any:
        """The platform stand-in, on the second node first and failing over to the rest."""
        order = self.nodes[1:] + self.nodes[:1]
        peer = super().cloud_peer(dataset, **kw)
        peer.endpoints = [("127.0.0.1", n.mqtt_port) for n in order]
        return peer

    def gateway_settings(
        self, gateway: str, data_dir: Path, *, urls: list[str] | None = None, **mqtt: Any
    ) -> Any:
        """A gateway config listing every node (the first node first)."""
        return super().gateway_settings(gateway, data_dir, urls=urls or self.urls, **mqtt)

    def _node(self, name: str) -> NatsNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def _wait_listening(self, node: NatsNode) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            proc = self._procs[node.name]
            if proc.poll() is not None:
                log = (self.dir / f"{node.name}.log").read_text(errors="replace")
                raise RuntimeError(f"nats-server {node.name} exited: {log[-2000:]}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=0.2).close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {node.name} did not listen")

    def _wait_serving(self, node: NatsNode) -> None:
        """Until an MQTT session with a subscription works on ``node``: until then a
        fresh cluster has no JetStream leader, and CONNECT waits or fails."""
        import asyncio

        import aiomqtt

        async def probe() -> None:
            async with self.client("cloud", f"probe-{node.name}", port=node.mqtt_port) as c:
                granted = await c.subscribe(f"{PREFIX}/probe", qos=1)
                if any(getattr(g, "value", 0x80) >= 0x80 for g in granted):
                    raise aiomqtt.MqttError("subscription refused")

        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                asyncio.run(asyncio.wait_for(probe(), 5))
                return
            except (aiomqtt.MqttError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"NATS node {node.name} does not serve MQTT") from None
                time.sleep(0.2)
