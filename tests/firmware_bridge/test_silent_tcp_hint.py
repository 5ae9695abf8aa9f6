"""A Modbus TCP device that never answers is not said to have a wrong unit id: on TCP a
wrong unit id gets exception 0x0B (README, "Emulators on their own"), so silence says
nothing of it.  On RTU a wrong unit id is silence, and there the hint stays.

Real pymodbus emulators on loopback TCP and on a pty pair, a plain TCP server that accepts
connections and reads requests but never answers, and our client back-ends."""

from __future__ import annotations

import asyncio

import pytest

from firmware_bridge.errors import DeviceTimeout
from firmware_bridge.faults import FaultCard
from firmware_bridge.registry import open_device

from .aio import run
from .modbus_support import KINDS, SignalPlant, client, emulated


def _plant() -> SignalPlant:
    return SignalPlant({"meter": KINDS["meter"][1]})


async def _first_open(dev) -> str:
    """The line of the timeout the first open of ``dev`` fails with."""
    with pytest.raises(DeviceTimeout) as caught:
        await dev.open()
    await dev.close()
    return str(caught.value)


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_a_device_kept_silent_by_a_timeout_card_is_hinted_on_rtu_only(transport: str) -> None:
    """The same fault card: on TCP the line says only that nothing answered; on RTU, where
    a wrong unit id looks the same, it says to check the unit id (and the line)."""
    async def t() -> str:
        async with emulated(_plant(), "meter", "sunspec_meter", transport=transport,
                            fault=FaultCard(timeout=True)) as emu:
            return await _first_open(client(emu, "sunspec_meter", name="south.meter",
                                            timeout_s=0.2))

    message = run(t())
    assert message.startswith("south.meter: no answer from "), message
    if transport == "tcp":
        assert "unit id" not in message and "nothing answers" not in message, message
    else:
        assert message.endswith("nothing answers unit 1 there: check the unit id and the "
                                "line settings"), message


def test_a_tcp_server_that_never_answers_is_not_said_to_have_a_wrong_unit() -> None:
    """A server that accepts the connection and takes the request but sends nothing back
    (a hung device, not a Modbus emulator at all): the line names the address and the
    silence, and no unit id."""
    heard: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(256):
                heard.append(data)
        finally:
            writer.close()

    async def t() -> str:
        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            dev = open_device("modbus_tcp", host="127.0.0.1", port=port, unit=1,
                              map="sunspec_meter", name="lab.meter", timeout_s=0.2)
            message = await _first_open(dev)
        finally:
            server.close()
            await server.wait_closed()
        assert message.startswith(f"lab.meter: no answer from 127.0.0.1:{port}"), message
        return message

    message = run(t())
    assert heard, "the request never reached the server"
    assert "unit id" not in message and "unit 1" not in message, message
