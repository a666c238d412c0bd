"""The QR token format: what a platform issues, the gateway parses and verifies."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import base45, qr
from gateway.core.jws import Signer, keyset_of

PLATFORM = Signer.generate("k1")
KEYS = keyset_of([PLATFORM])
ISSUER = qr.PassIssuer(PLATFORM.key, "k1")
APP_KEY = Ed25519PrivateKey.generate()
APP_PUBLIC = APP_KEY.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw
)


def day_pass(**extra: object) -> str:
    args: dict[str, object] = {
        "site": "t",
        "pass_id": "dp-0042",
        "not_before": 1_773_130_000,
        "not_after": 1_773_170_000,
        "doors": ["front"],
        "door_groups": ["rooms"],
        "resources": ["r1"],
        "max_uses": 1,
        "holder": "Ada Lovelace",
    }
    args.update(extra)
    return ISSUER.issue(**args)  # type: ignore[arg-type]


def test_a_pass_round_trips_with_everything_it_grants() -> None:
    text = day_pass(kind=qr.PassKind.VISITOR)
    assert text.startswith("DG1:")
    assert set(text) <= set(base45.ALPHABET)  # QR alphanumeric mode throughout
    body = qr.verify_pass(qr.parse(text), KEYS)
    assert body == qr.SignedPass(
        kid="k1",
        site="t",
        pass_id="dp-0042",
        kind=qr.PassKind.VISITOR,
        not_before=1_773_130_000,
        not_after=1_773_170_000,
        max_uses=1,
        doors=frozenset({"front"}),
        door_groups=frozenset({"rooms"}),
        resources=frozenset({"r1"}),
        holder="Ada Lovelace",
    )
    assert body.covers("room9", {"rooms"}, ())
    assert body.covers("other", (), {"r1"})
    assert not body.covers("lab", {"lab"}, ())


def test_a_typical_day_pass_fits_the_targeted_qr_version() -> None:
    import segno

    typical = {
        "site": "shoreditch",
        "pass_id": "dp-7Q2K9X",
        "not_before": 1_795_000_000,
        "not_after": 1_795_040_000,
        "door_groups": ["building"],
        "max_uses": 1,
    }
    text = ISSUER.issue(**typical)  # type: ignore[arg-type]
    assert len(text) == 172
    symbol = segno.make(text, error="m", boost_error=False)
    assert (symbol.mode, symbol.version, symbol.error) == ("alphanumeric", 7, "M")
    # A holder name on the pass costs one version more.
    named = ISSUER.issue(**typical, holder="Ada Lovelace")  # type: ignore[arg-type]
    assert segno.make(named, error="m", boost_error=False).version == 8


def test_an_app_code_round_trips_and_verifies_with_the_members_key() -> None:
    text = qr.app_code(APP_KEY, "app-ada", 1_773_150_000, nonce=b"12345678")
    scanned = qr.parse(text)
    assert qr.verify_app_code(scanned, APP_PUBLIC) == qr.AppCode(
        "app-ada", 1_773_150_000, b"12345678"
    )
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(qr.CodeError) as err:
        qr.verify_app_code(
            scanned, other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    assert err.value.reason == "bad_signature"


def test_every_altered_byte_breaks_the_signature_or_the_layout() -> None:
    raw = base45.decode(day_pass()[4:])
    for i in range(len(raw)):
        altered = bytearray(raw)
        altered[i] ^= 0x01
        with pytest.raises(qr.CodeError) as err:
            qr.verify_pass(qr.parse("DG1:" + base45.encode(bytes(altered))), KEYS)
        assert err.value.reason in ("bad_signature", "malformed", "unknown_key")


@pytest.mark.parametrize(("kid", "reason"), [("k1", "bad_signature"), ("k9", "unknown_key")])
def test_a_pass_signed_by_a_key_outside_the_pinned_set_is_refused(kid: str, reason: str) -> None:
    rogue = qr.PassIssuer(Ed25519PrivateKey.generate(), kid)
    text = rogue.issue(site="t", pass_id="x", not_before=1, not_after=2, doors=["front"])
    with pytest.raises(qr.CodeError) as err:
        qr.verify_pass(qr.parse(text), KEYS)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not_doorgw"),
        ("https://example.com/menu", "not_doorgw"),
        ("HC1:6BFOXN%TS3DH0YOJ58S S-W5HDC *M0II5XHC9B5G2+$N", "not_doorgw"),
        ("DG1:", "malformed"),
        ("DG1:abc", "malformed"),  # lower case is not base45
        ("DG1:" + base45.encode(b"\xd1short"), "malformed"),
        ("DG1:" + base45.encode(b"\x00" + bytes(80)), "malformed"),  # unknown type
        ("DG1:" + "A" * 2000, "too_long"),
    ],
)
def test_garbage_is_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(qr.CodeError) as err:
        qr.parse(text)
    assert err.value.reason == reason


@given(st.text(max_size=400))
def test_parse_never_raises_anything_but_code_error(text: str) -> None:
    with contextlib.suppress(qr.CodeError):
        qr.parse(text)


@given(st.binary(min_size=65, max_size=300))
def test_any_bytes_behind_the_prefix_parse_or_are_refused(data: bytes) -> None:
    with contextlib.suppress(qr.CodeError):
        qr.parse("DG1:" + base45.encode(data))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"not_after": 1_773_130_000}, "end after it starts"),
        ({"doors": [], "door_groups": [], "resources": []}, "at least one door"),
        ({"max_uses": 70_000}, "max_uses"),
        ({"holder": "x" * 65}, "holder"),
        ({"not_before": -1}, "1970-2106"),
        ({"pass_id": ""}, "pass id is empty"),
    ],
)
def test_issuing_refuses_what_the_format_cannot_carry(
    extra: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        day_pass(**extra)


def test_the_documented_test_vectors_are_what_the_reference_implementation_makes() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "credentials.md").read_text()
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pass_text = qr.PassIssuer(key, "k1").issue(
        site="shoreditch",
        pass_id="dp-7Q2K9X",
        not_before=1_796_115_600,
        not_after=1_796_148_000,
        door_groups=["building"],
        max_uses=1,
    )
    code = qr.app_code(key, "app-ada", 1_796_115_600, nonce=bytes.fromhex("0001020304050607"))
    for text in (pass_text, code):
        assert f"\n{text}\n" in doc
    raw = base45.decode(pass_text[4:])
    assert raw[-64:].hex()[:64] in doc
    assert " ".join(f"{b:02x}" for b in raw[:26]) in doc
