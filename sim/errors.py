"""The simulator's errors, all under :class:`gateway.errors.DoorgwError`."""

from __future__ import annotations

from gateway.errors import DoorgwError


class SimError(DoorgwError):
    """The virtual site cannot be built as asked."""


class ScenarioError(DoorgwError):
    """A scenario file that cannot be run; the message names the step and the field."""


class StuckError(DoorgwError):
    """Something the simulation waited for did not happen in real time."""
