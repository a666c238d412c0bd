"""Site state that outlasts restarts: lockdown and first-staff-in, kept in one file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import pytest

from gateway.commands.cli import main
from gateway.config.models import ApiSection
from gateway.config.write import config_with, write_config
from gateway.net.staff_tokens import TokenStore
from gateway.store.state import SiteState, SiteStateFile
from gateway.tools.ports import free_port
from sim.broker import Broker

from .conftest import base_dataset, until


def test_the_state_file_keeps_what_it_was_given(tmp_path: Path) -> None:
    store = SiteStateFile(tmp_path / "site-state.json")
    assert store.load() == (SiteState(), None)  # nothing yet: normal modes, no complaint
    state = SiteState(True, "staff alice", {"front": date(2026, 3, 10)})
    store.save(state)
    assert store.load() == (state, None)
    assert (tmp_path / "site-state.json").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["site-state.json"]  # no temporary left


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"v": 2, "lockdown": true}', b'{"v": 1, "lockdown": "yes"}', b"[]"],
)
def test_an_unreadable_state_file_gives_normal_modes_and_says_why(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "site-state.json").write_bytes(content)
    state, problem = SiteStateFile(tmp_path / "site-state.json").load()
    assert state == SiteState()
    assert problem is not None
    assert problem.startswith(str(tmp_path / "site-state.json"))


def _gateway_config(broker: Broker, tmp_path: Path, api_port: int) -> Path:
    settings = broker.gateway_settings("gw-1", tmp_path / "gw-1")
    settings = config_with(settings, api=ApiSection(port=api_port))
    return write_config(settings, tmp_path / "gw-1" / "doorgw.toml")


def _explain(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(
        [
            "explain",
            "--config",
            str(config),
            "--door",
            "front",
            "--credential",
            "nfc:04000001",
            "--at",
            "2026-03-10T10:00",
        ]
    )
    return code, capsys.readouterr().out


def test_lockdown_survives_kill_9_and_explain_answers_as_the_doors_do(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = _gateway_config(broker, tmp_path, port)
    token = TokenStore(tmp_path / "gw-1" / "staff-tokens.json").add("it", int(time.time()))
    headers = {"Authorization": f"Bearer {token}"}
    api = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def go() -> None:
        cloud = broker.cloud_peer(base_dataset())
        cloud_task = asyncio.create_task(cloud.run())
        await cloud.connected.wait()
        daemon = start()
        try:
            async with httpx.AsyncClient(base_url=api, headers=headers, timeout=5) as client:

                async def answers() -> bool:
                    try:
                        return (await client.get("/health/ready")).status_code == 200
                    except httpx.TransportError:
                        return False

                async def wait_ready() -> None:
                    deadline = time.monotonic() + 60
                    while not await answers():
                        assert time.monotonic() < deadline, "the gateway never became ready"
                        await asyncio.sleep(0.1)

                await wait_ready()
                # A member's card opens the front door at that instant...
                assert _explain(config, capsys)[0] == 0
                reply = await client.post("/api/lockdown", json={"on": True})
                assert reply.json() == {"lockdown": True}
                # ...not during the lockdown, and explain says so: the doors' own state.
                code, out = _explain(config, capsys)
                assert (code, out.split()[:2]) == (1, ["DENIED", "lockdown"])

                daemon.kill()  # no clean stop: a crash, the watchdog, a power cut
                daemon.wait(timeout=30)
                daemon = start()
                await wait_ready()
                status = (await client.get("/api/status")).json()
                assert status["lockdown"] is True
                events = (await client.get("/api/events", params={"type": "mode_changed"})).json()
                restored = [e["data"] for e in events["events"]]
                assert {"mode": "lockdown", "by": "restored", "set_by": "staff it"} in restored
                access = (await client.get("/api/members/day_m/access")).json()
                assert (access["blocked"], access["windows"]) == ("lockdown", [])
                assert _explain(config, capsys)[0] == 1

                reply = await client.post("/api/lockdown", json={"on": False})
                assert reply.json() == {"lockdown": False}
                assert _explain(config, capsys)[0] == 0
                state = json.loads((tmp_path / "gw-1" / "site-state.json").read_text())
                assert state["lockdown"] is False
            # The platform hears of it too, after the restart, from the outbox.
            await until(
                lambda: any(
                    e["type"] == "mode_changed" and e["data"].get("by") == "restored"
                    for e in cloud.events_of("gw-1")
                ),
                30,
            )
        finally:
            if daemon.poll() is None:
                daemon.terminate()
                daemon.wait(timeout=30)
            cloud_task.cancel()
            await asyncio.gather(cloud_task, return_exceptions=True)

    asyncio.run(go())
