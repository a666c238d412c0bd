"""Scripted scenarios: a site, a timeline of things that happen, and what must follow.

A scenario file (TOML, see sim/scenarios/README.md) names a start time and
a list of steps.  Each step happens at a site-local time (``"14:05"``, or
``"+10m"`` after the previous step) and does one thing: the platform books,
cancels or suspends; someone taps a card, types a PIN or scans a QR code;
a door is held open or forced; the broker goes down; the gateway restarts.
A step can expect what follows: whether the door opened, the reason code,
the LED pattern, an event the platform received.

The runner drives the real gateway daemon (its cache and outbox files, its
sync engine, its door controllers on gpiozero mock pins, its Wiegand reader
on mock pins and its serial scanner on a pty) against a real Mosquitto and
the platform stand-in of :mod:`sim.cloud`, on a simulated clock: a day runs
in seconds.  NFC taps enter where the PN532 reader task hands a card over
(``Gateway.present_card``): the PN532 poll exchange is timed by the clock,
which the runner moves in jumps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from gpiozero.pins.mock import MockFactory
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway import qr
from gateway.clock import ManualClock
from gateway.config import load_config
from gateway.credentials import parse_read
from gateway.daemon import Gateway
from gateway.dataset import describe_validation_error
from gateway.decision import Decision
from gateway.errors import DoorgwError
from gateway.model import ENTITY_TABLES
from sim.broker import Broker
from sim.embedded_broker import EmbeddedBroker
from sim.scanner import SimulatedScanner
from sim.wiegand import SimulatedWiegand

#: GPIOs of the simulated doors, in door order: (lock, contact, green, red).
_DOOR_PINS = [(5, 16, 20, 24), (6, 17, 21, 25), (12, 18, 22, 26), (13, 19, 23, 27)]
#: Seconds of real time one step may take before the scenario is stopped as stuck.
STEP_LIMIT = 120.0
#: The scenario ``doorgw sim demo`` runs.
DEMO = Path(__file__).parent / "scenarios" / "demo.toml"
#: The simulated Wiegand keypad/reader (at the first door).
_WIEGAND = (2, 3)
_AT = re.compile(r"^(?:\+(?P<rel>\d+)(?P<unit>[smhd])|(?P<hm>\d{1,2}:\d{2})|(?P<iso>\d{4}-.+))$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ScenarioError(DoorgwError):
    """A scenario file that cannot be run; the message names the step and the field."""


class StuckError(Exception):
    """Something a step waits for never happened (the message says what)."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Book(_Doc):
    """The platform books (and takes payment for) a resource for a member."""

    id: str
    member: str
    resource: str
    start: str
    end: str
    paid: bool = True
    grace_minutes: int = Field(default=10, ge=0, le=120)


class Tap(_Doc):
    """A credential at a door: ``card`` (KIND:VALUE, e.g. nfc:04A1...) or ``pin``."""

    door: str
    card: str | None = None
    pin: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Tap:
        if (self.card is None) == (self.pin is None):
            raise ValueError("a tap is either a card or a pin")
        return self


class Scan(_Doc):
    """A QR code at a door's scanner: a day pass issued now, or a member's app code."""

    door: str
    day_pass: str | None = Field(default=None, description="pass id of a day pass to issue")
    doors: list[str] = Field(default_factory=list, description="the day pass's doors")
    hours: float = 8
    uses: int = 0
    kind: Literal["day_pass", "visitor", "booking"] = "day_pass"
    app_code: str | None = Field(default=None, description="an app key credential id")
    again: bool = Field(default=False, description="show the very same code as last time")


class Expect(_Doc):
    """What must follow a step."""

    door: Literal["opened", "shut"] | None = None
    reason: str | None = None
    led: str | None = None
    cloud_event: str | None = Field(default=None, description="an event type the platform got")
    cloud_reason: str | None = None
    cloud_caught_up: bool = Field(
        default=False, description="every event the gateway recorded so far reached the platform"
    )


#: A step's actions (besides ``restart_gateway``), in the order they are described.
ACTIONS = (
    "book",
    "cancel",
    "suspend",
    "tap",
    "scan",
    "open_door",
    "close_door",
    "lockdown",
    "broker",
)


