"""``gridloop replay``: it never replaces its input, stamps its recording as a replay, and on a
twin-only recording compares the twin's plant signals as values."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import pytest

from bench.cli import main


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
