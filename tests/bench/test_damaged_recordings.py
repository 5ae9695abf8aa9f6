"""Recordings whose bytes were damaged, or whose per-tick datasets disagree in length: every
command that reads one ends in one line naming the file and the damaged part (exit 2), never
a traceback; a crashed writer's uneven datasets are read to their common length, said once."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import h5py
import pytest

from bench.cli import main
from bench.errors import RecordingError
from bench.recording import RecordingWarning, open_run

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of the two-node scenario on emulated devices: a recording every command
    reads (calibrate needs a device's measurements, replay a scenario)."""
    out = tmp_path_factory.mktemp("emulated") / "emu.h5"
    assert main(["run", str(SCENARIO), "--out", str(out), "--quiet",
                 "--set", "run.duration_s=1", "--set", "market.kind=none"]) == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes of ``path`` in place, as a failing disk or a bad copy would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _header_damaged(src: Path, dst: Path, obj: str) -> Path:
    """``src`` with 8 bytes 0xff inside the object header of ``obj`` (its checksum fails)."""
    with h5py.File(src, "r") as f:
        addr = h5py.h5o.get_info(f[obj].id).addr
    _copy(src, dst)
    _overwrite(dst, addr + 12, b"\xff" * 8)
    return dst


def _commands(path: Path, tmp: Path) -> dict[str, list[str]]:
    """The four commands that read a recording, each with an output of its own."""
    return {"report": ["report", str(path), "--out", str(tmp / "report")],
            "view": ["view", str(path), "--screenshot", str(tmp / "view.png")],
            "replay": ["replay", str(path), "--out", str(tmp / "replay.h5"), "--quiet"],
            "calibrate": ["calibrate", str(path), "--asset", "north.battery",
                          "--out", str(tmp / "cal.toml")]}


@pytest.mark.parametrize("command", ["report", "view", "replay", "calibrate"])
def test_a_damaged_object_header_is_one_line_naming_file_and_object(
        emulated: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture) -> None:
    """What the analyst's bad_meta.h5 was: a traceback (RuntimeError from the visit behind
    ``len(run)``) and exit 1 from all four."""
    bad = _header_damaged(emulated, tmp_path / "bad_meta.h5", "nodes/north/battery")
    argv = _commands(bad, tmp_path)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gridloop: error: {bad}: damaged: /nodes/north/battery cannot be "
                          "read (") and "checksum" in err
    assert err.count("\n") == 1
    assert not any(p.name != "bad_meta.h5" for p in tmp_path.iterdir())  # nothing written


def test_the_damaged_object_is_named_wherever_it_is(twin_run: Path, tmp_path: Path) -> None:
    for obj in ("nodes/south/rack/p_w", "quality", "events"):
        bad = _header_damaged(twin_run, tmp_path / f"{obj.replace('/', '_')}.h5", obj)
        with pytest.raises(RecordingError, match=rf"^{bad}: damaged: /{obj} cannot be read "
                                                 r"\(.*checksum.*\)$"):
            open_run(bad)


