"""The battery twin: parameter files, both stepper methods, conservation, limits, packs."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

from twin import params as tp
from twin.battery import (
    LIMIT_CURRENT,
    LIMIT_INVALID,
    LIMIT_POWER,
    LIMIT_POWER_INFEASIBLE,
    LIMIT_SOC_MAX,
    LIMIT_SOC_MIN,
    LIMIT_VOLTAGE_MAX,
    LIMIT_VOLTAGE_MIN,
    OUTPUT_NAMES,
    STATE_NAMES,
    Battery,
    BatteryInitial,
    BatteryParams,
    BatteryWarning,
    PackParams,
    param_set,
    params_from_set,
    simulate_profile,
)
from twin.errors import ParameterError, TwinError
from twin.params import Table
from twin.stepper import Stepper
from twin.thermal import two_node_step

DATA = Path(__file__).resolve().parents[2] / "twin" / "data"
Y = {name: k for k, name in enumerate(OUTPUT_NAMES)}
X = {name: k for k, name in enumerate(STATE_NAMES)}


def simple_cell(**overrides: object) -> BatteryParams:
    """A 100 A h cell with two RC pairs, a sloped OCV and PyBaMM's ECM_Example thermal values."""
    fields: dict[str, object] = {
        "capacity_ah": 100.0,
        "ocv_v": Table((("soc", np.linspace(0.0, 1.0, 11)),),
                       np.array([3.0, 3.35, 3.5, 3.58, 3.63, 3.68, 3.75, 3.85, 3.96, 4.07, 4.2])),
        "r0_ohm": 1.0e-3, "r1_ohm": 1.0e-3, "c1_f": 3.0e4, "r2_ohm": 5.0e-4, "c2_f": 4.0e5,
        "thermal_mass_cell_j_per_k": 1000.0, "thermal_mass_jig_j_per_k": 500.0,
        "k_cell_jig_w_per_k": 10.0, "k_jig_ambient_w_per_k": 10.0,
    }
    fields.update(overrides)
    return BatteryParams(**fields)  # type: ignore[arg-type]


