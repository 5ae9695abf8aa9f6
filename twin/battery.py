r"""Battery: Thevenin equivalent circuit with one or two RC pairs and a two-node thermal model.

Model of one cell (a pack of ``cells_series`` x ``cells_parallel`` identical cells scales it).
Current ``I`` is positive on discharge, as in PyBaMM::

    V      = U(soc, T) + M h - R0 I - v1 - v2              terminal voltage [V]
    dsoc/dt = -eta I / (3600 Q)                           eta = coulombic efficiency on
                                                          charge (I < 0), 1 on discharge
    dv_j/dt = (R_j I - v_j) / (R_j C_j)                   RC pairs, j = 1, 2
    dh/dt   = -gamma eta |I| / (3600 Q) (h + sign I)      one-state hysteresis, h in [-1, 1]

``U`` is the open-circuit voltage table; ``R0, R_j, C_j`` may be tables over cell temperature,
SOC and current (evaluated by multilinear interpolation, edge values held outside the
breakpoints; PyBaMM extrapolates linearly instead, which only matters outside the tables).
``v_j`` is the voltage across RC pair ``j`` (PyBaMM's "Element-j overpotential" is ``-v_j``).

Hysteresis is Plett's one-state model (G. L. Plett, J. Power Sources 134 (2004) 262-276,
doi:10.1016/j.jpowsour.2004.02.032): the OCV is shifted by ``M h``, where ``h`` relaxes
towards -1 on discharge and +1 on charge at a rate proportional to the charge throughput.
The energy it takes is dissipated (the area of the hysteresis loop), so it counts as a loss.

Heat in the cell is computed as PyBaMM's ``Thevenin`` model computes it: irreversible
``R0 I^2 + sum_j I v_j`` (the power into each RC element), plus here the hysteresis and
coulombic losses, plus the reversible entropic heat ``-I (T + 273.15) dU/dT``.  The thermal
model is the two-node one of :mod:`twin.thermal` (cell and jig, jig to ambient).

Discretisation (``exact``)
--------------------------
:meth:`Battery.hold` evaluates the non-linear algebra once per step at its start: OCV, the
tables, the current (for constant power the closed-form root of ``P = I (E - R0 I)``), the
limits, and the heat, which is held at its exact average over the step (the RC and
hysteresis states are exponentials with the current held). With these held, every state
equation is linear and :meth:`Battery.step_exact` is their exact solution. :meth:`Battery.rhs`
is the same model as a right-hand side for the ``scipy`` reference method.

Energy counters
---------------
Three states integrate, per cell, the energy delivered at the terminals ``e_out_j``
(``int I V dt``), the losses ``e_loss_j`` (``int I (U - V) dt`` plus the coulombic loss) and
the change of stored energy ``e_stored_j``. Stored (chemical) energy is defined with the OCV
held over each step, ``d e_stored/dt = -U(soc_k) eta I``: the OCV the circuit sees in that
step. With this definition ``e_out + e_loss + e_stored = 0`` holds identically at every
instant of every step, so both methods conserve energy to rounding. The reversible heat
is exchanged with the surroundings, not drawn from the electrical energy, so it is not a loss.

Limits
------
Current, power, voltage and SOC limits saturate the current in :meth:`Battery.hold`, never
reverse it, and set bits of the output ``limited`` (the ``LIMIT_*`` constants below).
Without a minimum voltage, discharge stops where the terminal voltage would reach 0 V (the
short-circuit current): a cell cannot deliver more.
Voltage limits hold at both ends of the step (the voltage is monotonic within a step);
the SOC limits keep ``soc`` within ``[soc_min, soc_max]``; the model never produces a SOC
outside ``[0, 1]`` or a non-finite value.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from twin import params as tp
from twin import vecmath  # noqa: F401  (LLVM may vectorise the hold's passes)
from twin.errors import ParameterError, TwinError
from twin.params import ParamSet, Table
from twin.stepper import METHODS, Asset, step_scipy
from twin.thermal import two_node_step
from twin.units import C_PER_AH, KELVIN_OFFSET

#: bits of the output ``limited``
LIMIT_CURRENT = 1  #: current limit (discharge or charge)
LIMIT_POWER = 2  #: power limit (discharge or charge)
LIMIT_VOLTAGE_MIN = 4  #: minimum voltage (discharge reduced)
LIMIT_VOLTAGE_MAX = 8  #: maximum voltage (charge reduced)
LIMIT_SOC_MIN = 16  #: SOC at its minimum (discharge reduced)
LIMIT_SOC_MAX = 32  #: SOC at its maximum (charge reduced)
LIMIT_POWER_INFEASIBLE = 64  #: power above what the cell can deliver: maximum power instead
LIMIT_INVALID = 128  #: command not finite, treated as zero

#: cell and air temperatures a battery may start from or sit in [degC]: -60 is colder than
#: the air of any installation (outdoor enclosures are rated to -40), 100 above any cell's
#: rated storage temperature (60-85) and where separators begin to fail.  Outside it the
#: tables (held at their edges) and the thermal model describe no cell, and far enough
#: below it the absolute temperature of the entropic heat, T + 273.15, turns negative.
TEMP_RANGE_C = (-60.0, 100.0)


class BatteryWarning(UserWarning):
    """A battery set up in a way that runs, but likely not as meant (an initial SOC
    outside the SOC window)."""


STATE_NAMES = ("soc", "v_rc1_v", "v_rc2_v", "hysteresis", "temp_cell_c", "temp_jig_c",
               "e_out_j", "e_loss_j", "e_stored_j")
INPUT_NAMES = ("current_a", "power_w")
#: held inputs: cell current and parameters of the step, and its exponential factors
#: (``a = exp(-dt/tau)``, ``g = 1 - a`` of each RC pair and of the hysteresis state)
HELD_NAMES = ("current_a", "ocv_v", "hysteresis_v", "r0_ohm", "r1_ohm", "tau1_s", "r2_ohm",
              "tau2_s", "hysteresis_rate_per_s", "sign", "eta", "q_heat_w", "limited",
              "a1", "g1", "a2", "g2", "b_hyst", "g_hyst")
OUTPUT_NAMES = ("voltage_v", "current_a", "p_w", "soc", "temp_cell_c", "temp_jig_c",
                "ocv_v", "q_heat_w", "limited", "e_out_j", "e_loss_j", "e_stored_j")
MODES = ("current", "power")

# Table coordinates and the axes each parameter may have.
_COORDS = {"temp_c": 0, "soc": 1, "current_a": 2, "ocv_v": 3}
_RC_AXES = ("temp_c", "soc", "current_a")
_AXES = {"ocv_v": ("soc", "temp_c"), "r0_ohm": _RC_AXES, "r1_ohm": _RC_AXES, "c1_f": _RC_AXES,
         "r2_ohm": _RC_AXES, "c2_f": _RC_AXES, "entropic_v_per_k": ("soc", "ocv_v", "temp_c"),
         "hysteresis_v": ("soc", "temp_c")}
_MAXD = 3


@dataclass(frozen=True)
class BatteryParams:
    """Parameters of one cell; any field typed ``float | Table`` may be a lookup table.

    Tables are :class:`twin.params.Table` over the axes named in brackets.  ``None`` means
    no limit.  All values are per cell; :class:`PackParams` scales them to a pack.
    """

    #: usable capacity [A h]
    capacity_ah: float
    #: open-circuit voltage [V] (soc, temp_c)
    ocv_v: Table
    #: series resistance [Ohm] (temp_c, soc, current_a)
    r0_ohm: float | Table
    #: first RC pair resistance [Ohm] and capacitance [F] (temp_c, soc, current_a)
    r1_ohm: float | Table
    c1_f: float | Table
    #: heat capacity of the cell [J/K]
    thermal_mass_cell_j_per_k: float
    #: heat capacity of the jig or enclosure the cell sits in [J/K]
    thermal_mass_jig_j_per_k: float
    #: conductance cell to jig [W/K]
    k_cell_jig_w_per_k: float
    #: conductance jig to ambient air [W/K]
    k_jig_ambient_w_per_k: float
    #: second RC pair; ``r2_ohm = 0`` means a one-pair model [Ohm], [F]
    r2_ohm: float | Table = 0.0
    c2_f: float | Table = 0.0
    #: ambient temperature [degC]
    temp_ambient_c: float = 25.0
    #: fraction of the charge current stored [-]
    coulombic_efficiency: float = 1.0
    #: entropic coefficient dU/dT [V/K] (soc or ocv_v, temp_c)
    entropic_v_per_k: float | Table = 0.0
    #: hysteresis magnitude M [V] (soc, temp_c); 0 disables hysteresis
    hysteresis_v: float | Table = 0.0
    #: hysteresis rate gamma: h moves by 1 - exp(-gamma) per unit of SOC throughput [-]
    hysteresis_rate: float = 0.0
    #: current limits, positive numbers [A]
    current_max_discharge_a: float | None = None
    current_max_charge_a: float | None = None
    #: terminal power limits, positive numbers [W]
    power_max_discharge_w: float | None = None
    power_max_charge_w: float | None = None
    #: terminal voltage limits [V]; without a minimum, discharge stops at 0 V
    voltage_min_v: float | None = None
    voltage_max_v: float | None = None
    #: SOC window [-]
    soc_min: float = 0.0
    soc_max: float = 1.0

    def __post_init__(self) -> None:
        for name, allowed in _AXES.items():
            value = getattr(self, name)
            if isinstance(value, Table):
                for axis in value.axis_names:
                    if axis not in allowed:
                        raise ParameterError(
                            f"{name}: table axis '{axis}' is not one of {', '.join(allowed)}"
                            f"{tp.did_you_mean(axis, allowed)}")
                if not np.all(np.isfinite(value.values)):
                    raise ParameterError(f"{name}: table values are not all finite")
        if not isinstance(self.ocv_v, Table) or "soc" not in self.ocv_v.axis_names:
            raise ParameterError("ocv_v: must be a table over 'soc'")
        _check_ocv_rises(self.ocv_v)
        _check_temperature(self.temp_ambient_c, "temp_ambient_c")
        _check(self.capacity_ah > 0, "capacity_ah", "must be positive")
        for name in ("r0_ohm", "r1_ohm", "r2_ohm", "hysteresis_v"):
            _check(np.all(_values(getattr(self, name)) >= 0), name, "must not be negative")
        _check(np.all(_values(self.c1_f) > 0), "c1_f", "must be positive")
        if np.any(_values(self.r2_ohm) > 0):
            _check(np.all(_values(self.c2_f) > 0), "c2_f", "must be positive with r2_ohm > 0")
        _check(0 < self.coulombic_efficiency <= 1, "coulombic_efficiency", "must be in (0, 1]")
        _check(self.thermal_mass_cell_j_per_k > 0, "thermal_mass_cell_j_per_k",
               "must be positive")
        _check(self.thermal_mass_jig_j_per_k > 0, "thermal_mass_jig_j_per_k", "must be positive")
        _check(self.k_cell_jig_w_per_k >= 0, "k_cell_jig_w_per_k", "must not be negative")
        _check(self.k_jig_ambient_w_per_k >= 0, "k_jig_ambient_w_per_k", "must not be negative")
        _check(self.hysteresis_rate >= 0, "hysteresis_rate", "must not be negative")
        for name in ("current_max_discharge_a", "current_max_charge_a",
                     "power_max_discharge_w", "power_max_charge_w", "voltage_min_v",
                     "voltage_max_v"):
            value = getattr(self, name)
            _check(value is None or value > 0, name, "must be positive")
        if self.voltage_min_v is not None and self.voltage_max_v is not None:
            _check(self.voltage_min_v < self.voltage_max_v, "voltage_min_v",
                   "must be below voltage_max_v")
        _check(0 <= self.soc_min < self.soc_max <= 1, "soc_min",
               "soc_min and soc_max must satisfy 0 <= soc_min < soc_max <= 1")

    @property
    def n_rc(self) -> int:
        """Number of RC pairs (1 or 2)."""
        return 2 if np.any(_values(self.r2_ohm) > 0) else 1


@dataclass(frozen=True)
class PackParams:
    """Identical cells, ``cells_series`` in series times ``cells_parallel`` in parallel.

    Pack voltage is ``cells_series`` times the cell's, pack current ``cells_parallel`` times,
    capacity, energy and heat scale with the number of cells; SOC and temperatures are the
    cells'.  A parameter file keeps the two counts beside the cell's fields in ``[params]``.
    """

    cell: BatteryParams
    cells_series: int = 1
    cells_parallel: int = 1

    def __post_init__(self) -> None:
        _check(self.cells_series >= 1, "cells_series", "must be at least 1")
        _check(self.cells_parallel >= 1, "cells_parallel", "must be at least 1")

    @property
    def n_cells(self) -> int:
        return self.cells_series * self.cells_parallel

    @property
    def capacity_ah(self) -> float:
        """Pack capacity. [A h]"""
        return self.cell.capacity_ah * self.cells_parallel

    def to_mapping(self) -> dict[str, Any]:
        """Flat ``[params]`` mapping: the cell's fields plus the two counts."""
        m = tp.to_mapping(self.cell)
        if self.n_cells > 1:
            m = {"cells_series": self.cells_series, "cells_parallel": self.cells_parallel, **m}
        return m

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "params") -> PackParams:
        """Read a flat ``[params]`` mapping; errors name ``where.field``."""
        m = dict(mapping)
        counts = {k: m.pop(k) for k in ("cells_series", "cells_parallel") if k in m}
        cell_fields = {f.name for f in dataclasses.fields(BatteryParams)}
        for key in m:
            if key not in cell_fields:
                hint = tp.did_you_mean(key, cell_fields | {"cells_series", "cells_parallel"})
                raise ParameterError(f"{where}.{key}: unknown parameter{hint}")
        try:
            cell = tp.from_mapping(BatteryParams, m, where)
        except ParameterError as exc:
            msg = str(exc)
            raise ParameterError(msg if msg.startswith(where) else f"{where}.{msg}") from None
        for key, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParameterError(f"{where}.{key}: expected an integer, got {value!r}")
        try:
            return cls(cell, **counts)
        except ParameterError as exc:
            raise ParameterError(f"{where}.{exc}") from None


