"""The lockstep engine on real emulated devices: determinism, recording, faults, real time."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.build import build_plan
from bench.engine import run_plan
from bench.errors import ControllerError
from bench.recording import open_run
from bench.scenario import load

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"


def _run(tmp_path: Path, name: str, overrides: list[str] = ()) -> Path:
    s = load(SCENARIO, list(overrides))
    out = tmp_path / f"{name}.h5"
    run_plan(build_plan(s, ledger=str(tmp_path / f"{name}.ledger.db")), out, progress=False)
    return out


def _signals(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and (name.startswith(("nodes/", "quality/"))
                                                  or name == "time"):
                out[name] = obj[:]
        f.visititems(visit)
    return out


def test_same_scenario_and_seed_give_identical_recordings(tmp_path: Path) -> None:
    a = _signals(_run(tmp_path, "a"))
    b = _signals(_run(tmp_path, "b"))
    assert a.keys() == b.keys()
    assert len(a) > 100
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bit for bit
    c = _signals(_run(tmp_path, "c", ["run.seed=8"]))
    assert not np.array_equal(a["nodes/north/pv/irradiance_w_m2"],
                              c["nodes/north/pv/irradiance_w_m2"])


def test_recording_layout_units_residuals_and_market(tmp_path: Path) -> None:
    path = _run(tmp_path, "layout")
    with open_run(path) as run:
        assert len(run) == 120
        np.testing.assert_allclose(run.time, np.arange(120) * 0.05)
        assert run.complete
        # a device asset has measured, twin, residual and setpoint datasets
        assert run.unit("north", "battery", "voltage_v") == "V"
        v = run.signal("north", "battery", "voltage_v")
        tw = run.signal("north", "battery", "voltage_v", "twin")
        res = run.signal("north", "battery", "voltage_v", "residual")
        np.testing.assert_allclose(res, v - tw)
        # the emulator's R0 is 20 % above the twin's: under load, the residual is not zero
        assert np.nanmax(np.abs(res)) > 0.01
        assert run.has("north", "battery", "p_set_w", "setpoint")
        # an inverter's AC terminals come from its node's bus, through its registers
        for sig, unit, value in (("freq_hz", "Hz", 60.0), ("v_ac_v", "V", 480.0)):
            assert run.unit("north", "inverter", sig) == unit
            np.testing.assert_allclose(run.signal("north", "inverter", sig)[1:], value,
                                       rtol=1e-3, err_msg=sig)
        # a twin-only asset records its values once, under the plain name
        assert run.has("north", "pv", "p_dc_w") and not run.has("north", "pv", "p_dc_w", "twin")
        # the node balances: grid = rack - inverter - battery (to meter resolution)
        grid = run.signal("north", "meter", "p_w")
        bal = (run.signal("north", "rack", "p_w") - run.signal("north", "inverter", "p_ac_w")
               - run.signal("north", "battery", "p_w"))
        assert np.nanmax(np.abs(grid[1:] - bal[1:])) < 100.0
        assert (run.quality("north", "battery") == 0).all()
        trades = run.table("market/trades")
        settlements = run.table("market/settlements")
        # two intervals settle at their ends, the third when the run ends; two nodes
        assert len(run.table("market/meter_readings")) == 3 * 2
        assert len(settlements) > 0
        # every settled interval nets to zero money across nodes and the grid account
        for k in set(settlements["interval"]):
            rows = settlements[settlements["interval"] == k]
            assert rows["amount_micro"].sum() == (rows["energy_wh"] * rows["price_micro_per_wh"]).sum()
        assert trades.dtype.names[:3] == ("t", "interval", "buyer")


def test_fault_cards_during_a_run_are_flagged_and_recorded(tmp_path: Path) -> None:
    path = _run(tmp_path, "faults", [
        'nodes.south.battery.faults=[{ exception_code = 4, start_s = 2.0, stop_s = 3.0 }]',
        'nodes.north.rack.faults=[{ timeout = true, start_s = 1.0, stop_s = 1.5 }]',
        "run.deadline_s=0.3",
    ])
    with open_run(path) as run:
        assert len(run) == 120  # the run went on
        t = run.time
        q_bat = run.quality("south", "battery")
        q_rack = run.quality("north", "rack")
        during = (t >= 2.1) & (t < 2.9)
        assert (q_bat[during] & 3 == 3).all()      # ERROR (and its setpoint writes failed)
        assert (q_bat[t < 1.9] == 0).all() and (q_bat[t > 3.2] == 0).all()
        assert (q_rack[(t >= 1.1) & (t < 1.4)] == 2).any()  # TIMEOUT
        assert np.isnan(run.signal("south", "battery", "p_w")[during]).all()
        kinds = [k for _, k, _ in run.events()]
        assert any(k.startswith("fault") for k in kinds)
        assert "device_error" in kinds and "device_timeout" in kinds
        # and the other devices were read all along
        assert (run.quality("north", "battery") == 0).all()


@pytest.mark.slow
def test_realtime_run_at_50_hz_measures_lateness(tmp_path: Path) -> None:
    path = _run(tmp_path, "rt", ["run.realtime=true", "run.dt_s=0.02", "run.duration_s=3",
                                 "market.interval_s=1"])
    with open_run(path) as run:
        assert run.attrs["realtime"]
        assert len(run) == 150
        wall = run.wall
        # paced to the wall clock: tick k starts no earlier than k dt
        assert (wall >= run.time - 1e-3).all()
        assert wall[-1] >= 2.9
        lat = run.dataset("timing/lateness")
        assert np.isfinite(lat).all() and (lat >= -1e-3).all()
        rtt = run.dataset("timing/rtt/north/battery")
        assert np.nanmedian(rtt) > 0


class _FailsAtTick30:
    """A controller with a bug that shows 1.5 s into the run."""

    def __init__(self, context: object) -> None:
        self.k = 0

    def step(self, obs: object) -> dict[str, float]:
        self.k += 1
        if self.k == 30:
            raise ZeroDivisionError("float division by zero")
        return {}


class Returns:
    """A controller whose step returns what its option says, from its first tick."""

    def __init__(self, context: object, what: str = "list") -> None:
        self.out = {"list": [1.0], "text": {"north.battery.p_set_w": "high"},
                    "none": {"north.battery.p_set_w": None},
                    "cap": {"north.rack.power_cap_w": -5.0}}[what]

    def step(self, obs: object) -> object:
        return self.out


@pytest.mark.parametrize(("what", "message"), [
    ("list", "controller 'tests.bench.test_engine:Returns' step returned a list at "
             "t = 0.000 s; expected a mapping of setpoint names"),
    ("text", "controller 'tests.bench.test_engine:Returns' set 'north.battery.p_set_w' to "
              "'high' at t = 0.000 s; expected a number, not a str"),
    ("none", "controller 'tests.bench.test_engine:Returns' set 'north.battery.p_set_w' to "
             "None at t = 0.000 s; expected a number"),
    ("cap", "controller 'tests.bench.test_engine:Returns' set 'north.rack.power_cap_w' to "
            "-5 W at t = 0.000 s; expected >= 0 W (0: no cap)"),
])
def test_setpoints_that_are_not_numbers_stop_the_run_in_one_line(what: str, message: str,
                                                                 tmp_path: Path) -> None:
    s = load(SCENARIO, ["controller.name=tests.bench.test_engine:Returns",
                        f"controller.options={{ what = '{what}' }}", "market.kind=none"])
    with pytest.raises(ControllerError) as exc:
        run_plan(build_plan(s), tmp_path / "r.h5", progress=False)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_run_that_stops_early_says_why_in_its_recording(tmp_path: Path) -> None:
    s = load(SCENARIO, ["controller.name=tests.bench.test_engine:_FailsAtTick30",
                        "controller.options={}", "market.kind=none"])
    out = tmp_path / "stopped.h5"
    name = "tests.bench.test_engine:_FailsAtTick30"
    with pytest.raises(ControllerError, match=f"controller '{name}' failed at t = 1.450 s"):
        run_plan(build_plan(s, ledger=str(tmp_path / "l.db")), out, progress=False)
    with open_run(out) as run:
        assert len(run) == 29  # every tick before the failing one is kept
        assert not run.complete
        (t, kind, message), = [e for e in run.events() if e[1] == "run_stopped"]
        assert kind == "run_stopped" and t == pytest.approx(1.45)
        line = _FailsAtTick30.step.__code__.co_firstlineno + 3  # where it raises
        assert message == (f"controller '{name}' failed at t = 1.450 s: "
                           "ZeroDivisionError: float division by zero "
                           f"(at {__file__}:{line} in step)")
