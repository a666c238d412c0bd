"""The virtual site: taps reach the real daemon through its emulated readers."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.clock import ManualClock
from sim.site import VirtualSite

LONDON = ZoneInfo("Europe/London")


def test_an_nfc_card_is_found_by_the_doors_pn532_and_a_wiegand_card_on_its_lines(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        clock = ManualClock(datetime(2026, 3, 10, 14, 5, tzinfo=LONDON))
        site = VirtualSite(tmp_path, clock, gateways=2)
        await site.start()
        try:
            room = site.at("room-3")
            polls_before = room.nfc["room-3"].counts[0x4A]
            # Ada's paid booking for Room 3 runs 14:00-16:00 (the example site).
            decision = await site.present("room-3", "nfc:04A1B2C3D4E5F6")
            assert decision is not None
            assert (decision.granted, decision.reason.value) == (True, "granted_booking")
            assert room.nfc["room-3"].counts[0x4A] > polls_before
            assert room.nfc["room-3"].card is None  # taken away again
            # Alan's card over the Wiegand lines of the front door (gw-1's first door).
            decision = await site.present("front", "wiegand:26/12:34567")
            assert decision is not None
            assert decision.member_id == "alan"
            assert site.at("front").name == "gw-1"
            # Each access event names the reader the credential came from.
            readers = [
                e["data"].get("reader")
                for sim in site.gateways.values()
                for e in sim.gw.events.recent
                if e["type"] == "access"
            ]
            assert sorted(readers) == ["nfc-room-3", "wg-front"]
            assert room.name == "gw-2"
        finally:
            await site.close()

    asyncio.run(go())
