"""Function codes 3, 4, 6 and 16 on the emulators, and exception 02 outside the map,
checked with pymodbus's own client (raw registers, no gridloop decoding)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from pymodbus.client import AsyncModbusTcpClient

from firmware_bridge.maps import get_map
from firmware_bridge.sunspec import SUNS_MARKER

from .aio import run
from .modbus_support import KINDS, SignalPlant, emulated


@asynccontextmanager
async def _raw(port: int) -> AsyncIterator[AsyncModbusTcpClient]:
    """pymodbus's own client, connected to the emulator on ``port``."""
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0)
    try:
        assert await c.connect()
        yield c
    finally:
        c.close()


def test_fc3_and_fc4_read_the_same_registers() -> None:
    map_name, signals = KINDS["inverter"]
    plant = SignalPlant({"inverter": signals})

    async def t() -> None:
        async with emulated(plant, "inverter", map_name) as e, _raw(e.port) as c:
            holding = await c.read_holding_registers(40000, count=100, device_id=1)
            inputs = await c.read_input_registers(40000, count=100, device_id=1)
        assert not holding.isError() and not inputs.isError()
        assert tuple(holding.registers[:2]) == SUNS_MARKER
        assert holding.registers == inputs.registers
        assert holding.registers[80] == 6123  # 701 W at 40080: 61 230 W at W_SF = 1
    run(t())


def test_fc6_and_fc16_writes_act_on_the_plant() -> None:
    map_name, signals = KINDS["inverter"]
    plant = SignalPlant({"inverter": signals})

    layout = get_map(map_name).layout()
    wset_ena = layout.address(704, "WSetEna")
    lim_ena = layout.address(704, "WMaxLimPctEna")
    assert (wset_ena, lim_ena) == (40277 + 22, 40277 + 14)

    async def t() -> None:
        async with emulated(plant, "inverter", map_name) as e, _raw(e.port) as c:
            # WSetEna, WSetMod, WSet (int32) = -20 000 W in one FC 16
            r16 = await c.write_registers(wset_ena, [1, 1, 0xFFFF, 0xB1E0], device_id=1)
            # WMaxLimPctEna first (FC 6 each), then WMaxLimPct = 75.0 % at SF -1
            r6a = await c.write_register(lim_ena, 1, device_id=1)
            r6b = await c.write_register(lim_ena + 1, 750, device_id=1)
            back = await c.read_holding_registers(lim_ena, count=2, device_id=1)
        assert not (r16.isError() or r6a.isError() or r6b.isError())
        assert plant.written["inverter"] == [{"p_set_w": -20_000.0}, {"w_max_lim_pct": 100.0},
                                             {"w_max_lim_pct": 75.0}]
        assert back.registers == [1, 750]
    run(t())


@pytest.mark.parametrize("address, count", [
    (0, 2),            # below the map (SunSpec scanners probe 0 and 50000)
    (39999, 2),        # straddles the base address
    (-4, 4),           # runs past the end model (relative to the end address)
    (50000, 1),
])
def test_reads_outside_the_map_answer_exception_02(address: int, count: int) -> None:
    map_name, signals = KINDS["inverter"]
    plant = SignalPlant({"inverter": signals})

    if address < 0:
        from firmware_bridge.maps import get_map

        address += get_map(map_name).layout().end_address + 2

    async def t() -> None:
        async with emulated(plant, "inverter", map_name) as e, _raw(e.port) as c:
            r = await c.read_holding_registers(address, count=count, device_id=1)
        assert r.isError() and r.exception_code == 0x02
    run(t())


def test_writes_to_read_only_registers_answer_exception_02() -> None:
    map_name, signals = KINDS["gpu_rack"]
    plant = SignalPlant({"gpu_rack": signals})

    async def t() -> None:
        async with emulated(plant, "gpu_rack", map_name) as e, _raw(e.port) as c:
            w = await c.write_register(40073, 1, device_id=1)            # W: read only
            both = await c.write_registers(40073, [1, 2], device_id=1)   # W and WCap
            after = await c.read_holding_registers(40073, count=2, device_id=1)
        assert w.exception_code == 0x02 and both.exception_code == 0x02
        assert plant.written["gpu_rack"] == []
        assert after.registers == [8430, 10_000]  # 84.3 kW, cap 100 kW at W_SF = 1
    run(t())
