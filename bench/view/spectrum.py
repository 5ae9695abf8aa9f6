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
#: how far a rhythm's peak must stand above the background: a chance bump in 40 s of white
#: noise or of a random walk does in about 3 windows of 10 000
PROMINENCE = 12.0
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
    Nyquist frequency (where a faster rhythm aliases), sit on a peak of the PSD, and that
    peak must stand ``PROMINENCE`` times above the background, which a periodic load
    empties and a broadband or drifting load does not.  NaN otherwise (an inference rack's
    irregular load has no step).  See :func:`_on_peak` and :func:`_background` for why each
    test is as loose as it is: checkpoints shift the step's phase and add slow power, and
    a stricter test named a harmonic of the step instead.  A history under a quarter of
    the window names nothing, and a shorter one than the window stops at its strongest
    rhythm when it is too slow to be judged there.
    """
    if len(f_hz) < 3 or not np.all(np.isfinite(psd)):
        return float("nan")
    # a history shorter than the window has coarser bins (rolling_psd's segments are half
    # of it, zero-padded four times): judge lobes and valleys at the resolution there is
    history_s = 0.5 / float(f_hz[1] - f_hz[0])
    if history_s < 0.25 * window_s:
        return float("nan")  # too few steps of a slow job to tell it from a faster ripple
    short = history_s < 0.999 * window_s
    window_s = min(window_s, history_s)
    keep = (f_hz >= 4.0 / window_s) & (f_hz <= 0.9 * f_hz[-1])
    if keep.sum() < 3:
        return float("nan")
    f0 = f_hz[keep]
    score = np.zeros(len(f0))
    for h in range(1, HARMONICS + 1):
        inside = h * f0 <= f_hz[-1]
        score[inside] += WEIGHT ** (h - 1) * np.interp(h * f0[inside], f_hz, psd)
    peaks = np.flatnonzero((score[1:-1] >= score[:-2]) & (score[1:-1] >= score[2:])) + 1
    for k in peaks[np.argsort(score[peaks])[::-1]]:
        f = float(f0[k])
        peak = _on_peak(f_hz, psd, f, window_s)
        if np.isnan(peak):
            continue
        valley = _background(f_hz, psd, f, window_s)
        if np.isnan(valley) and short:
            # the strongest rhythm, too slow for a short history to show valleys beside it
            # (in a full window only a slower cycle's, such as checkpoints'): the weaker
            # candidates left are its harmonics, not the step
            return float("nan")
        if np.isfinite(valley) and peak >= PROMINENCE * valley:
            return f
    return float("nan")


def _on_peak(f_hz: np.ndarray, psd: np.ndarray, f: float, window_s: float) -> float:
    """The height of the PSD peak a candidate ``f`` sits on; NaN on the flank of another.

    From ``f`` the PSD is climbed to its nearest local maximum.  That peak must lie within
    the main lobe of ``f`` (Welch segments of ``window_s / 2`` under a Hann window:
    ``4 / window_s`` either side) and be the highest PSD within its own main lobe; else it
    is a ripple on the skirt of a peak elsewhere (below the candidates' range, or at
    Nyquist).  The peak need not be at ``f`` itself: the score's maximum and the PSD's drift
    apart when the harmonics are not exact multiples of the fundamental's peak, as when a
    checkpoint shifts a training job's phase (4 s in a 1.5 s step moves the fundamental by
    two thirds of a cycle and its third harmonic by none), and insisting on the very bin
    rejected the fundamental and named a harmonic as the step.
    """
    lobe = 4.0 / window_s
    i = int(np.argmin(np.abs(f_hz - f)))
    while True:
        left = psd[i - 1] if i > 0 else -np.inf
        right = psd[i + 1] if i + 1 < len(psd) else -np.inf
        if max(left, right) <= psd[i]:
            break
        i = i + 1 if right >= left else i - 1
    if abs(f_hz[i] - f) > lobe or psd[i] < psd[np.abs(f_hz - f_hz[i]) <= lobe].max():
        return float("nan")
    return float(psd[i])


def _background(f_hz: np.ndarray, psd: np.ndarray, f: float, window_s: float) -> float:
    """The PSD a candidate ``f`` would have without a rhythm there, from the valleys beside it.

    The valleys are the median PSD below ``f`` (down to ``f / 2``) and between ``f`` and its
    second harmonic, outside the peaks' main lobes (``4 / window_s``) and short of the
    Nyquist bin.  The background is the power law through them, evaluated at ``f`` (a
    straight line on the log-log plot between the bands' geometric centres): slow power,
    such as a training job's checkpoints (the demo's east rack: 4 s dips every 22 s), falls
    off with frequency and fills the valley below the step far more than the one above, and
    the higher valley alone hid the step.  Where a valley is squeezed to under half its band
    (by the lobes at the slowest candidates, by Nyquist at the fastest) its median says
    little about a slope, and the higher valley is the background, as for a load that only
    drifts.  NaN without valleys.
    """
    lobe = 4.0 / window_s
    b0, b1 = 0.5 * f, min(0.8 * f, f - lobe)
    a0, a1 = max(1.2 * f, f + lobe), min(1.8 * f, 2 * f - lobe, float(f_hz[-2]))
    below = psd[(f_hz >= b0) & (f_hz <= b1)]
    above = psd[(f_hz >= a0) & (f_hz <= a1)]
    if not len(above) and not len(below):
        return float("nan")
    vb = float(np.median(below)) if len(below) else 0.0
    va = float(np.median(above)) if len(above) else 0.0
    if b1 - b0 < 0.15 * f or a1 - a0 < 0.3 * f:
        return max(va, vb)
    cb, ca = np.sqrt(b0 * b1), np.sqrt(a0 * a1)
    w = float(np.log(f / cb) / np.log(ca / cb))
    return vb ** (1.0 - w) * va ** w
