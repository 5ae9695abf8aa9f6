"""The vectorisable exponential, and the GPU step it lets run as SIMD: the same numbers one
row at a time as over a column-major fleet."""

from __future__ import annotations

import math

import numba
import numpy as np

from twin import gpu
from twin.vecmath import EXP_MAX, EXP_MIN, exp


@numba.njit(error_model="numpy")
def _exp_all(z, out):
    for i in range(z.shape[0]):
        out[i] = exp(z[i])


def test_exp_is_within_one_ulp_of_the_library_over_its_range():
    rng = np.random.default_rng(3)
    z = np.concatenate([np.linspace(EXP_MIN, EXP_MAX, 100_001), rng.uniform(-40, 40, 50_000),
                        [0.0, -0.0, 1e-300, -1e-300, 1.0, -1.0, math.log(2.0)]])
    out = np.empty_like(z)
    _exp_all(z, out)
    ref = np.exp(z)
    assert (np.abs(out - ref) <= np.spacing(ref)).all()
    assert (out[z == 0.0] == 1.0).all()


def test_exp_keeps_nan_and_clamps_beyond_its_range():
    z = np.array([np.nan, -1e4, 1e4, -np.inf, np.inf])
    out = np.empty_like(z)
    _exp_all(z, out)
    assert math.isnan(out[0])
    assert out[1] == out[3] and abs(out[1] / math.exp(EXP_MIN) - 1) < 1e-15
    assert abs(out[2] / math.exp(EXP_MAX) - 1) < 1e-15 and out[4] == out[2]


def test_gpu_steps_over_a_column_major_fleet_equal_one_gpu_at_a_time():
    """The SIMD loop (x stored column by column) and the scalar one give identical bits,
    through throttling, idle and a GPU past its shutdown temperature."""
    p, _ = gpu.load_params()
    c = gpu.coefficients(p, 0.01)
    n = 37  # not a multiple of the vector width: the remainder runs scalar
    rng = np.random.default_rng(7)
    x0 = np.tile(gpu.initial_state(p), (n, 1))
    x0[:, 2] = rng.uniform(30.0, 95.0, n)  # some past the 92 degC shutdown
    fleet = np.asfortranarray(x0)
    alone = x0.copy()
    for _ in range(200):
        act = rng.uniform(0.0, 1.0, n) * (rng.uniform(size=n) > 0.2)
        lim = rng.uniform(300.0, 700.0, n)
        p_f, clk_f = np.empty(n), np.empty(n)
        gpu.gpu_steps(c, fleet, 0, act, lim, p_f, clk_f)
        for r in range(n):
            p_1, clk_1 = np.empty(1), np.empty(1)
            row = alone[r:r + 1]
            gpu.gpu_steps(c, row, 0, act[r:r + 1], lim[r:r + 1], p_1, clk_1)
            assert p_1[0] == p_f[r] and clk_1[0] == clk_f[r]
    np.testing.assert_array_equal(fleet, alone)
    assert (clk_f == 0.0).any() or (fleet[:, 2] < p.temp_shutdown_c).all()
