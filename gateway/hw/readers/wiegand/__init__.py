"""Wiegand cards and keypads: :mod:`.codec` (bit frames) and :mod:`.reader` (two GPIOs)."""
