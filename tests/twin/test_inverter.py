"""Inverter and converter: Sandia model against pvlib, limits, response, droop, conservation."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin import inverter, params, stepper
from twin.errors import ParameterError, TwinError
from twin.inverter import (
    ConverterLosses,
    FrequencyDroop,
    GridForming,
    Inverter,
    InverterParams,
    SandiaInverter,
    VoltVar,
    converter_ac_power,
    converter_losses,
    droop_power,
    frequency_droop,
    sandia_ac_power,
    sandia_dc_power,
    sandia_efficiency,
    simulate_profile,
    volt_var,
)

pvlib = pytest.importorskip("pvlib")

CEC_NAMES = [
    "ABB__TRIO_60_0_TL_OUTD_US_480__480V_",
    "Fronius_USA__CL_60_0_Wye__277V_",
    "Enphase_Energy_Inc___C250_72_2LN_S2",
    "SMA_America__SB7000TL_US__240V_",
    "Yaskawa_Solectria_Solar__PVI_100_kW_208__208V_",
    "Chint_Power_Systems_America__CPS_SCA60KTL_DO_US_480__480V_",
]


@pytest.fixture(scope="module")
def cec():
    return pvlib.pvsystem.retrieve_sam("cecinverter")


def sandia_of(row) -> SandiaInverter:
    return SandiaInverter(paco_w=row.Paco, pdco_w=row.Pdco, vdco_v=row.Vdco, pso_w=row.Pso,
                          c0_per_w=row.C0, c1_per_v=row.C1, c2_per_v=row.C2,
                          c3_per_v=row.C3, pnt_w=row.Pnt)


@pytest.fixture(scope="module")
def pv_params(repo) -> InverterParams:
    return InverterParams.from_params(
        params.load(repo / "twin/data/inverter_pv_abb_trio_60.toml"))


@pytest.fixture(scope="module")
def conv_params(repo) -> InverterParams:
    return InverterParams.from_params(
        params.load(repo / "twin/data/converter_battery_100kw.toml"))


def load_range(row) -> tuple[np.ndarray, np.ndarray]:
    """Night, start-up, the whole load range and deep clipping, at three DC voltages."""
    p = np.concatenate([[0.0, row.Pso * 0.5, row.Pso, row.Pso * 1.001],
                        np.linspace(0.0, 1.5 * row.Pdco, 400)])
    v = np.array([row.Mppt_low, row.Vdco, row.Mppt_high])
    v = np.where(np.isfinite(v) & (v > 0), v, row.Vdco)
    return np.tile(p, 3), np.repeat(v, p.size)


def rel_diff(a, b):
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)


# --- the Sandia model against pvlib ---------------------------------------------------------


@pytest.mark.parametrize("name", CEC_NAMES)
def test_sandia_ac_power_matches_pvlib_over_whole_range(cec, name):
    row = cec[name]
    p, v = load_range(row)
    ours = sandia_ac_power(v, p, sandia_of(row))
    ref = pvlib.inverter.sandia(v, p, row)
    assert np.any(ours == row.Paco) and np.any(ours == -row.Pnt)  # clipping and tare covered
    assert np.all(rel_diff(ours, ref) < 1e-9)


@pytest.mark.parametrize("name", CEC_NAMES)
def test_sandia_efficiency_matches_pvlib(cec, name):
    row = cec[name]
    p, v = load_range(row)
    keep = p > 0
    ours = sandia_efficiency(v[keep], p[keep], sandia_of(row))
    ref = pvlib.inverter.sandia(v[keep], p[keep], row) / p[keep]
    assert np.all(rel_diff(ours, ref) < 1e-9)
    assert sandia_efficiency(row.Vdco, 0.0, sandia_of(row)) == 0.0


@pytest.mark.parametrize("name", CEC_NAMES)
def test_inverter_asset_matches_pvlib_in_steady_state(cec, name):
    """The asset at full command delivers exactly pvlib's AC power, tick by tick."""
    row = cec[name]
    p, v = load_range(row)
    inv = Inverter(InverterParams(s_max_va=row.Paco, sandia=sandia_of(row)))
    x = inv.initial_state()
    out = []
    for pk, vk in zip(p, v):
        x, y = inv.advance(0.0, x, inv.input_array(p_dc_avail_w=pk, v_dc_v=vk), 1.0)
        out.append(inv.output_dict(y)["p_ac_w"][0])
    assert np.all(rel_diff(np.array(out), pvlib.inverter.sandia(v, p, row)) < 1e-9)


