"""The ``serial`` back-end over a real pty against the MCU emulator: the device contract,
every fault card as the client sees it, telemetry, sequence numbers, reconnects."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from firmware_bridge.backends.serial import SerialDevice, validate_line
from firmware_bridge.device import Quality, poll
from firmware_bridge.emulators.serial_server import SerialEmulator
from firmware_bridge.errors import (
    BridgeError,
    ConfigError,
    DeviceDisconnected,
    DeviceTimeout,
    ExceptionResponse,
    FrameError,
)
from firmware_bridge.faults import FaultCard
from firmware_bridge.pty import Pty, TtyStream
from firmware_bridge.registry import open_device
from firmware_bridge.serialproto import frames, messages
from firmware_bridge.serialproto.frames import Frame, FrameParser
from firmware_bridge.serialproto.messages import Access, ErrorCode, Hello, MsgType, Point

from .aio import run
from .plants import LagBattery


@dataclass
class Bench:
    emu: SerialEmulator
    dev: SerialDevice
    plant: LagBattery
    events: list[tuple[str, str]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


def on_bench(test: Callable[[Bench], Awaitable[None]], *, telemetry_period_s: float = 0.0,
             **device: object) -> None:
    """Run ``test`` with an emulated battery board and a SerialDevice opened on its pty."""
    async def main() -> None:
        plant = LagBattery()
        events: list[tuple[str, str]] = []
        async with SerialEmulator(plant, "battery", ("p_set_w", "connect"),
                                  telemetry_period_s=telemetry_period_s, seed=7,
                                  on_event=lambda k, m: events.append((k, m))) as emu:
            dev = SerialDevice(emu.path, on_event=lambda k, m: events.append((k, m)),
                               **device)
            async with dev:
                await test(Bench(emu, dev, plant, events))
    run(main())


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


# -- what the device learns and does --------------------------------------------------------

def test_open_learns_the_point_table_from_hello() -> None:
    async def t(b: Bench) -> None:
        assert b.dev.signals == tuple(b.plant.read("battery"))
        assert b.dev.setpoints == ("p_set_w", "connect")
        assert b.dev.hello is not None and b.dev.hello.boot_id == b.emu.boot_id
        assert await b.dev.ping(b"\x00abc") > 0
    on_bench(t)


def test_writes_are_validated_by_name_before_sending() -> None:
    async def t(b: Bench) -> None:
        requests = b.emu.stats.requests
        with pytest.raises(ConfigError, match="cannot write soc; writable: p_set_w, connect"):
            await b.dev.write({"soc": 0.9})
        with pytest.raises(ConfigError, match="p_set_w = nan is not a finite float32"):
            await b.dev.write({"p_set_w": math.nan})
        with pytest.raises(ConfigError, match="1e\\+39"):
            await b.dev.write({"p_set_w": 1e39})
        await b.dev.write({})
        assert b.emu.stats.requests == requests
    on_bench(t)


def test_concurrent_requests_never_take_each_others_replies() -> None:
    async def t(b: Bench) -> None:
        await asyncio.gather(*(b.dev.read() for _ in range(10)),
                             b.dev.write({"p_set_w": 10.0}))
        assert b.dev.stats.requests == b.emu.stats.replies == 12  # with the HELLO of open
        assert b.dev.stats.stale_replies == 0 and b.dev.stats.timeouts == 0
    on_bench(t)


def test_sequence_numbers_wrap_and_skip_zero() -> None:
    async def t(b: Bench) -> None:
        for i in range(300):
            await b.dev.ping(i.to_bytes(2, "little"))
        assert b.dev.stats.requests == 301 and b.dev.stats.stale_replies == 0
    on_bench(t)


# -- fault cards, as the client sees them ---------------------------------------------------

def test_extra_delay_is_seen_in_the_round_trip_time() -> None:
    async def t(b: Bench) -> None:
        b.emu.set_fault(FaultCard(delay_s=0.05))
        r = await b.dev.read()
        assert r.quality == Quality.OK and r.rtt_s >= 0.05
        assert b.kinds() == ["fault.set", "fault.delay"]
    on_bench(t, timeout_s=0.5)


def test_a_late_reply_times_out_and_is_then_dropped_as_stale() -> None:
    async def t(b: Bench) -> None:
        b.emu.set_fault(FaultCard(delay_s=0.15))
        with pytest.raises(DeviceTimeout, match="no reply to READ within 0.05 s"):
            await b.dev.read()
        b.emu.set_fault(None)
        await until(lambda: b.dev.stats.stale_replies == 1)  # the late READ_REPLY
        b.plant.write("battery", {"p_set_w": 100.0})
        b.plant.advance(10.0)
        r = await b.dev.read()
        assert r.values["p_w"] == pytest.approx(100.0, abs=0.01)
        assert b.dev.stats.timeouts == 1
    on_bench(t, timeout_s=0.05, retries=0)


def test_no_answer_gives_a_timeout_after_every_retry() -> None:
    async def t(b: Bench) -> None:
        b.emu.set_fault(FaultCard(timeout=True))
        with pytest.raises(DeviceTimeout, match=r"within 0.03 s \(3 attempts\)"):
            await b.dev.read()
        assert b.emu.stats.no_answers == 3 and b.dev.stats.timeouts == 3
        r = await poll(b.dev)
        assert r.quality == Quality.TIMEOUT and r.values == {} and "no reply" in r.error
        assert b.kinds().count("fault.timeout") == 6
        b.emu.set_fault(None)
        assert (await b.dev.read()).quality == Quality.OK
    on_bench(t, timeout_s=0.03, retries=2)


def test_a_dropped_write_is_acknowledged_but_the_plant_does_not_follow() -> None:
    async def t(b: Bench) -> None:
        b.emu.set_fault(FaultCard(drop_writes=True))
        await b.dev.write({"p_set_w": 5000.0})
        b.plant.advance(10.0)
        assert (await b.dev.read()).values["p_w"] == 0.0
        assert b.kinds() == ["fault.set", "fault.drop_writes"]
        b.emu.set_fault(None)
        await b.dev.write({"p_set_w": 5000.0})
        b.plant.advance(10.0)
        assert (await b.dev.read()).values["p_w"] == pytest.approx(5000.0, abs=0.01)
    on_bench(t)


def test_corrupted_replies_give_a_frame_error() -> None:
    async def t(b: Bench) -> None:
        b.emu.set_fault(FaultCard(corrupt_crc=True))
        with pytest.raises(FrameError, match="bad CRC"):
            await b.dev.read()
        assert b.dev.stats.frame_errors == b.emu.stats.corrupted == 2  # the request and its retry
        r = await poll(b.dev)
        assert r.quality == Quality.ERROR and "bad CRC" in r.error
    on_bench(t, retries=1)


def test_occasional_corruption_is_retried_and_counted_exactly() -> None:
    async def t(b: Bench) -> None:
        b.emu.set_fault(FaultCard(corrupt_crc=True, probability=0.3, seed=7))
        outcomes = []
        for _ in range(60):
            try:
                await b.dev.read()
                outcomes.append("ok")
            except FrameError:
                outcomes.append("error")
        assert outcomes.count("ok") >= 55
        assert b.dev.stats.frame_errors == b.emu.stats.corrupted > 0
        assert b.kinds().count("fault.corrupt_crc") == b.emu.stats.corrupted
    on_bench(t, retries=3)


def test_exception_card_is_an_exception_response_with_its_code() -> None:
    async def t(b: Bench) -> None:
        b.emu.set_fault(FaultCard(exception_code=ErrorCode.BUSY))
        with pytest.raises(ExceptionResponse, match="READ refused: BUSY") as info:
            await b.dev.read()
        assert info.value.code == ErrorCode.BUSY
        assert (await poll(b.dev)).quality == Quality.ERROR
    on_bench(t)


def test_frozen_card_serves_the_values_of_when_it_struck() -> None:
    async def t(b: Bench) -> None:
        first = await b.dev.read()
        b.emu.set_fault(FaultCard(frozen=True))
        await b.dev.write({"p_set_w": 2000.0})
        b.plant.advance(10.0)
        assert (await b.dev.read()).values == first.values
        b.emu.set_fault(None)
        assert (await b.dev.read()).values["p_w"] == pytest.approx(2000.0, abs=0.01)
    on_bench(t)


def test_schedule_strikes_only_inside_its_window_of_plant_time() -> None:
    async def t(b: Bench) -> None:
        b.emu.set_fault(FaultCard(timeout=True, start_s=10.0, stop_s=20.0))
        assert (await b.dev.read()).quality == Quality.OK
        b.plant.advance(12.0)
        with pytest.raises(DeviceTimeout):
            await b.dev.read()
        b.plant.advance(10.0)
        assert (await b.dev.read()).quality == Quality.OK
    on_bench(t, timeout_s=0.05, retries=0)


def test_disconnect_card_unplugs_the_board_then_the_device_reconnects() -> None:
    async def t(b: Bench) -> None:
        old_boot = b.emu.boot_id
        b.emu.set_fault(FaultCard(disconnect_s=0.2))
        with pytest.raises(DeviceDisconnected, match="lost"):
            await b.dev.read()  # the request that struck is never answered: the port goes
        b.plant.advance(0.2)  # the downtime is on the device clock
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while (r := await poll(b.dev)).quality != Quality.OK:
            assert r.quality == Quality.ERROR and loop.time() < deadline, r
            await asyncio.sleep(0.01)
        assert b.dev.hello is not None and b.dev.hello.boot_id == b.emu.boot_id != old_boot
        s = b.dev.stats
        assert (s.disconnects, s.reconnects, s.reboots, b.emu.stats.reboots) == (1, 1, 1, 1)
        kinds = b.kinds()
        assert kinds[:3] == ["fault.set", "fault.disconnect", "device.disconnect"]
        assert sorted(kinds[3:]) == ["device.reboot", "device.reconnect", "fault.reconnect"]
        assert (await b.dev.read()).quality == Quality.OK  # once: the card does not strike again
    on_bench(t)


def test_reboot_with_unplug_disconnects_then_reconnects_with_backoff() -> None:
    async def t(b: Bench) -> None:
        old_boot = b.emu.boot_id
        reboot = asyncio.create_task(b.emu.reboot(downtime_s=0.4, unplug=True))
        failures: list[BaseException] = []
        while True:
            try:
                r = await b.dev.read()
            except DeviceDisconnected as exc:
                failures.append(exc)
                await asyncio.sleep(0.005)
                continue
            if reboot.done():
                break
            await asyncio.sleep(0.005)
        await reboot
        assert r.quality == Quality.OK and failures
        assert any("next attempt in" in str(e) for e in failures)
        s = b.dev.stats
        assert (s.disconnects, s.reconnects, s.reboots) == (1, 1, 1)
        # back-off from 0.05 s doubling: about 4 attempts in 0.4 s, not one per read
        assert 2 <= s.reconnect_attempts <= 6 < len(failures)
        assert b.dev.hello is not None and b.dev.hello.boot_id == b.emu.boot_id != old_boot
        assert b.kinds() == ["emulator.reboot", "device.disconnect", "device.reconnect",
                           "device.reboot"]
    on_bench(t)


def test_silent_reboot_times_out_then_the_boot_hello_is_noticed() -> None:
    async def t(b: Bench) -> None:
        reboot = asyncio.create_task(b.emu.reboot(downtime_s=0.2, unplug=False))
        with pytest.raises(DeviceTimeout):
            await b.dev.read()
        await reboot
        await until(lambda: b.dev.stats.reboots == 1)
        assert b.dev.hello is not None and b.dev.hello.boot_id == b.emu.boot_id
        assert (await b.dev.read()).quality == Quality.OK
        assert b.dev.stats.disconnects == 0 and b.dev.stats.reconnects == 0
    on_bench(t, timeout_s=0.05, retries=0)


def test_one_dead_board_does_not_hold_up_another() -> None:
    async def main() -> None:
        async with SerialEmulator(LagBattery(), "battery") as good_board, \
                SerialEmulator(LagBattery(), "battery") as dead_board:
            good = SerialDevice(good_board.path, timeout_s=0.3)
            dead = SerialDevice(dead_board.path, timeout_s=0.3, retries=0)
            async with good, dead:
                dead_board.set_fault(FaultCard(timeout=True))
                done: list[str] = []

                async def read(dev: SerialDevice, label: str) -> Quality:
                    r = await poll(dev)
                    done.append(label)
                    return r.quality
                qualities = await asyncio.gather(read(dead, "dead"), read(good, "good"))
                assert qualities == [Quality.TIMEOUT, Quality.OK] and done == ["good", "dead"]
    run(main())


# -- telemetry ------------------------------------------------------------------------------

def test_fresh_telemetry_answers_reads_without_a_request() -> None:
    async def t(b: Bench) -> None:
        await until(lambda: b.dev.stats.telemetry >= 3)
        b.plant.write("battery", {"p_set_w": 700.0})
        b.plant.advance(10.0)
        await until(lambda: (t := b.dev.telemetry()) is not None and t.values["p_w"] > 699.0)
        requests = b.emu.stats.requests
        r = await b.dev.read()
        assert r.extra["source"] == "telemetry" and r.extra["age_s"] <= 0.5
        assert r.values["p_w"] == pytest.approx(700.0, abs=0.01)
        assert set(r.values) == set(b.dev.signals)
        assert b.emu.stats.requests == requests
        assert b.dev.stats.telemetry_lost == 0
    on_bench(t, telemetry_period_s=0.01, telemetry_max_age_s=0.5)


def test_stale_telemetry_falls_back_to_polling() -> None:
    async def t(b: Bench) -> None:
        assert b.dev.telemetry() is None
        r = await b.dev.read()
        assert r.extra["source"] == "poll"
    on_bench(t, telemetry_max_age_s=0.5)  # the board sends no telemetry


def test_lost_telemetry_frames_are_counted_from_the_sequence_gaps() -> None:
    async def t(b: Bench) -> None:
        await until(lambda: b.dev.stats.telemetry >= 2)
        b.emu.set_fault(FaultCard(corrupt_crc=True, probability=0.5))
        await until(lambda: b.emu.stats.corrupted >= 10)
        b.emu.set_fault(None)
        corrupted = b.emu.stats.corrupted
        seen = b.dev.stats.telemetry
        await until(lambda: b.dev.stats.telemetry >= seen + 2)
        assert b.dev.stats.telemetry_lost == corrupted == b.dev.stats.frame_errors
    on_bench(t, telemetry_period_s=0.003)


# -- a board that answers garbage, on a real pty --------------------------------------------

HELLO = Hello(1, 0, "battery", (Point(0, "p_w", Access.READ), Point(1, "p_set_w",
                                                                     Access.WRITE)))


@asynccontextmanager
async def scripted_board(answer: Callable[[Frame], bytes]) -> AsyncIterator[str]:
    """A board that answers HELLO properly and every other request with ``answer(request)``."""
    parser = FrameParser()
    with Pty() as pty:
        def on_data(data: bytes) -> None:
            for item in parser.feed(data):
                assert isinstance(item, Frame)
                if item.type == MsgType.HELLO:
                    stream.write(frames.encode(Frame(MsgType.HELLO_REPLY, item.seq,
                                                     messages.encode_hello(HELLO))))
                else:
                    stream.write(answer(item))
        stream = TtyStream(pty.fd, on_data, lambda exc: None)
        try:
            yield pty.path
        finally:
            stream.close()


@pytest.mark.parametrize(("answer", "error", "message"), [
    (lambda f: frames.encode(Frame(MsgType.ERROR, f.seq, messages.encode_error(
        ErrorCode.BUSY, 0, "flash write in progress"))),
     ExceptionResponse, "READ refused: BUSY \\(detail 0\\): flash write in progress"),
    (lambda f: frames.encode(Frame(MsgType.READ_REPLY, f.seq, messages.encode_values(
        {0: 1.0, 5: 2.0}))), FrameError, "READ reply has points \\[0, 5\\], expected \\[0\\]"),
    (lambda f: frames.encode(Frame(MsgType.READ_REPLY, f.seq, b"\x00\x01\x02")),
     FrameError, "READ reply: values payload of 3 bytes is not a multiple of 5"),
    (lambda f: b"\x07garbage\x00", FrameError, "COBS"),
    (lambda f: frames.encode(Frame(MsgType.READ_REPLY, f.seq, version=2)),
     FrameError, "protocol version 2"),
    (lambda f: frames.encode(Frame(MsgType.WRITE_ACK, f.seq)), DeviceTimeout, "no reply"),
])
def test_a_board_answering_garbage_gets_a_clear_error(answer: Callable[[Frame], bytes],
                                                     error: type, message: str) -> None:
    async def main() -> None:
        async with scripted_board(answer) as path, \
                SerialDevice(path, timeout_s=0.05, retries=1) as dev:
            with pytest.raises(error, match=message):
                await dev.read()
    run(main())


def test_exception_response_carries_the_code() -> None:
    async def main() -> None:
        reply = messages.encode_error(ErrorCode.NOT_WRITABLE, 1, "locked")
        board = scripted_board(lambda f: frames.encode(Frame(MsgType.ERROR, f.seq, reply)))
        async with board as path, SerialDevice(path) as dev:
            with pytest.raises(ExceptionResponse) as info:
                await dev.write({"p_set_w": 1.0})
            assert info.value.code == ErrorCode.NOT_WRITABLE
    run(main())


# -- opening, closing, line settings --------------------------------------------------------

def test_open_of_a_missing_port_names_it_and_leaves_nothing_open(tmp_path) -> None:
    async def main() -> None:
        dev = SerialDevice(str(tmp_path / "ttyACM9"))
        with pytest.raises(DeviceDisconnected, match="cannot open .*ttyACM9") as caught:
            await dev.open()
        # the cause alone (pyserial's text named the path twice more)
        assert str(caught.value).endswith("ttyACM9: no such port"), caught.value
        # reads retry it, within the back-off
        with pytest.raises(DeviceDisconnected, match="ttyACM9 not ready; next attempt in"):
            await dev.read()
        await dev.close()
        with pytest.raises(DeviceDisconnected, match="not open"):
            await dev.read()
    run(main())


async def _poll_until_ok(dev: SerialDevice, timeout_s: float = 8.0) -> list[Quality]:
    """Poll as the bench does (an 80 ms deadline every 100 ms) until a reading is OK."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    seen: list[Quality] = []
    while loop.time() < deadline:
        try:
            r = await asyncio.wait_for(poll(dev), 0.08)
        except TimeoutError:
            seen.append(Quality.TIMEOUT)
        else:
            seen.append(r.quality)
            if r.quality == Quality.OK:
                assert set(r.values) == set(dev.signals) and "soc" in r.values
                return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"no OK reading in {timeout_s} s: {seen}")


