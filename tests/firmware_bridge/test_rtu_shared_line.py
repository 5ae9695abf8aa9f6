"""Several Modbus RTU devices on one RS-485 line: an inverter at unit 1, a battery at unit 2
and a meter at unit 3 on one serial port, polled one transaction at a time.

Real parts only: a pseudo-terminal bus (every slave hears every request), one pymodbus RTU
server per slave on its drop, and our ``modbus_rtu`` back-end opening the one port for every
device on it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from firmware_bridge.backends.modbus import ModbusRtuDevice
from firmware_bridge.capture import Capture
from firmware_bridge.emulators.host import DeviceSpec, EmulatorHost
from firmware_bridge.emulators.modbus_server import ModbusEmulator, PlantSource
from firmware_bridge.errors import ConfigError, DeviceDisconnected, DeviceTimeout
from firmware_bridge.faults import FaultCard
from firmware_bridge.maps import get_map
from firmware_bridge.pty import PtyBus
from firmware_bridge.registry import open_device

from .aio import run
from .modbus_support import KINDS, SignalPlant

#: the slaves of the line: asset, unit id
SLAVES = (("inverter", 1), ("battery", 2), ("meter", 3))


@asynccontextmanager
async def line(plant: SignalPlant, events: list[tuple[str, str]] | None = None
               ) -> AsyncIterator[tuple[PtyBus, dict[str, ModbusEmulator]]]:
    """An RS-485 line of :data:`SLAVES`, each a pymodbus server on its own drop."""
    units = [unit for _, unit in SLAVES]
    sink = (lambda k, m: events.append((k, m))) if events is not None else None
    bus = PtyBus(len(SLAVES))
    async with bus, AsyncExitStack() as stack:
        emulators = {}
        for drop, (asset, unit) in enumerate(SLAVES):
            regmap = get_map(KINDS[asset][0])
            source = PlantSource(plant, asset, regmap, regmap.layout(),
                                 identity={"SN": f"test.{asset}", "DA": unit})
            emulators[asset] = await stack.enter_async_context(ModbusEmulator(
                source, unit=unit, transport="rtu", name=f"test/{asset}", on_event=sink,
                bus=bus, drop=drop, neighbours=units))
        yield bus, emulators


def _plant() -> SignalPlant:
    return SignalPlant({asset: KINDS[asset][1] for asset, _ in SLAVES})


def _devices(port: str, **kwargs: object) -> dict[str, ModbusRtuDevice]:
    """A client device per slave, all on ``port``."""
    out = {}
    for asset, unit in SLAVES:
        device = open_device("modbus_rtu", port=port, unit=unit, map=KINDS[asset][0],
                             name=f"lab.{asset}", **{"timeout_s": 0.3, **kwargs})
        assert isinstance(device, ModbusRtuDevice)
        out[asset] = device
    return out


async def _close(devices: dict[str, ModbusRtuDevice]) -> None:
    for device in devices.values():
        await device.close()


def test_reads_and_writes_reach_each_unit_on_one_port() -> None:
    """Opened and read concurrently, as the bench does: each device gets its own unit's
    values and its writes reach its own unit only; the neighbours' requests are no news."""
    plant = _plant()
    events: list[tuple[str, str]] = []

    async def t() -> None:
        async with line(plant, events) as (bus, emulators):
            devices = _devices(bus.path)
            try:
                await asyncio.gather(*(d.open() for d in devices.values()))
                for _ in range(3):
                    readings = await asyncio.gather(*(d.read() for d in devices.values()))
                    got = dict(zip(devices, readings, strict=True))
                    assert got["inverter"].values["p_ac_w"] == pytest.approx(61_230.0)
                    assert got["battery"].values["soc"] == pytest.approx(0.634, abs=1e-3)
                    assert got["meter"].values["freq_hz"] == pytest.approx(49.98, abs=1e-3)
                await asyncio.gather(devices["inverter"].write({"w_max_lim_pct": 40.0}),
                                     devices["battery"].write({"p_set_w": -5_000.0}))
                assert plant.written["inverter"][-1]["w_max_lim_pct"] == pytest.approx(40.0)
                assert plant.written["battery"][-1]["p_set_w"] == pytest.approx(-5_000.0)
                assert plant.written["meter"] == []
                counts = {a: e.transactions for a, e in emulators.items()}
            finally:
                await _close(devices)
        assert all(n > 0 for n in counts.values()), counts

    run(t())
    assert events == []  # each slave heard the others' requests, and said nothing of them


