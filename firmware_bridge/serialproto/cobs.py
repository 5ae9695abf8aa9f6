"""Consistent Overhead Byte Stuffing: binary data without zero bytes, so 0x00 ends a frame.

S. Cheshire and M. Baker, "Consistent overhead byte stuffing", IEEE/ACM Transactions on
Networking 7(2), 1999, doi:10.1109/90.769765.  The data is cut at each zero byte into
blocks; each block is sent as a code byte (block length + 1) and its non-zero bytes, and
the zero is implied.  A block of 254 non-zero bytes has code 0xFF and no implied zero.
Data of up to 254 bytes grows by exactly one byte.
"""

from __future__ import annotations

from firmware_bridge.errors import FrameError

#: longest run of non-zero bytes in one block
MAX_BLOCK = 254


def max_encoded_len(n: int) -> int:
    """Longest COBS encoding of ``n`` bytes of data. [bytes]"""
    return n + 1 + n // MAX_BLOCK


def encode(data: bytes) -> bytes:
    """COBS-encode ``data``; the result holds no zero byte (the delimiter is not added)."""
    out = bytearray()
    chunks = bytes(data).split(b"\x00")
    last = len(chunks) - 1
    for i, chunk in enumerate(chunks):
        n = len(chunk)
        pos = 0
        while n - pos >= MAX_BLOCK:
            out.append(0xFF)
            out += chunk[pos:pos + MAX_BLOCK]
            pos += MAX_BLOCK
        # a final chunk that ended exactly on a full block needs no empty closing block
        if not (i == last and n and pos == n):
            out.append(n - pos + 1)
            out += chunk[pos:]
    return bytes(out)


def decode(encoded: bytes) -> bytes:
    """Decode one COBS block sequence (without its 0x00 delimiter).

    Raises
    ------
    FrameError
        If ``encoded`` is empty, holds a zero byte, or a code byte points past its end
        (a truncated frame).
    """
    encoded = bytes(encoded)
    n = len(encoded)
    if n == 0:
        raise FrameError("COBS: empty frame")
    zero = encoded.find(0)
    if zero >= 0:
        raise FrameError(f"COBS: zero byte inside the frame at offset {zero}")
    out = bytearray()
    i = 0
    while i < n:
        code = encoded[i]
        end = i + code
        if end > n:
            raise FrameError(f"COBS: block at offset {i} needs {code - 1} bytes, "
                             f"frame has {n - i - 1} (truncated)")
        out += encoded[i + 1:end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
