"""The serial MCU emulator, spoken to frame by frame over a real pty."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import serial

from firmware_bridge.emulators.serial_server import SerialEmulator
from firmware_bridge.errors import ConfigError, FrameError
from firmware_bridge.faults import FaultCard
from firmware_bridge.plant import Plant
from firmware_bridge.pty import TtyStream
from firmware_bridge.serialproto import frames, messages
from firmware_bridge.serialproto.frames import Frame, FrameParser
from firmware_bridge.serialproto.messages import Access, ErrorCode, MsgType

from .aio import run
from .plants import LagBattery


class RawLine:
    """A host that sends hand-made frames and collects what comes back."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, timeout=0)
        self.port.reset_input_buffer()
        self.parser = FrameParser()
        self.items: asyncio.Queue[Frame | FrameError] = asyncio.Queue()
        self.stream = TtyStream(self.port.fileno(), self._data, lambda exc: None)

    def _data(self, data: bytes) -> None:
        for item in self.parser.feed(data):
            self.items.put_nowait(item)

    async def next(self, *, telemetry: bool = False, timeout_s: float = 2.0) -> Frame:
        while True:
            item = await asyncio.wait_for(self.items.get(), timeout_s)
            assert isinstance(item, Frame), item
            if telemetry == (item.type == MsgType.TELEMETRY):
                return item

    async def ask(self, frame: Frame) -> Frame:
        self.stream.write(frames.encode(frame))
        return await self.next()

    async def error(self, frame: Frame) -> tuple[int, int]:
        reply = await self.ask(frame)
        assert reply.type == MsgType.ERROR and reply.seq == frame.seq, reply
        code, detail, text = messages.decode_error(reply.payload)
        assert text
        return code, detail

    def close(self) -> None:
        self.stream.close()
        self.port.close()


@asynccontextmanager
async def board(plant: Plant | None = None, **kw: object) -> AsyncIterator[
        tuple[SerialEmulator, RawLine, list[tuple[str, str]]]]:
    events: list[tuple[str, str]] = []
    emu = SerialEmulator(plant or LagBattery(), "battery", ("p_set_w", "connect"),
                         on_event=lambda k, m: events.append((k, m)), **kw)
    async with emu:
        line = RawLine(emu.path)
        try:
            yield emu, line, events
        finally:
            line.close()


def on_board(test: Callable[[SerialEmulator, RawLine, list], Awaitable[None]],
             **kw: object) -> None:
    async def main() -> None:
        async with board(**kw) as (emu, line, events):
            await test(emu, line, events)
    run(main())


def table(hello_frame: Frame) -> dict[str, int]:
    return {p.name: p.id for p in messages.decode_hello(hello_frame.payload).points}


def test_hello_announces_every_signal_and_setpoint() -> None:
    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        reply = await line.ask(Frame(MsgType.HELLO, 1))
        assert reply.type == MsgType.HELLO_REPLY and reply.seq == 1
        hello = messages.decode_hello(reply.payload)
        assert hello.device == "battery" and hello.boot_id == emu.boot_id
        assert hello.signals == tuple(LagBattery().read("battery"))
        assert hello.setpoints == ("p_set_w", "connect")
        assert all(p.access in (Access.READ, Access.WRITE) for p in hello.points)
        assert hello.telemetry_period_ms == 0
    on_board(t)


def test_read_all_and_read_some_in_the_order_asked() -> None:
    plant = LagBattery(soc=0.25)

    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        ids = table(await line.ask(Frame(MsgType.HELLO, 1)))
        reply = await line.ask(Frame(MsgType.READ, 2))
        values = messages.decode_values(reply.payload)
        assert list(values) == [ids[n] for n in plant.read("battery")]
        assert values[ids["soc"]] == 0.25 and values[ids["voltage_v"]] == 800.0
        some = messages.decode_values((await line.ask(Frame(
            MsgType.READ, 3, bytes((ids["soc"], ids["p_w"]))))).payload)
        assert list(some) == [ids["soc"], ids["p_w"]]
    on_board(t, plant=plant)


def test_write_is_acknowledged_and_applied() -> None:
    plant = LagBattery()

    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        ids = table(await line.ask(Frame(MsgType.HELLO, 1)))
        reply = await line.ask(Frame(MsgType.WRITE, 2, messages.encode_values(
            {ids["p_set_w"]: -1234.5, ids["connect"]: 0.0})))
        assert reply == Frame(MsgType.WRITE_ACK, 2)
        assert plant.state["p_set_w"] == -1234.5 and plant.state["connected"] == 0.0
    on_board(t, plant=plant)


def test_ping_echoes() -> None:
    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        payload = bytes(range(240))
        assert await line.ask(Frame(MsgType.PING, 200, payload)) == Frame(
            MsgType.PONG, 200, payload)
    on_board(t)


