"""``doorgw sim fleet``: gateway processes of one site on a real Mosquitto, measured."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.commands.cli import main


def _fleet_processes() -> list[int]:
    """Pids of any fleet gateway or floor process still running."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"sim.fleet_proc" in cmdline and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


def test_fleet_reports_reach_memory_and_cpu_against_its_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sim", "fleet", "--gateways", "3", "--deltas", "3", "--idle", "1"]
    code = main([*args, "--dir", str(tmp_path), "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    data = json.loads(out)
    assert (data["gateways"], data["deltas"]) == (3, 3)
    for key in ("all_p50_ms", "each_p99_ms", "rss_mb", "pss_mb"):
        assert data[key] > 0
        assert data[f"floor_{key}"] > 0
    # CPU time comes in clock ticks (10 ms), so three small deltas may cost "0":
    # what can be checked is that the figures are there and add up (the kernel's
    # share is part of the whole, not beside it).
    assert isinstance(data["cpu_ms_per_delta"], float | int)
    assert data["cpu_system_ms_per_delta"] <= data["cpu_ms_per_delta"]
    assert isinstance(data["floor_cpu_ms_per_delta"], float | int)
    assert data["all_ratio"] == pytest.approx(
        data["all_p50_ms"] / data["floor_all_p50_ms"], abs=0.05
    )
    # Each gateway kept its own files, and every process is gone afterwards.
    for n in (1, 2, 3):
        assert (tmp_path / f"gw-{n:04d}" / "cache.sqlite3").exists()
    assert _fleet_processes() == []


def test_fleet_refuses_a_bad_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sim", "fleet", "--gateways", "0"])
    assert exit_.value.code == 2
    assert "--gateways" in capsys.readouterr().err


def _nats_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "nats-server":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_fleet_on_a_nats_cluster_reports_the_failover_of_a_killed_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(_nats_processes())
    args = ["sim", "fleet", "--cluster", "nats", "--kill-node"]
    args += ["--gateways", "3", "--deltas", "3", "--idle", "1"]
    assert main([*args, "--dir", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["broker"] == "nats"
    kill = data["kill"]
    # gw-0001 started on n1, the node killed; the platform stand-in is on n2.
    assert (kill["killed_node"], kill["gateways_on_node"]) == ("n1", 1)
    assert 0 < kill["failover_p50_s"] <= kill["failover_max_s"] < 120
    assert kill["gateways_caught_up"] == 3
    assert (kill["events_lost"], kill["deltas_during"]) == (0, 3)
    assert kill["after_p50_ms"] > 0
    assert _fleet_processes() == []
    assert set(_nats_processes()) <= before  # the cluster is stopped too


def test_fleet_kills_a_node_only_of_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "fleet", "--kill-node"]) == 2
    assert "--kill-node needs --cluster nats" in capsys.readouterr().err


def test_the_floor_client_takes_a_beacon_ahead_of_it_as_the_delta_it_never_got(
    broker: Any,
) -> None:
    # A cluster node can grant a subscription and never deliver to it; the
    # floor, like a gateway, must then catch up from the next beacon, once.
    cert, key = broker.certs["gw-1"]
    args = [str(broker.port), str(broker.ca_file), str(cert), str(key), "gw-1", "t"]
    echo = subprocess.Popen(
        [sys.executable, "-m", "sim.fleet_proc", "echo", *args],
        cwd=Path(__file__).resolve().parent.parent,
        stderr=subprocess.PIPE,
    )

    async def go() -> list[dict[str, Any]]:
        heard: list[dict[str, Any]] = []
        async with broker.client("cloud", "cloud-test") as cloud:
            await cloud.subscribe("doorgw/v1/gw/gw-1/heartbeat", qos=1)

            async def until(what: dict[str, Any]) -> None:
                async with asyncio.timeout(30):
                    async for message in cloud.messages:
                        heard.append(json.loads(message.payload))
                        if heard[-1] == what:
                            return

            await until({"ready": True})
            beacon = "doorgw/v1/site/t/beacon"
            await cloud.publish("doorgw/v1/site/t/delta", _signed(broker, _delta(3)), qos=1)
            await until({"echo": 3})
            await cloud.publish(beacon, _signed(broker, _beacon(3)), qos=1)  # nothing new
            await cloud.publish(beacon, _signed(broker, _beacon(5)), qos=1)  # 4 and 5 lost
            await until({"echo": 5})
            await cloud.publish(beacon, _signed(broker, _beacon(5)), qos=1)
            await cloud.publish("doorgw/v1/site/t/delta", _signed(broker, _delta(6)), qos=1)
            await until({"echo": 6})
        return heard

    try:
        heard = asyncio.run(go())
    finally:
        echo.terminate()
        _, err = echo.communicate(timeout=10)
    assert heard == [{"ready": True}, {"echo": 3}, {"echo": 5}, {"echo": 6}]
    assert echo.returncode == 0, err.decode()


def _signed(broker: Any, doc: dict[str, Any]) -> bytes:
    return bytes(broker.signer.sign(json.dumps(doc).encode()))


def _delta(version: int) -> dict[str, Any]:
    return {"type": "delta", "site": "t", "version": version, "base": version - 1, "changes": []}


def _beacon(version: int) -> dict[str, Any]:
    return {"type": "beacon", "site": "t", "version": version}


#: A benchmark in miniature: one floor client started as the fleet starts its
#: processes, its pid printed, then nothing until it is killed.
_PARENT = """
import subprocess, sys, time
from sim.fleet_proc import child_options
child = subprocess.Popen(
    [sys.executable, "-m", "sim.fleet_proc", "echo", *sys.argv[1:]],
    stdout=subprocess.DEVNULL, **child_options(),
)
print(child.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has stopped: it waits only for its reaper


def test_a_fleet_process_stops_by_itself_when_its_benchmark_is_killed(broker: Any) -> None:
    # kill -9 of `doorgw sim fleet` must not leave gateways running on the machine.
    cert, key = broker.certs["gw-1"]
    args = [str(broker.port), str(broker.ca_file), str(cert), str(key), "gw-1", "t"]
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, *args],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert _running(child)
        parent.kill()
        parent.wait(10)
        for _ in range(300):
            if not _running(child):
                break
            time.sleep(0.1)
        assert not _running(child), "the floor client outlived its benchmark"
    finally:
        parent.stdout.close()
        if _running(child):
            os.kill(child, 9)
