"""Register maps: our signals and setpoints (SI, docs/developing.md) bound to SunSpec points.

A :class:`RegisterMap` says which models a device exposes and which point carries each
signal.  Its pure functions are used on BOTH sides of the wire, so the emulator and the
client back-end cannot drift apart:

- emulator: :meth:`RegisterMap.blank` builds the register image, :meth:`encode_into` writes
  the plant's signals into it on every read, :meth:`controls_written` turns a client's write
  into setpoints for the plant;
- client: :meth:`read_spans` says which registers to read (few large reads),
  :meth:`decode` turns them into signals, :meth:`control_writes` turns setpoints into
  register writes.

Scale factors are chosen by the device (the emulator, from its ratings) and read back by the
client from the device's ``*_SF`` points, as any SunSpec client does.  Signs and units are
ours on one side, SunSpec's on the other; each binding's ``factor`` converts (``soc`` is a
fraction, SunSpec ``SoC`` a percentage).  docs/register-maps.md lists every binding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from firmware_bridge import plausible
from firmware_bridge.errors import ConfigError, DeviceError
from firmware_bridge.sunspec import (
    DEFAULT_BASE_ADDRESS,
    MAX_READ_REGISTERS,
    DeviceLayout,
    Point,
    blank_image,
    decode_value,
    device_layout,
    encode_value,
    fit_scale_factor,
    from_raw,
    model_layout,
    to_raw,
    type_range,
)

#: headroom of a scaled power point over the device's rating (a rated 200 kW fits int16 at 10 W)
_HEADROOM = 1.5

#: point types whose value is a scaled integer (:func:`type_range` bounds them)
_INTEGER_TYPES = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64"})


@dataclass(frozen=True)
class Binding:
    """A signal read from a point: ``signal = factor * value``, or through ``codes``.

    ``codes`` pairs an enumerated point's codes with signal values (``(code, value)``).
    """

    signal: str
    model: int
    point: str
    factor: float = 1.0
    codes: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Control:
    """A setpoint written to a point, with the points that enable it written alongside.

    ``enable`` holds ``(point, raw value)`` pairs (``WSetEna = 1``); ``released`` is the
    setpoint the device applies when a write leaves an enable point without its enabling
    value (None: the plant keeps its setpoint).

    ``low``..``high`` is the setpoint's physical range (SI; a coded setpoint takes its codes'
    values only): the bench refuses a controller's value outside it in every mode, before
    anything is written.  ``safe`` is what a run leaves the setpoint at when it ends (None:
    as it is; NaN: handed back to the device's own control by writing ``release``, the
    enable points' disabling values).  ``note`` says what special values mean.
    """

    setpoint: str
    model: int
    point: str
    factor: float = 1.0
    codes: tuple[tuple[int, float], ...] = ()
    enable: tuple[tuple[str, int], ...] = ()
    released: float | None = None
    low: float = -math.inf
    high: float = math.inf
    safe: float | None = None
    release: tuple[tuple[str, int], ...] = ()
    note: str = ""

    def admits(self, value: float) -> bool:
        """Whether ``value`` means something to the device (its range, or one of its codes)."""
        if self.codes:
            return any(v == value for _, v in self.codes)
        return self.low <= value <= self.high

    def expected(self, unit: str) -> str:
        """What :meth:`admits`, in words: ``0..100 %``, ``>= 0 W (0: no cap)``, ``0 or 1``."""
        if self.codes:
            text = " or ".join(f"{v:g}" for v in sorted({v for _, v in self.codes}))
        else:
            text = describe_range(self.low, self.high, unit)
        return f"{text} ({self.note})" if self.note else text


class UnencodableSetpoint(ConfigError):
    """A setpoint value the device's register cannot hold at the device's scale factor."""

    def __init__(self, message: str, setpoint: str, value: float, low: float,
                 high: float) -> None:
        super().__init__(message)
        self.setpoint, self.value, self.low, self.high = setpoint, value, low, high


def describe_range(low: float, high: float, unit: str) -> str:
    """``low..high unit``; an open end as ``>= low`` or ``<= high``."""
    u = f" {unit}" if unit else ""
    if math.isinf(high) and math.isinf(low):
        return "any number"
    if math.isinf(high):
        return f">= {low:g}{u}"
    if math.isinf(low):
        return f"<= {high:g}{u}"
    return f"{low:g}..{high:g}{u}"


@dataclass(frozen=True)
class RegisterMap:
    """Signals and setpoints of one asset kind bound to the points of SunSpec models."""

    name: str
    kind: str
    models: tuple[int, ...]
    bindings: tuple[Binding, ...]
    controls: tuple[Control, ...] = ()
    #: raw values the device holds from the start: scale factors, ratings, identity
    constants: Mapping[tuple[int, str], int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for model, point in [(b.model, b.point) for b in self.bindings] + \
                [(c.model, c.point) for c in self.controls] + list(self.constants):
            if model not in self.models:
                raise ConfigError(f"map {self.name}: point {model}.{point} is in a model the "
                                  f"map does not expose ({self.models})")
            model_layout(model).point(point)

    @property
    def signals(self) -> tuple[str, ...]:
        """Signal names, in binding order."""
        return tuple(dict.fromkeys(b.signal for b in self.bindings))

    @property
    def setpoints(self) -> tuple[str, ...]:
        return tuple(c.setpoint for c in self.controls)

    def layout(self, base_address: int = DEFAULT_BASE_ADDRESS) -> DeviceLayout:
        """The models back to back from ``base_address``, as the emulator serves them."""
        return device_layout(self.models, base_address)

    # ------------------------------------------------------------------ emulator side

    def blank(self, layout: DeviceLayout,
              identity: Mapping[str, int | str] | None = None) -> list[int]:
        """A register image with the map's constants; ``identity`` overrides model 1 points."""
        image = blank_image(layout)
        values = dict(self.constants)
        values.update({(1, k): v for k, v in (identity or {}).items()})
        for (model, name), raw in values.items():
            point = model_layout(model).point(name)
            _put(image, layout, model, point, encode_value(point, raw))
        return image

    def encode_into(self, image: list[int], layout: DeviceLayout,
                    signals: Mapping[str, float]) -> None:
        """Write ``signals`` into ``image``; a NaN signal writes the point's sentinel.

        Signals the map does not bind are ignored; bound points whose signal is absent keep
        their registers (a setpoint's last written value, say).
        """
        for b in self.bindings:
            if b.signal not in signals:
                continue
            point = model_layout(b.model).point(b.point)
            _put(image, layout, b.model, point,
                 _encode(point, float(signals[b.signal]), b.factor, b.codes,
                         _sf(image, layout, b.model, point), self.name))

    def encode(self, signals: Mapping[str, float], layout: DeviceLayout | None = None
               ) -> list[int]:
        """A fresh image holding ``signals`` (pure: :meth:`blank` then :meth:`encode_into`)."""
        layout = layout or self.layout()
        image = self.blank(layout)
        self.encode_into(image, layout, signals)
        return image

    def writable(self, layout: DeviceLayout, address: int, count: int) -> bool:
        """Whether every register of ``[address, address + count)`` is in a writable point."""
        rw: set[int] = set()
        for model, start in layout.models.items():
            if model not in self.models:
                continue
            for p in model_layout(model).points.values():
                if p.writable:
                    rw.update(range(start + p.offset, start + p.offset + p.size))
        return all(a in rw for a in range(address, address + count))

    def controls_written(self, image: Sequence[int], layout: DeviceLayout,
                         address: int, count: int) -> dict[str, float]:
        """Setpoints a write of ``[address, address + count)`` commands (``image`` after it).

        A control counts when the write touched its point or an enable point; it applies
        when every enable point holds its enabling value, else its ``released`` value.
        """
        written = range(address, address + count)
        out: dict[str, float] = {}
        for c in self.controls:
            model = model_layout(c.model)
            point = model.point(c.point)
            touched = [point] + [model.point(n) for n, _ in c.enable]
            if not any(_overlaps(layout.address(c.model, p.name), p.size, written)
                       for p in touched):
                continue
            enabled = all(decode_value(model.point(n), _get(image, layout, c.model,
                                                            model.point(n))) == raw
                          for n, raw in c.enable)
            if not enabled:
                if c.released is not None:
                    out[c.setpoint] = c.released
                continue
            value = _decode(point, _get(image, layout, c.model, point), c.factor, c.codes,
                            _sf(image, layout, c.model, point))
            if value is not None:
                out[c.setpoint] = value
        return out

    # ------------------------------------------------------------------ client side

    def read_spans(self, layout: DeviceLayout) -> list[tuple[int, int]]:
        """``(address, count)`` reads covering every bound point, control and scale factor.

        Neighbouring spans are merged while the union fits one Modbus read (125
        registers): on any transport a request costs far more than the registers in it, so
        reading a gap beats a second request.
        """
        needed: list[tuple[int, int]] = []
        for model_id, name in [(b.model, b.point) for b in self.bindings] + \
                [(c.model, c.point) for c in self.controls]:
            point = model_layout(model_id).point(name)
            needed.append((layout.address(model_id, name), point.size))
            if isinstance(point.sf, str):
                needed.append((layout.address(model_id, point.sf), 1))
        needed.sort()
        merged: list[list[int]] = []
        for start, size in needed:
            end = start + size
            if merged and max(merged[-1][1], end) - merged[-1][0] <= MAX_READ_REGISTERS:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        spans: list[tuple[int, int]] = []
        for start, end in merged:
            while end - start > MAX_READ_REGISTERS:
                spans.append((start, MAX_READ_REGISTERS))
                start += MAX_READ_REGISTERS
            spans.append((start, end - start))
        return spans

    def decode(self, image: Sequence[int], layout: DeviceLayout,
               implausible: list[str] | None = None) -> dict[str, float]:
        """Signals from a register image (SI); unimplemented points are left out.

        A value outside its point's plausible range (:mod:`firmware_bridge.plausible`: from
        the unit of the point's SunSpec definition, else of the signal's name) is garbage:
        it is NaN, and a line naming the signal, point and value is appended to
        ``implausible`` when given."""
        out: dict[str, float] = {}
        for b in self.bindings:
            if b.signal in out:
                continue
            point = model_layout(b.model).point(b.point)
            value = _decode(point, _get(image, layout, b.model, point), b.factor, b.codes,
                            _sf(image, layout, b.model, point))
            if value is None:
                continue
            problem = _implausible(b, point, value)
            if problem:
                value = math.nan
                if implausible is not None:
                    implausible.append(problem)
            out[b.signal] = value
        return out

    def control(self, setpoint: str) -> Control | None:
        """The control of ``setpoint``, or None when the map cannot write it."""
        return next((c for c in self.controls if c.setpoint == setpoint), None)

    def encodable(self, setpoint: str, image: Sequence[int],
                  layout: DeviceLayout) -> tuple[float, float] | None:
        """The values (SI) ``setpoint``'s register holds at the device's scale factor in
        ``image``; None for a coded setpoint, or while the scale factor is unset."""
        c = self.control(setpoint)
        if c is None or c.codes:
            return None
        point = model_layout(c.model).point(c.point)
        exponent = _sf(image, layout, c.model, point)
        if exponent is None or point.type not in _INTEGER_TYPES:
            return None
        ends = [from_raw(raw, exponent) * c.factor for raw in type_range(point.type)]
        return min(ends), max(ends)

    def control_writes(self, setpoints: Mapping[str, float], image: Sequence[int],
                       layout: DeviceLayout) -> list[tuple[int, list[int]]]:
        """Register writes ``(address, values)`` commanding ``setpoints``, adjacent ones merged.

        ``image`` supplies the device's scale factors (read before).  An unknown setpoint
        raises :class:`ConfigError` naming it; a value its register cannot hold,
        :class:`UnencodableSetpoint`.  NaN releases a setpoint that has a ``release``
        (its disabling values written, the setpoint's own register left alone).
        """
        by_name = {c.setpoint: c for c in self.controls}
        unknown = [name for name in setpoints if name not in by_name]
        if unknown:
            raise ConfigError(f"map {self.name}: cannot write {', '.join(unknown)}; writable: "
                              f"{', '.join(by_name) or 'nothing'}")
        regs: dict[int, int] = {}
        for name, value in setpoints.items():
            c = by_name[name]
            model = model_layout(c.model)
            if math.isnan(float(value)) and c.release:
                for n, raw in c.release:
                    _scatter(regs, layout.address(c.model, n), encode_value(model.point(n), raw))
                continue
            for n, raw in c.enable:
                p = model.point(n)
                _scatter(regs, layout.address(c.model, n), encode_value(p, raw))
            _scatter(regs, layout.address(c.model, c.point),
                     self._encode_control(c, float(value), image, layout))
        writes: list[tuple[int, list[int]]] = []
        for address in sorted(regs):
            if writes and writes[-1][0] + len(writes[-1][1]) == address:
                writes[-1][1].append(regs[address])
            else:
                writes.append((address, [regs[address]]))
        return writes

    def _encode_control(self, c: Control, value: float, image: Sequence[int],
                        layout: DeviceLayout) -> list[int]:
        """The registers of ``c``'s point holding ``value``; one that does not fit is an
        :class:`UnencodableSetpoint` naming the setpoint and what the register holds."""
        point = model_layout(c.model).point(c.point)
        held = None if math.isnan(value) else self.encodable(c.setpoint, image, layout)
        if held is not None and not held[0] <= value <= held[1]:
            raise UnencodableSetpoint(
                f"map {self.name}: cannot write {c.setpoint} = {value:g}: {point.name} "
                f"({point.type}) holds {held[0]:g}..{held[1]:g} at the device's scale factor",
                c.setpoint, value, *held)
        return _encode(point, value, c.factor, c.codes, _sf(image, layout, c.model, point),
                       self.name)


# ---------------------------------------------------------------------- helpers


def _overlaps(start: int, size: int, written: range) -> bool:
    return start < written.stop and written.start < start + size


def _get(image: Sequence[int], layout: DeviceLayout, model: int, point: Point) -> Sequence[int]:
    at = layout.model_address(model) + point.offset - layout.base_address
    return image[at:at + point.size]


def _put(image: list[int], layout: DeviceLayout, model: int, point: Point,
         regs: list[int]) -> None:
    at = layout.model_address(model) + point.offset - layout.base_address
    image[at:at + point.size] = regs


def _scatter(regs: dict[int, int], address: int, values: list[int]) -> None:
    for i, v in enumerate(values):
        regs[address + i] = v


#: the range SunSpec allows a scale factor (sunssf) point
SF_MIN, SF_MAX = -10, 10


def _sf(image: Sequence[int], layout: DeviceLayout, model: int, point: Point) -> int | None:
    """The scale factor of ``point``: 0 when unscaled, None when its sf point is unset; a
    device's scale factor out of SunSpec's range is a :class:`DeviceError`."""
    if point.sf is None:
        return 0
    if isinstance(point.sf, int):
        return point.sf
    sf_point = model_layout(model).point(point.sf)
    raw = decode_value(sf_point, _get(image, layout, model, sf_point))
    if raw is None:
        return None
    if not SF_MIN <= int(raw) <= SF_MAX:  # 10**32767 overflows; 10**20 W is nonsense
        raise DeviceError(f"model {model} {point.sf} = {int(raw)}: a scale factor outside "
                          f"SunSpec's {SF_MIN}..{SF_MAX}")
    return int(raw)


def _implausible(b: Binding, point: Point, value: float) -> str:
    """What is implausible about ``value`` (``b.signal``, SI) read from ``point``, or ``""``:
    judged in the point's SunSpec unit where its definition has one we bound (before the
    binding's factor: a SoC in %), else in the unit of the signal's name."""
    if b.codes:  # an enumerated point: unknown codes are left out already
        return ""
    bound = plausible.for_sunspec(point.units)
    shown = value / b.factor if bound is not None and b.factor else value
    if bound is None:
        bound = plausible.for_signal(b.signal)
    if not plausible.implausible(shown, bound):
        return ""
    assert bound is not None
    return (f"{b.signal} (model {b.model} {point.name}) = {bound.show(shown)}, outside the "
            f"plausible {bound.describe()}")


def _encode(point: Point, value: float, factor: float, codes: tuple[tuple[int, float], ...],
            exponent: int | None, map_name: str) -> list[int]:
    if math.isnan(value):
        return encode_value(point, None)
    if codes:
        for code, v in codes:
            if v == value:
                return encode_value(point, code)
        return encode_value(point, None)
    if exponent is None:
        raise ConfigError(f"map {map_name}: point {point.name} needs scale factor "
                          f"{point.sf}, which the device does not set")
    try:
        return encode_value(point, to_raw(value / factor, exponent))
    except ConfigError as exc:
        raise ConfigError(f"map {map_name}: {value:g} {point.units} does not fit "
                          f"{point.name} ({point.type}) at scale factor {exponent}: "
                          f"{exc}") from None


def _decode(point: Point, regs: Sequence[int], factor: float,
            codes: tuple[tuple[int, float], ...], exponent: int | None) -> float | None:
    raw = decode_value(point, regs)
    if raw is None or isinstance(raw, str):
        return None
    if codes:
        return next((v for code, v in codes if code == raw), None)
    if exponent is None:
        return None
    return from_raw(int(raw), exponent) * factor


# ---------------------------------------------------------------------- named maps


def common_identity(kind: str) -> dict[tuple[int, str], int | str]:
    """Model 1 constants of an emulated device of ``kind``; emulators override SN and DA."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        vr = version("gridloop")
    except PackageNotFoundError:
        vr = "dev"
    return {(1, "Mn"): "gridloop", (1, "Md"): f"emulated {kind}", (1, "Vr"): vr[:16],
            (1, "SN"): kind, (1, "DA"): 1}


def power_scale_factor(rating_w: float, ptype: str = "int16") -> int:
    """The finest whole-watt scale factor at which 1.5 times ``rating_w`` fits ``ptype``."""
    return fit_scale_factor(_HEADROOM * rating_w, ptype, finest=0)


def sunspec_inverter(rating_w: float = 100_000.0, v_nom_v: float = 400.0,
                     v_dc_nom_v: float = 800.0) -> RegisterMap:
    """A PV inverter: models 1, 701 (measurements), 702 (ratings), 704 (controls), and 103
    (the legacy three-phase inverter model, for its DC side, which the 70x models leave to
    714 with a variable number of ports; legacy clients read its AC points too).

    Parameters
    ----------
    rating_w : float
        Rated active power; sets the scale factors of power points. [W]
    v_nom_v : float
        Nominal line-to-line AC voltage. [V]
    v_dc_nom_v : float
        Nominal DC (array) voltage; sets the DC voltage's scale factor. [V]
    """
    w_sf = power_scale_factor(rating_w)
    rating_sf = fit_scale_factor(rating_w, "uint16", finest=0)
    return RegisterMap(
        name="sunspec_inverter", kind="inverter", models=(1, 701, 702, 704, 103),
        bindings=(
            Binding("p_ac_w", 701, "W"),
            Binding("p_dc_w", 103, "DCW"),
            Binding("v_dc_v", 103, "DCV"),
            Binding("q_var", 701, "Var"),
            Binding("v_ac_v", 701, "LLV"),
            Binding("freq_hz", 701, "Hz"),
            Binding("energy_wh", 701, "TotWhInj"),
            Binding("w_max_lim_pct", 704, "WMaxLimPct"),
        ),
        controls=(
            Control("w_max_lim_pct", 704, "WMaxLimPct", enable=(("WMaxLimPctEna", 1),),
                    released=100.0, low=0.0, high=100.0, safe=100.0),
            # released (WSetEna = 0), the inverter follows its own control again (a PV
            # inverter its maximum power point): the plant's setpoint is NaN, its default
            Control("p_set_w", 704, "WSet", enable=(("WSetEna", 1), ("WSetMod", 1)),
                    released=math.nan, safe=math.nan, release=(("WSetEna", 0),)),
        ),
        constants={
            **common_identity("inverter"),
            (103, "DCW_SF"): w_sf, (103, "DCV_SF"): fit_scale_factor(_HEADROOM * v_dc_nom_v,
                                                                       "uint16"),
            (103, "St"): 4, (103, "Evt1"): 0, (103, "Evt2"): 0,
            (701, "ACType"): 2, (701, "W_SF"): w_sf, (701, "Var_SF"): w_sf,
            (701, "VA_SF"): w_sf, (701, "V_SF"): -1, (701, "Hz_SF"): -3,
            (701, "TotWh_SF"): 0,
            (702, "W_SF"): rating_sf, (702, "V_SF"): -1,
            (702, "WMaxRtg"): to_raw(rating_w, rating_sf),
            (702, "WMax"): to_raw(rating_w, rating_sf),
            (702, "VNomRtg"): to_raw(v_nom_v, -1),
            (704, "WMaxLimPctEna"): 0, (704, "WMaxLimPct_SF"): -1,
            (704, "WMaxLimPct"): 1000,
            (704, "WSetEna"): 0, (704, "WSetMod"): 1, (704, "WSet_SF"): 0,
        })


def sunspec_battery(rating_w: float = 100_000.0, capacity_wh: float = 200_000.0,
                    v_dc_nom_v: float = 800.0) -> RegisterMap:
    """A battery with its converter: models 1, 701, 704, 713, 802.

    802 (battery base) carries the DC side, SoC and connect/disconnect; 713 the storage
    capacity; 701 and 704, the converter's AC power and its power setpoint (SunSpec's DER
    models cover storage: ``WSet`` positive discharges).

    Parameters
    ----------
    rating_w : float
        Rated charge and discharge power. [W]
    capacity_wh : float
        Rated energy; sets the scale factor of energy points. [Wh]
    v_dc_nom_v : float
        Nominal DC voltage; sets the scale factor of current points. [V]
    """
    w_sf = power_scale_factor(rating_w)
    a_sf = fit_scale_factor(_HEADROOM * rating_w / v_dc_nom_v, "int16")
    wh_sf = fit_scale_factor(capacity_wh, "uint16", finest=0)
    rating_sf = fit_scale_factor(rating_w, "uint16", finest=0)
    connected = ((3, 1.0), (1, 0.0))  # 802 State: CONNECTED, DISCONNECTED
    return RegisterMap(
        name="sunspec_battery", kind="battery", models=(1, 701, 704, 713, 802),
        bindings=(
            Binding("p_w", 701, "W"),
            Binding("p_dc_w", 802, "W"),
            Binding("voltage_v", 802, "V"),
            Binding("current_a", 802, "A"),
            Binding("soc", 802, "SoC", factor=0.01),
            Binding("soc", 713, "SoC", factor=0.01),
            Binding("soh", 802, "SoH", factor=0.01),
            Binding("soh", 713, "SoH", factor=0.01),
            Binding("capacity_wh", 713, "WHRtg"),
            Binding("capacity_wh", 802, "WHRtg"),
            Binding("connected", 802, "State", codes=connected),
        ),
        controls=(
            Control("p_set_w", 704, "WSet", enable=(("WSetEna", 1), ("WSetMod", 1)),
                    safe=0.0),
            # the contactor is left as it is at the end: opening or closing one is an act
            Control("connect", 802, "SetOp", codes=((1, 1.0), (2, 0.0)),
                    note="0: open, 1: closed"),
        ),
        constants={
            **common_identity("battery"),
            (701, "ACType"): 2, (701, "W_SF"): w_sf,
            (704, "WSetEna"): 0, (704, "WSetMod"): 1, (704, "WSet_SF"): 0,
            (713, "WH_SF"): wh_sf, (713, "Pct_SF"): -2,
            (802, "WHRtg_SF"): wh_sf, (802, "AHRtg_SF"): 0,
            (802, "WChaDisChaMax_SF"): rating_sf,
            (802, "WChaRteMax"): to_raw(rating_w, rating_sf),
            (802, "WDisChaRteMax"): to_raw(rating_w, rating_sf),
            (802, "SoC_SF"): -2, (802, "SoH_SF"): -1,
            (802, "V_SF"): fit_scale_factor(_HEADROOM * v_dc_nom_v, "uint16"),
            (802, "CellV_SF"): -3, (802, "A_SF"): a_sf, (802, "AMax_SF"): a_sf,
            (802, "W_SF"): w_sf, (802, "Typ"): 4, (802, "LocRemCtl"): 0,
            (802, "AlmRst"): 0, (802, "Evt1"): 0, (802, "Evt2"): 0,
            (802, "EvtVnd1"): 0, (802, "EvtVnd2"): 0,
        })


def sunspec_meter(rating_w: float = 200_000.0, v_nom_v: float = 230.0,
                  import_positive: bool = True) -> RegisterMap:
    """A node meter at the grid connection: models 1 and 203 (wye three-phase meter).

    SunSpec meters measure real power from their line side to their load side.  Installed
    with the grid on the line side, the usual way, positive ``W`` is import, as our ``p_w``,
    and ``TotWhImp`` counts it.  Some vendors' grid meters report export positive instead
    (SolarEdge's export+import meter does): ``import_positive=False`` flips ``p_w`` and
    ``q_var`` for those.  Energy counters are not flipped.

    Parameters
    ----------
    rating_w : float
        Largest import or export expected. [W]
    v_nom_v : float
        Nominal line-to-neutral voltage. [V]
    import_positive : bool
        Whether the meter's ``W`` is positive on import.
    """
    w_sf = power_scale_factor(rating_w)
    sign = 1.0 if import_positive else -1.0
    return RegisterMap(
        name="sunspec_meter", kind="meter", models=(1, 203),
        bindings=(
            Binding("p_w", 203, "W", factor=sign),
            Binding("q_var", 203, "VAR", factor=sign),
            Binding("v_ac_v", 203, "PhV"),
            Binding("freq_hz", 203, "Hz"),
            Binding("e_import_wh", 203, "TotWhImp"),
            Binding("e_export_wh", 203, "TotWhExp"),
        ),
        constants={
            **common_identity("meter"),
            (203, "W_SF"): w_sf, (203, "VAR_SF"): w_sf, (203, "VA_SF"): w_sf,
            (203, "V_SF"): fit_scale_factor(1.5 * v_nom_v, "int16"),
            (203, "A_SF"): fit_scale_factor(_HEADROOM * rating_w / v_nom_v / 3, "int16"),
            (203, "Hz_SF"): -2, (203, "PF_SF"): -2, (203, "TotWh_SF"): 0, (203, "Evt"): 0,
        })


def _gpu_rack(**options: float | bool) -> RegisterMap:
    """The rack's map (:mod:`firmware_bridge.gpu_map`) with its cap's range and safe state:
    a cap is >= 0 W, 0 for none, and a run ends with none."""
    from dataclasses import replace

    from firmware_bridge.gpu_map import gpu_rack  # gpu_map builds on this module

    regmap = gpu_rack(**options)
    controls = tuple(replace(c, low=0.0, safe=0.0, note="0: no cap")
                     if c.setpoint == "power_cap_w" else c for c in regmap.controls)
    return replace(regmap, controls=controls)


#: name -> factory of a map; options are the factory's keyword arguments (ratings)
MAPS: dict[str, Callable[..., RegisterMap]] = {
    "sunspec_inverter": sunspec_inverter,
    "sunspec_battery": sunspec_battery,
    "sunspec_meter": sunspec_meter,
    "gpu_rack": _gpu_rack,
}


def get_map(name: str | RegisterMap, **options: float | bool) -> RegisterMap:
    """The named map built with ``options`` (its ratings); a map passes through."""
    if isinstance(name, RegisterMap):
        return name
    if name not in MAPS:
        from twin.params import did_you_mean

        raise ConfigError(f"unknown register map '{name}'{did_you_mean(name, MAPS)}; "
                          f"known: {', '.join(MAPS)}")
    try:
        return MAPS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"register map '{name}': {exc}") from None
