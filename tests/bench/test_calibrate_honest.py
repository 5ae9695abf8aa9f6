"""``gridloop calibrate`` says what it fitted and what it kept, and its file agrees.

Each recording is real (``gridloop run`` of an emulated scenario):

- the battery_id lab's scenario, cut to 400 s: 128s x 1p of the LFP rack set with one RC
  pair (the scenario overrides ``r2_ohm = c2_f = 0``); fitted with two pairs, the second was
  said to be kept yet written as C2 = 1e7 F and called "fitted";
- 10 s of steps on the demo's rack battery (two RC pairs), its emulator's R1 20 % above the
  twin's: too short to determine R1, so C1, fitted beside R1 held at the twin's value, came
  out 7 % low and was called fitted;
- a PV inverter clipped on every tick (its error named neither recording nor asset), and
  one through clouds, partly clipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.calibrate import Calibration, calibrate
from bench.cli import main
from twin import params

REPO = Path(__file__).resolve().parents[2]

# the demo's rack battery (16s x 8p, two RC pairs), steps of 40 kW for 10 s
SHORT = """
[run]
name = "short"
dt_s = 0.1
duration_s = 10
seed = 7
mode = "emulated"
[controller]
name = "schedule"
options = { "lab.battery.p_set_w" = [[0, 0.0], [2, 40000.0], [6, 0.0], [8, -40000.0]] }
[nodes.lab.battery]
kind = "battery"
initial = { soc = 0.6 }
emulator_scale = { r0_ohm = 1.2, r1_ohm = 1.2 }
"""

# 80 kWp of PV on a 60 kW inverter at noon: clear sky clips it on every tick
PV = """
[run]
name = "pv"
dt_s = 0.5
duration_s = 5
seed = 42
mode = "emulated"
[controller]
name = "passthrough"
[profiles.sun]
kind = "irradiance"
generator = "clear_sky"
options = { latitude_deg = 40.0, day_of_year = 172, start_hour = 12.5 }
[nodes.lab.pv]
kind = "pv"
params = "pv_80kwp"
profile = "sun"
mode = "twin"
[nodes.lab.inverter]
kind = "inverter"
source = "pv"
"""

CLOUDS = (PV.replace('generator = "clear_sky"', 'generator = "clear_sky_clouds"')
          .replace("start_hour = 12.5 }",
                   "start_hour = 12.5, mean_clear_s = 40.0, mean_cloudy_s = 15.0 }")
          .replace("duration_s = 5", "duration_s = 300"))


def _run(folder: Path, name: str, scenario: str | Path, *sets: str) -> Path:
    if isinstance(scenario, str):
        (folder / f"{name}.toml").write_text(scenario)
        scenario = folder / f"{name}.toml"
    out = folder / f"{name}.h5"
    extra = [w for s in sets for w in ("--set", s)]
    assert main(["run", str(scenario), "--out", str(out), "--quiet", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("honest")
    return {"one_pair": _run(folder, "battery_id", REPO / "experiments/battery_id/scenario.toml",
                             "run.duration_s=400"),
            "short": _run(folder, "short", SHORT),
            "clipped": _run(folder, "clipped", PV),
            "clouds": _run(folder, "clouds", CLOUDS)}


def _calibrate(run: Path, asset: str, out: Path, capsys: pytest.CaptureFixture,
               *extra: str) -> tuple[str, params.ParamSet]:
    """``gridloop calibrate``'s printed lines and the file it wrote."""
    capsys.readouterr()
    assert main(["calibrate", str(run), "--asset", asset, "--out", str(out), *extra]) == 0
    return capsys.readouterr().out, params.load(out)


def _listed(text: str, head: str) -> list[str]:
    """The names a printed line ``head: a, b`` lists (none: no such line)."""
    line = next((x for x in text.splitlines() if x.startswith(head)), None)
    return [] if line is None else line.removeprefix(head).split(" (")[0].split(", ")


