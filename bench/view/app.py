"""The live view window: every panel of a run, a time cursor, pause, zoom and export.

>>> show("runs/demo.h5", follow=True)                  # doctest: +SKIP
>>> screenshot("runs/demo.h5", "demo.png", at=42.0)     # doctest: +SKIP

A ``QTimer`` calls :meth:`ViewWindow.frame` about 40 times a second: it reads the rows
appended since the last read (:class:`~bench.view.data.Follower`, at most every
``refresh_s``), lets each panel in sight draw them, pages the time range on while following,
and refreshes the cursor read-out when the cursor moved.  :func:`show_live` runs a bench run
in a background thread and watches its recording.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import PySide6
from PySide6 import QtCore, QtGui, QtSvg, QtWidgets

from bench.errors import BenchError, RecordingError
from bench.recording import Run, open_run
from bench.report import stopped_early
from bench.view.data import Follower, assets, quality_text
from bench.view.panels import (
    BatteryPanel,
    FrequencyPanel,
    HealthPanel,
    MarketPanel,
    Panel,
    PowerFlowPanel,
    RackPanel,
    ResidualPanel,
    TimingPanel,
)

#: pixel height of a row of panels, and width of the cursor read-out, in a new window
ROW_PX = 290
READOUT_PX = 320


def application(offscreen: bool = False) -> QtWidgets.QApplication:
    """The process's QApplication, created on first use.

    ``offscreen`` renders without a display (screenshots, CI); otherwise a missing display
    is a one-line error instead of Qt aborting the process.
    """
    app = QtWidgets.QApplication.instance()
    if app is not None:
        return app
    if sys.version_info < (3, 12) and PySide6.__version_info__[:2] >= (6, 12):
        raise BenchError(f"PySide6 {PySide6.__version__} loses references to True and None "
                         f"on Python {sys.version_info.major}.{sys.version_info.minor} and "
                         f"crashes the view; install 'PySide6-Essentials<6.12'")
    if offscreen:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    elif (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
          and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        raise BenchError("no display to open the view on (DISPLAY is not set); "
                         "use --screenshot OUT.png to render offscreen")
    pg.setConfigOptions(antialias=False, foreground="k", background="w")
    return pg.mkQApp("gridloop view")


def build_panels(data: Follower, run: Run) -> list[list[Panel]]:
    """The panels of a recording, one row per node and a last row for the whole run.

    A panel appears only where the recording has its data: batteries, racks, residuals,
    bus frequency (a grid connection's or meter's ``freq_hz``), device quality, market
    tables.
    """
    rows: list[list[Panel]] = []
    frequency = []
    health = []
    for node, node_assets in assets(run).items():
        row: list[Panel] = [PowerFlowPanel(data, node, node_assets)]
        batteries = [a for a in node_assets if a.kind == "battery"]
        if batteries:
            row.append(BatteryPanel(data, node, batteries))
        racks = [a for a in node_assets if a.kind == "gpu_rack" and "p_w" in a.signals]
        if racks:
            row.append(RackPanel(data, node, racks, run.dt))
        if any(a.residuals for a in node_assets):
            row.append(ResidualPanel(data, node, [a for a in node_assets if a.residuals]))
        rows.append(row)
        frequency += [a for a in node_assets
                      if a.kind in ("grid", "meter") and "freq_hz" in a.signals]
        health += [a for a in node_assets if a.has_quality]
    attrs = run.attrs
    last: list[Panel] = []
    if frequency:
        last.append(FrequencyPanel(data, frequency))
    last.append(TimingPanel(data, run.dt, bool(attrs.get("realtime", False)),
                            float(attrs.get("late_after_s", 0.002))))
    if health:
        last.append(HealthPanel(data, health))
    if "market" in run.file:
        last.append(MarketPanel(data))
    rows.append(last)
    return rows


class ViewWindow(QtWidgets.QMainWindow):
    """The view of one recording, finished or being written.

    Parameters
    ----------
    path : path-like
        The recording (``RUN.h5``).
    follow : bool
        Tail a run in progress: read new ticks as they are written and keep them in view.
    window_s : float
        Time span shown while following; it moves on by a quarter when the newest tick
        reaches its right edge. [s]
    fps : float
        Rate of the frame timer. [1/s]
    refresh_s : float
        While following, read new ticks at most this often: a frame that takes in rows
        redraws every curve, the frames between only what the user changes.  A 120 s window
        on a plot 400 pixels wide moves 0.3 s per pixel, so faster would not show. [s]
    run : Run, optional
        An already open recording of ``path`` (see :func:`show_live`).
    """

    #: emitted when the window is closed
    closed = QtCore.Signal()

    def __init__(self, path: str | Path, follow: bool = False, window_s: float = 120.0,
                 fps: float = 40.0, refresh_s: float = 0.25, run: Run | None = None) -> None:
        opened = run is None
        run = open_run(path, follow=follow) if opened else run
        if not follow and not len(run):
            # what a run killed before its first tick leaves (report and replay refuse it
            # too); following, the run may be starting: the window waits for its ticks
            if opened:
                run.close()
            raise RecordingError(f"{run.path}: the recording has no ticks")
        super().__init__()
        self.run = run
        self.follow = follow
        self.window_s = float(window_s)
        self.refresh_s = float(refresh_s)
        self._polled_at = -math.inf
        self.data = Follower(self.run)
        self.rows = build_panels(self.data, self.run)
        self.panels = [p for row in self.rows for p in row]
        #: keep the latest ticks in view (following, until the user zooms or pans)
        self.live = follow
        #: frames drawn so far
        self.frames = 0
        self._cursor_t = 0.0
        self._cursor_pinned = False
        self._readout_dirty = True
        self._syncing = False
        self._sharing = False
        self._range = (0.0, 1.0)
        self._range_moved = False
        self._stale: set[Panel] = set()
        self._first = True
        self._frame_times: deque[float] = deque(maxlen=60)
        #: where a recording that is not complete stopped (said in the title and status
        #: bar, as the report says it first); None for a complete one or one followed live
        self.stopped = None if follow else stopped_early(self.run)
        self.setWindowTitle(f"gridloop view · {self.run.path.name}"
                            + (" (incomplete)" if self.stopped else ""))
        self._build_ui()
        self.data.poll()
        self.frame()
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(max(1, round(1000.0 / fps)))
        #: why the view stopped reading (a damaged part of the file), or None
        self.failed: str | None = None
        self.timer.timeout.connect(self._on_timer)
        self.timer.start()

    # -- layout ---------------------------------------------------------------------------

    def _build_ui(self) -> None:
        self.panel_area = QtWidgets.QWidget()
        grid = QtWidgets.QVBoxLayout(self.panel_area)
        grid.setContentsMargins(2, 2, 2, 2)
        for row in self.rows:
            line = QtWidgets.QHBoxLayout()
            for panel in row:
                stretch = 3 if isinstance(panel, (PowerFlowPanel, RackPanel, TimingPanel,
                                                  HealthPanel)) else 2
                line.addWidget(panel, stretch)
            grid.addLayout(line, 1)
        self.scroll = scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.panel_area)
        self.readout = QtWidgets.QTreeWidget()
        self.readout.setHeaderLabels(["signal", "value", "unit"])
        self.readout.setMinimumWidth(240)
        # sized to its columns once they are filled (_fit_readout): none is cut off
        self.readout.header().setStretchLastSection(False)
        split = QtWidgets.QSplitter()
        split.addWidget(scroll)
        split.addWidget(self.readout)
        split.setStretchFactor(0, 1)
        split.setSizes([1600, READOUT_PX])
        self.setCentralWidget(split)
        self.status = QtWidgets.QLabel()
        self.statusBar().addWidget(self.status, 1)

        plots = [p for panel in self.panels for p in panel.time_plots]
        self._cursors = []
        for p in plots:
            p.getViewBox().sigXRangeChanged.connect(self._share_time_range)
            p.getViewBox().sigRangeChangedManually.connect(self._zoomed_by_hand)
            line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen("#7b1fa2", width=1),
                                   hoverPen=pg.mkPen("#7b1fa2", width=3))
            line.sigPositionChanged.connect(self._cursor_dragged)
            p.addItem(line, ignoreBounds=True)
            self._cursors.append(line)

        bar = self.addToolBar("view")
        self.pause_action = self._action(bar, "Pause", "Space", self.set_paused, checkable=True)
        self._action(bar, "Live", "End", lambda: self.go_live())
        self._action(bar, "Fit all", "Home", lambda: self.fit())
        self._action(bar, "Export PNG…", "Ctrl+E", lambda: self._export_dialog("png"))
        self._action(bar, "Export SVG…", "Ctrl+Shift+E", lambda: self._export_dialog("svg"))
        n_rows = len(self.rows)
        self.resize(1800, min(1000, n_rows * ROW_PX + 90))

    def _action(self, bar: QtWidgets.QToolBar, text: str, key: str, slot: Callable,
                checkable: bool = False) -> QtGui.QAction:
        action = QtGui.QAction(text, self)
        action.setShortcut(QtGui.QKeySequence(key))
        action.setCheckable(checkable)
        (action.toggled if checkable else action.triggered).connect(slot)
        bar.addAction(action)
        return action

    # -- each frame -----------------------------------------------------------------------

    def _on_timer(self) -> None:
        """A frame from the timer: a part of the file that cannot be read (damaged bytes
        in data read later, as a cursor moves or a panel opens) stops the frames and is said
        once, on the status bar and on stderr, instead of a traceback every frame."""
        try:
            self.frame()
        except RecordingError as exc:
            self.timer.stop()
            self.failed = str(exc)
            self.status.setText(f"stopped: {exc}")
            print(f"gridloop: error: {exc}", file=sys.stderr)

    def frame(self) -> int:
        """Read new rows, draw them, move the live window and the cursor; returns new rows."""
        new = 0
        now = time.perf_counter()
        if self.follow and now - self._polled_at >= self.refresh_s:
            self._polled_at = now
            new = self.data.poll()
        fresh = bool(new) or self._first
        if fresh and len(self.data.time):
            t = self.data.time.values
            if self._first and not self.follow:
                self.fit()
            elif self.live and (self._first or t[-1] > self._range[1]):
                # a page at a time: the newest tick lands at three quarters of the width and
                # the axes stay put until the data reaches the right edge
                start = max(t[0], t[-1] - 0.75 * self.window_s)
                self._set_range(start, start + self.window_s)
            if not self._cursor_pinned:
                self._move_cursor(t[-1])
        cursor = self.data.index_at(self._cursor_t)
        rows = self._rows_in_view()
        redraw = fresh or self._range_moved
        self._range_moved = False
        shown = self.isVisible()
        for panel in self.panels:
            if shown and panel.visibleRegion().isEmpty():
                self._stale.add(panel)  # scrolled out of sight: catch up when seen again
            elif panel in self._stale:
                self._stale.discard(panel)
                for plot in panel.time_plots:
                    plot.setXRange(*self._range, padding=0.0)
                panel.on_frame(True, cursor, rows)
            else:
                panel.on_frame(redraw, cursor, rows)
            panel.align_axes()  # to the labels each axis measured when last painted
        if self._readout_dirty:
            self._update_readout(cursor)
        self._first = False
        self.frames += 1
        self._frame_times.append(now)
        self._update_status()
        return new

    def _update_status(self) -> None:
        n = self.data.n
        t_end = self.data.time.values[-1] if n else 0.0
        ft = self._frame_times
        fps = (len(ft) - 1) / (ft[-1] - ft[0]) if len(ft) > 1 and ft[-1] > ft[0] else 0.0
        state = ("paused" if self.paused else "following" if self.follow else
                 f"incomplete recording, {self.stopped}" if self.stopped else "recording")
        rate = f" · {fps:.0f} frames/s" if self.follow else ""
        self.status.setText(f"{state} · {n} ticks · {t_end:.2f} s · cursor "
                            f"{self._cursor_t:.3f} s{rate}")

    # -- time range -----------------------------------------------------------------------

    def zoom(self, t0: float, t1: float) -> None:
        """Show simulated time ``[t0, t1]`` in every time plot; stops the live window. [s]"""
        if not t1 > t0:
            raise BenchError(f"zoom: the end {t1} s must come after the start {t0} s")
        self.live = False
        self._set_range(t0, t1)

    def fit(self) -> None:
        """Show the whole recording."""
        t = self.data.time.values
        self.live = False
        if len(t):
            span = max(t[-1] - t[0], self.run.dt)
            self._set_range(t[0] - 0.01 * span, t[-1] + 0.01 * span)

    def go_live(self) -> None:
        """Follow the latest ticks again (and the cursor with them)."""
        self.live = self.follow
        self._cursor_pinned = False
        self._first = True

    def time_range(self) -> tuple[float, float]:
        """The visible simulated time span. [s]"""
        return self._range

    def _rows_in_view(self) -> slice:
        """The ticks of the visible time range and half a width either side (what a pan
        shows before the next frame)."""
        t = self.data.time.values
        x0, x1 = self._range
        half = 0.5 * (x1 - x0)
        i0 = int(np.searchsorted(t, x0 - half)) - 1
        i1 = int(np.searchsorted(t, x1 + half, side="right")) + 1
        return slice(max(0, i0), min(len(t), i1))

    def _set_range(self, t0: float, t1: float) -> None:
        self._range = (float(t0), float(t1))
        self._share_time_range(None, self._range)

    def _share_time_range(self, view: pg.ViewBox | None, span: tuple[float, float]) -> None:
        """One time range in every plot in sight (pyqtgraph's setXLink would align panels of
        different widths pixel by pixel instead); the others follow when scrolled to."""
        if self._sharing:
            return
        self._sharing = True
        self._range = (float(span[0]), float(span[1]))
        self._range_moved = True
        shown = self.isVisible()
        try:
            for panel in self.panels:
                if shown and panel in self._stale:
                    continue
                for plot in panel.time_plots:
                    if plot.getViewBox() is not view:
                        plot.setXRange(*span, padding=0.0)
        finally:
            self._sharing = False

    def _zoomed_by_hand(self, *_: object) -> None:
        self.live = False

    # -- pause ----------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self.pause_action.isChecked()

    def set_paused(self, paused: bool) -> None:
        """Freeze the display (no reads, no redraws); resuming catches up on missed rows."""
        if self.pause_action.isChecked() != paused:
            self.pause_action.setChecked(paused)  # re-enters through the toggled signal
            return
        if paused:
            self.timer.stop()
        else:
            self.timer.start()
        self._update_status()

    # -- cursor ---------------------------------------------------------------------------

    @property
    def cursor_time(self) -> float:
        return self._cursor_t

    def set_cursor(self, t: float) -> None:
        """Put the time cursor at ``t`` and keep it there while new ticks arrive. [s]"""
        self._cursor_pinned = True
        self._move_cursor(float(t))

    def cursor_values(self) -> dict[str, float]:
        """Every per-tick dataset's value at the cursor (zero-order hold), by path."""
        i = self.data.index_at(self._cursor_t)
        out = {"time": float(self.data.time.values[i])} if i >= 0 else {}
        if i >= 0:
            out.update(self.data.values_at(i))
        return out

    def _move_cursor(self, t: float) -> None:
        self._cursor_t = t
        self._syncing = True
        try:
            for line in self._cursors:
                line.setValue(t)
        finally:
            self._syncing = False
        self._readout_dirty = True

    def _cursor_dragged(self, line: pg.InfiniteLine) -> None:
        if not self._syncing:
            self.set_cursor(line.value())

    def _update_readout(self, index: int) -> None:
        self._readout_dirty = False
        if index < 0:
            return
        values = self.cursor_values()
        if self.readout.topLevelItemCount() == 0:
            self._items: dict[str, QtWidgets.QTreeWidgetItem] = {}
            groups: dict[str, QtWidgets.QTreeWidgetItem] = {}
            for path in ["time", *self.data.per_tick_paths()]:
                group, name = _readout_name(path)
                parent = groups.get(group)
                if parent is None:
                    parent = QtWidgets.QTreeWidgetItem(self.readout, [group])
                    parent.setExpanded(True)
                    groups[group] = parent
                unit = str(self.run.file[path].attrs.get("unit", ""))
                self._items[path] = QtWidgets.QTreeWidgetItem(parent, [name, "", unit])
            self._fit_readout()
        for path, item in self._items.items():
            v = values.get(path, math.nan)
            if path.startswith("quality/") and math.isfinite(v):
                text = quality_text(v)
            else:
                text = f"{v:.6g}"
            item.setText(1, text)

    def readout_width(self) -> int:
        """The width the cursor read-out needs to show its three columns whole. [px]"""
        r = self.readout
        columns = sum(r.header().sectionSize(c) for c in range(r.columnCount()))
        return (columns + r.verticalScrollBar().sizeHint().width() + 2 * r.frameWidth()
                + 4)

    def _fit_readout(self) -> None:
        """Size the read-out's columns to their text (the value column to the widest a
        value can print, so it does not jump as the cursor moves) and the read-out to
        them, so the unit column is not cut off at the window's edge."""
        r = self.readout
        metrics = r.fontMetrics()
        r.resizeColumnToContents(0)
        r.resizeColumnToContents(2)
        pad = 2 * r.style().pixelMetric(QtWidgets.QStyle.PixelMetric.PM_FocusFrameHMargin) + 8
        r.setColumnWidth(1, max(r.sizeHintForColumn(1),
                                metrics.horizontalAdvance("-8.88888e+888") + pad))
        r.setColumnWidth(2, max(r.columnWidth(2), metrics.horizontalAdvance("unit") + pad))
        width = self.readout_width()
        r.setMinimumWidth(width)
        split = self.centralWidget()
        if isinstance(split, QtWidgets.QSplitter) and split.sizes()[1] < width:
            total = sum(split.sizes())
            split.setSizes([max(0, total - width), width])

    # -- export ---------------------------------------------------------------------------

    def export_png(self, path: str | Path) -> Path:
        """Write the panels, as shown, to a PNG image."""
        path = _image_out(path, self.run.path, "export", fmt="png", what="the PNG image")
        image = self.panel_area.grab()
        _write(path, "the PNG image", lambda tmp: image.save(str(tmp), "PNG"))
        return path

    def export_svg(self, path: str | Path) -> Path:
        """Write the panels, as shown, to an SVG drawing (vector curves and text)."""
        path = _image_out(path, self.run.path, "export", fmt="svg", what="the SVG drawing")
        widget = self.panel_area

        def draw(tmp: Path) -> bool:
            gen = QtSvg.QSvgGenerator()
            gen.setFileName(str(tmp))
            gen.setSize(widget.size())
            gen.setViewBox(QtCore.QRect(0, 0, widget.width(), widget.height()))
            gen.setTitle(self.windowTitle())
            painter = QtGui.QPainter()
            if not painter.begin(gen):
                return False
            try:
                widget.render(painter, QtCore.QPoint(0, 0))
            finally:
                painter.end()
            return True

        _write(path, "the SVG drawing", draw)
        return path

    def _export_dialog(self, kind: str) -> None:
        name, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, f"Export {kind.upper()}", str(self.run.path.with_suffix(f".{kind}")),
            f"{kind.upper()} (*.{kind})")
        if name:
            try:
                (self.export_png if kind == "png" else self.export_svg)(name)
            except BenchError as exc:
                QtWidgets.QMessageBox.warning(self, "Export", str(exc))

    # -- screenshots ----------------------------------------------------------------------

    def save_screenshot(self, out: str | Path) -> Path:
        """Render the whole window, every panel in full, to an image file (its format from
        the file's extension: ``.png``, ``.jpg``...)."""
        out = _image_out(out, self.run.path)
        app = application()
        self._fit_readout()
        self.resize(1800 + max(READOUT_PX, self.readout_width()),
                    len(self.rows) * ROW_PX + 90)
        app.processEvents()
        hidden = self.scroll.verticalScrollBar().maximum()
        if hidden:
            self.resize(self.width(), self.height() + hidden)
            app.processEvents()
        self.frame()
        app.processEvents()
        self._settle()
        image = self.grab()
        _write(out, "the image", lambda tmp: image.save(str(tmp)))
        return out

    def _settle(self, tries: int = 4) -> None:
        """Paint until the axes stop resizing: an axis measures its tick labels when it is
        painted and only then widens to fit them, so the first picture of a window has
        axes too narrow for their numbers (labels dropped, or drawn over the axis title)."""
        app = application()
        for _ in range(tries):
            before = self._axis_sizes()
            self.grab()  # paints every axis: each measures its labels
            app.processEvents()
            for panel in self.panels:
                panel.align_axes()
            app.processEvents()
            if self._axis_sizes() == before:
                return

    def _axis_sizes(self) -> list[tuple[float, float]]:
        return [(a.width(), a.height()) for panel in self.panels for p in panel.plots()
                for a in (p.getAxis("left"), p.getAxis("bottom"))]

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.timer.stop()
        # pyqtgraph's own teardown of each scene; without it PySide6 crashes at exit
        for panel in self.panels:
            panel.graphics.close()
        super().closeEvent(event)
        self.closed.emit()


