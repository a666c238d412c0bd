"""The running gateway as staff see it: the status snapshot and the staff actions.

:class:`GatewayDesk` implements :class:`gateway.net.desk.StaffDesk`, the one
protocol through which the staff API reads and acts on the gateway, so the
API never reaches into the services' own state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway import __version__
from gateway.app.clocktrust import ClockWatch
from gateway.app.eventlog import EventLog
from gateway.app.freshness import Freshness
from gateway.app.modes import SiteModes
from gateway.app.supervisor import Supervisor
from gateway.app.sync import SyncEngine
from gateway.app.taps import Taps
from gateway.clock import Clock
from gateway.config.models import Config
from gateway.core.access import access_json, member_access
from gateway.hw.station import Station
from gateway.net.desk import DoorMetrics, GatewayMetrics, UnknownError
from gateway.net.mqtt import MqttLink
from gateway.store.flush import WalFlusher
from gateway.store.outbox import Outbox
from gateway.store.reader import CacheReader


class GatewayDesk:
    """What the staff API may see of the gateway and ask of it (see the module docs)."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        cache: CacheReader,
        events: EventLog,
        station: Station,
        modes: SiteModes,
        taps: Taps,
        engine: SyncEngine,
        freshness: Freshness,
        clock_watch: ClockWatch,
        link: MqttLink,
        outbox: Outbox,
        claims_flusher: WalFlusher,
        supervisor: Supervisor,
    ) -> None:
        self._config = config
        self._clock = clock
        self._cache = cache
        self._events = events
        self._station = station
        self._modes = modes
        self._taps = taps
        self._engine = engine
        self._freshness = freshness
        self._clock_watch = clock_watch
        self._link = link
        self._outbox = outbox
        self._claims_flusher = claims_flusher
        self._supervisor = supervisor

    def monotonic(self) -> float:
        """The gateway's monotonic clock."""
        return self._clock.monotonic()

    async def record(self, type_: str, data: dict[str, Any]) -> None:
        """Record one event."""
        await self._events.record(type_, data)

    def not_ready(self) -> list[str]:
        """Why the gateway cannot grant access now; empty when it can."""
        if self._engine.version is None:
            return ["no access data yet"]
        if self._freshness.at_fault():
            return ["access data too old for every kind of grant"]
        return []

    def status(self) -> dict[str, Any]:
        """Doors, readers, sync, outbox and clock, now (``GET /api/status``)."""
        trust = self._clock_watch.trust.state()
        states = self._station.door_states()
        doors = []
        for cfg in self._config.doors:
            controller = self._station.doors.get(cfg.id)
            doors.append(
                {
                    "id": cfg.id,
                    "name": cfg.name or cfg.id,
                    "state": states[cfg.id],
                    "locked": None if controller is None else controller.locked,
                    "open": None if controller is None else controller.is_open,
                    "alarm": None if controller is None else controller.alarm,
                    "held": None if controller is None else controller.held,
                }
            )
        return {
            "gateway": self._config.gateway.id,
            "site": self._config.gateway.site_id,
            "version": __version__,
            "lockdown": self._modes.lockdown,
            "doors": doors,
            "readers": [
                {"id": reader_id, "online": online}
                for reader_id, online in self._station.readers_online().items()
            ],
            "sync": {
                "connected": self._link.connected.is_set(),
                "dataset_version": self._engine.version,
                "platform_version": self._engine.cloud_version,
                "data_age_s": self._freshness.age(),
                "stale_classes": sorted(self._freshness.stale()),
                "last_delta_lag_s": self._engine.delta_lag,
            },
            "outbox": {
                "depth": self._outbox.depth,
                "last_seq": self._outbox.last_seq,
                "acked_seq": self._outbox.acked_seq,
                "storage_error": self._outbox.storage_error,
                "durable_seq": self._outbox.durable_seq,
                "flush": _flush_status(self._outbox.flusher),
            },
            "claims": {"flush": _flush_status(self._claims_flusher)},
            "services_down": self._supervisor.down(),
            "service_failures": dict(sorted(self._supervisor.failures.items())),
            "clock": {"trusted": trust.trusted, "source": trust.source, "skew_s": trust.skew_s},
        }

    def metrics(self) -> GatewayMetrics:
        """What /metrics reports, now."""
        return GatewayMetrics(
            decisions=dict(self._taps.decisions),
            data_age_s=self._freshness.age(),
            dataset_version=self._engine.version,
            delta_lag_s=self._engine.delta_lag,
            outbox_depth=self._outbox.depth,
            clock_trusted=self._clock_watch.trust.trusted(),
            lockdown=self._modes.lockdown,
            mqtt_connected=self._link.connected.is_set(),
            readers_online=self._station.readers_online(),
            doors=tuple(
                DoorMetrics(door_id, door.locked, door.is_open, door.alarm, door.relay_cycles)
                for door_id, door in self._station.doors.items()
            ),
        )

    def recent_events(self) -> Sequence[Mapping[str, Any]]:
        """The latest events, oldest first."""
        return self._events.recent

    def drives(self, door_id: str) -> bool:
        """Whether this gateway drives the door's lock."""
        return door_id in self._station.doors

    async def unlock(self, door_id: str, *, by: str, seconds: float | None) -> str:
        """Unlock a driven door now, for staff member ``by``; the door's state after."""
        door = self._station.doors.get(door_id)
        if door is None:
            raise UnknownError(door_id)
        await door.grant(reason=f"staff {by}", seconds=seconds)
        return self._station.door_states()[door_id]

    async def set_lockdown(self, on: bool, *, by: str) -> bool:
        """Enter or leave lockdown for staff member ``by``; whether in lockdown after."""
        await self._modes.set_lockdown(on, by=f"staff {by}")
        return self._modes.lockdown

    def member_access(self, member_id: str, days: int) -> dict[str, Any] | None:
        """Which doors a member can open in the next ``days``, from the cache."""
        start = int(self._clock.now().timestamp())
        end = start + days * 86_400
        with self._cache.view() as view:
            result = member_access(view, member_id, start, end, lockdown=self._modes.lockdown)
        return None if result is None else access_json(result, start, end)

    def start_enrolment(self, reader_id: str, seconds: float) -> None:
        """Report the next card at ``reader_id`` instead of deciding it."""
        try:
            self._taps.start_enrolment(reader_id, seconds)
        except KeyError:
            raise UnknownError(reader_id) from None

    def enrolled_card(self, reader_id: str) -> dict[str, Any] | None:
        """The card last enrolled at ``reader_id``, if any."""
        if reader_id not in self._station.readers:
            raise UnknownError(reader_id)
        return self._taps.enrolled.get(reader_id)


def _flush_status(flusher: WalFlusher | None) -> dict[str, Any] | None:
    """How syncing one file's log to the storage goes (None: each commit syncs)."""
    if flusher is None:
        return None
    return {
        "window_ms": round(flusher.window * 1000),
        "flushes": flusher.flushes,
        "late": flusher.late,
        "last_ms": round(flusher.last_seconds * 1000, 1),
        "max_ms": round(flusher.max_seconds * 1000, 1),
        "error": flusher.error,
    }
