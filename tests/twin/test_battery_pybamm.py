"""The battery twin against PyBaMM's ``equivalent_circuit.Thevenin`` with ``ECM_Example``.

Each PyBaMM reference is solved once per module (IDAKLU, tolerances 1e-10) on the same
sample times as the twin; the twin steps with dt = 50 ms.  Thresholds are the issue's:
voltage within 0.1 mV, final SOC within 1e-5, cell temperature within 0.01 K.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from twin import params as tp
from twin.battery import param_set, params_from_set, simulate_profile
from twin.errors import ParameterError
from twin.params import Table

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
pybamm = pytest.importorskip("pybamm")

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "twin" / "data"
DT = 0.05
NAMES = ("Voltage [V]", "SoC", "Cell temperature [degC]", "Jig temperature [degC]",
         "Current [A]")
SQUARE = (["Discharge at 150 A for 3 seconds", "Discharge at 30 A for 1 second"] * 150
          + ["Rest for 300 seconds"])


def pybamm_run(steps: list[str], options: dict | None = None,
               update: dict | None = None) -> dict[str, np.ndarray]:
    """PyBaMM's solution sampled every DT, right-continuous at step changes like the twin."""
    values = pybamm.ParameterValues("ECM_Example")
    if update:
        values.update(update, check_already_exists=False)
    sim = pybamm.Simulation(pybamm.equivalent_circuit.Thevenin(options=options),
                            parameter_values=values,
                            experiment=pybamm.Experiment(steps, period=f"{DT} seconds"),
                            solver=pybamm.IDAKLUSolver(rtol=1e-10, atol=1e-10))
    subs = sim.solve().sub_solutions
    out: dict[str, list] = {n: [] for n in ("t", *NAMES)}
    for k, sub in enumerate(subs):
        # each step's last sample is the next step's first, taken with the new input
        keep = slice(None) if k == len(subs) - 1 else slice(0, -1)
        out["t"].append(sub.t[keep])
        for name in NAMES:
            out[name].append(sub[name].entries[keep])
    return {n: np.concatenate(v) for n, v in out.items()}


def square_wave_current() -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(18001)  # 600 s of 3 s / 1 s, then 300 s of rest
    return k * DT, np.where(k < 12000, np.where(k % 80 < 60, 150.0, 30.0), 0.0)


def assert_matches(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(out["t_s"], ref["t"], rtol=0, atol=1e-9)
    assert np.max(np.abs(out["voltage_v"] - ref["Voltage [V]"])) < 1e-4
    assert abs(out["soc"][-1] - ref["SoC"][-1]) < 1e-5
    assert np.max(np.abs(out["temp_cell_c"] - ref["Cell temperature [degC]"])) < 0.01
    assert np.max(np.abs(out["temp_jig_c"] - ref["Jig temperature [degC]"])) < 0.01


@pytest.fixture(scope="module")
def ecm() -> tp.ParamSet:
    return tp.load(DATA / "battery_ecm_example.toml")


@pytest.fixture(scope="module")
def square_one_rc() -> dict[str, np.ndarray]:
    return pybamm_run(SQUARE)


@pytest.fixture(scope="module")
def square_two_rc() -> dict[str, np.ndarray]:
    values = pybamm.ParameterValues("ECM_Example")
    r1, c1 = values["R1 [Ohm]"], values["C1 [F]"]
    return pybamm_run(SQUARE, {"number of rc elements": 2}, {
        "R2 [Ohm]": lambda t, i, s: 0.5 * r1(t, i, s),
        "C2 [F]": lambda t, i, s: 10.0 * c1(t, i, s),
        "Element-2 initial overpotential [V]": 0.0,
    })


@pytest.fixture(scope="module")
def constant_power() -> dict[str, np.ndarray]:
    return pybamm_run(["Discharge at 400 W for 20 minutes", "Charge at 200 W for 10 minutes"])


def test_square_wave_one_rc(ecm: tp.ParamSet, square_one_rc: dict[str, np.ndarray]) -> None:
    t, cur = square_wave_current()
    np.testing.assert_array_equal(square_one_rc["Current [A]"], cur)
    out = simulate_profile(ecm, t, {"current_a": cur})
    assert_matches(out, square_one_rc)
    # the run heated the cell: the thermal model is exercised, not idle
    assert out["temp_cell_c"].max() > 25.4


def test_square_wave_two_rc(ecm: tp.ParamSet, square_two_rc: dict[str, np.ndarray]) -> None:
    pack, initial = params_from_set(ecm)
    cell = pack.cell
    two = dataclasses.replace(cell, r2_ohm=Table(cell.r1_ohm.axes, 0.5 * cell.r1_ohm.values),
                              c2_f=Table(cell.c1_f.axes, 10.0 * cell.c1_f.values))
    t, cur = square_wave_current()
    out = simulate_profile(param_set(two, "ECM_Example, two RC", initial), t, {"current_a": cur})
    assert_matches(out, square_two_rc)


def test_constant_power(ecm: tp.ParamSet, constant_power: dict[str, np.ndarray]) -> None:
    k = np.arange(36001)  # 400 W for 20 min, then 200 W of charge for 10 min
    power = np.where(k < 24000, 400.0, -200.0)
    out = simulate_profile(ecm, k * DT, {"power_w": power})
    assert_matches(out, constant_power)
    np.testing.assert_allclose(out["p_w"], power, rtol=1e-12)
    np.testing.assert_allclose(out["current_a"], constant_power["Current [A]"], atol=1e-3)


def test_importer_reproduces_the_shipped_file(ecm: tp.ParamSet) -> None:
    from twin.interop.pybamm import import_parameter_set

    fresh = import_parameter_set("ECM_Example")
    assert fresh.initial == ecm.initial
    pack, _ = params_from_set(fresh)
    shipped, _ = params_from_set(ecm)
    assert tp.to_mapping(pack.to_mapping()) == tp.to_mapping(shipped.to_mapping())
    assert fresh.meta["source"].startswith(f"PyBaMM {pybamm.__version__} parameter set")
    assert pack.cell.r0_ohm.values.shape == (8, 23, 21)


@pytest.mark.parametrize("name, message", [
    ("ECM_Exampel", "PyBaMM has no parameter set 'ECM_Exampel' (did you mean 'ECM_Example'?)"),
    ("Chen2020", "'Chen2020' is a 'lithium_ion' set; only equivalent-circuit sets convert"),
])
def test_importer_errors(name: str, message: str) -> None:
    from twin.interop.pybamm import import_parameter_set

    with pytest.raises(ParameterError) as err:
        import_parameter_set(name)
    assert message in str(err.value)