#: image formats worth naming when an extension is not one (all Qt writes are accepted)
COMMON_FORMATS = ("png", "jpg", "bmp", "tif", "webp")


def image_formats() -> set[str]:
    """File extensions Qt can write an image as (``png``, ``jpg``...)."""
    return {bytes(f).decode().lower() for f in QtGui.QImageWriter.supportedImageFormats()}


def _image_out(out: str | Path, recording: str | Path, flag: str = "--screenshot",
               fmt: str | None = None, what: str = "the image") -> Path:
    """Check an image path before anything is rendered or written: its extension names a
    format Qt writes (unless ``fmt`` fixes the format), it is not the recording (another
    spelling, a symbolic or a hard link included) and its folder exists."""
    from bench.paths import same_file

    out = Path(out)
    if fmt is None:
        ext = out.suffix.lower().lstrip(".")
        formats = image_formats()
        if ext not in formats:
            known = ", ".join(f".{f}" for f in COMMON_FORMATS if f in formats)
            kind = f"'.{ext}' is not an image format" if ext else "no image extension"
            raise BenchError(f"{flag} {out}: {kind}; give a file ending in {known}")
    if same_file(out, Path(recording)):
        raise BenchError(f"{flag} {out}: that is the recording being viewed ({recording}); "
                         "give another file")
    if out.is_dir():
        raise BenchError(f"{flag} {out}: cannot write {what} (that is a directory)")
    if not out.parent.is_dir():
        raise BenchError(f"{flag} {out}: cannot write {what} ({out.parent} is not a "
                         "directory)")
    return out


