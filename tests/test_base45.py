"""Base45 (RFC 9285): the RFC's examples, round trips, and bad text."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.base45 import ALPHABET, Base45Error, decode, encode


@pytest.mark.parametrize(
    ("data", "text"),
    [
        # The examples of RFC 9285, section 4.
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
    ],
)
def test_the_rfc_examples(data: bytes, text: str) -> None:
    assert encode(data) == text
    assert decode(text) == data


@given(st.binary(max_size=300))
def test_any_bytes_round_trip_in_the_qr_alphabet(data: bytes) -> None:
    text = encode(data)
    assert set(text) <= set(ALPHABET)
    assert len(text) == len(data) // 2 * 3 + len(data) % 2 * 2
    assert decode(text) == data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("GGW", "out of range"),  # RFC 9285's own example of an invalid string
        ("ZZ", "out of range"),
        ("BB8A", "cannot be whole bytes"),
        ("bb8", "'b' is not a base45 character"),
    ],
)
def test_bad_text_says_why(text: str, message: str) -> None:
    with pytest.raises(Base45Error, match=message):
        decode(text)


@given(st.text(max_size=60))
def test_no_text_crashes_the_decoder(text: str) -> None:
    with contextlib.suppress(Base45Error):
        decode(text)
