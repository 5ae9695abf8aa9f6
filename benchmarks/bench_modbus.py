"""Modbus TCP on loopback: round trip of a full model 701 read, and reads per second across
12 emulated devices polled concurrently.

The emulators run in a child process (as ``gridloop emulate`` would), the clients here.
Baselines from the same run: pymodbus's bare client making the same two requests for the
701 read (what our back-end adds), and the 12 devices polled one after another (what
concurrency buys).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Mapping

from pymodbus.client import AsyncModbusTcpClient

from firmware_bridge.backends.modbus import ModbusTcpDevice
from firmware_bridge.device import Quality, poll
from firmware_bridge.maps import get_map
from firmware_bridge.plant import Plant
from firmware_bridge.sunspec import model_layout

#: asset kind -> (register map, signals)
_KINDS: dict[str, tuple[str, dict[str, float]]] = {
    "inverter": ("sunspec_inverter", {"p_ac_w": 61_230.0, "q_var": -2_100.0, "v_ac_v": 401.3,
                                      "freq_hz": 50.012, "energy_wh": 1_234_567.0,
                                      "w_max_lim_pct": 100.0}),
    "battery": ("sunspec_battery", {"p_w": -15_000.0, "p_dc_w": -15_400.0, "voltage_v": 812.4,
                                    "current_a": -18.9, "soc": 0.63, "soh": 0.97,
                                    "connected": 1.0, "capacity_wh": 200_000.0}),
    "meter": ("sunspec_meter", {"p_w": -23_450.0, "q_var": 1_200.0, "v_ac_v": 231.2,
                                "freq_hz": 49.98, "e_import_wh": 5e6, "e_export_wh": 8e5}),
    "gpu_rack": ("gpu_rack", {"p_w": 84_300.0, "energy_wh": 912_345.0, "temp_c": 67.4,
                              "power_cap_w": 100_000.0, "phase": 1.0}),
}
_DEVICES = 12


class _Steady(Plant):
    """Assets holding fixed signals (the benchmark measures the wire, not physics)."""

    def __init__(self, signals: Mapping[str, Mapping[str, float]]) -> None:
        self.t = 0.0
        self._signals = {k: dict(v) for k, v in signals.items()}

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self._signals)

    def read(self, asset: str) -> dict[str, float]:
        return dict(self._signals[asset])

    def write(self, asset: str, setpoints: Mapping[str, float]) -> None:
        self._signals[asset].update(setpoints)

    def advance(self, dt: float) -> None:
        self.t += dt


def _serve(conn: object, count: int) -> None:
    """Child process: serve ``count`` devices until the parent closes the pipe."""
    from firmware_bridge.emulators.host import DeviceSpec, EmulatorHost

    kinds = list(_KINDS)
    specs = [DeviceSpec("n1", f"{kinds[i % 4]}{i}", _KINDS[kinds[i % 4]][0])
             for i in range(count)]
    plant = _Steady({s.asset: _KINDS[kinds[i % 4]][1] for i, s in enumerate(specs)})

    async def main() -> None:
        async with EmulatorHost({"n1": plant}, specs) as host:
            conn.send(host.describe())  # type: ignore[attr-defined]
            await asyncio.to_thread(conn.recv)  # type: ignore[attr-defined]
    try:
        asyncio.run(main())
    except EOFError:
        pass


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(1e3 * statistics.median(ordered), 4),
            "p99_ms": round(1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4),
            "n": len(ordered)}


async def _round_trips(entries: list[dict], reads: int) -> dict:
    inverter = next(e for e in entries if e["kind"] == "inverter")
    start = get_map("sunspec_inverter").layout().model_address(701)
    size = model_layout(701).size  # 155 registers: two requests (125 + 30)
    ours: list[float] = []
    bare: list[float] = []
    async with ModbusTcpDevice(inverter["host"], inverter["port"], map="sunspec_inverter",
                               timeout_s=2.0) as dev:
        raw = AsyncModbusTcpClient(inverter["host"], port=inverter["port"], timeout=2,
                                   retries=0, reconnect_delay=0)
        await raw.connect()
        try:
            for _ in range(reads // 10):  # warm-up
                await dev.read_registers(start, size)
            for _ in range(reads):  # interleaved so both see the same machine state
                t0 = time.perf_counter()
                await dev.read_registers(start, size)
                ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await raw.read_holding_registers(start, count=125, device_id=1)
                await raw.read_holding_registers(start + 125, count=size - 125, device_id=1)
                bare.append(time.perf_counter() - t0)
            decoded: list[float] = []
            for _ in range(reads // 2):
                t0 = time.perf_counter()
                await dev.read()
                decoded.append(time.perf_counter() - t0)
        finally:
            raw.close()
    return {"model_701_read": _percentiles(ours),
            "model_701_read_bare_pymodbus": _percentiles(bare),
            "overhead_ratio_median": round(statistics.median(ours) / statistics.median(bare),
                                           3),
            "inverter_read_decoded": _percentiles(decoded)}


async def _throughput(entries: list[dict], seconds: float) -> dict:
    devices = [ModbusTcpDevice(e["host"], e["port"], map=e["map"], timeout_s=2.0)
               for e in entries]
    for dev in devices:
        await dev.open()
    try:
        async def concurrent() -> int:
            n = 0
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                readings = await asyncio.gather(*(poll(d) for d in devices))
                assert all(r.quality == Quality.OK for r in readings)
                n += len(readings)
            return n

        async def sequential() -> int:
            n = 0
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                for d in devices:
                    assert (await poll(d)).quality == Quality.OK
                    n += 1
            return n

        seq = await sequential() / seconds
        con = await concurrent() / seconds
    finally:
        for dev in devices:
            await dev.close()
    return {"devices": len(devices), "reads_per_s_concurrent": round(con, 1),
            "reads_per_s_sequential": round(seq, 1),
            "concurrency_ratio": round(con / seq, 3)}


def run(quick: bool) -> dict:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child, _DEVICES), daemon=True)
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("emulators did not start within 60 s")
        entries = parent.recv()

        async def main() -> dict:
            result = await _round_trips(entries, 200 if quick else 2000)
            result["twelve_devices"] = await _throughput(entries, 1.0 if quick else 5.0)
            return result
        result = asyncio.run(main())
    finally:
        parent.close()
        server.join(10)
        if server.is_alive():
            server.terminate()
            server.join()
    result["note"] = ("emulators in a child process, clients in this one, loopback TCP; "
                      "ratios are against baselines measured in this run")
    return result
