"""Electrical and thermal model of one GPU, driven by a workload schedule.

The board power of a GPU is a static part that grows with die temperature (leakage) plus a
dynamic part set by what the chip is doing (its activity) and by its clock::

    P      = P_static(T_die) + P_dyn_max * a * s(phi)
    P_static(T) = P_idle + P_leak * (exp((T - T_ref) / T_leak) - 1)
    s(phi) = phi * v(phi)**2        dynamic power ~ f V^2, V linear in f over the DVFS range

``phi`` is the SM clock over its maximum.  Activity ``a`` is 1 for saturated tensor cores
(large bf16 matrix products), a fitted constant for memory-bound and light loads, 0 for
idle and checkpoints; a compute step with a model FLOPs utilisation ``m`` has
``a = a_mem + (1 - a_mem) * min(1, m / m_sat)``: a step that does no useful arithmetic
still streams memory like a copy, and its tensor-core power grows with the FLOP rate.

The power limiter lowers the clock so that the *averaged* power stays at the limit ``L``:
the card holds a budget ``B = min(r_burst L, L + k (L - P_avg) + I)`` where ``P_avg`` is
its running average of power (about one second) and ``I`` integrates ``k_i (L - P_avg)``,
and moves the clock towards the highest clock whose power fits the budget, quickly down
(``tau_down``) and slowly up (``tau_up``).  It sets that clock for the activity it has
sensed, a lag (``tau_sense``, ~20 ms) behind the present one: a burst of 50 ms is throttled
less than the start of a long one, and the clock goes on falling just after it ends.
Hence the three regimes of the recordings: bursts shorter than the clock's response
overshoot the limit (up to ~950 W on an H100 at 700 W), bursts up to a second sit near
``r_burst L``, and sustained load averages ``L`` with a ripple, after a dip when the
average first reaches it.  Electrical power follows with one time constant (``tau_p``), and
heat flows die -> heat sink -> ambient through two thermal nodes, each a first-order lag.

:func:`simulate` runs the model over a schedule on a fixed step (a numba kernel, about a
million steps a second); :func:`nvml_view` turns its power into what NVML would report.
The equations, the fit and the accuracy are in ``docs/gpu-model.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from twin import params as _params
from twin.errors import ParameterError, TwinError
from twin.stepper import discretise
from twin.vecmath import exp as vexp
from twin.workload import CHECKPOINT, COMPUTE, LIGHT, MEMORY, Schedule

#: longest step the kernel takes; longer steps are split [s]
MAX_STEP_S = 0.01
#: the parameter set fitted to the shared H100 recordings, shipped with the package
H100_SXM = Path(__file__).with_name("data") / "gpu_h100_sxm.toml"
#: lowest die or air temperature the model takes: the cold end of the range electronics
#: are rated for (JEDEC industrial, -40 degC) and far below any data centre's supply air;
#: the leakage fitted between 35 and 75 degC means nothing much further down [degC]
TEMP_MIN_C = -40.0
#: idle lead-in a prediction shows before a schedule that starts late (a Unix-time or
#: offset schedule): the simulation starts at 0, or this long before the first entry if
#: that is later.  Schedules that start within it are simulated from 0 as they always
#: were.  The model needs no settling (it starts idle and settled) [s]
IDLE_LEAD_S = 60.0
#: most kernel steps (of at most MAX_STEP_S) one prediction may take: about 100 bytes each
#: at the peak, so 5 GB, 5.8 days at 10 ms
MAX_SUBSTEPS = 50_000_000


class PredictionError(TwinError):
    """A prediction left the range the model holds in (a die past the card's shutdown
    temperature, a power that is not finite) or would not fit in memory; the message names
    the time and the cause."""


@dataclass(frozen=True)
class GpuParams:
    """Parameters of one GPU (see the module docstring for the equations)."""

    #: default power limit of the card, L [W]
    power_limit_w: float
    #: board power when idle at ``temp_ref_c``, P_idle [W]
    idle_w: float
    #: leakage part of the static power at ``temp_ref_c``, P_leak [W]
    leak_w: float
    #: temperature rise that multiplies leakage by e, T_leak [degC]
    leak_temp_c: float
    #: dynamic power of saturated tensor cores at the maximum clock, P_dyn_max [W]
    dynamic_w: float
    #: activity of memory-bound kernels (copies, collectives), a_mem [fraction]
    activity_memory: float
    #: activity of small kernels with gaps, a_light [fraction]
    activity_light: float
    #: model FLOPs utilisation at which a step draws like saturated tensor cores [fraction]
    mfu_saturation: float
    #: relative core voltage at the lowest clock, v(phi_min) [fraction]
    voltage_min: float
    #: short-term power the limiter allows, as a multiple of the limit, r_burst [-]
    burst_limit_ratio: float
    #: gain of the limiter on the averaged-power error, k [-]
    limit_gain: float
    #: time constant of the limiter's power average [s]
    limit_avg_tau_s: float
    #: integral gain of the limiter, removes its offset under oscillation [1/s]
    limit_integral_per_s: float
    #: time constant of clock reductions [s]
    clock_down_tau_s: float
    #: time constant of clock recoveries [s]
    clock_up_tau_s: float
    #: time constant of electrical power following the demand, tau_p [s]
    power_tau_s: float
    #: thermal resistance die to heat sink [degC/W]
    r_die_c_per_w: float
    #: thermal time constant of the die node [s]
    tau_die_s: float
    #: thermal resistance heat sink to ambient [degC/W]
    r_sink_c_per_w: float
    #: thermal time constant of the heat-sink node [s]
    tau_sink_s: float
    #: cooling air or coolant temperature [degC]
    ambient_c: float
    #: activity of a checkpoint (weights copied to the host) [fraction]
    activity_checkpoint: float = 0.0
    #: reference temperature of ``idle_w`` and ``leak_w``, T_ref [degC]
    temp_ref_c: float = 40.0
    #: maximum SM clock [MHz]
    clock_max_mhz: float = 1980.0
    #: lowest clock the limiter uses (an H100's lowest SM clock) [MHz]
    clock_min_mhz: float = 345.0
    #: die temperature at which the card shuts down (NVML's "GPU Shutdown Temp": 92 on an
    #: H100 SXM): the top of the model's range [degC]
    temp_shutdown_c: float = 92.0
    #: die temperature at which thermal slowdown starts (NVML's "GPU Slowdown Temp": 89 on
    #: an H100 SXM): above it the clock's ceiling falls linearly, to the lowest clock at
    #: ``temp_shutdown_c`` [degC]
    temp_slowdown_c: float = 89.0
    #: time constant with which the limiter senses the load: it sets the clock from the
    #: activity it has seen, which lags the present one (so a burst shorter than it is
    #: throttled less, and the clock goes on falling just after one); 0: no lag [s]
    limit_sense_tau_s: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterError(f"params.{f.name}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ParameterError(f"params.{f.name}: must be finite, got {value}")
        positive = ("power_limit_w", "idle_w", "leak_temp_c", "dynamic_w", "mfu_saturation",
                    "voltage_min", "limit_avg_tau_s", "clock_down_tau_s", "clock_up_tau_s",
                    "r_die_c_per_w", "tau_die_s", "r_sink_c_per_w", "tau_sink_s",
                    "clock_max_mhz", "clock_min_mhz")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ParameterError(f"params.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("leak_w", "power_tau_s", "limit_gain", "limit_integral_per_s",
                     "limit_sense_tau_s"):
            if getattr(self, name) < 0:
                raise ParameterError(f"params.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("activity_memory", "activity_light", "activity_checkpoint"):
            if not 0 <= getattr(self, name) <= 1:
                raise ParameterError(f"params.{name}: must be in [0, 1], "
                                     f"got {getattr(self, name)}")
        if self.burst_limit_ratio < 1:
            raise ParameterError("params.burst_limit_ratio: must be >= 1, "
                                 f"got {self.burst_limit_ratio}")
        if self.clock_min_mhz >= self.clock_max_mhz:
            raise ParameterError("params.clock_min_mhz: must be below clock_max_mhz")
        if self.voltage_min > 1:
            raise ParameterError("params.voltage_min: must be at most 1 (the voltage at "
                                 f"the maximum clock), got {self.voltage_min}")
        if not self.temp_shutdown_c > TEMP_MIN_C:
            raise ParameterError(f"params.temp_shutdown_c: must be above {TEMP_MIN_C:g} "
                                 f"degC, got {self.temp_shutdown_c}")
        if not TEMP_MIN_C < self.temp_slowdown_c < self.temp_shutdown_c:
            raise ParameterError(
                f"params.temp_slowdown_c: {self.temp_slowdown_c:g} degC must lie between "
                f"{TEMP_MIN_C:g} degC and the shutdown temperature temp_shutdown_c "
                f"({self.temp_shutdown_c:g} degC)")
        if not TEMP_MIN_C <= self.ambient_c < self.temp_shutdown_c:
            raise ParameterError(
                f"params.ambient_c: {self.ambient_c:g} degC is outside {TEMP_MIN_C:g} to "
                f"{self.temp_shutdown_c:g} degC (the coldest air electronics are rated for "
                "to the card's shutdown temperature, temp_shutdown_c)")

    @property
    def clock_min_ratio(self) -> float:
        """Lowest clock over the maximum, phi_min [fraction]."""
        return self.clock_min_mhz / self.clock_max_mhz

    def replace(self, **changes: float) -> GpuParams:
        return dataclasses.replace(self, **changes)


def load_params(path: str | Path = H100_SXM) -> tuple[GpuParams, float | None]:
    """Read a ``kind = "gpu"`` parameter file: the parameters and the initial die
    temperature (``[initial] temp_c``, None for the idle steady state)."""
    pset = _params.load(path)
    if pset.kind != "gpu":
        raise ParameterError(f"{path}: meta.kind is '{pset.kind}', expected 'gpu'")
    try:
        p = _params.from_mapping(GpuParams, pset.params)
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}") from None
    temp = pset.initial.get("temp_c")
    if temp is not None and (isinstance(temp, bool) or not isinstance(temp, (int, float))):
        raise ParameterError(f"{path}: initial.temp_c: expected a number, got {temp!r}")
    for key in pset.initial:
        if key != "temp_c":
            raise ParameterError(f"{path}: initial.{key}: unknown initial condition"
                                 f"{_params.did_you_mean(key, ['temp_c'])}; a GPU has "
                                 "temp_c")
    if temp is not None:
        try:
            check_die_temperature(p, float(temp))
        except ParameterError as exc:
            raise ParameterError(f"{path}: initial.temp_c: {exc}") from None
    return p, None if temp is None else float(temp)


def check_die_temperature(p: GpuParams, temp_die_c: float) -> float:
    """``temp_die_c`` if the model can start from it, else :class:`ParameterError`.

    The range is :data:`TEMP_MIN_C` (-40 degC, the coldest end of what electronics are
    rated for) to the card's shutdown temperature ``p.temp_shutdown_c`` (92 degC on an
    H100): a die outside it is not a card that runs, and leakage, extrapolated from the
    35-75 degC it was fitted on, would give a meaningless power (1.5 kW idle at 120 degC).
    [degC]
    """
    t = float(temp_die_c)
    if not TEMP_MIN_C <= t <= p.temp_shutdown_c:  # NaN fails too
        raise ParameterError(
            f"die temperature {t:g} degC is outside {TEMP_MIN_C:g} to "
            f"{p.temp_shutdown_c:g} degC (the coldest end of what electronics are rated "
            "for, to the card's shutdown temperature)")
    return t


# --- pure functions ---------------------------------------------------------------------


def static_power_w(p: GpuParams, temp_die_c: np.ndarray | float) -> np.ndarray:
    """Idle floor and leakage at a die temperature. [W]"""
    t = np.asarray(temp_die_c, dtype=float)
    return p.idle_w + p.leak_w * np.expm1((t - p.temp_ref_c) / p.leak_temp_c)


def dvfs_scale(p: GpuParams, clock_ratio: np.ndarray | float) -> np.ndarray:
    """Dynamic power at a clock relative to the maximum clock, ``phi v(phi)^2``. [-]"""
    phi = np.asarray(clock_ratio, dtype=float)
    v = _voltage(phi, p.clock_min_ratio, p.voltage_min)
    return phi * v * v


def activity(p: GpuParams, load: np.ndarray, mfu: np.ndarray) -> np.ndarray:
    """Activity of each schedule entry, 0 (idle) to 1 (saturated tensor cores). [fraction]"""
    load = np.asarray(load)
    mfu = np.asarray(mfu, dtype=float)
    a = np.zeros(load.shape)
    a[load == MEMORY] = p.activity_memory
    a[load == LIGHT] = p.activity_light
    a[load == CHECKPOINT] = p.activity_checkpoint
    comp = load == COMPUTE
    a[comp] = 1.0
    has = comp & ~np.isnan(mfu)
    a[has] = p.activity_memory + (1.0 - p.activity_memory) * np.minimum(
        1.0, mfu[has] / p.mfu_saturation)
    return a


def idle_temperature_c(p: GpuParams) -> float:
    """Die temperature of an idle card in steady state (fixed point of leakage and heat). [degC]

    Raises :class:`PredictionError` where there is none below the card's shutdown
    temperature (air so hot that leakage runs away even at idle).
    """
    t = p.ambient_c
    for _ in range(50):
        # From the ambient the iterates rise monotonically to the lowest fixed point: one
        # above the shutdown temperature means there is none below it.
        if t > p.temp_shutdown_c:
            raise PredictionError(
                f"an idle card in air at ambient_c = {p.ambient_c:g} degC heats past its "
                f"shutdown temperature ({p.temp_shutdown_c:g} degC): leakage runs away")
        t = p.ambient_c + (p.r_die_c_per_w + p.r_sink_c_per_w) * float(static_power_w(p, t))
    return t


# --- the kernel -------------------------------------------------------------------------

#: stages of the limiter's power average (a cascade of equal lags, close to the card's
#: one-second moving average: it keeps rising after the power has dropped); three, written
#: out stage by stage in :func:`gpu_steps`
AVG_STAGES = 3
#: layout of the per-GPU state vector
STATE_NAMES = ("clock_ratio", "p_w", "temp_die_c", "temp_sink_c") + tuple(
    f"p_avg{i}_w" for i in range(AVG_STAGES)) + ("limit_integral_w", "activity_sensed")
NX = len(STATE_NAMES)
# Positions in the coefficient vector of :func:`coefficients` (numba folds these
# module-level integers into constants).
(C_IDLE, C_LEAK, C_TREF, C_INV_TLEAK, C_DYN, C_PHI_MIN, C_V_MIN, C_V_SLOPE, C_BURST, C_GAIN,
 C_KI_DT, C_A_DOWN, C_A_UP, C_A_P, C_M_P, C_A_AVG, C_T11, C_T12, C_T21, C_T22, C_B1P, C_B1A,
 C_B2P, C_B2A, C_AMBIENT, C_SHUTDOWN, C_SLOWDOWN, C_SLOW_SLOPE, C_A_SENSE,
 N_COEFFS) = range(30)


def coefficients(p: GpuParams, dt: float) -> np.ndarray:
    """The model's numbers for a step of ``dt``, exponentials precomputed, as one array."""
    if not dt > 0:
        raise ParameterError(f"time step must be > 0, got {dt}")
    g = 1.0 / p.r_die_c_per_w
    h = 1.0 / p.r_sink_c_per_w
    c_die = p.tau_die_s * g
    c_sink = p.tau_sink_s * h
    a = np.array([[-g / c_die, g / c_die], [g / c_sink, -(g + h) / c_sink]])
    b = np.array([[1.0 / c_die, 0.0], [0.0, h / c_sink]])
    ad, bd = discretise(a, b, dt)
    a_p = math.exp(-dt / p.power_tau_s) if p.power_tau_s > 0 else 0.0
    # Mean over the step of a first-order response, as a fraction of its start offset.
    m_p = (1.0 - a_p) * p.power_tau_s / dt if p.power_tau_s > 0 else 0.0
    c = np.empty(N_COEFFS)
    c[C_IDLE], c[C_LEAK], c[C_TREF] = p.idle_w, p.leak_w, p.temp_ref_c
    c[C_INV_TLEAK] = 1.0 / p.leak_temp_c
    c[C_DYN] = p.dynamic_w
    c[C_PHI_MIN], c[C_V_MIN] = p.clock_min_ratio, p.voltage_min
    c[C_V_SLOPE] = (1.0 - p.voltage_min) / (1.0 - p.clock_min_ratio)
    c[C_BURST], c[C_GAIN] = p.burst_limit_ratio, p.limit_gain
    c[C_KI_DT] = p.limit_integral_per_s * dt
    c[C_A_DOWN] = math.exp(-dt / p.clock_down_tau_s)
    c[C_A_UP] = math.exp(-dt / p.clock_up_tau_s)
    c[C_A_P], c[C_M_P] = a_p, m_p
    c[C_A_AVG] = math.exp(-dt * AVG_STAGES / p.limit_avg_tau_s)
    c[C_T11], c[C_T12], c[C_T21], c[C_T22] = ad[0, 0], ad[0, 1], ad[1, 0], ad[1, 1]
    c[C_B1P], c[C_B1A], c[C_B2P], c[C_B2A] = bd[0, 0], bd[0, 1], bd[1, 0], bd[1, 1]
    c[C_AMBIENT] = p.ambient_c
    c[C_A_SENSE] = math.exp(-dt / p.limit_sense_tau_s) if p.limit_sense_tau_s > 0 else 0.0
    c[C_SHUTDOWN] = p.temp_shutdown_c
    c[C_SLOWDOWN] = p.temp_slowdown_c
    c[C_SLOW_SLOPE] = (1.0 - p.clock_min_ratio) / (p.temp_shutdown_c - p.temp_slowdown_c)
    return c


