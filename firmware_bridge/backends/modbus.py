"""The ``modbus_tcp`` and ``modbus_rtu`` back-ends: SunSpec devices through pymodbus clients.

On :meth:`~ModbusDevice.open` the device is scanned as any SunSpec client does (the ``SunS``
marker at the base address, then the chain of ``[ID, L]`` headers), so the model addresses
come from the device, not from an assumption.  A read then fetches the few register spans
its register map needs (:meth:`firmware_bridge.maps.RegisterMap.read_spans`, at most 125
registers each), decodes them with the device's own scale factors, and returns a
:class:`~firmware_bridge.device.Reading` with the round-trip time of the whole read.  Writes
go out with function code 16, or 6 for a single register.

Errors are typed: no answer -> :class:`DeviceTimeout`; an exception response ->
:class:`ExceptionResponse` with its code; a corrupt or truncated RTU answer ->
:class:`FrameError`; a lost or refused connection -> :class:`DeviceDisconnected`.  A lost
device is reconnected (and rescanned) on the next read or write, with an exponential
back-off between failed attempts, so a dead device costs the others nothing.

In a bench run that is not real time, :attr:`ModbusDevice.lockstep` holds a copy of the
emulated device's fault card (:class:`~firmware_bridge.faults.LockstepFaults`): a request the
card leaves unanswered within the deadline is given up after the deadline, any other is
waited for up to ``timeout_s``, so the wall clock decides no outcome.

Implausible values: a point whose value is outside what its unit allows
(:mod:`firmware_bridge.plausible`, e.g. 3.3e14 W from an int16 at scale factor 10) is NaN in
the reading, which is flagged ``Quality.ERROR`` with a line naming the device, the point and
the value; its other points are kept.

Stale values: with ``stale_after_s`` set, a reading whose registers are bit-identical to the
previous ones for longer than that is flagged ``Quality.STALE`` (values are still returned).
Enable it for devices with a value that always moves (an energy counter, a frequency).
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import abstractmethod
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerRTU

from firmware_bridge.backends import rtu_bus
from firmware_bridge.backends.backoff import Backoff
from firmware_bridge.backends.rtu_bus import RtuBus
from firmware_bridge.capture import Capture, Status, Transaction
from firmware_bridge.device import Device, Quality, Reading
from firmware_bridge.errors import (
    ConfigError,
    DeviceDisconnected,
    DeviceError,
    DeviceTimeout,
    ExceptionResponse,
    FrameError,
)
from firmware_bridge.faults import LockstepFaults
from firmware_bridge.line import REFUSALS, label, refused, release
from firmware_bridge.maps import RegisterMap, get_map
from firmware_bridge.sunspec import (
    DEFAULT_BASE_ADDRESS,
    END_MODEL_ID,
    MAX_READ_REGISTERS,
    SUNS_MARKER,
    DeviceLayout,
    model_layout,
    parse_header,
)

#: a scan gives up after this many models (a device answering garbage never ends its chain)
_MAX_MODELS = 64

#: exception codes of a gateway with no answer from the unit asked for (0x0A: no path to
#: it, 0x0B: it did not respond)
GATEWAY_CODES = (0x0A, 0x0B)
#: the exception a device answers for a register it does not have
ILLEGAL_DATA_ADDRESS = 0x02


class ModbusDevice(Device):
    """What the TCP and RTU back-ends share: scan, block reads, writes, errors, reconnects.

    Parameters
    ----------
    unit : int
        Modbus unit id (1-247).
    map : str or RegisterMap
        Register map name (``sunspec_inverter``, ``sunspec_battery``, ``sunspec_meter``,
        ``gpu_rack``) or a map.
    timeout_s : float
        Deadline of one transaction. [s]
    base_address : int
        Where the ``SunS`` marker sits (0-based). [register]
    name : str
        Device name in errors and captures.
    stale_after_s : float or None
        Flag readings STALE after this long without any register changing. [s]
    capture : Capture or None
        Records every transaction.
    backoff_s, backoff_max_s : float
        First and largest wait between failed reconnection attempts. [s]
    address_label : str
        What messages call the device's address instead of its host and port (or serial
        port): a bench run names an emulated device ``its emulator``, whose port is another
        each run, so that two runs of one scenario record the same messages.  Empty: the
        real address (a lab's device, which an engineer goes and looks for).
    """

    def __init__(self, *, unit: int = 1, map: str | RegisterMap = "sunspec_inverter",
                 timeout_s: float = 0.5, base_address: int = DEFAULT_BASE_ADDRESS,
                 name: str = "", stale_after_s: float | None = None,
                 capture: Capture | None = None, backoff_s: float = 0.1,
                 backoff_max_s: float = 5.0, address_label: str = "") -> None:
        super().__init__(name)
        self.address_label = str(address_label)
        if not 1 <= int(unit) <= 247:
            raise ConfigError(f"{self.name}: unit id must be 1..247, got {unit}")
        if not timeout_s > 0:
            raise ConfigError(f"{self.name}: timeout_s must be > 0, got {timeout_s}")
        if not 0 <= int(base_address) <= 0xFFFF - 4:
            raise ConfigError(f"{self.name}: base_address {base_address} is outside 0..65531")
        self.unit = int(unit)
        self.map = get_map(map)
        self.timeout_s = float(timeout_s)
        self.base_address = int(base_address)
        self.stale_after_s = stale_after_s
        self.capture = capture
        if capture is not None:
            capture.add_device(self.name)
        self.backoff = Backoff(backoff_s, backoff_max_s, self.name)
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._open = False
        self._layout: DeviceLayout | None = None
        self._spans: list[tuple[int, int]] = []
        self._image: list[int] = []
        #: the image holds the device's registers read since its last scan (its scale
        #: factors: a write before that would encode at scale factor 0)
        self._image_read = False
        self._implemented: tuple[str, ...] | None = None
        self._lock: AbstractAsyncContextManager[Any] | None = None
        self._abort: asyncio.Future | None = None
        self._request: tuple[int, int] = (0, 0)  # function code, register count in flight
        self._received = b""
        self._last_image: list[int] | None = None
        self._unchanged_since = 0.0
        #: whether a scan ever succeeded (then the unit id is right)
        self._scanned = False
        #: the emulated device's fault card, drawn request by request, in a run on the
        #: bench's clock (set by the bench; None: wait for every answer)
        self.lockstep: LockstepFaults | None = None
        #: the request in flight is one the emulator drops (lockstep): no late answer comes
        self._dropped = False
        #: the request in flight went out (an answer to it may still come)
        self._requested = False

    # ------------------------------------------------------------------ transport hooks

    @abstractmethod
    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        """A pymodbus client with no retries, no automatic reconnect, and our trace hooks."""

    @property
    @abstractmethod
    def where(self) -> str:
        """The device's address, for messages."""

    def _new_lock(self) -> AbstractAsyncContextManager[Any]:
        """The lock that keeps one transaction at a time on the device's wire (made when it
        opens, in its event loop)."""
        return asyncio.Lock()

    def _after_timeout(self) -> None:
        """Called after a transaction timed out (a late answer must not be taken as the
        answer to the next request)."""

    async def _before_request(self) -> None:
        """Called before each request is sent."""

    def _check_answer(self, received: bytes) -> str | None:
        """What is wrong with the bytes received so far, if the transport can tell."""
        return None

    # ------------------------------------------------------------------ Device

    @property
    def signals(self) -> tuple[str, ...]:
        """The map's signals that the device implements (all of them before :meth:`open`)."""
        return self._implemented if self._implemented is not None else self.map.signals

    @property
    def setpoints(self) -> tuple[str, ...]:
        return self.map.setpoints

    def setpoint_range(self, name: str) -> tuple[float, float] | None:
        """What ``name``'s register holds at the scale factor the device last reported
        (None before its first reading since it was scanned)."""
        if self._layout is None or not self._image_read:
            return None
        try:
            return self.map.encodable(name, self._image, self._layout)
        except DeviceError:  # a scale factor out of range: its reads say so
            return None

    def can_release(self, name: str) -> bool:
        control = self.map.control(name)
        return control is not None and bool(control.release)

    async def open(self) -> None:
        """Connect, scan the SunSpec models, and read once to learn what is implemented."""
        self._open = True
        self._lock = self._new_lock()
        self.backoff.reset()
        reading = await self.read()
        self._implemented = tuple(n for n in self.map.signals if n in reading.values)

    async def close(self) -> None:
        self._open = False
        if self._client is not None:
            self._client.close()
            self._client = None
        self._layout = None
        self._last_image = None

    async def read(self) -> Reading:
        await self._ready()
        assert self._layout is not None
        t0 = time.perf_counter()
        await self._read_spans()
        rtt = time.perf_counter() - t0
        implausible: list[str] = []
        try:
            values = self.map.decode(self._image, self._layout, implausible)
        except DeviceError as exc:  # registers that make no sense (a scale factor)
            raise DeviceError(f"{self.name}: {exc}") from None
        quality = self._staleness()
        if implausible:
            # garbage, however well framed: left out (NaN), the reading an error, as a
            # serial board's NaN is; the device's other points are kept
            return Reading(values, time.time(), Quality.ERROR, rtt,
                           f"{self.name}: device sent an implausible value for "
                           f"{'; '.join(implausible)}")
        return Reading(values, time.time(), quality, rtt)

    async def write(self, setpoints: Mapping[str, float]) -> None:
        unknown = [n for n in setpoints if n not in self.map.setpoints]
        if unknown:
            raise ConfigError(f"{self.name}: cannot write {', '.join(unknown)}; writable: "
                              f"{', '.join(self.map.setpoints) or 'nothing'}")
        await self._ready()
        assert self._layout is not None
        if not self._image_read:  # rescanned since the last read: no scale factor known yet
            await self._read_spans()
        for address, values in self.map.control_writes(setpoints, self._image, self._layout):
            if len(values) == 1:
                await self._transact(6, address, 1, values)
            else:
                await self._transact(16, address, len(values), values)

    async def _read_spans(self) -> None:
        """Read the map's spans into the image (its scale factors with them)."""
        assert self._layout is not None
        for address, count in self._spans:
            at = address - self._layout.base_address
            self._image[at:at + count] = await self._transact(3, address, count)
        self._image_read = True

    async def read_registers(self, address: int, count: int) -> list[int]:
        """Holding registers ``[address, address + count)``, in reads of at most 125."""
        await self._ready()
        out: list[int] = []
        while count > 0:
            n = min(count, MAX_READ_REGISTERS)
            out += await self._transact(3, address, n)
            address += n
            count -= n
        return out

    # ------------------------------------------------------------------ connection

    async def _ready(self) -> None:
        """Connect and scan if needed; after a failed connection, wait out the back-off."""
        if not self._open:
            raise DeviceDisconnected(f"{self.name}: device is not open")
        if self._client is not None and self._client.connected and self._layout is not None:
            return
        self.backoff.check(f"{self.name}: disconnected from {self.where}")
        try:
            if self._client is None:
                self._client = self._make_client()
            if not self._client.connected and not await self._connect():
                raise DeviceDisconnected(f"{self.name}: cannot connect to {self.where}"
                                         f"{self._why_not_connected()}")
            self._layout = await self._scan()
        except DeviceDisconnected:
            self._layout = None
            self.backoff.failed()
            raise
        except DeviceError as exc:  # reachable but not answering well: no back-off needed
            self._layout = None
            if self._scanned:
                raise
            raise self._unit_hint(exc) from None
        self.backoff.reset()
        self._scanned = True
        self._spans = self.map.read_spans(self._layout)
        self._image = [0] * self._layout.size
        self._image_read = False

    async def _connect(self) -> bool:
        """Open the transport; a port that refuses its line settings is one line, at the
        first open and at every reconnect alike (pyserial passes ``termios.error`` on)."""
        assert self._client is not None
        try:
            return await self._client.connect()
        except REFUSALS as exc:
            release(exc)
            self._client.close()
            raise DeviceDisconnected(self._refused(exc)) from None

    def _refused(self, exc: BaseException) -> str:
        return f"{self.name}: cannot connect to {self.where}: {exc}"

    def _why_not_connected(self) -> str:
        """Why a connection the client refused to make did not open, where it can tell
        (the client says only that it did not): appended to the line that says so."""
        return ""

    def _unit_hint(self, exc: DeviceError) -> DeviceError:
        """``exc`` with a hint to check the unit id, when it is how a wrong unit id shows:
        silence where the transport answers a wrong unit id with silence (RTU: an RS-485
        slave ignores another unit's requests) or a gateway's exception 0x0A/0x0B (no such
        unit behind it), or the base address, when the device has no register there
        (0x02), from a device that never answered this client."""
        if isinstance(exc, DeviceTimeout) and self._wrong_unit_is_silent:
            return DeviceTimeout(f"{exc}; nothing answers unit {self.unit} there: check the "
                                 f"unit id{self._also_check}")
        if isinstance(exc, ExceptionResponse) and exc.code in GATEWAY_CODES:
            return ExceptionResponse(exc.code, f"{exc}; no device answers unit {self.unit} "
                                               f"behind {self.where}: check the unit id")
        if isinstance(exc, ExceptionResponse) and exc.code == ILLEGAL_DATA_ADDRESS:
            # the scan's first read is the SunSpec marker at the base address
            return ExceptionResponse(exc.code, f"{exc}; the device has no register at "
                                               f"{self.base_address}: check its base_address "
                                               "(SunSpec devices start at 40000, 50000 or 0)")
        return exc

    #: whether a request for a unit id nobody has goes unanswered on this transport, so that
    #: silence may be a wrong unit id: on RTU, not on TCP (a device or gateway answers it
    #: with exception 0x0B there; a silent TCP device is silent whatever its unit id)
    _wrong_unit_is_silent = False

    #: what else to check when nothing answers (the RTU line settings)
    _also_check = ""

    async def _scan(self) -> DeviceLayout:
        """Walk the device's SunSpec model chain from the base address."""
        marker = await self._transact(3, self.base_address, 2)
        if tuple(marker) != SUNS_MARKER:
            raise FrameError(f"{self.name}: no SunSpec marker at {self.base_address} on "
                             f"{self.where} (read {marker[0]:#06x} {marker[1]:#06x})")
        models: dict[int, int] = {}
        lengths: dict[int, int] = {}
        address = self.base_address + 2
        for _ in range(_MAX_MODELS):
            model_id, length = parse_header(await self._transact(3, address, 2))
            if model_id == END_MODEL_ID:
                break
            if model_id not in models:  # the first instance of a repeated model is ours
                models[model_id], lengths[model_id] = address, length
            address += length + 2
            if address > 0xFFFF:
                raise FrameError(f"{self.name}: SunSpec model chain runs past register 65535")
        else:
            raise FrameError(f"{self.name}: no end model after {_MAX_MODELS} models")
        for model_id in self.map.models:
            if model_id not in models:
                raise DeviceError(f"{self.name}: device at {self.where} has no SunSpec model "
                                  f"{model_id} (has {', '.join(map(str, models))}); map "
                                  f"{self.map.name} needs it")
            if lengths[model_id] < model_layout(model_id).length:
                raise DeviceError(f"{self.name}: model {model_id} is {lengths[model_id]} "
                                  f"registers long, {model_layout(model_id).length} expected")
        return DeviceLayout(self.base_address, models, address + 2)

    def _on_connection(self, connected: bool) -> None:
        """pymodbus's trace_connect: a connection lost by the peer fails the request now."""
        if not connected and self._abort is not None and not self._abort.done():
            self._abort.set_exception(DeviceDisconnected(
                f"{self.name}: connection to {self.where} lost"))

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's trace_packet: watch what arrives for a corrupt answer."""
        if not sending:
            self._received = data
            problem = self._check_answer(data)
            if problem and self._abort is not None and not self._abort.done():
                self._abort.set_exception(FrameError(f"{self.name}: {problem}"))
        return data

    # ------------------------------------------------------------------ transactions

    async def _transact(self, function_code: int, address: int, count: int,
                        values: list[int] | None = None) -> list[int]:
        """One request; returns the registers read (nothing for writes) or raises typed.

        One transaction at a time per device, per line on RTU (RS-485 allows no other; the
        hooks below watch the one in flight); each is recorded in the capture, whatever its
        outcome.
        """
        assert self._lock is not None
        async with self._lock:
            sent, t0 = time.time(), time.perf_counter()
            status, code, registers = Status.OK, 0, []
            self._requested = False
            try:
                registers = await self._exchange(function_code, address, count, values)
            except DeviceError as exc:
                status, code = _status(exc)
                if status in (Status.TIMEOUT, Status.FRAME_ERROR):
                    self._after_timeout()
                elif status == Status.DISCONNECTED and self._client is not None:
                    self._client.close()
                raise
            except asyncio.CancelledError:
                # the bench's deadline passed first: the answer may still come, and must
                # not be taken for the next request's; none can when the deadline came
                # while the request still waited for the line (an RTU quiet time): waiting
                # again would keep the device quiet at every tick of a real-time run
                status = Status.TIMEOUT
                if self._requested:
                    self._after_timeout()
                raise
            finally:
                if self.capture is not None:
                    self.capture.record(Transaction(
                        sent, self.name, function_code, address, count, tuple(values or ()),
                        tuple(registers), status, code, time.perf_counter() - t0))
            return registers

    async def _exchange(self, function_code: int, address: int, count: int,
                        values: list[int] | None) -> list[int]:
        """Send one request and wait for its answer, a lost connection or a bad frame."""
        client = self._client
        if client is None or not client.connected:
            raise DeviceDisconnected(f"{self.name}: not connected to {self.where}")
        await self._before_request()
        self._requested = True  # from here an answer may come, late or not
        # no answer can come within the deadline: wait no longer than it
        late = self.lockstep is not None and self.lockstep.unanswered()
        self._dropped = late and self.lockstep is not None and self.lockstep.never_answered
        self._abort = abort = asyncio.get_running_loop().create_future()
        self._request = (function_code, count)
        self._received = b""
        if function_code == 3:
            call = client.read_holding_registers(address, count=count, device_id=self.unit)
        elif function_code == 6:
            assert values is not None
            call = client.write_register(address, values[0], device_id=self.unit)
        else:
            assert values is not None
            call = client.write_registers(address, values, device_id=self.unit)
        task = asyncio.ensure_future(call)
        try:
            # pymodbus times the request out itself; the outer bound only guards against a hang
            bound = self.lockstep.deadline_s if late and self.lockstep else 2 * self.timeout_s + 1
            await asyncio.wait((task, abort), timeout=bound,
                               return_when=asyncio.FIRST_COMPLETED)
            if abort.done():
                raise abort.exception()  # type: ignore[misc]
            if not task.done():
                within = f" within {bound:g} s" if late else ""
                raise DeviceTimeout(f"{self.name}: no answer from {self.where}{within}")
            return self._registers(task.result(), function_code, address, count)
        except ModbusIOException as exc:
            raise self._io_error(exc, function_code, address, count) from None
        except ConnectionException:
            raise DeviceDisconnected(f"{self.name}: connection to {self.where} lost") from None
        finally:
            self._abort = None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _registers(self, response: Any, function_code: int, address: int,
                   count: int) -> list[int]:
        """The registers of a response, checked against the request."""
        what = f"FC{function_code} at {address}+{count}"
        if response.isError():
            code = int(response.exception_code)
            label = ExcCodes(code).name if code in ExcCodes._value2member_map_ else "unknown"
            raise ExceptionResponse(code, f"{self.name}: exception {code:#04x} ({label}) "
                                          f"to {what}")
        if function_code != 3:
            return []
        registers = list(response.registers)
        if len(registers) != count:
            raise FrameError(f"{self.name}: {len(registers)} registers in the answer to "
                             f"{what}")
        return registers

    def _io_error(self, exc: ModbusIOException, function_code: int, address: int,
                  count: int) -> DeviceError:
        what = f"FC{function_code} at {address}+{count}"
        if self._received:
            return FrameError(f"{self.name}: garbled or truncated answer to {what} "
                              f"({len(self._received)} bytes: {self._received[:16].hex()})")
        if "No response" in str(exc):
            return DeviceTimeout(f"{self.name}: no answer from {self.where} to {what} "
                                 f"within {self.timeout_s:g} s")
        return FrameError(f"{self.name}: bad answer to {what}: {exc}")

    def _staleness(self) -> Quality:
        """STALE when no register changed for longer than ``stale_after_s``."""
        now = time.monotonic()
        if self._image != self._last_image:
            self._last_image = list(self._image)
            self._unchanged_since = now
            return Quality.OK
        if self.stale_after_s is not None and now - self._unchanged_since > self.stale_after_s:
            return Quality.STALE
        return Quality.OK


class ModbusTcpDevice(ModbusDevice):
    """A SunSpec device on Modbus TCP (``modbus_tcp``).

    Parameters
    ----------
    host : str
    port : int
    **kwargs
        See :class:`ModbusDevice`: ``unit``, ``map``, ``timeout_s``, ``base_address``,
        ``name``, ``stale_after_s``, ``capture``, ``backoff_s``, ``backoff_max_s``,
        ``address_label``.
    """

    backend = "modbus_tcp"

    def __init__(self, host: str, port: int = 502, **kwargs: Any) -> None:
        if not 0 < int(port) < 65536:
            raise ConfigError(f"modbus_tcp {host}: port must be 1..65535, got {port}")
        self.host = host
        self.port = int(port)
        kwargs.setdefault("name", f"modbus_tcp:{host}:{port}/{kwargs.get('unit', 1)}")
        super().__init__(**kwargs)

    @property
    def where(self) -> str:
        return self.address_label or f"{self.host}:{self.port}"

    def _make_client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s,
                                    retries=0, reconnect_delay=0, name=self.name,
                                    trace_connect=self._on_connection)

    def _after_timeout(self) -> None:
        # a late answer would carry an old transaction id: start a fresh connection instead
        if self._client is not None:
            self._client.close()


