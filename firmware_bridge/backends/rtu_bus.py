"""One RS-485 line shared by the Modbus RTU devices on it: a bus with one master (us).

Modbus RTU on RS-485 is multi-drop: an inverter at unit 1, a battery converter at unit 2 and
a meter at unit 3 hang on one pair of wires, one serial port, and the master polls them one
transaction at a time.  A port opens once (pyserial locks it), so the ``modbus_rtu`` devices
of one process that name one port (:func:`firmware_bridge.line.port_key`) share an
:class:`RtuBus`:

- one pymodbus client, its trace hooks handed to the device whose request is on the wire;
- one lock: one device on the line at a time, its whole read, write or scan back to back
  (its registers one snapshot; the units polled before a silent one are not held up by it);
- one quiet time after a time-out: RTU frames carry no transaction id, so a late answer from
  unit 1 must have come and gone before a request to any unit goes out, or it would be taken
  for unit 2's answer;
- one count of connections: a line lost and opened again is new to every device on it (each
  scans its unit again), not only to the device that reopened it.

Each device keeps its unit id, name, time-out, errors and reconnect back-off: a lost line
fails each device's next transaction, and each says so in its own words.

Devices join a bus when they open and leave it when they close; the last one closes the
port.  Buses are kept per event loop (a pymodbus client lives on one), and two devices that
disagree on the line settings, or that have one unit id, are refused with a ConfigError
naming both.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING

from pymodbus.client import AsyncModbusSerialClient

from firmware_bridge.errors import ConfigError
from firmware_bridge.line import label, port_key

if TYPE_CHECKING:
    from firmware_bridge.backends.modbus import ModbusRtuDevice

#: the line settings every device on one bus must agree on
LINE_SETTINGS = ("baudrate", "parity", "bytesize", "stopbits")


class LineLock:
    """An asyncio lock that the task holding it may take again: a device's read holds the
    line, and each of its transactions takes it again."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task | None = None
        self._depth = 0

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is not None and self._holder is task:
            self._depth += 1
            return
        await self._lock.acquire()
        self._holder, self._depth = task, 1

    async def __aexit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._holder = None
            self._lock.release()


#: each event loop's buses, by port: its real path, and each name a device on it gave
_BUSES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RtuBus]] = \
    weakref.WeakKeyDictionary()