def test_a_port_that_appears_after_open_is_reached_by_reads(tmp_path) -> None:
    async def main() -> None:
        link = tmp_path / "ttyACM0"
        events: list[tuple[str, str]] = []
        async with SerialEmulator(LagBattery(), "battery", ("p_set_w",)) as emu:
            dev = SerialDevice(str(link), on_event=lambda k, m: events.append((k, m)))
            with pytest.raises(DeviceDisconnected, match="cannot open"):
                await dev.open()
            asyncio.get_running_loop().call_later(1.0, os.symlink, emu.path, link)
            try:
                seen = await _poll_until_ok(dev)
            finally:
                await dev.close()
        assert seen[0] == Quality.ERROR and len(seen) >= 5, seen  # about 1 s of failures
        assert dev.stats.reconnects == 1 and dev.hello is not None
        assert [k for k, _ in events] == ["device.reconnect"]
    run(main())


def test_a_board_that_answers_only_later_is_reached_by_reads() -> None:
    """The port is there from the start, but nothing answers for 1.2 s (a board booting)."""
    async def main() -> None:
        async with SerialEmulator(LagBattery(), "battery", ("p_set_w",)) as emu:
            with Pty() as line:
                dev = SerialDevice(line.path, timeout_s=0.05)
                with pytest.raises(DeviceTimeout, match="no reply to HELLO"):
                    await dev.open()
                board_fd = os.open(emu.path, os.O_RDWR | os.O_NOCTTY)
                streams: list[TtyStream] = []

                def join() -> None:  # the far end of the line starts answering
                    host = TtyStream(line.fd, lambda d: board.write(d), lambda exc: None)
                    board = TtyStream(board_fd, host.write, lambda exc: None)
                    streams.extend((host, board))

                asyncio.get_running_loop().call_later(1.2, join)
                try:
                    seen = await _poll_until_ok(dev)
                finally:
                    await dev.close()
                    for stream in streams:
                        stream.close()
                    os.close(board_fd)
        assert seen[0] != Quality.OK and len(seen) >= 5, seen
        assert dev.stats.reconnects == 1
    run(main())