def test_sandia_dc_power_inverts_the_curve(cec):
    row = cec[CEC_NAMES[0]]
    s = sandia_of(row)
    p = np.linspace(row.Pso * 1.01, row.Pdco * 0.99, 200)
    for v in (row.Mppt_low, row.Vdco, row.Mppt_high):
        ac = sandia_ac_power(v, p, s)
        assert np.allclose(sandia_dc_power(v, ac, s), p, rtol=1e-10)


def test_simulate_profile_reproduces_pvlib(repo, cec):
    pset = params.load(repo / "twin/data/inverter_pv_abb_trio_60.toml")
    row = cec[pset.meta["cec_key"]]
    t = np.arange(0.0, 300.0, 1.0)
    p_dc = 40e3 * (1 + np.sin(t / 20.0)) + 50.0  # night tare, the load range, clipping
    v_dc = 700.0 + 50 * np.cos(t / 30.0)
    out = simulate_profile(pset, t, {"p_dc_w": p_dc, "v_dc_v": v_dc})
    assert set(out) >= {"t_s", "p_ac_w", "efficiency", "p_dc_w", "losses_w"}
    assert np.all(rel_diff(out["p_ac_w"], pvlib.inverter.sandia(v_dc, p_dc, row)) < 1e-9)
    running = (out["p_ac_w"] > 0) & (out["p_ac_w"] < row.Paco)
    assert np.allclose(out["efficiency"][running],
                       sandia_efficiency(v_dc, p_dc, sandia_of(row))[running], rtol=1e-9)
    # in clipping the inverter draws less than offered, and its efficiency says so
    clip = out["p_ac_w"] == row.Paco
    assert clip.any() and np.all(out["p_dc_w"][clip] < p_dc[clip])


def test_simulate_profile_rejects_bad_columns(repo):
    pset = params.load(repo / "twin/data/inverter_pv_abb_trio_60.toml")
    t = np.arange(3.0)
    with pytest.raises(TwinError, match="'v_dc_v' is missing"):
        simulate_profile(pset, t, {"p_dc_w": np.ones(3)})
    with pytest.raises(TwinError, match="unknown input column 'p_ac'"):
        simulate_profile(pset, t, {"p_dc_w": np.ones(3), "v_dc_v": np.ones(3),
                                   "p_ac": np.ones(3)})
    with pytest.raises(TwinError, match="not finite"):
        simulate_profile(pset, t, {"p_dc_w": np.array([1.0, np.nan, 2.0]),
                                   "v_dc_v": np.ones(3)})
    with pytest.raises(TwinError, match="increasing"):
        simulate_profile(pset, np.array([0.0, 0.0, 1.0]), {"p_dc_w": np.ones(3),
                                                           "v_dc_v": np.ones(3)})


@pytest.mark.parametrize(("column", "values", "message"), [
    ("v_dc_v", [720.0, -700.0, 720.0],
     "column 'v_dc_v' is -700 at t_s = 1 s; it must not be negative for a PV inverter"),
    ("v_dc_v", [720.0, 0.0, 720.0], "column 'v_dc_v' is 0 at t_s = 1 s; it must be positive "
                                    "where the array offers power (p_dc_w > 0)"),
    ("w_max_lim_pct", [100.0, -50.0, 100.0],
     "column 'w_max_lim_pct' is -50 at t_s = 1 s; it must be in [0, 100] (% of WMax)"),
    ("w_max_lim_pct", [100.0, 250.0, 100.0], "column 'w_max_lim_pct' is 250 at t_s = 1 s"),
    ("freq_hz", [60.0, 0.0, 60.0], "column 'freq_hz' is 0 at t_s = 1 s; it must be positive"),
    ("v_ac_v", [480.0, -480.0, 480.0], "column 'v_ac_v' is -480 at t_s = 1 s"),
])
def test_simulate_profile_refuses_inputs_out_of_physical_range(repo, column, values, message):
    """v_dc_v = 0 or -700 gave 29 kW of AC; w_max_lim_pct -50 or 250 and 0 Hz passed."""
    pset = params.load(repo / "twin/data/inverter_pv_abb_trio_60.toml")
    inputs = {"p_dc_w": np.full(3, 30e3), "v_dc_v": np.full(3, 720.0), column: np.array(values)}
    with pytest.raises(TwinError) as exc:
        simulate_profile(pset, np.arange(3.0), inputs)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_simulate_profile_takes_a_dark_array_at_zero_volts(repo):
    pset = params.load(repo / "twin/data/inverter_pv_abb_trio_60.toml")
    out = simulate_profile(pset, np.arange(3.0), {"p_dc_w": np.array([0.0, 0.0, 30e3]),
                                                  "v_dc_v": np.array([0.0, 0.0, 720.0])})
    assert list(out["p_ac_w"][:2]) == [-0.8, -0.8] and out["p_ac_w"][2] > 0
    assert not out["input_limited"].any()


