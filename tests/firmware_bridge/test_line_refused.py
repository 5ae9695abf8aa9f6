"""A serial port that refuses the line settings a device is opened with (``termios.error``,
EINVAL, from ``tcsetattr``) is one line naming the device, the port and the settings, at the
first open and at every reconnect alike, never a traceback.

Linux refuses parity on a pseudo-terminal (which cannot carry it) whenever nothing else of
the request can be applied: so real ptys, here, refuse ``8E1`` as a USB adapter refuses a
setting its chip lacks.  Where a platform's ptys drop parity silently instead, there is no
refusal to test and the tests are skipped.
"""

from __future__ import annotations

import asyncio
import os
import termios
import tty

import pytest

from firmware_bridge.errors import DeviceDisconnected
from firmware_bridge.registry import open_device

from .aio import run
from .modbus_support import KINDS, SignalPlant, emulated
from .plants import LagBattery


def _pty_refuses_parity() -> bool:
    """Whether this platform's ptys refuse parity (rather than drop it silently)."""
    master, client = os.openpty()
    try:
        tty.setraw(client)
        attrs = termios.tcgetattr(client)
        attrs[2] |= termios.PARENB
        try:
            termios.tcsetattr(client, termios.TCSANOW, attrs)
        except termios.error:
            return True
        return False
    finally:
        os.close(master)
        os.close(client)


pytestmark = pytest.mark.skipif(not _pty_refuses_parity(),
                                reason="this platform's ptys drop parity silently")


def test_modbus_rtu_says_the_port_refuses_its_settings_at_open_and_every_reconnect() -> None:
    async def t() -> None:
        plant = SignalPlant({"inverter": KINDS["inverter"][1]})
        async with emulated(plant, "inverter", "sunspec_inverter", transport="rtu") as emu:
            port = emu.serial_port
            dev = open_device("modbus_rtu", port=port, parity="E", map="sunspec_inverter",
                              name="lab.inverter", backoff_s=0.01, backoff_max_s=0.01)
            said = (f"lab.inverter: cannot open {port} with line settings 19200 8E1: the "
                    "port refuses them ([Errno 22] Invalid argument)")
            with pytest.raises(DeviceDisconnected) as opening:
                await dev.open()
            assert str(opening.value) == said
            for _ in range(3):  # each reconnect once the back-off allows it
                await asyncio.sleep(0.02)
                with pytest.raises(DeviceDisconnected) as again:
                    await dev.read()
                assert str(again.value) == said
            await dev.close()
            # the same port with settings it takes: the device answers
            good = open_device("modbus_rtu", port=port, map="sunspec_inverter")
            await good.open()
            assert (await good.read()).values
            await good.close()

    run(t())


def test_serial_says_the_port_refuses_its_settings_at_every_reconnect() -> None:
    from firmware_bridge.emulators.serial_server import SerialEmulator

    async def t() -> None:
        async with SerialEmulator(LagBattery(), "battery", ("p_set_w",)) as emu:
            # a first device leaves the line at 115200 8N1, as a board's last session does
            async with open_device("serial", port=emu.path) as first:
                assert (await first.read()).values
            dev = open_device("serial", port=emu.path, parity="E", name="lab.meter",
                              backoff_s=0.01, backoff_max_s=0.01)
            said = (f"lab.meter: cannot open {emu.path} with line settings 115200 8E1: the "
                    "port refuses them ([Errno 22] Invalid argument)")
            with pytest.raises(DeviceDisconnected) as opening:
                await dev.open()
            assert str(opening.value) == said
            for _ in range(3):
                await asyncio.sleep(0.02)
                with pytest.raises(DeviceDisconnected) as again:
                    await dev.read()
                assert str(again.value) == said
            await dev.close()

    run(t())