def test_a_chunk_that_does_not_decompress_is_one_line_naming_the_dataset(
        emulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Data is read only when asked for: the read of the damaged chunk says it."""
    bad = _copy(emulated, tmp_path / "bad_chunk.h5")
    with h5py.File(bad, "r") as f:
        chunk = f["nodes/north/battery/soc"].id.get_chunk_info(0)
    _overwrite(bad, chunk.byte_offset, b"\xff" * 4)  # the gzip stream's header
    with open_run(bad) as run:
        run.signal("north", "battery", "voltage_v")  # the rest reads
        with pytest.raises(RecordingError, match=rf"^{bad}: damaged: "
                                                 r"/nodes/north/battery/soc cannot be read \("):
            run.signal("north", "battery", "soc")
    for argv in (["report", str(bad), "--out", str(tmp_path / "report")],
                 ["calibrate", str(bad), "--asset", "north.battery",
                  "--out", str(tmp_path / "cal.toml")],
                 ["view", str(bad), "--screenshot", str(tmp_path / "view.png")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gridloop: error: {bad}: damaged: /nodes/north/battery/soc "
                              "cannot be read (") and err.count("\n") == 1
    assert not (tmp_path / "view.png").exists()


def test_a_view_that_meets_a_damaged_chunk_later_stops_reading_and_says_it_once(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The view reads a dataset no panel draws only for the cursor's read-out: moving the
    cursor into a damaged chunk was a traceback on every frame of the window's timer; it
    now stops the frames and says the one line on the status bar and on stderr."""
    from PySide6 import QtWidgets

    from bench.view.app import ViewWindow, application

    good = tmp_path / "long.h5"  # two chunks of ticks: the cursor opens on the second
    assert main(["run", str(SCENARIO), "--mode", "twin", "--out", str(good), "--quiet",
                 "--set", "run.duration_s=210", "--set", "market.kind=none"]) == 0
    bad = _copy(good, tmp_path / "bad_later.h5")
    with h5py.File(bad, "r") as f:
        assert f["time"].shape[0] > f["time"].chunks[0]
        chunk = f["nodes/north/battery/temp_jig_c"].id.get_chunk_info(0)
    _overwrite(bad, chunk.byte_offset, b"\xff" * 4)
    capsys.readouterr()
    application(offscreen=True)
    win = ViewWindow(bad)
    try:
        assert win.failed is None and win.cursor_values()  # the last chunk reads
        win.set_cursor(1.0)
        deadline = time.monotonic() + 10.0
        while win.failed is None and time.monotonic() < deadline:
            QtWidgets.QApplication.processEvents()
            time.sleep(0.01)
        line = (f"{bad}: damaged: /nodes/north/battery/temp_jig_c cannot be read "
                "(filter returned failure during read)")
        assert win.failed == line
        assert not win.timer.isActive()
        assert win.status.text() == f"stopped: {line}"
        assert capsys.readouterr().err == f"gridloop: error: {line}\n"
    finally:
        win.close()
        win.run.close()


def _one_short(src: Path, dst: Path, complete: bool) -> tuple[Path, int]:
    """``src`` with ``nodes/north/battery/soc`` cut to half its rows (the analyst's
    shortq.h5), marked complete or not; returns it and the full length."""
    _copy(src, dst)
    with h5py.File(dst, "r+") as f:
        full = f["time"].shape[0]
        f["nodes/north/battery/soc"].resize((full // 2,))
        f.attrs["complete"] = complete
    return dst, full


@pytest.mark.parametrize("command", ["report", "view", "replay", "calibrate"])
def test_a_complete_recording_with_a_short_dataset_is_refused_naming_it(
        emulated: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture) -> None:
    """The writer marks a recording complete after its last batch: datasets of different
    lengths there are damage, not a run cut short (they silently shortened everything)."""
    short, full = _one_short(emulated, tmp_path / "shortq.h5", complete=True)
    assert main(_commands(short, tmp_path)[command]) == 2
    assert capsys.readouterr().err == (
        f"gridloop: error: {short}: damaged: /nodes/north/battery/soc holds {full // 2} ticks "
        f"where the other per-tick datasets hold {full}, in a recording marked complete\n")


def test_an_incomplete_recordings_uneven_datasets_are_read_to_their_common_length_and_said(
        emulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A writer killed between two resizes of one batch leaves datasets of two lengths: the
    recording reads to the shorter, and says so in one line."""
    short, full = _one_short(emulated, tmp_path / "uneven.h5", complete=False)
    said = (f"{short}: /nodes/north/battery/soc holds {full // 2} ticks where the other "
            f"per-tick datasets hold {full} (the writer stopped between two of them): "
            f"reading the {full // 2} ticks all hold")
    with open_run(short) as run, pytest.warns(RecordingWarning) as caught:
        assert len(run) == full // 2 == len(run.signal("north", "rack", "p_w"))
    assert [str(w.message) for w in caught] == [said]
    with pytest.warns(UserWarning) as caught:  # and the report's, of a spectrum too short
        assert main(["report", str(short), "--out", str(tmp_path / "report")]) == 0
    assert [str(w.message) for w in caught if w.category is RecordingWarning] == [said]
    assert f"\n{full // 2} ticks, " in capsys.readouterr().out
    # following a live run, a reader sees this between any two resizes: nothing to say
    with open_run(short, follow=True) as run, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(run) == full // 2
