"""Nodes of a microgrid as one twin: assets of every node grouped by kind, stepped together.

Each node has a bus (with its grid connection, or islanded) and any of: PV arrays feeding PV
inverters, batteries behind bidirectional converters, GPU racks, a meter on the grid
connection.  Assets of one kind across all nodes form one vectorised
:class:`~twin.stepper.Asset` (1,000 nodes are one kernel per kind per step).  One step, with
every input held over it (zero-order hold):

1. PV arrays turn the irradiance at ``t`` into the DC power their inverters are offered;
2. PV inverters deliver AC power (setpoints: ``w_max_lim_pct``, ``p_set_w``, ``q_set_var``);
3. GPU racks draw what their workload asks at ``t``, within their power cap;
4. grid-connected batteries: the converter follows ``p_set_w``, the cells deliver its DC
   power (a battery that cannot - empty, full, at a limit - delivers what it can, its
   converter converts that, losing what that flow costs, and the AC side carries the
   shortfall so energy is never created nor lost);
5. each bus closes its node's balance through the grid connection, within import and export
   limits, or, islanded, turns the imbalance into frequency (swing equation);
6. islanded batteries are the grid-forming source: they deliver the bus's ``p_gfm_w``.

:attr:`Microgrid.y` holds the outputs of the step just taken (powers held over it, states
at its start): what a device sampled at the next tick, before that tick's setpoints land,
reports.  :attr:`Microgrid.u` holds the setpoints (NaN: none given, the model's default).

How a step runs
---------------
The coupling between the groups (setpoints, drives, node sums, the battery shortfall, the
grid-forming share, meters, energy counters) is written once, as compiled functions
(``_begin``, ``_couple_*``, ``_close``) between which the groups advance.  With
``method="exact"`` one compiled call (``_step``) runs all of it and every group's fused kernel
(``advance_inplace`` of :mod:`twin.pv`, :mod:`twin.inverter`, :mod:`twin.rack`,
:mod:`twin.bus`, :mod:`twin.battery`): a node costs a few microseconds.  The per-group path
(``fused=False``, and ``method="scipy"``, which integrates each group with ``solve_ivp``)
calls the same coupling functions from Python between the groups' own ``advance``.

A compiled call pays for every array it is passed (about 0.1 us each), so every array of the
step - states, inputs, outputs, parameters, work arrays - lives in one float and one integer
buffer (:class:`_Arena`) and the compiled code takes views of them by slot.  Numba's cache
does not notice changes in the asset kernels this module compiles in: after editing one,
delete ``twin/__pycache__/*.nbi`` and ``*.nbc``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numba
import numpy as np
from numba.core import types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numpy.lib.stride_tricks import as_strided

from twin import battery, bus, inverter, pv, rack, vecmath
from twin.battery import Battery, BatteryInitial, params_from_set
from twin.bus import Bus, BusParams
from twin.errors import TwinError
from twin.inverter import Inverter, InverterParams
from twin.params import ParamSet
from twin.pv import PV, PVParams
from twin.rack import GpuRack, TraceRack, racks_from_specs
from twin.stepper import METHODS, Asset, step_scipy
from twin.units import S_PER_H

KINDS = ("battery", "inverter", "pv", "gpu_rack", "grid", "meter")


@dataclass(frozen=True)
class Series:
    """A piecewise-linear exogenous profile ``value(t)`` (irradiance, air temperature)."""

    t_s: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if len(self.t_s) != len(self.values) or len(self.t_s) == 0:
            raise TwinError("series: t_s and values must be non-empty and of equal length")
        if np.any(np.diff(self.t_s) <= 0):
            raise TwinError("series: t_s must be strictly increasing")

    def __call__(self, t: float) -> float:
        return float(np.interp(t, self.t_s, self.values))


@dataclass(frozen=True)
class AssetSpec:
    """One asset of one node, as the twin needs it.

    ``params`` is the asset's parameter set (none for a meter, a view of its node's grid
    connection); ``converter`` the bidirectional converter of a battery; ``drive`` the
    exogenous input: a :class:`Series` of irradiance for PV, a workload for a GPU rack;
    ``source`` the PV array feeding an inverter; ``initial`` initial-condition overrides.
    """

    node: str
    name: str
    kind: str
    params: ParamSet | None = None
    converter: ParamSet | None = None
    drive: Any = None
    source: str = ""
    initial: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# the arena: every array of a step in two buffers, views by slot

# Slots, float arrays first.  Per group: states X, inputs U, outputs Y (the asset's own
# columns), inputs U0 taken where a setpoint is NaN, and what its kernel takes after ``y``
# (``kernel_args``); per node: the sums the coupling builds; the drives' series.
(_PV_X, _PV_U, _PV_Y, _PV_PAR, _PV_A,
 _INV_X, _INV_U, _INV_Y, _INV_U0, _INV_PAR, _INV_A,
 _CONV_X, _CONV_U, _CONV_Y, _CONV_PAR, _CONV_A,
 _BAT_X, _BAT_U, _BAT_Y, _BAT_PF, _BAT_TGRID, _BAT_TDATA, _BAT_PU, _BAT_DISC,
 _BAT_RATING, _BAT_CAPACITY, _BAT_PSET, _BAT_CONNECTED, _BAT_P_AC, _BAT_P_DC,
 _RACK_X, _RACK_U, _RACK_Y, _RACK_U0, _RACK_C, _RACK_RP, _RACK_PSU, _RACK_SCHED, _RACK_SIZES,
 _RACK_P,
 _BUS_X, _BUS_U, _BUS_Y, _BUS_U0, _BUS_PU, _BUS_AD, _BUS_BD,
 _NODE_GEN, _NODE_LOAD, _NODE_SUM, _NODE_GRID, _NODE_E_IMPORT, _NODE_E_EXPORT, _NODE_V_NOM,
 _SER_T, _SER_V, _SER_NOW,
 # integer arrays: unit -> node, sources, the setpoint map (:func:`_setpoints`), recorded
 # columns of Y, kernel arguments
 _PV_SER, _PV_COLS,
 _INV_NODE, _INV_SRC, _INV_COLS,
 _BAT_NODE, _BAT_ROW, _BAT_MODE, _BAT_PI, _BAT_TMETA, _BAT_PSET_J, _BAT_CONN_J, _BAT_COLS,
 _RACK_NODE, _RACK_SER, _RACK_SPAN, _RACK_COLS,
 _BUS_KIND, _BUS_COLS,
 _SP, _METER_NODE, _SER_OFF, _Y_START, _MODE,
 _N_SLOTS) = range(82)
_FIRST_INT = _PV_SER
# 2-D slots stored column by column (a signal of every unit contiguous): the rack kernel's
# passes over units run as SIMD vectors on them, and a recorded output column of a group is
# one contiguous copy into Microgrid.y
_COLUMN_MAJOR = frozenset((_RACK_X, _RACK_Y, _PV_Y, _INV_X, _INV_U, _INV_Y, _INV_PAR, _INV_A,
                           _CONV_X, _CONV_U, _CONV_Y, _CONV_PAR, _CONV_A, _BAT_X, _BAT_U, _BAT_Y,
                           _BUS_X, _BUS_U, _BUS_Y, _BUS_U0))
# _Y_START: where each part's signals start in Microgrid.y (signal by signal, each over every
# unit: a recorded column of a group is one contiguous copy)
_Y_PV, _Y_INV, _Y_BAT, _Y_BUS, _Y_RACK, _Y_BAT_NODE, _Y_METER, _Y_INV_VDC = range(8)
# _MODE: how the racks run, their sub-steps, their column of p_w
_M_RACK, _M_SUB, _M_RACK_PW = range(3)
_RACK_NONE, _RACK_MODEL, _RACK_TRACE, _RACK_EXTERNAL = range(4)
# slots that are not 2-D (for the empty arrays of absent kinds)
_NDIM = {**dict.fromkeys((_PV_A, _BAT_TDATA, _BAT_RATING, _BAT_CAPACITY,
                          _BAT_PSET, _BAT_CONNECTED, _BAT_P_AC, _BAT_P_DC, _RACK_C, _RACK_RP,
                          _RACK_SIZES, _RACK_P, _NODE_GEN, _NODE_LOAD, _NODE_SUM, _NODE_GRID,
                          _NODE_E_IMPORT, _NODE_E_EXPORT, _NODE_V_NOM, _SER_T, _SER_V,
                          _SER_NOW, _PV_SER, _PV_COLS, _INV_NODE, _INV_SRC, _INV_COLS,
                          _BAT_NODE, _BAT_ROW, _BAT_MODE, _BAT_PSET_J, _BAT_CONN_J, _BAT_COLS,
                          _RACK_NODE, _RACK_SER, _RACK_COLS, _BUS_KIND, _BUS_COLS,
                          _METER_NODE, _SER_OFF, _Y_START, _MODE), 1),
         **dict.fromkeys((_BUS_AD, _BUS_BD), 4)}


class _Arena:
    """The arrays of one microgrid's step in one float and one integer buffer.

    ``layout[slot]`` is ``(offset, d0, d1, d2, d3, ndim)``; compiled code takes views of the
    buffers by slot (:func:`_v1`, :func:`_v2`, :func:`_v4`), Python through :meth:`view`.
    Nothing keeps a view across calls, so a deep copy of the arena is a consistent copy.
    """

    def __init__(self, arrays: dict[int, np.ndarray]) -> None:
        if sorted(arrays) != list(range(_N_SLOTS)):
            missing = sorted(set(range(_N_SLOTS)) - set(arrays))
            raise TwinError(f"microgrid arena: slots {missing} not given")
        self.layout = np.zeros((_N_SLOTS, 6), dtype=np.int64)
        chunks: dict[bool, list[np.ndarray]] = {False: [], True: []}
        ends = {False: 0, True: 0}
        for slot in range(_N_SLOTS):
            integer = slot >= _FIRST_INT
            a = np.asarray(arrays[slot], dtype=np.int64 if integer else float)
            shape = a.shape + (1,) * (4 - a.ndim)
            self.layout[slot] = (ends[integer],) + shape + (a.ndim,)
            chunks[integer].append(a.ravel(order="F" if slot in _COLUMN_MAJOR else "C"))
            ends[integer] += a.size
        self.f = np.concatenate(chunks[False])
        self.i = np.concatenate(chunks[True])

    def position(self, slot: int, i: int, col: int) -> int:
        """Where element ``[i, col]`` of 2-D slot ``slot`` is in its buffer."""
        o, n, ncols = (int(v) for v in self.layout[slot, :3])
        return o + (col * n + i if slot in _COLUMN_MAJOR else i * ncols + col)

    def view(self, slot: int) -> np.ndarray:
        """The array of ``slot``, a view: writing to it writes the arena."""
        o, *dims, ndim = (int(v) for v in self.layout[slot])
        buf = self.i if slot >= _FIRST_INT else self.f
        flat = buf[o:o + int(np.prod(dims))]
        if slot in _COLUMN_MAJOR:
            return flat.reshape(dims[:ndim][::-1]).T
        return flat.reshape(dims[:ndim])


@intrinsic
def _as_c(typingctx, a):
    """``a``, typed C-contiguous without a check or a copy: for views known to be."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        return impl_ret_borrowed(context, builder, sig.return_type, args[0])

    return a.copy(layout="C")(a), codegen


