"""``doorgw bench memory``: one gateway process's memory at a large cache.

A real ``doorgw run`` process (the staff API on, as the example config ships
it, unless ``--without-api``) is fed a site of ``--members``/``--bookings``
(or ``--site FILE``) over a real Mosquitto with mutual TLS, the way the
platform would: it asks for a resync and gets a signed snapshot.  Its RSS and
PSS are read from ``/proc`` every 20 ms throughout:

* **idle**: restarted on the cache it built, then left alone for a while:
  what a Pi carries day to day;
* **peak**: the highest reading while a full snapshot is applied over a
  cache already holding the site (a platform-ordered resync), the heaviest
  thing the daemon does;
* **floor**: a bare MQTT client process with the gateway's identity and TLS
  (``sim.fleet_proc echo``), in the same run: Python, paho and OpenSSL.

A Raspberry Pi Zero 2 W has 512 MB for everything.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.config.models import ApiSection, TimeSection
from gateway.config.write import config_with, write_config
from gateway.core import model
from gateway.tools.ports import free_port
from gateway.wire.cloudkit import CloudSigner
from sim.broker import PREFIX, Broker
from sim.fleet import _memory_kb
from sim.fleet_proc import child_options

GATEWAY = "gw-mem"


class _Sampler:
    """Reads a process's RSS and PSS every 20 ms on a thread; keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                rss, pss = _memory_kb(self.pid)
            except (FileNotFoundError, ProcessLookupError, KeyError):
                return
            self.peak = (max(self.peak[0], rss), max(self.peak[1], pss))

    def reset(self) -> None:
        """Start a new peak from now."""
        self.peak = (0, 0)

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


def _start(config: Path, notify: Path) -> subprocess.Popen[bytes]:
    """``doorgw run`` on ``config``, returned once it told systemd READY=1."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.unlink(missing_ok=True)
    sock.bind(str(notify))
    sock.settimeout(300)
    with (config.parent / "daemon.log").open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and command
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            env={**os.environ, "NOTIFY_SOCKET": str(notify)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        while not sock.recv(4096).startswith(b"READY=1"):
            pass
    finally:
        sock.close()
    return proc


class _Platform:
    """The platform's side for one gateway: answers its first resync with a
    snapshot, publishes more on demand, and hears when each was applied."""

    def __init__(self, broker: Broker, signer: CloudSigner, chunks: dict[int, list[bytes]]):
        self.broker = broker
        self.signer = signer
        self.chunks = chunks
        self.applied: dict[int, asyncio.Event] = {v: asyncio.Event() for v in chunks}
        self.answered = False
        self.client: aiomqtt.Client | None = None

    async def run(self, ready: asyncio.Event) -> None:
        async with self.broker.client("cloud", "cloud-memory") as client:
            self.client = client
            await client.subscribe(f"{PREFIX}/gw/{GATEWAY}/#", qos=1)
            ready.set()
            async for message in client.messages:
                leaf = str(message.topic).rsplit("/", 1)[1]
                raw = message.payload if isinstance(message.payload, bytes) else b""
                if leaf == "resync" and not self.answered:
                    self.answered = True
                    await self.send(min(self.chunks))
                elif leaf == "events":
                    await self._events(json.loads(raw))

    async def send(self, version: int) -> None:
        """Publish the snapshot at ``version`` to the gateway."""
        assert self.client is not None
        for chunk in self.chunks[version]:
            await self.client.publish(f"{PREFIX}/gw/{GATEWAY}/snapshot", chunk, qos=1, timeout=60)

    async def _events(self, body: dict[str, Any]) -> None:
        assert self.client is not None
        events = body.get("events", [])
        for event in events:
            if event.get("type") == "snapshot_applied":
                version = int(event["data"]["version"])
                if version in self.applied:
                    self.applied[version].set()
        if events:
            top = max(int(e["seq"]) for e in events)
            ack = self.signer.ack(GATEWAY, top)
            await self.client.publish(f"{PREFIX}/gw/{GATEWAY}/ack", ack, qos=1)


async def _measure(args: argparse.Namespace, base: Path, ds: model.Dataset) -> dict[str, Any]:
    broker = Broker(base / "broker", site=ds.site.id, gateways=[GATEWAY])
    broker.start()
    try:
        return await _measure_on(args, base, ds, broker)
    finally:
        broker.stop()


async def _measure_on(
    args: argparse.Namespace, base: Path, ds: model.Dataset, broker: Broker
) -> dict[str, Any]:
    signer = CloudSigner(broker.signer, ds.site.id)
    say = _say(args)
    say("signing the snapshots ...")
    first, second = ds.version, ds.version + 1
    chunks = {
        first: await asyncio.to_thread(signer.snapshot, ds, gateway=GATEWAY),
        second: await asyncio.to_thread(
            signer.snapshot, dataclasses.replace(ds, version=second), gateway=GATEWAY
        ),
    }
    home = base / GATEWAY
    home.mkdir(mode=0o700)
    settings = broker.gateway_settings(GATEWAY, home)
    settings = config_with(settings, time=TimeSection(use_ntp=False))
    if not args.without_api:
        settings = config_with(settings, api=ApiSection(port=free_port()))
    config = write_config(settings, home / "doorgw.toml")
    platform = _Platform(broker, signer, chunks)
    listening = asyncio.Event()
    task = asyncio.create_task(platform.run(listening))
    try:
        await asyncio.wait_for(listening.wait(), 30)
        say("first start: the snapshot arrives ...")
        proc = await asyncio.to_thread(_start, config, base / "notify")
        sampler = _Sampler(proc.pid)
        t0 = time.perf_counter()
        await asyncio.wait_for(platform.applied[first].wait(), 600)
        first_s = time.perf_counter() - t0
        first_peak = sampler.peak
        sampler.close()
        await _stop(proc)

        say("restart on the cache; idle ...")
        proc = await asyncio.to_thread(_start, config, base / "notify")
        sampler = _Sampler(proc.pid)
        await asyncio.sleep(args.settle)
        idle = _memory_kb(proc.pid)
        say("a full snapshot over it ...")
        sampler.reset()
        t0 = time.perf_counter()
        await platform.send(second)
        await asyncio.wait_for(platform.applied[second].wait(), 600)
        apply_s = time.perf_counter() - t0
        peak = sampler.peak
        await asyncio.sleep(args.settle)
        after = _memory_kb(proc.pid)
        sampler.close()
        await _stop(proc)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    say("floor: a bare client ...")
    floor = await _floor(broker, ds.site.id, args.settle)
    cache = home / "cache.sqlite3"
    return {
        "members": len(ds.members),
        "bookings": len(ds.bookings),
        "api": not args.without_api,
        "cache_mb": round(cache.stat().st_size / 1e6, 1),
        "snapshot_mb": round(sum(len(c) for c in chunks[second]) / 1e6, 1),
        "snapshot_chunks": len(chunks[second]),
        "idle_rss_mb": _mb(idle[0]),
        "idle_pss_mb": _mb(idle[1]),
        "peak_rss_mb": _mb(peak[0]),
        "peak_pss_mb": _mb(peak[1]),
        "apply_s": round(apply_s, 1),
        "after_rss_mb": _mb(after[0]),
        "first_peak_rss_mb": _mb(first_peak[0]),
        "first_apply_s": round(first_s, 1),
        "floor_rss_mb": _mb(floor[0]),
        "floor_pss_mb": _mb(floor[1]),
        "idle_ratio": round(idle[0] / floor[0], 2),
        "peak_ratio": round(peak[0] / floor[0], 2),
    }


async def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    if await asyncio.to_thread(proc.wait, 60) != 0:
        raise RuntimeError(f"the daemon exited with {proc.returncode} when stopped")


async def _floor(broker: Broker, site: str, settle: float) -> tuple[int, int]:
    """A bare client with the gateway's identity, subscribed and idle."""
    cert, key = broker.certs[GATEWAY]
    ready = asyncio.Event()
    async with broker.client("cloud", "cloud-floor") as client:
        await client.subscribe(f"{PREFIX}/gw/{GATEWAY}/heartbeat", qos=1)

        async def wait_ready() -> None:
            async for _ in client.messages:
                ready.set()
                return

        waiter = asyncio.create_task(wait_ready())
        args = [str(broker.port), str(broker.ca_file), str(cert), str(key), GATEWAY, site]
        proc = await asyncio.to_thread(_echo_client, args)
        try:
            await asyncio.wait_for(ready.wait(), 60)
            await asyncio.sleep(settle)
            return _memory_kb(proc.pid)
        finally:
            waiter.cancel()
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)


