"""bench.metrics on signals whose figures are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import metrics


def test_ramp_of_a_linear_ramp_is_its_slope() -> None:
    dt = 0.02
    t = np.arange(0, 20, dt)
    r = metrics.ramp_w_per_s(1500.0 * t, dt, 1.0)
    np.testing.assert_allclose(r, 1500.0, rtol=1e-9)


def test_a_held_step_ramps_by_its_height_over_the_window_a_blip_by_its_energy() -> None:
    dt = 0.02
    p = np.full(3000, 10_000.0)
    p[1000:] += 30_000.0
    assert metrics.peak_ramp_w_per_s(p, dt, 1.0) == pytest.approx(30_000.0)
    assert metrics.peak_ramp_w_per_s(p, dt, 2.0) == pytest.approx(15_000.0)
    blip = np.full(3000, 10_000.0)
    blip[1000:1002] += 30_000.0  # 40 ms: 1.2 kJ
    assert metrics.peak_ramp_w_per_s(blip, dt, 1.0) == pytest.approx(1200.0)
    # the per-tick edge sees both at full height
    assert metrics.peak_step_w_per_s(p, dt) == pytest.approx(1.5e6)
    assert metrics.peak_step_w_per_s(blip, dt) == pytest.approx(1.5e6)


def test_moving_mean_leaves_failed_readings_out() -> None:
    x = np.array([1.0, np.nan, 3.0, 5.0, np.nan, np.nan, np.nan])
    m = metrics.moving_mean(x, 2)
    np.testing.assert_allclose(m[:4], [1.0, 3.0, 4.0, 5.0])
    assert math.isnan(m[-1])
    assert len(metrics.moving_mean(x, 10)) == 0


def test_band_power_of_a_sine_is_half_its_amplitude_squared_in_band_none_out() -> None:
    dt = 0.01
    t = np.arange(0, 200, dt)
    p = 40_000.0 + 5000.0 * np.sin(2 * np.pi * 0.5 * t)
    assert metrics.band_power_w2(p, dt, (0.1, 20.0)) == pytest.approx(5000.0 ** 2 / 2, rel=0.02)
    assert metrics.band_power_w2(p, dt, (2.0, 20.0)) < 1e-3 * 5000.0 ** 2
    assert metrics.reduction_db(100.0, 1.0) == pytest.approx(20.0)
    assert metrics.reduction_db(1.0, 100.0) == pytest.approx(-20.0)


def test_nadir_rocof_and_settling_of_a_damped_dip() -> None:
    dt = 0.001
    t = np.arange(0, 10, dt)
    te, tau = 1.0, 0.5
    # a linear fall of 2 Hz/s for 0.2 s, then an exponential return to -0.2 Hz
    f = np.full_like(t, 50.0)
    fall = (t >= te) & (t < te + 0.2)
    f[fall] = 50.0 - 2.0 * (t[fall] - te)
    after = t >= te + 0.2
    f[after] = 49.8 - 0.2 * np.exp(-(t[after] - te - 0.2) / tau)
    f_min, t_min = metrics.nadir(t, f, te)
    assert f_min == pytest.approx(49.6, abs=1e-3) and t_min == pytest.approx(1.2, abs=2e-3)
    assert metrics.rocof_hz_per_s(t, f, 0.1, te) == pytest.approx(2.0, rel=1e-3)
    # inside +-0.01 Hz of 49.8: 0.2 exp(-s / tau) <= 0.01 -> s = tau ln 20
    want = 0.2 + tau * math.log(20.0)
    assert metrics.settling_time_s(t, f, te, 0.01, 49.8) == pytest.approx(want, abs=2e-3)
    assert metrics.settling_time_s(t, f, te, 1.0, 49.8) == 0.0
    assert math.isnan(metrics.settling_time_s(t[:1300], f[:1300], te, 0.001, 49.8))


def test_hold_gaps_and_energy() -> None:
    x = np.array([np.nan, 2.0, np.nan, np.nan, 5.0, np.nan])
    np.testing.assert_array_equal(metrics.hold_gaps(x), [2.0, 2.0, 2.0, 2.0, 5.0, 5.0])
    assert metrics.energy_kwh(np.full(3600, 1000.0), 1.0) == pytest.approx(1.0)
    assert metrics.energy_kwh(np.array([3.6e6, np.nan]), 1.0) == pytest.approx(1.0)
