"""EmulatorHost: every device of a set of plants served on real transports, on the bench's
clock or on the wall clock, with run-time fault cards.

::

    node n1: SignalPlant(inverter, battery, meter) --+-- inverter  TCP 127.0.0.1
                                                     +-- battery   RTU pty pair
                                                     +-- meter     TCP
    node n2: SignalPlant(rack, bms) -----------------+-- rack      TCP
                                                     +-- bms       serial MCU on a pty
"""

from __future__ import annotations

import asyncio
import json
import os
import socket

import pytest

from firmware_bridge.device import Device, Quality
from firmware_bridge.emulators.host import DeviceSpec, EmulatorHost
from firmware_bridge.errors import ConfigError, DeviceDisconnected, ExceptionResponse
from firmware_bridge.faults import FaultCard
from firmware_bridge.maps import get_map
from firmware_bridge.registry import open_device

from .aio import run
from .modbus_support import KINDS, SignalPlant


def _plants() -> dict[str, SignalPlant]:
    n1 = SignalPlant({k: KINDS[k][1] for k in ("inverter", "battery", "meter")},
                     ramp={"energy_wh": 1_000.0, "e_import_wh": 500.0})
    n2 = SignalPlant({"rack": KINDS["gpu_rack"][1], "bms": KINDS["battery"][1]},
                     ramp={"energy_wh": 10_000.0, "soc": 0.001})
    return {"n1": n1, "n2": n2}


def _specs() -> list[DeviceSpec]:
    return [DeviceSpec("n1", "inverter", "sunspec_inverter"),
            DeviceSpec("n1", "battery", "sunspec_battery", transport="rtu", unit=3),
            DeviceSpec("n1", "meter", "sunspec_meter", unit=2),
            DeviceSpec("n2", "rack", "gpu_rack", map_options={"rating_w": 120_000.0}),
            DeviceSpec("n2", "bms", "sunspec_battery", transport="serial",
                       telemetry_period_s=0.01)]


def _device(entry: dict, **kwargs: object) -> Device:
    if entry["transport"] == "serial":
        return open_device("serial", port=entry["serial_port"], baudrate=entry["baudrate"],
                           **kwargs)
    if entry["transport"] == "tcp":
        return open_device("modbus_tcp", host=entry["host"], port=entry["port"],
                           unit=entry["unit"], map=entry["map"], **kwargs)
    return open_device("modbus_rtu", port=entry["serial_port"], unit=entry["unit"],
                       map=entry["map"], **kwargs)


def test_describe_lists_every_device_as_json_lines() -> None:
    async def t() -> None:
        async with EmulatorHost(_plants(), _specs()) as host:
            entries = host.describe()
            lines = [json.dumps(entry) for entry in entries]
            assert all(json.loads(line) == entry for line, entry in zip(lines, entries))
            assert [(e["node"], e["asset"], e["kind"]) for e in entries] == [
                ("n1", "inverter", "inverter"), ("n1", "battery", "battery"),
                ("n1", "meter", "meter"), ("n2", "rack", "gpu_rack"), ("n2", "bms", "battery")]
            for e in entries[:4]:
                assert {"node", "asset", "kind", "map", "transport", "host", "unit",
                        "models"} <= set(e)
                assert e["host"] == "127.0.0.1"
            assert entries[0]["models"] == [1, 701, 702, 704, 103]
            assert entries[3]["models"] == [1, 64901]
            tcp_ports = [e["port"] for e in entries if e["transport"] == "tcp"]
            assert len(set(tcp_ports)) == 3 and all(p > 0 for p in tcp_ports)
            assert os.path.exists(entries[1]["serial_port"]) and entries[1]["unit"] == 3
            assert entries[4] == {"node": "n2", "asset": "bms", "kind": "battery",
                                  "map": "sunspec_battery", "transport": "serial",
                                  "backend": "serial", "host": "127.0.0.1", "unit": 1,
                                  "models": [], "serial_port": entries[4]["serial_port"],
                                  "baudrate": 19200, "parity": "N", "bytesize": 8,
                                  "stopbits": 1, "telemetry_period_s": 0.01}
            assert [e["backend"] for e in entries] == ["modbus_tcp", "modbus_rtu",
                                                       "modbus_tcp", "modbus_tcp", "serial"]
            assert {k: entries[1][k] for k in ("baudrate", "parity", "bytesize",
                                               "stopbits")} == {"baudrate": 19200,
                                                                "parity": "N",
                                                                "bytesize": 8,
                                                                "stopbits": 1}
            assert os.path.exists(entries[4]["serial_port"])
    run(t())


