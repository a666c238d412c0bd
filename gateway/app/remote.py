"""Signed commands from the platform: resync, unlock a door, lockdown.

The sync engine has verified the signature; the rules of acceptance
(expiry, lifetime, what each action needs) are
:func:`gateway.core.policy.command_timing` and
:func:`~gateway.core.policy.command_action_refusal`.  Each command's nonce is
claimed in the cache file, so a replayed command is refused even after a
restart.  Every command ends in one ``command_accepted`` or
``command_refused`` event.
"""

from __future__ import annotations

from typing import Any

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
        clock: Clock,
        writer: CacheWriter,
        events: EventLog,
        station: Station,
        modes: SiteModes,
        engine: SyncEngine,
    ) -> None:
        self._clock = clock
        self._writer = writer
        self._events = events
        self._station = station
        self._modes = modes
        self._engine = engine

    async def handle(self, command: CommandMsg) -> None:
        """Accept and carry out ``command``, or refuse it with a reason."""
        now = int(self._clock.now().timestamp())
        refused = policy.command_timing(command.exp, now)
        if refused is None and not await self._writer.claim_nonce(command.nonce, command.exp, now):
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
