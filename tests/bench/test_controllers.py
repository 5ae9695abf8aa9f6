"""The built-in controllers' laws, on observations built by hand for three nodes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.controllers import (
    AssetRef,
    ControllerContext,
    Droop,
    GpuSmoothing,
    Observation,
    PeakShaving,
)

NODES = ("a", "b", "c")


def context(dt: float = 0.1, rating_w: float = 50e3) -> ControllerContext:
    assets = []
    for n in NODES:
        assets += [AssetRef(n, "battery", "battery", ("p_set_w",), {"p_rated_w": rating_w}),
                   AssetRef(n, "meter", "meter", ()), AssetRef(n, "grid", "grid", ()),
                   AssetRef(n, "rack", "gpu_rack", ("power_cap_w",))]
    return ControllerContext(dt, tuple(assets))


SIGNALS = ("meter.p_w", "battery.p_w", "battery.soc", "grid.freq_hz", "rack.p_w")


def observe(**columns: list[float]) -> Observation:
    """An observation of the three nodes: ``meter_p_w=[a, b, c]`` and so on."""
    keys = [f"{n}.{s}" for s in SIGNALS for n in NODES]
    values = np.array([columns.get(s.replace(".", "_"), [0.0] * 3)[i]
                       for s in SIGNALS for i in range(3)], dtype=float)
    index = {k: i for i, k in enumerate(keys)}
    return Observation(index, values, values.copy(), {}, np.zeros(0), 0.1)


def test_peak_shaving_discharges_above_the_limit_recharges_below_and_holds_on_a_failure():
    c = PeakShaving(context(rating_w=30e3), import_limit_w=100e3, recharge_below_w=60e3,
                    recharge_w=10e3, soc_min=0.1, soc_max=0.9)
    # a: 150 kW net, SOC fine -> 30 kW (the converter's rating, not 50); b: 55 kW net ->
    # recharge by 5 kW; c: its meter reading failed -> nothing sent
    out = c.step(observe(meter_p_w=[150e3, 50e3, math.nan], battery_p_w=[0.0, 5e3, 0.0],
                         battery_soc=[0.5, 0.5, 0.5]))
    assert out == {"a.battery.p_set_w": 30e3, "b.battery.p_set_w": -5e3}
    # empty below soc_min: no discharge; full above soc_max: no recharge
    out = c.step(observe(meter_p_w=[120e3, 20e3, 80e3], battery_soc=[0.05, 0.95, 0.5]))
    assert out == {"a.battery.p_set_w": 0.0, "b.battery.p_set_w": 0.0,
                   "c.battery.p_set_w": 0.0}
    out = c.step(observe(meter_p_w=[20e3, 120e3, 0.0], battery_soc=[0.5, 0.5, 0.5]))
    assert out["a.battery.p_set_w"] == -10e3 and out["b.battery.p_set_w"] == 20e3


def test_gpu_smoothing_limits_the_grid_ramp_and_steers_the_soc():
    c = GpuSmoothing(context(dt=0.1), ramp_limit_w_per_s=10e3, soc_target=0.5,
                     soc_gain_w=20e3)
    # first tick: the target starts at the net load (battery idle)
    out = c.step(observe(meter_p_w=[40e3] * 3, battery_soc=[0.5, 0.5, 0.5]))
    assert out == {f"{n}.battery.p_set_w": 0.0 for n in NODES}
    # a 30 kW step of the racks: the grid side moves 1 kW (10 kW/s x 0.1 s), the battery
    # covers the rest
    out = c.step(observe(meter_p_w=[70e3, 70e3, 70e3], battery_soc=[0.5, 0.5, 0.5]))
    assert out["a.battery.p_set_w"] == pytest.approx(29e3)
    # a failed meter reading at b is bridged: b's last net load (70 kW) carried by its racks'
    # measured change (none); SOC above target shifts a's grid target down
    out = c.step(observe(meter_p_w=[70e3, math.nan, 70e3], battery_p_w=[29e3, 0.0, 29e3],
                         battery_soc=[0.6, 0.5, 0.5]))
    assert out["b.battery.p_set_w"] == pytest.approx(70e3 - 42e3)
    # a: net 99 kW wants 99 - 2 = 97 kW, the target moves from 41 to 42 kW
    assert out["a.battery.p_set_w"] == pytest.approx(99e3 - 42e3)
    assert out["c.battery.p_set_w"] == pytest.approx(99e3 - 42e3)
    assert c.target["b.battery"] == pytest.approx(42e3)  # b's ramp goes on
    # an unknown SOC makes no correction (it used to make the target NaN for good)
    out = c.step(observe(meter_p_w=[41e3, 41e3, 41e3], battery_soc=[math.nan, 0.5, 0.5]))
    assert out["a.battery.p_set_w"] == pytest.approx(41e3 - 41e3)


def test_droop_follows_frequency_outside_its_deadband():
    c = Droop(context(rating_w=100e3), droop=0.05, f_nom_hz=50.0, deadband_hz=0.02)
    out = c.step(observe(grid_freq_hz=[49.9, 50.01, math.nan]))
    # a: 0.08 Hz beyond the deadband -> 0.08 / (50 x 0.05) x 100 kW = 3.2 kW
    assert out["a.battery.p_set_w"] == pytest.approx(3.2e3)
    assert out["b.battery.p_set_w"] == 0.0
    assert "c.battery.p_set_w" not in out


def test_droop_takes_each_bus_nominal_frequency() -> None:
    """A 60 Hz bus and a 50 Hz one: at its own nominal frequency each battery idles."""
    assets = []
    for n, f_nom in (("a", 60.0), ("b", 50.0)):
        assets += [AssetRef(n, "battery", "battery", ("p_set_w",), {"p_rated_w": 100e3}),
                   AssetRef(n, "grid", "grid", (), {"f_nom_hz": f_nom})]
    c = Droop(ControllerContext(0.1, tuple(assets)), droop=0.05)
    index = {"a.grid.freq_hz": 0, "b.grid.freq_hz": 1}
    values = np.array([60.0, 49.9])
    out = c.step(Observation(index, values, values.copy(), {}, np.zeros(0), 0.1))
    assert out["a.battery.p_set_w"] == 0.0
    assert out["b.battery.p_set_w"] == pytest.approx(0.1 / (50 * 0.05) * 100e3)
    from bench.errors import ControllerError

    with pytest.raises(ControllerError, match="droop: give f_nom_hz"):
        Droop(context(), droop=0.05)  # buses that do not say theirs


@pytest.mark.parametrize(("name", "options", "message"), [
    (":X", {}, "controller ':X': expected module:Class"),
    ("os:", {}, "controller 'os:': expected module:Class"),
    ("..x:Y", {}, "controller '..x:Y': cannot import ..x"),
    ("os:path", {}, "controller 'os:path': os.path is not a class (it is a module)"),
    ("builtins:int", {}, "controller 'builtins:int': cannot read the arguments"),
    ("gpu_smoothing", {"ramp_limit_w_per_s": "abc"},
     "controller 'gpu_smoothing': option ramp_limit_w_per_s: expected a number, got 'abc'"),
    ("peak_shaving", {"import_limit_w": 1e4, "recharge_below_w": True},
     "option recharge_below_w: expected a number, got True"),
])
def test_a_bad_controller_name_or_option_is_one_line_naming_it(name: str, options: dict,
                                                               message: str) -> None:
    from bench.controllers import load_controller
    from bench.errors import ControllerError

    with pytest.raises(ControllerError) as exc:
        load_controller(name, context(), options)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_number_options_take_ints_and_an_optional_one_none() -> None:
    from bench.controllers import load_controller

    ctrl = load_controller("peak_shaving", context(),
                           {"import_limit_w": 10_000, "recharge_below_w": None})
    assert ctrl.limit == 10_000.0


class BrokenStart:
    """A user's controller whose constructor fails with what it happens to raise."""

    def __init__(self, context: object) -> None:
        raise KeyError("north.battery")