def test_every_device_reads_its_plant_and_follows_the_bench_clock() -> None:
    plants = _plants()

    async def t() -> None:
        async with EmulatorHost(plants, _specs()) as host:
            devices = [_device(entry) for entry in host.describe()]
            for dev in devices:
                await dev.open()
            try:
                specs = host.specs
                for dev, spec in zip(devices, specs):
                    truth = plants[spec.node].read(spec.asset)
                    values = (await dev.read()).values
                    assert len(values) >= 5
                    for name, value in values.items():
                        assert value == pytest.approx(truth[name], rel=1e-3, abs=0.06), name
                # the serial board's points are its map's: no temp_cell_c, as over Modbus
                assert devices[4].signals == get_map("sunspec_battery").signals
                assert devices[4].setpoints == ("p_set_w", "connect")
                host.advance(10.0)  # bench-clock mode: the bench advances the plants
                inverter = (await devices[0].read()).values
                assert inverter["energy_wh"] == pytest.approx(1_234_567.0 + 10_000.0)
                rack = (await devices[3].read()).values
                assert rack["energy_wh"] == pytest.approx(912_345.0 + 100_000.0)
                bms = (await devices[4].read()).values
                assert bms["soc"] == pytest.approx(0.634 + 0.01)
                await devices[4].write({"p_set_w": -5_000.0})
                assert plants["n2"].written["bms"] == [{"p_set_w": -5_000.0}]
            finally:
                for dev in devices:
                    await dev.close()
    run(t())


def test_run_wallclock_advances_the_plants_faster_than_real_time() -> None:
    plants = _plants()

    async def t() -> None:
        async with EmulatorHost(plants, _specs()[:1]) as host:
            loop = asyncio.get_running_loop()
            started = loop.time()
            clock = asyncio.create_task(host.run_wallclock(speed=20.0, tick_s=0.01))
            await asyncio.sleep(0.2)
            clock.cancel()
            await asyncio.gather(clock, return_exceptions=True)
            elapsed = loop.time() - started
        assert elapsed < plants["n1"].t <= 20.0 * elapsed
        assert plants["n2"].t == plants["n1"].t
    run(t())
    with pytest.raises(ConfigError, match="speed"):
        run(EmulatorHost(_plants(), []).run_wallclock(speed=0))


def test_run_time_fault_cards_per_device() -> None:
    events: list[tuple[str, str]] = []

    async def t() -> None:
        async with EmulatorHost(_plants(), _specs(),
                                on_event=lambda *e: events.append(e)) as host:
            entries = {e["asset"]: e for e in host.describe()}
            async with _device(entries["meter"], timeout_s=0.3) as meter, \
                    _device(entries["inverter"], timeout_s=0.3) as inverter, \
                    _device(entries["bms"], timeout_s=0.3) as bms:
                host.set_fault("n1", "meter", FaultCard(exception_code=0x0B))
                with pytest.raises(ExceptionResponse) as caught:
                    await meter.read()
                assert caught.value.code == 0x0B
                assert (await inverter.read()).quality == Quality.OK  # only that device
                host.set_fault("n1", "meter", None)
                assert (await meter.read()).quality == Quality.OK
                host.set_fault("n2", "bms", FaultCard(exception_code=0x07))
                with pytest.raises(ExceptionResponse) as caught:
                    await bms.read()
                assert caught.value.code == 0x07
                host.set_fault("n2", "bms", None)
                assert (await bms.read()).quality == Quality.OK
            with pytest.raises(ConfigError, match=r"no emulated device n1\.pv"):
                host.set_fault("n1", "pv", None)
    run(t())
    assert [k for k, _ in events] == ["fault.set", "fault.exception", "fault.set",
                                      "fault.set", "fault.exception", "fault.set"]
    assert "n1/meter" in events[1][1] and events[4][1].startswith("n2/bms: ")