def _agree(text: str, saved: params.ParamSet, result: Calibration, kept_key: str) -> None:
    """The printed lists, ``meta.calibration`` and ``meta.sources`` say the same: what was
    fitted, what was kept (at the twin's value, in the table and in the file)."""
    fitted = _listed(text, "fitted to the recording: ")
    kept = _listed(text, "kept at the twin's values (the recording does not determine "
                         "them): ")
    assert fitted == result.fitted and kept == result.kept
    calibration = saved.meta["calibration"]
    assert calibration["fitted"] == ", ".join(fitted)
    assert calibration[kept_key] == ", ".join(kept)
    assert not set(fitted) & set(kept)
    sources = saved.meta.get("sources", {})
    rows = {label.split(" ")[0]: pair for label, pair in result.changes.items()}
    for name in kept:
        old, new = rows[name]
        assert new == old, name
        assert not sources.get(name, "").startswith("fitted"), name
        assert f"  {name}: {result.why_kept[name]}" in text
    for name in fitted:
        assert name in saved.meta["source"]
    if saved.kind == "battery":
        for name in fitted:
            assert sources[name].startswith("fitted by gridloop calibrate"), name
        for name in kept:
            if isinstance(saved.params[name], float):
                assert saved.params[name] == rows[name][0], name


def test_a_second_pair_the_recording_does_not_show_is_written_as_the_twins_none(
        recordings: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text, saved = _calibrate(recordings["one_pair"], "bench.battery", tmp_path / "two.toml",
                             capsys)
    assert saved.params["r2_ohm"] == 0.0 and saved.params["c2_f"] == 0.0
    assert "c2_f" in saved.meta["calibration"]["not_determined"]
    assert not saved.meta["sources"]["c2_f"].startswith("fitted")
    result = calibrate(recordings["one_pair"], "bench.battery")
    assert {"r2_ohm", "c2_f"} <= set(result.kept)
    assert result.changes["r2_ohm"] == (0.0, 0.0) and result.changes["c2_f"] == (0.0, 0.0)
    _agree(text, saved, result, "not_determined")
    assert "the twin has no second RC pair" in result.why_kept["c2_f"]
    assert "the twin has no second RC pair" in result.why_kept["r2_ohm"]
    # the first pair is the emulator's (R1 x 0.7, C1 x 1.6), as with --rc 1
    for name, truth in {"r1_ohm": 0.7, "c1_f": 1.6}.items():
        old, new = result.changes[name]
        assert new / old == pytest.approx(truth, rel=0.02), name
    one = calibrate(recordings["one_pair"], "bench.battery", n_rc=1)
    assert result.changes["c1_f"][1] == pytest.approx(one.changes["c1_f"][1], rel=1e-3)


def test_the_file_says_which_of_the_scenarios_overrides_its_values_hold(
        recordings: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The set is 16s x 8p with hysteresis; the scenario makes it 128s x 1p without: the
    file's name, source and sources say so, not only its ``[params]``."""
    _, saved = _calibrate(recordings["one_pair"], "bench.battery", tmp_path / "cal.toml",
                          capsys)
    assert saved.params["cells_series"] == 128 and saved.params["cells_parallel"] == 1
    said = "cells_series = 128, cells_parallel = 1, r2_ohm = 0, c2_f = 0, hysteresis_v = 0"
    assert said in saved.name and said in saved.meta["source"]
    sources = saved.meta["sources"]
    assert sources["cells"].startswith("overridden by the recorded scenario (cells_series = "
                                       "128, cells_parallel = 1); before that, the parameter "
                                       "set's: 16 cells in series")
    assert sources["hysteresis"].startswith("overridden by the recorded scenario "
                                            "(hysteresis_v = 0, hysteresis_rate = 0)")
    assert "overridden by the recorded scenario (r2_ohm = 0, c2_f = 0)" in sources["rc_pairs"]
    assert sources["cells_series"] == "set by the recorded scenario's override: cells_series = 128"
    # what the scenario left alone keeps the set's own words
    assert sources["ocv_v"] == params.load(REPO / "twin/data/battery_lfp_rack.toml"
                                           ).meta["sources"]["ocv_v"]


@pytest.mark.parametrize("rc", ["2", "1"])
def test_a_capacitance_whose_resistance_is_held_is_kept_with_it(
        recordings: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture,
        rc: str) -> None:
    """10 s do not determine R1 (tau1 is 10 s): fitted beside R1 held at the twin's value
    (20 % below the emulator's), C1 took up R1's error.  It is kept with R1, and the line
    says why, with its standard error and the move it makes with R1 free too."""
    text, saved = _calibrate(recordings["short"], "lab.battery", tmp_path / "c.toml", capsys,
                             "--rc", rc)
    result = calibrate(recordings["short"], "lab.battery", n_rc=int(rc))
    assert {"r1_ohm", "c1_f"} <= set(result.kept)
    assert result.fitted == ["r0_ohm"]
    _agree(text, saved, result, "not_determined")
    why = result.why_kept["c1_f"]
    assert why.startswith("kept with r1_ohm, its RC partner (tau1 = R1*C1): fitted beside "
                          "r1_ohm held at the twin's value, it takes up r1_ohm's error; with "
                          "r1_ohm free too it moves +")
    moved = float(why.split("it moves +")[1].split("%")[0])
    assert moved > 5.0
    assert result.changes["c1_f"] == (100000.0, 100000.0)
    old, new = result.changes["r0_ohm (table mean)"]
    assert new / old == pytest.approx(1.2, rel=0.02)


def test_one_pair_says_the_second_was_dropped(recordings: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """--rc 1 on a twin with two pairs: the table says "dropped", not "fitted 0"."""
    text, saved = _calibrate(recordings["short"], "lab.battery", tmp_path / "one.toml", capsys,
                             "--rc", "1")
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()
            if line.startswith(("r2_ohm ", "c2_f "))}
    assert rows == {"r2_ohm": ["0.00015", "dropped", "-"], "c2_f": ["2e+06", "dropped", "-"]}
    assert ("dropped, for a model with one RC pair (--rc 1): r2_ohm, c2_f (the twin's second "
            "pair)") in text
    assert "r2_ohm" not in _listed(text, "fitted to the recording: ")
    assert saved.params["r2_ohm"] == 0.0 and saved.params["c2_f"] == 0.0
    assert saved.meta["calibration"]["dropped"] == "r2_ohm, c2_f"
    assert saved.meta["sources"]["c2_f"].startswith("dropped (a model with one RC pair fitted)")


def test_an_inverter_clipped_on_every_tick_is_one_line_naming_recording_asset_and_why(
        recordings: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = recordings["clipped"]
    capsys.readouterr()
    assert main(["calibrate", str(run), "--asset", "lab.inverter",
                 "--out", str(tmp_path / "inv.toml")]) == 2
    assert capsys.readouterr().err == (
        f"gridloop: error: {run}: lab.inverter: cannot fit its efficiency curve: only 0 "
        f"running, unclipped samples; need at least 8 (it sat at its AC limit of 60000 W, "
        f"clipped, on all 10 samples)\n")
    assert not (tmp_path / "inv.toml").exists()


def test_an_inverter_fit_says_of_every_parameter_whether_it_was_fitted_or_kept(
        recordings: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Clouds over a clipping inverter: the clipping level is read off its plateau; the
    night tare (no night) and the reference voltage are kept, each with its reason."""
    text, saved = _calibrate(recordings["clouds"], "lab.inverter", tmp_path / "inv.toml",
                             capsys)
    result = calibrate(recordings["clouds"], "lab.inverter")
    _agree(text, saved, result, "kept")
    # every row of the table is in one of the two lists
    assert sorted(result.fitted + result.kept) == sorted(result.changes)
    assert "paco_w" in result.fitted and "pdco_w" in result.fitted
    assert {"pnt_w", "vdco_v"} <= set(result.kept)
    assert result.why_kept["pnt_w"] == "no samples of negative AC power, the night tare"
    assert set(saved.meta["calibration"]["why_kept"]) == set(result.kept)
    assert np.isclose(saved.params["sandia"]["paco_w"], 60000.0, rtol=1e-3)
