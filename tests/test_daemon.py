"""The gateway daemon with no broker reachable: taps, staleness, commands, bad config."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock
from gateway.commands.cli import main
from gateway.config.models import StalenessSection, SyncSection, load_config
from gateway.config.write import config_with
from gateway.core.credentials import parse_read
from gateway.core.decision import Reason
from gateway.core.jws import Signer
from gateway.errors import ConfigError
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset

from .conftest import base_dataset, gateway_config, local, write_gateway_config

SIGNER = Signer.generate("platform")


def write_config(tmp_path: Path, staleness: StalenessSection | None = None) -> Path:
    """A gateway without doors whose broker is unreachable for the whole test."""
    config = gateway_config(tmp_path, SIGNER)
    mqtt = config.mqtt.model_copy(update={"reconnect_min": 0.05}) if config.mqtt else None
    sync = SyncSection(keys_file=tmp_path / "keys.json", staleness=staleness or StalenessSection())
    return write_gateway_config(tmp_path, config_with(config, mqtt=mqtt, sync=sync))


async def synced(gw: Gateway, clock: ManualClock) -> CloudSigner:
    cloud = CloudSigner(SIGNER, "t", clock.now)
    for chunk in cloud.snapshot(parse_dataset(base_dataset())):
        await gw.engine.handle(chunk)
    await gw.engine.wait_snapshot()
    return cloud


def run(tmp_path: Path, body: Any, staleness: StalenessSection | None = None) -> None:
    clock = ManualClock(datetime.fromtimestamp(local("2026-03-10T10:00"), UTC))

    async def go() -> None:
        async with Gateway(load_config(write_config(tmp_path, staleness)), clock).running() as gw:
            await body(gw, clock)

    asyncio.run(go())


async def events(gw: Gateway) -> list[dict[str, Any]]:
    return await gw.outbox.pending(0, 1000)


def test_taps_are_decided_and_recorded_with_no_broker(tmp_path: Path) -> None:
    async def body(gw: Gateway, clock: ManualClock) -> None:
        await synced(gw, clock)
        assert not gw.link.connected.is_set()
        d = await gw.taps.tap(parse_read("nfc:04000001", site_id="t"), "front")
        assert d.reason is Reason.GRANTED_PLAN
        access = [e for e in await events(gw) if e["type"] == "access"]
        assert access[-1]["data"]["reason"] == "granted_plan"
        assert access[-1]["data"]["data_age_s"] == 0
        assert access[-1]["data"]["dataset_version"] == 1

    run(tmp_path, body)


def test_stale_data_stops_grants_per_kind_and_says_so(tmp_path: Path) -> None:
    async def body(gw: Gateway, clock: ManualClock) -> None:
        await synced(gw, clock)
        clock.advance(5 * 3600)  # five hours without a word from the platform
        assert gw.freshness.stale() == frozenset({"pass"})
        card = parse_read("nfc:04000001", site_id="t")
        assert (await gw.taps.tap(card, "front")).granted
        clock.advance(48 * 3600)  # Thu 12 Mar 15:00, inside plan hours
        assert gw.freshness.stale() == frozenset({"pass", "plan", "booking"})
        d = await gw.taps.tap(card, "front")
        assert (d.granted, d.reason) == (False, Reason.DATA_STALE)
        # Staff keep their access: no staff_hours bound is configured.
        staff = await gw.taps.tap(parse_read("nfc:04000011", site_id="t"), "front")
        assert (staff.granted, staff.reason) == (True, Reason.GRANTED_PLAN)
        last = [e for e in await events(gw) if e["type"] == "access"][-1]["data"]
        assert last["data_age_s"] == 53 * 3600

    run(tmp_path, body, StalenessSection(plan_hours=48, booking_hours=48, pass_hours=4))


def test_commands_expired_unsupported_wrong_topic_unaddressed_and_resync(tmp_path: Path) -> None:
    async def body(gw: Gateway, clock: ManualClock) -> None:
        cloud = await synced(gw, clock)
        now = int(clock.now().timestamp())
        await gw.engine.handle(
            cloud.command("gw-1", "unlock", now - 1, door="front", seconds=5), gw.topics.gw_command
        )
        await gw.engine.handle(
            cloud.command("gw-1", "unlock", now + 60, door="front", seconds=5), gw.topics.gw_command
        )
        resync = cloud.command("gw-1", "resync", now + 60)
        await gw.engine.handle(resync, gw.topics.gw_command)
        await gw.engine.handle(
            resync, gw.topics.gw_command
        )  # the same signed command again: a replay
        await gw.engine.handle(cloud.command("gw-1", "resync", now + 86_400), gw.topics.gw_command)
        # A signed command replayed on a site topic, and one naming no gateway.
        await gw.engine.handle(cloud.command("gw-1", "resync", now + 60), gw.topics.site_beacon)
        assert await gw.engine.handle(
            cloud.command(None, "resync", now + 60), gw.topics.gw_command
        ) == ("rejected:malformed")
        got = [
            (e["type"], e["data"].get("reason"))
            for e in await events(gw)
            if e["type"].startswith(("command", "resync"))
        ]
        assert got == [
            ("resync_requested", "no_data"),
            ("command_refused", "expired"),
            ("command_refused", "door_not_driven"),
            ("command_accepted", None),
            ("resync_requested", "command"),
            ("command_refused", "replayed"),
            ("command_refused", "expiry_too_far"),
            ("command_refused", "wrong_topic"),
        ]

    run(tmp_path, body)


def test_a_clock_run_ahead_and_back_does_not_let_a_command_be_replayed(tmp_path: Path) -> None:
    async def body(gw: Gateway, clock: ManualClock) -> None:
        cloud = await synced(gw, clock)
        start = clock.now()
        unlock = cloud.command("gw-1", "resync", int(start.timestamp()) + 600)
        await gw.engine.handle(unlock, gw.topics.gw_command)
        # The wall clock steps a day ahead (a bad NTP answer) while a command comes...
        clock.set(start + timedelta(days=1))
        ahead = cloud.command("gw-1", "resync", int(clock.now().timestamp()) + 60)
        await gw.engine.handle(ahead, gw.topics.gw_command)
        # ...and back: the first command's nonce must still be known.
        clock.set(start + timedelta(seconds=5))
        await gw.engine.handle(unlock, gw.topics.gw_command)
        got = [e["data"].get("reason") for e in await events(gw) if e["type"].startswith("command")]
        assert got == [None, None, "replayed"]

    run(tmp_path, body)


def test_the_daemon_needs_its_sections_and_a_usable_key_set(tmp_path: Path) -> None:
    path = tmp_path / "doorgw.toml"
    path.write_text('[gateway]\nid = "gw-1"\nsite_id = "t"\n')
    with pytest.raises(ConfigError, match=r"\[mqtt\]"):
        Gateway(load_config(path), ManualClock(datetime(2026, 3, 1, tzinfo=UTC)))
    config_path = write_config(tmp_path)
    (tmp_path / "keys.json").write_text('{"keys": [{"kty": "RSA"}]}')
    with pytest.raises(ConfigError, match="only OKP keys on Ed25519"):
        Gateway(load_config(config_path), ManualClock(datetime(2026, 3, 1, tzinfo=UTC)))


def test_doorgw_run_with_a_bad_key_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path)
    (tmp_path / "keys.json").write_text("not json")
    assert main(["run", "--config", str(config_path)]) == 2
    assert "keys.json: not a usable JWKS" in capsys.readouterr().err


def test_replayed_old_messages_do_not_refresh_the_data(tmp_path: Path) -> None:
    async def body(gw: Gateway, clock: ManualClock) -> None:
        cloud = await synced(gw, clock)
        old_beacon = cloud.beacon(1)  # signed now, kept by an attacker
        clock.advance(30 * 3600)  # past the default 24 h bound for passes
        assert await gw.engine.handle(old_beacon) == "current"
        assert gw.freshness.age() == 30 * 3600
        assert "pass" in gw.freshness.stale()
        await gw.engine.handle(cloud.beacon(1))  # a fresh one does
        assert gw.freshness.age() == 0

    run(tmp_path, body)


def test_commands_that_move_doors_wait_for_a_trusted_clock(tmp_path: Path) -> None:
    """A clock set back makes an old signed unlock look current: while nothing vouches
    for the clock, unlock and lockdown are refused (``clock_untrusted``); resync is not."""
    clock = ManualClock(datetime.fromtimestamp(local("2026-03-10T10:00"), UTC))
    config = load_config(write_config(tmp_path))
    config = config_with(config, time=config.time.model_copy(update={"use_ntp": False}))

    async def go() -> None:
        async with Gateway(config, clock).running() as gw:
            await synced(gw, clock)  # its signatures vouch for the clock
            start = clock.now()
            cloud = CloudSigner(SIGNER, "t", lambda: start)  # the platform's clock is right
            clock.set(start - timedelta(hours=6))  # stepped back: no longer believed
            at = int(clock.now().timestamp())
            lock = cloud.command("gw-1", "lockdown", at + 60, on=True)
            await gw.engine.handle(lock, gw.topics.gw_command)
            resync = cloud.command("gw-1", "resync", at + 60)
            await gw.engine.handle(resync, gw.topics.gw_command)
            assert gw.modes.lockdown is False
            clock.set(start)  # back where the platform's signatures put it
            again = cloud.command("gw-1", "lockdown", int(start.timestamp()) + 60, on=True)
            await gw.engine.handle(again, gw.topics.gw_command)
            assert gw.modes.lockdown is True
            got = [
                (e["data"]["action"], e["data"].get("reason"))
                for e in await events(gw)
                if e["type"].startswith("command")
            ]
            assert got == [("lockdown", "clock_untrusted"), ("resync", None), ("lockdown", None)]
            trust = [e["data"] for e in await events(gw) if e["type"] == "clock_trust_changed"]
            assert {"trusted": False, "source": "behind_platform"}.items() <= trust[-2].items()
            assert trust[-1]["trusted"] is True

    asyncio.run(go())
