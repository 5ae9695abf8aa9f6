"""PyBaMM equivalent-circuit parameter sets as gridloop battery parameter files.

PyBaMM's ``Thevenin`` model reads its parameters by name (``"R0 [Ohm]"``, ``"Cell thermal mass
[J/K]"``); lookup tables are functions that return a ``pybamm.Interpolant``.  This module calls
each function on named symbols, reads the interpolant's breakpoints and values, and maps names
to :class:`twin.battery.BatteryParams` fields.  The set's initial conditions (initial SOC,
temperature, RC overpotentials) become the file's ``[initial]`` table, so the same experiment
gives the same answer in both tools.

PyBaMM is the optional extra ``gridloop[interop]`` and is imported only when a set is converted.
"""

from __future__ import annotations

import os
from typing import Any

from twin.battery import params_from_set
from twin.errors import ParameterError
from twin.params import ParamSet, Table, did_you_mean
from twin.units import KELVIN_OFFSET

# PyBaMM name -> gridloop field, for numbers
_SCALARS = {
    "Cell capacity [A.h]": "capacity_ah",
    "Cell thermal mass [J/K]": "thermal_mass_cell_j_per_k",
    "Jig thermal mass [J/K]": "thermal_mass_jig_j_per_k",
    "Cell-jig heat transfer coefficient [W/K]": "k_cell_jig_w_per_k",
    "Jig-air heat transfer coefficient [W/K]": "k_jig_ambient_w_per_k",
    "Upper voltage cut-off [V]": "voltage_max_v",
    "Lower voltage cut-off [V]": "voltage_min_v",
}
# PyBaMM name -> (gridloop field, the axes of the function's arguments in order)
_RC_ARGS = ("temp_c", "current_a", "soc")  # EcmParameters.rcr_element(T_cell, current, soc)
_FUNCTIONS = {
    "Open-circuit voltage [V]": ("ocv_v", ("soc",)),
    "R0 [Ohm]": ("r0_ohm", _RC_ARGS),
    "R1 [Ohm]": ("r1_ohm", _RC_ARGS),
    "C1 [F]": ("c1_f", _RC_ARGS),
    "R2 [Ohm]": ("r2_ohm", _RC_ARGS),
    "C2 [F]": ("c2_f", _RC_ARGS),
    "Entropic change [V/K]": ("entropic_v_per_k", ("ocv_v", "temp_c")),
}
# names the Thevenin model does not read, or that only set up a PyBaMM simulation
_NOT_MODEL = {"chemistry", "Nominal cell capacity [A.h]", "Current function [A]",
              "RCR lookup limit [A]"}

NOTES = (
    "Tables interpolate multilinearly like PyBaMM's 'linear' interpolants; outside their "
    "breakpoints gridloop holds the edge value where PyBaMM extrapolates linearly. PyBaMM's "
    "voltage cut-offs end a simulation; gridloop saturates the current at them instead."
)


def _pybamm() -> Any:
    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    try:
        import pybamm
    except ImportError:
        raise ParameterError("importing PyBaMM parameter sets needs PyBaMM: "
                             "pip install 'gridloop[interop]'") from None
    return pybamm


def ecm_parameter_sets() -> list[str]:
    """Names of PyBaMM's equivalent-circuit parameter sets."""
    pybamm = _pybamm()
    return sorted(name for name in pybamm.parameter_sets
                  if pybamm.parameter_sets[name].get("chemistry") == "ecm")


