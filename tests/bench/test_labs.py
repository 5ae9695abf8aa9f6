"""Every lab, as CI runs it: ``lab run NAME --quick``, then ``lab grade`` passes.

Each lab's recordings are real runs (emulated Modbus devices where the lab has them, HDF5
recordings, the SQLite ledger); the grade is computed from them.  A deliberately wrong
answers file fails lab 1, and the report draws each lab's own figures.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from bench.cli import main
from bench.labs import LabError, get_lab
from bench.labs.grading import Criterion, Grade, Recordings
from bench.labs.runner import stamp
from bench.paths import lock_path

REPO = Path(__file__).resolve().parents[2]

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
    # without --answers the answers are not graded, and the score says it is of the run alone
    # (battery_id grades the reference solution in their place, and says so)
    if name == "battery_id":
        assert "the reference solution (gridloop calibrate --rc 1) is graded in their " \
            "place" in table
    else:
        assert re.search(r"answer 1 \(\w+\)\s+not graded\s+.*-/\d", table)
        assert "answers not graded (no --answers)" in table
        assert " of the run alone (pass mark" in table.splitlines()[-1]


def _answer_rows(g: Grade) -> dict[str, Criterion]:
    return {c.name: c for c in g.criteria if c.name.startswith("answer ")}


@pytest.mark.parametrize("name", LABS)
def test_a_missing_answer_scores_nothing_out_of_the_same_maximum(
        name: str, runs: dict[str, Path], tmp_path: Path) -> None:
    """An empty or partial answers file never scores more than wrong answers: every question
    is a row of the table and counts towards the maximum, a missing one as 0 of its points."""
    from bench.labs.grading import grade, grader

    questions = grader(get_lab(name)).QUESTIONS
    first, q = next(iter(questions.items()))
    empty, partial = tmp_path / "empty.toml", tmp_path / "partial.toml"
    empty.write_text("")
    partial.write_text(f"{first} = {'[]' if q.names else '1.0e9'}\n")  # wrong, not missing
    g_empty, g_partial = grade(runs[name], empty), grade(runs[name], partial)
    keys = [f"answer {n} ({key})" for n, key in enumerate(questions, start=1)]
    for g in (g_empty, g_partial):
        rows = _answer_rows(g)
        assert list(rows) == keys
        assert all(c.graded for c in g.criteria) and g.ungraded_points == 0
    assert all(c.value == "missing" and c.points == 0 and c.max_points > 0
               for c in _answer_rows(g_empty).values())
    run_points = sum(c.max_points for c in g_empty.criteria if c not in
                     _answer_rows(g_empty).values())
    answer_points = sum(c.max_points for c in _answer_rows(g_empty).values())
    assert g_empty.max_points == g_partial.max_points == run_points + answer_points
    assert g_empty.score < 1 and g_empty.points <= run_points
    assert _answer_rows(g_partial)[keys[0]].value != "missing"
    assert all(c.value == "missing" for c in list(_answer_rows(g_partial).values())[1:])


def test_empty_partial_and_wrong_answers_of_p2p_trading(runs: dict[str, Path],
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The tester's files: 7/9, 8/9, 7/9; never 100 % of a maximum that shrank."""
    out = runs["p2p_trading"]
    answers = tmp_path / "answers.toml"
    from bench.labs.p2p_trading import bills

    b = bills(Recordings(get_lab("p2p_trading"), out, True))
    saving = sum(b.saving.values())
    scores = []
    for text in ("", f"saving_total = {saving}\n",
                 "saving_total = 5.0e6\ntraded_kwh = 1.0e6\n"):
        answers.write_text(text)
        main(["lab", "grade", str(out), "--answers", str(answers)])
        table = capsys.readouterr().out
        scores.append(table.splitlines()[-1].split(" (")[0])
        assert re.search(r"answer 2 \(traded_kwh\)\s+(missing|1e\+06 kWh)\s+\S+ \+- 2 %\s+"
                         r"0/1\n", table), table
    assert scores == ["score 7/9 = 78 %", "score 8/9 = 89 %", "score 7/9 = 78 %"]


def test_a_second_run_to_the_same_recording_stops_with_one_line(
        runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two students run the same lab in one folder at once: the second is refused before it
    touches a file, and the first one's recordings come out whole and graded."""
    out = tmp_path / "runs" / "p2p_trading.h5"
    first = subprocess.Popen(
        [sys.executable, "-m", "bench", "lab", "run", "p2p_trading", "--quick", "--quiet",
         "--out", str(out)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        seen = []
        for line in first.stderr:  # the first run is writing its main recording
            seen.append(line)
            if "main recording ->" in line:
                break
        assert first.poll() is None, "".join(seen)
        assert main(["lab", "run", "p2p_trading", "--quick", "--quiet",
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert err == (f"gridloop: error: {out} is in use by another run (gridloop lab run, "
                       f"pid {first.pid}); wait for it to finish, or give --out another file")
        rest = first.communicate(timeout=300)[1]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, rest
    assert "Traceback" not in rest
    assert main(["lab", "grade", str(out)]) == 0
    assert ": PASS" in capsys.readouterr().out
    assert not lock_path(out).exists()


def test_stamping_a_recording_another_program_holds_is_one_line(
        runs: dict[str, Path], tmp_path: Path) -> None:
    """The recording held open elsewhere (a plain ``gridloop run`` to the same file, a viewer):
    HDF5's lock failure is a LabError naming the file, not a traceback."""
    rec = tmp_path / "held.h5"
    shutil.copy(runs["p2p_trading"], rec)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, h5py; f = h5py.File(sys.argv[1], 'r+'); "
         "print('open', flush=True); sys.stdin.read()", str(rec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(LabError, match=rf"^{re.escape(str(rec))} is in use by another "
                                           r"program \(unable to lock file\): close what has "
                                           r"it open \(gridloop view, "):
            stamp(rec, "p2p_trading", "", True, wait_s=0.5)
    finally:
        holder.communicate("")


def test_wrong_answers_fail_battery_identification(runs: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The twin's own values (the datasheet) are not the emulated cell's: they fail."""
    answers = tmp_path / "answers.toml"
    answers.write_text("r0_ohm = 0.0002\nr1_ohm = 0.0001\nc1_f = 100000.0\n"
                       "capacity_ah = 280.0\n")
    assert main(["lab", "grade", str(runs["battery_id"]), "--answers", str(answers)]) == 1
    table = capsys.readouterr().out
    assert "answer 1 (r0_ohm)" in table and table.rstrip().endswith("FAIL")
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
    assert "answer 1 (broken)" in capsys.readouterr().out
    answers.write_text('broken = ["rack_timeout"]\n')
    main(["lab", "grade", str(out), "--answers", str(answers)])
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if "answer 1 (broken)" in x)
    assert line.rstrip().endswith("0/2")
    line = next(x for x in table.splitlines() if "answer 2 (flagged)" in x)
    assert re.search(r"missing .* 0/2$", line.rstrip())


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
