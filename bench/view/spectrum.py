"""Rolling power spectrum of a rack's power, and the training step frequency in it.

A synchronous training job draws power in a rhythm (compute, then wait for the gradient
all-reduce), so the rack's power spectral density has peaks at the step frequency and its
harmonics; with real GPUs the second harmonic is often as strong as the fundamental (the
measured H100 steps of ``../shared/data`` have a dip inside each compute phase).  The view
shows the Welch estimate over the last ``window_s`` before the cursor, and finds the step
frequency as the candidate whose first harmonics are jointly strongest, not as the single
highest peak.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

#: harmonics that vote for a step frequency, and the weight of each over the one before
HARMONICS = 3
WEIGHT = 0.84
#: how far a rhythm's peak must stand above the valley to its next harmonic
PROMINENCE = 10.0
#: the fewest finite samples a spectrum is estimated from
MIN_PSD_TICKS = 16


def rolling_psd(p_w: np.ndarray, dt_s: float, window_s: float = 40.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density of the last ``window_s`` of a power signal.

    Parameters
    ----------
    p_w : array
        Power samples, oldest first; NaN (a missed reading) counts as the mean. [W]
    dt_s : float
        Sample period. [s]
    window_s : float
        Length of history analysed; Welch segments are half of it (frequency resolution
        ``2 / window_s``), zero-padded four times so peaks between bins keep their height. [s]

    Returns
    -------
    f_hz : array
        Frequencies, without the DC bin. [Hz]
    psd : array
        Power spectral density. [W^2/Hz]
    """
    x = np.asarray(p_w, dtype=float)[-max(1, round(window_s / dt_s)):]
    finite = np.isfinite(x)
    if finite.sum() < MIN_PSD_TICKS:
        return np.zeros(0), np.zeros(0)
    x = np.where(finite, x, x[finite].mean())
    n = max(MIN_PSD_TICKS, len(x) // 2)
    f, p = signal.welch(x, fs=1.0 / dt_s, nperseg=n, nfft=4 * n, detrend="constant")
    return f[1:], p[1:]


def step_frequency(f_hz: np.ndarray, psd: np.ndarray, window_s: float) -> float:
    """The fundamental frequency of the strongest rhythm in a spectrum. [Hz]

    Each candidate ``f0`` above the slowest rhythm the window resolves (``4 / window_s``)
    scores the PSD at its harmonics ``f0, 2 f0 .. HARMONICS f0``, each weighted ``WEIGHT``
    times the one before (subharmonic summation, Hermes 1988, doi:10.1121/1.396427): a
    harmonic of the true rhythm loses to it because its own "fundamental" carries power
    too, and a half of the true frequency loses because its odd multiples carry none.

    Only a rhythm is named: the candidate must be a local maximum of the score (not the
    slowest candidate, the tail of something slower such as checkpoints), below 90 % of the
    Nyquist frequency (where a faster rhythm aliases), and its PSD must stand ``PROMINENCE``
    times above the valleys beside it (the median PSD between it and its second harmonic,
    and below it down to ``f0 / 2``, outside the peaks' main lobes), which a periodic load
    empties and a broadband or drifting load does not.  NaN otherwise (an inference rack's
    irregular load has no step).
    """
    keep = (f_hz >= 4.0 / window_s) & (f_hz <= 0.9 * f_hz[-1]) if len(f_hz) else f_hz > 0
    if keep.sum() < 3 or not np.all(np.isfinite(psd)):
        return float("nan")
    f0 = f_hz[keep]
    score = np.zeros(len(f0))
    for h in range(1, HARMONICS + 1):
        inside = h * f0 <= f_hz[-1]
        score[inside] += WEIGHT ** (h - 1) * np.interp(h * f0[inside], f_hz, psd)
    peaks = np.flatnonzero((score[1:-1] >= score[:-2]) & (score[1:-1] >= score[2:])) + 1
    for k in peaks[np.argsort(score[peaks])[::-1]]:
        f = f0[k]
        # the valleys start where the peak's (and its second harmonic's) main lobe ends:
        # Welch segments of window_s / 2 under a Hann window, 4 / window_s either side
        lobe = 4.0 / window_s
        peak = np.interp(f, f_hz, psd)
        if peak < psd[np.abs(f_hz - f) <= lobe].max() * 0.999:
            continue  # on the flank of a peak elsewhere (beyond the candidates' range)
        above = psd[(f_hz >= max(1.2 * f, f + lobe)) & (f_hz <= min(1.8 * f, 2 * f - lobe))]
        below = psd[(f_hz >= 0.5 * f) & (f_hz <= min(0.8 * f, f - lobe))]
        if not len(above) and not len(below):
            continue
        valley = max(np.median(above) if len(above) else 0.0,
                     np.median(below) if len(below) else 0.0)
        if peak >= PROMINENCE * valley:
            return float(f)
    return float("nan")
