"""The local staff API, the status page and /metrics: FastAPI on uvicorn, in the daemon's loop.

Everything runs on the gateway's own event loop, so a request sees the same
state the doors do, with no locking.  The API sees the gateway only through
:class:`~gateway.net.desk.StaffDesk`, the narrow protocol, which the running
gateway implements (:class:`gateway.app.staff.GatewayDesk`).  It listens on loopback unless the
config says otherwise (``[api] listen``), with TLS when given a certificate.

Staff authenticate with bearer tokens (:mod:`gateway.net.staff_tokens`): a
missing or wrong token gets 401, and a client address that keeps getting
them is refused with 429 for a while.  Every staff action is an event in
the outbox (``staff_action``), naming the token that did it.  docs/api.md
describes the endpoints; the OpenAPI document is served at /openapi.json.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import itertools
import logging
import math
import re
import resource
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import BaseModel, Field

from gateway import __version__
from gateway.config.models import ApiSection
from gateway.net.api_models import (
    Enrolled,
    EnrolStarted,
    EventsPage,
    Live,
    Lockdown,
    MemberAccess,
    Problem,
    Ready,
    Status,
    Unlocked,
)
from gateway.net.desk import StaffDesk, UnknownError
from gateway.net.http_guard import (
    IDLE_TIMEOUT,
    MAX_HEADERS,
    ConnectionCounts,
    GuardedH11Protocol,
    Listener,
    OncePerInterval,
    StaffGate,
)
from gateway.net.staff_auth import StaffAuth
from gateway.net.staff_tokens import TokenStore

log = logging.getLogger(__name__)

#: Seconds between attempts to listen again when the port cannot be had.
RETRY_LISTEN = 30.0
#: File descriptors kept for the doors, readers, MQTT and the stores, whatever the API holds.
FD_RESERVE = 200
#: Paths anyone may fetch; every other path needs a staff token before anything else.
PUBLIC_PATHS = ("/", "/health/live", "/health/ready", "/openapi.json")


class UnlockBody(BaseModel):
    """How long to unlock for (default: the door's own unlock time)."""

    seconds: float | None = Field(default=None, gt=0, le=3600)


class LockdownBody(BaseModel):
    """Lockdown on or off."""

    on: bool


class EnrolBody(BaseModel):
    """How long to wait for the card (seconds)."""

    seconds: float = Field(default=60, gt=0, le=600)


#: The errors every staff route may answer before it is reached (docs/api.md).
STAFF_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no valid staff token"},
    429: {"model": Problem, "description": "too many wrong tokens from this address"},
}
NOT_DRIVEN = "a door not in this gateway's config, or one without a lock relay (not_driven)"


async def _staff(request: Request) -> str:
    """The name of the staff token presented.

    :class:`~gateway.net.http_guard.StaffGate` checked it before the
    request got here (before its body was read); this only passes it on.
    A coroutine on purpose: FastAPI runs a plain function dependency on a
    worker thread, a thread hop per request for reading one attribute.
    """
    return str(request.state.staff)


#: A staff endpoint's parameter: the name of the token that called it.
Staff = Annotated[str, Depends(_staff)]


