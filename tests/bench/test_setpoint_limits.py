"""A setpoint the asset cannot take is refused before anything is written, in every mode, as
one controller error naming the controller, the key, the value, the range and the time:
NaN and infinity, a value outside the setpoint's physical range (``w_max_lim_pct`` 0..100 %,
a contactor's 0 or 1, a rack's cap >= 0 W), and a value the device's register cannot hold
(never the register encoder's message for the map's author).

Real runs (``gridloop run`` in process), the twin alone and real emulated SunSpec devices on
loopback Modbus, their ``/capture`` of every Modbus transaction as the ground truth of what
reached the devices; the register maps' own encoding on both sides of the wire.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run
from firmware_bridge.capture import read_capture
from firmware_bridge.maps import UnencodableSetpoint, get_map

from .kit import LAB_NODE

#: one lab node: PV in the twin behind an inverter, a battery, a rack, a meter
SCENARIO = """
[run]
name = "limits"
dt_s = 0.1
duration_s = 1
seed = 1
mode = "twin"

[controller]
name = "limits_ctrl:Bad"
""" + LAB_NODE

CONTROLLER = '''
class Bad:
    """``good`` until ``at_s``, then ``bad`` (setpoint name -> value)."""

    def __init__(self, context, good, bad, at_s=0.3):
        self.good, self.bad, self.at_s = good, bad, at_s

    def step(self, obs):
        return self.bad if obs.t >= self.at_s - 1e-9 else self.good
'''


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], good: str, bad: str,
         *more: str) -> tuple[int, str, Path]:
    """``gridloop run`` of the lab node under ``Bad``; its status, last stderr line, file."""
    (tmp_path / "limits_ctrl.py").write_text(CONTROLLER)
    scenario = tmp_path / "limits.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "limits.h5"
    capsys.readouterr()
    status = main(["run", str(scenario), "--out", str(out), "--quiet",
                   "--set", f"controller.options={{ good = {good}, bad = {bad} }}", *more])
    return status, capsys.readouterr().err.strip().splitlines()[-1], out


def _stopped(out: Path) -> tuple[int, list[tuple[str, str]]]:
    with open_run(out) as run:
        return len(run), [(k, m) for _, k, m in run.events()]


@pytest.mark.parametrize(("key", "value", "said"), [
    ("lab.inverter.w_max_lim_pct", "-5.0", "-5 % at t = 0.300 s; expected 0..100 %"),
    ("lab.battery.connect", "0.5", "0.5 at t = 0.300 s; expected 0 or 1 (0: open, 1: closed)"),
    ("lab.rack.power_cap_w", "-5.0", "-5 W at t = 0.300 s; expected >= 0 W (0: no cap)"),
    ("lab.battery.p_set_w", "nan", "nan at t = 0.300 s; expected a finite number"),
])
def test_a_setpoint_the_asset_cannot_take_stops_the_run_naming_it(
        key: str, value: str, said: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    status, line, out = _run(tmp_path, capsys, "{}", f'{{ "{key}" = {value} }}')
    message = f"controller 'limits_ctrl:Bad' set '{key}' to {said}"
    assert (status, line) == (2, f"gridloop: error: {message}")
    ticks, events = _stopped(out)
    assert ticks == 3 and events == [("run_stopped", message)]
    node, asset, name = key.split(".")
    with h5py.File(out, "r") as f:  # the twin never took it
        assert np.isnan(f[f"nodes/{node}/{asset}/setpoint/{name}"][()]).all()


def test_values_at_the_ends_of_a_range_are_taken(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    low = ('{ "lab.inverter.w_max_lim_pct" = 0.0, "lab.battery.connect" = 0.0, '
           '"lab.rack.power_cap_w" = 0.0 }')
    high = '{ "lab.inverter.w_max_lim_pct" = 100.0, "lab.battery.connect" = 1.0 }'
    status, _, out = _run(tmp_path, capsys, low, high)
    assert status == 0
    with h5py.File(out, "r") as f:
        limit = f["nodes/lab/inverter/setpoint/w_max_lim_pct"][()]
        connect = f["nodes/lab/battery/setpoint/connect"][()]
        cap = f["nodes/lab/rack/setpoint/power_cap_w"][()]
    assert (limit[0], limit[-1], connect[0], connect[-1]) == (0.0, 100.0, 0.0, 1.0)
    assert (cap == 0.0).all()


def _writes(out: Path, device: str, address: int) -> list[tuple[int, ...]]:
    """The registers written from ``address`` on, write by write, as the capture has them."""
    with h5py.File(out, "r") as f:
        capture = read_capture(f)
    return [tx.request[address - tx.address:]
            for tx in capture.transactions(device)
            if tx.function_code in (6, 16) and tx.address <= address < tx.address + tx.count]


def test_an_out_of_range_limit_never_reaches_the_device(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """50 % is written; 250 % stops the run before its write; the run ends with 100 %."""
    status, line, out = _run(tmp_path, capsys, '{ "lab.inverter.w_max_lim_pct" = 50.0 }',
                             '{ "lab.inverter.w_max_lim_pct" = 250.0 }',
                             "--mode", "emulated", "--set", "run.capture=true")
    assert (status, line) == (2, "gridloop: error: controller 'limits_ctrl:Bad' set "
                                 "'lab.inverter.w_max_lim_pct' to 250 % at t = 0.300 s; "
                                 "expected 0..100 %")
    layout = get_map("sunspec_inverter").layout()
    written = [regs[0] for regs in _writes(out, "lab.inverter",
                                           layout.address(704, "WMaxLimPct"))]
    assert written == [500, 1000]  # 50 % at tick 0, then the safe state (scale factor -1)
    ticks, events = _stopped(out)
    assert ticks == 3 and events[-2:] == [
        ("safe_state", "lab.inverter: safe state written: w_max_lim_pct = 100 %"),
        ("run_stopped", line.removeprefix("gridloop: error: "))]


def test_a_value_no_register_can_hold_is_a_controller_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, line, out = _run(tmp_path, capsys, '{ "lab.battery.p_set_w" = -1000.0 }',
                             '{ "lab.battery.p_set_w" = 5e9 }',
                             "--mode", "emulated", "--set", "run.capture=true")
    message = ("controller 'limits_ctrl:Bad' set 'lab.battery.p_set_w' to 5e+09 W at t = 0.300 s; "
               "expected -2.14748e+09..2.14748e+09 W, what the device of lab.battery can hold")
    assert (status, line) == (2, f"gridloop: error: {message}")
    _, events = _stopped(out)
    assert events[-1] == ("run_stopped", message)
    address = get_map("sunspec_battery").layout().address(704, "WSet")
    # WSet (int32) written twice: -1000 W at tick 0, 0 W by the safe state
    assert [regs[:2] for regs in _writes(out, "lab.battery", address)] == [
        (0xFFFF, 0xFC18), (0, 0)]


# -- the register maps ------------------------------------------------------------------------

def _image(map_name: str) -> tuple[object, list[int], object]:
    regmap = get_map(map_name)
    layout = regmap.layout()
    return regmap, regmap.blank(layout), layout


def test_what_a_register_holds_comes_from_the_device_scale_factor() -> None:
    regmap, image, layout = _image("sunspec_inverter")
    assert regmap.encodable("w_max_lim_pct", image, layout) == (0.0, pytest.approx(6553.4))
    regmap, image, layout = _image("sunspec_battery")
    assert regmap.encodable("p_set_w", image, layout) == (-2147483647.0, 2147483647.0)
    assert regmap.encodable("connect", image, layout) is None  # coded: its codes say


def test_a_value_a_register_cannot_hold_is_one_line_for_the_user() -> None:
    regmap, image, layout = _image("sunspec_battery")
    with pytest.raises(UnencodableSetpoint) as exc:
        regmap.control_writes({"p_set_w": 5e9}, image, layout)
    text = str(exc.value)
    assert text == ("map sunspec_battery: cannot write p_set_w = 5e+09: WSet (int32) holds "
                    "-2.14748e+09..2.14748e+09 at the device's scale factor")
    assert "scale factor" in text and "choose" not in text
    assert (exc.value.setpoint, exc.value.low) == ("p_set_w", -2147483647.0)


def test_a_released_setpoint_clears_its_enable_point_and_the_plant_follows_its_own() -> None:
    regmap, image, layout = _image("sunspec_inverter")
    ena = layout.address(704, "WSetEna")
    # WSetEna = 0 alone: WSet keeps its register, WSetMod its mode
    assert regmap.control_writes({"p_set_w": math.nan}, image, layout) == [(ena, [0])]
    commanded = regmap.controls_written(image, layout, ena, 1)  # the emulator's side
    assert list(commanded) == ["p_set_w"] and math.isnan(commanded["p_set_w"])
    # a battery's power setpoint has no release: its safe state is 0 W
    battery = get_map("sunspec_battery")
    assert battery.control("p_set_w").safe == 0.0 and not battery.control("p_set_w").release
    assert get_map("gpu_rack").control("power_cap_w").safe == 0.0
