"""``gridloop replay``: a measured signal diverges only where the twin under the new setpoints
is *further* from the recorded plant than the recorded twin was; a controller that brings the
twin closer to the device is no divergence, however much the twin moved.

The recording is real: an emulated battery whose cells hold half the twin's charge, charged
at 50 kW, so the device's state of charge climbs twice as fast as the twin's.  Replayed at
100 kW, the twin's climbs as fast as the device's (closer); replayed at 0 W it stays put
(further)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main

HALF = """
[run]
name = "half"
dt_s = 0.1
duration_s = 10
seed = 2
mode = "emulated"
[controller]
name = "schedule"
options = { "lab.battery.p_set_w" = [[0, -50000.0]] }
[nodes.lab.battery]
kind = "battery"
initial = { soc = 0.6 }
emulator_scale = { capacity_ah = 0.5 }
"""

SOC = "lab.battery.soc"


def _rows(out: str) -> dict[str, list[str]]:
    """The diverging rows of a replay's table, by signal."""
    return {r[1]: r for r in (line.split() for line in out.splitlines())
            if len(r) > 2 and r[0] in ("setpoint", "signal")}


def _soc_residual(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["nodes/lab/battery/residual/soc"][:]


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("half")
    (folder / "half.toml").write_text(HALF)
    out = folder / "half.h5"
    assert main(["run", str(folder / "half.toml"), "--out", str(out), "--quiet"]) == 0
    return out


def _replay(rec: Path, out: Path, p_set_w: float, capsys: pytest.CaptureFixture
            ) -> dict[str, list[str]]:
    capsys.readouterr()
    assert main(["replay", str(rec), "--controller", "passthrough", "--option",
                 f"lab.battery.p_set_w={p_set_w}", "--out", str(out), "--quiet"]) == 0
    return _rows(capsys.readouterr().out)


def test_a_twin_brought_closer_to_the_device_does_not_diverge(
        half: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "closer.h5"
    rows = _replay(half, out, -100000.0, capsys)
    old, new = _soc_residual(half), _soc_residual(out)
    # the recorded twin lagged the device by about 0.1 %; the replayed one follows it
    assert abs(old[-1]) > 0.001 and abs(new[-1]) < abs(old[-1]) / 5
    # the twin moved by far more than the tolerance (0.0001, the register's resolution),
    # towards the device: not a divergence
    assert np.nanmax(np.abs(new - old)) > 5 * 0.0001
    assert SOC not in rows
    # the setpoint it changed still is one
    assert "lab.battery.p_set_w" in rows


def test_a_twin_moved_further_from_the_device_diverges(
        half: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "further.h5"
    rows = _replay(half, out, 0.0, capsys)
    old, new = _soc_residual(half), _soc_residual(out)
    assert abs(new[-1]) > abs(old[-1]) + 0.0005
    row = rows[SOC]
    # how much further, at most: what the table says, over the tolerance
    further = float(np.nanmax(np.abs(new) - np.abs(old)))
    assert float(row[-2]) == pytest.approx(further, rel=1e-3)
    assert float(row[-2]) > float(row[-1]) == pytest.approx(0.0001)
