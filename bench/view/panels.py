"""The live view's panels: one class per kind of panel, each a titled box of PyQtGraph plots.

Every panel follows the recording through the window's :class:`~bench.view.data.Follower`:
:meth:`Panel.on_frame` is called once per frame and draws only what changed.  Time-series
curves get only the ticks around the visible time range (clipped to the view) and draw them
with peak downsampling (a min/max pair per pixel column), so a panel costs the same whatever
the length of the run; plots of simulated time share one time axis and carry the time
cursor (``Panel.time_plots``).

Signs follow docs/developing.md: battery + discharging, inverter + generating, rack +
consuming, grid + importing, so a node balances when ``grid + pv + battery - racks = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from bench.recording import split_device
from bench.view.data import QUALITY_NAMES, Asset, Follower, Series, health_code
from bench.view.spectrum import MIN_PSD_TICKS, rolling_psd, step_frequency

#: colours of the power flows (stacked layers)
FLOW_COLORS = {"PV": "#e6a700", "battery out": "#2e8b57", "grid import": "#6b7b8c",
               "GPU racks": "#c0392b", "battery in": "#8fd19e", "grid export": "#9ec3e6"}
#: colours of several curves in one plot
CYCLE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
         "#e377c2")
#: colours of the market's orders and trades (the price plot)
ORDER_COLORS = {"bids": "#1f77b4", "asks": "#ff7f0e", "trades": "#222222"}
#: colours of the nodes' settled money: the cycle without the orders' colours, so no node's
#: line shares a legend colour with bids or asks
SETTLED_COLORS = tuple(c for c in CYCLE if c not in ORDER_COLORS.values())
#: colours of the health codes ok, stale, timeout, error, write failed
QUALITY_COLORS = ("#5cb85c", "#f0ad4e", "#ef6c00", "#c62828", "#8e44ad")
_BACKGROUND = "w"


class Derived(Series):
    """A series computed row by row from other series (a sum, a stack layer, a scaling)."""

    def __init__(self, fn: Callable[..., np.ndarray], *inputs: Series) -> None:
        super().__init__()
        self.fn = fn
        self.inputs = inputs

    def catch_up(self) -> None:
        """Compute the rows that every input has and this series does not yet."""
        for s in self.inputs:
            if isinstance(s, Derived):
                s.catch_up()
        a, b = len(self), min(len(s) for s in self.inputs)
        if b > a:
            self.extend(self.fn(*(s.values[a:b] for s in self.inputs)))


def _sum(*xs: np.ndarray) -> np.ndarray:
    return np.sum(xs, axis=0)


class Panel(QtWidgets.QFrame):
    """A titled box of plots that follows a recording.

    Subclasses build their plots in ``__init__`` (:meth:`time_plot`, :meth:`line`) and
    override :meth:`on_frame` to draw what is not a plain line.  ``items`` maps a label to
    every drawn data item (curves, scatters, bars, images).
    """

    def __init__(self, title: str, data: Follower) -> None:
        super().__init__()
        self.data = data
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.setMinimumSize(280, 230)
        box = QtWidgets.QVBoxLayout(self)
        box.setContentsMargins(3, 3, 3, 3)
        box.setSpacing(2)
        self.header = QtWidgets.QHBoxLayout()
        self.title = QtWidgets.QLabel(f"<b>{title}</b>")
        self.header.addWidget(self.title)
        self.header.addStretch(1)
        box.addLayout(self.header)
        self.legend = QtWidgets.QLabel()
        self.legend.setWordWrap(True)
        self.legend.setVisible(False)
        box.addWidget(self.legend)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground(_BACKGROUND)
        # share the space the window has instead of asking for pyqtgraph's 480 px hint
        ignored = QtWidgets.QSizePolicy.Policy.Ignored
        self.graphics.setSizePolicy(ignored, ignored)
        box.addWidget(self.graphics, 1)
        self.time_plots: list[pg.PlotItem] = []
        self.items: dict[str, pg.GraphicsObject] = {}
        self._lines: list[tuple[pg.PlotDataItem, Series]] = []
        #: the ticks last drawn
        self.rows = slice(0, 0)
        #: left axes of the time plots stacked in one column (align_axes), once laid out
        self._stacked: list[list[pg.AxisItem]] | None = None

    # -- building -------------------------------------------------------------------------

    def time_plot(self, row: int, col: int = 0, label: str = "", units: str = "",
                  si_prefix: bool = True) -> pg.PlotItem:
        """A plot over simulated time: zooms and pans along time, its y axis follows the data."""
        p = self.graphics.addPlot(row=row, col=col)
        p.setLabel("left", label, units=units)
        p.getAxis("left").enableAutoSIPrefix(si_prefix)
        for side in ("left", "bottom"):
            # axes overlap the plot by their ticks, so every new point would repaint them:
            # Qt repaints them from a pixmap unless their range changed
            p.getAxis(side).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # no grid: grid lines belong to the axes, which then repaint with every new point
        p.setMouseEnabled(x=True, y=False)
        p.enableAutoRange(x=False, y=True)
        p.setAutoVisible(y=True)
        p.hideButtons()
        self.time_plots.append(p)
        return p

    def line(self, plot: pg.PlotItem, label: str, y: Series, color: str,
             fill: bool = False) -> pg.PlotDataItem:
        """A curve of ``y`` over simulated time, redrawn as rows arrive."""
        # peak downsampling to one min/max pair per pixel column (per two for fills, which
        # pyqtgraph paints in many small pieces)
        item = plot.plot(pen=pg.mkPen(color, width=1), autoDownsampleFactor=0.5 if fill else 1.0,
                         fillLevel=0.0 if fill else None, brush=color if fill else None)
        item.setDownsampling(auto=True, method="peak")
        self.items[label] = item
        self._lines.append((item, y))
        return item

    def plots(self) -> list[pg.PlotItem]:
        """Every plot of the panel (its time plots, spectra and histograms)."""
        return [item for item in self.graphics.ci.items if isinstance(item, pg.PlotItem)]

    def align_axes(self) -> None:
        """Give time plots stacked in one column left axes of one width (the widest needs),
        so their time axes line up and the cursor is one vertical line.  An axis measures
        its tick labels when painted; this follows what it measured last."""
        if self._stacked is None:
            columns: dict[int, list[pg.AxisItem]] = {}
            for p in self.time_plots:
                cells = self.graphics.ci.items.get(p) or [(0, 0)]
                columns.setdefault(cells[0][1], []).append(p.getAxis("left"))
            self._stacked = [axes for axes in columns.values() if len(axes) > 1]
        for axes in self._stacked:
            width = max(_axis_width(a) for a in axes)
            for a in axes:
                if a.fixedWidth != width:
                    a.setWidth(width)

    def set_legend(self, entries: Sequence[tuple[str, str]]) -> None:
        """Name the curves above the plots: ``(label, colour)`` pairs."""
        self.legend.setText(" &nbsp; ".join(f"<span style='color:{c}'>■</span> {label}"
                                              for label, c in entries))
        self.legend.setVisible(bool(entries))

    def drawn(self) -> dict[str, int]:
        """How many data points each item of the panel holds (label -> count)."""
        out = {}
        for label, item in self.items.items():
            if isinstance(item, pg.PlotDataItem):
                x, _ = item.getOriginalDataset()
                out[label] = 0 if x is None else len(x)
            elif isinstance(item, pg.ScatterPlotItem):
                out[label] = len(item.data)
            elif isinstance(item, pg.BarGraphItem):
                out[label] = int(np.sum(item.opts["height"]))
            elif isinstance(item, pg.ImageItem):
                out[label] = 0 if item.image is None else int(item.image.size)
        return out

    # -- each frame -----------------------------------------------------------------------

    def on_frame(self, redraw: bool, cursor: int, rows: slice) -> None:
        """Draw what changed since the last frame.

        ``redraw`` is true when rows arrived or the time range moved; ``rows`` are the ticks
        in and around the visible time range (the curves get only those, so a frame costs
        the same whatever the length of the run); ``cursor`` is the tick under the cursor.
        """
        if not redraw:
            return
        self.rows = rows
        t = self.data.time.values[rows]
        for item, y in self._lines:
            if isinstance(y, Derived):
                y.catch_up()
            item.setData(t, y.values[rows])


def _axis_width(axis: pg.AxisItem) -> float:
    """The width a left axis needs for its tick labels (as last measured) and its title:
    what pyqtgraph sizes it to when its width is not fixed."""
    style = axis.style
    w = axis.textWidth + style["tickTextOffset"][0] + max(0, style["tickLength"])
    if axis.label.isVisible():
        w += axis.label.boundingRect().height() * 0.8
    return float(math.ceil(w))


def _series(data: Follower, assets: Sequence[Asset], kinds: Sequence[str],
            signal: str) -> list[Series]:
    return [data.series(a.path(signal)) for a in assets if a.kind in kinds and signal in a.signals]


class PowerFlowPanel(Panel):
    """A node's power flows stacked: sources above zero, sinks below, and the balance.

    Sources are PV (the inverters' AC output, or the PV arrays' DC power where a node has
    no inverter), battery discharge and grid import; sinks are the GPU racks, battery
    charge and grid export.  The lower plot is ``grid + pv + battery - racks``: zero when
    every flow at the node's bus is accounted for.
    """

    def __init__(self, data: Follower, node: str, assets: Sequence[Asset]) -> None:
        super().__init__(f"{node} · power flows", data)
        sums = {}
        for key, kinds, signal in (("pv", ("inverter",), "p_ac_w"),
                                   ("battery", ("battery",), "p_w"),
                                   ("grid", ("meter",), "p_w"),
                                   ("rack", ("gpu_rack",), "p_w")):
            found = _series(data, assets, kinds, signal)
            if key == "pv" and not found:
                found = _series(data, assets, ("pv",), "p_dc_w")
            if key == "grid" and not found:
                # no meter: the bus's grid connection (counted once, as bench.summary does)
                found = [data.series(a.path("p_w")) for a in _grid_connections(assets)]
            if found:
                sums[key] = Derived(_sum, *found)
        plot = self.time_plot(0, label="power", units="W")
        legend = []
        supply = (("PV", "pv", lambda x: x), ("battery out", "battery", _positive),
                  ("grid import", "grid", _positive))
        demand = (("GPU racks", "rack", np.negative), ("battery in", "battery", _negative),
                  ("grid export", "grid", _negative))
        for side in (supply, demand):
            stacked: list[tuple[str, Series]] = []
            total: Series | None = None
            for label, key, fn in side:
                if key in sums:
                    layer = Derived(fn, sums[key])
                    total = layer if total is None else Derived(np.add, total, layer)
                    stacked.append((label, total))
                    legend.append((label, FLOW_COLORS[label]))
            # the outermost sum is drawn first, each inner layer on top of it
            for z, (label, cumulative) in enumerate(reversed(stacked)):
                self.line(plot, label, cumulative, FLOW_COLORS[label], fill=True).setZValue(z)
        signs = {"pv": 1.0, "battery": 1.0, "grid": 1.0, "rack": -1.0}
        present = [k for k in signs if k in sums]
        weights = np.array([signs[k] for k in present])
        self.set_legend(legend)
        if present:
            balance = self.time_plot(1, label="balance", units="W")
            # a balance within rounding must not be magnified into noise
            balance.setLimits(minYRange=1.0)
            self.line(balance, "grid + PV + battery − racks",
                      Derived(lambda *xs: weights @ np.vstack(xs), *(sums[k] for k in present)),
                      "#333333")
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 1)


def _grid_connections(assets: Sequence[Asset]) -> list[Asset]:
    """A node's grid connection when it has no meter: its ``grid`` assets, or the
    connection the twin records as asset ``grid`` for a node whose scenario lists none."""
    grids = [a for a in assets if a.kind == "grid" and "p_w" in a.signals]
    return grids or [a for a in assets if a.name == "grid" and not a.kind
                     and "p_w" in a.signals]


def _positive(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, None)


def _negative(x: np.ndarray) -> np.ndarray:
    return np.clip(x, None, 0.0)


class BatteryPanel(Panel):
    """A node's batteries: state of charge and cell temperature."""

    def __init__(self, data: Follower, node: str, batteries: Sequence[Asset]) -> None:
        super().__init__(f"{node} · batteries", data)
        soc = self.time_plot(0, label="SOC", units="%", si_prefix=False)
        temp = self.time_plot(1, label="cell", units="°C", si_prefix=False)
        if len(batteries) > 1:
            self.set_legend([(a.name, CYCLE[i % len(CYCLE)]) for i, a in enumerate(batteries)])
        for i, a in enumerate(batteries):
            color = CYCLE[i % len(CYCLE)]
            if "soc" in a.signals:
                self.line(soc, f"{a.name} SOC",
                          Derived(lambda s: 100.0 * s, data.series(a.path("soc"))), color)
            # a device that does not report its cell temperature: show the twin's
            kind = "measured" if "temp_cell_c" in a.signals else \
                ("twin" if "temp_cell_c" in a.twins else "")
            if kind:
                label = f"{a.name} temperature" + (" (twin)" if kind == "twin" else "")
                self.line(temp, label, data.series(a.path("temp_cell_c", kind)), color)