def test_a_controller_that_fails_to_start_is_one_line() -> None:
    from bench.controllers import load_controller
    from bench.errors import ControllerError

    with pytest.raises(ControllerError) as exc:
        load_controller("tests.bench.test_controllers:BrokenStart", context(), {})
    line = BrokenStart.__init__.__code__.co_firstlineno + 1  # the raise
    assert str(exc.value) == ("controller 'tests.bench.test_controllers:BrokenStart' failed "
                              "to start: KeyError: 'north.battery' "
                              f"(at {Path(__file__).resolve()}:{line} in __init__)")


def test_a_controller_module_beside_the_scenario_is_found(tmp_path) -> None:
    """``name = "mine:Flat"`` with mine.py beside the scenario, not on the import path."""
    import sys

    from bench.cli import main

    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "beside_scenario_ctrl.py").write_text(
        "class Flat:\n"
        "    def __init__(self, context, target_w: float = 0.0):\n"
        "        self.target_w = target_w\n"
        "    def step(self, obs):\n"
        "        return {'north.battery.p_set_w': self.target_w}\n")
    scenario = (Path(__file__).with_name("scenarios") / "two_nodes.toml").read_text()
    (folder / "lab.toml").write_text(scenario)
    assert str(folder) not in sys.path
    assert main(["run", str(folder / "lab.toml"), "--mode", "twin", "--quiet",
                 "--set", 'controller.name="beside_scenario_ctrl:Flat"',
                 "--set", "controller.options={ target_w = 1000.0 }",
                 "--set", "run.duration_s=1", "--set", "market.kind=none",
                 "--out", str(tmp_path / "r.h5")]) == 0
    assert str(folder) not in sys.path
    from bench.recording import open_run

    with open_run(tmp_path / "r.h5") as run:
        assert (run.signal("north", "battery", "p_set_w", "setpoint")[1:] == 1000.0).all()