@intrinsic
def _as_f(typingctx, a):
    """``a``, typed Fortran-contiguous without a check or a copy: for views known to be."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        return impl_ret_borrowed(context, builder, sig.return_type, args[0])

    return a.copy(layout="F")(a), codegen


@numba.njit(cache=True)
def _v1(buf, lay, k):
    o = lay[k, 0]
    return buf[o:o + lay[k, 1]]


@numba.njit(cache=True)
def _v2(buf, lay, k):
    o, c = lay[k, 0], lay[k, 2]
    s = buf.itemsize
    return _as_c(as_strided(buf[o:], shape=(lay[k, 1], c), strides=(c * s, s)))


@numba.njit(cache=True)
def _v2f(buf, lay, k):
    """The view of a 2-D slot stored column by column (``_COLUMN_MAJOR``)."""
    o, n = lay[k, 0], lay[k, 1]
    s = buf.itemsize
    return _as_f(as_strided(buf[o:], shape=(n, lay[k, 2]), strides=(s, n * s)))


@numba.njit(cache=True)
def _v4(buf, lay, k):
    o, d1, d2, d3 = lay[k, 0], lay[k, 2], lay[k, 3], lay[k, 4]
    s = buf.itemsize
    return _as_c(as_strided(buf[o:], shape=(lay[k, 1], d1, d2, d3),
                            strides=(d1 * d2 * d3 * s, d2 * d3 * s, d3 * s, s)))


# --------------------------------------------------------------------------------------------
# the coupling between groups, once for both paths

_PV_IRR = PV.input_names.index("irradiance_w_m2")
_PV_PDC, _PV_VDC = (PV.output_names.index(n) for n in ("p_dc_w", "v_dc_v"))
_INV_PAV, _INV_VDC, _INV_VAC, _INV_F, _INV_PSET = (Inverter.input_names.index(n) for n in (
    "p_dc_avail_w", "v_dc_v", "v_ac_v", "freq_hz", "p_set_w"))
_INV_PAC, _INV_PDC = (Inverter.output_names.index(n) for n in ("p_ac_w", "p_dc_w"))
_BAT_PW_IN = Battery.input_names.index("power_w")
_BAT_PW, _BAT_LIM = (Battery.output_names.index(n) for n in ("p_w", "limited"))
_BUS_LOAD, _BUS_GEN, _BUS_ISL, _BUS_GFM_SET = (Bus.input_names.index(n) for n in (
    "p_load_w", "p_gen_w", "islanded", "p_gfm_set_w"))
_BUS_P, _BUS_F, _BUS_GFM = (Bus.output_names.index(n) for n in ("p_w", "freq_hz", "p_gfm_w"))
_FLOAT_MAX = float(np.finfo(float).max)


@numba.njit(cache=True, error_model="numpy")
def _setpoints(u, fa, sp):
    """Setpoints ``u`` into the groups' inputs: ``fa[sp[1, r]] = u[sp[0, r]]``, where that
    is NaN ``fa[sp[2, r]]`` (the input's default).  Positions in the arena rather than (unit,
    column) per group: one loop of plain loads and stores over every setpoint, sorted by
    where they go (twice as fast as a loop per group indexing 2-D views)."""
    j, dst, default = sp[0], sp[1], sp[2]
    for r in range(j.shape[0]):
        v = u[j[r]]
        fa[dst[r]] = v if v == v else fa[default[r]]


@numba.njit(cache=True, error_model="numpy")
def _begin(t, fa, ia, lay, u):
    """Setpoints into the groups' inputs, the drives' series at ``t`` into PV irradiance
    and trace racks' power."""
    _setpoints(u, fa, _v2(ia, lay, _SP))
    ts, vs, off = _v1(fa, lay, _SER_T), _v1(fa, lay, _SER_V), _v1(ia, lay, _SER_OFF)
    now = _v1(fa, lay, _SER_NOW)
    for k in range(now.shape[0]):
        now[k] = np.interp(t, ts[off[k]:off[k + 1]], vs[off[k]:off[k + 1]])
    ser, pv_u = _v1(ia, lay, _PV_SER), _v2(fa, lay, _PV_U)
    for i in range(ser.shape[0]):
        if ser[i] >= 0:
            pv_u[i, _PV_IRR] = now[ser[i]]
    ser, p = _v1(ia, lay, _RACK_SER), _v1(fa, lay, _RACK_P)
    for r in range(ser.shape[0]):
        if ser[r] >= 0:
            p[r] = now[ser[r]]


@numba.njit(cache=True, error_model="numpy")
def _couple_inverters(t, fa, ia, lay):
    """PV inverters are offered their array's DC power and voltage, and see the frequency
    of their bus in the last step (none before the first)."""
    inv_u, src, pv_y = _v2f(fa, lay, _INV_U), _v1(ia, lay, _INV_SRC), _v2f(fa, lay, _PV_Y)
    for i in range(src.shape[0]):
        j = src[i]
        if j >= 0:
            inv_u[i, _INV_PAV] = pv_y[j, _PV_PDC]
            inv_u[i, _INV_VDC] = pv_y[j, _PV_VDC]
    if t > 0.0:
        node, bus_y = _v1(ia, lay, _INV_NODE), _v2f(fa, lay, _BUS_Y)
        for i in range(node.shape[0]):
            inv_u[i, _INV_F] = bus_y[node[i], _BUS_F]