def initial_state(p: GpuParams, temp_die_c: float | None = None,
                  power_w: float | None = None, activity: float = 0.0) -> np.ndarray:
    """State of a card that has run at ``power_w`` with ``activity`` long enough for its
    power, clock and limiter to settle (default: idle).

    ``temp_die_c`` None means thermal steady state too; a given die temperature puts the
    heat sink where it would be at that die temperature with ``power_w`` flowing through
    the die (a card found warm in the middle of a load has a cooler heat sink than one
    found equally warm at idle).  ``power_w`` is taken between the idle power and the most
    a die at ``temp_die_c`` can have drawn over a heat sink no colder than an idle card's:
    a cold card found drawing 700 W has just started, and its sink is not put below the
    air.  The die temperature must lie in
    the model's range (:func:`check_die_temperature`: -40 degC to the card's shutdown
    temperature).  The clock is the one at which ``activity`` draws that power.
    """
    if temp_die_c is None:
        t = idle_temperature_c(p)
    else:
        try:
            t = check_die_temperature(p, temp_die_c)
        except ParameterError as exc:
            raise ParameterError(f"initial {exc}") from None
    ps = float(static_power_w(p, t))
    pw = ps
    if power_w is not None and math.isfinite(power_w):
        # The heat sink is no colder than an idle card's, so a die at t can have been
        # drawing at most what puts it r_die * P above that: a card whose job starts as the
        # recording does (its die still at idle temperature) is taken as the idle card it
        # was, not as one settled in the job with its sink below the air.
        most = (t - p.ambient_c - p.r_sink_c_per_w * ps) / p.r_die_c_per_w
        pw = min(max(float(power_w), ps), max(most, ps))
    a = min(max(float(activity), 0.0), 1.0)
    phi = 1.0
    if a > 0 and pw < ps + a * p.dynamic_w:
        phi = clock_for(max(pw - ps, 0.0) / (a * p.dynamic_w), p.clock_min_ratio,
                        p.voltage_min, 1.0, 8)
    return np.array([phi, pw, t, t - p.r_die_c_per_w * pw] + [pw] * AVG_STAGES
                    + [(p.burst_limit_ratio - 1.0) * p.power_limit_w, a])


