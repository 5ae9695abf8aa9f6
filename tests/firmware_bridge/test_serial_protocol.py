"""Frames and messages of the serial protocol: golden vectors, malformed input, fuzzing."""

from __future__ import annotations

import itertools
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import FrameError
from firmware_bridge.serialproto import cobs, frames, messages
from firmware_bridge.serialproto.crc import crc16
from firmware_bridge.serialproto.frames import MAX_ENCODED, MAX_PAYLOAD, Frame, FrameParser
from firmware_bridge.serialproto.messages import Access, ErrorCode, Hello, MsgType, Point

# The golden vectors of docs/serial-protocol.md, section 8: name -> (frame, body, wire).
GOLDEN = {
    "hello": (MsgType.HELLO, 1, "", "01 01 01 00 F6 75", "04 01 01 01 03 F6 75 00"),
    "hello_reply": (
        MsgType.HELLO_REPLY, 1,
        ("78 56 34 12 64 00 07 62 61 74 74 65 72 79 03 00 01 03 70 5F 77 01 01 03 73 6F 63 "
         "02 02 07 70 5F 73 65 74 5F 77"),
        ("01 81 01 25 78 56 34 12 64 00 07 62 61 74 74 65 72 79 03 00 01 03 70 5F 77 01 01 03 "
         "73 6F 63 02 02 07 70 5F 73 65 74 5F 77 F2 B2"),
        ("0A 01 81 01 25 78 56 34 12 64 0A 07 62 61 74 74 65 72 79 03 18 01 03 70 5F 77 01 01 "
         "03 73 6F 63 02 02 07 70 5F 73 65 74 5F 77 F2 B2 00")),
    "read_all": (MsgType.READ, 2, "", "01 02 02 00 FA 76", "04 01 02 02 03 FA 76 00"),
    "read_reply": (MsgType.READ_REPLY, 2, "00 00 80 BB 44 01 00 00 00 3F",
                   "01 82 02 0A 00 00 80 BB 44 01 00 00 00 3F AC 3C",
                   "05 01 82 02 0A 01 05 80 BB 44 01 01 01 04 3F AC 3C 00"),
    "read_some": (MsgType.READ, 3, "01", "01 02 03 01 01 2C 75", "08 01 02 03 01 01 2C 75 00"),
    "write": (MsgType.WRITE, 4, "02 00 00 FA C4", "01 03 04 05 02 00 00 FA C4 98 A2",
              "06 01 03 04 05 02 01 05 FA C4 98 A2 00"),
    "write_ack": (MsgType.WRITE_ACK, 4, "", "01 83 04 00 5C BA", "04 01 83 04 03 5C BA 00"),
    "ping": (MsgType.PING, 5, "68 69", "01 04 05 02 68 69 6F 9F",
             "09 01 04 05 02 68 69 6F 9F 00"),
    "pong": (MsgType.PONG, 5, "68 69", "01 84 05 02 68 69 4D 4F",
             "09 01 84 05 02 68 69 4D 4F 00"),
    "error": (MsgType.ERROR, 6, "04 09 6E 6F 20 70 6F 69 6E 74 20 39",
              "01 FF 06 0C 04 09 6E 6F 20 70 6F 69 6E 74 20 39 DA 06",
              "13 01 FF 06 0C 04 09 6E 6F 20 70 6F 69 6E 74 20 39 DA 06 00"),
    "telemetry": (MsgType.TELEMETRY, 7, "E8 03 00 00 00 00 80 BB 44 01 00 00 00 3F",
                  "01 90 07 0E E8 03 00 00 00 00 80 BB 44 01 00 00 00 3F 42 64",
                  "07 01 90 07 0E E8 03 01 01 01 05 80 BB 44 01 01 01 04 3F 42 64 00"),
    "boot_hello": (
        MsgType.HELLO_REPLY, 0,
        ("0D F0 FE CA 00 00 08 67 70 75 5F 72 61 63 6B 01 00 03 0B 70 6F 77 65 72 5F 63 61 70 "
         "5F 77"),
        ("01 81 00 1E 0D F0 FE CA 00 00 08 67 70 75 5F 72 61 63 6B 01 00 03 0B 70 6F 77 65 72 "
         "5F 63 61 70 5F 77 26 A1"),
        ("03 01 81 06 1E 0D F0 FE CA 01 0B 08 67 70 75 5F 72 61 63 6B 01 10 03 0B 70 6F 77 65 "
         "72 5F 63 61 70 5F 77 26 A1 00")),
}

