"""SunSpec register layouts, generated from the model definitions pysunspec2 ships.

A SunSpec device exposes holding registers from a base address (40000, 0-based): the marker
``SunS`` (``0x5375 0x6E53``), then models back to back as ``[ID, L, points...]``, then the
end model ``[0xFFFF, 0]``.  Every multi-register value is big-endian, most significant word
first; strings are UTF-8, two characters per register, NUL-padded to their full size; a
scaled point's value is ``raw * 10**sf`` with ``sf`` an int16 exponent held in a ``sunssf``
point; a point that is not implemented holds its type's sentinel (``0x8000`` for int16,
``0xFFFF`` for uint16, 0 for accumulators...), never 0.

Offsets and model lengths are computed from pysunspec2's JSON definitions
(``sunspec2/models/json/model_<id>.json``), walking groups and counting each point's encoded
size, so ``L`` is right for models with groups (704: 65 registers, not the 59 of its
top-level points).  Vendor models of our own (the GPU rack's 64901) are JSON files beside this
module in the same schema, so pysunspec2 can read them too.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from firmware_bridge.errors import ConfigError

#: the two registers at the base address that mark a SunSpec device ("SunS")
SUNS_MARKER = (0x5375, 0x6E53)
#: model ID of the end model, followed by a length of 0
END_MODEL_ID = 0xFFFF
#: usual base address (0-based; "40001" in 1-based notation)
DEFAULT_BASE_ADDRESS = 40000
#: the most registers one Modbus read (FC 3/4) may return
MAX_READ_REGISTERS = 125


@dataclass(frozen=True, slots=True)
class PointType:
    """How a SunSpec point type sits in registers."""

    registers: int          # 0 for strings (their size is per point)
    fmt: str                # struct format of the raw value ("" for strings)
    unimplemented: int | float  # the sentinel; NaN for floats; 0 for accumulators


_TYPES: dict[str, PointType] = {
    "int16": PointType(1, ">h", -0x8000),
    "uint16": PointType(1, ">H", 0xFFFF),
    "count": PointType(1, ">H", 0xFFFF),
    "acc16": PointType(1, ">H", 0),
    "enum16": PointType(1, ">H", 0xFFFF),
    "bitfield16": PointType(1, ">H", 0xFFFF),
    "sunssf": PointType(1, ">h", -0x8000),
    "pad": PointType(1, ">H", 0x8000),
    "int32": PointType(2, ">i", -0x80000000),
    "uint32": PointType(2, ">I", 0xFFFFFFFF),
    "acc32": PointType(2, ">I", 0),
    "enum32": PointType(2, ">I", 0xFFFFFFFF),
    "bitfield32": PointType(2, ">I", 0xFFFFFFFF),
    "ipaddr": PointType(2, ">I", 0),
    "int64": PointType(4, ">q", -0x8000000000000000),
    "uint64": PointType(4, ">Q", 0xFFFFFFFFFFFFFFFF),
    "acc64": PointType(4, ">Q", 0),
    "float32": PointType(2, ">f", math.nan),
    "float64": PointType(4, ">d", math.nan),
    "string": PointType(0, "", 0),
    "eui48": PointType(4, "", 0),
    "ipv6addr": PointType(8, "", 0),
}
_ACCUMULATORS = frozenset({"acc16", "acc32", "acc64"})


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a model.

    ``name`` is qualified by its groups (``PFWInj.PF``; ``Group[2].PF`` for a repeated
    group); ``offset`` counts registers from the model's ``ID`` register; ``sf`` is the
    qualified name of the scale-factor point, a fixed exponent, or None.
    """

    name: str
    type: str
    offset: int
    size: int
    sf: str | int | None = None
    units: str = ""
    writable: bool = False
    mandatory: bool = False
    static: bool = False


@dataclass(frozen=True)
class ModelLayout:
    """Register layout of one SunSpec model."""

    id: int
    name: str
    length: int                  # L: registers after ID and L
    points: Mapping[str, Point]  # in register order

    @property
    def size(self) -> int:
        """Registers the model occupies, ID and L included."""
        return self.length + 2

    def point(self, name: str) -> Point:
        """The point called ``name``; a clear error naming the model otherwise."""
        try:
            return self.points[name]
        except KeyError:
            from twin.params import did_you_mean

            raise ConfigError(f"SunSpec model {self.id} ({self.name}) has no point "
                              f"'{name}'{did_you_mean(name, self.points)}") from None


def _definition_dirs() -> list[Path]:
    return [Path(str(resources.files("sunspec2") / "models" / "json")),
            Path(__file__).resolve().parent]