@numba.njit(cache=True, error_model="numpy")
def _couple_converters(fa, ia, lay, u):
    """Battery setpoints act on the converter (``p_set_w``, NaN: 0) and the contactor
    (``connect``, NaN: closed)."""
    pj, cj = _v1(ia, lay, _BAT_PSET_J), _v1(ia, lay, _BAT_CONN_J)
    pset, conn = _v1(fa, lay, _BAT_PSET), _v1(fa, lay, _BAT_CONNECTED)
    conv_u = _v2f(fa, lay, _CONV_U)
    for i in range(pj.shape[0]):
        p = 0.0
        if pj[i] >= 0:
            p = u[pj[i]]
            if np.isnan(p):
                p = 0.0
            elif np.isinf(p):
                p = _FLOAT_MAX if p > 0.0 else -_FLOAT_MAX
        c = 1.0
        if cj[i] >= 0:
            v = u[cj[i]]
            c = 1.0 if np.isnan(v) or v > 0.5 else 0.0
        conn[i] = c
        pset[i] = p * c
        conv_u[i, _INV_PSET] = pset[i]


@numba.njit(cache=True, error_model="numpy")
def _node_sum(node, y, col, out):
    """``out[k]``: the sum of ``y[i, col]`` over units ``i`` of node ``k``."""
    vecmath.fill(out, 0.0)
    for i in range(node.shape[0]):
        out[node[i]] += y[i, col]


@numba.njit(cache=True, error_model="numpy")
def _islanded(fa, lay):
    """Whether any bus is islanded: the batteries' loops that only islanded nodes need run
    only then (most runs have none, and each such loop looks up every battery's bus)."""
    isl = _v2f(fa, lay, _BUS_U)[:, _BUS_ISL]
    count = 0
    for k in range(isl.shape[0]):
        count += 1 if isl[k] > 0.5 else 0
    return count > 0


@numba.njit(cache=True, error_model="numpy")
def _grid_connected_sum(fa, ia, lay, values, out, islanded):
    """``out[k]``: the sum of ``values[i]`` over the batteries of node ``k`` if the node is
    grid-connected (islanded nodes' batteries dispatch their grid-forming source)."""
    node, bus_u = _v1(ia, lay, _BAT_NODE), _v2f(fa, lay, _BUS_U)
    vecmath.fill(out, 0.0)
    if not islanded:
        for i in range(node.shape[0]):
            out[node[i]] += values[i]
        return
    for i in range(node.shape[0]):
        if not bus_u[node[i], _BUS_ISL] > 0.5:
            out[node[i]] += values[i]


@numba.njit(cache=True, error_model="numpy")
def _couple_bus(fa, ia, lay):
    """Each bus's load (racks) and grid-following generation (PV inverters, converters of
    grid-connected batteries whose contactor is closed); islanded batteries' setpoints
    dispatch its grid-forming source."""
    gen, load = _v1(fa, lay, _NODE_GEN), _v1(fa, lay, _NODE_LOAD)
    _node_sum(_v1(ia, lay, _INV_NODE), _v2f(fa, lay, _INV_Y), _INV_PAC, gen)
    _node_sum(_v1(ia, lay, _RACK_NODE), _v2f(fa, lay, _RACK_Y),
              _v1(ia, lay, _MODE)[_M_RACK_PW], load)
    bus_u = _v2f(fa, lay, _BUS_U)
    conv_y, p_ac, p_dc = _v2f(fa, lay, _CONV_Y), _v1(fa, lay, _BAT_P_AC), _v1(fa, lay, _BAT_P_DC)
    if p_ac.shape[0]:
        conn = _v1(fa, lay, _BAT_CONNECTED)
        for i in range(p_ac.shape[0]):  # an open contactor: the converter has nothing to give
            p_ac[i] = conv_y[i, _INV_PAC] * conn[i]
            p_dc[i] = conv_y[i, _INV_PDC] * conn[i]
        tmp = _v1(fa, lay, _NODE_SUM)
        islanded = _islanded(fa, lay)
        _grid_connected_sum(fa, ia, lay, p_ac, tmp, islanded)
        for k in range(gen.shape[0]):
            gen[k] += tmp[k]
        # an islanded battery's setpoint dispatches the grid-forming source, within the
        # rating of its converter (as a grid-connected one is held by its converter)
        node, pset, rating = (_v1(ia, lay, _BAT_NODE), _v1(fa, lay, _BAT_PSET),
                              _v1(fa, lay, _BAT_RATING))
        vecmath.fill(tmp, 0.0)
        for i in range(node.shape[0] if islanded else 0):
            if bus_u[node[i], _BUS_ISL] > 0.5:
                tmp[node[i]] += min(max(pset[i], -rating[i]), rating[i])
        vecmath.copy(tmp, bus_u[:, _BUS_GFM_SET])
    vecmath.copy(load, bus_u[:, _BUS_LOAD])
    vecmath.copy(gen, bus_u[:, _BUS_GEN])


@numba.njit(cache=True, error_model="numpy")
def _couple_cells(fa, ia, lay):
    """What each battery's cells are asked for: its converter's DC power, or, islanded, the
    DC power of its share (by rating, among the batteries whose contactor is closed) of the
    bus's grid-forming power; none when its contactor is open."""
    node, bus_u = _v1(ia, lay, _BAT_NODE), _v2f(fa, lay, _BUS_U)
    p_ac, p_dc = _v1(fa, lay, _BAT_P_AC), _v1(fa, lay, _BAT_P_DC)
    rating, conn, total = (_v1(fa, lay, _BAT_RATING), _v1(fa, lay, _BAT_CONNECTED),
                           _v1(fa, lay, _NODE_SUM))
    islanded = _islanded(fa, lay)
    vecmath.fill(total, 0.0)
    for i in range(node.shape[0] if islanded else 0):
        if bus_u[node[i], _BUS_ISL] > 0.5 and conn[i] > 0.0:
            total[node[i]] += rating[i]
    gfm, conv_par = _v2f(fa, lay, _BUS_Y), _v2f(fa, lay, _CONV_PAR)
    for i in range(node.shape[0] if islanded else 0):
        k = node[i]
        if bus_u[k, _BUS_ISL] > 0.5:
            frac = rating[i] / total[k] if total[k] > 0.0 else 0.0
            p_ac[i] = gfm[k, _BUS_GFM] * frac
            p_dc[i] = p_ac[i] + inverter.converter_loss_w(conv_par, i, p_ac[i])
    bat_u = _v2f(fa, lay, _BAT_U)
    for i in range(node.shape[0]):
        p_dc[i] *= conn[i]
        p_ac[i] *= conn[i]
        bat_u[i, _BAT_PW_IN] = p_dc[i]


@numba.njit(cache=True, error_model="numpy")
def _scatter(y, start, gy, cols):
    """The recorded columns ``cols`` of a group's outputs ``gy`` into ``y`` from ``start``,
    signal by signal (each a contiguous copy: ``gy`` is stored column by column)."""
    n = gy.shape[0]
    for k in range(cols.shape[0]):
        vecmath.copy(gy[:, cols[k]], y[start + k * n:start + (k + 1) * n])


@numba.njit(cache=True, error_model="numpy")
def _converter_shortfall(conv_par, i, p_ac, p_dc, p_cells, limited):
    """Battery ``i``'s converter and cells after the cells delivered ``p_cells`` of the
    ``p_dc[i]`` they were asked (the converter's DC power for the AC power ``p_ac[i]``):
    both become what flowed, and the AC power it fell short by is returned.

    A battery at a limit (``limited``) moves less, and its converter converts that: its AC
    power is the one its loss model gives for the DC power the cells delivered, so it loses
    what that flow costs (its standby loss, fed from the bus, on an empty or full battery),
    not the loss of the transfer it was commanded.  Otherwise ``p_cells`` differs from
    ``p_dc[i]`` by the rounding of the cells' power from their current, and the AC side
    takes that difference as it is (the converter's loss unchanged). [W]"""
    if limited:
        p_act = inverter.converter_ac_w(conv_par, i, p_cells)
        d = p_ac[i] - p_act
        p_ac[i] = p_act
    else:
        d = p_dc[i] - p_cells
        p_ac[i] = p_ac[i] - d
    p_dc[i] = p_cells
    return d