def steady_power_w(p: GpuParams, activity: float, temp_die_c: float) -> float:
    """Power a card draws running ``activity`` for a while at ``temp_die_c``: full clock,
    or its power limit where that is less (the limiter's average). [W]"""
    full = float(static_power_w(p, temp_die_c)) + activity * p.dynamic_w
    return min(full, max(p.power_limit_w, float(static_power_w(p, temp_die_c))))


def _voltage(phi: np.ndarray, phi_min: float, v_min: float) -> np.ndarray:
    return v_min + (1.0 - v_min) * (phi - phi_min) / (1.0 - phi_min)


@numba.njit(cache=True, error_model="numpy")
def clock_for(need, phi_min, v_min, phi, iterations):
    """Highest clock ratio with ``phi v(phi)^2 <= need``: Newton from ``phi``.

    ``phi v^2`` is convex, so every iterate after the first is above the root and falls
    monotonically: from 1.0 four iterations reach 1e-7 over the whole range.  The kernel
    starts from the present clock with one, which is exact in steady state and follows the
    target within a step or two when the load changes (the clock lags far longer).
    """
    if need >= 1.0:
        return 1.0
    if need <= phi_min * v_min * v_min:
        return phi_min
    slope = (1.0 - v_min) / (1.0 - phi_min)
    for _ in range(iterations):
        v = v_min + slope * (phi - phi_min)
        phi -= (phi * v * v - need) / (v * v + 2.0 * phi * v * slope)
    return min(max(phi, phi_min), 1.0)


