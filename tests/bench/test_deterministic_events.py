"""Two emulated runs of one scenario record the same thing (CI compares golden files): the
same ``/events``, in the same order, with the same messages, and the same per-tick
datasets, apart from wall-clock data (``/wall``, ``/timing``, ``started_at``, captures).

Each run is ``gridloop run`` in a process of its own, as CI starts it, against real
emulators: Modbus TCP servers on loopback ports and RTU and serial boards on
pseudo-terminals, which are other ones in every run.  The fault cards of two devices fire
in the same ticks, so the order of one tick's events is tested, not only their text."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from firmware_bridge.errors import DeviceError
from firmware_bridge.registry import open_device

from .kit import REPO

FAULTS = REPO / "experiments" / "faults" / "scenario.toml"
#: the faults lab's meter times out and its battery answers exception 4, both 30 % of
#: their transactions from 1 s to 3 s: many ticks where both strike
FAULT_CARDS = (
    "dc.meter.faults=[{ timeout = true, probability = 0.3, start_s = 1.0, stop_s = 3.0, "
    "seed = 1 }]",
    "dc.battery.faults=[{ exception_code = 4, probability = 0.3, start_s = 1.0, "
    "stop_s = 3.0, seed = 2 }]",
    "run.duration_s=4.0",
)

#: a battery on Modbus RTU and a meter speaking the serial protocol, both on ptys: the
#: battery leaves reads unanswered while the meter's board unplugs its port
PTYS = """\
[run]
name = "ptys"
dt_s = 0.05
duration_s = 2
seed = 1
mode = "emulated"
deadline_s = 0.04

[controller]
name = "passthrough"

[nodes.lab.battery]
kind = "battery"
transport = "rtu"
faults = [{ timeout = true, probability = 0.4, start_s = 0.5, stop_s = 1.5, seed = 4 }]

[nodes.lab.grid]
kind = "grid"

[nodes.lab.meter]
kind = "meter"
transport = "serial"
faults = [{ disconnect_s = 0.3, start_s = 0.5 }]
"""


def _run(scenario: Path, out: Path, *sets: str) -> None:
    args = [sys.executable, "-m", "bench", "run", str(scenario), "--out", str(out), "--quiet"]
    for item in sets:
        args += ["--set", item]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def _events(f: h5py.File) -> list[tuple[float, str, str]]:
    return [(float(e["t"]), e["kind"].decode(), e["message"].decode())
            for e in f["events"][()]]


def _per_tick(f: h5py.File) -> dict[str, np.ndarray]:
    """Every per-tick dataset but the wall-clock ones."""
    n = len(f["time"])
    out: dict[str, np.ndarray] = {}

    def visit(name: str, obj: object) -> None:
        if not isinstance(obj, h5py.Dataset) or name == "wall" \
                or name.startswith(("timing/", "capture/")):
            return
        if obj.shape[:1] == (n,):
            out[name] = obj[()]

    f.visititems(visit)
    return out


def _attrs(f: h5py.File) -> dict[str, object]:
    return {k: v for k, v in f.attrs.items() if k != "started_at"}


def _same_recordings(a: Path, b: Path) -> list[tuple[float, str, str]]:
    """Assert the two recordings are the same; returns the events."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert bool(fa.attrs["complete"]) and bool(fb.attrs["complete"])
        ea, eb = _events(fa), _events(fb)
        assert ea == eb, "\n".join(f"{x}  |  {y}" for x, y in zip(ea, eb) if x != y)
        assert _attrs(fa) == _attrs(fb)
        da, db = _per_tick(fa), _per_tick(fb)
        assert sorted(da) == sorted(db)
        assert "time" in da and any(k.startswith("quality/") for k in da)
        assert any(k.startswith("nodes/") for k in da)
        for name, values in da.items():
            other = db[name]
            assert values.dtype == other.dtype, name
            if values.dtype.kind == "f":
                assert np.array_equal(values, other, equal_nan=True), name
            else:
                assert np.array_equal(values, other), name
    return ea


def _struck_together(events: list[tuple[float, str, str]]) -> list[float]:
    """Ticks in which fault events of more than one device were recorded."""
    devices: dict[float, set[str]] = defaultdict(set)
    for t, kind, message in events:
        if kind.startswith("fault.") and kind != "fault.set":
            devices[t].add(message.partition(":")[0])
    return [t for t, names in devices.items() if len(names) > 1]


