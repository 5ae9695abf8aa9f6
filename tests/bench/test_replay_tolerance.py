"""``gridloop replay``'s default tolerance is 2 % of the recorded signal's range (its
resolution, and a rounding floor, at least), not a share of its magnitude: a 50 Hz frequency
whose nadir moves by tens of mHz diverges, and the scenario's ``tolerance`` still overrides
it; the recorded controller replayed still diverges nowhere."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.replay import _tolerance

ISLANDED = Path(__file__).resolve().parents[2] / "experiments" / "islanded" / "scenario.toml"


def _rows(out: str) -> dict[str, list[str]]:
    """The diverging rows of a replay's table, by signal."""
    return {r[1]: r for r in (line.split() for line in out.splitlines())
            if len(r) > 2 and r[0] in ("setpoint", "signal")}


def test_the_default_is_set_by_the_range_not_the_offset() -> None:
    t = np.linspace(0.0, 2.0, 401)
    dip = 50.0 - 0.49 * np.sin(np.pi * t / 2.0) ** 2       # 50 Hz down to 49.51 Hz
    assert _tolerance(dip, None) == pytest.approx(0.02 * 0.49, rel=1e-3)  # not 0.25 Hz
    # the same swing on another offset: the same tolerance
    assert _tolerance(dip - 50.0, None) == pytest.approx(_tolerance(dip, None))
    # a state of charge that moved by 0.01: 2e-4, not 0.5 % of 0.7
    assert _tolerance(np.linspace(0.70, 0.69, 501), None) == pytest.approx(2e-4)
    # a signal that stayed put: a rounding floor only (ppm of its magnitude, at least 1e-6)
    assert _tolerance(np.full(20, 12400.0), None) == pytest.approx(0.0124)
    assert _tolerance(np.full(20, 0.7), None) == pytest.approx(1e-6)
    # a coarse signal: its resolution (the smallest step it took)
    assert _tolerance(np.array([49.9, 50.0, 50.1, 50.0]), None) == pytest.approx(0.1)
    assert _tolerance(np.full(3, np.nan), None) == pytest.approx(1e-6)
    assert _tolerance(np.full(20, 12400.0), 0.3) == 0.3  # the scenario's, as given


@pytest.fixture(scope="module")
def startup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two seconds of the islanded lab with the rack starting at 0.5 s (its frequency dips
    to about 49.51 Hz); and the same with a scenario tolerance of 0.2 Hz on the frequency."""
    folder = tmp_path_factory.mktemp("islanded")
    out = []
    for name, extra in (("isl.h5", []),
                        ("isl_tol.h5", ["--set", "island.grid.tolerance={ freq_hz = 0.2 }"])):
        path = folder / name
        assert main(["run", str(ISLANDED), "--out", str(path), "--quiet", "--set",
                     "run.duration_s=2", "--set", "profiles.startup.options.start_s=0.5",
                     *extra]) == 0
        out.append(path)
    return out[0], out[1]


def test_a_frequency_nadir_that_moves_is_a_divergence_the_same_controller_none(
        startup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec, with_tolerance = startup
    capsys.readouterr()
    droop = tmp_path / "droop.h5"
    assert main(["replay", str(rec), "--controller", "droop", "--out", str(droop),
                 "--quiet"]) == 0
    rows = _rows(capsys.readouterr().out)
    with h5py.File(rec, "r") as a, h5py.File(droop, "r") as b:
        f_rec, f_new = a["nodes/island/grid/freq_hz"][:], b["nodes/island/grid/freq_hz"][:]
    # the nadir moved by some 57 mHz, far under 0.5 % of 50 Hz
    assert 0.03 < f_new.min() - f_rec.min() < 0.1
    row = rows["island.grid.freq_hz"]
    assert float(row[-1]) == pytest.approx(0.02 * (f_rec.max() - f_rec.min()), rel=1e-3)
    assert float(row[-2]) > float(row[-1])
    # the scenario's tolerance on the signal still decides
    capsys.readouterr()
    assert main(["replay", str(with_tolerance), "--controller", "droop", "--out",
                 str(tmp_path / "droop_tol.h5"), "--quiet"]) == 0
    assert "island.grid.freq_hz" not in _rows(capsys.readouterr().out)
    # the recorded controller replayed, under the tighter default: still nowhere
    assert main(["replay", str(rec), "--out", str(tmp_path / "same.h5"), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("no divergence")
