"""Fit an inverter's Sandia efficiency coefficients to a recording.

``gridloop calibrate`` hands this the measured DC power, DC voltage and AC power of one
inverter.  The fit is a least-squares problem on the running, unclipped samples (AC power
above zero and below the clipping level) against :func:`twin.inverter.sandia_curve`:

- ``pdco_w``, ``pso_w``, ``c0_per_w`` are fitted from any recording that spans the load range;
- ``c1_per_v``, ``c2_per_v``, ``c3_per_v`` (the voltage dependence) only when the DC voltage
  varies by more than 1 %; otherwise they keep the base values (they cannot be told apart);
- ``paco_w`` is the clipping level when the recording holds a plateau at its largest AC power:
  at least ``MIN_PLATEAU`` samples, and more than in the band of ``PLATEAU_BAND`` of it just
  below (a sunny peak or a slow ramp passes the top no slower than the levels under it;
  clipping holds there), else the base value;
- ``pnt_w`` is the median night tare when the recording has samples of negative AC power.

The fit is bounded: each coefficient stays in the range of the CEC inverter library
(``RANGES``), so a trial never leaves the model (``pso_w`` below zero, say).  A coefficient
the recording does not determine, one whose standard error (from the Jacobian of the fit and
the RMS of its residuals) exceeds ``MAX_STD_ERROR`` of its value, keeps the base value: such
coefficients are set aside one at a time, the worst first, and the rest fitted again.  A
recording that covers a narrow band of DC power, say, cannot tell ``pso_w`` from the
curvature.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from twin.errors import ParameterError
from twin.inverter import InverterParams, SandiaInverter, sandia_curve
from twin.lsq import standard_errors

ALWAYS = ("pdco_w", "pso_w", "c0_per_w")
VOLTAGE = ("c1_per_v", "c2_per_v", "c3_per_v")
MIN_PLATEAU = 5
PLATEAU_BAND = 0.01
MIN_POINTS = 8
#: range of each fitted coefficient, relative to ``pdco_w`` (``pso_w`` over it, ``c0_per_w``
#: times it) or ``vdco_v`` (``c1_per_v`` .. ``c3_per_v`` times it); ``pdco_w`` is between
#: ``paco_w`` and ``paco_w / 0.75`` (an efficiency at the rating of 75 % to 100 %).  All but
#: the 0.1 % most extreme of the 3264 inverters of the CEC library (pvlib 0.16.1) lie within.
RANGES = {"pso_w": (0.0, 0.1), "c0_per_w": (-0.2, 0.05), "c1_per_v": (-0.25, 0.25),
          "c2_per_v": (-10.0, 10.0), "c3_per_v": (-20.0, 20.0)}
#: a coefficient whose relative standard error exceeds this is not determined (1.96 of it:
#: a 95 % confidence interval of about +-10 %): it keeps its base value
MAX_STD_ERROR = 0.05


@dataclass(frozen=True)
class FitReport:
    """What the fit did and how well the curve matches, before and after."""

    fitted: tuple[str, ...]
    """Names of the fitted Sandia coefficients."""
    kept: tuple[str, ...]
    """Coefficients the recording does not determine: kept at their base values."""
    at_bound: tuple[str, ...]
    """Fitted coefficients at the edge of their range (``RANGES``): not to be trusted."""
    why_kept: dict[str, str]
    """Why each coefficient of ``kept`` is."""
    std_errors: dict[str, float]
    """Standard error of each fitted coefficient, relative to its value. [-]"""
    n_points: int
    """Samples used by the least-squares fit (running, unclipped)."""
    rms_before_w: float
    """RMS residual of AC power with the base parameters. [W]"""
    rms_after_w: float
    """RMS residual of AC power with the fitted parameters. [W]"""
    before: dict[str, float]
    after: dict[str, float]
    paco_from_plateau: bool
    pnt_from_night: bool
    kept_curve: dict[str, str] = dataclasses.field(default_factory=dict)
    """The curve's other parameters this recording leaves at their base values, and why:
    ``paco_w`` without a clipping plateau, ``pnt_w`` without night samples, ``vdco_v``
    always (the voltage terms' reference: other coefficients match any other value)."""


def _ranges(s: SandiaInverter) -> dict[str, tuple[float, float]]:
    """The range of each fitted coefficient of ``s`` (``RANGES`` in its units)."""
    out = {"pdco_w": (s.paco_w, s.paco_w / 0.75)}
    for name, (lo, hi) in RANGES.items():
        ref = (s.pdco_w if name == "pso_w" else 1.0 / s.pdco_w if name == "c0_per_w"
               else 1.0 / s.vdco_v)
        out[name] = (lo * ref, hi * ref)
    return out


def _column(name: str, a) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim != 1:
        raise ParameterError(f"calibrate inverter: {name} must be one-dimensional")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"calibrate inverter: {name} holds values that are not finite")
    return arr


