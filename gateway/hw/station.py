"""Everything at the doors one gateway drives: locks, contacts, feedback and readers.

:meth:`Station.open` builds the doors from the config, each lock in its safe
state the moment it exists; :meth:`Station.open_readers` then builds the
readers, wired to the gateway's sink.  Every output is registered for
closing, so a gateway that fails half-way through start-up still leaves its
doors safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from gateway.clock import Clock
from gateway.config.models import Config
from gateway.core.policy import Pattern
from gateway.events import Record
from gateway.hw.door import DoorController, LockKind
from gateway.hw.feedback import Feedback
from gateway.hw.pins import PinFactory, real_pin_factory
from gateway.hw.readers.base import FeedbackReader, Reader, Sink
from gateway.hw.readers.build import ReaderContext, build_reader


class Station:
    """The doors, their feedback and the readers of one gateway."""

    def __init__(self, config: Config, pin_factory: PinFactory | None = None) -> None:
        self.config = config
        self.pin_factory = pin_factory
        #: Driven doors (those with a lock pin), by id.
        self.doors: dict[str, DoorController] = {}
        #: Each driven door's LEDs and buzzer.
        self.feedback: dict[str, Feedback] = {}
        #: Readers that run as tasks, by id.
        self.readers: dict[str, Reader] = {}
        #: Readers with their own LED and beeper, per door.
        self.feedback_readers: dict[str, list[FeedbackReader]] = {}
        #: Problems found while opening, for the gateway to record once it runs.
        self.startup_events: list[tuple[str, dict[str, Any]]] = []

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        pin_factory: PinFactory | None,
        clock: Clock,
        record: Record,
        closing: contextlib.AsyncExitStack,
    ) -> Station:
        """Build every door of ``config``; outputs are closed by ``closing``.

        Without a ``pin_factory``, doors and Wiegand readers get the real GPIO
        (:func:`~gateway.hw.pins.real_pin_factory`), or HardwareError.
        """
        needs_pins = any(d.lock_pin is not None for d in config.doors) or any(
            r.kind == "wiegand" for r in config.readers
        )
        if needs_pins and pin_factory is None:
            pin_factory = real_pin_factory()
        station = cls(config, pin_factory)
        for door in config.doors:
            if door.lock_pin is None:
                continue
            controller = DoorController(
                door.id,
                factory=pin_factory,
                clock=clock,
                record=record,
                lock_pin=door.lock_pin,
                lock_kind=LockKind(door.lock_kind),
                relay_active_high=door.relay_active_high,
                contact_pin=door.contact_pin,
                rex_pin=door.rex_pin,
                unlock_seconds=door.unlock_seconds,
                extended_unlock_seconds=door.extended_unlock_seconds,
                held_open_seconds=door.held_open_seconds,
            )
            station.doors[door.id] = controller
            closing.callback(controller.close)
            feedback = Feedback(
                factory=pin_factory,
                clock=clock,
                green=door.green_led_pin,
                red=door.red_led_pin,
                buzzer=door.buzzer_pin,
            )
            station.feedback[door.id] = feedback
            closing.callback(feedback.close)
        return station

    def open_readers(
        self, *, sink: Sink, clock: Clock, record: Record, closing: contextlib.AsyncExitStack
    ) -> None:
        """Build every reader of the config, handing what they read to ``sink``."""
        ctx = ReaderContext(
            sink=sink,
            record=record,
            clock=clock,
            pin_factory=self.pin_factory,
            osdp_key_file=self.config.osdp_key_file,
            closing=closing,
            startup_events=self.startup_events,
        )
        for cfg in self.config.readers:
            reader = build_reader(cfg, ctx)
            if reader is None:
                continue
            self.readers[cfg.id] = reader
            if isinstance(reader, FeedbackReader):
                self.feedback_readers.setdefault(cfg.door, []).append(reader)

    async def show(self, door_id: str, pattern: Pattern) -> None:
        """Feedback at a door: its LEDs and buzzer, and its readers' own."""
        feedback = self.feedback.get(door_id)
        if feedback is not None:
            await feedback.show(pattern)
        for reader in self.feedback_readers.get(door_id, ()):
            await reader.show(pattern)

    def all_feedback_readers(self) -> Iterator[FeedbackReader]:
        """Every reader with its own LED and beeper, at any door."""
        for readers in self.feedback_readers.values():
            yield from readers

    def readers_online(self) -> dict[str, bool]:
        """Each reader that runs as a task, and whether it is up now (Wiegand: always)."""
        return {reader_id: bool(reader.online) for reader_id, reader in self.readers.items()}

    def door_states(self) -> dict[str, str]:
        """Each configured door as ``locked|unlocked[/open|/closed][/ALARM]``."""
        states = {}
        for door in self.config.doors:
            controller = self.doors.get(door.id)
            if controller is None:
                states[door.id] = "not_driven"
                continue
            parts = ["locked" if controller.locked else "unlocked"]
            if controller.is_open is not None:
                parts.append("open" if controller.is_open else "closed")
            if controller.alarm:
                parts.append(controller.alarm)
            states[door.id] = "/".join(parts)
        return states
