"""The local staff API, the status page and /metrics: FastAPI on uvicorn, in the daemon's loop.

Everything runs on the gateway's own event loop, so a request sees the same
state the doors do, with no locking.  It listens on loopback unless the
config says otherwise (``[api] listen``), with TLS when given a certificate.

Staff authenticate with bearer tokens (:mod:`gateway.net.staff_tokens`): a
missing or wrong token gets 401, and a client address that keeps getting
them is refused with 429 for a while.  Every staff action is an event in
the outbox (``staff_action``), naming the token that did it.  docs/api.md
describes the endpoints; the OpenAPI document is served at /openapi.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import math
import socket
from collections import deque
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import BaseModel, Field

from gateway import __version__
from gateway.core.access import access_json, member_access
from gateway.net.staff_tokens import TokenStore

if TYPE_CHECKING:
    from gateway.app.daemon import Gateway

log = logging.getLogger(__name__)

#: Seconds between attempts to listen again when the port cannot be had.
RETRY_LISTEN = 30.0


class FailureLimiter:
    """Counts wrong tokens per client address; too many in a window locks that address out."""

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]  # bounded: only addresses failing right now are kept
            return deque()
        return times

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until ``client`` may try again, or None if it may now."""
        times = self._recent(client, now)
        if len(times) < self.max_failures:
            return None
        return times[0] + self.window - now

    def failed(self, client: str, now: float) -> None:
        """One more wrong token from ``client``."""
        self._recent(client, now)
        self._failures.setdefault(client, deque()).append(now)


class UnlockBody(BaseModel):
    """How long to unlock for (default: the door's own unlock time)."""

    seconds: float | None = Field(default=None, gt=0, le=3600)


class LockdownBody(BaseModel):
    """Lockdown on or off."""

    on: bool


class EnrolBody(BaseModel):
    """How long to wait for the card (seconds)."""

    seconds: float = Field(default=60, gt=0, le=600)


