"""What a reader of a recording is told, on a real emulated run of the two-node scenario
whose south meter never answers (a ``timeout`` fault card on Modbus TCP) and whose nodes
trade: the device lines do not send the reader to check a unit id (a wrong unit id gets
exception 0x0B on TCP, never silence), every column of the summary table names its unit
(SOC in %, as the view and ``soc.png``), ``power_flows.png`` gives each kind of asset one
colour in every panel and marks the device that gave no reading, and the view's market
panel names the price's unit and gives no two legend entries one colour.

The figures are read from the figure objects and from the PNG files and the view's
screenshot, pixel by pixel."""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PySide6 import QtCore, QtGui

from bench import report
from bench.cli import main

from .conftest import TWO_NODES
from .kit import report_figures

pytestmark = pytest.mark.slow

#: the report's dpi (bench.report._save), which maps the figure to the PNG's pixels
DPI = 110


@pytest.fixture(scope="module")
def silent_meter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The recording of the run and the warnings the run gave."""
    tmp = tmp_path_factory.mktemp("silent_meter")
    text = TWO_NODES.read_text().replace(
        '[nodes.south.meter]\nkind = "meter"\n',
        '[nodes.south.meter]\nkind = "meter"\nfaults = [{ timeout = true }]\n')
    assert "timeout = true" in text
    scenario = tmp / "tn.toml"
    scenario.write_text(text)
    out = tmp / "tn.h5"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["run", str(scenario), "--out", str(out), "--quiet",
                     "--set", "run.duration_s=4.5", "--set", "run.deadline_s=0.05"])
    assert code == 1  # a device that never answered fails the run
    return out, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def reported(silent_meter: tuple[Path, list[str]],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Figure]]:
    """The report's folder and its figures, by file name."""
    out = tmp_path_factory.mktemp("report")
    return out, report_figures(silent_meter[0], out)


# -- the silent TCP meter ------------------------------------------------------------------


def test_the_silent_tcp_meter_is_not_sent_to_check_its_unit_id(
        silent_meter: tuple[Path, list[str]], reported: tuple[Path, dict[str, Figure]]
        ) -> None:
    _, said = silent_meter
    out, _ = reported
    run_lines = [x for x in said if "south.meter" in x and "no answer" in x]
    with open(out / "events.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["device"] == "south.meter"]
    meter_rows = [r for r in rows if r["kind"] in ("device_open_failed", "device_timeout")]
    timeline = [x for x in (out / "summary.txt").read_text().splitlines()
                if "south.meter" in x and "device_" in x]
    assert run_lines and meter_rows and timeline, (said, rows)
    assert meter_rows[0]["message"].startswith("no answer from its emulator"), meter_rows
    for line in [*run_lines, *(r["message"] for r in rows), *timeline]:
        assert "unit id" not in line and "nothing answers" not in line, line


# -- the summary table ---------------------------------------------------------------------

def _table(summary: str) -> tuple[str, list[str], dict[str, list[str]]]:
    """The header's line of names, its line of units (one per column), and the rows."""
    lines = summary.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("node "))
    rows = {}
    for line in lines[at + 2:]:
        if line.startswith(("north ", "south ")):
            rows[line.split()[0]] = line.split()[1:]
    return lines[at], lines[at + 1].split(), rows


def test_every_column_of_the_summary_names_its_unit_and_soc_is_in_percent(
        silent_meter: tuple[Path, list[str]], reported: tuple[Path, dict[str, Figure]]
        ) -> None:
    out, _ = reported
    names, units, rows = _table((out / "summary.txt").read_text())
    assert units == ["kWh"] * 6 + ["kW", "kWh", "%"], units
    assert re.fullmatch(r"node +PV +batt out +batt in +grid in +grid out +racks +peak +thru +SOC",
                        names), names
    with h5py.File(silent_meter[0]) as h:
        for node in ("north", "south"):
            assert len(rows[node]) == len(units), rows[node]
            soc = h[f"nodes/{node}/battery/soc"][:]
            soc = soc[np.isfinite(soc)]
            assert rows[node][-1] == f"{100 * soc[0]:.1f}>{100 * soc[-1]:.1f}"
    # the silent meter: its grid columns have no figure, and the line naming them says so
    # with the names of the header
    assert rows["south"][3:5] == ["-", "-"] and rows["south"][6] == "-"
    gap = next(x for x in (out / "summary.txt").read_text().splitlines()
               if x.startswith("ticks without a reading: south.meter"))
    assert gap.endswith("grid in kWh, grid out kWh, peak kW have no figure"), gap


def test_soc_figure_is_in_percent(silent_meter: tuple[Path, list[str]],
                                  reported: tuple[Path, dict[str, Figure]]) -> None:
    (ax,) = reported[1]["soc.png"].axes
    assert ax.get_ylabel() == "SOC [%]"
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    with h5py.File(silent_meter[0]) as h:
        np.testing.assert_allclose(lines["south.battery"],
                                   100 * h["nodes/south/battery/soc"][:])


# -- power_flows.png -----------------------------------------------------------------------


