"""The printed summary: energies per node from the recording, and what it does not know."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.errors import DeviceWarning
from bench.recording import open_run
from bench.summary import figures, format_figures

from .kit import dc_node

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
    assert format_figures(fig).splitlines()[3].split()[1] == "-"


def test_a_lost_meter_and_a_missing_signal_are_said(recording: Path, tmp_path: Path) -> None:
    """Ticks without a reading are counted, and the line names exactly the columns they
    leave short: here only peak kW, since the meter's counters span its gap."""
    with open_run(recording) as run:
        whole = figures(run).nodes["north"]
    copy = tmp_path / "gaps.h5"
    shutil.copy(recording, copy)
    with h5py.File(copy, "a") as f:
        for name in ("p_w", "e_import_wh", "e_export_wh"):  # what a timeout leaves
            f[f"nodes/north/meter/{name}"][50:150] = np.nan
        n = len(f["time"])
        t = f["time"][:]
        del f["nodes/north/rack/p_w"]
    with open_run(copy) as run:
        fig = figures(run)
    text = format_figures(fig)
    f = fig.nodes["north"]
    assert math.isnan(f.rack_kwh)
    assert f.missing_ticks == 100
    # the counters' rise: the whole run's grid energy, not the ticks the meter answered
    assert f.grid_import_kwh == pytest.approx(whole.grid_import_kwh, rel=1e-9)
    assert f.grid_export_kwh == pytest.approx(whole.grid_export_kwh, rel=1e-9)
    assert f"ticks without a reading: north.meter 100 of {n}; peak kW covers the other " \
           "ticks only\n" in text + "\n"
    assert ("north: grid in and grid out are the rise of north.meter's energy counters "
            "(e_import_wh, e_export_wh), which count across its 100 ticks without a power "
            "reading\n") in text + "\n"
    north = next(line for line in text.splitlines() if line.startswith("north"))
    assert north.split()[6] == "-"  # racks
    # the meter lost for good before the end: its counters cover up to its last reading
    with h5py.File(copy, "a") as h:
        for name in ("p_w", "e_import_wh", "e_export_wh"):
            h[f"nodes/north/meter/{name}"][180:] = np.nan
    with open_run(copy) as run:
        text = format_figures(figures(run))
    assert f"ticks without a reading: north.meter 120 of {n}; peak kW covers" in text
    assert f"; they cover t = 0.000 to {t[179]:.3f} s only (its first and last readings)" \
        in text
    # a meter without counters: the power over the ticks it answered, those columns named
    with h5py.File(copy, "a") as h:
        del h["nodes/north/meter/e_import_wh"], h["nodes/north/meter/e_export_wh"]
    with open_run(copy) as run:
        fig = figures(run)
    text = format_figures(fig)
    assert fig.nodes["north"].grid_export_kwh < 0.8 * whole.grid_export_kwh
    assert f"ticks without a reading: north.meter 120 of {n}; grid in kWh, grid out kWh, " \
           "peak kW cover the other ticks only" in text
    assert "energy counters" not in text


def test_grid_energies_are_the_meters_counters(recording: Path) -> None:
    """Row k holds the power of the step that ended at t_k, as the meters count it; row 0
    is the start state and adds nothing.  Holding each row forward counted row 0's power."""
    with open_run(recording) as run:
        fig = figures(run)
        for node in ("north", "south"):
            f = fig.nodes[node]
            e_imp = run.signal(node, "meter", "e_import_wh")
            e_exp = run.signal(node, "meter", "e_export_wh")
            assert f.grid_import_kwh * 1e3 == pytest.approx(e_imp[-1] - e_imp[0], rel=1e-9,
                                                            abs=1e-9)
            assert f.grid_export_kwh * 1e3 == pytest.approx(e_exp[-1] - e_exp[0], rel=1e-9,
                                                            abs=1e-9)
        p = run.signal("north", "meter", "p_w")
        assert abs(p[0]) > 1000  # what the old rule added: the start state, for a tick


#: a meter that times out for a second of a three-second emulated run
TIMEOUT = """[run]
dt_s = 0.05
duration_s = 3
seed = 3
mode = "emulated"
deadline_s = 0.04

[controller]
name = "gpu_smoothing"
options = { ramp_limit_w_per_s = 2000.0, soc_target = 0.6 }

""" + dc_node(meter="faults = [{ timeout = true, start_s = 1, stop_s = 2 }]\n")


@pytest.fixture(scope="module")
def timed_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("timeout")
    (folder / "timeout.toml").write_text(TIMEOUT)
    out = folder / "timeout.h5"
    with pytest.warns(DeviceWarning, match="dc.meter: no answer"):
        assert main(["run", str(folder / "timeout.toml"), "--out", str(out), "--quiet"]) == 0
    return out


def run_signal(path: Path, name: str, kind: str) -> np.ndarray:
    with open_run(path) as run:
        return run.signal("dc", "meter", name, kind)


