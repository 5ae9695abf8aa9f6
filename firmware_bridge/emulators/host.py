"""Serve every emulated device of a set of plants, on the bench's clock or the wall clock.

``gridloop emulate`` and the bench's ``emulated`` mode build an :class:`EmulatorHost` from a
scenario: one :class:`~firmware_bridge.plant.Plant` per node and one :class:`DeviceSpec` per
device.  Each device is a real server answering from its plant: a :class:`ModbusEmulator`
on loopback TCP or on a pseudo-terminal (RTU), or a :class:`SerialEmulator` (an MCU speaking
the serial protocol) on a pseudo-terminal.  RTU devices on one RS-485 line (one ``bus``) are
served on one pseudo-terminal, each answering its own unit id, as on the lab's wires.

Clock: inside a bench run the bench calls :meth:`EmulatorHost.advance` every tick, so the
plants follow the bench's clock (deterministic); standalone, :meth:`run_wallclock` advances
them with the wall clock, ``speed`` times faster.  Fault cards follow the plants' clock
too: their schedule, and how long a ``disconnect_s`` reboot keeps a device down.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from firmware_bridge.capture import ReplaySource, Transaction
from firmware_bridge.emulators.base import Emulator
from firmware_bridge.emulators.modbus_server import ModbusEmulator, PlantSource
from firmware_bridge.emulators.serial_server import SerialEmulator
from firmware_bridge.errors import ConfigError
from firmware_bridge.faults import EventSink, FaultCard
from firmware_bridge.line import port_key
from firmware_bridge.maps import RegisterMap, get_map
from firmware_bridge.plant import Plant
from firmware_bridge.pty import PtyBus
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
    ``unit``, ``port`` and ``base_address`` concern Modbus only.  ``baudrate``, ``parity``,
    ``bytesize`` and ``stopbits`` are the line settings of an RTU or serial device (a pty
    carries none of them: they say what a client should open the port with).
    ``bus`` names the RS-485 line of an RTU device (its device table's port): the devices
    of one bus (:func:`firmware_bridge.line.port_key`) are served on one pty, the slaves of
    one line, and must agree on the line settings and have unit ids of their own; empty: a
    pty of its own.
    :func:`link_for_device` gives the fields that make a device look like a scenario's
    device table on the wire.
    """

    node: str
    asset: str
    map: str
    transport: str = "tcp"
    unit: int = 1
    port: int = 0
    baudrate: int = 19200
    parity: str = "N"
    bytesize: int = 8
    stopbits: float = 1
    base_address: int = DEFAULT_BASE_ADDRESS
    map_options: Mapping[str, float | bool] = field(default_factory=dict)
    fault: FaultCard | None = None
    telemetry_period_s: float = 0.0
    #: a recorded capture to serve instead of the plant (Modbus only): the device answers
    #: as the recorded one did (:class:`firmware_bridge.capture.ReplaySource`)
    replay: tuple[Transaction, ...] = ()
    bus: str = ""


#: transports an emulated device can be served on
TRANSPORTS = ("tcp", "rtu", "serial")

#: the client back-end that speaks to each transport
BACKEND_OF = {"tcp": "modbus_tcp", "rtu": "modbus_rtu", "serial": "serial"}

#: whether this platform has pseudo-terminals (Linux, macOS): RTU and serial devices are
#: emulated on them; elsewhere only on TCP
HAS_PTYS = hasattr(os, "openpty")

#: line settings of a device table that gives none, per back-end (the back-ends' defaults)
_LINE_DEFAULTS = {"modbus_rtu": {"baudrate": 19200, "parity": "N", "bytesize": 8,
                                 "stopbits": 1},
                  "serial": {"baudrate": 115200, "parity": "N", "bytesize": 8,
                             "stopbits": 1}}


