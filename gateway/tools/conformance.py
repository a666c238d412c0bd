"""``doorgw platform conformance``: a platform checked against docs/protocol.md.

A real gateway (this package's, with the given config's identity,
certificates and pinned keys, on its own state directory, driving no
hardware) goes through what the platform must answer, and a second client
with the same certificate (client id ``<gateway>-conformance``) watches the
gateway's topics and asks what the gateway would only ask after a failure.
Each point of the contract passes or fails on its own, with what was seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.app.gateway import Gateway
from gateway.clock import Clock
from gateway.config.models import Config, DoorConfig
from gateway.config.write import config_with
from gateway.core.credentials import parse_read
from gateway.core.jws import SignatureError
from gateway.errors import DatasetError, DoorgwError
from gateway.net.mqtt import LinkSettings, MqttLink
from gateway.store.files import load_platform_keys
from gateway.wire.protocol import (
    AckMsg,
    BeaconMsg,
    CloudMsg,
    DeltaMsg,
    SnapshotChunkMsg,
    Topics,
    parse_cloud_message,
)

#: A card no platform will have: its taps are ``access`` events to acknowledge.
PROBE_CARD = "nfc:04C0FFEE0D00A5"


@dataclass
class Point:
    """One point of the contract, and how the platform did on it."""

    key: str
    title: str
    #: Where docs/protocol.md states it.
    ref: str
    passed: bool | None = None
    detail: str = ""

    def record(self, passed: bool, detail: str) -> None:
        """The verdict, and what was seen."""
        self.passed, self.detail = passed, detail


POINTS = (
    (
        "snapshot",
        "a gateway with no data asks (no_data) and applies the snapshot sent",
        "resync; snapshot_chunk",
    ),
    ("events", "events are acknowledged: the gateway's outbox empties", "events; ack"),
    ("repeat", "a batch of events already stored is acknowledged again", "events"),
    (
        "gap",
        "a gap request is answered with the deltas after have_version, or a snapshot",
        "resync",
    ),
    (
        "resume",
        "a resume request is answered with its missing chunks, or a whole snapshot",
        "resync; snapshot_chunk",
    ),
    ("beacon", "a signed beacon reaches the site's topic", "beacon"),
    (
        "salvaged",
        "an outbox_salvaged range counts as received for the ack",
        "events: When the outbox file was damaged",
    ),
    (
        "signed",
        "every message the platform sent verified and matched its schema",
        "Signed messages",
    ),
)


@dataclass
class _Seen:
    """What the watching client received, verified."""

    messages: list[tuple[float, str, CloudMsg]] = field(default_factory=list)
    acks: list[tuple[float, int]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


class Conformance:
    """Runs every point once against the platform on ``config``'s broker."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        state_dir: Path,
        *,
        timeout: float,
        beacon_wait: float,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        if config.mqtt is None:
            raise DoorgwError("the conformance gateway's config has no [mqtt] section")
        self._home = state_dir.resolve() / config.gateway.id
        # The identity, broker and keys of the config; no hardware, no staff API.
        self.config = config_with(
            config,
            gateway=config.gateway.model_copy(update={"data_dir": self._home}),
            doors=tuple(DoorConfig(id=d.id) for d in config.doors),
            readers=(),
            api=None,
        )
        self._clock = clock
        self._timeout = timeout
        self._beacon_wait = beacon_wait
        self._say = say
        self._keys = load_platform_keys(self.config)
        self._topics = Topics(config.mqtt.topic_prefix, config.gateway.site_id, config.gateway.id)
        self.points = {key: Point(key, title, ref) for key, title, ref in POINTS}
        self._seen = _Seen()
        self._rejections: list[str] = []

    async def run(self) -> list[Point]:
        """Every point, in order; those that could not be reached stay failed."""
        self._home.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in self._home.glob("cache.sqlite3*"):
            stale.unlink()  # no data: the platform must send it all
        watch = self._watcher()
        task = asyncio.create_task(watch.run(), name="conformance-watch")
        try:
            await self._within(watch.connected.wait(), "broker connection for the watching client")
            await self._first_run(watch)
            await self._salvage_run()
        except _RunStoppedError as stop:
            self._say(f"stopped: {stop}")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        signed = self.points["signed"]
        problems = self._rejections + self._seen.bad
        if problems:
            signed.record(False, "; ".join(problems[:5]))
        elif self._seen.messages:
            signed.record(True, f"none refused ({len(self._seen.messages)} checked here)")
        for point in self.points.values():
            if point.passed is None:
                point.record(False, point.detail or "not reached")
        return list(self.points.values())

    # The gateway's own life.

    async def _first_run(self, watch: MqttLink) -> None:
        gw = Gateway(self.config, self._clock)
        async with gw.running():
            self._say("waiting for the snapshot a new gateway asks for ...")
            p = self.points["snapshot"]
            if not await self._until(lambda: gw.engine.version is not None):
                asked = [e["data"] for e in gw.events.recent if e["type"] == "resync_requested"]
                self._collect(gw)
                p.record(False, f"no snapshot applied in {self._timeout:g} s; asked {asked}")
                raise _RunStoppedError("the rest needs the gateway's data")
            applied = _last(gw, "snapshot_applied")
            p.record(True, f"version {gw.engine.version} ({applied.get('snapshot_id')})")
            version = int(gw.engine.version or 0)

            self._say("taps, and their acknowledgement ...")
            door = self.config.doors[0].id if self.config.doors else "conformance"
            card = parse_read(PROBE_CARD, site_id=self.config.gateway.site_id)
            for _ in range(3):
                await gw.taps.tap(card, door)
            p = self.points["events"]
            if await self._until(lambda: gw.outbox.depth == 0):
                p.record(True, f"acked up to seq {gw.outbox.acked_seq}")
            else:
                p.record(False, f"outbox depth {gw.outbox.depth}, acked {gw.outbox.acked_seq}")

            await self._repeat(gw, watch)
            await self._gap(watch, version)
            await self._resume(watch, version, str(applied.get("snapshot_id") or ""))
            await self._beacon(version)
            self._collect(gw)

    async def _salvage_run(self) -> None:
        self._say("a damaged outbox: the gateway salvages it and says which seqs are gone ...")
        outbox = self._home / "events.sqlite3"
        for extra in (self._home / "events.sqlite3-wal", self._home / "events.sqlite3-shm"):
            extra.unlink(missing_ok=True)
        with outbox.open("r+b") as f:
            f.write(b"not a database, on purpose " * 4)  # the header is gone
        gw = Gateway(self.config, self._clock)
        async with gw.running():
            p = self.points["salvaged"]
            marker = gw.outbox.salvaged or {}
            where = f"range {marker.get('first')}..{marker.get('last')}"
            if not marker:
                p.record(False, "the damaged outbox was not salvaged (a gateway fault)")
            elif await self._until(lambda: gw.outbox.depth == 0):
                p.record(True, f"{where} settled: acked {gw.outbox.acked_seq}")
            else:
                p.record(False, f"{where}: acked {gw.outbox.acked_seq}, last {gw.outbox.last_seq}")
            self._collect(gw)

    def _collect(self, gw: Gateway) -> None:
        self._rejections += [
            f"{e['data'].get('reason')}: {e['data'].get('detail')}"
            for e in gw.events.recent
            if e["type"] == "message_rejected"
        ]

    # What the watching client asks and checks.

    async def _repeat(self, gw: Gateway, watch: MqttLink) -> None:
        p = self.points["repeat"]
        stored = [e for e in gw.events.recent if e["seq"] and e["seq"] <= gw.outbox.acked_seq]
        if not stored:
            p.record(False, "no acknowledged event to send again")
            return
        event = {k: stored[-1][k] for k in ("seq", "at", "type", "data")}
        since = time.monotonic()
        batch = {"v": 1, "gateway": self.config.gateway.id, "events": [event]}
        await watch.publish(self._topics.events, json.dumps(batch).encode())
        got = await self._until(
            lambda: any(t > since and seq >= event["seq"] for t, seq in self._seen.acks)
        )
        p.record(got, f"seq {event['seq']} sent again: {'acked' if got else 'no ack'}")

    async def _gap(self, watch: MqttLink, version: int) -> None:
        p = self.points["gap"]
        have = max(0, version - 1)
        since = await self._ask(watch, have, "gap")

        def answer() -> str | None:
            for t, _, msg in self._seen.messages:
                if t <= since:
                    continue
                if isinstance(msg, DeltaMsg) and msg.base_version <= have < msg.version:
                    return f"delta {msg.base_version}->{msg.version}"
                if isinstance(msg, SnapshotChunkMsg) and msg.version >= version:
                    return f"snapshot {msg.snapshot_id} at version {msg.version}"
            return None

        await self._until(lambda: answer() is not None)
        found = answer()
        p.record(found is not None, found or f"nothing after have_version {have}")

    async def _resume(self, watch: MqttLink, version: int, snapshot_id: str) -> None:
        p = self.points["resume"]
        since = await self._ask(watch, version, "resume", snapshot_id=snapshot_id, missing=[[0, 0]])

        def answer() -> str | None:
            chunks: dict[str, set[int]] = {}
            counts: dict[str, int] = {}
            for t, _, msg in self._seen.messages:
                if t > since and isinstance(msg, SnapshotChunkMsg):
                    if msg.snapshot_id == snapshot_id and msg.index == 0:
                        return f"chunk 0 of {snapshot_id}"
                    chunks.setdefault(msg.snapshot_id, set()).add(msg.index)
                    counts[msg.snapshot_id] = msg.count
            for sid, held in chunks.items():
                if len(held) == counts[sid]:
                    return f"a whole snapshot, {sid}"
            return None

        await self._until(lambda: answer() is not None)
        found = answer()
        p.record(found is not None, found or f"no chunk 0 of {snapshot_id!r}, no snapshot")

    async def _beacon(self, version: int) -> None:
        p = self.points["beacon"]

        def beacon() -> BeaconMsg | None:
            for _, _, msg in self._seen.messages:
                if isinstance(msg, BeaconMsg) and msg.version >= version:
                    return msg
            return None

        self._say(f"waiting up to {self._beacon_wait:g} s for a beacon ...")
        await self._until(lambda: beacon() is not None, self._beacon_wait)
        msg = beacon()
        p.record(
            msg is not None,
            f"version {msg.version}" if msg else f"none in {self._beacon_wait:g} s",
        )

    async def _ask(self, watch: MqttLink, have: int, reason: str, **extra: Any) -> float:
        since = time.monotonic()
        body = {
            "v": 1,
            "gateway": self.config.gateway.id,
            "have_version": have,
            "reason": reason,
            "snapshot_id": None,
            "missing": None,
            **extra,
        }
        await watch.publish(self._topics.resync, json.dumps(body).encode())
        return since

    def _watcher(self) -> MqttLink:
        mqtt = self.config.mqtt
        assert mqtt is not None
        t = self._topics
        settings = LinkSettings(
            urls=mqtt.urls,
            client_id=f"{self.config.gateway.id}-conformance",
            subscriptions=[t.gw_ack, t.gw_delta, t.gw_snapshot, t.site_beacon, t.site_delta],
            will_topic=None,
            will_payload=b"",
            online_payload=lambda: b"",
            ca_file=mqtt.ca_file,
            cert_file=mqtt.cert_file,
            key_file=mqtt.key_file,
            connect_timeout=mqtt.connect_timeout,
            reconnect_min=mqtt.reconnect_min,
            reconnect_max=mqtt.reconnect_max,
        )
        return MqttLink(settings, self._arrived, _nothing)

    async def _arrived(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        try:
            _, body = self._keys.verify(payload)
            msg = parse_cloud_message(body)
        except (SignatureError, DatasetError) as exc:
            self._seen.bad.append(f"{topic}: {exc}"[:300])
            return
        self._seen.messages.append((now, topic, msg))
        if isinstance(msg, AckMsg):
            self._seen.acks.append((now, msg.seq))

    # Waiting.

    async def _until(self, predicate: Callable[[], bool], seconds: float | None = None) -> bool:
        deadline = time.monotonic() + (self._timeout if seconds is None else seconds)
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _within(self, aw: Any, what: str) -> None:
        try:
            await asyncio.wait_for(aw, self._timeout)
        except TimeoutError:
            raise _RunStoppedError(f"no {what} in {self._timeout:g} s") from None


class _RunStoppedError(Exception):
    """The run cannot go on (the points not reached stay failed)."""


async def _nothing() -> None:
    """The watching client has nothing to do on connect."""


def _last(gw: Gateway, type_: str) -> dict[str, Any]:
    found = [e["data"] for e in gw.events.recent if e["type"] == type_]
    return found[-1] if found else {}
