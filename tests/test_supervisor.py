"""Supervision: a failed service is recorded and restarted; one that cannot come back stops all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.app import supervisor
from gateway.app.supervisor import Service, Supervisor
from gateway.errors import ServiceFailedError

from .test_mqtt import run_async


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "RESTART_MIN", 0.01)
    monkeypatch.setattr(supervisor, "RESTART_MAX", 0.04)
    monkeypatch.setattr(supervisor, "MAX_FAILURES", 3)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, type_: str, data: dict[str, Any], at: int | None = None) -> None:
        self.events.append((type_, data))


def test_a_failed_service_is_recorded_restarted_and_reported_down_meanwhile() -> None:
    record = Recorder()
    sup = Supervisor(record)
    runs = 0
    down_while_waiting: list[list[str]] = []
    healthy_again = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise OSError(28, "No space left on device")
        down_while_waiting.append(sup.down())
        healthy_again.set()
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(sup.run([Service("outbox-publisher", flaky)]))
        await asyncio.wait_for(healthy_again.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_async(main())
    assert runs == 2
    assert down_while_waiting == [[]]  # up again once restarted
    assert record.events == [
        (
            "service_failed",
            {
                "service": "outbox-publisher",
                "error": "OSError: [Errno 28] No space left on device",
                "restart_in_s": 0.01,
            },
        )
    ]
    assert sup.failures == {"outbox-publisher": 1}


def test_down_names_an_essential_service_while_it_waits_for_its_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_MIN", 30.0)
    sup = Supervisor(Recorder())
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise RuntimeError("boom")

    down: list[str] = []

    async def main() -> None:
        task = asyncio.create_task(
            sup.run([Service("door-front", broken), Service("api", broken, essential=False)])
        )
        await failed.wait()
        await asyncio.sleep(0.05)
        down.extend(sup.down())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_async(main())
    assert down == ["door-front"]  # the optional API is not counted


def test_an_essential_service_that_keeps_failing_ends_the_run() -> None:
    record = Recorder()
    sup = Supervisor(record)
    other_cancelled = asyncio.Event()

    async def broken() -> None:
        raise RuntimeError("cannot open the door's GPIO")

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            other_cancelled.set()

    async def main() -> None:
        await sup.run([Service("door-front", broken), Service("heartbeat", other)])

    with pytest.raises(ServiceFailedError) as caught:
        run_async(main())
    assert str(caught.value) == (
        "service door-front failed 4 times in 300 s; "
        "last: RuntimeError: cannot open the door's GPIO"
    )
    assert other_cancelled.is_set()  # the rest stopped with it
    assert [e[1]["restart_in_s"] for e in record.events] == [0.01, 0.02, 0.04, None]


def test_an_optional_service_is_retried_for_as_long_as_the_gateway_runs() -> None:
    sup = Supervisor(Recorder())
    runs = 0
    enough = asyncio.Event()

    async def api() -> None:
        nonlocal runs
        runs += 1
        if runs >= 8:
            enough.set()
        raise OSError(98, "Address already in use")

    async def main() -> None:
        task = asyncio.create_task(sup.run([Service("api", api, essential=False)]))
        await asyncio.wait_for(enough.wait(), 10)
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_async(main())
    assert runs >= 8  # far past MAX_FAILURES, still retried


def test_a_service_that_returns_is_done_not_failed() -> None:
    record = Recorder()
    sup = Supervisor(record)

    async def nothing_to_do() -> None:
        return None

    run_async(sup.run([Service("fault-lights", nothing_to_do)]))
    assert record.events == []
    assert sup.down() == []


def test_a_part_whose_probe_does_not_answer_counts_as_down_until_it_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor, "PROBE_EVERY", 0.01)
    monkeypatch.setattr(supervisor, "PROBE_TIMEOUT", 0.05)
    sup = Supervisor(Recorder())
    stuck = True
    answered = asyncio.Event()

    async def probe() -> None:
        if stuck:
            await asyncio.Event().wait()  # a database thread waiting on a dead disk
        answered.set()

    seen: list[list[str]] = []

    async def main() -> None:
        nonlocal stuck
        sup.watch("event-outbox", probe)
        task = asyncio.create_task(sup.run([Service("heartbeat", asyncio.Event().wait)]))
        await asyncio.sleep(0.2)
        seen.append(sup.down())
        stuck = False
        await asyncio.wait_for(answered.wait(), 10)
        await asyncio.sleep(0.05)
        seen.append(sup.down())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_async(main())
    assert seen == [["event-outbox"], []]
