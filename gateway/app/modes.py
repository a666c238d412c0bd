"""Site modes: lockdown, doors held unlocked on a schedule, and the fault lights.

* **Lockdown** locks every door at once; only staff members' grants open
  doors while it lasts (:meth:`SiteModes.set_lockdown`).
* **Scheduled modes**: a door with ``unlocked_schedule`` stands unlocked
  in those site-local hours, optionally only once a staff member has come
  in that day (``unlock_after_first_staff``), and never during a lockdown.
* **Fault lights**: while the gateway cannot grant anything for want of
  data, every door shows the fault pattern between taps.

Lockdown, who came in first today and keypad lockouts outlast restarts:
they are kept in the site state file (:mod:`gateway.store.state`), restored
when the gateway opens (before any reader runs), and saved on every change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from datetime import date
from typing import Any

from gateway.app.freshness import Freshness
from gateway.clock import Clock
from gateway.config.models import Config
from gateway.core.decision import Decision
from gateway.core.keypad import KeypadGuard, Lockout
from gateway.core.localtime import to_local
from gateway.core.policy import Pattern
from gateway.core.schedule import WeeklySchedule
from gateway.errors import CacheError
from gateway.events import Record
from gateway.hw.station import Station
from gateway.store.reader import CacheReader
from gateway.store.state import SiteState, SiteStateFile

log = logging.getLogger(__name__)

#: How often (seconds) the fault lights are brought up to date.
FAULT_CHECK_INTERVAL = 5.0
#: How often (seconds) scheduled door modes are re-evaluated.
DOOR_MODE_INTERVAL = 30.0


class SiteModes:
    """The site-wide and per-door modes of one gateway, and the tasks that keep them."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        cache: CacheReader,
        station: Station,
        freshness: Freshness,
        record: Record,
        state_file: SiteStateFile,
    ) -> None:
        self._config = config
        self._clock = clock
        self._cache = cache
        self._station = station
        self._freshness = freshness
        self._record = record
        self._state_file = state_file
        state, problem = state_file.load()
        #: Lockdown: every door locked, only staff credentials open them.
        self.lockdown = state.lockdown
        self._lockdown_by = state.lockdown_by
        #: The local date a staff member last came in, per door.
        self._staff_in: dict[str, date] = dict(state.staff_in)
        #: Wrong-PIN lockout, per keypad: a restart neither resets nor extends it.
        self.keypads = KeypadGuard()
        self.keypads.restore(state.keypads, clock.monotonic(), clock.now().timestamp())
        self._waits_for_staff = {d.id for d in config.doors if d.unlock_after_first_staff}
        #: What opening found, for the gateway to record once it runs.
        self.startup_events: list[tuple[str, dict[str, Any]]] = []
        if problem is not None:
            self.startup_events.append(("site_state_unreadable", {"detail": problem[:300]}))
        if state.lockdown:
            self.startup_events.append(
                (
                    "mode_changed",
                    {"mode": "lockdown", "by": "restored", "set_by": state.lockdown_by},
                )
            )

    async def _save(self) -> None:
        """Store the modes that must outlast a restart; a failure is recorded, never fatal."""
        keypads = self.keypads.export(self._clock.monotonic(), self._clock.now().timestamp())
        state = SiteState(self.lockdown, self._lockdown_by, dict(self._staff_in), keypads)
        try:
            await asyncio.to_thread(self._state_file.save, state)
        except CacheError as exc:
            log.error("%s", exc)
            await self._record("site_state_not_saved", {"detail": str(exc)[:300]})

    async def set_lockdown(self, on: bool, *, by: str) -> None:
        """Enter or leave lockdown; entering locks every door at once."""
        if on == self.lockdown:
            return
        self.lockdown = on
        self._lockdown_by = by if on else None
        await self._save()
        await self._record("mode_changed", {"mode": "lockdown" if on else "normal", "by": by})
        if on:
            for door in self._station.doors.values():
                await door.lock_now()

    def keypad_allowed(self, reader: str, door: str) -> bool:
        """False while ``reader`` (at ``door``) is locked by wrong PINs."""
        return self.keypads.allowed(reader, door, self._clock.monotonic())

    async def keypad_failed(self, reader: str, door: str) -> Lockout | None:
        """Count a wrong PIN at ``reader`` (saved); the lockout it causes, if any."""
        lockout = self.keypads.failed(reader, door, self._clock.monotonic())
        await self._save()
        return lockout

    async def note_granted(self, decision: Decision) -> None:
        """A door opened for someone: remember a staff member's arrival where it matters."""
        # Only doors that open once staff are in need to know who was staff: the
        # extra lookup stays off the tap path everywhere else.
        if not (
            decision.granted and decision.member_id and decision.door_id in self._waits_for_staff
        ):
            return
        with self._cache.view() as view:
            member, site = view.member(decision.member_id), view.site()
        if member is not None and member.staff and site is not None:
            today = to_local(decision.at, site.tz).date()
            if self._staff_in.get(decision.door_id) != today:
                self._staff_in[decision.door_id] = today
                await self._save()  # once a day per door

    def services(self) -> Iterator[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The tasks that keep the modes: one per scheduled door, and the fault lights."""
        for cfg in self._config.doors:
            if cfg.unlocked_schedule and cfg.id in self._station.doors:
                schedule = WeeklySchedule.parse(list(cfg.unlocked_schedule))

                def run(
                    door_id: str = cfg.id,
                    schedule: WeeklySchedule = schedule,
                    after_staff: bool = cfg.unlock_after_first_staff,
                ) -> Coroutine[Any, Any, None]:
                    return self._door_mode(door_id, schedule, after_staff)

                yield f"door-mode-{cfg.id}", run
        if self._station.feedback or self._station.feedback_readers:
            yield "fault-lights", self._fault_lights

    async def _door_mode(
        self, door_id: str, schedule: WeeklySchedule, after_first_staff: bool
    ) -> None:
        """Hold a door unlocked during its scheduled hours (after the first staff member in)."""
        door = self._station.doors[door_id]
        while True:
            held = False
            with self._cache.view() as view:
                site = view.site()
            if site is not None and not self.lockdown:
                ts = int(self._clock.now().timestamp())
                open_now = schedule.span_at(ts, site.tz, site.closures.__contains__) is not None
                today = to_local(ts, site.tz).date()
                staff_ok = not after_first_staff or self._staff_in.get(door_id) == today
                held = open_now and staff_ok
            if held != door.held:
                await door.set_held(held)
                await self._record(
                    "mode_changed",
                    {
                        "door": door_id,
                        "mode": "scheduled_unlocked" if held else "normal",
                        "by": "schedule",
                    },
                )
            await self._clock.sleep(DOOR_MODE_INTERVAL)

    async def _fault_lights(self) -> None:
        """Show the fault pattern at every door while the gateway is at fault.

        Door LEDs go back to it once a tap's pattern has played; readers with
        their own LED hold it as their lasting state, which taps' patterns
        play over.
        """
        was = False
        while True:
            fault = self._freshness.at_fault()
            for feedback in self._station.feedback.values():
                if fault and feedback.playing is None:
                    await feedback.show(Pattern.FAULT)
                elif not fault and feedback.playing == Pattern.FAULT:
                    await feedback.stop()
            if fault != was:
                for reader in self._station.all_feedback_readers():
                    await (reader.show(Pattern.FAULT) if fault else reader.clear_fault())
            was = fault
            await self._clock.sleep(FAULT_CHECK_INTERVAL)
