"""``doorgw bench api``: staff API latency on a kept-alive connection, against bare uvicorn.

A real gateway (a temporary data directory, the embedded example site
applied as a signed snapshot, no broker) serves its staff API exactly as
``doorgw run`` does.  ``GET /api/status`` with a staff token is timed on
one kept-alive connection.  The floor, measured in the same run and
interleaved request by request, is a bare uvicorn serving a one-line
"hello" ASGI app on the same loop, also kept alive: what any HTTP answer
costs here.  The ratio says what the gateway's API adds (its guard, the
token check, FastAPI, building the status).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.clock import SystemClock
from gateway.config.models import (
    ApiSection,
    Config,
    DoorConfig,
    GatewaySection,
    MqttSection,
    SyncSection,
)
from gateway.core.jws import Signer
from gateway.net.api import serve_bare
from gateway.net.staff_tokens import TokenStore
from gateway.tools.ports import free_port
from gateway.tools.sitegen import percentile
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: the least an ASGI app can answer."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


class _KeptAlive:
    """One HTTP/1.1 connection, reused for every request."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> float:
        """Seconds from sending ``GET path`` to the last byte of its answer."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.extra}\r\n".encode()
        started = time.perf_counter()
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self._reader.readexactly(length)
        took = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        return took

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _config(home: Path, api_port: int) -> Config:
    signer_keys = home / "keys.json"
    return Config(
        gateway=GatewaySection(id="bench-gw", site_id="shoreditch", data_dir=home / "data"),
        doors=(DoorConfig(id="front"),),
        mqtt=MqttSection(urls=(f"mqtt://127.0.0.1:{free_port()}",)),  # no broker: offline
        sync=SyncSection(keys_file=signer_keys),
        api=ApiSection(port=api_port),
    )


async def _run(requests: int) -> dict[str, Any]:
    from gateway.app.gateway import Gateway  # the daemon's own composition root

    signer = Signer.generate("bench")
    doc = json.loads(resources.files("gateway").joinpath("data/example_site.json").read_text())
    with (
        tempfile.TemporaryDirectory(prefix="doorgw-bench-api-") as tmp,
        socket.socket() as floor_sock,
    ):
        home = Path(tmp)
        (home / "keys.json").write_text(json.dumps({"keys": [signer.public_jwk()]}))
        # The gateway binds its own port, as `doorgw run` does; the floor's
        # socket is bound here, to a port the kernel chooses, and handed over.
        api_port = free_port()
        config = _config(home, api_port)
        floor_sock.bind(("127.0.0.1", 0))
        token = TokenStore(config.tokens_path).add("bench", int(time.time()))
        stop_floor = asyncio.Event()
        gw = Gateway(config, SystemClock())
        async with gw.running():
            cloud = CloudSigner(signer, doc["site"]["id"])
            for chunk in cloud.snapshot(parse_dataset(doc)):
                await gw.engine.handle(chunk)
            await gw.engine.wait_snapshot()
            serving = asyncio.create_task(serve_bare(_hello, floor_sock, stop_floor))
            api = _KeptAlive(api_port, {"Authorization": f"Bearer {token}"})
            bare = _KeptAlive(floor_sock.getsockname()[1], {})
            try:
                for client, path in ((api, "/api/status"), (bare, "/")):
                    for _ in range(200):  # both up, and warm
                        try:
                            await client.get(path)
                            break
                        except OSError:
                            await asyncio.sleep(0.05)
                status_times, floor_times = [], []
                for _ in range(requests):  # interleaved: the same machine state for both
                    status_times.append(await api.get("/api/status"))
                    floor_times.append(await bare.get("/"))
            finally:
                api.close()
                bare.close()
                stop_floor.set()
                await serving

    def us(values: list[float], q: float) -> float:
        return round(percentile(sorted(int(v * 1e9) for v in values), q), 1)

    out: dict[str, Any] = {
        "requests": requests,
        "p50_us": us(status_times, 0.5),
        "p99_us": us(status_times, 0.99),
        "floor_p50_us": us(floor_times, 0.5),
        "floor_p99_us": us(floor_times, 0.99),
    }
    out["ratio_p50"] = round(out["p50_us"] / out["floor_p50_us"], 2)
    out["ratio_p99"] = round(out["p99_us"] / out["floor_p99_us"], 2)
    return out


def bench_api(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    # The bench gateway has no broker on purpose: its reconnect warnings are noise here.
    logging.getLogger("gateway.net.mqtt").setLevel(logging.ERROR)
    result = asyncio.run(_run(args.requests))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"GET /api/status on a kept-alive connection, {result['requests']} requests")
    print(f"  gateway API   p50 {result['p50_us']:>9.1f} us   p99 {result['p99_us']:>9.1f} us")
    print(
        f"  bare uvicorn  p50 {result['floor_p50_us']:>9.1f} us   "
        f"p99 {result['floor_p99_us']:>9.1f} us   (floor)"
    )
    print(f"  ratio         p50 {result['ratio_p50']:>9.2f} x    p99 {result['ratio_p99']:>9.2f} x")
    return 0
