"""Calibration from emulated runs whose emulators differ from the twin by 20 %."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.calibrate import calibrate
from bench.cli import main
from bench.recording import open_run
from twin import params

PULSES = [[0, 0.0]] + [p for k in range(20) for p in ([60 + 120 * k, 370.0],
                                                       [120 + 120 * k, 0.0])]

BATTERY = f"""
# One cell (PyBaMM's ECM_Example) behind a 1 kVA converter: a pulse test.
[run]
name = "pulse"
dt_s = 1.0
duration_s = 2700
seed = 3
mode = "emulated"
[controller]
name = "schedule"
options = {{ "lab.battery.p_set_w" = {PULSES} }}
[nodes.lab.battery]
kind = "battery"
params = "battery_ecm_example"
converter = "converter_lab_1kw"
initial = {{ soc = 0.9 }}
emulator_scale = {{ r0_ohm = 1.2, r1_ohm = 0.8, c1_f = 1.2, capacity_ah = 0.8 }}
[nodes.lab.meter]
kind = "meter"
"""

INVERTER = """
# A PV inverter through a cloudy morning.
[run]
name = "pv"
dt_s = 1.0
duration_s = 3600
seed = 5
mode = "emulated"
[controller]
name = "passthrough"
[profiles.sun]
kind = "irradiance"
generator = "clear_sky_clouds"
options = { start_hour = 6.0, mean_clear_s = 300.0, mean_cloudy_s = 200.0, k_cloudy_min = 0.1, k_cloudy_max = 0.6 }
[nodes.lab.pv]
kind = "pv"
profile = "sun"
mode = "twin"
[nodes.lab.inverter]
kind = "inverter"
source = "pv"
emulator_scale = { "sandia.pso_w" = 1.2, "sandia.c0_per_w" = 0.8 }
[nodes.lab.meter]
kind = "meter"
"""


def _record(tmp_path: Path, name: str, text: str, extra: list[str] = ()) -> Path:
    scenario = tmp_path / f"{name}.toml"
    scenario.write_text(text)
    out = tmp_path / f"{name}.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet", *extra]) == 0
    return out


@pytest.mark.slow
def test_battery_calibration_recovers_the_emulator_and_shrinks_residuals(tmp_path: Path
                                                                         ) -> None:
    run = _record(tmp_path, "pulse", BATTERY)
    result = calibrate(run, "lab.battery", n_rc=1)
    truth = {"r0_ohm (table mean)": 1.2, "r1_ohm (table mean)": 0.8,
             "c1_f (table mean)": 1.2, "capacity_ah": 0.8}
    for name, ratio in truth.items():
        old, new = result.changes[name]
        assert new / old == pytest.approx(ratio, rel=0.05), name
    assert result.rms_after < result.rms_before / 10
    # the calibrated file as the twin's parameters: the residuals shrink in a new run
    cal = tmp_path / "cell.toml"
    params.save(result.pset, cal)
    again = _record(tmp_path, "again", BATTERY, ["--set", f'lab.battery.params="{cal}"',
                                                 "--set", "lab.battery.emulator_params="
                                                 "\"battery_ecm_example\""])
    with open_run(run) as a, open_run(again) as b:
        before = np.nanstd(a.signal("lab", "battery", "voltage_v", "residual"))
        after = np.nanstd(b.signal("lab", "battery", "voltage_v", "residual"))
    assert after < before / 5


@pytest.mark.slow
def test_inverter_calibration_recovers_its_efficiency_curve(tmp_path: Path) -> None:
    run = _record(tmp_path, "pv", INVERTER)
    result = calibrate(run, "lab.inverter")
    # the self-consumption and the curvature of the efficiency curve, which one DC voltage
    # identifies (C1..C3 describe its change with DC voltage: they need recordings at several)
    for name, ratio in {"pso_w": 1.2, "c0_per_w": 0.8}.items():
        old, new = result.changes[name]
        assert new / old == pytest.approx(ratio, rel=0.05), name
    # down to the resolution of the power register (10 W steps: 2.9 W RMS of rounding)
    assert result.rms_after < result.rms_before / 5
    assert result.rms_after < 5.0


def test_calibrate_names_a_missing_asset(tmp_path: Path, capsys: pytest.CaptureFixture
                                        ) -> None:
    run = _record(tmp_path, "short", INVERTER, ["--set", "run.duration_s=5"])
    assert main(["calibrate", str(run), "--asset", "lab.invertor"]) == 2
    assert "did you mean 'lab.inverter'" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--asset", "lab.meter"]) == 2
    # an asset that ran in the twin has no measurement to fit to
    twin_run = _record(tmp_path, "twin", INVERTER, ["--set", "run.duration_s=5",
                                                    "--set", "run.mode=twin"])
    capsys.readouterr()
    assert main(["calibrate", str(twin_run), "--asset", "lab.inverter"]) == 2
    assert ("lab.inverter ran in the twin in this recording: its values are the twin's own"
            in capsys.readouterr().err)
