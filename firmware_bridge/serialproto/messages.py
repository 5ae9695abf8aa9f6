"""Message types of the serial protocol and the encoding of their payloads.

Integers and values are little-endian; a value is an IEEE 754 binary32 float.  A point is a
named signal or setpoint with a one-byte id, announced by the device in its HELLO reply.
"""

from __future__ import annotations

import enum
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from firmware_bridge.errors import FrameError
from firmware_bridge.serialproto.frames import MAX_PAYLOAD


class MsgType(enum.IntEnum):
    """Message types: requests from the host below 0x80, messages from the device above."""

    HELLO = 0x01
    READ = 0x02
    WRITE = 0x03
    PING = 0x04
    HELLO_REPLY = 0x81
    READ_REPLY = 0x82
    WRITE_ACK = 0x83
    PONG = 0x84
    TELEMETRY = 0x90
    ERROR = 0xFF


#: request type -> the reply type that answers it (an ERROR may answer any request)
REPLY = {MsgType.HELLO: MsgType.HELLO_REPLY, MsgType.READ: MsgType.READ_REPLY,
         MsgType.WRITE: MsgType.WRITE_ACK, MsgType.PING: MsgType.PONG}

#: sequence number of the unsolicited HELLO_REPLY a device sends when it boots; hosts
#: number their requests 1..255
BOOT_SEQ = 0


class ErrorCode(enum.IntEnum):
    """Codes of an ERROR reply; ``detail`` says which version, type, length or point."""

    UNSUPPORTED_VERSION = 0x01
    UNKNOWN_TYPE = 0x02
    BAD_LENGTH = 0x03
    UNKNOWN_POINT = 0x04
    NOT_WRITABLE = 0x05
    BAD_VALUE = 0x06
    BUSY = 0x07


class Access(enum.IntFlag):
    """What the host may do with a point."""

    READ = 0x01
    WRITE = 0x02


MAX_NAME = 32
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_VALUE = struct.Struct("<Bf")
_HELLO_HEAD = struct.Struct("<IHB")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Point:
    """A signal or setpoint of a device: its id on the wire and its name (unit in the name)."""

    id: int
    name: str
    access: Access


@dataclass(frozen=True, slots=True)
class Hello:
    """A device's identity: what it is, which points it has, how often it sends telemetry.

    ``boot_id`` changes on every boot, so a host recognises a reboot.
    """

    boot_id: int
    telemetry_period_ms: int
    device: str
    points: tuple[Point, ...]

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points if p.access & Access.READ)

    @property
    def setpoints(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points if p.access & Access.WRITE)

    def point(self, name: str) -> Point | None:
        return next((p for p in self.points if p.name == name), None)

    def names(self) -> dict[int, str]:
        return {p.id: p.name for p in self.points}


def _check_name(name: str, what: str) -> bytes:
    raw = name.encode("ascii", "replace")
    if not 1 <= len(raw) <= MAX_NAME or not _NAME.match(name):
        raise FrameError(f"{what} name {name!r} must be 1..{MAX_NAME} characters of "
                         f"[a-z0-9_], starting with a letter")
    return raw


def _fit(payload: bytes, what: str) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"{what} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return payload


def encode_hello(hello: Hello) -> bytes:
    """HELLO_REPLY payload: boot id, telemetry period, device name, point table."""
    out = bytearray(_HELLO_HEAD.pack(hello.boot_id, hello.telemetry_period_ms,
                                     len(hello.device)))
    out += _check_name(hello.device, "device")
    out.append(len(hello.points))
    for p in hello.points:
        raw = _check_name(p.name, "point")
        out += bytes((p.id, int(p.access), len(raw))) + raw
    return _fit(bytes(out), "HELLO_REPLY")


