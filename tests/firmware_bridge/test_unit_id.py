"""A client asking for a unit id the device is not: the emulators answer as real devices do
(an RS-485 slave stays silent; a TCP gateway answers exception 0x0B), never with exception
0x04 (a device failure), and the client's one line says to check the unit id.

Real pymodbus servers on loopback TCP and on a pty pair; real clients (our back-ends and
pymodbus's own)."""

from __future__ import annotations

import logging

import pytest
from pymodbus.client import AsyncModbusTcpClient

from firmware_bridge.errors import DeviceTimeout, ExceptionResponse
from firmware_bridge.registry import open_device

from .aio import run
from .modbus_support import KINDS, SignalPlant, client, emulated


def _server_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What pymodbus's server logs when it fails a request (with a traceback)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
            and ("device id" in r.getMessage() or "Datastore" in r.getMessage())]


def _plant() -> SignalPlant:
    return SignalPlant({"inverter": KINDS["inverter"][1]})


def test_tcp_answers_another_unit_with_exception_0x0b_and_serves_its_own(
        caplog: pytest.LogCaptureFixture) -> None:
    events: list[tuple[str, str]] = []

    async def t() -> None:
        async with emulated(_plant(), "inverter", "sunspec_inverter", unit=1,
                            on_event=lambda k, m: events.append((k, m))) as emu:
            c = AsyncModbusTcpClient("127.0.0.1", port=emu.port, timeout=1, retries=0)
            await c.connect()
            try:
                for _ in range(2):
                    other = await c.read_holding_registers(40000, count=2, device_id=7)
                    assert other.isError() and other.exception_code == 0x0B
                    assert other.dev_id == 7
                write = await c.write_register(40000, 1, device_id=7)
                assert write.isError() and write.exception_code == 0x0B
                ours = await c.read_holding_registers(40000, count=2, device_id=1)
                assert not ours.isError() and ours.registers == [0x5375, 0x6E53]
            finally:
                c.close()
            assert emu.transactions == 1  # only the request for unit 1 reached the device

    with caplog.at_level(logging.DEBUG, logger="pymodbus"):
        run(t())
    assert not _server_errors(caplog), caplog.text
    assert events == [("emulator.unit", "test/inverter: request for unit 7, which this "
                       "device is not (it is unit 1): exception 0x0B (gateway target device "
                       "failed to respond)")]


def test_the_tcp_client_says_to_check_the_unit_id() -> None:
    async def t() -> None:
        async with emulated(_plant(), "inverter", "sunspec_inverter", unit=1) as emu:
            dev = open_device("modbus_tcp", host=emu.host, port=emu.port, unit=2,
                              map="sunspec_inverter", name="lab.inverter", timeout_s=0.5)
            with pytest.raises(ExceptionResponse) as caught:
                await dev.open()
            await dev.close()
        assert caught.value.code == 0x0B
        message = str(caught.value)
        assert message.startswith("lab.inverter: exception 0x0b (GATEWAY_NO_RESPONSE)")
        assert message.endswith(f"no device answers unit 2 behind 127.0.0.1:{emu.port}: "
                                "check the unit id")
        assert "\n" not in message

    run(t())


def test_rtu_stays_silent_for_another_unit_and_the_client_says_to_check_it(
        caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    ports: list[str] = []

    async def t() -> None:
        async with emulated(_plant(), "inverter", "sunspec_inverter", transport="rtu",
                            unit=1, on_event=lambda k, m: events.append(k)) as emu:
            ports.append(emu.serial_port)
            wrong = open_device("modbus_rtu", port=emu.serial_port, unit=2, timeout_s=0.2,
                                map="sunspec_inverter", name="lab.inverter")
            with pytest.raises(DeviceTimeout) as caught:
                await wrong.open()
            await wrong.close()
            assert emu.transactions == 0
            # the line is still good for the unit it serves
            right = client(emu, "sunspec_inverter")
            await right.open()
            assert (await right.read()).values
            await right.close()
        message = str(caught.value)
        assert message.startswith(f"lab.inverter: no answer from {ports[0]} "
                                  "(19200 8N1)"), message
        assert message.endswith("nothing answers unit 2 there: check the unit id and the "
                                "line settings")

    with caplog.at_level(logging.DEBUG, logger="pymodbus"):
        run(t())
    assert not _server_errors(caplog), caplog.text
    assert events == ["emulator.unit"]


def test_a_device_that_answered_once_gets_no_unit_hint_later() -> None:
    """Silence after the unit id proved right (a device gone quiet, its rescan after a
    reconnect included) says nothing of the unit id."""
    from firmware_bridge.faults import FaultCard

    async def t() -> None:
        async with emulated(_plant(), "inverter", "sunspec_inverter", transport="rtu") as emu:
            dev = client(emu, "sunspec_inverter", timeout_s=0.2)
            await dev.open()
            emu.set_fault(FaultCard(timeout=True))
            with pytest.raises(DeviceTimeout) as read:
                await dev.read()
            await dev.close()
            with pytest.raises(DeviceTimeout) as rescan:
                await dev.open()
            await dev.close()
        assert "unit id" not in str(read.value) and "unit id" not in str(rescan.value)

    run(t())


def test_a_wrong_base_address_is_said_to_need_checking() -> None:
    """A device whose SunSpec map is not at the base address answers the scan's first read
    with exception 0x02: the line says to check base_address, not only the exception."""
    async def t() -> None:
        async with emulated(_plant(), "inverter", "sunspec_inverter", unit=1) as emu:
            dev = open_device("modbus_tcp", host=emu.host, port=emu.port, unit=1,
                              map="sunspec_inverter", name="lab.inverter", timeout_s=0.5,
                              base_address=0)
            with pytest.raises(ExceptionResponse) as caught:
                await dev.open()
            await dev.close()
        assert caught.value.code == 0x02
        message = str(caught.value)
        assert message.startswith("lab.inverter: exception 0x02"), message
        assert message.endswith("; the device has no register at 0: check its base_address "
                                "(SunSpec devices start at 40000, 50000 or 0)"), message
        assert "\n" not in message

    run(t())


def test_an_rtu_port_that_is_not_there_is_said_so(tmp_path) -> None:
    """The client only says it did not connect: the line tells a missing port (an adapter
    unplugged, a misspelt path) from one that is there but would not open."""
    from firmware_bridge.errors import DeviceDisconnected

    missing = tmp_path / "ttyUSB9"

    async def t() -> None:
        dev = open_device("modbus_rtu", port=str(missing), baudrate=19200, unit=1,
                          map="sunspec_battery", name="lab.battery", timeout_s=0.2)
        with pytest.raises(DeviceDisconnected) as caught:
            await dev.open()
        await dev.close()
        assert str(caught.value) == (f"lab.battery: cannot connect to {missing} (19200 8N1): "
                                     "no such port")

    run(t())
