"""Power spectral density and the share of the variance in a band."""

from __future__ import annotations

import numpy as np
import pytest

from twin.errors import TwinError
from twin.gpu import H100_SXM, load_params, simulate
from twin.rack import GpuRack, load_rack
from twin.spectrum import spectrum
from twin.workload import desynchronise, synchronous_training


def test_a_sine_lies_in_its_band():
    dt = 0.01
    t = np.arange(0, 200, dt)
    p = 5000 + 800 * np.sin(2 * np.pi * 2.0 * t)
    sp = spectrum(p, dt)
    assert sp.peak_hz == pytest.approx(2.0, abs=0.02)
    assert sp.band_share > 0.99
    assert sp.std_w == pytest.approx(800 / np.sqrt(2), rel=1e-3)
    # Parseval: the PSD integrates to the variance.
    df = sp.f_hz[1] - sp.f_hz[0]
    assert sp.psd_w2_per_hz[1:].sum() * df == pytest.approx(sp.std_w**2, rel=0.02)
    assert spectrum(p, dt, band_hz=(5.0, 20.0)).band_share < 0.01


def test_training_power_peaks_at_the_step_frequency():
    p, _ = load_params(H100_SXM)
    for step_s in (0.5, 2.0):
        sched = synchronous_training(step_s, 0.6, 0.2, stop_s=200.0)
        pred = simulate(p, sched, 0.01)
        sp = spectrum(pred.power_w, 0.01)
        assert sp.peak_hz == pytest.approx(1.0 / step_s, rel=0.03)
        assert sp.band_share > 0.8


def test_desynchronised_rack_has_less_high_frequency_power():
    rack, gpu, temp = load_rack()
    sched = synchronous_training(0.5, 0.6, 0.2, stop_s=120.0)
    sync = GpuRack(rack, gpu, [sched], temp).run(120.0, 0.01)["p_w"]
    spread = GpuRack(rack, gpu, [desynchronise(sched, 4, 0.375)], temp).run(120.0, 0.01)["p_w"]
    a, b = spectrum(sync, 0.01), spectrum(spread, 0.01)
    assert b.std_w < 0.5 * a.std_w
    # Four groups a quarter step apart cancel the first three harmonics of the step.
    i = np.argmin(abs(a.f_hz - 2.0))
    assert b.psd_w2_per_hz[i] < 1e-3 * a.psd_w2_per_hz[i]


@pytest.mark.parametrize(("args", "message"), [
    ((np.ones(100), 0.0), "dt must be > 0"),
    ((np.ones(10), 0.01), "at least 16"),
    ((np.r_[np.ones(99), np.nan], 0.01), "finite"),
])
def test_bad_input(args, message):
    with pytest.raises(TwinError, match=message):
        spectrum(*args)
    with pytest.raises(TwinError, match="band"):
        spectrum(np.ones(100), 0.01, band_hz=(5.0, 1.0))


def test_a_band_above_nyquist_is_refused():
    p = np.sin(np.arange(1000) * 0.3)
    with pytest.raises(TwinError, match="at or above the Nyquist frequency 50 Hz"):
        spectrum(p, 0.01, band_hz=(50.0, 1000.0))