#: line settings an RTU device may use
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


class ModbusRtuDevice(ModbusDevice):
    """A SunSpec device on Modbus RTU over a serial line (``modbus_rtu``), via pyserial.

    RS-485 is multi-drop: the devices of this process that name one port are the slaves of
    one line (:mod:`firmware_bridge.backends.rtu_bus`), polled one device at a time, each at
    its own unit id.  They must agree on the line settings and have unit ids of their own
    (a ConfigError when they open says which do not).

    Parameters
    ----------
    port : str
        Serial device (``/dev/ttyUSB0``, a pseudo-terminal).
    baudrate : int
        One of :data:`BAUDRATES`. [bit/s]
    parity : str
        ``"N"``, ``"E"`` or ``"O"``.
    bytesize, stopbits : int
        7 or 8 data bits; 1 or 2 stop bits.
    **kwargs
        See :class:`ModbusDevice`.
    """

    backend = "modbus_rtu"
    #: an RS-485 slave ignores the requests for other unit ids: a wrong one is silence
    _wrong_unit_is_silent = True

    def __init__(self, port: str, baudrate: int = 19200, parity: str = "N",
                 bytesize: int = 8, stopbits: int = 1, **kwargs: Any) -> None:
        validate_rtu_line(f"modbus_rtu {port}", baudrate, parity, bytesize, stopbits)
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.bytesize = bytesize
        self.stopbits = stopbits
        #: the line, shared with the other devices on the port (while open)
        self._bus: RtuBus | None = None
        #: the line's connection this device last scanned its unit on
        self._scanned_on = -1
        kwargs.setdefault("name", f"modbus_rtu:{port}/{kwargs.get('unit', 1)}")
        super().__init__(**kwargs)

    @property
    def _also_check(self) -> str:  # type: ignore[override]
        """The line settings too, unless another device on the line answered (they are
        right, then: only the unit id is in doubt)."""
        if self._bus is not None and self._bus.proven(self):
            return ""
        return " and the line settings"

    @property
    def line(self) -> str:
        """The line settings, ``19200 8N1``."""
        return label(self.baudrate, self.bytesize, self.parity, self.stopbits)

    @property
    def where(self) -> str:
        return f"{self.address_label or self.port} ({self.line})"

    async def open(self) -> None:
        """Join the port's line (the other devices on it may have opened it), then connect,
        scan and read as any Modbus device."""
        if self._bus is None:
            self._bus = rtu_bus.join(self)
        await super().open()

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        self._client = None  # the line's: its last device closes the port
        await super().close()
        if bus is not None:
            bus.leave(self)

    def _new_lock(self) -> AbstractAsyncContextManager[Any]:
        assert self._bus is not None
        return self._bus.lock

    def _line_held(self) -> AbstractAsyncContextManager[Any]:
        """The line, for a whole read or write: its requests go out back to back, as a
        master polls one slave after another (nothing to hold before :meth:`open`)."""
        return self._bus.lock if self._bus is not None else nullcontext()

    async def read(self) -> Reading:
        async with self._line_held():
            return await super().read()

    async def write(self, setpoints: Mapping[str, float]) -> None:
        async with self._line_held():
            await super().write(setpoints)

    async def read_registers(self, address: int, count: int) -> list[int]:
        async with self._line_held():
            return await super().read_registers(address, count)

    async def _ready(self) -> None:
        """As any Modbus device; and a line lost and opened again since this unit's scan
        (by another device on it) is scanned again, as after a reconnect of its own."""
        bus = self._bus
        if bus is not None and self._layout is not None and self._scanned_on != bus.connections:
            self._layout = None
        await super()._ready()
        if bus is not None:
            self._scanned_on = bus.connections

    async def _connect(self) -> bool:
        assert self._bus is not None
        return await self._bus.connect(self)

    async def _open_port(self) -> bool:
        """Open the line's port (for the whole line; :meth:`RtuBus.connect` calls it)."""
        return await super()._connect()

    def _refused(self, exc: BaseException) -> str:
        return refused(self.name, self.address_label or self.port, self.line, exc)

    def _why_not_connected(self) -> str:
        """A port that is not there (an adapter unplugged, a misspelt path) from one that is
        there but did not open (held by another program: the devices of this process that
        name the port share it)."""
        if "://" in self.port:  # a pyserial URL (socket://, rfc2217://): nothing to look at
            return ""
        if not os.path.exists(self.port):
            return ": no such port"
        return ": the port is there but did not open (in use by another program?)"

    def _make_client(self) -> AsyncModbusSerialClient:
        assert self._bus is not None
        return self._bus.client

    def _after_timeout(self) -> None:
        # RTU has no transaction ids: keep the line quiet long enough for a late answer to
        # arrive and be discarded before the next request to any unit on it goes out (none
        # comes to a request the emulator drops, which the lockstep card knows: no wait, no
        # wall time spent)
        if not self._dropped and self._bus is not None:
            self._bus.keep_quiet(self.timeout_s)

    async def _before_request(self) -> None:
        assert self._bus is not None
        await self._bus.speak(self)

    def _check_answer(self, received: bytes) -> str | None:
        function_code, count = self._request
        return check_rtu_answer(received, self.unit, function_code, count)


