"""``doorgw sim``: a whole virtual site running until stopped, with a live view.

The site (:class:`sim.site.VirtualSite`) runs on a clock that moves
``speed`` times faster than real time.  A seeded script of ordinary life
plays on it: members tap their cards (and walk through, and now and then
leave a door open too long), the platform books and takes payment for
rooms (sometimes a booking is left unpaid, sometimes one is cancelled),
visitors scan day passes, members show their app's rotating code, someone
types a PIN, and once in a while a door is forced.  Every decision is the
real daemon's; every event travels to the platform stand-in over MQTT.

The view (rich) shows each door's lock, contact, LED pattern and alarm,
each reader, each gateway's link, data version and outbox, and the event
stream.  ``--plain`` (or output that is not a terminal) prints the events
as lines instead.  Stopping (Ctrl-C, or ``--for`` elapsed) shuts the site
down cleanly and says whether the platform received every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import ManualClock
from gateway.core import qr
from sim.errors import SimError, StuckError
from sim.site import VirtualSite, example_dataset

log = logging.getLogger(__name__)

#: Real seconds between clock ticks (and view refreshes).
_TICK = 0.05
#: The largest single jump of the simulated clock, so timers fire close to on time.
_MAX_JUMP = 1.0


@dataclass
class Tally:
    """What happened, for the closing summary."""

    decisions: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


class LiveSite:
    """A virtual site, a script of site life, and a clock running ``speed`` x real time."""

    def __init__(
        self,
        workdir: Path,
        *,
        gateways: int = 1,
        broker: str = "auto",
        speed: float = 60.0,
        start: datetime | None = None,
        seed: int = 1,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        self.dataset = dataset if dataset is not None else example_dataset()
        self.tz = ZoneInfo(self.dataset["site"]["timezone"])
        if start is None:
            today = datetime.now(self.tz)
            start = today.replace(hour=7, minute=30, second=0, microsecond=0)
        elif start.tzinfo is None:
            start = start.replace(tzinfo=self.tz)
        self.start = start
        self.clock = ManualClock(start)
        self.site = VirtualSite(
            workdir, self.clock, gateways=gateways, broker=broker, dataset=self.dataset
        )
        self.speed = speed
        # Site life, not secrets: seeded so that a run can be repeated.
        self.rng = random.Random(seed)  # noqa: S311
        self.tally = Tally()
        self._bookings: list[str] = []
        self._apps: dict[str, Any] = {}
        self._next_id = 0
        # Who and what the script can use, from the site's own data.
        self._doors = [d["id"] for d in self.dataset["doors"]]
        #: Each bookable resource and the door that opens it.
        self._room_doors = {
            r: d["id"] for d in self.dataset["doors"] for r in d.get("resources", [])
        }
        self._rooms = sorted(self._room_doors)
        self._members = [m["id"] for m in self.dataset["members"]]
        carded = {
            c["member_id"]
            for c in self.dataset["credentials"]
            if c["kind"] in ("nfc_uid", "wiegand")
        }
        active = [m["id"] for m in self.dataset["members"] if m.get("status") == "active"]
        self._bookers = [m for m in active if m in carded] or active
        #: While above 0, the clock waits: a member's tap and its decision, say, take
        #: real milliseconds that must not become minutes of site time at high speed.
        self._holds = 0
        self.final: tuple[int, int] = (0, 0)
        #: Site time when the script stopped (the summary's end), once it has.
        self.ended: datetime | None = None
        #: Set just before the site shuts down.
        self.stopping = False

    # Running.

    async def run(self, duration: timedelta | None, on_tick: Callable[[], None]) -> None:
        """Start the site, play the script until ``duration`` of site time (or until
        cancelled), then stop everything."""
        try:
            await self.site.start()
            ticker = asyncio.create_task(self._tick(on_tick), name="clock")
            life = asyncio.create_task(self._life(), name="site life")
            try:
                if duration is None:
                    await asyncio.Event().wait()
                else:
                    await self.clock.sleep(duration.total_seconds())
            finally:
                self.ended = self.clock.now()
                life.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await life
                # Site time stops here: catching up is the simulator's business.
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                await self._caught_up()
                self.final = self.delivered()
                self.stopping = True
                on_tick()  # the last picture, while the gateways still run
        finally:
            await self.site.close()

    async def _tick(self, on_tick: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(_TICK)
            now = loop.time()
            remaining = (now - last) * self.speed
            last = now
            # An action that holds the clock stops it at once, even mid-tick.
            while remaining > 0 and not self._holds:
                jump = min(remaining, _MAX_JUMP)
                self.clock.advance(jump)
                remaining -= jump
                for _ in range(3):
                    await asyncio.sleep(0)
            on_tick()

    async def _caught_up(self) -> None:
        """Give the platform up to 10 s of real time to receive what is still queued,
        and the gateways to take its acks (up to 0.5 s after they arrive)."""
        with contextlib.suppress(StuckError):
            await self.site.settle(
                lambda: (
                    not any(
                        sim.gateway is not None and sim.gateway.outbox.depth
                        for sim in self.site.gateways.values()
                    )
                ),
                "the platform to receive every event",
                10,
                advance=False,
            )

    # The script of site life.

    async def _life(self) -> None:
        while True:
            local = self.clock.now().astimezone(self.tz)
            busy = 7 <= local.hour < 22
            await self.clock.sleep(self.rng.uniform(60, 600) if busy else 1800)
            action = self.rng.choices(
                ["tap", "book", "cancel", "day_pass", "app_code", "pin", "forced"],
                weights=[50, 12, 3, 8, 12, 6, 1] if busy else [60, 0, 0, 0, 20, 20, 0],
            )[0]
            try:
                self._holds += 1
                try:
                    done = await getattr(self, f"_{action}")()
                finally:
                    self._holds -= 1
                if done is not False:  # False: there was nothing to do it to
                    self.tally.actions[action] += 1
            except (SimError, StuckError, KeyError, ValueError) as exc:
                # Site life goes on; the summary says what could not be done.
                self.tally.problems.append(f"{action}: {exc}")

    async def _wait(self, seconds: float) -> None:
        """Let ``seconds`` of site time pass in the middle of an action."""
        held, self._holds = self._holds, 0
        try:
            await self.clock.sleep(seconds)
        finally:
            self._holds += held

    def _id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}-{self._next_id}"

    async def _walk_through(self, door: str, granted: bool) -> None:
        """Someone let in opens the door, walks through and (usually) shuts it."""
        if not granted:
            return
        await self._wait(self.rng.uniform(1, 3))
        await self.site.set_contact(door, open_=True)
        # One in twenty props it open past the door's held-open time.
        held = 90 if self.rng.random() < 0.05 else self.rng.uniform(3, 12)
        await self._wait(held)
        await self.site.set_contact(door, open_=False)

    def _record(self, decision: Any) -> bool:
        if decision is None:
            return False
        self.tally.decisions[decision.reason.value] += 1
        return bool(decision.granted)

    async def _tap(self) -> None:
        """Usually a member arriving for a booking the platform made; else anyone, anywhere."""
        platform = self.site.platform
        cards = {
            c["member_id"]: c
            for c in platform.dataset["credentials"]
            if c["kind"] in ("nfc_uid", "wiegand")
        }
        now = self.clock.now()
        soon = [
            b
            for b in platform.dataset["bookings"]
            if b["id"] in self._bookings
            and b["member_id"] in cards
            and datetime.fromisoformat(b["start"]) - timedelta(minutes=20) <= now
            and now <= datetime.fromisoformat(b["end"])
        ]
        if soon and self.rng.random() < 0.6:
            booking = self.rng.choice(soon)
            card, door = cards[booking["member_id"]], self._room_doors[booking["resource_id"]]
        else:
            card = self.rng.choice(list(cards.values()))
            door = self.rng.choice(self._doors)
        kind = "nfc" if card["kind"] == "nfc_uid" else "wiegand"
        granted = self._record(await self.site.present(door, f"{kind}:{card['value']}"))
        await self._walk_through(door, granted)

    async def _book(self) -> bool:
        now = self.clock.now().astimezone(self.tz)
        start = (now + timedelta(minutes=self.rng.choice([0, 15, 30, 60]))).replace(
            second=0, microsecond=0
        )
        end = start + timedelta(hours=self.rng.choice([1, 2]))
        if not self._rooms or not self._bookers:
            return False  # a site without bookable rooms
        member = self.rng.choice(self._bookers)
        booking = self._id("bk-sim")
        paid = self.rng.random() > 0.15
        await self.site.platform.book(
            booking,
            member,
            self.rng.choice(self._rooms),
            start.isoformat(),
            end.isoformat(),
            paid=paid,
        )
        self._bookings.append(booking)
        return True

    async def _cancel(self) -> bool:
        if not self._bookings:
            return False
        booking = self.rng.choice(self._bookings)
        await self.site.platform.update("booking", booking, payment="cancelled")
        self._bookings.remove(booking)
        return True

    async def _day_pass(self) -> None:
        now = int(self.clock.now().timestamp())
        text = self.site.platform.issue_pass(
            pass_id=self._id("pass-sim"),
            not_before=now - 60,
            not_after=now + 8 * 3600,
            doors=[self._doors[0]],
            max_uses=2,
            kind=qr.PassKind.DAY_PASS,
            holder="Visitor",
        )
        granted = self._record(await self.site.scan(self._doors[0], text))
        await self._walk_through(self._doors[0], granted)

    async def _app_code(self) -> None:
        member = self.rng.choice(self._members)
        credential = f"app-{member}"
        if credential not in self._apps:
            self._apps[credential] = await self.site.platform.register_app(credential, member)
            await self._synced()
        now = int(self.clock.now().timestamp())
        text = qr.app_code(self._apps[credential], credential, now)
        door = self.rng.choice(self._doors)
        granted = self._record(await self.site.scan(door, text))
        await self._walk_through(door, granted)

    async def _pin(self) -> None:
        sim = self.site.gateways["gw-1"]
        door = sim.doors[0]
        # The example site's resident's PIN, or a guess (refused: unknown PIN).
        pin = self.rng.choice(["4711", f"{self.rng.randrange(10_000):04d}"])
        granted = self._record(await self.site.keys(door, pin + "#"))
        await self._walk_through(door, granted)

    async def _forced(self) -> None:
        door = self.rng.choice(self._doors)
        await self.site.set_contact(door, open_=True)
        await self._wait(20)
        await self.site.set_contact(door, open_=False)

    async def _synced(self) -> None:
        version = self.site.platform.version
        await self.site.settle(
            lambda: all(sim.gw.engine.version == version for sim in self.site.gateways.values()),
            "the delta",
        )

    # What the view shows.

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every gateway's recent events, oldest first, with the gateway's name."""
        merged = [
            (sim.name, event)
            for sim in self.site.gateways.values()
            if sim.gateway is not None
            for event in sim.gateway.events.recent
        ]
        merged.sort(key=lambda pair: (pair[1]["at"], pair[0], pair[1]["id"]))
        return merged

    def delivered(self) -> tuple[int, int]:
        """Events recorded by all gateways, and how many the platform has in order."""
        cloud = self.site.cloud
        recorded = received = 0
        for sim in self.site.gateways.values():
            if sim.gateway is not None:
                recorded += sim.gateway.outbox.last_seq
            if cloud is not None:
                received += cloud.received[sim.name].contiguous
        return recorded, received