@pytest.mark.parametrize("transport", ["tcp", "serial"])
def test_a_scenario_fault_card_is_active_from_the_start(transport: str) -> None:
    specs = [DeviceSpec("n1", "battery", "sunspec_battery", transport=transport,
                        fault=FaultCard(drop_writes=True))]
    plants = _plants()
    events: list[tuple[str, str]] = []

    async def t() -> None:
        async with EmulatorHost(plants, specs, on_event=lambda *e: events.append(e)) as host, \
                _device(host.describe()[0]) as battery:
            await battery.write({"p_set_w": 5_000.0})
        assert plants["n1"].written["battery"] == []
    run(t())
    assert events[0] == ("fault.set", "n1/battery: drop_writes=True")
    assert [k for k, _ in events] == ["fault.set", "fault.drop_writes"]


def _free_port_pair() -> int:
    for _ in range(20):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            base = a.getsockname()[1]
            if base > 65000:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
            return base
    pytest.fail("no two free adjacent ports")


def test_port_base_numbers_devices_in_order_and_stop_releases_them() -> None:
    base = _free_port_pair()
    specs = [DeviceSpec("n1", "battery", "sunspec_battery", transport="rtu", unit=3),
             DeviceSpec("n1", "inverter", "sunspec_inverter"),
             DeviceSpec("n1", "meter", "sunspec_meter")]

    async def t() -> None:
        host = EmulatorHost(_plants(), specs, port_base=base)
        async with host:  # an RTU device takes no port: the first TCP one gets the base
            assert [e.get("port") for e in host.describe()][1:] == [base, base + 1]
            # the port is taken: a second host cannot listen there
            with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{base}"):
                async with EmulatorHost(_plants(), specs[1:2], port_base=base):
                    pass
        dev = open_device("modbus_tcp", host="127.0.0.1", port=base, map="sunspec_inverter")
        with pytest.raises(DeviceDisconnected):
            await dev.open()
        await dev.close()
    run(t())


@pytest.mark.parametrize("spec, message", [
    (DeviceSpec("n9", "inverter", "sunspec_inverter"), "no plant for node 'n9'"),
    (DeviceSpec("n1", "pv", "sunspec_inverter"), "plant has no asset 'pv'"),
    (DeviceSpec("n1", "inverter", "sunspec_inverterr"), "did you mean 'sunspec_inverter'"),
    (DeviceSpec("n1", "inverter", "sunspec_inverter", transport="udp"),
     "transport must be one of tcp, rtu, serial, got 'udp'"),
    (DeviceSpec("n1", "pv", "sunspec_inverter", transport="serial"),
     r"device n1\.pv: plant has no asset 'pv'"),
    (DeviceSpec("n1", "inverter", "sunspec_inverter", unit=0), "unit id must be 1..247"),
    (DeviceSpec("n1", "inverter", "sunspec_inverter", map_options={"ratin_w": 1.0}),
     "unexpected keyword argument 'ratin_w'"),
])
def test_malformed_device_specs_are_refused_by_name(spec: DeviceSpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EmulatorHost(_plants(), [spec])


def test_a_device_listed_twice_is_refused() -> None:
    spec = DeviceSpec("n1", "inverter", "sunspec_inverter")
    with pytest.raises(ConfigError, match=r"n1\.inverter: listed twice"):
        EmulatorHost(_plants(), [spec, spec])