def _write(out: Path, what: str, write: Callable[[Path], bool]) -> None:
    """Write ``out`` through a new file beside it, renamed over it only when ``write``
    succeeded: a failure never truncates what ``out`` held."""
    from bench.paths import replacing

    try:
        with replacing(out) as tmp:
            if not write(tmp):
                raise BenchError(f"{out}: cannot write {what}")
    except OSError as exc:
        raise BenchError(f"{out}: cannot write {what} ({exc.strerror or exc})") from None


def _readout_name(path: str) -> tuple[str, str]:
    """Group and label of a dataset in the cursor read-out."""
    parts = path.split("/")
    if parts[0] == "nodes" and len(parts) >= 4:
        return f"{parts[1]}.{parts[2]}", "/".join(parts[3:])
    if parts[0] == "quality" and len(parts) == 3:
        return f"{parts[1]}.{parts[2]}", "quality"
    if parts[:2] == ["timing", "rtt"] and len(parts) == 4:
        return f"{parts[2]}.{parts[3]}", "round trip"
    return "run", "/".join(parts[1:]) if parts[0] == "timing" else path


def _check_at(win: ViewWindow, at: float | None) -> None:
    if at is None:
        return
    t = win.data.time.values
    end = float(t[-1]) if len(t) else 0.0
    if not (math.isfinite(at) and 0.0 <= at <= end):
        raise BenchError(f"--at {at:g}: outside the recording (0 to {end:g} s)")
    win.set_cursor(at)