def create_app(desk: StaffDesk, tokens: TokenStore, api: ApiSection) -> FastAPI:
    """The API of one running gateway."""
    app = FastAPI(
        title="doorgw local API",
        version=__version__,
        description="Health, status, recent events and staff actions of one doorgw gateway.",
        # The interactive docs load scripts from a CDN into the origin whose
        # sessionStorage holds the staff token: off.  /openapi.json stays.
        docs_url=None,
        redoc_url=None,
    )
    page = resources.files("gateway").joinpath("data/status.html").read_text()
    headers = _security_headers(page)

    auth = StaffAuth(
        tokens,
        max_failures=api.max_failures,
        lockout_seconds=api.lockout_seconds,
        monotonic=desk.monotonic,
        record=desk.record,
    )
    app.add_middleware(StaffGate, public=PUBLIC_PATHS, check=auth.check, headers=headers)
    app.state.auth = auth

    async def audit(by: str, action: str, **data: Any) -> None:
        await desk.record("staff_action", {"action": action, "by": by, **data})

    @app.get("/health/live", tags=["health"], response_model=Live)
    async def live() -> dict[str, str]:
        """The process answers (systemd's watchdog checks its event loop too)."""
        return {"status": "alive"}

    @app.get(
        "/health/ready", tags=["health"], responses={200: {"model": Ready}, 503: {"model": Ready}}
    )
    async def ready() -> JSONResponse:
        """Ready when the gateway has usable access data (503 otherwise, with why)."""
        why = desk.not_ready()
        body = {"status": "not_ready" if why else "ready", "why": why}
        return JSONResponse(body, status_code=503 if why else 200)

    @app.get(
        "/api/status",
        tags=["status"],
        response_class=JSONResponse,
        responses={200: {"model": Status}, **STAFF_ERRORS},
    )
    async def status(by: Staff) -> JSONResponse:
        """Doors, readers, sync, outbox and clock, now; and this API's own connections."""
        connections: ConnectionCounts | None = getattr(app.state, "connections", None)
        body = {**desk.status(), "api": None if connections is None else asdict(connections)}
        # Plain JSON values already: straight to the encoder, not through FastAPI's
        # validation and jsonable_encoder (most of this answer's time when polled).
        return JSONResponse(body)

    @app.get("/api/events", tags=["status"], response_model=EventsPage, responses=STAFF_ERRORS)
    async def events(
        by: Staff,
        before: Annotated[int | None, Query(description="page: events older than this id")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        type: Annotated[str | None, Query(description="only events of this type")] = None,
    ) -> dict[str, Any]:
        """The latest events, newest first, in pages (``next`` is the next page's ``before``)."""
        matches = (
            e
            for e in reversed(desk.recent_events())
            if (before is None or e["id"] < before) and (type is None or e["type"] == type)
        )
        page = list(itertools.islice(matches, limit + 1))
        more = len(page) > limit
        page = page[:limit]
        return {"events": page, "next": page[-1]["id"] if more else None}

    @app.post(
        "/api/doors/{door_id}/unlock",
        tags=["actions"],
        response_model=Unlocked,
        responses={**STAFF_ERRORS, 404: {"model": Problem, "description": NOT_DRIVEN}},
    )
    async def unlock(door_id: str, by: Staff, body: UnlockBody | None = None) -> dict[str, Any]:
        """Let someone in by hand: unlock now for the door's time (or ``seconds``)."""
        if not desk.drives(door_id):
            raise HTTPException(404, f"door {door_id!r} is not driven by this gateway")
        seconds = body.seconds if body is not None else None
        await audit(by, "unlock", door=door_id, seconds=seconds)
        return {"door": door_id, "state": await desk.unlock(door_id, by=by, seconds=seconds)}

    @app.post("/api/lockdown", tags=["actions"], response_model=Lockdown, responses=STAFF_ERRORS)
    async def lockdown(body: LockdownBody, by: Staff) -> dict[str, bool]:
        """Lock every door at once, so only staff members' credentials open them (or end it)."""
        await audit(by, "lockdown", on=body.on)
        return {"lockdown": await desk.set_lockdown(body.on, by=by)}

    @app.get(
        "/api/members/{member_id}/access",
        tags=["status"],
        response_model=MemberAccess,
        responses={**STAFF_ERRORS, 404: {"model": Problem, "description": "no such member"}},
    )
    async def access(
        member_id: str, by: Staff, days: Annotated[int, Query(ge=1, le=31)] = 7
    ) -> dict[str, Any]:
        """Which doors a member can open in the next ``days``, and when (from the cache)."""
        result = desk.member_access(member_id, days)
        await audit(by, "member_access", member=member_id)
        if result is None:
            raise HTTPException(404, f"no member {member_id!r} in this gateway's data")
        return result

    @app.post(
        "/api/readers/{reader_id}/enrol",
        tags=["actions"],
        response_model=EnrolStarted,
        responses={**STAFF_ERRORS, 404: {"model": Problem, "description": "no such reader"}},
    )
    async def enrol(reader_id: str, by: Staff, body: EnrolBody | None = None) -> dict[str, Any]:
        """Report the next card tapped on this reader instead of deciding it."""
        seconds = body.seconds if body is not None else EnrolBody().seconds
        try:
            desk.start_enrolment(reader_id, seconds)
        except UnknownError:
            raise HTTPException(404, f"no reader {reader_id!r} on this gateway") from None
        await audit(by, "enrol", reader=reader_id, seconds=seconds)
        return {"reader": reader_id, "waiting_seconds": seconds}

    @app.get(
        "/api/readers/{reader_id}/enrol",
        tags=["actions"],
        response_model=Enrolled,
        responses={**STAFF_ERRORS, 404: {"model": Problem, "description": "no such reader"}},
    )
    async def enrolled(reader_id: str, by: Staff) -> dict[str, Any]:
        """The card enrolled on this reader, once one has been tapped."""
        try:
            card = desk.enrolled_card(reader_id)
        except UnknownError:
            raise HTTPException(404, f"no reader {reader_id!r} on this gateway") from None
        return {"reader": reader_id, "card": card}

    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Metrics(desk))

    @app.get("/metrics", tags=["status"], response_class=Response, responses=STAFF_ERRORS)
    async def metrics(by: Staff) -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> str:
        return page

    return app