@numba.njit(cache=True, error_model="numpy")
def clock_ceiling(c, temp_die_c):
    """Highest clock ratio thermal slowdown allows at ``temp_die_c``: 1 up to the slowdown
    temperature, then falling linearly to the lowest clock at the shutdown temperature.

    A proportional thermal limiter: a card whose cooling cannot carry its full power away
    settles a degree or two above its slowdown temperature at the clock the cooling allows,
    as a real one does, instead of heating on to its shutdown temperature.
    """
    return min(max(1.0 - (temp_die_c - c[C_SLOWDOWN]) * c[C_SLOW_SLOPE], c[C_PHI_MIN]), 1.0)


@numba.njit(cache=True, error_model="numpy")
def thermal_step(c, temp_die_c, temp_sink_c, power_w):
    """Die and heat-sink temperatures after one step with ``power_w`` held (exact)."""
    die = (c[C_T11] * temp_die_c + c[C_T12] * temp_sink_c + c[C_B1P] * power_w
           + c[C_B1A] * c[C_AMBIENT])
    sink = (c[C_T21] * temp_die_c + c[C_T22] * temp_sink_c + c[C_B2P] * power_w
            + c[C_B2A] * c[C_AMBIENT])
    return die, sink


@numba.njit(cache=True, error_model="numpy")
def gpu_steps(c, x, o, act, limit_w, p_w, clock):
    """Advance the GPUs ``x[:, o:o + NX]`` (one per row, in place) over one step.

    ``act`` is each GPU's mean activity over the step, ``limit_w`` its power limit; writes
    each one's mean power [W] into ``p_w`` and mean clock ratio into ``clock``.  A GPU whose
    die starts the step at or past its shutdown temperature (``temp_shutdown_c``) is off:
    it draws nothing, so leakage cannot run away past the temperature the fitted model
    ends at; its power decays with ``tau_p``, it cools, its clock is parked at the lowest
    (where it restarts from) and reported as 0 (stopped).  A NaN die is not off.

    Branch-free arithmetic over rows with :func:`twin.vecmath.exp`, on the state's columns
    taken as vectors: with ``x`` stored column by column they are contiguous and the loop
    runs as SIMD vectors (indexing ``x[r, o + j]`` with a run-time ``o`` kept LLVM from
    proving the columns apart); one row gives the same numbers.
    """
    idle, leak, tref, itl = c[C_IDLE], c[C_LEAK], c[C_TREF], c[C_INV_TLEAK]
    dyn_w, burst, gain = c[C_DYN], c[C_BURST], c[C_GAIN]
    phi_min, v_min, v_slope = c[C_PHI_MIN], c[C_V_MIN], c[C_V_SLOPE]
    need_min = phi_min * v_min * v_min
    a_down, a_up, a_p, m_p, a_avg, ki_dt = (c[C_A_DOWN], c[C_A_UP], c[C_A_P], c[C_M_P],
                                            c[C_A_AVG], c[C_KI_DT])
    t11, t12, t21, t22 = c[C_T11], c[C_T12], c[C_T21], c[C_T22]
    b1p, b2p = c[C_B1P], c[C_B2P]
    b1a, b2a = c[C_B1A] * c[C_AMBIENT], c[C_B2A] * c[C_AMBIENT]
    shutdown = c[C_SHUTDOWN]
    # the state's columns as vectors (contiguous where ``x`` is stored column by column)
    x_phi, x_pe, x_die, x_sink = x[:, o], x[:, o + 1], x[:, o + 2], x[:, o + 3]
    x_avg0, x_avg1, x_avg2, x_int = x[:, o + 4], x[:, o + 5], x[:, o + 6], x[:, o + 7]
    x_sense = x[:, o + 8]
    a_sense = c[C_A_SENSE]
    for r in range(x.shape[0]):
        phi = x_phi[r]
        pe = x_pe[r]
        tdie = x_die[r]
        tsink = x_sink[r]
        pavg = x_avg2[r]
        integ = x_int[r]
        lim = limit_w[r]
        off = tdie >= shutdown
        pstat = idle + leak * (vexp((tdie - tref) * itl) - 1.0)
        dyn = act[r] * dyn_w
        # the limiter sets the clock for the activity it has sensed (a lag behind ``act``)
        sensed = act[r] + (x_sense[r] - act[r]) * a_sense
        dyn_sensed = sensed * dyn_w
        budget = min(burst * lim, lim + gain * (lim - pavg) + integ)
        # the highest clock whose power fits the budget: one Newton step from the present
        # clock (:func:`clock_for`), 1 with nothing to run
        need = (budget - pstat) / dyn_sensed
        v = v_min + v_slope * (phi - phi_min)
        newton = min(max(phi - (phi * v * v - need) / (v * v + 2.0 * phi * v * v_slope),
                         phi_min), 1.0)
        target = 1.0 if need >= 1.0 else newton
        target = phi_min if need <= need_min else target
        target = min(target if dyn_sensed > 1e-9 else 1.0, clock_ceiling(c, tdie))
        a = a_down if target < phi else a_up
        phin = target + (phi - target) * a
        phim = 0.5 * (phi + phin)
        v = v_min + v_slope * (phim - phi_min)
        ptarget = 0.0 if off else pstat + dyn * phim * v * v
        pmean = ptarget + (pe - ptarget) * m_p
        x_phi[r] = phi_min if off else phin
        x_pe[r] = ptarget + (pe - ptarget) * a_p
        x_die[r] = t11 * tdie + t12 * tsink + b1p * pmean + b1a
        x_sink[r] = t21 * tdie + t22 * tsink + b2p * pmean + b2a
        u0 = pmean + (x_avg0[r] - pmean) * a_avg
        u1 = u0 + (x_avg1[r] - u0) * a_avg
        x_avg0[r] = u0
        x_avg1[r] = u1
        x_avg2[r] = u1 + (pavg - u1) * a_avg
        span = (burst - 1.0) * lim
        x_sense[r] = sensed
        x_int[r] = integ if off else min(max(integ + ki_dt * (lim - pavg), -span), span)
        p_w[r] = pmean
        clock[r] = 0.0 if off else phim