def test_a_late_answer_of_one_unit_is_not_taken_for_the_next_units() -> None:
    """Unit 1 answers 0.4 s after a request its client gave up on at 0.3 s; the line stays
    quiet for that time-out, so the late answer comes and goes before unit 2's request, and
    unit 2 (slow to answer, 0.15 s) reads its own values.  With a quiet time per device,
    unit 2's request would go out at 0.3 s and unit 1's answer land in its transaction."""
    plant = _plant()

    async def t() -> None:
        async with line(plant) as (bus, emulators):
            devices = _devices(bus.path, timeout_s=0.3)
            try:
                await asyncio.gather(*(d.open() for d in devices.values()))
                emulators["inverter"].set_fault(FaultCard(delay_s=0.4))
                emulators["battery"].set_fault(FaultCard(delay_s=0.15))
                for _ in range(2):
                    late, battery, meter = await asyncio.gather(
                        *(d.read() for d in devices.values()), return_exceptions=True)
                    assert isinstance(late, DeviceTimeout), late
                    assert str(late).startswith("lab.inverter: no answer from ")
                    assert not isinstance(battery, BaseException), battery
                    assert battery.values["soc"] == pytest.approx(0.634, abs=1e-3)
                    assert not isinstance(meter, BaseException), meter
                    assert meter.values["freq_hz"] == pytest.approx(49.98, abs=1e-3)
                emulators["inverter"].set_fault(None)
                await asyncio.sleep(0.4)  # the last late answer, discarded
                assert (await devices["inverter"].read()).values["p_ac_w"] == \
                    pytest.approx(61_230.0)
            finally:
                await _close(devices)

    run(t())


def test_a_device_polled_before_a_silent_one_reads_all_its_registers_first() -> None:
    """The line is one device's for its whole read (the inverter's two register spans go
    out back to back, one snapshot), so a unit that keeps it waiting after that costs the
    units polled before it nothing."""
    async def t() -> None:
        async with line(_plant()) as (bus, emulators):
            devices = _devices(bus.path, timeout_s=0.3)
            try:
                await asyncio.gather(*(d.open() for d in devices.values()))
                emulators["battery"].set_fault(FaultCard(timeout=True))
                first, silent = await asyncio.gather(
                    devices["inverter"].read(), devices["battery"].read(),
                    return_exceptions=True)
                assert isinstance(silent, DeviceTimeout), silent
                assert not isinstance(first, BaseException), first
                assert first.rtt_s < 0.15, first.rtt_s  # not behind the battery's 0.3 s
            finally:
                await _close(devices)

    run(t())


def test_a_lost_line_is_said_by_every_device_and_each_comes_back() -> None:
    """The adapter is pulled while unit 1's request is on the wire: unit 1 says its
    connection is lost, unit 2 that it is not connected; while the port is gone each says it
    cannot connect (no such port); plugged back, each scans its unit again, the one that
    finds the line reopened by the other too."""
    plant = _plant()
    capture = Capture()

    async def t() -> None:
        async with line(plant) as (bus, emulators):
            devices = _devices(bus.path, backoff_s=0.01, backoff_max_s=0.01, capture=capture)
            inverter, battery = devices["inverter"], devices["battery"]
            try:
                await asyncio.gather(inverter.open(), battery.open())
                emulators["inverter"].set_fault(FaultCard(delay_s=0.3))

                async def pull() -> None:
                    await asyncio.sleep(0.1)
                    bus.unplug()

                first, second, _ = await asyncio.gather(inverter.read(), battery.read(),
                                                        pull(), return_exceptions=True)
                assert isinstance(first, DeviceDisconnected), first
                assert str(first).startswith("lab.inverter: "), first
                assert isinstance(second, DeviceDisconnected), second
                assert str(second).startswith("lab.battery: "), second
                emulators["inverter"].set_fault(None)
                for device in (inverter, battery):
                    await asyncio.sleep(0.02)  # past its back-off
                    with pytest.raises(DeviceDisconnected) as gone:
                        await device.read()
                    assert str(gone.value) == (f"{device.name}: cannot connect to {bus.path} "
                                               "(19200 8N1): no such port")
                bus.plug()
                await asyncio.sleep(0.02)
                for device in (battery, inverter):  # the second finds the port open
                    before = len(capture.transactions(device.name))
                    assert (await device.read()).values
                    scan = capture.transactions(device.name)[before]
                    assert (scan.address, scan.count) == (40000, 2), scan  # "SunS" again
            finally:
                await _close(devices)

    run(t())


