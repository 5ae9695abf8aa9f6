"""What a device's reading can plausibly be: a bound per point from the unit it is in.

A device that answers a number no device of its kind could measure (1e30 W from a board,
an int16 power at a scale factor of 10, 3.3e14 W, or a 32-bit grid frequency of 4.3 MHz) is
answering garbage, however well framed: the back-ends treat such a value as they treat a NaN
(:mod:`firmware_bridge.backends.serial`) or any other value the device should not have sent.
The value is left out (NaN) and the reading is flagged ``Quality.ERROR``, naming the device,
the point and the value; the other points of the reading are kept.

The bounds come from the unit the point is in: our signal names carry it (``p_w``,
``energy_wh``, ``temp_cell_c``, ``soc``; docs/developing.md, section Signals), and so do
SunSpec points (the ``units`` of their definitions, which the register maps bind to those
names).  They are physical limits made generous, so that only garbage trips them: every
real device on a site gridloop serves (a rack, a battery, a campus meter) reads far inside
them.  Power is signed (export, charging and reactive power are negative), energy counters
may hold a site's lifetime in Wh, a SunSpec percentage (SoC, SoH, a power limit) is 0 to
100 % with slack for a device's calibration, and a temperature is never below absolute zero.
A point in a unit not listed here is not bounded (only NaN and infinities are refused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bound:
    """The plausible range of a point's value, ``low <= value <= high``, in ``unit``."""

    low: float
    high: float
    unit: str

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def show(self, value: float) -> str:
        """``value`` with the bound's unit (``3.2767e+14 W``)."""
        return f"{value:g} {self.unit}" if self.unit else f"{value:g}"

    def describe(self) -> str:
        """The range, ``-1e+09..1e+09 W``."""
        return f"{self.low:g}..{self.show(self.high)}"


#: bounds per unit (the unit as our signal names and the SI side write it)
BOUNDS: dict[str, Bound] = {
    # active, reactive and apparent power, signed: 1 GW either way is past any campus
    "W": Bound(-1e9, 1e9, "W"),
    "var": Bound(-1e9, 1e9, "var"),
    "VA": Bound(-1e9, 1e9, "VA"),
    # energy counters: 1 GW for a century is 8.8e14 Wh
    "Wh": Bound(-1e15, 1e15, "Wh"),
    "V": Bound(-1e6, 1e6, "V"),
    "A": Bound(-1e6, 1e6, "A"),
    # AC (grid) frequency: a dead bus reads 0; 400 Hz supplies exist
    "Hz_ac": Bound(0.0, 1e3, "Hz"),
    # any other frequency (a clock, a PWM): not negative, under 10 GHz
    "Hz": Bound(0.0, 1e10, "Hz"),
    # absolute zero; past any sensor in a rack or a cell
    "degC": Bound(-273.15, 1e3, "degC"),
    # a percentage of a rating (SunSpec SoC, SoH, WMaxLimPct: 0..100 %), 10 points' slack
    "%": Bound(-10.0, 110.0, "%"),
    # the same as a fraction (our soc, soh)
    "fraction": Bound(-0.1, 1.1, ""),
}

#: SunSpec ``units`` of a point's definition -> the unit of :data:`BOUNDS`
SUNSPEC_UNITS = {"W": "W", "var": "var", "Var": "var", "VAR": "var", "VA": "VA", "Wh": "Wh",
                 "WH": "Wh", "V": "V", "A": "A", "Hz": "Hz_ac", "C": "degC", "Pct": "%",
                 "%": "%", "%WHRtg": "%"}

#: our signal names: whole names first, then the unit suffix (longest first)
_NAMES = {"soc": "fraction", "soh": "fraction", "freq_hz": "Hz_ac"}
_SUFFIXES = (("_pct", "%"), ("_var", "var"), ("_va", "VA"), ("_wh", "Wh"), ("_hz", "Hz"),
             ("_w", "W"), ("_v", "V"), ("_a", "A"), ("_c", "degC"))


def for_signal(name: str) -> Bound | None:
    """The bound of a signal of our vocabulary, from the unit its name carries (None: a
    name without a unit we bound, such as ``phase`` or ``connected``)."""
    unit = _NAMES.get(name)
    if unit is None:
        unit = next((u for suffix, u in _SUFFIXES if name.endswith(suffix)), None)
    return BOUNDS[unit] if unit is not None else None


def for_sunspec(units: str) -> Bound | None:
    """The bound of a SunSpec point whose definition gives ``units`` (None: not bounded)."""
    unit = SUNSPEC_UNITS.get(units.strip())
    return BOUNDS[unit] if unit is not None else None


def implausible(value: float, bound: Bound | None) -> bool:
    """Whether a finite ``value`` is outside ``bound`` (NaN is the caller's to judge)."""
    return bound is not None and math.isfinite(value) and not bound.holds(value)
