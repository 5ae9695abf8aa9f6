"""pysunspec2, an independent SunSpec client with its own Modbus stack, scans every emulated
device kind over TCP, reads values that match the plant, and writes setpoints that reach it.

::

    SignalPlant -- ModbusEmulator ==[TCP 127.0.0.1]== SunSpecModbusClientDeviceTCP (a thread)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import sunspec2.device
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from firmware_bridge.gpu_map import GPU_RACK_MODEL, MODEL_DIR
from firmware_bridge.maps import get_map

from .aio import run
from .modbus_support import KINDS, SignalPlant, emulated


@pytest.fixture(autouse=True)
def gpu_model_on_pysunspec2_path() -> Iterator[None]:
    """pysunspec2 finds the GPU rack's vendor model beside firmware_bridge.gpu_map."""
    saved = list(sunspec2.device.get_model_defs_path())
    sunspec2.device.set_model_defs_path([str(MODEL_DIR), *saved])
    yield
    sunspec2.device.set_model_defs_path(saved)


def _scan(port: int) -> dict[int, dict[str, object]]:
    """Blocking: scan the device, return each model's points (scaled values)."""
    dev = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2)
    try:
        dev.scan()
        return {mid: {n: p.cvalue for n, p in models[0].points.items()}
                for mid, models in dev.models.items() if isinstance(mid, int)}
    finally:
        dev.close()


@pytest.mark.parametrize("kind", list(KINDS))
def test_pysunspec2_scans_each_kind_and_reads_the_plant(kind: str) -> None:
    map_name, signals = KINDS[kind]
    regmap = get_map(map_name)
    plant = SignalPlant({kind: signals})

    async def t() -> None:
        async with emulated(plant, kind, map_name) as emulator:
            models = await asyncio.to_thread(_scan, emulator.port)
        assert list(models) == list(regmap.models)
        assert models[1]["Mn"] == "gridloop" and models[1]["SN"] == f"test.{kind}"
        checked = 0
        for b in regmap.bindings:
            if b.signal not in signals:
                continue
            value = models[b.model][b.point]
            assert value is not None, (b.model, b.point)
            expected = signals[b.signal]
            if b.codes:
                assert dict(b.codes)[int(value)] == expected  # type: ignore[call-overload]
            else:
                assert float(value) * b.factor == pytest.approx(  # type: ignore[arg-type]
                    expected, rel=2e-4, abs=0.05), (b.model, b.point)
            checked += 1
        assert checked >= 5
    run(t())


def _write_points(port: int, model_id: int, points: dict[str, float], scaled: bool) -> None:
    dev = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2)
    try:
        dev.scan()
        model = dev.models[model_id][0]
        for name, value in points.items():
            if scaled:
                model.points[name].cvalue = value
            else:
                model.points[name].value = int(value)
        model.write()
    finally:
        dev.close()


@pytest.mark.parametrize("kind, model_id, points, scaled, expected", [
    # two adjacent registers: function code 16
    ("inverter", 704, {"WMaxLimPctEna": 1, "WMaxLimPct": 55.5}, True,
     {"w_max_lim_pct": 55.5}),
    # one register: function code 6
    ("battery", 802, {"SetOp": 2}, False, {"connect": 0.0}),
    ("gpu_rack", GPU_RACK_MODEL, {"WCap": 70_000.0}, True, {"power_cap_w": 70_000.0}),
])
def test_pysunspec2_writes_reach_the_plant(kind: str, model_id: int, points: dict[str, float],
                                           scaled: bool, expected: dict[str, float]) -> None:
    map_name, signals = KINDS[kind]
    plant = SignalPlant({kind: signals})

    async def t() -> None:
        async with emulated(plant, kind, map_name) as emulator:
            await asyncio.to_thread(_write_points, emulator.port, model_id, points, scaled)
        assert plant.written[kind] == [expected]
    run(t())


def test_the_rack_models_phase_symbols_are_the_twins_load_codes() -> None:
    """A SunSpec client labels Phase by the model's symbols: they must be the codes the rack
    serves (twin.workload.LOADS), MEMORY and LIGHT were swapped."""
    import json

    from twin.workload import LOADS

    model = json.loads((MODEL_DIR / f"model_{GPU_RACK_MODEL}.json").read_text())
    phase = next(p for p in model["group"]["points"] if p["name"] == "Phase")
    assert {s["name"].lower(): s["value"] for s in phase["symbols"]} == LOADS
