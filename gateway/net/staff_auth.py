"""Who may use the staff API: bearer tokens, the wrong-token limiter, throttled failure events.

:class:`StaffAuth` answers one question for each request, from its
``Authorization`` header and client address alone, before any body is
read (:mod:`gateway.net.http_guard` asks it).  The rules, in order:

- a valid token always gets through, whatever others did from the same address;
- a request with no token is refused and neither counted nor recorded (any
  web page can make a browser send those, so they must not lock staff out);
- a wrong token counts towards its address's lockout; an address with too
  many is answered 429 for a while;
- failures are recorded as ``staff_auth_failed`` at most once per
  :data:`AUTH_EVENT_INTERVAL` for the whole API, each event carrying how many
  it stands for, so a flood cannot fill the outbox.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.net.staff_tokens import TokenStore

#: Client addresses whose wrong tokens are counted at once, at most.
MAX_TRACKED_CLIENTS = 1024
#: At most one ``staff_auth_failed`` event this often (seconds), for the whole API.
AUTH_EVENT_INTERVAL = 10.0


class FailureLimiter:
    """Counts wrong tokens per client address; too many in a window locks that address out.

    Bounded: at most :data:`MAX_TRACKED_CLIENTS` addresses are kept (the
    oldest failing one goes first), so rotating addresses cannot grow it.
    """

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]  # only addresses failing right now are kept
        return times

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until ``client`` may try another token, or None if it may now."""
        times = self._recent(client, now)
        if len(times) < self.max_failures:
            return None
        return times[0] + self.window - now

    def failed(self, client: str, now: float) -> None:
        """One more wrong token from ``client``."""
        times = self._recent(client, now)
        if client not in self._failures and len(self._failures) >= MAX_TRACKED_CLIENTS:
            del self._failures[next(iter(self._failures))]
        self._failures[client] = times
        times.append(now)


class AuthFailureEvents:
    """``staff_auth_failed`` events at a bounded rate, for the whole API.

    One per :data:`AUTH_EVENT_INTERVAL` at most; the next carries
    ``suppressed_before``, how many failures it stands for.
    """

    def __init__(self) -> None:
        self._last: float | None = None
        self._suppressed = 0

    def due(self, now: float) -> int | None:
        """The count to report with an event now, or None to count this one silently."""
        if self._last is not None and now - self._last < AUTH_EVENT_INTERVAL:
            self._suppressed += 1
            return None
        self._last, suppressed, self._suppressed = now, self._suppressed, 0
        return suppressed


@dataclass(frozen=True)
class Refusal:
    """An answer instead of the endpoint: status, message and headers."""

    status: int
    detail: str
    headers: dict[str, str] = field(default_factory=dict)


NEEDS_TOKEN = Refusal(401, "a valid staff token is needed", {"WWW-Authenticate": "Bearer"})


class StaffAuth:
    """Checks one request's token; the name of the token, or the refusal to send."""

    def __init__(
        self,
        tokens: TokenStore,
        *,
        max_failures: int,
        lockout_seconds: float,
        monotonic: Callable[[], float],
        record: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.tokens = tokens
        self.limiter = FailureLimiter(max_failures, lockout_seconds)
        self.events = AuthFailureEvents()
        self._monotonic = monotonic
        self._record = record

    async def check(self, authorization: str, client: str, path: str) -> str | Refusal:
        """``authorization`` is the header's value ("" when absent)."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not token:
            return NEEDS_TOKEN
        name = self.tokens.check(token)
        if name is not None:
            return name
        now = self._monotonic()
        wait = self.limiter.retry_after(client, now)
        if wait is not None:
            return Refusal(
                429,
                "too many wrong tokens from this address; try again later",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        self.limiter.failed(client, now)
        suppressed = self.events.due(now)
        if suppressed is not None:
            await self._record(
                "staff_auth_failed",
                {
                    "client": client,
                    "path": path[:200],
                    "token_given": True,
                    "suppressed_before": suppressed,
                },
            )
        return NEEDS_TOKEN