@dataclass(frozen=True)
class BatteryInitial:
    """Initial conditions; ``None`` temperatures start at the ambient temperature."""

    soc: float = 0.5
    temp_cell_c: float | None = None
    temp_jig_c: float | None = None
    v_rc1_v: float = 0.0
    v_rc2_v: float = 0.0
    hysteresis: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check(value is None or math.isfinite(value), f.name, "must be finite")
        _check(0 <= self.soc <= 1, "soc", "must be in [0, 1]")
        _check(-1 <= self.hysteresis <= 1, "hysteresis", "must be in [-1, 1]")
        for name in ("temp_cell_c", "temp_jig_c"):
            if getattr(self, name) is not None:
                _check_temperature(getattr(self, name), name)


def _check(ok: Any, name: str, what: str) -> None:
    if not bool(ok):
        raise ParameterError(f"{name}: {what}")


def _check_temperature(value: float, name: str) -> None:
    lo, hi = TEMP_RANGE_C
    _check(lo <= value <= hi, name, f"{value:g} degC is outside {lo:g} to {hi:g} degC (colder "
           "than any installation's air, or above any cell's rated storage temperature)")


def _check_ocv_rises(ocv: Table) -> None:
    """The open-circuit voltage must not fall as the SOC rises (at every temperature): a
    cell whose OCV fell with charge would gain energy by discharging."""
    ax = ocv.axis_names.index("soc")
    falls = np.diff(ocv.values, axis=ax) < 0
    if falls.any():
        idx = np.unravel_index(int(np.argmax(falls)), falls.shape)
        k = idx[ax]
        socs = ocv.axes[ax][1]
        at = list(idx)
        v0 = ocv.values[tuple(at)]
        at[ax] = k + 1
        v1 = ocv.values[tuple(at)]
        raise ParameterError(f"ocv_v: must not decrease as soc rises; it falls from {v0:g} V "
                             f"at soc {socs[k]:g} to {v1:g} V at soc {socs[k + 1]:g}")


def _values(v: float | Table | None) -> np.ndarray:
    if isinstance(v, Table):
        return v.values
    return np.asarray(0.0 if v is None else v, dtype=float)


def params_from_set(pset: ParamSet) -> tuple[PackParams, BatteryInitial]:
    """The pack parameters and initial conditions of a battery parameter file."""
    where = f"{pset.path}: params" if pset.path else "params"
    if pset.kind != "battery":
        raise ParameterError(f"{pset.path or pset.name}: meta.kind is '{pset.kind}', "
                             "expected 'battery'")
    pack = PackParams.from_mapping(pset.params, where)
    iwhere = f"{pset.path}: initial" if pset.path else "initial"
    try:
        initial = tp.from_mapping(BatteryInitial, dict(pset.initial), iwhere)
    except ParameterError as exc:
        msg = str(exc)
        raise ParameterError(msg if msg.startswith(iwhere) else f"{iwhere}.{msg}") from None
    return pack, initial


def param_set(pack: PackParams | BatteryParams, name: str,
              initial: BatteryInitial | None = None,
              meta: Mapping[str, Any] | None = None) -> ParamSet:
    """A :class:`twin.params.ParamSet` (ready for :func:`twin.params.save`) of a battery.

    ``meta`` is the provenance (``source`` and any notes); its ``kind`` and ``name`` are
    replaced.
    """
    pack = pack if isinstance(pack, PackParams) else PackParams(pack)
    init = tp.to_mapping(initial or BatteryInitial())
    meta = {k: v for k, v in (meta or {}).items() if k not in ("kind", "name")}
    return ParamSet(kind="battery", name=name, params=pack.to_mapping(), initial=init,
                    meta=meta)