def test_pv_output_stays_within_its_rating_whatever_it_is_offered(pv_params):
    """The Sandia curve is a downward parabola: offered 8 MW, a 60 kW inverter gave -60 kW.
    Offered more than the top of its curve it clips; offered power at no voltage it stands
    by; a limit outside 0-100 % counts as its bound; each sets input_limited."""
    inv = Inverter(pv_params)
    paco = pv_params.sandia.paco_w

    def steady(**inputs):
        x = inv.initial_state()
        for _ in range(5):
            x, y = inv.advance(0.0, x, inv.input_array(**inputs), 1.0)
        return inv.output_dict(y)

    for p_dc in (8e6, 9e6, 1e9, 1e300):
        o = steady(p_dc_avail_w=p_dc, v_dc_v=720.0)
        assert o["p_ac_w"][0] == paco and o["input_limited"][0] == 1.0
        assert 0.0 < o["p_dc_w"][0] < 1e7 and 0.0 < o["efficiency"][0] < 1.0
        assert o["losses_w"][0] > 0.0
    assert steady(p_dc_avail_w=1e5, v_dc_v=720.0)["input_limited"][0] == 0.0  # just clipping
    for v_dc in (0.0, -700.0):
        o = steady(p_dc_avail_w=30e3, v_dc_v=v_dc)
        assert o["p_ac_w"][0] == -pv_params.sandia.pnt_w and o["p_dc_w"][0] == 0.0
        assert o["input_limited"][0] == 1.0
    o = steady(p_dc_avail_w=30e3, v_dc_v=720.0, w_max_lim_pct=250.0)
    assert 0.0 < o["p_ac_w"][0] <= paco and o["input_limited"][0] == 1.0
    o = steady(p_dc_avail_w=30e3, v_dc_v=720.0, w_max_lim_pct=-50.0)
    assert abs(o["p_ac_w"][0]) < 1e-6 and o["input_limited"][0] == 1.0
    o = steady(p_dc_avail_w=30e3, v_dc_v=720.0)
    assert o["input_limited"][0] == 0.0 and 0.0 < o["p_ac_w"][0] < paco


# --- the symmetric converter ----------------------------------------------------------------


def test_converter_losses_are_symmetric_and_invertible():
    losses = ConverterLosses(standby_w=300.0, linear=0.01, quadratic_per_w=1e-7)
    p = np.linspace(-1e5, 1e5, 201)
    loss = converter_losses(p, losses)
    assert np.allclose(loss, loss[::-1])
    assert converter_losses(0.0, losses) == 300.0
    assert math.isclose(converter_losses(1e5, losses), 300 + 1000 + 1000)
    assert np.allclose(converter_ac_power(p + loss, losses), p, rtol=1e-12, atol=1e-9)


def test_converter_charges_and_discharges_through_its_losses(conv_params):
    inv = Inverter(conv_params, n=2, initial={"p_cmd_w": 0.0})
    x = np.array([[50e3, 0, 0, 0, 0], [-50e3, 0, 0, 0, 0]], dtype=float)
    _, y = inv.advance(0.0, x, inv.input_array(p_set_w=np.array([50e3, -50e3])), 0.01)
    o = inv.output_dict(y)
    loss = 300 + 500 + 250
    assert np.allclose(o["p_ac_w"], [50e3, -50e3])
    assert np.allclose(o["p_dc_w"], [50e3 + loss, -50e3 + loss])
    assert np.allclose(o["efficiency"], [50e3 / (50e3 + loss), (50e3 - loss) / 50e3])


# --- IEEE 1547-2018 curves ------------------------------------------------------------------


def test_volt_var_category_b_breakpoints():
    v = [0.80, 0.92, 0.95, 0.98, 1.00, 1.02, 1.05, 1.08, 1.20]
    q = [0.44, 0.44, 0.22, 0.0, 0.0, 0.0, -0.22, -0.44, -0.44]
    assert np.allclose(volt_var(v), q, atol=1e-12)
    cat_a = VoltVar(v_pu=(0.9, 1.0 - 1e-9, 1.0, 1.1), q_pu=(0.25, 0.0, 0.0, -0.25))
    assert math.isclose(volt_var(0.95, cat_a), 0.125, rel_tol=1e-6)


