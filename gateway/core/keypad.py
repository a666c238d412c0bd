"""Keypad lockout: repeated wrong PINs lock a keypad for a while.

Pure and clock-injected: the daemon asks :meth:`KeypadGuard.allowed` before
deciding a PIN and reports each outcome back.  ``max_failures`` wrong PINs
within ``window`` seconds lock that reader's keypad for ``lockout`` seconds.
"""

from __future__ import annotations

from collections import deque


class KeypadGuard:
    """Counts wrong PINs per reader and says when a keypad is locked."""

    def __init__(
        self, *, max_failures: int = 5, window: float = 300.0, lockout: float = 60.0
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def allowed(self, reader: str, now: float) -> bool:
        """True unless the reader's keypad is locked at monotonic time ``now``."""
        return now >= self._locked_until.get(reader, float("-inf"))

    def failed(self, reader: str, now: float) -> bool:
        """Count a wrong PIN; True when this one locks the keypad."""
        recent = self._failures.setdefault(reader, deque())
        recent.append(now)
        while recent and now - recent[0] > self.window:
            recent.popleft()
        if len(recent) >= self.max_failures:
            recent.clear()
            self._locked_until[reader] = now + self.lockout
            return True
        return False

    def succeeded(self, reader: str) -> None:
        """A right PIN clears the count."""
        self._failures.pop(reader, None)
