"""The one way components report what happened: ``await record(type, data)``.

The daemon passes :meth:`gateway.app.eventlog.EventLog.record`, which stores the
event in the outbox; tests pass a list's append.  Event types and their data
are listed in docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

#: Store one event: its type and a JSON-ready dict.
Record = Callable[[str, dict[str, Any]], Awaitable[object]]