def test_frequency_droop_breakpoints():
    fd = FrequencyDroop()
    rated = 100e3
    # inside the dead band: unchanged
    assert frequency_droop(60.036, 50e3, rated, 80e3, droop=fd) == 50e3
    assert frequency_droop(59.964, 50e3, rated, 80e3, droop=fd) == 50e3
    # 5 % droop: 3 Hz beyond the dead band is 1 pu
    assert math.isclose(frequency_droop(60.036 + 0.3, 50e3, rated, 80e3, droop=fd), 40e3)
    assert math.isclose(frequency_droop(60.036 + 3.0, 50e3, rated, 80e3, droop=fd), 0.0)
    assert frequency_droop(62.5, 50e3, rated, 80e3, p_min_w=-20e3, droop=fd) == -20e3
    assert math.isclose(frequency_droop(59.964 - 0.15, 50e3, rated, 80e3, droop=fd), 55e3)
    assert frequency_droop(58.0, 50e3, rated, 80e3, droop=fd) == 80e3  # up to what is there
    assert frequency_droop(58.0, 90e3, rated, 80e3, droop=fd) == 90e3  # never below p_pre


def test_frequency_droop_in_the_asset(conv_params):
    p = dataclasses.replace(conv_params, freq_droop=FrequencyDroop(enabled=True))
    inv = Inverter(p)
    x = inv.initial_state()
    u = inv.input_array(p_set_w=20e3, freq_hz=60.336)
    for _ in range(200):
        x, y = inv.advance(0.0, x, u, 0.01)
    assert math.isclose(inv.output_dict(y)["p_ac_w"][0], 20e3 - 10e3, rel_tol=1e-6)


def test_frequency_droop_acts_on_delivered_pv_power(pv_params):
    """At 20 kW of 60 kW a PV inverter's over-frequency response starts from 20 kW."""
    p = dataclasses.replace(pv_params, freq_droop=FrequencyDroop(enabled=True))
    inv = Inverter(p)
    avail = sandia_ac_power(720.0, 20e3, p.sandia)
    u = inv.input_array(p_dc_avail_w=20e3, v_dc_v=720.0, freq_hz=60.036 + 0.3)
    o = settle(inv, u, steps=300)
    assert math.isclose(o["p_ac_w"][0], avail - 0.1 * 60e3, rel_tol=1e-6)
    o = settle(inv, inv.input_array(p_dc_avail_w=20e3, v_dc_v=720.0, freq_hz=59.0), steps=300)
    assert math.isclose(o["p_ac_w"][0], avail, rel_tol=1e-12)  # no headroom to rise


def test_volt_var_in_the_asset(pv_params):
    p = dataclasses.replace(pv_params, volt_var=VoltVar(enabled=True))
    inv = Inverter(p)
    x = inv.initial_state()
    u = inv.input_array(p_dc_avail_w=20e3, v_dc_v=720.0, v_ac_v=480 * 1.05)
    for _ in range(300):
        x, y = inv.advance(0.0, x, u, 0.01)
    assert math.isclose(inv.output_dict(y)["q_var"][0], -0.22 * 60e3, rel_tol=1e-6)


# --- limits and dynamics --------------------------------------------------------------------


def settle(inv, u, steps=400, dt=0.01):
    x = inv.initial_state()
    for _ in range(steps):
        x, y = inv.advance(0.0, x, u, dt)
    return inv.output_dict(y)


@pytest.mark.parametrize("priority,p_exp,q_exp", [("p", 80e3, 60e3), ("q", 80e3, 60e3),
                                                  ("p", 100e3, 0.0), ("q", 0.0, 100e3)])
def test_apparent_power_limit_with_priority(conv_params, priority, p_exp, q_exp):
    inv = Inverter(dataclasses.replace(conv_params, priority=priority))
    if p_exp == 80e3:  # inside the circle: no limit either way
        o = settle(inv, inv.input_array(p_set_w=80e3, q_set_var=60e3))
        assert o["s_limited"][0] == 0
    else:  # 100 kW and 100 kvar asked: the priority keeps its own
        o = settle(inv, inv.input_array(p_set_w=100e3, q_set_var=100e3))
        assert o["s_limited"][0] == 1
    assert math.isclose(o["p_ac_w"][0], p_exp, abs_tol=1e-3)
    assert math.isclose(o["q_var"][0], q_exp, abs_tol=1e-3)


