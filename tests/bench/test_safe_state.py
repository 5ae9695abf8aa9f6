"""However a run ends (at its end, a controller error, Ctrl-C, a dead device), no device keeps
the run's last setpoints: the bench writes each device it wrote to its safe state (a battery
at 0 W, an inverter's limit at 100 % and its power setpoint released, a rack's cap removed)
before closing it, records it per device, and says in one line where it failed, without
hanging on a dead device.

A `gridloop emulate` kit in its own process stands in for the hardware (real Modbus TCP
servers on loopback, still serving when the run is over), as a lab engineer's kit does; its
registers are read back through the Modbus back-end after each run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.errors import DeviceWarning
from bench.recording import open_run
from firmware_bridge.maps import get_map
from firmware_bridge.registry import open_device
from firmware_bridge.sunspec import decode_value, model_layout

from .kit import LAB_NODE, emulated_kit, in_terminal

KIT = """
[run]
name = "kit"
dt_s = 0.1
duration_s = 60
seed = 1

[controller]
name = "external"
""" + LAB_NODE

#: what the runs command, none of it safe to leave behind
UNSAFE = {"lab.battery.p_set_w": -20000.0, "lab.inverter.w_max_lim_pct": 40.0,
          "lab.inverter.p_set_w": 5000.0, "lab.rack.power_cap_w": 20000.0}

CONTROLLER = '''
import os
import signal


class Crashes:
    """Commands what the kit must not keep, then fails at 0.3 s."""

    def __init__(self, context, setpoints):
        self.setpoints = setpoints

    def step(self, obs):
        if obs.t >= 0.3 - 1e-9:
            raise RuntimeError("my bug")
        return self.setpoints


class Freezes:
    """Commands what the kit must not keep, then freezes the kit at 0.5 s (SIGSTOP: its
    sockets still accept connections, nothing answers)."""

    def __init__(self, context, setpoints, kit_pid):
        self.setpoints, self.kit_pid = setpoints, kit_pid

    def step(self, obs):
        if self.kit_pid and obs.t >= 0.5 - 1e-9:
            os.kill(self.kit_pid, signal.SIGSTOP)
            self.kit_pid = 0
        return self.setpoints
'''

MAPS = {"inverter": "sunspec_inverter", "battery": "sunspec_battery", "rack": "gpu_rack"}
#: what a safe state sets, per device: a signal the device reads back (what it applies, once
#: its plant has stepped), or the register of a point no signal reads ((model, point))
POINTS: dict[str, list[Any]] = {"inverter": ["w_max_lim_pct", (704, "WSetEna")],
                                "battery": [(704, "WSetEna"), (704, "WSet")],
                                "rack": ["power_cap_w"]}
#: what they hold after a safe state (WSetEna 0: the inverter's setpoint released)
SAFE = {"inverter": {"w_max_lim_pct": 100.0, "WSetEna": 0},
        "battery": {"WSetEna": 1, "WSet": 0}, "rack": {"power_cap_w": 0.0}}
#: what they hold after :data:`UNSAFE` (WSet in W: scale factor 0)
UNSAFE_HELD = {"inverter": {"w_max_lim_pct": 40.0, "WSetEna": 1},
               "battery": {"WSetEna": 1, "WSet": -20000}, "rack": {"power_cap_w": 20000.0}}
SAFE_EVENTS = [
    ("safe_state", "lab.inverter: safe state written: w_max_lim_pct = 100 %, p_set_w released"),
    ("safe_state", "lab.battery: safe state written: p_set_w = 0 W"),
    ("safe_state", "lab.rack: safe state written: power_cap_w = 0 W")]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, dict]]]:
    """The kit's process and its devices by asset (``host``, ``port``, ``unit``)."""
    path = tmp_path_factory.mktemp("kit") / "kit.toml"
    path.write_text(KIT)
    with emulated_kit(path, 4) as (proc, devices):
        yield proc, {d["asset"]: d for d in devices}


def _lab(tmp_path: Path, devices: dict[str, dict]) -> Path:
    """The kit's node as a lab engineer's scenario: every device by its address."""
    text = KIT.replace('name = "kit"', 'name = "lab"\nmode = "hardware"').replace(
        "duration_s = 60", "duration_s = 0.6")
    for asset, d in devices.items():
        header = f"[nodes.lab.{asset}]\n"
        text = text.replace(header, header + 'mode = "hardware"\n'
                            f'device = {{ backend = "modbus_tcp", host = "{d["host"]}", '
                            f'port = {d["port"]}, unit = {d["unit"]} }}\n')
    (tmp_path / "safe_ctrl.py").write_text(CONTROLLER)
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def _options(name: str, **more: int) -> list[str]:
    """``--set``s for controller ``name`` commanding :data:`UNSAFE`: passthrough takes the
    setpoints as its options, the controllers of :data:`CONTROLLER` as ``setpoints``."""
    table = "{ " + ", ".join(f'"{k}" = {v}' for k, v in UNSAFE.items()) + " }"
    if ":" in name:
        table = "{ " + ", ".join([f"setpoints = {table}", *(f"{k} = {v}"
                                                             for k, v in more.items())]) + " }"
    return ["--set", f'controller.name="{name}"', "--set", f"controller.options={table}"]


