"""The composition root: one gateway's parts, opened in order and run as named tasks.

Start-up opens the cache (migrating it), the event outbox and the sync
engine, then runs the MQTT link, the outbox publisher and the heartbeat in
one :class:`asyncio.TaskGroup`.  Taps are decided from the cache in the
caller's thread and never wait on the network; their events go to the
outbox, which the publisher drains whenever a broker is reachable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date
from typing import Any

from gateway.app.clocktrust import ClockTrust, TrustState, ntp_synchronised
from gateway.app.sync import SyncEngine
from gateway.clock import Clock
from gateway.config.models import Config, ReaderConfig
from gateway.core.credentials import CredentialRead, pin_digest
from gateway.core.decision import CodeDecision, Decision, Reason, decide, decide_code
from gateway.core.jws import KeySet
from gateway.core.keypad import KeypadGuard
from gateway.core.localtime import to_local
from gateway.core.model import CredentialKind
from gateway.core.schedule import WeeklySchedule
from gateway.errors import ConfigError, DoorgwError
from gateway.hw.door import DoorController, LockKind
from gateway.hw.feedback import Feedback
from gateway.hw.readers.osdp.keys import KeyFileError, load_or_create_key
from gateway.hw.readers.osdp.reader import OsdpReader
from gateway.hw.readers.pn532.reader import Pn532Reader
from gateway.hw.readers.scanner.reader import SerialLineReader
from gateway.hw.readers.wiegand.codec import CardRead
from gateway.hw.readers.wiegand.reader import WiegandReader
from gateway.net.mqtt import LinkDownError, LinkSettings, MqttLink
from gateway.net.sdnotify import Notifier
from gateway.store.outbox import Outbox
from gateway.store.reader import CacheReader
from gateway.store.writer import CacheWriter
from gateway.wire.protocol import (
    CommandMsg,
    HeartbeatMsg,
    ResyncRequestMsg,
    StatusMsg,
    Topics,
)

log = logging.getLogger(__name__)

#: Events per published batch, and batches in flight before waiting for an ack.
BATCH_EVENTS = 1000
WINDOW_BATCHES = 16
#: A PIN that is not a usable PIN counts towards locking its keypad; a good PIN
#: that does not open this door now (outside plan hours, say) does not.
_PIN_FAILURES = frozenset(
    {
        Reason.UNKNOWN_CREDENTIAL,
        Reason.PIN_MISMATCH,
        Reason.CREDENTIAL_REVOKED,
        Reason.CREDENTIAL_LOST,
        Reason.CREDENTIAL_SUSPENDED,
        Reason.CREDENTIAL_NOT_YET_VALID,
        Reason.CREDENTIAL_EXPIRED,
    }
)
#: A scanner repeating the code it just read (continuous-scan mode, a code
#: held in view) within this many seconds is reading one presentation.
SCAN_REPEAT_SECONDS = 2.0
#: How often (seconds) the clock's trust is re-evaluated when nothing else asks.
CLOCK_CHECK_INTERVAL = 30.0
#: Refusals that are the gateway's fault, not the member's: shown as the fault pattern.
_GATEWAY_FAULTS = frozenset(
    {Reason.NO_DATA, Reason.DATA_STALE, Reason.CLOCK_UNTRUSTED, Reason.CODE_UNRECORDED}
)
#: Events kept in memory for the staff API's "recent events".
RECENT_EVENTS = 2000
#: How often (seconds) the fault lights are brought up to date.
FAULT_CHECK_INTERVAL = 5.0
#: How often (seconds) scheduled door modes are re-evaluated.
DOOR_MODE_INTERVAL = 30.0
#: Commands may not be valid for longer than this (seconds).
MAX_COMMAND_LIFETIME = 3600
#: Seconds without an ack before unacknowledged events are sent again.
ACK_TIMEOUT = 10.0


#: Seconds the tasks get to stop after a stop request, before it is an error.
STOP_TIMEOUT = 15.0


class StopTimeoutError(DoorgwError, TimeoutError):
    """The gateway's tasks did not stop in time; the message shows where they were."""


def _describe_tasks() -> str:
    lines = ["tasks still running after the stop timeout:"]
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        frames = " <- ".join(
            f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(task.get_stack(limit=12))
        )
        lines.append(f"  {task.get_name()}: {frames}")
    return "\n".join(lines)


def _real_pin_factory() -> Any:
    """gpiozero's lgpio factory; never a mock: a gateway without GPIO is a config error."""
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the GPIO chip
        raise ConfigError(
            "config",
            f"doors or Wiegand readers need GPIO, which is not available here: {exc}",
            "doors",
        ) from None


