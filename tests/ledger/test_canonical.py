"""The canonical encoding: pinned byte vectors, round trips, and refusal of every other form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import canonical
from ledger.errors import EncodingError

# Vectors written out by hand from the specification in docs/ledger.md.
GOLDEN = [
    (0, "01 0000000000000000"),
    (1, "01 0000000000000001"),
    (-1, "01 ffffffffffffffff"),
    (2**63 - 1, "01 7fffffffffffffff"),
    (-(2**63), "01 8000000000000000"),
    (b"", "02 00000000"),
    (b"\x00\xff", "02 00000002 00ff"),
    ("", "03 00000000"),
    ("é", "03 00000002 c3a9"),
    ({}, "04 00000000"),
    ({"b": 1, "a": b""}, "04 00000002 01 61 02 00000000 01 62 01 0000000000000001"),
    ({"a_1": "x", "a": 0}, "04 00000002 01 61 01 0000000000000000 03 615f31 03 00000001 78"),
    ([1, "x"], "05 00000002 01 0000000000000001 03 00000001 78"),
    ([[]], "05 00000001 05 00000000"),
]


@pytest.mark.parametrize(("value", "hexed"), GOLDEN)
def test_golden_vectors(value: canonical.Value, hexed: str) -> None:
    raw = bytes.fromhex(hexed.replace(" ", ""))
    assert canonical.encode(value) == raw
    assert canonical.decode(raw) == value


@pytest.mark.parametrize(("value", "message"), [
    (True, "booleans"),
    (2**63, "64 bits"),
    (-(2**63) - 1, "64 bits"),
    (1.5, "float"),
    (None, "NoneType"),
    ({"A": 1}, "map key"),
    ({"": 1}, "map key"),
    ({"k" * 65: 1}, "map key"),
    ({"ключ": 1}, "map key"),
    ({1: 1}, "map key"),
])
def test_values_without_an_encoding_are_refused(value: object, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        canonical.encode(value)  # type: ignore[arg-type]


def test_nesting_is_bounded() -> None:
    deep: list = []
    for _ in range(canonical.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(EncodingError, match="nesting"):
        canonical.encode(deep)
    raw = bytes.fromhex("0500000001" * (canonical.MAX_DEPTH + 2) + "0500000000")
    with pytest.raises(EncodingError, match="nesting"):
        canonical.decode(raw)


@pytest.mark.parametrize(("hexed", "message"), [
    ("", "truncated tag"),
    ("01 00000000", "truncated integer"),
    ("02 00000005 0102", "truncated bytes"),
    ("03 000000", "truncated length"),
    ("03 00000001 ff", "not valid UTF-8"),
    ("03 00000003 eda080", "not valid UTF-8"),  # an encoded surrogate
    ("06", "unknown tag 0x06"),
    ("01 0000000000000001 00", "1 trailing byte"),
    ("04 00000002 01 62 01 0000000000000000 01 61 01 0000000000000000", "ascending"),
    ("04 00000002 01 61 01 0000000000000000 01 61 01 0000000000000000", "ascending"),
    ("04 00000001 01 41 01 0000000000000000", "map key"),
    ("04 00000001 00 01 0000000000000000", "map key"),
    ("04 00000001 05 61", "truncated key"),
    ("05 ffffffff 01 0000000000000000", "truncated tag"),
])
def test_non_canonical_bytes_are_refused(hexed: str, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        canonical.decode(bytes.fromhex(hexed.replace(" ", "")))


keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
values = st.recursive(
    st.integers(min_value=canonical.INT_MIN, max_value=canonical.INT_MAX) | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(values)
def test_round_trip(value: canonical.Value) -> None:
    raw = canonical.encode(value)
    assert canonical.decode(raw) == value
    assert canonical.encode(canonical.decode(raw)) == raw


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_any_decodable_bytes_are_the_one_encoding_of_their_value(value: canonical.Value,
                                                                  data: st.DataObject) -> None:
    """Mutate an encoding; whatever still decodes must re-encode to exactly the same bytes."""
    raw = bytearray(canonical.encode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "drop" and raw:
            del raw[at]
        else:
            raw.insert(at, data.draw(st.integers(0, 255)))
    try:
        decoded = canonical.decode(bytes(raw))
    except EncodingError:
        return
    assert canonical.encode(decoded) == bytes(raw)
