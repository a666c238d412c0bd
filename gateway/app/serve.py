"""One gateway run until SIGTERM or SIGINT, telling systemd how it goes."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from gateway.app.gateway import Gateway
from gateway.clock import Clock
from gateway.config.models import Config
from gateway.hw.pins import PinFactory
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
    open (doors locked), then watchdog pings from this event loop, then
    STOPPING=1.  Stopping closes everything in reverse: readers and tasks
    stop, locks go to their safe state, the MQTT link says "offline"; every
    event is already in the outbox file.  ``started`` is called with the
    running gateway (tests, the simulator).
    """
    notifier = notifier or Notifier()
    loop = asyncio.get_running_loop()
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
            watchdog = asyncio.create_task(notifier.watchdog(), name="watchdog")
            if started is not None:
                started(gw)
            try:
                await stop.wait()
            finally:
                log.info("stopping")
                notifier.stopping()
                watchdog.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        notifier.close()