def link_for_device(device: Mapping[str, Any], where: str = "device"
                    ) -> tuple[dict[str, Any], str]:
    """How to emulate ``device`` (a scenario's hardware device table) so that it looks the
    same on the wire: the :class:`DeviceSpec` fields (``transport``, and the unit id, base
    address and line settings the table gives), and why that transport, in words.

    ``modbus_rtu`` is Modbus RTU on a pty pair and ``serial`` the serial protocol on a pty,
    with the table's line settings (checked as the back-ends check them: a ConfigError
    names ``where`` and the setting), and a ``modbus_rtu`` device's ``bus`` is its port (the
    devices of one port share a pty); ``modbus_tcp``, and any back-end without a wire of its
    own (``nvml``, ``virtual``), Modbus TCP.  Without ptys (Windows) RTU and serial devices
    fall back to Modbus TCP, and the reason says so.
    """
    from firmware_bridge.backends.modbus import validate_rtu_line
    from firmware_bridge.backends.serial import validate_line

    backend = str(device.get("backend", ""))
    fields: dict[str, Any] = {}
    if backend in ("modbus_tcp", "modbus_rtu"):
        unit = device.get("unit", 1)
        if isinstance(unit, bool) or not isinstance(unit, int) or not 1 <= unit <= 247:
            raise ConfigError(f"{where}.unit: a Modbus unit id is 1..247, got {unit!r}")
        fields["unit"] = unit
        if "base_address" in device:
            base = device["base_address"]
            if isinstance(base, bool) or not isinstance(base, int) \
                    or not 0 <= base <= 0xFFFF - 4:
                raise ConfigError(f"{where}.base_address: 0..65531, got {base!r}")
            fields["base_address"] = base
    if backend not in _LINE_DEFAULTS:
        why = ("its device is modbus_tcp" if backend == "modbus_tcp" else
               f"its device is {backend or 'without a backend'}, on no wire to copy: the "
               "default")
        return {"transport": "tcp", **fields}, why
    line = {k: device.get(k, v) for k, v in _LINE_DEFAULTS[backend].items()}
    try:
        if backend == "serial":
            (line["baudrate"], line["bytesize"], line["parity"],
             line["stopbits"]) = validate_line(line["baudrate"], line["bytesize"],
                                               line["parity"], line["stopbits"])
        else:
            validate_rtu_line("modbus_rtu", line["baudrate"], line["parity"],
                              line["bytesize"], line["stopbits"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    transport = "rtu" if backend == "modbus_rtu" else "serial"
    if not HAS_PTYS:
        return ({"transport": "tcp", **fields},
                f"its device is {backend}, but this platform has no pseudo-terminals")
    if backend == "modbus_rtu" and isinstance(device.get("port"), str):
        fields["bus"] = device["port"]
    return {"transport": transport, **fields, **line}, f"its device is {backend}"


def rtu_buses(specs: Sequence[DeviceSpec]) -> dict[str, list[int]]:
    """The RS-485 lines of more than one device: port key -> the indexes of its devices'
    specs (in order).  Raises ConfigError, naming both devices, for two on one line with
    other line settings or one unit id."""
    lines: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        if spec.transport == "rtu" and spec.bus:
            lines.setdefault(port_key(spec.bus), []).append(i)
    for members in lines.values():
        first = specs[members[0]]
        owners: dict[int, DeviceSpec] = {}
        for i in members:
            spec = specs[i]
            _check_drop(first, spec)
            owner = owners.setdefault(spec.unit, spec)
            if owner is not spec:
                raise ConfigError(f"device {spec.node}.{spec.asset}: unit {spec.unit} on "
                                  f"{spec.bus} is already {owner.node}.{owner.asset}'s; the "
                                  "devices on one RTU port each need a unit id of their own")
    return {key: members for key, members in lines.items() if len(members) > 1}


def _check_drop(first: DeviceSpec, spec: DeviceSpec) -> None:
    """``spec`` on ``first``'s line: the same line settings, or a ConfigError naming both."""
    for key in ("baudrate", "parity", "bytesize", "stopbits"):
        if getattr(spec, key) != getattr(first, key):
            raise ConfigError(f"device {spec.node}.{spec.asset}: {key} "
                              f"{getattr(spec, key)!r} on {spec.bus}, where "
                              f"{first.node}.{first.asset} has {getattr(first, key)!r}; the "
                              "devices on one RTU port share its line: their baudrate, "
                              "parity, bytesize and stopbits must match")


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
        #: the RS-485 lines of several devices, by port key: one pty each
        self.buses: dict[str, PtyBus] = {}
        drops = self._drops()
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
                        port=port, baudrate=spec.baudrate, parity=spec.parity,
                        bytesize=spec.bytesize, stopbits=int(spec.stopbits),
                        fault=spec.fault, on_event=on_event, name=name, **drops.get(i, {}))
            except ConfigError as exc:
                raise ConfigError(f"device {spec.node}.{spec.asset}: {exc}") from None
            self.emulators[key] = emulator
            self._maps[key] = regmap

    def _drops(self) -> dict[int, dict[str, Any]]:
        """For each RTU spec on a line of several devices, its place there: the bus, its
        drop, and the unit ids of its neighbours (ConfigError for a line the devices
        disagree on)."""
        drops: dict[int, dict[str, Any]] = {}
        for key, members in rtu_buses(self.specs).items():
            bus = self.buses[key] = PtyBus(len(members))
            units = [self.specs[i].unit for i in members]
            for drop, i in enumerate(members):
                drops[i] = {"bus": bus, "drop": drop, "neighbours": units}
        return drops

    async def start(self) -> None:
        """Start every server (the shared lines first); on a failure the ones already
        started are stopped."""
        try:
            for bus in self.buses.values():
                await bus.open()
            for emulator in self.emulators.values():
                await emulator.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every server, then close the shared lines; safe to call twice."""
        for emulator in self.emulators.values():
            await emulator.stop()
        for bus in self.buses.values():
            await bus.close()

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
                           "map": regmap.name, "transport": spec.transport,
                           "backend": BACKEND_OF[spec.transport]}
            line = {"baudrate": spec.baudrate, "parity": spec.parity,
                    "bytesize": spec.bytesize, "stopbits": spec.stopbits}
            if isinstance(emulator, SerialEmulator):
                entry |= {"host": self.host, "unit": spec.unit, "models": [],
                          "serial_port": emulator.path, **line,
                          "telemetry_period_s": spec.telemetry_period_s}
            else:
                assert isinstance(emulator, ModbusEmulator)
                entry |= {"host": self.host, "unit": spec.unit,
                          "base_address": spec.base_address, "models": list(regmap.models)}
                if spec.transport == "tcp":
                    entry["port"] = emulator.port
                else:
                    entry |= {"serial_port": emulator.serial_port, **line}
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