class RtuBus:
    """The port ``port`` at line settings ``settings`` (baudrate, parity, bytesize,
    stopbits) and the devices on it, by unit id."""

    def __init__(self, key: str, port: str, settings: tuple[int, str, int, float]) -> None:
        self.key = key
        self.port = port
        self.settings = settings
        #: the devices on the line, by unit id
        self.devices: dict[int, ModbusRtuDevice] = {}
        #: one device on the wire at a time, whichever unit it is
        self.lock = LineLock()
        #: no request goes out before this (``time.monotonic``): a late answer may be coming
        self.quiet_until = 0.0
        #: times the port was opened: a device scanned on an older connection scans again
        self.connections = 0
        #: the device whose request went out last: the answers arriving are its
        self.speaker: ModbusRtuDevice | None = None
        self._client: AsyncModbusSerialClient | None = None

    @property
    def line(self) -> str:
        """The line settings, ``19200 8N1``."""
        baudrate, parity, bytesize, stopbits = self.settings
        return label(baudrate, bytesize, parity, stopbits)

    @property
    def client(self) -> AsyncModbusSerialClient:
        """The line's pymodbus client (made at first use; not connected by this)."""
        if self._client is None:
            baudrate, parity, bytesize, stopbits = self.settings
            first = next(iter(self.devices.values()), None)
            self._client = AsyncModbusSerialClient(
                self.port, baudrate=baudrate, parity=parity, bytesize=bytesize,
                stopbits=int(stopbits), timeout=first.timeout_s if first else 0.5,
                retries=0, reconnect_delay=0, name=self.port, trace_packet=self._on_packet,
                trace_connect=self._on_connection)
        return self._client

    # ------------------------------------------------------------------ members

    def join(self, device: ModbusRtuDevice) -> None:
        """Put ``device`` on the line; refuses other line settings and a taken unit id."""
        others = [d for d in self.devices.values() if d is not device]
        if others and _settings(device) != self.settings:
            first = others[0]
            wrong = next(k for k, mine, theirs in zip(LINE_SETTINGS, _settings(device),
                                                      self.settings, strict=True)
                         if mine != theirs)
            raise ConfigError(
                f"{device.name}: {wrong} {getattr(device, wrong)!r} on {_port(device)}, "
                f"where {first.name} has {getattr(first, wrong)!r}; the devices on one RTU "
                f"port share its line ({first.line}): their "
                f"{', '.join(LINE_SETTINGS[:-1])} and {LINE_SETTINGS[-1]} must match")
        taken = self.devices.get(device.unit)
        if taken is not None and taken is not device:
            raise ConfigError(
                f"{device.name}: unit {device.unit} on {_port(device)} is already "
                f"{taken.name}'s; the devices on one RTU port each need a unit id of their own")
        self.devices[device.unit] = device

    def leave(self, device: ModbusRtuDevice) -> None:
        """Take ``device`` off the line; the last one closes the port."""
        if self.devices.get(device.unit) is device:
            del self.devices[device.unit]
        if self.speaker is device:
            self.speaker = None
        if self.devices:
            return
        if self._client is not None:
            self._client.close()
            self._client = None
        buses = _BUSES.get(_loop(), {})
        for name in [n for n, bus in buses.items() if bus is self]:
            del buses[name]

    def proven(self, device: ModbusRtuDevice) -> bool:
        """Whether another device on the line has answered (then the line settings are
        right, and a silent unit is a wrong unit id)."""
        return any(d is not device and d._scanned for d in self.devices.values())

    # ------------------------------------------------------------------ transactions

    async def connect(self, device: ModbusRtuDevice) -> bool:
        """Open the port for ``device``, unless another device on the line has (then it is
        open already); with the line held, as every use of it."""
        async with self.lock:
            if self.client.connected:
                return True
            if not await device._open_port():
                return False
            self.connections += 1
            return True

    async def speak(self, device: ModbusRtuDevice) -> None:
        """Before ``device``'s request goes out (the line's lock held): wait out the quiet
        time, then hand it the hooks and its own time-out."""
        wait = self.quiet_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.speaker = device
        # one client for every unit: its wait for an answer is the asking device's
        self.client.comm_params.timeout_connect = device.timeout_s

    def keep_quiet(self, timeout_s: float) -> None:
        """A request timed out: no request goes out for ``timeout_s``, the time a late
        answer takes to arrive and be discarded. [s]"""
        self.quiet_until = max(self.quiet_until, time.monotonic() + timeout_s)

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's trace_packet, for the device that spoke last."""
        if self.speaker is None:
            return data
        return self.speaker._on_packet(sending, data)

    def _on_connection(self, connected: bool) -> None:
        """pymodbus's trace_connect: a line lost fails the request on the wire at once (the
        others find the port closed at their next transaction)."""
        if self.speaker is not None:
            self.speaker._on_connection(connected)


def join(device: ModbusRtuDevice) -> RtuBus:
    """The bus of ``device``'s port in the running event loop, with ``device`` on it.

    A bus is found by the port's real path, or by the name a device on it gave: a device
    that opens while the adapter is unplugged cannot follow its ``/dev/serial/by-id`` link,
    and still joins the devices that named the port as it does."""
    buses = _BUSES.setdefault(_loop(), {})
    key = port_key(device.port)
    bus = buses.get(key) or buses.get(device.port)
    if bus is None:
        bus = RtuBus(key, device.port, _settings(device))
    bus.join(device)
    buses[key] = buses[device.port] = bus
    return bus


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _settings(device: ModbusRtuDevice) -> tuple[int, str, int, float]:
    return (device.baudrate, device.parity, device.bytesize, device.stopbits)


def _port(device: ModbusRtuDevice) -> str:
    return device.address_label or device.port