def test_first_order_response_exact_and_scipy(conv_params):
    inv = Inverter(conv_params)
    u = inv.input_array(p_set_w=50e3)
    results = {}
    for method in stepper.METHODS:
        s = stepper.Stepper({"c": inv}, method=method)
        p = [s.advance({"c": u}, 0.01)["c"][0, 0] for _ in range(6)]
        results[method] = np.array(p)
    tau = conv_params.tau_s
    # the power over step k is the mean of the response over [k dt, (k + 1) dt]
    mean = (1 - np.exp(-0.01 / tau)) / (0.01 / tau)
    expect = 50e3 * (1 - np.exp(-np.arange(6) * 0.01 / tau) * mean)
    assert np.allclose(results["exact"], expect, rtol=1e-12, atol=1e-9)
    assert np.allclose(results["scipy"], expect, rtol=1e-8, atol=1e-6)


def test_lag_mean_is_the_step_mean_of_the_decay_and_its_limits():
    tau, dt = np.array([0.0, 0.05, 1e3]), 0.01
    a = stepper.lag_factors(tau, dt)[0]
    t = (np.arange(100_000) + 0.5) / 100_000 * dt  # midpoint rule over the step
    numeric = [np.exp(-t / k).mean() if k > 0 else 0.0 for k in tau]
    assert np.allclose(stepper.lag_mean(a), numeric, rtol=1e-9, atol=0)
    assert stepper.lag_mean(np.array([1.0]))[0] == 1.0
    factors = stepper.LagFactors(tau, mean=True)(dt)
    assert factors.shape == (3, 2) and np.array_equal(factors[:, 0], a)


def test_ramp_limit(conv_params):
    inv = Inverter(dataclasses.replace(conv_params, ramp_w_per_s=10e3))
    x = inv.initial_state()
    u = inv.input_array(p_set_w=100e3)
    p = []
    for _ in range(300):
        x, y = inv.advance(0.0, x, u, 0.01)
        p.append(inv.output_dict(y)["p_cmd_w"][0])
        flags = inv.output_dict(y)["ramp_limited"][0]
    steps = np.diff(p)
    assert np.all(steps <= 10e3 * 0.01 * (1 + 1e-9))
    assert np.allclose(steps[:100], 100.0)  # exactly the ramp while far from the target
    assert flags == 1


def test_curtailment_by_w_max_lim_pct_and_p_set(pv_params):
    inv = Inverter(pv_params, n=3)
    u = inv.input_array(p_dc_avail_w=50e3, v_dc_v=720.0,
                        w_max_lim_pct=np.array([100.0, 50.0, 100.0]),
                        p_set_w=np.array([60e3, 60e3, 10e3]))
    o = settle(inv, u, steps=300)
    avail = sandia_ac_power(720.0, 50e3, pv_params.sandia)
    assert math.isclose(o["p_ac_w"][0], avail, rel_tol=1e-9)
    assert math.isclose(o["p_ac_w"][1], 30e3, rel_tol=1e-6)
    assert math.isclose(o["p_ac_w"][2], 10e3, rel_tol=1e-6)
    assert list(o["curtailed"]) == [0.0, 1.0, 1.0]
    # a curtailed inverter draws only the DC power its AC output needs
    assert math.isclose(o["p_dc_w"][1], sandia_dc_power(720.0, o["p_ac_w"][1],
                                                        pv_params.sandia), rel_tol=1e-12)


def test_dc_drop_acts_at_once(pv_params):
    inv = Inverter(pv_params)
    x = inv.initial_state()
    x, _ = inv.advance(0.0, x, inv.input_array(p_dc_avail_w=50e3, v_dc_v=720.0), 0.01)
    _, y = inv.advance(0.0, x, inv.input_array(p_dc_avail_w=10e3, v_dc_v=720.0), 0.01)
    o = inv.output_dict(y)
    assert math.isclose(o["p_ac_w"][0], sandia_ac_power(720.0, 10e3, pv_params.sandia))
    assert o["dc_limited"][0] == 1  # delivering what the DC side offers, below the command


def test_night_tare(pv_params):
    o = settle(Inverter(pv_params), Inverter(pv_params).input_array(p_dc_avail_w=0.0),
               steps=3)
    assert o["p_ac_w"][0] == -pv_params.sandia.pnt_w and o["p_dc_w"][0] == 0.0
    assert o["losses_w"][0] == pv_params.sandia.pnt_w


