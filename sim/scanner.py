"""A simulated serial QR / barcode scanner on a pty, reached through a stable path.

Real scanners appear as ``/dev/ttyACM0`` or, better, under
``/dev/serial/by-id/``; this one makes a pty and points a symlink at it, so
it can be unplugged (the pty closes, the link goes) and plugged back (a new
pty behind the same path), as a USB scanner can.
"""

from __future__ import annotations

import os
from pathlib import Path


class SimulatedScanner:
    """The scanner's side of the pty; point a reader at :attr:`path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master: int | None = None
        self.plug()

    def plug(self) -> None:
        """Connect: a fresh pty behind :attr:`path`."""
        self.master, slave = os.openpty()
        name = os.ttyname(slave)
        os.close(slave)
        self.path.unlink(missing_ok=True)
        self.path.symlink_to(name)

    def unplug(self) -> None:
        """Disconnect: the pty closes and :attr:`path` disappears."""
        if self.master is not None:
            os.close(self.master)
            self.master = None
        self.path.unlink(missing_ok=True)

    def send(self, data: bytes) -> None:
        """Raw bytes, as the scanner would write them (garbage included)."""
        if self.master is None:
            raise OSError("the scanner is unplugged")
        os.write(self.master, data)

    def scan(self, text: str) -> None:
        """One scanned code, terminated as most scanners do (CR LF)."""
        self.send(text.encode() + b"\r\n")
