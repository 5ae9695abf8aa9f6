"""The virtual back-end passes the device contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from firmware_bridge.registry import open_device

from .contract import DeviceContract, Harness
from .plants import LagBattery


class TestVirtualContract(DeviceContract):
    @asynccontextmanager
    async def harness(self) -> AsyncIterator[Harness]:
        plant = LagBattery()
        dev = open_device("virtual", plant=plant, asset="battery",
                          setpoints=("p_set_w", "connect"))
        async with dev:
            yield Harness(dev, plant, "battery")
