"""The staff API under attack cannot hurt the doors: real uvicorn, real sockets, real Mosquitto.

The audit's findings: half-open connections used up the daemon's file
descriptors (and MQTT with them), and bodies were read and parsed before
the token was checked.  Here a card is tapped on the real PN532 emulator
during each flood, and the link to the real broker is watched throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock
from gateway.config.models import ApiSection, DoorConfig, Pn532ReaderConfig, load_config
from gateway.config.write import write_config
from gateway.net.http_guard import MAX_BODY
from gateway.net.staff_tokens import TokenStore
from gateway.tools.ports import free_port
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset
from sim.broker import Broker
from sim.pn532 import SimulatedPn532

from .conftest import base_dataset, until
from .test_api import START, until_answers

LOCK = 17
CARD = bytes.fromhex("04000001")  # day_m's card in the base dataset: granted
HALF_REQUEST = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bear"


@pytest.fixture(autouse=True)
def _enough_descriptors() -> Iterator[None]:
    """The test process holds the attacker's ends of every connection too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def half_open(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections that each send half a request and then nothing."""
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HALF_REQUEST)
        writers.append(writer)
    await asyncio.sleep(0.2)
    return writers


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.transport.abort()


async def raw(port: int, head: bytes, body: bytes = b"", *, repeat: int = 1) -> bytes:
    """Send a request head, then ``body`` ``repeat`` times until answered; the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read(65536))
    try:
        writer.write(head)
        with contextlib.suppress(ConnectionError):
            for _ in range(repeat):
                if answer.done():
                    break
                writer.write(body)
                drained = asyncio.ensure_future(writer.drain())
                await asyncio.wait([drained, answer], return_when=asyncio.FIRST_COMPLETED)
                drained.cancel()
        async with asyncio.timeout(20):
            return await answer
    finally:
        answer.cancel()
        writer.transport.abort()


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    assert match, answer[:200]
    return int(match.group(1))


@contextlib.asynccontextmanager
async def gateway_on(broker: Broker, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Any]]:
    """A gateway linked to the real broker, with an NFC reader on the PN532 emulator and the API."""
    port = free_port()
    device = SimulatedPn532()
    settings = broker.gateway_settings("gw-1", tmp_path / "gw").model_copy(
        update={
            "doors": (DoorConfig(id="front", lock_pin=LOCK),),
            "readers": (
                Pn532ReaderConfig(id="nfc-front", door="front", kind="pn532", port=device.port),
            ),
            "api": ApiSection(port=port, max_connections=16),
        }
    )
    config = load_config(write_config(settings, tmp_path / "doorgw.toml"))
    clock = ManualClock(START)
    token = TokenStore(config.tokens_path).add("front-desk", int(START.timestamp()))
    gw = Gateway(config, clock, pin_factory=MockFactory())

    async def tick() -> None:  # the reader polls on the gateway's clock: let it run in real time
        while True:
            await asyncio.sleep(0.02)
            clock.advance(0.02)

    ticker = asyncio.create_task(tick())
    try:
        async with gw.running():
            for chunk in CloudSigner(broker.signer, "t", clock.now).snapshot(
                parse_dataset(base_dataset())
            ):
                await gw.engine.handle(chunk)
            await gw.engine.wait_snapshot()
            await until(lambda: gw.link.connected.is_set())
            await until(lambda: gw.station.readers_online().get("nfc-front"))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await until_answers(client)
                yield gw, {"port": port, "token": token, "device": device, "client": client}
    finally:
        ticker.cancel()
        device.close()


async def tap_opens(gw: Gateway, device: SimulatedPn532) -> None:
    """A card on the reader is decided and the relay driven, then the card leaves."""
    granted = sum(1 for e in gw.events.recent if e["type"] == "access" and e["data"]["granted"])
    device.card = CARD
    await until(
        lambda: (
            sum(1 for e in gw.events.recent if e["type"] == "access" and e["data"]["granted"])
            > granted
        )
    )
    assert not gw.station.doors["front"].locked  # the relay moved
    device.card = None


def test_half_open_connections_cannot_exhaust_the_daemon_or_keep_staff_out(
    broker: Broker, tmp_path: Path
) -> None:
    async def go() -> None:
        async with gateway_on(broker, tmp_path) as (gw, api):
            sessions = gw.link.sessions
            writers = await half_open(api["port"], 1100)
            try:
                await tap_opens(gw, api["device"])
                # Staff still get in: the newcomer takes the place of the oldest half-open one.
                auth = {"Authorization": f"Bearer {api['token']}"}
                status = await api["client"].get("/api/status", headers=auth)
                assert status.status_code == 200
                assert status.json()["sync"]["connected"] is True
                held = status.json()["api"]
                assert held["max_connections"] == 16
                assert held["open"] <= 16  # of 1,100 tried: the oldest idle ones made room
                assert held["dropped_idle"] >= 1100 - 16
            finally:
                close_all(writers)
            assert gw.link.connected.is_set()
            assert gw.link.sessions == sessions

    asyncio.run(go())


def test_bodies_are_refused_before_they_are_read_without_a_token_and_capped_with_one(
    broker: Broker, tmp_path: Path
) -> None:
    async def go() -> None:
        async with gateway_on(broker, tmp_path) as (gw, api):
            port, token = api["port"], api["token"]
            head = (
                "POST /api/lockdown HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: {n}\r\n{auth}\r\n"
            )
            # 400 MiB announced, no token: 401 before any of it is read.
            started = time.monotonic()
            answer = await raw(
                port, head.format(n=400 << 20, auth="").encode(), b"[" * 65536, repeat=6400
            )
            assert status_of(answer) == 401
            assert time.monotonic() - started < 15
            await tap_opens(gw, api["device"])
            with_token = f"Authorization: Bearer {token}\r\n"
            # An 80 MB body with a token: refused on its length, not parsed.
            big = head.format(n=80_000_000, auth=with_token).encode()
            assert status_of(await raw(port, big, b" " * 65536)) == 413
            # Chunked, so no length to go by: cut off past the cap.
            chunked = (
                "POST /api/lockdown HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n{with_token}\r\n"
            ).encode()
            chunk = b"1000\r\n" + b" " * 0x1000 + b"\r\n"
            assert status_of(await raw(port, chunked, chunk, repeat=4)) == 413
            client = api["client"]
            auth = {"Authorization": f"Bearer {token}"}
            form = await client.post("/api/lockdown", content=b"on=1", headers=auth)
            assert form.status_code == 415
            nested = await client.post(
                "/api/lockdown",
                content=b"[" * (MAX_BODY - 1),
                headers={**auth, "Content-Type": "application/json"},
            )
            assert nested.status_code == 400
            assert gw.modes.lockdown is False
            ok = await client.post("/api/lockdown", json={"on": True}, headers=auth)
            assert ok.status_code == 200
            assert gw.modes.lockdown is True
            assert gw.link.connected.is_set()

    asyncio.run(go())


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _systemds_fd_limit() -> None:
    """What systemd gives a service unless the unit says otherwise."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_doorgw_run_under_a_flood_keeps_its_descriptors_memory_and_broker_link(
    broker: Broker, tmp_path: Path
) -> None:
    port = free_port()
    settings = broker.gateway_settings("gw-1", tmp_path / "gw").model_copy(
        update={"api": ApiSection(port=port)}
    )
    config = write_config(settings, tmp_path / "doorgw.toml")
    token = TokenStore(load_config(config).tokens_path).add("front-desk", int(time.time()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_systemds_fd_limit,
    )

    async def go() -> None:
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await until_answers(client)
            await until(lambda: "as gw-1" in (broker.dir / "mosquitto.log").read_text(), limit=30)
            rss_before = _rss_kib(proc.pid)
            writers = await half_open(port, 1100)
            try:
                assert _fds(proc.pid) < 1024 - 150  # room left for doors, MQTT and the stores
                bodies = [
                    raw(
                        port,
                        b"POST /api/lockdown HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Length: 419430400\r\n\r\n",
                        b"x" * 65536,
                        repeat=400,
                    )
                    for _ in range(8)
                ]
                answers = await asyncio.gather(*bodies)
                assert {status_of(a) for a in answers} == {401}
                assert _rss_kib(proc.pid) - rss_before < 64 * 1024  # not hundreds of MiB
                started = time.monotonic()
                live = await client.get("/health/live")
                assert live.status_code == 200
                assert time.monotonic() - started < 5
                status = (await client.get("/api/status", headers=auth)).json()
                assert status["sync"]["connected"] is True
            finally:
                close_all(writers)
        log = (broker.dir / "mosquitto.log").read_text()
        assert log.count("as gw-1") == 1, log  # one session throughout: never dropped

    try:
        asyncio.run(go())
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    text = err.decode()
    assert "Too many open files" not in text
    assert text.count("Traceback") == 0, text[-3000:]


def test_accept_errors_are_logged_once_per_interval_and_accepting_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Out of descriptors, accept() fails on every try: one log line per 10 s with a
    count (the audit saw 85,000 tracebacks in 10 s), and accepting resumes after."""
    from gateway.net.http_guard import ConnectionCounts, Listener

    accepted: list[asyncio.Protocol] = []

    def factory(mark: Any, release: Any) -> asyncio.Protocol:
        protocol = asyncio.Protocol()
        accepted.append(protocol)
        return protocol

    async def go() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        listener = Listener(sock, factory, counts=ConnectionCounts(8))
        task = asyncio.create_task(listener.serve())
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        clients = []
        try:
            await asyncio.sleep(0.05)
            # The process's descriptors all but used up: the next accept() fails.
            open_now = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 4, hard))
            for _ in range(3):
                c = socket.socket()
                c.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    c.connect(("127.0.0.1", port))
                clients.append(c)
            await asyncio.sleep(1.5)  # about 15 failed tries
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        await asyncio.sleep(0.3)  # descriptors again: the waiting connections get in
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for c in clients:
            c.close()
        sock.close()

    with caplog.at_level(logging.ERROR, logger="gateway.net.http_guard"):
        asyncio.run(go())
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "Too many open files" in lines[0].getMessage()
    assert accepted  # accepting went on once descriptors were free
