"""Nothing is lost without a word: replays of one recording under two controllers get two
default files (``RUN.replay.CONTROLLER.h5``), and ``run`` or ``replay`` writing over a
recording at ``--out`` says so in one line on stderr (never a prompt, never a refusal: CI
reruns replace their recordings)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from bench.cli import main

TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"

RUN = ["--mode", "twin", "--quiet", "--set", "market.kind=none", "--set", "run.duration_s=1"]


def _replacing(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("gridloop: replacing ")]


def test_replays_under_two_controllers_keep_both_default_recordings(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec = tmp_path / "run.h5"
    shutil.copy(twin_run, rec)  # the default output lies beside the recording
    for args in ([], ["--controller", "passthrough"],
                 ["--controller", "peak_shaving", "--option", "import_limit_w=5000"],
                 ["--controller", "bench.controllers:Passthrough"]):
        assert main(["replay", str(rec), "--quiet", *args]) == 0
    out = capsys.readouterr()
    assert _replacing(out.err) == []
    made = {p.name: p for p in tmp_path.iterdir() if p.name != "run.h5"}
    # the recorded controller (gpu_smoothing) by its name; module:Class safe as a file name
    assert sorted(made) == ["run.replay.bench.controllers_Passthrough.h5",
                            "run.replay.gpu_smoothing.h5", "run.replay.passthrough.h5",
                            "run.replay.peak_shaving.h5"]
    for name, controller in (("run.replay.gpu_smoothing.h5", "gpu_smoothing"),
                             ("run.replay.passthrough.h5", "passthrough"),
                             ("run.replay.bench.controllers_Passthrough.h5",
                              "bench.controllers:Passthrough")):
        with h5py.File(made[name], "r") as f:
            assert f.attrs["replay_controller"] == controller
    # the same controller again replaces its own replay, and says so
    assert main(["replay", str(rec), "--quiet", "--controller", "passthrough"]) == 0
    assert _replacing(capsys.readouterr().err) == [
        f"gridloop: replacing {tmp_path / 'run.replay.passthrough.h5'} (a replay of run.h5 "
        "under passthrough, 40 ticks)"]


def test_run_over_a_recording_says_what_it_replaces_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.h5"
    assert main(["run", str(TWO_NODES), "--out", str(out), *RUN]) == 0
    assert _replacing(capsys.readouterr().err) == []
    # refused before anything is replaced: no word of replacing, the recording as it was
    before = out.read_bytes()
    assert main(["run", str(TWO_NODES), "--out", str(out), *RUN, "--set",
                 "controller.options.no_such_option=1"]) == 2
    assert _replacing(capsys.readouterr().err) == [] and out.read_bytes() == before
    assert main(["run", str(TWO_NODES), "--out", str(out), *RUN]) == 0
    name = "two_nodes"  # the scenario's run.name
    assert _replacing(capsys.readouterr().err) == [
        f"gridloop: replacing {out} (a recording of {name}, 20 ticks)"]
    # a replay at that --out replaces it too, and says so; and so does a run over the replay
    assert main(["replay", str(out), "--controller", "passthrough", "--out",
                 str(tmp_path / "r.h5"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "r.h5"), "--out", str(out), "--quiet"]) == 0
    assert _replacing(capsys.readouterr().err) == [
        f"gridloop: replacing {out} (a recording of {name}, 20 ticks)"]
    assert main(["run", str(TWO_NODES), "--out", str(out), *RUN]) == 0
    assert _replacing(capsys.readouterr().err) == [
        f"gridloop: replacing {out} (a replay of r.h5 under passthrough, 20 ticks)"]
    # a file there that is no recording is replaced all the same
    out.write_text("not hdf5")
    assert main(["run", str(TWO_NODES), "--out", str(out), *RUN]) == 0
    assert _replacing(capsys.readouterr().err) == [
        f"gridloop: replacing {out} (not a readable recording)"]