BATTERY = Hello(0x12345678, 100, "battery", (Point(0, "p_w", Access.READ),
                                             Point(1, "soc", Access.READ),
                                             Point(2, "p_set_w", Access.WRITE)))


def golden(name: str) -> tuple[Frame, bytes, bytes]:
    mtype, seq, payload, body, wire = GOLDEN[name]
    return Frame(mtype, seq, bytes.fromhex(payload)), bytes.fromhex(body), bytes.fromhex(wire)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vector_encodes_and_decodes(name: str) -> None:
    frame, body, wire = golden(name)
    assert frames.pack(frame) == body
    assert frames.encode(frame) == wire
    assert frames.decode(wire[:-1]) == frame
    assert FrameParser().feed(wire) == [frame]


def test_every_message_type_has_a_golden_vector() -> None:
    assert {v[0] for v in GOLDEN.values()} == set(MsgType)


def test_specification_lists_the_same_vectors(repo) -> None:
    text = (repo / "docs" / "serial-protocol.md").read_text()
    found = re.findall(r"vector: (\w+)\nframe: (\w+) seq=(\d+)\npayload: (.*)\n"
                       r"body: (.*)\nwire: (.*)\n", text)
    doc = {name: (MsgType[mtype], int(seq), "" if payload == "(none)" else payload, body, wire)
           for name, mtype, seq, payload, body, wire in found}

    def norm(table: dict) -> dict:
        return {k: (v[0], v[1], *(bytes.fromhex(x) for x in v[2:])) for k, v in table.items()}
    assert norm(doc) == norm(GOLDEN)


def test_golden_payloads_decode_to_their_messages() -> None:
    assert messages.decode_hello(golden("hello_reply")[0].payload) == BATTERY
    assert messages.encode_hello(BATTERY) == golden("hello_reply")[0].payload
    boot = messages.decode_hello(golden("boot_hello")[0].payload)
    assert boot.boot_id == 0xCAFEF00D and boot.telemetry_period_ms == 0
    assert boot.signals == boot.setpoints == ("power_cap_w",)
    assert messages.decode_values(golden("read_reply")[0].payload) == {0: 1500.0, 1: 0.5}
    assert messages.decode_values(golden("write")[0].payload) == {2: -2000.0}
    assert list(golden("read_some")[0].payload) == [1]
    assert messages.decode_telemetry(golden("telemetry")[0].payload) == (
        1000, {0: 1500.0, 1: 0.5})
    assert messages.decode_error(golden("error")[0].payload) == (
        ErrorCode.UNKNOWN_POINT, 9, "no point 9")
    assert messages.describe_error(4, 9, "no point 9") == "UNKNOWN_POINT (detail 9): no point 9"


def test_hello_accessors() -> None:
    assert BATTERY.signals == ("p_w", "soc")
    assert BATTERY.setpoints == ("p_set_w",)
    assert BATTERY.point("soc") == Point(1, "soc", Access.READ)
    assert BATTERY.point("nope") is None
    assert BATTERY.names() == {0: "p_w", 1: "soc", 2: "p_set_w"}


# -- malformed frames and payloads: a clear FrameError naming what is wrong -------------------

def _body(mtype: int = 1, seq: int = 1, payload: bytes = b"", length: int | None = None) -> bytes:
    head = bytes((1, mtype, seq, len(payload) if length is None else length)) + payload
    return head + crc16(head).to_bytes(2, "big")