class Step(_Doc):
    """One moment of the scenario: when, what happens, and what must follow."""

    at: str
    note: str = ""
    book: Book | None = None
    cancel: str | None = None
    suspend: str | None = None
    tap: Tap | None = None
    scan: Scan | None = None
    open_door: str | None = None
    close_door: str | None = None
    lockdown: bool | None = None
    broker: Literal["down", "up"] | None = None
    restart_gateway: bool = False
    expect: Expect | None = None

    @model_validator(mode="after")
    def _at_most_one_action(self) -> Step:
        actions = [name for name in ACTIONS if getattr(self, name) is not None]
        actions += ["restart_gateway"] if self.restart_gateway else []
        if len(actions) > 1:
            raise ValueError(f"one action per step, not {', '.join(actions)}")
        if _AT.match(self.at) is None:
            raise ValueError(f"at {self.at!r}: HH:MM, +N[smhd] or an ISO time")
        return self


class Scenario(_Doc):
    """A whole scenario file."""

    title: str
    start: str = Field(description="site-local ISO time the scenario begins")
    steps: list[Step] = Field(min_length=1)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; ScenarioError names what is wrong."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: {describe_validation_error(exc)}") from None


@dataclass
class Outcome:
    """What one step did, and whether its expectations held."""

    index: int
    at: datetime
    what: str
    happened: str = ""
    problems: list[str] = field(default_factory=list)
    #: With ``watch``: the site's state after the step, and the events it caused.
    state: list[str] = field(default_factory=list)


