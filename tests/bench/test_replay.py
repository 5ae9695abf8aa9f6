"""``gridloop replay``: it never replaces its input, stamps its recording as a replay (and
whether the recording it replayed was complete), on a twin-only recording compares the twin's
plant signals as values, and replays a recording handed over without its scenario's folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run
from bench.summary import figures, format_figures


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_replay_refuses_to_write_over_the_recording_it_replays(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = _digest(twin_run)
    link = tmp_path / "link.h5"
    link.symlink_to(twin_run)
    hard = tmp_path / "hard.h5"
    os.link(twin_run, hard)
    other = twin_run.parent / ".." / twin_run.parent.name / twin_run.name
    capsys.readouterr()
    for out in (twin_run, other, link, hard):
        assert main(["replay", str(twin_run), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "that is the recording being replayed" in err, err
    # the other way round: the input given through the link, --out its target
    assert main(["replay", str(link), "--out", str(twin_run), "--quiet"]) == 2
    capsys.readouterr()
    assert _digest(twin_run) == before and link.is_symlink()


def test_replay_of_a_twin_only_run_compares_the_plant_and_is_stamped(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    same = tmp_path / "same.h5"
    assert main(["replay", str(twin_run), "--out", str(same), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("no measured signals: a twin-only recording; compared setpoints "
                           "and the twin's plant signals")
    assert "no divergence" in text.splitlines()[1]
    with h5py.File(same, "r") as f:
        assert f.attrs["replay_of"] == str(twin_run.resolve())
        assert f.attrs["replay_controller"] == "gpu_smoothing"
        assert f.attrs["mode"] == "twin" and bool(f.attrs["complete"])
    # another controller: its setpoints and the plant under them diverge
    other = tmp_path / "other.h5"
    assert main(["replay", str(twin_run), "--controller", "passthrough", "--out",
                 str(other), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [x.split() for x in lines[2:-1]]
    assert {"setpoint", "signal"} <= {r[0] for r in rows}
    assert any(r[0] == "signal" and r[1].endswith("battery.p_w") for r in rows)
    with h5py.File(other, "r") as f:
        assert f.attrs["replay_controller"] == "passthrough"


def test_a_bad_controller_for_a_replay_is_one_line_and_writes_nothing(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.h5"
    for args, message in (
            (["--controller", ":X"], "controller ':X': expected module:Class"),
            (["--controller", "os:path"], "os.path is not a class"),
            (["--option", "ramp_limit_w_per_s=abc"],
             "option ramp_limit_w_per_s: expected a number, got 'abc'")):
        assert main(["replay", str(twin_run), "--out", str(out), "--quiet", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
        assert not out.exists()


def test_a_replay_of_a_replay_runs_the_controller_the_replay_ran(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The controller and options a replay ran are in its recording's scenario: replaying
    it again reproduces it, where the original scenario's controller would diverge."""
    first = tmp_path / "first.h5"
    assert main(["replay", str(twin_run), "--controller", "peak_shaving", "--option",
                 "import_limit_w=5000", "--out", str(first), "--quiet"]) == 0
    capsys.readouterr()
    with h5py.File(first, "r") as f:
        overrides = str(f.attrs["scenario_overrides"]).split("\n")
    assert overrides.count("run.mode=twin") == 1
    assert overrides[-3:] == ['controller.name="peak_shaving"', "controller.options={}",
                              "controller.options.import_limit_w=5000"]
    assert main(["replay", str(first), "--out", str(tmp_path / "second.h5"), "--quiet"]) == 0
    assert "no divergence" in capsys.readouterr().out


def _killed(src: Path, dst: Path, ticks: int) -> None:
    """``src`` as a writer killed after ``ticks`` ticks leaves it: its per-tick datasets
    that long, and the recording not marked complete."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        def cut(_: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.dtype.names is None and obj.ndim == 1:
                obj.resize((ticks,))

        for name in ("time", "wall"):
            f[name].resize((ticks,))
        for group in ("nodes", "quality", "timing"):
            if group in f:
                f[group].visititems(cut)
        f.attrs["complete"] = False


def test_a_replay_of_a_killed_run_says_its_source_stopped_early(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    killed = tmp_path / "killed.h5"
    _killed(twin_run, killed, 25)  # 1.25 s of the 2 s it was to run
    out = tmp_path / "rr.h5"
    assert main(["replay", str(killed), "--out", str(out), "--quiet"]) == 0
    assert ("killed.h5 is incomplete (killed, or still being written): it stopped at 1.25 s "
            "of the 2 s it was to run; replayed its 25 ticks") in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert bool(f.attrs["complete"])  # the replay itself ran to its end
        assert not bool(f.attrs["replay_source_complete"])
        assert f.attrs["replay_source_recording"] == str(killed.resolve())
        assert f.attrs["replay_source_ticks"] == 25 and len(f["time"]) == 25
        assert f.attrs["replay_source_duration_s"] == 2.0
        # its scenario runs what it ran: the ticks of the recording, not the 2 s planned
        assert str(f.attrs["scenario_overrides"]).split("\n")[-1] == "run.duration_s=1.25"
    incomplete = ("incomplete source: killed.h5 stopped early, at 1.25 s of the 2 s it was "
                  "to run (killed, or still being written when replayed); this replay covers "
                  "only its 25 ticks")
    with open_run(out) as run:
        assert format_figures(figures(run)).splitlines()[1] == incomplete
    # a replay of the replay carries it on; of a complete recording, nothing is said
    again = tmp_path / "again.h5"
    assert main(["replay", str(out), "--out", str(again), "--quiet"]) == 0
    assert "killed.h5 is incomplete" in capsys.readouterr().out
    with open_run(again) as run:
        assert format_figures(figures(run)).splitlines()[1] == incomplete
    whole = tmp_path / "whole.h5"
    assert main(["replay", str(twin_run), "--out", str(whole), "--quiet"]) == 0
    assert "incomplete" not in capsys.readouterr().out
    with open_run(whole) as run:
        assert run.attrs["replay_source_complete"] is True
        assert "incomplete" not in format_figures(figures(run))


#: a twin-only scenario whose files lie beside it: a rack's power trace, a battery's
#: parameter set and the controller's module
BESIDE = """[run]
dt_s = 0.1
duration_s = 2
mode = "twin"

