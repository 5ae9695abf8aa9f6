"""Fit :class:`twin.gpu.GpuParams` to recordings of a real GPU, and score a parameter set.

The reference for power is the card's energy counter: NVML's ``TotalEnergyConsumption``
advances every 100 ms and its differences are exact mean powers, where the instantaneous
field is a short sample held for 100 ms that aliases with any rhythm near 10 Hz.  The fit
runs in three stages, each on the data that determines its parameters:

1. thermal: the two-node network, driven by the measured power (energy-counter windows),
   against the measured temperature (linear; no power model involved);
2. static power: idle windows at least ``IDLE_SETTLE_S`` after any load, against the
   measured temperature (the idle floor and its leakage growth);
3. dynamics: the whole model simulated over the recordings, against the 100 ms energy
   windows and (lightly) the SM clock: dynamic power, load activities, the mfu curve, DVFS,
   the limiter and the time constants.  Parameters whose load is absent from the
   recordings (no ``memory`` entries, no ``mfu``) keep their starting values, and so does
   ``dynamic_w`` when every ``compute`` entry carries an ``mfu``.

:func:`score` gives the figures of the accuracy table: the mean absolute error of one-second
window means of power, over the mean power (against the instantaneous field, as the issue
defines it, and against the energy counter), the total energy error and the temperature
error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import scipy.optimize
import scipy.signal

from twin.errors import TwinError
from twin.gpu import GpuParams, Prediction, coefficients, simulate, static_power_w, thermal_step
from twin.lsq import standard_errors
from twin.workload import CHECKPOINT, COMPUTE, IDLE, LIGHT, MEMORY, Schedule

#: idle windows closer than this to the end of a load are left out of the static fit [s]
IDLE_SETTLE_S = 0.3
#: weight of the clock residual in the dynamic fit [W/MHz]
CLOCK_WEIGHT_W_PER_MHZ = 0.1
#: weight of one-second window means against the 100 ms windows in the dynamic fit [-]
SECOND_WEIGHT = 3.0
#: a one-second window is scored only where the energy counter updated within this, or
#: 1.5 of the counter's median interval if that is longer, of each of its edges (NVML's
#: counter updates every 0.1 s; a longer silence is a gap in the logging) [s]
WINDOW_EDGE_S = 0.25
#: step of the simulations inside the fit [s]
FIT_DT_S = 0.01
#: a fitted parameter whose standard error exceeds this fraction of its value is one the
#: recordings barely determine [-]
LOOSE_FRACTION = 0.5


class FitError(TwinError, ValueError):
    """A recording cannot be fitted (too short, no idle, counters that go backwards)."""


@dataclass(frozen=True)
class Measured:
    """One recording of a GPU with the schedule that drove it (arrays on one clock).

    Attributes
    ----------
    name : label used in reports.
    schedule : the commanded workload.
    t_s : sample times. [s]
    energy_j : energy counter, any offset. [J]
    temp_c : die temperature. [degC]
    power_inst_w : NVML instantaneous power field, or None. [W]
    clock_mhz : SM clock, or None. [MHz]
    """

    name: str
    schedule: Schedule
    t_s: np.ndarray
    energy_j: np.ndarray
    temp_c: np.ndarray
    power_inst_w: np.ndarray | None = None
    clock_mhz: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.t_s) < 20:
            raise FitError(f"{self.name}: {len(self.t_s)} samples; a fit needs a recording")
        if np.any(np.diff(self.t_s) <= 0):
            raise FitError(f"{self.name}: t_s is not strictly increasing")
        back = np.flatnonzero(np.diff(self.energy_j) < 0)
        if len(back):
            k = int(back[0]) + 1
            raise FitError(f"{self.name}: energy_j goes backwards at t_s = {self.t_s[k]:.10g} "
                           f"(by {self.energy_j[k - 1] - self.energy_j[k]:.6g} J): a counter "
                           "reset; split the recording there")
        if np.count_nonzero(np.diff(self.energy_j)) < 2:
            raise FitError(f"{self.name}: energy_j never advances over its {len(self.t_s)} "
                           "samples; the energy counter is the reference for power")

    def energy_updates(self) -> tuple[np.ndarray, np.ndarray]:
        """Instants the energy counter advanced, and its value there. [s], [J]

        The counter steps every 100 ms; between updates a sample repeats the last value,
        so the update instants are where the energy is known.
        """
        ch = np.concatenate(([0], np.flatnonzero(np.diff(self.energy_j)) + 1))
        return self.t_s[ch], self.energy_j[ch]

    def energy_windows(self) -> tuple[np.ndarray, np.ndarray]:
        """Counter update instants and the mean power between consecutive updates. [s], [W]"""
        te, ee = self.energy_updates()
        return te, np.diff(ee) / np.diff(te)

    def start_power_w(self) -> float:
        """Mean power over the recording's first ~0.3 s (three counter updates): what the
        card was drawing when the recording began, idle or in the middle of a load. [W]"""
        te, pw = self.energy_windows()
        return float(np.sum(pw[:3] * np.diff(te[:4])) / (te[min(3, len(pw))] - te[0]))

    def simulate(self, p: GpuParams, dt: float = FIT_DT_S) -> Prediction:
        """The model over this recording's span, from its first temperature and the power
        it began with (a recording that starts warm in the middle of a load starts with a
        cooler heat sink and a settled limiter, not as an idle card that is merely warm)."""
        return simulate(p, self.schedule, dt, t0=dt * np.floor(min(self.t_s[0],
                                                                   self.schedule.start_s) / dt),
                        t_end=self.t_s[-1] + dt, temp_die_c=float(self.temp_c[0]),
                        start_power_w=self.start_power_w())


@dataclass(frozen=True)
class Score:
    """Accuracy of a parameter set on one recording (the figures of the accuracy table)."""

    name: str
    #: MAE of 1 s window means of power vs the instantaneous field, over its mean [fraction]
    window_error: float
    #: the same against the energy counter's 1 s differences [fraction]
    window_error_energy: float
    #: the instantaneous field's own error against the energy counter, the same way: the
    #: floor of ``window_error`` that aliasing of the 100 ms samples sets [fraction]
    window_floor: float
    #: total energy, predicted over measured, minus 1 [fraction]
    energy_error: float
    #: mean absolute temperature error [degC]
    temp_error_c: float
    #: mean power measured over the scored span [W]
    mean_power_w: float
    #: scored span [s]
    seconds: float
    #: whether the recording has the instantaneous field; without it ``window_error`` is
    #: the energy-counter figure and there is no floor
    instant: bool = True
    #: whole seconds of the span left out: no sample of the instantaneous field in them, or
    #: no counter update within :data:`WINDOW_EDGE_S` of an edge (a gap in the logging)
    windows_left_out: int = 0

    def row(self) -> str:
        window = (f"window {100 * self.window_error:.2f} % "
                  f"(floor {100 * self.window_floor:.2f} %; energy-counter windows "
                  if self.instant else "window n/a (no power_inst_w; energy-counter windows ")
        gaps = (f", {self.windows_left_out} s left out (gaps in the logging)"
                if self.windows_left_out else "")
        return (f"{self.name}: {window}"
                f"{100 * self.window_error_energy:.2f} %), "
                f"energy {100 * self.energy_error:+.2f} %, "
                f"temperature {self.temp_error_c:.2f} degC, "
                f"mean {self.mean_power_w:.1f} W over {self.seconds:.0f} s{gaps}")


def score(p: GpuParams, m: Measured, span: tuple[float, float] | None = None,
          prediction: Prediction | None = None) -> Score:
    """Score ``p`` on recording ``m`` (whole seconds inside ``span``)."""
    pred = m.simulate(p) if prediction is None else prediction
    a, b = span if span is not None else (m.t_s[0], m.t_s[-1])
    a, b = max(a, m.t_s[0]), min(b, m.t_s[-1])
    k = np.arange(np.ceil(a), np.floor(b) + 1e-9)
    if len(k) < 2:
        raise FitError(f"{m.name}: {_span_words(span)} holds no whole second to score")
    p_pred = np.diff(pred.energy_j(k))
    te, ee = m.energy_updates()
    p_energy = np.diff(np.interp(k, te, ee))
    # a window is scored where the counter is known near both edges: not interpolated
    # across a gap in the logging (a silence several times the counter's own interval)
    j = np.clip(np.searchsorted(te, k), 1, len(te) - 1)
    tol = max(WINDOW_EDGE_S, 1.5 * float(np.median(np.diff(te)))) if len(te) > 1 else np.inf
    edge = np.minimum(np.abs(te[j] - k), np.abs(te[j - 1] - k)) <= tol
    ok = edge[:-1] & edge[1:]
    if not ok.any():
        raise FitError(f"{m.name}: {_span_words(span)} holds no whole second the energy "
                       "counter covers")
    if m.power_inst_w is not None:
        win = np.floor(m.t_s).astype(np.int64)
        sel = (m.t_s >= k[0]) & (m.t_s < k[-1])
        sums = np.bincount(win[sel] - int(k[0]), m.power_inst_w[sel], len(k) - 1)
        counts = np.bincount(win[sel] - int(k[0]), minlength=len(k) - 1)
        p_inst = sums / np.maximum(counts, 1)
        # the field's windows: those with a sample (a log slower than 1 Hz leaves some
        # seconds without one; that is not a gap)
        has = ok & (counts > 0)
        if not has.any():
            has = ok
            p_inst = p_energy
    else:
        p_inst, has = p_energy, ok
    p_inst, p_pred_i, p_energy_i = p_inst[has], p_pred[has], p_energy[has]
    p_pred, p_energy = p_pred[ok], p_energy[ok]
    # Energy over the counter's own span inside the scored span.
    ea = max(te[0], a)
    eb = min(te[-1], b)
    e_meas = np.interp(eb, te, ee) - np.interp(ea, te, ee)
    e_pred = pred.energy_j(np.array([eb]))[0] - pred.energy_j(np.array([ea]))[0]
    sel = (m.t_s >= a) & (m.t_s <= b)
    temp_pred = np.interp(m.t_s[sel], pred.t_s, pred.temp_c)
    return Score(
        name=m.name,
        window_error=float(np.mean(np.abs(p_pred_i - p_inst)) / np.mean(p_inst)),
        window_error_energy=float(np.mean(np.abs(p_pred - p_energy)) / np.mean(p_energy)),
        window_floor=float(np.mean(np.abs(p_inst - p_energy_i)) / np.mean(p_inst)),
        energy_error=float(e_pred / e_meas - 1.0),
        temp_error_c=float(np.mean(np.abs(temp_pred - m.temp_c[sel]))),
        mean_power_w=float(np.mean(p_energy)),
        seconds=float(k[-1] - k[0]),
        instant=m.power_inst_w is not None,
        windows_left_out=int(np.count_nonzero(~ok)),
    )


#: lags :func:`schedule_lag` searches, either way [s]
LAG_SEARCH_S = 2.0
#: grid on which the model's power and the counter's are cross-correlated [s]
LAG_GRID_S = 0.01
#: least swing (standard deviation) of the model's power over a recording for a lag to be
#: estimated: an idle card's drifts by a watt or two, and its noise would align anywhere [W]
LAG_MIN_SWING_W = 10.0


def schedule_lag(m: Measured, pred: Prediction, search_s: float = LAG_SEARCH_S
                 ) -> tuple[float, float, float] | None:
    """How late the schedule runs against the trace's energy counter [s] (positive where the
    schedule's loads change after the measured power does), the correlation there and the
    correlation at no lag.

    ``pred`` is the model simulated over the recording (:meth:`Measured.simulate`).  Its
    power and the counter's (its energy interpolated on a 10 ms grid: each 100 ms window's
    mean) are cross-correlated, as a correlation coefficient, over lags within
    ``search_s`` (at most a quarter of the recording); the best lag is refined by a parabola
    through its neighbours.  None where the model's power swings by less than
    :data:`LAG_MIN_SWING_W` (an idle recording: nothing to align), the measured power is
    flat, or the recording is too short.
    """
    te, ee = m.energy_updates()
    if len(te) < 3:
        return None
    g = np.arange(te[0], te[-1], LAG_GRID_S)
    measured = np.diff(np.interp(g, te, ee)) / LAG_GRID_S
    model = np.diff(pred.energy_j(g)) / LAG_GRID_S
    n = len(measured)
    k = min(round(search_s / LAG_GRID_S), n // 4)
    if k < 1 or not float(np.std(model)) >= LAG_MIN_SWING_W:
        return None
    core = measured[k:n - k] - measured[k:n - k].mean()
    width = len(core)
    # each lag's window of the model's power: its sum and sum of squares, for its spread
    cum = np.concatenate(([0.0], np.cumsum(model)))
    cum2 = np.concatenate(([0.0], np.cumsum(model * model)))
    lo = np.arange(2 * k + 1)
    s1 = cum[lo + width] - cum[lo]
    s2 = cum2[lo + width] - cum2[lo]
    spread = np.sqrt(np.maximum(s2 - s1 * s1 / width, 0.0) * float(core @ core))
    if not spread.min() > 1e-6 * width:
        return None
    # r[j]: the model's power (j - k) steps later against the measured power
    r = scipy.signal.correlate(model, core, mode="valid") / spread
    j = int(np.argmax(r))
    shift = float(j)
    if 0 < j < 2 * k:
        den = float(r[j - 1] - 2 * r[j] + r[j + 1])
        if den < 0:
            shift += 0.5 * float(r[j - 1] - r[j + 1]) / den
    return (shift - k) * LAG_GRID_S, float(r[j]), float(r[k])


def _span_words(span: tuple[float, float] | None) -> str:
    """A span for a message: 'the recording' or 'span 10-100 s' (not Python's tuple)."""
    if span is None or (np.isinf(span[0]) and np.isinf(span[1])):
        return "the recording"
    a, b = ("" if np.isinf(v) else f"{v:.3f}".rstrip("0").rstrip(".") for v in span)
    return f"span {a}:{b} s"


def _doubts(names: Sequence[str], res: scipy.optimize.OptimizeResult, lo: np.ndarray,
            hi: np.ndarray) -> dict[str, str]:
    """Why each parameter of one stage's least-squares fit is not to be trusted, if it is.

    A parameter is at the edge when the solver holds it on a bound (``active_mask``) or it
    lies within a millionth of the range of one; a free parameter is loosely determined when
    its standard error (Gauss-Newton covariance from the Jacobian at the solution, scaled by
    the residual variance) exceeds :data:`LOOSE_FRACTION` of its value, and undetermined
    when the residuals do not depend on it (a null direction of the Jacobian).
    """
    x = np.asarray(res.x, dtype=float)
    tol = 1e-6 * (hi - lo)
    at_lo = (res.active_mask < 0) | (x <= lo + tol)
    at_hi = (res.active_mask > 0) | (x >= hi - tol)
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        if at_lo[i] or at_hi[i]:
            edge, bound = ("lower", lo[i]) if at_lo[i] else ("upper", hi[i])
            out[name] = f"at the edge of the fitted range ({edge} bound {bound:g})"
    free = ~(at_lo | at_hi)
    if not free.any() or len(res.fun) <= int(free.sum()):
        return out
    se = standard_errors(np.asarray(res.jac, dtype=float)[:, free], res.fun, 2.0 * res.cost)
    for name, v, e in zip(np.asarray(names)[free], x[free], se):
        if not np.isfinite(e):
            out[str(name)] = ("not determined by the data (the residuals do not depend "
                              "on it, or only together with others)")
        elif e > LOOSE_FRACTION * abs(v):
            share = f"{100 * e / abs(v):.0f} % of the value" if v else "the value is 0"
            out[str(name)] = f"barely determined by the data (standard error {e:.3g}, {share})"
    return out


# --- stage 1: thermal -------------------------------------------------------------------

_THERMAL = ("r_die_c_per_w", "tau_die_s", "r_sink_c_per_w", "tau_sink_s", "ambient_c")
_THERMAL_BOUNDS = ((1e-3, 0.2), (0.01, 5.0), (1e-3, 0.5), (1.0, 2000.0), (0.0, 60.0))


@numba.njit(cache=True)
def _thermal_run(c, tdie, tsink, power_w):
    n = power_w.shape[0]
    out = np.empty(n)
    for k in range(n):
        out[k] = tdie
        tdie, tsink = thermal_step(c, tdie, tsink, power_w[k])
    return out


def _measured_power_grid(m: Measured, dt: float) -> tuple[np.ndarray, np.ndarray]:
    te, pw = m.energy_windows()
    t = np.arange(te[0], te[-1], dt)
    i = np.clip(np.searchsorted(te, t, side="right") - 1, 0, len(pw) - 1)
    return t, pw[i]


def _fit_thermal(p: GpuParams, recs: Sequence[Measured], spans,
                 doubts: dict[str, str]) -> GpuParams:
    grids = [_measured_power_grid(m, FIT_DT_S) for m in recs]

    def resid(q: np.ndarray) -> np.ndarray:
        pq = p.replace(**dict(zip(_THERMAL, q)))
        c = coefficients(pq, FIT_DT_S)
        out = []
        for m, (t, pw), (a, b) in zip(recs, grids, spans):
            t0 = float(np.interp(t[0], m.t_s, m.temp_c))
            temp = _thermal_run(c, t0, t0 - pq.r_die_c_per_w * pw[0], pw)
            sel = (m.t_s >= max(a, t[0])) & (m.t_s < min(b, t[-1]))
            out.append(np.interp(m.t_s[sel], t, temp) - m.temp_c[sel])
        return np.concatenate(out)

    q0 = np.array([getattr(p, k) for k in _THERMAL])
    lo, hi = np.array(_THERMAL_BOUNDS).T
    res = scipy.optimize.least_squares(resid, np.clip(q0, lo, hi), bounds=(lo, hi),
                                       x_scale="jac", loss="soft_l1", f_scale=2.0)
    doubts.update(_doubts(_THERMAL, res, lo, hi))
    return p.replace(**dict(zip(_THERMAL, res.x)))


# --- stage 2: static power --------------------------------------------------------------

_STATIC = ("idle_w", "leak_w", "leak_temp_c")
_STATIC_BOUNDS = ((20.0, 400.0), (0.0, 200.0), (3.0, 200.0))


def _idle_windows(m: Measured, span) -> tuple[np.ndarray, np.ndarray]:
    """(mean power, temperature) of energy windows that are idle and settled."""
    te, pw = m.energy_windows()
    s = m.schedule
    busy = s.load != IDLE
    starts, ends = s.t_s[busy], (s.t_s + s.seconds)[busy]  # in time order, not overlapping
    a, b = te[:-1], te[1:]
    # The last load that starts before the window ends must have ended long enough before.
    i = np.searchsorted(starts, b, side="left") - 1
    settled = (i < 0) | (ends[np.maximum(i, 0)] <= a - IDLE_SETTLE_S) if len(starts) else \
        np.ones(len(a), dtype=bool)
    sel = settled & (a >= span[0]) & (b <= span[1])
    temp = np.interp(0.5 * (a + b), m.t_s, m.temp_c)
    return pw[sel], temp[sel]


def _fit_static(p: GpuParams, recs: Sequence[Measured], spans,
                doubts: dict[str, str]) -> GpuParams:
    pw, temp = (np.concatenate(x) for x in zip(*(_idle_windows(m, s)
                                                  for m, s in zip(recs, spans))))
    if len(pw) < 10:
        raise FitError("the recordings hold too little settled idle time to fit the idle "
                       "floor (need a few seconds of idle after a load or at the start)")

    def resid(q: np.ndarray) -> np.ndarray:
        return static_power_w(p.replace(**dict(zip(_STATIC, q))), temp) - pw

    q0 = np.array([getattr(p, k) for k in _STATIC])
    lo, hi = np.array(_STATIC_BOUNDS).T
    res = scipy.optimize.least_squares(resid, np.clip(q0, lo, hi), bounds=(lo, hi),
                                       x_scale="jac", loss="soft_l1", f_scale=2.0)
    doubts.update(_doubts(_STATIC, res, lo, hi))
    return p.replace(**dict(zip(_STATIC, res.x)))


# --- stage 3: dynamics ------------------------------------------------------------------

_DYNAMIC_BOUNDS = {
    "dynamic_w": (100.0, 3000.0),
    "activity_memory": (0.0, 1.0),
    "activity_light": (0.0, 1.0),
    "activity_checkpoint": (0.0, 0.5),
    "mfu_saturation": (0.05, 1.0),
    "voltage_min": (0.3, 1.0),
    "burst_limit_ratio": (1.0, 1.6),
    "limit_gain": (0.0, 50.0),
    "limit_avg_tau_s": (0.05, 5.0),
    "limit_integral_per_s": (0.0, 50.0),
    "clock_down_tau_s": (0.003, 2.0),
    "clock_up_tau_s": (0.003, 5.0),
    "power_tau_s": (0.0, 0.3),
    "limit_sense_tau_s": (0.0, 0.3),
}


def _dynamic_names(recs: Sequence[Measured], spans) -> list[str]:
    """The dynamic parameters the recordings can determine."""
    present: set[int] = set()
    has_mfu = saturated = False
    for m, (a, b) in zip(recs, spans):
        s = m.schedule.window(a, b)
        present |= set(np.unique(s.load).tolist())
        has_mfu |= bool(np.any(~np.isnan(s.mfu)))
        saturated |= bool(np.any((s.load == COMPUTE) & np.isnan(s.mfu)))
    names = list(_DYNAMIC_BOUNDS)
    if not saturated:
        # dynamic_w is the power of saturated tensor cores (compute without mfu); steps
        # with mfu alone determine only its product with their activity, and fitting both
        # trades one for the other (a training-only recording fitted dynamic_w at 450 W and
        # mfu_saturation at 0.27, 19 % low on the GEMMs of another recording)
        names.remove("dynamic_w")
    for load, name in ((MEMORY, "activity_memory"), (LIGHT, "activity_light"),
                       (CHECKPOINT, "activity_checkpoint")):
        if load not in present:
            names.remove(name)
    if not has_mfu:
        names.remove("mfu_saturation")
    return names


def _fit_dynamic(p: GpuParams, recs: Sequence[Measured], spans, max_nfev: int,
                 doubts: dict[str, str]) -> GpuParams:
    names = _dynamic_names(recs, spans)
    windows = []
    for m, (a, b) in zip(recs, spans):
        te, pw = m.energy_windows()
        sel_e = (te[:-1] >= a) & (te[1:] <= b)
        sel_c = (m.t_s >= a) & (m.t_s < b) & (m.clock_mhz is not None)
        k = np.arange(np.ceil(max(a, te[0])), np.floor(min(b, te[-1])) + 1e-9)
        windows.append((te, pw, sel_e, sel_c, k, np.diff(np.interp(k, te, m.energy_updates()[1]))))

    def resid(q: np.ndarray) -> np.ndarray:
        pq = p.replace(**dict(zip(names, q)))
        out = []
        for m, (te, pw, sel_e, sel_c, k, p_second) in zip(recs, windows):
            pred = m.simulate(pq)
            out.append((np.diff(pred.energy_j(te)) / np.diff(te) - pw)[sel_e])
            out.append(SECOND_WEIGHT * (np.diff(pred.energy_j(k)) - p_second))
            if m.clock_mhz is not None:
                clk = np.interp(m.t_s[sel_c][::5], pred.t_s, pred.clock_mhz)
                out.append(CLOCK_WEIGHT_W_PER_MHZ * (clk - m.clock_mhz[sel_c][::5]))
        return np.concatenate(out)

    q0 = np.array([getattr(p, k) for k in names])
    lo, hi = np.array([_DYNAMIC_BOUNDS[k] for k in names]).T
    res = scipy.optimize.least_squares(resid, np.clip(q0, lo, hi), bounds=(lo, hi),
                                       x_scale="jac", max_nfev=max_nfev)
    doubts.update(_doubts(names, res, lo, hi))
    return p.replace(**dict(zip(names, res.x)))


@dataclass(frozen=True)
class FitResult:
    """Fitted parameters and the ones among them not to be trusted."""

    params: GpuParams
    #: parameter name -> why it is not to be trusted (at a bound of the fit, or barely
    #: determined by the recordings), in the order the stages fitted them
    doubtful: dict[str, str]


def fit(recordings: Sequence[Measured], start: GpuParams,
        spans: Sequence[tuple[float, float]] | None = None, *,
        max_nfev: int = 200) -> GpuParams:
    """Fit a GPU's parameters to recordings, starting from ``start``.

    The parameters of :func:`fit_report`, without its doubts.
    """
    return fit_report(recordings, start, spans, max_nfev=max_nfev).params


def fit_report(recordings: Sequence[Measured], start: GpuParams,
               spans: Sequence[tuple[float, float]] | None = None, *,
               max_nfev: int = 200) -> FitResult:
    """Fit a GPU's parameters to recordings, starting from ``start``.

    ``spans`` restricts each recording's residuals to ``[t0, t1)`` (the simulation still
    runs over the whole recording, so the state entering the span is the model's own):
    hold out the rest to test on it.  ``start.power_limit_w`` is taken as known (it is a
    setting of the card, read from NVML), as are the clock range and reference temperature.
    """
    if not recordings:
        raise FitError("fit needs at least one recording")
    if spans is None:
        spans = [(-np.inf, np.inf)] * len(recordings)
    if len(spans) != len(recordings):
        raise FitError(f"{len(spans)} spans for {len(recordings)} recordings")
    doubts: dict[str, str] = {}
    p = _fit_thermal(start, recordings, spans, doubts)
    p = _fit_static(p, recordings, spans, doubts)
    p = _fit_dynamic(p, recordings, spans, max_nfev, doubts)
    return FitResult(p, doubts)


def rounded(p: GpuParams, digits: int = 4) -> GpuParams:
    """Parameters rounded to ``digits`` significant digits (for parameter files)."""
    def r(v: float) -> float:
        return 0.0 if abs(v) < 1e-9 else float(f"{v:.{digits}g}")

    return dataclasses.replace(p, **{f.name: r(getattr(p, f.name))
                                     for f in dataclasses.fields(p)})