class Runner:
    """Runs one scenario against a real broker, the cloud stand-in and the real daemon."""

    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        *,
        broker: str = "auto",
        on_outcome: Any = None,
        watch: bool = False,
    ) -> None:
        if broker not in ("auto", "mosquitto", "embedded"):
            raise ScenarioError(f"broker {broker!r}: auto, mosquitto or embedded")
        if broker == "auto":
            broker = "mosquitto" if _have_mosquitto() else "embedded"
        self.broker_kind = broker
        #: Called with each step's outcome as soon as it is known (a live account).
        self.on_outcome = on_outcome
        self.watch = watch
        self._seen_event = 0
        self.scenario = scenario
        self.workdir = workdir
        raw = resources.files("gateway").joinpath("data/example_site.json").read_bytes()
        self.dataset: dict[str, Any] = json.loads(raw)
        self.tz = ZoneInfo(self.dataset["site"]["timezone"])
        try:
            start = datetime.fromisoformat(scenario.start)
        except ValueError:
            raise ScenarioError(f"start {scenario.start!r} is not an ISO time") from None
        self.start = start if start.tzinfo else start.replace(tzinfo=self.tz)
        self.clock = ManualClock(self.start)
        self.factory = MockFactory()
        self.doors = [d["id"] for d in self.dataset["doors"]]
        self.outcomes: list[Outcome] = []
        self.app_keys: dict[str, Any] = {}
        self._last_code: str | None = None
        self._last_decision: Decision | None = None
        self.open_doors: set[str] = set()

    # Setting up.

    def _config(self, broker: Broker) -> Path:
        path = broker.gateway_config("gw-1", self.workdir / "gw-1")
        text = path.read_text().replace('[[doors]]\nid = "front"\n\n', "")
        doors = "".join(
            f'[[doors]]\nid = "{door}"\nlock_pin = {lock}\ncontact_pin = {contact}\n'
            f"green_led_pin = {green}\nred_led_pin = {red}\nheld_open_seconds = 60\n\n"
            for door, (lock, contact, green, red) in zip(self.doors, _DOOR_PINS, strict=False)
        )
        readers = (
            f'[[readers]]\nid = "wg-{self.doors[0]}"\ndoor = "{self.doors[0]}"\nkind = "wiegand"\n'
            f"data0_pin = {_WIEGAND[0]}\ndata1_pin = {_WIEGAND[1]}\n\n"
        ) + "".join(
            f'[[readers]]\nid = "qr-{door}"\ndoor = "{door}"\nkind = "scanner"\n'
            f'port = "{self.scanners[door].path}"\n\n'
            for door in self.doors
        )
        text = text.replace("[mqtt]", f"[time]\nuse_ntp = false\n\n{doors}{readers}[mqtt]", 1)
        path.write_text(text)
        return path

    async def run(self) -> list[Outcome]:
        """Run every step; the outcomes say what held and what did not."""
        site = self.dataset["site"]["id"]
        broker: Any
        if self.broker_kind == "mosquitto":
            broker = Broker(self.workdir / "broker", site=site, gateways=["gw-1"])
        else:
            broker = EmbeddedBroker(self.workdir / "broker", site=site, gateways=["gw-1"])
        self.broker = broker
        self.scanners = {d: SimulatedScanner(self.workdir / f"scanner-{d}") for d in self.doors}
        self.wiegand = SimulatedWiegand(self.factory, *_WIEGAND)
        await _maybe(broker.start())
        cloud = broker.cloud_peer(self.dataset, now=self.clock.now)
        self.cloud = cloud
        cloud_task = asyncio.create_task(cloud.run())
        self.issuer = qr.PassIssuer(broker.signer.key, broker.signer.kid)
        config_path = self._config(broker)
        try:
            async with asyncio.timeout(STEP_LIMIT):
                await cloud.connected.wait()
                gw = await self._start_gateway(config_path)
            if gw.recent:  # the watch shows what steps cause, not the start-up
                self._seen_event = gw.recent[-1]["id"]
            try:
                for index, step in enumerate(self.scenario.steps, 1):
                    try:
                        # A scenario must fail, never hang: each step gets a real-time limit.
                        async with asyncio.timeout(STEP_LIMIT):
                            gw = await self._step(index, step, gw, config_path)
                    except (TimeoutError, StuckError) as exc:
                        stuck = (
                            self.outcomes[-1]
                            if self.outcomes
                            else Outcome(index, self.clock.now(), "start")
                        )
                        why = (
                            str(exc)
                            if isinstance(exc, StuckError)
                            else f"the step took over {STEP_LIMIT:.0f} s of real time"
                        )
                        stuck.problems.append(f"{why}; the scenario stops here")
                        if self.on_outcome is not None:
                            self.on_outcome(stuck)
                        break
            finally:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STEP_LIMIT):
                        await self._stop_gateway()
        finally:
            cloud_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cloud_task
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await _maybe(broker.stop())
            for scanner in self.scanners.values():
                scanner.unplug()
        return self.outcomes

    async def _start_gateway(self, config_path: Path) -> Gateway:
        gw = Gateway(load_config(config_path), self.clock, pin_factory=self.factory)
        self._running = gw.running()
        await self._running.__aenter__()
        # The contacts' pull-ups read "open" until a contact is driven: shut the doors
        # the scenario has not left open (after the door devices exist).
        for door, (_, contact, _, _) in zip(self.doors, _DOOR_PINS, strict=False):
            if door not in self.open_doors:
                self.factory.pin(contact).drive_low()
        await self._settle(lambda: gw.engine.version is not None, "the gateway's first sync")
        await self._settle(lambda: all(gw.readers_online().values()), "the readers")
        return gw

    async def _stop_gateway(self) -> None:
        await self._running.__aexit__(None, None, None)

    async def _settle(
        self, predicate: Any, what: str, real_seconds: float = 20.0, *, advance: bool = True
    ) -> None:
        """Let real I/O (and, with ``advance``, short timers) run until ``predicate`` holds.

        Waits on the network do not move the simulated clock: a message's
        journey must not make the scenario's time run on.
        """
        try:
            async with asyncio.timeout(real_seconds):
                while not predicate():
                    if advance:
                        self.clock.advance(0.05)
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise StuckError(f"waited {real_seconds:.0f} s of real time for {what}") from None

    # Steps.

    def _when(self, at: str, previous: datetime) -> datetime:
        m = _AT.match(at)
        assert m is not None
        if m["rel"]:
            return previous + timedelta(seconds=int(m["rel"]) * _UNITS[m["unit"]])
        if m["hm"]:
            hour, minute = (int(x) for x in m["hm"].split(":"))
            day = previous.astimezone(self.tz)
            return day.replace(hour=hour, minute=minute, second=0, microsecond=0)
        when = datetime.fromisoformat(m["iso"])
        return when if when.tzinfo else when.replace(tzinfo=self.tz)

    async def _advance_to(self, when: datetime) -> None:
        remaining = (when - self.clock.now()).total_seconds()
        if remaining < 0:
            raise ScenarioError(f"time cannot go back to {when.isoformat()}")
        # Coarse steps over long gaps, so hours pass quickly; timers fire at each step.
        while remaining > 0:
            delta = min(remaining, 1.0 if remaining <= 120 else 60.0)
            self.clock.advance(delta)
            remaining -= delta
            for _ in range(3):
                await asyncio.sleep(0)

    def _local(self, text: str, on: datetime) -> str:
        hour, minute = (int(x) for x in text.split(":"))
        local = on.astimezone(self.tz).replace(hour=hour, minute=minute, second=0, microsecond=0)
        return local.isoformat()

    async def _step(self, index: int, step: Step, gw: Gateway, config_path: Path) -> Gateway:
        previous = self.outcomes[-1].at if self.outcomes else self.clock.now()
        when = self._when(step.at, previous)
        await self._advance_to(when)
        outcome = Outcome(index, when, step.note or _describe(step))
        self.outcomes.append(outcome)
        decision: Decision | None = None
        cloud = self.cloud
        if step.book is not None:
            b = step.book
            await cloud.send_delta(
                [
                    {
                        "op": "upsert",
                        "entity": "booking",
                        "data": {
                            "id": b.id,
                            "member_id": b.member,
                            "resource_id": b.resource,
                            "start": self._local(b.start, when),
                            "end": self._local(b.end, when),
                            "payment": "paid" if b.paid else "unpaid",
                            "grace_before_min": b.grace_minutes,
                            "grace_after_min": b.grace_minutes,
                        },
                    }
                ]
            )
            await self._synced(gw)
        elif step.cancel is not None:
            await self._change(gw, outcome, "booking", step.cancel, payment="cancelled")
        elif step.suspend is not None:
            await self._change(gw, outcome, "member", step.suspend, status="suspended")
        elif step.tap is not None:
            decision = await self._tap(gw, step.tap)
        elif step.scan is not None:
            decision = await self._scan(gw, step.scan, when)
        elif step.open_door is not None or step.close_door is not None:
            door = step.open_door or step.close_door or ""
            index_of = self.doors.index(door) if door in self.doors else None
            if index_of is None:
                outcome.problems.append(f"no door {door!r}")
            else:
                contact = self.factory.pin(_DOOR_PINS[index_of][1])
                if step.open_door:
                    contact.drive_high()
                    self.open_doors.add(door)
                else:
                    contact.drive_low()
                    self.open_doors.discard(door)
                for _ in range(5):  # gpiozero's callback thread hands the edge to the loop
                    await asyncio.sleep(0.01)
        elif step.lockdown is not None:
            await gw.set_lockdown(step.lockdown, by="scenario")
        elif step.broker == "down":
            await _maybe(self.broker.stop())
            await self._settle(lambda: not gw.link.connected.is_set(), "the link to notice")
        elif step.broker == "up":
            await _maybe(self.broker.start())
            await self._settle(lambda: gw.link.connected.is_set(), "the link to reconnect", 60)
        elif step.restart_gateway:
            await self._stop_gateway()
            gw = await self._start_gateway(config_path)
        if decision is not None:
            outcome.happened = (
                f"{'OPENED' if decision.granted else 'SHUT'} {decision.reason.value}: "
                f"{decision.message}"
            )
        if step.expect is not None:
            await self._check(gw, step, decision, outcome)
        if self.watch:
            outcome.state = self._state(gw)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return gw

    def _state(self, gw: Gateway) -> list[str]:
        """Doors, readers, sync and outbox now, and the events since the last look."""
        doors = []
        for door_id in gw.doors:
            led = gw.feedback[door_id].playing or "-"
            doors.append(f"{door_id} {gw.door_states()[door_id]} led:{led}")
        readers = " ".join(f"{r}:{'up' if up else 'DOWN'}" for r, up in gw.readers_online().items())
        link = "up" if gw.link.connected.is_set() else "DOWN"
        lines = [
            "doors    " + " | ".join(doors),
            f"readers  {readers}",
            f"sync     link {link}, data v{gw.engine.version} (platform v{self.cloud.version}), "
            f"outbox {gw.outbox.depth} unsent" + (", LOCKDOWN" if gw.lockdown else ""),
        ]
        fresh = [e for e in gw.recent if e["id"] > self._seen_event]
        if gw.recent:
            self._seen_event = gw.recent[-1]["id"]
        for event in fresh[-8:]:
            data = event["data"]
            detail = " ".join(
                str(data[k]) for k in ("door", "reader", "reason", "mode", "version") if data.get(k)
            )
            lines.append(f"event    {event['type']} {detail}".rstrip())
        if len(fresh) > 8:
            lines.append(f"event    ... and {len(fresh) - 8} more")
        return lines

    async def _change(
        self, gw: Gateway, outcome: Outcome, entity: str, item_id: str, **fields: str
    ) -> None:
        """The platform changes ``fields`` of one entity and publishes the delta."""
        items = self.cloud.dataset.get(ENTITY_TABLES[entity], [])
        item = next((i for i in items if i["id"] == item_id), None)
        if item is None:
            outcome.problems.append(f"no {entity} {item_id!r} in the site's data")
            return
        change = {"op": "upsert", "entity": entity, "data": {**item, **fields}}
        await self.cloud.send_delta([change])
        await self._synced(gw)

    async def _synced(self, gw: Gateway) -> None:
        await self._settle(lambda: gw.engine.version == self.cloud.version, "the delta")

    async def _tap(self, gw: Gateway, tap: Tap) -> Decision | None:
        if tap.pin is not None:
            before = gw.outbox.last_seq
            for key in tap.pin + "#":
                self.wiegand.key(key)
                # Key bursts are told apart by the silence between them, in real ticks.
                await asyncio.sleep(0.06)
                self.clock.advance(0.1)
            await self._settle(lambda: self._access_after(gw, before), "the PIN's decision")
            return self._last_decision
        read = parse_read(tap.card or "", site_id=self.dataset["site"]["id"])
        if read.kind.value == "wiegand" and tap.door == self.doors[0]:
            facility, _, number = read.value.partition(":")
            before = gw.outbox.last_seq
            self.wiegand.card(int(facility or 0), int(number))
            await self._settle(lambda: self._access_after(gw, before), "the card's decision")
            return self._last_decision
        return await gw.present_card(tap.door, f"nfc-{tap.door}", read)

    def _access_after(self, gw: Gateway, seq: int) -> bool:
        for event in reversed(gw.recent):
            if event["seq"] is not None and event["seq"] <= seq:
                return False
            if event["type"] == "access":
                self._last_decision = _decision_of(event)
                return True
        return False

    async def _scan(self, gw: Gateway, scan: Scan, when: datetime) -> Decision | None:
        now = int(when.timestamp())
        if scan.again and self._last_code is not None:
            text = self._last_code
        elif scan.day_pass is not None:
            text = self.issuer.issue(
                site=self.dataset["site"]["id"],
                pass_id=scan.day_pass,
                not_before=now - 60,
                not_after=now + int(scan.hours * 3600),
                doors=scan.doors or [scan.door],
                max_uses=scan.uses,
                kind=qr.PassKind[scan.kind.upper()],
            )
        elif scan.app_code is not None:
            key = await self._app_key(gw, scan.app_code)
            text = qr.app_code(key, scan.app_code, now)
        else:
            raise ScenarioError("a scan needs day_pass, app_code or again = true")
        self._last_code = text
        before = gw.outbox.last_seq
        # Steps are seconds apart on the simulated clock, so even the same code is a
        # new presentation, not a scanner repeating itself (that is under 2 s).
        self.scanners[scan.door].scan(text)
        await self._settle(lambda: self._access_after(gw, before), "the code's decision")
        return self._last_decision

    async def _app_key(self, gw: Gateway, credential: str) -> Any:
        """The member app's key for ``credential``: registered with the platform on first use."""
        if credential in self.app_keys:
            return self.app_keys[credential]
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        from gateway.jws import b64url

        member = credential.removeprefix("app-")
        key = Ed25519PrivateKey.generate()
        value = b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        data = {"id": credential, "member_id": member, "kind": "app_key", "value": value}
        await self.cloud.send_delta([{"op": "upsert", "entity": "credential", "data": data}])
        await self._synced(gw)
        self.app_keys[credential] = key
        return key

    async def _check(
        self, gw: Gateway, step: Step, decision: Decision | None, outcome: Outcome
    ) -> None:
        expect = step.expect
        assert expect is not None
        if expect.door is not None or expect.reason is not None:
            if decision is None:
                outcome.problems.append("expected a decision, but this step made none")
            else:
                opened = "opened" if decision.granted else "shut"
                if expect.door is not None and expect.door != opened:
                    outcome.problems.append(f"expected the door {expect.door}, it {opened}")
                if expect.reason is not None and expect.reason != decision.reason.value:
                    outcome.problems.append(
                        f"expected reason {expect.reason}, got {decision.reason.value} "
                        f"({decision.message!r})"
                    )
        if expect.led is not None:
            action = step.tap or step.scan
            door = action.door if action is not None else self.doors[0]
            feedback = gw.feedback[door]
            with contextlib.suppress(StuckError):
                await self._settle(lambda: feedback.playing == expect.led, "", 2, advance=False)
            if feedback.playing != expect.led:
                outcome.problems.append(
                    f"expected the {expect.led} LED pattern, saw {feedback.playing}"
                )
        if expect.cloud_caught_up:
            await self._caught_up(gw, outcome)
        if expect.cloud_event is not None:
            try:
                await self._settle(
                    lambda: self._cloud_has(expect.cloud_event, expect.cloud_reason),
                    "the platform to receive it",
                    60,
                    advance=False,
                )
            except StuckError:
                got = sorted({e["type"] for e in self.cloud.events_of("gw-1")})
                outcome.problems.append(
                    f"expected the platform to receive {expect.cloud_event}"
                    + (f" ({expect.cloud_reason})" if expect.cloud_reason else "")
                    + f"; it has {', '.join(got) or 'nothing'}"
                )

    async def _caught_up(self, gw: Gateway, outcome: Outcome) -> None:
        recorded = gw.outbox.last_seq
        received = self.cloud.received["gw-1"]
        try:
            await self._settle(
                lambda: received.contiguous >= recorded, "the platform", 60, advance=False
            )
        except StuckError:
            outcome.problems.append(
                f"expected the platform to have all {recorded} events; it has "
                f"{received.contiguous} in order ({len(received.events)} in all)"
            )
        else:
            outcome.happened = (
                f"the platform has all {recorded} events, in order, "
                f"{received.duplicates} sent twice and stored once"
            )

    def _cloud_has(self, type_: str | None, reason: str | None) -> bool:
        return any(
            e["type"] == type_ and (reason is None or e["data"].get("reason") == reason)
            for e in self.cloud.events_of("gw-1")
        )


