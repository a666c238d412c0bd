"""The one place that picks gpiozero's real pin factory.

Tests and the simulator pass a pin factory (gpiozero's own ``MockFactory``)
explicitly; the daemon without one gets the real lgpio factory, and a
machine without GPIO is an error, never a silent fall-back to fake pins.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import HardwareError

#: A gpiozero pin factory (gpiozero ships no types).
PinFactory = Any


def real_pin_factory() -> PinFactory:
    """gpiozero's lgpio factory; :class:`HardwareError` where there is no GPIO."""
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the GPIO chip
        raise HardwareError(
            f"doors or Wiegand readers need GPIO, which is not available here: {exc}"
        ) from None