@numba.njit(cache=True, error_model="numpy")
def _close(dt, fa, ia, lay, y):
    """Batteries that fell short of what they were asked (their converters convert what
    the cells delivered, :func:`_converter_shortfall`): a grid connection carries the AC
    difference in the same step, an island sheds it (load it could not serve, or generation
    it curtails, :func:`twin.bus.shed_shortfall`); meters and their energy counters; outputs
    into ``y``."""
    grid, bus_y = _v1(fa, lay, _NODE_GRID), _v2f(fa, lay, _BUS_Y)
    vecmath.copy(bus_y[:, _BUS_P], grid)
    node, bus_u = _v1(ia, lay, _BAT_NODE), _v2f(fa, lay, _BUS_U)
    p_ac, p_dc, bat_y = _v1(fa, lay, _BAT_P_AC), _v1(fa, lay, _BAT_P_DC), _v2f(fa, lay, _BAT_Y)
    if node.shape[0]:
        short = _v1(fa, lay, _NODE_SUM)
        vecmath.fill(short, 0.0)
        conv_par, conn = _v2f(fa, lay, _CONV_PAR), _v1(fa, lay, _BAT_CONNECTED)
        islanded = _islanded(fa, lay)
        for i in range(node.shape[0]):
            d = _converter_shortfall(conv_par, i, p_ac, p_dc, bat_y[i, _BAT_PW],
                                     bat_y[i, _BAT_LIM] != 0.0 and conn[i] > 0.0)
            # islanded, only a battery at a limit falls short (else ``d`` is the rounding of
            # its power from its current: unserved load it is not)
            if not islanded or not bus_u[node[i], _BUS_ISL] > 0.5 or bat_y[i, _BAT_LIM] != 0.0:
                short[node[i]] += d
        bus_x = _v2f(fa, lay, _BUS_X)
        for k in range(grid.shape[0]):
            if short[k] != 0.0:
                if bus_u[k, _BUS_ISL] > 0.5:
                    bus.shed_shortfall(bus_x, bus_y, k, short[k], dt)
                else:
                    bus.carry_shortfall(bus_x, bus_y, k, short[k], dt)
            grid[k] = bus_y[k, _BUS_P]
    e_import, e_export = _v1(fa, lay, _NODE_E_IMPORT), _v1(fa, lay, _NODE_E_EXPORT)
    h = dt / S_PER_H
    for k in range(grid.shape[0]):
        e_import[k] += np.maximum(grid[k], 0.0) * h
        e_export[k] += np.maximum(-grid[k], 0.0) * h
    start = _v1(ia, lay, _Y_START)
    _scatter(y, start[_Y_PV], _v2f(fa, lay, _PV_Y), _v1(ia, lay, _PV_COLS))
    _scatter(y, start[_Y_INV], _v2f(fa, lay, _INV_Y), _v1(ia, lay, _INV_COLS))
    _scatter(y, start[_Y_BAT], _v2f(fa, lay, _BAT_Y), _v1(ia, lay, _BAT_COLS))
    _scatter(y, start[_Y_BUS], _v2f(fa, lay, _BUS_Y), _v1(ia, lay, _BUS_COLS))
    _scatter(y, start[_Y_RACK], _v2f(fa, lay, _RACK_Y), _v1(ia, lay, _RACK_COLS))
    conn, cap = _v1(fa, lay, _BAT_CONNECTED), _v1(fa, lay, _BAT_CAPACITY)
    n, j = node.shape[0], start[_Y_BAT_NODE]  # p_w, p_dc_w, connected, capacity_wh, soh
    vecmath.copy(p_ac, y[j:j + n])
    vecmath.copy(p_dc, y[j + n:j + 2 * n])
    vecmath.copy(conn, y[j + 2 * n:j + 3 * n])
    vecmath.copy(cap, y[j + 3 * n:j + 4 * n])
    vecmath.fill(y[j + 4 * n:j + 5 * n], 1.0)
    inv_u = _v2f(fa, lay, _INV_U)
    n, j = inv_u.shape[0], start[_Y_INV_VDC]
    for i in range(n):  # a PV inverter's terminals: its array's DC voltage, the AC voltage
        y[j + i] = inv_u[i, _INV_VDC]  # and frequency it sees
        y[j + n + i] = inv_u[i, _INV_VAC]
        y[j + 2 * n + i] = inv_u[i, _INV_F]
    mn, v_nom = _v1(ia, lay, _METER_NODE), _v1(fa, lay, _NODE_V_NOM)
    n, j = mn.shape[0], start[_Y_METER]  # p_w, q_var, v_ac_v, freq_hz, e_import_wh, e_export_wh
    vecmath.gather(grid, mn, y[j:j + n])
    vecmath.fill(y[j + n:j + 2 * n], 0.0)
    vecmath.gather(v_nom, mn, y[j + 2 * n:j + 3 * n])
    vecmath.gather(bus_y[:, _BUS_F], mn, y[j + 3 * n:j + 4 * n])
    vecmath.gather(e_import, mn, y[j + 4 * n:j + 5 * n])
    vecmath.gather(e_export, mn, y[j + 5 * n:j + 6 * n])


# --------------------------------------------------------------------------------------------
# the fused step: each group's kernel on views of the arena, between the coupling functions


@numba.njit(cache=True, error_model="numpy")
def _advance_pv(t, dt, fa, lay):
    pv.advance_inplace(t, _v2(fa, lay, _PV_X), _v2(fa, lay, _PV_U), dt, _v2f(fa, lay, _PV_Y),
                       _v2(fa, lay, _PV_PAR), _v1(fa, lay, _PV_A))


@numba.njit(cache=True, error_model="numpy")
def _advance_inverters(t, dt, fa, lay):
    inverter.advance_inplace(t, _v2f(fa, lay, _INV_X), _v2f(fa, lay, _INV_U), dt,
                             _v2f(fa, lay, _INV_Y), _v2f(fa, lay, _INV_PAR), _v2f(fa, lay, _INV_A))


@numba.njit(cache=True, error_model="numpy")
def _advance_racks(t, dt, fa, ia, lay, cursor, memo, capmemo):
    mode = _v1(ia, lay, _MODE)
    x, u, y = _v2f(fa, lay, _RACK_X), _v2(fa, lay, _RACK_U), _v2f(fa, lay, _RACK_Y)
    if mode[_M_RACK] == _RACK_MODEL:
        rack.advance_inplace(t, x, u, dt, y, mode[_M_SUB], _v1(fa, lay, _RACK_C),
                             _v1(fa, lay, _RACK_RP), _v2(fa, lay, _RACK_PSU),
                             _v2(fa, lay, _RACK_SCHED), _v2(ia, lay, _RACK_SPAN), cursor, memo,
                             capmemo, _v1(fa, lay, _RACK_SIZES))
    elif mode[_M_RACK] == _RACK_TRACE:
        rack.trace_advance_inplace(t, x, u, dt, y, _v1(fa, lay, _RACK_P))


@numba.njit(cache=True, error_model="numpy")
def _advance_converters(t, dt, fa, lay):
    inverter.advance_inplace(t, _v2f(fa, lay, _CONV_X), _v2f(fa, lay, _CONV_U), dt,
                             _v2f(fa, lay, _CONV_Y), _v2f(fa, lay, _CONV_PAR),
                             _v2f(fa, lay, _CONV_A))


@numba.njit(cache=True, error_model="numpy")
def _advance_buses(t, dt, fa, ia, lay):
    bus.advance_inplace(t, _v2f(fa, lay, _BUS_X), _v2f(fa, lay, _BUS_U), dt, _v2f(fa, lay, _BUS_Y),
                        _v2(fa, lay, _BUS_PU), _v1(ia, lay, _BUS_KIND), _v4(fa, lay, _BUS_AD),
                        _v4(fa, lay, _BUS_BD))


