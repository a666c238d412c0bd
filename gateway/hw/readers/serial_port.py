"""What every serial reader shares: open by URL, run a session, reopen with backoff.

The port is opened with :func:`serial.serial_for_url`, so a device path, a
pty from the simulator or ``loop://`` all work.  On a POSIX port (a device or
a pty) reads and writes are made in the event loop's thread, which waits for
the port's descriptor to be readable: a read reaches the loop the moment its
bytes arrive, with no thread to wake and hand it back.  Everything else
(opening, closing, and every call on ports without a descriptor, such as
``loop://``) runs on the reader's own worker thread.  When a session fails
(the port vanished, the device stopped answering) the port is closed,
``reader_offline`` is recorded if the reader had been online, and it is
reopened after an exponential backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import serial

from gateway.clock import Clock
from gateway.errors import DoorgwError
from gateway.events import Record
from gateway.retry import backoff

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def read_some(port: serial.SerialBase, limit: int) -> bytes:
    """What the device has sent, as soon as it has sent anything: up to ``limit``
    bytes, waiting at most the port's timeout for the first (in a worker thread).

    Not ``port.read(limit)``: that waits for ``limit`` bytes or the whole
    timeout, so a short answer would wait out the timeout before anyone saw it.
    """
    data = bytes(port.read(max(1, min(limit, port.in_waiting))))
    more = min(limit - len(data), port.in_waiting) if data else 0
    return data + bytes(port.read(more)) if more > 0 else data


class SessionError(DoorgwError):
    """A session with the device failed; the port is reopened."""


def loop_fd(port: serial.SerialBase) -> int | None:
    """The descriptor of a port the event loop can wait on: an open POSIX port in
    non-blocking mode, as pyserial opens devices and ptys; None for the rest
    (``loop://``, network ports), whose calls go to the reader's thread."""
    try:
        fd = port.fileno()
    except (AttributeError, OSError, ValueError, serial.SerialException):
        return None
    if not isinstance(fd, int) or os.get_blocking(fd):
        return None  # a read could block the loop: leave it to the thread
    return fd


def _read_now(fd: int, limit: int) -> bytes:
    """What the port holds now (empty: nothing yet; a raw tty reads nothing
    rather than failing with EAGAIN)."""
    try:
        return os.read(fd, limit)
    except (BlockingIOError, InterruptedError):
        return b""


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class SerialPortTask:
    """Base of serial readers: subclasses implement :meth:`_session`."""

    def __init__(
        self,
        reader_id: str,
        url: str,
        *,
        record: Record,
        clock: Clock,
        baudrate: int,
        read_timeout: float,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.reader_id = reader_id
        self.url = url
        self.baudrate = baudrate
        self.read_timeout = read_timeout
        self._record = record
        self._clock = clock
        self._retry = (retry_min, retry_max)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        #: True while a session with the device is up.
        self.online = False
        self._thread: ThreadPoolExecutor | None = None
        #: The open port and its descriptor for the loop (:func:`loop_fd`), found once.
        self._fd: tuple[serial.SerialBase, int | None] | None = None

    async def _blocking(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking call on this reader's own thread.

        Not the loop's shared pool: readers block there for up to their read
        timeout, and a card must never wait behind another reader's read, the
        outbox's sync or a port being closed.  One thread also keeps a port's
        close from running while a read on it is under way.
        """
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"reader-{self.reader_id}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(call, *args))

    async def _read(
        self, port: serial.SerialBase, limit: int, *, until_data: bool = False
    ) -> bytes:
        """What the device has sent, as soon as it has sent anything (see
        :func:`read_some`): up to ``limit`` bytes, or nothing after the port's
        timeout (real time).

        ``until_data``: on a port the loop waits on, no timeout: the read waits
        for the device however long that takes (a device that goes away still
        ends it), so an idle reader costs no wakeups.  On the reader's thread
        the port's timeout applies anyway: a close must not wait on a read.
        """
        fd = self._loop_fd(port)
        if fd is None:
            return await self._blocking(read_some, port, limit)
        data = _read_now(fd, limit)
        if data:
            return data
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            async with asyncio.timeout(None if until_data else port.timeout):
                await ready
        except TimeoutError:
            return b""
        finally:
            loop.remove_reader(fd)
        data = _read_now(fd, limit)
        if not data:
            # Readable yet nothing to read: the device is gone (as pyserial says).
            raise SessionError("the port reported data but had none (device disconnected?)")
        return data

    def _loop_fd(self, port: serial.SerialBase) -> int | None:
        if self._fd is None or self._fd[0] is not port:
            self._fd = (port, loop_fd(port))
        return self._fd[1]

    async def _write(self, port: serial.SerialBase, data: bytes) -> None:
        """Send ``data``: at once where the port takes it all without waiting
        (a few bytes to a device or pty always fit), else on the reader's thread."""
        fd = self._loop_fd(port)
        if fd is not None:
            try:
                sent = os.write(fd, data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            data = data[sent:]
        if data:
            await self._blocking(port.write, data)

    async def run(self) -> None:
        """Open, run a session, and reopen after failures, until cancelled."""
        try:
            await self._run()
        finally:
            if self._thread is not None:
                self._thread.shutdown(wait=False)  # what is queued (a close) still runs
                self._thread = None

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                port = await self._blocking(
                    functools.partial(
                        serial.serial_for_url,
                        self.url,
                        baudrate=self.baudrate,
                        timeout=self.read_timeout,
                    )
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                log.debug("reader %s: cannot open %s: %s", self.reader_id, self.url, exc)
            else:
                try:
                    await self._session(port)
                except (serial.SerialException, OSError, SessionError) as exc:
                    log.warning("reader %s: %s", self.reader_id, exc)
                finally:
                    await self._blocking(port.close)
                if self.online:
                    attempt = 0  # it worked for a while: retry quickly
                await self._set_online(False)
            await self._clock.sleep(backoff(attempt, *self._retry, self._rng))
            attempt += 1

    async def _session(self, port: serial.SerialBase) -> None:
        raise NotImplementedError

    @staticmethod
    def _link_time() -> float:
        """Seconds on the clock for timeouts of the link itself (a device's answer,
        a secure channel's handshake): real time, the event loop's.  The device
        answers in real time whatever the injected clock says, so a simulated
        clock jumping ahead must not fail an exchange that is still under way.
        Polling intervals and backoff stay on the injected clock."""
        return asyncio.get_running_loop().time()

    async def _set_online(self, online: bool) -> None:
        if online != self.online:
            self.online = online
            await self._record(
                "reader_online" if online else "reader_offline",
                {"reader": self.reader_id, "port": self.url},
            )