def test_grid_forming_droop_steady_state(conv_params):
    gfm = dataclasses.replace(conv_params, mode="grid_forming",
                              grid_forming=GridForming(mp_pu=0.05, mq_pu=0.05, tau_pf_s=0.05))
    inv = Inverter(gfm)
    o = settle(inv, inv.input_array(p_set_w=10e3, freq_hz=59.7, v_ac_v=480 * 1.01), steps=200)
    assert math.isclose(o["p_ac_w"][0], droop_power(59.7, 10e3, 100e3, 0.05, 60.0),
                        rel_tol=1e-9)
    assert math.isclose(o["p_ac_w"][0], 20e3, rel_tol=1e-9)
    assert math.isclose(o["q_var"][0], -0.01 / 0.05 * 100e3, rel_tol=1e-9)
    # the power low-pass filter: 63 % of the way after tau_pf_s
    x = inv.initial_state()
    for _ in range(5):
        x, _ = inv.advance(0.0, x, inv.input_array(freq_hz=59.7), 0.01)
    assert math.isclose(x[0, 0], 10e3 * (1 - math.exp(-1.0)), rel_tol=1e-9)


# --- conservation ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["pv", "conv"])
@pytest.mark.parametrize("method", stepper.METHODS)
def test_energy_conservation(pv_params, conv_params, which, method):
    """Energy in (DC) = energy out (AC) + losses, and each counter is the integral of its
    terminal power; with a ramp, a lag, limits and a random profile."""
    rng = np.random.default_rng(3)
    par = pv_params if which == "pv" else conv_params
    inv = Inverter(dataclasses.replace(par, ramp_w_per_s=20e3))
    stp = stepper.Stepper({"i": inv}, method=method)
    dt = 0.05
    sums = np.zeros(3)
    for _ in range(200):
        u = inv.input_array(p_dc_avail_w=rng.uniform(0, 90e3), v_dc_v=rng.uniform(600, 800),
                            p_set_w=rng.uniform(-120e3, 120e3), q_set_var=rng.uniform(-8e4, 8e4),
                            w_max_lim_pct=rng.uniform(0, 100))
        o = inv.output_dict(stp.advance({"i": u}, dt)["i"])
        sums += np.array([o["p_dc_w"][0], o["p_ac_w"][0], o["losses_w"][0]]) * dt / 3600
    x = stp.state["i"][0]
    e_dc, e_ac, e_loss = x[2], x[3], x[4]
    assert abs(e_dc - (e_ac + e_loss)) <= 1e-9 * max(abs(e_dc), abs(e_ac))
    assert np.allclose([e_dc, e_ac, e_loss], sums, rtol=1e-9)


# --- properties -----------------------------------------------------------------------------

inputs = st.lists(st.tuples(
    st.floats(-200e3, 200e3), st.floats(-200e3, 200e3), st.floats(-50, 150),
    st.floats(-10e3, 120e3), st.floats(100, 1000), st.floats(300, 600), st.floats(55, 65)),
    min_size=1, max_size=40)


def _run(par, seq, dt):
    inv = Inverter(par)
    x = inv.initial_state()
    ys, xs = [], [x]
    for row in seq:
        x, y = inv.advance(0.0, x, np.array([row], dtype=float), dt)
        ys.append(inv.output_dict(y))
        xs.append(x)
    return ys, xs


@settings(max_examples=60, deadline=None)
@given(seq=inputs, dt=st.sampled_from([0.001, 0.01, 0.1, 1.0]), mode=st.sampled_from(
    ["grid_following", "grid_forming"]), priority=st.sampled_from(["p", "q"]),
    which=st.sampled_from(["pv", "conv"]), curves=st.booleans())
def test_limits_hold_and_outputs_are_finite(pv_params, conv_params, seq, dt, mode, priority,
                                            which, curves):
    base = pv_params if which == "pv" else conv_params
    par = dataclasses.replace(base, mode=mode, priority=priority, ramp_w_per_s=50e3,
                              volt_var=VoltVar(enabled=curves),
                              freq_droop=FrequencyDroop(enabled=curves))
    ys, xs = _run(par, seq, dt)
    s = par.s_max_va
    for row, o in zip(seq, ys):
        assert all(np.all(np.isfinite(v)) for v in o.values())
        p, q = o["p_ac_w"][0], o["q_var"][0]
        assert p * p + q * q <= s * s * (1 + 1e-9)
        if which == "pv":
            assert -par.sandia.pnt_w <= p <= max(o["p_avail_w"][0], 0.0) + 1e-6
            assert p <= par.sandia.paco_w
            assert 0.0 <= o["p_dc_w"][0] <= max(row[3], 0.0) * (1 + 1e-9) + 1e-6
        else:
            assert abs(p) <= par.p_rated_w * (1 + 1e-12)
    for a, b in itertools.pairwise(xs):
        assert abs(b[0, 0] - a[0, 0]) <= par.ramp_w_per_s * dt * (1 + 1e-9) + 1e-9


