"""The door controller on gpiozero's own MockFactory, in simulated time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.clock import ManualClock
from gateway.hw.door import DoorController, LockKind

LOCK, CONTACT, REX = 17, 27, 22


class Bench:
    """A door on mock pins, with the events it recorded."""

    def __init__(self, **kw: Any) -> None:
        self.factory = MockFactory()
        self.clock = ManualClock(datetime(2026, 3, 10, 10, tzinfo=UTC))
        self.events: list[str] = []
        self.kw = kw

        #: While set, recording waits for it (a slow SD card).
        self.storage_slow: asyncio.Event | None = None

    async def record(self, type_: str, data: dict[str, Any]) -> None:
        if self.storage_slow is not None:
            await self.storage_slow.wait()
        self.events.append(type_)

    def door(self) -> DoorController:
        return DoorController(
            "front",
            factory=self.factory,
            clock=self.clock,
            record=self.record,
            lock_pin=LOCK,
            contact_pin=CONTACT,
            rex_pin=REX,
            **self.kw,
        )

    @property
    def relay(self) -> Any:
        return self.factory.pin(LOCK)

    def close_door(self) -> None:
        self.factory.pin(CONTACT).drive_low()  # reed switch to ground: closed

    def open_door(self) -> None:
        self.factory.pin(CONTACT).drive_high()

    def press_exit(self) -> None:
        self.factory.pin(REX).drive_low()
        self.factory.pin(REX).drive_high()


def run(bench: Bench, body: Callable[[DoorController], Awaitable[None]]) -> None:
    async def go() -> None:
        door = bench.door()
        task = asyncio.create_task(door.run())
        try:
            # The contact's pull-up reads "open" until the switch is wired closed.
            bench.close_door()
            await bench.clock.run_for(0.1)
            bench.events.clear()
            await body(door)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            door.close()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("kind", "active_high", "locked_level", "unlocked_level"),
    [
        (LockKind.FAIL_SECURE, True, False, True),  # strike: energise to unlock
        (LockKind.FAIL_SECURE, False, True, False),  # active-low relay board
        (LockKind.FAIL_SAFE, True, True, False),  # maglock: energised = locked
        (LockKind.FAIL_SAFE, False, False, True),
    ],
)
def test_the_lock_starts_locked_without_a_pulse_and_relocks(
    kind: LockKind, active_high: bool, locked_level: bool, unlocked_level: bool
) -> None:
    bench = Bench(lock_kind=kind, relay_active_high=active_high, unlock_seconds=5)

    async def body(door: DoorController) -> None:
        # The first record is the pin before it was claimed (an input, driving
        # nothing); since it became an output it has only been at the locked level.
        states = [s for _, s in bench.relay.states]
        assert all(s is locked_level for s in states[1:]), states
        assert (bench.relay.function, bench.relay.state) == ("output", locked_level)
        await door.grant()
        assert bench.relay.state is unlocked_level
        await bench.clock.run_for(4.9)
        assert not door.locked
        await bench.clock.run_for(0.2)
        assert door.locked
        assert bench.relay.state is locked_level

    run(bench, body)
    assert bench.events == ["door_unlocked", "door_locked"]
    assert bench.relay.state is locked_level  # and after shutdown


def test_extended_unlock_and_a_repeat_grant_extend_the_time() -> None:
    bench = Bench(unlock_seconds=5, extended_unlock_seconds=20)

    async def body(door: DoorController) -> None:
        await door.grant(extended=True)
        await bench.clock.run_for(15)
        assert not door.locked
        await door.grant()  # five more seconds from now
        await bench.clock.run_for(4.9)
        assert not door.locked
        await bench.clock.run_for(0.2)
        assert door.locked

    run(bench, body)
    assert bench.events == ["door_unlocked", "door_locked"]


def test_walking_through_relocks_on_close() -> None:
    bench = Bench(unlock_seconds=10)

    async def body(door: DoorController) -> None:
        await door.grant()
        bench.open_door()
        await bench.clock.run_for(2)
        assert door.is_open
        bench.close_door()
        await bench.clock.run_for(0.1)
        assert door.locked

    run(bench, body)
    assert bench.events == ["door_unlocked", "door_opened", "door_closed", "door_locked"]


def test_a_door_opened_while_locked_is_forced() -> None:
    bench = Bench()

    async def body(door: DoorController) -> None:
        bench.open_door()
        await bench.clock.run_for(0.1)
        assert door.alarm == "door_forced"
        bench.close_door()
        await bench.clock.run_for(0.1)
        assert door.alarm is None

    run(bench, body)
    assert bench.events == ["door_opened", "door_forced", "door_closed", "door_alarm_cleared"]


def test_leaving_by_the_exit_button_is_not_forced() -> None:
    bench = Bench(unlock_seconds=5)

    async def body(door: DoorController) -> None:
        bench.press_exit()
        await bench.clock.run_for(0.5)
        bench.open_door()
        await bench.clock.run_for(1)
        bench.close_door()
        await bench.clock.run_for(0.1)
        assert door.alarm is None
        assert door.locked

    run(bench, body)
    assert bench.events == [
        "exit_requested",
        "door_unlocked",
        "door_opened",
        "door_closed",
        "door_locked",
    ]


def test_a_held_open_alarm_is_recorded_even_if_the_door_shuts_while_it_is_written() -> None:
    # The door closes in the moment the alarm is being stored: the alarm must still
    # reach the record (before its clearing), not vanish with the cancelled timer.
    bench = Bench(unlock_seconds=5, held_open_seconds=30)

    async def body(door: DoorController) -> None:
        await door.grant()
        bench.open_door()
        await bench.clock.run_for(29.5)
        bench.storage_slow = asyncio.Event()
        await bench.clock.run_for(1)
        assert door.alarm == "door_held_open"
        bench.close_door()
        await bench.clock.run_for(0.1)
        bench.storage_slow.set()
        await bench.clock.run_for(0.1)
        assert door.alarm is None

    run(bench, body)
    assert bench.events[-3:] == ["door_held_open", "door_closed", "door_alarm_cleared"]


def test_a_door_propped_open_raises_held_open_then_clears() -> None:
    bench = Bench(unlock_seconds=5, held_open_seconds=30)

    async def body(door: DoorController) -> None:
        await door.grant()
        bench.open_door()
        await bench.clock.run_for(29.5)
        assert door.alarm is None
        await bench.clock.run_for(1)
        assert door.alarm == "door_held_open"
        bench.close_door()
        await bench.clock.run_for(0.1)
        assert door.alarm is None

    run(bench, body)
    assert bench.events == [
        "door_unlocked",
        "door_opened",
        "door_locked",
        "door_held_open",
        "door_closed",
        "door_alarm_cleared",
    ]
