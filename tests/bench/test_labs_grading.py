"""The lab registry, answers files, score tables and the lab command's bad-input paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.cli import main
from bench.labs import LabError, get_lab, labs, load_lab
from bench.labs.grading import Grade, Question, grader, read_answers

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"
LABS = ("battery_id", "gpu_smoothing", "gpu_smoothing_h100", "p2p_trading", "islanded",
        "faults")
SECTIONS = ("## Goal", "## Background", "## Steps", "## Questions")


def test_every_lab_is_registered_with_a_grader_and_listed(capsys: pytest.CaptureFixture
                                                          ) -> None:
    found = labs()
    assert tuple(sorted(found)) == tuple(sorted(LABS))
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    index = (REPO / "docs" / "labs.md").read_text()
    for name, lab in found.items():
        assert name in out and str(lab.sheet) in out
        assert f"`{name}`" in index, f"docs/labs.md does not list {name}"
        module = grader(lab)
        assert callable(module.grade) and callable(module.figures)
        assert all(isinstance(q, Question) for q in module.QUESTIONS.values())


@pytest.mark.parametrize("name", LABS)
def test_each_sheet_has_its_sections_commands_and_answer_keys(name: str) -> None:
    """A newcomer follows the sheet alone: it names the commands and every answer key."""
    lab = get_lab(name)
    sheet = lab.sheet.read_text()
    positions = [sheet.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), SECTIONS
    assert f"gridloop lab run {name}" in sheet
    assert "gridloop lab grade" in sheet and "gridloop report" in sheet
    keys = set(grader(lab).QUESTIONS)
    in_sheet = set(re.findall(r"^\s*([a-z0-9_]+) = ", sheet, flags=re.M))
    assert keys <= in_sheet, f"answer keys missing from the sheet: {keys - in_sheet}"


def test_the_docs_give_each_quick_run_its_measured_wall_time() -> None:
    """docs/labs.md states each lab's --quick wall time as a measured range on a named
    machine, not a blanket "under a minute" (gpu_smoothing takes 60-90 s on 2 cores)."""
    index = (REPO / "docs" / "labs.md").read_text()
    assert "under a minute" not in index
    assert "2-core machine" in index and "time gridloop lab run NAME --quick --quiet" in index
    header = "| lab | what it teaches | recordings | quick run: simulated, wall time |"
    assert header in index
    for name in LABS:
        row = next(x for x in index.splitlines() if x.startswith(f"| [`{name}`]"))
        cell = row.rstrip(" |").rsplit("|", 1)[1]
        lo_hi = re.search(r", (\d+)-(\d+) s$", cell.strip())
        assert lo_hi and int(lo_hi[1]) < int(lo_hi[2]), f"{name}: {cell.strip()!r}"


def test_unknown_lab_is_one_line_with_a_suggestion(capsys: pytest.CaptureFixture) -> None:
    assert main(["lab", "run", "islanded_grid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no lab 'islanded_grid'" in err and "did you mean 'islanded'" in err


def test_a_malformed_lab_file_names_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "mylab"
    folder.mkdir()
    (folder / "lab.toml").write_text('[lab]\ntitle = "x"\nsummary = "y"\npass_mrk = 0.5\n')
    with pytest.raises(LabError, match=r"lab\.toml\.lab\.pass_mrk: unknown parameter "
                                       r"\(did you mean 'pass_mark'\?\)"):
        load_lab(folder)
    (folder / "lab.toml").write_text('[lab]\ntitle = "x"\nsummary = "y"\npass_mark = 2\n')
    with pytest.raises(LabError, match="pass_mark must be a fraction"):
        load_lab(folder)
    (folder / "lab.toml").write_text('[lab]\ntitle = "x"\nsummary = "y"\n')
    with pytest.raises(LabError, match=r"scenario\.toml: missing"):
        load_lab(folder)
    (folder / "lab.toml").write_text("[lab\n")
    with pytest.raises(LabError, match="not valid TOML"):
        load_lab(folder)


def test_a_lab_sets_its_graders_targets_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    from bench.labs.grading import Recordings

    h100 = get_lab("gpu_smoothing_h100")
    assert Recordings(h100, tmp_path / "r.h5", False).targets(
        {"reduction_db": 10.0, "forecast_gain_db": 3.0}) == {"reduction_db": 8.0,
                                                             "forecast_gain_db": 3.0}
    folder = tmp_path / "mylab"
    folder.mkdir()
    for name in ("scenario.toml", "sheet.md"):
        (folder / name).write_text("")
    head = '[lab]\ntitle = "x"\nsummary = "y"\ngrader = "gpu_smoothing"\n[targets]\n'
    (folder / "lab.toml").write_text(head + "reduction_bd = 8.0\n")
    with pytest.raises(LabError, match=r"targets\.reduction_bd: not a target of grader "
                                       r"gpu_smoothing \(did you mean 'reduction_db'\?\)"):
        Recordings(load_lab(folder), tmp_path / "r.h5", False).targets(
            {"reduction_db": 10.0})
    (folder / "lab.toml").write_text(head + 'reduction_db = "high"\n')
    with pytest.raises(LabError, match=r"targets\.reduction_db: expected a number"):
        load_lab(folder)


def test_answers_files_are_checked_against_the_questions(tmp_path: Path) -> None:
    questions = {"r0_ohm": Question("R0", "Ohm"),
                 "broken": Question("faults", names=True)}
    path = tmp_path / "answers.toml"
    path.write_text('r0_ohm = 2.6e-4\nbroken = ["meter_frozen"]\n')
    assert read_answers(path, questions) == {"r0_ohm": 2.6e-4, "broken": ["meter_frozen"]}
    assert read_answers(None, questions) == {}
    path.write_text("r0_ohms = 1.0\n")
    with pytest.raises(LabError, match=r"r0_ohms: not a question of this lab \(did you mean "
                                       r"'r0_ohm'\?\)"):
        read_answers(path, questions)
    path.write_text('r0_ohm = "small"\n')
    with pytest.raises(LabError, match="r0_ohm: expected a number in Ohm"):
        read_answers(path, questions)
    path.write_text("broken = 3\n")
    with pytest.raises(LabError, match="broken: expected a list of names"):
        read_answers(path, questions)
    path.write_text("r0_ohm = \n")
    with pytest.raises(LabError, match="not valid TOML"):
        read_answers(path, questions)
    with pytest.raises(LabError, match="no such answers file"):
        read_answers(tmp_path / "none.toml", questions)


def test_score_table_and_pass_mark() -> None:
    g = Grade("demo", pass_mark=0.75)
    g.find("swing", "6.6 kW")
    assert g.check("reduction", "15.8 dB", ">= 10 dB", True, 3)
    assert not g.check("ramp", "9000 W/s", "<= 2500 W/s", False, 1)
    assert g.points == 3 and g.max_points == 4 and g.passed
    text = g.format()
    assert text.splitlines()[0] == "lab demo"
    assert re.search(r"reduction\s+15\.8 dB\s+>= 10 dB\s+3/3", text)
    assert re.search(r"ramp\s+9000 W/s\s+<= 2500 W/s\s+0/1", text)
    assert text.endswith("score 3/4 = 75 % (pass mark 75 %): PASS")
    g.check("another", "x", "y", False, 1)
    assert not g.passed and g.format().endswith("FAIL")


def test_missing_answers_score_zero_and_no_answers_file_grades_the_run_alone() -> None:
    from bench.labs.grading import grade_answers

    questions = {"saving_total": Question("saving", "currency units"),
                 "traded_kwh": Question("traded", "kWh")}
    judges = {"saving_total": ("2.36 +- 2 %", lambda v: abs(v / 2.36 - 1) <= 0.02),
              "traded_kwh": ("9.44 +- 2 %", lambda v: abs(v / 9.44 - 1) <= 0.02)}

    def graded(answers: dict | None) -> Grade:
        g = Grade("demo", pass_mark=0.7)
        for k in range(7):
            g.check(f"run {k}", "ok", "ok", True)
        grade_answers(g, questions, answers, judges)
        return g

    empty, partial = graded({}), graded({"saving_total": 2.36})
    wrong = graded({"saving_total": 5.0, "traded_kwh": 1.0})
    assert [(g.points, g.max_points) for g in (empty, partial, wrong)] == [(7, 9), (8, 9),
                                                                           (7, 9)]
    assert re.search(r"answer 2 \(traded_kwh\)\s+missing\s+9\.44 \+- 2 %\s+0/1",
                     partial.format())
    assert partial.format().endswith("score 8/9 = 89 % (pass mark 70 %): PASS")
    none = graded(None)
    assert (none.points, none.max_points, none.ungraded_points) == (7, 7, 2)
    text = none.format()
    assert re.search(r"answer 1 \(saving_total\)\s+not graded\s+2\.36 \+- 2 %\s+-/1", text)
    assert text.endswith("answers not graded (no --answers): 2 of the lab's 9 points left "
                         "out; the score is of the run alone\n"
                         "score 7/7 = 100 % of the run alone (pass mark 70 %): PASS")


def test_grading_a_recording_that_is_no_lab_exits_2(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "plain.h5"
    assert main(["run", str(SCENARIO), "--mode", "twin", "--out", str(out), "--quiet",
                 "--set", "run.duration_s=0.5", "--set", "market.kind=none"]) == 0
    capsys.readouterr()
    assert main(["lab", "grade", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a lab recording (run name 'two_nodes' is not a lab" in err
    assert main(["lab", "grade", str(tmp_path / "missing.h5")]) == 2
    assert "no such recording" in capsys.readouterr().err


def test_missing_shared_data_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("GRIDLOOP_SHARED_DATA", str(tmp_path))
    assert main(["lab", "run", "gpu_smoothing_h100", "--quick", "--out",
                 str(tmp_path / "h100.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "h100_power_calibration.csv.gz: shared recording not found" in err
    assert "GRIDLOOP_SHARED_DATA" in err
    assert not (tmp_path / "h100.h5").exists()


def _lab_copy(src: Path, folder: Path) -> Path:
    """The lab run ``src`` and its variants copied into ``folder``."""
    import shutil

    folder.mkdir()
    for p in src.parent.glob(f"{src.stem}.*"):
        shutil.copy(p, folder / p.name)
    return folder / src.name


def _grade_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(["lab", "grade", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_only_a_finished_stamped_lab_run_is_graded(islanded: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    import h5py

    assert main(["lab", "grade", str(islanded)]) == 0
    capsys.readouterr()
    # stopped with Ctrl-C: incomplete, and never stamped
    stopped = _lab_copy(islanded, tmp_path / "stopped")
    with h5py.File(stopped, "r+") as f:
        f.attrs["complete"] = False
        for key in ("lab", "lab_variant", "lab_quick"):
            del f.attrs[key]
    assert "not a finished lab run of islanded: it is incomplete" in \
        _grade_error([str(stopped)], capsys)
    # finished, but not by lab run (a plain run of the lab's scenario)
    plain = _lab_copy(islanded, tmp_path / "plain")
    with h5py.File(plain, "r+") as f:
        del f.attrs["lab"]
    assert "it is not stamped by gridloop lab run" in _grade_error([str(plain)], capsys)
    # a replay of the lab's main recording
    replayed = tmp_path / "replayed.h5"
    assert main(["replay", str(islanded), "--out", str(replayed), "--quiet"]) == 0
    capsys.readouterr()
    assert f"it is a replay of {islanded.resolve()} (grade the lab run it replays)" in \
        _grade_error([str(replayed)], capsys)


@pytest.mark.parametrize(("edit", "why"), [
    ("main", "it is a main recording"),
    ("incomplete", "it is incomplete"),
    ("other variant", "it is the recording of variant 'high_inertia'"),
    ("full run", "it is a full run and the main recording is quick"),
])
def test_each_variant_file_must_be_that_variants_finished_run(
        islanded: Path, tmp_path: Path, capsys: pytest.CaptureFixture, edit: str,
        why: str) -> None:
    import shutil

    import h5py

    main_path = _lab_copy(islanded, tmp_path / "lab")
    variant = main_path.with_name("isl.low_inertia.h5")
    if edit == "main":
        shutil.copy(main_path, variant)
    elif edit == "other variant":
        shutil.copy(main_path.with_name("isl.high_inertia.h5"), variant)
    with h5py.File(variant, "r+") as f:
        if edit == "incomplete":
            f.attrs["complete"] = False
        if edit == "full run":
            f.attrs["lab_quick"] = False
    err = _grade_error([str(main_path)], capsys)
    assert f"{variant}: not the recording of variant 'low_inertia' of lab islanded: {why}" \
        in err
    assert "(run: gridloop lab run islanded --quick --out" in err


def test_a_directory_as_recording_or_answers_is_one_line(islanded: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert _grade_error([str(tmp_path)], capsys).endswith(
        f"{tmp_path}: a directory; give the main recording of a lab run (RUN.h5)")
    assert _grade_error([str(islanded), "--answers", str(tmp_path)], capsys).endswith(
        f"--answers {tmp_path}: a directory, not an answers file")
