"""A run killed with SIGKILL keeps its recording; sweeps run on a local Dask cluster."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main

from .kit import in_terminal

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"


@pytest.mark.slow
def test_kill_9_during_a_run_leaves_a_readable_recording(tmp_path: Path) -> None:
    out = tmp_path / "killed.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(SCENARIO), "--mode", "twin", "--quiet",
         "--out", str(out), "--set", "run.duration_s=3000", "--set", "run.flush_s=0.2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen = 0
        deadline = time.monotonic() + 120
        while seen < 500:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never flushed"
            if out.exists():
                try:
                    with h5py.File(out, "r", libver="latest", swmr=True) as f:
                        seen = f["time"].shape[0]
                except (OSError, KeyError):
                    pass  # the writer is still creating the file
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the recorder process notices the bench died, writes what it received and closes: a
    # plain (not SWMR) open succeeds once it has closed the file
    deadline = time.monotonic() + 30
    while True:
        try:
            f = h5py.File(out, "r")
            break
        except OSError:
            assert time.monotonic() < deadline, "the writer never closed the recording"
            time.sleep(0.2)
    with f:
        t = f["time"][:]
        n = len(t)
        assert n >= seen
        np.testing.assert_allclose(t, np.arange(n) * 0.05)
        assert np.isfinite(f["nodes/north/battery/soc"][:n]).all()
        assert not f.attrs["complete"]
    from bench.recording import open_run

    with open_run(out) as run:  # the reader accepts it, and says it is incomplete
        assert len(run) == n and not run.complete


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_run_and_keeps_its_recording(tmp_path: Path) -> None:
    """Ctrl-C reaches every process of the terminal's group: the bench closes its recording
    (incomplete, with why), the writer is not interrupted mid-write, nothing is a traceback."""
    out = tmp_path / "stopped.h5"
    with in_terminal("run", str(SCENARIO), "--mode", "twin", "--quiet", "--out", str(out),
                     "--set", "run.duration_s=3000", "--set", "run.flush_s=0.2",
                     stdout=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 120
        while not out.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "gridloop: interrupted"
    from bench.recording import open_run

    with open_run(out) as run:
        assert len(run) > 0 and not run.complete
        assert [m for _, k, m in run.events() if k == "run_stopped"] == ["interrupted"]


@pytest.mark.slow
def test_sigterm_stops_the_run_as_ctrl_c_does(tmp_path: Path) -> None:
    """What a CI runner sends on cancel or timeout, to the bench's process alone: the run
    records why it stopped and closes its recording; exit status 143 (128 + SIGTERM)."""
    out = tmp_path / "terminated.h5"
    with in_terminal("run", str(SCENARIO), "--mode", "twin", "--quiet", "--out", str(out),
                     "--set", "run.duration_s=3000", "--set", "run.flush_s=0.2",
                     stdout=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 120
        while not out.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be terminated"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "gridloop: terminated"
    from bench.recording import open_run

    with open_run(out) as run:
        assert len(run) > 0 and not run.complete
        assert [m for _, k, m in run.events() if k == "run_stopped"] == ["terminated"]


@pytest.mark.slow
def test_two_point_sweep_on_a_local_dask_cluster(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", str(SCENARIO), "--set", "north.battery.capacity_ah=140,280",
                 "--fix", "run.mode=twin", "--fix", "run.duration_s=2", "--workers", "2",
                 "--out", str(out), "--quiet"]) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["north.battery.capacity_ah"] for r in rows] == ["140", "280"]
    assert all(r["status"] == "ok" for r in rows), rows
    assert rows[0]["seed"] == rows[1]["seed"] == "7"  # every point the scenario's seed
    assert all((out / f"point_{i:04d}.h5").is_file() for i in range(2))
    assert float(rows[0]["ticks"]) == 40.0


def test_sweep_rejects_a_bad_value_before_starting(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", str(SCENARIO), "--set", "run.dt_s=0.05,-1",
                 "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "run.dt_s: must be a positive" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_run_to_the_same_recording_stops_before_touching_it(tmp_path: Path) -> None:
    """Two CI jobs with one --out: the second stops in one line, the first keeps its data."""
    out = tmp_path / "same.h5"
    with in_terminal("run", str(SCENARIO), "--mode", "twin", "--quiet", "--out", str(out),
                     "--set", "run.duration_s=3000", "--set", "run.flush_s=0.2",
                     stdout=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 120
        while not out.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        second = subprocess.run(
            [sys.executable, "-m", "bench", "run", str(SCENARIO), "--mode", "twin", "--quiet",
             "--out", str(out)], capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.poll() is None, "the first run ended before the second started"
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"gridloop: error: {out} is in use by another run (gridloop run, pid {proc.pid}); "
        "wait for it to finish, or give --out another file")
    from bench.recording import open_run

    with open_run(out) as run:  # the first run's recording, whole
        assert len(run) > 0
        assert [m for _, k, m in run.events() if k == "run_stopped"] == ["terminated"]