class RackPanel(Panel):
    """A node's GPU racks: power over time, and the rolling spectrum of their sum.

    The spectrum is the Welch estimate over the ``spectrum_s`` seconds before the cursor;
    the step frequency of a synchronous training job is marked in it, and its period
    written in the plot's title.
    """

    def __init__(self, data: Follower, node: str, racks: Sequence[Asset], dt_s: float,
                 spectrum_s: float = 40.0) -> None:
        super().__init__(f"{node} · GPU racks and their spectrum", data)
        power = self.time_plot(0, 0, label="power", units="W")
        series = []
        for i, a in enumerate(racks):
            s = data.series(a.path("p_w"))
            self.line(power, a.name, s, CYCLE[i % len(CYCLE)])
            series.append(s)
        if len(racks) > 1:
            self.set_legend([(a.name, CYCLE[i % len(CYCLE)]) for i, a in enumerate(racks)])
        self.total = Derived(_sum, *series)
        self.dt_s = dt_s
        self.spectrum_s = spectrum_s
        self.psd = self.graphics.addPlot(row=0, col=1)
        self.psd.setLogMode(x=True, y=True)
        self.psd.setLabel("bottom", "frequency", units="Hz")
        self.psd.getAxis("bottom").enableAutoSIPrefix(False)
        self.psd.setLabel("left", "PSD", units="W²/Hz")
        self.psd.getAxis("left").enableAutoSIPrefix(False)
        self.psd.showGrid(x=True, y=True, alpha=0.25)
        self.psd.hideButtons()
        self.psd.setMouseEnabled(x=False, y=False)
        # the frequencies a spectrum of spectrum_s can hold, from its finest bin to Nyquist:
        # fixed, so an empty or short spectrum does not squeeze a fraction of a decade of
        # log tick labels into the axis, and the axis stays put as the cursor moves
        self.psd.enableAutoRange(x=False)
        self.psd.setXRange(math.log10(0.5 / spectrum_s), math.log10(0.5 / dt_s), padding=0.0)
        self.items["spectrum"] = self.psd.plot(pen=pg.mkPen("#1f1f1f", width=1))
        self.peak = pg.InfiniteLine(angle=90, pen=pg.mkPen("#c0392b", style=QtCore.Qt.DashLine))
        self.peak.setVisible(False)
        self.psd.addItem(self.peak, ignoreBounds=True)
        self.psd.setTitle(f"no spectrum yet (needs {MIN_PSD_TICKS} ticks)", size="8pt")
        self.graphics.ci.layout.setColumnStretchFactor(0, 3)
        self.graphics.ci.layout.setColumnStretchFactor(1, 2)
        #: the training step frequency found at the cursor [Hz]
        self.step_hz = math.nan
        self._psd_at = -1
        self._every = max(1, round(0.5 / dt_s))

    def on_frame(self, redraw: bool, cursor: int, rows: slice) -> None:
        super().on_frame(redraw, cursor, rows)
        if cursor < 0 or abs(cursor - self._psd_at) < self._every:
            return
        self._psd_at = cursor
        self.total.catch_up()
        f, p = rolling_psd(self.total.values[: cursor + 1], self.dt_s, self.spectrum_s)
        self.items["spectrum"].setData(f, p)
        self.step_hz = step_frequency(f, p, self.spectrum_s)
        found = math.isfinite(self.step_hz)
        self.peak.setVisible(found)
        if found:
            self.peak.setValue(math.log10(self.step_hz))
            self.psd.setTitle(f"step {1.0 / self.step_hz:.2f} s ({self.step_hz:.2f} Hz)",
                              size="8pt")
        elif not len(f):
            self.psd.setTitle(f"no spectrum yet (needs {MIN_PSD_TICKS} ticks)", size="8pt")
        else:  # an irregular load (inference) has no step to mark
            self.psd.setTitle("no steady step", size="8pt")


