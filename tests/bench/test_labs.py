"""Every lab, as CI runs it: ``lab run NAME --quick``, then ``lab grade`` passes.

Each lab's recordings are real runs (emulated Modbus devices where the lab has them, HDF5
recordings, the SQLite ledger); the grade is computed from them.  A deliberately wrong
answers file fails lab 1, and the report draws each lab's own figures.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
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
        # grading it meanwhile (a second terminal) says to wait, not that it was killed
        assert main(["lab", "grade", str(out)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"gridloop: error: {out}: the run writing it is still in progress (gridloop lab "
            f"run, pid {first.pid}); wait for it to finish, then grade it")
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
    # run again in the same place: the earlier run is replaced, and said so in one line
    # (the quick afternoon's 12 intervals, and the one its last tick opens: 13 blocks)
    assert main(["lab", "run", "p2p_trading", "--quick", "--quiet", "--out", str(out)]) == 0
    said = [x for x in capsys.readouterr().err.splitlines() if "replacing" in x]
    assert len(said) == 1 and re.fullmatch(
        rf"gridloop: replacing {re.escape(str(out))} \(a recording of p2p_trading, \d+ ticks\)"
        rf" and its ledger {re.escape(str(out.with_name('p2p_trading.ledger.db')))} "
        r"\(13 blocks, \d+ records in blocks\)", said[0]), said


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


def _docs_answers(lab: str) -> dict[str, list[str]]:
    """The answers docs/labs.md gives in a lab's row of the full variants' figures:
    ``broken (answer 1): `a`, `b`; flagged (answer 2): ...``."""
    index = (REPO / "docs" / "labs.md").read_text()
    row = next(x for x in index.splitlines() if x.startswith(f"| `{lab}` |"))
    return {key: re.findall(r"`(\w+)`", found[1]) for key in ("broken", "flagged")
            if (found := re.search(rf"{key} \(answer \d\): ([^;|]*)", row))}


def test_answers_are_graded_against_the_measured_figures(runs: dict[str, Path],
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture
                                                         ) -> None:
    """The docs' answers score every point: the docs, the sheet's question 3 (a meter that
    times out does not break the controller, a frozen one does) and the bench agree."""
    out = runs["faults"]
    docs = _docs_answers("faults")
    assert set(docs) == {"broken", "flagged"}
    assert "meter_frozen" in docs["broken"] and "meter_timeout" not in docs["broken"]
    assert "meter_timeout" in docs["flagged"] and "meter_frozen" not in docs["flagged"]
    answers = tmp_path / "faults.toml"
    answers.write_text("".join(f"{key} = {names!r}\n".replace("'", '"')
                               for key, names in docs.items()))
    assert main(["lab", "grade", str(out), "--answers", str(answers)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^answer 1 \(broken\) .* 2/2$", table, flags=re.M), table
    assert re.search(r"^answer 2 \(flagged\) .* 2/2$", table, flags=re.M), table
    assert table.splitlines()[-1].startswith("score 10/10 = 100 % "), table
    answers.write_text('broken = ["rack_timeout"]\n')
    main(["lab", "grade", str(out), "--answers", str(answers)])
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if "answer 1 (broken)" in x)
    assert line.rstrip().endswith("0/2")
    line = next(x for x in table.splitlines() if "answer 2 (flagged)" in x)
    assert re.search(r"missing .* 0/2$", line.rstrip())
    # a name that is no run of the lab is refused, as a misspelt key is
    answers.write_text('broken = ["meter_frozn"]\n')
    assert main(["lab", "grade", str(out), "--answers", str(answers)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gridloop: error: {answers}: broken: 'meter_frozn' is not a run of this lab (did "
        f"you mean 'meter_frozen'?); runs: {', '.join(v.name for v in get_lab('faults').variants)}")


def test_gpu_smoothing_bridges_a_missing_reading_with_the_racks_measured_change() -> None:
    """Why a meter timeout does not break the faults lab's controller: a missing reading is
    visible (NaN), so the net load of the last full tick is carried forward by the rack's
    measured change and the battery still meets the edge.  With nothing to carry (no full
    tick yet, the rack's reading missing too) the node is skipped: its setpoint held."""
    from bench.controllers import AssetRef, ControllerContext, GpuSmoothing, Observation

    ctx = ControllerContext(0.05, (
        AssetRef("dc", "battery", "battery", ("p_set_w",), {"p_rated_w": 100e3}),
        AssetRef("dc", "meter", "meter", ()), AssetRef("dc", "rack", "gpu_rack", ())))
    c = GpuSmoothing(ctx, ramp_limit_w_per_s=2000.0, soc_gain_w=0.0)  # 100 W a tick
    keys = {k: i for i, k in enumerate(("dc.meter.p_w", "dc.battery.p_w", "dc.battery.soc",
                                        "dc.rack.p_w"))}

    def step(meter: float, battery: float, rack: float) -> dict[str, float]:
        values = np.array([meter, battery, 0.5, rack])
        return c.step(Observation(keys, values, values.copy(), {}, np.zeros(0), 0.05))

    nan = math.nan
    assert step(nan, 0.0, 20e3) == {}  # nothing to carry yet
    assert step(20e3, 0.0, 20e3) == {"dc.battery.p_set_w": 0.0}
    # the meter times out as the rack steps up 13.5 kW: the grid side moves 100 W, the
    # battery takes the rest (holding its setpoint would pass the whole edge to the grid)
    assert step(nan, 0.0, 33.5e3) == {"dc.battery.p_set_w": pytest.approx(13.4e3)}
    # the battery's reading fails instead: the same bridge, from the last full tick
    assert step(20.1e3, nan, 33.5e3) == {"dc.battery.p_set_w": pytest.approx(13.3e3)}
    assert step(nan, nan, nan) == {}  # the rack missing too: held
    assert step(20.3e3, 13.2e3, 33.5e3) == {"dc.battery.p_set_w": pytest.approx(13.2e3)}


def test_hints_repeat_the_quick_run_with_a_quoted_path(islanded: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """A stopped quick run's hint reruns it quick (its overrides say so: it was never
    stamped), with a path that pastes into a shell; a lock file left by a killed run is
    not a run in progress."""
    folder = tmp_path / "class 3B" / "alice smith"
    folder.mkdir(parents=True)
    main_path = folder / "my run.h5"
    for p in islanded.parent.glob(f"{islanded.stem}.*"):
        shutil.copy(p, folder / p.name.replace(islanded.stem, main_path.stem, 1))
    rerun = f"(run: gridloop lab run islanded --quick --out {shlex.quote(str(main_path))})"
    variant = get_lab("islanded").variant_path(main_path, "soft_droop")
    variant.unlink()
    assert main(["lab", "grade", str(main_path)]) == 2
    assert capsys.readouterr().err.strip().endswith(rerun)
    with h5py.File(main_path, "r+") as f:  # stopped with Ctrl-C: incomplete, never stamped
        f.attrs["complete"] = False
        for key in ("lab", "lab_variant", "lab_quick"):
            del f.attrs[key]
    lock_path(main_path).write_text("gridloop lab run, pid 4194304")  # nobody holds it
    assert main(["lab", "grade", str(main_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gridloop: error: {main_path}: not a finished lab run of islanded: it is incomplete "
        f"(the run was interrupted or killed) {rerun}")


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
