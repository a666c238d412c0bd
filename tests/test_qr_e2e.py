"""QR codes end to end: issue -> real QR image -> real decoder -> emulated scanner -> door.

The daemon runs with mock pins, two emulated serial scanners at the front
door and a real cache file; the platform's data arrives as signed messages.
Codes are rendered with segno and read back from the PNG with zxing-cpp,
so what reaches the scanner is what a camera would have seen.
"""

from __future__ import annotations

import asyncio
import io
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import segno
import zxingcpp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero.pins.mock import MockFactory
from PIL import Image

from gateway.app.gateway import Gateway
from gateway.clock import SystemClock
from gateway.config.models import DoorConfig, ScannerReaderConfig, TimeSection, load_config
from gateway.core import qr
from gateway.core.jws import Signer, b64url
from gateway.errors import CacheError
from gateway.hw.readers.scanner.reader import MIN_LINE_INTERVAL
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset
from sim.scanner import SimulatedScanner

from .conftest import base_dataset, gateway_config, until, write_gateway_config

PLATFORM = Signer.generate("platform")
ISSUER = qr.PassIssuer(PLATFORM.key, "platform")
APP_KEY = Ed25519PrivateKey.generate()
LOCK, GREEN, RED = 17, 23, 24


def through_a_camera(text: str) -> str:
    """Render ``text`` as a QR image and decode the image, as a scanner would."""
    png = io.BytesIO()
    segno.make(text, error="m").save(png, kind="png", scale=4, border=4)
    png.seek(0)
    # A QR scanner reads QR codes only: a random image can also hold a pattern
    # that a decoder of every format takes for a 1D barcode (ITF, say).
    found = zxingcpp.read_barcodes(Image.open(png), formats=zxingcpp.BarcodeFormat.QRCode)
    assert [r.format for r in found] == [zxingcpp.BarcodeFormat.QRCode]
    decoded: str = found[0].text
    return decoded


def dataset() -> dict[str, Any]:
    doc = base_dataset()
    # all_m holds a 24/7 plan, so their app code opens whatever the real time is.
    public = APP_KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    doc["credentials"].append(
        {"id": "app-all", "member_id": "all_m", "kind": "app_key", "value": b64url(public)}
    )
    return doc


class Site:
    """One gateway's files and emulated hardware, surviving gateway restarts."""

    def __init__(self, tmp_path: Path) -> None:
        self.factory = MockFactory()
        self.scanners = [SimulatedScanner(tmp_path / f"scanner-{i}") for i in (1, 2)]
        readers = tuple(
            ScannerReaderConfig(id=f"qr-{i}", door="front", kind="scanner", port=str(s.path))
            for i, s in enumerate(self.scanners, 1)
        )
        door = DoorConfig(id="front", lock_pin=LOCK, green_led_pin=GREEN, red_led_pin=RED)
        config = gateway_config(
            tmp_path, PLATFORM, time=TimeSection(use_ntp=False), doors=(door,), readers=readers
        )
        self.config_path = write_gateway_config(tmp_path, config)
        self.cloud = CloudSigner(PLATFORM, "t")

    def gateway(self) -> Gateway:
        # NTP is off in the config: the clock is trusted only on the platform's word.
        return Gateway(load_config(self.config_path), SystemClock(), pin_factory=self.factory)

    async def sync(self, gw: Gateway, doc: dict[str, Any] | None = None) -> None:
        for chunk in self.cloud.snapshot(parse_dataset(doc or dataset())):
            await gw.engine.handle(chunk)
        await gw.engine.wait_snapshot()

    def close(self) -> None:
        for scanner in self.scanners:
            scanner.unplug()


@pytest.fixture
def site(tmp_path: Path) -> Any:
    s = Site(tmp_path)
    yield s
    s.close()


