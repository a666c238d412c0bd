"""``doorgw bench restart``: from ``kill -9`` to serving again, at a large cache.

A real ``doorgw run`` process with a cache of ``--bookings`` bookings is
killed with SIGKILL once it is ready, then started again; the figure is the
time from starting the new process to its ``READY=1`` (systemd's notify
protocol: the cache and outbox are open and checked, the doors locked and
the readers running, so taps are being decided).  The floor is the same
restart with an empty cache, in the same run: Python, the imports and the
daemon's own start-up, without the cache's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.tools.sitegen import build_dataset, write_bench_cache


def _start(config: Path, notify: Path) -> tuple[subprocess.Popen[bytes], float]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.unlink(missing_ok=True)
    sock.bind(str(notify))
    sock.settimeout(120)
    t0 = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and command
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        env={**os.environ, "NOTIFY_SOCKET": str(notify)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not sock.recv(4096).startswith(b"READY=1"):
            pass
    finally:
        sock.close()
    return proc, time.perf_counter() - t0


def _restarts(config: Path, notify: Path, times: int) -> list[float]:
    """Start, kill -9 once ready, start again: the restarts' times to READY."""
    proc, _ = _start(config, notify)
    out = []
    for _ in range(times):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc, took = _start(config, notify)
        out.append(took)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return out


def bench_restart(args: argparse.Namespace) -> int:
    """The ``doorgw bench restart`` command."""
    from sim.broker import Broker

    with tempfile.TemporaryDirectory(prefix="doorgw-bench-restart-") as tmp:
        base = Path(tmp)
        broker = Broker(base / "broker", site="s", gateways=["gw-big", "gw-empty"])
        broker.start()
        try:
            print(f"building a cache of {args.bookings:,} bookings ...", file=sys.stderr)
            ds = build_dataset(args.members, args.bookings, random.Random(5))  # noqa: S311
            big_config = broker.gateway_config("gw-big", base / "gw-big")
            (base / "gw-big").mkdir(mode=0o700, exist_ok=True)
            asyncio.run(write_bench_cache(base / "gw-big" / "cache.sqlite3", ds))
            size = (base / "gw-big" / "cache.sqlite3").stat().st_size
            del ds
            empty_config = broker.gateway_config("gw-empty", base / "gw-empty")
            floor = _restarts(empty_config, base / "notify-empty", args.times)
            big = _restarts(big_config, base / "notify-big", args.times)
        finally:
            broker.stop()
    result: dict[str, Any] = {
        "bookings": args.bookings,
        "cache_mb": round(size / 1e6, 1),
        "restart_to_ready_s": round(statistics.median(big), 2),
        "restart_to_ready_max_s": round(max(big), 2),
        "floor_s": round(statistics.median(floor), 2),
        "ratio": round(statistics.median(big) / statistics.median(floor), 2),
        "restarts": args.times,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"restart     kill -9, then READY again at {args.bookings:,} bookings "
        f"({result['cache_mb']} MB): median {result['restart_to_ready_s']} s, "
        f"longest {result['restart_to_ready_max_s']} s ({args.times} restarts)\n"
        f"floor       the same restart with an empty cache: {result['floor_s']} s\n"
        f"ratio       {result['ratio']}"
    )
    return 0
