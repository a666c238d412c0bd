"""Serial QR and barcode scanners: :mod:`.framer` (bytes to lines) and :mod:`.reader`."""
