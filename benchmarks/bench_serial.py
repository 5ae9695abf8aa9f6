"""Serial protocol throughput: the codec, request/response round trips and one-way telemetry
over a pseudo-terminal.

Each figure comes with a baseline measured in the same run:

- codec: packing and unpacking the same ``(id, f32)`` pairs with ``struct`` alone, so the
  ratio is the cost of framing (header, CRC-16, COBS, the streaming parser);
- round trips: ``SerialDevice.read()`` against the emulator, versus raw echo round trips of
  unframed writes of the same sizes over the same kind of pty and the same event loop;
- telemetry: TELEMETRY frames from the emulator to the device, versus raw one-way writes of
  the same size.

Host and board share one process and one event loop, as in CI; a real UART is far slower
(``line_115200_*`` gives the bound its bytes alone set at 115200 bit/s, 10 bits a byte).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Mapping

import serial

from firmware_bridge.backends.serial import SerialDevice
from firmware_bridge.emulators.serial_server import SerialEmulator
from firmware_bridge.plant import Plant
from firmware_bridge.pty import Pty, TtyStream
from firmware_bridge.serialproto import frames, messages
from firmware_bridge.serialproto.frames import Frame, FrameParser
from firmware_bridge.serialproto.messages import MsgType

#: seven signals, the size of a battery board's READ reply
VALUES = {"p_w": 1500.0, "soc": 0.5, "voltage_v": 800.0, "current_a": 1.875,
          "temp_cell_c": 25.0, "connected": 1.0, "capacity_wh": 100_000.0}
BY_ID = dict(enumerate(VALUES.values()))


class Battery(Plant):
    """A board whose signals stay at :data:`VALUES`."""

    @property
    def assets(self) -> tuple[str, ...]:
        return ("battery",)

    def read(self, asset: str) -> dict[str, float]:
        return dict(VALUES)

    def write(self, asset: str, setpoints: Mapping[str, float]) -> None:
        pass

    def advance(self, dt: float) -> None:
        pass


def _rate(n: int, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def bench_codec(n: int) -> dict[str, float]:
    values = BY_ID
    frame = Frame(MsgType.READ_REPLY, 7, messages.encode_values(values))
    wire = frames.encode(frame)
    parser = FrameParser()
    pairs = struct.Struct("<" + "Bf" * len(values))
    flat = [x for item in values.items() for x in item]
    raw = pairs.pack(*flat)

    encode = _rate(n, lambda: frames.encode(Frame(MsgType.READ_REPLY, 7,
                                                  messages.encode_values(values))))
    decode = _rate(n, lambda: messages.decode_values(parser.feed(wire)[0].payload))
    struct_pack = _rate(n, lambda: pairs.pack(*flat))
    struct_unpack = _rate(n, lambda: pairs.unpack(raw))
    return {"frame_bytes": len(wire),
            "encode_frames_per_s": round(encode),
            "decode_frames_per_s": round(decode),
            "baseline_struct_pack_per_s": round(struct_pack),
            "baseline_struct_unpack_per_s": round(struct_unpack),
            "encode_vs_struct": round(encode / struct_pack, 4),
            "decode_vs_struct": round(decode / struct_unpack, 4)}


class _Counter:
    """Counts bytes arriving on a tty and wakes a waiter at a threshold."""

    def __init__(self) -> None:
        self.n = 0
        self.want = 0
        self.event = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self.n += len(data)
        if self.n >= self.want:
            self.event.set()

    async def wait_for(self, total: int) -> None:
        self.want = total
        if self.n < total:
            self.event.clear()
            await self.event.wait()


async def _raw_round_trips(n: int, request_len: int, reply_len: int) -> float:
    """Echo server answering every ``request_len`` bytes with ``reply_len`` bytes."""
    with Pty() as pty:
        port = serial.Serial(pty.path, timeout=0)
        try:
            got = {"n": 0}
            reply = b"\x55" * reply_len

            def server_data(data: bytes) -> None:
                got["n"] += len(data)
                while got["n"] >= request_len:
                    got["n"] -= request_len
                    server.write(reply)

            server = TtyStream(pty.fd, server_data, lambda exc: None)
            counter = _Counter()
            client = TtyStream(port.fileno(), counter.feed, lambda exc: None)
            request = b"\xaa" * request_len
            t0 = time.perf_counter()
            for k in range(1, n + 1):
                client.write(request)
                await counter.wait_for(k * reply_len)
            rate = n / (time.perf_counter() - t0)
            client.close()
            server.close()
        finally:
            port.close()
    return rate


async def _raw_one_way(n: int, size: int) -> float:
    with Pty() as pty:
        port = serial.Serial(pty.path, timeout=0)
        try:
            counter = _Counter()
            reader = TtyStream(port.fileno(), counter.feed, lambda exc: None)
            writer = TtyStream(pty.fd, lambda d: None, lambda exc: None)
            chunk = b"\x55" * size
            t0 = time.perf_counter()
            for _ in range(n):
                writer.write(chunk)
                await writer.drain()
            await counter.wait_for(n * size)
            rate = n / (time.perf_counter() - t0)
            reader.close()
            writer.close()
        finally:
            port.close()
    return rate


async def _framed(n_rt: int, n_tm: int) -> dict[str, float]:
    async with SerialEmulator(Battery(), "battery", ("p_set_w",)) as emu, \
            SerialDevice(emu.path, timeout_s=1.0) as dev:
        for _ in range(50):  # warm up
            await dev.read()
        t0 = time.perf_counter()
        for _ in range(n_rt):
            await dev.read()
        rt = n_rt / (time.perf_counter() - t0)

        start = dev.stats.telemetry
        t0 = time.perf_counter()
        for _ in range(n_tm):
            await emu.send_telemetry()
        while dev.stats.telemetry < start + n_tm:
            await asyncio.sleep(0)
        tm = n_tm / (time.perf_counter() - t0)
        lost = dev.stats.telemetry_lost
    return {"rt": rt, "tm": tm, "lost": lost}


def run(quick: bool) -> dict:
    n_codec = 20_000 if quick else 200_000
    n_rt = 500 if quick else 5000
    n_tm = 2000 if quick else 20_000
    out: dict = {"codec": bench_codec(n_codec)}

    request_len = len(frames.encode(Frame(MsgType.READ, 1)))
    reply_len = out["codec"]["frame_bytes"]
    telemetry_len = len(frames.encode(Frame(MsgType.TELEMETRY, 1, messages.encode_telemetry(
        0, BY_ID))))

    framed = asyncio.run(_framed(n_rt, n_tm))
    raw_rt = asyncio.run(_raw_round_trips(n_rt, request_len, reply_len))
    raw_tm = asyncio.run(_raw_one_way(n_tm, telemetry_len))
    line = 115200 / 10
    out["round_trips"] = {
        "n": n_rt, "request_bytes": request_len, "reply_bytes": reply_len,
        "read_round_trips_per_s": round(framed["rt"]),
        "baseline_raw_echo_per_s": round(raw_rt),
        "ratio_vs_raw": round(framed["rt"] / raw_rt, 4),
        "line_115200_round_trips_per_s": round(line / (request_len + reply_len)),
    }
    out["telemetry"] = {
        "n": n_tm, "frame_bytes": telemetry_len,
        "telemetry_frames_per_s": round(framed["tm"]),
        "baseline_raw_writes_per_s": round(raw_tm),
        "ratio_vs_raw": round(framed["tm"] / raw_tm, 4),
        "frames_lost": framed["lost"],
        "line_115200_frames_per_s": round(line / telemetry_len),
    }
    return out
