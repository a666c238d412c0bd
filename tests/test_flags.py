"""The publisher's way of waiting on several events at once (gateway/flags.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from gateway.flags import Flag, until_any


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` with an overall limit: these tests must fail, never hang."""

    async def bounded() -> None:
        async with asyncio.timeout(10):
            await coro

    asyncio.run(bounded())


def flags(count: int) -> tuple[asyncio.Event, list[Flag]]:
    """A waiter's own wake event and ``count`` flags forwarding to it."""
    wake = asyncio.Event()
    made = [Flag() for _ in range(count)]
    for flag in made:
        flag.forward_to(wake)
    return wake, made


def test_a_wait_for_one_flag_goes_on_through_the_others_and_ends_on_its_own() -> None:
    async def go() -> None:
        wake, (ack, appended, down) = flags(3)
        waiting = asyncio.create_task(until_any(wake, ack, down))
        await asyncio.sleep(0)
        appended.set()  # a new event: not what this wait is for
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        assert not wake.is_set(), "the waiter looked, and cleared its wake to wait again"
        down.set()  # the link went down: this wait ends
        await asyncio.wait_for(waiting, 5)
        assert down.is_set(), "a flag is the owner's to clear, not the waiter's"
        assert appended.is_set()

    run(go())


def test_a_flag_set_before_the_wait_ends_it_at_once() -> None:
    async def go() -> None:
        wake, (ack, appended) = flags(2)
        ack.set()
        await asyncio.wait_for(until_any(wake, ack, appended), 1)
        late = asyncio.Event()
        ack.forward_to(late)  # a flag already set sets what it is given at once
        assert late.is_set()

    run(go())


def test_wakes_from_other_flags_do_not_restart_the_callers_timeout() -> None:
    async def go() -> None:
        wake, (ack, appended) = flags(2)

        async def busy_site() -> None:
            while True:  # an event every 10 ms, faster than the timeout below
                appended.set()
                await asyncio.sleep(0.01)

        stream = asyncio.create_task(busy_site())
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await until_any(wake, ack)
        finally:
            stream.cancel()
        assert not ack.is_set()

    run(go())
