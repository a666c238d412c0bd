"""When the gateway believes its own clock: NTP, or recent platform-signed timestamps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.app.clocktrust import ClockTrust, ClockWatch, ntp_synchronised
from gateway.clock import ManualClock

START = datetime(2026, 3, 10, 12, tzinfo=UTC)


def now(clock: ManualClock) -> int:
    return int(clock.now().timestamp())


def test_without_ntp_or_platform_messages_the_clock_is_not_trusted() -> None:
    clock = ManualClock(START)
    assert ClockTrust(clock, ntp=None).state().source == "unconfirmed"
    state = ClockTrust(clock, ntp=lambda: False).state()
    assert (state.trusted, state.source) == (False, "unsynchronised")
    assert ClockTrust(clock, ntp=lambda: True).state().source == "ntp"


def test_a_recent_signed_timestamp_close_to_the_clock_confirms_it_for_a_while() -> None:
    clock = ManualClock(START)
    trust = ClockTrust(clock, max_skew=60, confirm_seconds=3600, ntp=lambda: False)
    trust.observe(now(clock) - 3)
    state = trust.state()
    assert (state.trusted, state.source, state.skew_s) == (True, "cloud", 3)
    clock.advance(3599)
    assert trust.trusted()
    clock.advance(2)
    assert trust.state().source == "unconfirmed"


def test_old_messages_prove_nothing_but_a_platform_ahead_of_us_does() -> None:
    clock = ManualClock(START)
    trust = ClockTrust(clock, max_skew=60, ntp=None)
    trust.observe(now(clock) - 3600)  # queued in a broker for an hour
    assert trust.state().source == "unconfirmed"
    trust.observe(now(clock) - 1)
    assert trust.trusted()
    trust.observe(now(clock) + 600)  # the platform signed this 10 minutes "from now"
    state = trust.state()
    assert (state.trusted, state.source, state.skew_s) == (False, "behind_platform", -600)
    trust.observe(now(clock) + 2)  # corrected
    assert trust.trusted()


def test_a_clock_stepped_after_the_confirmation_is_no_longer_trusted() -> None:
    clock = ManualClock(START)
    trust = ClockTrust(clock, max_skew=60, ntp=None)
    trust.observe(now(clock))
    clock.set(clock.now() + timedelta(days=2))  # someone set the date by hand
    assert trust.state().source == "stepped"


def test_the_kernel_can_be_asked_about_ntp() -> None:
    assert ntp_synchronised() in (True, False, None)


def test_a_change_a_signed_message_brings_is_recorded_as_it_arrives() -> None:
    """Not at the next scan or the next periodic check: the clock has not moved."""
    clock = ManualClock(START)
    recorded: list[tuple[str, dict[str, Any]]] = []

    async def record(type_: str, data: dict[str, Any], at: int | None = None) -> None:
        recorded.append((type_, data))

    async def go() -> None:
        watch = ClockWatch(ClockTrust(clock, max_skew=60, ntp=None), clock, record)
        task = asyncio.create_task(watch.run())
        try:
            for _ in range(20):
                await asyncio.sleep(0)
            assert [d["source"] for _, d in recorded] == ["unconfirmed"]
            watch.observe(now(clock))  # the platform agrees with our clock
            for _ in range(20):
                await asyncio.sleep(0)
            assert recorded[-1] == (
                "clock_trust_changed",
                {"trusted": True, "source": "cloud", "skew_s": 0},
            )
            watch.observe(now(clock) + 600)  # the platform is ten minutes ahead
            for _ in range(20):
                await asyncio.sleep(0)
            assert (recorded[-1][1]["trusted"], recorded[-1][1]["source"]) == (
                False,
                "behind_platform",
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


def test_messages_that_change_nothing_do_not_wake_the_watch() -> None:
    """Every delta, ack and beacon is observed; only one that changes the
    verdict wakes the watch's service, so fifty agreeing messages cost no check."""
    clock = ManualClock(START)
    recorded: list[tuple[str, dict[str, Any]]] = []

    async def record(type_: str, data: dict[str, Any], at: int | None = None) -> None:
        recorded.append((type_, data))

    async def spin() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def go() -> None:
        watch = ClockWatch(ClockTrust(clock, max_skew=60, ntp=None), clock, record)
        checks = 0
        check = watch.check

        async def counting() -> Any:
            nonlocal checks
            checks += 1
            return await check()

        watch.check = counting  # type: ignore[method-assign]
        task = asyncio.create_task(watch.run())
        try:
            await spin()
            assert checks == 1
            watch.observe(now(clock))  # the platform agrees: trusted now
            await spin()
            assert checks == 2
            for _ in range(50):
                watch.observe(now(clock))
                await spin()
            assert checks == 2, "an unchanged verdict woke the watch"
            watch.observe(now(clock) + 600)  # this one changes it
            await spin()
            assert checks == 3
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert [d["source"] for _, d in recorded] == ["unconfirmed", "cloud", "behind_platform"]