# ---------------------------------------------------------------------------------------------
# Packed parameters for the kernels: one row per distinct parameter set, ``row[i]`` per unit.
# Columns of the float array ``pf``:
_Q_AS, _ETA, _CC, _CJ, _KCJ, _KJA, _TAMB = range(7)  # _Q_AS: capacity in A s
_IDIS, _ICH, _PDIS, _PCH, _VMIN, _VMAX, _SOCMIN, _SOCMAX, _NS, _NP = range(7, 17)
_INV_Q, _GAMMA_Q, _INV_NP, _INV_CELLS = range(17, 21)  # 1/Q, gamma/Q, 1/Np, 1/(Ns Np)
# Parameters that may be tables (slots); their constant value sits at pf[:, _K0 + slot] and
# their table index (-1 for a constant) at pi[:, slot].
_SLOTS = ("ocv_v", "r0_ohm", "r1_ohm", "c1_f", "r2_ohm", "c2_f", "entropic_v_per_k",
          "hysteresis_v")
_S_OCV, _S_R0, _S_R1, _S_C1, _S_R2, _S_C2, _S_DUDT, _S_HYST = range(8)
_K0 = 21
_NPF = _K0 + len(_SLOTS)
_TAUC1, _TAUC2 = len(_SLOTS), len(_SLOTS) + 1  # pi columns: 1 where tau_j is a constant
_R0_BY_I = _TAUC2 + 1  # pi column: 1 where R0 is a table over current
_NPI = _R0_BY_I + 1
# per-dt factors ``disc`` (per row): thermal Ad, Bd (row-major), constant-tau RC factors
_AD, _BD, _DA1, _DG1, _DA2, _DG2 = 0, 4, 8, 9, 10, 11
_NDISC = 12
# table metadata: tmeta[j] = ndim, (coord, offset, length) per axis, values offset
_TM_VOFF = 1 + 3 * _MAXD

# state, input, held and output columns
(_X_SOC, _X_V1, _X_V2, _X_H, _X_TC, _X_TJ, _X_EOUT, _X_ELOSS, _X_ESTORED) = range(9)
_U_I, _U_P = 0, 1
(_W_I, _W_OCV, _W_M, _W_R0, _W_R1, _W_TAU1, _W_R2, _W_TAU2, _W_KAPPA, _W_SIGN, _W_ETA,
 _W_Q, _W_LIM, _W_A1, _W_G1, _W_A2, _W_G2, _W_B, _W_GB) = range(19)
_NW = len(HELD_NAMES)
_NY = len(OUTPUT_NAMES)


class _TablePacker:
    """Flattens tables into the arrays the kernels read; a shared table is stored once."""

    def __init__(self) -> None:
        self.meta: list[list[int]] = []
        self.grid: list[list[float]] = []
        self.chunks: list[np.ndarray] = []
        self.size = 0
        self.index: dict[int, int] = {}

    def _put(self, a: np.ndarray) -> int:
        off = self.size
        self.chunks.append(np.ascontiguousarray(a, dtype=float).reshape(-1))
        self.size += a.size
        return off

    def add(self, table: Table) -> int:
        if id(table) in self.index:
            return self.index[id(table)]
        meta = [len(table.axes)] + [0] * (3 * _MAXD) + [0]
        grid = [0.0] * (2 * _MAXD)  # first breakpoint and 1/step of uniform axes, else 0
        for d, (name, bp) in enumerate(table.axes):
            meta[1 + 3 * d: 4 + 3 * d] = [_COORDS[name], self._put(bp), len(bp)]
            if len(bp) > 1:
                h = np.diff(bp)
                if np.all(np.abs(h - h.mean()) <= 1e-9 * abs(h.mean())):
                    grid[2 * d: 2 * d + 2] = [bp[0], (len(bp) - 1) / (bp[-1] - bp[0])]
        meta[_TM_VOFF] = self._put(table.values)
        self.meta.append(meta)
        self.grid.append(grid)
        self.index[id(table)] = len(self.meta) - 1
        return self.index[id(table)]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        meta = np.array(self.meta, dtype=np.int64).reshape(-1, _TM_VOFF + 1)
        grid = np.array(self.grid, dtype=float).reshape(-1, 2 * _MAXD)
        data = np.concatenate(self.chunks) if self.chunks else np.zeros(1)
        return meta, grid, data


def _pack(packs: Sequence[PackParams]) -> tuple[np.ndarray, ...]:
    """``pf, pi, tmeta, tgrid, tdata``: one row of ``pf``, ``pi`` per parameter set."""
    pf = np.zeros((len(packs), _NPF))
    pi = np.full((len(packs), _NPI), -1, dtype=np.int64)
    tables = _TablePacker()
    inf = math.inf
    for i, pack in enumerate(packs):
        c = pack.cell
        q_as = c.capacity_ah * C_PER_AH
        pf[i, :_K0] = [
            q_as, c.coulombic_efficiency, c.thermal_mass_cell_j_per_k,
            c.thermal_mass_jig_j_per_k, c.k_cell_jig_w_per_k,
            c.k_jig_ambient_w_per_k, c.temp_ambient_c,
            inf if c.current_max_discharge_a is None else c.current_max_discharge_a,
            inf if c.current_max_charge_a is None else c.current_max_charge_a,
            inf if c.power_max_discharge_w is None else c.power_max_discharge_w,
            inf if c.power_max_charge_w is None else c.power_max_charge_w,
            0.0 if c.voltage_min_v is None else c.voltage_min_v,
            inf if c.voltage_max_v is None else c.voltage_max_v,
            c.soc_min, c.soc_max, pack.cells_series, pack.cells_parallel,
            1.0 / q_as, c.hysteresis_rate / q_as, 1.0 / pack.cells_parallel, 1.0 / pack.n_cells]
        for s, name in enumerate(_SLOTS):
            v = getattr(c, name)
            if isinstance(v, Table):
                pi[i, s] = tables.add(v)
            else:
                pf[i, _K0 + s] = v
        pi[i, _TAUC1] = int(not isinstance(c.r1_ohm, Table) and not isinstance(c.c1_f, Table))
        pi[i, _TAUC2] = int(not isinstance(c.r2_ohm, Table) and not isinstance(c.c2_f, Table))
        pi[i, _R0_BY_I] = int(isinstance(c.r0_ohm, Table)
                              and any(name == "current_a" for name, _ in c.r0_ohm.axes))
    return (pf, pi) + tables.arrays()


#: rows of the per-unit parameters after ``pf``'s columns: 1.0 where R0 is a table over
#: current, where tau1 and tau2 are constants
_BY_I, _TAUC1_U, _TAUC2_U = _NPF, _NPF + 1, _NPF + 2


def _per_unit(pf: np.ndarray, pi: np.ndarray, row: np.ndarray) -> np.ndarray:
    """``pf``'s columns and ``pi``'s flags for each unit, a row each ``(_NPF + 3, n)``: the
    kernels' branch-free passes read them as vectors (a gather through ``row`` would keep
    a loop scalar)."""
    flags = pi[row][:, [_R0_BY_I, _TAUC1, _TAUC2]] == 1
    return np.ascontiguousarray(np.vstack((pf[row].T, flags.T)), dtype=float)


# ---------------------------------------------------------------------------------------------
# Kernels (numba): passes over every unit (see :func:`_hold_into`).  Helpers that take arrays
# but allocate nothing are compiled without reference counting: numba's atomic increments on
# every array argument would otherwise cost more than the arithmetic (50 ns per table lookup).
_helper = numba.njit(cache=True, _nrt=False, error_model="numpy")
# Small and per-unit functions are inlined (numba IR) into ``_helper`` callers: a call with
# a dozen array arguments costs as much as the unit's arithmetic.
_unit = numba.njit(cache=True, _nrt=False, inline="always", error_model="numpy")