@numba.njit(cache=True, error_model="numpy")
def _run(c, x, act, limit_w):
    """Power, clock and die temperature of one GPU ``x`` over the steps of ``act``."""
    n = act.shape[0]
    res = np.empty((n, 3))
    xs = x.reshape(1, -1)
    p = np.empty(1)
    clk = np.empty(1)
    for k in range(n):
        res[k, 2] = xs[0, 2]
        gpu_steps(c, xs, 0, act[k:k + 1], limit_w[k:k + 1], p, clk)
        res[k, 0] = p[0]
        res[k, 1] = clk[0]
    return res


@dataclass(frozen=True)
class Prediction:
    """A simulated GPU trace on a fixed step.

    Attributes
    ----------
    t_s : start of each step. [s]
    power_w : mean electrical power over each step (instantaneous as dt -> 0). [W]
    clock_mhz : mean SM clock over each step. [MHz]
    temp_c : die temperature at the start of each step. [degC]
    """

    t_s: np.ndarray
    power_w: np.ndarray
    clock_mhz: np.ndarray
    temp_c: np.ndarray

    @property
    def dt(self) -> float:
        return float(self.t_s[1] - self.t_s[0]) if len(self.t_s) > 1 else 0.0

    def energy_j(self, t_s: np.ndarray) -> np.ndarray:
        """Energy since the first step at times ``t_s`` (exact for the stepped power). [J]"""
        e = np.concatenate(([0.0], np.cumsum(self.power_w) * self.dt))
        edges = np.concatenate((self.t_s, [self.t_s[-1] + self.dt]))
        return np.interp(t_s, edges, e)


