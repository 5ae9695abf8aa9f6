"""Power spectral density of rack and node power, and the share of it in a band.

Synchronous training makes a rack's power swing at the step frequency and its harmonics
(0.2-5 Hz), with deep dips at checkpoints: the band that excites weak grids, generator
governors and the inter-area modes of islanded microgrids.  :func:`spectrum` gives the
one-sided PSD of the power's fluctuation (Welch's method, Hann window, mean removed) and the
share of the fluctuation energy (the variance) that lies in a band, 0.1-20 Hz by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal

from twin.errors import TwinError

#: default band of interest [Hz]
BAND_HZ = (0.1, 20.0)


@dataclass(frozen=True)
class Spectrum:
    """The PSD of one power signal and what lies in the band.

    Attributes
    ----------
    f_hz : frequencies. [Hz]
    psd_w2_per_hz : one-sided power spectral density of the power. [W^2/Hz]
    band_hz : the band (low, high). [Hz]
    band_share : variance in the band over the total variance. [fraction]
    peak_hz : frequency of the largest PSD value inside the band. [Hz]
    std_w : standard deviation of the power. [W]
    """

    f_hz: np.ndarray
    psd_w2_per_hz: np.ndarray
    band_hz: tuple[float, float]
    band_share: float
    peak_hz: float
    std_w: float


def spectrum(power_w: np.ndarray, dt: float, band_hz: tuple[float, float] = BAND_HZ,
             segment_s: float | None = None) -> Spectrum:
    """PSD of a power signal sampled every ``dt`` seconds, and its share in ``band_hz``.

    Parameters
    ----------
    power_w : power, evenly sampled. [W]
    dt : sample interval. [s]
    band_hz : band whose share of the variance is reported. [Hz]
    segment_s : length of Welch's segments; default the longest power of two of samples
        up to a quarter of the signal, at least ten periods of the band's low edge. [s]
    """
    p = np.asarray(power_w, dtype=float)
    lo, hi = band_hz
    if not dt > 0:
        raise TwinError(f"spectrum: dt must be > 0, got {dt}")
    if not 0 <= lo < hi:
        raise TwinError(f"spectrum: band {band_hz} must have 0 <= low < high")
    if lo >= 0.5 / dt:
        raise TwinError(f"spectrum: band {band_hz} starts at or above the Nyquist frequency "
                        f"{0.5 / dt:g} Hz of dt {dt:g} s")
    if len(p) < 16 or not np.all(np.isfinite(p)):
        raise TwinError("spectrum: need at least 16 finite samples")
    n = len(p)
    if segment_s is None:
        want = max(n // 4, int(10.0 / lo / dt) if lo > 0 else n)
        nseg = 2 ** math.floor(math.log2(min(n, want)))
    else:
        nseg = min(n, max(16, round(segment_s / dt)))
    f, psd = scipy.signal.welch(p, fs=1.0 / dt, window="hann", nperseg=nseg,
                                detrend="constant", scaling="density")
    df = f[1] - f[0]
    total = float(np.sum(psd[1:]) * df)
    inband = (f >= lo) & (f <= hi)
    share = float(np.sum(psd[inband & (f > 0)]) * df / total) if total > 0 else 0.0
    peak = float(f[inband][np.argmax(psd[inband])]) if inband.any() else math.nan
    return Spectrum(f, psd, (float(lo), float(hi)), share, peak, float(np.std(p)))
