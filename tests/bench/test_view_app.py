"""The live view window, offscreen: panels with the recording's data, cursor, pause, zoom,
export, screenshots, following a run another process writes, and the in-process live view."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from bench.cli import main
from bench.errors import ScenarioError
from bench.recorder import Recorder
from bench.recording import open_run
from bench.view.app import ViewWindow, application, show_live
from bench.view.panels import (
    BatteryPanel,
    FrequencyPanel,
    HealthPanel,
    MarketPanel,
    PowerFlowPanel,
    RackPanel,
    ResidualPanel,
    TimingPanel,
)
from tests.bench.view_sample import (
    TRAIN_STEP_HZ,
    Sample,
    h100_training_trace,
    run_no_meter,
    write_sample,
)

pytestmark = pytest.mark.qt
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trace(shared_data: Path) -> np.ndarray:
    return h100_training_trace(shared_data)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, trace: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("view") / "sample.h5"
    write_sample(path, trace)
    return path


@pytest.fixture
def windows():
    """Opens view windows and closes every one of them after the test."""
    application(offscreen=True)
    opened: list[ViewWindow] = []

    def open_window(*args, **kwargs) -> ViewWindow:
        win = ViewWindow(*args, **kwargs)
        opened.append(win)
        return win

    yield open_window
    for win in opened:
        win.close()
        win.run.close()


def _pixels(image: QtGui.QImage) -> np.ndarray:
    image = image.convertToFormat(QtGui.QImage.Format.Format_RGB32)
    raw = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    # a copy: the array must not outlive the image's memory
    return raw.reshape(image.height(), image.bytesPerLine() // 4, 4)[:, : image.width(), :3].copy()


def _drawn_pixels(panel) -> int:
    """Pixels that the panel's data items paint (the panel with and without them)."""
    app = application()
    with_data = _pixels(panel.grab().toImage())
    for item in panel.items.values():
        item.setVisible(False)
    app.processEvents()
    without = _pixels(panel.grab().toImage())
    for item in panel.items.values():
        item.setVisible(True)
    app.processEvents()
    return int(np.any(with_data != without, axis=2).sum())


def test_window_opens_with_every_panel_drawing_the_recording(recording: Path, windows) -> None:
    win = windows(recording)
    win.resize(2100, 1200)
    win.show()
    application().processEvents()
    kinds = [type(p) for p in win.panels]
    assert kinds == [PowerFlowPanel, BatteryPanel, RackPanel, ResidualPanel,
                     PowerFlowPanel, BatteryPanel, RackPanel, ResidualPanel,
                     FrequencyPanel, TimingPanel, HealthPanel, MarketPanel]
    for panel in win.panels:
        drawn = panel.drawn()
        assert drawn and all(n > 0 for n in drawn.values()), (type(panel).__name__, drawn)
        assert _drawn_pixels(panel) > 300, type(panel).__name__
    assert win.time_range()[0] <= 0.0 and win.time_range()[1] >= 89.98  # a finished run: all


def test_curves_hold_the_recorded_values(recording: Path, windows) -> None:
    win = windows(recording)
    run = open_run(recording)
    t = run.time
    north_flow, north_battery, north_rack, north_residual = win.rows[0]
    # the stack: sources above zero end at PV + battery discharge + grid import
    x, top = north_flow.items["grid import"].getOriginalDataset()
    np.testing.assert_array_equal(x, t)
    pv = run.signal("north", "inverter", "p_ac_w")
    bat = run.signal("north", "battery", "p_w")
    grid = run.signal("north", "meter", "p_w")
    np.testing.assert_allclose(top, pv + np.clip(bat, 0, None) + np.clip(grid, 0, None))
    _, racks = north_flow.items["GPU racks"].getOriginalDataset()
    np.testing.assert_allclose(racks, -run.signal("north", "rack", "p_w"))
    _, balance = north_flow.items["grid + PV + battery − racks"].getOriginalDataset()
    ok = np.isfinite(balance)
    assert ok.sum() == len(t) - 50  # the battery's 1 s timeout leaves a gap, not a zero
    np.testing.assert_allclose(balance[ok], 0.0, atol=1e-6)
    _, soc = north_battery.items["battery SOC"].getOriginalDataset()
    np.testing.assert_allclose(soc, 100 * run.signal("north", "battery", "soc"))
    _, p = north_rack.items["rack"].getOriginalDataset()
    np.testing.assert_array_equal(p, run.signal("north", "rack", "p_w"))
    # the residual shown by default is the one with a tolerance, with its band
    assert north_residual.combo.currentText() == "battery.voltage_v"
    _, r = north_residual.items["residual"].getOriginalDataset()
    np.testing.assert_array_equal(r, run.signal("north", "battery", "voltage_v", "residual"))
    assert north_residual.band.getRegion() == (-0.5, 0.5)
    assert "outside 11.1%" in north_residual.outside.text()  # 60-70 s of 90 s beyond ±0.5 V
    north_residual.combo.setCurrentText("battery.p_w")
    _, r = north_residual.items["residual"].getOriginalDataset()
    np.testing.assert_array_equal(r, run.signal("north", "battery", "p_w", "residual"))
    assert not north_residual.band.isVisible()
    assert north_residual.outside.text() == "no tolerance set"
    run.close()


