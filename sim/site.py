"""A virtual site: a broker, the platform stand-in, and gateways on emulated hardware.

Everything runs in this process on one simulated clock except the broker
(Mosquitto, or the embedded pure-Python one): each gateway is the real
daemon (:class:`gateway.app.gateway.Gateway`) with its own data directory, its
own gpiozero :class:`MockFactory` for the door relays, contacts and LEDs, a
Wiegand reader and keypad on mock pins at its first door, and a QR scanner
on a pty at every door.  The site's doors are shared out among the gateways
in turn.  The scenario runner (:mod:`sim.scenario`) and the live site
(:mod:`sim.live`) both build on this.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock
from gateway.config.models import (
    DoorConfig,
    Pn532ReaderConfig,
    ReaderConfig,
    ScannerReaderConfig,
    TimeSection,
    WiegandReaderConfig,
    load_config,
)
from gateway.config.write import config_with, write_config
from gateway.core.credentials import parse_read
from gateway.core.decision import Decision
from gateway.tools.demo import example_document
from sim.broker import Broker
from sim.cloud import CloudPeer
from sim.embedded_broker import EmbeddedBroker
from sim.errors import SimError, StuckError
from sim.pn532 import SimulatedPn532
from sim.scanner import SimulatedScanner
from sim.wiegand import SimulatedWiegand

#: GPIOs of a gateway's doors, in door order: (lock, contact, green, red); with the
#: Wiegand lines below, six doors use the 26 free GPIOs of a Pi's header.
DOOR_PINS = [
    (5, 16, 20, 24),
    (6, 17, 21, 25),
    (12, 18, 22, 26),
    (13, 19, 23, 27),
    (4, 7, 8, 9),
    (10, 11, 14, 15),
]
#: The Wiegand reader and keypad at a gateway's first door: DATA0, DATA1.
WIEGAND = (2, 3)


def example_dataset() -> dict[str, Any]:
    """The bundled example site (doors front, room-3, studio, office-12)."""
    return example_document()


def have_mosquitto() -> bool:
    """Whether a Mosquitto binary is installed."""
    from sim.broker import find_mosquitto

    try:
        find_mosquitto()
    except (OSError, RuntimeError):
        return False
    return True


async def maybe_await(result: Any) -> None:
    """Await ``result`` if it is awaitable (the embedded broker's start and stop are)."""
    if asyncio.iscoroutine(result):
        await result


@dataclass
class SimGateway:
    """One gateway of the site and the hardware wired to it."""

    name: str
    doors: list[str]
    home: Path
    factory: MockFactory = field(default_factory=MockFactory)
    scanners: dict[str, SimulatedScanner] = field(default_factory=dict)
    nfc: dict[str, SimulatedPn532] = field(default_factory=dict)
    wiegand: SimulatedWiegand | None = None
    config_path: Path | None = None
    gateway: Gateway | None = None
    open_doors: set[str] = field(default_factory=set)
    _running: Any = None

    @property
    def gw(self) -> Gateway:
        """The running daemon."""
        assert self.gateway is not None, f"{self.name} is not running"
        return self.gateway

    def contact_pin(self, door: str) -> Any:
        """The mock pin of ``door``'s contact."""
        return self.factory.pin(DOOR_PINS[self.doors.index(door)][1])


class VirtualSite:
    """Broker, platform stand-in and ``gateways`` real daemons sharing one clock."""

    def __init__(
        self,
        workdir: Path,
        clock: ManualClock,
        *,
        gateways: int = 1,
        broker: str = "auto",
        dataset: dict[str, Any] | None = None,
    ) -> None:
        if broker not in ("auto", "mosquitto", "embedded"):
            raise SimError(f"broker {broker!r}: auto, mosquitto or embedded")
        if broker == "auto":
            broker = "mosquitto" if have_mosquitto() else "embedded"
        self.broker_kind = broker
        self.workdir = workdir
        self.clock = clock
        self.dataset = dataset if dataset is not None else example_dataset()
        self.site_id: str = self.dataset["site"]["id"]
        doors = [d["id"] for d in self.dataset["doors"]]
        fewest = -(-len(doors) // len(DOOR_PINS))  # each gateway drives up to six doors
        if not fewest <= gateways <= len(doors):
            raise SimError(
                f"this site has {len(doors)} doors, so {fewest} to {len(doors)} gateways "
                f"(a gateway drives 1 to {len(DOOR_PINS)}; doorgw sim fleet runs many "
                "gateways without doors of their own)"
            )
        self.gateways = {
            f"gw-{i + 1}": SimGateway(f"gw-{i + 1}", doors[i::gateways], workdir / f"gw-{i + 1}")
            for i in range(gateways)
        }
        self.broker: Any = None
        self.cloud: CloudPeer | None = None
        self._cloud_task: asyncio.Task[None] | None = None

    # The whole site.

    async def start(self) -> None:
        """Broker, platform and every gateway up, synced, readers online."""
        names = list(self.gateways)
        where = self.workdir / "broker"
        if self.broker_kind == "mosquitto":
            self.broker = Broker(where, site=self.site_id, gateways=names)
        else:
            self.broker = EmbeddedBroker(where, site=self.site_id, gateways=names)
        await maybe_await(self.broker.start())
        self.cloud = self.broker.cloud_peer(
            self.dataset, now=self.clock.now, store=self.workdir / "platform-events.sqlite3"
        )
        self._cloud_task = asyncio.create_task(self.cloud.run(), name="cloud")
        await self.settle(self.cloud.connected.is_set, "the platform to connect", advance=False)
        for sim in self.gateways.values():
            sim.home.mkdir(parents=True, exist_ok=True)
            sim.scanners = {d: SimulatedScanner(sim.home / f"scanner-{d}") for d in sim.doors}
            sim.nfc = {d: SimulatedPn532() for d in sim.doors}
            sim.wiegand = SimulatedWiegand(sim.factory, *WIEGAND)
            sim.config_path = self._config(sim)
            await self.start_gateway(sim)

    async def close(self) -> None:
        """Everything down, in reverse; waits are bounded so a stuck part cannot hang it."""
        for sim in self.gateways.values():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    await self.stop_gateway(sim)
        if self._cloud_task is not None:
            self._cloud_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cloud_task
        if self.broker is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await maybe_await(self.broker.stop())
        for sim in self.gateways.values():
            for scanner in sim.scanners.values():
                scanner.unplug()
            for nfc in sim.nfc.values():
                nfc.close()

    @property
    def platform(self) -> CloudPeer:
        """The platform stand-in (once started)."""
        assert self.cloud is not None, "the site is not started"
        return self.cloud

    def _config(self, sim: SimGateway) -> Path:
        settings = self.broker.gateway_settings(sim.name, sim.home)
        doors = tuple(
            DoorConfig(
                id=door,
                lock_pin=lock,
                contact_pin=contact,
                green_led_pin=green,
                red_led_pin=red,
                held_open_seconds=60,
            )
            for door, (lock, contact, green, red) in zip(sim.doors, DOOR_PINS, strict=False)
        )
        first = sim.doors[0]
        readers: list[ReaderConfig] = [
            WiegandReaderConfig(
                id=f"wg-{first}",
                door=first,
                kind="wiegand",
                data0_pin=WIEGAND[0],
                data1_pin=WIEGAND[1],
            )
        ]
        for door in sim.doors:
            readers.append(
                ScannerReaderConfig(
                    id=f"qr-{door}", door=door, kind="scanner", port=str(sim.scanners[door].path)
                )
            )
            readers.append(
                Pn532ReaderConfig(
                    id=f"nfc-{door}", door=door, kind="pn532", port=sim.nfc[door].port
                )
            )
        settings = config_with(
            settings, doors=doors, readers=tuple(readers), time=TimeSection(use_ntp=False)
        )
        return write_config(settings, sim.home / "doorgw.toml")

    # One gateway.

    async def start_gateway(self, sim: SimGateway) -> Gateway:
        """Start ``sim``'s daemon on its files; wait for its first sync and its readers."""
        assert sim.config_path is not None
        gw = Gateway(load_config(sim.config_path), self.clock, pin_factory=sim.factory)
        sim._running = gw.running()
        await sim._running.__aenter__()
        sim.gateway = gw
        # The contacts' pull-ups read "open" until a contact is driven: shut the doors
        # nobody has left open (after the door devices exist).
        for door in sim.doors:
            if door not in sim.open_doors:
                sim.contact_pin(door).drive_low()
        await self.settle(lambda: gw.engine.version is not None, f"{sim.name}'s first sync")
        await self.settle(
            lambda: all(gw.station.readers_online().values()), f"{sim.name}'s readers"
        )
        return gw

    async def stop_gateway(self, sim: SimGateway) -> None:
        """Stop ``sim``'s daemon as SIGTERM would (its files stay)."""
        if sim._running is not None:
            running, sim._running, sim.gateway = sim._running, None, None
            await running.__aexit__(None, None, None)

    def at(self, door: str) -> SimGateway:
        """The gateway that drives ``door``."""
        for sim in self.gateways.values():
            if door in sim.doors:
                return sim
        raise SimError(f"no door {door!r} at this site")

    # The world around the gateways.

    async def settle(
        self, predicate: Any, what: str, real_seconds: float = 20.0, *, advance: bool = True
    ) -> None:
        """Let real I/O (and, with ``advance``, short timers) run until ``predicate`` holds.

        Waits on the network do not move the simulated clock far: a message's
        journey must not make the site's time run on.
        """
        try:
            async with asyncio.timeout(real_seconds):
                while not predicate():
                    if advance:
                        self.clock.advance(0.05)
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise StuckError(f"waited {real_seconds:.0f} s of real time for {what}") from None

    async def set_contact(self, door: str, *, open_: bool) -> None:
        """Open or close ``door``'s contact."""
        sim = self.at(door)
        pin = sim.contact_pin(door)
        if open_:
            pin.drive_high()
            sim.open_doors.add(door)
        else:
            pin.drive_low()
            sim.open_doors.discard(door)
        for _ in range(5):  # gpiozero's callback thread hands the edge to the loop
            await asyncio.sleep(0.01)

    async def present(self, door: str, card: str) -> Decision | None:
        """A card (``KIND:VALUE``) at ``door``: over the Wiegand lines where that door
        has the Wiegand reader, on the door's emulated PN532 for an NFC card."""
        sim = self.at(door)
        read = parse_read(card, site_id=self.site_id)
        before = (sim.gw.outbox.last_seq, sim.gw.taps.carried_out)
        if read.kind.value == "wiegand" and door == sim.doors[0] and sim.wiegand is not None:
            # BITS/FACILITY:CARD, or a legacy FACILITY:CARD, sent as a 26-bit card.
            bits, _, rest = read.value.rpartition("/")
            facility, _, number = rest.rpartition(":")
            sim.wiegand.card(int(facility or 0), int(number), int(bits or 26))
            return await self.next_access(sim, before, "the card's decision")
        if read.kind.value == "nfc_uid" and door in sim.nfc:
            reader = sim.nfc[door]
            reader.card = bytes.fromhex(read.value)
            try:
                return await self.next_access(sim, before, "the NFC reader's decision")
            finally:
                reader.card = None  # the member takes the card away
        # Other kinds have no emulated reader here: hand the read over as a reader would.
        return await sim.gw.taps.card(door, f"sim-{door}", read)

    async def keys(self, door: str, keys: str) -> Decision | None:
        """Keys typed on the keypad at ``door`` (a PIN and ``#``)."""
        sim = self.at(door)
        if sim.wiegand is None or door != sim.doors[0]:
            raise SimError(
                f"door {door!r} has no keypad (keypads are at each gateway's first door)"
            )
        before = (sim.gw.outbox.last_seq, sim.gw.taps.carried_out)
        for key in keys:
            sim.wiegand.key(key)
            # Key bursts are told apart by the silence between them, in real ticks.
            await asyncio.sleep(0.06)
            self.clock.advance(0.1)
        return await self.next_access(sim, before, "the PIN's decision")

    async def scan(self, door: str, text: str) -> Decision | None:
        """``text`` shown to ``door``'s QR scanner; the decision it led to."""
        sim = self.at(door)
        before = (sim.gw.outbox.last_seq, sim.gw.taps.carried_out)
        sim.scanners[door].scan(text)
        return await self.next_access(sim, before, "the code's decision")

    async def next_access(
        self, sim: SimGateway, before: tuple[int, int], what: str
    ) -> Decision | None:
        """The first access decision ``sim`` records after ``before`` (its outbox
        sequence and decisions carried out, taken before the action), once the
        gateway has carried it out at the door (lock and feedback)."""
        found: list[Decision] = []
        seq, carried_out = before

        def decided() -> bool:
            for event in reversed(sim.gw.events.recent):
                if event["seq"] is not None and event["seq"] <= seq:
                    return False
                if event["type"] == "access":
                    found.append(decision_of(event))
                    return True
            return False

        await self.settle(decided, what)
        await self.settle(lambda: sim.gw.taps.carried_out > carried_out, f"{what} at the door")
        return found[-1]


def decision_of(event: dict[str, Any]) -> Decision:
    """The decision an ``access`` event records."""
    from gateway.core.decision import Reason

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
