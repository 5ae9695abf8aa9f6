"""One contract test suite for every device back-end.

A back-end's test module subclasses :class:`DeviceContract` (pytest collects the subclass,
whose name must start with ``Test``) and implements :meth:`harness`: an async context manager
yielding a :class:`Harness` around a real device on a real transport (a pymodbus server on
loopback, a pty pair...), backed by a plant the test can advance.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest

from firmware_bridge.device import Device, Quality
from firmware_bridge.errors import BridgeError, DeviceDisconnected
from firmware_bridge.plant import Plant


@dataclass
class Harness:
    device: Device
    plant: Plant
    asset: str


class DeviceContract:
    """The behaviour every back-end shares."""

    #: a setpoint, a value, and the signal that follows it once the plant advances
    setpoint: tuple[str, float] = ("p_set_w", 20_000.0)
    follower: str = "p_w"
    #: absolute tolerance of a value after the wire's encoding (scale factors)
    tolerance: float = 1.0

    def harness(self) -> AbstractAsyncContextManager[Harness]:
        raise NotImplementedError

    def run(self, test: Callable[[Harness], object]) -> None:
        async def main() -> None:
            async with self.harness() as h:
                await test(h)
        asyncio.run(asyncio.wait_for(main(), timeout=30))

    def test_read_returns_every_signal_matching_the_plant(self) -> None:
        async def t(h: Harness) -> None:
            r = await h.device.read()
            assert r.quality == Quality.OK
            assert r.rtt_s > 0 and math.isfinite(r.rtt_s)
            assert abs(r.timestamp_s - time.time()) < 60
            plant = h.plant.read(h.asset)
            for name in h.device.signals:
                assert name in r.values, name
                assert math.isfinite(r.values[name]), name
                if name in plant:
                    assert r.values[name] == pytest.approx(plant[name], abs=self.tolerance), name
        self.run(t)

    def test_write_acts_on_the_plant(self) -> None:
        async def t(h: Harness) -> None:
            name, value = self.setpoint
            assert name in h.device.setpoints
            await h.device.write({name: value})
            for _ in range(200):
                h.plant.advance(0.05)
            r = await h.device.read()
            assert r.values[self.follower] == pytest.approx(value, rel=0.01, abs=self.tolerance)
        self.run(t)

    def test_unknown_setpoint_is_refused_by_name(self) -> None:
        async def t(h: Harness) -> None:
            with pytest.raises(BridgeError, match="no_such_setpoint"):
                await h.device.write({"no_such_setpoint": 1.0})
        self.run(t)

    def test_read_after_close_raises_disconnected_and_close_is_idempotent(self) -> None:
        async def t(h: Harness) -> None:
            await h.device.close()
            await h.device.close()
            with pytest.raises(DeviceDisconnected):
                await h.device.read()
        self.run(t)

    def test_reopen_after_close(self) -> None:
        async def t(h: Harness) -> None:
            await h.device.close()
            await h.device.open()
            r = await h.device.read()
            assert r.quality == Quality.OK
        self.run(t)