class ResidualPanel(Panel):
    """Twin-versus-device residuals of a node (measured minus twin) with the tolerance band.

    One signal at a time, chosen in the panel's header; the band is the scenario's
    ``tolerance`` for that signal, and the header counts the ticks outside it.
    """

    def __init__(self, data: Follower, node: str, assets: Sequence[Asset]) -> None:
        super().__init__(f"{node} · residuals", data)
        self.choices = [(a, s) for a in assets for s in a.residuals]
        self.combo = QtWidgets.QComboBox()
        self.combo.addItems([f"{a.name}.{s}" for a, s in self.choices])
        self.outside = QtWidgets.QLabel()
        self.header.addWidget(self.outside)
        self.header.addWidget(self.combo)
        self.plot = self.time_plot(0, label="measured − twin")
        self.band = pg.LinearRegionItem(orientation="horizontal", movable=False,
                                        brush=(46, 139, 87, 45), pen=pg.mkPen("#2e8b57"))
        self.band.setZValue(-10)
        self.plot.addItem(self.band, ignoreBounds=True)
        self.line(self.plot, "residual", Series(), "#1f77b4")
        # the first signal with a tolerance, else the first of the usual suspects
        usual = ("voltage_v", "p_w", "p_ac_w", "soc")
        default = next((i for i, (a, s) in enumerate(self.choices) if s in a.tolerance),
                       next((i for i, (a, s) in enumerate(self.choices) if s in usual), 0))
        self.combo.setCurrentIndex(default)
        self.combo.currentIndexChanged.connect(self.select)
        self.select(default)

    def select(self, index: int) -> None:
        """Show the residual of choice ``index``."""
        asset, signal = self.choices[index]
        series = self.data.series(asset.path(signal, "residual"))
        item = self.items["residual"]
        self._lines = [(item, series)]
        self.tolerance = asset.tolerance.get(signal, math.nan)
        self.band.setVisible(math.isfinite(self.tolerance))
        if math.isfinite(self.tolerance):
            self.band.setRegion((-self.tolerance, self.tolerance))
        self.plot.setLabel("left", "measured − twin", units=asset.residuals[signal])
        self._outside = 0
        self._counted = 0
        self.outside.setText("no tolerance set")
        self.on_frame(True, -1, self.rows)

    def on_frame(self, redraw: bool, cursor: int, rows: slice) -> None:
        super().on_frame(redraw, cursor, rows)
        if not redraw or not math.isfinite(self.tolerance):
            return
        r = self._lines[0][1].values
        self._outside += int(np.count_nonzero(np.abs(r[self._counted:]) > self.tolerance))
        self._counted = len(r)
        share = self._outside / self._counted if self._counted else 0.0
        self.outside.setText(f"±{self.tolerance:g} · outside {share:.1%}")


