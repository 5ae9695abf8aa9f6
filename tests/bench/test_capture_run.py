"""Device traffic captured into a run's recording, and served again as emulated devices."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run
from firmware_bridge.capture import Status, read_capture

SCENARIO = """
[run]
name = "capture"
dt_s = 0.1
duration_s = 5
seed = 3
mode = "emulated"
capture = true
[controller]
name = "schedule"
options = { "lab.battery.p_set_w" = [[0, 0], [1, 20000], [3, 0]] }
[nodes.lab.battery]
kind = "battery"
[nodes.lab.meter]
kind = "meter"
"""


def test_capture_lands_in_the_recording_and_replays_as_devices(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    first = tmp_path / "first.h5"
    assert main(["run", str(scenario), "--out", str(first), "--quiet"]) == 0
    with h5py.File(first, "r") as f:
        capture = read_capture(f)
    assert set(capture.devices) == {"lab.battery", "lab.meter"}
    txs = capture.transactions("lab.battery")
    reads = [tx for tx in txs if tx.function_code == 3]
    writes = [tx for tx in txs if tx.function_code in (6, 16)]
    assert len(reads) >= 50 and all(tx.status == Status.OK for tx in txs)
    assert writes and all(tx.request for tx in writes)  # the setpoint changes, as sent
    assert all(tx.latency_s > 0 for tx in txs)
    with open_run(first) as run:  # each tick's transactions found from the run's clock
        rows = run.capture("lab.battery")
        ticks = rows["tick"][rows["tick"] >= 0]
        assert len(ticks) >= len(run) - 1 and (np.diff(ticks) >= 0).all()
        assert np.isfinite(rows["t_run_s"]).all()
    # the same scenario against the captured devices: every measured value is replayed
    again = tmp_path / "again.h5"
    assert main(["run", str(scenario), "--out", str(again), "--quiet",
                 "--set", f'lab.battery.replay_capture="{first}"',
                 "--set", f'lab.meter.replay_capture="{first}"',
                 "--set", "run.capture=false"]) == 0
    with open_run(first) as a, open_run(again) as b:
        for asset, signal in (("battery", "voltage_v"), ("battery", "soc"),
                              ("battery", "p_w"), ("meter", "p_w"), ("meter", "e_import_wh")):
            np.testing.assert_array_equal(a.signal("lab", asset, signal),
                                          b.signal("lab", asset, signal))


def test_replaying_a_recording_without_that_device_is_one_clear_error(tmp_path: Path,
                                                                      capsys) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.replace("capture = true", "capture = false"))
    plain = tmp_path / "plain.h5"
    assert main(["run", str(scenario), "--out", str(plain), "--quiet"]) == 0
    assert main(["run", str(scenario), "--out", str(tmp_path / "x.h5"), "--quiet",
                 "--set", f'lab.battery.replay_capture="{plain}"']) == 2
    err = capsys.readouterr().err
    assert "replay_capture" in err and "no /capture" in err


def test_replaying_a_damaged_capture_is_one_line_naming_what_cannot_be_read(
        tmp_path: Path, capsys) -> None:
    """A capture whose group or dataset header is damaged was a TypeError traceback."""
    import shutil

    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.replace("duration_s = 5", "duration_s = 1"))
    first = tmp_path / "first.h5"
    assert main(["run", str(scenario), "--out", str(first), "--quiet"]) == 0
    for obj in ("capture/lab.battery", "capture/lab.battery/transactions"):
        bad = tmp_path / f"{obj.replace('/', '_')}.h5"
        shutil.copy(first, bad)
        with h5py.File(bad, "r") as f:
            addr = h5py.h5o.get_info(f[obj].id).addr
        with open(bad, "r+b") as f:  # the object header's checksum fails
            f.seek(addr + 12)
            f.write(b"\xff" * 8)
        capsys.readouterr()
        assert main(["run", str(scenario), "--out", str(tmp_path / "x.h5"), "--quiet",
                     "--set", f'lab.battery.replay_capture="{bad}"',
                     "--set", "run.capture=false"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f'gridloop: error: --set lab.battery.replay_capture="{bad}": '
                              f"nodes.lab.battery.replay_capture: cannot replay {bad}: "
                              "/capture/lab.battery cannot be read (damaged"), err


def test_a_serial_board_in_a_captured_run_is_said_not_to_be_captured(tmp_path: Path) -> None:
    """capture = true records Modbus transactions: a serial board's are not, and the run says
    so (it left it out without a word, and a replay_capture of it later found none)."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.replace("duration_s = 5", "duration_s = 1").replace(
        '[nodes.lab.meter]\nkind = "meter"', '[nodes.lab.meter]\nkind = "meter"\n'
        'transport = "serial"'))
    out = tmp_path / "r.h5"
    with pytest.warns(Warning, match=r"lab\.meter is not captured: capture records Modbus "
                                     r"transactions, and its device is a serial board"):
        assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    with h5py.File(out, "r") as f:
        assert list(read_capture(f).devices) == ["lab.battery"]
