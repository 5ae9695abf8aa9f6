"""Capture a session's Modbus traffic into HDF5, read it back, and serve it again to a new
client, which sees the same answers in the same order.

::

    session:  SignalPlant -- ModbusEmulator ==[TCP]== ModbusTcpDevice(capture=Capture())
                                                                   |
    file:                                            /capture/<device>/{transactions,registers}
                                                                   |
    replay:   ReplaySource -- ModbusEmulator ==[TCP]== ModbusTcpDevice (a new controller build)
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from firmware_bridge.capture import Capture, ReplaySource, Status, read_capture
from firmware_bridge.emulators.modbus_server import ModbusEmulator
from firmware_bridge.errors import ConfigError, DeviceTimeout, ExceptionResponse
from firmware_bridge.faults import FaultCard

from .aio import run
from .modbus_support import SignalPlant, client, emulated

MAP = "gpu_rack"
DEVICE = "n1.rack"


def _session(capture: Capture) -> list[object]:
    """A lab session: reads while the plant moves, a write, an exception, a timeout.

    Returns what the controller saw at each step: values, or the error class and code.
    """
    plant = SignalPlant({"rack": {"p_w": 40_000.0, "energy_wh": 10.0, "temp_c": 55.0,
                                  "power_cap_w": 90_000.0, "phase": 1.0}},
                        ramp={"p_w": 500.0, "energy_wh": 100.0})

    async def t() -> list[object]:
        seen: list[object] = []
        async with emulated(plant, "rack", MAP) as e, \
                client(e, MAP, timeout_s=0.2, name=DEVICE, capture=capture) as dev:
            for _ in range(2):
                seen.append((await dev.read()).values)
                plant.advance(2.0)
            await dev.write({"power_cap_w": 60_000.0})
            for card in (FaultCard(exception_code=4), FaultCard(timeout=True)):
                e.set_fault(card)
                try:
                    await dev.read()
                except (ExceptionResponse, DeviceTimeout) as exc:
                    seen.append((type(exc), getattr(exc, "code", None)))
                e.set_fault(None)
            plant.advance(2.0)
            seen.append((await dev.read()).values)
        return seen
    return run(t())


@pytest.fixture(scope="module")
def session() -> tuple[Capture, list[object]]:
    """One recorded lab session shared by the tests below (they only read it)."""
    capture = Capture()
    return capture, _session(capture)


def test_every_transaction_is_captured(session: tuple[Capture, list[object]]) -> None:
    capture, seen = session
    assert seen[2] == (ExceptionResponse, 4) and seen[3] == (DeviceTimeout, None)
    txs = capture.transactions(DEVICE)
    statuses = [tx.status for tx in txs]
    assert statuses.count(Status.EXCEPTION) == 1 and statuses.count(Status.TIMEOUT) == 1
    exc = next(tx for tx in txs if tx.status == Status.EXCEPTION)
    assert (exc.function_code, exc.exception_code, exc.response) == (3, 4, ())
    write, = [tx for tx in txs if tx.function_code in (6, 16)]
    assert write.request == (6000,) and write.function_code == 6  # 60 kW at W_SF = 1
    reads = [tx for tx in txs if tx.status == Status.OK and tx.function_code == 3]
    assert reads[0].address == 40000 and reads[0].response == (0x5375, 0x6E53)  # the scan
    assert all(len(tx.response) == tx.count for tx in reads)
    assert all(tx.latency_s > 0 for tx in txs)
    assert [tx.t_s for tx in txs] == sorted(tx.t_s for tx in txs)
    rows, registers = capture.to_arrays(DEVICE)
    assert len(rows) == len(txs) and registers.dtype == np.uint16
    assert registers[rows["response_start"][0]:][:2].tolist() == [0x5375, 0x6E53]


def test_capture_round_trips_through_hdf5_incrementally(
        session: tuple[Capture, list[object]], tmp_path: Path) -> None:
    capture, _ = session
    txs = capture.transactions(DEVICE)
    path = tmp_path / "run.h5"
    with h5py.File(path, "w") as f:
        # the first flush creates the datasets; later flushes append only what is new
        half = Capture()
        for tx in txs[:5]:
            half.record(tx)
        assert half.flush_to(f) == 5
        for tx in txs[5:]:
            half.record(tx)
        assert half.flush_to(f) == len(txs) - 5
        assert half.flush_to(f) == 0
        assert f["capture"].attrs["format"] == "gridloop-capture"
    with h5py.File(path, "r") as f:
        assert read_capture(f).transactions(DEVICE) == txs


def test_a_capture_is_served_again_as_the_same_device(
        session: tuple[Capture, list[object]]) -> None:
    capture, seen = session

    async def t() -> list[object]:
        replayed: list[object] = []
        source = ReplaySource(capture.transactions(DEVICE))
        async with ModbusEmulator(source, name="replay") as e, \
                client(e, MAP, timeout_s=0.2) as dev:
            for _ in range(2):
                replayed.append((await dev.read()).values)
            await dev.write({"power_cap_w": 55_000.0})  # a new build may write otherwise
            for _ in range(2):
                try:
                    await dev.read()
                except (ExceptionResponse, DeviceTimeout) as exc:
                    replayed.append((type(exc), getattr(exc, "code", None)))
            replayed.append((await dev.read()).values)
            held = (await dev.read()).values  # past the end: the last answer holds
        assert held == replayed[-1]
        return replayed
    assert run(t()) == seen


def test_reads_never_captured_answer_exception_02(
        session: tuple[Capture, list[object]]) -> None:
    capture, _ = session

    async def t() -> None:
        async with ModbusEmulator(ReplaySource(capture.transactions(DEVICE))) as e:
            raw = client(e, MAP, timeout_s=0.2)
            async with raw:
                with pytest.raises(ExceptionResponse) as caught:
                    await raw.read_registers(40002, 10)
        assert caught.value.code == 0x02
    run(t())


def test_malformed_capture_files_are_clear_errors(
        session: tuple[Capture, list[object]], tmp_path: Path) -> None:
    capture = Capture()
    for tx in session[0].transactions(DEVICE):
        capture.record(tx)
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        capture.flush_to(f)
        f["capture"].attrs["format_version"] = 99
    with h5py.File(path, "r") as f, pytest.raises(ConfigError, match="not a gridloop-capture"):
        read_capture(f)
    with h5py.File(path, "a") as f:
        f["capture"].attrs["format_version"] = 1
        del f[f"capture/{DEVICE}/registers"]
        f.create_dataset(f"capture/{DEVICE}/registers", data=np.zeros(3, "u2"))
    with h5py.File(path, "r") as f, pytest.raises(ConfigError, match="past the end"):
        read_capture(f)
    with h5py.File(tmp_path / "empty.h5", "w") as f, pytest.raises(ConfigError, match="no /capture"):
        read_capture(f)
    with pytest.raises(ConfigError, match="no transactions"):
        ReplaySource([])
    with pytest.raises(ConfigError, match="no device 'n9'"):
        capture.transactions("n9")