def simulate(p: GpuParams, schedule: Schedule, dt: float = 0.01, *,
             t0: float | None = None, t_end: float | None = None,
             temp_die_c: float | None = None,
             power_limit_w: float | np.ndarray | None = None,
             start_power_w: float | None = None) -> Prediction:
    """Run one GPU through a schedule on a step of ``dt``.

    Steps longer than :data:`MAX_STEP_S` are split into equal sub-steps (the limiter acts in
    tens of milliseconds) and their outputs averaged, so the energy does not depend on the
    reporting step.

    Parameters
    ----------
    p : the GPU's parameters.
    schedule : what the GPU is commanded to do.
    dt : time step. [s]
    t0, t_end : simulated span; default from 0 to the end of the schedule, or from its
        start if that is earlier, or from :data:`IDLE_LEAD_S` before its start if that is
        later (a schedule on Unix time is not simulated from 1970). [s]
    temp_die_c : die temperature at ``t0``, from -40 degC to the card's shutdown
        temperature (:func:`check_die_temperature`); None means the idle steady state.
        [degC]
    power_limit_w : power limit, a constant or one value per step; None means the card's
        default ``p.power_limit_w``. [W]
    start_power_w : power the card has been drawing before ``t0``, running what the
        schedule runs at ``t0`` (its heat sink, limiter average and clock settled to it:
        :func:`initial_state`); None means idle. [W]

    Raises
    ------
    PredictionError
        The span needs more than :data:`MAX_SUBSTEPS` kernel steps, or the die passes the
        card's shutdown temperature, or the power stops being finite (thermal runaway:
        cooling that cannot carry even the slowest clock's power away, as leakage grows
        exponentially with temperature).
        The results are checked once, after the compiled run.
    """
    if not dt > 0 or not math.isfinite(dt):
        raise ParameterError(f"time step must be > 0 and finite, got {dt}")
    if t0 is None:
        t0 = start_time_s(schedule, dt)
    if t_end is None:
        t_end = schedule.end_s
    if not (math.isfinite(t0) and math.isfinite(t_end)):
        raise ParameterError(f"simulated span {t0:g} to {t_end:g} s is not finite")
    sub = substeps(dt)
    n_float = max(1.0, math.ceil((t_end - t0) / dt - 1e-9))
    if n_float * sub > MAX_SUBSTEPS:
        raise PredictionError(
            f"simulating {t0:g} to {t_end:g} s ({t_end - t0:.6g} s) would take "
            f"{n_float * sub:.3g} steps of {dt / sub:g} s, more than the {MAX_SUBSTEPS:.3g} "
            "one prediction may take; shorten the schedule or simulate it in parts")
    n = int(n_float)
    h = dt / sub
    act = schedule.step_means(activity(p, schedule.load, schedule.mfu), t0, h, n * sub)
    if power_limit_w is None:
        power_limit_w = p.power_limit_w
    limit = np.repeat(np.broadcast_to(np.asarray(power_limit_w, dtype=float), (n,)), sub)
    x = initial_state(p, temp_die_c, start_power_w, float(act[0]) if len(act) else 0.0)
    res = _run(coefficients(p, h), x, act, limit)
    _check_in_range(p, res, t0, h)
    res = res.reshape(n, sub, 3)
    return Prediction(t_s=t0 + dt * np.arange(n), power_w=res[:, :, 0].mean(axis=1),
                      clock_mhz=res[:, :, 1].mean(axis=1) * p.clock_max_mhz,
                      temp_c=res[:, 0, 2])


