"""How every reconnect loop in the gateway spaces its attempts."""

from __future__ import annotations

import random


def backoff(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": between half and all of the step."""
    step: float = min(high, low * (2.0 ** min(attempt, 30)))
    return step / 2 + rng.uniform(0.0, step / 2)
