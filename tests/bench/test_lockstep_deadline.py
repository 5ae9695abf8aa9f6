"""A run that is not real time judges its emulated devices on the simulated clock, never on the
wall clock: an answer is never lost to a loaded machine, a ``delay_s`` card beyond the
deadline times out at the same ticks every run, a ``disconnect_s`` outage lasts its simulated
seconds (reconnect back-off included), and a real-time run keeps its wall-clock deadline.

Real emulated devices on loopback (in their own process, as ``gridloop run`` has them), real
HDF5 recordings, and real CPU load (processes that spin) where load matters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main

REPO = Path(__file__).resolve().parents[2]
#: the faults lab's node: a battery (two requests per read), a meter and a rack, on Modbus TCP
SCENARIO = REPO / "experiments" / "faults" / "scenario.toml"
OK, TIMEOUT = 0, 2


@contextmanager
def cpu_load() -> Iterator[None]:
    """Every core busy, while the body runs."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for p in burners:
            p.kill()
        for p in burners:
            p.wait()


def _run(tmp_path: Path, name: str, *sets: str, duration: str = "1",
         realtime: bool = False, statuses: tuple[int, ...] = (0,)) -> Path:
    out = tmp_path / f"{name}.h5"
    argv = ["run", str(SCENARIO), "--out", str(out), "--quiet", "--duration", duration]
    if realtime:
        argv.append("--realtime")
    for item in sets:
        argv += ["--set", item]
    assert main(argv) in statuses
    return out


def _datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset but the wall-clock ones (``/wall``, ``/timing/...``)."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and name != "wall" \
                    and not name.startswith("timing/"):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def _quality(path: Path, asset: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[f"quality/dc/{asset}"][()]


def _events(path: Path) -> list[tuple[float, str]]:
    with h5py.File(path, "r") as f:
        return [(round(float(r["t"]), 6), r["kind"].decode() if isinstance(r["kind"], bytes)
                 else str(r["kind"])) for r in f["events"][()]]


def _assert_same(a: Path, b: Path) -> None:
    """Bit for bit, but for the wall clock and the events' messages (which name the port each
    emulator happened to listen on)."""
    da, db = _datasets(a), _datasets(b)
    assert da.keys() == db.keys()
    for name in da:
        if name == "events":
            assert _events(a) == _events(b)
        elif da[name].dtype.names:  # other compound tables: field by field
            assert np.array_equal(da[name], db[name]), name
        else:
            np.testing.assert_array_equal(da[name], db[name], err_msg=name)


def test_an_answer_is_never_a_timeout_because_the_wall_clock_ran(tmp_path: Path) -> None:
    # a deadline far below any real round trip: only the simulated clock can honour it
    out = _run(tmp_path, "tight", "run.deadline_s=0.0001")
    for asset in ("battery", "meter", "rack"):
        assert (_quality(out, asset) == OK).all(), asset
    assert not [k for _, k in _events(out) if k.startswith("device_")]


def test_recordings_under_cpu_load_are_identical(tmp_path: Path) -> None:
    # 5 ms: about one round trip of an idle machine, several of a loaded one
    sets = ("run.deadline_s=0.005",)
    with cpu_load():
        a = _run(tmp_path, "a", *sets)
        b = _run(tmp_path, "b", *sets)
    for asset in ("battery", "meter", "rack"):
        assert (_quality(a, asset) == OK).all(), asset
    _assert_same(a, b)


def test_a_delay_within_the_deadline_is_on_time_under_load(tmp_path: Path) -> None:
    # the battery's read takes two requests, 20 ms late each: 40 ms of wall clock at least
    with cpu_load():
        out = _run(tmp_path, "within", "run.deadline_s=0.03",
                   "dc.battery.faults=[{ delay_s = 0.02 }]")
    assert (_quality(out, "battery") == OK).all()
    assert "fault.delay" in {k for _, k in _events(out)}


def test_a_delay_beyond_the_deadline_times_out_at_the_same_ticks(tmp_path: Path) -> None:
    card = "dc.battery.faults=[{ delay_s = 0.05, start_s = 0.5, stop_s = 1.0 }]"
    out = _run(tmp_path, "beyond", "run.deadline_s=0.02", card)
    q = _quality(out, "battery")
    t = np.arange(len(q)) * 0.05
    window = (t >= 0.5 - 1e-9) & (t < 1.0 - 1e-9)
    # the readings time out; the setpoint writes the controller goes on making (it bridges
    # the missing battery reading) time out too, and flag the ticks WRITE_FAILED
    assert (q[window] & 3 == TIMEOUT).all() and (q[window] & 4).all(), q
    assert (q[~window] == OK).all(), q
    assert (_quality(out, "meter") == OK).all()
    with cpu_load():  # its setpoint writes, late too, reach the battery at the same ticks
        _assert_same(out, _run(tmp_path, "again", "run.deadline_s=0.02", card))


def test_a_delay_striking_some_requests_gives_the_same_recording_every_run(
        tmp_path: Path) -> None:
    card = ("dc.battery.faults=[{ delay_s = 0.1, probability = 0.1, seed = 4, "
            "start_s = 0.25, stop_s = 0.75 }]")
    sets = ("run.deadline_s=0.02", card)
    with cpu_load():
        a = _run(tmp_path, "a", *sets)
        b = _run(tmp_path, "b", *sets)
    q = _quality(a, "battery")
    # struck and spared requests in the window (a struck read's tick does not write: 4 too)
    assert TIMEOUT in q & 3 and OK in q[5:15], q
    _assert_same(a, b)


def test_a_reboot_lasts_its_simulated_seconds_and_the_reconnect_too(tmp_path: Path) -> None:
    card = "dc.battery.faults=[{ disconnect_s = 1.0, start_s = 0.5 }]"
    a = _run(tmp_path, "a", card, duration="3")
    b = _run(tmp_path, "b", card, duration="3")
    events = _events(a)
    assert (0.5, "fault.disconnect") in events
    assert (1.5, "fault.reconnect") in events  # down for 1 s of the device's clock
    # the client's back-off (0.1 s, doubling) on the simulated clock, from the setpoint
    # write that found the connection lost at 0.5 s: tries at 0.6, 0.8, 1.2 fail, 2.0 finds
    # the device back
    assert [e for e in events if e[1] == "device_recovered"] == [(2.0, "device_recovered")]
    assert _events(b) == events
    np.testing.assert_array_equal(_quality(a, "battery"), _quality(b, "battery"))


@pytest.mark.parametrize("transport", ["rtu", "serial"])
def test_a_reboot_on_a_serial_line_lasts_its_simulated_seconds(tmp_path: Path,
                                                               transport: str) -> None:
    out = _run(tmp_path, transport, f'dc.meter.transport="{transport}"',
               "dc.meter.faults=[{ disconnect_s = 0.2, start_s = 0.5 }]", duration="1.5")
    events = _events(out)
    assert (0.5, "fault.disconnect") in events and (0.7, "fault.reconnect") in events
    q = _quality(out, "meter")
    assert (q[:10] == OK).all() and (q[10] != OK) and (q[-5:] == OK).all(), q


def test_a_real_time_run_keeps_the_wall_clock_deadline(tmp_path: Path) -> None:
    # a device that never answers in time fails the run (1), one that sometimes does not
    out = _run(tmp_path, "rt", "run.deadline_s=0.0001", duration="0.3", realtime=True,
               statuses=(0, 1))
    assert (_quality(out, "battery") == TIMEOUT).any()