@numba.njit(cache=True, error_model="numpy")
def _advance_batteries(t, dt, fa, ia, lay):
    battery.advance_inplace(t, _v2f(fa, lay, _BAT_X), _v2f(fa, lay, _BAT_U), dt,
                            _v2f(fa, lay, _BAT_Y), _v1(ia, lay, _BAT_ROW),
                            _v1(ia, lay, _BAT_MODE), _v2(fa, lay, _BAT_PF),
                            _v2(ia, lay, _BAT_PI), _v2(ia, lay, _BAT_TMETA),
                            _v2(fa, lay, _BAT_TGRID), _v1(fa, lay, _BAT_TDATA),
                            _v2(fa, lay, _BAT_PU), _v2(fa, lay, _BAT_DISC))


@numba.njit(cache=True, error_model="numpy")
def _step(t, dt, fa, ia, lay, u, y, cursor, memo, capmemo):
    """One step of the whole microgrid (``method="exact"``) in one compiled call: the order
    of :meth:`Microgrid._advance_groups`."""
    _begin(t, fa, ia, lay, u)
    if lay[_PV_X, 1]:
        _advance_pv(t, dt, fa, lay)
    _couple_inverters(t, fa, ia, lay)
    if lay[_INV_X, 1]:
        _advance_inverters(t, dt, fa, lay)
    _advance_racks(t, dt, fa, ia, lay, cursor, memo, capmemo)
    _couple_converters(fa, ia, lay, u)
    if lay[_BAT_X, 1]:
        _advance_converters(t, dt, fa, lay)
    _couple_bus(fa, ia, lay)
    _advance_buses(t, dt, fa, ia, lay)
    _couple_cells(fa, ia, lay)
    if lay[_BAT_X, 1]:
        _advance_batteries(t, dt, fa, ia, lay)
    _close(dt, fa, ia, lay, y)


# --------------------------------------------------------------------------------------------
# the microgrid

#: what the fused step is passed for racks that keep no schedule caches
_NO_CACHES = (np.zeros(0, dtype=np.int64), np.zeros((2, 0)), np.zeros((2, 0)))


@dataclass
class _Group:
    """One vectorised asset over the units of one kind; its arrays live in the arena."""

    asset: Asset
    specs: list[AssetSpec]
    #: the node of each unit (index into Microgrid.nodes)
    node: np.ndarray
    #: the initial state, and the inputs a unit takes when no setpoint is given
    x0: np.ndarray
    u0: np.ndarray
    #: recorded output columns of the asset, and where they start in Microgrid.y
    cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    start: int = 0
    #: the arena, the slots of x, u, y in it and of the arrays its kernel takes after y
    arena: _Arena | None = None
    slots: tuple[int, int, int] = (0, 0, 0)
    arg_slots: tuple[int, ...] = ()

    @property
    def x(self) -> np.ndarray:
        return self.arena.view(self.slots[0])

    @property
    def u(self) -> np.ndarray:
        return self.arena.view(self.slots[1])

    @property
    def y(self) -> np.ndarray:
        return self.arena.view(self.slots[2])

    def kernel_args(self) -> list[np.ndarray]:
        """What the fused step passes its kernel after ``y``, as it lays them out (their
        asset's ``kernel_args`` where the arena does not hold them: the racks')."""
        return [self.arena.view(s) for s in self.arg_slots]


def _col(asset: Asset, name: str) -> int:
    return asset.output_names.index(name)


def _in(asset: Asset, name: str) -> int:
    return asset.input_names.index(name)


def initial_keys(kind: str) -> tuple[str, ...]:
    """The initial conditions an asset of ``kind`` takes from its spec (``initial``); a
    GPU rack's die temperature comes from its parameter file's ``[initial]`` only."""
    return {"battery": tuple(BatteryInitial.__dataclass_fields__),
            "pv": PV.state_names, "inverter": Inverter.state_names,
            "grid": (*Bus.state_names, "islanded")}.get(kind, ())