def load_keys(config: Config) -> KeySet:
    """The platform's pinned signing keys, from ``[sync] keys_file`` (a JWKS)."""
    if config.sync is None:
        raise ConfigError("config", "the daemon needs a [sync] section with keys_file", "sync")
    path = config.sync.keys_file
    try:
        return KeySet.from_jwks(json.loads(path.read_bytes()))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(str(path), f"not a usable JWKS: {exc}") from None


class Gateway:
    """One running gateway.  Use ``async with Gateway(...) as gw: await gw.run()``."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        *,
        keys: KeySet | None = None,
        pin_factory: Any = None,
        clock_trust: ClockTrust | None = None,
    ) -> None:
        if config.mqtt is None:
            raise ConfigError("config", "the daemon needs an [mqtt] section", "mqtt")
        self.config = config
        #: gpiozero pin factory for doors and Wiegand readers (tests pass MockFactory).
        self.pin_factory = pin_factory
        self.doors: dict[str, DoorController] = {}
        self.feedback: dict[str, Feedback] = {}
        self._reader_tasks: list[tuple[str, Any]] = []
        self._osdp_readers: dict[str, list[OsdpReader]] = {}
        #: Problems found while opening the hardware, recorded once the gateway runs.
        self._startup_events: list[tuple[str, dict[str, Any]]] = []
        #: Wrong-PIN lockout, per keypad.
        self.keypads = KeypadGuard()
        #: Lockdown: every door locked, only staff credentials open them.
        self.lockdown = False
        #: The local date a staff member last came in, per door.
        self._staff_in: dict[str, date] = {}
        self._waits_for_staff = any(d.unlock_after_first_staff for d in config.doors)
        #: Card and PIN doors, and how long a card waits there for its PIN.
        self._pin_timeouts = {d.id: d.pin_timeout_seconds for d in config.doors if d.card_and_pin}
        #: Card and PIN doors: the card awaiting its PIN, and until when (monotonic).
        self._awaiting_pin: dict[str, tuple[CredentialRead, float]] = {}
        self.clock = clock
        #: Whether time-bound QR codes may be checked against ``clock``.
        self.clock_trust = clock_trust or ClockTrust(
            clock,
            max_skew=config.time.max_skew_seconds,
            confirm_seconds=config.time.cloud_confirm_hours * 3600,
            ntp=ntp_synchronised if config.time.use_ntp else None,
        )
        self._trust_seen: TrustState | None = None
        #: The last code each scanner read, and when (monotonic): repeats are one scan.
        self._last_scan: dict[str, tuple[str, float]] = {}
        #: Card enrolment (staff API): readers whose next card is reported, until when.
        self._enrolling: dict[str, float] = {}
        #: The card each reader enrolled last.
        self.enrolled: dict[str, dict[str, Any]] = {}
        #: The latest events, newest last, for the staff API (the outbox keeps only unsent ones).
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_EVENTS)
        self._event_ids = 0
        #: Decisions since start, by reason code (for /metrics).
        self.decisions: collections.Counter[str] = collections.Counter()
        #: Decisions carried out at their doors (lock and feedback) since start.
        self.carried_out = 0
        self.keys = keys or load_keys(config)
        self.topics = Topics(config.mqtt.topic_prefix, config.gateway.site_id, config.gateway.id)
        self.writer = CacheWriter(config.cache_path, clock)
        self.outbox = Outbox(config.outbox_path, clock, max_events=config.outbox.max_events)
        self.reader: CacheReader | None = None
        self.engine = SyncEngine(
            self.writer,
            self.keys,
            site_id=config.gateway.site_id,
            gateway_id=config.gateway.id,
            clock=clock,
            record=self.record,
            request_resync=self._send_resync,
            on_ack=self._on_ack,
            on_command=self._on_command,
            on_signed_time=self.clock_trust.observe,
        )
        mqtt = config.mqtt
        offline = StatusMsg(gateway=config.gateway.id, state="offline")
        online = StatusMsg(gateway=config.gateway.id, state="online")
        self.link = MqttLink(
            LinkSettings(
                urls=mqtt.urls,
                client_id=config.gateway.id,
                subscriptions=self.topics.inbound(),
                will_topic=self.topics.status,
                will_payload=offline.model_dump_json().encode(),
                online_payload=online.model_dump_json().encode(),
                ca_file=mqtt.ca_file,
                cert_file=mqtt.cert_file,
                key_file=mqtt.key_file,
                keepalive=mqtt.keepalive,
                reconnect_min=mqtt.reconnect_min,
                reconnect_max=mqtt.reconnect_max,
            ),
            self._on_message,
            self._on_connect,
        )
        self._acked = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Gateway:
        try:
            await self._stack.enter_async_context(self.writer)
            await self._stack.enter_async_context(self.outbox)
            # Closed first (exit stacks unwind backwards): no load may outlive the writer.
            self._stack.push_async_callback(self.engine.close)
            self.reader = CacheReader(self.config.cache_path)
            self._stack.callback(self.reader.close)
            await self.engine.start()
            self._open_hardware()
        except BaseException:
            # A start-up failure (no GPIO, a missing library...) must still close
            # what was opened: open databases would keep the process from exiting,
            # and outputs already made must go back to their safe state.
            await self._stack.aclose()
            raise
        return self

    def _open_hardware(self) -> None:
        """Doors (locks go straight to their safe state) and readers, from the config."""
        needs_pins = any(d.lock_pin is not None for d in self.config.doors) or any(
            r.kind == "wiegand" for r in self.config.readers
        )
        if needs_pins and self.pin_factory is None:
            self.pin_factory = _real_pin_factory()
        for door in self.config.doors:
            if door.lock_pin is None:
                continue
            controller = DoorController(
                door.id,
                factory=self.pin_factory,
                clock=self.clock,
                record=self.record,
                lock_pin=door.lock_pin,
                lock_kind=LockKind(door.lock_kind),
                relay_active_high=door.relay_active_high,
                contact_pin=door.contact_pin,
                rex_pin=door.rex_pin,
                unlock_seconds=door.unlock_seconds,
                extended_unlock_seconds=door.extended_unlock_seconds,
                held_open_seconds=door.held_open_seconds,
            )
            self.doors[door.id] = controller
            self._stack.callback(controller.close)
            feedback = Feedback(
                factory=self.pin_factory,
                clock=self.clock,
                green=door.green_led_pin,
                red=door.red_led_pin,
                buzzer=door.buzzer_pin,
            )
            self.feedback[door.id] = feedback
            self._stack.callback(feedback.close)
        for cfg in self.config.readers:
            reader: Any
            if cfg.kind == "pn532":
                assert cfg.port is not None

                async def on_uid(uid: bytes, door: str = cfg.door, reader_id: str = cfg.id) -> None:
                    await self.present_card(
                        door, reader_id, CredentialRead(CredentialKind.NFC_UID, uid.hex().upper())
                    )

                reader = Pn532Reader(
                    cfg.id,
                    cfg.port,
                    on_uid=on_uid,
                    record=self.record,
                    clock=self.clock,
                    baudrate=cfg.baudrate or 115200,
                )
            elif cfg.kind == "osdp":
                reader = self._osdp_reader(cfg)
                if reader is None:
                    continue
                self._osdp_readers.setdefault(cfg.door, []).append(reader)
            elif cfg.kind == "scanner":
                assert cfg.port is not None

                async def on_line(text: str, door: str = cfg.door, reader_id: str = cfg.id) -> None:
                    await self.present_code(door, reader_id, text)

                reader = SerialLineReader(
                    cfg.id,
                    cfg.port,
                    on_line=on_line,
                    record=self.record,
                    clock=self.clock,
                    baudrate=cfg.baudrate or 9600,
                )
            else:

                async def on_card(
                    read: CardRead, door: str = cfg.door, reader_id: str = cfg.id
                ) -> None:
                    await self.present_card(
                        door, reader_id, CredentialRead(CredentialKind.WIEGAND, read.value)
                    )

                async def on_pin(pin: str, door: str = cfg.door, reader_id: str = cfg.id) -> None:
                    await self.present_pin(door, reader_id, pin)

                assert cfg.data0_pin is not None
                assert cfg.data1_pin is not None
                reader = WiegandReader(
                    cfg.id,
                    factory=self.pin_factory,
                    clock=self.clock,
                    data0=cfg.data0_pin,
                    data1=cfg.data1_pin,
                    on_card=on_card,
                    on_pin=on_pin,
                    record=self.record,
                )
                self._stack.callback(reader.close)
            self._reader_tasks.append((cfg.id, reader))

    def _osdp_reader(self, cfg: ReaderConfig) -> OsdpReader | None:
        """An OSDP reader with its key, or None (and a recorded reason) if it cannot run."""
        assert cfg.port is not None
        path = self.config.osdp_key_file(cfg)
        try:
            import osdp  # noqa: F401 - only to say clearly when libosdp is missing
        except ImportError:
            raise ConfigError(
                "config",
                f"reader {cfg.id!r} is an OSDP reader, but libosdp is not installed "
                "(pip install 'doorgw[osdp]')",
                "readers",
            ) from None
        try:
            key, created = load_or_create_key(path, create=cfg.install_mode)
        except KeyFileError as exc:
            self._startup_events.append(
                (
                    "reader_insecure",
                    {"reader": cfg.id, "reason": "key_file", "detail": str(exc)},
                )
            )
            return None
        if created:
            self._startup_events.append(
                ("reader_key_created", {"reader": cfg.id, "key_file": str(path)})
            )

        return OsdpReader(
            cfg.id,
            cfg.port,
            address=cfg.address,
            key=key,
            install_mode=cfg.install_mode,
            on_read=functools.partial(self.present_card, cfg.door, cfg.id),
            record=self.record,
            clock=self.clock,
            baudrate=cfg.baudrate or 9600,
        )

    async def present_code(self, door_id: str, reader_id: str, text: str) -> Decision | None:
        """A line from a QR scanner: a signed pass or a member-app code, decided offline.

        A verified app code's nonce is claimed (a second use is
        ``code_replayed``); a granted pass with a use limit has the use
        counted (none left is ``pass_used_up``).  Both are kept in the cache
        file, so they survive restarts.  A repeat of the code the scanner
        just read is the same presentation and is ignored (returns None).
        """
        now_mono = self.clock.monotonic()
        last = self._last_scan.get(reader_id)
        if last is not None and last[0] == text and now_mono - last[1] < SCAN_REPEAT_SECONDS:
            return None
        self._last_scan[reader_id] = (text, now_mono)
        trust = await self.check_clock()
        pin_timeout = self._pin_timeouts.get(door_id)
        self._awaiting_pin.pop(door_id, None)
        assert self.reader is not None, "gateway is not open"
        with self.reader.view() as view:
            result: CodeDecision = decide_code(
                view,
                text,
                door_id,
                self.clock.now(),
                keys=self.keys,
                window=self.config.qr.app_code_window_seconds,
                clock_trusted=trust.trusted,
                stale=self.stale_kinds(),
                stale_staff=self.stale_kinds(staff=True),
                lockdown=self.lockdown,
                pin_required=pin_timeout is not None,
            )
        decision = result.decision
        try:
            if result.nonce is not None and not await self.writer.claim_nonce(
                *result.nonce, decision.at
            ):
                decision = _refused(
                    decision, Reason.CODE_REPLAYED, "code already used; show a new one"
                )
            if decision.granted and result.use is not None:
                uses = await self.writer.use_pass(*result.use, decision.at)
                if uses is None:
                    decision = _refused(decision, Reason.PASS_USED_UP, "your pass has been used")
                else:
                    result.code["use"] = uses
        except (sqlite3.Error, DoorgwError) as exc:
            # Without the record of nonces and uses, a copy cannot be told from
            # the original: fail closed, and say why.
            log.error("cannot record a scanned code's nonce or use: %s", exc)
            result.code["error"] = str(exc)[:200]
            decision = _refused(decision, Reason.CODE_UNRECORDED, "gateway fault; please ask staff")
        await self._record_access(decision, reader=reader_id, code=result.code)
        if (
            decision.reason is Reason.PIN_REQUIRED
            and pin_timeout is not None
            and result.read is not None
        ):
            # An app code stands for the member's card: the PIN comes next.
            self._awaiting_pin[door_id] = (result.read, now_mono + pin_timeout)
        await self._act(door_id, decision)
        return decision

    async def check_clock(self) -> TrustState:
        """Whether the clock is trusted now; a change is recorded as ``clock_trust_changed``."""
        state = self.clock_trust.state()
        seen = self._trust_seen
        if seen is None or (seen.trusted, seen.source) != (state.trusted, state.source):
            self._trust_seen = state
            if seen is not None or not state.trusted:
                await self.record(
                    "clock_trust_changed",
                    {"trusted": state.trusted, "source": state.source, "skew_s": state.skew_s},
                )
        return state

    async def _show(self, door_id: str, pattern: str) -> None:
        """Feedback at a door: its LEDs and buzzer, and its OSDP readers' own."""
        feedback = self.feedback.get(door_id)
        if feedback is not None:
            await feedback.show(pattern)
        for reader in self._osdp_readers.get(door_id, ()):
            await reader.show(pattern)

    def start_enrolment(self, reader_id: str, seconds: float) -> None:
        """Report the next card read at ``reader_id`` (within ``seconds``), not decide it."""
        if reader_id not in dict(self._reader_tasks):
            raise KeyError(reader_id)
        self._enrolling[reader_id] = self.clock.monotonic() + seconds
        self.enrolled.pop(reader_id, None)

    async def present_card(
        self, door_id: str, reader_id: str, read: CredentialRead
    ) -> Decision | None:
        """A card at a reader: enrolled if staff asked for that reader's next card, else decided."""
        deadline = self._enrolling.pop(reader_id, None)
        if deadline is None or self.clock.monotonic() > deadline:
            return await self.present(door_id, read, reader=reader_id)
        card = {"reader": reader_id, "door": door_id, "kind": read.kind.value, "value": read.value}
        self.enrolled[reader_id] = {**card, "at": int(self.clock.now().timestamp())}
        await self.record("card_enrolled", card)
        await self._show(door_id, "card_read")
        return None

    async def present(
        self,
        door_id: str,
        read: CredentialRead,
        *,
        pin: CredentialRead | None = None,
        reader: str | None = None,
    ) -> Decision:
        """A credential presented at a door's reader: decide, then drive the door.

        At a card and PIN door a card that would open it is held for
        ``pin_timeout_seconds`` while its holder types the PIN
        (:meth:`present_pin`); ``pin`` is that PIN.
        """
        pin_timeout = self._pin_timeouts.get(door_id)
        self._awaiting_pin.pop(door_id, None)  # a new card replaces one awaiting its PIN
        decision = await self.tap(
            read, door_id, pin_required=pin_timeout is not None, pin=pin, reader=reader
        )
        if decision.reason is Reason.PIN_REQUIRED and pin_timeout is not None:
            self._awaiting_pin[door_id] = (read, self.clock.monotonic() + pin_timeout)
        await self._act(door_id, decision)
        return decision

    async def _act(self, door_id: str, decision: Decision) -> None:
        """Carry out a decision at the door: the lock, and the member's feedback."""
        # Only doors that open once staff are in need to know who was staff: the
        # extra lookup stays off the tap path everywhere else.
        if (
            decision.granted
            and decision.member_id
            and self.reader is not None
            and self._waits_for_staff
        ):
            with self.reader.view() as view:
                member, site = view.member(decision.member_id), view.site()
            if member is not None and member.staff and site is not None:
                # Remembered for doors that open for the day once staff are in.
                self._staff_in[door_id] = to_local(decision.at, site.tz).date()
        door = self.doors.get(door_id)
        if door is not None and decision.granted:
            await door.grant(extended=decision.extended_unlock)
        if decision.granted:
            pattern = "granted"
        elif decision.reason in _GATEWAY_FAULTS:
            pattern = "fault"  # the gateway is at fault, not the member
        elif decision.reason is Reason.BOOKING_NOT_STARTED:
            pattern = "booking_soon"  # "not yet", not "no": the member is early
        elif decision.reason is Reason.PIN_REQUIRED:
            pattern = "pin_needed"
        else:
            pattern = "denied"
        await self._show(door_id, pattern)
        self.carried_out += 1

    async def present_pin(self, door_id: str, reader_id: str, pin: str) -> Decision | None:
        """A PIN typed on a keypad; wrong ones in a row lock that keypad for a while.

        At a card and PIN door the PIN completes the card presented just before
        it; without one (or after its timeout) the PIN alone is refused.
        """
        now = self.clock.monotonic()
        if not self.keypads.allowed(reader_id, now):
            await self.record(
                "pin_refused", {"reader": reader_id, "door": door_id, "reason": "keypad_locked"}
            )
            await self._show(door_id, "denied")
            return None
        read = CredentialRead(CredentialKind.PIN, pin_digest(self.config.gateway.site_id, pin))
        awaiting = self._awaiting_pin.pop(door_id, None)
        if awaiting is not None and now <= awaiting[1]:
            decision = await self.present(door_id, awaiting[0], pin=read, reader=reader_id)
        else:
            decision = await self.present(door_id, read, reader=reader_id)
        if decision.reason in _PIN_FAILURES:
            if self.keypads.failed(reader_id, now):
                await self.record(
                    "keypad_locked",
                    {
                        "reader": reader_id,
                        "door": door_id,
                        "failures": self.keypads.max_failures,
                        "seconds": self.keypads.lockout,
                    },
                )
        elif decision.reason is not Reason.CARD_REQUIRED:
            self.keypads.succeeded(reader_id)
        return decision

    async def _clock_watch(self) -> None:
        """Record changes of the clock's trust even when no code is scanned."""
        while True:
            await self.check_clock()
            await self.clock.sleep(CLOCK_CHECK_INTERVAL)

    def at_fault(self) -> bool:
        """True while no grant can open a door for want of data: none yet, or all stale."""
        return self.engine.version is None or self.stale_kinds() == {"plan", "booking", "pass"}

    async def _fault_lights(self) -> None:
        """Show the fault pattern at every door while the gateway is at fault.

        Door LEDs go back to it once a tap's pattern has played; OSDP readers
        hold it as their lasting LED state, which taps' patterns play over.
        """
        was = False
        while True:
            fault = self.at_fault()
            for feedback in self.feedback.values():
                if fault and feedback.playing is None:
                    await feedback.show("fault")
                elif not fault and feedback.playing == "fault":
                    await feedback.stop()
            if fault != was:
                for readers in self._osdp_readers.values():
                    for reader in readers:
                        await (reader.show("fault") if fault else reader.clear_fault())
            was = fault
            await self.clock.sleep(FAULT_CHECK_INTERVAL)

    async def _door_mode(
        self, door_id: str, schedule: WeeklySchedule, after_first_staff: bool
    ) -> None:
        """Hold a door unlocked during its scheduled hours (after the first staff member in)."""
        door = self.doors[door_id]
        while True:
            held = False
            assert self.reader is not None
            with self.reader.view() as view:
                site = view.site()
            if site is not None and not self.lockdown:
                ts = int(self.clock.now().timestamp())
                open_now = schedule.span_at(ts, site.tz, site.closures.__contains__) is not None
                today = to_local(ts, site.tz).date()
                staff_ok = not after_first_staff or self._staff_in.get(door_id) == today
                held = open_now and staff_ok
            if held != door.held:
                await door.set_held(held)
                await self.record(
                    "mode_changed",
                    {
                        "door": door_id,
                        "mode": "scheduled_unlocked" if held else "normal",
                        "by": "schedule",
                    },
                )
            await self.clock.sleep(DOOR_MODE_INTERVAL)

    async def set_lockdown(self, on: bool, *, by: str) -> None:
        """Enter or leave lockdown; entering locks every door at once."""
        if on == self.lockdown:
            return
        self.lockdown = on
        await self.record("mode_changed", {"mode": "lockdown" if on else "normal", "by": by})
        if on:
            for door in self.doors.values():
                await door.lock_now()

    def readers_online(self) -> dict[str, bool]:
        """Each reader that runs as a task, and whether it is up now (Wiegand: always)."""
        return {reader_id: bool(reader.online) for reader_id, reader in self._reader_tasks}

    def door_states(self) -> dict[str, str]:
        """Each configured door as ``locked|unlocked[/open|/closed][/ALARM]``."""
        states = {}
        for door in self.config.doors:
            controller = self.doors.get(door.id)
            if controller is None:
                states[door.id] = "not_driven"
                continue
            parts = ["locked" if controller.locked else "unlocked"]
            if controller.is_open is not None:
                parts.append("open" if controller.is_open else "closed")
            if controller.alarm:
                parts.append(controller.alarm)
            states[door.id] = "/".join(parts)
        return states

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def run(self) -> None:
        """Run the link, the outbox publisher and the heartbeat until cancelled."""
        for type_, data in self._startup_events:
            await self.record(type_, data)
        self._startup_events.clear()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.link.run(), name="mqtt-link")
            tasks.create_task(self._publish_outbox(), name="outbox-publisher")
            tasks.create_task(self._heartbeat(), name="heartbeat")
            tasks.create_task(
                self.engine.keep_asking(self.link.connected.is_set), name="resync-retry"
            )
            for door_id, door in self.doors.items():
                tasks.create_task(door.run(), name=f"door-{door_id}")
            for cfg in self.config.doors:
                if cfg.unlocked_schedule and cfg.id in self.doors:
                    tasks.create_task(
                        self._door_mode(
                            cfg.id,
                            WeeklySchedule.parse(list(cfg.unlocked_schedule)),
                            cfg.unlock_after_first_staff,
                        ),
                        name=f"door-mode-{cfg.id}",
                    )
            for reader_id, reader in self._reader_tasks:
                tasks.create_task(reader.run(), name=f"reader-{reader_id}")
            if self.feedback or self._osdp_readers:
                tasks.create_task(self._fault_lights(), name="fault-lights")
            tasks.create_task(self._clock_watch(), name="clock-watch")
            if self.config.api is not None:
                from gateway.net.api import serve_api  # FastAPI loads only where it is used

                tasks.create_task(serve_api(self), name="api")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Open the gateway and run it in the background for the ``with`` block.

        Leaving the block stops the tasks; if they have not stopped within
        :data:`STOP_TIMEOUT` seconds, :class:`StopTimeoutError` names them.
        """
        async with self:
            task = asyncio.create_task(self.run(), name=f"gateway-{self.config.gateway.id}")
            try:
                yield self
            finally:
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
                if not done:
                    raise StopTimeoutError(_describe_tasks())
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # The tap path.

    def stale_kinds(self, *, staff: bool = False) -> frozenset[str]:
        """Grant kinds whose data is older than its configured bound (for staff, or not)."""
        age = self.data_age()
        limits = self.config.sync.staleness if self.config.sync else None
        if age is None or limits is None:
            return frozenset()
        if staff:
            kinds = dict.fromkeys(("plan", "booking", "pass"), limits.staff_hours)
        else:
            kinds = {
                "plan": limits.plan_hours,
                "booking": limits.booking_hours,
                "pass": limits.pass_hours,
            }
        return frozenset(
            k for k, hours in kinds.items() if hours is not None and age > hours * 3600
        )

    def data_age(self) -> int | None:
        """Seconds since the newest message the platform signed (None: never heard)."""
        if self.engine.last_contact is None:
            return None
        return max(0, int(self.clock.now().timestamp()) - self.engine.last_contact)

    async def tap(
        self,
        read: CredentialRead,
        door_id: str,
        *,
        pin_required: bool = False,
        pin: CredentialRead | None = None,
        reader: str | None = None,
    ) -> Decision:
        """Decide one credential read at one door now, and record the event (naming
        the ``reader`` it came from, when known)."""
        assert self.reader is not None, "gateway is not open"
        with self.reader.view() as view:
            decision = decide(
                view,
                read,
                door_id,
                self.clock.now(),
                stale=self.stale_kinds(),
                stale_staff=self.stale_kinds(staff=True),
                lockdown=self.lockdown,
                pin_required=pin_required,
                pin=pin,
            )
        await self._record_access(decision, reader=reader)
        return decision

    async def _record_access(self, decision: Decision, **extra: Any) -> None:
        """The ``access`` event of one decision (``extra``: what a scan adds)."""
        self.decisions[decision.reason.value] += 1
        await self.record(
            "access",
            {
                "door": decision.door_id,
                "granted": decision.granted,
                "reason": decision.reason.value,
                "message": decision.message,
                "member": decision.member_id,
                "credential": decision.credential_id,
                "grant": None
                if decision.grant is None
                else {"kind": decision.grant.kind, "id": decision.grant.id},
                "until": decision.until,
                "dataset_version": self.engine.version,
                "data_age_s": self.data_age(),
                **extra,
            },
            at=decision.at,
        )

    async def record(self, type_: str, data: dict[str, Any], at: int | None = None) -> None:
        """Store one event in the outbox (and keep it for the staff API)."""
        seq = await self.outbox.append(type_, data, at)
        when = int(self.clock.now().timestamp()) if at is None else at
        self._event_ids += 1
        self.recent.append(
            {"id": self._event_ids, "seq": seq, "at": when, "type": type_, "data": data}
        )

    # Messages from the platform.

    async def _on_message(self, topic: str, payload: bytes) -> None:
        await self.engine.handle(payload, topic)

    async def _on_connect(self) -> None:
        await self.engine.on_connected()

    async def _on_ack(self, seq: int) -> None:
        await self.outbox.ack(seq)
        self._acked.set()

    async def _on_command(self, command: CommandMsg) -> None:
        now = int(self.clock.now().timestamp())
        refused = None
        if command.exp < now:
            refused = "expired"
        elif command.exp > now + MAX_COMMAND_LIFETIME:
            refused = "expiry_too_far"  # bounds how long nonces must be kept
        elif not await self.writer.claim_nonce(command.nonce, command.exp, now):
            refused = "replayed"
        if refused is not None:
            await self.record(
                "command_refused",
                {"command_id": command.command_id, "action": command.action, "reason": refused},
            )
            return
        if command.action == "resync":
            await self.record(
                "command_accepted", {"command_id": command.command_id, "action": "resync"}
            )
            await self.engine.request_resync("command")
            return
        if command.action == "unlock":
            door = self.doors.get(command.door or "")
            if door is None:
                await self.record(
                    "command_refused",
                    {
                        "command_id": command.command_id,
                        "action": "unlock",
                        "door": command.door,
                        "reason": "door_not_driven",
                    },
                )
                return
            await self.record(
                "command_accepted",
                {"command_id": command.command_id, "action": "unlock", "door": command.door},
            )
            await door.grant(reason="command", seconds=command.seconds)
            return
        if command.action == "lockdown":
            if command.on is None:
                await self.record(
                    "command_refused",
                    {
                        "command_id": command.command_id,
                        "action": "lockdown",
                        "reason": "missing 'on'",
                    },
                )
                return
            await self.record(
                "command_accepted",
                {"command_id": command.command_id, "action": "lockdown", "on": command.on},
            )
            await self.set_lockdown(command.on, by=f"command {command.command_id}")
            return
        # Door modes (scheduled unlock, first staff in) arrive later (doors-and-readers issue).
        await self.record(
            "command_refused",
            {"command_id": command.command_id, "action": command.action, "reason": "unsupported"},
        )

    async def _send_resync(self, msg: ResyncRequestMsg) -> None:
        try:
            await self.link.publish(self.topics.resync, msg.model_dump_json().encode())
        except LinkDownError:
            log.info("resync request not sent: no broker; it is repeated on reconnect")

    # The outbox publisher.

    async def _publish_outbox(self) -> None:
        while True:
            await self.link.connected.wait()
            try:
                await self._drain()
            except LinkDownError:
                continue

    async def _drain(self) -> None:
        # After every (re)connect, send again everything not acknowledged:
        # the platform de-duplicates by (gateway, seq).
        sent = self.outbox.acked_seq
        session = self.link.sessions
        while self.link.connected.is_set():
            if self.link.sessions != session:
                # Reconnected while waiting: what was in flight may be lost.
                session, sent = self.link.sessions, self.outbox.acked_seq
            if sent - self.outbox.acked_seq >= BATCH_EVENTS * WINDOW_BATCHES:
                self._acked.clear()
                try:
                    async with asyncio.timeout(ACK_TIMEOUT):
                        await _first(self._acked.wait(), self.link.disconnected.wait())
                except TimeoutError:
                    sent = self.outbox.acked_seq
                continue
            sent = max(sent, self.outbox.acked_seq)
            events = await self.outbox.pending(sent, BATCH_EVENTS)
            if not events:
                self.outbox.appended.clear()
                self._acked.clear()
                try:
                    async with asyncio.timeout(ACK_TIMEOUT):
                        await _first(
                            self.outbox.appended.wait(),
                            self._acked.wait(),
                            self.link.disconnected.wait(),
                        )
                except TimeoutError:
                    if self.outbox.depth:
                        sent = self.outbox.acked_seq  # no ack came: send again
                continue
            # The EventsMsg shape, serialised directly: these rows came out of our own outbox.
            batch = {"v": 1, "gateway": self.config.gateway.id, "events": events}
            log.debug("publishing events %d..%d", events[0]["seq"], events[-1]["seq"])
            await self.link.publish(
                self.topics.events, json.dumps(batch, separators=(",", ":")).encode()
            )
            log.debug("published events up to %d", events[-1]["seq"])
            sent = events[-1]["seq"]

    async def _heartbeat(self) -> None:
        assert self.config.mqtt is not None
        while True:
            await self.link.connected.wait()
            beat = HeartbeatMsg(
                gateway=self.config.gateway.id,
                at=int(self.clock.now().timestamp()),
                dataset_version=self.engine.version,
                data_age_s=self.data_age(),
                outbox_depth=self.outbox.depth,
                acked_seq=self.outbox.acked_seq,
                stale_classes=sorted(self.stale_kinds()),
                clock="trusted" if self.clock_trust.trusted() else "untrusted",
                doors=self.door_states(),
            )
            with contextlib.suppress(LinkDownError):
                await self.link.publish(
                    self.topics.heartbeat, beat.model_dump_json().encode(), qos=0
                )
            await asyncio.sleep(self.config.mqtt.heartbeat_seconds)


def _refused(decision: Decision, reason: Reason, message: str) -> Decision:
    """``decision`` turned into a denial for ``reason`` (same door, instant and holder)."""
    return replace(decision, granted=False, reason=reason, message=message, grant=None, until=None)


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` completes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def serve(
    config: Config,
    clock: Clock,
    *,
    pin_factory: Any = None,
    notifier: Notifier | None = None,
    started: Callable[[Gateway], object] | None = None,
) -> None:
    """Run one gateway until SIGTERM or SIGINT, telling systemd how it goes.

    systemd hears READY=1 once the cache, the outbox and the hardware are
    open (doors locked), then watchdog pings from this event loop, then
    STOPPING=1.  Stopping closes everything in reverse: readers and tasks
    stop, locks go to their safe state, the MQTT link says "offline"; every
    event is already in the outbox file.  ``started`` is called with the
    running gateway (tests, the simulator).
    """
    import signal

    notifier = notifier or Notifier()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Gateway(config, clock, pin_factory=pin_factory).running() as gw:
            log.info("gateway %s running", config.gateway.id)
            doors = f"{len(gw.doors)} door" + ("" if len(gw.doors) == 1 else "s")
            notifier.ready(f"running: {doors}, dataset version {gw.engine.version}")
            # Real time, not the injected clock: systemd's watchdog runs on real time.
            watchdog = asyncio.create_task(notifier.watchdog(), name="watchdog")
            if started is not None:
                started(gw)
            try:
                await stop.wait()
            finally:
                log.info("stopping")
                notifier.stopping()
                watchdog.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        notifier.close()


def run_daemon(config: Config, clock: Clock) -> int:
    """Run one gateway until SIGTERM or SIGINT; return the exit status."""

    async def main() -> None:
        try:
            await serve(config, clock)
        except StopTimeoutError as exc:
            # Like systemd's final SIGKILL, but with a report. Events are already
            # durable, and asyncio's own clean-up would wait for the stuck task
            # forever, so leave from here.
            log.error("%s", exc)
            logging.shutdown()
            os._exit(1)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
    return 0