async def scan(gw: Gateway, scanner: SimulatedScanner, text: str) -> dict[str, Any]:
    """Scan ``text`` and return the access event it produced."""
    # What the outbox file holds, not outbox.last_seq: the counter moves only once
    # the append that committed a row resumes, so on a busy machine the previous
    # scan's event can already be readable while last_seq still points before it.
    stored = await gw.outbox.pending(gw.outbox.acked_seq, 100_000)
    before = max([gw.outbox.last_seq, *(e["seq"] for e in stored)])
    # As a person shows codes: the scanner drops one that comes closer after the last.
    await asyncio.sleep(MIN_LINE_INTERVAL)
    scanner.scan(text)
    return await next_access(gw, before)


async def next_access(gw: Gateway, after: int) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            for event in await gw.outbox.pending(after, 1000):
                if event["type"] == "access":
                    data: dict[str, Any] = event["data"]
                    return data
            await asyncio.sleep(0.02)


async def online(gw: Gateway) -> None:
    await until(lambda: all(gw.station.readers_online().values()))


def window(hours: float = 2) -> dict[str, int]:
    now = int(time.time())
    return {"not_before": now - 3600, "not_after": now + int(hours * 3600)}


def test_a_single_use_day_pass_opens_once_even_across_a_restart(site: Site) -> None:
    text = ISSUER.issue(
        site="t", pass_id="dp-once", doors=["front"], max_uses=1, holder="Ada", **window()
    )
    seen = through_a_camera(text)
    assert seen == text

    async def first_run() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)
            await online(gw)
            granted = await scan(gw, site.scanners[0], seen)
            assert (granted["granted"], granted["reason"]) == (True, "granted_pass")
            assert granted["grant"] == {"kind": "pass", "id": "dp-once"}
            assert granted["code"] == {
                "type": "pass",
                "pass": "dp-once",
                "kind": "day_pass",
                "holder": "Ada",
                "use": 1,
            }
            assert granted["reader"] == "qr-1"
            await until(lambda: site.factory.pin(LOCK).state)  # the lock released
            # The same pass, shown to the other scanner (a screenshot passed on).
            again = await scan(gw, site.scanners[1], seen)
            assert (again["granted"], again["reason"]) == (False, "pass_used_up")

    async def after_restart() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)  # a fresh platform message vouches for the clock again
            await online(gw)
            refused = await scan(gw, site.scanners[0], seen)
            assert (refused["granted"], refused["reason"]) == (False, "pass_used_up")

    asyncio.run(first_run())
    asyncio.run(after_restart())


def test_a_revoked_pass_stops_opening_when_the_revocation_arrives(site: Site) -> None:
    text = through_a_camera(
        ISSUER.issue(
            site="t", pass_id="inv-9", kind=qr.PassKind.VISITOR, doors=["front"], **window()
        )
    )

    async def go() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)
            await online(gw)
            assert (await scan(gw, site.scanners[0], text))["reason"] == "granted_pass"
            delta = site.cloud.delta(
                1,
                2,
                [
                    {
                        "op": "upsert",
                        "entity": "revoked_pass",
                        "data": {"id": "inv-9", "until": "2099-01-01T00:00:00Z"},
                    }
                ],
            )
            assert await gw.engine.handle(delta) == "applied"
            assert (await scan(gw, site.scanners[1], text))["reason"] == "pass_revoked"

    asyncio.run(go())


def test_an_app_code_opens_once_and_its_replay_is_refused_even_after_a_restart(
    site: Site,
) -> None:
    code = through_a_camera(qr.app_code(APP_KEY, "app-all", int(time.time())))

    async def first_run() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)
            await online(gw)
            granted = await scan(gw, site.scanners[0], code)
            assert (granted["granted"], granted["reason"]) == (True, "granted_plan")
            assert (granted["member"], granted["credential"]) == ("all_m", "app-all")
            assert granted["code"] == {"type": "app_code", "credential": "app-all"}
            replay = await scan(gw, site.scanners[1], code)
            assert (replay["granted"], replay["reason"]) == (False, "code_replayed")
            assert replay["member"] == "all_m"  # the platform learns whose code was copied

    async def after_restart() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)
            await online(gw)
            replay = await scan(gw, site.scanners[0], code)
            assert replay["reason"] == "code_replayed"
            # A fresh code from the app still works.
            fresh = through_a_camera(qr.app_code(APP_KEY, "app-all", int(time.time())))
            assert (await scan(gw, site.scanners[1], fresh))["reason"] == "granted_plan"

    asyncio.run(first_run())
    asyncio.run(after_restart())


