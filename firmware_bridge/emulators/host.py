"""Serve every emulated device of a set of plants, on the bench's clock or the wall clock.

``gridloop emulate`` and the bench's ``emulated`` mode build an :class:`EmulatorHost` from a
scenario: one :class:`~firmware_bridge.plant.Plant` per node and one :class:`DeviceSpec` per
device.  Each device is a real server answering from its plant: a :class:`ModbusEmulator`
on loopback TCP or on a pseudo-terminal (RTU), or a :class:`SerialEmulator` (an MCU speaking
the serial protocol) on a pseudo-terminal.

Clock: inside a bench run the bench calls :meth:`EmulatorHost.advance` every tick, so the
plants follow the bench's clock (deterministic); standalone, :meth:`run_wallclock` advances
them with the wall clock, ``speed`` times faster.  Fault cards follow the plants' clock
too: their schedule, and how long a ``disconnect_s`` reboot keeps a device down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from firmware_bridge.capture import ReplaySource, Transaction
from firmware_bridge.emulators.base import Emulator
from firmware_bridge.emulators.modbus_server import ModbusEmulator, PlantSource
from firmware_bridge.emulators.serial_server import SerialEmulator
from firmware_bridge.errors import ConfigError
from firmware_bridge.faults import EventSink, FaultCard
from firmware_bridge.maps import RegisterMap, get_map
from firmware_bridge.plant import Plant
from firmware_bridge.sunspec import DEFAULT_BASE_ADDRESS


@dataclass(frozen=True)
class DeviceSpec:
    """One emulated device: asset ``asset`` of node ``node``, behind register map ``map``.

    ``transport`` is ``"tcp"`` or ``"rtu"`` (Modbus) or ``"serial"`` (the serial MCU
    protocol).  ``port`` 0 takes ``port_base + k`` (the ``k``-th TCP device) when the host
    has a port base, else a free port.  ``map_options`` are the map's ratings
    (``rating_w``, ``capacity_wh``...).
    A serial board takes from its map its kind and its points, the map's signals the asset
    has and the map's setpoints, and sends telemetry every ``telemetry_period_s`` (0: none).
    ``unit``, ``port`` and ``base_address`` concern Modbus only.
    """

    node: str
    asset: str
    map: str
    transport: str = "tcp"
    unit: int = 1
    port: int = 0
    baudrate: int = 19200
    base_address: int = DEFAULT_BASE_ADDRESS
    map_options: Mapping[str, float | bool] = field(default_factory=dict)
    fault: FaultCard | None = None
    telemetry_period_s: float = 0.0
    #: a recorded capture to serve instead of the plant (Modbus only): the device answers
    #: as the recorded one did (:class:`firmware_bridge.capture.ReplaySource`)
    replay: tuple[Transaction, ...] = ()


#: transports an emulated device can be served on
TRANSPORTS = ("tcp", "rtu", "serial")


class EmulatorHost:
    """The emulators of ``devices``, answering from ``plants`` (node name -> plant).

    Parameters
    ----------
    plants : mapping of str to Plant
    devices : sequence of DeviceSpec
    host : str
        Address TCP emulators bind to; loopback unless told otherwise.
    port_base : int or None
        First TCP port; the ``k``-th TCP device without a port of its own listens on
        ``port_base + k`` (RTU and serial devices take none).
    on_event : callable or None
        ``on_event(kind, message)`` for faults and reboots.
    """

    def __init__(self, plants: Mapping[str, Plant], devices: Sequence[DeviceSpec], *,
                 host: str = "127.0.0.1", port_base: int | None = None,
                 on_event: EventSink | None = None) -> None:
        self.plants = dict(plants)
        self.host = host
        self.specs = list(devices)
        self.emulators: dict[tuple[str, str], Emulator] = {}
        self._maps: dict[tuple[str, str], RegisterMap] = {}
        n_tcp = 0  # TCP devices so far: the k-th listens on port_base + k
        for i, spec in enumerate(self.specs):
            key = (spec.node, spec.asset)
            try:
                if spec.node not in self.plants:
                    raise ConfigError(f"no plant for node '{spec.node}' "
                                      f"(nodes: {', '.join(self.plants) or 'none'})")
                if key in self.emulators:
                    raise ConfigError("listed twice")
                if spec.transport not in TRANSPORTS:
                    raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}, "
                                      f"got {spec.transport!r}")
                plant = self.plants[spec.node]
                if spec.asset not in plant.assets:
                    raise ConfigError(f"plant has no asset '{spec.asset}' "
                                      f"(has {', '.join(plant.assets)})")
                regmap = get_map(spec.map, **spec.map_options)
                name = f"{spec.node}/{spec.asset}"
                if spec.replay and spec.transport == "serial":
                    raise ConfigError("a capture replays over Modbus (tcp or rtu) only")
                if spec.transport == "serial":
                    emulator: Emulator = SerialEmulator(
                        plant, spec.asset, regmap.setpoints,
                        signals=[n for n in regmap.signals if n in plant.read(spec.asset)],
                        telemetry_period_s=spec.telemetry_period_s, fault=spec.fault,
                        on_event=on_event, seed=i, name=name)
                else:
                    source: ReplaySource | PlantSource
                    if spec.replay:
                        source = ReplaySource(spec.replay)
                    else:
                        source = PlantSource(plant, spec.asset, regmap,
                                             regmap.layout(spec.base_address),
                                             identity={"SN": f"{spec.node}.{spec.asset}",
                                                       "DA": spec.unit},
                                             on_event=on_event)
                    port = 0
                    if spec.transport == "tcp":
                        port = spec.port or (port_base + n_tcp if port_base is not None
                                             else 0)
                        n_tcp += 1
                    emulator = ModbusEmulator(
                        source, unit=spec.unit, transport=spec.transport, host=host,
                        port=port, baudrate=spec.baudrate, fault=spec.fault,
                        on_event=on_event, name=name)
            except ConfigError as exc:
                raise ConfigError(f"device {spec.node}.{spec.asset}: {exc}") from None
            self.emulators[key] = emulator
            self._maps[key] = regmap

    async def start(self) -> None:
        """Start every server; on a failure the ones already started are stopped."""
        try:
            for emulator in self.emulators.values():
                await emulator.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every server; safe to call twice."""
        for emulator in self.emulators.values():
            await emulator.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> list[dict]:
        """One JSON-ready dict per device, in spec order (``gridloop emulate --json``)."""
        out = []
        for spec in self.specs:
            key = (spec.node, spec.asset)
            emulator, regmap = self.emulators[key], self._maps[key]
            entry: dict = {"node": spec.node, "asset": spec.asset, "kind": regmap.kind,
                           "map": regmap.name, "transport": spec.transport}
            if isinstance(emulator, SerialEmulator):
                entry |= {"host": self.host, "unit": spec.unit, "models": [],
                          "serial_port": emulator.path, "baudrate": spec.baudrate,
                          "telemetry_period_s": spec.telemetry_period_s}
            else:
                assert isinstance(emulator, ModbusEmulator)
                entry |= {"host": self.host, "unit": spec.unit,
                          "base_address": spec.base_address, "models": list(regmap.models)}
                if spec.transport == "tcp":
                    entry["port"] = emulator.port
                else:
                    entry |= {"serial_port": emulator.serial_port, "baudrate": spec.baudrate}
            out.append(entry)
        return out

    def set_fault(self, node: str, asset: str, card: FaultCard | None) -> None:
        """Set (or clear, with None) the fault card of one device at run time."""
        try:
            emulator = self.emulators[(node, asset)]
        except KeyError:
            known = ", ".join(f"{n}.{a}" for n, a in self.emulators)
            raise ConfigError(f"no emulated device {node}.{asset} (have {known})") from None
        emulator.set_fault(card)

    def advance(self, dt: float) -> None:
        """Advance every plant by ``dt`` seconds (bench-clock mode), then tell every emulator
        its clock moved (a reboot whose downtime is over ends in this step). [s]"""
        for plant in self.plants.values():
            plant.advance(dt)
        for emulator in self.emulators.values():
            emulator.clock_advanced()

    async def run_wallclock(self, speed: float = 1.0, tick_s: float = 0.05) -> None:
        """Advance the plants with the wall clock, ``speed`` times faster, until cancelled
        (``gridloop emulate`` runs it until SIGINT or SIGTERM).

        Parameters
        ----------
        speed : float
            Simulated seconds per wall-clock second.
        tick_s : float
            Wall-clock interval between advances. [s]
        """
        if speed <= 0 or tick_s <= 0:
            raise ConfigError(f"run_wallclock: speed and tick_s must be > 0, got "
                              f"{speed} and {tick_s}")
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick_s)
            now = time.monotonic()
            self.advance((now - last) * speed)
            last = now
