"""Captured Modbus transactions line up with the ticks: ``t_run_s`` is a transaction's time
on the run's clock (that of ``/wall``), and the reader gives each the tick it was made in."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.build import build_emulators
from bench.errors import RecordingError
from bench.recorder import FORMAT, FORMAT_VERSION
from bench.recording import open_run
from bench.scenario import parse
from firmware_bridge.capture import TRANSACTION_DTYPE, Capture, read_capture
from firmware_bridge.registry import open_device

SCENARIO = """
[run]
name = "align"
dt_s = 0.1
duration_s = 10
mode = "emulated"
[nodes.lab.battery]
kind = "battery"
"""
DT = 0.1


def _recording(path: Path, wall: list[float]) -> h5py.File:
    """A recording's frame (what ``open_run`` needs): its ticks' ``/time`` and ``/wall``."""
    f = h5py.File(path, "w")
    f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "dt": DT})
    f["time"] = DT * np.arange(len(wall))
    f["wall"] = np.asarray(wall)
    return f


async def _session(ticks: int) -> tuple[Capture, int, list[int], list[float]]:
    """A client of an emulated battery, capturing: it opens and reads the device, then the
    run's clock starts and each tick reads it (and the third also writes a setpoint), its
    ``wall`` taken when the tick's I/O is done, as the bench records it."""
    host = build_emulators(parse(SCENARIO, "align.toml"))
    await host.start()
    capture = Capture()
    try:
        d = host.describe()[0]
        dev = open_device("modbus_tcp", host=d["host"], port=d["port"], unit=d["unit"],
                          map=d["map"], name="lab.battery", capture=capture)
        await dev.open()
        await dev.read()  # before the first tick, as a run's devices are opened and read
        opening = len(capture.transactions("lab.battery"))
        origin = capture.set_origin()
        per_tick, wall = [], []
        for k in range(ticks):
            n0 = len(capture.transactions("lab.battery"))
            await dev.read()
            if k == 2:
                await dev.write({"p_set_w": 1000.0})
            wall.append(time.time() - origin)
            per_tick.append(len(capture.transactions("lab.battery")) - n0)
            host.advance(DT)
        await dev.close()
    finally:
        await host.stop()
    return capture, opening, per_tick, wall


def test_each_transaction_gets_the_tick_it_was_made_in(tmp_path: Path) -> None:
    capture, opening, per_tick, wall = asyncio.run(_session(5))
    assert opening >= 2 and all(n >= 1 for n in per_tick) and per_tick[2] > per_tick[1]
    path = tmp_path / "run.h5"
    with _recording(path, wall) as f:
        capture.flush_to(f)
    with open_run(path) as run:
        assert run.capture_devices() == ["lab.battery"]
        tx = run.capture("lab.battery")
        expected = [-1] * opening + [k for k, n in enumerate(per_tick) for _ in range(n)]
        assert tx["tick"].tolist() == expected
        # the opening scan and read came before the clock's zero; the rest within the ticks
        assert (tx["t_run_s"][:opening] < 0).all()
        assert (tx["t_run_s"][opening:] >= 0).all()
        np.testing.assert_allclose(tx["t_run_s"], tx["t_s"] - capture.origin_s, atol=1e-6)
        # the recorded columns are all there, as written
        assert {"t_s", "function_code", "address", "count", "status", "latency_s",
                "response_start"} <= set(tx.dtype.names)
        writes = tx[tx["function_code"] == 16]
        assert writes["tick"].tolist() == [2]
        with pytest.raises(RecordingError, match="no capture of device 'lab.meter' "
                                                 r"\(captured: lab\.battery\)"):
            run.capture("lab.meter")
    # read back, the capture keeps each transaction's time on the run's clock
    with h5py.File(path, "r") as f:
        again = read_capture(f).transactions("lab.battery")
    assert [t.t_run_s for t in again] == pytest.approx(tx["t_run_s"].tolist())


def test_a_capture_without_the_run_clock_has_no_ticks(tmp_path: Path) -> None:
    """A capture written before ``t_run_s`` existed reads NaN and tick -1, and a capture
    that knows the clock can still append to its table."""
    capture, opening, per_tick, wall = asyncio.run(_session(2))
    old = np.dtype([(n, TRANSACTION_DTYPE[n]) for n in TRANSACTION_DTYPE.names
                    if n != "t_run_s"])
    rows, flat = capture.to_arrays("lab.battery")
    path = tmp_path / "old.h5"
    with _recording(path, wall) as f:
        g = f.create_group("capture/lab.battery")
        f["capture"].attrs.update({"format": "gridloop-capture", "format_version": 1})
        g.create_dataset("transactions", data=rows[list(old.names)].astype(old),
                         maxshape=(None,))
        g.create_dataset("registers", data=flat, maxshape=(None,))
    with open_run(path) as run:
        tx = run.capture("lab.battery")
        assert len(tx) == opening + sum(per_tick)
        assert np.isnan(tx["t_run_s"]).all() and (tx["tick"] == -1).all()
    with h5py.File(path, "r+") as f:
        loaded = read_capture(f)
        assert all(t.t_run_s is None for t in loaded.transactions("lab.battery"))
        n = f["capture/lab.battery/transactions"].shape[0]
        assert capture.flush_to(f) == n  # appended in the table's own columns
        assert f["capture/lab.battery/transactions"].dtype == old
        assert f["capture/lab.battery/transactions"].shape[0] == 2 * n