def start_time_s(schedule: Schedule, dt: float) -> float:
    """Where :func:`simulate` starts by default, on the step grid: 0, or the schedule's
    start if that is earlier, or :data:`IDLE_LEAD_S` before it if that is later. [s]"""
    start = schedule.start_s
    return dt * math.floor(max(min(0.0, start), start - IDLE_LEAD_S) / dt + 1e-9)


def _check_in_range(p: GpuParams, res: np.ndarray, t0: float, h: float) -> None:
    """:class:`PredictionError` at the first kernel step whose power is not finite or whose
    die is past the card's shutdown temperature (``res`` as :func:`_run` returns it)."""
    power, temp = res[:, 0], res[:, 2]
    ok = np.isfinite(power) & (temp <= p.temp_shutdown_c)  # NaN temperatures fail too
    if ok.all():
        return
    k = int(np.argmin(ok))
    t = t0 + k * h
    if not temp[k] <= p.temp_shutdown_c:
        raise PredictionError(
            f"at t = {t:.2f} s the die passes the card's shutdown temperature "
            f"({p.temp_shutdown_c:g} degC) drawing {power[k]:.0f} W: thermal runaway, as "
            "even at its slowest clock the card draws more than its cooling carries away "
            "(leakage grows exponentially with temperature); check ambient_c "
            f"({p.ambient_c:g} degC) and the cooling (r_sink_c_per_w)")
    raise PredictionError(f"at t = {t:.2f} s the power is no longer finite ({power[k]}), "
                          f"the die at {temp[k]:.1f} degC")