@pytest.mark.parametrize(("body", "message"), [
    (b"\x01\x01\x01", "shorter than header and CRC"),
    (_body(payload=bytes(241)), "exceeds the maximum of 246"),
    (_body()[:-1] + b"\x00", "bad CRC"),
    (_body(payload=b"ab", length=3), "length field says 3 payload bytes, frame has 2"),
])
def test_unpack_rejects(body: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        frames.unpack(body)


def test_pack_rejects_what_does_not_fit() -> None:
    with pytest.raises(FrameError, match="payload of 241 bytes exceeds the maximum of 240"):
        frames.pack(Frame(1, 1, bytes(241)))
    with pytest.raises(FrameError, match="seq 256 does not fit"):
        frames.pack(Frame(1, 256))


@pytest.mark.parametrize(("payload", "message"), [
    (b"\x01\x02", "truncated in header"),
    (struct.pack("<IHB", 1, 0, 9) + b"bat", "truncated in device"),
    (struct.pack("<IHB", 1, 0, 3) + b"bat", "truncated in point count"),
    (struct.pack("<IHB", 1, 0, 3) + b"bat\x01\x00\x01", "truncated in point 0"),
    (struct.pack("<IHB", 1, 0, 3) + b"bat\x01\x00\x04\x01x", "access flags 0x04 invalid"),
    (struct.pack("<IHB", 1, 0, 3) + b"BAT\x00", "device name 'BAT'"),
    (struct.pack("<IHB", 1, 0, 3) + b"bat\x00\xff", "1 bytes after the point table"),
    (struct.pack("<IHB", 1, 0, 3) + b"bat\x02\x00\x01\x01a\x00\x01\x01b", "repeats an id"),
    (struct.pack("<IHB", 1, 0, 3) + b"bat\x01\x00\x01\x02p\xe9", "point name"),
])
def test_decode_hello_rejects(payload: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        messages.decode_hello(payload)


def test_value_payloads_reject_bad_lengths_and_repeats() -> None:
    with pytest.raises(FrameError, match="7 bytes is not a multiple of 5"):
        messages.decode_values(bytes(7))
    with pytest.raises(FrameError, match="repeats point id 0"):
        messages.decode_values(bytes(10))
    with pytest.raises(FrameError, match="lacks the uptime"):
        messages.decode_telemetry(b"\x01\x02")
    with pytest.raises(FrameError, match="lacks code and detail"):
        messages.decode_error(b"\x01")
    with pytest.raises(FrameError, match="exceeds 240"):
        messages.encode_values({i: 0.0 for i in range(49)})


def test_error_text_is_cut_to_64_bytes() -> None:
    code, detail, text = messages.decode_error(messages.encode_error(ErrorCode.BUSY, 0, "x" * 99))
    assert (code, detail, len(text)) == (ErrorCode.BUSY, 0, 64)


# -- the streaming parser -----------------------------------------------------------------------

STREAM = [golden(name)[0] for name in ("hello_reply", "read_reply", "telemetry", "ping")]
WIRE = b"".join(frames.encode(f) for f in STREAM)


def test_parser_reassembles_frames_split_at_every_position() -> None:
    for cut in range(len(WIRE) + 1):
        parser = FrameParser()
        assert parser.feed(WIRE[:cut]) + parser.feed(WIRE[cut:]) == STREAM
        assert parser.buffered == 0


def test_parser_byte_by_byte() -> None:
    parser = FrameParser()
    out = [item for b in WIRE for item in parser.feed(bytes((b,)))]
    assert out == STREAM


def test_parser_ignores_empty_frames() -> None:
    assert FrameParser().feed(b"\x00\x00" + WIRE.replace(b"\x00", b"\x00\x00\x00")) == STREAM


def test_parser_reports_garbage_and_resynchronises() -> None:
    good = golden("write")[2]
    out = FrameParser().feed(b"\x05\x11\x22\x00" + b"\x03ab\x00" + good)
    assert isinstance(out[0], FrameError) and "truncated" in str(out[0])
    assert isinstance(out[1], FrameError) and "shorter than header" in str(out[1])
    assert out[2] == golden("write")[0]


def test_parser_reports_a_truncated_frame_and_keeps_the_next() -> None:
    wire = golden("read_reply")[2]
    out = FrameParser().feed(wire[:9] + b"\x00" + wire)
    assert len(out) == 2 and isinstance(out[0], FrameError) and out[1] == golden("read_reply")[0]


def test_parser_buffer_is_bounded_on_a_line_without_delimiters() -> None:
    parser = FrameParser()
    errors = []
    for _ in range(100):
        errors += parser.feed(b"\xaa" * 1000)
        assert parser.buffered <= MAX_ENCODED
    assert len(errors) == 1 and "no frame delimiter within 247 bytes" in str(errors[0])
    assert parser.feed(b"\xaa\x00" + WIRE) == STREAM


def test_longest_frame_passes_and_one_byte_more_is_refused() -> None:
    frame = Frame(MsgType.PING, 9, bytes(range(1, 241)))
    wire = frames.encode(frame)
    assert len(wire) == MAX_ENCODED + 1 == 248
    assert FrameParser().feed(wire) == [frame]
    out = FrameParser().feed(b"\x01" + wire)
    assert len(out) == 1 and isinstance(out[0], FrameError)


frames_st = st.builds(Frame, st.integers(0, 255), st.integers(0, 255),
                      st.binary(max_size=MAX_PAYLOAD))


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(st.lists(frames_st, min_size=1, max_size=5), st.lists(st.integers(0, 2000), max_size=8))
def test_property_frames_survive_any_chunking(batch: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(frames.encode(f) for f in batch)
    parser = FrameParser()
    out = [item for chunk in _chunks(wire, cuts) for item in parser.feed(chunk)]
    assert out == batch


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 4000), max_size=8))
def test_property_random_bytes_never_crash_and_stay_bounded(data: bytes, cuts: list[int]) -> None:
    parser = FrameParser()
    for chunk in _chunks(data, cuts):
        for item in parser.feed(chunk):
            assert isinstance(item, Frame | FrameError)
        assert parser.buffered <= MAX_ENCODED
    # whatever came before, a delimiter and a good frame are understood
    tail = golden("pong")
    assert parser.feed(b"\x00" + tail[2])[-1] == tail[0]


