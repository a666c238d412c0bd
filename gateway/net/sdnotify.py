"""systemd's notify protocol: readiness, status text and the watchdog.

Under a ``Type=notify`` unit systemd passes the path of a datagram socket in
``$NOTIFY_SOCKET`` and, with ``WatchdogSec=``, the watchdog period in
``$WATCHDOG_USEC``.  The protocol is a few ``KEY=value`` lines per datagram
(sd_notify(3)), so it is written here rather than pulled in as a library.
Outside systemd every call is a no-op.

The watchdog is fed by a task on the gateway's event loop, and only while
the gateway says it is healthy: if the loop hangs (a blocking call, a
deadlock) or an essential service is down, the pings stop and systemd
restarts the service, which is the point.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd, if it asked for them."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: a leading NUL byte on Linux.
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._socket: socket.socket | None = None
        #: Seconds between watchdog pings (half systemd's period), or None: no watchdog.
        self.watchdog_interval: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if self._address and usec and (pid is None or pid == str(os.getpid())):
            try:
                self.watchdog_interval = max(int(usec), 1) / 2e6
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not a whole number", usec)

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return bool(self._address)

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (``ready=1`` becomes ``READY=1``); False if not sent."""
        if not self._address:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            # systemd gone or the socket unreachable: nothing to tell, nothing to fail.
            log.debug("sd_notify %s failed: %s", message, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        """The service is up: systemd considers it started from here."""
        self.notify(ready=1, status=status)

    def stopping(self) -> None:
        """The service is shutting down."""
        self.notify(stopping=1, status="stopping")

    async def watchdog(self, healthy: Callable[[], bool] | None = None) -> None:
        """Ping the watchdog from the event loop until cancelled (no-op without one).

        ``healthy`` is asked before every ping: while it says False no ping
        goes out, and systemd restarts the service once its period passes.
        """
        if self.watchdog_interval is None:
            return
        while True:
            if healthy is None or healthy():
                self.notify(watchdog=1)
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