def test_a_non_finite_value_is_nan_with_quality_error_naming_the_signal() -> None:
    values = iter([{0: math.nan}, {0: math.inf}, {0: -math.inf}, {0: 12.5}])

    async def main() -> None:
        board = scripted_board(lambda f: frames.encode(Frame(
            MsgType.READ_REPLY, f.seq, messages.encode_values(next(values)))))
        async with board as path, SerialDevice(path, name="n.battery") as dev:
            for shown in ("nan", "inf", "-inf"):
                r = await poll(dev)
                assert r.quality == Quality.ERROR and math.isnan(r.values["p_w"])
                assert r.error == f"n.battery: board sent a non-finite value for p_w ({shown})"
            r = await poll(dev)
            assert r.quality == Quality.OK and r.values == {"p_w": 12.5} and r.error is None
    run(main())


def test_open_of_a_silent_port_times_out_and_closes() -> None:
    async def main() -> None:
        with Pty() as pty:
            dev = SerialDevice(pty.path, timeout_s=0.02, retries=0)
            with pytest.raises(DeviceTimeout, match="no reply to HELLO"):
                await dev.open()
            assert os.read(pty.fd, 100).startswith(b"\x00")  # it sent a delimiter, then HELLO
    run(main())


def test_a_port_is_opened_exclusively() -> None:
    async def main() -> None:
        async with SerialEmulator(LagBattery(), "battery") as emu, SerialDevice(emu.path):
            with pytest.raises(DeviceDisconnected, match="lock"):
                await SerialDevice(emu.path).open()
    run(main())


