"""A stand-in for the platform, speaking the real protocol over a real broker.

:class:`CloudPeer` holds a site's dataset, signs and publishes snapshots and
deltas, answers resync requests, receives event batches, stores each event
once per (gateway, seq) and acknowledges the highest contiguous sequence.
Tests, benchmarks and the simulator use it as "the cloud".
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import sqlite3
import ssl
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.core.jws import Signer
from gateway.core.model import ENTITY_TABLES
from gateway.net.mqtt import NO_DELAY, raise_if_cancelling, subscription_refused, tls_context
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset

log = logging.getLogger(__name__)
#: The platform publishes snapshots and acks to many gateways at once on purpose;
#: aiomqtt's "pending publish calls" warnings about that are noise here.
_MQTT_LOG = logging.getLogger("sim.cloud.mqtt")
_MQTT_LOG.setLevel(logging.ERROR)

_SECTIONS = ENTITY_TABLES
_CASCADE = {
    "member": ("credentials", "entitlements", "bookings", "passes"),
    "plan": ("entitlements",),
    "resource": ("bookings",),
}
_REF = {"member": "member_id", "plan": "plan_id", "resource": "resource_id"}


def apply_change(doc: dict[str, Any], change: dict[str, Any]) -> None:
    """Apply one change document to a dataset document, as the gateway's cache would."""
    entity = change["entity"]
    if entity == "site":
        doc["site"] = change["data"]
        return
    items = doc.setdefault(_SECTIONS[entity], [])
    key = change["data"]["id"] if change["op"] == "upsert" else change["id"]
    doc[_SECTIONS[entity]] = [i for i in items if i["id"] != key]
    if change["op"] == "upsert":
        doc[_SECTIONS[entity]].append(change["data"])
        return
    for section in _CASCADE.get(entity, ()):
        doc[section] = [i for i in doc.get(section, []) if i.get(_REF[entity]) != key]


class _EventStore:
    """The platform's event table: one row per (gateway, seq), in a SQLite file."""

    def __init__(self, path: Path, received: dict[str, Received]) -> None:
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (gateway TEXT, seq INTEGER, at INTEGER, "
            "type TEXT, data TEXT, PRIMARY KEY (gateway, seq))"
        )
        rows = self._db.execute("SELECT gateway, seq, at, type, data FROM events ORDER BY seq")
        for gateway, seq, at, type_, data in rows:
            got = received[gateway]
            event = {"seq": seq, "at": at, "type": type_, "data": json.loads(data)}
            got.events[seq] = event
            if type_ == "outbox_salvaged":
                got.settled.append((int(event["data"]["first"]), int(event["data"]["last"])))
        for got in received.values():
            got.advance()

    def add(self, gateway: str, events: list[dict[str, Any]]) -> None:
        """Keep ``events`` (new ones only reach here); one small transaction."""
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
                [(gateway, e["seq"], e["at"], e["type"], json.dumps(e["data"])) for e in events],
            )


@dataclass
class Received:
    """What the cloud has stored of one gateway's events."""

    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    contiguous: int = 0
    #: Ranges an ``outbox_salvaged`` event declared: only what arrived will ever come.
    settled: list[tuple[int, int]] = field(default_factory=list)

    def advance(self) -> None:
        """Move ``contiguous`` over every event held and every settled range."""
        while True:
            nxt = self.contiguous + 1
            if nxt in self.events:
                self.contiguous = nxt
                continue
            ends = [last for first, last in self.settled if first <= nxt <= last]
            if not ends:
                return
            self.contiguous = max(ends)

    duplicates: int = 0
    batches: int = 0


#: Seconds to wait for one publish's acknowledgement before publishing again.
PUBLISH_TIMEOUT = 10.0
#: Seconds a publish keeps being tried, across reconnections, before it fails:
#: a platform queues what it must send while its broker fails over.
PUBLISH_DEADLINE = 120.0
#: Seconds a connection attempt may wait for the broker's CONNACK (a cluster
#: node electing a leader can hold it): then the next node is tried.
CONNECT_TIMEOUT = 10.0


