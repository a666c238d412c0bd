"""Every reason code must be one the decision functions really return during the suite.

The decision functions are wrapped (before any test module binds them by
name) so that each reason they return is noted.  When the whole suite has
run and passed, a reason no test ever got back fails the run, naming it:
deleting a reason's branch from ``decide`` turns the suite red.  Decisions a
test builds by hand do not count; only what ``decide``, ``decide_code``,
``check_code`` and ``settle_code`` return does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from gateway.core import decision, policy
from gateway.core.decision import Reason

#: Reasons returned by the decision functions during this run.
RETURNED: set[Reason] = set()

_F = TypeVar("_F", bound=Callable[..., Any])


def _noting(fn: _F, reason_of: Callable[[Any], Reason | None]) -> _F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        reason = reason_of(result)
        if reason is not None:
            RETURNED.add(reason)
        return result

    return wrapper  # type: ignore[return-value]


def _code_reason(result: Any) -> Reason | None:
    inner = getattr(result, "decision", None)  # a VerifiedAppCode has none yet
    return None if inner is None else inner.reason


decision.decide = _noting(decision.decide, lambda d: d.reason)
decision.decide_code = _noting(decision.decide_code, _code_reason)
decision.check_code = _noting(decision.check_code, _code_reason)
policy.settle_code = _noting(policy.settle_code, _code_reason)


def whole_suite(config: pytest.Config) -> bool:
    """Whether this run is the whole suite, unfiltered (what .ci/run does)."""
    opts = config.option
    paths = [str(a).rstrip("/") for a in config.args]
    return (
        paths in ([], ["tests"], [str(config.rootpath / "tests")])
        and not opts.keyword
        and not opts.markexpr
        and not getattr(opts, "deselect", None)
        and not getattr(opts, "lf", False)
    )


def never_returned() -> list[str]:
    """The reason codes no decision function returned in this run."""
    return sorted(r.value for r in set(Reason) - RETURNED)