def test_malformed_requests_get_error_replies_naming_the_problem() -> None:
    plant = LagBattery()

    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        ids = table(await line.ask(Frame(MsgType.HELLO, 1)))
        w = messages.encode_values
        assert await line.error(Frame(MsgType.HELLO, 2, version=2)) == (
            ErrorCode.UNSUPPORTED_VERSION, 1)
        assert await line.error(Frame(0x42, 3)) == (ErrorCode.UNKNOWN_TYPE, 0x42)
        assert await line.error(Frame(MsgType.READ_REPLY, 4)) == (ErrorCode.UNKNOWN_TYPE, 0x82)
        assert await line.error(Frame(MsgType.READ, 5, b"\x63")) == (
            ErrorCode.UNKNOWN_POINT, 99)
        assert await line.error(Frame(MsgType.READ, 6, bytes((ids["p_set_w"],)))) == (
            ErrorCode.UNKNOWN_POINT, ids["p_set_w"])
        assert await line.error(Frame(MsgType.READ, 7, bytes(49))) == (ErrorCode.BAD_LENGTH, 49)
        assert await line.error(Frame(MsgType.WRITE, 8, w({ids["soc"]: 1.0}))) == (
            ErrorCode.NOT_WRITABLE, ids["soc"])
        assert await line.error(Frame(MsgType.WRITE, 9, w({ids["p_set_w"]: math.nan}))) == (
            ErrorCode.BAD_VALUE, ids["p_set_w"])
        assert await line.error(Frame(MsgType.WRITE, 10, w({77: 1.0}))) == (
            ErrorCode.UNKNOWN_POINT, 77)
        assert await line.error(Frame(MsgType.WRITE, 11, b"\x00\x01")) == (
            ErrorCode.BAD_LENGTH, 2)
        assert await line.error(Frame(MsgType.WRITE, 12)) == (ErrorCode.BAD_LENGTH, 0)
        # atomic: one bad pair and nothing is applied
        assert await line.error(Frame(MsgType.WRITE, 13, w({ids["p_set_w"]: 5.0,
                                                              ids["soc"]: 1.0}))) == (
            ErrorCode.NOT_WRITABLE, ids["soc"])
        assert plant.state["p_set_w"] == 0.0
    on_board(t, plant=plant)


def test_corrupt_requests_get_no_reply_and_the_board_resynchronises() -> None:
    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        good = frames.encode(Frame(MsgType.PING, 1, b"x"))
        bad_crc = bytearray(good)
        bad_crc[3] ^= 0x10
        line.stream.write(bytes(bad_crc) + b"\x13\x37" * 300 + b"\x00" + good[:4] + b"\x00")
        assert await line.ask(Frame(MsgType.PING, 2, b"y")) == Frame(MsgType.PONG, 2, b"y")
        assert emu.stats.bad_frames == 3 and emu.stats.requests == 1
    on_board(t)


def test_telemetry_counts_from_zero_and_carries_uptime() -> None:
    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        await emu.reboot(0.0, unplug=False)  # the line is open now: see a boot from the start
        boot = await line.next()
        assert boot.type == MsgType.HELLO_REPLY and boot.seq == messages.BOOT_SEQ
        hello = messages.decode_hello(boot.payload)
        assert hello.telemetry_period_ms == 10 and hello.boot_id == emu.boot_id
        seen = [await line.next(telemetry=True) for _ in range(5)]
        assert [f.seq for f in seen] == [0, 1, 2, 3, 4]
        uptimes = [messages.decode_telemetry(f.payload)[0] for f in seen]
        assert uptimes == sorted(uptimes) and uptimes[-1] >= 40
        values = messages.decode_telemetry(seen[-1].payload)[1]
        assert set(values) == {p.id for p in hello.points if p.access & Access.READ}
    on_board(t, telemetry_period_s=0.01)


def test_reboot_changes_boot_id_and_announces_itself() -> None:
    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        before = emu.boot_id
        await emu.reboot(0.05, unplug=False)
        boot = await line.next()
        assert (boot.type, boot.seq) == (MsgType.HELLO_REPLY, 0)
        assert messages.decode_hello(boot.payload).boot_id == emu.boot_id != before
        assert [k for k, _ in events] == ["emulator.reboot"] and emu.stats.reboots == 1
    on_board(t)


