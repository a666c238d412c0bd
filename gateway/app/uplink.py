"""What goes up to the platform: events from the outbox, heartbeats, resync requests.

The publisher sends the outbox in batches whenever a broker is reachable and
waits for acks with a bounded window.  After every reconnect it sends the
first event not acknowledged, alone, and waits for the platform's ack to
learn where the platform really is before opening the window; the platform
de-duplicates by ``(gateway, seq)`` (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from gateway.app.clocktrust import ClockWatch
from gateway.app.freshness import Freshness
from gateway.app.sync import SyncEngine
from gateway.clock import Clock
from gateway.config.models import Config
from gateway.flags import Flag, until_any
from gateway.hw.station import Station
from gateway.net.mqtt import LinkDownError, MqttLink
from gateway.store.outbox import Outbox
from gateway.wire.protocol import HeartbeatMsg, ResyncRequestMsg, Topics

log = logging.getLogger(__name__)

#: Events per published batch, and batches in flight before waiting for an ack.
BATCH_EVENTS = 1000
WINDOW_BATCHES = 16
#: Seconds the ack may stay where it is while events sent beyond it await it;
#: then everything after it is sent again.
ACK_TIMEOUT = 10.0
#: Seconds to wait for the ack of a session's first event before sending it again
#: (doubling up to ACK_TIMEOUT).
PROBE_ACK_TIMEOUT = 1.0
#: Seconds an ack may wait before it is checked when nothing needs it sooner.
#: Acks are cumulative, so of the acks that arrive meanwhile only the last is
#: verified and applied: one signature check and one delete, not one each.
ACK_GATHER = 0.5


class Uplink:
    """Publishes the outbox and heartbeats over the link, and takes acks."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        link: MqttLink,
        topics: Topics,
        outbox: Outbox,
        station: Station,
        freshness: Freshness,
        clock_watch: ClockWatch,
        engine: SyncEngine,
    ) -> None:
        assert config.mqtt is not None, "the gateway checks for [mqtt] first"
        self._gateway_id = config.gateway.id
        self._heartbeat_seconds = config.mqtt.heartbeat_seconds
        self._clock = clock
        self._link = link
        self._topics = topics
        self._outbox = outbox
        self._station = station
        self._freshness = freshness
        self._clock_watch = clock_watch
        self._engine = engine
        #: Set by each of the publisher's reasons to look again (an event made
        #: durable, an ack, the link going down): it waits on this alone.
        self._stir = asyncio.Event()
        self._acked = Flag()
        self._acked.forward_to(self._stir)
        outbox.appended.forward_to(self._stir)
        link.disconnected.forward_to(self._stir)
        #: The last message that arrived on the ack topic, not yet checked.
        self._ack_message: bytes | None = None
        self._ack_arrived = asyncio.Event()
        #: Set while the publisher cannot go on without an ack: take it at once.
        self._ack_needed = asyncio.Event()

    def services(self) -> Iterator[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The uplink's tasks."""
        yield "outbox-publisher", self._publish_outbox
        yield "ack-taker", self._take_acks
        yield "heartbeat", self._heartbeat

    def ack_arrived(self, payload: bytes) -> None:
        """A message on the ack topic: kept, unchecked, until :meth:`_take_acks`
        takes it; a later one replaces it (it acknowledges at least as much)."""
        self._ack_message = payload
        self._ack_arrived.set()

    async def _take_acks(self) -> None:
        topic = self._topics.gw_ack
        while True:
            await self._ack_arrived.wait()
            if not self._ack_needed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ACK_GATHER):
                        await self._ack_needed.wait()
            payload, self._ack_message = self._ack_message, None
            self._ack_arrived.clear()
            if payload is not None:
                # Verified as every platform message is; a forged one is refused there.
                await self._engine.handle(payload, topic)

    async def on_ack(self, seq: int) -> None:
        """The platform has stored every event up to ``seq``."""
        await self._outbox.ack(seq)
        self._acked.set()

    async def send_resync(self, msg: ResyncRequestMsg) -> None:
        """Ask the platform for data (the sync engine decides when)."""
        try:
            await self._link.publish(self._topics.resync, msg.model_dump_json().encode())
        except LinkDownError as exc:
            log.info("resync request not sent (%s); it is repeated on reconnect", exc)

    async def _publish_outbox(self) -> None:
        while True:
            await self._link.connected.wait()
            try:
                await self._drain()
            except LinkDownError:
                # Never straight back in: a session that is ending is given a
                # moment to end, so a failing publish cannot become a busy loop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._link.disconnected.wait()

    async def _drain(self) -> None:
        # Each session starts with one event and waits for the platform's ack:
        # the platform may hold far more than our last ack says (acks are lost
        # with a broker that went away), and its answer says where to go on
        # from, so a flapping broker costs one duplicate per session, not a
        # window's worth.  The platform de-duplicates by (gateway, seq) anyway.
        link, outbox = self._link, self._outbox
        session = link.sessions
        sent = outbox.acked_seq
        # The probe: this session's first event; the window opens once an ack
        # covers it (an older ack, delivered late, says nothing new).
        # A probe can be lost (published before the platform has subscribed
        # again after a broker restart): it is repeated soon, then less often.
        probe: int | None = None
        probing, probe_wait = True, PROBE_ACK_TIMEOUT
        # What was sent is sent again if the ack has not moved for ACK_TIMEOUT:
        # an ack that arrives but stays where it was (the platform missed a
        # batch, and acks the same gap after every later one) is no progress.
        stall = _Stall(outbox.acked_seq)
        while link.connected.is_set():
            if link.sessions != session:
                # Reconnected while waiting: what was in flight may be lost.
                session, sent, probing, probe = link.sessions, outbox.acked_seq, True, None
                probe_wait = PROBE_ACK_TIMEOUT
            if probing and probe is not None and outbox.acked_seq >= probe:
                probing = False
            if stall.expired(outbox.acked_seq, sent):
                sent = outbox.acked_seq  # no progress: everything after the ack again
            window = 1 if probing else BATCH_EVENTS * WINDOW_BATCHES
            if sent - outbox.acked_seq >= window:
                self._acked.clear()
                self._ack_needed.set()
                try:
                    async with asyncio.timeout(probe_wait if probing else stall.left()):
                        await self._until(self._acked, link.disconnected)
                except TimeoutError:
                    if probing:
                        sent = outbox.acked_seq
                        probe, probe_wait = None, min(probe_wait * 2, ACK_TIMEOUT)
                finally:
                    self._ack_needed.clear()
                continue
            sent = max(sent, outbox.acked_seq)
            # Cleared before looking: events stored meanwhile set it again.  Only
            # durable events go: a number the platform saw must never be reused.
            outbox.appended.clear()
            self._acked.clear()
            # Nothing durable beyond what was sent: no trip to the database thread.
            events = (
                await outbox.pending(sent, 1 if probing else BATCH_EVENTS, upto=outbox.durable_seq)
                if outbox.durable_seq > sent
                else []
            )
            if not events:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(stall.left()):
                        await self._until(outbox.appended, self._acked, link.disconnected)
                continue
            # The EventsMsg shape, serialised directly: these rows came out of our own outbox.
            batch = {"v": 1, "gateway": self._gateway_id, "events": events}
            log.debug("publishing events %d..%d", events[0]["seq"], events[-1]["seq"])
            await link.publish(
                self._topics.events, json.dumps(batch, separators=(",", ":")).encode()
            )
            if probing and probe is None:
                probe = events[0]["seq"]
            stall.sent(outbox.acked_seq, sent)
            sent = events[-1]["seq"]

    async def _until(self, *flags: asyncio.Event) -> None:
        """Wait until one of ``flags`` is set (each forwards to ``_stir``)."""
        await until_any(self._stir, *flags)

    async def _heartbeat(self) -> None:
        while True:
            await self._link.connected.wait()
            beat = HeartbeatMsg(
                gateway=self._gateway_id,
                at=int(self._clock.now().timestamp()),
                dataset_version=self._engine.version,
                data_age_s=self._freshness.age(),
                outbox_depth=self._outbox.depth,
                acked_seq=self._outbox.acked_seq,
                stale_classes=sorted(self._freshness.stale()),
                clock="trusted" if self._clock_watch.trust.trusted() else "untrusted",
                doors=self._station.door_states(),
            )
            with contextlib.suppress(LinkDownError):
                await self._link.publish(
                    self._topics.heartbeat, beat.model_dump_json().encode(), qos=0
                )
                await self._link.publish_presence()
            await asyncio.sleep(self._heartbeat_seconds)


