"""One contract test suite for every device back-end (python-can's back2back test).

test_contract.py holds one small subclass per back-end (pytest collects those whose name
starts with ``Test``), each implementing :meth:`DeviceContract.harness`: an async context
manager yielding a :class:`Harness` around a real device on a real transport (a pymodbus
server on loopback, a pty...), backed by a plant the test can advance, or by real hardware
(``plant`` None) behind an opt-in marker.  A back-end that takes setpoints subclasses
:class:`WritableContract`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest

from firmware_bridge.device import Device, Quality
from firmware_bridge.errors import BridgeError, DeviceDisconnected
from firmware_bridge.plant import Plant

from .aio import run


@dataclass
class Harness:
    device: Device
    #: the physics behind an emulated device; None for real hardware
    plant: Plant | None = None
    asset: str = ""


class DeviceContract:
    """The behaviour every back-end shares."""

    #: absolute tolerance of a value after the wire's encoding (scale factors)
    tolerance: float = 1.0

    def harness(self) -> AbstractAsyncContextManager[Harness]:
        raise NotImplementedError

    def run(self, test: Callable[[Harness], Awaitable[None]]) -> None:
        async def main() -> None:
            async with self.harness() as h:
                await test(h)
        run(main())

    def test_read_returns_every_signal_matching_the_plant(self) -> None:
        async def t(h: Harness) -> None:
            r = await h.device.read()
            assert r.quality == Quality.OK
            assert r.rtt_s > 0 and math.isfinite(r.rtt_s)
            assert abs(r.timestamp_s - time.time()) < 60
            assert h.device.signals and set(h.device.signals) <= set(r.values)
            truth = h.plant.read(h.asset) if h.plant is not None else {}
            for name in h.device.signals:
                assert math.isfinite(r.values[name]), name
                if name in truth:
                    assert r.values[name] == pytest.approx(truth[name], abs=self.tolerance), name
        self.run(t)

    def test_concurrent_reads_all_succeed(self) -> None:
        async def t(h: Harness) -> None:
            readings = await asyncio.gather(*(h.device.read() for _ in range(5)))
            assert all(r.quality == Quality.OK for r in readings)
            assert all(set(r.values) == set(readings[0].values) for r in readings)
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


class WritableContract(DeviceContract):
    """The behaviour of a back-end that writes setpoints to an emulated plant."""

    #: a setpoint, a value, and the signal that follows it once the plant advances
    setpoint: tuple[str, float] = ("p_set_w", 20_000.0)
    follower: str = "p_w"

    async def _settle(self, h: Harness) -> float:
        """The follower once the plant has advanced long enough to reach its setpoint."""
        assert h.plant is not None
        for _ in range(200):
            h.plant.advance(0.05)
        return (await h.device.read()).values[self.follower]

    def test_write_acts_on_the_plant(self) -> None:
        async def t(h: Harness) -> None:
            name, value = self.setpoint
            assert name in h.device.setpoints
            await h.device.write({name: value})
            assert await self._settle(h) == pytest.approx(value, rel=0.01, abs=self.tolerance)
        self.run(t)

    def test_concurrent_reads_and_writes_take_turns(self) -> None:
        async def t(h: Harness) -> None:
            name, value = self.setpoint
            results = await asyncio.gather(
                h.device.read(), h.device.write({name: value / 2}), h.device.read(),
                h.device.write({name: value}), h.device.read())
            assert all(r.quality == Quality.OK for r in results[::2])  # type: ignore[union-attr]
            # the writes went out in the order given: the last one holds
            assert await self._settle(h) == pytest.approx(value, rel=0.01, abs=self.tolerance)
        self.run(t)