def load_site(path: Path) -> dict[str, Any]:
    """A site's data as the platform would send it (a dataset JSON document, as in
    docs/protocol.md); SimError says what is wrong with it."""
    import json

    from gateway.errors import DatasetError
    from gateway.wire.dataset import parse_dataset

    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except OSError as exc:
        raise SimError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise SimError(f"{path}: not JSON: {exc}") from None
    try:
        parse_dataset(doc)
    except DatasetError as exc:
        raise SimError(f"{path}: {exc}") from None
    if not doc.get("doors"):
        raise SimError(f"{path}: the site has no doors to simulate")
    return doc


def describe_event(gateway: str, event: dict[str, Any], tz: ZoneInfo) -> str:
    """One event as a line: site-local time, gateway, type and what matters in it."""
    at = datetime.fromtimestamp(event["at"], tz).strftime("%H:%M:%S")
    data = event["data"]
    if event["type"] == "access":
        code = data.get("code") or {}
        who = data.get("member") or (code.get("pass") and f"pass {code['pass']}")
        who = who or data.get("credential") or "unknown"
        verdict = "OPENED" if data.get("granted") else "shut"
        at_reader = f" ({data['reader']})" if data.get("reader") else ""
        detail = f"{data.get('door')}{at_reader} {who} {verdict} {data.get('reason')}"
        if data.get("message"):
            detail += f": {data['message']}"
    else:
        keys = ("door", "reader", "alarm", "reason", "mode", "version", "source")
        detail = " ".join(f"{data[k]}" for k in keys if data.get(k) not in (None, ""))
        if "trusted" in data:
            detail = ("trusted " if data["trusted"] else "UNTRUSTED ") + detail
    return f"{at} {gateway} {event['type']} {detail}".rstrip()