def _security_headers(page: str) -> dict[str, str]:
    """Headers for every response: the status page may run its own inline script
    and style (by hash) and talk to this origin, and nothing else."""

    def digests(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(t.encode()).digest()).decode() + "'"
            for t in found
        )

    csp = (
        f"default-src 'none'; script-src {digests('script')}; style-src {digests('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


class _Metrics:
    """Reads the gateway's state at scrape time: nothing to keep in step."""

    def __init__(self, desk: StaffDesk) -> None:
        self.desk = desk

    def collect(self) -> Iterator[Metric]:
        m = self.desk.metrics()
        decisions = CounterMetricFamily(
            "doorgw_decisions", "Access decisions since start, by reason code", labels=["reason"]
        )
        for reason, count in sorted(m.decisions.items()):
            decisions.add_metric([reason], count)
        yield decisions

        def gauge(name: str, text: str, value: float | None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=math.nan if value is None else value)

        yield gauge(
            "doorgw_data_age_seconds",
            "Seconds since the newest message the platform signed (NaN: never heard)",
            m.data_age_s,
        )
        yield gauge(
            "doorgw_dataset_version", "Version of the access data in use", m.dataset_version
        )
        yield gauge(
            "doorgw_revocation_lag_seconds",
            "From signing to taking effect, of the last change applied",
            m.delta_lag_s,
        )
        yield gauge("doorgw_outbox_depth", "Events not yet acknowledged", m.outbox_depth)
        yield gauge("doorgw_clock_trusted", "1 while the clock is trusted", m.clock_trusted)
        yield gauge("doorgw_lockdown", "1 during a lockdown", m.lockdown)
        yield gauge("doorgw_mqtt_connected", "1 while connected to a broker", m.mqtt_connected)
        readers = GaugeMetricFamily(
            "doorgw_reader_up", "1 while a reader answers", labels=["reader"]
        )
        for reader_id, online in m.readers_online.items():
            readers.add_metric([reader_id], online)
        yield readers
        locked = GaugeMetricFamily(
            "doorgw_door_locked", "1 while a door is locked", labels=["door"]
        )
        opened = GaugeMetricFamily(
            "doorgw_door_open", "1 while a door's contact says open", labels=["door"]
        )
        alarm = GaugeMetricFamily(
            "doorgw_door_alarm", "1 while a door is forced or held open", labels=["door", "alarm"]
        )
        cycles = CounterMetricFamily(
            "doorgw_relay_cycles", "Lock relay unlocks since start", labels=["door"]
        )
        for door in m.doors:
            locked.add_metric([door.door_id], door.locked)
            if door.is_open is not None:
                opened.add_metric([door.door_id], door.is_open)
            for kind in ("door_forced", "door_held_open"):
                alarm.add_metric([door.door_id, kind], door.alarm == kind)
            cycles.add_metric([door.door_id], door.relay_cycles)
        yield from (locked, opened, alarm, cycles)


class _Server(uvicorn.Server):
    """uvicorn serving through our :class:`~gateway.net.http_guard.Listener`.

    No signal handlers (SIGTERM belongs to the daemon), and no
    ``loop.create_server``: the Listener accepts, so that connections are
    counted and bounded from the first byte, TLS handshakes included.
    """

    def __init__(
        self, config: uvicorn.Config, sock: socket.socket, counts: ConnectionCounts
    ) -> None:
        super().__init__(config)
        self._sock = sock
        self._counts = counts
        self._accepting: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config

        def protocol(
            mark: Callable[[bool], None], release: Callable[[], None]
        ) -> GuardedH11Protocol:
            p = GuardedH11Protocol(config=config, server_state=self.server_state, app_state={})
            p.mark, p.release = mark, release
            return p

        listener = Listener(self._sock, protocol, counts=self._counts, ssl_context=config.ssl)
        self._accepting = asyncio.create_task(listener.serve(), name="api-accept")
        self.servers = []
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        await super().shutdown(sockets)


def connection_budget(wanted: int) -> int:
    """How many API connections the process can afford: ``wanted``, or fewer if
    the file-descriptor limit would leave the doors less than :data:`FD_RESERVE`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + FD_RESERVE:
        raised = hard if hard == resource.RLIM_INFINITY else min(hard, wanted + FD_RESERVE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


async def serve_api(desk: StaffDesk, api: ApiSection, tokens_path: Path) -> None:
    """Serve the API until cancelled; a port that cannot be had is retried, never fatal."""
    app = create_app(desk, TokenStore(tokens_path), api)
    if api.tls_cert_file is None and not ipaddress.ip_address(api.listen).is_loopback:
        # Allowed (a closed site network, a TLS proxy in front), but tokens then
        # cross the network in the clear: say so where the IT person will look.
        log.warning("staff API on %s without TLS: tokens travel unencrypted", api.listen)
        await desk.record("api_without_tls", {"listen": api.listen, "port": api.port})
    budget = connection_budget(api.max_connections)
    if budget < api.max_connections:
        log.warning(
            "staff API limited to %d connections (file-descriptor limit); %d configured",
            budget,
            api.max_connections,
        )
    # A flood of bad requests must not become a flood of log lines.
    # Once per process: the API service may be restarted, its filter must not pile up.
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, OncePerInterval) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(OncePerInterval())
    while True:
        try:
            # Bound here, not by uvicorn, which would exit the process when it cannot.
            sock = _listen(api.listen, api.port)
        except OSError as exc:
            await desk.record(
                "api_unavailable",
                {"listen": api.listen, "port": api.port, "detail": str(exc)[:200]},
            )
            log.error("staff API cannot listen on %s:%d: %s", api.listen, api.port, exc)
            await asyncio.sleep(RETRY_LISTEN)
            continue
        config = uvicorn.Config(
            app,
            host=api.listen,
            port=api.port,
            ssl_certfile=api.tls_cert_file,
            ssl_keyfile=api.tls_key_file,
            lifespan="off",
            http=GuardedH11Protocol,
            ws="none",
            timeout_keep_alive=int(IDLE_TIMEOUT),
            h11_max_incomplete_event_size=MAX_HEADERS,
            access_log=False,
            # No proxy is supported in front: X-Forwarded-For must not name the
            # client (a local process could rotate addresses or frame another).
            proxy_headers=False,
            forwarded_allow_ips="",
            log_level="warning",
        )
        counts = app.state.connections = ConnectionCounts(budget)
        server = _Server(config, sock, counts)
        task = asyncio.create_task(server.serve(), name="api-server")
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            server.should_exit = True  # let uvicorn close its connections first
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
            raise
        except Exception as exc:  # noqa: BLE001 - a bad TLS file, say: doors matter more
            await desk.record(
                "api_unavailable",
                {"listen": api.listen, "port": api.port, "detail": str(exc)[:200]},
            )
            log.error("staff API stopped: %s; retrying", exc)
        finally:
            sock.close()
        await asyncio.sleep(RETRY_LISTEN)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_bare(app: Any, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``sock``, bound by the caller, with uvicorn's defaults
    until ``stop`` is set.

    No guard, no limits: what any HTTP answer costs here, the floor that
    ``doorgw bench api`` measures the staff API against.  The caller binds
    (to port 0), so no other socket can take the port between its choice
    and uvicorn's listen.
    """
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]), name="bare-uvicorn")
    await stop.wait()
    server.should_exit = True
    await task