def substeps(dt: float) -> int:
    """Sub-steps of at most :data:`MAX_STEP_S` in a step of ``dt``."""
    return max(1, math.ceil(dt / MAX_STEP_S - 1e-9))


def nvml_view(t_s: np.ndarray, power_w: np.ndarray, *, refresh_s: float = 0.1,
              average_s: float = 1.0, phase_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """What NVML reports of a power trace: ``(power_instant_w, power_usage_w)``.

    ``NVML_FI_DEV_POWER_INSTANT`` is refreshed every ``refresh_s`` (about 0.1 s on an H100)
    and held in between; ``nvmlDeviceGetPowerUsage`` is the mean over the last
    ``average_s`` (one second), refreshed at the same instants.  A twin compared with NVML
    readings must be compared through this view, like with like.  ``power_w`` holds the mean
    over each step starting at ``t_s`` (a fixed step). [W]
    """
    t = np.asarray(t_s, dtype=float)
    pw = np.asarray(power_w, dtype=float)
    if len(t) < 2:
        return pw.copy(), pw.copy()
    dt = t[1] - t[0]
    edges = np.concatenate((t, [t[-1] + dt]))
    energy = np.concatenate(([0.0], np.cumsum(pw) * dt))
    k = np.floor((t - t[0] - phase_s) / refresh_s + 1e-9)
    tr = t[0] + phase_s + np.maximum(k, 0.0) * refresh_s  # last refresh instant
    i = np.clip(np.searchsorted(t, tr, side="right") - 1, 0, len(t) - 1)
    instant = pw[i]
    span = np.minimum(average_s, np.maximum(tr - t[0], dt))
    usage = (np.interp(tr, edges, energy) - np.interp(tr - span, edges, energy)) / span
    usage = np.where(tr - t[0] < dt, pw[0], usage)
    return instant, usage

