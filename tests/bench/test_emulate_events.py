"""``gridloop emulate`` says each fault it injects on stderr with the emulator's time (the
clock of the fault card's ``start_s``), the device named ``node.asset``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from firmware_bridge.errors import DeviceError
from firmware_bridge.registry import open_device

REPO = Path(__file__).resolve().parents[2]
SCENARIO = """
[run]
name = "emu"
dt_s = 0.1
duration_s = 60
[nodes.lab.battery]
kind = "battery"
faults = [{ exception_code = 4, start_s = 1.5 }]
"""


async def _read_once(d: dict) -> None:
    dev = open_device("modbus_tcp", host=d["host"], port=d["port"], unit=d["unit"],
                      map=d["map"], name="lab.battery")
    try:
        await dev.open()
        await dev.read()
    except DeviceError:
        pass  # exception 04 from 1.5 s on: what the test is after
    finally:
        await dev.close()


def test_fault_events_carry_the_emulators_time(tmp_path: Path) -> None:
    scenario = tmp_path / "emu.toml"
    scenario.write_text(SCENARIO)
    proc = subprocess.Popen([sys.executable, "-m", "bench", "emulate", str(scenario), "--json",
                             "--speed", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert proc.stdout is not None
        d = json.loads(proc.stdout.readline())
        time.sleep(1.0)  # 5 simulated s: well past the card's start
        asyncio.run(_read_once(d))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [line for line in err.splitlines() if line.startswith("event ")]
    assert lines[0] == ("event fault.set at t = 0.000 s: lab.battery: exception_code=4, "
                        "start_s=1.5")
    struck = [re.fullmatch(r"event fault\.exception at t = (\d+\.\d{3}) s: lab\.battery: "
                           r"exception 0x04 to FC3 \d+\+\d+", line) for line in lines[1:]]
    assert struck and all(struck), lines
    # the device's clock: past the card's start (a plain event line said no time at all)
    assert all(float(m[1]) >= 1.5 for m in struck if m)