class CloudPeer:
    """The platform's side of one site, connected to a broker as ``client_id``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        site_id: str,
        signer: Signer,
        dataset: dict[str, Any],
        prefix: str = "doorgw/v1",
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        client_id: str = "cloud",
        now: Callable[[], Any] | None = None,
        store: Path | None = None,
        more: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.host, self.port, self.site_id, self.prefix = host, port, site_id, prefix
        #: Every node of the broker service, tried in turn: (host, port) first, then ``more``.
        self.endpoints = [(host, port), *more]
        self.client_id = client_id
        self.cloud = CloudSigner(signer, site_id, now)
        self.dataset = copy.deepcopy(dataset)
        self.version: int = int(dataset["version"])
        self.received: dict[str, Received] = defaultdict(Received)
        #: With ``store``: every event kept in a SQLite file as well (inspect it with
        #: sqlite3; a platform stand-in started on it again carries on from it).
        self._store = _EventStore(store, self.received) if store is not None else None
        self.status: dict[str, dict[str, Any]] = {}
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.resync_requests: list[dict[str, Any]] = []
        self.answer_resyncs = True
        #: Seconds between beacons to the site while connected (None: only when asked).
        self.beacon_every: float | None = None
        self.chunk_bytes = 192 * 1024
        self._tls: ssl.SSLContext | None = (
            tls_context(ca_file, cert_file, key_file) if ca_file else None
        )
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.event_arrived = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called with (gateway, leaf, body) for every message received, on arrival.
        self.observer: Callable[[str, str, Any], None] | None = None

    # Publishing.

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish with QoS 1 and wait for the broker's acknowledgement.

        With no acknowledgement within :data:`PUBLISH_TIMEOUT`, or no
        connection, it is published again (on whichever node the peer is on
        by then) until :data:`PUBLISH_DEADLINE`; then the last error is
        raised.  A NATS node drops a QoS 1 publish it cannot store while its
        stream elects a leader, and never acknowledges it: every message the
        gateway takes is safe to repeat (versions, nonces), so the platform
        repeats.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_DEADLINE
        while True:
            left = deadline - loop.time()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.connected.wait(), max(0.0, left))
            client = self._client
            try:
                if client is None or not self.connected.is_set():
                    raise aiomqtt.MqttError("cloud peer is not connected")
                await client.publish(topic, payload, qos=1, retain=retain, timeout=PUBLISH_TIMEOUT)
                return
            except aiomqtt.MqttError as exc:
                raise_if_cancelling(exc)
                if loop.time() >= deadline:
                    raise
                log.info("cloud peer: publish to %s: %s; again", topic, exc)
                await asyncio.sleep(0.1)

    async def send_delta(
        self,
        changes: list[dict[str, Any]],
        *,
        base: int | None = None,
        version: int | None = None,
        gateway: str | None = None,
    ) -> int:
        """Apply ``changes`` to the dataset and publish them as the next version."""
        base = self.version if base is None else base
        version = self.version + 1 if version is None else version
        for change in changes:
            apply_change(self.dataset, change)
        self.version = max(self.version, version)
        self.dataset["version"] = self.version
        topic = (
            f"{self.prefix}/gw/{gateway}/delta"
            if gateway
            else f"{self.prefix}/site/{self.site_id}/delta"
        )
        await self.publish(topic, self.cloud.delta(base, version, changes, gateway))
        return version

    async def send_snapshot(self, gateway: str | None = None) -> None:
        """Publish a snapshot of the current dataset (to one gateway or the site)."""
        dataset = parse_dataset(self.dataset)
        topic = (
            f"{self.prefix}/gw/{gateway}/snapshot"
            if gateway
            else f"{self.prefix}/site/{self.site_id}/snapshot"
        )
        for chunk in self.cloud.snapshot(dataset, gateway=gateway, chunk_bytes=self.chunk_bytes):
            await self.publish(topic, chunk)

    async def _answer(self, gateway: str) -> None:
        try:
            await self.send_snapshot(gateway)
        except aiomqtt.MqttError as exc:
            log.info("cloud peer: snapshot for %s not sent: %s", gateway, exc)

    async def _beacons(self, client: aiomqtt.Client) -> None:
        assert self.beacon_every is not None
        while self._client is client:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.send_beacon()
            await asyncio.sleep(self.beacon_every)

    async def send_beacon(self) -> None:
        """Announce the current version to the site."""
        await self.publish(
            f"{self.prefix}/site/{self.site_id}/beacon", self.cloud.beacon(self.version)
        )

    # The platform's own operations, as its booking and member screens would do them.

    async def book(
        self,
        booking_id: str,
        member: str,
        resource: str,
        start: str,
        end: str,
        *,
        paid: bool = True,
        grace_minutes: int = 10,
    ) -> int:
        """Book ``resource`` for ``member`` (ISO times), paid in the same step unless
        ``paid`` is false, and publish it; the new version."""
        data = {
            "id": booking_id,
            "member_id": member,
            "resource_id": resource,
            "start": start,
            "end": end,
            "payment": "paid" if paid else "unpaid",
            "grace_before_min": grace_minutes,
            "grace_after_min": grace_minutes,
        }
        return await self.send_delta([{"op": "upsert", "entity": "booking", "data": data}])

    async def update(self, entity: str, item_id: str, **fields: Any) -> int:
        """Change ``fields`` of one entity (cancel a booking, suspend a member) and
        publish it; the new version.  :class:`KeyError` if there is no such entity."""
        items = self.dataset.get(_SECTIONS[entity], [])
        item = next((i for i in items if i["id"] == item_id), None)
        if item is None:
            raise KeyError(f"no {entity} {item_id!r} in the site's data")
        change = {"op": "upsert", "entity": entity, "data": {**item, **fields}}
        return await self.send_delta([change])

    def issue_pass(self, **claims: Any) -> str:
        """A signed pass's QR text (see :meth:`gateway.core.qr.PassIssuer.issue`)."""
        from gateway.core import qr

        signer = self.cloud.signer
        return qr.PassIssuer(signer.key, signer.kid).issue(site=self.site_id, **claims)

    async def register_app(self, credential: str, member: str) -> Any:
        """Enrol a member app: a new key pair whose public half becomes ``member``'s
        ``app_key`` credential (published); the app's private key, for
        :func:`gateway.core.qr.app_code`."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        from gateway.core.jws import b64url

        key = Ed25519PrivateKey.generate()
        value = b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        data = {"id": credential, "member_id": member, "kind": "app_key", "value": value}
        await self.send_delta([{"op": "upsert", "entity": "credential", "data": data}])
        return key

    # Receiving.

    async def run(self) -> None:
        """Stay connected and serve until cancelled: after a broker restarts, or a
        node of a cluster fails, the next node of :attr:`endpoints` is tried."""
        at = 0
        while True:
            try:
                await self._session(*self.endpoints[at])
            except aiomqtt.MqttError as exc:
                raise_if_cancelling(exc)
                log.info("cloud peer: %s", exc)
                at = (at + 1) % len(self.endpoints)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(0.2)

    async def _session(self, host: str, port: int) -> None:
        client = aiomqtt.Client(
            host,
            port,
            identifier=self.client_id,
            clean_session=False,
            tls_context=self._tls,
            protocol=aiomqtt.ProtocolVersion.V311,
            timeout=CONNECT_TIMEOUT,
            max_inflight_messages=100,
            socket_options=[NO_DELAY],
            max_queued_outgoing_messages=100_000,
            logger=_MQTT_LOG,
        )
        async with client:
            self._client = client
            for leaf in ("events", "resync", "status", "heartbeat"):
                granted = await client.subscribe(f"{self.prefix}/gw/+/{leaf}", qos=1)
                # A cluster node electing a leader refuses (0x80): try again, elsewhere.
                if any(subscription_refused(code) for code in granted):
                    raise aiomqtt.MqttError(f"subscription to {leaf} refused")
            self.connected.set()
            if self.beacon_every is not None:
                self._spawn(self._beacons(client))
            async for message in client.messages:
                topic = str(message.topic)
                payload = message.payload if isinstance(message.payload, bytes) else b""
                gateway, leaf = topic.split("/")[-2:]
                try:
                    body = json.loads(payload)
                except ValueError:
                    log.warning("cloud peer: bad JSON on %s", topic)
                    continue
                if self.observer is not None:
                    self.observer(gateway, leaf, body)
                if leaf == "events":
                    await self._events(gateway, body)
                elif leaf == "resync":
                    self.resync_requests.append(body)
                    if self.answer_resyncs:
                        self._spawn(self._answer(gateway))
                elif leaf == "status":
                    self.status[gateway] = body
                else:
                    self.heartbeats[gateway] = body

    async def _events(self, gateway: str, body: dict[str, Any]) -> None:
        got = self.received[gateway]
        got.batches += 1
        fresh = []
        for event in body.get("events", []):
            seq = int(event["seq"])
            if seq in got.events or seq <= got.contiguous:
                got.duplicates += 1
                continue
            got.events[seq] = event
            fresh.append(event)
            if event.get("type") == "outbox_salvaged":
                got.settled.append((int(event["data"]["first"]), int(event["data"]["last"])))
        if self._store is not None and fresh:
            self._store.add(gateway, fresh)
        got.advance()
        self.event_arrived.set()
        # Acks are cumulative, so they need not be awaited in order; awaiting them
        # here would stall receiving whenever the broker goes away mid-publish.
        self._spawn(self._ack(gateway, got.contiguous))

    async def _ack(self, gateway: str, seq: int) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self.publish(f"{self.prefix}/gw/{gateway}/ack", self.cloud.ack(gateway, seq))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    def events_of(self, gateway: str) -> list[dict[str, Any]]:
        """Every event stored for ``gateway``, in sequence order."""
        got = self.received[gateway]
        return [got.events[s] for s in sorted(got.events)]
