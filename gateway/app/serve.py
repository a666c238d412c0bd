"""One gateway run until SIGTERM or SIGINT, telling systemd how it goes."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from gateway.app import memory
from gateway.app.gateway import Gateway
from gateway.clock import Clock
from gateway.config.models import Config
from gateway.hw.pins import PinFactory
from gateway.net.mqtt import ignore_stale_socket_callbacks
from gateway.net.sdnotify import Notifier

log = logging.getLogger(__name__)


async def serve(
    config: Config,
    clock: Clock,
    *,
    pin_factory: PinFactory | None = None,
    notifier: Notifier | None = None,
    started: Callable[[Gateway], object] | None = None,
) -> None:
    """Run one gateway until SIGTERM or SIGINT, telling systemd how it goes.

    systemd hears READY=1 once the cache, the outbox and the hardware are
    open (doors locked), then watchdog pings while every essential service
    runs (:meth:`~gateway.app.supervisor.Supervisor.down`), then STOPPING=1.
    An essential service that cannot come back raises
    :class:`~gateway.errors.ServiceFailedError` from here.  Stopping closes
    everything in reverse: readers and tasks stop, locks go to their safe
    state, the MQTT link says "offline"; every event is already in the
    outbox file.  ``started`` is called with the running gateway (tests,
    the simulator).
    """
    notifier = notifier or Notifier()
    loop = asyncio.get_running_loop()
    ignore_stale_socket_callbacks(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Gateway(config, clock, pin_factory=pin_factory).running() as gw:
            log.info("gateway %s running", config.gateway.id)
            doors = len(gw.station.doors)
            notifier.ready(
                f"running: {doors} door{'' if doors == 1 else 's'}, "
                f"dataset version {gw.engine.version}"
            )
            # Real time, not the injected clock: systemd's watchdog runs on real time.
            status = f"running: {doors} door{'' if doors == 1 else 's'}"
            watchdog = asyncio.create_task(
                notifier.watchdog(healthy=_WatchdogGate(gw, notifier, status)), name="watchdog"
            )
            # Up: what exists now lives as long as the process; a full collection
            # on the loop (a tap waiting behind it) need not walk it again.
            frozen = memory.freeze_startup()
            log.debug("%d start-up objects exempt from cycle collection", frozen)
            if started is not None:
                started(gw)
            stopping = asyncio.create_task(stop.wait(), name="stop-request")
            assert gw.task is not None
            try:
                # The services end by themselves only when one of them cannot come
                # back: leaving here raises that failure, for a non-zero exit.
                await asyncio.wait({stopping, gw.task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                log.info("stopping")
                notifier.stopping()
                watchdog.cancel()
    finally:
        memory.thaw()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        notifier.close()


class _WatchdogGate:
    """Whether to feed the watchdog: every essential service is running.

    systemd's status line says which are not, while they are not.
    """

    def __init__(self, gw: Gateway, notifier: Notifier, status: str) -> None:
        self._gw, self._notifier, self._status = gw, notifier, status
        self._was: list[str] = []

    def __call__(self) -> bool:
        down = self._gw.supervisor.down()
        if down != self._was:
            self._was = down
            text = f"degraded: {', '.join(down)} not running" if down else self._status
            self._notifier.notify(status=text)
        return not down