def test_a_line_reopened_by_one_device_is_new_to_the_others_too() -> None:
    """The adapter drops out between two polls (a USB glitch): the first device to read
    reopens the port and scans its unit; the next finds the port open, and scans its unit
    too (a device on a line that went away may have restarted), not only the first."""
    capture = Capture()

    async def t() -> None:
        async with line(_plant()) as (bus, _):
            devices = _devices(bus.path, capture=capture)
            try:
                await asyncio.gather(*(d.open() for d in devices.values()))
                bus.unplug()
                await asyncio.sleep(0.05)  # the port's client sees the hang-up
                bus.plug()
                for device in devices.values():
                    before = len(capture.transactions(device.name))
                    assert (await device.read()).values
                    scan = capture.transactions(device.name)[before]
                    assert (scan.address, scan.count) == (40000, 2), (device.name, scan)
            finally:
                await _close(devices)

    run(t())


def test_a_slow_slave_answers_late_though_a_neighbour_was_asked_meanwhile() -> None:
    """As on a real line, whatever the master sends meanwhile: pymodbus's server lost the
    answer of a request still being served when another frame arrived (the next request of
    the line, to any unit)."""
    plant = _plant()
    heard: list[bytes] = []

    def trace(sending: bool, data: bytes) -> bytes:
        if not sending:
            heard.append(data)
        return data

    async def t() -> None:
        async with line(plant) as (bus, emulators):
            emulators["inverter"].set_fault(FaultCard(delay_s=0.3))
            client = AsyncModbusSerialClient(bus.path, timeout=0.1, retries=0,
                                             trace_packet=trace)
            await client.connect()
            try:
                with pytest.raises(ModbusIOException):  # no answer from unit 1 in 0.1 s
                    await client.read_holding_registers(40000, count=2, device_id=1)
                asked = await client.read_holding_registers(40000, count=2, device_id=2)
                assert not asked.isError()  # the neighbour, asked while unit 1 is busy
                await asyncio.sleep(0.35)
            finally:
                client.close()

    run(t())
    assert any(chunk[:1] == b"\x01" for chunk in heard), heard  # unit 1's answer, late


def test_a_silent_unit_on_a_line_that_answers_is_said_to_need_its_unit_id_only() -> None:
    """The other units answer: the line settings are right, only the unit id is in doubt."""
    async def t() -> None:
        async with line(_plant()) as (bus, _):
            devices = _devices(bus.path)
            stray = open_device("modbus_rtu", port=bus.path, unit=9, map="sunspec_meter",
                                name="lab.meter2", timeout_s=0.2)
            try:
                await devices["meter"].open()
                with pytest.raises(DeviceTimeout) as caught:
                    await stray.open()
            finally:
                await stray.close()
                await _close(devices)
        assert str(caught.value).endswith("nothing answers unit 9 there: check the unit id")

    run(t())