def decode_hello(payload: bytes) -> Hello:
    """Parse a HELLO_REPLY payload; raises FrameError naming what is malformed."""
    def take(pos: int, n: int, what: str) -> bytes:
        if pos + n > len(payload):
            raise FrameError(f"HELLO_REPLY truncated in {what} (needs {pos + n} bytes, "
                             f"has {len(payload)})")
        return payload[pos:pos + n]

    def name(pos: int, n: int, what: str) -> str:
        text = take(pos, n, what).decode("ascii", "replace")
        _check_name(text, what)
        return text

    boot_id, period, n_dev = _HELLO_HEAD.unpack(take(0, _HELLO_HEAD.size, "header"))
    pos = _HELLO_HEAD.size
    device = name(pos, n_dev, "device")
    pos += n_dev
    (n_points,) = take(pos, 1, "point count")
    pos += 1
    points: list[Point] = []
    for k in range(n_points):
        pid, access, n = take(pos, 3, f"point {k}")
        pos += 3
        if not access or access & ~int(Access.READ | Access.WRITE):
            raise FrameError(f"HELLO_REPLY point {pid}: access flags {access:#04x} invalid")
        points.append(Point(pid, name(pos, n, "point"), Access(access)))
        pos += n
    if pos != len(payload):
        raise FrameError(f"HELLO_REPLY has {len(payload) - pos} bytes after the point table")
    ids = [p.id for p in points]
    names = [p.name for p in points]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise FrameError("HELLO_REPLY point table repeats an id or a name")
    return Hello(boot_id, period, device, tuple(points))


def encode_ids(ids: Iterable[int]) -> bytes:
    """READ request payload: the point ids to read (empty: every readable point)."""
    return _fit(bytes(ids), "READ")


def encode_values(values: Mapping[int, float]) -> bytes:
    """READ_REPLY / WRITE payload: ``(id u8, value f32)`` pairs."""
    return _fit(b"".join(_VALUE.pack(i, v) for i, v in values.items()), "values")


def decode_values(payload: bytes) -> dict[int, float]:
    """``{id: value}`` from ``(id, f32)`` pairs; raises FrameError on a bad length or a
    repeated id.  A NaN or infinity is a well-formed float32, so it is returned as is: the
    reader flags it (see :func:`finite`)."""
    if len(payload) % _VALUE.size:
        raise FrameError(f"values payload of {len(payload)} bytes is not a multiple of "
                         f"{_VALUE.size}")
    out: dict[int, float] = {}
    for pid, value in _VALUE.iter_unpack(payload):
        if pid in out:
            raise FrameError(f"values payload repeats point id {pid}")
        out[pid] = value
    return out


def encode_telemetry(uptime_ms: int, values: Mapping[int, float]) -> bytes:
    """TELEMETRY payload: device uptime, then ``(id, f32)`` pairs."""
    return _fit(_U32.pack(uptime_ms & 0xFFFFFFFF) + encode_values(values), "TELEMETRY")


def decode_telemetry(payload: bytes) -> tuple[int, dict[int, float]]:
    """``(uptime_ms, {id: value})`` from a TELEMETRY payload."""
    if len(payload) < _U32.size:
        raise FrameError(f"TELEMETRY payload of {len(payload)} bytes lacks the uptime")
    return _U32.unpack_from(payload)[0], decode_values(payload[_U32.size:])


MAX_ERROR_TEXT = 64


def encode_error(code: ErrorCode, detail: int = 0, text: str = "") -> bytes:
    """ERROR payload: code, detail, and a short ASCII text for humans (cut to 64 bytes)."""
    return bytes((int(code), detail)) + text.encode("ascii", "replace")[:MAX_ERROR_TEXT]


def decode_error(payload: bytes) -> tuple[int, int, str]:
    """``(code, detail, text)`` from an ERROR payload."""
    if len(payload) < 2:
        raise FrameError(f"ERROR payload of {len(payload)} bytes lacks code and detail")
    return payload[0], payload[1], payload[2:].decode("ascii", "replace")


def describe_error(code: int, detail: int, text: str) -> str:
    """One line for an ERROR reply, e.g. ``UNKNOWN_POINT (detail 9): no point 9``."""
    try:
        label = ErrorCode(code).name
    except ValueError:
        label = f"code {code:#04x}"
    return f"{label} (detail {detail})" + (f": {text}" if text else "")


def finite(value: float) -> bool:
    """Whether ``value`` can be written as a setpoint (finite in float32)."""
    return math.isfinite(value) and abs(value) <= 3.4028234663852886e38