def test_an_old_app_code_and_a_forged_pass_are_refused_and_shown_red(site: Site) -> None:
    stale_code = through_a_camera(qr.app_code(APP_KEY, "app-all", int(time.time()) - 300))
    forged = through_a_camera(
        qr.PassIssuer(Ed25519PrivateKey.generate(), "platform").issue(
            site="t", pass_id="dp-fake", doors=["front"], **window()
        )
    )

    async def go() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)
            await online(gw)
            old = await scan(gw, site.scanners[0], stale_code)
            assert (old["reason"], old["code"]["age_s"] >= 300) == ("code_outside_window", True)
            fake = await scan(gw, site.scanners[1], forged)
            assert (fake["granted"], fake["reason"]) == (False, "code_bad_signature")
            assert fake["code"]["pass"] == "dp-fake"
            await until(lambda: gw.station.feedback["front"].playing == "denied")
            assert site.factory.pin(LOCK).state is False

    asyncio.run(go())


def test_garbage_and_oversized_scanner_input_is_refused_and_the_scanner_keeps_working(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.hw.readers import discards
    from gateway.hw.readers.scanner import reader as scanner_reader

    monkeypatch.setattr(discards, "REPORT_INTERVAL", 0.2)
    good = through_a_camera(ISSUER.issue(site="t", pass_id="dp-ok", doors=["front"], **window()))
    apart = scanner_reader.MIN_LINE_INTERVAL + 0.1  # codes as a person shows them

    async def go() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)
            await online(gw)
            scanner = site.scanners[0]
            before = gw.outbox.last_seq
            scanner.send(b"\x00\x01\xff\xfe binary noise\r\n")
            await asyncio.sleep(apart)
            scanner.send(b"X" * 6000 + b"\r\n")  # beyond any line a scanner sends
            for text in ("DG1:" + "9" * 1500, "4006381333931", "DG1:%%%"):
                # a line longer than any code, a product barcode, our prefix then damage
                await asyncio.sleep(apart)
                scanner.scan(text)
            reasons: list[str] = []
            discarded: list[str] = []

            async def collect() -> bool:
                reasons.clear()
                discarded.clear()
                for event in await gw.outbox.pending(before, 1000):
                    if event["type"] == "access":
                        reasons.append(event["data"]["reason"])
                    elif event["type"] == "reader_input_discarded":
                        discarded.extend(event["data"]["reasons"])
                # What a burst threw away is reported once the burst is over.
                return len(reasons) == 3 and len(discarded) >= 2

            async with asyncio.timeout(20):
                while True:
                    if await collect():
                        break
                    await asyncio.sleep(0.02)
            assert sorted(discarded) == ["not_utf8", "too_long"]
            assert reasons == ["code_unrecognised", "code_unrecognised", "code_malformed"]
            assert gw.station.readers_online() == {"qr-1": True, "qr-2": True}
            assert (await scan(gw, scanner, good))["reason"] == "granted_pass"

    asyncio.run(go())