def test_fault_cards_fire_and_are_reported() -> None:
    plant = LagBattery()

    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        ids = table(await line.ask(Frame(MsgType.HELLO, 1)))
        emu.set_fault(FaultCard(drop_writes=True))
        ack = await line.ask(Frame(MsgType.WRITE, 2, messages.encode_values(
            {ids["p_set_w"]: 500.0})))
        assert ack.type == MsgType.WRITE_ACK and plant.state["p_set_w"] == 0.0
        emu.set_fault(FaultCard(timeout=True))
        line.stream.write(frames.encode(Frame(MsgType.PING, 3)))
        with pytest.raises(TimeoutError):
            await line.next(timeout_s=0.2)
        emu.set_fault(FaultCard(corrupt_crc=True))
        line.stream.write(frames.encode(Frame(MsgType.PING, 4)))
        item = await asyncio.wait_for(line.items.get(), 2)
        assert isinstance(item, FrameError) and "bad CRC" in str(item)
        emu.set_fault(FaultCard(delay_s=0.05))
        t0 = asyncio.get_running_loop().time()
        assert (await line.ask(Frame(MsgType.PING, 5))).type == MsgType.PONG
        assert asyncio.get_running_loop().time() - t0 >= 0.05
        kinds = [k for k, _ in events]
        assert kinds == ["fault.set", "fault.drop_writes", "fault.set", "fault.timeout",
                         "fault.set", "fault.corrupt_crc", "fault.set", "fault.delay"]
        assert events[0][1] == "battery: drop_writes=True" and "WRITE seq 2" in events[1][1]
        assert (emu.stats.dropped_writes, emu.stats.no_answers, emu.stats.corrupted) == (1, 1, 1)
    on_board(t, plant=plant)


def test_exception_card_answers_error_replies_and_applies_nothing() -> None:
    plant = LagBattery()

    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        ids = table(await line.ask(Frame(MsgType.HELLO, 1)))
        emu.set_fault(FaultCard(exception_code=ErrorCode.BUSY))
        assert await line.error(Frame(MsgType.READ, 2)) == (ErrorCode.BUSY, 0)
        assert await line.error(Frame(MsgType.WRITE, 3, messages.encode_values(
            {ids["p_set_w"]: 500.0}))) == (ErrorCode.BUSY, 0)
        assert plant.state["p_set_w"] == 0.0
        assert [k for k, _ in events] == ["fault.set", "fault.exception", "fault.exception"]
        assert "0x07 to READ seq 2" in events[1][1]
    on_board(t, plant=plant)


def test_frozen_card_repeats_the_values_last_sent_in_replies_and_telemetry() -> None:
    plant = LagBattery()

    async def t(emu: SerialEmulator, line: RawLine, events: list) -> None:
        ids = table(await line.ask(Frame(MsgType.HELLO, 1)))
        before = messages.decode_values((await line.ask(Frame(MsgType.READ, 2))).payload)
        emu.set_fault(FaultCard(frozen=True))
        plant.write("battery", {"p_set_w": 1000.0})
        plant.advance(5.0)  # the plant moves on...
        frozen = messages.decode_values((await line.ask(Frame(MsgType.READ, 3))).payload)
        await emu.send_telemetry()
        telemetry = messages.decode_telemetry((await line.next(telemetry=True)).payload)[1]
        assert frozen == telemetry == before  # ...the board does not
        emu.set_fault(None)
        fresh = messages.decode_values((await line.ask(Frame(MsgType.READ, 4))).payload)
        assert fresh[ids["p_w"]] == pytest.approx(plant.read("battery")["p_w"], rel=1e-6)
        assert fresh[ids["p_w"]] > 999.0
        assert [k for k, _ in events] == ["fault.set", "fault.frozen", "fault.frozen",
                                          "fault.set"]
    on_board(t, plant=plant)


def test_a_modbus_only_exception_code_is_refused_on_the_serial_line() -> None:
    card = FaultCard(exception_code=0x0B)  # gateway target failed to respond: Modbus only
    with pytest.raises(ConfigError, match="battery: exception_code 11 is not a serial "
                                          "ERROR code .*7 BUSY"):
        SerialEmulator(LagBattery(), "battery", fault=card)

    async def main() -> None:
        async with SerialEmulator(LagBattery(), "battery") as emu:
            with pytest.raises(ConfigError, match="exception_code 11"):
                emu.set_fault(card)
            assert emu.faults.card is None
    run(main())


def test_emulator_configuration_is_validated() -> None:
    with pytest.raises(ConfigError, match="no asset 'pv'"):
        SerialEmulator(LagBattery(), "pv")
    with pytest.raises(ConfigError, match="asset 'battery' has no signal q_var"):
        SerialEmulator(LagBattery(), "battery", signals=("p_w", "q_var"))
    with pytest.raises(ConfigError, match="telemetry_period_s"):
        SerialEmulator(LagBattery(), "battery", telemetry_period_s=100.0)

    class Wide(LagBattery):
        def read(self, asset: str) -> dict[str, float]:
            return {f"s{i}": 0.0 for i in range(60)}
    with pytest.raises(ConfigError, match="60 points; at most 48"):
        SerialEmulator(Wide(), "battery")
