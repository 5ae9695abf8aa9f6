"""A GPU rack as a load on a node bus: N GPUs, their host, fans and power supplies.

Electrical chain of one rack::

    P_gpu  = sum over groups of (GPUs in group) x (GPU power, twin.gpu)
    P_dc   = P_gpu + P_host + P_network + P_fan(T_gpu)        (IT power)
    P_ac   = P_dc / eta_psu(P_dc / P_psu_rated)               (drawn from the bus, + consuming)
    P_fan  = P_fan_min + (P_fan_max - P_fan_min) * x**3,  x = clip((T - T_low)/(T_high - T_low))

Fans follow the mean GPU die temperature between two thresholds; their power goes with the
cube of their speed (fan affinity law).  The power-supply efficiency is a table over load
fraction (80 PLUS Titanium points in the shipped file).

Desynchronised GPUs without N GPU states: the GPUs of a rack are split into K groups; each
group has its own schedule (e.g. from :func:`twin.workload.desynchronise`) and its own GPU
state, and stands for its GPUs, which are identical within the group.  Rack power is
exact when the GPUs of a group do the same thing (one synchronous job with K offsets); a
finer spread of offsets needs more groups, and the cost of a step is linear in K.

Limits, all on the rack:

``power_cap_w`` (input, AC watts; 0 or NaN: none)
    is held two ways, as a rack power-capping controller does: each GPU gets the power limit
    that leaves the cap's share after overhead and PSU losses (between the card's minimum and
    default limits), which its own limiter enforces on its averaged power; and a power brake
    holds the AC power at the cap in every step (the GPUs lose the excess at once).
``power_floor_w`` and the ramp limits (parameters; 0: none)
    are the power smoothing of newer GPUs: the GPUs never draw less than the floor nor fall
    faster than ``ramp_down_w_per_s``, burning the difference (counted in ``e_burn_wh``), and
    never rise faster than ``ramp_up_w_per_s`` (they are throttled).  The cap wins over the
    floor.  Burnt and braked power heat and are measured by the GPUs like any other.

Thermal protection, as a card's own: above its slowdown temperature (``temp_slowdown_c``)
a GPU's clock ceiling falls linearly to the lowest clock at its shutdown temperature
(:func:`twin.gpu.clock_ceiling`), so a rack in hot air or with poor cooling settles a
degree or two above the slowdown temperature at the power its cooling carries away.  Where
even the lowest clock draws more (leakage grows exponentially with temperature), a GPU
whose die reaches its shutdown temperature (``temp_shutdown_c``) switches off
(:func:`twin.gpu.gpu_steps`: no power, clock stopped) until it has cooled below it, instead
of letting leakage run away to infinite power; floor and ramp-down limits are waived while
it is off (an off GPU burns nothing).  Below the slowdown temperature the fitted model is
untouched.  (A real card, once shut down, waits for a reset: the twin keeps the node's load
bounded and says so.)

``phase`` is the load code (:data:`twin.workload.LOADS`) of group 0 at the step start;
``limited`` is 1 when the cap or a ramp limit held the rack's power down in the step, or a
GPU was in thermal slowdown or off at its shutdown temperature.
The fused :meth:`GpuRack.advance` does hold, outputs and step in one numba call; it splits
steps longer than :data:`twin.gpu.MAX_STEP_S` and looks the schedules up with cursors.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numba
import numpy as np

from twin import params as _params
from twin import vecmath
from twin.errors import ParameterError, TwinError
from twin.gpu import (
    AVG_STAGES,
    C_A_AVG,
    C_B1P,
    C_B2P,
    C_SHUTDOWN,
    C_SLOWDOWN,
    NX,
    STATE_NAMES,
    GpuParams,
    PredictionError,
    clock_ceiling,
    clock_for,
    coefficients,
    gpu_steps,
    initial_state,
    load_params,
    substeps,
)
from twin.gpu import activity as gpu_activity
from twin.params import Table, did_you_mean
from twin.stepper import Asset
from twin.units import S_PER_H
from twin.workload import Schedule

#: the shipped rack: an 8-GPU H100 SXM server
H100_8GPU = Path(__file__).with_name("data") / "rack_h100_8gpu.toml"


@dataclass(frozen=True)
class RackParams:
    """Parameters of one GPU rack (server or rack of servers behind one feed)."""

    #: GPUs in the rack
    gpus: int
    #: CPUs, memory, storage and management at their typical load [W]
    host_w: float
    #: NICs and GPU switches [W]
    network_w: float
    #: fan power at the lowest and the highest speed [W]
    fan_min_w: float
    fan_max_w: float
    #: mean GPU die temperature where fans start to speed up, and reach full speed [degC]
    fan_temp_low_c: float
    fan_temp_high_c: float
    #: rated output of the power supplies sharing the load [W]
    psu_rated_w: float
    #: PSU efficiency over load fraction (axis ``load_fraction``) [fraction]
    psu_efficiency: Table
    #: GPU parameter file, relative to the rack file
    gpu_params: str = "gpu_h100_sxm.toml"
    #: lowest power limit a GPU accepts [W]
    gpu_power_limit_min_w: float = 200.0
    #: power smoothing: least power the rack's GPUs draw together (0: none) [W]
    power_floor_w: float = 0.0
    #: power smoothing: fastest rise and fall of the rack's GPU power (0: none) [W/s]
    ramp_up_w_per_s: float = 0.0
    ramp_down_w_per_s: float = 0.0

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ParameterError(f"params.gpus: must be >= 1, got {self.gpus}")
        for name in ("host_w", "network_w", "fan_min_w", "gpu_power_limit_min_w",
                     "power_floor_w", "ramp_up_w_per_s", "ramp_down_w_per_s"):
            if getattr(self, name) < 0:
                raise ParameterError(f"params.{name}: must be >= 0, got {getattr(self, name)}")
        if self.fan_max_w < self.fan_min_w:
            raise ParameterError("params.fan_max_w: must be >= fan_min_w")
        if not self.fan_temp_high_c > self.fan_temp_low_c:
            raise ParameterError("params.fan_temp_high_c: must be above fan_temp_low_c")
        if not self.psu_rated_w > 0:
            raise ParameterError(f"params.psu_rated_w: must be > 0, got {self.psu_rated_w}")
        if self.psu_efficiency.axis_names != ("load_fraction",):
            raise ParameterError("params.psu_efficiency: needs the one axis 'load_fraction'")
        eff = self.psu_efficiency.values
        if not np.all((eff > 0) & (eff <= 1)):
            raise ParameterError("params.psu_efficiency: values must be in (0, 1]")

    def replace(self, **changes: object) -> RackParams:
        return dataclasses.replace(self, **changes)


def load_rack(path: str | Path = H100_8GPU) -> tuple[RackParams, GpuParams, float | None]:
    """Read a ``kind = "gpu_rack"`` file and the GPU file it names.

    Returns the rack's parameters, its GPUs' parameters and their initial die temperature.
    """
    path = Path(path)
    pset = _params.load(path)
    if pset.kind != "gpu_rack":
        raise ParameterError(f"{path}: meta.kind is '{pset.kind}', expected 'gpu_rack'")
    try:
        rack = _params.from_mapping(RackParams, pset.params)
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}") from None
    gpu, temp = load_params(path.parent / rack.gpu_params)
    return rack, gpu, temp


def fan_power_w(p: RackParams, temp_gpu_c: np.ndarray | float) -> np.ndarray:
    """Fan power at a mean GPU die temperature (speed linear in temperature, power as the
    cube of speed). [W]"""
    x = np.clip((np.asarray(temp_gpu_c, dtype=float) - p.fan_temp_low_c)
                / (p.fan_temp_high_c - p.fan_temp_low_c), 0.0, 1.0)
    return p.fan_min_w + (p.fan_max_w - p.fan_min_w) * x**3


def ac_power_w(p: RackParams, p_dc_w: np.ndarray | float) -> np.ndarray:
    """AC input power of the power supplies delivering ``p_dc_w``. [W]"""
    dc = np.asarray(p_dc_w, dtype=float)
    return dc / p.psu_efficiency(load_fraction=dc / p.psu_rated_w)


# --- the kernel -------------------------------------------------------------------------

_EXTRA = ("p_gpu_w", "energy_wh", "e_burn_wh")
OUTPUT_NAMES = ("p_w", "p_dc_w", "p_gpu_w", "energy_wh", "e_burn_wh", "temp_c",
                "power_cap_w", "phase", "limited", "clock_mhz")
# Rack parameter vector layout (after these: the GPU limits, smoothing and clock).
_R = ("gpus", "host_w", "network_w", "fan_min_w", "fan_max_w", "fan_temp_low_c",
      "fan_temp_high_c", "psu_rated_w")


@numba.njit(cache=True, error_model="numpy")
def _dc_for_ac(ac_w, rated_w, xs, ys):
    """DC power whose AC input is ``ac_w``: ``P / eta(P / rated) = ac`` solved exactly on
    the efficiency table's linear pieces (constant beyond its ends)."""
    n = xs.shape[0]
    p = ac_w * ys[0]
    if p <= xs[0] * rated_w:
        return p
    for i in range(n - 1):
        b = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) / rated_w  # eta = a + b P
        a = ys[i] - b * xs[i] * rated_w
        p = ac_w * a / (1.0 - ac_w * b)
        if p <= xs[i + 1] * rated_w:
            return p
    return ac_w * ys[n - 1]