def screenshot(path: str | Path, out: str | Path, at: float | None = None,
               follow: bool = False) -> Path:
    """Render the view of a recording offscreen and write it to ``out`` (PNG, JPEG...).

    ``at`` puts the time cursor (the read-out and the rack spectra) at that simulated
    time [s]; by default it sits on the last tick.
    """
    _image_out(out, path)  # before the recording is opened: nothing read or written yet
    application(offscreen=True)
    win = ViewWindow(path, follow=follow)
    try:
        if not win.data.n:  # following a run that has not ticked yet: nothing to picture
            raise RecordingError(f"{win.run.path}: the recording has no ticks")
        _check_at(win, at)
        return win.save_screenshot(out)
    finally:
        win.close()
        win.run.close()


def require_screen(instead: str) -> None:
    """Refuse a window no one could see or close: Qt told to render offscreen (CI sets
    ``QT_QPA_PLATFORM=offscreen``) would wait for a close that never comes."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.partition(":")[0] in ("offscreen", "minimal"):
        raise BenchError(f"QT_QPA_PLATFORM={platform}: the window would open on no screen "
                         f"and never be closed; {instead}, or unset QT_QPA_PLATFORM")


def show(path: str | Path, follow: bool = False, at: float | None = None,
         window_s: float = 120.0) -> int:
    """Open the view of a recording in a window and return when it is closed."""
    require_screen("use --screenshot OUT.png")
    application()
    win = ViewWindow(path, follow=follow, window_s=window_s)
    _check_at(win, at)
    _until_closed(win)
    win.run.close()
    return 0


def _until_closed(win: ViewWindow) -> None:
    """Show the window and run Qt's event loop until it is closed."""
    loop = QtCore.QEventLoop()
    win.closed.connect(loop.quit)
    win.show()
    loop.exec()