def test_two_names_of_one_port_are_one_line(tmp_path: Path) -> None:
    """A device naming the port through a link (``/dev/serial/by-id/...``) shares the line
    of one naming it directly (``/dev/ttyUSB0``), rather than failing to open it again."""
    async def t() -> None:
        async with line(_plant()) as (bus, _):
            link = tmp_path / "usb-FTDI_RS485-if00-port0"
            os.symlink(bus.path, link)
            inverter = open_device("modbus_rtu", port=bus.path, unit=1,
                                   map="sunspec_inverter", name="lab.inverter")
            meter = open_device("modbus_rtu", port=str(link), unit=3, map="sunspec_meter",
                                name="lab.meter")
            try:
                await inverter.open()
                await meter.open()
                assert (await meter.read()).values and (await inverter.read()).values
            finally:
                await meter.close()
                await inverter.close()

    run(t())


@pytest.mark.parametrize(("second", "says"), [
    ({"unit": 1}, "lab.meter: unit 1 on {port} is already lab.inverter's; the devices on "
                  "one RTU port each need a unit id of their own"),
    ({"unit": 3, "baudrate": 9600},
     "lab.meter: baudrate 9600 on {port}, where lab.inverter has 19200; the devices on one "
     "RTU port share its line (19200 8N1): their baudrate, parity, bytesize and stopbits "
     "must match"),
])
def test_a_device_that_disagrees_with_the_line_is_refused_in_one_line(
        second: dict[str, int], says: str) -> None:
    async def t() -> None:
        async with line(_plant()) as (bus, _):
            inverter = open_device("modbus_rtu", port=bus.path, unit=1,
                                   map="sunspec_inverter", name="lab.inverter")
            meter = open_device("modbus_rtu", port=bus.path, map="sunspec_meter",
                                name="lab.meter", **second)
            try:
                await inverter.open()
                with pytest.raises(ConfigError) as caught:
                    await meter.open()
                assert str(caught.value) == says.format(port=bus.path)
                assert (await inverter.read()).values  # the line is still the inverter's
            finally:
                await meter.close()
                await inverter.close()

    run(t())


def _host_specs(**meter: object) -> list[DeviceSpec]:
    return [DeviceSpec("lab", asset, KINDS[asset][0], transport="rtu", bus="/dev/ttyUSB0",
                       **{"unit": unit, **(meter if asset == "meter" else {})})
            for asset, unit in SLAVES]


def test_the_emulator_host_serves_the_units_of_one_port_on_one_pty() -> None:
    """Devices whose tables name one port are the slaves of one line: one pty for all;
    a request for a unit none of them is still reported (by each slave that heard it)."""
    plant = _plant()
    events: list[tuple[str, str]] = []

    async def t() -> None:
        host = EmulatorHost({"lab": plant}, _host_specs(),
                            on_event=lambda k, m: events.append((k, m)))
        async with host:
            described = host.describe()
            ports = {d["serial_port"] for d in described}
            assert len(ports) == 1 and os.path.exists(ports.pop())
            assert [d["unit"] for d in described] == [1, 2, 3]
            devices = _devices(described[0]["serial_port"])
            stray = open_device("modbus_rtu", port=described[0]["serial_port"], unit=9,
                                map="sunspec_meter", name="lab.stray", timeout_s=0.2)
            try:
                readings = await asyncio.gather(*(d.open() for d in devices.values()),
                                                *(d.read() for d in devices.values()))
                assert readings[3:] and all(r.values for r in readings[3:])
                with pytest.raises(DeviceTimeout):
                    await stray.open()
            finally:
                await stray.close()
                await _close(devices)

    run(t())
    assert sorted(m.split(":")[0] for k, m in events if k == "emulator.unit") == [
        "lab/battery", "lab/inverter", "lab/meter"]
    assert all("request for unit 9" in m for _, m in events), events


@pytest.mark.parametrize(("meter", "says"), [
    ({"unit": 2}, "device lab.meter: unit 2 on /dev/ttyUSB0 is already lab.battery's"),
    ({"parity": "E"}, "device lab.meter: parity 'E' on /dev/ttyUSB0, where lab.inverter has "
                      "'N'"),
])
def test_the_emulator_host_refuses_a_line_its_devices_disagree_on(
        meter: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EmulatorHost({"lab": _plant()}, _host_specs(**meter))
    assert str(caught.value).startswith(says), caught.value
    assert "\n" not in str(caught.value)