def _table(pybamm: Any, key: str, value: Any, axes: tuple[str, ...]) -> float | Table:
    """A constant or a :class:`Table` from a PyBaMM parameter value."""
    if isinstance(value, (int, float)):
        return float(value)
    if not callable(value):
        raise ParameterError(f"PyBaMM '{key}': cannot convert {type(value).__name__}")
    expr = value(*(pybamm.Variable(a) for a in axes))
    if isinstance(expr, pybamm.Scalar):
        return float(expr.value)
    if not isinstance(expr, pybamm.Interpolant):
        raise ParameterError(f"PyBaMM '{key}': a {type(expr).__name__} expression; only "
                             "lookup tables (Interpolant) and constants convert")
    if expr.interpolator != "linear":
        raise ParameterError(f"PyBaMM '{key}': '{expr.interpolator}' interpolation; only "
                             "'linear' tables convert exactly")
    names = []
    for child in expr.children:
        if not isinstance(child, pybamm.Variable) or child.name not in axes:
            raise ParameterError(f"PyBaMM '{key}': the table is not over the plain arguments "
                                 f"{axes}")
        names.append(child.name)
    return Table(tuple(zip(names, (x.astype(float) for x in expr.x))),
                 expr.y.astype(float).reshape(tuple(len(x) for x in expr.x)))


def import_parameter_set(name: str) -> ParamSet:
    """Convert PyBaMM's equivalent-circuit parameter set ``name`` (e.g. ``"ECM_Example"``).

    Returns
    -------
    ParamSet
        kind ``battery``, with the set's initial conditions and its provenance in ``meta``;
        ready for :func:`twin.params.save`.
    """
    pybamm = _pybamm()
    if name not in pybamm.parameter_sets:
        raise ParameterError(f"PyBaMM has no parameter set '{name}'"
                             f"{did_you_mean(name, ecm_parameter_sets())}")
    chemistry = pybamm.parameter_sets[name].get("chemistry")
    if chemistry != "ecm":
        raise ParameterError(f"PyBaMM parameter set '{name}' is a '{chemistry}' set; only "
                             f"equivalent-circuit sets convert: {', '.join(ecm_parameter_sets())}")
    values = pybamm.ParameterValues(name)
    params: dict[str, Any] = {}
    initial: dict[str, float] = {}
    skipped = []
    for key, value in values.items():
        if key in _SCALARS:
            params[_SCALARS[key]] = _number(key, value)
        elif key in _FUNCTIONS:
            field, axes = _FUNCTIONS[key]
            params[field] = _table(pybamm, key, value, axes)
        elif key == "Ambient temperature [K]":
            params["temp_ambient_c"] = _number(key, value) - KELVIN_OFFSET
        elif key == "Initial SoC":
            initial["soc"] = _number(key, value)
        elif key == "Initial temperature [K]":  # PyBaMM starts cell and jig at this value
            initial["temp_cell_c"] = initial["temp_jig_c"] = _number(key, value) - KELVIN_OFFSET
        elif key.startswith("Element-") and key.endswith(" initial overpotential [V]"):
            j = key.split()[0].removeprefix("Element-")
            if j not in ("1", "2"):
                raise ParameterError(f"PyBaMM '{key}': gridloop has at most two RC pairs")
            # PyBaMM's overpotential is the negative of the voltage across the RC pair
            initial[f"v_rc{j}_v"] = 0.0 - _number(key, value)
        elif key not in _NOT_MODEL:
            skipped.append(key)
    meta = {
        "source": f"PyBaMM {pybamm.__version__} parameter set '{name}' "
                  f"(pybamm.ParameterValues('{name}')), converted by twin.interop.pybamm",
        "description": _description(pybamm, name),
        "notes": NOTES,
    }
    if skipped:
        meta["not_converted"] = skipped
    pset = ParamSet(kind="battery", name=name, params=params, initial=initial, meta=meta)
    try:
        params_from_set(pset)
    except ParameterError as exc:
        raise ParameterError(f"PyBaMM parameter set '{name}': {exc}") from None
    return pset


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"PyBaMM '{key}': expected a number, got "
                             f"{type(value).__name__} (time-varying values do not convert)")
    return float(value)


def _description(pybamm: Any, name: str) -> str:
    """The first paragraph of the parameter set's docstring, on one line."""
    doc = pybamm.parameter_sets.get_docstring(name) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split())
