"""A failed setpoint write is in the recording for its tick: an event per failed write (the
device, the setpoint and its value, the error) and the tick's quality flag with
``WRITE_FAILED`` (4) added, so a controller validation tells applied from not applied.  A
device failing from the very first tick is said on stderr at once.  A run asked for in
hardware mode that reaches no hardware says so, and its recording is not stamped hardware.

Real emulated SunSpec devices on loopback Modbus (in the run's own emulator process, or in a
`gridloop emulate` kit standing in for hardware), real HDF5 recordings, the run's own
``/capture`` of every Modbus transaction as the ground truth of which writes were refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from .kit import REPO, emulated_kit

WRITE_FAILED = 4

#: one lab node: a battery on Modbus TCP, a meter, PV in the twin; a controller that writes a
#: new battery setpoint every tick; every Modbus transaction captured
SCENARIO = """
[run]
name = "wr"
dt_s = 0.1
duration_s = 3
seed = 1
capture = true
mode = "emulated"

[controller]
name = "ctrl:Writer"

[profiles.sun]
kind = "irradiance"
generator = "constant"
options = { value = 300.0 }

[nodes.lab.pv]
kind = "pv"
profile = "sun"
mode = "twin"

[nodes.lab.inverter]
kind = "inverter"
source = "pv"

[nodes.lab.battery]
kind = "battery"
initial = { soc = 0.6 }

[nodes.lab.grid]
kind = "grid"

[nodes.lab.meter]
kind = "meter"
"""

CONTROLLER = '''
import math


class Writer:
    """A new battery setpoint every tick, whatever it reads."""

    def __init__(self, context):
        pass

    def step(self, obs):
        return {"lab.battery.p_set_w": 20000.0 * math.sin(obs.t + 0.3)}
'''

#: the battery refuses half its transactions (reads and writes alike) with exception 4
CARD = "{ exception_code = 4, probability = 0.5, start_s = 0.5, stop_s = 2.5, seed = 2 }"


def _gridloop(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(REPO)))


def _warnings(stderr: str, device: str) -> list[str]:
    """The warning lines of ``stderr`` that name ``device``."""
    return [x for x in stderr.splitlines()
            if x.startswith("gridloop: warning: ") and device in x]


def _folder(tmp_path: Path, text: str = SCENARIO) -> Path:
    (tmp_path / "ctrl.py").write_text(CONTROLLER)
    scenario = tmp_path / "wr.toml"
    scenario.write_text(text)
    return scenario


def _check_every_refused_write_is_recorded(out: Path) -> int:
    """The recording against its own capture: as many ``device_write_failed`` events as
    writes the battery refused, each at a tick flagged WRITE_FAILED (and only those), each
    naming the device, the setpoint with the value the controller asked for, and the error.
    Returns the number of refused writes."""
    with h5py.File(out, "r") as f:
        tr = f["capture/lab.battery/transactions"][()]
        # the ticks' writes: the safe state's, after the last tick, is not a tick's
        tr = tr[tr["t_run_s"] <= f["wall"][-1]]
        writes = tr[np.isin(tr["function_code"], (6, 16))]
        refused = int((writes["exception_code"] != 0).sum())
        t = f["time"][()]
        q = f["quality/lab/battery"][()]
        p_set = f["nodes/lab/battery/setpoint/p_set_w"][()]
        events = [(float(e["t"]), e["kind"].decode(), e["message"].decode())
                  for e in f["events"][()]]
        codes = str(f["quality"].attrs.get("codes", ""))
    failed = [(tt, m) for tt, k, m in events if k == "device_write_failed"]
    assert len(writes) == len(t)  # a new value every tick: one write each
    assert len(failed) == refused, (refused, failed)
    flagged = np.flatnonzero(q & WRITE_FAILED)
    assert len(flagged) == refused
    ticks = [int(round(tt / 0.1)) for tt, _ in failed]
    assert ticks == sorted(flagged.tolist())
    for k, (_, message) in zip(ticks, failed, strict=True):
        assert message.startswith("lab.battery: write p_set_w = "), message
        assert f"p_set_w = {p_set[k]:g} W failed: exception 0x04" in message, message
        assert "FC16" in message
    # the reading's code is kept beside it: a tick whose read and write both failed is 7
    assert set(np.unique(q)) <= {0, 3, 4, 7}
    assert "4" in codes and "write" in codes
    return refused


def test_every_refused_write_is_an_event_and_flags_its_tick(tmp_path: Path) -> None:
    scenario = _folder(tmp_path)
    out = tmp_path / "wr.h5"
    proc = _gridloop("run", str(scenario), "--out", str(out), "--quiet",
                     "--set", f"lab.battery.faults=[{CARD}]")
    assert proc.returncode == 0, proc.stderr
    refused = _check_every_refused_write_is_recorded(out)
    assert refused >= 5  # streaks of refused writes, not only their first
    with h5py.File(out, "r") as f:
        q = f["quality/lab/battery"][()]
    assert (q == WRITE_FAILED).any()  # a tick whose only failure was the write
    assert f"device_write_failed {refused}" in proc.stdout
    # stderr stays short: each line one failure, and far fewer lines than failed writes
    lines = [x for x in proc.stderr.splitlines() if "write p_set_w" in x]
    assert lines and all(x.startswith("gridloop: warning: at t = ") for x in lines)
    assert len(lines) < refused


def test_refused_writes_are_recorded_in_a_real_time_hardware_run(tmp_path: Path) -> None:
    """A `gridloop emulate` kit stands in for the hardware (its own fault card, its own
    clock); the run names the battery by address and runs on the wall clock."""
    kit_scenario = tmp_path / "kit.toml"
    # from the kit's start (its own clock): seed 92 spares the first 12 requests (the
    # battery's SunSpec scan and first read, so it opens), then strikes 4 in 10
    card = "{ exception_code = 4, probability = 0.4, seed = 92 }"
    kit_scenario.write_text(SCENARIO.replace(
        "[nodes.lab.battery]\n", f"[nodes.lab.battery]\nfaults = [{card}]\n"))
    with emulated_kit(kit_scenario, 3) as (_, devices):
        battery = next(d for d in devices if d["asset"] == "battery")
        text = SCENARIO.replace('mode = "emulated"', 'mode = "hardware"', 1).replace(
            "[nodes.lab.battery]\n",
            '[nodes.lab.battery]\nmode = "hardware"\n'
            f'device = {{ backend = "modbus_tcp", host = "{battery["host"]}", '
            f'port = {battery["port"]}, unit = {battery["unit"]} }}\n')
        scenario = _folder(tmp_path, text)
        out = tmp_path / "hw.h5"
        proc = _gridloop("run", str(scenario), "--out", str(out), "--quiet",
                         "--set", "run.duration_s=2.5")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["mode"] == "hardware" and f.attrs["realtime"]
    assert _check_every_refused_write_is_recorded(out) >= 3


def test_a_device_too_slow_from_the_first_tick_is_warned_about(tmp_path: Path) -> None:
    """Every read times out from t = 0 (the device opened: its first read had 2 s); stderr
    says so at once, in one line naming the device, not only the summary's event count."""
    scenario = _folder(tmp_path)
    out = tmp_path / "slow.h5"
    proc = _gridloop("run", str(scenario), "--out", str(out), "--quiet", "--realtime",
                     "--set", "run.duration_s=0.5", "--set", "run.deadline_s=0.08",
                     "--set", "lab.battery.faults=[{ delay_s = 0.12 }]")
    # a device that never gave a reading may fail the run (1), never a traceback
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    said = _warnings(proc.stderr, "lab.battery")
    assert said == ["gridloop: warning: at t = 0.000 s: lab.battery: no answer within "
                    "80 ms (the run goes on; reads retry it)"], proc.stderr


