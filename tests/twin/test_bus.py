"""Node bus: islanded frequency against the textbook case and solve_ivp, grid limits,
reconnection, conservation, properties."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.integrate
from hypothesis import given, settings
from hypothesis import strategies as st

from twin import params, stepper
from twin.bus import Bus, BusParams, DroopSource
from twin.errors import ParameterError

F_NOM = 50.0
STEP_PU = 0.3


@pytest.fixture(scope="module")
def node(repo) -> BusParams:
    return BusParams.from_params(params.load(repo / "twin/data/bus_node_100kva.toml"))


@pytest.fixture(scope="module")
def case(node) -> BusParams:
    """The validation case: H = 2 s, D = 1, R = 0.05, Tg = 0.5 s, at 50 Hz."""
    assert (node.h_s, node.d_pu, node.governor.droop_pu, node.governor.tau_s) == (
        2.0, 1.0, 0.05, 0.5)
    assert node.governor.rating_w == node.s_base_va
    return dataclasses.replace(node, f_nom_hz=F_NOM)


def load_step(p: BusParams, method: str, dt: float, t_end: float):
    bus = Bus(p)
    s = stepper.Stepper({"bus": bus}, method=method)
    u = bus.input_array(p_load_w=STEP_PU * p.s_base_va, islanded=1.0)
    ys = [bus.output_dict(s.advance({"bus": u}, dt)["bus"]) for _ in range(round(t_end / dt))]
    t = np.arange(len(ys)) * dt
    return t, {k: np.array([y[k][0] for y in ys]) for k in ys[0]}


def continuous(t_eval):
    """The continuous equations, written out here: swing equation and governor, per unit."""
    h, d, r, tg = 2.0, 1.0, 0.05, 0.5

    def f(_t, z):
        df, pm = z
        return [(pm - STEP_PU - d * df) / (2 * h), (-df / r - pm) / tg]

    sol = scipy.integrate.solve_ivp(f, (0.0, t_eval[-1]), [0.0, 0.0], method="DOP853",
                                    rtol=1e-12, atol=1e-14, dense_output=True)
    return sol


def test_islanded_load_step_exact(case):
    t, y = load_step(case, "exact", 0.001, 3.0)
    dev = y["freq_hz"] - F_NOM
    assert math.isclose(y["rocof_hz_per_s"][0], -3.75, rel_tol=1e-12)
    k = int(np.argmin(dev))
    assert abs(dev[k] - (-1.2834)) < 1e-3
    assert abs(t[k] - 0.609) < 0.010
    # the exact discretisation is the continuous solution at the sample times
    sol = continuous(t)
    assert np.max(np.abs(dev - sol.sol(t)[0] * F_NOM)) < 1e-9
    assert np.max(np.abs(y["p_gov_w"] / case.s_base_va - sol.sol(t)[1])) < 1e-10


def test_islanded_load_step_scipy_method(case):
    t, y = load_step(case, "scipy", 0.005, 1.0)
    dev = y["freq_hz"] - F_NOM
    k = int(np.argmin(dev))
    assert abs(dev[k] - (-1.2834)) < 1e-3 and abs(t[k] - 0.609) < 0.010
    sol = continuous(t)
    assert np.max(np.abs(dev - sol.sol(t)[0] * F_NOM)) < 1e-8


def test_continuous_nadir_and_steady_state(case):
    sol = continuous(np.array([0.0, 40.0]))
    fine = np.linspace(0.5, 0.7, 200001)
    dev = sol.sol(fine)[0] * F_NOM
    assert abs(dev.min() - (-1.2834)) < 1e-4 and abs(fine[dev.argmin()] - 0.609) < 1e-3
    _, y = load_step(case, "exact", 0.01, 40.0)
    steady = -STEP_PU / (case.d_pu + 1 / case.governor.droop_pu) * F_NOM
    assert math.isclose(steady, -0.7143, abs_tol=1e-4)
    assert abs(y["freq_hz"][-1] - F_NOM - steady) < 1e-6
    assert math.isclose(y["p_gov_w"][-1], STEP_PU * case.s_base_va * 20 / 21, rel_tol=1e-6)


def test_grid_forming_inverters_share_the_step(case):
    both = dataclasses.replace(case, grid_forming=DroopSource(rating_w=50e3, droop_pu=0.02,
                                                              tau_s=0.05))
    _, y = load_step(both, "exact", 0.01, 40.0)
    kg, kf = 1 / 0.05, 0.5 / 0.02
    assert abs(y["freq_hz"][-1] - F_NOM - (-STEP_PU / (1 + kg + kf) * F_NOM)) < 1e-6
    assert math.isclose(y["p_gfm_w"][-1] / y["p_gov_w"][-1], kf / kg, rel_tol=1e-6)
    # the fast grid-forming droop lifts the nadir
    _, alone = load_step(case, "exact", 0.01, 2.0)
    assert y["freq_hz"][:200].min() > alone["freq_hz"].min() + 0.2


def test_grid_connected_balance_and_limits(node):
    bus = Bus(node, n=4)
    u = bus.input_array(p_load_w=np.array([80e3, 200e3, 10e3, 0.0]),
                        p_gen_w=np.array([30e3, 0.0, 160e3, 100e3]))
    x, y = bus.advance(0.0, bus.initial_state(), u, 0.01)
    o = bus.output_dict(y)
    assert list(o["p_w"]) == [50e3, 150e3, -100e3, -100e3]
    assert list(o["p_unserved_w"]) == [0.0, 50e3, 0.0, 0.0]
    assert list(o["p_curtailed_w"]) == [0.0, 0.0, 50e3, 0.0]
    assert list(o["import_limited"]) == [0, 1, 0, 0]
    assert list(o["export_limited"]) == [0, 0, 1, 0]
    assert np.all(o["freq_hz"] == node.f_nom_hz) and np.all(o["rocof_hz_per_s"] == 0)
    o = bus.output_dict(bus.advance(0.01, x, u, 0.01)[1])
    assert np.allclose(o["e_unserved_wh"], [0, 50e3 * 0.01 / 3600, 0, 0], rtol=1e-12)
    assert np.allclose(o["e_grid_wh"], [50e3, 150e3, -100e3, -100e3] * np.array(0.01 / 3600),
                       rtol=1e-12)


def balance(o) -> tuple[float, float]:
    """(imbalance, scale) of e_gen + e_src + e_grid = e_load + e_damp + e_kinetic."""
    lhs = o["e_gen_wh"] + o["e_src_wh"] + o["e_grid_wh"]
    rhs = o["e_load_wh"] + o["e_damp_wh"] + o["e_kinetic_wh"]
    scale = sum(abs(o[k]) for k in ("e_gen_wh", "e_src_wh", "e_grid_wh", "e_load_wh",
                                    "e_damp_wh"))
    return float(np.max(np.abs(lhs - rhs))), float(np.max(scale))


@pytest.mark.parametrize("method", stepper.METHODS)
def test_energy_conservation_through_islanding_and_reconnection(node, method):
    rng = np.random.default_rng(7)
    p = dataclasses.replace(node, grid_forming=DroopSource(40e3, 0.03, 0.05))
    bus = Bus(p)
    s = stepper.Stepper({"bus": bus}, method=method)
    dt = 0.02
    islanded = 0.0
    for k in range(300):
        if k % 60 == 30:
            islanded = 1.0 - islanded
        u = bus.input_array(p_load_w=rng.uniform(0, 220e3), p_gen_w=rng.uniform(0, 180e3),
                            islanded=islanded, p_gov_set_w=rng.uniform(0, 40e3),
                            p_gfm_set_w=rng.uniform(-20e3, 20e3))
        s.advance({"bus": u}, dt)
    # outputs at the end: one more tick reads the counters
    o = bus.output_dict(s.advance({"bus": bus.input_array()}, dt)["bus"])
    err, scale = balance(o)
    assert scale > 100.0
    assert err <= 1e-9 * scale


def test_reconnection_locks_to_the_grid(case):
    bus = Bus(case)
    x = bus.initial_state()
    island = bus.input_array(p_load_w=30e3, islanded=1.0)
    for _ in range(100):
        x, y = bus.advance(0.0, x, island, 0.01)
    dev0 = F_NOM * x[0, 0]
    assert dev0 < -0.5
    grid = bus.input_array(p_load_w=30e3)
    for _ in range(50):
        x, y = bus.advance(0.0, x, grid, 0.01)
    # the deviation decays with sync_tau_s: e^-10 of it is left after 0.5 s
    assert math.isclose(F_NOM * x[0, 0], dev0 * math.exp(-0.5 / case.sync_tau_s), rel_tol=1e-9)
    o = bus.output_dict(y)
    assert 0 < o["p_w"][0] < 30e3  # the grid carries what the governor does not


inputs = st.lists(st.tuples(st.floats(-50e3, 400e3), st.floats(-50e3, 400e3),
                            st.sampled_from([0.0, 1.0]), st.floats(-100e3, 100e3),
                            st.floats(-100e3, 100e3)), min_size=1, max_size=50)


@settings(max_examples=60, deadline=None)
@given(seq=inputs, dt=st.sampled_from([0.001, 0.01, 0.1, 1.0]))
def test_limits_hold_and_outputs_are_finite(node, seq, dt):
    p = dataclasses.replace(node, grid_forming=DroopSource(40e3, 0.03, 0.05))
    bus = Bus(p)
    x = bus.initial_state()
    for row in seq:
        x, y = bus.advance(0.0, x, np.array([row]), dt)
        o = bus.output_dict(y)
        assert all(np.all(np.isfinite(v)) for v in o.values())
        assert -p.export_max_w <= o["p_w"][0] <= p.import_max_w
        assert o["p_unserved_w"][0] >= 0 and o["p_curtailed_w"][0] >= 0
        if row[2] == 1.0:
            assert o["p_w"][0] == 0.0
    err, scale = balance(bus.output_dict(bus.advance(0.0, x, bus.input_array(), dt)[1]))
    assert err <= 1e-9 * max(scale, 1.0)


def test_parameter_errors(tmp_path):
    f = tmp_path / "bus.toml"
    f.write_text('[meta]\nkind = "bus"\n[params]\ns_base_va = 1e5\nimport_max_w = 1e5\n'
                 'export_max_w = 1e5\n[params.governer]\nrating_w = 1e5\n')
    with pytest.raises(ParameterError, match="governer: unknown parameter.*'governor'"):
        BusParams.from_params(params.load(f))
    with pytest.raises(ParameterError, match="must be positive"):
        BusParams(s_base_va=1e5, import_max_w=0, export_max_w=0, h_s=0.0)
    with pytest.raises(ParameterError, match="droop source"):
        DroopSource(rating_w=1.0, droop_pu=0.0)