# --- parameters -----------------------------------------------------------------------------


def test_parameter_errors_name_the_field(tmp_path):
    f = tmp_path / "inv.toml"
    f.write_text('[meta]\nkind = "inverter"\n[params]\ns_max_va = 1e4\n'
                 'efficiency_model = "symmetric"\n[params.loses]\nstandby_w = 1.0\n')
    with pytest.raises(ParameterError, match="loses: unknown parameter.*did you mean 'losses'"):
        InverterParams.from_params(params.load(f))
    f.write_text('[meta]\nkind = "inverter"\n[params]\ns_max_va = 1e4\n')
    with pytest.raises(ParameterError, match="needs a \\[params.sandia\\] table"):
        InverterParams.from_params(params.load(f))
    f.write_text('[meta]\nkind = "pv"\n[params]\ns_max_va = 1e4\n')
    with pytest.raises(ParameterError, match="expected 'inverter'"):
        InverterParams.from_params(params.load(f))
    with pytest.raises(ParameterError, match="mode"):
        InverterParams(s_max_va=1.0, efficiency_model="symmetric",
                       losses=ConverterLosses(0, 0, 0), mode="grid_feeling")


def test_sandia_parameters_that_mean_no_inverter_are_refused(pv_params):
    s = pv_params.sandia
    # pdco_w below pso_w gave p_dc_w = -1.1e10 W, an efficiency of 191498 and negative losses
    with pytest.raises(ParameterError, match=r"sandia.pdco_w: 100 W must be above pso_w "
                                             r"\(144.162 W\)"):
        dataclasses.replace(s, pdco_w=100.0)
    with pytest.raises(ParameterError, match="sandia.c0_per_w: must be finite, got nan"):
        dataclasses.replace(s, c0_per_w=math.nan)
    with pytest.raises(ParameterError, match="tau_s: must be finite"):
        dataclasses.replace(pv_params, tau_s=math.inf)
    with pytest.raises(ParameterError, match="losses.linear: must be finite"):
        ConverterLosses(1.0, math.nan, 0.0)
    # c0 per kW instead of per W: the curve would fall before reaching the rating
    with pytest.raises(ParameterError, match="c0_per_w: -0.000122201 /W bends the curve"):
        dataclasses.replace(pv_params, sandia=dataclasses.replace(s, c0_per_w=s.c0_per_w * 1e3))
    with pytest.raises(ParameterError, match="efficiency above 1"):
        dataclasses.replace(pv_params, sandia=dataclasses.replace(s, paco_w=s.pdco_w * 1.1))


@pytest.mark.parametrize(("initial", "message"), [
    ('p_cmd_w = "x"', "initial.p_cmd_w: expected a finite number, got 'x'"),
    ("p_cmd = 1.0", "initial.p_cmd: unknown initial condition (did you mean 'p_cmd_w'?); an "
                    "inverter's are p_cmd_w, q_cmd_var, e_dc_wh, e_ac_wh, e_loss_wh"),
    ("e_dc_wh = nan", "initial.e_dc_wh: expected a finite number, got nan"),
])
def test_initial_conditions_are_checked(repo, tmp_path, initial, message):
    """``p_cmd_w = "x"`` was a ValueError traceback, a misspelt ``p_cmd`` silently ignored."""
    text = (repo / "twin/data/inverter_pv_abb_trio_60.toml").read_text()
    f = tmp_path / "inv.toml"
    f.write_text(text.replace("p_cmd_w = 60000.0", initial))
    pset = params.load(f)
    for read in (InverterParams.from_params, Inverter.from_params,  # a scenario reads both
                 lambda ps: simulate_profile(ps, np.arange(2.0), {"p_dc_w": np.ones(2),
                                                                  "v_dc_v": np.ones(2)})):
        with pytest.raises(ParameterError) as exc:
            read(pset)
        assert str(exc.value) == f"{f}: {message}"
    with pytest.raises(ParameterError, match="initial.p_cmd: unknown initial condition"):
        Inverter(InverterParams.from_params(params.load(repo / "twin/data/"
                                                        "inverter_pv_abb_trio_60.toml")),
                 initial={"p_cmd": 1.0})


