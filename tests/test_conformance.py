"""``doorgw platform conformance`` against our platform stand-in: real processes, real broker."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from sim.broker import Broker
from sim.cloud import CloudPeer

from .conftest import base_dataset


async def _conformance(broker: Broker, tmp_path: Path, cloud: CloudPeer, *extra: str) -> Any:
    config = broker.gateway_config("gw-2", tmp_path / "config")
    task = asyncio.create_task(cloud.run())
    try:
        await asyncio.wait_for(cloud.connected.wait(), 30)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "gateway", "platform", "conformance", "--config", str(config)),
            *("--state-dir", str(tmp_path / "state"), "--json", *extra),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, json.loads(out)


def test_the_platform_stand_in_passes_every_point(broker: Broker, tmp_path: Path) -> None:
    cloud = broker.cloud_peer(base_dataset())
    cloud.beacon_every = 1.0
    code, report = asyncio.run(
        _conformance(broker, tmp_path, cloud, "--timeout", "20", "--beacon-wait", "10")
    )
    failed = {p["key"]: p["detail"] for p in report["points"] if not p["passed"]}
    assert failed == {}
    assert (code, report["passed"]) == (0, True)
    keys = [p["key"] for p in report["points"]]
    assert keys == ["snapshot", "events", "repeat", "gap", "resume", "beacon", "salvaged", "signed"]


class _ForgetsSalvage(CloudPeer):
    """A platform that stores events but ignores what outbox_salvaged settles."""

    async def _events(self, gateway: str, body: dict[str, Any]) -> None:
        events = [
            {**e, "type": "stored_as_any_other"} if e["type"] == "outbox_salvaged" else e
            for e in body["events"]
        ]
        await super()._events(gateway, {**body, "events": events})


def test_a_platform_that_breaks_the_contract_fails_those_points(
    broker: Broker, tmp_path: Path
) -> None:
    cloud = broker.cloud_peer(base_dataset())
    cloud.__class__ = _ForgetsSalvage  # no beacons either
    code, report = asyncio.run(
        _conformance(broker, tmp_path, cloud, "--timeout", "5", "--beacon-wait", "2")
    )
    failed = sorted(p["key"] for p in report["points"] if not p["passed"])
    assert failed == ["beacon", "salvaged"]
    assert code == 1


def test_no_broker_to_reach_fails_every_point_without_a_traceback(tmp_path: Path) -> None:
    import subprocess

    stopped = Broker(tmp_path / "broker", site="t", gateways=["gw-2"])  # never started
    config = stopped.gateway_config("gw-2", tmp_path / "config")
    args = ["platform", "conformance", "--config", str(config), "--timeout", "2"]
    args += ["--state-dir", str(tmp_path / "state"), "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert [p["passed"] for p in report["points"]] == [False] * 8
    assert {p["detail"] for p in report["points"]} == {"not reached"}