def test_with_an_untrusted_clock_qr_codes_are_refused_until_the_platform_vouches_for_it(
    site: Site,
) -> None:
    text = through_a_camera(ISSUER.issue(site="t", pass_id="dp-clock", doors=["front"], **window()))

    def ahead() -> datetime:
        return SystemClock().now() + timedelta(minutes=10)

    async def go() -> None:
        gw = site.gateway()
        # The platform's messages say it is ten minutes later than our clock says.
        site.cloud = CloudSigner(PLATFORM, "t", clock_now=ahead)
        async with gw.running():
            await site.sync(gw)
            await online(gw)
            refused = await scan(gw, site.scanners[0], text)
            assert (refused["granted"], refused["reason"]) == (False, "clock_untrusted")
            # The gateway's problem, not the member's: the fault pattern.
            await until(lambda: gw.station.feedback["front"].playing == "fault")
            events = await gw.outbox.pending(0, 1000)
            trust = [e["data"] for e in events if e["type"] == "clock_trust_changed"]
            assert (trust[-1]["trusted"], trust[-1]["source"]) == (False, "behind_platform")
            assert -601 <= trust[-1]["skew_s"] <= -599
            # The clock is corrected (or the platform's was wrong): a fresh beacon agrees.
            site.cloud = CloudSigner(PLATFORM, "t")
            await gw.engine.handle(site.cloud.beacon(1))
            granted = await scan(gw, site.scanners[1], text)
            assert granted["reason"] == "granted_pass"
            events = await gw.outbox.pending(0, 1000)
            trust = [e["data"] for e in events if e["type"] == "clock_trust_changed"]
            assert (trust[-1]["trusted"], trust[-1]["source"]) == (True, "cloud")

    asyncio.run(go())


def test_a_pass_withdrawn_before_the_snapshot_is_refused(site: Site) -> None:
    doc = dataset()
    doc["revoked_passes"] = [{"id": "dp-gone", "until": "2099-01-01T00:00:00Z"}]
    text = through_a_camera(ISSUER.issue(site="t", pass_id="dp-gone", doors=["front"], **window()))

    async def go() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw, doc)
            await online(gw)
            assert (await scan(gw, site.scanners[0], text))["reason"] == "pass_revoked"

    asyncio.run(go())


def test_a_scanner_repeating_the_code_in_view_is_one_presentation(site: Site) -> None:
    text = through_a_camera(ISSUER.issue(site="t", pass_id="dp-held", doors=["front"], **window()))
    other = through_a_camera(qr.app_code(APP_KEY, "app-all", int(time.time())))

    async def go() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)
            await online(gw)
            before = gw.outbox.last_seq
            # Continuous-scan mode: the same code again and again (faster than the
            # scanner's minimum spacing, and spaced), then another code.
            for pause in (0.0, 0.0, MIN_LINE_INTERVAL + 0.1, MIN_LINE_INTERVAL + 0.1):
                await asyncio.sleep(pause)
                site.scanners[0].scan(text)
            await asyncio.sleep(MIN_LINE_INTERVAL + 0.1)
            site.scanners[0].scan(other)
            reasons: list[str] = []
            async with asyncio.timeout(20):
                while "granted_plan" not in reasons:
                    events = await gw.outbox.pending(before, 1000)
                    reasons = [e["data"]["reason"] for e in events if e["type"] == "access"]
                    await asyncio.sleep(0.02)
            assert reasons == ["granted_pass", "granted_plan"]

    asyncio.run(go())


def test_if_uses_cannot_be_recorded_the_door_stays_shut_and_the_scanner_keeps_working(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:

    once = through_a_camera(
        ISSUER.issue(site="t", pass_id="dp-disk", doors=["front"], max_uses=1, **window())
    )

    async def go() -> None:
        async with site.gateway().running() as gw:
            await site.sync(gw)
            await online(gw)

            # A failing SD card cannot be had here; its symptom can: SQLite's
            # error, as the store reports it (tests/test_cache.py checks that).
            async def broken(*args: object) -> int:
                raise CacheError("disk I/O error")

            monkeypatch.setattr(gw.writer, "use_pass", broken)
            refused = await scan(gw, site.scanners[0], once)
            assert (refused["granted"], refused["reason"]) == (False, "code_unrecorded")
            assert refused["code"]["error"] == "disk I/O error"
            await until(lambda: gw.station.feedback["front"].playing == "fault")
            assert site.factory.pin(LOCK).state is False
            monkeypatch.undo()
            assert gw.station.readers_online() == {"qr-1": True, "qr-2": True}
            granted = await scan(gw, site.scanners[1], once)
            assert (granted["reason"], granted["code"]["use"]) == ("granted_pass", 1)

    asyncio.run(go())
