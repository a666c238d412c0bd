"""An OSDP reader on RS-485, with this gateway as control panel (CP), via libosdp.

libosdp (the ``libosdp`` package) speaks the protocol, secure channel
included, in its own refresh thread; this module gives it the serial port
(pyserial, opened by URL like every reader), moves its events onto the event
loop, and applies the gateway's rules on top:

* **Secure channel only.**  Card reads are taken only while the secure
  channel is up on this reader's own key.  Normally libosdp runs with
  ``ENFORCE_SECURE``: a reader that does not hold the key never comes
  online, and is reported ``reader_insecure`` (``key_rejected``) once it is
  clear that it answers but refuses the key.
* **Install mode** (``install_mode = true``, for provisioning only): a reader
  still on the public install-mode key (SCBK-D) is reported
  ``reader_insecure`` (``install_mode_key``), then given its own key with
  KEYSET (``reader_key_set``), and the channel restarts on that key.
* **Feedback** through the reader's own LED and beeper (osdp_LED, osdp_BUZ).

Raw Wiegand card data is decoded with the gateway's own Wiegand formats;
other card data is taken as a card serial number (NFC UID).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import serial

from gateway.clock import Clock
from gateway.core.credentials import CredentialRead, normalize
from gateway.core.model import CredentialKind
from gateway.core.policy import Pattern
from gateway.errors import CredentialFormatError
from gateway.events import Record
from gateway.hw.readers.discards import InputReports
from gateway.hw.readers.serial_port import SerialPortTask, SessionError
from gateway.hw.readers.wiegand.codec import CardRead, WiegandError, decode_frame

OnRead = Callable[[CredentialRead], Awaitable[object]]

# libosdp's constants, by value (its Python module names them the same way).
_EVENT_CARDREAD = 1
_EVENT_NOTIFICATION = 5
_NOTIFY_COMMAND = 0
_NOTIFY_SC_STATUS = 1
_NOTIFY_PD_STATUS = 2
_FORMAT_WIEGAND = 1
_FORMAT_ASCII = 2
_CMD_LED = 2
_CMD_BUZZER = 3
_CMD_KEYSET = 5

#: LED colours of osdp_LED.
_OFF, _RED, _GREEN, _AMBER = 0, 1, 2, 3


class _Pattern(NamedTuple):
    """A feedback pattern as osdp_LED and osdp_BUZ parameters (times in 100 ms units)."""

    on_colour: int
    off_colour: int
    on: int
    off: int
    timer: int  # how long a passing LED pattern lasts
    beeps: int
    beep_on: int = 1
    beep_off: int = 1
    #: The reader's lasting (permanent) LED state rather than a passing one:
    #: passing patterns play over it and the reader goes back to it after.
    lasting: bool = False


#: gateway.hw.feedback's patterns, as the reader plays them.
_PATTERNS: dict[Pattern, _Pattern] = {
    Pattern.GRANTED: _Pattern(_GREEN, _GREEN, 20, 0, 20, beeps=1),
    Pattern.DENIED: _Pattern(_RED, _RED, 20, 0, 20, beeps=3),
    Pattern.BOOKING_SOON: _Pattern(_AMBER, _OFF, 3, 2, 20, beeps=2, beep_on=3, beep_off=2),
    Pattern.PIN_NEEDED: _Pattern(_GREEN, _OFF, 5, 5, 100, beeps=2),
    Pattern.CARD_READ: _Pattern(_AMBER, _AMBER, 10, 0, 10, beeps=1, beep_on=4, beep_off=1),
    Pattern.FAULT: _Pattern(_RED, _OFF, 5, 5, 0, beeps=0, lasting=True),
}
#: The lasting state once the fault is over: LED off.
#: (Steady means an on time and no off time: readers refuse 0 and 0, and a
#: refused command takes libosdp's panel offline.)
_IDLE = _Pattern(_OFF, _OFF, 1, 0, 0, beeps=0, lasting=True)


def card_read(event: dict[str, Any]) -> CredentialRead:
    """The credential in an osdp_RAW / osdp_FMT card read; CredentialFormatError if none."""
    data = bytes(event.get("data") or b"")
    fmt = event.get("format")
    if fmt == _FORMAT_WIEGAND:
        length = int(event.get("length") or 0)
        if not 0 < length <= len(data) * 8:
            raise CredentialFormatError(f"Wiegand card read of {length} bits in {len(data)} bytes")
        bits = [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(length)]
        try:
            read = decode_frame(bits)
        except WiegandError as exc:
            raise CredentialFormatError(str(exc)) from None
        if not isinstance(read, CardRead):
            raise CredentialFormatError("a key press arrived as a card read")
        return CredentialRead(CredentialKind.WIEGAND, read.value)
    if fmt == _FORMAT_ASCII:
        text = data.decode("ascii", errors="replace")
        return CredentialRead(CredentialKind.NFC_UID, normalize(CredentialKind.NFC_UID, text))
    return CredentialRead(CredentialKind.NFC_UID, normalize(CredentialKind.NFC_UID, data.hex()))


class _SerialChannel:
    """libosdp's channel over a pyserial port; a failed port is remembered, not raised.

    These methods are called from libosdp's C code: an exception escaping
    into it leaves the interpreter with an error set and the refresh thread
    wedged, so every exception is caught here (pyserial also raises
    ``termios.error``, which is no OSError) and the session is restarted.
    """

    def __init__(self, port: serial.SerialBase) -> None:
        self.id = 0
        self.port = port
        self.failure: str | None = None

    def read(self, max_bytes: int) -> bytes:
        if self.failure is None:
            try:
                return bytes(self.port.read(max_bytes))
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                self.failure = f"read: {exc}"
        return b""

    def write(self, buf: bytes) -> int:
        if self.failure is None:
            try:
                return int(self.port.write(buf) or 0)
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                self.failure = f"write: {exc}"
        return len(buf)  # dropped: the session is about to restart

    def flush(self) -> None:
        if self.failure is None:
            try:
                self.port.flush()
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                self.failure = f"flush: {exc}"


class OsdpReader(SerialPortTask):
    """One OSDP reader (a peripheral device, PD) on its own serial port."""

    def __init__(
        self,
        reader_id: str,
        url: str,
        *,
        address: int,
        key: bytes,
        on_read: OnRead,
        record: Record,
        clock: Clock,
        install_mode: bool = False,
        baudrate: int = 9600,
        sc_timeout: float = 8.0,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            reader_id,
            url,
            record=record,
            clock=clock,
            baudrate=baudrate,
            read_timeout=0,  # libosdp polls the channel; reads must not block
            retry_min=retry_min,
            retry_max=retry_max,
            rng=rng,
        )
        self.address = address
        self.install_mode = install_mode
        self.sc_timeout = sc_timeout
        self._key = key
        self._on_read = on_read
        self._cp: Any = None
        #: True while the secure channel is up on this reader's own key.
        self.secure = False
        #: The reader's lasting LED state (fault, or idle).
        self._lasting = _IDLE
        # A reader sending bad card data as fast as it can is one event per interval.
        self._discards = InputReports(reader_id, "reader_input_discarded", record, clock)
        self._bad_frames = InputReports(reader_id, "reader_bad_frame", record, clock)

    async def _session(self, port: serial.SerialBase) -> None:
        import osdp  # imported here: only gateways with OSDP readers need libosdp

        channel = _SerialChannel(port)
        flags = [osdp.LibFlag.EnableNotification]
        if not self.install_mode:
            flags.append(osdp.LibFlag.EnforceSecure)
        info = osdp.PDInfo(self.address, channel, scbk=self._key, flags=flags, name=self.reader_id)
        # Events are taken from libosdp's own queue (get_event), which it fills
        # whether or not a callback is set: reading it keeps it from growing.
        cp = osdp.ControlPanel([info], log_level=osdp.LogLevel.Error)
        # A stop request while cp.start runs in its thread must not leave the
        # panel's own thread running: it would outlive the gateway and keep the
        # process from exiting. The start is let finish, then the panel stops.
        started = asyncio.ensure_future(self._blocking(cp.start))
        try:
            await asyncio.shield(started)
            self._cp = cp
            await self._serve(cp, channel)
        finally:
            self._cp = None
            self.secure = False
            self._discards.close()
            self._bad_frames.close()
            await asyncio.shield(_stop_when_started(cp, started))

    async def _serve(self, cp: Any, channel: _SerialChannel) -> None:
        # Without a secure channel for sc_timeout (from the start, or since it
        # was lost), the session restarts with backoff: libosdp on its own would
        # wait 300 s before trying an offline reader again.
        down_since = self._link_time()
        ever_secure = False
        while True:
            if channel.failure is not None:
                raise SessionError(f"serial port failed: {channel.failure}")
            event = await self._blocking(cp.get_event, self.address, 0.1)
            if event is not None:
                await self._event(event)
            await self._discards.report()
            await self._bad_frames.report()
            if self.secure:
                ever_secure = True
                down_since = self._link_time()
            elif self._link_time() - down_since > self.sc_timeout:
                if ever_secure:
                    raise SessionError("the reader's secure channel was lost")
                answered = await self._blocking(_answered, cp, self.address)
                if answered:
                    await self._record(
                        "reader_insecure",
                        {
                            "reader": self.reader_id,
                            "reason": "key_rejected",
                            "detail": "the reader answers but refuses this gateway's key: it "
                            "is on its install-mode key or another panel's key (set "
                            "install_mode while provisioning it)",
                        },
                    )
                raise SessionError("no secure channel with the reader")

    async def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == _EVENT_NOTIFICATION:
            await self._notification(event)
        elif kind == _EVENT_CARDREAD:
            if not self.secure:
                await self._discards.add("card read without secure channel")
                return
            try:
                read = card_read(event)
            except CredentialFormatError as exc:
                await self._bad_frames.add(str(exc)[:200])
                return
            await self._on_read(read)
        # Key presses, status reports and manufacturer replies are not used yet.

    async def _notification(self, event: dict[str, Any]) -> None:
        kind, arg0, arg1 = event.get("type"), event.get("arg0"), event.get("arg1")
        if kind == _NOTIFY_SC_STATUS:
            on_default_key = bool(arg0) and bool(arg1)
            if on_default_key:
                await self._record(
                    "reader_insecure",
                    {
                        "reader": self.reader_id,
                        "reason": "install_mode_key",
                        "detail": "the reader is on the public install-mode key (SCBK-D); "
                        "its own key is being set",
                    },
                )
            await self._set_secure(bool(arg0) and not bool(arg1))
        elif kind == _NOTIFY_PD_STATUS and not arg0:
            await self._set_secure(False)
        elif kind == _NOTIFY_COMMAND and arg0 == _CMD_KEYSET:
            await self._record("reader_key_set", {"reader": self.reader_id, "ok": bool(arg1)})

    async def _set_secure(self, secure: bool) -> None:
        """The reader counts as online exactly while its secure channel is up."""
        if secure != self.secure:
            self.secure = secure
            await self._record("reader_secure_channel", {"reader": self.reader_id, "up": secure})
            if secure and self._lasting is not _IDLE:
                await self._play(self._lasting)
        await self._set_online(secure)

    async def show(self, pattern: Pattern) -> None:
        """Play a feedback pattern on the reader's LED and beeper (if it is up)."""
        await self._play(_PATTERNS[pattern])

    async def clear_fault(self) -> None:
        """End the lasting fault pattern: the LED goes back to off."""
        await self._play(_IDLE)

    async def _play(self, shown: _Pattern) -> None:
        if shown.lasting:
            self._lasting = shown  # kept, and sent again whenever the reader comes up
        cp = self._cp
        if cp is None or not self.secure:
            return
        commands: list[dict[str, Any]] = [
            {
                "command": _CMD_LED,
                "reader": 0,
                "led_number": 0,
                # Lasting: set the permanent state; passing: the temporary state,
                # its timer starting now.
                "control_code": 1 if shown.lasting else 2,
                "on_count": shown.on,
                "off_count": shown.off,
                "on_color": shown.on_colour,
                "off_color": shown.off_colour,
                "timer_count": shown.timer,
                "temporary": not shown.lasting,
            }
        ]
        if shown.beeps:
            commands.append(
                {
                    "command": _CMD_BUZZER,
                    "reader": 0,
                    "control_code": 2,  # default tone
                    "on_count": shown.beep_on,
                    "off_count": shown.beep_off,
                    "rep_count": shown.beeps,
                }
            )
        for command in commands:
            await asyncio.to_thread(cp.submit_command, self.address, command)


def _answered(cp: Any, address: int) -> bool:
    """True when the reader identified itself (osdp_PDID): it is there, just not secure."""
    try:
        return cp.get_pd_id(address) is not None
    except Exception:  # noqa: BLE001 - libosdp raises plain exceptions when there is no id
        return False


async def _stop_when_started(cp: Any, started: asyncio.Future[Any]) -> None:
    """Stop the control panel once its start (in a thread) has finished, however it ended."""
    with contextlib.suppress(Exception):
        await started
    await asyncio.to_thread(cp.stop)
