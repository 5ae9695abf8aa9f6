"""Frames: a 4-byte header, a payload and a CRC, COBS-encoded and ended by 0x00.

Body (before COBS)::

    offset 0  version   u8   protocol version, 1
    offset 1  type      u8   message type (see messages.MsgType)
    offset 2  seq       u8   sequence number
    offset 3  length    u8   payload length, 0..240
    offset 4  payload   length bytes
    then      crc       u16  CRC-16/CCITT-FALSE of bytes 0..4+length-1, most significant byte first

On the wire: ``COBS(body) + 0x00``.  :class:`FrameParser` turns an arbitrary byte stream
into frames and :class:`~firmware_bridge.errors.FrameError` reports, with a bounded buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from firmware_bridge.errors import FrameError
from firmware_bridge.serialproto import cobs
from firmware_bridge.serialproto.crc import crc16

VERSION = 1
HEADER_LEN = 4
CRC_LEN = 2
MAX_PAYLOAD = 240
MAX_BODY = HEADER_LEN + MAX_PAYLOAD + CRC_LEN
#: longest COBS-encoded body, without the delimiter (248 bytes on the wire with it)
MAX_ENCODED = cobs.max_encoded_len(MAX_BODY)
DELIMITER = b"\x00"

_HEADER = struct.Struct("<BBBB")
_CRC = struct.Struct(">H")


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame; ``payload`` is interpreted by :mod:`.messages`."""

    type: int
    seq: int
    payload: bytes = b""
    version: int = VERSION


def pack(frame: Frame) -> bytes:
    """The body of ``frame``: header, payload and CRC (not yet COBS-encoded)."""
    n = len(frame.payload)
    if n > MAX_PAYLOAD:
        raise FrameError(f"payload of {n} bytes exceeds the maximum of {MAX_PAYLOAD}")
    for field, value in (("version", frame.version), ("type", frame.type), ("seq", frame.seq)):
        if not 0 <= value <= 0xFF:
            raise FrameError(f"frame {field} {value} does not fit in one byte")
    body = _HEADER.pack(frame.version, frame.type, frame.seq, n) + bytes(frame.payload)
    return body + _CRC.pack(crc16(body))


def unpack(body: bytes) -> Frame:
    """Check the CRC and the length field of a body and return its frame."""
    n = len(body)
    if n < HEADER_LEN + CRC_LEN:
        raise FrameError(f"frame of {n} bytes is shorter than header and CRC "
                         f"({HEADER_LEN + CRC_LEN} bytes)")
    if n > MAX_BODY:
        raise FrameError(f"frame of {n} bytes exceeds the maximum of {MAX_BODY}")
    (sent,) = _CRC.unpack_from(body, n - CRC_LEN)
    computed = crc16(body[:n - CRC_LEN])
    if sent != computed:
        raise FrameError(f"bad CRC: frame says {sent:#06x}, computed {computed:#06x}")
    version, mtype, seq, length = _HEADER.unpack_from(body)
    if length != n - HEADER_LEN - CRC_LEN:
        raise FrameError(f"length field says {length} payload bytes, "
                         f"frame has {n - HEADER_LEN - CRC_LEN}")
    return Frame(mtype, seq, bytes(body[HEADER_LEN:n - CRC_LEN]), version)


def encode(frame: Frame) -> bytes:
    """Wire bytes of ``frame``: ``COBS(body) + 0x00``."""
    return cobs.encode(pack(frame)) + DELIMITER


def decode(encoded: bytes) -> Frame:
    """Frame from its COBS encoding (the delimiter removed); raises FrameError."""
    return unpack(cobs.decode(encoded))


class FrameParser:
    """Turns byte chunks, split anywhere, into frames and frame errors.

    Bytes are collected up to each 0x00.  Empty frames (0x00 0x00) are ignored: a sender may
    send a lone 0x00 to end whatever partial frame the receiver holds.  A run longer than
    ``max_encoded`` bytes without a delimiter is reported once and discarded up to the next
    0x00, so garbage never grows the buffer beyond ``max_encoded`` bytes.
    """

    def __init__(self, max_encoded: int = MAX_ENCODED) -> None:
        self.max_encoded = max_encoded
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held now. [bytes]"""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Frames completed by ``data``, in order, with a FrameError for each bad one."""
        out: list[Frame | FrameError] = []
        start = 0
        end = len(data)
        while start < end:
            stop = data.find(0, start)
            piece = data[start:end if stop < 0 else stop]
            if not self._discarding:
                if len(self._buf) + len(piece) > self.max_encoded:
                    out.append(FrameError(f"no frame delimiter within {self.max_encoded} "
                                          f"bytes; discarding up to the next 0x00"))
                    self._buf.clear()
                    self._discarding = True
                else:
                    self._buf += piece
            if stop < 0:
                break
            if self._discarding:
                self._discarding = False
            elif self._buf:
                try:
                    out.append(decode(self._buf))
                except FrameError as exc:
                    out.append(exc)
                self._buf.clear()
            start = stop + 1
        return out