class FrequencyPanel(Panel):
    """Bus frequency: the ``freq_hz`` of each node's grid connection and meter, islanded
    (the node's own bus, from its swing equation) or grid-connected (the grid's: nominal in
    the twin and the emulators, what a real meter measures)."""

    def __init__(self, data: Follower, sources: Sequence[Asset]) -> None:
        super().__init__("bus frequency", data)
        plot = self.time_plot(0, label="frequency", units="Hz", si_prefix=False)
        self.set_legend([(a.key, CYCLE[i % len(CYCLE)]) for i, a in enumerate(sources)])
        for i, a in enumerate(sources):
            self.line(plot, a.key, data.series(a.path("freq_hz")), CYCLE[i % len(CYCLE)])


#: edges of the lateness histogram [ms]
LATENESS_EDGES_MS = np.array([0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100,
                              200, 500, np.inf])


class TimingPanel(Panel):
    """Real-time factor (simulated over wall-clock seconds, over the last second of
    simulated time) and the histogram of tick lateness."""

    def __init__(self, data: Follower, dt_s: float, realtime: bool,
                 late_after_s: float) -> None:
        super().__init__("timing · real-time factor and lateness", data)
        self.wall = data.series("wall")
        self.lateness = data.series("timing/lateness")
        self.rtf = Series()
        self._span = max(1, round(1.0 / dt_s))
        self.line(self.time_plot(0, 0, label="real-time factor", si_prefix=False),
                  "real-time factor", self.rtf, "#1f77b4")
        self.hist = self.graphics.addPlot(row=0, col=1)
        self.hist.setLabel("bottom", "lateness [ms]")
        self.hist.setLabel("left", "ticks")
        self.hist.hideButtons()
        self.hist.setMouseEnabled(x=False, y=False)
        self.counts = np.zeros(len(LATENESS_EDGES_MS) - 1, dtype=np.int64)
        labels = [f"{e:g}" for e in LATENESS_EDGES_MS[:-1]]
        self.hist.getAxis("bottom").setTicks([[(i - 0.5, s) for i, s in enumerate(labels)
                                               if i % 3 == 0], []])
        self.items["lateness histogram"] = pg.BarGraphItem(
            x=np.arange(len(self.counts)), height=self.counts, width=0.85, brush="#6b7b8c")
        self.hist.addItem(self.items["lateness histogram"])
        self.graphics.ci.layout.setColumnStretchFactor(0, 3)
        self.graphics.ci.layout.setColumnStretchFactor(1, 2)
        self.realtime = realtime
        self.late_after_ms = late_after_s * 1e3
        self.late = 0
        self.max_ms = 0.0

    def on_frame(self, redraw: bool, cursor: int, rows: slice) -> None:
        if not redraw:
            return
        t, wall = self.data.time.values, self.wall.values
        k = np.arange(len(self.rtf), len(t))
        j = np.maximum(k - self._span, 0)
        dw = wall[k] - wall[j]
        self.rtf.extend(np.divide(t[k] - t[j], dw, out=np.full(len(k), np.nan),
                                  where=dw > 0))
        late_ms = np.nan_to_num(self.lateness.values[int(self.counts.sum()):] * 1e3)
        idx = np.searchsorted(LATENESS_EDGES_MS, np.clip(late_ms, 0.0, None), side="right") - 1
        self.counts += np.bincount(idx, minlength=len(self.counts))[: len(self.counts)]
        if len(late_ms):
            self.late += int(np.count_nonzero(late_ms > self.late_after_ms))
            self.max_ms = max(self.max_ms, float(late_ms.max()))
        self.items["lateness histogram"].setOpts(height=self.counts)
        self.hist.setTitle(f"max {self.max_ms:.2f} ms · {self.late} late "
                           f"(> {self.late_after_ms:g} ms)" if self.realtime
                           else "not paced in real time", size="8pt")
        super().on_frame(redraw, cursor, rows)