@numba.njit(cache=True, error_model="numpy")
def _integral(sched, lo, hi, i, t):
    """Running activity integral at ``t`` of entries ``[lo, hi)``, with cursor ``i``.

    Returns the integral and the new cursor (last entry starting at or before ``t``, or
    ``lo - 1``).  Forward in time the cursor walks; backwards it is found by bisection.
    """
    if i >= lo and sched[i, 0] > t:
        a, b = lo, hi
        while a < b:
            m = (a + b) // 2
            if sched[m, 0] <= t:
                a = m + 1
            else:
                b = m
        i = a - 1
    while i + 1 < hi and sched[i + 1, 0] <= t:
        i += 1
    if i < lo:
        return 0.0, i
    return sched[i, 3] + sched[i, 2] * min(max(t - sched[i, 0], 0.0), sched[i, 1]), i


# rows of advance_inplace's scratch array (then per group: activity, power, clock)
(_W_DC_CAP, _W_TSUM, _W_LIM, _W_BUDGET, _W_P_OH, _W_P_NAT, _W_CLK, _W_THROTTLED, _W_OFF,
 _W_HOT, _W_DP, _W_IDX, _W_LIMITED, _W_ROWS) = range(14)


@numba.njit(cache=True, error_model="numpy")
def _temp_sum(x, sizes, tsum):
    """``tsum[r]``: the sum over rack ``r``'s groups of their GPUs' die temperatures."""
    vecmath.fill(tsum, 0.0)
    for k in range(sizes.shape[0]):
        x_die = x[:, k * NX + 2]
        for r in range(x.shape[0]):
            tsum[r] += sizes[k] * x_die[r]