def _left_out(p_dc: np.ndarray, p_ac: np.ndarray, paco: float) -> str:
    """Why samples are not fit to: the inverter clipped at its AC limit ``paco``, or was not
    running (no AC power out, or no DC power in)."""
    clipped = int(np.count_nonzero(p_ac >= paco * (1 - 1e-6)))
    if clipped == p_ac.size:
        return f"it sat at its AC limit of {paco:.6g} W, clipped, on all {clipped} samples"
    idle = int(np.count_nonzero(((p_ac <= 0) | (p_dc <= 0)) & (p_ac < paco * (1 - 1e-6))))
    parts = [f"{clipped} sat at its AC limit of {paco:.6g} W, clipped"] if clipped else []
    parts += [f"{idle} were not running (no AC power out or no DC power in)"] if idle else []
    if not parts:
        return f"there are {p_ac.size} samples in all"
    return f"of {p_ac.size} samples, {' and '.join(parts)}"


def _kept_curve(plateau: bool, top: float, at_top: int, under: int, night: bool
                ) -> dict[str, str]:
    """Why ``paco_w``, ``pnt_w`` and ``vdco_v`` keep their base values (those that do)."""
    out = {}
    if not plateau:
        out["paco_w"] = (f"the recording does not clip: its largest AC power, {top:.6g} W, "
                         f"comes {at_top} times, {under} within {PLATEAU_BAND:.0%} below it (a "
                         f"clipping plateau: {MIN_PLATEAU} or more, and more than below)")
    if not night:
        out["pnt_w"] = "no samples of negative AC power, the night tare"
    out["vdco_v"] = ("the reference of the voltage terms: pdco_w, pso_w, c0_per_w and "
                     "c1..c3 match any other value, so no recording determines it")
    return out


