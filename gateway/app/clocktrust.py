"""Whether the gateway's wall clock can be believed.

Time-bound QR codes (a pass valid until 18:00, an app code made 10 seconds
ago) are only as good as the clock they are checked against.  A Pi has no
battery-backed clock: after a power cut it may boot at the time it last
shut down until NTP corrects it.  Cards keep working on that clock (their
grants are synced data, and refusing every member for a clock problem is
worse), but QR codes that carry their own validity are refused with
``clock_untrusted`` rather than decided on a guess.

The clock is trusted while either

* the kernel says NTP has synchronised it (``adjtimex``), or
* a message the platform signed recently carried a timestamp within
  ``max_skew`` of our clock, and the clock has not been stepped since
  (its offset to the monotonic clock is unchanged).

A signed timestamp *ahead* of our clock by more than ``max_skew`` proves the
clock is behind, and voids the cloud's confirmation.  Timestamps behind ours
prove nothing: a message may have waited in a broker queue.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.events import Record

log = logging.getLogger(__name__)

#: adjtimex() returns this clock state while the kernel considers the clock unsynchronised.
_TIME_ERROR = 5


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


def ntp_synchronised() -> bool | None:
    """True when the kernel reports the clock NTP-synchronised; None if it cannot be asked."""
    libc = _libc()
    if libc is None or not hasattr(libc, "adjtimex"):
        return None
    # struct timex is under 256 bytes on every Linux ABI; zeroed, its
    # ``modes`` field is 0, which makes the call read-only.
    timex = ctypes.create_string_buffer(512)
    state = int(libc.adjtimex(timex))
    if state < 0:
        return None
    return state != _TIME_ERROR


@dataclass(frozen=True, slots=True)
class TrustState:
    """The verdict: ``source`` is ``ntp`` or ``cloud`` when trusted, else why not."""

    trusted: bool
    source: str
    #: Our clock minus the newest signed timestamp, when that is known (seconds).
    skew_s: int | None = None


class ClockTrust:
    """Keeps the evidence for and against the wall clock (see the module docs)."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_skew: float = 60.0,
        confirm_seconds: float = 24 * 3600.0,
        ntp: Callable[[], bool | None] | None = ntp_synchronised,
    ) -> None:
        self._clock = clock
        self.max_skew = max_skew
        self.confirm_seconds = confirm_seconds
        self._ntp = ntp
        #: (monotonic time, wall-minus-monotonic offset) of the last confirmation.
        self._confirmed: tuple[float, float] | None = None
        self._skew: int | None = None
        self._behind = False

    def _offset(self) -> float:
        return self._clock.now().timestamp() - self._clock.monotonic()

    def observe(self, signed_at: int) -> None:
        """A verified platform message was signed at ``signed_at`` (Unix seconds)."""
        skew = self._clock.now().timestamp() - signed_at
        self._skew = round(skew)
        if -self.max_skew <= skew <= self.max_skew:
            self._confirmed = (self._clock.monotonic(), self._offset())
            self._behind = False
        elif skew < -self.max_skew:
            # The platform signed this "in our future": our clock is behind.
            self._confirmed = None
            self._behind = True

    def state(self) -> TrustState:
        """Whether the clock is trusted now, and on what evidence."""
        ntp = self._ntp() if self._ntp is not None else None
        if ntp:
            return TrustState(True, "ntp", self._skew)
        if self._behind:
            return TrustState(False, "behind_platform", self._skew)
        if self._confirmed is not None:
            at, offset = self._confirmed
            if abs(self._offset() - offset) > self.max_skew:
                return TrustState(False, "stepped", self._skew)
            if self._clock.monotonic() - at <= self.confirm_seconds:
                return TrustState(True, "cloud", self._skew)
            return TrustState(False, "unconfirmed", self._skew)
        return TrustState(False, "unsynchronised" if ntp is False else "unconfirmed", self._skew)

    def trusted(self) -> bool:
        """Shorthand for ``state().trusted``."""
        return self.state().trusted


#: How often (seconds) the clock's trust is re-evaluated when nothing else asks
#: (NTP's state, a stepped clock, a confirmation running out); a signed
#: message is looked at as it arrives.
CLOCK_CHECK_INTERVAL = 5.0


class ClockWatch:
    """Records ``clock_trust_changed`` whenever the verdict of a :class:`ClockTrust` changes.

    Asked before every scanned code (:meth:`check`), by its own service as
    soon as a signed message brought new evidence (:meth:`observe`), and every
    :data:`CLOCK_CHECK_INTERVAL` seconds otherwise.
    """

    def __init__(self, trust: ClockTrust, clock: Clock, record: Record) -> None:
        self.trust = trust
        self._clock = clock
        self._record = record
        self._seen: TrustState | None = None
        self._evidence = asyncio.Event()

    def observe(self, iat: int) -> None:
        """A verified platform message signed at ``iat``: weigh it, and have the
        service record what it changed now, not at the next check."""
        self.trust.observe(iat)
        # Most messages change nothing: the service is woken only for a verdict
        # that differs from the one last recorded (a wake per delta, ack and
        # beacon was a measurable part of what each one cost).
        if self._changed(self.trust.state()):
            self._evidence.set()

    def _changed(self, state: TrustState) -> bool:
        seen = self._seen
        return seen is None or (seen.trusted, seen.source) != (state.trusted, state.source)

    async def check(self) -> TrustState:
        """Whether the clock is trusted now; a change is recorded as ``clock_trust_changed``."""
        state = self.trust.state()
        seen = self._seen
        if self._changed(state):
            self._seen = state
            if seen is not None or not state.trusted:
                await self._record(
                    "clock_trust_changed",
                    {"trusted": state.trusted, "source": state.source, "skew_s": state.skew_s},
                )
        return state

    async def run(self) -> None:
        """Check the clock's trust every :data:`CLOCK_CHECK_INTERVAL` seconds, until cancelled."""
        while True:
            self._evidence.clear()  # before checking: evidence arriving meanwhile counts
            await self.check()
            sleep = asyncio.ensure_future(self._clock.sleep(CLOCK_CHECK_INTERVAL))
            evidence = asyncio.ensure_future(self._evidence.wait())
            try:
                await asyncio.wait((sleep, evidence), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                evidence.cancel()