def validate_rtu_line(where: str, baudrate: int, parity: str, bytesize: int,
                      stopbits: float) -> None:
    """Check Modbus RTU line settings; raises ConfigError naming the one that is wrong."""
    if baudrate not in BAUDRATES:
        raise ConfigError(f"{where}: baudrate {baudrate} is not one of "
                          f"{', '.join(map(str, BAUDRATES))}")
    if parity not in ("N", "E", "O"):
        raise ConfigError(f"{where}: parity must be 'N', 'E' or 'O', got {parity!r}")
    if bytesize not in (7, 8):
        raise ConfigError(f"{where}: bytesize must be 7 or 8, got {bytesize}")
    if stopbits not in (1, 2):
        raise ConfigError(f"{where}: stopbits must be 1 or 2, got {stopbits}")


def _status(exc: DeviceError) -> tuple[Status, int]:
    """How a failed transaction is recorded in a capture: status and exception code."""
    if isinstance(exc, ExceptionResponse):
        return Status.EXCEPTION, exc.code
    if isinstance(exc, DeviceTimeout):
        return Status.TIMEOUT, 0
    if isinstance(exc, DeviceDisconnected):
        return Status.DISCONNECTED, 0
    return Status.FRAME_ERROR, 0


def check_rtu_answer(frame: bytes, unit: int, function_code: int, count: int) -> str | None:
    """What is wrong with the RTU answer received so far, or None (fine, or incomplete).

    Parameters
    ----------
    frame : bytes
        Bytes received since the request went out.
    unit, function_code, count : int
        The request's unit id, function code and register count.
    """
    if not frame:
        return None
    if frame[0] != unit:
        return f"answer from unit {frame[0]}, expected {unit}"
    if len(frame) < 3:
        return None
    if frame[1] == function_code | 0x80:
        size = 5
    elif frame[1] != function_code:
        return f"answer has function code {frame[1]}, expected {function_code}"
    elif function_code in (3, 4):
        if frame[2] != 2 * count:
            return f"answer carries {frame[2]} bytes of registers, expected {2 * count}"
        size = 5 + 2 * count
    else:
        size = 8
    if len(frame) < size:
        return None
    expected = FramerRTU.compute_CRC(frame[:size - 2])
    got = int.from_bytes(frame[size - 2:size], "big")
    if got != expected:
        return f"bad CRC {got:#06x} (expected {expected:#06x})"
    return None
