"""NXP PN532 NFC readers over UART: :mod:`.codec` (frames) and :mod:`.reader` (the task)."""