@numba.njit(cache=True, error_model="numpy")
def _psu_efficiency(p_dc_w, inv_rated, xs, ys, idx, eff):
    """``eff[r]``: the supply's efficiency table (load fraction ``xs``, efficiency ``ys``) at
    the DC power ``p_dc_w[r]``, linear between breakpoints and held beyond its ends; the
    segment found by counting the breakpoints below, so every unit takes the same path."""
    m = xs.shape[0]
    for r in range(p_dc_w.shape[0]):
        idx[r] = 0.0
    for j in range(1, m - 1):
        xj = xs[j]
        for r in range(p_dc_w.shape[0]):
            idx[r] += 1.0 if xj < p_dc_w[r] * inv_rated else 0.0
    for r in range(p_dc_w.shape[0]):
        f = p_dc_w[r] * inv_rated
        i = int(idx[r])
        inner = ys[i] + (ys[i + 1] - ys[i]) * (f - xs[i]) / (xs[i + 1] - xs[i])
        e = ys[m - 1] if f >= xs[m - 1] else inner
        eff[r] = ys[0] if f <= xs[0] else e


@numba.njit(cache=True, error_model="numpy")
def advance_inplace(t, x, u, dt, y, sub, c, rp, psu, sched, span, cur, memo, capmemo, sizes):
    """One lockstep step of every rack: ``x`` becomes the state at ``t + dt`` (in place),
    ``y`` the outputs over ``[t, t + dt)``; the arguments after ``y`` are
    :meth:`GpuRack.kernel_args`.

    ``cur`` and ``memo`` cache, per group, the schedule cursor and the activity integral
    at the end of the previous step, which is where this step starts when time runs on;
    ``capmemo`` caches, per rack, the last cap and the DC power it allows.  A rack's state
    is read at its start before it is written, so stepping in place is exact.

    The schedules are looked up rack by rack (cursors, branches); the physics then runs a
    pass at a time over every rack (:func:`twin.gpu.gpu_steps` per group, overhead, limits,
    supply) without branches, so with ``x`` and ``y`` stored column by column (the fused
    step's arena) each pass runs as SIMD vectors.
    """
    n = x.shape[0]
    k_groups = sizes.shape[0]
    g0 = k_groups * NX
    h = dt / sub
    inv_h = 1.0 / h
    inv_sub = 1.0 / sub
    wh = h / 3600.0
    gpus = rp[0]
    inv_gpus = 1.0 / gpus
    inv_fan = 1.0 / (rp[6] - rp[5])
    inv_rated = 1.0 / rp[7]
    floor_w, ramp_up, ramp_down = rp[10], rp[11], rp[12]
    w = np.empty((_W_ROWS + 3 * k_groups, n))
    dc_cap, tsum, lim, budget, p_oh = w[_W_DC_CAP], w[_W_TSUM], w[_W_LIM], w[_W_BUDGET], w[_W_P_OH]
    p_nat, clk, throttled, off, dp = w[_W_P_NAT], w[_W_CLK], w[_W_THROTTLED], w[_W_OFF], w[_W_DP]
    idx, limited, hot = w[_W_IDX], w[_W_LIMITED], w[_W_HOT]
    # columns as vectors (contiguous where x and y are stored column by column: the loops
    # over racks below then run as SIMD vectors)
    x_gpu, x_energy, x_burn = x[:, g0], x[:, g0 + 1], x[:, g0 + 2]
    y_ac, y_dc, y_gpu, y_clk = y[:, 0], y[:, 1], y[:, 2], y[:, 9]
    for j in range(y.shape[1]):
        vecmath.fill(y[:, j], 0.0)
    for r in range(n):
        cap = u[r, 0]
        if not cap > 0.0:
            dc_cap[r] = math.inf
            y[r, 6] = 0.0
        elif capmemo[0, r] == cap:
            dc_cap[r] = capmemo[1, r]
            y[r, 6] = cap
        else:
            dc_cap[r] = _dc_for_ac(cap, rp[7], psu[0], psu[1])
            capmemo[0, r] = cap
            capmemo[1, r] = dc_cap[r]
            y[r, 6] = cap
    _temp_sum(x, sizes, tsum)
    vecmath.copy(x_energy, y[:, 3])
    vecmath.copy(x_burn, y[:, 4])
    for r in range(n):
        y[r, 5] = tsum[r] * inv_gpus
    vecmath.fill(limited, 0.0)
    for s in range(sub):
        ts = t + s * h
        # the schedules: each group's mean activity over the sub-step
        for r in range(n):
            for k in range(k_groups):
                j = r * k_groups + k
                if abs(memo[0, j] - ts) < 1e-9:
                    a0 = memo[1, j]
                    i = cur[j]
                else:
                    a0, i = _integral(sched, span[j, 0], span[j, 1], cur[j], ts)
                if s == 0 and k == 0:  # phase: group 0's load at the step start
                    inside = i >= span[j, 0] and ts < sched[i, 0] + sched[i, 1]
                    y[r, 7] = sched[i, 4] if inside else 0.0
                a1, i = _integral(sched, span[j, 0], span[j, 1], i, ts + h)
                cur[j] = i
                memo[0, j] = ts + h
                memo[1, j] = a1
                w[_W_ROWS + k, r] = (a1 - a0) * inv_h
        # overhead (fans follow the mean die temperature) and the GPUs' share of the cap
        for r in range(n):
            xf = min(max((tsum[r] * inv_gpus - rp[5]) * inv_fan, 0.0), 1.0)
            p_oh[r] = rp[1] + rp[2] + rp[3] + (rp[4] - rp[3]) * xf * xf * xf
            budget[r] = dc_cap[r] - p_oh[r]
            lim[r] = min(max(budget[r] * inv_gpus, rp[8]), rp[9])
        for zeros in (p_nat, clk, throttled, off, hot):
            vecmath.fill(zeros, 0.0)
        for k in range(k_groups):
            pk, ck = w[_W_ROWS + k_groups + k], w[_W_ROWS + 2 * k_groups + k]
            x_die = x[:, k * NX + 2]
            for r in range(n):  # whether the group starts the step slowed down or shut down
                hot[r] = 1.0 if x_die[r] > c[C_SLOWDOWN] else hot[r]
                off[r] = 1.0 if x_die[r] >= c[C_SHUTDOWN] else off[r]
            gpu_steps(c, x, k * NX, w[_W_ROWS + k], lim, pk, ck)
            for r in range(n):
                p_nat[r] += sizes[k] * pk[r]
                clk[r] += sizes[k] * ck[r]
                throttled[r] = 1.0 if ck[r] < 0.999 else throttled[r]
        # the floor and ramps on the rack's GPU power (waived for GPUs that shut down: they
        # burn nothing); what they add or take heats the GPUs and enters their limiters
        for r in range(n):
            prev = x_gpu[r]
            lower = max(floor_w, prev - ramp_down * h) if ramp_down > 0.0 else floor_w
            lower = 0.0 if off[r] > 0.0 else lower
            upper = min(budget[r], prev + ramp_up * h) if ramp_up > 0.0 else budget[r]
            p_gpu = min(max(p_nat[r], lower), upper)
            dp[r] = p_gpu - p_nat[r]
            x_gpu[r] = p_gpu
        f = 1.0 - c[C_A_AVG]
        b1p, b2p = c[C_B1P], c[C_B2P]
        for k in range(k_groups):
            pk = w[_W_ROWS + k_groups + k]
            o = k * NX
            x_die, x_sink = x[:, o + 2], x[:, o + 3]
            x_avg0, x_avg1, x_avg2 = x[:, o + 4], x[:, o + 5], x[:, o + 6]
            for r in range(n):
                # exact: the GPU step's thermal and averaging updates are linear in its power
                q = dp[r] * pk[r] / p_nat[r] if dp[r] != 0.0 and p_nat[r] > 0.0 else 0.0
                x_die[r] += b1p * q
                x_sink[r] += b2p * q
                x_avg0[r] += f * q
                x_avg1[r] += f * f * q
                x_avg2[r] += f * f * f * q
        for r in range(n):
            p_oh[r] += x_gpu[r]  # now the DC power
        _psu_efficiency(p_oh, inv_rated, psu[0], psu[1], idx, budget)
        for r in range(n):
            p_dc = p_oh[r]
            p_ac = p_dc / budget[r]
            x_energy[r] += p_ac * wh
            x_burn[r] += max(dp[r], 0.0) * wh
            y_ac[r] += p_ac * inv_sub
            y_dc[r] += p_dc * inv_sub
            y_gpu[r] += x_gpu[r] * inv_sub
            y_clk[r] += clk[r] * inv_gpus * rp[13] * inv_sub
            hit = (dp[r] < -1e-9 or (lim[r] < rp[9] and throttled[r] > 0.0) or hot[r] > 0.0
                   or off[r] > 0.0)
            limited[r] = 1.0 if hit else limited[r]
        if sub > 1:
            _temp_sum(x, sizes, tsum)
    vecmath.copy(limited, y[:, 8])


