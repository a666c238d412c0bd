"""The one module that talks to the MQTT library (aiomqtt over paho-mqtt).

:class:`MqttLink` keeps one persistent session up: it connects over TLS
with the gateway's client certificate, fails over across broker URLs,
reconnects with exponential backoff and jitter, re-subscribes, sets the
retained presence (with an "offline" last will) and hands every message to
one callback.  paho's errors become :class:`LinkDownError`; nothing a message
contains can stop the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as mqtt

from gateway.clock import Clock
from gateway.config.models import Config
from gateway.errors import DoorgwError
from gateway.flags import Flag
from gateway.retry import backoff
from gateway.wire.protocol import StatusMsg, Topics

log = logging.getLogger(__name__)

#: Seconds to wait for the broker's CONNACK before trying again.
CONNECT_TIMEOUT = 10.0
#: Seconds a QoS 1 publish waits for the broker's PUBACK before it counts as lost.
PUBLISH_TIMEOUT = 30.0
#: TCP_NODELAY, for every MQTT socket doorgw opens.
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

OnMessage = Callable[[str, bytes], Awaitable[object]]
OnConnect = Callable[[], Awaitable[object]]


class LinkDownError(DoorgwError, ConnectionError):
    """The broker is not reachable right now."""


@dataclass(frozen=True)
class LinkSettings:
    """Everything :class:`MqttLink` needs; built from the ``[mqtt]`` config section."""

    urls: Sequence[str]
    client_id: str
    subscriptions: Sequence[str]
    #: The retained presence topic (None: a client with no presence and no will).
    will_topic: str | None
    will_payload: bytes
    #: The retained presence published on every connect, built at that moment.
    online_payload: Callable[[], bytes]
    #: The ``offline`` presence published on a clean stop (the will when unset).
    stopped_payload: Callable[[], bytes] | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    connect_timeout: float = CONNECT_TIMEOUT
    reconnect_min: float = 0.5
    reconnect_max: float = 60.0


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """A client TLS context verifying the broker against ``ca_file``, with our certificate."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise DoorgwError(f"cannot load the MQTT TLS files: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def subscription_refused(code: object) -> bool:
    """True for a SUBACK return code that grants nothing (0x80 and above)."""
    value = getattr(code, "value", code)
    return not isinstance(value, int) or value >= 0x80


def _honour_stop() -> None:
    """Raise CancelledError if this task was asked to stop and something swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def raise_if_cancelling(exc: BaseException) -> None:
    """Re-raise cancellation that the MQTT library turned into an error.

    aiomqtt can report a cancelled session as "disconnected during message
    iteration"; a reconnect loop that took that at face value would never
    stop, and shutdown would wait for it forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


#: paho's answers to a publish that mean the connection is gone.
_SESSION_LOST = frozenset(
    {mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST, mqtt.MQTT_ERR_QUEUE_SIZE}
)


def _end_session(client: aiomqtt.Client, reason: str) -> None:
    """Make ``client``'s message iteration end, as aiomqtt does when its socket fails."""
    disconnected = client._disconnected  # aiomqtt's own end-of-session signal
    if not disconnected.done():
        log.warning("MQTT session ended: %s", reason)
        disconnected.set_exception(aiomqtt.MqttError(reason))


def ignore_stale_socket_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    """Keep two known, harmless paho/aiomqtt leftovers out of the logs.

    paho asks, from aiomqtt's connect thread, for the socket to be watched;
    when the broker goes away at that moment the socket is closed before the
    event loop runs the request, and asyncio reports "Bad file descriptor"
    with a traceback.  And aiomqtt leaves the error of a session that ended
    badly in a future nobody reads, which asyncio reports when it is
    collected.  Nothing is lost either way: the link has seen the session
    end and is retrying.  Every other loop error goes to asyncio's handler.
    """

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        handle = repr(context.get("handle", ""))
        if (
            isinstance(exc, OSError)
            and exc.errno == errno.EBADF
            and ("add_writer" in handle or "add_reader" in handle)
        ):
            log.debug("ignored a socket watch for a closed MQTT socket: %s", handle)
            return
        if isinstance(exc, aiomqtt.MqttError) and "future" in context and "task" not in context:
            # aiomqtt's own "disconnected" future, which it leaves unread when a
            # session ends in an error: the link has already reported it.
            log.debug("ignored an unread aiomqtt future: %s", exc)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def presence(gateway_id: str, state: Literal["online", "offline"], clock: Clock) -> bytes:
    """A retained presence message, stamped with the gateway's clock now."""
    at = int(clock.now().timestamp())
    return StatusMsg(gateway=gateway_id, state=state, at=at).model_dump_json().encode()


