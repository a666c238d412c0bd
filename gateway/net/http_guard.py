"""What stands between the network and the staff API, so that it cannot hurt the doors.

The API shares the event loop that decides taps and drives relays, so
everything a client can make it hold is bounded here, before FastAPI sees
a byte:

- :class:`Listener` accepts connections itself, at most
  ``max_connections`` at once.  At the limit the connection that has waited
  longest without a request in progress is dropped to make room, so
  half-open connections cannot keep staff out; only when every connection is
  busy is the newcomer refused.  Accept errors (out of file descriptors,
  say) are logged once per :data:`LOG_INTERVAL` with a count, never per try.
- :class:`GuardedH11Protocol` gives each request :data:`REQUEST_TIMEOUT`
  from its first byte to its answer (slow headers, slow bodies and readers
  that never read the answer are cut off), closes idle kept-alive
  connections after :data:`IDLE_TIMEOUT`, and sends answers without Nagle's
  delay (``TCP_NODELAY``).
- :class:`StaffGate`, the outermost ASGI layer, checks the Host header and
  then the staff token, from the headers alone, before any body is read; a
  body is accepted only with a token, at most :data:`MAX_BODY` bytes, and
  only as JSON.

Together these cap the API's file descriptors at ``max_connections``, its
memory at a few KiB per connection, and its CPU at what answering small
requests costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.net.staff_auth import Refusal

log = logging.getLogger(__name__)

#: Bytes of request body at most (staff actions send a few dozen).
MAX_BODY = 8 * 1024
#: Bytes of request line and headers at most.
MAX_HEADERS = 8 * 1024
#: Seconds from a request's first byte to the end of its answer.
REQUEST_TIMEOUT = 10.0
#: Seconds a kept-alive connection may sit with no request.
IDLE_TIMEOUT = 5.0
#: Seconds a TLS handshake may take.
HANDSHAKE_TIMEOUT = 5.0
#: Seconds between two log lines about the same kind of trouble.
LOG_INTERVAL = 10.0

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class OncePerInterval(logging.Filter):
    """Lets through one record per message template per :data:`LOG_INTERVAL`.

    Installed on uvicorn's logger: a client sending garbage as fast as it
    can gets one "Invalid HTTP request" line per interval, not one per try.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:200]
        last = self._last.get(key)
        if last is not None and record.created - last < LOG_INTERVAL:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._last) > 256:  # templates, not values: a handful in practice
            self._last.clear()
        self._last[key] = record.created
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this not logged)"
        return True


class _Slot:
    """One accepted connection's place in the :class:`Listener`'s count."""

    __slots__ = ("drop", "released")

    def __init__(self, drop: Callable[[], None]) -> None:
        self.drop = drop
        self.released = False


@dataclass
class ConnectionCounts:
    """The API's connections, as ``GET /api/status`` reports them under ``api``."""

    #: The most held at once.
    max_connections: int
    #: Accepted and not yet closed, TLS handshakes included.
    open: int = 0
    #: Closed at once because every place was busy with a request.
    refused: int = 0
    #: Dropped, the longest idle first, to make room for a newer one.
    dropped_idle: int = 0