def _echo_client(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "sim.fleet_proc", "echo", *args],
        stdout=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
        **child_options(),
    )


def _say(args: argparse.Namespace) -> Any:
    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    return say


def _dataset(args: argparse.Namespace) -> model.Dataset:
    if args.site is not None:
        from gateway.wire.dataset import load_dataset_file

        return load_dataset_file(args.site)
    from gateway.tools.sitegen import build_dataset

    return build_dataset(args.members, args.bookings, random.Random(7))  # noqa: S311


def bench_memory(args: argparse.Namespace) -> int:
    """The ``doorgw bench memory`` command."""
    from gateway.errors import DoorgwError
    from sim.broker import find_mosquitto

    try:
        find_mosquitto()
    except RuntimeError as exc:
        raise DoorgwError(f"bench memory runs a real Mosquitto: {exc}") from None
    _say(args)("building the site ...")
    ds = _dataset(args)
    with tempfile.TemporaryDirectory(prefix="doorgw-bench-memory-") as tmp:
        try:
            r = asyncio.run(_measure(args, Path(tmp), ds))
        except (RuntimeError, TimeoutError) as exc:
            raise DoorgwError(f"bench memory: {exc}") from None
    if args.json:
        print(json.dumps(r))
        return 0
    api = "staff API on" if r["api"] else "no staff API"
    print(
        f"site         {r['members']:,} members, {r['bookings']:,} bookings: cache "
        f"{r['cache_mb']} MB, snapshot {r['snapshot_mb']} MB in {r['snapshot_chunks']} chunks\n"
        f"idle         RSS {r['idle_rss_mb']} MB (PSS {r['idle_pss_mb']} MB), restarted on "
        f"that cache, {api}\n"
        f"peak         RSS {r['peak_rss_mb']} MB (PSS {r['peak_pss_mb']} MB) while a full "
        f"snapshot is applied over it ({r['apply_s']} s); RSS {r['after_rss_mb']} MB after\n"
        f"floor        a bare MQTT client over TLS: RSS {r['floor_rss_mb']} MB "
        f"(PSS {r['floor_pss_mb']} MB); ratio idle {r['idle_ratio']}, peak {r['peak_ratio']}"
    )
    return 0
