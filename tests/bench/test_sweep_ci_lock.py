"""Two CI jobs with one sweep folder: the second sweep stops at once, in one line naming the
first one's pid (exit 2), before it touches anything, as a second ``gridloop run`` to one
recording does; a run to a point's recording while the sweep runs it is refused too.  The
first sweep's points are its own, never figures of another run's recording."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.recording import open_run

from .kit import in_terminal

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def _gridloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, timeout=180, env=ENV)


@pytest.mark.slow
def test_a_second_sweep_into_the_same_folder_stops_at_once(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    # the first sweep: one point paced to the wall clock for ten minutes
    with in_terminal("sweep", str(SCENARIO), "--fix", "run.mode=twin", "--quiet",
                     "--fix", "run.realtime=true", "--fix", "market.kind=none",
                     "--set", "run.duration_s=600", "--workers", "1",
                     "--out", str(out)) as first:
        point = out / "point_0000.h5"
        deadline = time.monotonic() + 120
        while not point.is_file():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first sweep's point never started"
            time.sleep(0.1)
        table = (out / "results.csv").read_bytes()
        # the second: another spelling of the same folder, points that would end at once
        t0 = time.monotonic()
        second = _gridloop("sweep", str(SCENARIO), "--fix", "run.mode=twin", "--quiet",
                           "--fix", "market.kind=none", "--set", "run.duration_s=1,2",
                           "--workers", "1", "--out", str(out) + "/")
        took = time.monotonic() - t0
        # a run to the recording the sweep's point is writing
        run = _gridloop("run", str(SCENARIO), "--mode", "twin", "--quiet", "--duration", "1",
                        "--out", str(point))
        assert first.poll() is None, "the first sweep ended before the others started"
        os.kill(first.pid, signal.SIGTERM)
        first.communicate(timeout=60)
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"gridloop: error: {out} is in use by another sweep (gridloop sweep, pid "
        f"{first.pid}); wait for it to finish, or give --out another folder"], second.stderr
    assert second.stdout == ""
    assert took < 60, took  # refused before it starts a cluster or runs a point
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"gridloop: error: {point} is in use by another run (gridloop "
                           "sweep, pid "), last
    # nothing of the first sweep's was touched by the others
    assert not (out / "point_0001.h5").exists()
    rows = _rows(out)
    assert [r["point"] for r in rows] == ["0"] and rows[0]["run.duration_s"] == "600"
    assert rows[0]["path"] == str(point) and rows[0]["status"] == "terminated"
    assert table.splitlines()[0] == (out / "results.csv").read_bytes().splitlines()[0]
    with open_run(point) as r:
        # its own ticks, not a 1 s run's (how many it got to depends on the machine)
        assert not r.complete and len(r) > 0
        assert r.scenario().run.duration_s == 600
        assert [m for _, k, m in r.events() if k == "run_stopped"] == ["terminated"]
    # released when the sweep ended: the folder can be swept again
    assert not (tmp_path / ".sw.lock").exists()
