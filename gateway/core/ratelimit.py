"""A token bucket: at most ``burst`` at once, then ``rate`` per second (pure: time is passed in)."""

from __future__ import annotations


class TokenBucket:
    """Allows short bursts and a steady rate; :meth:`take` says whether one more may pass."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, burst: float, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token at monotonic time ``now``; False (nothing spent) if none is left."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1 - 1e-9:  # time in float steps must not lose a token
            return False
        self._tokens -= 1
        return True
