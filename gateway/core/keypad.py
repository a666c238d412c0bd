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

    def export(self, now: float, wall: float) -> dict[str, tuple[tuple[float, ...], float | None]]:
        """The guard's state in wall-clock seconds (monotonic ``now`` is wall ``wall``),
        per reader: the recent wrong PINs, and until when the keypad is locked."""
        out: dict[str, tuple[tuple[float, ...], float | None]] = {}
        for reader in sorted(set(self._failures) | set(self._locked_until)):
            until = self._locked_until.get(reader)
            failures = tuple(wall - (now - t) for t in self._failures.get(reader, ()))
            locked = None if until is None or until <= now else wall + (until - now)
            if failures or locked is not None:
                out[reader] = (failures, locked)
        return out

    def restore(
        self, state: dict[str, tuple[tuple[float, ...], float | None]], now: float, wall: float
    ) -> None:
        """Take back what :meth:`export` gave, after a restart.

        Times from the future (a clock that was stepped back) count as now, so a
        keypad can never be locked for longer than ``lockout`` from here.
        """
        for reader, (failures, locked) in state.items():
            recent = deque(now - min(max(wall - t, 0.0), self.window + 1) for t in sorted(failures))
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if recent:
                self._failures[reader] = recent
            if locked is not None and locked > wall:
                self._locked_until[reader] = now + min(locked - wall, self.lockout)