def test_a_device_that_failed_to_open_is_said_once(tmp_path: Path) -> None:
    """The open's warning covers the reads that fail on from t = 0 (and the writes the
    controller keeps asking for): one line, where every failed write is still recorded."""
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = SCENARIO.replace('mode = "emulated"', 'mode = "hardware"', 1).replace(
        "[nodes.lab.battery]\n", '[nodes.lab.battery]\nmode = "hardware"\n'
        f'device = {{ backend = "modbus_tcp", host = "127.0.0.1", port = {port} }}\n')
    scenario = _folder(tmp_path, text)
    out = tmp_path / "gone.h5"
    proc = _gridloop("run", str(scenario), "--out", str(out), "--quiet",
                     "--set", "run.duration_s=0.5", "--set", "run.capture=false")
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    said = _warnings(proc.stderr, "lab.battery")
    assert len(said) == 1 and f"cannot connect to 127.0.0.1:{port}" in said[0], proc.stderr
    with h5py.File(out, "r") as f:
        q = f["quality/lab/battery"][()]
        kinds = [e["kind"].decode() for e in f["events"][()]]
    assert kinds.count("device_write_failed") == len(q) == int((q & WRITE_FAILED != 0).sum())


def test_hardware_mode_without_a_hardware_asset_says_so(tmp_path: Path) -> None:
    scenario = _folder(tmp_path)
    out = tmp_path / "nohw.h5"
    proc = _gridloop("run", str(scenario), "--out", str(out), "--quiet",
                     "--set", 'run.mode="hardware"', "--set", "run.duration_s=0.5",
                     "--set", "run.capture=false")
    assert proc.returncode == 0, proc.stderr
    warned = [x for x in proc.stderr.splitlines() if x.startswith("gridloop: warning:")]
    assert len(warned) == 1, proc.stderr
    line = warned[0]
    assert line.startswith('gridloop: warning: --set run.mode="hardware": run.mode: hardware, '
                           'but no asset has mode = "hardware"'), line
    assert "lab.inverter, lab.battery, lab.meter run emulated" in line
    assert "lab.pv, lab.grid in the twin" in line
    with h5py.File(out, "r") as f:
        assert f.attrs["mode"] == "emulated"  # what ran
        assert f.attrs["mode_requested"] == "hardware"
        assert not f.attrs["realtime"]
        assert json.loads(f.attrs["asset_modes"]) == {
            "lab.pv": "twin", "lab.inverter": "emulated", "lab.battery": "emulated",
            "lab.grid": "twin", "lab.meter": "emulated"}
    # the file's own [run] mode is named by its line
    hw = _folder(tmp_path, SCENARIO.replace('mode = "emulated"', 'mode = "hardware"', 1))
    proc = _gridloop("run", str(hw), "--out", str(out), "--quiet",
                     "--set", "run.duration_s=0.2", "--set", "run.capture=false")
    assert proc.returncode == 0, proc.stderr
    assert f"gridloop: warning: {hw}:8: run.mode: hardware, but" in proc.stderr
