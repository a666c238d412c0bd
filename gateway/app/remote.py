"""Signed commands from the platform: resync, unlock a door, lockdown.

The sync engine has verified the signature; the rules of acceptance
(expiry, lifetime, a trusted clock for actions that move doors, what each action needs) are
:func:`gateway.core.policy.command_timing` and
:func:`~gateway.core.policy.command_action_refusal`.  Each command's nonce is
claimed in the cache file, so a replayed command is refused even after a
restart.  Every command ends in one ``command_accepted`` or
``command_refused`` event.
"""

from __future__ import annotations

from typing import Any

from gateway.app.clocktrust import ClockWatch
from gateway.app.eventlog import EventLog
from gateway.app.modes import SiteModes
from gateway.app.sync import SyncEngine
from gateway.clock import Clock
from gateway.core import policy
from gateway.hw.station import Station
from gateway.store.writer import CacheWriter
from gateway.wire.protocol import CommandMsg


class RemoteCommands:
    """Carries out the platform's signed commands at this gateway."""

    def __init__(
        self,
        *,
        command_topic: str,
        clock: Clock,
        writer: CacheWriter,
        events: EventLog,
        station: Station,
        modes: SiteModes,
        engine: SyncEngine,
        clock_watch: ClockWatch,
    ) -> None:
        self._command_topic = command_topic
        self._clock_watch = clock_watch
        self._clock = clock
        self._writer = writer
        # Where the wall clock stood when this process started, by the monotonic
        # clock: a wall clock stepped far ahead must not purge nonces early.
        self._wall_at_start = int(clock.now().timestamp()) - int(clock.monotonic())
        self._events = events
        self._station = station
        self._modes = modes
        self._engine = engine

    async def handle(self, command: CommandMsg, topic: str) -> None:
        """Accept and carry out ``command``, or refuse it with a reason.

        Only the gateway's own command topic carries commands: a signed
        command replayed on a site topic (a beacon's, a delta's) is refused
        (``wrong_topic``).
        """
        now = int(self._clock.now().timestamp())
        refused = "wrong_topic" if topic != self._command_topic else None
        refused = refused or policy.command_timing(command.exp, now)
        # An expiry read on a clock nobody vouches for says nothing: a clock set
        # back would make an old signed unlock current again.  Refused before
        # its nonce is claimed, so the platform may send it again later.
        if (
            refused is None
            and command.action in policy.CLOCK_BOUND_ACTIONS
            and not (await self._clock_watch.check()).trusted
        ):
            refused = "clock_untrusted"
        # Nonces are forgotten only once expired by both clocks: the wall clock,
        # and the wall time the monotonic clock has counted since start.
        forget_before = min(now, self._wall_at_start + int(self._clock.monotonic()))
        if refused is None and not await self._writer.claim_nonce(
            command.nonce, command.exp, forget_before
        ):
            refused = "replayed"
        if refused is None:
            refused = policy.command_action_refusal(
                command.action, door=command.door, on=command.on, driven=self._station.doors
            )
        about: dict[str, Any] = {"command_id": command.command_id, "action": command.action}
        if refused is not None:
            if refused == "door_not_driven":
                about["door"] = command.door
            await self._events.record("command_refused", {**about, "reason": refused})
            return
        if command.action == "unlock":
            about["door"] = command.door
        elif command.action == "lockdown":
            about["on"] = command.on
        await self._events.record("command_accepted", about)
        if command.action == "resync":
            await self._engine.request_resync("command")
        elif command.action == "unlock":
            door = self._station.doors[command.door or ""]
            await door.grant(reason="command", seconds=command.seconds)
        elif command.action == "lockdown":
            assert command.on is not None  # command_action_refusal saw to it
            await self._modes.set_lockdown(command.on, by=f"command {command.command_id}")
