"""Wiegand frames: every supported format, its parity checks, keypads, garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.credentials import normalize
from gateway.core.model import CredentialKind
from gateway.hw.readers.wiegand.codec import (
    FORMATS,
    CardRead,
    KeyPress,
    WiegandError,
    decode_frame,
    encode_card,
)


def bits(text: str) -> list[int]:
    return [int(c) for c in text.replace(" ", "")]


def test_a_known_26_bit_frame() -> None:
    # Facility 12 (00001100), card 34567 (1000011100000111), as H10301 puts them
    # on the wire: bits 1-12 hold three ones, so the even parity bit is 1; bits
    # 13-24 hold six, so the odd parity bit is 1.
    frame = encode_card(26, 12, 34567)
    assert "".join(map(str, frame)) == "1" + "00001100" + "1000011100000111" + "1"
    read = decode_frame(frame)
    assert read == CardRead(26, 12, 34567)
    assert isinstance(read, CardRead)
    assert normalize(CredentialKind.WIEGAND, read.value) == "26/12:34567"


@given(length=st.sampled_from(sorted(FORMATS)), data=st.data())
def test_every_format_round_trips_and_any_single_bit_flip_is_caught(
    length: int, data: st.DataObject
) -> None:
    fmt = FORMATS[length]
    facility = data.draw(st.integers(0, (1 << fmt.facility[1]) - 1))
    card = data.draw(st.integers(0, (1 << fmt.card[1]) - 1))
    frame = encode_card(length, facility, card)
    assert decode_frame(frame) == CardRead(length, facility, card)
    flip = data.draw(st.integers(0, length - 1))
    broken = list(frame)
    broken[flip] ^= 1
    with pytest.raises(WiegandError, match=r"parity \(bit \d+\) fails"):
        decode_frame(broken)


def test_a_known_35_bit_corporate_1000_frame() -> None:
    # Company 1234, card 567890, as an HID Corporate 1000 reader sends it (the
    # frame was checked against an independent implementation of the format).
    frame = bits("1 1 010011010010 10001010101001010010 0")
    assert encode_card(35, 1234, 567890) == frame
    assert decode_frame(frame) == CardRead(35, 1234, 567890)
    for bit, kind in ((0, "odd"), (1, "even"), (34, "odd")):
        broken = list(frame)
        broken[bit] ^= 1
        with pytest.raises(WiegandError, match=f"35-bit frame: {kind} parity \\(bit {bit}\\)"):
            decode_frame(broken)


@pytest.mark.parametrize(
    ("frame", "key"),
    [
        ("0000", "0"),
        ("1001", "9"),
        ("1010", "*"),
        ("1011", "#"),
        ("1111 0000", "0"),
        ("0110 1001", "9"),
        ("0100 1011", "#"),
    ],
)
def test_keypad_bursts(frame: str, key: str) -> None:
    assert decode_frame(bits(frame)) == KeyPress(key)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ([], "0-bit frame: not a supported format"),
        ([1] * 25, "25-bit frame"),
        ([0, 1, 2, 1], "0 and 1 bits only"),
        (bits("1100"), "keypad code 12 is not a key"),
        (bits("0000 0000"), "not the complement"),
    ],
)
def test_bad_frames_say_why(frame: list[int], message: str) -> None:
    with pytest.raises(WiegandError, match=message):
        decode_frame(frame)


def test_values_that_do_not_fit_are_refused() -> None:
    with pytest.raises(WiegandError, match="does not fit"):
        encode_card(26, 256, 1)


@given(frame=st.lists(st.integers(0, 1), max_size=80))
def test_any_bit_train_decodes_or_says_why(frame: list[int]) -> None:
    try:
        read = decode_frame(frame)
    except WiegandError:
        return  # the message is checked in the tests above
    assert len(frame) in (4, 8, *FORMATS)
    assert isinstance(read, CardRead | KeyPress)
