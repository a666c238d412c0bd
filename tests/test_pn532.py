"""PN532 frames: published byte fixtures, checksums, garbage, pieces, extended frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.hw.readers.pn532.codec import (
    ACK,
    NACK,
    Ack,
    BadFrame,
    ErrorFrame,
    FrameParser,
    Nack,
    Response,
    TargetA,
    encode,
    in_list_passive_target,
    parse_targets,
    sam_configuration,
)

# From the PN532 user manual's GetFirmwareVersion exchange.
GET_FIRMWARE = bytes.fromhex("0000ff02fed4022a00")
FIRMWARE_REPLY = bytes.fromhex("0000ff06fad50332010607e800")
ERROR_FRAME = bytes.fromhex("0000ff01ff7f8100")


def reply(command: int, data: bytes) -> bytes:
    """A PN532 -> host frame, built with the checksums the manual defines."""
    return encode(command, data, tfi=0xD5)


def test_host_frames_match_the_manual() -> None:
    assert encode(0x02) == GET_FIRMWARE
    assert sam_configuration() == bytes.fromhex("0000ff05fbd414011401 02 00".replace(" ", ""))
    assert in_list_passive_target() == bytes.fromhex("0000ff04fcd44a0100e100")


def test_ack_and_reply_in_one_read_or_byte_by_byte() -> None:
    stream = ACK + FIRMWARE_REPLY
    assert FrameParser().feed(stream) == [Ack(), Response(0x03, bytes.fromhex("32010607"))]
    parser = FrameParser()
    got = []
    for byte in stream:
        got += parser.feed(bytes([byte]))
    assert got == [Ack(), Response(0x03, bytes.fromhex("32010607"))]


def test_nack_and_error_frames() -> None:
    assert FrameParser().feed(NACK + ERROR_FRAME) == [Nack(), ErrorFrame()]


def test_garbage_and_bad_checksums_are_skipped_not_raised() -> None:
    broken = bytearray(FIRMWARE_REPLY)
    broken[7] ^= 0x01  # a data byte: the data checksum no longer holds
    parser = FrameParser()
    out = parser.feed(b"\x13\x37\xff\x00\x42" + bytes(broken) + b"\xaa" + FIRMWARE_REPLY)
    assert out == [BadFrame("data checksum"), Response(0x03, bytes.fromhex("32010607"))]
    assert parser.feed(bytes.fromhex("0000ff0500")) == [BadFrame("length checksum")]


def test_a_card_from_in_list_passive_target() -> None:
    frame = reply(0x4B, bytes.fromhex("010100040804deadbeef"))
    [response] = FrameParser().feed(frame)
    assert isinstance(response, Response)
    assert parse_targets(response) == [TargetA(bytes.fromhex("deadbeef"), b"\x00\x04", 0x08)]
    seven = reply(0x4B, bytes.fromhex("01010044000704a2b3c4d5e6f7"))
    [response] = FrameParser().feed(seven)
    assert isinstance(response, Response)
    assert parse_targets(response)[0].uid.hex().upper() == "04A2B3C4D5E6F7"
    [none] = FrameParser().feed(reply(0x4B, b"\x00"))
    assert isinstance(none, Response)
    assert parse_targets(none) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "without a target count"),
        (bytes.fromhex("01 01 00"), "truncated"),
        (bytes.fromhex("01 01 0004 08 05 0102030405"), "bad UID length 5"),
    ],
)
def test_malformed_target_lists_say_why(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_targets(Response(0x4B, data))


def test_extended_frames() -> None:
    data = bytes(range(256)) + bytes(44)
    frame = reply(0x4B, data)
    assert frame[:5] == b"\x00\x00\xff\xff\xff"
    assert FrameParser().feed(frame) == [Response(0x4B, data)]


@given(cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30), noise=st.binary(max_size=20))
def test_any_chunking_gives_the_same_frames(cuts: list[int], noise: bytes) -> None:
    # Line noise without 0xFF cannot form a start code (00 FF) with what follows.
    clean_noise = noise.replace(b"\xff", b"")
    stream = clean_noise + ACK + FIRMWARE_REPLY + NACK + reply(0x4B, b"\x00") + ERROR_FRAME
    parser = FrameParser()
    got: list[object] = []
    pos = 0
    for cut in cuts:
        got += parser.feed(stream[pos : pos + cut])
        pos += cut
    got += parser.feed(stream[pos:])
    frames = [f for f in got if not isinstance(f, BadFrame)]
    assert frames == [
        Ack(),
        Response(0x03, bytes.fromhex("32010607")),
        Nack(),
        Response(0x4B, b"\x00"),
        ErrorFrame(),
    ]


@given(chunks=st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_break_the_parser(chunks: list[bytes]) -> None:
    parser = FrameParser()
    for chunk in chunks:
        for frame in parser.feed(chunk):
            assert isinstance(frame, Ack | Nack | Response | BadFrame | ErrorFrame)
