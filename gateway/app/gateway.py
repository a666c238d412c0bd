"""The composition root: one gateway's parts, opened in order, its services run by name.

Opening (``async with Gateway(...)``) takes the data directory's lock (one
gateway per directory), opens the cache (migrating it), the event outbox and
the sync engine, then the doors (each lock in its safe state at once) and the
readers, and wires the services.  :meth:`Gateway.run` runs every service as a
named task of one :class:`asyncio.TaskGroup`.
Closing unwinds the exit stack: readers and outputs close, locks go to their
safe state, databases close last.

The services, each with its own state:

* :class:`~gateway.app.taps.Taps` - the presentation pipeline;
* :class:`~gateway.app.modes.SiteModes` - lockdown, scheduled modes, fault lights;
* :class:`~gateway.app.sync.SyncEngine` - signed data from the platform;
* :class:`~gateway.app.uplink.Uplink` - events and heartbeats to the platform;
* :class:`~gateway.app.remote.RemoteCommands` - the platform's signed commands;
* :class:`~gateway.app.clocktrust.ClockWatch` - whether the clock can be believed;
* :class:`~gateway.app.staff.GatewayDesk` - what the staff API sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.app.clocktrust import ClockTrust, ClockWatch, ntp_synchronised
from gateway.app.eventlog import EventLog
from gateway.app.freshness import Freshness
from gateway.app.modes import SiteModes
from gateway.app.remote import RemoteCommands
from gateway.app.staff import GatewayDesk
from gateway.app.supervisor import Service, Supervisor
from gateway.app.sync import SyncEngine
from gateway.app.taps import Taps
from gateway.app.uplink import Uplink
from gateway.clock import Clock
from gateway.config.models import Config
from gateway.core.jws import KeySet
from gateway.errors import ConfigError, StopTimeoutError
from gateway.hw.pins import PinFactory
from gateway.hw.station import Station
from gateway.net.mqtt import MqttLink, gateway_link_settings
from gateway.store.claims import claims_path
from gateway.store.files import load_pin_key_file, load_platform_keys
from gateway.store.flush import Sync, WalFlusher
from gateway.store.lock import DataDirLock
from gateway.store.outbox import Outbox
from gateway.store.reader import CacheReader
from gateway.store.recovery import check_cache, open_cache, open_outbox
from gateway.store.state import SiteStateFile
from gateway.store.writer import CacheWriter
from gateway.wire.protocol import Topics

#: Seconds the tasks get to stop after a stop request, before it is an error.
STOP_TIMEOUT = 15.0


class Gateway:
    """One running gateway.  Use ``async with Gateway(...) as gw: await gw.run()``."""

    taps: Taps
    modes: SiteModes
    station: Station
    uplink: Uplink
    remote: RemoteCommands
    desk: GatewayDesk
    cache: CacheReader

    def __init__(
        self,
        config: Config,
        clock: Clock,
        *,
        keys: KeySet | None = None,
        pin_factory: PinFactory | None = None,
        clock_trust: ClockTrust | None = None,
        fsync_delay: float = 0.0,
        fsync: Sync = os.fsync,
    ) -> None:
        # fsync_delay, fsync: the outbox flusher's (seconds added to each sync, to
        # model slow storage; the call that syncs), for benchmarks and tests.
        if config.mqtt is None:
            raise ConfigError("config", "the daemon needs an [mqtt] section", "mqtt")
        self.config = config
        self.clock = clock
        #: gpiozero pin factory for doors and Wiegand readers (tests pass MockFactory).
        self._pin_factory = pin_factory
        self.keys = keys or load_platform_keys(config)
        self.pin_key = load_pin_key_file(config)
        self.topics = Topics(config.mqtt.topic_prefix, config.gateway.site_id, config.gateway.id)
        #: Syncs (and checkpoints) the claims file's log within the window after a
        #: scan's nonce claim or a pass's use, as the outbox's flusher does for events.
        self.cache_flusher = WalFlusher(
            claims_path(config.cache_path),
            clock,
            window=config.outbox.flush_window_ms / 1000,
            what="nonce claims and pass uses",
        )
        self.writer = CacheWriter(config.cache_path, clock, self.cache_flusher)
        self.outbox = Outbox(
            config.outbox_path,
            clock,
            max_events=config.outbox.max_events,
            flush_window=config.outbox.flush_window_ms / 1000,
            fsync_delay=fsync_delay,
            fsync=fsync,
        )
        self.events = EventLog(self.outbox, clock)
        trust = clock_trust or ClockTrust(
            clock,
            max_skew=config.time.max_skew_seconds,
            confirm_seconds=config.time.cloud_confirm_hours * 3600,
            ntp=ntp_synchronised if config.time.use_ntp else None,
        )
        self.clock_watch = ClockWatch(trust, clock, self.events.record)
        # The engine's callbacks reach services made once the gateway opens.
        self.engine = SyncEngine(
            self.writer,
            self.keys,
            site_id=config.gateway.site_id,
            gateway_id=config.gateway.id,
            clock=clock,
            record=self.events.record,
            request_resync=lambda msg: self.uplink.send_resync(msg),
            on_ack=lambda seq: self.uplink.on_ack(seq),
            on_command=lambda command, topic: self.remote.handle(command, topic),
            on_signed_time=self.clock_watch.observe,
        )
        self.freshness = Freshness(config, self.engine, clock)
        self.link = MqttLink(
            gateway_link_settings(config, self.topics, clock),
            self._inbound,
            self.engine.on_connected,
        )
        #: Runs the services, restarting those that fail.
        self.supervisor = Supervisor(self.events.record)
        # The publisher reads the outbox through its database thread: it must keep answering.
        self.supervisor.watch("event-outbox", self.outbox.ping)
        #: What repairing damaged files at start did, for the events.
        self._repairs: list[tuple[str, dict[str, Any]]] = []
        #: The running services' task, while :meth:`running` runs them.
        self.task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    async def _inbound(self, topic: str, payload: bytes) -> object:
        # Acks are gathered (Uplink.ack_arrived); everything else is checked now.
        if topic == self.topics.gw_ack:
            self.uplink.ack_arrived(payload)
            return None
        return await self.engine.handle(payload, topic)

    async def __aenter__(self) -> Gateway:
        try:
            # First: a second daemon on this data directory stops here, touching nothing.
            self._stack.enter_context(DataDirLock(self.config.gateway.data_dir))
            # Damaged files are set aside and the gateway starts anyway (store.repair).
            self._repairs.extend(await open_cache(self._stack, self.writer, self.clock))
            # No sync at start: nothing waits for what the last run claimed.
            self._stack.push_async_callback(self.cache_flusher.close)  # before the writer's
            await open_outbox(self._stack, self.outbox, self.clock)
            # Closed first (exit stacks unwind backwards): no load may outlive the writer.
            self._stack.push_async_callback(self.engine.close)
            self.cache = CacheReader(self.config.cache_path)
            self._stack.callback(self.cache.close)
            self._wire()
            # Last: starting may already ask the platform for data, through the uplink.
            await self.engine.start()
        except BaseException:
            # A start-up failure (no GPIO, a missing library...) must still close
            # what was opened: open databases would keep the process from exiting,
            # and outputs already made must go back to their safe state.
            await self._stack.aclose()
            raise
        return self

    def _wire(self) -> None:
        """Open the hardware and make the services that need the open cache."""
        config, clock, record = self.config, self.clock, self.events.record
        self.station = Station.open(
            config, pin_factory=self._pin_factory, clock=clock, record=record, closing=self._stack
        )
        self.modes = SiteModes(
            config,
            cache=self.cache,
            freshness=self.freshness,
            record=record,
            clock=clock,
            station=self.station,
            state_file=SiteStateFile(config.site_state_path),
        )
        self.taps = Taps(
            config,
            keys=self.keys,
            pin_key=self.pin_key,
            cache=self.cache,
            writer=self.writer,
            events=self.events,
            modes=self.modes,
            engine=self.engine,
            freshness=self.freshness,
            clock_watch=self.clock_watch,
            clock=clock,
            station=self.station,
        )
        self.station.open_readers(sink=self.taps, clock=clock, record=record, closing=self._stack)
        self.remote = RemoteCommands(
            command_topic=self.topics.gw_command,
            writer=self.writer,
            events=self.events,
            modes=self.modes,
            engine=self.engine,
            clock=clock,
            station=self.station,
            clock_watch=self.clock_watch,
        )
        self.uplink = Uplink(
            config,
            link=self.link,
            topics=self.topics,
            outbox=self.outbox,
            freshness=self.freshness,
            clock_watch=self.clock_watch,
            engine=self.engine,
            clock=clock,
            station=self.station,
        )
        self.desk = GatewayDesk(
            config,
            cache=self.cache,
            events=self.events,
            modes=self.modes,
            taps=self.taps,
            engine=self.engine,
            freshness=self.freshness,
            clock_watch=self.clock_watch,
            link=self.link,
            outbox=self.outbox,
            claims_flusher=self.cache_flusher,
            supervisor=self.supervisor,
            clock=clock,
            station=self.station,
        )

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def services(self) -> Iterator[Service]:
        """Every long-running service of this gateway, by task name.

        Readers and the staff API are not essential: the gateway goes on (and
        keeps retrying them) without one; every other service is.
        """
        yield Service("mqtt-link", self.link.run)
        for name, run in self.uplink.services():
            yield Service(name, run)
        yield Service("outbox-keeper", self.outbox.keep)
        if self.outbox.flusher is not None:
            yield Service("outbox-flusher", self.outbox.flusher.run)
        yield Service("cache-flusher", self.cache_flusher.run)
        yield Service(
            "cache-check",
            functools.partial(check_cache, self.config.cache_path, self.clock, self.events.record),
        )
        yield Service(
            "resync-retry", functools.partial(self.engine.keep_asking, self.link.connected.is_set)
        )
        for door_id, door in self.station.doors.items():
            yield Service(f"door-{door_id}", door.run)
        for reader_id, reader in self.station.readers.items():
            yield Service(f"reader-{reader_id}", reader.run, essential=False)
        for name, run in self.modes.services():
            yield Service(name, run)
        yield Service("clock-watch", self.clock_watch.run)
        if self.config.api is not None:
            from gateway.net.api import serve_api  # FastAPI loads only where it is used

            yield Service(
                "api",
                functools.partial(serve_api, self.desk, self.config.api, self.config.tokens_path),
                essential=False,
            )

    async def run(self) -> None:
        """Run every service, supervised, until cancelled.

        Raises :class:`~gateway.errors.ServiceFailedError` when an essential
        service cannot come back.
        """
        startup = [*self._repairs, *self.station.startup_events, *self.modes.startup_events]
        for type_, data in startup:
            await self.events.record(type_, data)
        self._repairs.clear()
        self.station.startup_events.clear()
        self.modes.startup_events.clear()
        await self.supervisor.run(self.services())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Open the gateway and run it in the background for the ``with`` block.

        Leaving the block stops the tasks; if they have not stopped within
        :data:`STOP_TIMEOUT` seconds, :class:`StopTimeoutError` names them.
        """
        async with self:
            task = asyncio.create_task(self.run(), name=f"gateway-{self.config.gateway.id}")
            self.task = task
            try:
                yield self
            finally:
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
                if not done:
                    raise StopTimeoutError(_describe_tasks())
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _describe_tasks() -> str:
    lines = ["tasks still running after the stop timeout:"]
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        frames = " <- ".join(
            f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(task.get_stack(limit=12))
        )
        lines.append(f"  {task.get_name()}: {frames}")
    return "\n".join(lines)
