"""COBS byte stuffing and the CRC-16 of the serial protocol, against published vectors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.errors import FrameError
from firmware_bridge.serialproto import cobs
from firmware_bridge.serialproto.crc import CHECK, crc16

RUN_254 = bytes(range(1, 255))

# Examples of the COBS definition (Cheshire and Baker 1999; the same set is on Wikipedia).
COBS_VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (bytes.fromhex("11220033"), bytes.fromhex("0311220233")),
    (bytes.fromhex("11223344"), bytes.fromhex("0511223344")),
    (bytes.fromhex("11000000"), bytes.fromhex("0211010101")),
    (RUN_254, b"\xff" + RUN_254),
    (b"\x00" + RUN_254, b"\x01\xff" + RUN_254),
    (RUN_254 + b"\xff", b"\xff" + RUN_254 + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE one bit at a time, as docs/serial-protocol.md gives it in C."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@pytest.mark.parametrize(("data", "encoded"), COBS_VECTORS)
def test_cobs_published_vectors(data: bytes, encoded: bytes) -> None:
    assert cobs.encode(data) == encoded
    assert cobs.decode(encoded) == data


@given(st.binary(max_size=1200))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data: bytes) -> None:
    encoded = cobs.encode(data)
    assert 0 not in encoded
    assert len(encoded) <= cobs.max_encoded_len(len(data))
    assert cobs.decode(encoded) == data


@given(st.binary(min_size=0, max_size=254))
def test_cobs_short_data_grows_by_exactly_one_byte(data: bytes) -> None:
    assert len(cobs.encode(data)) == len(data) + 1


@pytest.mark.parametrize(("encoded", "message"), [
    (b"", "empty"),
    (b"\x03\x11\x00\x22", "zero byte inside the frame at offset 2"),
    (b"\x05\x11\x22", "truncated"),
    (b"\x02\x11\xff\x01", "truncated"),
])
def test_cobs_decode_rejects_malformed_input(encoded: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        cobs.decode(encoded)


@given(st.binary(max_size=300))
def test_cobs_decode_of_anything_returns_or_raises_frame_error(encoded: bytes) -> None:
    try:
        cobs.decode(encoded)
    except FrameError:
        pass


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == CHECK == 0x29B1 == crc16_bitwise(b"123456789")


@given(st.binary(max_size=300))
def test_crc_matches_bitwise_reference(data: bytes) -> None:
    assert crc16(data) == crc16_bitwise(data)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_crc_continues_and_has_zero_residue(a: bytes, b: bytes) -> None:
    assert crc16(b, crc16(a)) == crc16(a + b)
    body = a + crc16(a).to_bytes(2, "big")  # the CRC is sent most significant byte first
    assert crc16(body) == 0