def test_rack_spectrum_finds_the_training_step(recording: Path, windows) -> None:
    win = windows(recording)
    rack = win.rows[0][2]
    assert rack.step_hz == pytest.approx(TRAIN_STEP_HZ, rel=0.03)
    assert "step 2.00 s" in rack.psd.titleLabel.text


def test_health_timing_and_market_panels(recording: Path, windows) -> None:
    win = windows(recording)
    frequency, timing, health, market = win.rows[-1]
    _, f = frequency.items["south.grid"].getOriginalDataset()
    with open_run(recording) as run:
        np.testing.assert_array_equal(f, run.signal("south", "grid", "freq_hz"))
    assert timing.counts.sum() == 4500 and timing.late == 1
    assert timing.max_ms == pytest.approx(3.1)
    _, rtf = timing.items["real-time factor"].getOriginalDataset()
    np.testing.assert_allclose(rtf[60:], 1.0, atol=0.01)  # wall = t + lateness
    # the quality image: north.battery timed out at 40-41 s (flag 2 in its row)
    image = health.image.image
    assert [a.key for a in health.assets] == [
        "north.battery", "north.inverter", "north.meter", "north.pv", "north.rack",
        "south.battery", "south.grid", "south.rack"]
    # at most 1500 columns, each the worst flag of the ticks it covers
    assert image.shape == (8, 1500)
    assert image[0].max() == 2 and image[5].max() == 1  # south.battery goes stale
    assert image[[1, 2, 3, 4, 6, 7]].max() == 0
    spots = health.markers.data
    assert min(spots["data"]).startswith("30.00 s  catch_up")
    ys = {d.split()[2].rstrip(":"): y for d, y in zip(spots["data"], spots["y"], strict=True)}
    assert ys == {"catch_up": 8.5, "device_timeout": 0.5, "fault_cell_imbalance": 5.5}
    win.set_cursor(40.9)
    win.frame()
    assert health.row_labels[0] == "north.battery · 0.9 s ago"  # last good one at 39.98 s
    assert health.row_labels[1] == "north.inverter · 0.0 s ago"
    assert health.row_labels[-1] == "run"
    x, y = market.items["trades"].getData()
    np.testing.assert_array_equal(x, [15.0, 30.0, 45.0, 60.0, 75.0])
    np.testing.assert_allclose(y, [(320 + i) // 2 / 1000 for i in range(5)])  # per kWh
    assert len(market.items["bids"].data) == len(market.items["asks"].data) == 5
    x, settled = market.items["settled south"].getOriginalDataset()
    assert settled[-1] < 0 < market.items["settled north"].getOriginalDataset()[1][-1]


def test_cursor_reads_every_signal_at_one_instant(recording: Path, windows) -> None:
    win = windows(recording)
    win.set_cursor(40.5)
    values = win.cursor_values()
    run = open_run(recording)
    k = 2025  # 40.5 s at dt = 0.02 s
    assert values["time"] == pytest.approx(40.5)
    for path in ("nodes/south/grid/freq_hz", "nodes/north/rack/twin/p_w",
                 "nodes/south/battery/residual/soc", "nodes/north/battery/setpoint/p_set_w",
                 "timing/rtt/north/meter", "quality/north/battery", "wall"):
        assert values[path] == pytest.approx(run.file[path][k], nan_ok=True), path
    assert np.isnan(values["nodes/north/battery/p_w"])  # timed out then
    assert len(values) == len(win.data.per_tick_paths()) + 1
    win.frame()
    items = win.readout.findItems("quality", QtCore.Qt.MatchFlag.MatchRecursive)
    assert "timeout" in [i.text(1) for i in items]
    # between two ticks the value of the earlier one holds
    win.set_cursor(40.519)
    assert win.cursor_values()["time"] == pytest.approx(40.5)
    assert all(line.value() == 40.519 for line in win._cursors)
    run.close()


def test_zoom_pause_and_fit(recording: Path, windows) -> None:
    win = windows(recording)
    win.zoom(10.0, 20.0)
    for panel in win.panels:
        for plot in panel.time_plots:
            assert plot.viewRange()[0] == pytest.approx([10.0, 20.0])
    # the next frame gives the curves the ticks of the view and half a width either side
    win.frame()
    x, _ = win.rows[0][2].items["rack"].getOriginalDataset()
    assert x[0] == pytest.approx(4.98) and x[-1] == pytest.approx(25.02)
    with pytest.raises(Exception, match="must come after"):
        win.zoom(5.0, 5.0)
    win.set_paused(True)
    assert win.paused and not win.timer.isActive() and "paused" in win.status.text()
    win.set_paused(False)
    assert win.timer.isActive()
    win.fit()
    assert win.time_range()[0] < 0.1 and win.time_range()[1] > 89.9


def test_export_png_and_svg(recording: Path, windows, tmp_path: Path) -> None:
    win = windows(recording)
    win.resize(1800, 1000)
    png = win.export_png(tmp_path / "view.png")
    image = QtGui.QImage(str(png))
    assert image.width() == win.panel_area.width() and image.height() > 500
    svg = win.export_svg(tmp_path / "view.svg")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    paths = [e for e in root.iter() if e.tag.endswith(("path", "polyline"))]
    assert len(paths) > 100  # curves stay vectors
    assert "north · power flows" in svg.read_text()
    with pytest.raises(Exception, match="cannot write"):
        win.export_svg(tmp_path / "missing" / "view.svg")
    with pytest.raises(Exception, match="cannot write"):
        win.export_png(tmp_path / "missing" / "view.png")


def test_screenshot_panels_are_not_blank(recording: Path, windows, tmp_path: Path) -> None:
    win = windows(recording)
    out = win.save_screenshot(tmp_path / "shot.png")
    shot = _pixels(QtGui.QImage(str(out)))
    assert win.scroll.verticalScrollBar().maximum() == 0  # every panel in the picture
    for panel in win.panels:
        corner = panel.graphics.mapTo(win, QtCore.QPoint(0, 0))
        region = shot[corner.y(): corner.y() + panel.graphics.height(),
                      corner.x(): corner.x() + panel.graphics.width()]
        colour = region.max(axis=2).astype(int) - region.min(axis=2)
        # data is drawn in colour; axes, text and background are grey
        assert (colour > 60).sum() > 1000, type(panel).__name__


def test_cli_screenshot_at_a_time(recording: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.png"
    assert main(["view", str(recording), "--screenshot", str(out), "--at", "65"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    image = QtGui.QImage(str(out))
    assert image.width() >= 2000 and image.height() >= 900
    pixels = _pixels(image).reshape(-1, 3)
    assert len(np.unique(pixels[::7], axis=0)) > 50


@pytest.mark.parametrize("argv, message", [
    (["--at", "500"], "--at 500: outside the recording (0 to 89.98 s)"),
    (["--at", "nan"], "--at nan: outside the recording"),
])
def test_cli_rejects_a_time_outside_the_run(recording: Path, tmp_path: Path, capsys,
                                            argv: list[str], message: str) -> None:
    code = main(["view", str(recording), "--screenshot", str(tmp_path / "x.png"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_cli_reports_an_unwritable_screenshot_in_one_line(recording: Path, tmp_path: Path,
                                                          capsys) -> None:
    out = tmp_path / "missing" / "shot.png"
    assert main(["view", str(recording), "--screenshot", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: cannot write the image" in err and err.count("\n") == 1


def test_cli_reports_bad_recordings_in_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    for path, message in ((tmp_path / "none.h5", "no such recording"),
                          (tmp_path / "junk.h5", "not a readable HDF5 file")):
        code = main(["view", str(path), "--screenshot", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1


def test_cli_refuses_to_open_a_window_without_a_display(monkeypatch) -> None:
    from bench.view import app

    monkeypatch.setattr(QtWidgets.QApplication, "instance", staticmethod(lambda: None))
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(app.BenchError, match="no display"):
        app.application()


def test_cli_refuses_a_window_on_no_screen(recording: Path, tmp_path: Path, capsys,
                                           monkeypatch) -> None:
    """Told to render offscreen (as CI is), a window would wait for a close that never
    comes: refused at once, the run not started."""
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert main(["view", str(recording)]) == 2
    err = capsys.readouterr().err
    assert "QT_QPA_PLATFORM=offscreen: the window would open on no screen" in err
    assert "--screenshot OUT.png" in err and err.count("\n") == 1
    scenario = Path(__file__).with_name("scenarios") / "two_nodes.toml"
    out = tmp_path / "r.h5"
    assert main(["run", str(scenario), "--view", "--mode", "twin", "--out", str(out)]) == 2
    assert "never be closed" in capsys.readouterr().err and not out.exists()


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from bench.recorder import Recorder
    from tests.bench.view_sample import Sample, h100_training_trace
    s = Sample(h100_training_trace(Path(sys.argv[2])), duration_s=20.0)
    with Recorder(sys.argv[1], s.layout, s.attrs, flush_s=0.05) as rec:
        s.write(rec, 0, 400)
        rec.flush()
        print("ready", flush=True)
        sys.stdin.readline()
        s.write(rec, 400, 1000)
        rec.flush()
        print("more", flush=True)
        sys.stdin.readline()
""")


def _until(predicate, timeout_s: float = 10.0) -> None:
    app = application()
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        app.processEvents()
        time.sleep(0.01)


def test_follow_picks_up_ticks_another_process_writes(tmp_path: Path, shared_data: Path,
                                                      windows) -> None:
    path = tmp_path / "live.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(shared_data)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        win = windows(path, follow=True, window_s=5.0)
        _until(lambda: win.data.n == 400)
        frames = win.frames
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "more"
        _until(lambda: win.data.n == 1000)  # the window's own timer reads them
        assert win.frames > frames
        # the live window: 5 s with the newest tick in its last quarter, the cursor on it
        t0, t1 = win.time_range()
        assert t1 - t0 == pytest.approx(5.0) and t0 + 3.75 <= 19.98 <= t1
        assert win.cursor_time == pytest.approx(19.98)
        # the curves hold the ticks around the view (clipped to it), up to the newest
        rack = win.rows[1][2]
        x, p = rack.items["rack"].getOriginalDataset()
        assert x[-1] == pytest.approx(19.98) and x[0] <= t0 - 2.5 < x[1]
        proc.stdin.write("end\n")
        proc.stdin.flush()
        proc.wait(10)
        run = open_run(path)
        np.testing.assert_array_equal(p, run.signal("south", "rack", "p_w")[rack.rows])
        np.testing.assert_array_equal(x, run.time[rack.rows])
        run.close()
        # zooming by hand stops the live window from scrolling
        win.live = True
        win.rows[0][0].time_plots[0].getViewBox().sigRangeChangedManually.emit([True, False])
        assert not win.live
    finally:
        proc.kill()
        proc.wait()


def test_show_live_runs_the_bench_in_a_thread_and_follows_it(tmp_path: Path,
                                                             trace: np.ndarray) -> None:
    app = application(offscreen=True)
    path = tmp_path / "run.h5"
    path.write_bytes(b"an older recording at the same path")
    sample = Sample(trace, duration_s=10.0)
    threads = []

    def run() -> None:
        threads.append(threading.current_thread())
        with Recorder(path, sample.layout, sample.attrs, flush_s=0.02) as rec:
            for k in range(0, sample.n, 50):
                sample.write(rec, k, k + 50)
                rec.flush()
                time.sleep(0.01)

    seen = {}

    def close_when_done() -> None:
        wins = [w for w in app.topLevelWidgets()
                if isinstance(w, ViewWindow) and w.isVisible()]
        if wins and wins[0].data.n == sample.n:
            seen["n"] = wins[0].data.n
            seen["follow"] = wins[0].follow
            wins[0].close()
        else:
            QtCore.QTimer.singleShot(20, close_when_done)

    QtCore.QTimer.singleShot(0, close_when_done)
    assert show_live(path, run) == 0
    assert seen == {"n": 500, "follow": True}
    assert threads[0] is not threading.main_thread()


def test_show_live_raises_the_runs_error(tmp_path: Path) -> None:
    application(offscreen=True)

    def fail() -> None:
        raise ScenarioError("demo.toml:3: run.dt_s: must be positive")

    with pytest.raises(ScenarioError, match="dt_s"):
        show_live(tmp_path / "never.h5", fail)


# -- screenshots never destroy what they refuse ------------------------------------------


def _truncated(src: Path, dst: Path, ticks: int) -> Path:
    """A copy of ``src`` cut to its first ``ticks`` ticks (zero: what a run killed before
    its first tick leaves)."""
    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        def cut(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.maxshape[0] is None:
                obj.resize((min(ticks, obj.shape[0]),))
        f.visititems(cut)
    return dst


@pytest.fixture(scope="module")
def empty_recording(tmp_path_factory: pytest.TempPathFactory, recording: Path) -> Path:
    return _truncated(recording, tmp_path_factory.mktemp("empty") / "empty.h5", 0)


@pytest.fixture(scope="module")
def short_recording(tmp_path_factory: pytest.TempPathFactory, recording: Path) -> Path:
    """Ten ticks: too few for a spectrum."""
    return _truncated(recording, tmp_path_factory.mktemp("short") / "short.h5", 10)


def test_a_screenshot_path_that_is_no_image_is_refused_before_anything_is_written(
        recording: Path, tmp_path: Path, capsys) -> None:
    """``--screenshot`` onto the recording itself, a text file or another recording emptied
    the file and then said it could not write the image."""
    viewed = tmp_path / "viewed.h5"
    shutil.copy(recording, viewed)
    other = tmp_path / "other.h5"
    shutil.copy(recording, other)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    before = {p: p.read_bytes() for p in (viewed, other, notes)}
    for out, message in ((viewed, "'.h5' is not an image format"),
                         (other, "'.h5' is not an image format"),
                         (notes, "'.txt' is not an image format"),
                         (tmp_path / "noext", "no image extension")):
        assert main(["view", str(viewed), "--screenshot", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"gridloop: error: --screenshot {out}: {message}; give a file ending " \
                      "in .png, .jpg, .bmp, .tif, .webp\n"
    assert {p: p.read_bytes() for p in (viewed, other, notes)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other.h5", "viewed.h5"]


def test_a_screenshot_onto_the_recording_through_a_link_is_refused(
        recording: Path, tmp_path: Path, capsys) -> None:
    viewed = tmp_path / "viewed.h5"
    shutil.copy(recording, viewed)
    size = viewed.stat().st_size
    (tmp_path / "hard.png").hardlink_to(viewed)
    (tmp_path / "soft.png").symlink_to(viewed)
    for name in ("hard.png", "soft.png"):
        out = tmp_path / name
        assert main(["view", str(viewed), "--screenshot", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == (f"gridloop: error: --screenshot {out}: that is the recording being "
                       f"viewed ({viewed}); give another file\n")
    assert viewed.stat().st_size == size
    with open_run(viewed) as run:
        assert len(run) == 4500


def test_a_failed_image_write_leaves_the_earlier_image_whole(
        recording: Path, windows, tmp_path: Path, monkeypatch) -> None:
    """The image goes to a new file beside the target, renamed over it only once written."""
    win = windows(recording)
    out = win.save_screenshot(tmp_path / "shot.png")
    first = out.read_bytes()

    def half_written(self, name, *args) -> bool:  # what a full disk does to Qt's writer
        Path(name).write_bytes(b"\x89PNG half")
        return False

    monkeypatch.setattr(QtGui.QPixmap, "save", half_written)
    for write in (win.save_screenshot, win.export_png):
        with pytest.raises(Exception, match=f"{out}: cannot write the"):
            write(out)
        assert out.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["shot.png"]  # no temporary file left
    monkeypatch.undo()
    # a new image replaces it whole, with the mode the old file had
    out.chmod(0o640)
    win.set_cursor(20.0)
    win.save_screenshot(out)
    assert out.read_bytes() != first and QtGui.QImage(str(out)).width() > 1000
    assert out.stat().st_mode & 0o777 == 0o640
    with pytest.raises(Exception, match="that is the recording being viewed"):
        win.export_svg(recording)


# -- a recording with no ticks -------------------------------------------------------------


def test_a_recording_with_no_ticks_is_one_line_as_in_report(
        empty_recording: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """A run killed before its first tick: the screenshot was an empty window and exit 0."""
    out = tmp_path / "shot.png"
    for follow in ([], ["--follow"]):
        assert main(["view", str(empty_recording), "--screenshot", str(out), *follow]) == 2
        assert capsys.readouterr().err == \
            f"gridloop: error: {empty_recording}: the recording has no ticks\n"
        assert not out.exists()
    # the interactive window refuses it too, before it opens
    from bench.view import app

    monkeypatch.setattr(app, "require_screen", lambda instead: None)
    monkeypatch.setattr(app, "_until_closed", lambda win: pytest.fail("the window opened"))
    assert main(["view", str(empty_recording)]) == 2
    assert capsys.readouterr().err == \
        f"gridloop: error: {empty_recording}: the recording has no ticks\n"


def test_following_a_recording_with_no_ticks_yet_waits_for_them(
        empty_recording: Path, windows) -> None:
    """A live view of a run still starting keeps its window open for the first ticks."""
    win = windows(empty_recording, follow=True)
    assert win.data.n == 0 and win.follow
    assert win.frame() == 0
    rack = win.rows[0][2]
    assert "no spectrum yet" in rack.psd.titleLabel.text and not rack.peak.isVisible()


# -- what the picture shows ----------------------------------------------------------------


def _tick_texts(axis) -> list[tuple[QtCore.QRectF, str]]:
    """The tick labels an axis draws now, in its own coordinates."""
    image = QtGui.QImage(8, 8, QtGui.QImage.Format.Format_RGB32)
    painter = QtGui.QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [(rect, text) for rect, _, text in specs[2]] if specs else []


def _check_axes(panel) -> None:
    """Every axis of the panel has tick labels that neither overlap one another nor the
    axis title, and stacked time plots line their time axes up."""
    name = type(panel).__name__
    plots = [i for i in panel.graphics.ci.items if isinstance(i, pg.PlotItem)]
    for plot in plots:
        for side in ("left", "bottom"):
            axis = plot.getAxis(side)
            texts = _tick_texts(axis)
            assert len(texts) >= 2, (name, side, axis.labelText)
            rects = sorted((r for r, _ in texts), key=lambda r: (r.top(), r.left()))
            for a, b in itertools.pairwise(rects):
                assert not a.intersects(b), (name, side, [t for _, t in texts])
            if axis.label.isVisible() and axis.labelText:
                title = axis.label.mapRectToParent(axis.label.boundingRect())
                # the title's box has a margin: compare with the line of text it holds
                inner = title.adjusted(0, 3, 0, -3) if side == "bottom" else \
                    title.adjusted(3, 0, -3, 0)
                for r, t in texts:
                    assert not r.intersects(inner), (name, side, t, axis.labelText)
    stacked = [p for p in panel.time_plots if panel.graphics.ci.items[p][0][1] == 0]
    if len(stacked) > 1:
        widths = {round(p.getAxis("left").width(), 3) for p in stacked}
        assert len(widths) == 1, (name, widths)


def test_screenshot_axes_have_readable_tick_labels(recording: Path, windows,
                                                  tmp_path: Path) -> None:
    """The battery's cell temperature axis had ticks without numbers, the SOC numbers ran
    into the axis title: axes widen to their labels only after they are first painted."""
    win = windows(recording)
    win.set_cursor(65.0)
    win.save_screenshot(tmp_path / "shot.png")
    battery = win.rows[0][1]
    cell = battery.time_plots[1].getAxis("left")
    assert cell.labelUnits == "°C" and len(_tick_texts(cell)) >= 2
    for panel in win.panels:
        if not isinstance(panel, (HealthPanel, MarketPanel)):
            _check_axes(panel)


def test_a_short_recordings_spectrum_axes_keep_their_labels_apart(
        short_recording: Path, windows, tmp_path: Path) -> None:
    """Too few ticks for a spectrum: the empty spectrum squeezed "0.40.5080.91" into its
    frequency axis."""
    win = windows(short_recording)
    win.save_screenshot(tmp_path / "short.png")
    for rack in (win.rows[0][2], win.rows[1][2]):
        assert rack.drawn()["spectrum"] == 0
        _check_axes(rack)
        assert "no spectrum yet (needs 16 ticks)" in rack.psd.titleLabel.text
        assert not rack.peak.isVisible()
        lo, hi = rack.psd.viewRange()[0]
        assert lo == pytest.approx(np.log10(0.5 / 40.0)) and hi == pytest.approx(np.log10(25.0))


def test_the_readout_shows_every_column_whole(recording: Path, windows,
                                             tmp_path: Path) -> None:
    """The read-out's unit column was cut off at the window's edge ("W", "de", "H")."""
    win = windows(recording)
    win.set_cursor(40.5)
    out = win.save_screenshot(tmp_path / "shot.png")
    readout = win.readout
    header = readout.header()
    assert readout.mapTo(win, QtCore.QPoint(readout.width(), 0)).x() <= win.width()
    assert header.sectionPosition(2) + header.sectionSize(2) <= readout.viewport().width()
    assert readout.horizontalScrollBar().maximum() == 0
    for column in range(3):
        assert readout.sizeHintForColumn(column) <= header.sectionSize(column), column
    metrics = readout.fontMetrics()
    units = readout.findItems("degC", QtCore.Qt.MatchFlag.MatchRecursive, 2)
    assert units and all(metrics.horizontalAdvance(i.text(2)) < header.sectionSize(2)
                         for i in units)
    assert QtGui.QImage(str(out)).width() == win.width()


@pytest.fixture(scope="module")
def no_meter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_no_meter(tmp_path_factory.mktemp("no_meter"))


def test_power_flows_of_a_node_without_a_meter_show_its_grid(no_meter: Path,
                                                            windows) -> None:
    win = windows(no_meter)
    flows = win.rows[0][0]
    with open_run(no_meter) as run:
        grid = run.signal("solo", "grid", "p_w")
        battery = run.signal("solo", "battery", "p_w")
    assert np.nanmax(grid) > 1e4 and np.nanmin(grid) < -1e4
    _, imported = flows.items["grid import"].getOriginalDataset()
    top = np.clip(battery, 0, None) + np.clip(grid, 0, None)
    np.testing.assert_allclose(imported, top)
    _, exported = flows.items["grid export"].getOriginalDataset()
    np.testing.assert_allclose(exported, np.clip(battery, None, 0) + np.clip(grid, None, 0))
    _, balance = flows.items["grid + PV + battery − racks"].getOriginalDataset()
    np.testing.assert_allclose(balance, 0.0, atol=1e-6)


def test_a_battery_with_a_steady_temperature_has_numbers_on_its_axis(
        no_meter: Path, windows, tmp_path: Path) -> None:
    """A cell temperature that moves by a few millikelvin needs labels wider than the axis
    starts with ("25.0001"): they were dropped, leaving ticks without numbers."""
    win = windows(no_meter)
    win.save_screenshot(tmp_path / "shot.png")
    battery = win.rows[0][1]
    cell = battery.time_plots[1].getAxis("left")
    assert len(_tick_texts(cell)) >= 2
    _check_axes(battery)
