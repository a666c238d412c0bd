"""The processes ``doorgw sim fleet`` starts: one per gateway, as on a Pi.

``python -m sim.fleet_proc gateway CONFIG`` runs the real daemon (``serve``)
on gpiozero mock pins, its door contact shut.  ``python -m sim.fleet_proc
echo ...`` is the benchmark's floor: a bare MQTT client with a gateway's
identity that answers each delta with its version and does nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

#: The fleet gateway's door pins: lock, contact, green, red.
DOOR_PINS = (5, 16, 20, 24)
#: Names the descriptor of the pipe a fleet process watches (:func:`child_options`).
ALIVE_FD = "DOORGW_FLEET_ALIVE_FD"
#: The pipe's ends in the benchmark's process: the read end, handed to every
#: child, and the write end, held open until that process exits.
_pipe: tuple[int, int] | None = None


def child_options() -> dict[str, Any]:
    """``subprocess.Popen`` options for a fleet process: it stops once we are gone.

    The children share the read end of a pipe whose only write end is held
    by this process; when this process ends, however it ends (kill -9
    included), the read end reads end-of-file.  So a child needs no timer to
    find its benchmark gone: asking the parent once a second woke every
    gateway, and every floor client, for nothing, and the CPU figures counted
    those wakeups."""
    global _pipe
    if _pipe is None:
        _pipe = os.pipe()  # neither end is inherited by other children
    return {"pass_fds": (_pipe[0],), "env": {**os.environ, ALIVE_FD: str(_pipe[0])}}


def _orphan_watch() -> None:
    """Stop (as on SIGTERM) when the benchmark that started us is gone."""
    if ALIVE_FD not in os.environ:
        return  # started by hand: stopped by hand
    fd = int(os.environ[ALIVE_FD])
    loop = asyncio.get_running_loop()

    def gone() -> None:
        loop.remove_reader(fd)
        os.kill(os.getpid(), signal.SIGTERM)

    # Nothing is ever written: readable means end-of-file, the writer gone.
    loop.add_reader(fd, gone)


def run_gateway(config_path: Path) -> None:
    """The real daemon, with mock pins standing in for the relay board."""
    from gpiozero.pins.mock import MockFactory

    from gateway.app.serve import serve
    from gateway.clock import SystemClock
    from gateway.config.models import load_config

    factory = MockFactory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def shut_the_door(_: object) -> None:
        # A mock contact reads "open" through its pull-up until driven.
        factory.pin(DOOR_PINS[1]).drive_low()
        _orphan_watch()

    asyncio.run(
        serve(load_config(config_path), SystemClock(), pin_factory=factory, started=shut_the_door)
    )


async def echo(where: str, ca: str, cert: str, key: str, gateway: str, site: str) -> None:
    """Answer every delta on the site's topic with ``{"echo": version}``.

    Only aiomqtt and the standard library: the floor is what any MQTT client
    with this identity costs, so nothing of the gateway is imported.  As any
    client that must not go deaf, it checks its SUBACK (a cluster node electing
    a leader refuses with 0x80) and connects again when a session ends.  And
    as a gateway does (docs/protocol.md, beacon), it takes a beacon ahead of
    the last version it saw as that version reached: a cluster node under load
    can grant a subscription and still never deliver a delta to it, and the
    benchmark, which publishes one delta at a time, would wait for ever.
    """
    import socket
    import ssl

    import aiomqtt

    tls = ssl.create_default_context(cafile=ca)
    tls.load_cert_chain(cert, key)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    prefix = "doorgw/v1"
    reply = f"{prefix}/gw/{gateway}/heartbeat"
    host, _, port = where.rpartition(":")  # HOST:PORT, or a port on loopback
    seen = 0  # the highest version answered, across sessions

    async def session() -> None:
        nonlocal seen
        async with aiomqtt.Client(
            host or "127.0.0.1",
            int(port),
            identifier=f"{gateway}-echo",
            tls_context=tls,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            timeout=10,
        ) as client:
            for leaf in ("delta", "beacon"):
                granted = await client.subscribe(f"{prefix}/site/{site}/{leaf}", qos=1)
                if any(getattr(code, "value", code) >= 0x80 for code in granted):
                    raise aiomqtt.MqttError(f"subscription to {leaf} refused")
            await client.publish(reply, b'{"ready":true}', qos=1)
            async for message in client.messages:
                raw = message.payload if isinstance(message.payload, bytes) else b""
                body = raw.split(b".")[1]
                doc = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
                version = int(doc["version"])
                if doc.get("type") == "beacon" and version <= seen:
                    continue  # the beacon of a version already answered
                seen = max(seen, version)
                await client.publish(reply, json.dumps({"echo": version}).encode(), qos=1)

    async def sessions() -> None:
        while True:
            try:
                await session()
            except aiomqtt.MqttError as exc:
                print(f"echo {gateway}: {exc}; again", file=sys.stderr)
            await asyncio.sleep(0.2)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(sessions())
    _orphan_watch()
    await stop.wait()
    task.cancel()
    # Its session closed before the loop is: a clean exit, no complaint on stderr.
    await asyncio.gather(task, return_exceptions=True)


def main(argv: list[str]) -> int:
    """Entry point: ``gateway CONFIG`` or ``echo [HOST:]PORT CA CERT KEY GATEWAY SITE``."""
    if argv[:1] == ["gateway"] and len(argv) == 2:
        run_gateway(Path(argv[1]))
        return 0
    if argv[:1] == ["echo"] and len(argv) == 7:
        asyncio.run(echo(*argv[1:]))
        return 0
    print("usage: python -m sim.fleet_proc gateway CONFIG | echo [HOST:]PORT CA CERT KEY GW SITE")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