def _renderer(fig: Figure):
    """A renderer of ``fig`` laid out as the report wrote it."""
    FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _png(path: Path) -> np.ndarray:
    """The PNG's pixels, ``[row, column, rgb]``, top row first."""
    image = QtGui.QImage(str(path)).convertToFormat(QtGui.QImage.Format.Format_RGB888)
    raw = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    rows = raw.reshape(image.height(), image.bytesPerLine())
    return rows[:, : 3 * image.width()].reshape(image.height(), image.width(), 3).copy()


def _ink(pixels: np.ndarray) -> np.ndarray:
    """The strongest colour among ``pixels`` as ink on white (``255 - rgb``): a thin line is
    blended with the white around it, which scales this vector but keeps its direction."""
    ink = 255.0 - pixels.reshape(-1, 3).astype(float)
    return ink[ink.sum(axis=1).argmax()]


def _same_hue(ink: np.ndarray, colour: str) -> bool:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    want = 255.0 - rgb
    return float(ink @ want / (np.linalg.norm(ink) * np.linalg.norm(want))) > 0.995


def test_power_flows_give_each_kind_one_colour_and_mark_the_silent_meter(
        reported: tuple[Path, dict[str, Figure]]) -> None:
    out, figs = reported
    fig = figs["power_flows.png"]
    north, south = fig.axes[:2]
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()}
               for ax in (north, south)]
    assert set(colours[0]) == {"battery (battery)", "inverter (inverter)", "meter (meter)",
                               "rack (gpu_rack)"}
    # south's meter never answered: said in its entry (north's, which answered, is plain)
    assert set(colours[1]) == {"battery (battery)", "meter (meter, no readings)",
                               "rack (gpu_rack)"}
    for kind, label in (("battery", "battery (battery)"), ("gpu_rack", "rack (gpu_rack)"),
                        ("meter", "meter (meter)")):
        south_label = "meter (meter, no readings)" if kind == "meter" else label
        assert colours[0][label] == colours[1][south_label] == report.KIND_COLORS[kind]
    assert len(set(colours[0].values())) == 4  # four kinds, four colours
    # the PNG: each legend entry's line is drawn in its kind's colour, in both panels
    shot = _png(out / "power_flows.png")
    renderer = _renderer(fig)
    height = shot.shape[0]
    checked = 0
    for ax in (north, south):
        legend = ax.get_legend()
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True):
            box = handle.get_window_extent(renderer)
            top, bottom = int(height - box.y1) - 2, int(height - box.y0) + 3
            patch = shot[top:bottom, int(box.x0) + 2:int(box.x1) - 1]
            kind = re.search(r"\((\w+)", text.get_text()).group(1)
            own = report.KIND_COLORS[kind]
            assert _same_hue(_ink(patch), own), (text.get_text(), patch)
            others = set(report.KIND_COLORS.values()) - {own}
            assert not any(_same_hue(_ink(patch), c) for c in others), text.get_text()
            checked += 1
    assert checked == 7


# -- the view's market panel ---------------------------------------------------------------


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])


def _blobs(region: np.ndarray, colour: str) -> int:
    """Separate patches of exactly ``colour`` (within 2 per channel) in ``region``: one per
    legend square drawn in it."""
    from scipy import ndimage

    mask = (np.abs(region.astype(int) - _rgb(colour)).max(axis=2) <= 2)
    _, count = ndimage.label(mask)
    return int(count)


@pytest.mark.qt
def test_the_market_legend_gives_no_two_entries_one_colour_and_prices_a_unit(
        silent_meter: tuple[Path, list[str]], tmp_path: Path) -> None:
    from bench.view.app import ViewWindow, application
    from bench.view.panels import MarketPanel

    application(offscreen=True)
    win = ViewWindow(silent_meter[0])
    try:
        shot_path = win.save_screenshot(tmp_path / "view.png")
        (market,) = [p for p in win.panels if isinstance(p, MarketPanel)]
        prices, money = market.time_plots
        assert prices.getAxis("left").labelText == "price [currency/kWh]"
        assert money.getAxis("left").labelText == "settled [currency]"
        entries = re.findall(r"color:(#[0-9a-f]{6})'>■</span> ([^&<]+)",
                             market.legend.text())
        labels = [label.strip() for _, label in entries]
        assert labels[:3] == ["bids ▲", "asks ▼", "trades ●"]
        assert "north settled" in labels, labels  # the nodes settled money
        corner = market.legend.mapTo(win, QtCore.QPoint(0, 0))
        legend_size = market.legend.size()
        shot = _png(shot_path)
        assert shot.shape[1] == win.width()  # one image pixel per window pixel
        region = shot[corner.y():corner.y() + legend_size.height(),
                      corner.x():corner.x() + legend_size.width()]
        colours = [colour for colour, _ in entries]
        assert len(set(colours)) == len(colours), entries
        # one square per coloured entry in its colour: no other entry drawn in it (the dark
        # grey of trades is also the text's antialiasing, so it is not counted)
        for colour, label in entries:
            if np.ptp(_rgb(colour)) > 40:
                assert _blobs(region, colour) == 1, (label, colour, entries)
    finally:
        win.close()
        win.run.close()
