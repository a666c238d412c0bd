"""OSDP readers on RS-485 (libosdp): :mod:`.reader` (the task) and :mod:`.keys`."""
