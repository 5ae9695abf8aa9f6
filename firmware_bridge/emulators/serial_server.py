"""An MCU that speaks the gridloop serial protocol over a pseudo-terminal, backed by a Plant.

It is what a firmware author's board looks like from the host (docs/serial-protocol.md):
it announces itself with a HELLO at boot, answers HELLO, READ, WRITE and PING, streams
TELEMETRY at a fixed period, and answers malformed requests with ERROR replies.  Its
values come from a :class:`~firmware_bridge.plant.Plant`; it computes no physics.

Fault cards (:class:`SerialFaults`) act on the line as a misbehaving board would: late
replies, no reply, writes acknowledged but not applied, frames with a bad CRC; and
:meth:`SerialEmulator.reboot` restarts the board (new boot id, sequence numbers from 0,
a HELLO again), optionally unplugging the port as a USB device does.  Every fault that
fires, and every change of the fault card, is reported through ``on_event(kind, message)``.

What it does not emulate: baud-rate timing (a pty moves bytes as fast as it can), line
noise other than whole corrupted frames, and setpoints lost at reboot (the plant keeps them).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Self

from firmware_bridge.errors import ConfigError, FrameError
from firmware_bridge.plant import Plant
from firmware_bridge.pty import Pty, TtyStream
from firmware_bridge.serialproto import cobs, frames, messages
from firmware_bridge.serialproto.frames import Frame
from firmware_bridge.serialproto.messages import BOOT_SEQ, Access, ErrorCode, Hello, MsgType, Point

EventCallback = Callable[[str, str], None]

#: requests held while the board is busy answering; more are dropped
MAX_QUEUED = 32


@dataclass(frozen=True)
class SerialFaults:
    """Fault card of one serial board; probabilities are per frame, from a seeded generator.

    Parameters
    ----------
    delay_s : float
        Extra delay before every reply. [s]
    no_answer : float
        Probability that a request gets no reply at all. [0..1]
    drop_writes : float
        Probability that a valid WRITE is acknowledged but not applied. [0..1]
    corrupt : float
        Probability that a frame the board sends (reply or telemetry) has a bad CRC. [0..1]
    """

    delay_s: float = 0.0
    no_answer: float = 0.0
    drop_writes: float = 0.0
    corrupt: float = 0.0

    def __post_init__(self) -> None:
        if not self.delay_s >= 0.0:
            raise ConfigError(f"serial fault card: delay_s must be >= 0, got {self.delay_s}")
        for name in ("no_answer", "drop_writes", "corrupt"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"serial fault card: {name} is a probability in [0, 1], "
                                  f"got {p}")

    def describe(self) -> str:
        active = [f"{f.name}={getattr(self, f.name):g}" for f in fields(self)
                  if getattr(self, f.name)]
        return ", ".join(active) or "no faults"


@dataclass
class EmulatorStats:
    """Counters of one emulator since it started."""

    requests: int = 0
    replies: int = 0
    telemetry: int = 0
    bad_frames: int = 0
    overruns: int = 0
    no_answers: int = 0
    dropped_writes: int = 0
    corrupted: int = 0
    reboots: int = 0


class SerialEmulator:
    """Asset ``asset`` of ``plant`` served as a serial board on a pseudo-terminal.

    Use as ``async with SerialEmulator(plant, "battery", setpoints=("p_set_w",)) as emu``
    and point a client at :attr:`path`.

    Parameters
    ----------
    plant : Plant
        The physics behind the board.
    asset : str
        Which of the plant's assets the board is; its signals become readable points.
    setpoints : sequence of str
        Names the host may write (they become writable points).
    telemetry_period_s : float
        Period of unsolicited TELEMETRY; 0 sends none. [s]
    faults : SerialFaults
        The fault card at start; change it at run time through :attr:`faults`.
    on_event : callable
        ``on_event(kind, message)`` for every fault that fires and every card change.
    seed : int
        Seeds the fault draws and the boot ids, so a run is repeatable.
    """

    def __init__(self, plant: Plant, asset: str, setpoints: Sequence[str] = (), *,
                 telemetry_period_s: float = 0.0, faults: SerialFaults | None = None,
                 on_event: EventCallback | None = None, seed: int = 0) -> None:
        if asset not in plant.assets:
            raise ConfigError(f"serial emulator: plant has no asset '{asset}' "
                              f"(has {', '.join(plant.assets)})")
        if not 0.0 <= telemetry_period_s <= 65.535:
            raise ConfigError(f"serial emulator: telemetry_period_s must be in [0, 65.535], "
                              f"got {telemetry_period_s}")
        self.plant = plant
        self.asset = asset
        self.telemetry_period_s = float(telemetry_period_s)
        self.on_event = on_event
        self.stats = EmulatorStats()
        self._faults = faults or SerialFaults()
        self._rng = random.Random(seed)
        self._points = self._point_table(tuple(plant.read(asset)), tuple(setpoints))
        self._by_id = {p.id: p for p in self._points}
        self._readable = {p.id: p.name for p in self._points if p.access & Access.READ}
        self._pty: Pty | None = None
        self._stream: TtyStream | None = None
        self._parser = frames.FrameParser()
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(MAX_QUEUED)
        self._tasks: list[asyncio.Task[None]] = []
        self._hello: Hello | None = None
        self._boot_time = 0.0
        self._telemetry_seq = 0

    @staticmethod
    def _point_table(signals: tuple[str, ...], setpoints: tuple[str, ...]) -> tuple[Point, ...]:
        names = list(dict.fromkeys(signals + setpoints))
        if len(names) > 48:
            raise ConfigError(f"serial emulator: {len(names)} points; at most 48 fit one frame")
        return tuple(Point(i, name, (Access.READ if name in signals else Access(0))
                           | (Access.WRITE if name in setpoints else Access(0)))
                     for i, name in enumerate(names))

    # -- life cycle -----------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The port a client opens."""
        if self._pty is None:
            raise RuntimeError("serial emulator is not started")
        return self._pty.path

    @property
    def boot_id(self) -> int:
        """Boot id of the running firmware; changes at every reboot."""
        if self._hello is None:
            raise RuntimeError("serial emulator is not started")
        return self._hello.boot_id

    async def start(self) -> None:
        """Plug the port in and boot."""
        if self._pty is None:
            self._pty = Pty()
            self._boot()

    async def stop(self) -> None:
        """Halt the board and remove the port.  Safe to call twice."""
        await self._halt()
        if self._pty is not None:
            self._pty.close()
            self._pty = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _boot(self) -> None:
        assert self._pty is not None
        loop = asyncio.get_running_loop()
        self._hello = Hello(self._rng.getrandbits(32), round(self.telemetry_period_s * 1000),
                            self.asset, self._points)
        self._boot_time = loop.time()
        self._telemetry_seq = 0
        self._stream = TtyStream(self._pty.fd, self._on_data, self._on_lost)
        self._tasks = [asyncio.create_task(self._serve(), name="serial-emulator-serve")]
        if self.telemetry_period_s:
            self._tasks.append(asyncio.create_task(self._stream_telemetry(),
                                                   name="serial-emulator-telemetry"))
        self._send(Frame(MsgType.HELLO_REPLY, BOOT_SEQ, messages.encode_hello(self._hello)))

    async def _halt(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._parser = frames.FrameParser()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def reboot(self, downtime_s: float = 0.2, unplug: bool = True) -> None:
        """Restart the board: silent for ``downtime_s``, then a new boot id and a HELLO.

        With ``unplug`` the port disappears meanwhile (a USB device re-enumerating); the
        client sees a hang-up and must reopen :attr:`path`.  Returns when the board is up.
        """
        if self._pty is None:
            raise RuntimeError("serial emulator is not started")
        self.stats.reboots += 1
        self._event("reboot", f"board reboots for {downtime_s:g} s"
                              + (", port unplugged" if unplug else ""))
        await self._halt()
        if unplug:
            self._pty.unplug()
        await asyncio.sleep(downtime_s)
        if unplug:
            self._pty.plug()
        self._boot()

    # -- faults ----------------------------------------------------------------------------

    @property
    def faults(self) -> SerialFaults:
        """The fault card in force; assigning a new one takes effect at the next frame."""
        return self._faults

    @faults.setter
    def faults(self, card: SerialFaults) -> None:
        self._faults = card
        self._event("fault_card", card.describe())

    def _event(self, kind: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, f"serial {self.asset}: {message}")

    def _draw(self, p: float) -> bool:
        return p > 0.0 and self._rng.random() < p

    # -- the line --------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        for item in self._parser.feed(data):
            if isinstance(item, FrameError):
                self.stats.bad_frames += 1
            elif self._queue.full():
                self.stats.overruns += 1
            else:
                self._queue.put_nowait(item)

    def _on_lost(self, exc: OSError | None) -> None:
        # the board holds its own client side open, so only unplug() ends the line
        self._stream = None

    def _send(self, frame: Frame) -> None:
        body = frames.pack(frame)
        if self._draw(self._faults.corrupt):
            body = body[:-1] + bytes((body[-1] ^ 0x01,))
            self.stats.corrupted += 1
            self._event("corrupt_frame", f"sent {MsgType(frame.type).name} seq {frame.seq} "
                                         f"with a bad CRC")
        if self._stream is not None:
            self._stream.write(cobs.encode(body) + frames.DELIMITER)

    async def _serve(self) -> None:
        while True:
            request = await self._queue.get()
            self.stats.requests += 1
            if self._draw(self._faults.no_answer):
                self.stats.no_answers += 1
                self._event("no_answer", f"ignored request type {request.type:#04x} "
                                         f"seq {request.seq}")
                continue
            reply, writes = self._answer(request)
            if writes:
                if self._draw(self._faults.drop_writes):
                    self.stats.dropped_writes += 1
                    self._event("drop_write", f"acknowledged but dropped write of "
                                              f"{', '.join(writes)} (seq {request.seq})")
                else:
                    self.plant.write(self.asset, writes)
            if self._faults.delay_s:
                await asyncio.sleep(self._faults.delay_s)
            self._send(reply)
            self.stats.replies += 1

    async def _stream_telemetry(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.telemetry_period_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self.send_telemetry()

    async def send_telemetry(self) -> None:
        """Send one TELEMETRY frame now, waiting while the line is full."""
        uptime_ms = round((asyncio.get_running_loop().time() - self._boot_time) * 1000)
        values = self.plant.read(self.asset)
        payload = messages.encode_telemetry(
            uptime_ms, {pid: values[name] for pid, name in self._readable.items()})
        self._send(Frame(MsgType.TELEMETRY, self._telemetry_seq, payload))
        self._telemetry_seq = (self._telemetry_seq + 1) & 0xFF
        self.stats.telemetry += 1
        if self._stream is not None:
            await self._stream.drain()

    # -- the firmware's request handler ----------------------------------------------------

    def _answer(self, request: Frame) -> tuple[Frame, dict[str, float]]:
        """Reply to ``request``, and the setpoints it asks to apply (none if refused)."""
        def error(code: ErrorCode, detail: int, text: str) -> tuple[Frame, dict[str, float]]:
            return Frame(MsgType.ERROR, request.seq,
                         messages.encode_error(code, detail, text)), {}

        def reply(mtype: MsgType, payload: bytes) -> Frame:
            return Frame(mtype, request.seq, payload)

        if request.version != frames.VERSION:
            return error(ErrorCode.UNSUPPORTED_VERSION, frames.VERSION,
                         f"version {request.version} unsupported")
        payload = request.payload
        if request.type == MsgType.HELLO:
            assert self._hello is not None
            return reply(MsgType.HELLO_REPLY, messages.encode_hello(self._hello)), {}
        if request.type == MsgType.PING:
            return reply(MsgType.PONG, payload), {}
        if request.type == MsgType.READ:
            ids = list(payload) or list(self._readable)
            if len(ids) > frames.MAX_PAYLOAD // 5:
                return error(ErrorCode.BAD_LENGTH, len(payload), "reply would not fit")
            for pid in ids:
                if pid not in self._readable:
                    return error(ErrorCode.UNKNOWN_POINT, pid, f"no readable point {pid}")
            values = self.plant.read(self.asset)
            return reply(MsgType.READ_REPLY, messages.encode_values(
                {pid: values[self._readable[pid]] for pid in ids})), {}
        if request.type == MsgType.WRITE:
            try:
                pairs = messages.decode_values(payload)
            except FrameError as exc:
                return error(ErrorCode.BAD_LENGTH, len(payload), str(exc)[:64])
            if not pairs:
                return error(ErrorCode.BAD_LENGTH, 0, "nothing to write")
            writes: dict[str, float] = {}
            for pid, value in pairs.items():
                point = self._by_id.get(pid)
                if point is None:
                    return error(ErrorCode.UNKNOWN_POINT, pid, f"no point {pid}")
                if not point.access & Access.WRITE:
                    return error(ErrorCode.NOT_WRITABLE, pid, f"{point.name} is read-only")
                if not messages.finite(value):
                    return error(ErrorCode.BAD_VALUE, pid, f"{point.name} must be finite")
                writes[point.name] = value
            return reply(MsgType.WRITE_ACK, b""), writes
        return error(ErrorCode.UNKNOWN_TYPE, request.type,
                     f"type {request.type:#04x} is not a request")