class _Stall:
    """When the publisher gives up waiting for the platform's ack to move.

    The ack is watched, not merely its arrival: the deadline is
    :data:`ACK_TIMEOUT` after the first event sent beyond it, and moves on
    only when an ack covers more than before.  The loop's own time: it
    measures a wait, not the site's clock.
    """

    def __init__(self, acked: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._acked = acked
        #: The loop time by which the ack must move, or None (nothing awaits it).
        self._due: float | None = None

    def sent(self, acked: int, sent: int) -> None:
        """Events are sent after ``sent``, with the ack at ``acked``."""
        if self._due is None or sent <= acked:
            self._acked, self._due = acked, self._loop.time() + ACK_TIMEOUT

    def expired(self, acked: int, sent: int) -> bool:
        """Whether what was sent has waited too long for the ack to move (the
        deadline is then cleared: the next send starts another)."""
        if sent <= acked:
            self._acked, self._due = acked, None
        elif acked != self._acked:
            self._acked, self._due = acked, self._loop.time() + ACK_TIMEOUT
        if self._due is None or self._loop.time() < self._due:
            return False
        self._due = None
        return True

    def left(self) -> float:
        """Seconds to wait before looking again (ACK_TIMEOUT when nothing awaits an ack)."""
        if self._due is None:
            return ACK_TIMEOUT
        return max(0.0, self._due - self._loop.time())
