"""A simulated OSDP reader (peripheral device, PD) on the far side of a pty.

It is libosdp's own peripheral-device mode, so the gateway's control panel
talks to a real OSDP stack: secure channel, install mode and KEYSET
included.  Give it a key (the reader was provisioned) or none (a reader
fresh from the box, in install mode).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import osdp

_CAPABILITIES = [
    (osdp.Capability.CommunicationSecurity, 1, 1),
    (osdp.Capability.LEDControl, 1, 1),
    (osdp.Capability.AudibleControl, 1, 1),
    (osdp.Capability.CardDataFormat, 1, 1),
]


class _PtyChannel(osdp.Channel):  # type: ignore[misc]
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.fd, max_bytes)
        except (BlockingIOError, OSError):
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self.fd, buf)
        except (BlockingIOError, OSError):
            return 0

    def flush(self) -> None:
        pass


class SimulatedOsdpReader:
    """Serves one pty master; point the gateway's reader at :attr:`port`."""

    def __init__(self, address: int = 0, key: bytes | None = None) -> None:
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        os.close(slave)
        self.address = address
        #: Commands the control panel sent (LED, buzzer, KEYSET...), as libosdp gives them.
        self.commands: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        flags = [] if key is not None else [osdp.LibFlag.InstallMode]
        self._pd = osdp.PeripheralDevice(
            osdp.PDInfo(address, _PtyChannel(self.master), scbk=key, flags=flags),
            osdp.PDCapabilities(_CAPABILITIES),
            log_level=osdp.LogLevel.Error,
            command_handler=self._command,
        )
        self._pd.start()

    def _command(self, command: dict[str, Any]) -> tuple[int, None]:
        with self._lock:
            self.commands.append(dict(command))
        return 0, None

    @property
    def secure(self) -> bool:
        """True while the secure channel with the control panel is up."""
        return bool(self._pd.is_sc_active())

    def card(self, uid: bytes) -> None:
        """Present a card: its serial number goes to the panel as raw card data."""
        self._submit(osdp.CardFormat.Unspecified, len(uid) * 8, uid)

    def wiegand(self, bits: list[int]) -> None:
        """Present a card as a raw Wiegand bit string (e.g. an encoded 26-bit frame)."""
        data = bytearray((len(bits) + 7) // 8)
        for i, bit in enumerate(bits):
            data[i // 8] |= bit << (7 - i % 8)
        self._submit(osdp.CardFormat.Wiegand, len(bits), bytes(data))

    def _submit(self, fmt: int, length: int, data: bytes) -> None:
        self._pd.submit_event(
            {
                "event": osdp.Event.CardRead,
                "reader_no": 0,
                "format": fmt,
                "direction": 0,
                "length": length,
                "data": data,
            }
        )

    def sent(self, command: int) -> list[dict[str, Any]]:
        """The commands of one kind received so far (e.g. ``osdp.Command.LED``)."""
        with self._lock:
            return [c for c in self.commands if c.get("command") == command]

    def go_silent(self) -> None:
        """Stop answering, the port staying open (a reader that hangs or loses power)."""
        self._pd.stop()

    def resume(self) -> None:
        """Answer again after :meth:`go_silent`."""
        self._pd.start()

    def close(self) -> None:
        """Stop the device and close the pty (as unplugging it would); idempotent."""
        if self.master < 0:
            return
        self._pd.stop()
        os.close(self.master)
        self.master = -1