class Listener:
    """Accepts connections on ``sock`` for ``protocol_factory``, a bounded number at once."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[Callable[[bool], None], Callable[[], None]], asyncio.Protocol],
        *,
        counts: ConnectionCounts,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._ssl = ssl_context
        self.counts = counts
        # Connections with no request in progress, oldest first: the ones to drop.
        self._idle: dict[_Slot, None] = {}
        self._handshakes: set[asyncio.Task[None]] = set()
        self._accept_errors = 0
        self._last_error_log: float | None = None

    async def serve(self) -> None:
        """Accept until cancelled."""
        loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        self._sock.listen(min(socket.SOMAXCONN, 128))
        try:
            while True:
                try:
                    conn, _ = await loop.sock_accept(self._sock)
                except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: wait, never spin
                    self._accept_failed(loop.time(), exc)
                    await asyncio.sleep(0.1)
                    continue
                self._admit(loop, conn)
        finally:
            for task in list(self._handshakes):
                task.cancel()

    def _admit(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        counts = self.counts
        if counts.open >= counts.max_connections:
            if not self._idle:
                counts.refused += 1
                conn.close()
                return
            oldest = next(iter(self._idle))
            counts.dropped_idle += 1
            oldest.drop()
            self._release(oldest)  # its place is the newcomer's now
        with contextlib.suppress(OSError):  # answers go out at once, not after 40 ms
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        counts.open += 1
        task = loop.create_task(self._connect(loop, conn), name="api-connection")
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _connect(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        me = asyncio.current_task()
        assert me is not None  # a task of its own, made by _admit

        def cancel() -> None:
            me.cancel()

        slot = _Slot(cancel)
        self._idle[slot] = None  # a handshake in progress may be dropped, too

        def make() -> asyncio.Protocol:
            return self._factory(lambda busy: self._mark(slot, busy), lambda: self._release(slot))

        try:
            transport, _ = await loop.connect_accepted_socket(
                make,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._ssl else None,
            )
            slot.drop = transport.abort
        except (OSError, asyncio.CancelledError, ssl.SSLError, TimeoutError):
            conn.close()
            self._release(slot)

    def _mark(self, slot: _Slot, busy: bool) -> None:
        if slot.released:
            return
        if busy:
            self._idle.pop(slot, None)
        elif slot not in self._idle:
            self._idle[slot] = None  # newest last

    def _release(self, slot: _Slot) -> None:
        if not slot.released:
            slot.released = True
            self._idle.pop(slot, None)
            self.counts.open -= 1

    def _accept_failed(self, now: float, exc: OSError) -> None:
        self._accept_errors += 1
        if self._last_error_log is None or now - self._last_error_log >= LOG_INTERVAL:
            log.error(
                "staff API cannot accept connections: %s (%d time(s) since the last report)",
                exc,
                self._accept_errors,
            )
            self._last_error_log, self._accept_errors = now, 0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline per request and a place in a Listener."""

    # Set by the factory (uvicorn builds the protocol with its own arguments).
    mark: Callable[[bool], None]
    release: Callable[[], None]
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is cut off too

    def data_received(self, data: bytes) -> None:
        if self._deadline is None:
            self._arm()
        super().data_received(data)
        self.mark(self.cycle is not None and not self.cycle.response_complete)

    def on_response_complete(self) -> None:
        self._disarm()
        super().on_response_complete()
        self.mark(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self.release()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self.transport.abort()  # abort, not close: a client that reads nothing gets nothing


class StaffGate:
    """The outermost ASGI layer: Host, then the token, then a small JSON body, then the app.

    ``public`` paths need no token.  Every answer, the gate's own included,
    carries ``headers``.  The token's name is passed on as ``scope["state"]["staff"]``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        public: Iterable[str],
        check: Callable[[str, str, str], Awaitable[str | Refusal]],
        headers: dict[str, str],
    ) -> None:
        self.app = app
        self.public = frozenset(public)
        self.check = check
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no websockets, no lifespan here
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        def refuse(status: int, detail: str, extra: dict[str, str] | None = None) -> Any:
            return _answer(send_with_headers, status, {"detail": detail}, extra or {})

        # DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends
        # Host: evil.example.  Only IP literals and localhost name this gateway.
        if not is_own_host(headers.get(b"host", b"").decode("latin-1")):
            await refuse(421, "unknown Host")
            return
        path = scope["path"]
        if path not in self.public:
            client = scope["client"][0] if scope.get("client") else "unknown"
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            who = await self.check(authorization, client, path)
            if isinstance(who, Refusal):
                await refuse(who.status, who.detail, who.headers)
                return
            scope.setdefault("state", {})["staff"] = who
        body_expected = scope["method"] in _BODY_METHODS or (
            b"content-length" in headers or b"transfer-encoding" in headers
        )
        if body_expected:
            body = await _read_body(headers, receive)
            if body is None:
                await refuse(413, f"request bodies are at most {MAX_BODY} bytes")
                return
            if body:
                kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
                if kind != b"application/json":
                    await refuse(415, "request bodies must be application/json")
                    return
                if not _is_json(body):
                    await refuse(400, "the request body is not JSON")
                    return
            receive = _replay(body, receive)
        await self.app(scope, receive, send_with_headers)


async def _read_body(headers: dict[bytes, bytes], receive: Receive) -> bytes | None:
    """The whole body, or None when it is (or says it is) larger than :data:`MAX_BODY`."""
    declared = headers.get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away: the app sees an empty body and its disconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        return False
    return True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, status: int, body: Any, headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def is_own_host(host: str) -> bool:
    """Whether a Host header names this gateway: an IP literal or localhost, any port."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