[controller]
name = "replay_beside_ctrl:Mine"

[profiles.rec]
kind = "power"
file = "trace.csv"
column = "power_w"

[nodes.dc.rack]
kind = "gpu_rack"
profile = "rec"

[nodes.dc.battery]
kind = "battery"
params = "bat.toml"

[nodes.dc.meter]
kind = "meter"
"""

CONTROLLER = """class Mine:
    def __init__(self, context):
        pass

    def step(self, obs):
        return {"dc.battery.p_set_w": -4000.0 if obs.t < 1.0 else 6000.0}
"""


def test_a_recording_handed_over_without_its_scenario_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """The errors name the files, the folder the recording expects them in and what to do;
    --scenario-dir finds them elsewhere; a rack's power trace is not needed at all (the
    recording holds the power it drew)."""
    from bench.build import shipped

    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "s.toml").write_text(BESIDE)
    (proj / "replay_beside_ctrl.py").write_text(CONTROLLER)
    shutil.copy(shipped("battery_lfp_rack"), proj / "bat.toml")
    t = np.arange(0.0, 3.0, 0.05)
    (proj / "trace.csv").write_text("t_s,power_w\n" + "".join(
        f"{a:.2f},{30000 + 8000 * np.sin(3 * a):.1f}\n" for a in t))
    handed = tmp_path / "handed"
    handed.mkdir()
    rec = handed / "rec.h5"
    assert main(["run", str(proj / "s.toml"), "--out", str(rec), "--quiet"]) == 0
    monkeypatch.delitem(sys.modules, "replay_beside_ctrl")  # imported from proj by the run
    moved = tmp_path / "moved"
    proj.rename(moved)
    (moved / "trace.csv").unlink()
    capsys.readouterr()
    out = tmp_path / "out.h5"
    for args, names, hint in (
            (["--controller", "passthrough"], "bat.toml (nodes.dc.battery.params)", ""),
            ([], "bat.toml (nodes.dc.battery.params), replay_beside_ctrl.py (controller "
                 "replay_beside_ctrl:Mine)", ", or --controller NAME to replay another "
                                             "controller")):
        assert main(["replay", str(rec), "--out", str(out), "--quiet", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"gridloop: error: {rec}: the recording refers to files beside its "
                       f"scenario at {proj} (a folder that is gone), and these are not "
                       f"there: {names}; copy them back there, or give --scenario-dir DIR, "
                       f"the folder they are in now{hint}"), err
        assert not out.exists()
    assert main(["replay", str(rec), "--out", str(out), "--quiet", "--scenario-dir",
                 str(tmp_path / "nowhere")]) == 2
    assert "--scenario-dir" in capsys.readouterr().err and not out.exists()
    # where they are now: the recorded controller, and the racks on their recorded power,
    # reproduce the recording exactly
    assert main(["replay", str(rec), "--out", str(out), "--quiet", "--scenario-dir",
                 str(moved)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (f"dc.rack: on the power recorded in rec.h5 (trace.csv not found "
                        f"beside the scenario at {moved}); power the recorded controller's "
                        "cap clipped stays clipped")
    assert lines[-1].startswith("no divergence")
    with h5py.File(out, "r") as f, h5py.File(rec, "r") as r:
        assert f.attrs["replay_rack_power"] == "dc.rack"
        assert f.attrs["scenario_path"] == str(moved / "s.toml")
        assert "replay_recorded" not in str(f.attrs["scenario_overrides"])
        np.testing.assert_array_equal(f["nodes/dc/rack/p_w"][:], r["nodes/dc/rack/p_w"][:])
        np.testing.assert_array_equal(f["nodes/dc/meter/p_w"][:], r["nodes/dc/meter/p_w"][:])
    # and a replay of that replay, whose scenario now points at the new folder
    assert main(["replay", str(out), "--out", str(tmp_path / "again.h5"), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("no divergence")
