"""What every reader offers the gateway, and where it hands over what it read.

A reader knows its device, not what a card means: each read goes to the
gateway's one :class:`Sink`, with the door and the reader it came from, and
the gateway decides.  Readers that show feedback themselves (OSDP readers
have their own LED and beeper) are also :class:`FeedbackReader`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gateway.core.credentials import CredentialRead
from gateway.core.policy import Pattern


class Sink(Protocol):
    """Where readers hand over what they read: the gateway's presentation pipeline."""

    async def card(self, door_id: str, reader_id: str, read: CredentialRead) -> object:
        """A card (NFC UID, Wiegand number) read at ``reader_id``, which opens ``door_id``."""
        ...

    async def pin(self, door_id: str, reader_id: str, pin: str) -> object:
        """A PIN typed on a keypad, in clear: the gateway digests it at once."""
        ...

    async def code(self, door_id: str, reader_id: str, text: str) -> object:
        """A line a scanner read: a signed pass, an app code, or anything else."""
        ...


class Reader(Protocol):
    """A reader the gateway runs as one of its tasks."""

    reader_id: str

    @property
    def online(self) -> bool:
        """Whether the device answers now."""
        ...

    async def run(self) -> None:
        """Read until cancelled; a device that goes away is reopened, never fatal."""
        ...


@runtime_checkable
class FeedbackReader(Protocol):
    """A reader with its own LED and beeper, which plays the door's feedback too."""

    async def show(self, pattern: Pattern) -> None:
        """Play ``pattern`` (the fault pattern lasts until :meth:`clear_fault`)."""
        ...

    async def clear_fault(self) -> None:
        """End the lasting fault pattern."""
        ...
