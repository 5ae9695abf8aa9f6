"""Pseudo-terminals and the relay: real ptys, real pyserial ports, bytes both ways."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest
import serial

from firmware_bridge.pty import Pty, PtyPair, TtyStream

from .aio import run


async def read_exactly(port: serial.Serial, n: int, timeout_s: float = 5.0) -> bytes:
    got = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(got) < n:
        assert loop.time() < deadline, f"got {len(got)} of {n} bytes"
        got += port.read(n - len(got))
        await asyncio.sleep(0.001)
    return bytes(got)


def test_pty_carries_bytes_both_ways_and_survives_client_reopen() -> None:
    with Pty() as pty:
        assert os.path.islink(pty.path) and pty.tty_name.startswith("/dev/pts/")
        for _ in range(2):  # the server side stays usable when a client closes and reopens
            with serial.Serial(pty.path, timeout=1) as port:
                port.write(b"\x00\x01\x02ping")
                assert os.read(pty.fd, 100) == b"\x00\x01\x02ping"  # raw: no echo, no mangling
                os.write(pty.fd, b"pong\r\n\x00")
                assert port.read(7) == b"pong\r\n\x00"


def test_replug_keeps_the_path_and_the_old_client_sees_a_hang_up() -> None:
    with Pty() as pty:
        path = pty.path
        port = serial.Serial(pty.path, timeout=0.5)
        try:
            pty.unplug()
            assert not pty.plugged and not os.path.lexists(pty.path)
            with pytest.raises(serial.SerialException):
                port.read(1)  # end of file on a hung-up terminal
            with pytest.raises(serial.SerialException):
                serial.Serial(pty.path)
        finally:
            port.close()
        pty.plug()  # the kernel may hand out the same /dev/pts number again
        assert pty.plugged and pty.path == path and os.path.islink(path)
        with serial.Serial(pty.path, timeout=1) as again:
            os.write(pty.fd, b"back")
            assert again.read(4) == b"back"
    assert not os.path.lexists(pty.path)


def test_pty_pair_relays_both_ways_intact() -> None:
    async def main() -> None:
        pair = PtyPair()
        async with pair as (path_a, path_b):
            assert pair.paths == (path_a, path_b)
            with serial.Serial(path_a, timeout=0) as a, serial.Serial(path_b, timeout=0) as b:
                a.write(b"\x00request\xff")
                assert await read_exactly(b, 9) == b"\x00request\xff"
                data = os.urandom(300_000)
                writer = asyncio.create_task(asyncio.to_thread(b.write, data))
                assert await read_exactly(a, len(data)) == data
                await writer
        assert pair.dropped == 0
    run(main())


def test_pty_pair_drops_what_nobody_reads_and_stays_bounded() -> None:
    async def main() -> None:
        pair = PtyPair(max_pending=4096)
        async with pair as (path_a, _):
            with serial.Serial(path_a, timeout=0) as a:
                os.set_blocking(a.fileno(), False)
                for _ in range(2000):  # never block the loop the relay runs on
                    with contextlib.suppress(BlockingIOError):
                        os.write(a.fileno(), bytes(4096))
                    await asyncio.sleep(0)
                    if pair.dropped:
                        break
                assert pair.dropped > 0  # side b holds at most its kernel buffer + 4096 bytes
        with pytest.raises(RuntimeError, match="not open"):
            _ = pair.paths
    run(main())


def test_tty_stream_reports_a_hang_up_once_and_refuses_writes_after() -> None:
    async def main() -> None:
        pty = Pty()
        port = serial.Serial(pty.path, timeout=0)
        received: list[bytes] = []
        lost: list[object] = []
        done = asyncio.Event()

        def on_lost(exc: object) -> None:
            lost.append(exc)
            done.set()
        stream = TtyStream(port.fileno(), received.append, on_lost)
        try:
            os.write(pty.fd, b"hello")
            stream.write(b"world")
            await asyncio.sleep(0.05)
            assert b"".join(received) == b"hello" and os.read(pty.fd, 10) == b"world"
            pty.unplug()
            await asyncio.wait_for(done.wait(), 5)
            assert len(lost) == 1 and stream.closed
            with pytest.raises(ConnectionError):
                stream.write(b"x")
            stream.close()
        finally:
            stream.close()
            port.close()
            pty.close()
    run(main())


def test_tty_stream_holds_what_the_line_cannot_take_and_drains() -> None:
    async def main() -> None:
        with Pty() as pty, serial.Serial(pty.path, timeout=0) as port:
            stream = TtyStream(pty.fd, lambda d: None, lambda e: None, max_pending=1 << 22)
            data = os.urandom(1 << 20)  # far more than a pty buffers
            stream.write(data)
            reader = asyncio.create_task(read_exactly(port, len(data)))
            await stream.drain()
            assert await reader == data and stream.dropped == 0
            stream.close()
    run(main())


def test_pty_pair_carries_modbus_rtu_between_pymodbus_server_and_client() -> None:
    from pymodbus.client import AsyncModbusSerialClient
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def main() -> None:
        async with PtyPair() as (path_a, path_b):
            device = SimDevice(1, simdata=[SimData(0, values=[11, 22, 33],
                                                   datatype=DataType.REGISTERS)])
            server = ModbusSerialServer(device, port=path_b, baudrate=19200, parity="N")
            await server.serve_forever(background=True)
            client = AsyncModbusSerialClient(path_a, baudrate=19200, timeout=2)
            try:
                assert await client.connect()
                reply = await client.read_holding_registers(0, count=3, device_id=1)
                assert reply.registers == [11, 22, 33]
            finally:
                client.close()
                await server.shutdown()
    run(main())
