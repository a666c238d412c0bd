"""An MQTT broker inside the simulator's own process, for machines without Mosquitto.

amqtt is a pure-Python MQTT 3.1.1 broker: with it, the simulated site needs
nothing beyond pip.  It listens on a loopback port without TLS; that is the
only difference the gateway sees from :class:`sim.broker.Broker` (which runs
Mosquitto with mutual TLS and an ACL, as a real site would, and which the
test suite uses).  The interface is the same, with ``start`` and ``stop``
awaited.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway.config.models import Config, DoorConfig, GatewaySection, MqttSection, SyncSection
from gateway.config.write import write_config
from gateway.core.jws import Signer
from gateway.tools.ports import free_port
from sim.broker import platform_keys_file
from sim.errors import ScenarioError

log = logging.getLogger(__name__)
#: Seconds amqtt gets to shut down before its sockets are closed directly.
STOP_LIMIT = 5.0


def _close_listeners(broker: Any) -> None:
    """Close amqtt's listeners (its internals, by name: nothing else would stop a
    shutdown that hangs); the connections are closed by :class:`EmbeddedBroker`."""
    for server in getattr(broker, "_servers", {}).values():
        instance = getattr(server, "instance", None)
        if instance is not None:
            instance.close()


class EmbeddedBroker:
    """amqtt on a free loopback port, restartable, with the site's test signing key."""

    def __init__(self, directory: Path, *, site: str, gateways: list[str]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.site = site
        self.gateways = gateways
        self.port = free_port()
        self.signer = Signer.generate("platform-sim")
        self._broker: Any = None
        #: Every connection amqtt accepted and has not closed: a stop closes them all.
        self._writers: set[asyncio.StreamWriter] = set()
        # amqtt logs every connection at INFO: the simulator's report is what matters.
        # (It also warns about messages for clients that are away, which is the point.)
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (again) on the same port."""
        try:
            from amqtt.broker import Broker as AmqttBroker
        except ImportError:
            raise ScenarioError(
                "no MQTT broker: install Mosquitto, or the embedded one (amqtt, a "
                "dependency of the simulator: provisioning/setup-venv installs it)"
            ) from None

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = AmqttBroker(config)
        self._broker.stream_connected = self._tracked(self._broker.stream_connected)
        await self._broker.start()

    def _tracked(self, accept: Any) -> Any:
        """amqtt's connection handler, made to close every socket it was given.

        Some of its paths (a client gone before its CONNECT, a shutdown under
        way) end without closing the connection, which then stays open until
        the garbage collector finds it, complaining, in whatever test runs then.
        """

        async def connected(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
        ) -> None:
            self._writers.add(writer)
            try:
                await accept(reader, writer, listener_name=listener_name)
            finally:
                self._writers.discard(writer)
                if not writer.is_closing():
                    writer.transport.abort()

        return connected

    async def stop(self) -> None:
        """Stop listening and drop every connection, within ``STOP_LIMIT`` seconds."""
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        # amqtt's shutdown stops each client's handler in turn and, once in a long
        # test run, one of those never finishes: the listener and the connections
        # are then closed directly, which is all "the broker went away" means here.
        try:
            async with asyncio.timeout(STOP_LIMIT):
                await broker.shutdown()
        except TimeoutError:
            log.warning("embedded broker: shutdown stuck; closing its connections directly")
            # Its background tasks end with the event loop, complaining as they go.
            logging.getLogger("amqtt").setLevel(logging.CRITICAL)
            _close_listeners(broker)
        finally:
            # Whatever amqtt left open (connections still starting, handlers that
            # never ended) is closed here.
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            # abort() closes each socket in a callback on the next turns of the
            # loop: let them run, or a loop that ends first leaves them open.
            for _ in range(3):
                await asyncio.sleep(0)

    def cloud_peer(self, dataset: dict[str, Any], **kw: Any) -> Any:
        """The platform stand-in, connected without TLS."""
        from sim.cloud import CloudPeer

        kw.setdefault("signer", self.signer)
        return CloudPeer(host="127.0.0.1", port=self.port, site_id=self.site, dataset=dataset, **kw)

    def keys_file(self) -> Path:
        """The platform's public keys, for the gateways' ``[sync] keys_file``."""
        return platform_keys_file(self.dir, self.signer)

    def gateway_settings(self, gateway: str, data_dir: Path) -> Config:
        """A complete config for ``gateway`` on this broker, one door "front"."""
        return Config(
            gateway=GatewaySection(id=gateway, site_id=self.site, data_dir=data_dir),
            doors=(DoorConfig(id="front"),),
            mqtt=MqttSection(urls=(self.url,), reconnect_min=0.05, reconnect_max=0.5),
            sync=SyncSection(keys_file=self.keys_file()),
        )

    def gateway_config(self, gateway: str, data_dir: Path) -> Path:
        """:meth:`gateway_settings`, written to ``data_dir/doorgw.toml``."""
        return write_config(self.gateway_settings(gateway, data_dir), data_dir / "doorgw.toml")
