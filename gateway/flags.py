"""An :class:`asyncio.Event` that also raises others: waiting on several at once.

Waiting for the first of several events with :func:`asyncio.wait` costs a task
per event, each started and then cancelled: a dozen steps of the event loop
for every wait.  The publisher waits like that after every event it sends.
A :class:`Flag` forwards its ``set()`` to the events it was told about, so a
waiter on many flags waits on one event of its own (:func:`until_any`) and
looks at the flags when it wakes.
"""

from __future__ import annotations

import asyncio


class Flag(asyncio.Event):
    """An event whose :meth:`set` also sets every event given to :meth:`forward_to`."""

    def __init__(self) -> None:
        super().__init__()
        self._forward: list[asyncio.Event] = []

    def forward_to(self, event: asyncio.Event) -> None:
        """Set ``event`` too whenever this flag is set (and at once, if it is set now)."""
        self._forward.append(event)
        if self.is_set():
            event.set()

    def set(self) -> None:
        """Set this flag, and the events it forwards to."""
        super().set()
        for event in self._forward:
            event.set()


async def until_any(wake: asyncio.Event, *flags: asyncio.Event) -> None:
    """Return once one of ``flags`` is set; each of them must forward to ``wake``.

    ``wake`` belongs to one waiter: it is cleared here before each look.  Woken
    by a flag it was not asked about, it waits on, so a timeout around the call
    runs on and a steady stream of other wakes cannot hold it off.
    """
    while True:
        wake.clear()  # cleared before looking: a flag set after the look wakes us
        if any(flag.is_set() for flag in flags):
            return
        await wake.wait()
