"""The Modbus back-ends pass the device contract, over TCP on loopback and RTU over a pty pair.

::

    LagBattery -- PlantSource -- ModbusEmulator ==[TCP 127.0.0.1 | pty<->pty]== ModbusTcpDevice
                  (sunspec_battery)                                               ModbusRtuDevice
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .aio import run
from .contract import DeviceContract, Harness
from .modbus_support import client, emulated
from .plants import LagBattery


class ModbusContract(DeviceContract):
    transport = "tcp"

    @asynccontextmanager
    async def harness(self) -> AsyncIterator[Harness]:
        plant = LagBattery()
        # rating 10 kW: whole-watt scale factors, so values match the plant within 1 W
        async with emulated(plant, "battery", "sunspec_battery", transport=self.transport,
                            rating_w=10_000.0) as emulator, \
                client(emulator, "sunspec_battery") as device:
            yield Harness(device, plant, "battery")

    def run(self, test: Callable[[Harness], object]) -> None:
        async def main() -> None:
            async with self.harness() as h:
                await test(h)  # type: ignore[misc]
        run(main())


class TestModbusTcpContract(ModbusContract):
    transport = "tcp"


class TestModbusRtuContract(ModbusContract):
    transport = "rtu"
