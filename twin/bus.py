"""The node bus: power balance, the grid connection, and islanded frequency.

Each node balances, in per unit of its base ``s_base_va`` (``df`` the frequency deviation in
per unit of ``f_nom_hz``)::

    2H ddf/dt = p_gov + p_gfm + p_gen - p_load - D df + p_grid          (swing equation)
    Tg dp_gov/dt = p_gov_set - (r_gov / (R s_base)) df - p_gov              (governor)
    Tf dp_gfm/dt = p_gfm_set - (r_gfm / (m_p s_base)) df - p_gfm    (grid-forming droop)

``p_load`` is what the node consumes (GPU racks, other loads), ``p_gen`` what its
grid-following sources deliver (PV inverters, battery converters on setpoints); ``p_gov`` is
a governed machine (a genset) and ``p_gfm`` the grid-forming inverters, both first-order droop
sources (a grid-forming inverter with P-f droop ``m_p`` and a power low-pass filter ``Tf`` is
a governor with ``R = m_p`` and ``Tg = Tf``, [2]_).  ``D`` is the load's frequency dependence.
Both droop sources are linear and unbounded: ``rating_w`` is the base of the droop, not a
limit, so a genset asked for more than its rating delivers it, and one asked to absorb a
surplus motors (the frequency shows either, and the energy balance holds).  What limits an
island's sources is its grid-forming batteries' converters and cells, whose shortfall is
unserved load (:func:`shed_shortfall`); a genset's limits belong to the controller.

Grid-connected (input ``islanded = 0``)
    the grid holds the frequency: ``ddf/dt = -df / sync_tau_s`` (after a reconnection the
    node locks to the grid with that time constant), and ``p_grid`` is whatever closes the
    balance.  ``p_grid`` is limited to ``[-export_max_w, import_max_w]`` at every tick: demand
    beyond the import limit is *unserved* (the node must shed it), generation beyond the
    export limit is *curtailed*; both are recorded as power and energy and flagged, never
    created.
Islanded (``islanded = 1``)
    ``p_grid = 0`` and the frequency follows the swing equation.  Where the grid-forming
    converters cannot deliver ``p_gfm`` (their batteries at a limit), what they fall short by
    is unserved load (or, absorbing, curtailed generation): :func:`shed_shortfall`, as a
    grid-connected node's connection carries it (:func:`carry_shortfall`).

All of it is linear, so each step is exact: the states and the energy integrals (source,
damping, grid) are advanced with one matrix exponential per mode, precomputed per ``dt``
(:func:`twin.stepper.discretise`).  Unserved and curtailed power are decided once per step
(held over it).  Energy balance over any run, with ``e_kinetic = 2 H s_base df`` (the
linearised kinetic energy relative to nominal speed)::

    e_gen + e_src + e_grid = e_load + e_damp + (e_kinetic(T) - e_kinetic(0))

References
----------
.. [1] P. Kundur, "Power System Stability and Control", McGraw-Hill, 1994, ch. 11
   (swing equation, governor droop, load damping).
.. [2] J. Rocabert, A. Luna, F. Blaabjerg, P. Rodriguez, "Control of Power Converters in AC
   Microgrids", IEEE Trans. Power Electron. 27 (2012) 4734-4749.
   :doi:`10.1109/TPEL.2012.2199334`
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numba
import numpy as np

from twin import stepper
from twin.errors import ParameterError
from twin.params import ParamSet, from_mapping
from twin.units import S_PER_H
from twin.vecmath import copy


@dataclass(frozen=True)
class DroopSource:
    """A first-order droop source: a governed genset, or grid-forming inverters in aggregate."""

    rating_w: float = 0.0
    """Rating on which the droop is expressed (its base, not a limit: the source is
    unbounded, see the module docstring); 0 when the node has no such source. [W]"""
    droop_pu: float = 0.05
    """Droop R (or m_p): per-unit frequency change for a 1 pu change in power. [pu/pu]"""
    tau_s: float = 0.5
    """Governor time constant Tg (or the power low-pass filter's). [s]"""

    def __post_init__(self) -> None:
        if self.rating_w < 0 or self.droop_pu <= 0 or self.tau_s <= 0:
            raise ParameterError("droop source: rating_w >= 0, droop_pu > 0, tau_s > 0")


@dataclass(frozen=True)
class BusParams:
    """One node's bus and grid connection."""

    s_base_va: float
    """Base power of the per-unit swing equation. [VA]"""
    import_max_w: float
    """Largest power drawn from the grid. [W]"""
    export_max_w: float
    """Largest power fed into the grid. [W]"""
    h_s: float = 2.0
    """Inertia constant on ``s_base_va`` (rotating machines and virtual inertia). [s]"""
    d_pu: float = 1.0
    """Load damping: per-unit load change for a 1 pu frequency change. [pu/pu]"""
    f_nom_hz: float = 60.0
    """Nominal frequency. [Hz]"""
    sync_tau_s: float = 0.05
    """Time constant with which the node locks to the grid frequency when connected. [s]"""
    governor: DroopSource = field(default_factory=DroopSource)
    grid_forming: DroopSource = field(default_factory=lambda: DroopSource(tau_s=0.05))

    def __post_init__(self) -> None:
        if self.s_base_va <= 0 or self.h_s <= 0 or self.f_nom_hz <= 0 or self.sync_tau_s <= 0:
            raise ParameterError("s_base_va, h_s, f_nom_hz and sync_tau_s must be positive")
        if self.import_max_w < 0 or self.export_max_w < 0 or self.d_pu < 0:
            raise ParameterError("import_max_w, export_max_w and d_pu must not be negative")

    @classmethod
    def from_params(cls, pset: ParamSet) -> BusParams:
        """The parameters of a ``bus`` parameter file."""
        if pset.kind != "bus":
            where = pset.path or pset.name
            raise ParameterError(f"{where}: meta.kind is '{pset.kind}', expected 'bus'")
        return from_mapping(cls, pset.params, where=f"{pset.path or pset.name}: params")


def swing_matrices(p: BusParams, islanded: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of the linear part, ``dz/dt = A z + B w``, for one node in one mode.

    ``z = [df, p_gov, p_gfm, e_src_wh, e_damp_wh, e_grid_wh]`` (per unit, then Wh) and
    ``w = [p_net, p_gov_set, p_gfm_set]`` in per unit, ``p_net = (p_gen - p_load) / s_base``
    after the grid limits.
    """
    h2, d = 2.0 * p.h_s, p.d_pu
    kg = p.governor.rating_w / (p.governor.droop_pu * p.s_base_va)
    kf = p.grid_forming.rating_w / (p.grid_forming.droop_pu * p.s_base_va)
    tg, tf = p.governor.tau_s, p.grid_forming.tau_s
    wh = p.s_base_va / S_PER_H
    a = np.zeros((6, 6))
    b = np.zeros((6, 3))
    if islanded:
        a[0, :3] = (-d / h2, 1.0 / h2, 1.0 / h2)
        b[0, 0] = 1.0 / h2
    else:
        a[0, 0] = -1.0 / p.sync_tau_s
        # p_grid = 2H ddf/dt - p_gov - p_gfm - p_net + D df
        a[5, :3] = (wh * (-h2 / p.sync_tau_s + d), -wh, -wh)
        b[5, 0] = -wh
    a[1, 0], a[1, 1], b[1, 1] = -kg / tg, -1.0 / tg, 1.0 / tg
    a[2, 0], a[2, 2], b[2, 2] = -kf / tf, -1.0 / tf, 1.0 / tf
    a[3, 1:3] = wh
    a[4, 0] = wh * d
    return a, b


# state, input, held columns
_NZ = 6  # the linear block: df, p_gov, p_gfm, e_src_wh, e_damp_wh, e_grid_wh
_ELOAD, _EGEN, _EUNS, _ECURT = 6, 7, 8, 9
_UL, _UG, _UISL, _UGS, _UFS = range(5)
(_WNET, _WGS, _WFS, _WISL, _WGRID, _WUNS, _WCURT, _WLOAD, _WGEN, _WILIM, _WELIM) = range(11)
_NW = 11
_NY = 18
# per-unit parameter rows (each a vector over the units): the parameters, then the first row
# of the swing matrices (a[0, :3], b[0, 0]) grid-connected and islanded, for the RoCoF
_SB, _IMP, _EXP, _H, _D, _FN, _TS = range(7)
_A0 = 7  # + 4 * mode: a[0, 0], a[0, 1], a[0, 2], b[0, 0]
#: up to this many distinct parameter sets, the step runs a pass per set over every unit
#: (its matrices' entries then the same for every lane of a SIMD vector); beyond, unit by unit
_FEW_SETS = 4


@numba.njit(cache=True, error_model="numpy")
def _hold_into(x, u, pu, w):
    """Held inputs into the rows of ``w`` (``(_NW, n)``), branch-free over the units: with
    the state and inputs stored column by column (the microgrid's arena) the pass runs as
    SIMD vectors."""
    df, p_gov, p_gfm = x[:, 0], x[:, 1], x[:, 2]
    u_load, u_gen, u_isl, u_gs, u_fs = u[:, _UL], u[:, _UG], u[:, _UISL], u[:, _UGS], u[:, _UFS]
    sb_, imp, exp_, h_, d_, ts = pu[_SB], pu[_IMP], pu[_EXP], pu[_H], pu[_D], pu[_TS]
    for i in range(x.shape[0]):
        sb = sb_[i]
        load, gen = u_load[i], u_gen[i]
        isl = u_isl[i] > 0.5
        # p_grid that holds the frequency (see swing_matrices), before the limits
        need = (2.0 * h_[i] * (-df[i] / ts[i]) + d_[i] * df[i] - p_gov[i] - p_gfm[i]) * sb \
            + load - gen
        over, under = need > imp[i], need < -exp_[i]
        uns = 0.0 if isl or not over else need - imp[i]
        curt = 0.0 if isl or over or not under else -exp_[i] - need
        w[_WNET, i] = (gen - curt - (load - uns)) / sb
        w[_WGS, i] = u_gs[i] / sb
        w[_WFS, i] = u_fs[i] / sb
        w[_WISL, i] = 1.0 if isl else 0.0
        w[_WGRID, i] = 0.0 if isl else need - uns + curt
        w[_WUNS, i] = uns
        w[_WCURT, i] = curt
        w[_WLOAD, i] = load - uns
        w[_WGEN, i] = gen - curt
        w[_WILIM, i] = 1.0 if uns > 0.0 else 0.0
        w[_WELIM, i] = 1.0 if curt > 0.0 else 0.0


@numba.njit(cache=True, error_model="numpy")
def _hold_kernel(x, u, pu):
    w = np.empty((_NW, x.shape[0]))
    _hold_into(x, u, pu, w)
    return w


@numba.njit(cache=True, error_model="numpy")
def _step_into(x, w, kind, ad, bd, dt):
    """Exact step, in place (each element read, then written); ``ad``/``bd`` per parameter
    set ``kind[i]`` and mode.

    The energy integrators do not feed back (their columns of ``ad`` are the identity), so
    only the first three columns are multiplied.  With few parameter sets, a pass per set
    and mode over every unit, its matrices' entries taken as scalars (the same in every
    lane of a SIMD vector); with many, unit by unit.
    """
    h = dt / 3600.0
    n = x.shape[0]
    z0, z1, z2, z3, z4, z5 = x[:, 0], x[:, 1], x[:, 2], x[:, 3], x[:, 4], x[:, 5]
    w0, w1, w2, isl = w[0], w[1], w[2], w[_WISL]
    if ad.shape[0] <= _FEW_SETS:
        for k in range(ad.shape[0]):
            for m in range(2):
                _step_set(z0, z1, z2, z3, z4, z5, w0, w1, w2, isl, kind, k, m,
                          ad[k, m], bd[k, m])
    else:
        for i in range(n):
            k, m = kind[i], 1 if isl[i] > 0.5 else 0
            x0, x1, x2, v0, v1, v2 = z0[i], z1[i], z2[i], w0[i], w1[i], w2[i]
            a, b = ad[k, m], bd[k, m]
            z0[i] = _row(_coef(a, b, 0), x0, x1, x2, v0, v1, v2)
            z1[i] = _row(_coef(a, b, 1), x0, x1, x2, v0, v1, v2)
            z2[i] = _row(_coef(a, b, 2), x0, x1, x2, v0, v1, v2)
            z3[i] = _row(_coef(a, b, 3), x0, x1, x2, v0, v1, v2) + z3[i]
            z4[i] = _row(_coef(a, b, 4), x0, x1, x2, v0, v1, v2) + z4[i]
            z5[i] = _row(_coef(a, b, 5), x0, x1, x2, v0, v1, v2) + z5[i]
    e_load, e_gen, e_uns, e_curt = x[:, _ELOAD], x[:, _EGEN], x[:, _EUNS], x[:, _ECURT]
    for i in range(n):
        e_load[i] = e_load[i] + w[_WLOAD, i] * h
        e_gen[i] = e_gen[i] + w[_WGEN, i] * h
        e_uns[i] = e_uns[i] + w[_WUNS, i] * h
        e_curt[i] = e_curt[i] + w[_WCURT, i] * h


@numba.njit(cache=True, error_model="numpy", inline="always")
def _coef(a, b, r):
    """Row ``r`` of the step's matrices, the entries that multiply ``df, p_gov, p_gfm`` and
    the three held inputs."""
    return a[r, 0], a[r, 1], a[r, 2], b[r, 0], b[r, 1], b[r, 2]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _row(c, x0, x1, x2, w0, w1, w2):
    """A row of the exact step of the linear block (without an integrator's own state),
    with its entries ``c`` (:func:`_coef`)."""
    return c[0] * x0 + c[1] * x1 + c[2] * x2 + c[3] * w0 + c[4] * w1 + c[5] * w2


@numba.njit(cache=True, error_model="numpy")
def _step_set(z0, z1, z2, z3, z4, z5, w0, w1, w2, isl, kind, k, m, a, b):
    """:func:`_step_into` for the units of parameter set ``k`` in mode ``m``, the others
    left as they are; the matrices' entries read once, before the pass (read in it, they
    would be read again for every unit: LLVM cannot tell them from the state written)."""
    c0, c1, c2, c3, c4, c5 = (_coef(a, b, 0), _coef(a, b, 1), _coef(a, b, 2), _coef(a, b, 3),
                              _coef(a, b, 4), _coef(a, b, 5))
    for i in range(z0.shape[0]):
        mine = kind[i] == k and (isl[i] > 0.5) == (m == 1)
        x0, x1, x2, v0, v1, v2 = z0[i], z1[i], z2[i], w0[i], w1[i], w2[i]
        n0 = _row(c0, x0, x1, x2, v0, v1, v2)
        n1 = _row(c1, x0, x1, x2, v0, v1, v2)
        n2 = _row(c2, x0, x1, x2, v0, v1, v2)
        n3 = _row(c3, x0, x1, x2, v0, v1, v2) + z3[i]
        n4 = _row(c4, x0, x1, x2, v0, v1, v2) + z4[i]
        n5 = _row(c5, x0, x1, x2, v0, v1, v2) + z5[i]
        z0[i] = n0 if mine else x0
        z1[i] = n1 if mine else x1
        z2[i] = n2 if mine else x2
        z3[i] = n3 if mine else z3[i]
        z4[i] = n4 if mine else z4[i]
        z5[i] = n5 if mine else z5[i]


@numba.njit(cache=True, error_model="numpy")
def _outputs_into(x, w, pu, y):
    """Outputs into ``y``, branch-free over the units (1-D views of every column)."""
    df, p_gov, p_gfm = x[:, 0], x[:, 1], x[:, 2]
    sb_, fn_, h_ = pu[_SB], pu[_FN], pu[_H]
    g0, g1, g2, g3 = pu[_A0], pu[_A0 + 1], pu[_A0 + 2], pu[_A0 + 3]
    i0, i1, i2, i3 = pu[_A0 + 4], pu[_A0 + 5], pu[_A0 + 6], pu[_A0 + 7]
    net, isl = w[0], w[_WISL]
    y_grid, y_f, y_rocof = y[:, 0], y[:, 1], y[:, 2]
    y_gov, y_gfm, y_kin = y[:, 3], y[:, 4], y[:, 17]
    for i in range(x.shape[0]):
        ddf0 = g0[i] * df[i] + g1[i] * p_gov[i] + g2[i] * p_gfm[i] + g3[i] * net[i]
        ddf1 = i0[i] * df[i] + i1[i] * p_gov[i] + i2[i] * p_gfm[i] + i3[i] * net[i]
        ddf = ddf1 if isl[i] > 0.5 else ddf0
        sb, fn = sb_[i], fn_[i]
        y_grid[i] = w[_WGRID, i]
        y_f[i] = fn * (1.0 + df[i])
        y_rocof[i] = fn * ddf
        y_gov[i] = p_gov[i] * sb
        y_gfm[i] = p_gfm[i] * sb
        y_kin[i] = 2.0 * h_[i] * sb * df[i] / 3600.0
    for col, row in ((5, _WUNS), (6, _WCURT), (7, _WILIM), (8, _WELIM), (9, _WISL)):
        copy(w[row], y[:, col])
    for col, state in ((10, 5), (11, 3), (12, 4), (13, _ELOAD), (14, _EGEN), (15, _EUNS),
                       (16, _ECURT)):
        copy(x[:, state], y[:, col])


@numba.njit(cache=True, error_model="numpy")
def carry_shortfall(x, y, i, p_w, dt):
    """Bus ``i``'s grid connection carries ``p_w`` more over the step just taken: a
    grid-following source delivered ``p_w`` less than the bus was told (a battery at a
    limit).  Its power output and its grid and generation counters follow, so a ``grid``
    asset reads what a meter reads and the bus's energy still balances. [W]"""
    h = dt / 3600.0
    y[i, 0] += p_w
    x[i, 5] += p_w * h
    x[i, _EGEN] -= p_w * h


@numba.njit(cache=True, error_model="numpy")
def shed_shortfall(x, y, i, p_w, dt):
    """Islanded bus ``i``'s grid-forming source delivered ``p_w`` less than its ``p_gfm_w``
    over the step just taken (batteries at a limit), and no grid can carry it: ``p_w > 0``
    is load the node could not serve, ``p_w < 0`` generation it had to curtail.  Its unserved
    (curtailed) power and counters follow, and its source counter becomes what was
    delivered, so the bus's energy balances with it; the frequency, driven by
    ``p_gfm - p_load`` (the same with the shortfall taken out of both), stands. [W]"""
    h = dt / 3600.0
    x[i, 3] -= p_w * h
    if p_w > 0.0:
        y[i, 5] += p_w
        x[i, _EUNS] += p_w * h
        x[i, _ELOAD] -= p_w * h
    else:
        y[i, 6] -= p_w
        x[i, _ECURT] -= p_w * h
        x[i, _EGEN] += p_w * h


@numba.njit(cache=True, error_model="numpy")
def _step_kernel(x, w, kind, ad, bd, dt):
    xn = x.copy()
    _step_into(xn, w, kind, ad, bd, dt)
    return xn


@numba.njit(cache=True, error_model="numpy")
def _outputs_kernel(x, w, pu):
    y = np.empty((x.shape[0], _NY))
    _outputs_into(x, w, pu, y)
    return y


@numba.njit(cache=True, error_model="numpy")
def advance_inplace(t, x, u, dt, y, pu, kind, ad, bd):
    """:meth:`Bus.advance` into the caller's arrays, for compiled callers (the microgrid's
    fused step): ``x`` is stepped in place, ``y`` receives the outputs at ``t``;
    ``(pu, kind, ad, bd)`` is :meth:`Bus.kernel_args` (``t`` is there for the signature
    every asset shares)."""
    w = _hold_kernel(x, u, pu)
    _outputs_into(x, w, pu, y)
    _step_into(x, w, kind, ad, bd, dt)


@numba.njit(cache=True, error_model="numpy")
def _advance_kernel(x, u, pu, kind, ad, bd, dt):
    xn = x.copy()
    y = np.empty((x.shape[0], _NY))
    advance_inplace(0.0, xn, u, dt, y, pu, kind, ad, bd)
    return xn, y


class Bus(stepper.Asset):
    """The buses of ``n`` nodes, each with its own :class:`BusParams`.

    Inputs: ``p_load_w`` (consumed by racks and loads), ``p_gen_w`` (delivered by the
    grid-following sources), ``islanded`` (0 or 1), and the dispatch of the droop sources,
    ``p_gov_set_w`` and ``p_gfm_set_w``.  In an island the droop sources carry the imbalance:
    ``p_gov_w`` and ``p_gfm_w`` are the powers a node model hands to the genset and to the
    grid-forming converters (which must then not be counted in ``p_gen_w``).
    """

    kind: ClassVar[str] = "bus"
    state_names: ClassVar[tuple[str, ...]] = (
        "df_pu", "p_gov_pu", "p_gfm_pu", "e_src_wh", "e_damp_wh", "e_grid_wh", "e_load_wh",
        "e_gen_wh", "e_unserved_wh", "e_curtailed_wh")
    input_names: ClassVar[tuple[str, ...]] = ("p_load_w", "p_gen_w", "islanded", "p_gov_set_w",
                                              "p_gfm_set_w")
    held_names: ClassVar[tuple[str, ...]] = (
        "p_net_pu", "p_gov_set_pu", "p_gfm_set_pu", "islanded", "p_w", "p_unserved_w",
        "p_curtailed_w", "p_load_served_w", "p_gen_used_w", "import_limited", "export_limited")
    output_names: ClassVar[tuple[str, ...]] = (
        "p_w", "freq_hz", "rocof_hz_per_s", "p_gov_w", "p_gfm_w", "p_unserved_w",
        "p_curtailed_w", "import_limited", "export_limited", "islanded", "e_grid_wh",
        "e_src_wh", "e_damp_wh", "e_load_wh", "e_gen_wh", "e_unserved_wh", "e_curtailed_wh",
        "e_kinetic_wh")

    def __init__(self, params: BusParams | Sequence[BusParams], n: int | None = None) -> None:
        plist = stepper.per_unit(params, n, BusParams, "bus")
        self.n = len(plist)
        self.params = plist
        # nodes share parameter sets: keep one row (and one set of matrices) per distinct set
        unique: dict[BusParams, int] = {}
        self._kind = np.array([unique.setdefault(p, len(unique)) for p in plist],
                              dtype=np.int64)
        sets = list(unique)
        par = np.array([[p.s_base_va, p.import_max_w, p.export_max_w, p.h_s, p.d_pu,
                         p.f_nom_hz, p.sync_tau_s] for p in sets])
        a = np.empty((len(sets), 2, _NZ, _NZ))
        b = np.empty((len(sets), 2, _NZ, 3))
        for k, p in enumerate(sets):
            for m in (0, 1):
                a[k, m], b[k, m] = swing_matrices(p, islanded=bool(m))
        self._a, self._b = a, b
        # each unit's parameters and RoCoF row, a row per quantity (the kernels' passes read
        # them as vectors)
        rocof = np.concatenate((a[:, :, 0, :3], b[:, :, 0, :1]), axis=2).reshape(len(sets), 8)
        self._pu = np.ascontiguousarray(np.hstack((par, rocof))[self._kind].T)
        self._disc: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_params(cls, pset: ParamSet, n: int = 1) -> Bus:
        return cls(BusParams.from_params(pset), n=n)

    def _discrete(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        d = self._disc.get(dt)
        if d is None:
            d = stepper.discretise(self._a, self._b, dt)
            d = (np.ascontiguousarray(d[0]), np.ascontiguousarray(d[1]))
            self._disc[dt] = d
        return d

    def initial_state(self) -> np.ndarray:
        """At nominal frequency, droop sources idle, counters at zero."""
        return np.zeros((self.n, len(self.state_names)))

    def hold(self, t: float, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        return _hold_kernel(np.ascontiguousarray(x, dtype=float),
                            np.ascontiguousarray(u, dtype=float), self._pu)

    def rhs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        m = (w[_WISL] > 0.5).astype(int)
        dx = np.empty_like(x)
        dx[:, :_NZ] = (np.einsum("nij,nj->ni", self._a[self._kind, m], x[:, :_NZ])
                       + np.einsum("nij,nj->ni", self._b[self._kind, m], w[:3].T))
        dx[:, _ELOAD] = w[_WLOAD] / S_PER_H
        dx[:, _EGEN] = w[_WGEN] / S_PER_H
        dx[:, _EUNS] = w[_WUNS] / S_PER_H
        dx[:, _ECURT] = w[_WCURT] / S_PER_H
        return dx

    def step_exact(self, x: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
        ad, bd = self._discrete(dt)
        return _step_kernel(np.ascontiguousarray(x, dtype=float), w, self._kind, ad, bd, dt)

    def outputs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _outputs_kernel(np.ascontiguousarray(x, dtype=float), w, self._pu)

    def advance(self, t: float, x: np.ndarray, u: np.ndarray,
                dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Hold, outputs at ``t`` and the exact step in one compiled call: ``(x_next, y)``."""
        ad, bd = self._discrete(dt)
        return _advance_kernel(x, u, self._pu, self._kind, ad, bd, dt)

    def kernel_args(self, dt: float) -> tuple[np.ndarray, ...]:
        """The arrays :func:`advance_inplace` takes after ``y`` for steps of ``dt``."""
        return (self._pu, self._kind) + self._discrete(dt)
