"""The ``serial`` back-end: microcontroller firmware speaking the gridloop serial protocol.

The protocol (docs/serial-protocol.md) is COBS-framed, CRC-16 checked, request/response
matched by sequence number, with unsolicited telemetry.  One request is outstanding at a
time; a reply whose sequence number or type does not match it is a late reply to an earlier
request and is dropped (counted in :attr:`SerialDevice.stats`).

I/O runs on the event loop, not in a thread: pyserial opens the port and applies the line
settings, then the port's descriptor is read with ``loop.add_reader`` and written without
blocking (:class:`~firmware_bridge.pty.TtyStream`).  So a device costs no thread, a
deadline is a plain ``wait_for``, and closing never waits for a blocked read.

A lost port (a USB adapter unplugged, a board rebooting) fails the request in flight with
:class:`~firmware_bridge.errors.DeviceDisconnected`; later calls reopen the port, no more
often than an exponential back-off allows
(:class:`~firmware_bridge.backends.backoff.Backoff`), and never wait for it: a call inside
the back-off fails at once, so one dead device never holds up the others.

In a bench run that is not real time, :attr:`SerialDevice.lockstep` holds a copy of the
emulated board's fault card (:class:`~firmware_bridge.faults.LockstepFaults`): a request the
card leaves unanswered within the deadline is given up after the deadline, any other is
waited for up to ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import errno as errno_module
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import serial

from firmware_bridge import plausible
from firmware_bridge.backends.backoff import Backoff
from firmware_bridge.device import Device, Quality, Reading
from firmware_bridge.errors import (
    ConfigError,
    DeviceDisconnected,
    DeviceTimeout,
    ExceptionResponse,
    FrameError,
)
from firmware_bridge.faults import EventSink, LockstepFaults
from firmware_bridge.line import REFUSALS, label, refused, release
from firmware_bridge.pty import TtyStream
from firmware_bridge.serialproto import frames, messages
from firmware_bridge.serialproto.frames import Frame
from firmware_bridge.serialproto.messages import BOOT_SEQ, REPLY, Access, Hello, MsgType

T = TypeVar("T")

PARITIES = {"N": "none", "E": "even", "O": "odd", "M": "mark", "S": "space"}
STOPBITS = (1, 1.5, 2)
MAX_BAUDRATE = 12_000_000
#: the largest finite float32, the widest setpoint the protocol carries
FLOAT32_MAX = 3.4028234663852886e38


#: why a serial port did not open, by the OS's error number, in an engineer's words
_OPEN_FAILURES = {
    errno_module.ENOENT: "no such port",
    errno_module.EAGAIN: "in use by another program, or by another asset of this scenario "
                         "(it is locked)",
    errno_module.EBUSY: "in use by another program, or by another asset of this scenario",
    errno_module.EACCES: "permission denied (is the user in the port's group, dialout?)",
}


@dataclass
class SerialStats:
    """Counters of one serial device since it was built."""

    requests: int = 0
    timeouts: int = 0
    frame_errors: int = 0
    stale_replies: int = 0
    telemetry: int = 0
    telemetry_lost: int = 0
    disconnects: int = 0
    reconnect_attempts: int = 0
    reconnects: int = 0
    reboots: int = 0


@dataclass
class _Pending:
    seq: int
    reply: MsgType
    future: asyncio.Future[Frame]


class SerialDevice(Device):
    """A board on a serial port that speaks the gridloop serial protocol.

    Its signals and setpoints are the points the board announces in its HELLO reply, read at
    :meth:`open`.

    Parameters
    ----------
    port : str
        Serial port path (``/dev/ttyACM0``, or a pty from an emulator).
    baudrate : int
        Line speed. [bit/s]
    timeout_s : float
        Deadline of one request attempt. [s]
    bytesize, parity, stopbits
        Line settings; the protocol is binary, so ``bytesize`` must be 8.  ``parity`` is one
        of ``N E O M S``, ``stopbits`` one of 1, 1.5, 2.
    retries : int
        Further attempts after a timeout or a corrupted reply, each with a new sequence
        number (every request is idempotent).
    telemetry_max_age_s : float or None
        If set, :meth:`read` answers from the latest telemetry frame when it holds every
        signal and is at most this old, without a request. [s]
    backoff_s, backoff_max_s : float
        First and longest wait between attempts to reopen a lost port; it doubles after each
        failed attempt. [s]
    on_event : callable
        ``on_event(kind, message)`` on ``device.disconnect``, ``device.reconnect`` and
        ``device.reboot`` (kinds in :mod:`firmware_bridge.faults`).
    address_label : str
        What messages call the port instead of its path: a bench run names an emulated
        board's pseudo-terminal ``its emulator's pty``, whose path is another each run, so
        that two runs of one scenario record the same messages.  Empty: the path (a lab's
        board, which an engineer goes and looks for).
    """

    backend = "serial"

    def __init__(self, port: str, baudrate: int = 115200, timeout_s: float = 0.2, *,
                 bytesize: int = 8, parity: str = "N", stopbits: float = 1,
                 retries: int = 1, telemetry_max_age_s: float | None = None,
                 backoff_s: float = 0.05, backoff_max_s: float = 2.0,
                 on_event: EventSink | None = None, name: str = "",
                 address_label: str = "") -> None:
        super().__init__(name or f"serial:{port}")
        self.port = str(port)
        self.address_label = str(address_label)
        self.baudrate, self.bytesize, self.parity, self.stopbits = validate_line(
            baudrate, bytesize, parity, stopbits)
        if not timeout_s > 0:
            raise ConfigError(f"serial device {self.port}: timeout_s must be > 0, "
                              f"got {timeout_s}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"serial device {self.port}: retries must be an integer >= 0, "
                              f"got {retries!r}")
        if telemetry_max_age_s is not None and not telemetry_max_age_s > 0:
            raise ConfigError(f"serial device {self.port}: telemetry_max_age_s must be > 0, "
                              f"got {telemetry_max_age_s}")
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.telemetry_max_age_s = telemetry_max_age_s
        self.backoff = Backoff(backoff_s, backoff_max_s, f"serial device {self.port}")
        self.on_event = on_event
        self.stats = SerialStats()
        #: the emulated board's fault card, drawn request by request, in a run on the
        #: bench's clock (set by the bench; None: wait for every answer)
        self.lockstep: LockstepFaults | None = None
        self._opened = False
        self._serial: serial.Serial | None = None
        self._stream: TtyStream | None = None
        self._parser = frames.FrameParser()
        self._lock = asyncio.Lock()
        self._pending: _Pending | None = None
        self._seq = 0
        self._hello: Hello | None = None
        self._hello_needed = True
        self._lost_link = False
        self._telemetry: dict[str, float] = {}
        self._telemetry_at = 0.0
        self._telemetry_mono = 0.0
        self._telemetry_next: int | None = None

    # -- the Device contract ----------------------------------------------------------------

    @property
    def signals(self) -> tuple[str, ...]:
        return self._hello.signals if self._hello else ()

    @property
    def setpoints(self) -> tuple[str, ...]:
        return self._hello.setpoints if self._hello else ()

    def setpoint_range(self, name: str) -> tuple[float, float] | None:
        """A setpoint goes out as a float32: finite in float32 is what the board can hold."""
        return (-FLOAT32_MAX, FLOAT32_MAX) if name in self.setpoints else None

    @property
    def line(self) -> str:
        """The line settings, ``115200 8N1``."""
        return label(self.baudrate, self.bytesize, self.parity, self.stopbits)

    @property
    def where(self) -> str:
        """The port, for messages: its path, or the bench's label for it."""
        return self.address_label or self.port

    @property
    def _the_port(self) -> str:
        """``port /dev/ttyACM0``, or the bench's label for it, to start a phrase."""
        return self.address_label or f"port {self.port}"

    @property
    def hello(self) -> Hello | None:
        """The board's latest HELLO: boot id, telemetry period, point table."""
        return self._hello

    async def open(self) -> None:
        """Open the port and ask the board for its HELLO.

        A board that is not there yet (no port, no answer) raises, holding no port; the
        device stays open, so later calls try again within the back-off, as after a lost
        port, and its first answer counts as a reconnect.
        """
        if self._opened:
            return
        self._opened = True
        self.backoff.reset()
        try:
            self._connect()
            await self._transact(MsgType.HELLO, lambda hello: b"")
        except BaseException:
            self._drop_link()
            self._hello_needed = True
            self._lost_link = True
            self.backoff.failed()
            raise

    async def close(self) -> None:
        self._opened = False
        self._fail_pending(DeviceDisconnected(f"{self.name}: closed"))
        self._drop_link()
        self._hello_needed = True
        self._lost_link = False
        self._telemetry = {}
        self._telemetry_next = None

    async def read(self) -> Reading:
        t0 = time.perf_counter()
        if self._opened and self.telemetry_max_age_s is not None:
            age = time.monotonic() - self._telemetry_mono
            if age <= self.telemetry_max_age_s and set(self.signals) <= set(self._telemetry):
                return self._checked(dict(self._telemetry), self._telemetry_at,
                                     time.perf_counter() - t0,
                                     {"source": "telemetry", "age_s": age})
        reply = await self._transact(MsgType.READ, lambda hello: b"")
        assert self._hello is not None
        values = self._decode(messages.decode_values, reply.payload, "READ reply")
        names = self._hello.names()
        wanted = {p.id for p in self._hello.points if p.access & Access.READ}
        if set(values) != wanted:
            raise FrameError(f"{self.name}: READ reply has points {sorted(values)}, "
                             f"expected {sorted(wanted)}")
        return self._checked({names[i]: v for i, v in values.items()}, time.time(),
                             time.perf_counter() - t0, {"source": "poll"})

    def _checked(self, values: dict[str, float], timestamp_s: float, rtt_s: float,
                 extra: dict[str, object]) -> Reading:
        """A reading of ``values``; a NaN or infinite value (a board's failed sensor, a
        corrupted float), or a finite one outside what the unit in the point's name allows
        (:mod:`firmware_bridge.plausible`: 1e30 W), is a NaN with quality ERROR, never a
        number passed on as OK."""
        bad = [name for name, v in values.items() if not math.isfinite(v)]
        bounds = {name: plausible.for_signal(name) for name in values}
        wild = [name for name, v in values.items() if plausible.implausible(v, bounds[name])]
        if not bad and not wild:
            return Reading(values, timestamp_s, Quality.OK, rtt_s, extra=extra)
        errors = []
        if bad:
            errors.append("board sent a non-finite value for "
                          f"{', '.join(f'{n} ({values[n]})' for n in bad)}")
        if wild:
            errors.append("board sent an implausible value for " + ", ".join(
                f"{n} ({b.show(values[n])}, outside the plausible {b.describe()})"
                for n in wild if (b := bounds[n]) is not None))
        values.update(dict.fromkeys(bad + wild, math.nan))
        return Reading(values, timestamp_s, Quality.ERROR, rtt_s,
                       f"{self.name}: {'; '.join(errors)}", extra)

    async def write(self, setpoints: Mapping[str, float]) -> None:
        def payload(hello: Hello) -> bytes:
            pairs: dict[int, float] = {}
            for name, value in setpoints.items():
                point = hello.point(name)
                if point is None or not point.access & Access.WRITE:
                    raise ConfigError(f"{self.name}: cannot write {name}; writable: "
                                      f"{', '.join(hello.setpoints) or 'nothing'}")
                if not messages.finite(float(value)):
                    raise ConfigError(f"{self.name}: setpoint {name} = {value} is not a "
                                      f"finite float32")
                pairs[point.id] = float(value)
            return messages.encode_values(pairs)

        if setpoints:
            await self._transact(MsgType.WRITE, payload)

    async def ping(self, data: bytes = b"") -> float:
        """Round-trip time of a PING carrying ``data``, which the board must echo. [s]"""
        t0 = time.perf_counter()
        reply = await self._transact(MsgType.PING, lambda hello: bytes(data))
        if reply.payload != bytes(data):
            raise FrameError(f"{self.name}: PONG does not echo the PING payload")
        return time.perf_counter() - t0

    def telemetry(self) -> Reading | None:
        """The latest telemetry frame as a reading, or None if none arrived since opening."""
        if not self._telemetry:
            return None
        return self._checked(dict(self._telemetry), self._telemetry_at, 0.0,
                             {"source": "telemetry",
                              "age_s": time.monotonic() - self._telemetry_mono})

    # -- requests ---------------------------------------------------------------------------

    async def _transact(self, mtype: MsgType, payload: Callable[[Hello], bytes]) -> Frame:
        """Send one request (after a HELLO if the board's table is unknown) and return the
        reply; ``payload`` builds the request from the board's point table."""
        async with self._lock:
            self._ensure_link()
            if self._hello_needed or mtype == MsgType.HELLO:
                reply = await self._exchange(MsgType.HELLO, b"")
                self._adopt(self._decode(messages.decode_hello, reply.payload, "HELLO reply"))
                if mtype == MsgType.HELLO:
                    return reply
            assert self._hello is not None
            return await self._exchange(mtype, payload(self._hello))

    async def _exchange(self, mtype: MsgType, payload: bytes) -> Frame:
        loop = asyncio.get_running_loop()
        attempts = self.retries + 1
        last: Exception | None = None
        for _ in range(attempts):
            self._seq = self._seq % 255 + 1
            self.stats.requests += 1
            self._send(frames.encode(Frame(mtype, self._seq, payload)))
            # no reply can arrive before the next await, so registering after sending is safe
            pending = _Pending(self._seq, REPLY[mtype], loop.create_future())
            self._pending = pending
            # in a run on the bench's clock: no answer can come within the deadline
            late = self.lockstep is not None and self.lockstep.unanswered()
            wait_s = self.lockstep.deadline_s if late and self.lockstep else self.timeout_s
            try:
                reply = await asyncio.wait_for(pending.future, wait_s)
            except TimeoutError:
                self.stats.timeouts += 1
                last = DeviceTimeout(f"{self.name}: no reply to {mtype.name} within "
                                     f"{wait_s:g} s ({attempts} attempt"
                                     f"{'s' if attempts > 1 else ''})")
                continue
            except FrameError as exc:
                last = exc
                continue
            finally:
                self._pending = None
            if reply.type == MsgType.ERROR:
                code, detail, text = messages.decode_error(reply.payload)
                raise ExceptionResponse(code, f"{self.name}: {mtype.name} refused: "
                                              f"{messages.describe_error(code, detail, text)}")
            if self._lost_link:
                self._reconnected()
            return reply
        assert last is not None
        raise last

    def _decode(self, decode: Callable[[bytes], T], payload: bytes, what: str) -> T:
        try:
            return decode(payload)
        except FrameError as exc:
            raise FrameError(f"{self.name}: {what}: {exc}") from None

    def _send(self, data: bytes) -> None:
        if self._stream is None:
            raise DeviceDisconnected(f"{self.name}: {self._the_port} is not connected")
        try:
            self._stream.write(data)
        except ConnectionError as exc:
            raise DeviceDisconnected(f"{self.name}: write to {self.where} failed: {exc}") from exc

    def _fail_pending(self, exc: Exception) -> None:
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.set_exception(exc)

    # -- the link ---------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            port = serial.Serial(self.port, self.baudrate, self.bytesize, self.parity,
                                 self.stopbits, timeout=0, exclusive=True)
        except REFUSALS as exc:  # the port is there, the settings are not for it
            release(exc)
            raise DeviceDisconnected(refused(self.name, self.where, self.line, exc)) from None
        except (serial.SerialException, OSError, ValueError) as exc:
            # pyserial's text repeats the path (twice, with the OS's own): the cause alone
            errno = exc.errno if isinstance(exc, OSError) else (
                exc.args[0] if exc.args and isinstance(exc.args[0], int) else None)
            why = _OPEN_FAILURES.get(errno) or (os.strerror(errno) if isinstance(errno, int)
                                                else str(exc).replace(self.port, self.where))
            raise DeviceDisconnected(f"{self.name}: cannot open {self.where}: {why}") from exc
        port.reset_input_buffer()
        self._serial = port
        self._parser = frames.FrameParser()
        self._stream = TtyStream(port.fileno(), self._on_data, self._on_lost)
        self._stream.write(frames.DELIMITER)  # ends any partial frame the board holds

    def _drop_link(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def _ensure_link(self) -> None:
        """Raise unless the port is open, reopening a lost one when the back-off allows."""
        if not self._opened:
            raise DeviceDisconnected(f"{self.name}: device is not open")
        if self._stream is not None:
            return
        state = "lost" if self._hello is not None else "not ready"
        self.backoff.check(f"{self.name}: {self._the_port} {state}")
        self.stats.reconnect_attempts += 1
        try:
            self._connect()
        except DeviceDisconnected:
            self.backoff.failed()
            raise
        self._hello_needed = True

    def _on_lost(self, exc: OSError | None) -> None:
        self._drop_link()
        self.stats.disconnects += 1
        self._lost_link = True
        self.backoff.reset()
        self.backoff.failed()  # a board rebooting needs a moment: no reopening at once
        reason = f": {exc.strerror}" if exc is not None else " (hang-up)"
        self._event("disconnect", f"port lost{reason}")
        self._fail_pending(DeviceDisconnected(f"{self.name}: {self._the_port} lost{reason}"))

    def _reconnected(self) -> None:
        self._lost_link = False
        self.backoff.reset()
        self.stats.reconnects += 1
        self._event("reconnect", "port reopened, board answers")

    def _event(self, kind: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(f"device.{kind}", f"{self.name}: {message}")

    # -- what arrives -----------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        for item in self._parser.feed(data):
            if isinstance(item, FrameError):
                self.stats.frame_errors += 1
                self._fail_pending(FrameError(f"{self.name}: {item}"))
            elif item.version != frames.VERSION:
                self.stats.frame_errors += 1
                self._fail_pending(FrameError(f"{self.name}: frame of protocol version "
                                              f"{item.version}; this host speaks "
                                              f"{frames.VERSION}"))
            elif item.type == MsgType.TELEMETRY:
                self._on_telemetry(item)
            elif item.type == MsgType.HELLO_REPLY and item.seq == BOOT_SEQ:
                try:
                    self._adopt(messages.decode_hello(item.payload))
                except FrameError:
                    self.stats.frame_errors += 1
            elif (self._pending is not None and item.seq == self._pending.seq
                  and item.type in (self._pending.reply, MsgType.ERROR)
                  and not self._pending.future.done()):
                self._pending.future.set_result(item)
            else:
                self.stats.stale_replies += 1

    def _adopt(self, hello: Hello) -> None:
        if self._hello is not None and hello.boot_id != self._hello.boot_id:
            self.stats.reboots += 1
            self._telemetry = {}
            self._telemetry_next = None
            self._event("reboot", f"board rebooted (boot id {self._hello.boot_id:#010x} -> "
                                  f"{hello.boot_id:#010x})")
        self._hello = hello
        self._hello_needed = False

    def _on_telemetry(self, frame: Frame) -> None:
        if self._hello is None:
            return
        try:
            _, values = messages.decode_telemetry(frame.payload)
        except FrameError:
            self.stats.frame_errors += 1
            return
        if self._telemetry_next is not None:
            self.stats.telemetry_lost += (frame.seq - self._telemetry_next) & 0xFF
        self._telemetry_next = (frame.seq + 1) & 0xFF
        names = self._hello.names()
        self._telemetry.update({names[i]: v for i, v in values.items() if i in names})
        self._telemetry_at = time.time()
        self._telemetry_mono = time.monotonic()
        self.stats.telemetry += 1


def validate_line(baudrate: int, bytesize: int, parity: str,
                  stopbits: float) -> tuple[int, int, str, float]:
    """Check serial line settings; raises ConfigError naming the setting that is wrong."""
    if isinstance(baudrate, bool) or not isinstance(baudrate, int) \
            or not 50 <= baudrate <= MAX_BAUDRATE:
        raise ConfigError(f"serial line: baudrate must be an integer in "
                          f"[50, {MAX_BAUDRATE}] bit/s, got {baudrate!r}")
    if bytesize != 8:
        raise ConfigError(f"serial line: bytesize must be 8 (the protocol is binary), "
                          f"got {bytesize!r}")
    if not isinstance(parity, str) or parity.upper() not in PARITIES:
        raise ConfigError(f"serial line: parity must be one of "
                          f"{', '.join(f'{k} ({v})' for k, v in PARITIES.items())}, "
                          f"got {parity!r}")
    if stopbits not in STOPBITS:
        raise ConfigError(f"serial line: stopbits must be 1, 1.5 or 2, got {stopbits!r}")
    return baudrate, 8, parity.upper(), stopbits
