"""A lab kit wired as RS-485 is: an inverter at unit 1, a battery at unit 2 and a meter at
unit 3 on one serial port.  The scenario says so by naming one port in three ``modbus_rtu``
device tables; the run polls the three on one line, `gridloop emulate` and ``--mode
emulated`` serve them on one pseudo-terminal, and a file whose devices cannot share the port
(other line settings, one unit id twice, a serial board on it) is one line at parse time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.emulation import EmulatorProcess
from bench.errors import ScenarioError
from bench.recording import open_run
from bench.scenario import load

from .kit import emulated_kit

KIT = """\
[run]
name = "rs485"
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
device = {{ backend = "modbus_rtu", port = "{port}", baudrate = 9600, unit = 1 }}

[nodes.lab.battery]
kind = "battery"
mode = "hardware"
device = {{ backend = "modbus_rtu", port = "{port}", baudrate = 9600, unit = 2 }}

[nodes.lab.grid]
kind = "grid"

[nodes.lab.meter]
kind = "meter"
mode = "hardware"
device = {{ backend = "modbus_rtu", port = "{port}", baudrate = 9600, unit = 3 }}
{extra}"""

#: the assets on the line
ON_THE_LINE = ("inverter", "battery", "meter")


def _scenario(tmp_path: Path, port: str = "/dev/ttyUSB0", extra: str = "",
              name: str = "lab.toml") -> Path:
    path = tmp_path / name
    path.write_text(KIT.format(port=port, extra=extra))
    return path


# -- what may share a port --------------------------------------------------------------


@pytest.mark.parametrize(("setting", "says"), [
    ("lab.meter.device.unit=2",
     "--set lab.meter.device.unit=2: nodes.lab.meter.device.unit: unit 2 on /dev/ttyUSB0 is "
     "already lab.battery's; the devices on one RTU port each need a unit id of their own"),
    ("lab.meter.device.baudrate=19200",
     "--set lab.meter.device.baudrate=19200: nodes.lab.meter.device.baudrate: 19200 on "
     "/dev/ttyUSB0, where lab.inverter has 9600; the devices on one RTU port share its line: "
     "their baudrate, parity, bytesize and stopbits must match"),
    ("lab.battery.device.parity=E",
     "--set lab.battery.device.parity=E: nodes.lab.battery.device.parity: 'E' on "
     "/dev/ttyUSB0, where lab.inverter has 'N' (the default); the devices on one RTU port "
     "share its line: their baudrate, parity, bytesize and stopbits must match"),
    ('lab.meter.device={ backend = "serial", port = "/dev/ttyUSB0" }',
     "nodes.lab.meter.device.port: /dev/ttyUSB0 is already lab.inverter's; a serial board "
     "has its port to itself (only modbus_rtu devices share one, the slaves of an RS-485 "
     "line)"),
])
def test_devices_that_cannot_share_the_port_are_one_line_naming_both(
        tmp_path: Path, setting: str, says: str, capsys: pytest.CaptureFixture) -> None:
    path = _scenario(tmp_path)
    with pytest.raises(ScenarioError) as caught:
        load(path, [setting])
    assert str(caught.value).endswith(says), caught.value
    assert main(["run", str(path), "--mode", "emulated", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_the_error_is_at_the_line_of_the_device_that_does_not_fit(tmp_path: Path) -> None:
    path = _scenario(tmp_path, extra='\n[nodes.lab.rack]\nkind = "meter"\nmode = "hardware"\n'
                     'device = { backend = "modbus_rtu", port = "/dev/ttyUSB0", '
                     'baudrate = 9600, unit = 1 }\n')
    line = path.read_text().splitlines().index('[nodes.lab.rack]') + 4
    with pytest.raises(ScenarioError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}:{line}: nodes.lab.rack.device.unit: unit 1 "
                                        "on /dev/ttyUSB0 is already lab.inverter's"), caught.value


def test_two_names_of_one_port_are_one_port(tmp_path: Path) -> None:
    """``/dev/serial/by-id/...`` is a link to the ``/dev/ttyUSB0`` another device names."""
    target = tmp_path / "ttyUSB0"
    target.touch()
    link = tmp_path / "usb-FTDI_RS485-if00-port0"
    os.symlink(target, link)
    path = _scenario(tmp_path, port=str(target))
    text = path.read_text().replace(f'port = "{target}", baudrate = 9600, unit = 3',
                                    f'port = "{link}", baudrate = 9600, unit = 2')
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load(path)
    assert f"unit 2 on {link} (which lab.inverter names {target}) is already lab.battery's" \
        in str(caught.value), caught.value


def test_an_asset_in_the_twin_opens_no_port_and_is_left_out(tmp_path: Path) -> None:
    path = _scenario(tmp_path)
    s = load(path, ["lab.meter.device.unit=2", "lab.meter.mode=twin"])
    assert s.nodes["lab"]["meter"].device["unit"] == 2


# -- emulated: one pty for the line ---------------------------------------------------------


def test_the_emulators_serve_the_line_on_one_pty_and_a_ci_run_reads_every_unit(
        tmp_path: Path) -> None:
    path = _scenario(tmp_path)
    s = load(path, ["run.mode=emulated"])
    proc = EmulatorProcess(s, s.overrides)
    try:
        devices = {d["asset"]: d for d in proc.start()}
    finally:
        proc.stop()
    assert len({devices[a]["serial_port"] for a in ON_THE_LINE}) == 1
    assert [devices[a]["unit"] for a in ON_THE_LINE] == [1, 2, 3]
    out = tmp_path / "ci.h5"
    assert main(["run", str(path), "--mode", "emulated", "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        for asset in ON_THE_LINE:
            q = run.quality("lab", asset)
            assert np.all(q == 0), (asset, np.bincount(q))
        assert run.events() == []  # no emulator.unit: each slave ignored its neighbours
        soc = run.signal("lab", "battery", "soc")
        assert np.all((soc[1:] >= 0) & (soc[1:] <= 1))
        assert np.all(np.isfinite(run.signal("lab", "meter", "p_w")[1:]))
        assert np.all(np.isfinite(run.signal("lab", "inverter", "p_ac_w")[1:]))


@pytest.mark.slow
def test_a_unit_that_misses_answers_costs_the_others_time_not_garbage(tmp_path: Path) -> None:
    """In real time the battery answers 0.3 s late for 0.1 s (past the bench's deadline,
    within its client's 0.5 s time-out): the line stays quiet for that time-out, so the
    inverter and meter may miss their deadlines meanwhile (timeouts), but never take the
    battery's late answer for theirs (errors), and all answer again."""
    extra = "faults = [{ delay_s = 0.3, start_s = 1.0, stop_s = 1.1 }]\n"
    text = KIT.format(port="/dev/ttyUSB0", extra="").replace(
        'unit = 2 }\n', 'unit = 2 }\n' + extra)
    path = tmp_path / "rt.toml"
    path.write_text(text)
    out = tmp_path / "rt.h5"
    with pytest.warns(Warning, match="lab.battery: no answer"):
        assert main(["run", str(path), "--mode", "emulated", "--realtime", "--out", str(out),
                     "--quiet", "--set", "run.duration_s=4"]) == 0
    with open_run(out) as run:
        t = run.time
        for asset in ON_THE_LINE:
            q = run.quality("lab", asset) & 3
            assert np.all(q[t < 1.0] == 0), (asset, q)
            assert not np.any(q == 3), (asset, q)  # never a wrong or garbled answer
            # the battery's 0.5 s time-out of quiet line (5 or 6 ticks of 0.1 s; more on a
            # busy machine, whose late ticks miss their deadlines too), not the run
            assert int((q != 0).sum()) <= 20, (asset, q)
            assert np.all(q[t >= 3.0] == 0), (asset, q)
        # polled before the battery, the inverter read the whole of its registers first
        assert run.quality("lab", "inverter")[np.isclose(t, 1.0)][0] == 0


# -- hardware: the kit's one port --------------------------------------------------------


@pytest.mark.slow
def test_a_hardware_run_polls_every_unit_on_the_kits_one_port(tmp_path: Path) -> None:
    """`gridloop emulate` stands in for the kit (three slaves on one pty); the lab's file
    names that pty for all three devices, as it names ``/dev/ttyUSB0`` on the bench."""
    with emulated_kit(_scenario(tmp_path, name="kit.toml"), 3) as (_, devices):
        ports = {d["serial_port"] for d in devices}
        assert len(ports) == 1
        path = _scenario(tmp_path, port=ports.pop())
        out = tmp_path / "hw.h5"
        assert main(["run", str(path), "--out", str(out), "--quiet",
                     "--set", "run.duration_s=2"]) == 0
    with open_run(out) as run:
        assert run.attrs["mode"] == "hardware" and len(run) == 20
        assert "device_open_failed" not in [k for _, k, _ in run.events()], run.events()
        for asset in ON_THE_LINE:
            q = run.quality("lab", asset)
            assert np.mean(q == 0) >= 0.9, (asset, np.bincount(q))
        freq = run.signal("lab", "meter", "freq_hz")
        assert 45 < np.nanmedian(freq) < 65
        soc = run.signal("lab", "battery", "soc")
        assert np.all((soc[np.isfinite(soc)] >= 0) & (soc[np.isfinite(soc)] <= 1))
