"""An MCU that speaks the gridloop serial protocol over a pseudo-terminal, backed by a Plant.

It is what a firmware author's board looks like from the host (docs/serial-protocol.md):
it announces itself with a HELLO at boot, answers HELLO, READ, WRITE and PING, streams
TELEMETRY at a fixed period, and answers malformed requests with ERROR replies.  Its
values come from a :class:`~firmware_bridge.plant.Plant`; it computes no physics.

Fault cards (:class:`~firmware_bridge.faults.FaultCard`, the same as the Modbus emulator's)
act on the line as a misbehaving board would: late replies, no reply, ERROR replies, frozen
values, writes acknowledged but not applied, frames with a bad CRC, and a reboot with the
port unplugged (a USB board re-enumerating); :meth:`SerialEmulator.reboot` restarts the
board by hand (new boot id, sequence numbers from 0, a HELLO again), unplugged or silent.
Every fault that fires, and every change of the fault card, is reported through
``on_event(kind, message)`` (kinds in :mod:`firmware_bridge.faults`).

What it does not emulate: baud-rate timing (a pty moves bytes as fast as it can), line
noise other than whole corrupted frames, and setpoints lost at reboot (the plant keeps them).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from firmware_bridge.emulators.base import Emulator
from firmware_bridge.errors import ConfigError, FrameError
from firmware_bridge.faults import EventSink, FaultCard, FaultInjector, Injection
from firmware_bridge.plant import Plant
from firmware_bridge.pty import Pty, TtyStream
from firmware_bridge.serialproto import cobs, frames, messages
from firmware_bridge.serialproto.frames import Frame
from firmware_bridge.serialproto.messages import (
    BOOT_SEQ,
    Access,
    ErrorCode,
    Hello,
    MsgType,
    Point,
)

#: requests held while the board is busy answering; more are dropped
MAX_QUEUED = 32

#: how often an unplugged board looks at its plant's clock when no host steps it [s]
REBOOT_POLL_S = 0.005


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


class SerialEmulator(Emulator):
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
    signals : sequence of str or None
        Names the host may read; None: every signal of the asset.
    telemetry_period_s : float
        Period of unsolicited TELEMETRY; 0 sends none. [s]
    fault : FaultCard or None
        The fault card at start; :meth:`set_fault` changes it at run time.
    on_event : callable
        ``on_event(kind, message)`` for every fault that fires and every card change.
    seed : int
        Seeds the boot ids, so a run is repeatable (the card has a seed of its own).
    name : str
        Device name in events (``node/asset``); the asset by default.
    """

    def __init__(self, plant: Plant, asset: str, setpoints: Sequence[str] = (), *,
                 telemetry_period_s: float = 0.0, fault: FaultCard | None = None,
                 on_event: EventSink | None = None, seed: int = 0, name: str = "",
                 signals: Sequence[str] | None = None) -> None:
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
        self.name = name or asset
        self.stats = EmulatorStats()
        self._rng = random.Random(seed)
        self._served = plant.read(asset)  # the values last sent, which a frozen board repeats
        missing = [n for n in signals or () if n not in self._served]
        if missing:
            raise ConfigError(f"serial emulator: asset '{asset}' has no signal "
                              f"{', '.join(missing)} (has {', '.join(self._served)})")
        self._points = self._point_table(tuple(self._served if signals is None else signals),
                                         tuple(setpoints))
        self._by_id = {p.id: p for p in self._points}
        self._readable = {p.id: p.name for p in self._points if p.access & Access.READ}
        self._pty: Pty | None = None
        self._stream: TtyStream | None = None
        self._parser = frames.FrameParser()
        #: requests to answer, each with the faults drawn for it and its reply if made
        #: already (a write's, made as it arrived)
        self._queue: asyncio.Queue[tuple[Frame, Injection, Frame | None]] = \
            asyncio.Queue(MAX_QUEUED)
        self._tasks: list[asyncio.Task[None]] = []
        self._reboot_task: asyncio.Task[None] | None = None
        self._hello: Hello | None = None
        self._boot_time = 0.0
        self._telemetry_seq = 0
        #: the fault card in force and its draws
        self.faults = FaultInjector(None, self.name, lambda: float(plant.t), on_event)
        self.set_fault(fault)

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
        if self._reboot_task is not None:
            self._reboot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reboot_task
            self._reboot_task = None
        await self._halt()
        if self._pty is not None:
            self._pty.close()
            self._pty = None

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
        if self.on_event is not None:
            self.on_event("emulator.reboot", f"{self.name}: rebooted by hand for "
                          f"{downtime_s:g} s" + (", port unplugged" if unplug else ""))
        await self._restart(downtime_s, unplug)

    async def _restart(self, downtime_s: float, unplug: bool) -> None:
        assert self._pty is not None
        self.stats.reboots += 1
        await self._halt()
        if unplug:
            self._pty.unplug()
        await asyncio.sleep(downtime_s)
        if unplug:
            self._pty.plug()
        self._boot()

    async def _fault_reboot(self) -> None:
        """The reboot of a fault card: the port unplugged until its ``disconnect_s`` has
        passed on the device clock, then back with a new boot id.

        The host brings the board back in the clock step that ends the downtime
        (:meth:`clock_advanced`); this task watches the clock too, for a plant stepped
        without a host."""
        try:
            assert self._pty is not None
            self.stats.reboots += 1
            await self._halt()
            self._pty.unplug()
            while not self._pty.plugged:
                if self.faults.back():
                    self._come_back()
                    self.faults.flush()
                    break
                await asyncio.sleep(REBOOT_POLL_S)
        finally:
            self._reboot_task = None

    def clock_advanced(self) -> None:
        self.faults.flush()
        # only once the reboot has unplugged the port (else its task comes back itself)
        if self._pty is not None and not self._pty.plugged and self.faults.back():
            self._come_back()

    def _come_back(self) -> None:
        assert self._pty is not None
        self._pty.plug()
        self._boot()

    # -- faults ----------------------------------------------------------------------------

    def set_fault(self, card: FaultCard | None) -> None:
        """Replace the board's fault card (None clears it); a new card may reboot again.

        ``exception_code`` must be an ERROR code of the serial protocol (1-7).
        """
        if card is not None and card.exception_code not in (None, *ErrorCode):
            raise ConfigError(f"serial emulator {self.name}: exception_code "
                              f"{card.exception_code} is not a serial ERROR code (one of "
                              f"{', '.join(f'{c.value} {c.name}' for c in ErrorCode)})")
        self.faults.set_card(card)

    # -- the line --------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        for item in self._parser.feed(data):
            if isinstance(item, FrameError):
                self.stats.bad_frames += 1
            elif self._reboot_task is not None:
                pass  # struck by a reboot: the board hears nothing more until it is back
            elif self._queue.full():
                self.stats.overruns += 1
            else:
                self._request(item)

    def _request(self, request: Frame) -> None:
        """Take a request as it arrives, on the device clock of that moment: the faults are
        drawn and a write reaches the plant (so a run on the bench's clock applies it at the
        same tick however late its reply is).  :meth:`_serve` answers the others, in order,
        each as late as its faults say (a read samples the plant when its reply goes out)."""
        self.stats.requests += 1
        self.faults.flush()
        mtype = request.type
        hit = self.faults.draw(f"{_type_name(mtype)} seq {request.seq}",
                               reads=mtype == MsgType.READ, writes=mtype == MsgType.WRITE)
        if hit.reboot_s:
            # the reboot halts the board: run it apart, and answer nothing
            self._reboot_task = asyncio.create_task(self._fault_reboot(),
                                                    name="serial-emulator-reboot")
            return
        if hit.timeout:
            self.stats.no_answers += 1
            return
        reply: Frame | None = None
        if hit.exception_code is not None:
            reply = _error(request, ErrorCode(hit.exception_code), 0, "fault card")
        elif mtype == MsgType.WRITE:
            reply, writes = self._answer(request, hit)
            if writes:
                if hit.drop_write:
                    self.stats.dropped_writes += 1
                else:
                    self.plant.write(self.asset, writes)
        self._queue.put_nowait((request, hit, reply))

    def _on_lost(self, exc: OSError | None) -> None:
        # the board holds its own client side open, so only unplug() ends the line
        self._stream = None

    def _send(self, frame: Frame, corrupt: bool = False) -> None:
        body = frames.pack(frame)
        if corrupt:
            body = body[:-1] + bytes((body[-1] ^ 0x01,))
            self.stats.corrupted += 1
        if self._stream is not None:
            self._stream.write(cobs.encode(body) + frames.DELIMITER)

    async def _serve(self) -> None:
        """Send the replies, in order, each as late as its faults say."""
        while True:
            request, hit, reply = await self._queue.get()
            if hit.delay_s:
                await asyncio.sleep(hit.delay_s)
            if reply is None:
                reply, _ = self._answer(request, hit)
            self._send(reply, hit.corrupt_crc)
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
        hit = self.faults.draw(f"TELEMETRY seq {self._telemetry_seq}", reads=True,
                               reply=False)
        values = self._values(hit)
        payload = messages.encode_telemetry(
            uptime_ms, {pid: values[name] for pid, name in self._readable.items()})
        self._send(Frame(MsgType.TELEMETRY, self._telemetry_seq, payload), hit.corrupt_crc)
        self._telemetry_seq = (self._telemetry_seq + 1) & 0xFF
        self.stats.telemetry += 1
        if self._stream is not None:
            await self._stream.drain()

    def _values(self, hit: Injection) -> dict[str, float]:
        """The plant's values now, or those last sent while ``frozen`` strikes."""
        if not hit.frozen:
            self._served = self.plant.read(self.asset)
        return self._served

    # -- the firmware's request handler ----------------------------------------------------

    def _answer(self, request: Frame, hit: Injection) -> tuple[Frame, dict[str, float]]:
        """Reply to ``request``, and the setpoints it asks to apply (none if refused)."""
        def error(code: ErrorCode, detail: int, text: str) -> tuple[Frame, dict[str, float]]:
            return _error(request, code, detail, text), {}

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
            values = self._values(hit)
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


def _error(request: Frame, code: ErrorCode, detail: int, text: str) -> Frame:
    return Frame(MsgType.ERROR, request.seq, messages.encode_error(code, detail, text))


def _type_name(mtype: int) -> str:
    try:
        return MsgType(mtype).name
    except ValueError:
        return f"type {mtype:#04x}"