def show_live(path: str | Path, run_in_thread: Callable[[], object],
              window_s: float = 120.0, start_timeout_s: float = 60.0) -> int:
    """Start a run in a background thread and watch its recording live in a window.

    Parameters
    ----------
    path : path-like
        The recording the run writes (an older file there is waited past).
    run_in_thread : callable
        Runs the bench (e.g. ``lambda: run_plan(plan, out)``).  It must write ``path``
        through :class:`bench.recorder.Recorder`.
    window_s : float
        Time span kept in view. [s]
    start_timeout_s : float
        How long to wait for the recording to appear. [s]

    Qt owns the main thread; the run computes in its thread and its recorder's writer
    process writes the file, which the window follows through SWMR.  Closing the window
    does not stop the run: this returns 0 once both are done, or raises the run's error.
    """
    path = Path(path)
    application()
    before = path.stat().st_mtime_ns if path.exists() else None
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            run_in_thread()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="gridloop-run")
    thread.start()
    run = _wait_for_recording(path, before, thread, start_timeout_s)
    if run is not None:
        _until_closed(ViewWindow(path, follow=True, window_s=window_s, run=run))
        run.close()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    if run is None:
        raise RecordingError(f"{path}: the run did not start a recording within "
                             f"{start_timeout_s:g} s")
    return 0


def _wait_for_recording(path: Path, before: int | None, thread: threading.Thread,
                        timeout_s: float) -> Run | None:
    """Open ``path`` once the run has (re)created it and its writer is in SWMR mode."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = thread.is_alive()
        if path.exists() and path.stat().st_mtime_ns != before:
            try:
                return open_run(path, follow=True)
            except RecordingError:
                pass  # created but not yet readable: the writer is still setting it up
        if not alive or time.monotonic() > deadline:
            return None
        time.sleep(0.02)
