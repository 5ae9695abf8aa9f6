"""Helpers of the Modbus tests: a plant with given signals, emulators around it, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from firmware_bridge.backends.modbus import ModbusDevice
from firmware_bridge.emulators.modbus_server import ModbusEmulator, PlantSource
from firmware_bridge.faults import EventSink, FaultCard
from firmware_bridge.maps import get_map
from firmware_bridge.plant import Plant
from firmware_bridge.registry import open_device


class SignalPlant(Plant):
    """Assets with given signals that move predictably: every advance adds ``ramp`` per
    second to each signal named in ``ramp``; written setpoints are kept in ``written`` and
    echoed as signals of the same name (a device reading back its setpoint)."""

    def __init__(self, assets: Mapping[str, Mapping[str, float]],
                 ramp: Mapping[str, float] | None = None) -> None:
        self.t = 0.0
        self.signals = {a: dict(s) for a, s in assets.items()}
        self.ramp = dict(ramp or {})
        self.written: dict[str, list[dict[str, float]]] = {a: [] for a in assets}

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self.signals)

    def read(self, asset: str) -> dict[str, float]:
        return dict(self.signals[asset])

    def write(self, asset: str, setpoints: Mapping[str, float]) -> None:
        self.written[asset].append(dict(setpoints))
        self.signals[asset].update(setpoints)

    def advance(self, dt: float) -> None:
        for signals in self.signals.values():
            for name, rate in self.ramp.items():
                if name in signals:
                    signals[name] += rate * dt
        self.t += dt


#: one plausible operating point per asset kind, with the map that serves it
KINDS: dict[str, tuple[str, dict[str, float]]] = {
    "inverter": ("sunspec_inverter", {
        "p_ac_w": 61_230.0, "q_var": -2_100.0, "v_ac_v": 401.3, "freq_hz": 50.012,
        "energy_wh": 1_234_567.0, "w_max_lim_pct": 100.0, "p_dc_w": 63_000.0}),
    "battery": ("sunspec_battery", {
        "p_w": -15_000.0, "p_dc_w": -15_400.0, "voltage_v": 812.4, "current_a": -18.96,
        "soc": 0.634, "soh": 0.97, "temp_cell_c": 28.5, "connected": 1.0,
        "capacity_wh": 200_000.0}),
    "meter": ("sunspec_meter", {
        "p_w": -23_450.0, "q_var": 1_200.0, "v_ac_v": 231.2, "freq_hz": 49.98,
        "e_import_wh": 5_000_123.0, "e_export_wh": 812_345.0}),
    "gpu_rack": ("gpu_rack", {
        "p_w": 84_300.0, "energy_wh": 912_345.0, "temp_c": 67.4, "power_cap_w": 100_000.0,
        "phase": 1.0}),
}


@asynccontextmanager
async def emulated(plant: Plant, asset: str, map: str, *, transport: str = "tcp",
                   unit: int = 1, fault: FaultCard | None = None,
                   on_event: EventSink | None = None, **map_options: float
                   ) -> AsyncIterator[ModbusEmulator]:
    """A started emulator of ``asset`` of ``plant`` behind map ``map``."""
    regmap = get_map(map, **map_options)
    source = PlantSource(plant, asset, regmap, regmap.layout(),
                         identity={"SN": f"test.{asset}", "DA": unit}, on_event=on_event)
    async with ModbusEmulator(source, unit=unit, transport=transport, fault=fault,
                              on_event=on_event, name=f"test/{asset}") as emulator:
        yield emulator


def client(emulator: ModbusEmulator, map: str, **kwargs: Any) -> ModbusDevice:
    """A (not yet open) client back-end for ``emulator``."""
    kwargs.setdefault("timeout_s", 0.5)
    if emulator.transport == "tcp":
        device = open_device("modbus_tcp", host=emulator.host, port=emulator.port,
                             unit=emulator.unit, map=map, **kwargs)
    else:
        device = open_device("modbus_rtu", port=emulator.serial_port, unit=emulator.unit,
                             map=map, **kwargs)
    assert isinstance(device, ModbusDevice)
    return device
