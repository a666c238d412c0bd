"""Running under systemd: the notify protocol, the watchdog, SIGTERM and the unit files."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app.gateway import Gateway
from gateway.app.serve import serve
from gateway.clock import SystemClock
from gateway.config.models import Config, DoorConfig
from gateway.config.write import config_with, write_config
from gateway.net.sdnotify import Notifier
from gateway.store.outbox import Outbox
from sim.broker import Broker

from .conftest import base_dataset
from .test_mqtt import run_async, until

ROOT = Path(__file__).parent.parent


class NotifySocket:
    """A stand-in for systemd's notify socket: collects datagrams with their arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        # A thread, not the event loop: it must keep listening while the loop is blocked.
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [m for _, m in self.messages]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify")
    yield s
    s.close()


def test_notifications_reach_the_socket_systemd_named(notify: NotifySocket) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(notify.path)})
    assert n.enabled
    n.ready("running: 1 door")
    n.stopping()
    n.close()
    deadline = time.monotonic() + 5
    while len(notify.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert notify.lines() == ["READY=1\nSTATUS=running: 1 door", "STOPPING=1\nSTATUS=stopping"]


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.notify(ready=1) is False
    assert n.watchdog_interval is None
    # A socket that went away is not the gateway's problem either.
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert gone.notify(ready=1) is False
    gone.close()


def test_the_watchdog_period_is_systemds_and_only_for_its_own_process() -> None:
    n = Notifier({"NOTIFY_SOCKET": "@doorgw-test", "WATCHDOG_USEC": "20000000"})
    assert n.watchdog_interval == 10.0  # pinged twice per period
    other = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
    assert Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"}).watchdog_interval is None


def test_the_watchdog_falls_silent_while_the_event_loop_is_blocked(notify: NotifySocket) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "100000"})
    assert n.watchdog_interval == 0.05

    async def go() -> tuple[float, float]:
        task = asyncio.create_task(n.watchdog())
        await asyncio.sleep(0.3)
        blocked_from = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 - the point: a hung loop, a blocking call
        blocked_until = time.monotonic()
        await asyncio.sleep(0.3)
        task.cancel()
        return blocked_from, blocked_until

    blocked_from, blocked_until = asyncio.run(go())
    n.close()
    pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
    assert any(t < blocked_from for t in pings)
    assert any(t > blocked_until for t in pings)
    # Nothing fed the watchdog while the loop was stuck: systemd would restart us.
    assert not [t for t in pings if blocked_from + 0.05 < t < blocked_until - 0.05]


def _one_door(broker: Broker, tmp_path: Path) -> Config:
    """Gateway gw-1 on ``broker``, with one door (lock on pin 17)."""
    settings = broker.gateway_settings("gw-1", tmp_path / "gw-1")
    return config_with(settings, doors=(DoorConfig(id="front", lock_pin=17),))