def test_a_meter_timeout_does_not_shorten_the_grid_energy(timed_out: Path) -> None:
    """The meter's counters kept counting while it did not answer: grid in is their rise
    (it was the power integrated over the ticks it answered, a third short)."""
    with open_run(timed_out) as run:
        fig = figures(run)
        p = run.signal("dc", "meter", "p_w")
        e = run.signal("dc", "meter", "e_import_wh")
        e_twin = run.signal("dc", "meter", "e_import_wh", "twin")
        dt = run.dt
    f = fig.nodes["dc"]
    gap = int(np.isnan(p).sum())
    assert 15 <= gap <= 25 and int(np.isnan(e).sum()) == gap
    good = np.flatnonzero(np.isfinite(e))
    assert f.grid_import_kwh * 1e3 == pytest.approx(e[good[-1]] - e[good[0]], rel=1e-12)
    answered = float(np.nansum(np.clip(p[1:], 0, None))) * dt / 3600
    # what the ticks without a power reading imported, by the twin's meter (which answered
    # them): the summary's figure has it, the answered power alone did not
    p_twin = run_signal(timed_out, "p_w", "twin")
    unread = float(np.clip(p_twin[1:], 0, None)[np.isnan(p[1:])].sum()) * dt / 3600
    assert unread > 1.0
    assert f.grid_import_kwh * 1e3 - answered == pytest.approx(unread, abs=1.5)
    # the twin's meter, which never timed out, agrees (the registers count whole Wh)
    assert f.grid_import_kwh * 1e3 == pytest.approx(e_twin[-1] - e_twin[0], abs=2.5)
    text = format_figures(fig)
    assert (f"ticks without a reading: dc.meter {gap} of {fig.ticks}; peak kW covers the "
            "other ticks only") in text
    assert (f"dc: grid in and grid out are the rise of dc.meter's energy counters "
            f"(e_import_wh, e_export_wh), which count across its {gap} ticks without a power "
            "reading") in text


def test_a_device_that_answers_only_with_errors_is_not_said_never_to_have_answered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A meter that answers every read with an exception (as a device with the wrong
    SunSpec models, or at a wrong base address, does) gave no valid reading: the summary
    says that, with the counts by why, not "it never answered" (only a device that timed
    out every tick did not)."""
    scenario = tmp_path / "errors.toml"
    scenario.write_text(TIMEOUT.replace("duration_s = 3", "duration_s = 0.5").replace(
        "{ timeout = true, start_s = 1, stop_s = 2 }", "{ exception_code = 4 }"))
    with pytest.warns(DeviceWarning, match="dc.meter: .*exception 0x04"):
        assert main(["run", str(scenario), "--out", str(tmp_path / "e.h5"), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert ("ticks without a reading: dc.meter 10 of 10 (no valid reading at any tick: "
            "10 error); grid in kWh, grid out kWh, peak kW have no figure") in out, out
    assert "never answered" not in out


def test_the_summary_of_a_replay_is_the_twin_under_the_replayed_controller(
        timed_out: Path, tmp_path: Path) -> None:
    """A replay records the recorded measurements (the controller's inputs) unchanged; what
    happened under the replayed controller is the twin's: the summary's figures are its, and
    its first line says so."""
    out = tmp_path / "passthrough.h5"
    assert main(["replay", str(timed_out), "--controller", "passthrough", "--out", str(out),
                 "--quiet"]) == 0
    with open_run(timed_out) as run:
        recorded = figures(run).nodes["dc"]
    with open_run(out) as run:
        fig = figures(run)
        battery = run.signal("dc", "battery", "p_w", "twin")
        e_twin = run.signal("dc", "meter", "e_import_wh", "twin")
        dt = run.dt
    text = format_figures(fig)
    assert text.splitlines()[0] == ("replay of timeout.h5 under passthrough: energies from "
                                    "the twin (the recorded measurements were only the "
                                    "controller's inputs)")
    f = fig.nodes["dc"]
    assert f.battery_throughput_kwh == pytest.approx(float(np.abs(battery[1:]).sum()) * dt
                                                     / 3.6e6)
    # passthrough left the battery idle; the recorded gpu_smoothing run did not
    assert recorded.battery_throughput_kwh > 5e-4
    assert f.battery_throughput_kwh < 0.2 * recorded.battery_throughput_kwh
    assert f.grid_import_kwh * 1e3 == pytest.approx(e_twin[-1] - e_twin[0], rel=1e-9)
    assert "ticks without a reading" not in text  # the twin missed no tick
    with open_run(timed_out) as run:  # the run's own summary says nothing of the kind
        assert format_figures(figures(run)).startswith("node ")


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
    row = format_figures(fig).splitlines()[2]
    assert "-0.0" not in row and row.split()[1] == "0.000"


ISLAND = """\
[run]
name = "island"
dt_s = 0.05
duration_s = 8
mode = "twin"

[controller]
name = "passthrough"

[profiles.load]
kind = "workload"
generator = "training"
options = { step_s = 1000.0, compute_fraction = 1.0, start_s = 0.0 }

[nodes.island.grid]
kind = "grid"
initial = { islanded = 1 }
override = { governor = { rating_w = 0.0 }, grid_forming = { rating_w = 100000.0, droop_pu = 0.05, tau_s = 0.05 } }

[nodes.island.battery]
kind = "battery"
initial = { soc = 0.0003 }

[nodes.island.rack]
kind = "gpu_rack"
params = "rack_h100_4x8gpu"
profile = "load"
"""


def test_an_island_short_of_power_is_not_said_to_be_at_its_grid_limit(tmp_path: Path) -> None:
    """An islanded battery that runs empty leaves load unserved: the summary says the
    island's sources were at their limits, not that a grid connection's import limit bound
    (it has none)."""
    scenario = tmp_path / "island.toml"
    scenario.write_text(ISLAND)
    out = tmp_path / "island.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        fig = figures(run)
    f = fig.nodes["island"]
    assert f.islanded_unserved_ticks > 0 and f.unserved_kwh > 0
    assert f.import_limited_ticks == 0 and f.export_limited_ticks == 0
    text = format_figures(fig)
    assert "import limit bound" not in text
    assert (f"island: islanded, its sources at their limits: load not served at "
            f"{f.islanded_unserved_ticks}, generation curtailed at 0 of {fig.ticks} ticks") \
        in text
