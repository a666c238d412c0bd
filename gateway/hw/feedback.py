"""What a member sees and hears at the door: LED and buzzer patterns.

Patterns are data (steps of LED colour, buzzer and duration) played with the
injected clock, not with gpiozero's own blink threads, so the simulator and
tests see exactly the same sequence in simulated time.  A new pattern
replaces the one playing; ``fault`` repeats until something else is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import StrEnum

from gpiozero import DigitalOutputDevice
from gpiozero.pins import Factory

from gateway.clock import Clock
from gateway.core.policy import Pattern


class Colour(StrEnum):
    """What a red/green LED pair can show."""

    OFF = "off"
    GREEN = "green"
    RED = "red"
    AMBER = "amber"  # both


@dataclass(frozen=True, slots=True)
class Step:
    """Show ``colour`` with the buzzer on or off for ``seconds``."""

    colour: Colour
    buzz: bool
    seconds: float


#: The patterns, by name.  Distinct by colour *and* by sound, for members who
#: cannot see the LED or cannot hear the buzzer.
PATTERNS: dict[Pattern, tuple[Step, ...]] = {
    # One short beep, green for two seconds.
    Pattern.GRANTED: (Step(Colour.GREEN, True, 0.1), Step(Colour.GREEN, False, 1.9)),
    # Three short beeps, red.
    Pattern.DENIED: (
        Step(Colour.RED, True, 0.1),
        Step(Colour.RED, False, 0.1),
        Step(Colour.RED, True, 0.1),
        Step(Colour.RED, False, 0.1),
        Step(Colour.RED, True, 0.1),
        Step(Colour.RED, False, 0.5),
    ),
    # Two long beeps, amber blinking: "your booking starts soon".
    Pattern.BOOKING_SOON: (
        Step(Colour.AMBER, True, 0.3),
        Step(Colour.OFF, False, 0.2),
        Step(Colour.AMBER, True, 0.3),
        Step(Colour.OFF, False, 0.2),
        Step(Colour.AMBER, False, 1.0),
    ),
    # A rising double chirp, green blinking: "card accepted, now your PIN".
    Pattern.PIN_NEEDED: (
        Step(Colour.GREEN, True, 0.05),
        Step(Colour.OFF, False, 0.05),
        Step(Colour.GREEN, True, 0.05),
        Step(Colour.OFF, False, 0.35),
        Step(Colour.GREEN, False, 0.5),
        Step(Colour.OFF, False, 0.5),
        Step(Colour.GREEN, False, 0.5),
        Step(Colour.OFF, False, 0.5),
    ),
    # One long beep, amber for a second: "card read" (staff enrolling it), neither yes nor no.
    Pattern.CARD_READ: (Step(Colour.AMBER, True, 0.4), Step(Colour.AMBER, False, 0.6)),
    # Slow red blink, silent, repeated while the gateway is at fault.
    Pattern.FAULT: (Step(Colour.RED, False, 0.5), Step(Colour.OFF, False, 0.5)),
}
_REPEATING = {"fault"}


class Feedback:
    """Drives a green LED, a red LED and a buzzer (any may be absent)."""

    def __init__(
        self,
        *,
        factory: Factory,
        clock: Clock,
        green: int | str | None = None,
        red: int | str | None = None,
        buzzer: int | str | None = None,
        active_high: bool = True,
    ) -> None:
        self._clock = clock

        def output(pin: int | str | None) -> DigitalOutputDevice | None:
            if pin is None:
                return None
            return DigitalOutputDevice(
                pin, active_high=active_high, initial_value=False, pin_factory=factory
            )

        self._green, self._red, self._buzzer = output(green), output(red), output(buzzer)
        self._task: asyncio.Task[None] | None = None
        #: The pattern playing, if any.
        self.playing: str | None = None

    async def show(self, pattern: Pattern) -> None:
        """Start ``pattern`` now, replacing whatever is playing."""
        steps = PATTERNS[pattern]
        await self.stop()
        self.playing = pattern
        self._task = asyncio.create_task(self._play(pattern, steps))

    async def stop(self) -> None:
        """Stop any pattern and turn everything off."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set(Colour.OFF, False)
        self.playing = None

    async def _play(self, name: str, steps: tuple[Step, ...]) -> None:
        while True:
            for step in steps:
                self._set(step.colour, step.buzz)
                await self._clock.sleep(step.seconds)
            if name not in _REPEATING:
                break
        self._set(Colour.OFF, False)
        self.playing = None

    def _set(self, colour: Colour, buzz: bool) -> None:
        for device, on in (
            (self._green, colour in (Colour.GREEN, Colour.AMBER)),
            (self._red, colour in (Colour.RED, Colour.AMBER)),
            (self._buzzer, buzz),
        ):
            if device is not None:
                device.value = on

    def close(self) -> None:
        """Turn everything off and release the pins (call after :meth:`stop`)."""
        if self._task is not None:
            self._task.cancel()
        for device in (self._green, self._red, self._buzzer):
            if device is not None:
                device.value = False
                device.close()
