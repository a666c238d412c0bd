"""One door's hardware: the lock relay, the door contact, the exit button, and alarms.

gpiozero drives the pins; the pin factory is always passed in (the daemon
gives lgpio's, tests give gpiozero's own ``MockFactory``), never taken from
a global default.  Timing uses the injected clock, so a test or the
simulator can hold a door open for an hour in milliseconds.

The lock's *safe state* is locked.  The relay output is created already at
the locked level (``initial_value``), so it never pulses open at start-up,
and :meth:`DoorController.close` returns it to locked.

* fail-secure (electric strike): locked without power, so the relay is
  energised to unlock;
* fail-safe (maglock): unlocked without power, so the relay is energised to
  keep the door locked and released to unlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from enum import StrEnum

from gpiozero import DigitalInputDevice, DigitalOutputDevice
from gpiozero.pins import Factory

from gateway.clock import Clock
from gateway.events import Record

log = logging.getLogger(__name__)


class LockKind(StrEnum):
    """How the lock behaves without power."""

    FAIL_SECURE = "fail_secure"
    FAIL_SAFE = "fail_safe"


class DoorController:
    """Drives one door; call :meth:`run` as a task and :meth:`grant` to let someone in.

    Events recorded: ``door_unlocked``, ``door_locked``, ``door_opened``,
    ``door_closed``, ``door_forced`` (opened while locked, with no exit
    request), ``door_held_open`` (still open ``held_open_seconds`` after it
    opened) and ``door_alarm_cleared``.
    """

    def __init__(
        self,
        door_id: str,
        *,
        factory: Factory,
        clock: Clock,
        record: Record,
        lock_pin: int | str,
        lock_kind: LockKind = LockKind.FAIL_SECURE,
        relay_active_high: bool = True,
        contact_pin: int | str | None = None,
        contact_closed_low: bool = True,
        rex_pin: int | str | None = None,
        unlock_seconds: float = 5.0,
        extended_unlock_seconds: float = 15.0,
        held_open_seconds: float = 30.0,
        rex_grace_seconds: float = 10.0,
    ) -> None:
        self.door_id = door_id
        self._clock = clock
        self._record = record
        self._kind = lock_kind
        self.unlock_seconds = unlock_seconds
        self.extended_unlock_seconds = extended_unlock_seconds
        self.held_open_seconds = held_open_seconds
        self.rex_grace_seconds = rex_grace_seconds
        # Created at the locked level: the relay must never click open at boot.
        self._relay = DigitalOutputDevice(
            lock_pin,
            active_high=relay_active_high,
            initial_value=self._energised(locked=True),
            pin_factory=factory,
        )
        self._contact = (
            None
            if contact_pin is None
            # pull_up: a reed switch to ground reads low when the door is closed.
            else DigitalInputDevice(contact_pin, pull_up=contact_closed_low, pin_factory=factory)
        )
        self._rex = (
            None
            if rex_pin is None
            else DigitalInputDevice(rex_pin, pull_up=True, pin_factory=factory)
        )
        self._events: asyncio.Queue[str] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        for device, name in ((self._contact, "contact"), (self._rex, "rex")):
            if device is not None:
                # gpiozero calls back from its own threads: hop onto the loop here.
                device.when_activated = self._notifier(f"{name}_on")
                device.when_deactivated = self._notifier(f"{name}_off")
        self.locked = True
        #: Unlocks since start: each one a relay cycle (relays wear out by cycles).
        self.relay_cycles = 0
        #: Held unlocked by a door mode (scheduled open hours) rather than a grant.
        self.held = False
        self.alarm: str | None = None
        self._relock: asyncio.Task[None] | None = None
        self._held: asyncio.Task[None] | None = None
        self._rex_at: float | None = None
        self._opened_while_unlocked = False

    def _energised(self, *, locked: bool) -> bool:
        return locked if self._kind is LockKind.FAIL_SAFE else not locked

    def _notifier(self, event: str) -> Callable[[], None]:
        def notify() -> None:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

        return notify

    @property
    def is_open(self) -> bool | None:
        """True when the contact says the door is open (None: no contact fitted)."""
        if self._contact is None:
            return None
        return not self._contact.is_active

    async def grant(
        self, *, extended: bool = False, reason: str = "grant", seconds: float | None = None
    ) -> None:
        """Unlock now for the normal (or extended, or given) time; a repeat extends it."""
        if seconds is None:
            seconds = self.extended_unlock_seconds if extended else self.unlock_seconds
        self._relay.value = self._energised(locked=False)
        if self._relock is not None:
            self._relock.cancel()
        was_locked, self.locked = self.locked, False
        if was_locked:
            self.relay_cycles += 1
        self._opened_while_unlocked = False
        if was_locked:
            await self._record(
                "door_unlocked", {"door": self.door_id, "seconds": seconds, "reason": reason}
            )
        self._relock = asyncio.create_task(self._relock_after(seconds))

    async def _relock_after(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        await self._lock()

    async def set_held(self, held: bool) -> None:
        """Hold the door unlocked (a door mode), or end the hold and lock."""
        if held == self.held:
            return
        self.held = held
        if held:
            if self._relock is not None:
                self._relock.cancel()
                self._relock = None
            self._relay.value = self._energised(locked=False)
            if self.locked:
                self.locked = False
                self.relay_cycles += 1
                await self._record(
                    "door_unlocked", {"door": self.door_id, "seconds": None, "reason": "schedule"}
                )
        else:
            await self._lock()

    async def lock_now(self) -> None:
        """Lock at once, whatever unlock time or hold was running (lockdown)."""
        if self._relock is not None:
            self._relock.cancel()
            self._relock = None
        self.held = False
        await self._lock()

    async def _lock(self) -> None:
        if self.held:
            return  # a door mode holds it open; a grant ending does not lock it
        self._relay.value = self._energised(locked=True)
        if not self.locked:
            self.locked = True
            await self._record("door_locked", {"door": self.door_id})

    async def run(self) -> None:
        """Handle input changes until cancelled; the lock goes to its safe state on exit."""
        try:
            while True:
                event = await self._events.get()
                await self._handle(event)
        finally:
            self._relay.value = self._energised(locked=True)
            self.locked = True

    async def _handle(self, event: str) -> None:
        now = self._clock.monotonic()
        if event == "rex_on":
            self._rex_at = now
            await self._record("exit_requested", {"door": self.door_id})
            await self.grant(reason="exit_request")
        elif event == "contact_off":  # the contact opened
            await self._record("door_opened", {"door": self.door_id})
            exiting = self._rex_at is not None and now - self._rex_at <= self.rex_grace_seconds
            if self.locked and not exiting:
                await self._raise_alarm("door_forced")
            else:
                self._opened_while_unlocked = not self.locked
            self._held = asyncio.create_task(self._held_open_after(self.held_open_seconds))
        elif event == "contact_on":  # the contact closed
            if self._held is not None:
                self._held.cancel()
                self._held = None
            await self._record("door_closed", {"door": self.door_id})
            if self.alarm is not None:
                await self._record(
                    "door_alarm_cleared", {"door": self.door_id, "alarm": self.alarm}
                )
                self.alarm = None
            if self._opened_while_unlocked and not self.locked:
                # Someone went through: lock again now rather than at the timeout.
                if self._relock is not None:
                    self._relock.cancel()
                await self._lock()

    async def _held_open_after(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        # From here on the alarm is raised: a door shutting while it is being
        # recorded must not cancel the recording (the clearing would then report
        # an alarm nobody was told of).
        if self._held is asyncio.current_task():
            self._held = None
        if self.is_open:
            await self._raise_alarm("door_held_open")

    async def _raise_alarm(self, alarm: str) -> None:
        self.alarm = alarm
        log.warning("door %s: %s", self.door_id, alarm)
        await self._record(alarm, {"door": self.door_id})

    def close(self) -> None:
        """Lock, stop timers and release the pins."""
        for task in (self._relock, self._held):
            if task is not None:
                task.cancel()
        self._relay.value = self._energised(locked=True)
        self.locked = True
        for device in (self._relay, self._contact, self._rex):
            if device is not None:
                with contextlib.suppress(Exception):
                    device.close()
