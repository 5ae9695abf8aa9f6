"""The printed summary: energies per node from the recording, and what it does not know."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run
from bench.summary import figures, format_figures

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("summary") / "run.h5"
    assert main(["run", str(SCENARIO), "--mode", "twin", "--duration", "10", "--out",
                 str(out), "--quiet"]) == 0
    return out


def test_the_node_balance_closes(recording: Path) -> None:
    """PV + battery out + grid in = racks + battery in + grid out, within the losses."""
    with open_run(recording) as run:
        fig = figures(run)
    f = fig.nodes["north"]
    sources = f.pv_kwh + f.battery_discharge_kwh + f.grid_import_kwh
    sinks = f.rack_kwh + f.battery_charge_kwh + f.grid_export_kwh
    assert sources == pytest.approx(sinks, rel=0.02)
    assert f.missing_ticks == 0
    # south has no PV: nothing to report there, rather than a measured zero
    assert math.isnan(fig.nodes["south"].pv_kwh)
    assert format_figures(fig).splitlines()[2].split()[1] == "-"


def test_a_lost_meter_and_a_missing_signal_are_said(recording: Path, tmp_path: Path) -> None:
    copy = tmp_path / "gaps.h5"
    shutil.copy(recording, copy)
    with h5py.File(copy, "a") as f:
        p = f["nodes/north/meter/p_w"]
        p[50:150] = np.nan
        n = len(f["time"])
        del f["nodes/north/rack/p_w"]
    with open_run(copy) as run:
        fig = figures(run)
    text = format_figures(fig)
    assert math.isnan(fig.nodes["north"].rack_kwh)
    assert fig.nodes["north"].missing_ticks == 100
    assert f"ticks without a reading: north 100 of {n}; those nodes' energies cover the " \
           "other ticks only" in text
    north = next(line for line in text.splitlines() if line.startswith("north"))
    assert north.split()[6] == "-"  # racks
