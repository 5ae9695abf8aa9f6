"""The canonical byte encoding of ledger values: one value, exactly one byte string.

Every value starts with a one-byte tag (all integers big-endian):

======  =========  ==========================================================================
tag     type       layout after the tag
======  =========  ==========================================================================
0x01    integer    8 bytes, two's complement, -2**63 .. 2**63-1
0x02    bytes      u32 length, then the bytes
0x03    text       u32 length, then UTF-8 (valid, no BOM added or removed)
0x04    map        u32 count, then count entries ``key value``; a key is u8 length (1..64)
                   then ASCII ``[a-z0-9_]``; keys strictly ascending by their bytes
0x05    list       u32 count, then count values
======  =========  ==========================================================================

There are no floats, no booleans, no null and no alternative forms: fixed-width integers and
sorted, unique map keys make the encoding of a value unique, so its SHA-256 is an identity.
:func:`decode` refuses anything :func:`encode` would not have produced.  The full specification
with worked vectors is in ``docs/ledger.md``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence

from ledger.errors import EncodingError

INT, BYTES, TEXT, MAP, LIST = 0x01, 0x02, 0x03, 0x04, 0x05
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_DEPTH = 16
_KEY = re.compile(rb"[a-z0-9_]{1,64}")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")

Value = int | bytes | str | Mapping[str, "Value"] | Sequence["Value"]


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically; raise :class:`EncodingError` for what cannot be encoded."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: Value, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodingError(f"nesting deeper than {MAX_DEPTH}")
    if isinstance(value, bool):
        raise EncodingError("booleans have no canonical encoding; use the integers 0 and 1")
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise EncodingError(f"integer {value} does not fit in 64 bits")
        out.append(INT)
        out += _I64.pack(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(BYTES)
        out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(TEXT)
        out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, Mapping):
        keys = []
        for key in value:
            raw = key.encode("ascii") if isinstance(key, str) and key.isascii() else b""
            if not _KEY.fullmatch(raw):
                raise EncodingError(f"map key {key!r} is not 1-64 characters of [a-z0-9_]")
            keys.append((raw, key))
        keys.sort()
        out.append(MAP)
        out += _U32.pack(len(keys))
        for raw, key in keys:
            out.append(len(raw))
            out += raw
            _encode(value[key], out, depth + 1)
    elif isinstance(value, list | tuple):
        out.append(LIST)
        out += _U32.pack(len(value))
        for item in value:
            _encode(item, out, depth + 1)
    else:
        raise EncodingError(f"{type(value).__name__} has no canonical encoding")


def decode(data: bytes, offset: int = 0) -> Value:
    """Decode one value that fills ``data[offset:]`` exactly (lists come back as lists)."""
    value, end = decode_prefix(data, offset)
    if end != len(data):
        raise EncodingError(f"{len(data) - end} trailing byte(s) after the value at offset {end}")
    return value


def decode_prefix(data: bytes, offset: int = 0) -> tuple[Value, int]:
    """Decode one value starting at ``offset``; return it and the offset just past it."""
    return _decode(memoryview(data), offset, 0)


def _need(data: memoryview, offset: int, n: int, what: str) -> None:
    if offset + n > len(data):
        raise EncodingError(f"truncated {what} at offset {offset}: need {n} byte(s), "
                            f"have {len(data) - offset}")


def _decode(data: memoryview, offset: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise EncodingError(f"nesting deeper than {MAX_DEPTH} at offset {offset}")
    _need(data, offset, 1, "tag")
    tag = data[offset]
    offset += 1
    if tag == INT:
        _need(data, offset, 8, "integer")
        return _I64.unpack_from(data, offset)[0], offset + 8
    if tag in (BYTES, TEXT):
        _need(data, offset, 4, "length")
        (n,) = _U32.unpack_from(data, offset)
        offset += 4
        _need(data, offset, n, "bytes" if tag == BYTES else "text")
        raw = bytes(data[offset:offset + n])
        if tag == BYTES:
            return raw, offset + n
        try:
            return raw.decode("utf-8"), offset + n
        except UnicodeDecodeError as exc:
            raise EncodingError(f"text at offset {offset} is not valid UTF-8: {exc.reason}") \
                from None
    if tag == MAP:
        _need(data, offset, 4, "count")
        (n,) = _U32.unpack_from(data, offset)
        offset += 4
        result: dict[str, Value] = {}
        previous = b""
        for _ in range(n):
            _need(data, offset, 1, "key length")
            size = data[offset]
            _need(data, offset + 1, size, "key")
            raw = bytes(data[offset + 1:offset + 1 + size])
            if not _KEY.fullmatch(raw):
                raise EncodingError(f"map key {raw!r} at offset {offset} is not [a-z0-9_]{{1,64}}")
            if raw <= previous:
                raise EncodingError(f"map key {raw.decode()!r} at offset {offset} is not in "
                                    "strictly ascending order")
            previous = raw
            value, offset = _decode(data, offset + 1 + size, depth + 1)
            result[raw.decode("ascii")] = value
        return result, offset
    if tag == LIST:
        _need(data, offset, 4, "count")
        (n,) = _U32.unpack_from(data, offset)
        offset += 4
        items = []
        for _ in range(n):
            item, offset = _decode(data, offset, depth + 1)
            items.append(item)
        return items, offset
    raise EncodingError(f"unknown tag 0x{tag:02x} at offset {offset - 1}")
