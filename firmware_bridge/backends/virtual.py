"""The ``virtual`` back-end: a device in the same process, reading a :class:`Plant` directly.

What it emulates: the Device contract (open/read/write/close, readings with timestamps,
quality and round-trip time), an optional fixed latency, and closing.  What it does not: any
wire, framing, register encoding, scale factors or transport error.  Use it for unit tests of
code above the wire (controllers, the engine); use the emulators on real transports to test
anything that touches a protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from firmware_bridge.device import Device, Quality, Reading
from firmware_bridge.errors import ConfigError, DeviceDisconnected
from firmware_bridge.plant import Plant


class VirtualDevice(Device):
    """Asset ``asset`` of ``plant``, reached without a wire.

    Parameters
    ----------
    plant : Plant
        The physics behind the device.
    asset : str
        Which of the plant's assets this device is.
    latency_s : float
        Added to every read and write, to exercise deadlines. [s]
    setpoints : tuple of str
        Names :meth:`write` accepts; others are refused.
    """

    backend = "virtual"

    def __init__(self, plant: Plant, asset: str, latency_s: float = 0.0,
                 setpoints: tuple[str, ...] = (), name: str = "") -> None:
        super().__init__(name or f"virtual:{asset}")
        if asset not in plant.assets:
            raise ConfigError(f"virtual device: plant has no asset '{asset}' "
                              f"(has {', '.join(plant.assets)})")
        self.plant = plant
        self.asset = asset
        self.latency_s = float(latency_s)
        self._setpoints = tuple(setpoints)
        self._open = False

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(self.plant.read(self.asset))

    @property
    def setpoints(self) -> tuple[str, ...]:
        return self._setpoints

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise DeviceDisconnected(f"{self.name}: device is not open")

    async def read(self) -> Reading:
        self._check_open()
        t0 = time.perf_counter()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        values = self.plant.read(self.asset)
        return Reading(values, time.time(), Quality.OK, time.perf_counter() - t0)

    async def write(self, setpoints: Mapping[str, float]) -> None:
        self._check_open()
        unknown = [k for k in setpoints if k not in self._setpoints]
        if unknown:
            raise ConfigError(f"{self.name}: cannot write {', '.join(unknown)}; writable: "
                              f"{', '.join(self._setpoints) or 'nothing'}")
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        self.plant.write(self.asset, setpoints)