async def _staff(request: Request) -> str:
    """The name of the staff token presented; 401 without a good one, 429 after too many."""
    gw: Gateway = request.app.state.gw
    limiter: FailureLimiter = request.app.state.limiter
    client = request.client.host if request.client else "unknown"
    now = gw.clock.monotonic()
    wait = limiter.retry_after(client, now)
    if wait is not None:
        raise HTTPException(
            429,
            "too many wrong tokens from this address; try again later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    tokens: TokenStore = request.app.state.tokens
    name = tokens.check(token.strip()) if scheme.lower() == "bearer" and token else None
    if name is None:
        limiter.failed(client, now)
        # Recorded until the address is locked out, so a flood cannot fill the outbox.
        await gw.record(
            "staff_auth_failed",
            {"client": client, "path": request.url.path, "token_given": bool(token)},
        )
        raise HTTPException(
            401, "a valid staff token is needed", headers={"WWW-Authenticate": "Bearer"}
        )
    return name


#: A staff endpoint's parameter: the name of the token that called it.
Staff = Annotated[str, Depends(_staff)]


def create_app(gw: Gateway, tokens: TokenStore) -> FastAPI:
    """The API of one running gateway."""
    assert gw.config.api is not None
    limiter = FailureLimiter(gw.config.api.max_failures, gw.config.api.lockout_seconds)
    app = FastAPI(
        title="doorgw local API",
        version=__version__,
        description="Health, status, recent events and staff actions of one doorgw gateway.",
    )

    app.state.gw = gw
    app.state.tokens = tokens
    app.state.limiter = limiter

    async def audit(by: str, action: str, **data: Any) -> None:
        await gw.record("staff_action", {"action": action, "by": by, **data})

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process answers (systemd's watchdog checks its event loop too)."""
        return {"status": "alive"}

    @app.get("/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        """Ready when the gateway has usable access data (503 otherwise, with why)."""
        why = []
        if gw.engine.version is None:
            why.append("no access data yet")
        elif gw.at_fault():
            why.append("access data too old for every kind of grant")
        body = {"status": "not_ready" if why else "ready", "why": why}
        return JSONResponse(body, status_code=503 if why else 200)

    @app.get("/api/status", tags=["status"])
    async def status(by: Staff) -> dict[str, Any]:
        """Doors, readers, sync, outbox and clock, now."""
        return _status(gw)

    @app.get("/api/events", tags=["status"])
    async def events(
        by: Staff,
        before: Annotated[int | None, Query(description="page: events older than this id")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        type: Annotated[str | None, Query(description="only events of this type")] = None,
    ) -> dict[str, Any]:
        """The latest events, newest first, in pages (``next`` is the next page's ``before``)."""
        matches = (
            e
            for e in reversed(gw.recent)
            if (before is None or e["id"] < before) and (type is None or e["type"] == type)
        )
        page = list(itertools.islice(matches, limit + 1))
        more = len(page) > limit
        page = page[:limit]
        return {"events": page, "next": page[-1]["id"] if more else None}

    @app.post("/api/doors/{door_id}/unlock", tags=["actions"])
    async def unlock(door_id: str, by: Staff, body: UnlockBody | None = None) -> dict[str, Any]:
        """Let someone in by hand: unlock now for the door's time (or ``seconds``)."""
        door = gw.doors.get(door_id)
        if door is None:
            raise HTTPException(404, f"door {door_id!r} is not driven by this gateway")
        seconds = body.seconds if body is not None else None
        await audit(by, "unlock", door=door_id, seconds=seconds)
        await door.grant(reason=f"staff {by}", seconds=seconds)
        return {"door": door_id, "state": gw.door_states()[door_id]}

    @app.post("/api/lockdown", tags=["actions"])
    async def lockdown(body: LockdownBody, by: Staff) -> dict[str, bool]:
        """Lock every door at once, so only staff members' credentials open them (or end it)."""
        await audit(by, "lockdown", on=body.on)
        await gw.set_lockdown(body.on, by=f"staff {by}")
        return {"lockdown": gw.lockdown}

    @app.get("/api/members/{member_id}/access", tags=["status"])
    async def access(
        member_id: str, by: Staff, days: Annotated[int, Query(ge=1, le=31)] = 7
    ) -> dict[str, Any]:
        """Which doors a member can open in the next ``days``, and when (from the cache)."""
        assert gw.reader is not None
        start = int(gw.clock.now().timestamp())
        with gw.reader.view() as view:
            result = member_access(view, member_id, start, start + days * 86_400)
        await audit(by, "member_access", member=member_id)
        if result is None:
            raise HTTPException(404, f"no member {member_id!r} in this gateway's data")
        return access_json(result, start, start + days * 86_400)

    @app.post("/api/readers/{reader_id}/enrol", tags=["actions"])
    async def enrol(reader_id: str, by: Staff, body: EnrolBody | None = None) -> dict[str, Any]:
        """Report the next card tapped on this reader instead of deciding it."""
        seconds = body.seconds if body is not None else EnrolBody().seconds
        try:
            gw.start_enrolment(reader_id, seconds)
        except KeyError:
            raise HTTPException(404, f"no reader {reader_id!r} on this gateway") from None
        await audit(by, "enrol", reader=reader_id, seconds=seconds)
        return {"reader": reader_id, "waiting_seconds": seconds}

    @app.get("/api/readers/{reader_id}/enrol", tags=["actions"])
    async def enrolled(reader_id: str, by: Staff) -> dict[str, Any]:
        """The card enrolled on this reader, once one has been tapped."""
        if reader_id not in gw.readers_online():
            raise HTTPException(404, f"no reader {reader_id!r} on this gateway")
        return {"reader": reader_id, "card": gw.enrolled.get(reader_id)}

    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Metrics(gw))

    @app.get("/metrics", tags=["status"], response_class=Response)
    async def metrics(by: Staff) -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    page = resources.files("gateway").joinpath("data/status.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> str:
        return page

    return app


def _status(gw: Gateway) -> dict[str, Any]:
    trust = gw.clock_trust.state()
    states = gw.door_states()
    doors = []
    for cfg in gw.config.doors:
        controller = gw.doors.get(cfg.id)
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
        "gateway": gw.config.gateway.id,
        "site": gw.config.gateway.site_id,
        "version": __version__,
        "lockdown": gw.lockdown,
        "doors": doors,
        "readers": [
            {"id": reader_id, "online": online} for reader_id, online in gw.readers_online().items()
        ],
        "sync": {
            "connected": gw.link.connected.is_set(),
            "dataset_version": gw.engine.version,
            "platform_version": gw.engine.cloud_version,
            "data_age_s": gw.data_age(),
            "stale_classes": sorted(gw.stale_kinds()),
            "last_delta_lag_s": gw.engine.delta_lag,
        },
        "outbox": {
            "depth": gw.outbox.depth,
            "last_seq": gw.outbox.last_seq,
            "acked_seq": gw.outbox.acked_seq,
        },
        "clock": {"trusted": trust.trusted, "source": trust.source, "skew_s": trust.skew_s},
    }


class _Metrics:
    """Reads the gateway's state at scrape time: nothing to keep in step."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def collect(self) -> Iterator[Metric]:
        gw = self.gw
        decisions = CounterMetricFamily(
            "doorgw_decisions", "Access decisions since start, by reason code", labels=["reason"]
        )
        for reason, count in sorted(gw.decisions.items()):
            decisions.add_metric([reason], count)
        yield decisions

        def gauge(name: str, text: str, value: float | None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=math.nan if value is None else value)

        yield gauge(
            "doorgw_data_age_seconds",
            "Seconds since the newest message the platform signed (NaN: never heard)",
            gw.data_age(),
        )
        yield gauge(
            "doorgw_dataset_version", "Version of the access data in use", gw.engine.version
        )
        yield gauge(
            "doorgw_revocation_lag_seconds",
            "From signing to taking effect, of the last change applied",
            gw.engine.delta_lag,
        )
        yield gauge("doorgw_outbox_depth", "Events not yet acknowledged", gw.outbox.depth)
        yield gauge(
            "doorgw_clock_trusted", "1 while the clock is trusted", gw.clock_trust.trusted()
        )
        yield gauge("doorgw_lockdown", "1 during a lockdown", gw.lockdown)
        yield gauge(
            "doorgw_mqtt_connected", "1 while connected to a broker", gw.link.connected.is_set()
        )
        readers = GaugeMetricFamily(
            "doorgw_reader_up", "1 while a reader answers", labels=["reader"]
        )
        for reader_id, online in gw.readers_online().items():
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
        for door_id, door in gw.doors.items():
            locked.add_metric([door_id], door.locked)
            if door.is_open is not None:
                opened.add_metric([door_id], door.is_open)
            for kind in ("door_forced", "door_held_open"):
                alarm.add_metric([door_id, kind], door.alarm == kind)
            cycles.add_metric([door_id], door.relay_cycles)
        yield from (locked, opened, alarm, cycles)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM belongs to the daemon."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(gw: Gateway) -> None:
    """Serve the API until cancelled; a port that cannot be had is retried, never fatal."""
    api = gw.config.api
    assert api is not None
    app = create_app(gw, TokenStore(gw.config.tokens_path))
    if api.tls_cert_file is None and not ipaddress.ip_address(api.listen).is_loopback:
        # Allowed (a closed site network, a TLS proxy in front), but tokens then
        # cross the network in the clear: say so where the IT person will look.
        log.warning("staff API on %s without TLS: tokens travel unencrypted", api.listen)
        await gw.record("api_without_tls", {"listen": api.listen, "port": api.port})
    while True:
        try:
            # Bound here, not by uvicorn, which would exit the process when it cannot.
            sock = _listen(api.listen, api.port)
        except OSError as exc:
            await gw.record(
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
            access_log=False,
            log_level="warning",
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="api-server")
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            server.should_exit = True  # let uvicorn close its connections first
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
            raise
        except Exception as exc:  # noqa: BLE001 - a bad TLS file, say: doors matter more
            await gw.record(
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
