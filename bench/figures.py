"""Report figures as PNG files (matplotlib, Agg backend, no global pyplot state).

Each function takes plain data, writes one figure and returns its path, so ``gridloop
report`` and the commands that end in a figure share them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from twin.spectrum import BAND_HZ, Spectrum, spectrum


def spectrum_figure(out: str | Path, series: Mapping[str, tuple[np.ndarray, float] | Spectrum],
                    band_hz: tuple[float, float] = BAND_HZ, title: str | None = None
                    ) -> Path:
    """Power spectral density of rack and node power with the share in a band.

    Parameters
    ----------
    out : PNG file to write.
    series : name -> ``(power_w, dt)`` (evenly sampled power [W] every dt [s]) or a
        precomputed :class:`twin.spectrum.Spectrum`; e.g. ``{"rack": ..., "node": ...}``.
    band_hz : band to shade and whose share of the variance is annotated. [Hz]
    title : figure title.
    """
    if not series:
        raise ValueError("spectrum_figure: no series to plot")
    fig = Figure(figsize=(8.0, 5.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    nyquist = 0.0
    for name, s in series.items():
        sp = s if isinstance(s, Spectrum) else spectrum(s[0], s[1], band_hz)
        f, psd = sp.f_hz[1:], sp.psd_w2_per_hz[1:]
        nyquist = max(nyquist, float(f[-1]) if len(f) else 0.0)
        # a "peak" in the last bins is the edge of the sampled band, not a rhythm
        peak = (f"peak {sp.peak_hz:.2f} Hz" if len(f) and sp.peak_hz < 0.95 * f[-1]
                else "no peak below Nyquist")
        ax.loglog(f, np.maximum(psd, 1e-12), lw=1.0,
                  label=f"{name}: {100 * sp.band_share:.0f} % of variance in band, "
                        f"{peak}, std {sp.std_w:.0f} W")
    top = min(band_hz[1], nyquist) if nyquist else band_hz[1]
    clipped = f" (sampled to {nyquist:g} Hz)" if top < band_hz[1] else ""
    ax.axvspan(band_hz[0], top, color="tab:orange", alpha=0.12,
               label=f"band {band_hz[0]:g}-{band_hz[1]:g} Hz{clipped}")
    ax.set_xlabel("frequency [Hz]")
    ax.set_ylabel("power spectral density [W$^2$/Hz]")
    ax.grid(True, which="both", alpha=0.3)
    # below the axes: inside, the legend covered the curves
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
    ax.set_title(title or "Power spectral density")
    fig.tight_layout()
    return save_png(fig, out)


def save_png(fig: Figure, out: str | Path) -> Path:
    """Write ``fig`` as PNG through a new file beside ``out``, renamed over it only once
    written: a failed write (a full disk, a folder gone) leaves what ``out`` held whole."""
    from bench.errors import BenchError
    from bench.paths import replacing

    out = Path(out)
    try:
        with replacing(out) as tmp:
            fig.savefig(tmp, format="png")
    except OSError as exc:
        raise BenchError(f"{out}: cannot write the figure ({exc.strerror or exc})") from None
    return out