def _have_mosquitto() -> bool:
    from sim.broker import find_mosquitto

    try:
        find_mosquitto()
    except (OSError, RuntimeError, FileNotFoundError):
        return False
    return True


async def _maybe(result: Any) -> None:
    """Await ``result`` if it is awaitable (the embedded broker's start and stop are)."""
    if asyncio.iscoroutine(result):
        await result


def _decision_of(event: dict[str, Any]) -> Decision:
    from gateway.decision import Reason

    data = event["data"]
    return Decision(
        bool(data["granted"]),
        Reason(data["reason"]),
        data.get("message", ""),
        data["door"],
        int(event["at"]),
        member_id=data.get("member"),
        credential_id=data.get("credential"),
    )


def _describe(step: Step) -> str:
    for name in ACTIONS:
        value = getattr(step, name)
        if value is not None:
            if isinstance(value, BaseModel):
                shown = ", ".join(
                    f"{k}={v}" for k, v in value.model_dump(exclude_defaults=True).items()
                )
                return f"{name} {shown}"
            return f"{name} {value}"
    return "restart the gateway" if step.restart_gateway else "wait"


def describe_outcome(o: Outcome, tz: ZoneInfo) -> list[str]:
    """The report's lines for one step."""
    mark = "FAIL" if o.problems else " ok "
    when = o.at.astimezone(tz).strftime("%a %d %b %H:%M")
    lines = [f"[{mark}] step {o.index} {when}  {o.what}"]
    if o.happened:
        lines.append(f"         {o.happened}")
    lines.extend(f"         -> {problem}" for problem in o.problems)
    lines.extend(f"         | {line}" for line in o.state)
    return lines


