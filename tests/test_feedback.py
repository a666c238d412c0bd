"""LED and buzzer patterns on gpiozero's MockFactory, in simulated time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gpiozero.pins.mock import MockFactory

from gateway.clock import ManualClock
from gateway.hw.feedback import PATTERNS, Feedback

GREEN, RED, BUZZER = 23, 24, 25


def sample(pattern: str, times: list[float]) -> list[tuple[bool, bool, bool]]:
    """(green, red, buzzer) at each of ``times`` seconds after the pattern starts."""
    factory = MockFactory()
    clock = ManualClock(datetime(2026, 3, 10, 10, tzinfo=UTC))
    out: list[tuple[bool, bool, bool]] = []

    async def go() -> None:
        feedback = Feedback(factory=factory, clock=clock, green=GREEN, red=RED, buzzer=BUZZER)
        await feedback.show(pattern)
        elapsed = 0.0
        for t in times:
            await clock.run_for(t - elapsed, step=0.01)
            elapsed = t
            green, red, buzz = (bool(factory.pin(p).state) for p in (GREEN, RED, BUZZER))
            out.append((green, red, buzz))
        await feedback.stop()
        feedback.close()

    asyncio.run(go())
    return out


def test_granted_is_green_with_one_beep_then_off() -> None:
    assert sample("granted", [0.05, 0.5, 2.5]) == [
        (True, False, True),
        (True, False, False),
        (False, False, False),
    ]


def test_denied_is_red_with_three_beeps() -> None:
    states = sample("denied", [0.05, 0.15, 0.25, 0.35, 0.45, 0.6, 1.5])
    assert [s[2] for s in states[:5]] == [True, False, True, False, True]
    assert all(s[1] and not s[0] for s in states[:6])
    assert states[-1] == (False, False, False)


def test_booking_soon_blinks_amber_and_fault_repeats() -> None:
    assert sample("booking_soon", [0.1, 0.4])[0] == (True, True, True)
    assert sample("booking_soon", [0.1, 0.4])[1] == (False, False, False)
    fault = sample("fault", [0.25, 0.75, 10.25, 10.75])
    assert fault == [
        (False, True, False),
        (False, False, False),
        (False, True, False),
        (False, False, False),
    ]


def test_patterns_differ_in_sound_as_well_as_colour() -> None:
    sounds = {name: tuple(s.buzz for s in steps) for name, steps in PATTERNS.items()}
    beeping = ("granted", "denied", "booking_soon")
    assert len({sounds[name] for name in beeping}) == len(beeping)
    # A card read for enrolment beeps once like a grant, but long: heard apart from it.
    beeps = {name: [s.seconds for s in steps if s.buzz] for name, steps in PATTERNS.items()}
    assert len(beeps["card_read"]) == 1
    assert beeps["card_read"][0] >= 3 * beeps["granted"][0]


def test_a_new_pattern_replaces_the_one_playing() -> None:
    factory = MockFactory()
    clock = ManualClock(datetime(2026, 3, 10, 10, tzinfo=UTC))

    async def go() -> None:
        feedback = Feedback(factory=factory, clock=clock, green=GREEN, red=RED, buzzer=BUZZER)
        await feedback.show("fault")
        await clock.run_for(0.2, step=0.01)
        await feedback.show("granted")
        await clock.run_for(0.05, step=0.01)
        assert feedback.playing == "granted"
        assert (factory.pin(GREEN).state, factory.pin(RED).state) == (True, False)
        await clock.run_for(3, step=0.1)
        assert feedback.playing is None
        feedback.close()

    asyncio.run(go())


def test_every_feedback_pattern_can_be_shown_by_door_leds_and_by_osdp_readers() -> None:
    """A pattern the policy can ask for but a device cannot play would raise at a door."""
    from gateway.core.policy import Pattern
    from gateway.hw.readers.osdp.reader import _PATTERNS as OSDP_PATTERNS

    assert set(PATTERNS) == set(Pattern)
    assert set(OSDP_PATTERNS) == set(Pattern)