@numba.njit(cache=True, error_model="numpy")
def _advance(t, dt, sub, x, u, c, rp, psu, sched, span, cur, memo, capmemo, sizes):
    """``(x at t + dt, outputs over [t, t + dt))`` of :func:`advance_inplace`, both stored
    column by column (where its loops run as SIMD vectors)."""
    xn = np.empty((x.shape[1], x.shape[0])).T
    xn[:, :] = x
    y = np.empty((len(OUTPUT_NAMES), x.shape[0])).T
    advance_inplace(t, xn, u, dt, y, sub, c, rp, psu, sched, span, cur, memo, capmemo, sizes)
    return xn, y


class GpuRack(Asset):
    """``n`` GPU racks, each running its own schedules (one per group of GPUs).

    Parameters
    ----------
    rack : the racks' parameters (shared).
    gpu : their GPUs' parameters.
    schedules : per rack, a schedule (one group) or a sequence of K schedules (K groups of
        GPUs, sizes as equal as possible); every rack has the same K.
    temp_c : initial GPU die temperature; None means idle steady state. [degC]
    """

    kind: ClassVar[str] = "gpu_rack"
    input_names: ClassVar[tuple[str, ...]] = ("power_cap_w",)
    output_names: ClassVar[tuple[str, ...]] = OUTPUT_NAMES
    state_names: tuple[str, ...]  # type: ignore[misc]
    held_names: tuple[str, ...]  # type: ignore[misc]

    def __init__(self, rack: RackParams, gpu: GpuParams,
                 schedules: Sequence[Schedule | Sequence[Schedule]],
                 temp_c: float | None = None) -> None:
        if not schedules:
            raise TwinError("gpu_rack: needs a schedule for at least one rack")
        per_rack = [[s] if isinstance(s, Schedule) else list(s) for s in schedules]
        k = len(per_rack[0])
        if k < 1 or any(len(g) != k for g in per_rack):
            raise TwinError("gpu_rack: every rack needs the same number (>= 1) of group "
                            "schedules")
        if k > rack.gpus:
            raise TwinError(f"gpu_rack: {k} groups for {rack.gpus} GPUs")
        self.rack, self.gpu, self.n, self.groups = rack, gpu, len(per_rack), k
        self.temp_c = temp_c
        self.sizes = np.array([rack.gpus // k + (1 if i < rack.gpus % k else 0)
                               for i in range(k)], dtype=float)
        self.state_names = tuple(f"g{i}.{name}" for i in range(k)
                                 for name in STATE_NAMES) + _EXTRA
        self.held_names = ("t_s", "dt_s", "power_cap_w") + tuple(f"activity_{i}"
                                                                 for i in range(k))
        flat = [s for group in per_rack for s in group]
        self._sched, self._span = _pack(flat, gpu)
        self._cursor = self._span[:, 0] - 1
        self._memo = np.full((2, len(self._cursor)), np.nan)
        self._capmemo = np.full((2, self.n), np.nan)
        self._rp = np.array([float(getattr(rack, name)) for name in _R]
                            + [rack.gpu_power_limit_min_w, gpu.power_limit_w,
                               rack.power_floor_w, rack.ramp_up_w_per_s,
                               rack.ramp_down_w_per_s, gpu.clock_max_mhz])
        axis = rack.psu_efficiency.axes[0][1]
        self._psu = np.vstack([axis, rack.psu_efficiency.values])
        self._coeffs: dict[float, np.ndarray] = {}

    def _c(self, h: float) -> np.ndarray:
        c = self._coeffs.get(h)
        if c is None:
            c = self._coeffs[h] = coefficients(self.gpu, h)
        return c

    def initial_state(self) -> np.ndarray:
        g = initial_state(self.gpu, self.temp_c)
        x = np.concatenate([np.tile(g, self.groups), [self.rack.gpus * g[1], 0.0, 0.0]])
        return np.tile(x, (self.n, 1))

    def advance(self, t: float, x: np.ndarray, u: np.ndarray, dt: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """Hold, outputs and exact step in one call: ``(x at t + dt, outputs at t)``."""
        sub = substeps(dt)
        return _advance(float(t), float(dt), sub, x, u, self._c(dt / sub), self._rp,
                        self._psu, self._sched, self._span, self._cursor, self._memo,
                        self._capmemo, self.sizes)

    def kernel_args(self, dt: float) -> tuple[Any, ...]:
        """What :func:`advance_inplace` takes after ``y`` for steps of ``dt``: the sub-steps,
        the model's arrays and the schedule lookup caches (updated by every step)."""
        sub = substeps(dt)
        return (sub, self._c(dt / sub), self._rp, self._psu, self._sched, self._span,
                self._cursor, self._memo, self._capmemo, self.sizes)

    def run(self, t_end: float, dt: float, power_cap_w: float | np.ndarray = 0.0,
            t0: float = 0.0) -> dict[str, np.ndarray]:
        """Outputs of every step from ``t0`` to ``t_end`` with a constant cap, by name,
        each ``(steps, n)`` (``(steps,)`` for one rack), plus ``t_s``.

        Like :func:`twin.gpu.simulate`, a run whose mean GPU die passes the card's
        shutdown temperature, or whose power stops being finite, is a
        :class:`~twin.gpu.PredictionError` naming the time (checked after the run).
        """
        steps = max(1, math.ceil((t_end - t0) / dt - 1e-9))
        x = self.initial_state()
        u = self.input_array(power_cap_w=power_cap_w)
        y = np.empty((steps, self.n, len(self.output_names)))
        for k in range(steps):
            x, y[k] = self.advance(t0 + k * dt, x, u, dt)
        temp = y[:, :, OUTPUT_NAMES.index("temp_c")]
        ok = np.isfinite(y[:, :, 0]) & (temp <= self.gpu.temp_shutdown_c)
        if not ok.all():
            k, r = np.unravel_index(int(np.argmin(ok)), ok.shape)
            raise PredictionError(
                f"gpu_rack {r}: at t = {t0 + k * dt:.2f} s its GPUs pass their shutdown "
                f"temperature ({self.gpu.temp_shutdown_c:g} degC; mean die "
                f"{temp[k, r]:.1f} degC, rack {y[k, r, 0]:.0f} W): thermal runaway, as "
                "leakage grows exponentially with temperature and the model does not "
                f"throttle; check the GPUs' ambient_c ({self.gpu.ambient_c:g} degC)")
        out = {name: (y[:, :, i] if self.n > 1 else y[:, 0, i])
               for i, name in enumerate(self.output_names)}
        out["t_s"] = t0 + dt * np.arange(steps)
        return out

    def hold(self, t: float, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        """The step's time and length, the cap, and each group's mean activity over it."""
        w = np.empty((self.n, len(self.held_names)))
        w[:, 0] = t
        w[:, 1] = dt
        w[:, 2] = u[:, 0]
        for j in range(self.n * self.groups):
            lo, hi = self._span[j]
            a0, i = _integral(self._sched, lo, hi, self._cursor[j], t)
            a1, _ = _integral(self._sched, lo, hi, i, t + dt)
            w[j // self.groups, 3 + j % self.groups] = (a1 - a0) / dt
        return w

    def outputs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Outputs of the step held in ``w`` (powers are means over it, the rest at ``t``)."""
        return self._run(x, w)[1]

    def step_exact(self, x: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
        return self._run(x, w)[0]

    def _run(self, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dt = float(w[0, 1])
        sub = substeps(dt)
        return _advance(float(w[0, 0]), dt, sub, x, w[:, 2:3].copy(), self._c(dt / sub),
                        self._rp, self._psu, self._sched, self._span, self._cursor,
                        self._memo, self._capmemo, self.sizes)

    def rhs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The continuous-time model with the held activities: the reference for
        :meth:`step_exact` (limiter, electrical lag, average, heat, energies)."""
        g, r = self.gpu, self.rack
        k, nx = self.groups, NX
        dx = np.zeros_like(x)
        cap = w[:, 2]
        has_cap = cap > 0
        temps = x[:, [i * nx + 2 for i in range(k)]]
        tmean = temps @ self.sizes / r.gpus
        p_oh = r.host_w + r.network_w + fan_power_w(r, tmean)
        budget = np.full(self.n, np.inf)
        if has_cap.any():
            axis, eff = r.psu_efficiency.axes[0][1], r.psu_efficiency.values
            it = np.array([_dc_for_ac(c, r.psu_rated_w, axis, eff) for c in cap])
            budget = np.where(has_cap, it - p_oh, np.inf)
        lim = np.where(has_cap, np.clip(budget / r.gpus, r.gpu_power_limit_min_w,
                                        g.power_limit_w), g.power_limit_w)
        phi_min = g.clock_min_ratio
        coeffs = self._c(1.0)  # what clock_ceiling reads does not depend on the step
        tau_p = max(g.power_tau_s, 1e-4)
        tau_avg = g.limit_avg_tau_s / AVG_STAGES
        p_nat = np.zeros(self.n)
        pe = np.empty((self.n, k))
        off_any = np.zeros(self.n, dtype=bool)
        for i in range(k):
            xs = x[:, i * nx:(i + 1) * nx]
            phi, pe[:, i], tdie = xs[:, 0], xs[:, 1], xs[:, 2]
            off = tdie >= g.temp_shutdown_c  # shut down: draws nothing (gpu_steps)
            off_any |= off
            pstat = np.where(off, 0.0, g.idle_w + g.leak_w * np.expm1(
                (np.minimum(tdie, g.temp_shutdown_c) - g.temp_ref_c) / g.leak_temp_c))
            dyn = np.where(off, 0.0, w[:, 3 + i] * g.dynamic_w)
            pavg, integ = xs[:, 3 + AVG_STAGES], xs[:, 4 + AVG_STAGES]
            b = np.minimum(g.burst_limit_ratio * lim,
                           lim + g.limit_gain * (lim - pavg) + integ)
            span = (g.burst_limit_ratio - 1.0) * lim
            di = g.limit_integral_per_s * (lim - pavg)
            dx[:, i * nx + 4 + AVG_STAGES] = np.where(
                ((integ >= span) & (di > 0)) | ((integ <= -span) & (di < 0)), 0.0, di)
            need = np.where(dyn > 1e-9, (b - pstat) / np.maximum(dyn, 1e-9), np.inf)
            target = np.array([min(clock_for(v, phi_min, g.voltage_min, 1.0, 6),
                                   clock_ceiling(coeffs, t)) for v, t in zip(need, tdie)])
            target = np.where(off, phi_min, target)
            tau = np.where(target < phi, g.clock_down_tau_s, g.clock_up_tau_s)
            dx[:, i * nx] = (target - phi) / tau
            v = g.voltage_min + (1 - g.voltage_min) * (phi - phi_min) / (1 - phi_min)
            dx[:, i * nx + 1] = (pstat + dyn * phi * v * v - pe[:, i]) / tau_p
            p_nat += self.sizes[i] * pe[:, i]
        lower = np.where(off_any, 0.0, r.power_floor_w)
        p_gpu_target = np.minimum(np.maximum(p_nat, lower), budget)
        p_gpu = x[:, -3]
        rate = (p_gpu_target - p_gpu) / tau_p
        if r.ramp_up_w_per_s > 0:
            rate = np.minimum(rate, r.ramp_up_w_per_s)
        if r.ramp_down_w_per_s > 0:
            rate = np.where(off_any, rate, np.maximum(rate, -r.ramp_down_w_per_s))
        dx[:, -3] = rate
        scale = np.where(p_nat > 0, p_gpu / np.maximum(p_nat, 1e-9), 1.0)
        gd, hs = 1.0 / g.r_die_c_per_w, 1.0 / g.r_sink_c_per_w
        c_die, c_sink = g.tau_die_s * gd, g.tau_sink_s * hs
        for i in range(k):
            o = i * nx
            p_i = pe[:, i] * scale
            tdie, tsink = x[:, o + 2], x[:, o + 3]
            dx[:, o + 2] = (p_i - gd * (tdie - tsink)) / c_die
            dx[:, o + 3] = (gd * (tdie - tsink) - hs * (tsink - g.ambient_c)) / c_sink
            u_in = p_i
            for s in range(AVG_STAGES):
                dx[:, o + 4 + s] = (u_in - x[:, o + 4 + s]) / tau_avg
                u_in = x[:, o + 4 + s]
        p_dc = p_gpu + p_oh
        dx[:, -2] = ac_power_w(r, p_dc) / S_PER_H
        dx[:, -1] = np.maximum(p_gpu - p_nat, 0.0) / S_PER_H
        return dx


def _pack(schedules: Sequence[Schedule], gpu: GpuParams) -> tuple[np.ndarray, np.ndarray]:
    """Schedules as one array ``(entries, 5)`` (start, seconds, activity, running
    integral, load code; an entry's fields side by side in memory) and the span
    ``[lo, hi)`` of each schedule's entries; a schedule given for several groups (racks
    running one job) is stored once."""
    rows: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    stored: dict[int, tuple[int, int]] = {}
    end = 0
    for s in schedules:
        if id(s) not in stored:
            a = gpu_activity(gpu, s.load, s.mfu)
            cum = np.concatenate(([0.0], np.cumsum(a * s.seconds)[:-1])) if len(s) else a
            rows.append(np.column_stack([s.t_s, s.seconds, a, cum, s.load.astype(float)]))
            stored[id(s)] = (end, end + len(s))
            end += len(s)
        spans.append(stored[id(s)])
    return np.vstack(rows), np.array(spans, dtype=np.int64).reshape(-1, 2)


# --- racks replaying traces -----------------------------------------------------------

_TY_P, _TY_E, _TY_BURN, _TY_CAP, _TY_LIM = (OUTPUT_NAMES.index(n) for n in (
    "p_w", "energy_wh", "e_burn_wh", "power_cap_w", "limited"))


@numba.njit(cache=True, error_model="numpy")
def _trace_hold(p_w, u):
    """Held ``(p_w, power_cap_w, limited)`` of racks whose traces read ``p_w``: the trace,
    not negative (NaN reads as 0), clipped to the cap when one is set."""
    n = p_w.shape[0]
    w = np.empty((n, 3))
    for r in range(n):
        p = p_w[r] if p_w[r] > 0.0 else 0.0
        cap = u[r, 0]
        capped = cap > 0.0 and p > cap
        w[r, 0] = cap if capped else p
        w[r, 1] = cap
        w[r, 2] = 1.0 if capped else 0.0
    return w


@numba.njit(cache=True, error_model="numpy")
def _trace_outputs_into(x, w, y):
    for r in range(x.shape[0]):
        y[r, :] = np.nan
        y[r, _TY_P] = w[r, 0]
        y[r, _TY_E] = x[r, 0]
        y[r, _TY_BURN] = 0.0
        y[r, _TY_CAP] = w[r, 1]
        y[r, _TY_LIM] = w[r, 2]


@numba.njit(cache=True, error_model="numpy")
def _trace_step_into(x, w, dt, xn):
    for r in range(x.shape[0]):
        xn[r, 0] = x[r, 0] + w[r, 0] * (dt / S_PER_H)


@numba.njit(cache=True, error_model="numpy")
def trace_advance_inplace(t, x, u, dt, y, p_w):
    """:meth:`TraceRack.advance` into the caller's arrays, for compiled callers (the
    microgrid's fused step), the traces reading ``p_w`` at ``t``: ``x`` is stepped in place,
    ``y`` receives the outputs."""
    w = _trace_hold(p_w, u)
    _trace_outputs_into(x, w, y)
    _trace_step_into(x, w, dt, x)


class TraceRack(Asset):
    """Racks whose AC power replays a recorded trace (``power(t)``, scaled) instead of a model.

    For studies driven by a real recording (an H100 trace replayed as a rack's power): the
    rack's power is the trace, clipped to the power cap when one is set; the energy counter
    integrates it.  Temperature, clock and phase are not known (NaN).
    """

    kind: ClassVar[str] = "gpu_rack"
    input_names: ClassVar[tuple[str, ...]] = ("power_cap_w",)
    output_names: ClassVar[tuple[str, ...]] = OUTPUT_NAMES
    state_names: ClassVar[tuple[str, ...]] = ("energy_wh",)
    held_names: ClassVar[tuple[str, ...]] = ("p_w", "power_cap_w", "limited")

    def __init__(self, traces: Sequence[Callable[[float], float]]) -> None:
        if not traces:
            raise TwinError("gpu_rack: needs a trace for at least one rack")
        self.traces = list(traces)
        self.n = len(self.traces)

    def initial_state(self) -> np.ndarray:
        return np.zeros((self.n, 1))

    def hold(self, t: float, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        p = np.array([float(f(t)) for f in self.traces])
        return _trace_hold(p, np.ascontiguousarray(u, dtype=float))

    def rhs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return w[:, :1] / S_PER_H

    def step_exact(self, x: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
        xn = np.empty_like(x)
        _trace_step_into(x, w, dt, xn)
        return xn

    def outputs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        y = np.empty((self.n, len(OUTPUT_NAMES)))
        _trace_outputs_into(x, w, y)
        return y

    def advance(self, t: float, x: np.ndarray, u: np.ndarray,
                dt: float) -> tuple[np.ndarray, np.ndarray]:
        w = self.hold(t, x, u, dt)
        return self.step_exact(x, w, dt), self.outputs(t, x, w)


def racks_from_specs(specs: Sequence[Any]) -> Asset:
    """The racks of a microgrid (:class:`twin.microgrid.AssetSpec` with kind ``gpu_rack``).

    Each spec's ``drive`` is a :class:`~twin.workload.Schedule`, a list of schedules (one per
    group of desynchronised GPUs), or a callable ``power_w(t)`` (a recorded trace).  Racks
    modelled from schedules must share one parameter set and group count; racks replaying
    traces must all replay.
    """
    traces = [callable(s.drive) and not isinstance(s.drive, (Schedule, list, tuple))
              for s in specs]
    if all(traces):
        return TraceRack([s.drive for s in specs])
    if any(traces):
        raise TwinError("gpu_rack: either every rack replays a power trace or none does")
    first = specs[0].params
    for s in specs:
        if s.params is None:
            raise TwinError(f"{s.node}.{s.name}: a gpu_rack needs a parameter set")
        if s.params.params != first.params:
            raise TwinError(f"{s.node}.{s.name}: racks of one run share one parameter set "
                            f"({specs[0].node}.{specs[0].name} uses {first.name})")
        if s.drive is None:
            raise TwinError(f"{s.node}.{s.name}: a gpu_rack needs a workload")
    pset = first
    where = pset.path or pset.name
    if pset.kind != "gpu_rack":
        raise ParameterError(f"{where}: meta.kind is '{pset.kind}', expected 'gpu_rack'")
    rack = _params.from_mapping(RackParams, pset.params, f"{where}: params")
    base = Path(pset.path).parent if pset.path else H100_8GPU.parent
    gpu, temp = load_params(base / rack.gpu_params)
    for key, value in (pset.initial or {}).items():
        if key != "temp_c":
            raise ParameterError(f"{where}: initial.{key}: unknown initial condition"
                                 f"{did_you_mean(str(key), ['temp_c'])}; a rack's is temp_c")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"{where}: initial.temp_c: expected a number, got {value!r}")
        temp = float(value)  # its range is checked where the GPUs start from it
    # racks with fewer groups than others run their schedule in every group (identical
    # groups behave as one)
    drives = [[s.drive] if isinstance(s.drive, Schedule) else list(s.drive) for s in specs]
    k = max(len(d) for d in drives)
    for s, d in zip(specs, drives):
        if len(d) not in (1, k):
            raise TwinError(f"{s.node}.{s.name}: {len(d)} GPU groups; racks of one run have "
                            f"1 or {k}")
    return GpuRack(rack, gpu, [d * k if len(d) == 1 else d for d in drives], temp_c=temp)