class HealthPanel(Panel):
    """Device health: each asset's quality flag over time, faults and device errors as
    markers, and how long before the cursor each asset last gave a good reading.

    The quality image is rebuilt for the ticks in view with at most ``columns`` columns, each
    showing the worst flag of the ticks it covers (peak downsampling of flags).
    """

    def __init__(self, data: Follower, assets: Sequence[Asset], columns: int = 1500) -> None:
        legend = " ".join(f"<span style='color:{c}'>■ {n}</span>"
                          for n, c in zip(QUALITY_NAMES, QUALITY_COLORS, strict=True))
        super().__init__(f"device health</b> &nbsp; {legend}<b>", data)
        self.assets = list(assets)
        self.quality = [data.series(f"quality/{a.node}/{a.name}") for a in self.assets]
        self.events = data.table("events")
        self.columns = columns
        self.plot = self.time_plot(0)
        self.plot.enableAutoRange(y=False)
        self.plot.setYRange(0, len(self.assets) + 1, padding=0.02)
        self.plot.getAxis("left").setWidth(175)
        self.image = pg.ImageItem(axisOrder="row-major")
        lut = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in QUALITY_COLORS],
                       dtype=np.uint8)
        self.image.setLookupTable(lut)
        self.plot.addItem(self.image)
        self.items["quality"] = self.image
        self.markers = pg.ScatterPlotItem(size=10, hoverable=True,
                                          tip=lambda x, y, data: data)
        self.plot.addItem(self.markers)
        self.items["events"] = self.markers
        self._labels_at = -1
        self._events_drawn = -1

    def on_frame(self, redraw: bool, cursor: int, rows: slice) -> None:
        t = self.data.time.values
        if not len(t):
            return
        if redraw or cursor != self._labels_at:
            self._label_rows(t, cursor)
        if redraw:
            self._draw_quality(t, rows)
        if self.events is not None and len(self.events) != self._events_drawn:
            self._draw_events()

    def _label_rows(self, t: np.ndarray, cursor: int) -> None:
        """Name each row with how long before the cursor the asset last read ``ok``."""
        self._labels_at = cursor
        labels = []
        for i, (a, q) in enumerate(zip(self.assets, self.quality, strict=True)):
            ok = _last_ok(q.values, cursor + 1)
            seen = f"{t[cursor] - t[ok]:.1f} s ago" if ok >= 0 else "never ok"
            labels.append((i + 0.5, f"{a.key} · {seen}"))
        labels.append((len(self.assets) + 0.5, "run"))
        #: the rows' names, bottom up, with the last good reading before the cursor
        self.row_labels = [label for _, label in labels]
        self.plot.getAxis("left").setTicks([labels, []])

    def _draw_quality(self, t: np.ndarray, rows: slice) -> None:
        i0, i1, _ = rows.indices(len(t))
        if i1 - i0 < 1 or not self.assets:
            return
        q = health_code(np.vstack([s.values[i0:i1] for s in self.quality]))
        step = max(1, math.ceil((i1 - i0) / self.columns))
        if step > 1:
            q = np.maximum.reduceat(q, np.arange(0, i1 - i0, step), axis=1)
        self.image.setImage(q, levels=(0, len(QUALITY_COLORS) - 1), autoLevels=False)
        dt = t[1] - t[0] if len(t) > 1 else 1.0
        self.image.setRect(QtCore.QRectF(t[i0], 0.0, t[i1 - 1] + dt - t[i0], len(self.assets)))

    def _draw_events(self) -> None:
        """A marker per event, on the row of the device its message names first (the bench
        writes ``node.asset``, the emulators ``node/asset``: both), else on the run's row."""
        ev = self.events.values
        self._events_drawn = len(ev)
        rows = {a.key: i for i, a in enumerate(self.assets)}
        devices = set(rows)
        spots = []
        for e in ev:
            kind, message = e["kind"].decode(), e["message"].decode(errors="replace")
            device, rest = split_device(message, devices)
            row = rows.get(device, len(self.assets))
            symbol, color = _event_style(kind)
            said = f"{device}: {rest}" if device else rest
            spots.append({"pos": (float(e["t"]), row + 0.5), "symbol": symbol,
                          "brush": color, "pen": pg.mkPen("k"),
                          "data": f"{e['t']:.2f} s  {kind}: {said}"})
        self.markers.setData(spots)


