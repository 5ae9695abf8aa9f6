"""``gridloop report``: its output folder, figures left by an earlier report, a lab whose
variant recordings are missing, and a recording with no ticks."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from bench.cli import main


def test_out_that_is_a_file_is_one_line(twin_run: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for out, message in ((afile, "exists and is not a directory"),
                         (afile / "sub", "cannot create the folder")):
        assert main(["report", str(twin_run), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"gridloop: error: --out {out}: {message}" + (
            " (a file is in the way)" if "sub" in str(out) else "")
    assert afile.read_text() == "mine\n"


def test_a_second_report_into_a_folder_removes_the_first_ones_figures(
        islanded: Path, twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    assert main(["report", str(islanded), "--out", str(out)]) == 0
    assert (out / "islanded_frequency.png").is_file() and (out / "frequency.png").is_file()
    (out / "notes.png").write_bytes(b"not gridloop's")
    capsys.readouterr()
    assert main(["report", str(twin_run), "--out", str(out)]) == 0
    wrote = {Path(x.removeprefix("wrote ")).name
             for x in capsys.readouterr().out.splitlines() if x.startswith("wrote ")}
    assert {p.name for p in out.iterdir()} == wrote | {"notes.png"}
    assert not (out / "islanded_frequency.png").exists()


def test_a_lab_recording_without_its_variants_reports_without_the_lab_figures(
        islanded: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lone = tmp_path / "isl.h5"
    shutil.copy(islanded, lone)
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match=r"no figures of lab islanded: .*isl\.low_inertia\.h5: "
                                         r"missing recording of variant 'low_inertia'"):
        assert main(["report", str(lone), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ticks, " in text and f"wrote {out / 'summary.txt'}" in text
    assert (out / "frequency.png").is_file() and not (out / "islanded_frequency.png").exists()


def test_a_recording_with_no_ticks_is_one_line_before_any_figure(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """What a run killed before its first tick leaves: every dataset empty."""
    empty = tmp_path / "empty.h5"
    shutil.copy(twin_run, empty)
    with h5py.File(empty, "r+") as f:
        def clear(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.maxshape[0] is None:
                obj.resize((0,))
        f.visititems(clear)
    out = tmp_path / "report"
    assert main(["report", str(empty), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == \
        f"gridloop: error: {empty}: the recording has no ticks"
    assert not out.exists()
