"""A broker node that refuses subscriptions: a TLS proxy in front of a real broker.

Cluster brokers answer SUBSCRIBE with return code 0x80 (failure) while they
elect a leader (NATS does), and an ACL can do it for good.  Mosquitto's
``acl_file`` never does: it grants the subscription and then delivers
nothing.  :class:`RefusingNode` stands in front of a :class:`~sim.broker.Broker`
with the same certificates, passes every byte through, and rewrites the
return codes of the first ``refusals`` SUBACKs it forwards to 0x80, so the
gateway meets a real refusal from what looks to it like one more node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from gateway.tools.ports import free_port
from sim.broker import Broker

#: MQTT control packet type of SUBACK, in the fixed header's high nibble.
_SUBACK = 9


class RefusingNode:
    """Listens on its own loopback port; each connection is relayed to ``broker``
    with the identity of ``gateway`` (whose certificate the client presents too)."""

    def __init__(
        self, broker: Broker, gateway: str, *, refusals: int = 1, target_port: int | None = None
    ) -> None:
        self.broker = broker
        #: The broker port relayed to (a cluster's node; the broker's own by default).
        self.target_port = target_port or broker.port
        self.port = free_port()
        self.url = f"mqtts://127.0.0.1:{self.port}"
        #: SUBACKs still to refuse; and how many were refused so far.
        self.refusals = refusals
        self.refused = 0
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_tls.load_cert_chain(broker.server_cert, broker.server_key)
        self._server_tls.load_verify_locations(broker.ca_file)
        self._server_tls.verify_mode = ssl.CERT_REQUIRED
        cert, key = broker.certs[gateway]
        self._client_tls = ssl.create_default_context(cafile=str(broker.ca_file))
        self._client_tls.load_cert_chain(cert, key)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, ssl=self._server_tls
        )

    async def stop(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Closed and waited for: no socket may be left for the garbage collector.
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port, ssl=self._client_tls, server_hostname="localhost"
            )
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(
                _pipe(reader, up_writer, None), _pipe(up_reader, writer, self._rewrite)
            )
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    def _rewrite(self, header: int, body: bytes) -> bytes:
        if header >> 4 != _SUBACK or self.refusals <= 0:
            return body
        self.refusals -= 1
        self.refused += 1
        return body[:2] + b"\x80" * (len(body) - 2)  # packet id, then one code per topic


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    rewrite: Callable[[int, bytes], bytes] | None,
) -> None:
    """Copy MQTT packets from ``reader`` to ``writer``, each through ``rewrite``."""
    try:
        while True:
            first = await reader.readexactly(1)
            length, shift, raw = 0, 0, b""
            while True:  # the remaining length: up to four bytes, 7 bits each
                byte = await reader.readexactly(1)
                raw += byte
                length |= (byte[0] & 0x7F) << shift
                shift += 7
                if not byte[0] & 0x80:
                    break
            body = await reader.readexactly(length)
            if rewrite is not None:
                body = rewrite(first[0], body)
            writer.write(first + raw + body)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()