def summary(outcomes: list[Outcome]) -> tuple[str, bool]:
    """The closing line, and whether every expectation held."""
    failed = sum(bool(o.problems) for o in outcomes)
    text = f"{len(outcomes)} steps, " + (
        "every expectation met" if not failed else f"{failed} with unmet expectations"
    )
    return text, not failed


def report(scenario: Scenario, outcomes: list[Outcome], tz: ZoneInfo) -> tuple[str, bool]:
    """A readable account of the run, and whether every expectation held."""
    lines = [f"scenario: {scenario.title}"]
    for o in outcomes:
        lines.extend(describe_outcome(o, tz))
    last, passed = summary(outcomes)
    lines.append(last)
    return "\n".join(lines), passed


def run_file(
    path: Path, workdir: Path, *, broker: str = "auto", live: Any = None, watch: bool = False
) -> tuple[str, bool]:
    """Run the scenario in ``path``; its report and whether it passed.

    ``live`` (a callable taking a line) gets the account as it happens.
    """
    scenario = load_scenario(path)
    runner = Runner(scenario, workdir, broker=broker, watch=watch)
    if live is not None:
        live(f"scenario: {scenario.title}")
        runner.on_outcome = lambda o: [live(line) for line in describe_outcome(o, runner.tz)]

    async def go() -> list[Outcome]:
        return await runner.run()

    outcomes = asyncio.run(go())
    return report(scenario, outcomes, runner.tz)