@settings(max_examples=300)
@given(frames_st, st.data())
def test_property_truncated_or_corrupted_frames_end_in_a_clean_error(frame: Frame,
                                                                     data: st.DataObject) -> None:
    wire = frames.encode(frame)
    if data.draw(st.booleans(), "truncate"):
        damaged = wire[:data.draw(st.integers(0, len(wire) - 2), "cut")] + b"\x00"
    else:
        i = data.draw(st.integers(0, len(wire) - 2), "byte")
        bit = data.draw(st.integers(0, 7), "bit")
        damaged = wire[:i] + bytes((wire[i] ^ (1 << bit),)) + wire[i + 1:]
    nxt = golden("write_ack")
    out = FrameParser().feed(damaged + nxt[2])
    assert out[-1] == nxt[0]
    for item in out[:-1]:
        assert isinstance(item, FrameError | Frame)
    assert frame not in out[:-1] or frame == nxt[0]


@given(st.binary(max_size=300))
def test_property_payload_decoders_return_or_raise_frame_error(payload: bytes) -> None:
    for decode in (messages.decode_hello, messages.decode_values, messages.decode_telemetry,
                   messages.decode_error):
        try:
            decode(payload)
        except FrameError:
            pass


@given(st.lists(st.tuples(st.integers(0, 255), st.floats(width=32, allow_nan=False)),
                max_size=48, unique_by=lambda p: p[0]))
def test_property_values_round_trip_exactly_in_float32(pairs: list[tuple[int, float]]) -> None:
    values = dict(pairs)
    assert messages.decode_values(messages.encode_values(values)) == values


def test_cobs_of_the_longest_body_needs_one_byte() -> None:
    assert cobs.max_encoded_len(frames.MAX_BODY) == MAX_ENCODED == 247