@pytest.mark.slow
def test_two_runs_of_the_faults_lab_record_the_same_events_and_ticks(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "run.h5", tmp_path / "b" / "run.h5"
    _run(FAULTS, a, *FAULT_CARDS)
    _run(FAULTS, b, *FAULT_CARDS)
    events = _same_recordings(a, b)
    assert _struck_together(events), events  # one tick's order was put to the test
    kinds = {kind for _, kind, _ in events}
    assert {"fault.timeout", "fault.exception", "device_timeout", "device_error"} <= kinds
    # an emulated device's messages name no loopback port (another each run)
    timeouts = [m for _, k, m in events if k == "device_timeout"]
    assert timeouts and all(m.startswith("dc.meter: no answer from its emulator within")
                            for m in timeouts), timeouts
    assert not [m for _, _, m in events if "127.0.0.1" in m]
    # within a tick: the devices' own events first (device order of the scenario: rack,
    # battery, meter), then what their emulators injected, also in device order
    by_tick: dict[float, list[tuple[str, str]]] = defaultdict(list)
    for t, kind, message in events:
        by_tick[t].append((kind, message))
    for t in _struck_together(events):
        faults = [m.partition(":")[0] for k, m in by_tick[t] if k.startswith("fault.")]
        assert faults == sorted(faults, key=["dc/rack", "dc/battery", "dc/meter"].index), t


@pytest.mark.slow
def test_two_runs_on_ptys_record_the_same_events_and_ticks(tmp_path: Path) -> None:
    """RTU and serial devices on pseudo-terminals, whose paths (/dev/pts/N) change."""
    scenario = tmp_path / "ptys.toml"
    scenario.write_text(PTYS)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    _run(scenario, a)
    _run(scenario, b)
    events = _same_recordings(a, b)
    assert _struck_together(events), events
    assert not [m for _, _, m in events if "/dev/" in m], events
    said = {(k, m) for _, k, m in events if k.startswith("device_")}
    assert ("device_timeout", "lab.battery: no answer from its emulator's pty (19200 8N1) "
            "within 0.04 s") in said, said
    assert ("device_error", "lab.meter: its emulator's pty lost (hang-up)") in said, said


def _closed_port() -> int:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _open_error(device: object) -> str:
    try:
        await device.open()  # type: ignore[attr-defined]
    except DeviceError as exc:
        return str(exc)
    finally:
        await device.close()  # type: ignore[attr-defined]
    raise AssertionError("opened a device that is not there")


def test_a_hardware_device_keeps_its_address_an_emulated_one_its_label(
        tmp_path: Path) -> None:
    """The label is what the bench passes for an emulated device; a device without one (a
    lab's) is named by its real address, which an engineer goes and looks for."""
    port = _closed_port()
    real = asyncio.run(_open_error(open_device("modbus_tcp", host="127.0.0.1", port=port,
                                               name="lab.meter", map="sunspec_meter")))
    assert real.startswith(f"lab.meter: cannot connect to 127.0.0.1:{port}"), real
    emulated = asyncio.run(_open_error(open_device(
        "modbus_tcp", host="127.0.0.1", port=port, name="lab.meter", map="sunspec_meter",
        address_label="its emulator")))
    assert emulated.startswith("lab.meter: cannot connect to its emulator"), emulated
    assert str(port) not in emulated

    gone = str(tmp_path / "pts-9")  # a pty path that is not there (an emulator gone)
    real = asyncio.run(_open_error(open_device("serial", port=gone, name="lab.meter")))
    assert real.startswith(f"lab.meter: cannot open {gone}"), real
    emulated = asyncio.run(_open_error(open_device("serial", port=gone, name="lab.meter",
                                                   address_label="its emulator's pty")))
    assert emulated == "lab.meter: cannot open its emulator's pty: no such port", emulated
    rtu = asyncio.run(_open_error(open_device("modbus_rtu", port=gone, name="lab.battery",
                                              map="sunspec_battery", timeout_s=0.1,
                                              address_label="its emulator's pty")))
    assert "its emulator's pty (19200 8N1)" in rtu and gone not in rtu, rtu
