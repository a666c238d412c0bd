"""The staff status page, rendered by a real headless Chromium against the running daemon."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock

from .test_api import run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


async def chromium(*args: str) -> str:
    """Run headless Chromium to completion; its stdout."""
    assert CHROMIUM is not None, ".ci/run installs Debian's chromium"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        # Lets the page's fetches and first refresh finish before the dump.
        "--virtual-time-budget=10000",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode()


def test_the_status_page_shows_doors_readers_sync_and_events(tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "status.png"

    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        await gw.modes.set_lockdown(True, by="test")
        url = f"{client.base_url}/#token={token}"
        dom = await chromium("--dump-dom", url)
        assert 'data-loaded="yes"' in dom
        assert "gw-1 at t" in dom
        assert "LOCKDOWN." in dom
        assert 'data-door="front"' in dom
        assert "nfc-front" in dom
        assert "mode_changed" in dom  # the lockdown, in the recent events
        assert "Platform link" in dom
        await chromium(f"--screenshot={shot}", "--window-size=1024,900", url)
        # Without a token the page asks for one instead of showing anything.
        bare = await chromium("--dump-dom", str(client.base_url) + "/")
        assert 'id="login"' in bare
        assert 'data-loaded="yes"' not in bare

    run(tmp_path, body)
    image = Image.open(shot)
    assert image.size == (1024, 900)
    # Not a blank page: more than the background's colours are drawn.
    assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 20
