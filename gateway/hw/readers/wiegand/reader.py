"""A Wiegand reader on two GPIO inputs (DATA0, DATA1), framed on the gap between bits.

Readers pulse DATA0 low for a 0 and DATA1 low for a 1, 20-100 us wide and
about 2 ms apart; a frame ends when no bit has come for ``gap`` seconds.
Each bit carries the tick of its falling edge as the pin factory reports it
(lgpio stamps edges in the kernel; the mock factory stamps them when driven),
so two frames that reach a busy event loop together are still told apart by
the silence between them on the wire.  gpiozero calls back from its own
threads, so each bit hops onto the event loop; the end of the last frame is
noticed with the injected clock.  Frames decode with
:func:`gateway.hw.readers.wiegand.codec.decode_frame`; keypad keys are gathered into
a PIN ended by ``#`` (``*`` clears, and an unfinished PIN is dropped after
``pin_timeout`` seconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gpiozero import DigitalInputDevice
from gpiozero.pins import Factory

from gateway.clock import Clock
from gateway.events import Record
from gateway.hw.readers.discards import InputReports
from gateway.hw.readers.wiegand.codec import CardRead, KeyPress, WiegandError, decode_frame

#: Bits kept of one burst: the longest format is 37; longer is noise.
MAX_FRAME_BITS = 64

OnCard = Callable[[CardRead], Awaitable[object]]
OnPin = Callable[[str], Awaitable[object]]


class WiegandReader:
    """Collects bits from DATA0/DATA1 and hands over cards and PINs."""

    #: Wired inputs cannot tell a silent reader from a missing one: always up.
    online = True

    def __init__(
        self,
        reader_id: str,
        *,
        factory: Factory,
        clock: Clock,
        data0: int | str,
        data1: int | str,
        on_card: OnCard,
        on_pin: OnPin,
        record: Record,
        gap: float = 0.025,
        pin_timeout: float = 10.0,
        max_pin: int = 12,
    ) -> None:
        self.reader_id = reader_id
        self._clock = clock
        self._on_card = on_card
        self._on_pin = on_pin
        self._record = record
        self._bad_frames = InputReports(reader_id, "reader_bad_frame", record, clock)
        self.gap = gap
        self.pin_timeout = pin_timeout
        self.max_pin = max_pin
        self._loop = asyncio.get_running_loop()
        self._factory = factory
        #: (bit, tick of its edge), in arrival order.
        self._bits: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        # Lines idle high and are pulled low for a bit.  The devices reserve the
        # pins; the edges are taken from the pins themselves, which report the
        # tick of each edge (gpiozero's Pin.when_changed).
        self._lines = [
            DigitalInputDevice(pin, pull_up=True, pin_factory=factory) for pin in (data0, data1)
        ]
        # Pins hold their callbacks weakly: these references keep them alive.
        self._notifiers = [self._notifier(bit) for bit in (0, 1)]
        for line, notify in zip(self._lines, self._notifiers, strict=True):
            line.pin.edges = "falling"
            line.pin.when_changed = notify
        self._pin = ""
        self._pin_started: float | None = None

    def _notifier(self, bit: int) -> Callable[[float, bool], None]:
        def notify(ticks: float, state: bool) -> None:
            if not state:  # pulled low: one bit
                self._loop.call_soon_threadsafe(self._bits.put_nowait, (bit, ticks))

        return notify

    async def run(self) -> None:
        """Frame bits until cancelled."""
        carried: tuple[int, float] | None = None
        while True:
            bit, last = carried if carried is not None else await self._bits.get()
            carried = None
            frame, length = [bit], 1
            while True:
                try:
                    # The clock decides when the gap is over (simulated in tests).
                    bit, ticks = await _first_bit(self._bits, self._clock, self.gap)
                except TimeoutError:
                    break
                if self._factory.ticks_diff(ticks, last) > self.gap:
                    carried = (bit, ticks)  # the wire was silent: a new frame began
                    break
                length += 1
                if length <= MAX_FRAME_BITS:  # noise without a gap: kept bounded
                    frame.append(bit)
                last = ticks
            await self._frame(frame, length)

    async def _frame(self, bits: list[int], length: int) -> None:
        try:
            if length > MAX_FRAME_BITS:
                raise WiegandError(f"{length}-bit burst: longer than any Wiegand frame")
            read = decode_frame(bits)
        except WiegandError as exc:
            # A noisy cable sends these as fast as it can: one event per interval.
            await self._bad_frames.add(str(exc), bits=length)
            return
        if isinstance(read, CardRead):
            await self._on_card(read)
        else:
            await self._key(read)

    async def _key(self, key: KeyPress) -> None:
        now = self._clock.monotonic()
        if self._pin_started is not None and now - self._pin_started > self.pin_timeout:
            self._pin, self._pin_started = "", None
        if key.key == "*":
            self._pin, self._pin_started = "", None
        elif key.key == "#":
            pin, self._pin, self._pin_started = self._pin, "", None
            if pin:
                await self._on_pin(pin)
        elif len(self._pin) < self.max_pin:
            if not self._pin:
                self._pin_started = now
            self._pin += key.key

    def close(self) -> None:
        """Release the pins."""
        self._bad_frames.close()
        for line in self._lines:
            if line.pin is not None:
                line.pin.when_changed = None
            line.close()


async def _first_bit(
    queue: asyncio.Queue[tuple[int, float]], clock: Clock, gap: float
) -> tuple[int, float]:
    """The next bit, or TimeoutError once ``gap`` seconds of the clock pass without one."""
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    timer = asyncio.ensure_future(clock.sleep(gap))
    try:
        done, _ = await asyncio.wait({getter, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not getter.done():
            getter.cancel()
    if getter in done:
        return getter.result()
    raise TimeoutError