def run_steps(bat: Battery, u_seq: np.ndarray, dt: float,
              x0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """States ``(steps + 1, n, nx)`` and outputs ``(steps, n, ny)`` with ``advance``."""
    x = bat.initial_state() if x0 is None else x0
    xs, ys = [x], []
    for u in u_seq:
        x, y = bat.advance(0.0, x, u, dt)
        xs.append(x)
        ys.append(y)
    return np.array(xs), np.array(ys)


def square_wave(steps: int, n: int = 1, high: float = 150.0, low: float = 30.0) -> np.ndarray:
    k = np.arange(steps)
    u = np.zeros((steps, n, 2))
    u[:, :, 0] = np.where(k % 8 < 6, high, low)[:, None]
    return u


# --- parameter files ---------------------------------------------------------------------------

def test_shipped_parameter_files_load() -> None:
    ecm, ecm_init = params_from_set(tp.load(DATA / "battery_ecm_example.toml"))
    assert ecm.cell.capacity_ah == 100.0 and ecm.n_cells == 1 and ecm.cell.n_rc == 1
    assert ecm.cell.r0_ohm.axis_names == ("temp_c", "current_a", "soc")
    assert ecm.cell.entropic_v_per_k.axis_names == ("ocv_v", "temp_c")
    assert ecm_init == BatteryInitial(soc=0.5, temp_cell_c=25.0, temp_jig_c=25.0)
    rack, _ = params_from_set(tp.load(DATA / "battery_lfp_rack.toml"))
    assert (rack.cells_series, rack.cells_parallel, rack.cell.n_rc) == (16, 8, 2)
    nominal_kwh = rack.capacity_ah * 3.2 * rack.cells_series / 1000
    assert 50 <= nominal_kwh <= 200


@pytest.mark.parametrize("name", ["battery_ecm_example.toml", "battery_lfp_rack.toml"])
def test_parameter_file_round_trip(tmp_path: Path, name: str) -> None:
    pset = tp.load(DATA / name)
    pack, initial = params_from_set(pset)
    again = param_set(pack, pset.name, initial, pset.meta)
    path = tp.save(again, tmp_path / name)
    pack2, initial2 = params_from_set(tp.load(path))
    assert initial2 == initial
    assert tp.to_mapping(pack2.to_mapping()) == tp.to_mapping(pack.to_mapping())
    assert tp.load(path).meta == pset.meta


MINIMAL = """
[meta]
kind = "battery"
[initial]
soc = 0.4
[params]
capacity_ah = 10.0
r0_ohm = 0.01
r1_ohm = 0.01
c1_f = 1000.0
thermal_mass_cell_j_per_k = 100.0
thermal_mass_jig_j_per_k = 100.0
k_cell_jig_w_per_k = 1.0
k_jig_ambient_w_per_k = 1.0
[params.ocv_v]
soc = [0.0, 1.0]
values = [3.0, 4.0]
"""


def test_minimal_file(tmp_path: Path) -> None:
    path = tmp_path / "cell.toml"
    path.write_text(MINIMAL)
    pack, initial = params_from_set(tp.load(path))
    assert pack.n_cells == 1 and initial.soc == 0.4 and pack.cell.voltage_min_v is None


@pytest.mark.parametrize("old, new, message", [
    ("r0_ohm = 0.01", "r0_ohms = 0.01", "params.r0_ohms: unknown parameter (did you mean 'r0_ohm'?)"),
    ("capacity_ah = 10.0\n", "", "params.capacity_ah: required parameter is missing"),
    ("r0_ohm = 0.01", "r0_ohm = -0.01", "params.r0_ohm: must not be negative"),
    ("r0_ohm = 0.01", "r0_ohm = 'low'", "params.r0_ohm: expected a number"),
    ("soc = [0.0, 1.0]", "charge = [0.0, 1.0]", "ocv_v: table axis 'charge' is not one of soc"),
    ("values = [3.0, 4.0]", "values = [3.0, nan]", "ocv_v: table values are not all finite"),
    ("values = [3.0, 4.0]", "values = [3.0, 4.0, 5.0]", "params.ocv_v: table values have shape"),
    ("capacity_ah = 10.0", "capacity_ah = 10.0\ncells_series = 0", "params.cells_series: must be"),
    ("capacity_ah = 10.0", "capacity_ah = 10.0\ncells_parallel = 2.5",
     "params.cells_parallel: expected an integer"),
    ("soc = 0.4", "soc = 1.4", "initial.soc: must be in [0, 1]"),
    ("soc = 0.4", "temp_cel_c = 20.0", "initial.temp_cel_c: unknown parameter (did you mean"),
    ('kind = "battery"', 'kind = "inverter"', "meta.kind is 'inverter', expected 'battery'"),
    ("k_cell_jig_w_per_k = 1.0", "k_cell_jig_w_per_k = 1.0\nsoc_min = 0.9\nsoc_max = 0.5",
     "params.soc_min: soc_min and soc_max must satisfy"),
    # an OCV that falls with charge, and temperatures below absolute zero, were accepted
    ("soc = [0.0, 1.0]\nvalues = [3.0, 4.0]", "soc = [0.0, 0.1, 1.0]\nvalues = [3.8, 3.05, 4.0]",
     "params.ocv_v: must not decrease as soc rises; it falls from 3.8 V at soc 0 to 3.05 V "
     "at soc 0.1"),
    ("soc = 0.4", "soc = 0.4\ntemp_cell_c = -300.0",
     "initial.temp_cell_c: -300 degC is outside -60 to 100 degC"),
    ("soc = 0.4", "soc = 0.4\ntemp_jig_c = 298.15", "initial.temp_jig_c: 298.15 degC is outside"),
    ("capacity_ah = 10.0", "capacity_ah = 10.0\ntemp_ambient_c = -400.0",
     "params.temp_ambient_c: -400 degC is outside -60 to 100 degC"),
])
def test_bad_files_name_file_and_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in MINIMAL
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.replace(old, new, 1))
    with pytest.raises(ParameterError) as err:
        params_from_set(tp.load(path))
    assert str(path) in str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_ocv_must_rise_with_soc_at_every_temperature() -> None:
    temps = np.array([0.0, 25.0])
    socs = np.array([0.0, 0.5, 1.0])
    good = np.array([[3.0, 3.5, 4.0], [3.0, 3.5, 3.5]])  # flat is fine
    simple_cell(ocv_v=Table((("temp_c", temps), ("soc", socs)), good))
    bad = np.array([[3.0, 3.5, 4.0], [3.0, 3.6, 3.55]])
    with pytest.raises(ParameterError, match="ocv_v: must not decrease as soc rises; it falls "
                                             "from 3.6 V at soc 0.5 to 3.55 V at soc 1"):
        simple_cell(ocv_v=Table((("temp_c", temps), ("soc", socs)), bad))


def test_temperatures_must_be_physical() -> None:
    for t in (-400.0, -273.15, float("nan"), 150.0):
        with pytest.raises(ParameterError, match="temp_ambient_c"):
            simple_cell(temp_ambient_c=t)
        with pytest.raises(ParameterError, match="temp_cell_c"):
            BatteryInitial(temp_cell_c=t)
    simple_cell(temp_ambient_c=-60.0)
    BatteryInitial(temp_cell_c=100.0, temp_jig_c=-60.0)