def model_definition(model_id: int) -> dict:
    """The JSON definition of model ``model_id``: pysunspec2's, or a vendor model of ours."""
    for directory in _definition_dirs():
        path = directory / f"model_{int(model_id)}.json"
        if path.is_file():
            return json.loads(path.read_text())
    raise ConfigError(f"no SunSpec model definition for model {model_id} "
                      f"(looked in {', '.join(str(d) for d in _definition_dirs())})")


@cache
def model_layout(model_id: int) -> ModelLayout:
    """The register layout of model ``model_id`` (cached)."""
    return layout_from_definition(model_definition(model_id))


def layout_from_definition(definition: Mapping) -> ModelLayout:
    """Walk a model definition's groups and points into a :class:`ModelLayout`."""
    group = definition["group"]
    model_id = int(definition["id"])
    points: dict[str, Point] = {}
    end = _walk_group(group, "", 0, points, model_id, sf_scopes=())
    length = end - 2
    return ModelLayout(model_id, str(group["name"]), length, points)


def _walk_group(group: Mapping, prefix: str, offset: int, out: dict[str, Point],
                model_id: int, sf_scopes: tuple[str, ...]) -> int:
    scopes = (prefix, *sf_scopes)  # innermost first
    own = {str(p["name"]) for p in group.get("points", ())}
    for pdef in group.get("points", ()):
        ptype = str(pdef["type"])
        if ptype not in _TYPES:
            raise ConfigError(f"SunSpec model {model_id}: point {pdef['name']} has unknown "
                              f"type '{ptype}'")
        size = int(pdef.get("size") or _TYPES[ptype].registers)
        name = prefix + str(pdef["name"])
        out[name] = Point(name, ptype, offset, size,
                          _resolve_sf(pdef.get("sf"), scopes, own, out, model_id, name),
                          str(pdef.get("units", "")), pdef.get("access", "R") == "RW",
                          pdef.get("mandatory") == "M", pdef.get("static") == "S")
        offset += size
    for sub in group.get("groups", ()):
        count = sub.get("count", 1)
        if not isinstance(count, int):
            raise ConfigError(f"SunSpec model {model_id}: group {sub['name']} repeats by "
                              f"point '{count}'; repeating groups are not supported")
        for i in range(count):
            label = sub["name"] if count == 1 else f"{sub['name']}[{i + 1}]"
            offset = _walk_group(sub, f"{prefix}{label}.", offset, out, model_id, scopes)
    return offset


def _resolve_sf(sf: object, scopes: tuple[str, ...], own: set[str], known: Mapping[str, Point],
                model_id: int, point: str) -> str | int | None:
    """A scale factor is a fixed exponent or a sunssf point of the group or an enclosing one."""
    if sf is None:
        return None
    try:
        return int(sf)  # type: ignore[call-overload]
    except ValueError:
        pass
    if sf in own:
        return scopes[0] + str(sf)
    for scope in scopes[1:]:
        if scope + str(sf) in known:
            return scope + str(sf)
    raise ConfigError(f"SunSpec model {model_id}: scale factor '{sf}' of point {point} "
                      f"is not defined")


# --------------------------------------------------------------------------- values


def type_range(ptype: str) -> tuple[int, int]:
    """Smallest and largest raw value of an integer type, its sentinel excluded."""
    fmt = _TYPES[ptype].fmt
    bits = struct.calcsize(fmt) * 8
    if fmt[-1].islower():
        return -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1
    if ptype in _ACCUMULATORS:
        return 0, (1 << bits) - 1
    return 0, (1 << bits) - 2


def unimplemented(point: Point) -> list[int]:
    """Registers of ``point`` holding its "not implemented" sentinel."""
    kind = _TYPES[point.type]
    if point.type in ("string", "eui48", "ipv6addr"):
        return [0] * point.size
    return _pack(kind.fmt, kind.unimplemented)


def encode_value(point: Point, value: float | str | None) -> list[int]:
    """Registers holding raw ``value`` (an already scaled integer, or a string).

    None encodes the sentinel.  A value outside the type's range raises
    :class:`ConfigError` naming the point.
    """
    if value is None:
        return unimplemented(point)
    if point.type == "string":
        data = str(value).encode("utf-8")
        if len(data) > 2 * point.size:
            raise ConfigError(f"point {point.name}: string {value!r} is longer than "
                              f"{2 * point.size} bytes")
        data = data.ljust(2 * point.size, b"\0")
        return list(struct.unpack(f">{point.size}H", data))
    kind = _TYPES[point.type]
    if not kind.fmt:
        raise ConfigError(f"point {point.name}: type {point.type} cannot be encoded")
    if kind.fmt[-1] in "fd":
        return _pack(kind.fmt, float(value))
    raw = int(value)
    lo, hi = type_range(point.type)
    if not lo <= raw <= hi:
        raise ConfigError(f"point {point.name}: raw value {raw} does not fit {point.type} "
                          f"({lo}..{hi}); choose a larger scale factor")
    return _pack(kind.fmt, raw)


