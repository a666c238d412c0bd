"""``doorgw sim``: a whole virtual site with site life, run live and stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from gateway.commands.cli import main
from sim.live import LiveSite, RichView

from .conftest import base_dataset

ROOT = Path(__file__).resolve().parent.parent


def _delivered(out: str) -> tuple[int, int]:
    """From the summary: events the platform received, and events recorded."""
    line = next(line for line in out.splitlines() if line.startswith("platform"))
    got, _, rest = line.removeprefix("platform  received ").partition(" of ")
    return int(got), int(rest.split()[0])


def test_a_site_morning_runs_and_every_event_reaches_the_platform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sim", "--gateways", "2", "--for", "2h", "--speed", "1200", "--seed", "7"]
    code = main([*args, "--start", "2026-03-10T08:00", "--dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("site shoreditch: 2 gateway(s)")
    accesses = [line for line in lines if " access " in line]
    assert any(" OPENED granted" in line for line in accesses)
    assert any(" shut " in line for line in accesses)
    # Both gateways worked, each on its own doors and files.
    assert {line.split()[1] for line in accesses} == {"gw-1", "gw-2"}
    assert (tmp_path / "gw-1" / "cache.sqlite3").exists()
    assert (tmp_path / "gw-2" / "cache.sqlite3").exists()
    got, recorded = _delivered(out)
    assert got == recorded > 0
    # The platform keeps what it received in its own store, once per (gateway, seq).
    with contextlib.closing(sqlite3.connect(tmp_path / "platform-events.sqlite3")) as db:
        (stored,) = db.execute("SELECT count(*) FROM events").fetchone()
        kinds = {kind for (kind,) in db.execute("SELECT DISTINCT type FROM events")}
    assert stored == got
    assert {"access", "snapshot_applied", "door_opened"} <= kinds
    assert "Tue 10 Mar 08:00 to 10:00" in out


def test_four_gateways_on_the_embedded_broker_deliver_every_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a machine without Mosquitto runs: one gateway per door of the site.
    args = ["sim", "--gateways", "4", "--broker", "embedded", "--for", "1h", "--speed", "1200"]
    code = main([*args, "--start", "2026-03-10T09:00", "--dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert "4 gateway(s), broker embedded" in out
    got, recorded = _delivered(out)
    assert got == recorded > 0


def test_the_live_panel_shows_doors_gateways_and_events(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=150, record=True)
    live = LiveSite(tmp_path, gateways=2, speed=1200, start=datetime(2026, 3, 10, 9, 0), seed=3)

    async def go() -> None:
        with RichView(live, console) as view:
            await live.run(timedelta(minutes=40), view)

    asyncio.run(go())
    # The last picture (left on screen when it stops) shows the whole site.
    last = console.export_text().rsplit("shoreditch", 1)[-1]
    assert "Tue 10 Mar 09:40" in last
    for shown in ("front", "room-3", "studio", "office-12", "gw-1", "gw-2"):
        assert shown in last
    for shown in ("locked", "closed", "qr-front:up", "qr-room-3:up", "0 unsent", "access"):
        assert shown in last


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_the_site_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    command = [sys.executable, "-m", "gateway", "sim", "--plain", "--speed", "600"]
    proc = subprocess.Popen(
        [*command, "--start", "2026-03-10T08:00", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # wait until the site is up and someone has tapped
        if " access " in line or time.monotonic() > deadline:
            break
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "platform  received" in out


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--gateways", "0"], "between 1 and 1000"),
        (["--for", "3x"], "e.g. 8h"),
        (["--speed", "0"], "above 0"),
        (["--start", "tomorrow"], "not an ISO time"),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sim", *args])
    assert exit_.value.code == 2
    assert complaint in capsys.readouterr().err


def test_a_site_of_your_own_runs_from_its_dataset_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test suite's own site: other doors, rooms behind doors of other names.
    site = tmp_path / "site.json"
    site.write_text(json.dumps(base_dataset()))
    args = ["sim", "--site", str(site), "--for", "2h", "--speed", "1200", "--seed", "3"]
    code = main([*args, "--start", "2026-03-10T09:00", "--dir", str(tmp_path / "run")])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert out.startswith("site t: 2 gateway(s)")
    assert " access room1 " in out or " access room2 " in out or " access lab " in out
    got, recorded = _delivered(out)
    assert got == recorded > 0
    assert "note " not in out  # nothing in the script failed for want of the example's names


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ('{"version": 1}', "site"),
    ],
)
def test_a_bad_site_file_or_gateway_count_is_one_clear_error(
    tmp_path: Path, content: str | None, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.json"
    if content is not None:
        site.write_text(content)
    assert main(["sim", "--site", str(site), "--for", "1h"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("doorgw: error:")
    assert complaint in err
    assert main(["sim", "--gateways", "5", "--for", "1h"]) == 2
    assert "this site has 4 doors, so 1 to 4 gateways" in capsys.readouterr().err