def test_an_initial_soc_outside_the_window_is_warned_about() -> None:
    """Allowed (the limits hold back only what carries the SOC further out, so a depleted
    battery recharges), but named: more often a slip than meant."""
    cell = simple_cell(soc_min=0.1, soc_max=0.9)
    with pytest.warns(BatteryWarning, match=r"^battery: initial soc 0.05 is below soc_min 0.1; "
                                            r"it will not discharge until charged above it$"):
        bat = Battery(cell, initial=BatteryInitial(soc=0.05))
    xs, ys = run_steps(bat, np.full((5, 1, 2), 100.0), 10.0)  # discharge: held
    assert ys[-1, 0, Y["current_a"]] == 0.0 and xs[-1, 0, 0] == 0.05
    xs, _ = run_steps(bat, np.full((5, 1, 2), -100.0), 10.0)  # charge: it may
    assert xs[-1, 0, 0] > 0.05
    with pytest.warns(BatteryWarning, match="battery unit 1: initial soc 0.95 is above soc_max"):
        Battery(cell, n=2, initial=[BatteryInitial(soc=0.5), BatteryInitial(soc=0.95)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Battery(cell, initial=BatteryInitial(soc=0.1))  # on the edge: inside


def test_two_rc_needs_c2() -> None:
    with pytest.raises(ParameterError, match="c2_f: must be positive with r2_ohm > 0"):
        simple_cell(c2_f=0.0)


# --- the model -------------------------------------------------------------------------------

def test_thermal_step_matches_steady_state_and_solve_ivp() -> None:
    ad, bd = two_node_step(1000.0, 500.0, 10.0, 5.0, 1.0e5)
    t = ad @ np.array([20.0, 20.0]) + bd @ np.array([30.0, 20.0])
    # steady state: 30 W through 1/10 + 1/5 K/W above 20 degC
    np.testing.assert_allclose(t, [20.0 + 30.0 * 0.3, 20.0 + 30.0 * 0.2], rtol=1e-9)
    import scipy.integrate
    ad, bd = two_node_step(1000.0, 500.0, 10.0, 5.0, 7.0)
    sol = scipy.integrate.solve_ivp(
        lambda _t, y: [(30.0 - 10.0 * (y[0] - y[1])) / 1000.0,
                       (10.0 * (y[0] - y[1]) - 5.0 * (y[1] - 20.0)) / 500.0],
        (0.0, 7.0), [25.0, 22.0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ad @ [25.0, 22.0] + bd @ [30.0, 20.0], sol.y[:, -1], rtol=1e-10)


def test_rest_keeps_the_ocv_and_ambient() -> None:
    bat = Battery(simple_cell(), initial=BatteryInitial(soc=0.55))
    xs, ys = run_steps(bat, np.zeros((50, 1, 2)), 1.0)
    np.testing.assert_allclose(ys[:, 0, Y["voltage_v"]], 3.715, rtol=1e-12)
    np.testing.assert_allclose(ys[:, 0, Y["temp_cell_c"]], 25.0)
    assert np.all(xs[-1, 0, X["e_out_j"]:] == 0.0)


def test_constant_current_matches_closed_form() -> None:
    """One RC pair, one OCV slope: V(t) = U(soc(t)) - R0 I - R1 I (1 - exp(-t / tau))."""
    cell = simple_cell(r2_ohm=0.0, c2_f=0.0)
    bat = Battery(cell, initial=BatteryInitial(soc=0.65))
    _, ys = run_steps(bat, np.full((200, 1, 2), 50.0), 0.5)
    t = 0.5 * np.arange(200)
    soc = 0.65 - 50.0 * t / 360000.0
    ocv = cell.ocv_v(soc=soc)
    tau = 1.0e-3 * 3.0e4
    expected = ocv - 1e-3 * 50.0 - 1e-3 * 50.0 * (1 - np.exp(-t / tau))
    np.testing.assert_allclose(ys[:, 0, Y["voltage_v"]], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ys[:, 0, Y["soc"]], soc, rtol=0, atol=1e-13)


def test_tables_are_evaluated_like_table_call() -> None:
    """The compiled lookup agrees with twin.params.Table on 1-D, 3-D, uniform and not."""
    rng = np.random.default_rng(3)
    temps = np.array([-10.0, 0.0, 10.0, 25.0, 45.0])   # not uniform
    socs = np.linspace(0.0, 1.0, 6)                    # uniform
    curs = np.array([-200.0, 0.0, 200.0])
    r0 = Table((("temp_c", temps), ("soc", socs), ("current_a", curs)),
               1e-3 * (1 + rng.random((5, 6, 3))))
    ocv = Table((("soc", np.array([0.0, 0.1, 0.5, 0.9, 1.0])),),
                np.array([3.0, 3.4, 3.7, 4.0, 4.2]))
    n = 64
    cell = simple_cell(ocv_v=ocv, r0_ohm=r0, r1_ohm=0.0, r2_ohm=0.0)
    init = [BatteryInitial(soc=float(s), temp_cell_c=float(tc))
            for s, tc in zip(rng.uniform(0, 1, n), rng.uniform(-20, 60, n))]
    bat = Battery(cell, n=n, initial=init)
    x = bat.initial_state()
    cur = rng.uniform(-300, 300, n)
    y = bat.outputs(0.0, x, bat.hold(0.0, x, bat.input_array(current_a=cur), 1e-3))
    want_ocv = ocv(soc=x[:, 0])
    np.testing.assert_allclose(y[:, Y["ocv_v"]], want_ocv, rtol=1e-13)
    r0_seen = (y[:, Y["ocv_v"]] - y[:, Y["voltage_v"]]) / cur
    np.testing.assert_allclose(r0_seen, r0(temp_c=x[:, 4], soc=x[:, 0], current_a=cur),
                               rtol=1e-9)


def test_advance_run_and_separate_calls_agree() -> None:
    cell = simple_cell(hysteresis_v=0.02, hysteresis_rate=30.0, coulombic_efficiency=0.98)
    bat = Battery(cell, n=3, mode=["current", "power", "current"])
    u = square_wave(40, n=3)
    u[:, 1, 1] = np.where(np.arange(40) % 10 < 5, 400.0, -300.0)
    u[20:, 2, 0] *= -1
    xs, ys = run_steps(bat, u, 0.25)
    x = bat.initial_state()
    for k in range(40):
        w = bat.hold(0.0, x, u[k], 0.25)
        np.testing.assert_array_equal(bat.outputs(0.0, x, w), ys[k])
        x = bat.step_exact(x, w, 0.25)
        np.testing.assert_array_equal(x, xs[k + 1])
    x_end, y_run = bat.run(bat.initial_state(), u, 0.25)
    np.testing.assert_array_equal(y_run, ys)
    np.testing.assert_array_equal(x_end, xs[-1])


def mixed_battery() -> tuple[Battery, np.ndarray]:
    """Four units, both modes, tables over current, hysteresis, coulombic losses, a pack."""
    r0 = Table((("current_a", np.array([-200.0, 0.0, 200.0])),), np.array([1.2e-3, 1e-3, 1.3e-3]))
    cells = [
        simple_cell(),
        simple_cell(r0_ohm=r0, hysteresis_v=0.02, hysteresis_rate=40.0,
                    coulombic_efficiency=0.97, entropic_v_per_k=-2e-4),
        PackParams(simple_cell(hysteresis_v=0.01, hysteresis_rate=10.0), 4, 2),
        simple_cell(r2_ohm=0.0, c2_f=0.0, coulombic_efficiency=0.99),
    ]
    bat = Battery(cells, mode=["current", "current", "power", "power"])
    steps = 120
    k = np.arange(steps)
    u = np.zeros((steps, 4, 2))
    u[:, 0, 0] = np.where(k % 20 < 12, 120.0, -80.0)
    u[:, 1, 0] = 150.0 * np.sin(k / 7.0)
    u[:, 2, 1] = np.where(k < 60, 2500.0, -1800.0)
    u[:, 3, 1] = np.where(k % 30 < 15, -250.0, 320.0)
    return bat, u


def test_exact_and_scipy_methods_agree() -> None:
    bat, u = mixed_battery()
    dt = 0.5
    runs = {}
    for method in ("exact", "scipy"):
        stepper = Stepper({"bat": bat}, method=method)
        ys = [stepper.advance({"bat": uk}, dt)["bat"] for uk in u]
        runs[method] = (np.array(ys), stepper.state["bat"])
    (y_e, x_e), (y_s, x_s) = runs["exact"], runs["scipy"]
    scale = np.maximum(np.abs(x_e).max(axis=0), 1e-3)
    assert np.max(np.abs(x_e - x_s) / scale) < 1e-8
    np.testing.assert_allclose(y_e[:, :, Y["voltage_v"]], y_s[:, :, Y["voltage_v"]],
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["exact", "scipy"])
def test_energy_is_conserved(method: str) -> None:
    """Delivered at the terminals + losses = decrease of stored energy, to 1e-9 relative."""
    bat, u = mixed_battery()
    stepper = Stepper({"bat": bat}, method=method)
    for uk in u:
        y = stepper.advance({"bat": uk}, 0.5)["bat"]
    y = bat.outputs(0.0, stepper.state["bat"], bat.hold(0.0, stepper.state["bat"], u[-1], 0.5))
    e_out, e_loss, e_stored = (y[:, Y[n]] for n in ("e_out_j", "e_loss_j", "e_stored_j"))
    scale = np.abs(e_out) + np.abs(e_loss) + np.abs(e_stored)
    assert np.all(scale > 1e3)
    assert np.all(np.abs(e_out + e_loss + e_stored) <= 1e-9 * scale)
    assert np.all(e_loss > 0)


def test_energy_counters_match_the_signals() -> None:
    """e_out is the integral of p_w; e_stored the integral of -ocv_v * current_a (held)."""
    bat = Battery(simple_cell(coulombic_efficiency=0.95))
    dt = 0.01
    u = np.zeros((3000, 1, 2))
    u[:, 0, 0] = np.where(np.arange(3000) < 1500, 80.0, -60.0)
    xs, ys = run_steps(bat, u, dt)
    y = ys[:, 0, :]
    e_out = xs[-1, 0, X["e_out_j"]]
    throughput = np.sum(np.abs(y[:, Y["p_w"]])) * dt
    assert e_out == pytest.approx(np.sum(y[:, Y["p_w"]]) * dt, abs=1e-5 * throughput)
    eta = np.where(y[:, Y["current_a"]] < 0, 0.95, 1.0)
    e_stored = -np.sum(y[:, Y["ocv_v"]] * y[:, Y["current_a"]] * eta) * dt
    assert xs[-1, 0, X["e_stored_j"]] == pytest.approx(e_stored, rel=1e-12)


def test_lossless_cell_stores_what_it_takes() -> None:
    bat = Battery(simple_cell(r0_ohm=0.0, r1_ohm=0.0, r2_ohm=0.0))
    xs, _ = run_steps(bat, square_wave(100, high=-50.0, low=20.0), 1.0)
    e_out, e_loss, e_stored = xs[-1, 0, X["e_out_j"]:]
    assert e_loss == 0.0
    assert e_out == pytest.approx(-e_stored, rel=1e-14)


def test_heat_matches_pybamm_definition() -> None:
    """Step-average heat = I^2 R0 + sum I v_j + reversible -I T dU/dT (PyBaMM's Thevenin)."""
    cell = simple_cell(entropic_v_per_k=-3e-4)
    bat = Battery(cell, initial=BatteryInitial(soc=0.5, v_rc1_v=0.02, v_rc2_v=0.01))
    x = bat.initial_state()
    dt = 1e-6  # short step: the average is the instantaneous value
    w = bat.hold(0.0, x, bat.input_array(current_a=100.0), dt)
    q = bat.outputs(0.0, x, w)[0, Y["q_heat_w"]]
    assert q == pytest.approx(100.0**2 * 1e-3 + 100.0 * 0.03 + 100.0 * 298.15 * 3e-4, rel=1e-6)


def test_pack_scales_the_cell() -> None:
    cell = simple_cell(hysteresis_v=0.01, hysteresis_rate=20.0)
    pack = Battery(PackParams(cell, cells_series=16, cells_parallel=4))
    one = Battery(cell)
    u = square_wave(200)
    _, y_pack = run_steps(pack, u * 4.0, 0.5)
    _, y_cell = run_steps(one, u, 0.5)
    yp, yc = y_pack[:, 0, :], y_cell[:, 0, :]
    np.testing.assert_allclose(yp[:, Y["voltage_v"]], 16 * yc[:, Y["voltage_v"]], rtol=1e-13)
    np.testing.assert_allclose(yp[:, Y["current_a"]], 4 * yc[:, Y["current_a"]], rtol=1e-13)
    for name in ("soc", "temp_cell_c", "temp_jig_c"):
        np.testing.assert_allclose(yp[:, Y[name]], yc[:, Y[name]], rtol=1e-13)
    for name in ("p_w", "q_heat_w", "e_out_j", "e_loss_j", "e_stored_j"):
        np.testing.assert_allclose(yp[:, Y[name]], 64 * yc[:, Y[name]], rtol=1e-12)
    # constant power on the pack is constant power on each cell
    pack.set_mode("power")
    one.set_mode("power")
    u_p = np.zeros((50, 1, 2))
    u_p[:, 0, 1] = 64 * 350.0
    _, y_pack = run_steps(pack, u_p, 0.5)
    u_p[:, 0, 1] = 350.0
    _, y_cell = run_steps(one, u_p, 0.5)
    np.testing.assert_allclose(y_pack[:, 0, Y["p_w"]], 64 * 350.0, rtol=1e-12)
    np.testing.assert_allclose(y_pack[:, 0, Y["soc"]], y_cell[:, 0, Y["soc"]], rtol=1e-13)


def test_constant_power_is_exact_at_each_step() -> None:
    r0 = Table((("current_a", np.array([-400.0, 0.0, 400.0])),), np.array([2e-3, 1e-3, 3e-3]))
    bat = Battery(simple_cell(r0_ohm=r0), mode="power")
    u = np.zeros((300, 1, 2))
    u[:, 0, 1] = np.where(np.arange(300) < 150, 500.0, -400.0)
    _, ys = run_steps(bat, u, 1.0)
    # R0 depends on the current: two fixed-point passes leave well under a milliwatt
    np.testing.assert_allclose(ys[:, 0, Y["p_w"]], u[:, 0, 1], rtol=1e-7)
    # R0 over temperature only: one lookup, the quadratic's root is exact
    r0 = Table((("temp_c", np.array([0.0, 25.0, 50.0])),), np.array([3e-3, 1e-3, 0.6e-3]))
    _, ys = run_steps(Battery(simple_cell(r0_ohm=r0), mode="power"), u, 1.0)
    np.testing.assert_allclose(ys[:, 0, Y["p_w"]], u[:, 0, 1], rtol=1e-12)
    assert np.all(ys[:, 0, Y["limited"]] == 0)


def test_hysteresis() -> None:
    """Plett's one-state model: the OCV shift saturates at -M on discharge, +M on charge."""
    m = 0.015
    cell = simple_cell(hysteresis_v=m, hysteresis_rate=100.0, r0_ohm=0.0, r1_ohm=0.0,
                       r2_ohm=0.0)
    bat = Battery(cell, initial=BatteryInitial(soc=0.5))
    down = np.full((400, 1, 2), 100.0)  # 1.1 % of SOC: h settles to -1 within 1e-3
    xs, ys = run_steps(bat, down, 10.0)
    v_dis = ys[-1, 0, Y["voltage_v"]] - ys[-1, 0, Y["ocv_v"]]
    assert v_dis == pytest.approx(-m, abs=m * 1e-3)
    assert xs[-1, 0, X["hysteresis"]] == pytest.approx(-1.0, abs=1e-3)
    xs2, ys2 = run_steps(bat, -down, 10.0, x0=xs[-1])
    v_ch = ys2[-1, 0, Y["voltage_v"]] - ys2[-1, 0, Y["ocv_v"]]
    assert v_ch == pytest.approx(m, abs=m * 1e-3)
    h = np.concatenate([xs[:, 0, X["hysteresis"]], xs2[:, 0, X["hysteresis"]]])
    assert np.all(np.abs(h) <= 1.0)
    # a closed cycle through the hysteresis loop dissipates energy, and it is all accounted
    e_out, e_loss, e_stored = xs2[-1, 0, X["e_out_j"]:]
    assert e_loss > 0
    assert abs(e_out + e_loss + e_stored) <= 1e-12 * abs(e_loss + abs(e_out))
    # no rate, no hysteresis dynamics
    still = Battery(dataclasses.replace(cell, hysteresis_rate=0.0))
    xs3, _ = run_steps(still, down[:10], 10.0)
    assert np.all(xs3[:, 0, X["hysteresis"]] == 0.0)


# --- limits ----------------------------------------------------------------------------------

def held(bat: Battery, x: np.ndarray, dt: float = 1.0,
         **inputs: float) -> tuple[np.ndarray, np.ndarray]:
    """Outputs at the start and at the end of one step (with the step's held inputs)."""
    w = bat.hold(0.0, x, bat.input_array(**inputs), dt)
    return bat.outputs(0.0, x, w)[0], bat.outputs(dt, bat.step_exact(x, w, dt), w)[0]


def test_current_limits_saturate_and_flag() -> None:
    bat = Battery(simple_cell(current_max_discharge_a=200.0, current_max_charge_a=100.0))
    x = bat.initial_state()
    y, _ = held(bat, x, current_a=1000.0)
    assert y[Y["current_a"]] == 200.0 and int(y[Y["limited"]]) == LIMIT_CURRENT
    y, _ = held(bat, x, current_a=-1000.0)
    assert y[Y["current_a"]] == -100.0 and int(y[Y["limited"]]) == LIMIT_CURRENT
    y, _ = held(bat, x, current_a=150.0)
    assert y[Y["current_a"]] == 150.0 and y[Y["limited"]] == 0


def test_power_limits_in_both_modes() -> None:
    cell = simple_cell(power_max_discharge_w=500.0, power_max_charge_w=300.0)
    for mode, key, cmd in (("current", "current_a", 400.0), ("power", "power_w", 2000.0)):
        bat = Battery(cell, mode=mode)
        y, _ = held(bat, bat.initial_state(), **{key: cmd})
        assert y[Y["p_w"]] == pytest.approx(500.0, rel=1e-12)
        assert int(y[Y["limited"]]) & LIMIT_POWER
        y, _ = held(bat, bat.initial_state(), **{key: -cmd})
        assert y[Y["p_w"]] == pytest.approx(-300.0, rel=1e-12)


def test_power_beyond_the_cell_gives_maximum_power() -> None:
    bat = Battery(simple_cell(r1_ohm=0.0, r2_ohm=0.0), mode="power")
    x = bat.initial_state()
    y, _ = held(bat, x, power_w=1e7)
    e = y[Y["ocv_v"]]
    assert y[Y["current_a"]] == pytest.approx(e / 2e-3, rel=1e-12)
    assert y[Y["p_w"]] == pytest.approx(e**2 / 4e-3, rel=1e-12)
    assert int(y[Y["limited"]]) & LIMIT_POWER_INFEASIBLE


def test_power_limit_takes_the_lower_root() -> None:
    """Far past the maximum-power current P(I) falls again; the limit is the lower root."""
    bat = Battery(simple_cell(r0_ohm=5e-3, power_max_discharge_w=1.0, power_max_charge_w=1.0))
    y, _ = held(bat, bat.initial_state(), 60.0, current_a=1813.0)
    assert int(y[Y["limited"]]) & LIMIT_POWER
    assert y[Y["p_w"]] == pytest.approx(1.0, rel=1e-9)
    assert 0 < y[Y["current_a"]] < 1.0


def test_discharge_stops_at_zero_volts_without_a_minimum() -> None:
    bat = Battery(simple_cell())
    start, end = held(bat, bat.initial_state(), 1.0, current_a=1e5)
    assert int(start[Y["limited"]]) == LIMIT_VOLTAGE_MIN
    assert min(start[Y["voltage_v"]], end[Y["voltage_v"]]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("soc, cmd, bit", [(0.02, 500.0, LIMIT_VOLTAGE_MIN),
                                           (0.98, -500.0, LIMIT_VOLTAGE_MAX)])
def test_voltage_limits_hold_at_both_ends_of_the_step(soc: float, cmd: float, bit: int) -> None:
    for hysteresis_v in (0.0, 0.02):
        cell = simple_cell(voltage_min_v=3.0, voltage_max_v=4.2, hysteresis_v=hysteresis_v,
                           hysteresis_rate=50.0)
        bat = Battery(cell, initial=BatteryInitial(soc=soc, v_rc1_v=0.01 * np.sign(cmd)))
        x = bat.initial_state()
        for dt in (0.01, 1.0, 100.0):
            start, end = held(bat, x, dt, current_a=cmd)
            assert int(start[Y["limited"]]) & bit
            assert 0 < abs(start[Y["current_a"]]) < abs(cmd)
            for y in (start, end):
                assert 3.0 - 1e-12 <= y[Y["voltage_v"]] <= 4.2 + 1e-12
            if hysteresis_v == 0.0:  # the bound is tight at one end of the step
                gap = min(abs(y[Y["voltage_v"]] - (3.0 if cmd > 0 else 4.2))
                          for y in (start, end))
                assert gap < 1e-12


def test_soc_limits_stop_at_the_window() -> None:
    cell = simple_cell(soc_min=0.1, soc_max=0.9, coulombic_efficiency=0.9)
    bat = Battery(cell, initial=BatteryInitial(soc=0.1005))
    xs, ys = run_steps(bat, np.full((20, 1, 2), 400.0), 10.0)
    assert xs[:, 0, 0].min() >= 0.1 - 1e-15
    assert ys[-1, 0, Y["current_a"]] == 0.0
    assert int(ys[1, 0, Y["limited"]]) & LIMIT_SOC_MIN
    bat = Battery(cell, initial=BatteryInitial(soc=0.8995))
    xs, ys = run_steps(bat, np.full((20, 1, 2), -400.0), 10.0)
    assert xs[:, 0, 0].max() <= 0.9 + 1e-15
    assert int(ys[1, 0, Y["limited"]]) & LIMIT_SOC_MAX


def test_invalid_commands_are_zero_and_flagged() -> None:
    bat = Battery(simple_cell(), n=3, mode=["current", "power", "power"])
    x = bat.initial_state()
    u = np.array([[np.nan, 0.0], [0.0, np.inf], [0.0, -np.inf]])
    w = bat.hold(0.0, x, u, 1.0)
    y = bat.outputs(0.0, x, w)
    assert np.all(y[:, Y["current_a"]] == 0.0)
    assert np.all(y[:, Y["limited"]].astype(int) & LIMIT_INVALID)
    assert np.all(np.isfinite(bat.step_exact(x, w, 1.0)))


def test_shape_and_mode_errors() -> None:
    bat = Battery(simple_cell(), n=2)
    with pytest.raises(TwinError, match=r"inputs have shape \(1, 2\), expected \(2, 2\)"):
        bat.advance(0.0, bat.initial_state(), np.zeros((1, 2)), 1.0)
    with pytest.raises(TwinError, match="unknown mode 'voltage'"):
        bat.set_mode("voltage")
    with pytest.raises(TwinError, match="time steps must be positive"):
        bat.advance(0.0, bat.initial_state(), np.zeros((2, 2)), 0.0)
    with pytest.raises(TwinError, match="2 parameter sets for n=3"):
        Battery([simple_cell(), simple_cell()], n=3)


# --- profiles --------------------------------------------------------------------------------

def ecm_pset() -> tp.ParamSet:
    return tp.load(DATA / "battery_ecm_example.toml")


def test_simulate_profile_columns_and_methods() -> None:
    t = np.arange(0.0, 60.0, 0.5)
    cur = np.where(t < 30, 120.0, -40.0)
    exact = simulate_profile(ecm_pset(), t, {"current_a": cur})
    scipy_ = simulate_profile(ecm_pset(), t, {"current_a": cur}, method="scipy")
    assert set(exact) == {"t_s", *OUTPUT_NAMES}
    assert all(v.shape == t.shape for v in exact.values())
    np.testing.assert_array_equal(exact["current_a"], cur)
    np.testing.assert_allclose(exact["voltage_v"], scipy_["voltage_v"], rtol=0, atol=1e-9)
    assert exact["soc"][0] == 0.5 and exact["soc"][-1] < 0.5


def test_simulate_profile_resamples_with_dt_and_runs_power() -> None:
    t = np.array([0.0, 10.0, 25.0, 40.0])
    p = np.array([300.0, -200.0, 100.0, 0.0])
    out = simulate_profile(ecm_pset(), t, {"power_w": p}, dt=5.0)
    np.testing.assert_allclose(out["t_s"], np.arange(0.0, 40.1, 5.0))
    np.testing.assert_allclose(out["p_w"], [300, 300, -200, -200, -200, 100, 100, 100, 0],
                               atol=1e-9)
    irregular = simulate_profile(ecm_pset(), t, {"power_w": p})
    np.testing.assert_allclose(irregular["p_w"], p, atol=1e-9)
    # with constant parameters in current mode, the model is exact for any step length
    cur = p / 4.0
    cell = param_set(simple_cell(), "cell")
    irregular = simulate_profile(cell, t, {"current_a": cur})
    regular = simulate_profile(cell, t, {"current_a": cur}, dt=5.0)
    # (not the temperatures nor the stored energy: heat and OCV are held over each step)
    for name in ("soc", "voltage_v", "e_loss_j"):
        np.testing.assert_allclose(irregular[name][1:], regular[name][[2, 5, 8]], rtol=1e-12)


@pytest.mark.parametrize("t, inputs, message", [
    ([0.0, 1.0, 1.0], {"current_a": [1.0, 2.0, 3.0]}, r"t_s must increase strictly \(t_s\[2\]"),
    ([0.0, 1.0], {"current_a": [1.0, 2.0], "power_w": [1.0, 2.0]}, "exactly one of"),
    ([0.0, 1.0], {"curent_a": [1.0, 2.0]}, r"unknown input column 'curent_a' \(did you mean"),
    ([0.0, 1.0], {"current_a": [1.0]}, "current_a has 1 values for 2 times"),
    ([0.0, np.nan], {"current_a": [1.0, 2.0]}, r"t_s\[1\] is not finite"),
])
def test_simulate_profile_errors(t: list, inputs: dict, message: str) -> None:
    with pytest.raises(TwinError, match=message):
        simulate_profile(ecm_pset(), np.array(t), {k: np.array(v) for k, v in inputs.items()})


def test_pybamm_importer_without_pybamm(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from twin.interop.pybamm import import_parameter_set

    monkeypatch.setitem(sys.modules, "pybamm", None)  # as if the extra were not installed
    with pytest.raises(ParameterError, match=r"needs PyBaMM: pip install 'gridloop\[interop\]'"):
        import_parameter_set("ECM_Example")
