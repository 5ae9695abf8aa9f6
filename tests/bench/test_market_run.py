"""Runs that trade: every interval a run clears is settled, appended runs keep a ledger that
verifies, and a ledger that refuses a run does so before the recording is touched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main

SCENARIO = Path(__file__).parents[2] / "experiments" / "p2p_trading" / "scenario.toml"


def run(out: Path, ledger: Path, duration_s: float, *extra: str) -> int:
    return main(["run", str(SCENARIO), "--mode", "twin", "--duration", str(duration_s),
                 "--out", str(out), "--ledger", str(ledger), *extra])


def test_the_interval_a_run_ends_in_is_settled(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """2,000 s of 900 s intervals: 0 and 1 settle at their ends, 2 when the run ends; the
    meter readings add up to the meters' totals."""
    ledger = tmp_path / "l.db"
    assert run(tmp_path / "a.h5", ledger, 2000) == 0
    assert "3 interval(s) settled" in capsys.readouterr().out
    with sqlite3.connect(ledger) as conn:
        assert conn.execute("SELECT interval_no FROM blocks ORDER BY height").fetchall() == \
            [(0,), (1,), (2,)]
        pending = conn.execute("SELECT kind FROM records WHERE block IS NULL").fetchall()
    assert {k for (k,) in pending} <= {1}  # only orders for the interval after the run
    with h5py.File(tmp_path / "a.h5") as f:
        readings = f["market/meter_readings"][:]
        for node in (b"north", b"south", b"east"):
            mine = readings[readings["node"] == node]
            total = f[f"nodes/{node.decode()}/meter/e_import_wh"][-1]
            assert 0 <= total - mine["import_wh"].sum() < 2  # the last tick's energy at most
    assert main(["ledger", "verify", str(ledger)]) == 0


def test_appended_runs_keep_a_ledger_that_verifies(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "l.db"
    assert run(tmp_path / "a.h5", ledger, 2000) == 0
    assert run(tmp_path / "b.h5", ledger, 1000) == 0
    capsys.readouterr()
    assert main(["ledger", "verify", str(ledger)]) == 0
    assert "ok: 5 blocks" in capsys.readouterr().out


def test_the_ledger_is_not_overwritten_by_the_recording(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    ledger = tmp_path / "l.db"
    assert run(tmp_path / "a.h5", ledger, 1000) == 0
    before = ledger.read_bytes()
    assert run(ledger, ledger, 1000) == 2
    assert "name the same file" in capsys.readouterr().err
    assert ledger.read_bytes() == before


def test_a_ledger_that_refuses_the_run_leaves_the_recording(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """Another interval length: refused at once, the earlier recording still whole."""
    ledger, out = tmp_path / "l.db", tmp_path / "a.h5"
    assert run(out, ledger, 1000) == 0
    before = out.read_bytes()
    assert run(out, ledger, 1000, "--set", "market.interval_s=600") == 2
    assert "was made with interval_ms 900000" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_ledger_and_recording_folders_are_made(tmp_path: Path) -> None:
    """On a fresh checkout runs/ does not exist yet: the default ledger beside the recording
    is opened before the recording makes the folder."""
    out = tmp_path / "runs" / "p2p.h5"
    assert main(["run", str(SCENARIO), "--mode", "twin", "--duration", "1000", "--quiet",
                 "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "runs" / "p2p.ledger.db").is_file()
    assert run(tmp_path / "a" / "r.h5", tmp_path / "b" / "l.db", 1000) == 0
    assert (tmp_path / "b" / "l.db").is_file()


@pytest.mark.parametrize("bad", [
    ["--set", "controller.options.nope=1"],  # the controller refuses it
    ["--set", "checks.north.battery.socc.max=1"],  # the scenario refuses it
])
def test_a_run_refused_before_it_starts_keeps_the_default_ledger(
        bad: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default ledger belongs to the recording: a run that never starts replaces
    neither."""
    out = tmp_path / "p2p.h5"
    args = ["run", str(SCENARIO), "--mode", "twin", "--duration", "1000", "--quiet",
            "--out", str(out)]
    assert main(args) == 0
    ledger = tmp_path / "p2p.ledger.db"
    before = ledger.read_bytes(), out.read_bytes()
    capsys.readouterr()
    assert main(args + bad) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert (ledger.read_bytes(), out.read_bytes()) == before


def test_out_that_is_the_scenario_is_refused(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.read_text())
    (tmp_path / "link.toml").symlink_to(scenario)
    assert main(["run", str(scenario), "--out", str(tmp_path / "link.toml")]) == 2
    assert "that is the scenario" in capsys.readouterr().err
    assert scenario.read_text() == SCENARIO.read_text()


def test_a_node_with_a_grid_asset_and_no_meter_is_metered_and_billed(tmp_path: Path) -> None:
    """south's grid connection is a ``grid`` asset: its power is metered as a meter would,
    so its readings are its real import and its trades settle against them."""
    two_nodes = Path(__file__).with_name("scenarios") / "two_nodes.toml"
    text = two_nodes.read_text().replace('[nodes.south.meter]\nkind = "meter"',
                                         '[nodes.south.grid]\nkind = "grid"')
    assert "[nodes.south.grid]" in text
    scenario = tmp_path / "grid_only.toml"
    scenario.write_text(text)
    out, ledger = tmp_path / "g.h5", tmp_path / "g.ledger.db"
    assert main(["run", str(scenario), "--mode", "twin", "--out", str(out), "--ledger",
                 str(ledger), "--quiet"]) == 0
    with h5py.File(out) as f:
        readings = f["market/meter_readings"][:]
        settlements = f["market/settlements"][:]
        p = f["nodes/south/grid/p_w"][:]
        dt = float(f.attrs["dt"])
    # what a meter on south's connection counts: each tick's power after the first row
    h = dt / 3600.0
    imp = np.concatenate([[0.0], np.cumsum(np.maximum(p[1:], 0.0) * h)])
    exp = np.concatenate([[0.0], np.cumsum(np.maximum(-p[1:], 0.0) * h)])
    edges = [0, 40, 80, len(p) - 1]  # 2 s intervals of 0.05 s ticks; the last at the end
    south = readings[readings["node"] == b"south"]
    assert len(south) == 3
    for i, r in enumerate(south):
        a, b = edges[i], edges[i + 1]
        assert r["import_wh"] == int(np.floor(imp[b])) - int(np.floor(imp[a]))
        assert r["export_wh"] == int(np.floor(exp[b])) - int(np.floor(exp[a]))
    assert south["import_wh"].sum() > 20
    billed = settlements[settlements["buyer"] == b"south"]
    assert billed["energy_wh"].sum() == south["import_wh"].sum()
    assert main(["ledger", "verify", str(ledger)]) == 0
