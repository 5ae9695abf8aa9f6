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


LIMITS = Path(__file__).with_name("scenarios") / "grid_limits.toml"


def _balance(f) -> tuple[float, float]:
    """PV + import + battery out + unserved, and racks + export + battery in + curtailed
    (a figure the node has no asset for counts 0)."""
    def add(*names: str) -> float:
        return sum(0.0 if math.isnan(x := getattr(f, n)) else x for n in names)

    return (add("pv_kwh", "grid_import_kwh", "battery_discharge_kwh", "unserved_kwh"),
            add("rack_kwh", "grid_export_kwh", "battery_charge_kwh", "curtailed_kwh"))


def test_a_binding_grid_limit_is_reported_and_the_balance_closes(tmp_path: Path) -> None:
    out = tmp_path / "limits.h5"
    assert main(["run", str(LIMITS), "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        fig = figures(run)
    f = fig.nodes["lab"]
    assert f.unserved_kwh > 0.01 and f.curtailed_kwh > 0.01
    sources, sinks = _balance(f)
    assert sources == pytest.approx(sinks, rel=1e-3)
    # without them it would not: what the summary used to print
    assert sources - f.unserved_kwh != pytest.approx(sinks - f.curtailed_kwh, rel=0.05)
    text = format_figures(fig)
    assert (f"lab: grid import limit bound at {f.import_limited_ticks} of {fig.ticks} ticks, "
            f"{f.unserved_kwh:.3f} kWh unserved") in text
    assert f"export limit bound at {f.export_limited_ticks} of {fig.ticks} ticks" in text


def test_six_racks_on_the_default_bus_are_unserved_past_its_import_limit(
        tmp_path: Path) -> None:
    """No meter, no grid asset: the bus the twin gives the node (150 kW import) is its grid
    connection, and what it cannot import is unserved."""
    racks = "".join(f'[nodes.lab.r{i}]\nkind = "gpu_rack"\nparams = "rack_h100_4x8gpu"\n'
                    f'profile = "train"\n' for i in range(6))
    scenario = tmp_path / "six.toml"
    scenario.write_text('[run]\ndt_s = 0.1\nduration_s = 3\nmode = "twin"\n'
                        '[profiles.train]\nkind = "workload"\ngenerator = "training"\n'
                        'options = { step_s = 1.0, compute_fraction = 0.7 }\n'
                        + racks)
    out = tmp_path / "six.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        f = figures(run).nodes["lab"]
    assert f.peak_grid_import_kw == pytest.approx(150.0)
    assert f.unserved_kwh > 0.01
    sources, sinks = _balance(f)
    assert sources == pytest.approx(sinks, rel=1e-6)


def test_limits_not_bound_say_nothing(recording: Path) -> None:
    with open_run(recording) as run:
        fig = figures(run)
    assert fig.nodes["north"].unserved_kwh == 0.0
    assert "limit bound" not in format_figures(fig)


def test_an_island_says_what_its_bus_genset_delivered(tmp_path: Path) -> None:
    """Islanded on the default bus, the racks' energy comes from the battery and the bus's
    governed source: the summary names the second, and with it the balance closes."""
    scenario = tmp_path / "island.toml"
    scenario.write_text('[run]\ndt_s = 0.1\nduration_s = 5\nmode = "twin"\n'
                        '[controller]\nname = "droop"\n'
                        '[profiles.train]\nkind = "workload"\ngenerator = "training"\n'
                        'options = { step_s = 1.0, compute_fraction = 0.7 }\n'
                        '[nodes.isl.battery]\nkind = "battery"\n'
                        '[nodes.isl.rack]\nkind = "gpu_rack"\nprofile = "train"\n'
                        '[nodes.isl.grid]\nkind = "grid"\ninitial = { islanded = 1 }\n')
    out = tmp_path / "island.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        fig = figures(run)
    f = fig.nodes["isl"]
    assert f.governor_kwh > 0.001 and f.grid_import_kwh == 0.0
    sources = f.battery_discharge_kwh + f.governor_kwh
    sinks = f.rack_kwh + f.battery_charge_kwh
    assert sources == pytest.approx(sinks, rel=0.05)  # the battery's losses, kinetic energy
    assert (f"isl: islanded, the bus's governed source (a genset) delivered "
            f"{f.governor_kwh:.3f} kWh") in format_figures(fig)


def test_a_figure_that_rounds_to_zero_prints_without_a_sign() -> None:
    from bench.summary import Figures, NodeFigures

    fig = Figures(ticks=1, simulated_s=0.1)
    fig.nodes["n"] = NodeFigures(pv_kwh=-1e-7, peak_grid_import_kw=-0.01)
    row = format_figures(fig).splitlines()[1]
    assert "-0.0" not in row and row.split()[1] == "0.000"
