"""Keypad lockout: wrong PINs lock a keypad, a door's keypads, or every keypad of the site.

Pure and clock-injected: the daemon asks :meth:`KeypadGuard.allowed` before
deciding a PIN and reports each wrong one with :meth:`KeypadGuard.failed`.
Three budgets are counted at once, each over the last ``window`` seconds:

* per keypad: ``max_failures`` wrong PINs lock that keypad;
* per door: ``max_failures`` wrong PINs on the door's keypads together lock
  them all (two keypads at one door do not double the guesses);
* per site: ``site_failures`` wrong PINs anywhere lock every keypad (going
  from door to door does not multiply them).

Wrong PINs expire only with time: a right PIN does **not** clear them (the
audit entered its own PIN after every four guesses and guessed 720 times in
half an hour).  A lockout lasts ``lockout`` seconds, doubled for each
earlier lockout of the same scope that ended within the last
``escalation_window``, up to ``max_lockout``.

Scopes are named ``keypad:ID``, ``door:ID`` and ``site``; their state
exports to wall-clock seconds so it outlasts restarts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

#: One scope's state in wall-clock seconds: recent wrong PINs, locked until, and the
#: ends of its recent lockouts.
Exported = tuple[tuple[float, ...], float | None, tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class Lockout:
    """A lockout that a wrong PIN just caused."""

    scope: str
    seconds: float
    failures: int


class KeypadGuard:
    """Counts wrong PINs per keypad, door and site, and says when keypads are locked."""

    def __init__(
        self,
        *,
        max_failures: int = 5,
        site_failures: int = 20,
        window: float = 300.0,
        lockout: float = 60.0,
        max_lockout: float = 3600.0,
        escalation_window: float = 86400.0,
    ) -> None:
        self.max_failures = max_failures
        self.site_failures = site_failures
        self.window = window
        self.lockout = lockout
        self.max_lockout = max_lockout
        self.escalation_window = escalation_window
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lockouts: dict[str, deque[float]] = {}

    @staticmethod
    def _scopes(reader: str, door: str) -> tuple[str, str, str]:
        return (f"keypad:{reader}", f"door:{door}", "site")

    def _limit(self, scope: str) -> int:
        return self.site_failures if scope == "site" else self.max_failures

    def allowed(self, reader: str, door: str, now: float) -> bool:
        """True unless ``reader`` (at ``door``) is locked at monotonic time ``now``."""
        return all(
            now >= self._locked_until.get(scope, float("-inf"))
            for scope in self._scopes(reader, door)
        )

    def locked_for(self, reader: str, door: str, now: float) -> float:
        """Seconds until ``reader`` takes PINs again (0: it does now)."""
        until = max(self._locked_until.get(s, now) for s in self._scopes(reader, door))
        return max(0.0, until - now)

    def failed(self, reader: str, door: str, now: float) -> Lockout | None:
        """Count a wrong PIN; the widest lockout it causes, or None."""
        caused = None
        for scope in self._scopes(reader, door):
            recent = self._failures.setdefault(scope, deque())
            recent.append(now)
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if len(recent) < self._limit(scope):
                continue
            count = len(recent)
            recent.clear()
            # Earlier lockouts that ended within the escalation window count.
            earlier = self._lockouts.setdefault(scope, deque())
            while earlier and now - earlier[0] > self.escalation_window:
                earlier.popleft()
            seconds = min(self.lockout * 2 ** len(earlier), self.max_lockout)
            earlier.append(now + seconds)
            self._locked_until[scope] = max(self._locked_until.get(scope, now), now + seconds)
            caused = Lockout(scope, seconds, count)
        return caused

    def export(self, now: float, wall: float) -> dict[str, Exported]:
        """The state in wall-clock seconds (monotonic ``now`` is wall ``wall``)."""

        def walls(times: Iterable[float]) -> tuple[float, ...]:
            return tuple(wall - (now - t) for t in times)

        out: dict[str, Exported] = {}
        for scope in sorted({*self._failures, *self._locked_until, *self._lockouts}):
            until = self._locked_until.get(scope)
            locked = None if until is None or until <= now else wall + (until - now)
            failures = walls(self._failures.get(scope, ()))
            lockouts = walls(self._lockouts.get(scope, ()))
            if failures or locked is not None or lockouts:
                out[scope] = (failures, locked, lockouts)
        return out

    def restore(self, state: dict[str, Exported], now: float, wall: float) -> None:
        """Take back what :meth:`export` gave, after a restart.

        Times from the future (a clock stepped back) count as now, so a lockout
        is never longer from here than ``max_lockout``.
        """

        def monos(times: Iterable[float], keep: float) -> deque[float]:
            ages = sorted(min(max(wall - t, 0.0), keep + 1) for t in times)
            return deque(now - age for age in reversed(ages) if age <= keep)

        for scope, (failures, locked, lockouts) in state.items():
            if recent := monos(failures, self.window):
                self._failures[scope] = recent
            if earlier := monos(lockouts, self.escalation_window):
                self._lockouts[scope] = earlier
            if locked is not None and locked > wall:
                self._locked_until[scope] = now + min(locked - wall, self.max_lockout)
