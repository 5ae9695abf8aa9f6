"""A run in hardware mode against a serial board: `gridloop emulate` in its own process stands
in for the board (the MCU emulator on a real pseudo-terminal), and the scenario names its
port, as a lab engineer's file names the board's.  A serial board announces its points only
when it answers (HELLO), after the recording's layout is fixed."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run

from .kit import emulated_kit

KIT = """\
[run]
name = "kit"
dt_s = 0.1
duration_s = 3
mode = "emulated"

[controller]
name = "passthrough"

[nodes.n.battery]
kind = "battery"
transport = "serial"
"""

LAB = """\
[run]
name = "lab"
dt_s = 0.1
duration_s = {duration}
mode = "hardware"

[controller]
name = "passthrough"

[nodes.n.battery]
kind = "battery"
mode = "hardware"
device = {{ backend = "serial", port = "{port}", baudrate = 19200{extra} }}
"""


@pytest.fixture
def board(tmp_path: Path) -> Iterator[str]:
    """The serial port of an emulated battery board in a `gridloop emulate` process."""
    kit_toml = tmp_path / "kit.toml"
    kit_toml.write_text(KIT)
    with emulated_kit(kit_toml, 1) as (_, devices):
        yield devices[0]["serial_port"]


def _run(tmp_path: Path, port: str, duration: float = 2.0, extra: str = "") -> Path:
    scenario = tmp_path / "lab.toml"
    scenario.write_text(LAB.format(port=port, duration=duration, extra=extra))
    out = tmp_path / "lab.h5"
    assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_a_serial_board_in_hardware_mode_records_its_measured_signals(
        tmp_path: Path, board: str, recwarn: pytest.WarningsRecorder) -> None:
    out = _run(tmp_path, board)
    with open_run(out) as run:
        kinds = [k for _, k, _ in run.events()]
        assert not [k for k in kinds if k.startswith("device_")], run.events()
        assert np.all(run.quality("n", "battery") == 0)
        measured = {r.name for r in run.signals("measured") if r.asset == "battery"}
        assert {"p_w", "soc", "voltage_v", "current_a"} <= measured
        for name in measured:
            assert np.all(np.isfinite(run.signal("n", "battery", name))), name
        soc = run.signal("n", "battery", "soc")
        twin = run.signal("n", "battery", "soc", "twin")
        assert np.all((soc > 0) & (soc < 1)) and np.nanmax(np.abs(soc - twin)) < 0.01
    assert not [w for w in recwarn if "n.battery" in str(w.message)]


@pytest.mark.slow
def test_signals_the_recording_has_no_column_for_are_said_once(
        tmp_path: Path, board: str) -> None:
    with pytest.warns(Warning, match="n.battery: device has signal.* voltage_v.* the "
                                     "recording has no column for"):
        out = _run(tmp_path, board, extra=', signals = ["p_w", "soc"]')
    with open_run(out) as run:
        said = [m for _, k, m in run.events() if k == "device_unplaced"]
        assert len(said) == 1 and "soh" in said[0] and "soc" not in said[0].split(": ")[1]
        measured = {r.name for r in run.signals("measured") if r.asset == "battery"}
        assert measured == {"p_w", "soc"}
        assert np.all(np.isfinite(run.signal("n", "battery", "soc")))


@pytest.mark.slow
def test_a_board_that_appears_after_the_start_is_recovered_mid_run(
        tmp_path: Path, board: str) -> None:
    link = tmp_path / "ttyACM0"  # the board enumerates 1.5 s after the run is started
    plug = threading.Timer(1.5, os.symlink, (board, link))
    plug.start()
    try:
        with pytest.warns(Warning, match="n.battery: cannot open .*ttyACM0.*reads retry it"):
            out = _run(tmp_path, str(link), duration=4.0)
    finally:
        plug.cancel()
    with open_run(out) as run:
        q = run.quality("n", "battery")
        events = run.events()
        kinds = [k for _, k, _ in events]
        assert kinds[0] == "device_open_failed" and "device_recovered" in kinds, events
        assert q[0] != 0 and np.all(q[-10:] == 0), q
        first_ok = int(np.argmax(q == 0))
        assert np.all(q[first_ok:] == 0), q  # once back, it stays
        soc = run.signal("n", "battery", "soc")
        assert np.all(np.isnan(soc[:first_ok])) and np.all(np.isfinite(soc[first_ok:]))