# Showing it.


class PlainView:
    """New events as lines, for logs and for output that is not a terminal."""

    def __init__(self, live: LiveSite, write: Callable[[str], None] = print) -> None:
        self.live = live
        self.write = write
        self._seen: dict[str, int] = {}

    def __call__(self) -> None:
        for gateway, event in self.live.events():
            if event["id"] > self._seen.get(gateway, 0):
                self._seen[gateway] = event["id"]
                self.write(describe_event(gateway, event, self.live.tz))


class RichView:
    """A full-screen-width live panel: doors, readers, gateways and the event stream."""

    def __init__(self, live: LiveSite, console: Any) -> None:
        from rich.live import Live

        self.live = live
        self.console = console
        self.screen = Live(console=console, refresh_per_second=4, transient=False)
        self._last = 0.0

    def __enter__(self) -> RichView:
        self.screen.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.screen.__exit__(None, None, None)  # the last picture stays on screen

    def __call__(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last >= 0.25 or self.live.stopping:
            self._last = now
            self.screen.update(self.render(), refresh=self.live.stopping)

    def render(self) -> Any:
        """The whole panel as one rich renderable."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        live, site = self.live, self.live.site
        now = live.clock.now().astimezone(live.tz)
        header = Text.assemble(
            (f" {site.site_id} ", "bold reverse"),
            f"  {now:%a %d %b %H:%M:%S}  x{live.speed:g}  broker: {site.broker_kind}  ",
            ("Ctrl-C stops", "dim"),
        )
        doors = Table(title="doors", title_justify="left", expand=True)
        for column in ("door", "gateway", "lock", "contact", "LED", "alarm"):
            doors.add_column(column)
        gateways = Table(title="gateways", title_justify="left", expand=True)
        for column in ("gateway", "link", "data", "outbox", "readers"):
            gateways.add_column(column)
        platform = site.cloud
        for sim in site.gateways.values():
            gw = sim.gateway
            if gw is None:
                gateways.add_row(sim.name, Text("stopped", "red"), "", "", "")
                continue
            states = gw.station.door_states()
            for door in sim.doors:
                parts = states[door].split("/")
                lock = Text(parts[0], "green" if parts[0] == "unlocked" else "")
                contact = parts[1] if len(parts) > 1 else "-"
                alarm = Text(parts[2], "bold red") if len(parts) > 2 else Text("")
                led = gw.station.feedback[door].playing or "-"
                doors.add_row(door, sim.name, lock, contact, led, alarm)
            link = Text("up", "green") if gw.link.connected.is_set() else Text("DOWN", "red")
            data = f"v{gw.engine.version}" + (
                f" (platform v{platform.version})" if platform is not None else ""
            )
            readers = " ".join(
                f"{r}:{'up' if up else 'DOWN'}" for r, up in gw.station.readers_online().items()
            )
            lockdown = " LOCKDOWN" if gw.modes.lockdown else ""
            gateways.add_row(sim.name, link, data, f"{gw.outbox.depth} unsent{lockdown}", readers)
        events = Table(title="events", title_justify="left", expand=True, show_header=False)
        events.add_column("event", overflow="ellipsis", no_wrap=True)
        for gateway, event in live.events()[-14:]:
            line = describe_event(gateway, event, live.tz)
            style = "red" if event["type"] in ("door_forced", "door_held_open") else ""
            if event["type"] == "access":
                style = "green" if event["data"].get("granted") else "yellow"
            events.add_row(Text(line, style))
        return Group(header, doors, gateways, events)


def summary(live: LiveSite, started: datetime) -> tuple[list[str], bool]:
    """Closing lines, and whether the platform received every event."""
    ended = live.ended or live.clock.now()
    span = ended - started
    hours = span.total_seconds() / 3600
    decisions = live.tally.decisions
    granted = sum(n for reason, n in decisions.items() if reason.startswith("granted"))
    refused = ", ".join(
        f"{reason} {n}" for reason, n in decisions.most_common() if not reason.startswith("granted")
    )
    recorded, received = live.final
    lines = [
        f"site time {started.astimezone(live.tz):%a %d %b %H:%M} to "
        f"{ended.astimezone(live.tz):%H:%M} ({hours:.1f} h at x{live.speed:g}), "
        f"{len(live.site.gateways)} gateway(s)",
        f"decisions {sum(decisions.values())}: opened {granted}"
        + (f"; shut: {refused}" if refused else ""),
        f"platform  received {received} of {recorded} events, in order",
        "actions   " + ", ".join(f"{a} {n}" for a, n in live.tally.actions.most_common()),
    ]
    lines += [f"note      {problem}" for problem in live.tally.problems[:10]]
    return lines, received >= recorded


def run_live(
    workdir: Path,
    *,
    gateways: int,
    broker: str,
    speed: float,
    duration: timedelta | None,
    start: datetime | None,
    seed: int,
    plain: bool,
    site: Path | None = None,
) -> int:
    """``doorgw sim``: run the site; 0 when the platform received every event."""
    live = LiveSite(
        workdir,
        gateways=gateways,
        broker=broker,
        speed=speed,
        start=start,
        seed=seed,
        dataset=None if site is None else load_site(site),
    )
    begun = live.start

    async def go(view: Callable[[], None]) -> None:
        # SIGTERM (systemd, a CI job's end) stops the site as Ctrl-C does.
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await live.run(duration, view)

    if plain:
        print(
            f"site {live.site.site_id}: {gateways} gateway(s), broker {live.site.broker_kind}, "
            f"x{speed:g} from {begun.astimezone(live.tz):%a %d %b %H:%M}",
            flush=True,
        )
        view: Any = PlainView(live, lambda line: print(line, flush=True))
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(go(view))
    else:
        from rich.console import Console

        console = Console()
        with RichView(live, console) as rich_view, contextlib.suppress(KeyboardInterrupt):
            asyncio.run(go(rich_view))
    lines, delivered = summary(live, begun)
    print("\n".join(lines))
    return 0 if delivered else 1