def check_initial(kind: str, initial: Mapping[str, Any], where: str) -> None:
    """An asset's initial conditions: a misspelt key would otherwise start the run from the
    parameter file's state without a word (``where`` starts the message: ``a.battery.initial``
    or a scenario's ``file:line: field``)."""
    known = initial_keys(kind)
    for key, value in initial.items():
        if key not in known:
            hint = (f"; one of {', '.join(known)}" if known else
                    f"; a {kind} takes none" + (" (a rack's die temperature is temp_c in "
                                                "its parameter file's [initial])"
                                                if kind == "gpu_rack" else ""))
            raise TwinError(f"{where}: unknown initial condition {key!r}{hint}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TwinError(f"{where}.{key}: must be a number, not {value!r}")
        if key == "islanded" and value not in (0, 1):
            raise TwinError(f"{where}.islanded: 1 (islanded) or 0 (connected), not {value!r}")
    if kind == "battery":
        try:
            BatteryInitial(**initial)
        except TwinError as exc:
            raise TwinError(f"{where}.{exc}") from None


def _set_initial(asset: Asset, x: np.ndarray, specs: Sequence[AssetSpec]) -> None:
    """Per-unit initial conditions: the parameter file's ``[initial]``, then the spec's."""
    for i, s in enumerate(specs):
        for src in ((s.params.initial if s.params else {}), s.initial):
            for key, value in src.items():
                if key in asset.state_names and isinstance(value, (int, float)):
                    x[i, asset.state_names.index(key)] = float(value)


class Microgrid:
    """The twin of a set of nodes.

    Parameters
    ----------
    specs : sequence of AssetSpec
        Every asset of every node (at least one); a node without a ``grid`` asset gets a
        grid connection with the ``bus_default`` parameters (its import and export limits).
    method : {"exact", "scipy"}
        How linear parts are integrated (see :mod:`twin.stepper`).
    bus_default : ParamSet, optional
        Bus parameters for nodes without a grid asset, or whose grid asset names none
        (without it, such a node is an error).
    rack_factory : callable, optional
        ``rack_factory(specs) -> Asset`` building the GPU racks (see :mod:`twin.rack`).
    fused : bool
        With ``method="exact"``, run each step as one compiled call (the default); False
        advances group by group from Python, the reference the fused step is tested against.
    """

    def __init__(self, specs: Sequence[AssetSpec], method: str = "exact",
                 bus_default: ParamSet | None = None,
                 rack_factory: Callable[[list[AssetSpec]], Asset] | None = None,
                 fused: bool = True) -> None:
        if method not in METHODS:
            raise TwinError(f"unknown stepper method '{method}'; choose one of {METHODS}")
        self.method = method
        self._fused = fused and method == "exact"
        self.t = 0.0
        self._k = 0
        self._t_base = 0.0
        self._dt = 0.0
        self.specs = list(specs)
        if not self.specs:
            raise TwinError("microgrid: no assets given (a node is its assets)")
        seen = set()
        for s in self.specs:
            if s.kind not in KINDS:
                raise TwinError(f"{s.node}.{s.name}: unknown asset kind '{s.kind}'")
            if (s.node, s.name) in seen:
                raise TwinError(f"{s.node}.{s.name}: defined twice")
            seen.add((s.node, s.name))
            check_initial(s.kind, s.initial, f"{s.node}.{s.name}.initial")
        self.nodes = list(dict.fromkeys(s.node for s in self.specs))
        self._node_index = {n: i for i, n in enumerate(self.nodes)}
        by_kind: dict[str, list[AssetSpec]] = {k: [] for k in KINDS}
        for s in self.specs:
            by_kind[s.kind].append(s)
        self._by_kind = by_kind
        self._build(by_kind, bus_default, rack_factory or racks_from_specs)
        self._layout()
        self._pack()
        self._first_outputs()

    # -- construction -------------------------------------------------------------------

    def _group(self, asset: Asset, specs: list[AssetSpec]) -> _Group:
        x = asset.initial_state()
        _set_initial(asset, x, specs)
        node = np.array([self._node_index[s.node] for s in specs], dtype=np.int64)
        return _Group(asset, specs, node, x, asset.default_inputs())

    def _build(self, by_kind: dict[str, list[AssetSpec]], bus_default: ParamSet | None,
               rack_factory: Callable[[list[AssetSpec]], Asset]) -> None:
        self.groups: dict[str, _Group] = {}
        pv_specs = by_kind["pv"]
        if pv_specs:
            self.groups["pv"] = self._group(
                PV([PVParams.from_params(self._need(s)) for s in pv_specs]), pv_specs)
        inv_specs = by_kind["inverter"]
        if inv_specs:
            self.groups["inverter"] = self._group(
                Inverter([InverterParams.from_params(self._need(s)) for s in inv_specs]),
                inv_specs)
            pv_pos = {(s.node, s.name): i for i, s in enumerate(pv_specs)}
            self._inv_src = np.array([pv_pos.get((s.node, s.source), -1) for s in inv_specs],
                                     dtype=np.int64)
            for s, j in zip(inv_specs, self._inv_src):
                if s.source and j < 0:
                    raise TwinError(f"{s.node}.{s.name}: no pv '{s.source}' on node {s.node}")
        bat_specs = by_kind["battery"]
        if bat_specs:
            packs, inits = [], []
            # one pack per distinct parameter set, so that the kernel's rows are shared
            by_set: dict[int, tuple[Any, BatteryInitial]] = {}
            by_content: dict[str, Any] = {}
            for s in bat_specs:
                pset = self._need(s)
                if id(pset) not in by_set:
                    pack, init = params_from_set(pset)
                    by_set[id(pset)] = (by_content.setdefault(repr(pset.params), pack), init)
                pack, init = by_set[id(pset)]
                fields = {k: v for k, v in s.initial.items()
                          if k in BatteryInitial.__dataclass_fields__}
                if fields:
                    init = replace(init, **fields)
                packs.append(pack)
                inits.append(init)
            self.groups["battery"] = self._group(
                Battery(packs, mode="power", initial=inits), bat_specs)
            conv = []
            for s in bat_specs:
                if s.converter is None:
                    raise TwinError(f"{s.node}.{s.name}: a battery needs converter parameters")
                conv.append(InverterParams.from_params(s.converter))
            self.groups["converter"] = self._group(Inverter(conv), bat_specs)
            self._bat_rating = np.array([p.p_rated_w for p in conv])
            # nominal energy: capacity times the mean OCV of the SOC table
            self._bat_capacity_wh = np.array([
                pack.capacity_ah * pack.cells_series * float(np.mean(pack.cell.ocv_v.values))
                for pack in packs])
        rack_specs = by_kind["gpu_rack"]
        if rack_specs:
            self.groups["gpu_rack"] = self._group(rack_factory(rack_specs), rack_specs)
        # one bus per node, in node order
        grid_of = {s.node: s for s in by_kind["grid"]}
        bus_params, bus_specs = [], []
        for node in self.nodes:
            g = grid_of.get(node)
            pset = (g.params if g is not None and g.params is not None else bus_default)
            if pset is None:
                raise TwinError(f"node {node}: no bus parameters (give it a grid asset with "
                                "params, or the microgrid a bus_default)")
            bus_params.append(BusParams.from_params(pset))
            bus_specs.append(g if g is not None else AssetSpec(node, "grid", "grid", pset))
        self.groups["grid"] = self._group(Bus(bus_params), bus_specs)
        self._islanded0 = np.array([float(s.initial.get("islanded", 0.0)) for s in bus_specs])
        self.groups["grid"].u0[:, _BUS_ISL] = self._islanded0
        self._meters = by_kind["meter"]
        # nominal AC voltage of each node (meters report it): its converters' and inverters'
        v = {}
        for kind in ("converter", "inverter"):
            g = self.groups.get(kind)
            if g is not None:
                for s, p in zip(g.specs, g.asset.params):
                    v.setdefault(s.node, p.v_nom_v)
        # meters report the line-to-neutral voltage (SunSpec 203 PhV) of the nominal
        # line-to-line voltage
        self._v_nom = np.array([v.get(n, 400.0) for n in self.nodes]) / np.sqrt(3.0)
        self.islanded = {n: bool(v) for n, v in zip(self.nodes, self._islanded0)}

    @staticmethod
    def _need(s: AssetSpec) -> ParamSet:
        if s.params is None:
            raise TwinError(f"{s.node}.{s.name}: a {s.kind} needs a parameter set")
        return s.params

    # -- signals and setpoints ----------------------------------------------------------

    #: outputs recorded per kind: (name in the recording, asset output name)
    RECORDED = {
        "pv": ("p_dc_w", "irradiance_w_m2", "temp_cell_c", "v_dc_v"),
        "inverter": ("p_ac_w", "q_var", "p_dc_w", "efficiency", "energy_wh", "w_max_lim_pct",
                     "curtailed"),
        "battery": ("voltage_v", "current_a", "soc", "temp_cell_c", "temp_jig_c", "limited"),
        "grid": ("p_w", "freq_hz", "rocof_hz_per_s", "p_unserved_w", "p_curtailed_w",
                 "islanded", "p_gov_w"),
    }
    #: setpoints per kind: (name, unit, asset input name or "" for node-level handling)
    SETPOINTS = {
        "inverter": (("w_max_lim_pct", "%", "w_max_lim_pct"), ("p_set_w", "W", "p_set_w"),
                     ("q_set_var", "var", "q_set_var")),
        "battery": (("p_set_w", "W", ""), ("connect", "", "")),
        "gpu_rack": (("power_cap_w", "W", "power_cap_w"),),
        "grid": (("islanded", "", "islanded"),),
    }
    UNITS = {"p_dc_w": "W", "irradiance_w_m2": "W/m2", "temp_cell_c": "degC", "v_dc_v": "V",
             "p_ac_w": "W", "q_var": "var", "efficiency": "", "energy_wh": "Wh",
             "w_max_lim_pct": "%", "curtailed": "", "voltage_v": "V", "current_a": "A",
             "soc": "", "temp_jig_c": "degC", "limited": "", "p_w": "W", "freq_hz": "Hz",
             "rocof_hz_per_s": "Hz/s", "p_unserved_w": "W", "p_curtailed_w": "W",
             "islanded": "", "p_gov_w": "W", "temp_c": "degC", "power_cap_w": "W", "phase": "",
             "connected": "", "capacity_wh": "Wh", "soh": "", "v_ac_v": "V",
             "e_import_wh": "Wh", "e_export_wh": "Wh", "p_gpu_w": "W", "clock_mhz": "MHz",
             "e_burn_wh": "Wh"}

    def _layout(self) -> None:
        outputs: list[tuple[str, str, str, str]] = []
        recorded = dict(self.RECORDED)
        g = self.groups.get("gpu_rack")
        if g is not None:  # racks: the rack asset says which of its outputs are signals
            recorded["gpu_rack"] = tuple(getattr(g.asset, "recorded_names",
                                                 g.asset.output_names))
        for kind, names in recorded.items():
            g = self.groups.get(kind)
            if g is None:
                continue
            g.cols = np.array([_col(g.asset, n) for n in names], dtype=np.int64)
            g.start = len(outputs)
            for n in names:
                for s in g.specs:
                    outputs.append((s.node, s.name, n, self.UNITS.get(n, "")))
        # node-level signals computed here (in this order, see _close): battery AC power and
        # state, a PV inverter's terminals (SunSpec 103 DCV, 701 LLV and Hz), meters
        self._bat_start = len(outputs)
        for n in ("p_w", "p_dc_w", "connected", "capacity_wh", "soh"):
            outputs += [(s.node, s.name, n, self.UNITS[n]) for s in self._by_kind["battery"]]
        self._inv_vdc_start = len(outputs)
        for n in ("v_dc_v", "v_ac_v", "freq_hz"):
            outputs += [(s.node, s.name, n, self.UNITS[n]) for s in self._by_kind["inverter"]]
        self._meter_start = len(outputs)
        for n in ("p_w", "q_var", "v_ac_v", "freq_hz", "e_import_wh", "e_export_wh"):
            outputs += [(s.node, s.name, n, self.UNITS.get(n, "")) for s in self._meters]
        self._meter_node = np.array([self._node_index[s.node] for s in self._meters],
                                    dtype=np.int64)
        self.outputs = outputs
        #: (node, asset, signal) -> position in y: :meth:`index` in O(1) at 1,000 nodes
        self._output_index = {(n, a, s): i for i, (n, a, s, _) in enumerate(outputs)}
        self._y = np.full(len(outputs), np.nan)

        setpoints: list[tuple[str, str, str, str]] = []
        #: setpoints that are asset inputs, per kind: rows (unit, input column, position in u)
        self._sp_rows: dict[str, list[tuple[int, int, int]]] = {k: [] for k in self.SETPOINTS}
        nb = len(self._by_kind["battery"])
        #: position in u of each battery's p_set_w and connect (-1: none)
        self._bat_pset_j = np.full(nb, -1, dtype=np.int64)
        self._bat_conn_j = np.full(nb, -1, dtype=np.int64)
        for kind, names in self.SETPOINTS.items():
            g = self.groups.get(kind)
            if g is None:
                continue
            for i, s in enumerate(g.specs):
                if kind == "grid" and s not in self._by_kind["grid"]:
                    continue  # implicit grid connection: not a controllable asset
                for name, unit, inp in names:
                    j = len(setpoints)
                    setpoints.append((s.node, s.name, name, unit))
                    if inp:
                        self._sp_rows[kind].append((i, _in(g.asset, inp), j))
                    elif name == "p_set_w":
                        self._bat_pset_j[i] = j
                    else:
                        self._bat_conn_j[i] = j
        self.setpoints = setpoints
        self._u = np.full(len(setpoints), np.nan)

    @property
    def y(self) -> np.ndarray:
        """The outputs, one per :attr:`outputs` (updated in place by every step)."""
        return self._y

    @property
    def u(self) -> np.ndarray:
        """The setpoints, one per :attr:`setpoints`; NaN: none given, the model's default.
        Write into it (or assign as many values).  Values are taken as given and held to
        what each model can do (a battery's converter to its rating: +inf asks for all of
        it; a rack's cap of 0 or less is none); the bench refuses values outside a
        setpoint's range before they reach the twin (docs/scenarios.md)."""
        return self._u

    @u.setter
    def u(self, values: Any) -> None:
        values = np.asarray(values, dtype=float)
        if values.shape != self._u.shape:
            raise TwinError(f"microgrid: {values.size} setpoints given, it has "
                            f"{self._u.size}")
        self._u[...] = values

    # -- the arena ----------------------------------------------------------------------

    def _setpoint_map(self) -> np.ndarray:
        """The setpoints that are group inputs as positions in the arena: rows (position in
        :attr:`u`, of the input, of its default), sorted by the input's position."""
        slots = {"inverter": (_INV_U, _INV_U0), "gpu_rack": (_RACK_U, _RACK_U0),
                 "grid": (_BUS_U, _BUS_U0)}
        pos = self._arena.position
        cols = [(j, pos(slots[kind][0], i, col), pos(slots[kind][1], i, col))
                for kind, rows in self._sp_rows.items() for i, col, j in rows]
        return np.array(sorted(cols, key=lambda c: c[1]), dtype=np.int64).reshape(-1, 3).T

    def _series(self, drive: Any) -> int:
        """Index of ``drive`` among the series the compiled step evaluates, or -1 when it is
        not a :class:`Series` (None, or another callable: evaluated from Python)."""
        if not isinstance(drive, Series):
            return -1
        k = self._series_index.get(id(drive))
        if k is None:
            k = self._series_index[id(drive)] = len(self._series_list)
            self._series_list.append(drive)
        return k

    def _pack(self) -> None:
        """Every array of the step into the arena, kernel arguments for steps of 1 ns (the
        first outputs' step; :meth:`_load_dt` rewrites what depends on the step)."""
        dt = 1e-9
        g = self.groups
        a: dict[int, Any] = {s: np.zeros((0,) * _NDIM.get(s, 2)) for s in range(_N_SLOTS)}
        self._series_list: list[Series] = []
        self._series_index: dict[int, int] = {}
        mode = [_RACK_NONE, 1, 0]

        def group(kind: str, slots: tuple[int, int, int], args: Sequence[int]) -> _Group:
            grp = g[kind]
            n = grp.asset.n
            a[slots[0]], a[slots[1]] = grp.x0, grp.u0
            a[slots[2]] = np.zeros((n, len(grp.asset.output_names)))
            if args:
                a.update(zip(args, grp.asset.kernel_args(dt)))
            grp.slots, grp.arg_slots = slots, tuple(args)
            return grp

        if "pv" in g:
            p = group("pv", (_PV_X, _PV_U, _PV_Y), (_PV_PAR, _PV_A))
            for s in p.specs:
                if s.drive is not None and not callable(s.drive):
                    raise TwinError(f"{s.node}.{s.name}: the drive of a pv is its irradiance "
                                    f"over time (a Series or a callable), not "
                                    f"{type(s.drive).__name__}")
            a[_PV_SER] = [self._series(s.drive) for s in p.specs]
            a[_PV_COLS] = p.cols
        if "inverter" in g:
            p = group("inverter", (_INV_X, _INV_U, _INV_Y), (_INV_PAR, _INV_A))
            a[_INV_U0], a[_INV_NODE], a[_INV_SRC] = p.u0, p.node, self._inv_src
            a[_INV_COLS] = p.cols
        if "battery" in g:
            group("converter", (_CONV_X, _CONV_U, _CONV_Y), (_CONV_PAR, _CONV_A))
            p = group("battery", (_BAT_X, _BAT_U, _BAT_Y),
                      (_BAT_ROW, _BAT_MODE, _BAT_PF, _BAT_PI, _BAT_TMETA, _BAT_TGRID,
                       _BAT_TDATA, _BAT_PU, _BAT_DISC))
            n = p.asset.n
            a[_BAT_NODE], a[_BAT_RATING], a[_BAT_CAPACITY] = (p.node, self._bat_rating,
                                                             self._bat_capacity_wh)
            a[_BAT_PSET], a[_BAT_P_AC], a[_BAT_P_DC] = np.zeros((3, n))
            a[_BAT_CONNECTED] = np.ones(n)
            a[_BAT_PSET_J], a[_BAT_CONN_J] = self._bat_pset_j, self._bat_conn_j
            a[_BAT_COLS] = p.cols
        if "gpu_rack" in g:
            p = group("gpu_rack", (_RACK_X, _RACK_U, _RACK_Y), ())
            a[_RACK_U0], a[_RACK_NODE] = p.u0, p.node
            a[_RACK_P] = np.zeros(p.asset.n)
            a[_RACK_COLS] = p.cols
            mode[_M_RACK_PW] = _col(p.asset, "p_w")
            if isinstance(p.asset, GpuRack):
                mode[_M_RACK] = _RACK_MODEL
                (mode[_M_SUB], a[_RACK_C], a[_RACK_RP], a[_RACK_PSU], a[_RACK_SCHED],
                 a[_RACK_SPAN], *_, a[_RACK_SIZES]) = p.asset.kernel_args(dt)
            elif isinstance(p.asset, TraceRack) and all(isinstance(f, Series)
                                                        for f in p.asset.traces):
                mode[_M_RACK] = _RACK_TRACE
                a[_RACK_SER] = [self._series(f) for f in p.asset.traces]
            else:
                mode[_M_RACK] = _RACK_EXTERNAL
        p = group("grid", (_BUS_X, _BUS_U, _BUS_Y),
                  (_BUS_PU, _BUS_KIND, _BUS_AD, _BUS_BD))
        a[_BUS_U0], a[_BUS_COLS] = p.u0, p.cols
        a[_SP] = np.zeros((3, sum(len(rows) for rows in self._sp_rows.values())))
        nn = len(self.nodes)
        for slot in (_NODE_GEN, _NODE_LOAD, _NODE_SUM, _NODE_GRID, _NODE_E_IMPORT,
                     _NODE_E_EXPORT):
            a[slot] = np.zeros(nn)
        a[_NODE_V_NOM], a[_METER_NODE] = self._v_nom, self._meter_node
        y_start = [0] * 8
        for kind, k in (("pv", _Y_PV), ("inverter", _Y_INV), ("battery", _Y_BAT),
                        ("grid", _Y_BUS), ("gpu_rack", _Y_RACK)):
            if kind in g:
                y_start[k] = g[kind].start
        y_start[_Y_BAT_NODE], y_start[_Y_METER] = self._bat_start, self._meter_start
        y_start[_Y_INV_VDC] = self._inv_vdc_start
        a[_Y_START] = y_start
        series = [(np.asarray(s.t_s, dtype=float), np.asarray(s.values, dtype=float))
                  for s in self._series_list]
        a[_SER_T] = np.concatenate([ts for ts, _ in series] + [np.zeros(0)])
        a[_SER_V] = np.concatenate([vs for _, vs in series] + [np.zeros(0)])
        a[_SER_OFF] = np.cumsum([0] + [len(ts) for ts, _ in series])
        a[_SER_NOW] = np.zeros(len(series))
        a[_MODE] = mode
        self._arena = _Arena(a)
        self._arena.view(_SP)[...] = self._setpoint_map()
        for grp in g.values():
            grp.arena = self._arena
        # drives that are neither a Series nor None: evaluated from Python, into the arena
        self._py_drives: list[tuple[int, Callable[[float], float]]] = []
        if "pv" in g:
            o, ncols = self._arena.layout[_PV_U, 0], self._arena.layout[_PV_U, 2]
            self._py_drives = [(int(o + i * ncols + _PV_IRR), s.drive)
                               for i, s in enumerate(g["pv"].specs)
                               if s.drive is not None and not isinstance(s.drive, Series)]
        self._rack_mode = mode[_M_RACK]
        self._rack_caches = _NO_CACHES
        self._dt_loaded: float | None = None

    def _load_dt(self, dt: float) -> None:
        """Kernel arguments that depend on the step length into the arena."""
        view = self._arena.view
        for kind, slot in (("pv", _PV_A), ("inverter", _INV_A), ("converter", _CONV_A),
                           ("battery", _BAT_DISC)):
            if kind in self.groups:
                view(slot)[...] = self.groups[kind].asset.kernel_args(dt)[-1]
        view(_BUS_AD)[...], view(_BUS_BD)[...] = self.groups["grid"].asset.kernel_args(dt)[-2:]
        if self._rack_mode == _RACK_MODEL:
            args = self.groups["gpu_rack"].asset.kernel_args(dt)
            view(_MODE)[_M_SUB] = args[0]
            view(_RACK_C)[...] = args[1]
            self._rack_caches = args[6:9]
        self._dt_loaded = dt

    # -- stepping -----------------------------------------------------------------------

    def prepare(self, dt: float) -> None:
        """Compute what depends on the step length alone (discretisations, kernel factors)
        before the first step, so a real-time run's first tick is not late."""
        if dt != self._dt_loaded:
            self._load_dt(dt)

    def advance(self, dt: float) -> None:
        """Step every asset over ``[t, t + dt]`` with the setpoints in :attr:`u` held."""
        if dt != self._dt_loaded:
            self._load_dt(dt)
        arena = self._arena
        if self._py_drives:
            self._drive_from_python()
        if self._fused:
            if self._rack_mode == _RACK_EXTERNAL:
                _begin(self.t, arena.f, arena.i, arena.layout, self._u)
                self._run("gpu_rack", dt)
            _step(self.t, dt, arena.f, arena.i, arena.layout, self._u, self._y,
                  *self._rack_caches)
        else:
            self._advance_groups(dt)
        self._tick(dt)

    def _advance_groups(self, dt: float) -> None:
        """The step group by group, each with its asset's own methods, between the same
        coupling functions as the fused step."""
        t, arena = self.t, self._arena
        f, i, lay = arena.f, arena.i, arena.layout
        _begin(t, f, i, lay, self._u)
        self._run("pv", dt)
        _couple_inverters(t, f, i, lay)
        self._run("inverter", dt)
        self._run("gpu_rack", dt)
        _couple_converters(f, i, lay, self._u)
        self._run("converter", dt)
        _couple_bus(f, i, lay)
        self._run("grid", dt)
        _couple_cells(f, i, lay)
        self._run("battery", dt)
        _close(dt, f, i, lay, self._y)

    def _run(self, kind: str, dt: float) -> None:
        g = self.groups.get(kind)
        if g is None:
            return
        x, u = g.x, g.u
        if self.method == "exact":
            xn, y = g.asset.advance(self.t, x, u, dt)
        else:
            w = g.asset.hold(self.t, x, u, dt)
            y = g.asset.outputs(self.t, x, w)
            xn = step_scipy(g.asset, self.t, x, w, dt)
        x[...] = xn
        g.y[...] = y

    def _drive_from_python(self) -> None:
        """PV irradiance from drives that are callables but not :class:`Series`."""
        f, t = self._arena.f, self.t
        values: dict[int, float] = {}
        for pos, drive in self._py_drives:
            if id(drive) not in values:
                values[id(drive)] = drive(t)
            f[pos] = values[id(drive)]

    def _tick(self, dt: float) -> None:
        """``t = t_base + k dt`` while ``dt`` stays the same (no accumulated rounding)."""
        if dt != self._dt:
            self._t_base, self._k, self._dt = self.t, 0, dt
        self._k += 1
        self.t = self._t_base + self._k * dt

    def _first_outputs(self) -> None:
        """Outputs before the first step: a step of zero length from the initial state."""
        saved = self._arena.f.copy(), copy.deepcopy({k: g.asset for k, g in self.groups.items()})
        method, self.method = self.method, "exact"
        self.advance(1e-9)
        self.method = method
        self._arena.f[...] = saved[0]
        for kind, asset in saved[1].items():
            self.groups[kind].asset = asset
        self._dt_loaded = None  # the restored assets' caches, the arena's factors
        self._k, self._t_base, self._dt = 0, 0.0, 0.0
        self.t = 0.0

    # -- forecasts ----------------------------------------------------------------------

    def copy(self) -> Microgrid:
        """An independent copy (for forecasts that must not disturb the run)."""
        scratch, self._scratch = getattr(self, "_scratch", None), None
        try:
            return copy.deepcopy(self)
        finally:
            self._scratch = scratch

    def forecast(self, index: int, steps: int, dt: float) -> np.ndarray:
        """Output ``index`` over the next ``steps`` steps with the setpoints held.

        Runs on a scratch copy made once and loaded with this twin's state before each
        forecast (a copy of its arrays, not of the object), so a controller can ask every
        tick.
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < len(self.outputs):
            raise TwinError(f"forecast: index {index!r} is not an output (0 to "
                            f"{len(self.outputs) - 1}; Microgrid.index gives it by name)")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise TwinError(f"forecast: steps must be a whole number >= 0, not {steps!r}")
        scratch = getattr(self, "_scratch", None)
        if scratch is None or not self._fused or self._py_drives:
            scratch = self.copy()
            if self._fused and not self._py_drives:
                self._scratch = scratch
        else:
            scratch._load_state(self)
        out = np.empty(steps)
        for j in range(steps):
            scratch.advance(dt)
            out[j] = scratch._y[index]
        return out

    def _load_state(self, other: Microgrid) -> None:
        """Take ``other``'s state (a microgrid of the same scenario, fused path)."""
        if other._dt_loaded is not None and self._dt_loaded != other._dt_loaded:
            self._load_dt(other._dt_loaded)
        self._arena.f[...] = other._arena.f
        self._arena.i[...] = other._arena.i
        self._u[...] = other._u
        self._y[...] = other._y
        for mine, theirs in zip(self._rack_caches, other._rack_caches):
            mine[...] = theirs
        self.t, self._k, self._t_base, self._dt = other.t, other._k, other._t_base, other._dt

    def index(self, node: str, asset: str, signal: str) -> int:
        """The position of output ``node.asset.signal`` in :attr:`y`."""
        i = self._output_index.get((node, asset, signal))
        if i is None:
            raise TwinError(f"no twin signal {node}.{asset}.{signal}")
        return i
