"""Supervision: every long-running service restarted when it fails, or the process ends.

A gateway that stays up doing nothing is the worst failure it can have:
doors stay locked for everyone, revocations are not applied, nothing is
reported, and systemd sees a healthy process.  So every service runs under
:class:`Supervisor`:

* a service that raises is recorded (``service_failed``, with its name and
  the cause) and started again after a backoff that doubles from
  :data:`RESTART_MIN` to :data:`RESTART_MAX` seconds (reset once it has run
  :data:`STABLE_AFTER` seconds);
* an *essential* service (doors, the link, the uplink, sync, modes) that
  fails more than :data:`MAX_FAILURES` times within :data:`FAILURE_WINDOW`
  seconds cannot come back by itself: :meth:`Supervisor.run` raises
  :class:`~gateway.errors.ServiceFailedError`, and the daemon exits
  non-zero for systemd to restart it;
* optional services (the staff API, a reader whose device is gone) are
  retried for as long as the gateway runs: a door whose card reader is
  broken must not take the other doors down with it.

:meth:`Supervisor.down` names the essential services not running right now,
and the parts whose progress probe is not answering (:meth:`Supervisor.watch`:
the event outbox's database thread); the systemd watchdog is fed only while
it is empty (:mod:`gateway.app.serve`).
Backoffs run on real time, like the watchdog they are measured against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, NamedTuple

from gateway.errors import ServiceFailedError
from gateway.events import Record

log = logging.getLogger(__name__)

#: Seconds before the first restart of a failed service; doubles per failure.
RESTART_MIN = 1.0
#: The longest wait (seconds) before a restart.
RESTART_MAX = 30.0
#: A service that ran this long (seconds) before failing starts its backoff afresh.
STABLE_AFTER = 60.0
#: An essential service failing more often than this within FAILURE_WINDOW ends the process.
MAX_FAILURES = 5
FAILURE_WINDOW = 300.0
#: Seconds between progress probes, and how long one may take before its part counts as stuck.
PROBE_EVERY = 5.0
PROBE_TIMEOUT = 10.0


class Service(NamedTuple):
    """One long-running service: its task name, what runs it, and whether the gateway
    can go on without it."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    essential: bool = True


class Supervisor:
    """Runs services, restarting those that fail; knows which are down."""

    def __init__(self, record: Record) -> None:
        self._record = record
        self._down: set[str] = set()
        self._essential: set[str] = set()
        self._probes: dict[str, Callable[[], Awaitable[object]]] = {}
        #: Failures per service since the gateway started, for status and metrics.
        self.failures: dict[str, int] = {}

    def down(self) -> list[str]:
        """The essential services not running now (failed, awaiting restart), and the
        parts whose progress probe has not answered (:meth:`watch`)."""
        return sorted(self._down & (self._essential | set(self._probes)))

    def watch(self, name: str, probe: Callable[[], Awaitable[object]]) -> None:
        """Probe a part's progress every :data:`PROBE_EVERY` seconds while running.

        A running task can still be stuck: a database thread waiting on a
        disk that no longer answers leaves every tap waiting too.  ``probe``
        is a trivial request through that part; while one has not finished
        within :data:`PROBE_TIMEOUT`, ``name`` counts as down.
        """
        self._probes[name] = probe

    async def run(self, services: Iterable[Service]) -> None:
        """Run every service until cancelled, or until an essential one cannot come back."""
        try:
            async with asyncio.TaskGroup() as tasks:
                for service in services:
                    if service.essential:
                        self._essential.add(service.name)
                    tasks.create_task(self._keep(service), name=service.name)
                for name, probe in self._probes.items():
                    tasks.create_task(self._probe(name, probe), name=f"probe-{name}")
        except* ServiceFailedError as group:
            raise group.exceptions[0] from None

    async def _keep(self, service: Service) -> None:
        recent: deque[float] = deque()
        delay = RESTART_MIN
        while True:
            started = time.monotonic()
            try:
                await service.run()
                return  # a service with nothing (more) to do
            except (asyncio.CancelledError, ServiceFailedError):
                raise  # a stop, or a service saying the gateway cannot go on
            except Exception as exc:  # noqa: BLE001 - the point: no failure goes unseen
                error = exc
            now = time.monotonic()
            cause = f"{type(error).__name__}: {error}"[:300]
            if now - started >= STABLE_AFTER:
                delay = RESTART_MIN
            recent.append(now)
            while recent and recent[0] < now - FAILURE_WINDOW:
                recent.popleft()
            self.failures[service.name] = self.failures.get(service.name, 0) + 1
            self._down.add(service.name)
            give_up = service.essential and len(recent) > MAX_FAILURES
            log.error(
                "service %s failed (%s); %s",
                service.name,
                cause,
                "giving up" if give_up else f"restarting in {delay:g} s",
                exc_info=None if give_up else error,
            )
            await self._tell(service.name, cause, None if give_up else delay)
            if give_up:
                raise ServiceFailedError(
                    f"service {service.name} failed {len(recent)} times in "
                    f"{FAILURE_WINDOW:g} s; last: {cause}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)
            self._down.discard(service.name)

    async def _probe(self, name: str, probe: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await probe()
            except TimeoutError:
                if name not in self._down:
                    log.error("%s has not answered for %g s: counted as down", name, PROBE_TIMEOUT)
                self._down.add(name)
            except Exception as exc:  # noqa: BLE001 - an answer, if an unhappy one: not stuck
                log.debug("probe of %s: %s", name, exc)
                self._down.discard(name)
            else:
                self._down.discard(name)
            await asyncio.sleep(PROBE_EVERY)

    async def _tell(self, name: str, cause: str, restart_in: float | None) -> None:
        try:
            await self._record(
                "service_failed", {"service": name, "error": cause, "restart_in_s": restart_in}
            )
        except Exception:  # reporting a failure must not become another one
            log.exception("could not record the failure of service %s", name)
