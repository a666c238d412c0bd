"""The staff API over real HTTP: uvicorn on a loopback port inside the running daemon."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app.gateway import Gateway
from gateway.clock import ManualClock
from gateway.commands.cli import main
from gateway.config.models import ApiSection, DoorConfig, Pn532ReaderConfig, load_config
from gateway.core.credentials import parse_read
from gateway.core.jws import Signer
from gateway.net.api_models import Status
from gateway.net.staff_tokens import TokenStore, digest
from gateway.tools.ports import free_port
from gateway.wire.cloudkit import CloudSigner
from gateway.wire.dataset import parse_dataset
from sim.pn532 import SimulatedPn532

from .conftest import base_dataset, gateway_config, local, until, write_gateway_config

SIGNER = Signer.generate("platform")
LOCK = 17
START = datetime.fromtimestamp(local("2026-03-10T10:00"), UTC)


def write_config(tmp_path: Path, port: int, reader_port: str, **api: Any) -> Path:
    """The API test gateway: a driven front door with an NFC reader, room1 not driven,
    the API on ``port`` (``api`` adds settings), and a broker nothing listens on."""
    config = gateway_config(
        tmp_path,
        SIGNER,
        doors=(DoorConfig(id="front", lock_pin=LOCK), DoorConfig(id="room1")),
        readers=(Pn532ReaderConfig(id="nfc-front", door="front", kind="pn532", port=reader_port),),
        api=ApiSection(port=port, max_failures=3, lockout_seconds=60, **api),
    )
    return write_gateway_config(tmp_path, config)


Body = Callable[[Gateway, httpx.AsyncClient, str, ManualClock], Awaitable[None]]


def run(tmp_path: Path, body: Body) -> None:
    port = free_port()
    clock = ManualClock(START)

    async def go() -> None:
        device = SimulatedPn532()  # it answers on this event loop
        config = load_config(write_config(tmp_path, port, device.port))
        token = TokenStore(config.tokens_path).add("front-desk", int(START.timestamp()))
        gw = Gateway(config, clock, pin_factory=MockFactory())
        async with gw.running():
            cloud = CloudSigner(SIGNER, "t", clock.now)
            for chunk in cloud.snapshot(parse_dataset(base_dataset())):
                await gw.engine.handle(chunk)
            await gw.engine.wait_snapshot()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await until_answers(client)
                await body(gw, client, token, clock)
        device.close()

    asyncio.run(go())


async def until_answers(client: httpx.AsyncClient) -> None:
    """Wait until the API listens (it starts beside the gateway's other services)."""
    async with asyncio.timeout(20):
        while True:
            try:
                await client.get("/health/live")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def staff_actions(gw: Gateway) -> list[dict[str, Any]]:
    return [e["data"] for e in gw.events.recent if e["type"] == "staff_action"]


def test_health_needs_no_token_and_says_when_the_gateway_is_ready(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        assert (await client.get("/health/live")).json() == {"status": "alive"}
        ready = await client.get("/health/ready")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        clock.advance(80 * 3600)  # no word from the platform for longer than any grant trusts
        stale = await client.get("/health/ready")
        assert stale.status_code == 503
        assert stale.json()["why"] == ["access data too old for every kind of grant"]

    run(tmp_path, body)


def test_without_a_good_token_staff_endpoints_answer_401_then_429(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        assert (await client.get("/openapi.json")).status_code == 200  # public, not a failure
        # Requests with no token (what a web page can make a browser send) are
        # refused, not counted and not recorded.
        for _ in range(20):
            for path in ("/api/status", "/metrics"):
                r = await client.get(path)
                assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
        assert (await client.get("/api/status", headers=auth(token))).status_code == 200
        assert not [e for e in gw.events.recent if e["type"] == "staff_auth_failed"]
        # Wrong tokens are: three from this address (max_failures = 3) lock it out...
        for _ in range(3):
            wrong = await client.post("/api/lockdown", json={"on": True}, headers=auth("dgw_no"))
            assert wrong.status_code == 401
        assert gw.modes.lockdown is False
        locked = await client.get("/api/status", headers=auth("dgw_nope"))
        assert locked.status_code == 429
        assert 0 < int(locked.headers["retry-after"]) <= 60
        # ...but never the right token: nobody can lock staff out.
        assert (await client.get("/api/status", headers=auth(token))).status_code == 200
        ok = await client.post("/api/lockdown", json={"on": True}, headers=auth(token))
        assert ok.status_code == 200
        # One event for the burst of failures, however many there were.
        failures = [e["data"] for e in gw.events.recent if e["type"] == "staff_auth_failed"]
        assert failures == [
            {
                "client": "127.0.0.1",
                "path": "/api/lockdown",
                "token_given": True,
                "suppressed_before": 0,
            }
        ]
        clock.advance(61)
        assert (await client.get("/api/status", headers=auth("dgw_again"))).status_code == 401
        failures = [e["data"] for e in gw.events.recent if e["type"] == "staff_auth_failed"]
        assert failures[-1]["suppressed_before"] == 2

    run(tmp_path, body)


def test_no_cdn_docs_a_strict_policy_on_every_answer_and_only_own_hosts(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        for path in ("/docs", "/redoc"):  # they loaded scripts from a CDN: gone
            assert (await client.get(path)).status_code == 401  # no path is probed without a token
            assert (await client.get(path, headers=auth(token))).status_code == 404
        page = await client.get("/")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'sha256-" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert (await client.get("/health/live")).headers["x-content-type-options"] == "nosniff"
        # DNS rebinding: a name that resolves here is still not this gateway's name.
        rebound = await client.get(
            "/api/status", headers={**auth(token), "Host": "evil.example:8080"}
        )
        assert rebound.status_code == 421
        for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "192.168.1.20"):
            ok = await client.get("/health/live", headers={"Host": host})
            assert ok.status_code == 200, host

    run(tmp_path, body)


def test_the_failure_limiter_is_bounded_however_many_addresses_fail() -> None:
    from gateway.net.staff_auth import MAX_TRACKED_CLIENTS, FailureLimiter

    limiter = FailureLimiter(max_failures=3, window=60)
    for i in range(MAX_TRACKED_CLIENTS * 5):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(limiter._failures) == MAX_TRACKED_CLIENTS


def test_status_shows_doors_readers_sync_outbox_and_clock(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        await until(lambda: gw.station.readers_online().get("nfc-front"))
        status = (await client.get("/api/status", headers=auth(token))).json()
        assert status["gateway"] == "gw-1"
        assert status["doors"][0] | {"state": "locked"} == {
            "id": "front",
            "name": "front",
            "state": "locked",
            "locked": True,
            "open": None,
            "alarm": None,
            "held": False,
        }
        assert status["doors"][1]["state"] == "not_driven"
        assert status["readers"] == [{"id": "nfc-front", "online": True}]
        assert status["sync"]["dataset_version"] == 1
        assert status["sync"]["connected"] is False
        assert status["sync"]["data_age_s"] == 0
        outbox = status["outbox"]
        assert outbox["depth"] == outbox["last_seq"] - outbox["acked_seq"] > 0  # no broker: unsent
        assert outbox["last_seq"] <= gw.outbox.last_seq
        assert status["clock"]["trusted"] in (True, False)
        Status.model_validate(status)  # the shape /openapi.json declares, exactly
        # A scan's nonce claim is synced by the claims file's own flusher: counted here.
        claims = status["claims"]["flush"]
        assert (claims["window_ms"], claims["error"]) == (50, None)
        at = int(clock.now().timestamp())
        assert await gw.writer.claim_nonce("n-status", at + 30, at - 60)
        await until(lambda: gw.cache_flusher.durable_seq >= 1)
        later = (await client.get("/api/status", headers=auth(token))).json()["claims"]["flush"]
        assert later["flushes"] > claims["flushes"]
        assert later["late"] == 0

    run(tmp_path, body)


def test_staff_let_someone_in_and_lock_down_and_each_action_is_audited(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        factory_lock = gw.station.doors["front"]
        r = await client.post("/api/doors/front/unlock", json={"seconds": 8}, headers=auth(token))
        assert r.status_code == 200
        assert factory_lock.locked is False
        missing = await client.post("/api/doors/room1/unlock", headers=auth(token))
        assert missing.status_code == 404
        assert "not driven" in missing.json()["detail"]
        bad = await client.post(
            "/api/doors/front/unlock", json={"seconds": -1}, headers=auth(token)
        )
        assert bad.status_code == 422
        r = await client.post("/api/lockdown", json={"on": True}, headers=auth(token))
        assert r.json() == {"lockdown": True}
        assert factory_lock.locked is True  # lockdown locks at once
        assert await staff_actions(gw) == [
            {"action": "unlock", "by": "front-desk", "door": "front", "seconds": 8.0},
            {"action": "lockdown", "by": "front-desk", "on": True},
        ]
        unlocked = [e["data"] for e in gw.events.recent if e["type"] == "door_unlocked"]
        assert unlocked[-1]["reason"] == "staff front-desk"

    run(tmp_path, body)


def test_recent_events_come_newest_first_in_pages(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        for i in range(7):
            await gw.events.record("test_event", {"n": i})
        first = (
            await client.get(
                "/api/events", params={"type": "test_event", "limit": 3}, headers=auth(token)
            )
        ).json()
        assert [e["data"]["n"] for e in first["events"]] == [6, 5, 4]
        second = (
            await client.get(
                "/api/events",
                params={"type": "test_event", "limit": 3, "before": first["next"]},
                headers=auth(token),
            )
        ).json()
        assert [e["data"]["n"] for e in second["events"]] == [3, 2, 1]
        last = (
            await client.get(
                "/api/events",
                params={"type": "test_event", "limit": 3, "before": second["next"]},
                headers=auth(token),
            )
        ).json()
        assert ([e["data"]["n"] for e in last["events"]], last["next"]) == ([0], None)
        too_many = await client.get("/api/events", params={"limit": 5000}, headers=auth(token))
        assert too_many.status_code == 422

    run(tmp_path, body)


def test_what_a_member_can_open_and_when(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        r = await client.get("/api/members/day_m/access", params={"days": 1}, headers=auth(token))
        data = r.json()
        assert (data["member"], data["status"], data["blocked"]) == ("day_m", "active", None)
        assert {
            "door": "front",
            "start": "2026-03-10T08:00:00Z",
            "end": "2026-03-10T20:00:00Z",
            "grant": {"kind": "plan", "id": "e-day"},
            "label": "plan Day",
        } in data["windows"]
        assert (
            await client.get("/api/members/nobody/access", headers=auth(token))
        ).status_code == 404
        assert (await staff_actions(gw))[0] == {
            "action": "member_access",
            "by": "front-desk",
            "member": "day_m",
        }

    run(tmp_path, body)


def test_enrolment_reports_the_next_card_instead_of_deciding_it(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        await until(lambda: gw.station.readers_online().get("nfc-front"))
        r = await client.post(
            "/api/readers/nfc-front/enrol", json={"seconds": 60}, headers=auth(token)
        )
        assert r.json() == {"reader": "nfc-front", "waiting_seconds": 60.0}
        waiting = await client.get("/api/readers/nfc-front/enrol", headers=auth(token))
        assert waiting.json() == {"reader": "nfc-front", "card": None}
        read = await gw.taps.card(
            "front", "nfc-front", parse_read("nfc:04AABBCCDDEEFF", site_id="t")
        )
        assert read is None  # reported, not decided
        assert gw.station.feedback["front"].playing == "card_read"
        card = (await client.get("/api/readers/nfc-front/enrol", headers=auth(token))).json()
        assert card["card"] == {
            "reader": "nfc-front",
            "door": "front",
            "kind": "nfc_uid",
            "value": "04AABBCCDDEEFF",
            "at": int(clock.now().timestamp()),
        }
        assert not [e for e in gw.events.recent if e["type"] == "access"]
        assert gw.station.doors["front"].locked
        missing = await client.post("/api/readers/nope/enrol", headers=auth(token))
        assert missing.status_code == 404

    run(tmp_path, body)


def test_metrics_in_prometheus_format(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        await gw.taps.present("front", parse_read("nfc:04000001", site_id="t"))  # day_m: granted
        await gw.taps.present("front", parse_read("nfc:04000008", site_id="t"))  # revoked card
        text = (await client.get("/metrics", headers=auth(token))).text
        for line in (
            'doorgw_decisions_total{reason="granted_plan"} 1.0',
            'doorgw_decisions_total{reason="credential_revoked"} 1.0',
            "doorgw_data_age_seconds 0.0",
            "doorgw_dataset_version 1.0",
            'doorgw_reader_up{reader="nfc-front"}',
            'doorgw_door_locked{door="front"}',
            'doorgw_relay_cycles_total{door="front"} 1.0',
            'doorgw_door_alarm{alarm="door_forced",door="front"} 0.0',
            "doorgw_outbox_depth",
            "doorgw_clock_trusted",
        ):
            assert line in text, line

    run(tmp_path, body)


def test_the_openapi_document_and_the_status_page_are_served(tmp_path: Path) -> None:
    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        spec = (await client.get("/openapi.json")).json()
        for path in (
            "/health/live",
            "/health/ready",
            "/api/status",
            "/api/events",
            "/api/doors/{door_id}/unlock",
            "/api/lockdown",
            "/api/members/{member_id}/access",
            "/api/readers/{reader_id}/enrol",
            "/metrics",
        ):
            assert path in spec["paths"], path
            for method, op in spec["paths"][path].items():
                if path != "/metrics":  # text; the rest JSON of a declared model
                    answer = op["responses"]["200"]["content"]["application/json"]
                    assert "$ref" in answer["schema"], (method, path)
                if path.startswith(("/api/", "/metrics")):
                    assert {"401", "429"} <= set(op["responses"]), (method, path)
        assert set(spec["components"]["schemas"]) >= {"Status", "EventsPage", "MemberAccess"}
        page = await client.get("/")
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>doorgw status</title>" in page.text

    run(tmp_path, body)


def test_every_route_answers_on_the_event_loop_without_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI runs a plain-function route or dependency on a worker thread: a
    thread hop on every request (it more than doubled /api/status's time on a
    kept-alive connection), and requests queueing for the pool under load."""
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__qualname__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)

    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        staff = auth(token)
        answers = [
            await client.get("/health/live"),
            await client.get("/health/ready"),
            await client.get("/api/status", headers=staff),
            await client.get("/api/events", params={"limit": 2}, headers=staff),
            await client.get("/api/members/day_m/access", headers=staff),
            await client.post("/api/readers/nfc-front/enrol", json={"seconds": 5}, headers=staff),
            await client.get("/api/readers/nfc-front/enrol", headers=staff),
            await client.post("/api/doors/front/unlock", json={"seconds": 3}, headers=staff),
            await client.post("/api/lockdown", json={"on": False}, headers=staff),
            await client.get("/metrics", headers=staff),
            await client.get("/openapi.json"),
            await client.get("/"),
        ]
        assert [a.status_code for a in answers] == [200] * len(answers)
        assert hops == []

    run(tmp_path, body)


def test_a_port_already_taken_does_not_stop_the_doors(tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = load_config(write_config(tmp_path, port, "/dev/null"))

    async def go() -> None:
        gw = Gateway(config, ManualClock(START), pin_factory=MockFactory())
        async with gw.running():
            await until(lambda: any(e["type"] == "api_unavailable" for e in gw.events.recent))
            event = next(e["data"] for e in gw.events.recent if e["type"] == "api_unavailable")
            assert (event["listen"], event["port"]) == ("127.0.0.1", port)
            await gw.station.doors["front"].grant()
            assert gw.station.doors["front"].locked is False

    try:
        asyncio.run(go())
    finally:
        taken.close()


def test_tokens_are_made_shown_once_stored_hashed_and_revoked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port(), "/dev/null")
    assert main(["token", "add", "alice", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("dgw_")
    assert "only time it is shown" in err
    stored = (tmp_path / "data" / "staff-tokens.json").read_text()
    assert token not in stored
    assert (tmp_path / "data" / "staff-tokens.json").stat().st_mode & 0o077 == 0
    store = TokenStore(tmp_path / "data" / "staff-tokens.json")
    assert store.check(token) == "alice"
    assert main(["token", "add", "alice", "--config", str(config)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["token", "add", "no spaces", "--config", str(config)]) == 2
    assert main(["token", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("alice\tmade ")
    assert main(["token", "remove", "alice", "--config", str(config)]) == 0
    assert store.check(token) is None
    assert main(["token", "remove", "alice", "--config", str(config)]) == 2


def test_a_token_file_edited_in_place_is_read_again(tmp_path: Path) -> None:
    """The store keeps what it read while the file stays the same one, and
    reads it again once it is not, even rewritten in place at the same size."""
    path = tmp_path / "staff-tokens.json"
    store = TokenStore(path)
    alice = store.add("alice", 1)
    assert store.check(alice) == "alice"
    assert store.check(alice) == "alice"  # the second time from what was read
    bobby = TokenStore(tmp_path / "elsewhere.json").add("bobby", 1)
    text = path.read_text()
    edited = text.replace(digest(alice), digest(bobby)).replace('"alice"', '"bobby"')
    assert len(edited) == len(text)
    assert edited != text
    time.sleep(0.05)  # past the tick of the kernel's file clock, as any hand edit is
    with path.open("r+") as f:  # the same file, the same size
        f.write(edited)
    assert store.check(alice) is None
    assert store.check(bobby) == "bobby"
    path.unlink()
    assert store.check(bobby) is None


def test_with_a_certificate_the_api_speaks_https_only(tmp_path: Path) -> None:
    from gateway.tools.pki import issue, make_ca

    ca = make_ca()
    _, ca_file = ca.write(tmp_path, "ca")
    key_file, cert_file = issue(ca, "gateway", server=True, hosts=("127.0.0.1",)).write(
        tmp_path, "api"
    )
    port = free_port()
    config = load_config(
        write_config(tmp_path, port, "/dev/null", tls_cert_file=cert_file, tls_key_file=key_file)
    )
    token = TokenStore(config.tokens_path).add("it", int(START.timestamp()))

    async def go() -> None:
        gw = Gateway(config, ManualClock(START), pin_factory=MockFactory())
        async with gw.running():
            import ssl

            context = ssl.create_default_context(cafile=str(ca_file))
            async with httpx.AsyncClient(
                base_url=f"https://127.0.0.1:{port}", verify=context
            ) as client:
                async with asyncio.timeout(20):
                    while True:
                        try:
                            r = await client.get("/api/status", headers=auth(token))
                            break
                        except httpx.ConnectError:
                            await asyncio.sleep(0.05)
                assert r.json()["gateway"] == "gw-1"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
                with pytest.raises(httpx.HTTPError):
                    await plain.get("/health/live")

    asyncio.run(go())


def test_forwarded_headers_neither_hide_nor_frame_a_client(tmp_path: Path) -> None:
    """uvicorn trusts X-Forwarded-For from loopback by default: a local process could
    rotate addresses to dodge the lockout, or have another address locked out."""

    async def body(gw: Gateway, client: httpx.AsyncClient, token: str, clock: ManualClock) -> None:
        for i in range(5):
            forged = {
                **auth(f"dgw_wrong{i}"),
                "X-Forwarded-For": f"10.0.0.{i}",
                "Forwarded": "for=10.9.9.9",
            }
            await client.get("/api/status", headers=forged)
        locked = await client.get(
            "/api/status", headers={**auth("dgw_more"), "X-Forwarded-For": "10.0.0.99"}
        )
        assert locked.status_code == 429  # all counted against the real peer, 127.0.0.1
        failed = [e["data"] for e in gw.events.recent if e["type"] == "staff_auth_failed"]
        assert {f["client"] for f in failed} == {"127.0.0.1"}

    run(tmp_path, body)
