"""How old the gateway's access data is, and which grants it may still open doors for."""

from __future__ import annotations

from gateway.app.sync import SyncEngine
from gateway.clock import Clock
from gateway.config.models import Config
from gateway.core import policy


class Freshness:
    """The data's age, read from the sync engine, against the configured bounds."""

    def __init__(self, config: Config, engine: SyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        staleness = config.sync.staleness if config.sync is not None else None
        self.limits = (
            None if staleness is None else policy.StalenessLimits(**staleness.model_dump())
        )

    def age(self) -> int | None:
        """Seconds since the newest message the platform signed (None: never heard)."""
        return policy.data_age(int(self._clock.now().timestamp()), self._engine.last_contact)

    def stale(self, *, staff: bool = False) -> frozenset[str]:
        """Grant kinds whose data is older than its configured bound (for staff, or not)."""
        return policy.stale_kinds(self.age(), self.limits, staff=staff)

    def at_fault(self) -> bool:
        """True while no grant can open a door for want of data: none yet, or all stale."""
        return policy.at_fault(self._engine.version, self.stale())
