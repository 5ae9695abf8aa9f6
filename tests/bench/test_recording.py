"""Reading recordings a writer left uneven or a person edited: one length for every signal,
one line for what is missing or wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.errors import RecordingError
from bench.recording import RecordingWarning, open_run


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def test_signals_are_trimmed_to_the_length_every_dataset_reached(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A live or crashed writer resizes datasets one after the other (a recording it left
    is not marked complete; a complete one that is uneven is damaged: see
    test_damaged_recordings)."""
    path = _copy(twin_run, tmp_path / "uneven.h5")
    with h5py.File(path, "r+") as f:
        full = f["time"].shape[0]
        f["nodes/north/battery/soc"].resize((full // 2,))
        f.attrs["complete"] = False
    with open_run(path) as run, pytest.warns(RecordingWarning, match="reading the"):
        assert len(run) == full // 2
        assert len(run.time) == len(run.signal("north", "battery", "soc")) == full // 2
        assert len(run.signal("south", "rack", "p_w")) == full // 2
        assert len(run.wall) == full // 2
    with pytest.warns(RecordingWarning):
        assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 0
    assert f"\n{full // 2} ticks, " in capsys.readouterr().out
    assert (tmp_path / "report" / "soc.png").is_file()


def test_tables_of_their_own_length_do_not_shorten_the_run(twin_run: Path,
                                                           tmp_path: Path) -> None:
    """``/capture/<device>/registers`` and the market tables have rows of their own."""
    path = _copy(twin_run, tmp_path / "captured.h5")
    with h5py.File(path, "r+") as f:
        full = f["time"].shape[0]
        f.create_dataset("capture/lab/registers", data=np.arange(3, dtype="<u2"))
    with open_run(path) as run:
        assert len(run) == full


def test_an_edited_recording_is_one_line_naming_file_and_attribute(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    version = _copy(twin_run, tmp_path / "version.h5")
    with h5py.File(version, "r+") as f:
        f.attrs["format_version"] = "one"
    with pytest.raises(RecordingError, match=r"version\.h5: format_version 'one' is not a "
                                             r"version number"):
        open_run(version)
    no_dt = _copy(twin_run, tmp_path / "no_dt.h5")
    with h5py.File(no_dt, "r+") as f:
        del f.attrs["dt"]
    out = tmp_path / "report"
    assert main(["report", str(no_dt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gridloop: error: {no_dt}: the recording has no 'dt' attribute (its tick " \
                  "length)"
    assert not out.exists()  # refused before any figure


def test_the_view_draws_a_recording_without_wall_clock_or_timing(twin_run: Path,
                                                                 tmp_path: Path) -> None:
    from bench.view.data import Follower

    path = _copy(twin_run, tmp_path / "no_timing.h5")
    with h5py.File(path, "r+") as f:
        del f["wall"], f["timing"]
    with open_run(path) as run:
        data = Follower(run)
        wall = data.series("wall")
        assert data.poll() == len(run) and len(wall) == len(run)
        assert np.isnan(wall.values).all()
        late = data.series("timing/lateness")  # asked for after the first poll
        assert len(late) == len(run) and np.isnan(late.values).all()
        assert data.poll() == 0
