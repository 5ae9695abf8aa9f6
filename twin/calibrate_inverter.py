"""Fit an inverter's Sandia efficiency coefficients to a recording.

``gridloop calibrate`` hands this the measured DC power, DC voltage and AC power of one
inverter.  The fit is a least-squares problem on the running, unclipped samples (AC power
above zero and below the clipping level) against :func:`twin.inverter.sandia_curve`:

- ``pdco_w``, ``pso_w``, ``c0_per_w`` are fitted from any recording that spans the load range;
- ``c1_per_v``, ``c2_per_v``, ``c3_per_v`` (the voltage dependence) only when the DC voltage
  varies by more than 1 %; otherwise they keep the base values (they cannot be told apart);
- ``paco_w`` is the clipping level when the recording holds a plateau of at least
  ``MIN_PLATEAU`` samples at its largest AC power, else the base value;
- ``pnt_w`` is the median night tare when the recording has samples of negative AC power.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from twin.errors import ParameterError
from twin.inverter import InverterParams, SandiaInverter, sandia_curve

ALWAYS = ("pdco_w", "pso_w", "c0_per_w")
VOLTAGE = ("c1_per_v", "c2_per_v", "c3_per_v")
MIN_PLATEAU = 5
MIN_POINTS = 8


@dataclass(frozen=True)
class FitReport:
    """What the fit did and how well the curve matches, before and after."""

    fitted: tuple[str, ...]
    """Names of the fitted Sandia coefficients."""
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


def _column(name: str, a) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim != 1:
        raise ParameterError(f"calibrate inverter: {name} must be one-dimensional")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"calibrate inverter: {name} holds values that are not finite")
    return arr


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
    plateau = top > 0 and np.count_nonzero(p_ac >= top * (1 - 1e-9)) >= MIN_PLATEAU
    paco = float(top) if plateau else s0.paco_w
    night = p_ac < 0
    pnt = float(-np.median(p_ac[night])) if night.any() else s0.pnt_w
    use = (p_ac > 0) & (p_ac < paco * (1 - 1e-6)) & (p_dc > 0)
    if np.count_nonzero(use) < MIN_POINTS:
        raise ParameterError(f"calibrate inverter: only {np.count_nonzero(use)} running, "
                             f"unclipped samples; need at least {MIN_POINTS}")
    spread = np.ptp(v_dc[use]) / np.mean(v_dc[use])
    names = ALWAYS + (VOLTAGE if spread > 0.01 else ())
    start = dataclasses.replace(s0, paco_w=paco, pnt_w=pnt)
    x0 = np.array([getattr(start, n) for n in names])
    scale = np.where(x0 != 0, np.abs(x0), 1e-6)

    def model(x: np.ndarray) -> SandiaInverter:
        return dataclasses.replace(start, **dict(zip(names, (float(v) for v in x))))

    def residual(z: np.ndarray) -> np.ndarray:
        return sandia_curve(v_dc[use], p_dc[use], model(x0 + z * scale)) - p_ac[use]

    sol = scipy.optimize.least_squares(residual, np.zeros(len(names)), method="lm",
                                       xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=2000)
    fitted = model(x0 + sol.x * scale)

    def rms(s: SandiaInverter) -> float:
        return float(np.sqrt(np.mean((sandia_curve(v_dc[use], p_dc[use], s) - p_ac[use]) ** 2)))

    report = FitReport(
        fitted=names, n_points=int(np.count_nonzero(use)),
        rms_before_w=rms(s0), rms_after_w=rms(fitted),
        before={n: getattr(s0, n) for n in names + ("paco_w", "pnt_w")},
        after={n: getattr(fitted, n) for n in names + ("paco_w", "pnt_w")},
        paco_from_plateau=bool(plateau), pnt_from_night=bool(night.any()))
    return dataclasses.replace(base, sandia=fitted), report
