"""Emulated devices are served on the transport their asset's device uses: a ``modbus_rtu``
device is Modbus RTU on a pseudo-terminal pair, a ``serial`` one the serial protocol on a
pseudo-terminal, each with its device table's line settings and unit id; ``modbus_tcp`` is
Modbus TCP.  So ``gridloop emulate`` and ``--mode emulated`` (CI) look like the lab's kit on
the wire.  Real servers, real ptys, real clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.emulation import EmulatorProcess
from bench.recording import open_run
from bench.scenario import load
from firmware_bridge.registry import open_device

from .kit import REPO

LAB = """\
[run]
name = "lab"
dt_s = 0.1
duration_s = 1
seed = 1
mode = "hardware"

[controller]
name = "passthrough"

[profiles.sun]
kind = "irradiance"
generator = "constant"
options = {{ value = 300.0 }}

[nodes.lab.pv]
kind = "pv"
profile = "sun"
mode = "twin"

[nodes.lab.inverter]
kind = "inverter"
source = "pv"
mode = "hardware"
device = {{ backend = "modbus_rtu", port = "/dev/ttyUSB0", baudrate = 9600, parity = "E", unit = 3 }}

[nodes.lab.battery]
kind = "battery"
mode = "hardware"
device = {{ backend = "modbus_tcp", host = "192.168.1.20", port = 502, unit = 2 }}

[nodes.lab.grid]
kind = "grid"

[nodes.lab.meter]
kind = "meter"
mode = "hardware"
device = {{ backend = "serial", port = "/dev/ttyACM0", baudrate = 57600 }}
{extra}"""


def _scenario(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(LAB.format(extra=extra))
    return path


def _by_asset(devices: list[dict]) -> dict[str, dict]:
    return {d["asset"]: d for d in devices}


def _check_transports(d: dict[str, dict]) -> None:
    inv, bat, met = d["inverter"], d["battery"], d["meter"]
    assert (inv["transport"], inv["backend"], inv["unit"]) == ("rtu", "modbus_rtu", 3)
    assert (inv["baudrate"], inv["parity"], inv["bytesize"], inv["stopbits"]) == (9600, "E",
                                                                                 8, 1)
    assert os.path.exists(inv["serial_port"])
    assert (bat["transport"], bat["backend"], bat["unit"]) == ("tcp", "modbus_tcp", 2)
    assert bat["host"] == "127.0.0.1" and bat["port"] > 0  # loopback, a free port
    assert (met["transport"], met["backend"]) == ("serial", "serial")
    assert (met["baudrate"], met["parity"]) == (57600, "N") and os.path.exists(
        met["serial_port"])


async def _read_each(d: dict[str, dict]) -> None:
    """Independent clients of each transport read each device (RTU with the device's own
    unit id and line settings: a pty carries no parity, which the emulator allows for)."""
    inv, bat, met = d["inverter"], d["battery"], d["meter"]
    for dev in (open_device("modbus_rtu", port=inv["serial_port"], unit=inv["unit"],
                            baudrate=inv["baudrate"], map=inv["map"]),
                open_device("modbus_tcp", host=bat["host"], port=bat["port"], unit=bat["unit"],
                            map=bat["map"]),
                open_device("serial", port=met["serial_port"], baudrate=met["baudrate"])):
        async with dev:
            assert (await dev.read()).values, dev.name


def test_gridloop_emulate_serves_each_device_on_its_devices_transport(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bench", "emulate",
                             str(_scenario(tmp_path)), "--json", "--speed", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert proc.stdout is not None
        devices = _by_asset([json.loads(proc.stdout.readline()) for _ in range(3)])
        _check_transports(devices)
        asyncio.run(_read_each(devices))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    said = [line for line in err.splitlines() if line.startswith("emulate: lab.")]
    inv = devices["inverter"]["serial_port"]
    assert said == [
        f"emulate: lab.inverter: modbus_rtu on {inv} (9600 8E1), unit 3 (its device is "
        "modbus_rtu)",
        f"emulate: lab.battery: modbus_tcp on 127.0.0.1:{devices['battery']['port']}, unit 2 "
        "(its device is modbus_tcp)",
        f"emulate: lab.meter: serial on {devices['meter']['serial_port']} (57600 8N1) (its "
        "device is serial)"], err


def test_an_assets_transport_field_still_chooses(tmp_path: Path) -> None:
    """``transport`` given in the file or with --set wins over the device table."""
    s = load(_scenario(tmp_path), ["lab.meter.transport=tcp", "run.mode=emulated"])
    proc = EmulatorProcess(s, s.overrides)
    try:
        d = _by_asset(proc.start())
    finally:
        proc.stop()
    assert d["meter"]["transport"] == "tcp" and d["meter"]["models"] == [1, 203]
    assert d["inverter"]["transport"] == "rtu"


def test_a_run_in_emulated_mode_reads_rtu_and_serial_devices(tmp_path: Path) -> None:
    """CI's --mode emulated: the run's emulator process serves the same transports, and the
    run reads every device through them."""
    path = _scenario(tmp_path)
    s = load(path, ["run.mode=emulated"])
    proc = EmulatorProcess(s, s.overrides)
    try:
        _check_transports(_by_asset(proc.start()))
    finally:
        proc.stop()
    out = tmp_path / "ci.h5"
    assert main(["run", str(path), "--mode", "emulated", "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        for asset in ("inverter", "battery", "meter"):
            q = run.quality("lab", asset)
            assert np.all(q == 0), (asset, np.bincount(q))
        assert np.all(np.isfinite(run.signal("lab", "meter", "p_w")[1:]))


@pytest.mark.parametrize(("device", "says"), [
    ('{ backend = "modbus_rtu", port = "/dev/ttyUSB0", parity = "X" }',
     "nodes.lab.meter.device: modbus_rtu: parity must be 'N', 'E' or 'O', got 'X'"),
    ('{ backend = "serial", port = "/dev/ttyACM0", bytesize = 7 }',
     "nodes.lab.meter.device: serial line: bytesize must be 8"),
    ('{ backend = "modbus_tcp", host = "10.0.0.2", unit = 300 }',
     "nodes.lab.meter.device.unit: a Modbus unit id is 1..247, got 300"),
])
def test_a_device_table_it_cannot_emulate_is_one_line_exit_2(
        tmp_path: Path, device: str, says: str, capsys: pytest.CaptureFixture) -> None:
    path = _scenario(tmp_path)
    assert main(["emulate", str(path), "--duration", "1",
                 "--set", f"lab.meter.device={device}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
