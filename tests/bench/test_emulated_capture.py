"""A capture run in emulated mode records the Modbus devices only: an asset whose device is
``serial`` is emulated as a serial board (bench/emulation.py), so it is no Modbus device in
``/capture``; an RTU device is captured as on the lab's bench."""

from __future__ import annotations

from pathlib import Path

import h5py

from bench.cli import main

from .test_emulated_transports import _scenario


def test_the_serial_board_is_not_in_the_capture(tmp_path: Path) -> None:
    path = _scenario(tmp_path)
    out = tmp_path / "cap.h5"
    assert main(["run", str(path), "--mode", "emulated", "--out", str(out), "--quiet",
                 "--set", "run.capture=true"]) == 0
    with h5py.File(out, "r") as f:
        captured = {name: len(f["capture"][name]["transactions"]) for name in f["capture"]}
    assert set(captured) == {"lab.inverter", "lab.battery"}, captured
    assert all(n > 0 for n in captured.values()), captured