async def _registers(devices: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """What each device holds of :data:`POINTS`, read through the Modbus back-end."""
    out = {}
    for asset, points in POINTS.items():
        d = devices[asset]
        layout = get_map(MAPS[asset]).layout()
        async with open_device("modbus_tcp", host=d["host"], port=d["port"], unit=d["unit"],
                               map=MAPS[asset]) as dev:
            reading = await dev.read()
            out[asset] = {}
            for what in points:
                if isinstance(what, str):
                    out[asset][what] = reading.values.get(what)
                    continue
                point = model_layout(what[0]).point(what[1])
                regs = await dev.read_registers(layout.address(*what), point.size)
                out[asset][what[1]] = decode_value(point, regs)
    return out


def _held(devices: dict[str, dict], expected: dict[str, dict[str, Any]]
          ) -> dict[str, dict[str, Any]]:
    """What the devices hold once they show ``expected``, or after 3 s (a plant applies a
    setpoint at its next step, 0.1 s on the kit's clock)."""
    deadline = time.monotonic() + 3.0
    while (held := asyncio.run(_registers(devices))) != expected \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    return held


async def _command_unsafe(devices: dict[str, dict]) -> None:
    """What a run that left nothing safe would leave (so a missing safe state shows)."""
    for asset in MAPS:
        d = devices[asset]
        values = {k.split(".")[2]: v for k, v in UNSAFE.items() if k.split(".")[1] == asset}
        async with open_device("modbus_tcp", host=d["host"], port=d["port"], unit=d["unit"],
                               map=MAPS[asset]) as dev:
            await dev.write(values)


def _unsafe_first(devices: dict[str, dict]) -> None:
    asyncio.run(_command_unsafe(devices))
    assert _held(devices, UNSAFE_HELD) == UNSAFE_HELD


def _events(out: Path) -> list[tuple[float, str, str]]:
    with open_run(out) as run:
        return run.events()


def test_a_run_that_ends_leaves_every_device_it_wrote_safe(
        kit: tuple[Any, dict[str, dict]], tmp_path: Path) -> None:
    _, devices = kit
    _unsafe_first(devices)
    out = tmp_path / "end.h5"
    assert main(["run", str(_lab(tmp_path, devices)), "--out", str(out), "--quiet",
                 *_options("passthrough")]) == 0
    assert _held(devices, SAFE) == SAFE
    events = _events(out)
    assert [(k, m) for _, k, m in events] == SAFE_EVENTS
    assert all(t == pytest.approx(0.6) for t, _, _ in events)  # the run's end


def test_a_controller_error_leaves_them_safe_and_is_still_the_outcome(
        kit: tuple[Any, dict[str, dict]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, devices = kit
    _unsafe_first(devices)
    out = tmp_path / "crash.h5"
    capsys.readouterr()
    assert main(["run", str(_lab(tmp_path, devices)), "--out", str(out), "--quiet",
                 *_options("safe_ctrl:Crashes")]) == 2
    raised = CONTROLLER.splitlines().index('            raise RuntimeError("my bug")') + 1
    line = ("controller 'safe_ctrl:Crashes' failed at t = 0.300 s: RuntimeError: my bug "
            f"(at {tmp_path / 'safe_ctrl.py'}:{raised} in step)")
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"gridloop: error: {line}"
    assert _held(devices, SAFE) == SAFE
    assert [(k, m) for _, k, m in _events(out)] == [*SAFE_EVENTS, ("run_stopped", line)]


def _ticks(path: Path) -> int:
    """Ticks recorded so far by a run in progress (0 before its file has any)."""
    try:
        with warnings.catch_warnings(), open_run(path) as run:
            warnings.simplefilter("ignore")  # the writer between two datasets' flushes
            return len(run)
    except Exception:  # not there yet, or between two flushes: ask again
        return 0


def test_ctrl_c_leaves_them_safe(kit: tuple[Any, dict[str, dict]], tmp_path: Path) -> None:
    _, devices = kit
    _unsafe_first(devices)
    out = tmp_path / "int.h5"
    with in_terminal("run", str(_lab(tmp_path, devices)), "--out", str(out), "--quiet",
                     "--set", "run.duration_s=60", "--set", "run.flush_s=0.1",
                     *_options("passthrough")) as proc:
        deadline = time.monotonic() + 60
        while _ticks(out) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert _held(devices, SAFE) == SAFE
    assert [(k, m) for _, k, m in _events(out)][-4:] == [*SAFE_EVENTS,
                                                          ("run_stopped", "interrupted")]


def test_a_dead_device_is_said_and_never_holds_up_the_exit(
        kit: tuple[Any, dict[str, dict]], tmp_path: Path) -> None:
    proc, devices = kit
    out = tmp_path / "dead.h5"
    try:
        with pytest.warns(DeviceWarning) as caught:
            t0 = time.monotonic()
            main(["run", str(_lab(tmp_path, devices)), "--out", str(out), "--quiet",
                  "--set", "run.duration_s=1", *_options("safe_ctrl:Freezes", kit_pid=proc.pid)])
            took = time.monotonic() - t0
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    failed = [(k, m) for _, k, m in _events(out) if k.startswith("safe_state")]
    assert [k for k, _ in failed] == ["safe_state_failed"] * 3, failed
    battery = failed[1][1]
    assert battery.startswith("lab.battery: safe state not written (p_set_w = 0 W): no answer "
                              f"from {devices['battery']['host']}:{devices['battery']['port']}")
    said = [str(w.message) for w in caught if "safe state" in str(w.message)]
    assert said[1] == f"{battery}; the device may still hold the run's last setpoints"
    assert len(said) == 3 and all("\n" not in x for x in said)
    assert took < 1.0 + 8.0  # building and opening, the run, then at most 2 s more