def gateway_link_settings(config: Config, topics: Topics, clock: Clock) -> LinkSettings:
    """The MQTT session of this gateway: its identity, subscriptions and presence."""
    mqtt = config.mqtt
    assert mqtt is not None
    # The will has no time: the broker publishes it when it notices the loss.
    offline = StatusMsg(gateway=config.gateway.id, state="offline")
    gateway_id = config.gateway.id
    return LinkSettings(
        urls=mqtt.urls,
        client_id=config.gateway.id,
        subscriptions=topics.inbound(),
        will_topic=topics.status,
        will_payload=offline.model_dump_json().encode(),
        online_payload=lambda: presence(gateway_id, "online", clock),
        stopped_payload=lambda: presence(gateway_id, "offline", clock),
        ca_file=mqtt.ca_file,
        cert_file=mqtt.cert_file,
        key_file=mqtt.key_file,
        keepalive=mqtt.keepalive,
        connect_timeout=mqtt.connect_timeout,
        reconnect_min=mqtt.reconnect_min,
        reconnect_max=mqtt.reconnect_max,
    )


class MqttLink:
    """One gateway's MQTT session, kept up for as long as :meth:`run` runs."""

    def __init__(
        self,
        settings: LinkSettings,
        on_message: OnMessage,
        on_connect: OnConnect | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._on_message = on_message
        self._on_connect = on_connect
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._client: aiomqtt.Client | None = None
        #: Set while a session is up; ``disconnected`` is its opposite, to wait on.
        self.connected = asyncio.Event()
        self.disconnected = Flag()
        self.disconnected.set()
        #: How many sessions have started; a change means "resend what was in flight".
        self.sessions = 0
        #: The URL of the broker in use, for status reports.
        self.broker: str | None = None
        #: The outcomes of publishes waiting for the broker's confirmation.
        self._in_flight: set[asyncio.Future[bool]] = set()
        self._tls: ssl.SSLContext | None = None
        if any(u.startswith("mqtts://") for u in settings.urls):
            self._tls = tls_context(settings.ca_file, settings.cert_file, settings.key_file)

    async def publish_presence(self) -> None:
        """Publish the retained ``online`` presence again (it is sent on every connect).

        A broker we left may publish our last will once it notices, after we
        said ``online`` on another: sent again with every heartbeat, the
        retained presence is wrong for one heartbeat at most.
        """
        s = self.settings
        if s.will_topic is not None:
            await self.publish(s.will_topic, s.online_payload(), qos=1, retain=True)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        """Publish and, for QoS 1, wait for the broker's acknowledgement.

        Raises :class:`LinkDownError` when there is no session, when the
        session ends before the broker confirmed, or after
        :data:`PUBLISH_TIMEOUT` seconds without a confirmation.
        """
        client = self._client
        if client is None or not self.connected.is_set():
            raise LinkDownError("not connected to a broker")
        # paho's publish, and one future for its outcome.  aiomqtt's publish
        # would cost a task and a wait_for (another task) per message, and
        # racing it against the link going down two more: a dozen turns of the
        # loop for every event sent.
        info = client._client.publish(topic, payload, qos, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            if info.rc in _SESSION_LOST:
                # paho says the connection is gone while aiomqtt still iterates
                # messages (seen when two sessions' sockets swap file descriptors):
                # end the session, or every publish would fail at once, for ever.
                _end_session(client, f"publish failed: {mqtt.error_string(info.rc)}")
            raise LinkDownError(f"publish failed: {mqtt.error_string(info.rc)}")
        if info.is_published():
            return
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # aiomqtt's on_publish callback sets what is registered under the message
        # id; its end-of-session future is set as soon as the socket fails, while
        # the session may still be busy in on_connect and not yet have seen it.
        client._pending_publishes[info.mid] = _Confirmation(outcome)
        lost = client._disconnected
        ended = functools.partial(_settle, outcome, False)
        lost.add_done_callback(ended)
        self._in_flight.add(outcome)  # settled when the session ends, however it ends
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                confirmed = await outcome
        except TimeoutError:
            raise LinkDownError(
                f"the broker did not confirm a publish within {PUBLISH_TIMEOUT:g} s"
            ) from None
        finally:
            lost.remove_done_callback(ended)
            self._in_flight.discard(outcome)
            client._pending_publishes.pop(info.mid, None)
        if not confirmed:
            raise LinkDownError("the broker went away during a publish")

    async def run(self) -> None:
        """Connect, serve and reconnect until cancelled.

        After a session ends, the broker it was on is tried first (after
        ``reconnect_min``); a broker that fails is followed at once by the
        next in the list, and the backoff is paid once per round of the list.
        """
        attempt = 0
        urls = list(self.settings.urls)
        first = 0  # the index of the last URL a session came up on
        this = asyncio.current_task()
        while True:
            # A stop request that something below swallowed (asyncio.wait_for can,
            # in Python 3.11, when its future completes as the cancel arrives) is
            # still a stop: never reconnect once this task has been asked to end.
            if this is not None and this.cancelling():
                raise asyncio.CancelledError
            index = (first + attempt) % len(urls)
            url = urls[index]
            sessions, came_up = self.sessions, False
            try:
                await self._session(url)
            except aiomqtt.MqttError as exc:
                raise_if_cancelling(exc)
                log.warning("MQTT %s: %s", url, exc)
            finally:
                # A session that was up resets the backoff, however it ended (a
                # broker restart ends it with an error): else every restart would
                # double the wait, and a flapping broker would leave the link
                # waiting up to reconnect_max between short sessions.
                came_up = self.sessions != sessions
                if came_up:
                    attempt, first = 0, index
                self.connected.clear()
                self.disconnected.set()
                for outcome in list(self._in_flight):
                    _settle(outcome, False)  # what was in flight may be lost: resent
                self._client = None
                self.broker = None
            if this is not None and this.cancelling():
                raise asyncio.CancelledError
            if not came_up:
                attempt += 1
                if attempt % len(urls):
                    continue  # the next broker of this round, now
            rounds = attempt // len(urls)
            await asyncio.sleep(
                backoff(
                    max(0, rounds - 1),
                    self.settings.reconnect_min,
                    self.settings.reconnect_max,
                    self._rng,
                )
            )

    async def _session(self, url: str) -> None:
        parts = urlsplit(url)
        secure = parts.scheme == "mqtts"
        s = self.settings
        client = aiomqtt.Client(
            parts.hostname or "localhost",
            parts.port or (8883 if secure else 1883),
            identifier=s.client_id,
            clean_session=False,
            keepalive=s.keepalive,
            tls_context=self._tls if secure else None,
            will=(
                aiomqtt.Will(s.will_topic, s.will_payload, qos=1, retain=True)
                if s.will_topic is not None
                else None
            ),
            protocol=aiomqtt.ProtocolVersion.V311,
            timeout=s.connect_timeout,
            max_inflight_messages=64,
            # paho leaves Nagle on: a revocation would wait up to ~40 ms behind an ack.
            socket_options=[NO_DELAY],
            max_queued_outgoing_messages=10_000,
            queue_type=_Inbox,
        )
        async with contextlib.AsyncExitStack() as stack:
            # aiomqtt waits for the CONNACK without a limit, and a broker that goes
            # away after accepting the TCP connection never sends one: without
            # this bound the link would wait for ever (seen with a restarting broker).
            try:
                async with asyncio.timeout(s.connect_timeout):
                    await stack.enter_async_context(client)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    client._client.disconnect()  # paho's socket, which aiomqtt still holds
                raise aiomqtt.MqttError(
                    f"no answer to CONNECT within {s.connect_timeout:g} s"
                ) from None
            # Each of these steps ends in aiomqtt's asyncio.wait_for, which in
            # Python 3.11 can swallow a stop request that arrives as it completes;
            # the session would then wait for messages forever.
            _honour_stop()
            self._client = client
            self.broker = url
            granted = await client.subscribe([(topic, 1) for topic in s.subscriptions])
            _honour_stop()
            # A refused subscription (0x80: an ACL, or a cluster electing a
            # leader) would leave the gateway connected but deaf on that topic.
            refused = [
                t
                for t, code in zip(s.subscriptions, granted, strict=False)
                if subscription_refused(code)
            ]
            if refused or len(granted) != len(s.subscriptions):
                raise aiomqtt.MqttError(
                    f"the broker refused to subscribe us to {', '.join(refused) or 'some topics'}"
                )
            if s.will_topic is not None:
                await client.publish(s.will_topic, s.online_payload(), qos=1, retain=True)
            _honour_stop()
            self.sessions += 1
            self.connected.set()
            self.disconnected.clear()
            log.info("MQTT connected to %s", url)
            try:
                if self._on_connect is not None:
                    await self._on_connect()
                    _honour_stop()
                await self._serve(client)
            except asyncio.CancelledError:
                # A clean stop sends no last will, so say "offline" ourselves.
                self.connected.clear()
                if s.will_topic is None:
                    raise
                # Bounded: a stop must be done within 2 s in every phase.
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(1):
                        stopped = s.stopped_payload() if s.stopped_payload else s.will_payload
                        await client.publish(s.will_topic, stopped, qos=1, retain=True)
                raise

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Hand every message of the session to the callback, in order, until the
        session ends (:class:`aiomqtt.MqttError`, as aiomqtt's own iteration).

        aiomqtt's message iterator starts a task and an :func:`asyncio.wait`
        for every message; this waits on the queue's own flag instead.
        """
        inbox = client._queue
        assert isinstance(inbox, _Inbox), "the session is made with queue_type=_Inbox"
        lost = client._disconnected
        wake = inbox.arrived
        lost.add_done_callback(lambda _: wake.set())
        while True:
            while not inbox.empty():
                message = inbox.get_nowait()
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                try:
                    await self._on_message(str(message.topic), data)
                except Exception as exc:
                    # An error raised while being cancelled is the cancellation.
                    raise_if_cancelling(exc)
                    # A bug in a handler must not take the link down with it.
                    log.exception("handling a message on %s failed", message.topic)
            if lost.done():
                cause = None if lost.cancelled() else lost.exception()
                raise aiomqtt.MqttError("disconnected during message iteration") from cause
            wake.clear()  # cleared before looking: a message put after the look wakes us
            if inbox.empty() and not lost.done():
                await wake.wait()


class _Inbox(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's queue of received messages, with a flag set by every put."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        #: Set whenever a message is put; the session's reader clears it.
        self.arrived = asyncio.Event()

    def put_nowait(self, item: aiomqtt.Message) -> None:
        """Queue ``item`` (aiomqtt's on_message callback) and wake the reader."""
        super().put_nowait(item)
        self.arrived.set()


class _Confirmation(asyncio.Event):
    """What aiomqtt's on_publish callback sets: here, a publish's outcome."""

    def __init__(self, outcome: asyncio.Future[bool]) -> None:
        super().__init__()
        self._outcome = outcome

    def set(self) -> None:
        """The broker confirmed the message (or paho wrote a QoS 0 one)."""
        super().set()
        _settle(self._outcome, True)


def _settle(outcome: asyncio.Future[bool], confirmed: bool, *_: object) -> None:
    """Give a publish its outcome, unless it has one (or its waiter gave up)."""
    if not outcome.done():
        outcome.set_result(confirmed)