def test_registry_builds_the_serial_backend() -> None:
    dev = open_device("serial", port="/dev/null", baudrate=9600, parity="E", stopbits=2)
    assert isinstance(dev, SerialDevice) and dev.backend == "serial"
    assert (dev.baudrate, dev.bytesize, dev.parity, dev.stopbits) == (9600, 8, "E", 2)
    assert dev.signals == () and dev.setpoints == ()


def test_accepted_line_settings_work_over_the_pty() -> None:
    async def t(b: Bench) -> None:
        assert (await b.dev.read()).quality == Quality.OK
    on_bench(t, baudrate=9600, parity="o", stopbits=1.5)


@pytest.mark.parametrize(("settings", "message"), [
    ({"baudrate": 0}, "baudrate must be an integer in \\[50, 12000000\\] bit/s, got 0"),
    ({"baudrate": 115200.0}, "baudrate .* got 115200.0"),
    ({"baudrate": True}, "baudrate .* got True"),
    ({"bytesize": 7}, "bytesize must be 8 \\(the protocol is binary\\), got 7"),
    ({"parity": "X"}, "parity must be one of N \\(none\\), E \\(even\\).*got 'X'"),
    ({"parity": None}, "parity .* got None"),
    ({"stopbits": 3}, "stopbits must be 1, 1.5 or 2, got 3"),
])
def test_line_settings_are_validated(settings: dict, message: str) -> None:
    line = {"baudrate": 115200, "bytesize": 8, "parity": "N", "stopbits": 1} | settings
    with pytest.raises(ConfigError, match=message):
        validate_line(**line)
    with pytest.raises(ConfigError, match=message):
        SerialDevice("/dev/null", **settings)


@pytest.mark.parametrize(("options", "message"), [
    ({"timeout_s": 0}, "timeout_s must be > 0"),
    ({"backoff_s": -1}, "need 0 < backoff_s <= backoff_max_s, got -1 and 2.0"),
    ({"backoff_max_s": 0.01}, "need 0 < backoff_s <= backoff_max_s, got 0.05 and 0.01"),
    ({"retries": -1}, "retries must be an integer >= 0"),
    ({"retries": 1.5}, "retries must be an integer >= 0"),
    ({"telemetry_max_age_s": 0}, "telemetry_max_age_s must be > 0"),
])
def test_device_options_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SerialDevice("/dev/null", **options)


def test_errors_belong_to_the_bridge_tree() -> None:
    assert issubclass(ConfigError, BridgeError) and issubclass(DeviceTimeout, TimeoutError)
