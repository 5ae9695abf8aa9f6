"""Random and truncated frames against both sides of Modbus RTU: no crash, no hang, a clean
typed error, and the next good frame is understood.

::

    client side: ModbusRtuDevice <==pty==> emulator whose answer is replaced by junk
    server side: junk written into the emulator's pty (and TCP socket), then a good request
"""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU

from firmware_bridge.backends.modbus import check_rtu_answer
from firmware_bridge.device import Quality, poll
from firmware_bridge.emulators.modbus_server import ModbusEmulator, PlantSource
from firmware_bridge.errors import DeviceError, DeviceTimeout, FrameError
from firmware_bridge.maps import get_map

from .aio import run
from .modbus_support import SignalPlant, client, emulated

MAP = "gpu_rack"
SIGNALS = {"p_w": 50_000.0, "energy_wh": 1_000.0, "temp_c": 60.0, "power_cap_w": 90_000.0,
           "phase": 1.0}


def _frame(body: bytes) -> bytes:
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def _read_answer(unit: int, registers: list[int]) -> bytes:
    data = b"".join(r.to_bytes(2, "big") for r in registers)
    return _frame(bytes([unit, 3, len(data)]) + data)


# ---------------------------------------------------------------------- the parser alone


@given(st.binary(max_size=300), st.integers(0, 255), st.sampled_from([3, 4, 6, 16]),
       st.integers(1, 125))
def test_any_bytes_give_none_or_a_reason(data: bytes, unit: int, fc: int, count: int) -> None:
    result = check_rtu_answer(data, unit, fc, count)
    assert result is None or (isinstance(result, str) and result)


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125), st.integers(1, 247),
       st.data())
def test_valid_answers_pass_and_their_truncations_wait(registers: list[int], unit: int,
                                                       data: st.DataObject) -> None:
    frame = _read_answer(unit, registers)
    assert check_rtu_answer(frame, unit, 3, len(registers)) is None
    cut = data.draw(st.integers(0, len(frame) - 1))
    assert check_rtu_answer(frame[:cut], unit, 3, len(registers)) is None


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=60), st.data())
def test_any_corrupted_byte_is_caught(registers: list[int], data: st.DataObject) -> None:
    frame = bytearray(_read_answer(1, registers))
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] ^= data.draw(st.integers(1, 255))
    assert check_rtu_answer(bytes(frame), 1, 3, len(registers)) is not None


def test_exception_answers_are_checked_too() -> None:
    good = _frame(bytes([1, 0x83, 0x02]))
    assert check_rtu_answer(good, 1, 3, 10) is None
    assert "bad CRC" in str(check_rtu_answer(good[:-1] + b"\x00", 1, 3, 10))
    assert "unit 2" in str(check_rtu_answer(_frame(bytes([2, 3, 2, 0, 0])), 1, 3, 1))


# ---------------------------------------------------------------------- on the wire


class JunkEmulator(ModbusEmulator):
    """An emulator whose next answer is replaced by ``junk`` (once)."""

    junk: bytes | None = None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self.junk is not None:
            junk, self.junk = self.junk, None
            return junk
        return super()._trace_packet(sending, data)


def _junk_cases(seed: int, unit: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    good = _read_answer(unit, [rng.randrange(0x10000) for _ in range(count)])
    cases = [
        good[:rng.randrange(1, len(good))],                           # truncated
        good[:-1] + bytes([good[-1] ^ 0x5A]),                          # bad CRC
        bytes([unit + 1]) + good[1:],                                  # wrong unit
        good[:1] + bytes([16]) + good[2:],                             # wrong function
        good[:2] + bytes([good[2] - 2]) + good[3:],                    # wrong byte count
        bytes([unit, 0x83]),                                           # half an exception
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))),  # noise
        bytes([unit]) + bytes(rng.randrange(256) for _ in range(300)),   # long noise
    ]
    cases += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
              for _ in range(6)]
    return cases


def test_junk_answers_raise_clean_errors_and_the_next_answer_is_understood() -> None:
    plant = SignalPlant({"rack": SIGNALS})
    regmap = get_map(MAP)
    source = PlantSource(plant, "rack", regmap, regmap.layout())
    count = regmap.read_spans(regmap.layout())[0][1]

    async def t() -> None:
        async with JunkEmulator(source, transport="rtu") as e, \
                client(e, MAP, timeout_s=0.1) as dev:
            for junk in _junk_cases(seed=11, unit=1, count=count):
                e.junk = junk
                with pytest.raises(DeviceError) as caught:
                    await asyncio.wait_for(dev.read(), 2)  # never hangs
                assert isinstance(caught.value, FrameError | DeviceTimeout), junk.hex()
                good = await poll(dev)
                assert good.quality == Quality.OK, (junk.hex(), good.error)
                assert good.values["p_w"] == pytest.approx(50_000.0)
    run(t())


def test_junk_requests_do_not_break_the_emulators() -> None:
    plant = SignalPlant({"rack": SIGNALS})
    rng = random.Random(5)
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(20)]
    junk += [_frame(bytes([1, 3, 0x9C, 0x40, 0x00]))[:-1],   # a truncated request
             _frame(bytes([1, 0x2B, 0x0E, 0x01, 0x00])),     # a function code we do not serve
             _frame(bytes([1, 3, 0x9C, 0x40, 0x00, 0x00]))]  # a read of 0 registers

    async def t() -> None:
        for transport in ("tcp", "rtu"):
            async with emulated(plant, "rack", MAP, transport=transport) as e:
                if transport == "tcp":
                    for blob in junk:
                        with socket.create_connection(("127.0.0.1", e.port)) as raw:
                            raw.sendall(blob)
                else:
                    fd = os.open(str(e.serial_port), os.O_RDWR | os.O_NOCTTY)
                    try:
                        for blob in junk:
                            os.write(fd, blob)
                            await asyncio.sleep(0.005)
                    finally:
                        os.close(fd)
                await asyncio.sleep(0.05)
                dev = client(e, MAP, timeout_s=0.2)
                try:
                    for _ in range(5):  # an RTU server may still be hunting for a frame
                        try:
                            await dev.open()
                            break
                        except DeviceError:
                            continue
                    reading = await dev.read()
                finally:
                    await dev.close()
                assert reading.values["p_w"] == pytest.approx(50_000.0)
    run(t())
