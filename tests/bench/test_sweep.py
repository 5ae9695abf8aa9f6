"""Sweeps end as their points did: Ctrl-C keeps the finished rows, a failed point exits 1,
bad input is one line before any point starts, a rerun replaces each point's files; the
local cluster starts without a word."""

from __future__ import annotations

import csv
import os
import signal
import socket
import sqlite3
import time
import warnings
from pathlib import Path

import dask
import h5py
import pytest

from bench.cli import main
from bench.recording import open_run

from .kit import in_terminal

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"
TWIN = ["--fix", "run.mode=twin"]
ONE = ["--workers", "1"]  # one worker starts sooner than two


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def _blocks(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as c:
        return (c.execute("SELECT count(*) FROM blocks").fetchone()[0],
                c.execute("SELECT count(*) FROM records").fetchone()[0])


@pytest.mark.slow
def test_sigint_keeps_the_finished_rows_and_marks_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    # paced to the wall clock: point 0 takes a second, points 1 and 2 ten minutes
    with in_terminal("sweep", str(SCENARIO), *TWIN, "--quiet", "--fix", "run.realtime=true",
                     "--set", "run.duration_s=1,600,600", "--workers", "2",
                     "--out", str(out)) as proc:
        deadline = time.monotonic() + 60
        while not ((out / "results.csv").is_file() and _rows(out)[0]["status"] == "ok"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "point 0 never reached the table"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the sweep and its workers
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stdout == ""  # the table is in the file, not printed half-done
    assert stderr.splitlines() == [f"gridloop: interrupted: 1 of 3 points finished; results "
                                   f"{out / 'results.csv'}"], stderr
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["ok", "interrupted", "interrupted"]
    assert rows[0]["path"] == str(out / "point_0000.h5") and float(rows[0]["ticks"]) == 20
    # point 1 was running: stopped at a tick, its recording says why; point 2 (started when
    # point 0 ended) too, unless it was still being built (then it made none)
    assert rows[1]["path"] == str(out / "point_0001.h5")
    assert rows[2]["path"] in ("", str(out / "point_0002.h5"))
    for row in rows[1:]:
        assert row["ticks"] == ""
        if row["path"]:
            with open_run(Path(row["path"])) as run:
                assert not run.complete
                assert [m for _, k, m in run.events() if k == "run_stopped"] == ["interrupted"]


@pytest.mark.slow
def test_a_swept_seed_is_used_and_a_rerun_replaces_each_ledger(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    argv = ["sweep", str(SCENARIO), "--set", "run.seed=1,2", *TWIN,
            "--fix", "run.duration_s=4", *ONE, "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = [_blocks(out / f"point_{i:04d}.ledger.db") for i in range(2)]
    assert all(blocks > 0 and records > 0 for blocks, records in first), first
    assert main(argv) == 0  # the same sweep again, into the same folder
    assert [_blocks(out / f"point_{i:04d}.ledger.db") for i in range(2)] == first
    assert main(["ledger", "verify", str(out / "point_0000.ledger.db")]) == 0
    rows = _rows(out)
    assert [r["seed"] for r in rows] == [r["run.seed"] for r in rows] == ["1", "2"]
    for i, seed in enumerate((1, 2)):
        with h5py.File(out / f"point_{i:04d}.h5", "r") as f:
            assert int(f.attrs["seed"]) == seed


@pytest.mark.slow
def test_a_fixed_seed_is_every_points_seed(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", str(SCENARIO), "--set", "run.dt_s=0.05,0.1", *TWIN,
                 "--fix", "run.seed=9", "--fix", "run.duration_s=1", *ONE, "--out", str(out),
                 "--quiet"]) == 0
    assert [r["seed"] for r in _rows(out)] == ["9", "9"]


class FailsAtStart:
    """A controller whose step fails at once when told to: a point that builds and fails
    when it runs."""

    def __init__(self, context: object, fail: bool = False) -> None:
        self.fail = fail

    def step(self, obs: object) -> dict[str, float]:
        if self.fail:
            raise RuntimeError("told to fail")
        return {}


@pytest.mark.slow
def test_a_failed_point_exits_1_and_keeps_its_incomplete_recording(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sw"
    out.mkdir()
    (out / "point_0001.h5").write_text("left by an earlier sweep")
    assert main(["sweep", str(SCENARIO), "--set", "controller.options.fail=false,true",
                 "--fix", "controller.name=tests.bench.test_sweep:FailsAtStart",
                 "--fix", "controller.options={}", *TWIN,
                 "--fix", "market.kind=none", "--fix", "run.duration_s=1", *ONE,
                 "--out", str(out), "--quiet"]) == 1
    assert "1 of 2 points failed" in capsys.readouterr().err
    rows = _rows(out)
    assert rows[0]["status"] == "ok" and Path(rows[0]["path"]).is_file()
    assert rows[1]["status"].startswith("error: ControllerError"), rows[1]
    assert "told to fail" in rows[1]["status"]
    # the earlier sweep's file is replaced by the recording the point started, incomplete
    assert rows[1]["path"] == str(out / "point_0001.h5")
    with open_run(out / "point_0001.h5") as run:
        assert not run.complete and len(run) == 0


def test_a_controller_option_no_point_can_run_is_refused_before_starting(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", str(SCENARIO), "--set",
                 'controller.options.ramp_limit_w_per_s=5000,"fast"', *TWIN,
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gridloop: error: point 1 "), err
    assert "option ramp_limit_w_per_s: expected a number, got 'fast'" in err
    assert not out.exists()


def test_a_point_that_cannot_be_built_is_refused_before_starting(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", str(SCENARIO), "--set", "south.battery.initial.soc=0.5,1.5", *TWIN,
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gridloop: error: point 1 "), err
    assert "south.battery.initial.soc=1.5" in err and "must be in [0, 1]" in err
    assert not out.exists()


@pytest.mark.parametrize("args", [
    ["--set", "run.dt_s=0.02,0.05", "--set", "run.dt_s=0.01"],
    ["--set", "south.battery.initial.soc=0.5", "--set", "nodes.south.battery.initial.soc=0.6"],
    ["--set", "run.dt_s=0.02,0.05", "--fix", "run.dt_s=0.01"],
])
def test_a_key_given_twice_is_refused(args: list[str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", str(SCENARIO), *args, *TWIN, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gridloop: error: --set "), err
    assert not out.exists()


def test_an_unreachable_scheduler_is_one_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["sweep", str(SCENARIO), "--set", "run.dt_s=0.05", *TWIN,
                     "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path / "sw"),
                     "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scheduler tcp://127.0.0.1:1:" in err, err


@pytest.mark.slow
def test_the_local_cluster_starts_quietly_when_port_8787_is_taken() -> None:
    """Another Dask cluster (or a notebook) holds 8787: the sweep's own cluster has no
    dashboard to move, so Dask has nothing to warn about."""
    from distributed import LocalCluster

    from bench.sweep import _local_cluster

    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 8787))
        holder.listen()
    except OSError:  # taken already: just as good
        pass
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cluster = _local_cluster(LocalCluster, 1)
            cluster.close()
        said = [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]
        assert said == [], said
    finally:
        holder.close()
