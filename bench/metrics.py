"""Figures of merit of recorded signals: ramps, band power, frequency nadir, RoCoF, settling.

Pure functions over evenly sampled arrays (one sample per tick, ``dt`` apart), used by the
lab graders and usable on any recording.  Definitions follow grid-code practice where there
is one:

- a *ramp* is the change of the mean power over a window from one window to the next,
  divided by the window (a 1 s window turns a 20 ms edge of 30 kW into 0.6 kW/s, a 30 kW
  step held for a second into 30 kW/s); :func:`peak_step_w_per_s` is the raw per-tick edge;
- *band power* is the variance of the signal in a frequency band, the integral of its
  power spectral density (:func:`twin.spectrum.spectrum`) over the band;
- *RoCoF* is the frequency change over a sliding window (500 ms in ENTSO-E's
  "Frequency Stability Evaluation Criteria for the Synchronous Zone of Continental
  Europe", 2016), divided by the window;
- the *settling time* is the time after an event until the signal stays inside a band
  around its final value.
"""

from __future__ import annotations

import math

import numpy as np

from twin.spectrum import spectrum


def _samples(window_s: float, dt: float) -> int:
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    return max(1, int(round(window_s / dt)))


def moving_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Trailing mean of ``x`` over ``n`` samples; element ``j`` averages ``x[j:j + n]``.

    NaN samples (failed readings) are left out of each window's mean; a window with none
    left is NaN.
    """
    x = np.asarray(x, dtype=float)
    if n < 1 or len(x) < n:
        return np.zeros(0)
    ok = np.isfinite(x)
    s = np.concatenate(([0.0], np.cumsum(np.where(ok, x, 0.0))))
    c = np.concatenate(([0], np.cumsum(ok)))
    count = c[n:] - c[:-n]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (s[n:] - s[:-n]) / count, np.nan)


def ramp_w_per_s(p_w: np.ndarray, dt: float, window_s: float = 1.0) -> np.ndarray:
    """Ramp of power: the mean over one window minus the mean over the window before it,
    divided by the window, for every sample where both windows exist.

    Parameters
    ----------
    p_w : power, one sample per tick. [W]
    dt : tick length. [s]
    window_s : averaging window. [s]

    Returns
    -------
    ramp : one value per position of the pair of windows. [W/s]
    """
    n = _samples(window_s, dt)
    m = moving_mean(p_w, n)
    return (m[n:] - m[:-n]) / (n * dt)


def peak_ramp_w_per_s(p_w: np.ndarray, dt: float, window_s: float = 1.0) -> float:
    """Largest absolute :func:`ramp_w_per_s` of a signal. [W/s]"""
    r = np.abs(ramp_w_per_s(p_w, dt, window_s))
    r = r[np.isfinite(r)]
    return float(r.max()) if len(r) else math.nan


def peak_step_w_per_s(p_w: np.ndarray, dt: float) -> float:
    """Largest absolute change between consecutive ticks, per second (no averaging). [W/s]"""
    d = np.abs(np.diff(np.asarray(p_w, dtype=float))) / dt
    d = d[np.isfinite(d)]
    return float(d.max()) if len(d) else math.nan


def band_power_w2(p_w: np.ndarray, dt: float, band_hz: tuple[float, float]) -> float:
    """Variance of a power signal inside ``band_hz``: its PSD integrated over the band.

    Parameters
    ----------
    p_w : power, evenly sampled and finite. [W]
    dt : sample interval. [s]
    band_hz : (low, high) edges of the band. [Hz]

    Returns
    -------
    band power. [W^2]
    """
    sp = spectrum(p_w, dt, band_hz)
    df = float(sp.f_hz[1] - sp.f_hz[0])
    inband = (sp.f_hz >= band_hz[0]) & (sp.f_hz <= band_hz[1]) & (sp.f_hz > 0)
    return float(np.sum(sp.psd_w2_per_hz[inband]) * df)


def reduction_db(before: float, after: float) -> float:
    """``10 log10(before / after)`` of two powers (band powers in W^2): positive when the
    second is smaller. [dB]"""
    if before <= 0 or after <= 0:
        return math.inf if after <= 0 < before else math.nan
    return 10.0 * math.log10(before / after)


def nadir(t_s: np.ndarray, f_hz: np.ndarray, t_event_s: float = 0.0) -> tuple[float, float]:
    """Lowest frequency after ``t_event_s`` and when it occurs: ``(f_min [Hz], t [s])``."""
    t, f = np.asarray(t_s, dtype=float), np.asarray(f_hz, dtype=float)
    after = (t >= t_event_s) & np.isfinite(f)
    if not after.any():
        return math.nan, math.nan
    i = np.flatnonzero(after)[np.argmin(f[after])]
    return float(f[i]), float(t[i])


def rocof_hz_per_s(t_s: np.ndarray, f_hz: np.ndarray, window_s: float = 0.5,
                   t_event_s: float = 0.0) -> float:
    """Largest absolute rate of change of frequency after ``t_event_s``, measured as the
    frequency change across a sliding window divided by the window. [Hz/s]"""
    t, f = np.asarray(t_s, dtype=float), np.asarray(f_hz, dtype=float)
    keep = t >= t_event_s
    t, f = t[keep], f[keep]
    if len(t) < 2:
        return math.nan
    n = _samples(window_s, float(t[1] - t[0]))
    if len(f) <= n:
        return math.nan
    d = np.abs(f[n:] - f[:-n]) / (t[n:] - t[:-n])
    d = d[np.isfinite(d)]
    return float(d.max()) if len(d) else math.nan


def settling_time_s(t_s: np.ndarray, x: np.ndarray, t_event_s: float, band: float,
                    final: float | None = None) -> float:
    """Time from ``t_event_s`` until ``x`` enters and stays within ``final +- band``.

    Parameters
    ----------
    t_s : sample times. [s]
    x : the signal. [any unit]
    t_event_s : the event (a load step). [s]
    band : half-width of the settling band, in the unit of ``x``.
    final : the settled value; default the mean of the last tenth of the record.

    Returns
    -------
    settling time; 0 if ``x`` never leaves the band, NaN if it has not settled by the end
    of the record (it is outside the band at the last sample). [s]
    """
    t, x = np.asarray(t_s, dtype=float), np.asarray(x, dtype=float)
    keep = t >= t_event_s
    t, x = t[keep], x[keep]
    if len(t) == 0:
        return math.nan
    if final is None:
        tail = x[-max(1, len(x) // 10):]
        final = float(np.nanmean(tail))
    outside = ~(np.abs(x - final) <= band)
    if outside[-1]:
        return math.nan
    if not outside.any():
        return 0.0
    last = np.flatnonzero(outside)[-1]
    return float(t[last + 1] - t_event_s)


def energy_kwh(p_w: np.ndarray, dt: float) -> float:
    """Energy of a power signal held for ``dt`` per sample (NaN counted as zero). [kWh]"""
    return float(np.nansum(np.asarray(p_w, dtype=float)) * dt / 3.6e6)


def hold_gaps(x: np.ndarray) -> np.ndarray:
    """NaN samples (failed readings) replaced by the last good value before them, as a
    controller holding its last reading sees them; leading NaNs take the first good value."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x.copy()
    idx = np.where(ok, np.arange(len(x)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    first = np.flatnonzero(ok)[0]
    out[:first] = x[first]
    return out