def test_neutral_inputs_when_none_are_given(pv_params, conv_params):
    """The stepper starts from each model's default inputs, not from zeros."""
    pv, conv = Inverter(pv_params), Inverter(conv_params)
    out = stepper.Stepper({"pv": pv, "conv": conv}).advance({}, 0.01)
    o = pv.output_dict(out["pv"])
    assert o["w_max_lim_pct"][0] == 100.0 and o["freq_hz"][0] == 60.0
    assert o["v_ac_v"][0] == 480.0 and o["p_ac_w"][0] == -pv_params.sandia.pnt_w
    c = conv.output_dict(out["conv"])
    assert c["p_ac_w"][0] == 0.0 and c["p_cmd_w"][0] == 0.0
    with pytest.raises(TwinError, match="unknown input 'p_ac_w'"):
        pv.input_array(p_ac_w=1.0)



def _held_both_ways(inv: Inverter, x: np.ndarray, u: np.ndarray, columns: bool):
    """Held inputs of ``inv`` as its kernel computes them (a plain pass, then unit by
    unit), and all of them unit by unit; in rows, or stored column by column as the
    microgrid's arena stores them (where the plain passes run as SIMD vectors)."""
    arrays = (x, u, *inv.kernel_args(0.01))
    if columns:
        arrays = tuple(np.asfortranarray(v) for v in arrays)
    fast = inverter._hold_kernel(*arrays, 0.01)
    slow = np.zeros_like(fast)
    inverter._hold_units(*arrays, 0.01, slow, np.zeros(inv.n))
    return fast, slow


@pytest.mark.parametrize("kind", ["pv", "converter"])
def test_plain_passes_give_the_numbers_of_the_unit_by_unit_path(kind, pv_params, conv_params):
    """PV inverters and a battery's converters that run plain (grid-following, no droop,
    volt-var or ramp, in daylight below the top of the curve, within their circle) are held
    in one branch-free pass; every held input equals the unit-by-unit path's, bit for bit,
    in rows and in columns, over fleets that mix them with units that are not plain."""
    rng = np.random.default_rng(11)
    base = pv_params if kind == "pv" else conv_params
    rated = base.p_rated_w
    kinds = [base, base, dataclasses.replace(base, p_max_w=0.8 * base.s_max_va),
             dataclasses.replace(base, priority="q"),
             dataclasses.replace(base, ramp_w_per_s=2.0 * rated),
             dataclasses.replace(base, freq_droop=FrequencyDroop(enabled=True)),
             dataclasses.replace(base, volt_var=VoltVar(enabled=True))]
    n = 700
    inv = Inverter([kinds[k] for k in rng.integers(0, len(kinds), n)])
    done = np.zeros(n)
    for _ in range(10):
        x = inv.initial_state()
        x[:, 0] = rng.normal(0.0, rated, n)
        x[:, 1] = rng.normal(0.0, 0.3 * rated, n)
        u = inv.default_inputs().copy()
        u[:, 0] = rng.normal(0.0, 1.2 * rated, n)  # p_set_w: some beyond the rating
        u[:, 1] = rng.normal(0.0, 0.6 * rated, n)  # q_set_var: some beyond the circle
        u[:, 2] = rng.uniform(-10.0, 110.0, n)  # w_max_lim_pct: some outside [0, 100]
        u[:, 6] = rng.normal(60.0, 0.5, n)
        if kind == "pv":  # offered from nothing to past the top of the curve, some at night
            s = base.sandia
            u[:, 3] = rng.uniform(-0.1, 1.6, n) * s.pdco_w
            u[:, 4] = rng.choice([0.0, -5.0, s.vdco_v, 0.5 * s.vdco_v, 1.5 * s.vdco_v], n)
            u[:, 4] += rng.normal(0.0, 20.0, n)
        odd = rng.integers(0, n, 8)
        u[odd[:4], 0] = [np.nan, np.inf, -np.inf, 0.0]
        u[odd[4:], 2] = np.nan
        for columns in (False, True):
            fast, slow = _held_both_ways(inv, x, u, columns)
            np.testing.assert_array_equal(fast, slow)
        w = np.zeros((n, 16))
        plain = inverter._plain_pv if kind == "pv" else inverter._plain_converters
        plain(*(np.asfortranarray(v) for v in (x, u, *inv.kernel_args(0.01))), w, done)
        # both paths were taken: plain units, and units that are not or leave their circle
        assert 0 < np.count_nonzero(done) < n
        assert np.count_nonzero(slow[:, 8]) and np.count_nonzero(slow[:, 9])

