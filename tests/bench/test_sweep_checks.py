"""A sweep is a CI gate: a point that breaks one of the scenario's ``[checks]`` has failed, as
``gridloop run`` says of the same run (exit status 1), and the sweep says which points and
exits 1."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench.cli import main

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "experiments" / "faults" / "scenario.toml"
CHECKS = '\n[checks]\n"dc.meter.p_w" = { max = 1e9 }\n"dc.battery.soc" = { min = 0.1 }\n'
FAST = ["--fix", "run.mode=twin", "--fix", "run.duration_s=1"]


def _scenario(tmp_path: Path) -> Path:
    path = tmp_path / "faults.toml"
    path.write_text(SCENARIO.read_text() + CHECKS)
    return path


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_point_that_fails_its_checks_fails_the_sweep(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    scenario, out = _scenario(tmp_path), tmp_path / "sw"
    assert main(["sweep", str(scenario), "--set", "dc.battery.initial.soc=0.3,0.6",
                 "--fix", "checks.dc.battery.soc.min=0.5", *FAST, "--workers", "1",
                 "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["gridloop: point 0 (dc.battery.initial.soc=0.3): checks failed: "
                   "dc.battery.soc >= 0.5",
                   f"gridloop: 1 of 2 points failed (see status in {out / 'results.csv'})"]
    rows = _rows(out)
    assert [(r["status"], r["checks_failed"]) for r in rows] == [
        ("checks failed", "dc.battery.soc >= 0.5"), ("ok", "")]
    assert all(Path(r["path"]).is_file() for r in rows)  # both ran to their end
    # the same point alone: `gridloop run` fails it too
    assert main(["run", str(scenario), "--set", "dc.battery.initial.soc=0.3",
                 "--set", "checks.dc.battery.soc.min=0.5", "--set", "run.mode=twin",
                 "--duration", "1", "--out", str(tmp_path / "one.h5"), "--quiet"]) == 1


@pytest.mark.slow
def test_a_sweep_whose_points_pass_their_checks_passes(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", str(_scenario(tmp_path)), "--set", "dc.battery.initial.soc=0.3,0.6",
                 *FAST, "--workers", "1", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert [(r["status"], r["checks_failed"]) for r in _rows(out)] == [("ok", ""), ("ok", "")]


@pytest.mark.slow
def test_a_point_whose_device_never_answered_fails_the_sweep(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A meter that times out on every request: `gridloop run` fails such a run (exit 1),
    and a sweep's point with it failed too (it used to read ``ok``)."""
    from .test_run_outcomes import emulated

    scenario, out = tmp_path / "dc.toml", tmp_path / "sw"
    scenario.write_text(emulated("{ timeout = true }"))
    assert main(["sweep", str(scenario), "--set", "dc.battery.initial.soc=0.4,0.6",
                 "--fix", "run.duration_s=1", "--workers", "1", "--out", str(out),
                 "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("gridloop: point 0 (dc.battery.initial.soc=0.4): no reading from "
                      "dc.meter")
    assert err[-1] == f"gridloop: 2 of 2 points failed (see status in {out / 'results.csv'})"
    assert [r["status"] for r in _rows(out)] == ["no reading from dc.meter"] * 2
