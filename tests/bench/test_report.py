"""``gridloop report``: its output folder (one it cannot create or write, one where it would
replace the recording), figures left by an earlier report, a failed write, a lab whose
variant recordings are missing, a recording with no ticks, and what the figures show."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.cli import main
from bench.recording import open_run
from tests.bench.kit import report_figures
from tests.bench.view_sample import h100_training_trace, run_no_meter, write_sample


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


# -- where the report goes -----------------------------------------------------------------


def _read_only(folder: Path):
    """Make ``folder`` refuse new files for real (chmod, or chattr +i for root); returns
    the undo, or None where this system cannot."""
    import os
    import subprocess

    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    try:
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_report_beside_a_recording_in_a_read_only_folder_says_to_use_out(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It said ``[Errno 1] Operation not permitted: '.../run-report'``."""
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(twin_run, folder / "run.h5")
    (tmp_path / "rw").mkdir()
    undo = _read_only(folder)
    if undo is None:
        pytest.skip("cannot make a folder read-only here (chattr)")
    try:
        assert main(["report", str(folder / "run.h5")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gridloop: error: the report folder {folder / 'run-report'}: "
                              "cannot create the folder (")
        assert err.endswith("); write the report elsewhere with --out DIR\n")
        assert err.count("\n") == 1 and "Errno" not in err
        assert main(["report", str(folder / "run.h5"), "--out", str(folder / "sub")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gridloop: error: --out {folder / 'sub'}: cannot create the "
                              "folder (")
        assert err.endswith("); give another folder with --out DIR\n")
        # the suggestion works
        assert main(["report", str(folder / "run.h5"), "--out", str(tmp_path / "rw")]) == 0
    finally:
        undo()
    assert sorted(p.name for p in folder.iterdir()) == ["run.h5"]


def test_a_report_folder_that_refuses_files_is_one_line_before_any_figure(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    out.mkdir()
    real = tempfile.TemporaryFile

    def refused(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(out))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    assert main(["report", str(twin_run), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"gridloop: error: --out {out}: cannot write into the folder (permission denied); "
        "give another folder with --out DIR\n")
    assert not any(out.iterdir())
    real_mkdir = Path.mkdir

    def not_permitted(self, *args, **kwargs):
        if self == tmp_path / "new":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", not_permitted)
    assert main(["report", str(twin_run), "--out", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err == (
        f"gridloop: error: --out {tmp_path / 'new'}: cannot create the folder (operation not "
        "permitted); give another folder with --out DIR\n")


def test_a_report_never_replaces_or_removes_its_recording(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A recording named like a figure in the report's folder: the report would write over
    it, or remove it as an earlier report's figure."""
    for name in ("power_flows.png", "lateness.png", "summary.txt"):
        rec = tmp_path / name
        shutil.copy(twin_run, rec)
        data = rec.read_bytes()
        assert main(["report", str(rec), "--out", str(tmp_path)]) == 2
        assert capsys.readouterr().err == (
            f"gridloop: error: --out {tmp_path}: the report would replace the recording "
            f"{rec} (it writes {name} there); give another folder with --out DIR\n")
        assert rec.read_bytes() == data
        rec.unlink()
    # through a link as well
    (tmp_path / "soc.png").symlink_to(twin_run)
    assert main(["report", str(twin_run), "--out", str(tmp_path)]) == 2
    assert "the report would replace the recording" in capsys.readouterr().err


def test_a_failed_figure_write_leaves_the_earlier_figure_whole(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    assert main(["report", str(twin_run), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    def disk_full(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    assert main(["report", str(twin_run), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"gridloop: error: {out / 'power_flows.png'}: cannot "
                                       "write the figure (no space left on device)\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no half figure left


# -- what the figures show -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Two nodes with devices (residuals, a tolerance), north metered, south not."""
    path = tmp_path_factory.mktemp("sample") / "sample.h5"
    write_sample(path, h100_training_trace(shared_data))
    return path


@pytest.fixture(scope="module")
def no_meter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_no_meter(tmp_path_factory.mktemp("no_meter"))


@pytest.fixture(scope="module")
def sample_figures(sample: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> dict[str, Figure]:
    return report_figures(sample, tmp_path_factory.mktemp("sample_report"))


@pytest.fixture(scope="module")
def no_meter_figures(no_meter: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> dict[str, Figure]:
    return report_figures(no_meter, tmp_path_factory.mktemp("no_meter_report"))


def _renderer(fig: Figure):
    """A renderer of ``fig`` laid out as it was written (at the report's 110 dpi)."""
    FigureCanvasAgg(fig)
    fig.set_dpi(110)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def test_legends_sit_outside_the_plots(sample_figures: dict[str, Figure],
                                       no_meter_figures: dict[str, Figure]) -> None:
    """The legend (top right, inside) covered the inverter line of the demo and the last
    discharge step of the battery lab."""
    figs = {**sample_figures, **{f"no_meter/{k}": v for k, v in no_meter_figures.items()}}
    checked = 0
    for name, fig in figs.items():
        renderer = _renderer(fig)
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            box = legend.get_window_extent(renderer)
            for other in fig.axes:  # no plotting area under it, its own or another's
                assert not box.overlaps(other.get_window_extent(renderer)), name
            assert fig.bbox.contains(box.x1 - 1, box.y1 - 1), name  # inside the picture
            checked += 1
    assert checked >= 6


def test_power_flows_show_the_grid_of_a_node_without_a_meter(
        sample: Path, no_meter: Path, sample_figures: dict[str, Figure],
        no_meter_figures: dict[str, Figure]) -> None:
    """The summary counts grid in and out from the node's bus where there is no meter; the
    figure had no grid line there."""
    (ax,) = no_meter_figures["power_flows.png"].axes
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert set(lines) == {"battery (battery)", "grid (grid)"}
    with open_run(no_meter) as run:
        np.testing.assert_allclose(lines["grid (grid)"], run.signal("solo", "grid", "p_w") / 1e3)
    north, south = sample_figures["power_flows.png"].axes
    labels = [{line.get_label() for line in ax.get_lines()} for ax in (north, south)]
    assert "meter (meter)" in labels[0] and "grid (grid)" not in labels[0]  # counted once
    assert labels[1] == {"battery (battery)", "grid (grid)", "rack (gpu_rack)"}
    with open_run(sample) as run:
        south_grid = {line.get_label(): line.get_ydata() for line in south.get_lines()}
        np.testing.assert_allclose(south_grid["grid (grid)"],
                                   run.signal("south", "grid", "p_w") / 1e3)


def test_the_residuals_title_clears_the_plots_and_units_read_the_same(
        sample_figures: dict[str, Figure]) -> None:
    """The title overlapped the first plot, and the SOC residual was labelled ``soc []``."""
    fig = sample_figures["residuals.png"]
    renderer = _renderer(fig)
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert not title.overlaps(ax.get_tightbbox(renderer))
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "south.battery\nsoc [–]" in labels and not any("[]" in x for x in labels)
    assert sample_figures["soc.png"].axes[0].get_ylabel() == "SOC [%]"
