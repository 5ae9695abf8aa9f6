"""Every lab, as CI runs it: ``lab run NAME --quick``, then ``lab grade`` passes.

Each lab's recordings are real runs (emulated Modbus devices where the lab has them, HDF5
recordings, the SQLite ledger); the grade is computed from them.  A deliberately wrong
answers file fails lab 1, and the report draws each lab's own figures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from bench.cli import main
from bench.labs import get_lab

pytestmark = pytest.mark.slow

LABS = ("battery_id", "gpu_smoothing", "gpu_smoothing_h100", "p2p_trading", "islanded",
        "faults")
FIGURE = {"battery_id": "battery_id_pulse.png", "gpu_smoothing": "gpu_smoothing_grid.png",
          "gpu_smoothing_h100": "gpu_smoothing_h100_spectrum.png",
          "p2p_trading": "p2p_trading_bills.png", "islanded": "islanded_frequency.png",
          "faults": "faults_runs.png"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path,
         monkeypatch_module: pytest.MonkeyPatch) -> dict[str, Path]:
    """The quick run of each lab, made the first time a test asks for it."""
    monkeypatch_module.setenv("GRIDLOOP_SHARED_DATA", str(shared_data))
    folder = tmp_path_factory.mktemp("labs")
    return _Runs(folder)


class _Runs(dict):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, name: str) -> Path:
        out = self.folder / f"{name}.h5"
        assert main(["lab", "run", name, "--quick", "--out", str(out), "--quiet"]) == 0
        self[name] = out
        return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("name", LABS)
def test_quick_lab_runs_and_passes_its_grade(name: str, runs: dict[str, Path],
                                             capsys: pytest.CaptureFixture) -> None:
    out = runs[name]
    lab = get_lab(name)
    capsys.readouterr()
    for variant in lab.variants:
        path = lab.variant_path(out, variant.name)
        with h5py.File(path, "r") as f:
            assert f.attrs["lab"] == name and f.attrs["lab_variant"] == variant.name
            assert bool(f.attrs["lab_quick"])
    assert main(["lab", "grade", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"lab {name}\n") and ": PASS" in table.splitlines()[-1]


def test_wrong_answers_fail_battery_identification(runs: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The twin's own values (the datasheet) are not the emulated cell's: they fail."""
    answers = tmp_path / "answers.toml"
    answers.write_text("r0_ohm = 0.0002\nr1_ohm = 0.0001\nc1_f = 100000.0\n"
                       "capacity_ah = 280.0\n")
    assert main(["lab", "grade", str(runs["battery_id"]), "--answers", str(answers)]) == 1
    table = capsys.readouterr().out
    assert "answer: r0_ohm" in table and table.rstrip().endswith("FAIL")
    # the reference solution's values, given as answers, pass
    assert main(["calibrate", str(runs["battery_id"]), "--asset", "bench.battery",
                 "--rc", "1", "--out", str(tmp_path / "fit.toml")]) == 0
    capsys.readouterr()
    from bench.labs.battery_id import cell_of
    from twin.params import load

    cell = cell_of(load(tmp_path / "fit.toml"))
    answers.write_text(f"r0_ohm = {cell.r0_ohm}\nr1_ohm = {cell.r1_ohm}\n"
                       f"c1_f = {cell.c1_f}\ncapacity_ah = {cell.capacity_ah}\n")
    assert main(["lab", "grade", str(runs["battery_id"]), "--answers", str(answers)]) == 0


def test_answers_are_graded_against_the_measured_figures(runs: dict[str, Path],
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture
                                                         ) -> None:
    out = runs["faults"]
    answers = tmp_path / "faults.toml"
    answers.write_text('broken = ["meter_frozen", "battery_drop_writes", "battery_error"]\n'
                       'flagged = ["meter_timeout", "battery_error", "rack_timeout"]\n')
    assert main(["lab", "grade", str(out), "--answers", str(answers)]) == 0
    assert "answer: broken" in capsys.readouterr().out
    answers.write_text('broken = ["rack_timeout"]\n')
    main(["lab", "grade", str(out), "--answers", str(answers)])
    line = next(x for x in capsys.readouterr().out.splitlines() if "answer: broken" in x)
    assert line.rstrip().endswith("0/2")


def test_grading_a_variant_or_a_lone_main_recording_is_bad_input(
        runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = runs["islanded"]
    variant = get_lab("islanded").variant_path(out, "low_inertia")
    assert main(["lab", "grade", str(variant)]) == 2
    assert f"grade the main recording {out}" in capsys.readouterr().err
    lone = tmp_path / "lone.h5"
    shutil.copy(out, lone)
    assert main(["lab", "grade", str(lone)]) == 2
    err = capsys.readouterr().err
    assert "lone.low_inertia.h5: missing recording of variant 'low_inertia'" in err


@pytest.mark.parametrize("name", ["battery_id", "gpu_smoothing", "p2p_trading"])
def test_report_draws_the_labs_own_figures(name: str, runs: dict[str, Path],
                                           tmp_path: Path) -> None:
    from matplotlib.image import imread

    assert main(["report", str(runs[name]), "--out", str(tmp_path)]) == 0
    img = imread(tmp_path / FIGURE[name])
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert len({tuple(px) for px in img.reshape(-1, img.shape[-1])[::50]}) > 20
