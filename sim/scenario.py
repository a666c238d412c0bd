"""Scripted scenarios: a site, a timeline of things that happen, and what must follow.

A scenario file (TOML, see sim/scenarios/README.md) names a start time and
a list of steps.  Each step happens at a site-local time (``"14:05"``, or
``"+10m"`` after the previous step) and does one thing: the platform books,
cancels or suspends; someone taps a card, types a PIN or scans a QR code;
a door is held open or forced; the broker goes down; the gateway restarts.
A step can expect what follows: whether the door opened, the reason code,
the LED pattern, an event the platform received.

The runner drives the real gateway daemon (its cache and outbox files, its
sync engine, its door controllers on gpiozero mock pins, a PN532 NFC reader
and a QR scanner on ptys at every door, a Wiegand reader and keypad on mock
pins) against a real broker and the platform stand-in of :mod:`sim.cloud`,
on a simulated clock: a day runs in seconds (see :mod:`sim.site`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock
from gateway.core import qr
from gateway.core.decision import Decision
from gateway.wire.dataset import describe_validation_error
from sim.cloud import CloudPeer
from sim.errors import ScenarioError, SimError, StuckError
from sim.site import VirtualSite, example_dataset, maybe_await

#: The scenario's one gateway, which drives every door of the site.
_GW = "gw-1"
#: Seconds of real time one step may take before the scenario is stopped as stuck.
STEP_LIMIT = 120.0
#: The scenario ``doorgw sim demo`` runs.
DEMO = Path(__file__).parent / "scenarios" / "demo.toml"
_AT = re.compile(r"^(?:\+(?P<rel>\d+)(?P<unit>[smhd])|(?P<hm>\d{1,2}:\d{2})|(?P<iso>\d{4}-.+))$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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
        #: Called with each step's outcome as soon as it is known (a live account).
        self.on_outcome = on_outcome
        self.watch = watch
        self._seen_event = 0
        self.scenario = scenario
        self.dataset = example_dataset()
        self.tz = ZoneInfo(self.dataset["site"]["timezone"])
        try:
            start = datetime.fromisoformat(scenario.start)
        except ValueError:
            raise ScenarioError(f"start {scenario.start!r} is not an ISO time") from None
        self.start = start if start.tzinfo else start.replace(tzinfo=self.tz)
        self.clock = ManualClock(self.start)
        try:
            self.site = VirtualSite(workdir, self.clock, broker=broker, dataset=self.dataset)
        except SimError as exc:
            raise ScenarioError(str(exc)) from None
        self.broker_kind = self.site.broker_kind
        self.sim = self.site.gateways[_GW]
        self.doors = self.sim.doors
        self.outcomes: list[Outcome] = []
        self.app_keys: dict[str, Any] = {}
        self._last_code: str | None = None

    @property
    def cloud(self) -> CloudPeer:
        """The platform stand-in."""
        return self.site.platform

    async def run(self) -> list[Outcome]:
        """Run every step; the outcomes say what held and what did not."""
        try:
            try:
                async with asyncio.timeout(STEP_LIMIT):
                    await self.site.start()
            except (TimeoutError, StuckError) as exc:
                start = Outcome(0, self.clock.now(), "start the site")
                start.problems.append(f"the site did not start: {exc or 'timed out'}")
                self.outcomes.append(start)
                return self.outcomes
            gw = self.sim.gw
            if gw.events.recent:  # the watch shows what steps cause, not the start-up
                self._seen_event = gw.events.recent[-1]["id"]
            for index, step in enumerate(self.scenario.steps, 1):
                try:
                    # A scenario must fail, never hang: each step gets a real-time limit.
                    async with asyncio.timeout(STEP_LIMIT):
                        await self._step(index, step)
                except (TimeoutError, StuckError) as exc:
                    stuck = (
                        self.outcomes[-1] if self.outcomes else Outcome(index, self.clock.now(), "")
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
            await self.site.close()
        return self.outcomes

    async def _settle(
        self, predicate: Any, what: str, real_seconds: float = 20.0, *, advance: bool = True
    ) -> None:
        await self.site.settle(predicate, what, real_seconds, advance=advance)

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
        # Waiting for real I/O lets the clock run on a little (settle), more so
        # on a busy machine: a step the clock has already passed runs now.
        remaining = (when - self.clock.now()).total_seconds()
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

    async def _step(self, index: int, step: Step) -> None:
        # Times follow the script, not the clock: "+1m" is a minute after the
        # previous step's time, however long its real I/O took.
        previous = self.outcomes[-1].at if self.outcomes else self.clock.now()
        when = self._when(step.at, previous)
        if self.outcomes and when < previous:
            raise ScenarioError(f"time cannot go back to {when.isoformat()}")
        await self._advance_to(when)
        outcome = Outcome(index, when, step.note or _describe(step))
        self.outcomes.append(outcome)
        decision: Decision | None = None
        cloud, site, gw = self.cloud, self.site, self.sim.gw
        try:
            if step.book is not None:
                b = step.book
                start, end = self._local(b.start, when), self._local(b.end, when)
                await cloud.book(
                    b.id,
                    b.member,
                    b.resource,
                    start,
                    end,
                    paid=b.paid,
                    grace_minutes=b.grace_minutes,
                )
                await self._synced()
            elif step.cancel is not None:
                await self._change(outcome, "booking", step.cancel, payment="cancelled")
            elif step.suspend is not None:
                await self._change(outcome, "member", step.suspend, status="suspended")
            elif step.tap is not None:
                tap = step.tap
                if tap.pin is not None:
                    decision = await site.keys(tap.door, tap.pin + "#")
                else:
                    decision = await site.present(tap.door, tap.card or "")
            elif step.scan is not None:
                decision = await site.scan(step.scan.door, await self._code(step.scan, when))
            elif step.open_door is not None:
                await site.set_contact(step.open_door, open_=True)
            elif step.close_door is not None:
                await site.set_contact(step.close_door, open_=False)
            elif step.lockdown is not None:
                await gw.modes.set_lockdown(step.lockdown, by="scenario")
            elif step.broker == "down":
                await maybe_await(site.broker.stop())
                await self._settle(lambda: not gw.link.connected.is_set(), "the link to notice")
            elif step.broker == "up":
                await maybe_await(site.broker.start())
                await self._settle(lambda: gw.link.connected.is_set(), "the link to reconnect", 60)
            elif step.restart_gateway:
                await site.stop_gateway(self.sim)
                gw = await site.start_gateway(self.sim)
        except SimError as exc:
            outcome.problems.append(str(exc))
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

    def _state(self, gw: Gateway) -> list[str]:
        """Doors, readers, sync and outbox now, and the events since the last look."""
        doors = []
        for door_id in gw.station.doors:
            led = gw.station.feedback[door_id].playing or "-"
            doors.append(f"{door_id} {gw.station.door_states()[door_id]} led:{led}")
        readers = " ".join(
            f"{r}:{'up' if up else 'DOWN'}" for r, up in gw.station.readers_online().items()
        )
        link = "up" if gw.link.connected.is_set() else "DOWN"
        lines = [
            "doors    " + " | ".join(doors),
            f"readers  {readers}",
            f"sync     link {link}, data v{gw.engine.version} (platform v{self.cloud.version}), "
            f"outbox {gw.outbox.depth} unsent" + (", LOCKDOWN" if gw.modes.lockdown else ""),
        ]
        fresh = [e for e in gw.events.recent if e["id"] > self._seen_event]
        if gw.events.recent:
            self._seen_event = gw.events.recent[-1]["id"]
        for event in fresh[-8:]:
            data = event["data"]
            detail = " ".join(
                str(data[k]) for k in ("door", "reader", "reason", "mode", "version") if data.get(k)
            )
            lines.append(f"event    {event['type']} {detail}".rstrip())
        if len(fresh) > 8:
            lines.append(f"event    ... and {len(fresh) - 8} more")
        return lines

    async def _change(self, outcome: Outcome, entity: str, item_id: str, **fields: str) -> None:
        """The platform changes ``fields`` of one entity and publishes the delta."""
        try:
            await self.cloud.update(entity, item_id, **fields)
        except KeyError as exc:
            outcome.problems.append(str(exc.args[0]))
            return
        await self._synced()

    async def _synced(self) -> None:
        gw = self.sim.gw
        await self._settle(lambda: gw.engine.version == self.cloud.version, "the delta")

    async def _code(self, scan: Scan, when: datetime) -> str:
        """The text the step's scan shows: a pass the platform issues now, an app code,
        or the last code again."""
        now = int(when.timestamp())
        if scan.again and self._last_code is not None:
            text = self._last_code
        elif scan.day_pass is not None:
            text = self.cloud.issue_pass(
                pass_id=scan.day_pass,
                not_before=now - 60,
                not_after=now + int(scan.hours * 3600),
                doors=scan.doors or [scan.door],
                max_uses=scan.uses,
                kind=qr.PassKind[scan.kind.upper()],
            )
        elif scan.app_code is not None:
            if scan.app_code not in self.app_keys:
                # The member app is enrolled with the platform on its first use.
                member = scan.app_code.removeprefix("app-")
                self.app_keys[scan.app_code] = await self.cloud.register_app(scan.app_code, member)
                await self._synced()
            text = qr.app_code(self.app_keys[scan.app_code], scan.app_code, now)
        else:
            raise ScenarioError("a scan needs day_pass, app_code or again = true")
        # Steps are seconds apart on the simulated clock, so even the same code is a
        # new presentation, not a scanner repeating itself (that is under 2 s).
        self._last_code = text
        return text

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
            feedback = gw.station.feedback[door]
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
                got = sorted({e["type"] for e in self.cloud.events_of(_GW)})
                outcome.problems.append(
                    f"expected the platform to receive {expect.cloud_event}"
                    + (f" ({expect.cloud_reason})" if expect.cloud_reason else "")
                    + f"; it has {', '.join(got) or 'nothing'}"
                )

    async def _caught_up(self, gw: Gateway, outcome: Outcome) -> None:
        recorded = gw.outbox.last_seq
        received = self.cloud.received[_GW]
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
            for e in self.cloud.events_of(_GW)
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
