"""The HDF5 recorder: layout, units, residuals, tables, SWMR readers, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.errors import RecordingError
from bench.recorder import FORMAT, Column, Layout, Recorder, Residual
from bench.recording import open_h5, open_run

LAYOUT = Layout(
    floats=[Column("time", "s"), Column("nodes/n/bat/p_w", "W"),
            Column("nodes/n/bat/twin/p_w", "W")],
    flags=[Column("quality/n/bat")],
    residuals=[Residual("nodes/n/bat/residual/p_w", 1, 2, "W")],
    tables={"market/trades": np.dtype([("interval", "i8"), ("energy_wh", "i8")])},
)


def test_layout_units_residuals_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    with Recorder(path, LAYOUT, {"mode": "twin", "dt": 0.1, "seed": 7, "scenario": "x"},
                  flush_s=0.05) as rec:
        for k in range(1000):
            rec.append([k * 0.1, 10.0 * k, 10.0 * k - 1.5], [k % 3])
        rec.event(3.0, "fault", "timeout on n.bat")
        rec.table_rows("market/trades", [(1, 500), (2, 250)])
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["format_version"] == 1
        assert f.attrs["complete"]
        assert f.attrs["seed"] == 7
        np.testing.assert_array_equal(f["time"][:], np.arange(1000) * 0.1)
        assert f["nodes/n/bat/p_w"].attrs["unit"] == "W"
        np.testing.assert_allclose(f["nodes/n/bat/residual/p_w"][:], 1.5)
        np.testing.assert_array_equal(f["quality/n/bat"][:], np.arange(1000) % 3)
        assert f["nodes/n/bat/p_w"].compression == "gzip"
        assert f["nodes/n/bat/p_w"].chunks is not None
        ev = f["events"][:]
        assert ev["kind"][0] == b"fault" and ev["t"][0] == 3.0
        assert list(f["market/trades"]["energy_wh"]) == [500, 250]


def test_reader_follows_a_run_in_progress(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    rec = Recorder(path, LAYOUT, {"mode": "twin"}, flush_s=0.01)
    try:
        rec.append([0.0, 1.0, 1.0], [0])
        rec.flush()
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            seen = []
            for k in range(1, 50):
                rec.append([k, 1.0, 1.0], [0])
                rec.flush()
                deadline = time.monotonic() + 5
                while True:
                    f["time"].refresh()
                    if f["time"].shape[0] >= k + 1 or time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
                seen.append(f["time"].shape[0])
            assert seen[-1] == 50
            assert seen == sorted(seen)
    finally:
        rec.close()


def test_unwritable_path_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((RecordingError, OSError)) as info:
        Recorder(blocker / "run.h5", LAYOUT, {})
    assert "\n" not in str(info.value)
    with pytest.raises(RecordingError, match=r"is a directory; name the recording's file "
                                             r"\(such as .*run\.h5\)"):
        Recorder(tmp_path, LAYOUT, {})


def _record(path: Path, ticks: int, value: float) -> None:
    with Recorder(path, LAYOUT, {"mode": "twin", "dt": 1.0}) as rec:
        for k in range(ticks):
            rec.append([float(k), value, value], [0])


@pytest.mark.timeout(60)  # an SWMR open of a truncated file retries its reads for minutes
@pytest.mark.parametrize("keep", [0.02, 0.5])
def test_truncated_recording_is_one_line_error(tmp_path: Path, keep: float) -> None:
    whole = tmp_path / "whole.h5"
    _record(whole, 20_000, 1.0)
    data = whole.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(RecordingError) as info:
        open_run(cut)
    msg = str(info.value)
    assert msg.startswith(f"{cut}: truncated: {int(len(data) * keep):,} of {len(data):,} bytes")
    assert "\n" not in msg
    assert len(open_run(whole)) == 20_000


def test_recording_again_leaves_an_open_reader_its_file(tmp_path: Path) -> None:
    """A viewer holding last run's file keeps reading it whole while the next run of the
    same name records; the name then holds the new run (HDF5's "w" would have truncated the
    open file, then failed on its lock)."""
    path = tmp_path / "run.h5"
    _record(path, 300, 1.0)
    with open_run(path) as old:
        _record(path, 500, 2.0)
        assert len(old) == 300
        np.testing.assert_array_equal(old.signal("n", "bat", "p_w"), 1.0)
    with open_run(path) as new:
        assert len(new) == 500 and new.complete
        np.testing.assert_array_equal(new.signal("n", "bat", "p_w"), 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # no temporary left


CHILD = textwrap.dedent("""
    import sys, time
    from bench.recorder import Recorder
    from tests.bench.test_recorder import LAYOUT
    rec = Recorder(sys.argv[1], LAYOUT, {"mode": "twin"}, flush_s=0.2)
    print("pid", rec.pid, flush=True)
    k = 0
    sent = 0
    while True:
        rec.append([k * 0.01, k, k], [0])
        k += 1
        if rec.sent_ticks != sent:
            sent = rec.sent_ticks
            print("sent", sent, flush=True)
        time.sleep(0.0005)
""")


@pytest.mark.slow
@pytest.mark.parametrize("kill_writer", [False, True])
def test_kill_9_keeps_every_tick_up_to_the_last_flush(tmp_path: Path, kill_writer: bool) -> None:
    path = tmp_path / "crash.h5"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    writer_pid = int(proc.stdout.readline().split()[1])
    sent = 0
    t_end = time.monotonic() + 2.5
    while time.monotonic() < t_end:
        line = proc.stdout.readline()
        if line.startswith("sent"):
            sent = int(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    if kill_writer:
        os.kill(writer_pid, signal.SIGKILL)
    proc.wait()
    # The writer finishes on its own when the bench dies; give it a moment.
    for _ in range(100):
        try:
            os.kill(writer_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with open_h5(path) as f:  # a writer killed with the file open: read as SWMR
        t = f["time"][:]
        n = len(t)
        assert sent > 100
        np.testing.assert_array_equal(t, np.arange(n) * 0.01)  # a clean prefix, no holes
        np.testing.assert_array_equal(f["nodes/n/bat/p_w"][:n], np.arange(n))
        if not kill_writer:
            # everything handed to the writer (at most flush_s old at the kill) is there
            assert n >= sent
        else:
            # the writer died too: what it had flushed survives, which is at most one
            # flush period behind what it had been sent
            assert n >= sent - 2 * 0.2 / 0.0005
        assert not f.attrs["complete"]
