"""Every device back-end passes the one contract suite of contract.py.

::

    LagBattery -- VirtualDevice                                               (virtual)
    LagBattery -- ModbusEmulator(sunspec_battery) ==[TCP 127.0.0.1]== ModbusTcpDevice
    LagBattery -- ModbusEmulator(sunspec_battery) ==[pty <-> pty]==== ModbusRtuDevice
    LagBattery -- SerialEmulator ====================[pty]============ SerialDevice
    LagBattery -- EmulatorHost(transport="serial") ==[pty]============ SerialDevice
    GPU 0 ==[NVML]== NvmlDevice                          (marker gpu; skipped without a GPU)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from firmware_bridge.emulators.host import DeviceSpec, EmulatorHost
from firmware_bridge.emulators.serial_server import SerialEmulator
from firmware_bridge.registry import open_device

from .contract import DeviceContract, Harness, WritableContract
from .modbus_support import client, emulated
from .plants import LagBattery


class TestVirtual(WritableContract):
    @asynccontextmanager
    async def harness(self) -> AsyncIterator[Harness]:
        plant = LagBattery()
        async with open_device("virtual", plant=plant, asset="battery",
                               setpoints=("p_set_w", "connect")) as device:
            yield Harness(device, plant, "battery")


class TestModbusTcp(WritableContract):
    transport = "tcp"

    @asynccontextmanager
    async def harness(self) -> AsyncIterator[Harness]:
        plant = LagBattery()
        # rating 10 kW: whole-watt scale factors, so values match the plant within 1 W
        async with emulated(plant, "battery", "sunspec_battery", transport=self.transport,
                            rating_w=10_000.0) as emulator, \
                client(emulator, "sunspec_battery") as device:
            yield Harness(device, plant, "battery")


class TestModbusRtu(TestModbusTcp):
    transport = "rtu"


class TestSerial(WritableContract):
    """Over a pty, with telemetry streaming between the replies."""

    @asynccontextmanager
    async def harness(self) -> AsyncIterator[Harness]:
        plant = LagBattery()
        async with SerialEmulator(plant, "battery", ("p_set_w", "connect"),
                                  telemetry_period_s=0.005) as board, \
                open_device("serial", port=board.path, timeout_s=0.5) as device:
            yield Harness(device, plant, "battery")


class TestHostSerial(WritableContract):
    """The serial board an EmulatorHost serves for ``transport="serial"``."""

    @asynccontextmanager
    async def harness(self) -> AsyncIterator[Harness]:
        plant = LagBattery()
        spec = DeviceSpec("n1", "battery", "sunspec_battery", transport="serial",
                          telemetry_period_s=0.005)
        async with EmulatorHost({"n1": plant}, [spec]) as host, \
                open_device("serial", port=host.describe()[0]["serial_port"],
                            timeout_s=0.5) as device:
            yield Harness(device, plant, "battery")


@pytest.mark.gpu
class TestNvml(DeviceContract):
    """GPU 0 of this machine, read only: run with ``pytest -m gpu``."""

    @pytest.fixture(autouse=True)
    def _gpu(self, real_gpu: int) -> None:
        self.index = real_gpu

    @asynccontextmanager
    async def harness(self) -> AsyncIterator[Harness]:
        async with open_device("nvml", index=self.index) as device:
            yield Harness(device)
