"""Site state the gateway must remember across restarts: lockdown, first staff in,
keypad lockouts.

Kept in ``<data_dir>/site-state.json``, written whole through a temporary
file, flushed to disk and renamed over the old one, so a crash or a power
cut leaves either the old state or the new one, never half of either.  The
cache is not the place for it: the cache can always be rebuilt from a
snapshot, this cannot.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from gateway.core.keypad import Exported
from gateway.errors import CacheError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SiteState:
    """What the doors' modes depend on beyond the synced data."""

    #: Every door locked; only staff members' grants open doors.
    lockdown: bool = False
    #: Who set the lockdown (a staff token's name, a command's id).
    lockdown_by: str | None = None
    #: Per door that opens once staff are in: the site-local date staff last came in.
    staff_in: dict[str, date] = field(default_factory=dict)
    #: Per keypad scope (``keypad:ID``, ``door:ID``, ``site``): its recent wrong PINs,
    #: until when it is locked, and its recent lockouts (Unix seconds).
    keypads: dict[str, Exported] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "v": 1,
            "lockdown": self.lockdown,
            "lockdown_by": self.lockdown_by,
            "staff_in": {door: day.isoformat() for door, day in sorted(self.staff_in.items())},
            "keypads": {
                scope: {
                    "failures": [round(t, 3) for t in failures],
                    "locked_until": None if until is None else round(until, 3),
                    "lockouts": [round(t, 3) for t in lockouts],
                }
                for scope, (failures, until, lockouts) in sorted(self.keypads.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> SiteState:
        """Parse the file's content; ValueError when it is not a state this gateway wrote."""
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a version 1 site state")
        lockdown, by, staff_in = data.get("lockdown"), data.get("lockdown_by"), data.get("staff_in")
        if not isinstance(lockdown, bool) or not (by is None or isinstance(by, str)):
            raise ValueError("lockdown must be true or false, lockdown_by a string or null")
        if not isinstance(staff_in, dict):
            raise ValueError("staff_in must be an object")
        keypads: dict[str, Exported] = {}
        raw_keypads = data.get("keypads", {})  # absent in files from before keypads were kept
        if not isinstance(raw_keypads, dict):
            raise ValueError("keypads must be an object")
        for reader, entry in raw_keypads.items():
            failures, until = entry["failures"], entry["locked_until"]
            lockouts = entry.get("lockouts", [])
            if not isinstance(failures, list) or not (until is None or _is_number(until)):
                raise ValueError(f"keypads.{reader}: failures a list, locked_until a number")
            if not isinstance(lockouts, list) or not all(
                _is_number(t) for t in [*failures, *lockouts]
            ):
                raise ValueError(f"keypads.{reader}: failures and lockouts must be numbers")
            keypads[str(reader)] = (
                tuple(float(t) for t in failures),
                until,
                tuple(float(t) for t in lockouts),
            )
        return cls(
            lockdown, by, {str(k): date.fromisoformat(v) for k, v in staff_in.items()}, keypads
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class SiteStateFile:
    """Reads and writes :class:`SiteState` in one file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> tuple[SiteState, str | None]:
        """The stored state, and why it could not be read (None: it could, or there is none).

        An unreadable file gives the default state: the doors then run in their
        normal modes, and the caller records why.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return SiteState(), None
        except OSError as exc:
            return SiteState(), f"{self.path}: cannot read: {exc.strerror}"
        try:
            return SiteState.from_json(json.loads(raw)), None
        except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
            return SiteState(), f"{self.path}: {exc}"

    def save(self, state: SiteState) -> None:
        """Store ``state`` durably (CacheError if it cannot be written)."""
        data = json.dumps(state.to_json(), indent=1).encode() + b"\n"
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CacheError(f"{self.path}: site state not saved: {exc.strerror or exc}") from exc