def test_sigterm_locks_the_doors_keeps_the_events_and_says_offline(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    factory = MockFactory()
    config = _one_door(broker, tmp_path)

    async def go() -> None:
        cloud = broker.cloud_peer(base_dataset())
        cloud_task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        started: list[Gateway] = []
        notifier = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"})
        gateway = asyncio.create_task(
            serve(
                config,
                SystemClock(),
                pin_factory=factory,
                notifier=notifier,
                started=started.append,
            )
        )
        await until(lambda: started, "started")
        await until(lambda: cloud.status.get("gw-1", {}).get("state") == "online", "online")
        lock = factory.pin(17)
        await started[0].station.doors["front"].grant()  # a member was just let in
        assert lock.state is True  # relay energised: unlocked
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(30):
            await gateway
        assert lock.state is False  # fail-secure lock: relay off, locked
        await until(lambda: cloud.status.get("gw-1", {}).get("state") == "offline", "offline")
        delivered.extend(e["type"] for e in cloud.events_of("gw-1"))
        cloud_task.cancel()

    delivered: list[str] = []
    run_async(go())
    lines = notify.lines()
    assert lines[0].startswith("READY=1\nSTATUS=running: 1 door, dataset version")
    assert "WATCHDOG=1" in lines
    assert lines[-1] == "STOPPING=1\nSTATUS=stopping"

    # Every event recorded before the stop was either acknowledged by the platform
    # or is still in the outbox file, to be sent after the next start.
    async def pending() -> list[str]:
        async with Outbox(config.outbox_path, SystemClock()) as outbox:
            return [e["type"] for e in await outbox.pending(0, 1000)]

    kept = asyncio.run(pending())
    assert "door_unlocked" in delivered + kept
    assert "resync_requested" in delivered + kept


def test_a_running_daemon_keeps_its_start_up_objects_out_of_cycle_collection(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    # A full collection walks every object it tracks, on the loop's thread:
    # with the daemon's start-up objects in it, tens of milliseconds a tap waits.
    factory = MockFactory()
    config = _one_door(broker, tmp_path)
    seen: dict[str, int] = {}

    def started(gw: Gateway) -> None:
        tracked = gc.get_objects()
        seen["frozen"] = gc.get_freeze_count()
        seen["tracked"] = len(tracked)
        seen["gateway tracked"] = sum(o is gw for o in tracked)
        seen["config tracked"] = sum(o is gw.config for o in tracked)
        del tracked
        os.kill(os.getpid(), signal.SIGTERM)

    async def go() -> None:
        notifier = Notifier({"NOTIFY_SOCKET": str(notify.path)})
        async with asyncio.timeout(30):
            await serve(
                config, SystemClock(), pin_factory=factory, notifier=notifier, started=started
            )

    assert gc.get_freeze_count() == 0
    run_async(go())
    assert seen["gateway tracked"] == 0
    assert seen["config tracked"] == 0
    assert seen["frozen"] > 10 * seen["tracked"]  # what a full collection still walks
    # Stopped: a process that goes on (the tests, the simulator) gets them back.
    assert gc.get_freeze_count() == 0


UNIT = ROOT / "systemd" / "doorgw.service"


def test_the_unit_is_hardened_as_documented() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=doorgw",
        "SupplementaryGroups=gpio dialout",
        "LimitNOFILE=1024",
    ):
        assert line in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at a stand-in with the same path shape.
    unit = tmp_path / "doorgw.service"
    exe = tmp_path / "doorgw"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit.write_text(UNIT.read_text().replace("/opt/doorgw/.venv/bin/doorgw", str(exe)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "doorgw.service" not in proc.stderr, proc.stderr


def test_doorgw_run_speaks_the_notify_protocol(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    config = broker.gateway_config("gw-1", tmp_path / "gw-1")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "WATCHDOG=1" not in notify.lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    lines = notify.lines()
    assert lines[0] == "READY=1\nSTATUS=running: 0 doors, dataset version None"
    assert "WATCHDOG=1" in lines
    assert lines[-1] == "STOPPING=1\nSTATUS=stopping"


def _run_once(config: Path) -> subprocess.CompletedProcess[str]:
    """``doorgw run`` on ``config`` to its end (for daemons that must refuse to start)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """``proc`` for the ``with`` block; killed and reaped if still running after it."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _start_daemon(config: Path, notify: NotifySocket) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_ready(notify: NotifySocket, count: int) -> None:
    deadline = time.monotonic() + 60
    while sum(m.startswith("READY=1") for m in notify.lines()) < count:
        assert time.monotonic() < deadline, notify.lines()
        time.sleep(0.05)


def test_a_second_daemon_on_one_data_directory_is_refused_and_kill_9_frees_it(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    config = broker.gateway_config("gw-1", tmp_path / "gw-1")
    with reaped(_start_daemon(config, notify)) as first:
        _wait_ready(notify, 1)
        second = _run_once(config)
        assert second.returncode == 2, second.stderr
        assert f"another doorgw (pid {first.pid}) is using {tmp_path / 'gw-1'}" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one was not disturbed
        # However the holder ends, the kernel frees the directory: no stale lock.
        first.kill()
        first.communicate(timeout=30)
        with reaped(_start_daemon(config, notify)) as third:
            _wait_ready(notify, 2)
            third.send_signal(signal.SIGTERM)
            out, _ = third.communicate(timeout=60)
            assert third.returncode == 0, out


def test_doorgw_run_keeps_its_files_to_itself_whatever_the_umask(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    data = tmp_path / "data"  # made by the daemon
    settings = broker.gateway_settings("gw-1", data)
    config = write_config(settings, tmp_path / "doorgw.toml")
    daemon = subprocess.Popen(
        # A shell's usual umask, as when staff start it by hand.
        ["sh", "-c", 'umask 022 && exec "$0" -m gateway run --config "$1"', sys.executable, config],
        env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(notify, 1)
        daemon.send_signal(signal.SIGTERM)
        out, _ = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0, out
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = sorted(p.name for p in data.iterdir())
    assert {"cache.sqlite3", "events.sqlite3", "doorgw.lock"} <= set(files)
    for name in files:
        assert stat.S_IMODE((data / name).stat().st_mode) & 0o077 == 0, name


def test_a_data_directory_that_cannot_be_used_is_one_clear_error(
    broker: Broker, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    settings = broker.gateway_settings("gw-1", tmp_path / "a-file" / "data")
    config = write_config(settings, tmp_path / "doorgw.toml")
    done = _run_once(config)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"doorgw: error: {tmp_path / 'a-file' / 'data'}: cannot use the data directory: "
        "Not a directory"
    )
    assert "Traceback" not in done.stderr


# A daemon whose heartbeat service fails: the first ``fails`` runs (all of them
# when negative) raise once the link is up.  A real process, a real broker, a
# real notify socket; only the failure is made up.
FAILING_HEARTBEAT = """
import sys
import gateway.app.supervisor as supervisor
import gateway.app.uplink as uplink

supervisor.RESTART_MIN = float(sys.argv[1])
supervisor.MAX_FAILURES = int(sys.argv[2])
fails = int(sys.argv[3])
original = uplink.Uplink._heartbeat
calls = 0


async def heartbeat(self):
    global calls
    calls += 1
    if fails < 0 or calls <= fails:
        await self._link.connected.wait()
        raise RuntimeError("injected failure")
    await original(self)


uplink.Uplink._heartbeat = heartbeat
from gateway.commands.cli import main

sys.exit(main(["run", "--config", sys.argv[4]]))
"""


def _failing_daemon(
    config: Path, notify: NotifySocket, *, restart: float, max_failures: int, fails: int
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            FAILING_HEARTBEAT,
            *map(str, (restart, max_failures, fails, config)),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stored_events(data_dir: Path) -> list[tuple[str, dict[str, object]]]:
    import json
    import sqlite3

    with sqlite3.connect(data_dir / "events.sqlite3") as db:
        rows = db.execute("SELECT type, data FROM events ORDER BY seq").fetchall()
    return [(t, json.loads(d)) for t, d in rows]


def test_a_failed_service_is_restarted_and_the_watchdog_waits_while_it_is_down(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    config = broker.gateway_config("gw-1", tmp_path / "gw-1")
    with reaped(_failing_daemon(config, notify, restart=1.5, max_failures=5, fails=1)) as daemon:
        deadline = time.monotonic() + 60
        while not any(m.startswith("STATUS=running") for m in notify.lines()[1:]):
            assert daemon.poll() is None, notify.lines()
            assert time.monotonic() < deadline, notify.lines()
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        out, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, out
    messages = notify.messages
    lines = [m for _, m in messages]
    down = lines.index("STATUS=degraded: heartbeat not running")
    up = next(i for i in range(down, len(lines)) if lines[i].startswith("STATUS=running"))
    # No ping while the heartbeat waited for its restart, pings again after.
    assert "WATCHDOG=1" not in lines[down:up]
    assert messages[up][0] - messages[down][0] >= 1.0  # the restart's backoff
    assert "WATCHDOG=1" in lines[up:]
    failed = [d for t, d in _stored_events(tmp_path / "gw-1") if t == "service_failed"]
    assert failed == [
        {"service": "heartbeat", "error": "RuntimeError: injected failure", "restart_in_s": 1.5}
    ]


def test_an_essential_service_that_cannot_come_back_ends_the_daemon_non_zero(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    config = broker.gateway_config("gw-1", tmp_path / "gw-1")
    with reaped(_failing_daemon(config, notify, restart=0.05, max_failures=2, fails=-1)) as daemon:
        out, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 1, out
    text = out.decode()
    assert (
        "service heartbeat failed 3 times in 300 s; last: RuntimeError: injected failure; "
        "exiting for a restart"
    ) in text
    assert "Traceback" not in text.split("giving up")[-1]
    failed = [
        d["restart_in_s"] for t, d in _stored_events(tmp_path / "gw-1") if t == "service_failed"
    ]
    assert failed == [0.05, 0.1, None]
    assert notify.lines()[-1] == "STOPPING=1\nSTATUS=stopping"


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.6])
def test_sigterm_while_the_link_connects_is_a_clean_stop(
    broker: Broker, tmp_path: Path, notify: NotifySocket, delay: float
) -> None:
    # READY comes once the doors are open, before the broker session: a stop
    # right after it lands in the MQTT connect, subscribe or presence publish.
    config = broker.gateway_config("gw-1", tmp_path / "gw-1")
    with reaped(_start_daemon(config, notify)) as daemon:
        _wait_ready(notify, 1)
        time.sleep(delay)
        daemon.send_signal(signal.SIGTERM)
        out, _ = daemon.communicate(timeout=60)
    text = out.decode()
    assert daemon.returncode == 0, text  # not 1: no task outlived the stop timeout
    assert "Traceback" not in text
    assert "still running" not in text


def test_a_cache_path_that_is_a_directory_is_one_clear_error(
    broker: Broker, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "cache.sqlite3").mkdir(parents=True)
    data.chmod(0o700)
    config = write_config(broker.gateway_settings("gw-1", data), tmp_path / "doorgw.toml")
    done = _run_once(config)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"doorgw: error: {data / 'cache.sqlite3'}: cannot open the cache: "
        "unable to open database file"
    ]
    assert (data / "cache.sqlite3").is_dir()  # not "repaired": it is not a damaged file