@_unit
def _axis(x, off, n, x0, invh, data):
    """Cell index and fraction of ``x`` on an axis; edge values held outside (and for NaN)."""
    if n == 1:
        return 0, 0.0
    if invh > 0.0:  # uniform breakpoints
        s = (x - x0) * invh
        if not s > 0.0:
            return 0, 0.0
        if s >= n - 1:
            return n - 2, 1.0
        i = int(s)
        i = min(i, n - 2)
        return i, s - i
    if not x > data[off]:
        return 0, 0.0
    if x >= data[off + n - 1]:
        return n - 2, 1.0
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if data[off + mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo, (x - data[off + lo]) / (data[off + lo + 1] - data[off + lo])


@_unit
def _lookup1(j, tmeta, tgrid, tdata, coords):
    """Linear interpolation in packed 1-D table ``j`` at ``coords`` (temp, soc, I, ocv);
    inlined into its callers: a call costs as much as the lookup."""
    i0, f0 = _axis(coords[tmeta[j, 1]], tmeta[j, 2], tmeta[j, 3], tgrid[j, 0], tgrid[j, 1],
                   tdata)
    v = tmeta[j, _TM_VOFF] + i0
    return tdata[v] * (1.0 - f0) + tdata[v + 1] * f0 if tmeta[j, 3] > 1 else tdata[v]


@_helper
def _lookup(j, tmeta, tgrid, tdata, coords):
    """Multilinear interpolation in packed table ``j`` of two or three axes at ``coords``
    (1-D tables: :func:`_lookup1`)."""
    nd = tmeta[j, 0]
    v = tmeta[j, _TM_VOFF]
    n0 = tmeta[j, 3]
    i0, f0 = _axis(coords[tmeta[j, 1]], tmeta[j, 2], n0, tgrid[j, 0], tgrid[j, 1], tdata)
    d0 = 1 if n0 > 1 else 0
    n1 = tmeta[j, 6]
    i1, f1 = _axis(coords[tmeta[j, 4]], tmeta[j, 5], n1, tgrid[j, 2], tgrid[j, 3], tdata)
    d1 = 1 if n1 > 1 else 0
    if nd == 2:
        b = v + i0 * n1 + i1
        s0 = n1 * d0
        return ((tdata[b] * (1.0 - f1) + tdata[b + d1] * f1) * (1.0 - f0)
                + (tdata[b + s0] * (1.0 - f1) + tdata[b + s0 + d1] * f1) * f0)
    n2 = tmeta[j, 9]
    i2, f2 = _axis(coords[tmeta[j, 7]], tmeta[j, 8], n2, tgrid[j, 4], tgrid[j, 5], tdata)
    d2 = 1 if n2 > 1 else 0
    s1 = n2 * d1
    s0 = n1 * n2 * d0
    b = v + (i0 * n1 + i1) * n2 + i2
    lo = ((tdata[b] * (1.0 - f2) + tdata[b + d2] * f2) * (1.0 - f1)
          + (tdata[b + s1] * (1.0 - f2) + tdata[b + s1 + d2] * f2) * f1)
    b += s0
    hi = ((tdata[b] * (1.0 - f2) + tdata[b + d2] * f2) * (1.0 - f1)
          + (tdata[b + s1] * (1.0 - f2) + tdata[b + s1 + d2] * f2) * f1)
    return lo * (1.0 - f0) + hi * f0


@_unit
def _param(r, slot, pf, pi, tmeta, tgrid, tdata, coords):
    """Parameter ``slot`` of row ``r``: its constant, or its table at ``coords``."""
    j = pi[r, slot]
    if j < 0:
        return pf[r, _K0 + slot]
    if tmeta[j, 0] == 1:
        return _lookup1(j, tmeta, tgrid, tdata, coords)
    return _lookup(j, tmeta, tgrid, tdata, coords)


@numba.njit(cache=True, error_model="numpy")
def _power_current(p, e, r0):
    """Current drawing power ``p`` from ``E - R0 I``: the root nearer zero of the quadratic.

    Returns the current and whether ``p`` was beyond the maximum power ``E^2 / (4 R0)`` (then
    the current of maximum power).
    """
    if e <= 0.0:
        return 0.0, True
    disc = e * e - 4.0 * r0 * p
    if disc < 0.0:
        return e / (2.0 * r0), True
    return 2.0 * p / (e + math.sqrt(disc)), False


@numba.njit(cache=True, error_model="numpy")
def _voltage_bound(room, r):
    """Largest current magnitude, >= 0, that keeps ``room - r |I|`` non-negative."""
    if room <= 0.0:
        return 0.0
    return room / r if r > 0.0 else math.inf


#: below this ``|rate dt|``, :func:`_decay` takes the series of ``expm1``
_SERIES_Z = 1e-3


@numba.njit(cache=True, error_model="numpy")
def _decay(rate, dt):
    """``(exp(-rate dt), 1 - exp(-rate dt))`` without cancellation."""
    if rate == 0.0:
        return 1.0, 0.0
    z = rate * dt
    if abs(z) < _SERIES_Z:  # the series of expm1, to a relative 1e-14 (z^4 / 120)
        g = z * (1.0 - z * (0.5 - z * (1.0 / 6.0 - z * (1.0 / 24.0))))
    else:
        g = -math.expm1(-z)
    return 1.0 - g, g


# Rows of the hold's scratch after the held inputs in ``w``: what its passes hand each other.
(_T_E, _T_CMD, _T_R0A, _T_C1, _T_C2, _T_DUDT, _T_ZERO, _T_BEYOND, _T_CLIM,
 _T_RELIM, _T_CNT, _T_TC, _T_SOC) = range(_NW, _NW + 13)
_NWS = _NW + 13
#: up to this many parameter rows, a 1-D table is looked up a row at a time over every unit
#: (masked, branch-free); beyond, unit by unit (:func:`_lookup_pass`)
_FEW_ROWS = 4


@_unit
def _root(p, e, r0):
    """:func:`_power_current` without branches, for loops that run as SIMD vectors:
    ``(current, 1.0 where p is beyond the maximum power else 0.0)``."""
    disc = e * e - 4.0 * r0 * p
    cur = 2.0 * p / (e + math.sqrt(max(disc, 0.0)))
    cur = e / (2.0 * r0) if disc < 0.0 else cur
    return (0.0 if e <= 0.0 else cur), (1.0 if e <= 0.0 or disc < 0.0 else 0.0)


@_unit
def _constant(pi, slot):
    """Whether parameter ``slot`` is a constant in every row."""
    for r in range(pi.shape[0]):
        if pi[r, slot] >= 0:
            return False
    return True


@_helper
def _lookup1_rows(j, r, xs, row, tmeta, tgrid, tdata, cnt, out):
    """``out[i]``: 1-D table ``j`` at ``xs[i]`` for the units of parameter row ``r``, the
    others left as they are; what :func:`_lookup1` gives, without branches (the cell of a
    non-uniform axis found by counting the breakpoints at or below, as a loop over
    breakpoints outside one over units), so that the passes run as SIMD vectors."""
    n = out.shape[0]
    nb, off, voff = tmeta[j, 3], tmeta[j, 2], tmeta[j, _TM_VOFF]
    if nb == 1:
        for i in range(n):
            out[i] = tdata[voff] if row[i] == r else out[i]
        return
    x0, invh = tgrid[j, 0], tgrid[j, 1]
    if invh > 0.0:  # uniform breakpoints
        top = nb - 1.0
        for i in range(n):
            s = (xs[i] - x0) * invh
            sc = min(s if s > 0.0 else 0.0, top)
            k = min(int(sc), nb - 2)
            f = sc - k
            v = tdata[voff + k] * (1.0 - f) + tdata[voff + k + 1] * f
            out[i] = v if row[i] == r else out[i]
        return
    for i in range(n):
        cnt[i] = 0.0
    for m in range(1, nb - 1):
        bm = tdata[off + m]
        for i in range(n):
            cnt[i] += 1.0 if bm <= xs[i] else 0.0
    first, last = tdata[off], tdata[off + nb - 1]
    for i in range(n):
        x = xs[i]
        k = int(cnt[i])
        f = (x - tdata[off + k]) / (tdata[off + k + 1] - tdata[off + k])
        f = 1.0 if x >= last else f
        f = f if x > first else 0.0
        v = tdata[voff + k] * (1.0 - f) + tdata[voff + k + 1] * f
        out[i] = v if row[i] == r else out[i]


@_helper
def _lookup_pass(slot, row, pf, pi, tmeta, tgrid, tdata, pu, tc, soc, cur, ocv, cnt, out):
    """``out[i]``: parameter ``slot`` of unit ``i`` at its coordinates (temperature, SOC,
    current, OCV); ``cnt`` is scratch."""
    n = out.shape[0]
    rows = pi.shape[0]
    if _constant(pi, slot):
        v = pu[_K0 + slot]
        for i in range(n):
            out[i] = v[i]
        return
    one_axis = rows <= _FEW_ROWS
    for r in range(rows):
        one_axis = one_axis and (pi[r, slot] < 0 or tmeta[pi[r, slot], 0] == 1)
    if one_axis:
        for r in range(rows):
            j = pi[r, slot]
            if j < 0:
                v = pf[r, _K0 + slot]
                for i in range(n):
                    out[i] = v if row[i] == r else out[i]
            else:
                c = tmeta[j, 1]
                xs = tc if c == 0 else (soc if c == 1 else (cur if c == 2 else ocv))
                _lookup1_rows(j, r, xs, row, tmeta, tgrid, tdata, cnt, out)
        return
    for i in range(n):
        out[i] = _param(row[i], slot, pf, pi, tmeta, tgrid, tdata,
                        (tc[i], soc[i], cur[i], ocv[i]))


@_helper
def _hold_into(x, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, dt, w):
    """Held inputs of every unit into the rows of ``w`` (``(_NWS, n)``: the held inputs,
    then scratch), a pass at a time.

    The passes over every unit are branch-free, so that over state stored column by column
    (the microgrid's arena) they run as SIMD vectors; ``pu`` holds each unit's parameters
    (:func:`_per_unit`: a gather through ``row`` would keep a loop scalar).  Table lookups,
    exponentials and what only a unit at a limit needs (divisions, square roots) run unit
    by unit, behind a branch.  Flags are summed (each is raised at most once).
    """
    n = x.shape[0]
    soc, v1, v2, h, tc = x[:, _X_SOC], x[:, _X_V1], x[:, _X_V2], x[:, _X_H], x[:, _X_TC]
    cur, ocv, m, r0, r1, r2 = w[_W_I], w[_W_OCV], w[_W_M], w[_W_R0], w[_W_R1], w[_W_R2]
    tau1, tau2, kappa, sgn, eta_c = w[_W_TAU1], w[_W_TAU2], w[_W_KAPPA], w[_W_SIGN], w[_W_ETA]
    flags, a1, g1, a2, g2, b, gb = (w[_W_LIM], w[_W_A1], w[_W_G1], w[_W_A2], w[_W_G2],
                                    w[_W_B], w[_W_GB])
    e, cmd, r0a, c1, c2, dudt = w[_T_E], w[_T_CMD], w[_T_R0A], w[_T_C1], w[_T_C2], w[_T_DUDT]
    zero, beyond, clim, relim, cnt = (w[_T_ZERO], w[_T_BEYOND], w[_T_CLIM], w[_T_RELIM],
                                      w[_T_CNT])
    by_i = pu[_BY_I]
    # the tables' coordinates, laid out alike (a table's pass picks one of them)
    tc_, soc_ = w[_T_TC], w[_T_SOC]
    for i in range(n):
        zero[i] = 0.0
        tc_[i] = tc[i]
        soc_[i] = soc[i]
    # the command per cell; OCV, hysteresis and R0 at zero current
    for i in range(n):
        c = u[i, _U_P] * pu[_INV_CELLS, i] if mode[i] == 1 else u[i, _U_I] * pu[_INV_NP, i]
        ok = math.isfinite(c)
        cmd[i] = c if ok else 0.0
        flags[i] = 0.0 if ok else LIMIT_INVALID
    _lookup_pass(_S_OCV, row, pf, pi, tmeta, tgrid, tdata, pu, tc_, soc_, zero, zero, cnt, ocv)
    _lookup_pass(_S_HYST, row, pf, pi, tmeta, tgrid, tdata, pu, tc_, soc_, zero, zero, cnt, m)
    _lookup_pass(_S_R0, row, pf, pi, tmeta, tgrid, tdata, pu, tc_, soc_, zero, zero, cnt, r0a)
    # the current: commanded, or the root of P = I (E - R0 I), within the current limits
    for i in range(n):
        pm = mode[i] == 1
        ei = ocv[i] + m[i] * h[i] - v1[i] - v2[i]
        e[i] = ei
        pdis, pch, idis, ich = pu[_PDIS, i], pu[_PCH, i], pu[_IDIS, i], pu[_ICH, i]
        c = cmd[i]
        over = pm and (c > pdis or c < -pch)
        c = min(max(c, -pch), pdis) if pm else c
        cmd[i] = c
        cp, bey = _root(c, ei, r0a[i])
        ci = cp if pm else c
        beyond[i] = bey
        lim = ci > idis or ci < -ich
        cur[i] = min(max(ci, -ich), idis)
        clim[i] = 1.0 if lim else 0.0
        flags[i] += (LIMIT_POWER if over else 0.0) + (LIMIT_CURRENT if lim else 0.0)
    for i in range(n):  # power mode with R0 a table over current: two fixed-point steps
        if mode[i] == 1 and by_i[i] == 1.0:
            r = row[i]
            c, ei = cmd[i], e[i]
            idis, ich = pu[_IDIS, i], pu[_ICH, i]
            ci = c / ei if ei > 0.0 else 0.0
            for _ in range(2):
                ci = min(max(ci, -ich), idis)
                r0i = _param(r, _S_R0, pf, pi, tmeta, tgrid, tdata, (tc[i], soc[i], ci, ocv[i]))
                ci, _ = _power_current(c, ei, r0i)
            lim = ci > idis or ci < -ich
            cur[i] = min(max(ci, -ich), idis)
            flags[i] += LIMIT_CURRENT * ((1.0 if lim else 0.0) - clim[i])
            clim[i] = 1.0 if lim else 0.0
    # parameters at the current (R0 where the power's root did not take it at zero)
    if _constant(pi, _S_R0):
        for i in range(n):
            r0[i] = r0a[i]
    else:
        for i in range(n):
            r0[i] = (r0a[i] if mode[i] == 1 and by_i[i] != 1.0 else
                     _param(row[i], _S_R0, pf, pi, tmeta, tgrid, tdata,
                            (tc[i], soc[i], cur[i], ocv[i])))
    _lookup_pass(_S_R1, row, pf, pi, tmeta, tgrid, tdata, pu, tc_, soc_, cur, ocv, cnt, r1)
    _lookup_pass(_S_R2, row, pf, pi, tmeta, tgrid, tdata, pu, tc_, soc_, cur, ocv, cnt, r2)
    _lookup_pass(_S_C1, row, pf, pi, tmeta, tgrid, tdata, pu, tc_, soc_, cur, ocv, cnt, c1)
    _lookup_pass(_S_C2, row, pf, pi, tmeta, tgrid, tdata, pu, tc_, soc_, cur, ocv, cnt, c2)
    # power limits with R0 at the current: in power mode, a power beyond the maximum unless
    # the current limit bound (with R0 over current, the root again); in current mode,
    # P(I) = I (E - R0 I) rises to its maximum, then falls: the limit is the lower root
    for i in range(n):
        pm = mode[i] == 1
        if pm and clim[i] == 0.0 and by_i[i] == 1.0:
            cur[i], bey = _power_current(cmd[i], e[i], r0[i])
            beyond[i] = 1.0 if bey else 0.0
        elif not pm and cur[i] > 0.0 and pu[_PDIS, i] < math.inf:
            i_lim, bey = _power_current(pu[_PDIS, i], e[i], r0[i])
            if not bey and cur[i] > i_lim:
                cur[i] = i_lim
                flags[i] += LIMIT_POWER
        elif not pm and cur[i] < 0.0 and pu[_PCH, i] < math.inf:
            i_lim, _ = _power_current(-pu[_PCH, i], e[i], r0[i])
            if cur[i] < i_lim:
                cur[i] = i_lim
                flags[i] += LIMIT_POWER
    # the infeasible power's flag; RC time constants; sign, efficiency and hysteresis rate
    for i in range(n):
        ci = cur[i]
        flags[i] += (LIMIT_POWER_INFEASIBLE if mode[i] == 1 and clim[i] == 0.0
                     and beyond[i] != 0.0 else 0.0)
        tau1[i] = r1[i] * c1[i]
        tau2[i] = r2[i] * c2[i] if r2[i] > 0.0 else 0.0
        sgn[i] = 1.0 if ci > 0.0 else (-1.0 if ci < 0.0 else 0.0)
        eta_c[i] = pu[_ETA, i] if ci < 0.0 else 1.0
        kappa[i] = pu[_GAMMA_Q, i] * eta_c[i] * abs(ci)
    # RC factors over the step (precomputed per dt when tau is a constant), hysteresis
    # decay (:func:`_decay`: its series for a small rate, else unit by unit)
    for i in range(n):
        a1[i], g1[i], a2[i], g2[i] = disc[_DA1, i], disc[_DG1, i], disc[_DA2, i], disc[_DG2, i]
        z = kappa[i] * dt
        g = z * (1.0 - z * (0.5 - z * (1.0 / 6.0 - z * (1.0 / 24.0))))
        b[i], gb[i] = 1.0 - g, g
    for i in range(n):
        if pu[_TAUC1_U, i] != 1.0:
            a1[i], g1[i] = _decay(1.0 / tau1[i], dt) if tau1[i] > 0.0 else (0.0, 1.0)
        if pu[_TAUC2_U, i] != 1.0:
            a2[i], g2[i] = _decay(1.0 / tau2[i], dt) if tau2[i] > 0.0 else (0.0, 1.0)
        if not abs(kappa[i] * dt) < _SERIES_Z:
            b[i], gb[i] = _decay(kappa[i], dt)
    # Voltage limits at both ends of the step (V is monotonic within it).  The hysteresis
    # state at the end is taken at the larger, unreduced current: a smaller current moves it
    # less, so the bound stays safe.  Without a minimum voltage, the minimum is 0 V.
    for i in range(n):
        ci, si, ri, ei = cur[i], sgn[i], r0[i], e[i]
        lim = pu[_VMIN, i] if ci > 0.0 else pu[_VMAX, i]
        e_end = ocv[i] + m[i] * (b[i] * h[i] - gb[i] * si) - a1[i] * v1[i] - a2[i] * v2[i]
        g_end = ri + g1[i] * r1[i] + g2[i] * r2[i]
        v_lim = (ci != 0.0 and lim < math.inf
                 and (si * (ei - ri * ci - lim) < 0.0 or si * (e_end - g_end * ci - lim) < 0.0))
        relim[i] = 1.0 if v_lim else 0.0
        flags[i] += (LIMIT_VOLTAGE_MIN if si > 0.0 else LIMIT_VOLTAGE_MAX) if v_lim else 0.0
    for i in range(n):
        if relim[i] != 0.0:
            si, ri, ei = sgn[i], r0[i], e[i]
            lim = pu[_VMIN, i] if cur[i] > 0.0 else pu[_VMAX, i]
            e_end = ocv[i] + m[i] * (b[i] * h[i] - gb[i] * si) - a1[i] * v1[i] - a2[i] * v2[i]
            g_end = ri + g1[i] * r1[i] + g2[i] * r2[i]
            cur[i] = si * min(_voltage_bound(si * (ei - lim), ri),
                              _voltage_bound(si * (e_end - lim), g_end))
    # SOC limits: the step may not carry the SOC out of its window
    for i in range(n):
        ci = cur[i]
        eta, q = pu[_ETA, i], pu[_Q_AS, i]
        avail_d = (soc[i] - pu[_SOCMIN, i]) * q
        avail_c = (pu[_SOCMAX, i] - soc[i]) * q
        s_min = ci > 0.0 and ci * dt > avail_d
        s_max = ci < 0.0 and -ci * eta * dt > avail_c
        ci = max(avail_d / dt, 0.0) if s_min else (-max(avail_c / (eta * dt), 0.0) if s_max
                                                     else ci)
        flags[i] += (LIMIT_SOC_MIN if s_min else 0.0) + (LIMIT_SOC_MAX if s_max else 0.0)
        again = relim[i] != 0.0 or s_min or s_max
        relim[i] = 1.0 if again else 0.0
        cur[i] = ci
        sgn[i] = (1.0 if ci > 0.0 else (-1.0 if ci < 0.0 else 0.0)) if again else sgn[i]
        eta_c[i] = (eta if ci < 0.0 else 1.0) if again else eta_c[i]
        kappa[i] = pu[_GAMMA_Q, i] * eta_c[i] * abs(ci) if again else kappa[i]
    for i in range(n):  # the hysteresis decay at a reduced current
        if relim[i] != 0.0:
            b[i], gb[i] = _decay(kappa[i], dt)
    _lookup_pass(_S_DUDT, row, pf, pi, tmeta, tgrid, tdata, pu, tc_, soc_, cur, ocv, cnt, dudt)
    # the step-average heat with the final current, and the coulombic loss
    for i in range(n):
        ci, si, ki = cur[i], sgn[i], kappa[i]
        iv1 = ci * r1[i] * dt + (v1[i] - ci * r1[i]) * tau1[i] * g1[i]
        iv2 = ci * r2[i] * dt + (v2[i] - ci * r2[i]) * tau2[i] * g2[i]
        ih = (-si * dt + (h[i] + si) * gb[i] / ki) if ki > 0.0 else h[i] * dt
        coul = ocv[i] * (1.0 - pu[_ETA, i]) * -ci if ci < 0.0 else 0.0
        q_irr = ci * ci * r0[i] + ci * (iv1 + iv2 - m[i] * ih) / dt + coul
        w[_W_Q, i] = q_irr - ci * (tc[i] + KELVIN_OFFSET) * dudt[i]


@_unit
def _output_unit(i, x, w, k, pu, y):
    """Outputs of unit ``i`` with held inputs ``w[k]`` into ``y[i]``."""
    cur = w[_W_I, k]
    v_cell = (w[_W_OCV, k] + w[_W_M, k] * x[i, _X_H] - w[_W_R0, k] * cur
              - x[i, _X_V1] - x[i, _X_V2])
    ns = pu[_NS, i]
    npar = pu[_NP, i]
    cells = ns * npar
    y[i, 0] = ns * v_cell
    y[i, 1] = npar * cur
    y[i, 2] = cells * v_cell * cur
    y[i, 3] = x[i, _X_SOC]
    y[i, 4] = x[i, _X_TC]
    y[i, 5] = x[i, _X_TJ]
    y[i, 6] = ns * w[_W_OCV, k]
    y[i, 7] = cells * w[_W_Q, k]
    y[i, 8] = w[_W_LIM, k]
    y[i, 9] = cells * x[i, _X_EOUT]
    y[i, 10] = cells * x[i, _X_ELOSS]
    y[i, 11] = cells * x[i, _X_ESTORED]


@_unit
def _step_unit(i, x, w, k, pu, disc, dt):
    """Exact step of unit ``i`` with held inputs ``w[:, k]``, in place: ``x[i]`` is read
    before it is written."""
    cur = w[_W_I, k]
    ocv = w[_W_OCV, k]
    m = w[_W_M, k]
    r0 = w[_W_R0, k]
    r1 = w[_W_R1, k]
    r2 = w[_W_R2, k]
    eta_c = w[_W_ETA, k]
    sgn = w[_W_SIGN, k]
    kappa = w[_W_KAPPA, k]
    g1 = w[_W_G1, k]
    g2 = w[_W_G2, k]
    gb = w[_W_GB, k]
    v1 = x[i, _X_V1]
    v2 = x[i, _X_V2]
    h = x[i, _X_H]
    soc = x[i, _X_SOC] - eta_c * cur * dt * pu[_INV_Q, i]
    x[i, _X_SOC] = min(max(soc, 0.0), 1.0)
    x[i, _X_V1] = w[_W_A1, k] * v1 + g1 * cur * r1
    x[i, _X_V2] = w[_W_A2, k] * v2 + g2 * cur * r2
    x[i, _X_H] = w[_W_B, k] * h - gb * sgn
    # integrals over the step of v1, v2 and h (exponentials with the current held)
    iv1 = cur * r1 * dt + (v1 - cur * r1) * w[_W_TAU1, k] * g1
    iv2 = cur * r2 * dt + (v2 - cur * r2) * w[_W_TAU2, k] * g2
    ih = (-sgn * dt + (h + sgn) * gb / kappa) if kappa > 0.0 else h * dt
    tc = x[i, _X_TC]
    tj = x[i, _X_TJ]
    q = w[_W_Q, k]
    ta = pu[_TAMB, i]
    x[i, _X_TC] = disc[0, i] * tc + disc[1, i] * tj + disc[4, i] * q + disc[5, i] * ta
    x[i, _X_TJ] = disc[2, i] * tc + disc[3, i] * tj + disc[6, i] * q + disc[7, i] * ta
    coul = ocv * (1.0 - eta_c) * -cur if cur < 0.0 else 0.0
    x[i, _X_EOUT] = x[i, _X_EOUT] + cur * ((ocv - r0 * cur) * dt + m * ih - iv1 - iv2)
    x[i, _X_ELOSS] = (x[i, _X_ELOSS] + cur * cur * r0 * dt + cur * (iv1 + iv2 - m * ih)
                       + coul * dt)
    x[i, _X_ESTORED] = x[i, _X_ESTORED] - ocv * eta_c * cur * dt


@_helper
def _outputs_into(x, w, pu, y):
    for i in range(x.shape[0]):
        _output_unit(i, x, w, i, pu, y)


@_helper
def _step_into(x, w, pu, disc, dt):
    for i in range(x.shape[0]):
        _step_unit(i, x, w, i, pu, disc, dt)


@_helper
def _advance_into(x, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, dt, w, y):
    """Hold, outputs and step (``x`` in place), a pass over the units each (``w``: every
    unit's held inputs): the compiled passes run faster than one pass doing all three per
    unit, and in place a step's loads and stores of one unit cannot alias another's."""
    _hold_into(x, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, dt, w)
    _outputs_into(x, w, pu, y)
    _step_into(x, w, pu, disc, dt)


@numba.njit(cache=True, error_model="numpy")
def _hold_all(x, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, dt):
    w = np.empty((_NWS, x.shape[0]))
    _hold_into(x, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, dt, w)
    return w


@numba.njit(cache=True, error_model="numpy")
def _outputs_all(x, w, pu):
    y = np.empty((x.shape[0], _NY))
    _outputs_into(x, w, pu, y)
    return y


@numba.njit(cache=True, error_model="numpy")
def _step_all(x, w, pu, disc, dt):
    xn = x.copy()
    _step_into(xn, w, pu, disc, dt)
    return xn


@numba.njit(cache=True, error_model="numpy")
def _advance_all(x, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, dt):
    w = np.empty((_NWS, x.shape[0]))
    y = np.empty((x.shape[0], _NY))
    xn = x.copy()
    _advance_into(xn, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, dt, w, y)
    return xn, y


@numba.njit(cache=True, error_model="numpy")
def advance_inplace(t, x, u, dt, y, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc):
    """:meth:`Battery.advance` into the caller's arrays, for compiled callers (the
    microgrid's fused step): ``x`` is stepped in place (each unit's state is read before it
    is written), ``y`` receives the outputs at ``t``; the arrays after ``y`` are
    :meth:`Battery.kernel_args` (``t`` is there for the signature every asset shares)."""
    w = np.empty((_NWS, x.shape[0]))
    _advance_into(x, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, dt, w, y)


@numba.njit(cache=True, error_model="numpy")
def _run_all(x, u, row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc, kdt, dts, temp):
    steps = u.shape[0]
    y = np.empty((steps, x.shape[0], _NY))
    w = np.empty((_NWS, x.shape[0]))
    xa = x.copy()
    for k in range(steps):
        if temp.shape[0] > 0:
            xa[:, _X_TC] = temp[k]
        _advance_into(xa, u[k], row, mode, pf, pi, tmeta, tgrid, tdata, pu, disc[kdt[k]], dts[k],
                      w, y[k])
    return xa, y


@numba.njit(cache=True, error_model="numpy")
def _rhs_all(x, w, row, pf):
    dx = np.empty_like(x)
    for i in range(x.shape[0]):
        r = row[i]
        cur = w[_W_I, i]
        eta_c = w[_W_ETA, i]
        ocv = w[_W_OCV, i]
        m = w[_W_M, i]
        r0 = w[_W_R0, i]
        v1 = x[i, _X_V1]
        v2 = x[i, _X_V2]
        h = x[i, _X_H]
        tau1 = w[_W_TAU1, i]
        tau2 = w[_W_TAU2, i]
        dx[i, _X_SOC] = -eta_c * cur * pf[r, _INV_Q]
        dx[i, _X_V1] = (w[_W_R1, i] * cur - v1) / tau1 if tau1 > 0.0 else 0.0
        dx[i, _X_V2] = (w[_W_R2, i] * cur - v2) / tau2 if tau2 > 0.0 else 0.0
        dx[i, _X_H] = -w[_W_KAPPA, i] * (h + w[_W_SIGN, i])
        flow = pf[r, _KCJ] * (x[i, _X_TC] - x[i, _X_TJ])
        dx[i, _X_TC] = (w[_W_Q, i] - flow) / pf[r, _CC]
        dx[i, _X_TJ] = (flow - pf[r, _KJA] * (x[i, _X_TJ] - pf[r, _TAMB])) / pf[r, _CJ]
        coul = ocv * (1.0 - eta_c) * -cur if cur < 0.0 else 0.0
        dx[i, _X_EOUT] = cur * (ocv + m * h - r0 * cur - v1 - v2)
        dx[i, _X_ELOSS] = cur * cur * r0 + cur * (v1 + v2 - m * h) + coul
        dx[i, _X_ESTORED] = -ocv * eta_c * cur
    return dx


# ---------------------------------------------------------------------------------------------

def _discretise(pf: np.ndarray, dts: np.ndarray) -> np.ndarray:
    """Per-dt factors ``(len(dts), rows, _NDISC)``: thermal Ad, Bd and constant-tau RC decay."""
    if not np.all(dts > 0) or not np.all(np.isfinite(dts)):
        raise TwinError(f"battery: time steps must be positive and finite, got {dts.min()} s")
    rows = len(pf)
    d = np.zeros((len(dts), rows, _NDISC))
    for k, dt in enumerate(dts):
        ad, bd = two_node_step(pf[:, _CC], pf[:, _CJ], pf[:, _KCJ], pf[:, _KJA], float(dt))
        d[k, :, _AD:_AD + 4] = ad.reshape(rows, 4)
        d[k, :, _BD:_BD + 4] = bd.reshape(rows, 4)
    for rs, cs, da in ((_S_R1, _S_C1, _DA1), (_S_R2, _S_C2, _DA2)):
        tau = pf[:, _K0 + rs] * pf[:, _K0 + cs]
        safe = np.where(tau > 0, tau, 1.0)
        with np.errstate(over="ignore"):  # tau of a denormal resistance: g = 1
            g = np.where(tau > 0, -np.expm1(-dts[:, None] / safe), 1.0)
        d[..., da] = 1.0 - g
        d[..., da + 1] = g
    return d


def _warn_soc_outside_window(packs: Sequence[PackParams],
                             initial: Sequence[BatteryInitial]) -> None:
    """A :class:`BatteryWarning` for the first unit whose initial SOC lies outside its SOC
    window.

    A warning, not an error: the model is defined there (the SOC limits hold back only
    the current that would carry the SOC further out, so a battery below ``soc_min``
    charges and does not discharge until it is back inside), and starting a depleted
    battery to watch it recharge is a fair run.  But more often it is a slip (a window
    narrowed, the initial SOC left as it was) that silently changes the whole run.
    """
    for i, (pack, ini) in enumerate(zip(packs, initial)):
        c = pack.cell
        unit = f" unit {i}" if len(packs) > 1 else ""
        if ini.soc < c.soc_min:
            warnings.warn(f"battery{unit}: initial soc {ini.soc:g} is below soc_min "
                          f"{c.soc_min:g}; it will not discharge until charged above it",
                          BatteryWarning, stacklevel=3)
            return
        if ini.soc > c.soc_max:
            warnings.warn(f"battery{unit}: initial soc {ini.soc:g} is above soc_max "
                          f"{c.soc_max:g}; it will not charge until discharged below it",
                          BatteryWarning, stacklevel=3)
            return


class Battery(Asset):
    """``n`` batteries (cells or packs), each with its own parameters and operating mode.

    Parameters
    ----------
    params
        One :class:`PackParams` or :class:`BatteryParams` for all units, or one per unit.
    n
        Number of units when ``params`` is a single set.
    mode
        ``"current"`` (input ``current_a``) or ``"power"`` (input ``power_w``), for all
        units or one per unit; the other input is ignored.
    initial
        Initial conditions, for all units or one per unit.

    Inputs are the pack's commanded current [A] or terminal power [W], positive on
    discharge.  Outputs are pack quantities (see :data:`OUTPUT_NAMES`); states are per cell.
    """

    kind = "battery"
    state_names = STATE_NAMES
    input_names = INPUT_NAMES
    held_names = HELD_NAMES
    output_names = OUTPUT_NAMES

    def __init__(self, params: PackParams | BatteryParams | Sequence[PackParams | BatteryParams],
                 n: int | None = None, mode: str | Sequence[str] = "current",
                 initial: BatteryInitial | Sequence[BatteryInitial] | None = None) -> None:
        units = list(params) if isinstance(params, (list, tuple)) else [params] * (n or 1)
        if n is not None and len(units) != n:
            raise TwinError(f"battery: {len(units)} parameter sets for n={n} units")
        self.params = tuple(p if isinstance(p, PackParams) else PackParams(p) for p in units)
        self.n = len(self.params)
        # one packed row per distinct parameter set: 1,000 identical units share one row
        rows: dict[int, int] = {}
        self._row = np.array([rows.setdefault(id(p), len(rows)) for p in units],
                             dtype=np.int64)
        distinct = {r: p for p, r in zip(self.params, self._row)}
        self._mode = np.zeros(self.n, dtype=np.int64)
        inits = initial if isinstance(initial, (list, tuple)) else [initial] * self.n
        if len(inits) != self.n:
            raise TwinError(f"battery: {len(inits)} initial conditions for {self.n} units")
        self.initial = tuple(BatteryInitial() if x is None else x for x in inits)
        _warn_soc_outside_window(self.params, self.initial)
        self._pf, self._pi, self._tmeta, self._tgrid, self._tdata = _pack(
            [distinct[r] for r in range(len(distinct))])
        self._pu = _per_unit(self._pf, self._pi, self._row)
        self._discs: dict[float, np.ndarray] = {}
        self.set_mode(mode)

    def set_mode(self, mode: str | Sequence[str]) -> None:
        """Select current or power control, for all units or one mode per unit."""
        modes = [mode] * self.n if isinstance(mode, str) else list(mode)
        if len(modes) != self.n:
            raise TwinError(f"battery: {len(modes)} modes for {self.n} units")
        for m in modes:
            if m not in MODES:
                raise TwinError(f"battery: unknown mode '{m}'; choose one of {MODES}")
        self._mode[:] = [MODES.index(m) for m in modes]

    def initial_state(self) -> np.ndarray:
        x = np.zeros((self.n, len(STATE_NAMES)))
        for i, (p, ini) in enumerate(zip(self.params, self.initial)):
            t_amb = p.cell.temp_ambient_c
            x[i, _X_SOC] = ini.soc
            x[i, _X_V1] = ini.v_rc1_v
            x[i, _X_V2] = ini.v_rc2_v
            x[i, _X_H] = ini.hysteresis
            x[i, _X_TC] = t_amb if ini.temp_cell_c is None else ini.temp_cell_c
            x[i, _X_TJ] = t_amb if ini.temp_jig_c is None else ini.temp_jig_c
        return x

    def _disc(self, dt: float) -> np.ndarray:
        """Factors that depend on ``dt`` only, per unit: thermal step, RC decay."""
        d = self._discs.get(dt)
        if d is None:
            if len(self._discs) >= 16:
                self._discs.clear()
            d = self._discs[dt] = self._per_unit_disc(np.array([dt]))[0]
        return d

    def _per_unit_disc(self, dts: np.ndarray) -> np.ndarray:
        """:func:`_discretise` for each unit, a row per factor: ``(len(dts), _NDISC, n)``."""
        d = _discretise(self._pf, dts)[:, self._row, :]
        return np.ascontiguousarray(d.transpose(0, 2, 1))

    def _check(self, x: np.ndarray, u: np.ndarray | None = None) -> None:
        if x.shape != (self.n, len(STATE_NAMES)):
            raise TwinError(f"battery: state has shape {x.shape}, expected "
                            f"{(self.n, len(STATE_NAMES))}")
        if u is not None and u.shape != (self.n, len(INPUT_NAMES)):
            raise TwinError(f"battery: inputs have shape {u.shape}, expected "
                            f"{(self.n, len(INPUT_NAMES))}")

    def hold(self, t: float, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        self._check(x, u)
        return _hold_all(x, u, self._row, self._mode, self._pf, self._pi, self._tmeta,
                         self._tgrid, self._tdata, self._pu, self._disc(dt), dt)

    def rhs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _rhs_all(x, w, self._row, self._pf)

    def step_exact(self, x: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
        self._check(x)
        return _step_all(x, w, self._pu, self._disc(dt), dt)

    def outputs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        self._check(x)
        return _outputs_all(x, w, self._pu)

    def advance(self, t: float, x: np.ndarray, u: np.ndarray,
                dt: float) -> tuple[np.ndarray, np.ndarray]:
        """``hold``, ``outputs`` and ``step_exact`` in one compiled call: ``(x_next, y)``."""
        self._check(x, u)
        return _advance_all(x, u, self._row, self._mode, self._pf, self._pi, self._tmeta,
                            self._tgrid, self._tdata, self._pu, self._disc(dt), dt)

    def kernel_args(self, dt: float) -> tuple[np.ndarray, ...]:
        """The arrays :func:`advance_inplace` takes after ``y`` for steps of ``dt``."""
        return (self._row, self._mode, self._pf, self._pi, self._tmeta, self._tgrid,
                self._tdata, self._pu, self._disc(dt))

    def run(self, x: np.ndarray, u: np.ndarray, dt: float | np.ndarray,
            temp_cell_c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Advance over a whole profile in one compiled call (the ``exact`` method).

        Parameters
        ----------
        x
            State at the start, ``(n, nx)``.
        u
            Inputs held over each step, ``(steps, n, nu)``. [A], [W]
        dt
            One step length, or one per step. [s]
        temp_cell_c
            Cell temperature prescribed at each step, ``(steps, n)``, e.g. a recorded one:
            it replaces the thermal model's in the tables and the outputs. [degC]

        Returns
        -------
        x_end, y
            The state after the last step and the outputs at the start of every step,
            ``(steps, n, ny)``.
        """
        self._check(x)
        u = np.ascontiguousarray(u, dtype=float)
        if u.ndim != 3 or u.shape[1:] != (self.n, len(INPUT_NAMES)):
            raise TwinError(f"battery: profile inputs have shape {u.shape}, expected "
                            f"(steps, {self.n}, {len(INPUT_NAMES)})")
        dts = np.broadcast_to(np.asarray(dt, dtype=float), (u.shape[0],))
        distinct, kdt = np.unique(dts, return_inverse=True)
        disc = (self._per_unit_disc(distinct) if distinct.size
                else np.zeros((0, _NDISC, self.n)))
        if temp_cell_c is None:
            temp = np.zeros((0, self.n))
        else:
            temp = np.ascontiguousarray(np.broadcast_to(temp_cell_c, u.shape[:2]), dtype=float)
            if not np.all(np.isfinite(temp)):
                raise TwinError("battery: prescribed cell temperatures must be finite")
        return _run_all(x, u, self._row, self._mode, self._pf, self._pi, self._tmeta,
                        self._tgrid, self._tdata, self._pu, disc, kdt.astype(np.int64),
                        np.ascontiguousarray(dts), temp)


def simulate_profile(pset: ParamSet, t_s: np.ndarray, inputs: Mapping[str, np.ndarray],
                     method: str = "exact", dt: float | None = None) -> dict[str, np.ndarray]:
    """Run one battery on a profile and return its output columns.

    Parameters
    ----------
    pset
        A battery parameter set (its ``[initial]`` gives the initial state).
    t_s
        Sample times, strictly increasing. [s]
    inputs
        Exactly one of ``current_a`` [A] or ``power_w`` [W] (positive on discharge), sampled
        at ``t_s`` and held until the next sample.
    method
        ``"exact"`` or ``"scipy"`` (see :mod:`twin.stepper`).
    dt
        Resample the held inputs on ``t_s[0] + k dt`` instead of stepping from sample to
        sample. [s]

    Returns
    -------
    dict
        ``t_s`` and every output of :data:`OUTPUT_NAMES`, one value per time.
    """
    if method not in METHODS:
        raise TwinError(f"unknown stepper method '{method}'; choose one of {METHODS}")
    t = np.asarray(t_s, dtype=float)
    if t.ndim != 1 or t.size < 1:
        raise TwinError("profile: t_s must be a non-empty one-dimensional array")
    if not np.all(np.isfinite(t)):
        raise TwinError(f"profile: t_s[{int(np.argmin(np.isfinite(t)))}] is not finite")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        k = int(bad[0]) + 1
        raise TwinError(f"profile: t_s must increase strictly (t_s[{k}] = {t[k]} after "
                        f"{t[k - 1]})")
    given = [k for k in inputs if k in INPUT_NAMES]
    unknown = [k for k in inputs if k not in INPUT_NAMES]
    if unknown:
        raise TwinError(f"profile: unknown input column '{unknown[0]}'"
                        f"{tp.did_you_mean(unknown[0], INPUT_NAMES)}; battery inputs are "
                        f"{', '.join(INPUT_NAMES)}")
    if len(given) != 1:
        raise TwinError("profile: give exactly one of current_a or power_w")
    name = given[0]
    values = np.asarray(inputs[name], dtype=float)
    if values.shape != t.shape:
        raise TwinError(f"profile: {name} has {values.size} values for {t.size} times")
    if dt is not None:
        if not dt > 0:
            raise TwinError(f"profile: dt={dt} s must be positive")
        grid = t[0] + dt * np.arange(int(np.floor((t[-1] - t[0]) / dt + 1e-9)) + 1)
        values = values[np.searchsorted(t, grid + 1e-9 * dt, side="right") - 1]
        t = grid
    pack, initial = params_from_set(pset)
    bat = Battery(pack, mode="current" if name == "current_a" else "power", initial=initial)
    col = INPUT_NAMES.index(name)
    u = np.zeros((len(t), 1, len(INPUT_NAMES)))
    u[:, 0, col] = values
    steps = np.diff(t)
    if steps.size and np.allclose(steps, steps[0], rtol=1e-9, atol=0.0):
        steps[:] = (t[-1] - t[0]) / steps.size  # one dt, not rounding noise of the samples
    # the last sample is held for as long as the step before it (its limits need a dt)
    steps = np.append(steps, steps[-1] if steps.size else 1.0)
    x = bat.initial_state()
    if method == "exact":
        y = bat.run(x, u, steps)[1][:, 0, :]
    else:
        y = np.empty((len(t), len(OUTPUT_NAMES)))
        for k in range(len(t)):
            w = bat.hold(t[k], x, u[k], steps[k])
            y[k] = bat.outputs(t[k], x, w)[0]
            if k < len(t) - 1:
                x = step_scipy(bat, t[k], x, w, steps[k])
    out = {"t_s": t}
    out.update({n: y[:, j] for j, n in enumerate(OUTPUT_NAMES)})
    return out
