"""``gridloop report`` of a replay judges the scenario's checks on what the replay produced (the
twin under the replayed controller), not on the measurements of the run it replayed, which
were only that controller's inputs; and says it is a replay, of which recording, under which
controller.

    north: PV -> inverter, battery, GPU rack (training), meter --- grid
    south: battery, GPU rack (inference), meter ------------------ grid

The recorded run (gpu_smoothing) keeps south's grid import under 25 kW with its battery;
a replay under ``passthrough`` leaves the battery idle, and the rack's peaks reach the grid.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run
from bench.report import replayed

TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"

CHECKS = """
[checks]
"south.meter.p_w" = { max = 25000 }
"north.battery.voltage_v" = { residual = 2.0 }
"""


def _checks(summary: Path) -> dict[str, str]:
    """The verdict of each check in a report's summary, by the check's text."""
    lines = summary.read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("check "))
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("checks: "):
            break
        what = line.split("  ")[0]
        rows[what] = line.rpartition("  ")[2] if "n/a" not in line else \
            line[line.index("n/a"):]
    return rows


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report_replay")
    scenario = folder / "smooth.toml"
    scenario.write_text(TWO_NODES.read_text() + CHECKS)
    out = folder / "run.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet", "--set",
                 "run.duration_s=3", "--set", "market.kind=none"]) == 0  # its checks pass
    return out


def test_report_of_a_replay_judges_the_checks_on_the_replayed_twin(
        recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "passthrough.h5"
    # the replay breaks the grid bound (below): it fails, as a run that breaks it does
    assert main(["replay", str(recorded), "--controller", "passthrough", "--out", str(other),
                 "--quiet"]) == 1
    same = tmp_path / "same.h5"
    assert main(["replay", str(recorded), "--out", str(same), "--quiet"]) == 0
    for rec in (recorded, other, same):
        assert main(["report", str(rec), "--out", str(tmp_path / f"{rec.stem}-report")]) == 0
    capsys.readouterr()
    grid = "south.meter.p_w <= 25000 W"
    residual = "|north.battery.voltage_v - twin| <= 2 V"

    # the recorded run: its measurements, within the bound
    assert _checks(tmp_path / "run-report" / "summary.txt") == {grid: "ok", residual: "ok"}

    # the replay under passthrough: the twin's grid power breaks the bound it held
    text = (tmp_path / "passthrough-report" / "summary.txt").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("replay of run.h5 under passthrough: ")
    assert ("checks judged on the replay: the twin under passthrough, not the measurements "
            "recorded in run.h5") in lines
    with h5py.File(other, "r") as f:
        twin = f["nodes/south/meter/twin/p_w"][:]
        measured = f["nodes/south/meter/p_w"][:]
    assert np.nanmax(measured) <= 25000 < np.nanmax(twin)
    verdicts = _checks(tmp_path / "passthrough-report" / "summary.txt")
    assert verdicts[grid].startswith("FAIL (")
    assert verdicts[residual] == "n/a (a replay: no device ran under passthrough)"
    row = next(x for x in lines if x.startswith(grid))
    assert f"{np.nanmax(twin):.6g}" in row.split()
    assert "checks: 0 of 1 passed, 1 not applicable" in lines
    # what the figures read of the replay: its twin under the plain names, no device values
    with open_run(other) as run:
        view = replayed(run)
        np.testing.assert_array_equal(view.signal("south", "meter", "p_w"), twin)
        assert not view.has("south", "meter", "p_w", "twin")
        np.testing.assert_array_equal(view.signal("north", "grid", "p_w"),
                                      run.signal("north", "grid", "p_w"))  # no device

    # the replay under the recorded controller: the twin under it holds the bound too
    verdicts = _checks(tmp_path / "same-report" / "summary.txt")
    assert verdicts == {grid: "ok",
                        residual: "n/a (a replay: no device ran under gpu_smoothing)"}