def _last_ok(flags: np.ndarray, end: int) -> int:
    """Index of the last ``ok`` flag before ``end``, looking back a chunk at a time; -1 if none."""
    start = max(0, end - 4096)
    while True:
        ok = np.flatnonzero(flags[start:end] == 0)
        if len(ok):
            return start + int(ok[-1])
        if start == 0:
            return -1
        end, start = start, max(0, start - 65536)


def _event_style(kind: str) -> tuple[str, str]:
    if kind.startswith("fault"):
        return "x", "#c62828"
    if kind.startswith(("device_", "device.")):  # the bench's, a client back-end's
        return "t", "#ef6c00"
    if kind == "catch_up":
        return "d", "#7b1fa2"
    return "o", "#9e9e9e"


class MarketPanel(Panel):
    """The market: order and trade prices over time, and each node's settled money.

    Prices are in currency per kWh and money in currency (the tables hold micro-units per
    Wh and micro-units, as the ledger does); each node's line is the money it received
    (as a seller) minus what it paid (as a buyer), accumulated over settlements.
    """

    def __init__(self, data: Follower) -> None:
        super().__init__("market · prices, trades and settlements", data)
        self.orders = data.table("market/orders")
        self.trades = data.table("market/trades")
        self.settlements = data.table("market/settlements")
        # the scenario names no currency ([market] prices are micro-units of it per Wh)
        prices = self.time_plot(0, 0, label="price [currency/kWh]", si_prefix=False)
        self.money = self.time_plot(0, 1, label="settled [currency]", si_prefix=False)
        self._legend = []
        for label, symbol, mark in (("bids", "t1", "▲"), ("asks", "t", "▼"),
                                    ("trades", "o", "●")):
            item = pg.ScatterPlotItem(symbol=symbol, brush=ORDER_COLORS[label], pen=None,
                                      size=7, hoverable=True)
            prices.addItem(item)
            self.items[label] = item
            self._legend.append((f"{label} {mark}", ORDER_COLORS[label]))
        self.set_legend(self._legend)
        self._seen = (-1, -1, -1)

    def on_frame(self, redraw: bool, cursor: int, rows: slice) -> None:
        tables = (self.orders, self.trades, self.settlements)
        seen = tuple(-1 if t is None else len(t) for t in tables)
        if seen == self._seen:
            return
        self._seen = seen
        if self.orders is not None:
            o = self.orders.values
            bid = np.isin(np.char.lower(o["side"]), (b"buy", b"bid"))
            for label, side in (("bids", o[bid]), ("asks", o[~bid])):
                self.items[label].setData(side["t"], side["price_micro_per_wh"] / 1e3)
        if self.trades is not None:
            tr = self.trades.values
            size = 5 + 10 * np.sqrt(tr["energy_wh"] / max(1, tr["energy_wh"].max(initial=1)))
            self.items["trades"].setData(tr["t"], tr["price_micro_per_wh"] / 1e3, size=size)
        if self.settlements is not None:
            s = self.settlements.values
            for i, node in enumerate(dict.fromkeys([*s["seller"], *s["buyer"]])):
                mine = s[(s["seller"] == node) | (s["buyer"] == node)]
                net = np.where(mine["seller"] == node, mine["amount_micro"],
                               -mine["amount_micro"])
                label = f"settled {node.decode()}"
                item = self.items.get(label)
                if item is None:
                    color = SETTLED_COLORS[i % len(SETTLED_COLORS)]
                    item = self.money.plot(pen=pg.mkPen(color), symbol="o", symbolSize=4,
                                           symbolBrush=color)
                    self.items[label] = item
                    self._legend.append((f"{node.decode()} settled", color))
                    self.set_legend(self._legend)
                item.setData(mine["t"], np.cumsum(net) / 1e6)
