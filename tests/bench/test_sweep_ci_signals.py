"""SIGTERM (what a CI runner sends on cancel or timeout) stops a sweep as it stops a run:
exit status 143 and ``terminated``; the points still running stop at their next tick, their
recordings with a ``run_stopped`` event saying why; a point whose recording finished is
listed with its figures; the table keeps every column whatever finished."""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import h5py
import pytest

from bench.cli import main
from bench.recording import open_run

from .kit import in_terminal

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"
FIX = ["--fix", "run.mode=twin", "--fix", "market.kind=none", "--fix", "run.realtime=true"]


def _table(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (out / "results.csv").open() as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _ticks(path: Path) -> int:
    """The ticks a recording being written holds so far."""
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            return f["time"].shape[0]
    except (OSError, KeyError):  # not there yet, or being created
        return 0


@pytest.mark.slow
def test_sigterm_ends_a_sweep_terminated_and_keeps_what_finished(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    # one task of two points: point 0 (one second) finishes, then point 1 (ten minutes)
    # runs; the task, and so point 0's row, never returns on its own
    with in_terminal("sweep", str(SCENARIO), *FIX, "--quiet", "--batch", "2",
                     "--set", "run.duration_s=1,600", "--workers", "1",
                     "--out", str(out)) as proc:
        deadline = time.monotonic() + 120
        while _ticks(out / "point_0001.h5") < 10:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "point 1 never started"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)  # the sweep's process alone, as a CI runner does
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 143, stderr
    assert stdout == ""
    assert stderr.splitlines() == [f"gridloop: terminated: 1 of 2 points finished; results "
                                   f"{out / 'results.csv'}"], stderr
    assert took < 15, took  # well within the 10 s a runner waits, and the cluster's close
    columns, rows = _table(out)
    assert [r["status"] for r in rows] == ["ok", "terminated"]
    # point 0 finished before the signal: listed with its recording and figures
    assert rows[0]["path"] == str(out / "point_0000.h5") and float(rows[0]["ticks"]) == 20
    assert rows[0]["north.battery_charge_kwh"] != ""
    # point 1 stopped at a tick: its recording says why
    assert rows[1]["path"] == str(out / "point_0001.h5") and rows[1]["ticks"] == ""
    with open_run(out / "point_0001.h5") as r:
        assert not r.complete and len(r) >= 10
        assert [m for _, k, m in r.events() if k == "run_stopped"] == ["terminated"]
    with open_run(out / "point_0000.h5") as r:
        assert r.complete and not [k for _, k, _ in r.events() if k == "run_stopped"]
    assert "ticks" in columns and "south.soc_end" in columns
    assert not list(out.glob(".*.lock")) and not (tmp_path / ".sw.lock").exists()


@pytest.mark.slow
def test_a_sweep_stopped_before_any_point_finished_keeps_every_column(
        tmp_path: Path) -> None:
    """A pipeline parses the table with one schema: the one a finished sweep writes."""
    done = tmp_path / "done"
    assert main(["sweep", str(SCENARIO), *FIX, "--fix", "run.realtime=false", "--quiet",
                 "--set", "run.duration_s=1", "--workers", "1", "--out", str(done)]) == 0
    schema, _ = _table(done)
    out = tmp_path / "sw"
    with in_terminal("sweep", str(SCENARIO), *FIX, "--quiet", "--set", "run.duration_s=600",
                     "--workers", "1", "--out", str(out)) as proc:
        deadline = time.monotonic() + 120
        while _ticks(out / "point_0000.h5") < 5:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "point 0 never started"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: still 130 and interrupted
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1].startswith("gridloop: interrupted: 0 of 1 points"), stderr
    columns, rows = _table(out)
    assert columns == schema
    assert rows[0]["status"] == "interrupted" and rows[0]["ticks"] == ""
    with open_run(out / "point_0000.h5") as r:
        assert [m for _, k, m in r.events() if k == "run_stopped"] == ["interrupted"]
