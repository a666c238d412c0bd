"""The presentation pipeline: a card, PIN or code at a reader, decided and carried out.

Every read reaches :class:`Taps` through the readers' one
:class:`~gateway.hw.readers.base.Sink` (:meth:`Taps.card`, :meth:`Taps.pin`,
:meth:`Taps.code`).  Each is decided from the cache in the caller's thread
(the core's :func:`~gateway.core.decision.decide`, under the
:class:`~gateway.core.decision.Conditions` of the moment), its ``access``
event is stored, and then the door acts: the lock, and the member's
feedback (:func:`~gateway.core.policy.feedback_for`).  Nothing here waits
on the network.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from gateway.app.clocktrust import ClockWatch
from gateway.app.eventlog import EventLog
from gateway.app.freshness import Freshness
from gateway.app.modes import SiteModes
from gateway.app.sync import SyncEngine
from gateway.clock import Clock
from gateway.config.models import Config
from gateway.core import policy
from gateway.core.credentials import CredentialRead, pin_digest, wiegand_legacy
from gateway.core.decision import CodeDecision, Conditions, Decision, Reason, decide, decide_code
from gateway.core.jws import KeySet
from gateway.core.model import CredentialKind
from gateway.core.ratelimit import TokenBucket
from gateway.errors import DoorgwError
from gateway.hw.readers.discards import InputReports
from gateway.hw.station import Station
from gateway.store.reader import CacheReader
from gateway.store.writer import CacheWriter

#: A scanner repeating the code it just read (continuous-scan mode, a code
#: held in view) within this many seconds is reading one presentation.
SCAN_REPEAT_SECONDS = 2.0


#: Cards one reader may present at once, then per second (people manage about one).
CARD_BURST = 5
CARD_RATE = 2.0


class Taps:
    """Decides what readers present, records it, and drives the door."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        keys: KeySet,
        pin_key: bytes | None = None,
        cache: CacheReader,
        writer: CacheWriter,
        events: EventLog,
        station: Station,
        modes: SiteModes,
        engine: SyncEngine,
        freshness: Freshness,
        clock_watch: ClockWatch,
    ) -> None:
        self._config = config
        self._legacy_wiegand = frozenset(config.credentials.wiegand_legacy_formats)
        self._pin_key = pin_key
        self._card_rate: dict[str, TokenBucket] = {}
        self._too_fast: dict[str, InputReports] = {}
        sync = config.sync
        self._unkeyed_pins = pin_key is not None and sync is not None and sync.accept_unkeyed_pins
        self._pin_digits = (config.credentials.pin_min_digits, config.credentials.pin_max_digits)
        self._clock = clock
        self._keys = keys
        self._cache = cache
        self._writer = writer
        self._events = events
        self._station = station
        self._modes = modes
        self._engine = engine
        self._freshness = freshness
        self._clock_watch = clock_watch
        #: Card and PIN doors, and how long a card waits there for its PIN.
        self._pin_timeouts = {d.id: d.pin_timeout_seconds for d in config.doors if d.card_and_pin}
        #: Card and PIN doors: the card awaiting its PIN, and until when (monotonic).
        self._awaiting_pin: dict[str, tuple[CredentialRead, float]] = {}
        #: The last code each scanner read, and when (monotonic): repeats are one scan.
        self._last_scan: dict[str, tuple[str, float]] = {}
        #: Card enrolment (staff API): readers whose next card is reported, until when.
        self._enrolling: dict[str, float] = {}
        #: The card each reader enrolled last.
        self.enrolled: dict[str, dict[str, Any]] = {}
        #: Decisions since start, by reason code (for /metrics).
        self.decisions: collections.Counter[str] = collections.Counter()
        #: Decisions carried out at their doors (lock and feedback) since start.
        self.carried_out = 0

    def conditions(self, door_id: str, *, clock_trusted: bool = False) -> Conditions:
        """What a tap at ``door_id`` is decided under now."""
        return policy.conditions(
            age=self._freshness.age(),
            limits=self._freshness.limits,
            lockdown=self._modes.lockdown,
            pin_required=door_id in self._pin_timeouts,
            clock_trusted=clock_trusted,
            code_window=self._config.qr.app_code_window_seconds,
        )

    # The sink the readers hand their reads to.

    async def card(self, door_id: str, reader_id: str, read: CredentialRead) -> Decision | None:
        """A card at a reader: enrolled if staff asked for that reader's next card, else decided.

        A reader presenting faster than people do (a device on its wires trying
        card numbers) is held to :data:`CARD_BURST` cards, then
        :data:`CARD_RATE` a second; the rest are counted as ``too_fast``.
        """
        bucket = self._card_rate.setdefault(reader_id, TokenBucket(CARD_BURST, CARD_RATE))
        if not bucket.take(self._clock.monotonic()):
            reports = self._too_fast.get(reader_id)
            if reports is None:
                record = self._events.record
                reports = InputReports(reader_id, "reader_input_discarded", record, self._clock)
                self._too_fast[reader_id] = reports
            await reports.add("too_fast", door=door_id)
            return None
        if read.kind is CredentialKind.WIEGAND and self._legacy_wiegand:
            legacy = wiegand_legacy(read.value, self._legacy_wiegand)
            if legacy is not None:
                read = dataclasses.replace(read, legacy=legacy)
        deadline = self._enrolling.pop(reader_id, None)
        if deadline is None or self._clock.monotonic() > deadline:
            return await self.present(door_id, read, reader=reader_id)
        card = {"reader": reader_id, "door": door_id, "kind": read.kind.value, "value": read.value}
        self.enrolled[reader_id] = {**card, "at": int(self._clock.now().timestamp())}
        await self._events.record("card_enrolled", card)
        await self._station.show(door_id, policy.Pattern.CARD_READ)
        return None

    async def pin(self, door_id: str, reader_id: str, pin: str) -> Decision | None:
        """A PIN typed on a keypad; wrong ones in a row lock that keypad for a while.

        At a card and PIN door the PIN completes the card presented just before
        it; without one (or after its timeout) the PIN alone is refused.
        """
        now = self._clock.monotonic()
        if not self._modes.keypad_allowed(reader_id, door_id):
            await self._events.record(
                "pin_refused", {"reader": reader_id, "door": door_id, "reason": "keypad_locked"}
            )
            await self._station.show(door_id, policy.Pattern.DENIED)
            return None
        low, high = self._pin_digits
        decision: Decision | None = None
        if not low <= len(pin) <= high:
            # No PIN of this length exists here: a wrong guess, counted as one.
            await self._events.record(
                "pin_refused", {"reader": reader_id, "door": door_id, "reason": "pin_length"}
            )
            await self._station.show(door_id, policy.Pattern.DENIED)
            failed = True
        else:
            site = self._config.gateway.site_id
            read = CredentialRead(
                CredentialKind.PIN,
                pin_digest(site, pin, self._pin_key),
                legacy=pin_digest(site, pin) if self._unkeyed_pins else None,
            )
            awaiting = self._awaiting_pin.pop(door_id, None)
            if awaiting is not None and now <= awaiting[1]:
                decision = await self.present(door_id, awaiting[0], pin=read, reader=reader_id)
            else:
                decision = await self.present(door_id, read, reader=reader_id)
            failed = policy.pin_outcome(decision.reason) is policy.PinOutcome.FAILURE
        if failed:
            # Only time clears wrong PINs: a right one in between does not.
            lockout = await self._modes.keypad_failed(reader_id, door_id)
            if lockout is not None:
                await self._events.record(
                    "keypad_locked",
                    {
                        "reader": reader_id,
                        "door": door_id,
                        "scope": lockout.scope,
                        "failures": lockout.failures,
                        "seconds": lockout.seconds,
                    },
                )
        return decision

    async def code(self, door_id: str, reader_id: str, text: str) -> Decision | None:
        """A line from a QR scanner: a signed pass or a member-app code, decided offline.

        A verified app code's nonce is claimed (a second use is
        ``code_replayed``); a granted pass with a use limit has the use
        counted (none left is ``pass_used_up``).  Both are kept in the cache
        file, so they survive restarts.  A repeat of the code the scanner
        just read is the same presentation and is ignored (returns None).
        """
        now_mono = self._clock.monotonic()
        last = self._last_scan.get(reader_id)
        if last is not None and last[0] == text and now_mono - last[1] < SCAN_REPEAT_SECONDS:
            return None
        self._last_scan[reader_id] = (text, now_mono)
        trust = await self._clock_watch.check()
        conditions = self.conditions(door_id, clock_trusted=trust.trusted)
        self._awaiting_pin.pop(door_id, None)
        with self._cache.view() as view:
            result = decide_code(
                view, text, door_id, self._clock.now(), conditions, keys=self._keys
            )
        result = await self._settle(result)
        decision = result.decision
        await self._record_access(decision, reader=reader_id, code=dict(result.code))
        if decision.reason is Reason.PIN_REQUIRED and result.read is not None:
            # An app code stands for the member's card: the PIN comes next.
            self._awaiting_pin[door_id] = (result.read, now_mono + self._pin_timeouts[door_id])
        await self._act(door_id, decision)
        return decision

    async def _settle(self, result: CodeDecision) -> CodeDecision:
        """Claim the code's nonce and count its use, in the cache file."""
        at = result.decision.at
        try:
            replayed = result.nonce is not None and not await self._writer.claim_nonce(
                *result.nonce, at
            )
            uses = None
            if not replayed and result.decision.granted and result.use is not None:
                uses = await self._writer.use_pass(*result.use, at)
        except DoorgwError as exc:  # CacheError, or a write the store refused
            return policy.settle_code(result, fault=str(exc))
        return policy.settle_code(result, replayed=replayed, uses=uses)

    # Deciding and acting.

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
        ``pin_timeout_seconds`` while its holder types the PIN (:meth:`pin`);
        ``pin`` is that PIN.
        """
        self._awaiting_pin.pop(door_id, None)  # a new card replaces one awaiting its PIN
        decision = await self.tap(read, door_id, pin=pin, reader=reader)
        if decision.reason is Reason.PIN_REQUIRED and door_id in self._pin_timeouts:
            deadline = self._clock.monotonic() + self._pin_timeouts[door_id]
            self._awaiting_pin[door_id] = (read, deadline)
        await self._act(door_id, decision)
        return decision

    async def tap(
        self,
        read: CredentialRead,
        door_id: str,
        *,
        pin: CredentialRead | None = None,
        reader: str | None = None,
    ) -> Decision:
        """Decide one credential read at one door now, and record the event (naming
        the ``reader`` it came from, when known); the door does not act."""
        conditions = self.conditions(door_id)
        with self._cache.view() as view:
            decision = decide(view, read, door_id, self._clock.now(), conditions, pin=pin)
        await self._record_access(decision, reader=reader)
        return decision

    async def _record_access(self, decision: Decision, **extra: Any) -> None:
        """The ``access`` event of one decision (``extra``: what a scan adds)."""
        self.decisions[decision.reason.value] += 1
        await self._events.record(
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
                "dataset_version": self._engine.version,
                "data_age_s": self._freshness.age(),
                **extra,
            },
            at=decision.at,
        )

    async def _act(self, door_id: str, decision: Decision) -> None:
        """Carry out a decision at the door: the lock, and the member's feedback."""
        door = self._station.doors.get(door_id)
        if door is not None and decision.granted:
            await door.grant(extended=decision.extended_unlock)
        await self._station.show(door_id, policy.feedback_for(decision))
        # After the door has acted: a staff arrival may be saved to disk.
        await self._modes.note_granted(decision)
        self.carried_out += 1

    # Enrolment (staff API).

    def start_enrolment(self, reader_id: str, seconds: float) -> None:
        """Report the next card read at ``reader_id`` (within ``seconds``), not decide it."""
        if reader_id not in self._station.readers:
            raise KeyError(reader_id)
        self._enrolling[reader_id] = self._clock.monotonic() + seconds
        self.enrolled.pop(reader_id, None)
