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

# A PV inverter at a third of its rating through a cloudy noon (as south in the demo): its DC
# power only moves over 10-25 kW, and it never clips.  The emulator is the twin.
NOON = """
[run]
name = "noon"
dt_s = 0.1
duration_s = 120
seed = 42
mode = "emulated"
[controller]
name = "passthrough"
[profiles.sun]
kind = "irradiance"
generator = "clear_sky_clouds"
options = { latitude_deg = 40.0, day_of_year = 172, start_hour = 12.5, mean_clear_s = 40.0, mean_cloudy_s = 15.0 }
[nodes.lab.pv]
kind = "pv"
params = "pv_80kwp"
profile = "sun"
mode = "twin"
override = { p_dc0_w = 30000.0 }
[nodes.lab.inverter]
kind = "inverter"
source = "pv"
[nodes.lab.meter]
kind = "meter"
"""

# The demo's rack battery (16s x 8p of 280 Ah: 2240 Ah) through a few 40 kW steps: they move
# 6.6 Ah, 0.3 % of its capacity.  The emulator's cells have 20 % more R0 and R1.
STEPS = """
[run]
name = "steps"
dt_s = 0.1
duration_s = 120
seed = 7
mode = "emulated"
[controller]
name = "schedule"
options = { "lab.battery.p_set_w" = [[0, 0.0], [10, 40000.0], [40, 0.0], [60, -40000.0], [80, 0.0], [90, 20000.0], [100, 0.0]] }
[nodes.lab.battery]
kind = "battery"
initial = { soc = 0.6 }
emulator_scale = { r0_ohm = 1.2, r1_ohm = 1.2 }
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
    assert result.kept == [] and result.at_bound == []
    # the file says where its fitted values came from
    sources = result.pset.meta["sources"]
    for name in ("capacity_ah", "r1_ohm", "c1_f", "r0_ohm"):
        assert sources[name].startswith("fitted by gridloop calibrate, from pulse.h5"), name
    assert "capacity_ah" in result.pset.meta["source"]
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


@pytest.mark.slow
def test_a_capacity_the_recording_cannot_tell_keeps_the_twins_value(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """0.3 % of the capacity moved: the capacity is kept, and said to be; R0 and R1 are
    fitted.  The file keeps the capacity's source and says where R0 and R1 came from."""
    run = _record(tmp_path, "steps", STEPS)
    out = tmp_path / "rack.toml"
    capsys.readouterr()
    assert main(["calibrate", str(run), "--asset", "lab.battery", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # per cell, as the table beside it shows capacity_ah (280 Ah), the pack's charge beside it
    assert ("capacity_ah: the recording moves 0.821 Ah through each cell (6.57 Ah through the "
            "pack's 8 in parallel), 0.29% of the cell's 280 Ah (fitted from 1%)" in text)
    assert "2240" not in text
    result = calibrate(run, "lab.battery")
    assert "capacity_ah" in result.kept and "capacity_ah" not in result.at_bound
    assert result.changes["capacity_ah"] == (280.0, 280.0)
    for name in ("r0_ohm (table mean)", "r1_ohm"):
        old, new = result.changes[name]
        assert new / old == pytest.approx(1.2, rel=0.02), name
    assert result.rms_after < result.rms_before / 10
    saved = params.load(out)
    twin = params.load(Path(__file__).resolve().parents[2] / "twin/data/battery_lfp_rack.toml")
    assert saved.params["capacity_ah"] == 280.0
    assert saved.meta["sources"]["capacity_ah"] == twin.meta["sources"]["capacity_ah"]
    assert saved.meta["sources"]["r0_ohm"].startswith(
        "fitted by gridloop calibrate, from steps.h5")
    assert saved.meta["sources"]["rc_pairs"].startswith("the twin's values, before r1_ohm")
    assert "capacity_ah" not in saved.meta["source"]
    assert saved.meta["calibration"]["charge_moved_ah"] == pytest.approx(6.57, rel=0.01)


@pytest.mark.slow
def test_an_inverter_over_a_narrow_band_of_power_keeps_what_it_cannot_tell(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """10-25 kW of a 60 kW inverter: the fit stays in range (no negative self-consumption),
    the peak of the sun is not taken for clipping, and the coefficients the band does not
    determine keep the twin's values, each with the reason."""
    run = _record(tmp_path, "noon", NOON)
    capsys.readouterr()
    assert main(["calibrate", str(run), "--asset", "lab.inverter"]) == 0
    text = capsys.readouterr().out
    assert "kept at the twin's values (the recording does not determine them)" in text
    result = calibrate(run, "lab.inverter")
    assert result.changes["paco_w"] == (60000.0, 60000.0)  # the sun's peak is no plateau
    for name, (old, new) in result.changes.items():  # the emulator is the twin
        assert new == pytest.approx(old, rel=0.01), name
    assert {"c2_per_v", "c3_per_v"} <= set(result.kept)
    # the coefficients set aside by their standard error; the curve's paco_w (no plateau),
    # pnt_w (no night) and vdco_v (a reference) kept with their own reasons
    assert all(f"  {name}: its standard error is " in text for name in result.kept
               if name not in ("paco_w", "pnt_w", "vdco_v"))
    assert {"paco_w", "pnt_w", "vdco_v"} <= set(result.kept)
    assert result.at_bound == []
    assert result.rms_after <= result.rms_before
    assert result.pset.meta["calibration"]["kept"] == ", ".join(result.kept)


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


def test_calibrate_refuses_to_write_over_its_recording(tmp_path: Path, capsys:
                                                       pytest.CaptureFixture) -> None:
    # long enough to calibrate: without the check, the parameter file replaced it
    run = _record(tmp_path, "short", INVERTER, ["--set", "run.duration_s=20"])
    before = run.read_bytes()
    (tmp_path / "x").mkdir()
    (tmp_path / "link.h5").hardlink_to(run)
    capsys.readouterr()
    # the path as given, another spelling of it, a hard link to it
    for out in (str(run), str(tmp_path / "x" / ".." / run.name), str(tmp_path / "link.h5")):
        assert main(["calibrate", str(run), "--asset", "lab.inverter", "--out", out]) == 2
        assert capsys.readouterr().err == (f"gridloop: error: --out {out}: that is an input "
                                           f"(the recording {run}); give another file\n")
        assert run.read_bytes() == before