def fit_inverter_efficiency(p_dc_w, v_dc_v, p_ac_w,
                            base: InverterParams) -> tuple[InverterParams, FitReport]:
    """Fit the Sandia coefficients of ``base`` to measured DC power, DC voltage and AC power.

    Parameters
    ----------
    p_dc_w : array_like
        DC input power. [W]
    v_dc_v : array_like
        DC input voltage. [V]
    p_ac_w : array_like
        AC output power. [W]
    base : InverterParams
        Starting point and the values of what the recording cannot identify.

    Returns
    -------
    (InverterParams, FitReport)
        ``base`` with the fitted coefficients, and the report.
    """
    if base.sandia is None:
        raise ParameterError("calibrate inverter: the base parameters have no Sandia model")
    p_dc, v_dc, p_ac = (_column(n, a) for n, a in
                        (("p_dc_w", p_dc_w), ("v_dc_v", v_dc_v), ("p_ac_w", p_ac_w)))
    if not p_dc.shape == v_dc.shape == p_ac.shape:
        raise ParameterError("calibrate inverter: p_dc_w, v_dc_v and p_ac_w differ in length")
    s0 = base.sandia
    top = p_ac.max(initial=0.0)
    at_top = np.count_nonzero(p_ac >= top * (1 - 1e-9))
    under = np.count_nonzero((p_ac < top * (1 - 1e-9)) & (p_ac >= top * (1 - PLATEAU_BAND)))
    plateau = top > 0 and at_top >= MIN_PLATEAU and at_top > under
    paco = float(top) if plateau else s0.paco_w
    night = p_ac < 0
    pnt = float(-np.median(p_ac[night])) if night.any() else s0.pnt_w
    use = (p_ac > 0) & (p_ac < paco * (1 - 1e-6)) & (p_dc > 0)
    if np.count_nonzero(use) < MIN_POINTS:
        raise ParameterError(f"calibrate inverter: only {np.count_nonzero(use)} running, "
                             f"unclipped samples; need at least {MIN_POINTS} "
                             f"({_left_out(p_dc, p_ac, paco)})")
    spread = np.ptp(v_dc[use]) / np.mean(v_dc[use])
    names = ALWAYS + (VOLTAGE if spread > 0.01 else ())
    why = {n: f"the DC voltage varies by {spread:.2%} (fitted from 1%)"
           for n in VOLTAGE if n not in names}
    start = dataclasses.replace(s0, paco_w=paco, pnt_w=pnt)
    ranges = _ranges(start)
    lower = np.array([ranges[n][0] for n in names])
    upper = np.array([ranges[n][1] for n in names])
    kept_x = np.array([getattr(start, n) for n in names])  # what is not fitted keeps
    x0 = np.clip(kept_x, lower, upper)  # where the fit starts
    scale = np.where(x0 != 0, np.abs(x0), upper - lower)

    def value(z: np.ndarray, free: np.ndarray) -> np.ndarray:
        return np.where(free, x0 + z * scale, kept_x)

    def model(x: np.ndarray) -> SandiaInverter:
        return dataclasses.replace(start, **dict(zip(names, (float(v) for v in x))))

    def residual(zf: np.ndarray, free: np.ndarray) -> np.ndarray:
        z = np.zeros(len(names))
        z[free] = zf
        return sandia_curve(v_dc[use], p_dc[use], model(value(z, free))) - p_ac[use]

    # set aside what the recording does not determine, one at a time, the worst first
    free = np.ones(len(names), dtype=bool)
    z = np.zeros(len(names))
    while free.any():
        sol = scipy.optimize.least_squares(
            residual, z[free], args=(free.copy(),), method="trf",
            bounds=((lower - x0)[free] / scale[free], (upper - x0)[free] / scale[free]),
            x_scale=1.0, xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=2000)
        z[free] = sol.x
        x = value(z, free)
        error = np.zeros(len(names))  # relative standard error, zero where not fitted
        se = standard_errors(sol.jac, sol.fun) * scale[free]
        error[free] = np.divide(se, np.abs(x[free]), out=np.full(se.size, np.inf),
                                where=x[free] != 0)
        worst = int(np.argmax(error))
        if error[worst] <= MAX_STD_ERROR:
            break
        free[worst] = False
        z[worst] = 0.0
        why[names[worst]] = (f"its standard error is {100 * error[worst]:.3g}% of its "
                             f"value (fitted up to {MAX_STD_ERROR:.0%})")
    x = value(z, free)
    fitted = model(x)
    span = upper - lower

    def rms(s: SandiaInverter) -> float:
        return float(np.sqrt(np.mean((sandia_curve(v_dc[use], p_dc[use], s) - p_ac[use]) ** 2)))

    report = FitReport(
        fitted=tuple(n for n, f in zip(names, free) if f),
        kept=tuple(n for n in ALWAYS + VOLTAGE if n in why),
        why_kept={n: why[n] for n in ALWAYS + VOLTAGE if n in why},
        at_bound=tuple(n for n, f, v, lo, hi, w in zip(names, free, x, lower, upper, span)
                       if f and min(v - lo, hi - v) < 1e-3 * w),
        std_errors={n: float(e) for n, e, f in zip(names, error, free) if f},
        n_points=int(np.count_nonzero(use)),
        rms_before_w=rms(s0), rms_after_w=rms(fitted),
        before={n: getattr(s0, n) for n in names + ("paco_w", "pnt_w")},
        after={n: getattr(fitted, n) for n in names + ("paco_w", "pnt_w")},
        paco_from_plateau=bool(plateau), pnt_from_night=bool(night.any()),
        kept_curve=_kept_curve(plateau, top, at_top, under, bool(night.any())))
    return dataclasses.replace(base, sandia=fitted), report