def decode_value(point: Point, registers: Sequence[int]) -> int | float | str | None:
    """The raw value in ``registers`` (at least ``point.size`` of them); None if unimplemented.

    Accumulators read 0 as 0 (nothing accumulated) rather than as "not implemented": the two
    are the same energy.
    """
    regs = registers[:point.size]
    if len(regs) < point.size:
        raise ConfigError(f"point {point.name}: needs {point.size} registers, got {len(regs)}")
    if point.type == "string":
        text = struct.pack(f">{point.size}H", *regs).split(b"\0", 1)[0]
        return text.decode("utf-8", errors="replace") or None
    kind = _TYPES[point.type]
    if not kind.fmt:
        return None
    (raw,) = struct.unpack(kind.fmt, struct.pack(f">{point.size}H", *regs))
    if kind.fmt[-1] in "fd":
        return None if math.isnan(raw) else float(raw)
    if raw == kind.unimplemented and point.type not in _ACCUMULATORS:
        return None
    return raw


def _pack(fmt: str, value: float) -> list[int]:
    data = struct.pack(fmt, value)
    return list(struct.unpack(f">{len(data) // 2}H", data))


def to_raw(value: float, sf: int) -> int:
    """The raw integer for ``value`` at scale factor ``sf`` (``value = raw * 10**sf``)."""
    return round(value * 10.0 ** (-sf))


def from_raw(raw: int, sf: int) -> float:
    """The value of raw integer ``raw`` at scale factor ``sf``."""
    return raw * 10.0 ** sf if sf >= 0 else raw / 10.0 ** (-sf)


def fit_scale_factor(max_abs: float, ptype: str, finest: int = -3) -> int:
    """The finest scale factor (not below ``finest``) at which ``max_abs`` fits ``ptype``."""
    hi = type_range(ptype)[1]
    sf = finest
    while abs(max_abs) * 10.0 ** (-sf) > hi:
        sf += 1
    return sf


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceLayout:
    """Where each model of one device sits: ``models`` maps model ID -> address of its ID."""

    base_address: int
    models: Mapping[int, int]
    end_address: int  # first address after the end model

    @property
    def size(self) -> int:
        """Registers from the base address to the end model, inclusive."""
        return self.end_address - self.base_address

    def address(self, model_id: int, point: str) -> int:
        """Absolute register address of ``point`` of model ``model_id``."""
        return self.model_address(model_id) + model_layout(model_id).point(point).offset

    def model_address(self, model_id: int) -> int:
        try:
            return self.models[model_id]
        except KeyError:
            raise ConfigError(f"device has no SunSpec model {model_id} "
                              f"(has {', '.join(map(str, self.models)) or 'none'})") from None


def device_layout(model_ids: Iterable[int], base_address: int = DEFAULT_BASE_ADDRESS
                  ) -> DeviceLayout:
    """Lay models out back to back after the ``SunS`` marker, as an emulator serves them."""
    address = base_address + len(SUNS_MARKER)
    models: dict[int, int] = {}
    for model_id in model_ids:
        models[int(model_id)] = address
        address += model_layout(model_id).size
    return DeviceLayout(base_address, models, address + 2)


def blank_image(layout: DeviceLayout) -> list[int]:
    """Registers of a device whose every point is unimplemented, IDs and lengths filled in."""
    image = [0] * layout.size
    image[0:2] = SUNS_MARKER
    for model_id, address in layout.models.items():
        model = model_layout(model_id)
        at = address - layout.base_address
        for point in model.points.values():
            image[at + point.offset: at + point.offset + point.size] = unimplemented(point)
        image[at] = model_id
        image[at + 1] = model.length
    image[-2:] = [END_MODEL_ID, 0]
    return image


def parse_header(registers: Sequence[int]) -> tuple[int, int]:
    """``(model ID, L)`` from the two registers at a model's start."""
    if len(registers) < 2:
        raise ConfigError("a SunSpec model header needs 2 registers")
    return int(registers[0]), int(registers[1])
