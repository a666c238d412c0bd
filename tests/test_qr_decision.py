"""Deciding scanned codes against a real cache: every reason a pass or app code gets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.clock import ManualClock
from gateway.core import qr
from gateway.core.decision import CodeDecision, Conditions, Reason, decide_code
from gateway.core.jws import Signer, b64url, keyset_of
from gateway.store.reader import CacheReader
from gateway.store.writer import CacheWriter

from .conftest import base_dataset, local

PLATFORM = Signer.generate("k1")
KEYS = keyset_of([PLATFORM])
ISSUER = qr.PassIssuer(PLATFORM.key, "k1")
APP_KEY = Ed25519PrivateKey.generate()
APP_VALUE = b64url(
    APP_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
)
#: Tuesday 10 March 2026, 12:00 in London: day_m's plan holds (Mon-Fri 08-20).
NOON = local("2026-03-10T12:00")
WINDOW = 30


def dataset() -> dict[str, Any]:
    doc = base_dataset()
    doc["credentials"] += [
        {"id": "app-day", "member_id": "day_m", "kind": "app_key", "value": APP_VALUE},
        {
            "id": "app-old",
            "member_id": "all_m",
            "kind": "app_key",
            "value": b64url(bytes(range(32))),
            "status": "revoked",
        },
    ]
    doc["revoked_passes"] = [{"id": "dp-withdrawn", "until": "2026-03-11T00:00:00Z"}]
    return doc


@pytest.fixture
def codes(make_reader: Callable[[dict[str, Any]], CacheReader]) -> CacheReader:
    return make_reader(dataset())


def pass_text(issuer: qr.PassIssuer = ISSUER, **extra: Any) -> str:
    args: dict[str, Any] = {
        "site": "t",
        "pass_id": "dp-1",
        "not_before": local("2026-03-10T09:00"),
        "not_after": local("2026-03-10T18:00"),
        "doors": ["front"],
    }
    args.update(extra)
    return issuer.issue(**args)


def check(reader: CacheReader, text: str, door: str = "front", **extra: Any) -> CodeDecision:
    """Decide ``text`` at ``door``; ``extra`` sets ``at``, ``keys`` or any of Conditions."""
    at = extra.pop("at", NOON)
    keys = extra.pop("keys", KEYS)
    conditions = Conditions(**{"code_window": WINDOW, "clock_trusted": True, **extra})
    with reader.view() as view:
        return decide_code(view, text, door, at, conditions, keys=keys)


def test_a_valid_pass_opens_the_doors_it_names_until_it_ends(codes: CacheReader) -> None:
    result = check(codes, pass_text(holder="Ada"))
    d = result.decision
    assert (d.granted, d.reason, d.grant and d.grant.id) == (True, Reason.GRANTED_PASS, "dp-1")
    assert d.until == local("2026-03-10T18:00")
    assert d.message == "welcome, Ada, until 18:00"
    assert result.code == {"type": "pass", "pass": "dp-1", "kind": "day_pass", "holder": "Ada"}
    assert result.use is None  # no use limit: nothing to count


def test_a_pass_reaches_doors_through_groups_and_resources(codes: CacheReader) -> None:
    by_group = pass_text(doors=[], door_groups=["rooms"])
    by_resource = pass_text(doors=[], resources=["r2"])
    assert check(codes, by_group, "room1").decision.granted
    assert check(codes, by_resource, "room2").decision.granted
    assert check(codes, by_resource, "room1").decision.reason is Reason.DOOR_NOT_IN_PASS


def test_a_single_use_pass_asks_for_its_use_to_be_counted(codes: CacheReader) -> None:
    result = check(codes, pass_text(max_uses=1))
    assert result.decision.granted
    assert result.use == ("dp-1", 1, local("2026-03-10T18:00"))


def test_a_used_up_pass_is_refused(tmp_path: Path, codes: CacheReader) -> None:
    async def use() -> None:
        clock = ManualClock(datetime(2026, 3, 10, 12, tzinfo=UTC))
        async with CacheWriter(codes.path, clock) as writer:
            assert await writer.use_pass("dp-1", 2, local("2026-03-10T18:00"), NOON) == 1
            assert await writer.use_pass("dp-1", 2, local("2026-03-10T18:00"), NOON) == 2
            assert await writer.use_pass("dp-1", 2, local("2026-03-10T18:00"), NOON) is None

    asyncio.run(use())
    d = check(codes, pass_text(max_uses=2)).decision
    assert (d.granted, d.reason, d.message) == (
        False,
        Reason.PASS_USED_UP,
        "your day pass has been used",
    )


@pytest.mark.parametrize(
    ("text", "door", "extra", "reason", "message"),
    [
        (
            lambda: pass_text(pass_id="dp-withdrawn"),
            "front",
            {},
            Reason.PASS_REVOKED,
            "pass withdrawn; please ask staff",
        ),
        (
            lambda: pass_text(site="elsewhere"),
            "front",
            {},
            Reason.PASS_WRONG_SITE,
            "pass is for another site",
        ),
        (
            lambda: pass_text(),
            "lab",
            {},
            Reason.DOOR_NOT_IN_PASS,
            "your day pass does not include Lab",
        ),
        (
            lambda: pass_text(),
            "nowhere",
            {},
            Reason.UNKNOWN_DOOR,
            "door 'nowhere' is not configured",
        ),
        (
            lambda: pass_text(not_before=local("2026-03-10T14:00")),
            "front",
            {},
            Reason.PASS_NOT_STARTED,
            "your day pass starts at 14:00",
        ),
        (
            lambda: pass_text(not_after=local("2026-03-10T11:00"), kind=qr.PassKind.VISITOR),
            "front",
            {},
            Reason.PASS_EXPIRED,
            "your visitor invite ended at 11:00",
        ),
        (
            lambda: pass_text(),
            "front",
            {"clock_trusted": False},
            Reason.CLOCK_UNTRUSTED,
            "gateway clock not verified; please ask staff",
        ),
        (lambda: pass_text(), "front", {"lockdown": True}, Reason.LOCKDOWN, "site in lockdown"),
        (
            lambda: pass_text(),
            "front",
            {"stale": frozenset({"pass"})},
            Reason.DATA_STALE,
            "access data out of date; please ask staff",
        ),
        (
            lambda: pass_text(),
            "front",
            {"pin_required": True},
            Reason.CARD_REQUIRED,
            "this door needs a member card and PIN",
        ),
        (
            lambda: pass_text(qr.PassIssuer(Ed25519PrivateKey.generate(), "k1")),
            "front",
            {},
            Reason.CODE_BAD_SIGNATURE,
            "code not genuine",
        ),
        (
            lambda: pass_text(qr.PassIssuer(Ed25519PrivateKey.generate(), "k7")),
            "front",
            {},
            Reason.CODE_UNKNOWN_KEY,
            "pass not issued by this operator",
        ),
        (lambda: "EAN13:4006381333931", "front", {}, Reason.CODE_UNRECOGNISED, "not a door code"),
        (
            lambda: "DG1:" + "Z" * 150,
            "front",
            {},
            Reason.CODE_MALFORMED,
            "code damaged or altered; show it again",
        ),
    ],
    ids=[
        "revoked",
        "wrong-site",
        "wrong-door",
        "unknown-door",
        "not-yet-valid",
        "expired",
        "clock-untrusted",
        "lockdown",
        "stale",
        "card-and-pin-door",
        "forged",
        "unknown-key",
        "another-barcode",
        "damaged",
    ],
)
def test_a_pass_is_refused_with_its_reason(
    codes: CacheReader,
    text: Callable[[], str],
    door: str,
    extra: dict[str, Any],
    reason: Reason,
    message: str,
) -> None:
    d = check(codes, text(), door, **extra).decision
    assert (d.granted, d.reason, d.message) == (False, reason, message)
    assert (d.door_id, d.at) == (door, NOON)


def test_nothing_opens_before_the_first_sync(
    make_reader: Callable[[dict[str, Any]], CacheReader], tmp_path: Path
) -> None:
    async def empty() -> None:
        async with CacheWriter(tmp_path / "empty.sqlite3", ManualClock(datetime.now(UTC))):
            pass

    asyncio.run(empty())
    reader = CacheReader(tmp_path / "empty.sqlite3")
    try:
        assert check(reader, pass_text()).decision.reason is Reason.NO_DATA
        assert (
            check(reader, qr.app_code(APP_KEY, "app-day", NOON)).decision.reason is Reason.NO_DATA
        )
    finally:
        reader.close()


def test_an_app_code_is_decided_as_its_members_credential(codes: CacheReader) -> None:
    result = check(codes, qr.app_code(APP_KEY, "app-day", NOON - 5, nonce=b"\x01" * 8))
    d = result.decision
    assert (d.granted, d.reason, d.member_id, d.credential_id) == (
        True,
        Reason.GRANTED_PLAN,
        "day_m",
        "app-day",
    )
    assert result.nonce == ("app:app-day:" + "01" * 8, NOON - 5 + WINDOW)
    assert result.code == {"type": "app_code", "credential": "app-day"}
    # Outside the plan's hours the member is told so, as with a card.
    late = check(
        codes,
        qr.app_code(APP_KEY, "app-day", local("2026-03-10T21:00")),
        at=local("2026-03-10T21:00"),
    )
    assert late.decision.reason is Reason.OUTSIDE_PLAN_HOURS


@pytest.mark.parametrize(
    ("code", "extra", "reason"),
    [
        (
            lambda: qr.app_code(APP_KEY, "app-day", NOON - WINDOW - 1),
            {},
            Reason.CODE_OUTSIDE_WINDOW,
        ),
        (
            lambda: qr.app_code(APP_KEY, "app-day", NOON + WINDOW + 1),
            {},
            Reason.CODE_OUTSIDE_WINDOW,
        ),
        (
            lambda: qr.app_code(Ed25519PrivateKey.generate(), "app-day", NOON),
            {},
            Reason.CODE_BAD_SIGNATURE,
        ),
        (lambda: qr.app_code(APP_KEY, "app-nobody", NOON), {}, Reason.UNKNOWN_CREDENTIAL),
        (lambda: qr.app_code(APP_KEY, "c-day", NOON), {}, Reason.UNKNOWN_CREDENTIAL),  # a card's id
        (
            lambda: qr.app_code(APP_KEY, "app-day", NOON),
            {"clock_trusted": False},
            Reason.CLOCK_UNTRUSTED,
        ),
        (lambda: qr.app_code(APP_KEY, "app-day", NOON), {"lockdown": True}, Reason.LOCKDOWN),
    ],
    ids=["too-old", "too-new", "wrong-key", "unknown-id", "not-an-app-key", "clock", "lockdown"],
)
def test_an_app_code_is_refused_with_its_reason(
    codes: CacheReader, code: Callable[[], str], extra: dict[str, Any], reason: Reason
) -> None:
    result = check(codes, code(), **extra)
    assert (result.decision.granted, result.decision.reason) == (False, reason)
    if reason is not Reason.LOCKDOWN:
        assert result.nonce is None  # nothing verified to claim


def test_a_revoked_app_key_is_refused_as_a_revoked_credential(
    make_reader: Callable[[dict[str, Any]], CacheReader],
) -> None:
    old_key = Ed25519PrivateKey.generate()
    doc = dataset()
    doc["credentials"][-1]["value"] = b64url(
        old_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    )
    d = check(make_reader(doc), qr.app_code(old_key, "app-old", NOON)).decision
    assert (d.granted, d.reason, d.message) == (False, Reason.CREDENTIAL_REVOKED, "app key revoked")
