"""One emulated Modbus device: a pymodbus server on loopback TCP or on a pseudo-terminal.

The server holds no values of its own.  Every request goes to a :class:`RegisterSource`:
:class:`PlantSource` pulls the plant's signals into the register image on each read and turns
writes into plant setpoints through the device's register map; a replay source
(:class:`firmware_bridge.capture.ReplaySource`) answers from a capture.  Function codes 3, 4
(the same registers), 6 and 16; a read outside the image answers exception 02; a write to a
read-only register answers exception 02.  Fault cards (:mod:`firmware_bridge.faults`) act
on the transactions the server answers.

A request for another unit id is answered as real devices do, never as a device failure:
on RTU not at all (an RS-485 slave ignores the requests of the other slaves on its line),
on TCP with exception 0x0B (a gateway whose target device did not respond).  The first such
request of each unit id is reported as an ``emulator.unit`` event.

Several RTU devices on one RS-485 line are several emulators on the drops of one
:class:`~firmware_bridge.pty.PtyBus`: each hears every request and answers its own unit id,
and the requests for its neighbours' unit ids are the line's ordinary traffic, not reported.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Collection, Mapping
from typing import Protocol

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerRTU
from pymodbus.logging import Log
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware_bridge.emulators.base import Emulator
from firmware_bridge.errors import BridgeError, ConfigError
from firmware_bridge.faults import EventSink, FaultCard, FaultInjector, Injection
from firmware_bridge.maps import RegisterMap
from firmware_bridge.plant import Plant
from firmware_bridge.pty import PtyBus, PtyPair
from firmware_bridge.sunspec import DeviceLayout

#: a source's answer meaning "send nothing back" (a recorded timeout)
NO_ANSWER = -1


class RegisterSource(Protocol):
    """What an emulator serves.  Answers are None (registers as they are in ``image``), a
    Modbus exception code, or :data:`NO_ANSWER`."""

    base_address: int

    def image(self) -> list[int]:
        """The register image at start, from :attr:`base_address` on."""

    def now(self) -> float:
        """The device clock fault schedules refer to. [s]"""

    def on_read(self, function_code: int, address: int, count: int,
                image: list[int]) -> int | None:
        """Bring ``image`` up to date for a read of ``[address, address + count)``."""

    def writable(self, address: int, count: int) -> bool:
        """Whether a client may write ``[address, address + count)``."""

    def on_write(self, function_code: int, address: int, values: list[int],
                 image: list[int]) -> int | None:
        """Act on a write; ``image`` already holds ``values``."""


class PlantSource:
    """Asset ``asset`` of ``plant`` seen through register map ``regmap``.

    ``identity`` overrides model 1 points (``SN``, ``DA``).  A signal that the map cannot
    encode (out of range for its scale factor) answers exception 04 and is reported through
    ``on_event`` as ``emulator.error``.
    """

    def __init__(self, plant: Plant, asset: str, regmap: RegisterMap, layout: DeviceLayout,
                 identity: Mapping[str, int | str] | None = None,
                 on_event: EventSink | None = None) -> None:
        if asset not in plant.assets:
            raise ConfigError(f"plant has no asset '{asset}' (has {', '.join(plant.assets)})")
        self.plant = plant
        self.asset = asset
        self.map = regmap
        self.layout = layout
        self.base_address = layout.base_address
        self.identity = dict(identity or {})
        self.on_event = on_event
        #: plant time of the signals in the image (they change only when the plant steps or
        #: is written to, so several reads of one poll encode once)
        self._encoded_at: float | None = None

    def image(self) -> list[int]:
        return self.map.blank(self.layout, self.identity)

    def now(self) -> float:
        return float(self.plant.t)

    def on_read(self, function_code: int, address: int, count: int,
                image: list[int]) -> int | None:
        t = float(self.plant.t)
        if t == self._encoded_at:
            return None
        try:
            self.map.encode_into(image, self.layout, self.plant.read(self.asset))
        except BridgeError as exc:
            self._encoded_at = None
            if self.on_event is not None:
                self.on_event("emulator.error", f"{self.asset}: {exc}")
            return ExcCodes.DEVICE_FAILURE
        self._encoded_at = t
        return None

    def on_write(self, function_code: int, address: int, values: list[int],
                 image: list[int]) -> int | None:
        setpoints = self.map.controls_written(image, self.layout, address, len(values))
        if setpoints:
            self.plant.write(self.asset, setpoints)
            self._encoded_at = None  # a write may change what the plant reports
        return None

    def writable(self, address: int, count: int) -> bool:
        return self.map.writable(self.layout, address, count)


class _OwnRequestHandler(ServerRequestHandler):
    """pymodbus's request handler, answering each request from its own PDU.

    pymodbus keeps the request it serves in ``last_pdu`` and reads it again once the
    datastore has answered, and every frame heard meanwhile clears it: on an RS-485 line the
    next request to any unit, so a slow answer was lost (its task failing without a word).
    A slave on a real line answers late all the same, and the master's quiet time after a
    time-out is there for that answer: so does this one.  (pymodbus's broadcast and
    unknown-unit branches are not needed: no server here broadcasts, and
    :meth:`ModbusEmulator._trace_pdu` drops the requests for other unit ids.)
    """

    async def handle_request(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        try:
            response = await pdu.datastore_update(self.server.context, pdu.dev_id)
        except Exception as exc:  # as pymodbus: said, and answered as a device failure
            Log.error("Datastore unable to fulfill request: {}; {}", exc,
                      traceback.format_exc())
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, addr)


class _SerialServer(ModbusSerialServer):
    """pymodbus's RTU server, whose requests each keep their own PDU (see above)."""

    def callback_new_connection(self) -> ServerRequestHandler:
        return _OwnRequestHandler(self, self.trace_packet, self.trace_pdu,
                                  self.trace_connect)


class ModbusEmulator(Emulator):
    """A Modbus server answering for one device.

    Parameters
    ----------
    source : RegisterSource
        What the device answers.
    unit : int
        Modbus unit id (1-247).
    transport : str
        ``"tcp"`` or ``"rtu"`` (over a pseudo-terminal pair made here, or a drop of ``bus``).
    host, port : str, int
        TCP address; port 0 picks a free port.  Bind to loopback unless told otherwise.
    baudrate, parity, bytesize, stopbits : int, str, int, int
        RTU line settings of the device.  The server opens its end of the pty pair at the
        baud rate and stop bits; a pty carries no parity and no data size but 8 bits (Linux
        refuses to set them), so that end stays 8 bits, no parity, whatever the device's.
    fault : FaultCard or None
        Faults at start; :meth:`set_fault` changes them at run time.
    on_event : callable or None
        ``on_event(kind, message)`` for each injected fault and each reboot.
    name : str
        Device name in events (``node/asset``).
    bus : PtyBus or None
        An RS-485 line shared with other emulated slaves (RTU only): the server opens drop
        ``drop`` of it; whoever made the bus opens it before :meth:`start` and closes it
        after :meth:`stop`.  None: a pty pair of the device's own.
    drop : int
        Which drop of ``bus``.
    neighbours : collection of int
        The unit ids of the other slaves on ``bus``, whose requests it ignores without a
        word.
    """

    def __init__(self, source: RegisterSource, *, unit: int = 1, transport: str = "tcp",
                 host: str = "127.0.0.1", port: int = 0, baudrate: int = 19200,
                 parity: str = "N", bytesize: int = 8, stopbits: int = 1,
                 fault: FaultCard | None = None,
                 on_event: EventSink | None = None, name: str = "",
                 bus: PtyBus | None = None, drop: int = 0,
                 neighbours: Collection[int] = ()) -> None:
        if transport not in ("tcp", "rtu"):
            raise ConfigError(f"emulator {name}: transport must be 'tcp' or 'rtu', "
                              f"got {transport!r}")
        if not 1 <= int(unit) <= 247:
            raise ConfigError(f"emulator {name}: unit id must be 1..247, got {unit}")
        if bus is not None and transport != "rtu":
            raise ConfigError(f"emulator {name}: only an RTU device is on an RS-485 bus "
                              f"(this one is {transport})")
        if bus is not None and not 0 <= drop < bus.n_drops:
            raise ConfigError(f"emulator {name}: drop {drop} of a bus of {bus.n_drops}")
        self.source = source
        self.unit = int(unit)
        self.transport = transport
        self.host = host
        self.port = int(port)
        self.baudrate = int(baudrate)
        self.parity = parity
        self.bytesize = int(bytesize)
        self.stopbits = int(stopbits)
        #: unit ids asked for that this device is not (each reported once)
        self.foreign_units: set[int] = set()
        self.on_event = on_event
        self.name = name or f"unit {unit}"
        self.transactions = 0
        self._image = source.image()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._link: PtyPair | None = None
        self._bus = bus
        self._drop = int(drop)
        #: unit ids of the other slaves on its line: their requests are no news
        self.neighbours = frozenset(int(u) for u in neighbours) - {self.unit}
        self._drop_answer = False
        self._corrupt_answer = False
        self._sleeping: set[asyncio.Task] = set()
        #: the fault card in force and its draws
        self.faults = FaultInjector(None, self.name, source.now, on_event)
        self.set_fault(fault)

    # ------------------------------------------------------------------ lifecycle

    @property
    def serial_port(self) -> str | None:
        """The pseudo-terminal a client opens (RTU only; on a bus, the bus's)."""
        if self._bus is not None:
            return self._bus.path if self._bus.is_open else None
        return self._link.paths[1] if self._link else None

    @property
    def _server_port(self) -> str:
        """Our end of the line: a drop of the bus, or of our own pty pair."""
        if self._bus is not None:
            return self._bus.drops[self._drop]
        assert self._link is not None
        return self._link.paths[0]

    async def start(self) -> None:
        """Start serving; for TCP with port 0, :attr:`port` is the port bound."""
        if self._server is not None:
            return
        if self._bus is not None and not self._bus.is_open:
            raise ConfigError(f"emulator {self.name}: its RS-485 bus is not open")
        if self.transport == "rtu" and self._bus is None and self._link is None:
            self._link = PtyPair()
            await self._link.open()
        try:
            await self._serve()
        except BaseException:
            await self.stop()
            raise

    async def _serve(self) -> None:
        device = SimDevice(self.unit, simdata=[SimData(self.source.base_address,
                                                       values=list(self._image),
                                                       datatype=DataType.REGISTERS)],
                           action=self._action)
        if self.transport == "tcp":
            server: ModbusTcpServer | ModbusSerialServer = ModbusTcpServer(
                device, address=(self.host, self.port), trace_packet=self._trace_packet,
                trace_pdu=self._trace_pdu)
        else:
            # our end of the line: no parity, 8 bits (a pty carries neither; see above)
            server = _SerialServer(device, port=self._server_port,
                                   baudrate=self.baudrate, stopbits=self.stopbits,
                                   trace_packet=self._trace_packet,
                                   trace_pdu=self._trace_pdu)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            await server.shutdown()
            where = (f"{self.host}:{self.port}" if self.transport == "tcp"
                     else self._server_port)
            raise ConfigError(f"emulator {self.name}: cannot listen on {where}: {exc}") from None
        if self.transport == "tcp" and self.port == 0:
            self.port = server.transport.sockets[0].getsockname()[1]
        self._server = server

    async def stop(self) -> None:
        """Stop serving and release the port or pty; safe to call twice."""
        pending = list(self._sleeping)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        if self._link is not None:
            await self._link.close()
            self._link = None

    # ------------------------------------------------------------------ faults

    def set_fault(self, card: FaultCard | None) -> None:
        """Replace the device's fault card (None clears it); a new card may reboot again."""
        if card is not None and card.corrupt_crc and self.transport != "rtu":
            raise ConfigError(f"emulator {self.name}: corrupt_crc applies to RTU devices "
                              f"only (this one is {self.transport})")
        self.faults.set_card(card)

    def _rebooting(self) -> None:
        """Down after a reboot (its ``disconnect_s`` on the device clock): no answer.  On
        TCP the device hangs up every connection, the open ones and each new one at its first
        request, so clients see the connection lost; the port stays bound, so nothing can
        take it meanwhile.  An RTU device cannot hang up: it is silent."""
        self._drop_answer = True
        if self.transport == "tcp":
            # after this request's (empty) answer has gone out
            asyncio.get_running_loop().call_soon(self._hang_up)

    def _hang_up(self) -> None:
        if self._server is not None:
            for connection in list(self._server.active_connections.values()):
                connection.close()

    # ------------------------------------------------------------------ serving

    async def _action(self, function_code: int, start: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None
                      ) -> ExcCodes | None:
        if values is None and function_code in (6, 16):
            return None  # pymodbus reads the written registers back for the answer
        write = values is not None
        self.transactions += 1
        self.faults.back()  # a plant stepped without a host: the device may be back by now
        self.faults.flush()
        if self.faults.down():
            self._rebooting()
            return None
        hit = self.faults.draw(f"FC{function_code} {address}+{count}", reads=not write,
                               writes=write)
        if hit.reboot_s:
            self._rebooting()
            return None
        if hit.timeout:
            self._drop_answer = True
            return None
        # a write reaches the plant as it arrives, at the device time of the request (so a
        # run on the bench's clock applies it at the same tick however late its answer is);
        # a read samples the plant when its answer goes out
        if write:
            answer, image = self._act(function_code, start, address, count, values, hit)
        if hit.delay_s:
            await self._sleep(hit.delay_s)
        if not write:
            answer, image = self._act(function_code, start, address, count, values, hit)
        if image is not None:
            registers[:len(image)] = image
        if answer == NO_ANSWER:
            self._drop_answer = True
            return None
        self._corrupt_answer = hit.corrupt_crc
        return ExcCodes(answer) if answer is not None else None

    def _act(self, function_code: int, start: int, address: int, count: int,
             values: list[int] | list[bool] | None, hit: Injection
             ) -> tuple[int | None, list[int] | None]:
        """Serve one request: its answer (None, an exception code or :data:`NO_ANSWER`),
        and for a read the registers to answer with."""
        if hit.exception_code is not None:
            return hit.exception_code, None
        offset = address - start
        if values is not None:
            written = [int(v) for v in values]
            if not self.source.writable(address, count):
                return ExcCodes.ILLEGAL_ADDRESS, None
            before = self._image[offset:offset + count]
            if hit.drop_write:
                values[:] = before  # type: ignore[index]
                return None, None
            self._image[offset:offset + count] = written
            answer = self.source.on_write(function_code, address, written, self._image)
            if answer is not None:  # refused: the registers keep what they held
                self._image[offset:offset + count] = before
            return answer, None
        answer = (None if hit.frozen else
                  self.source.on_read(function_code, address, count, self._image))
        return answer, list(self._image)

    async def _sleep(self, delay_s: float) -> None:
        """Sleep inside a request; :meth:`stop` cancels requests still sleeping."""
        task = asyncio.current_task()
        assert task is not None
        self._sleeping.add(task)
        try:
            await asyncio.sleep(delay_s)
        finally:
            self._sleeping.discard(task)

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """First hook after the framer: a request for another unit id is not ours to serve
        (pymodbus would answer it exception 04 and log a traceback)."""
        if sending or pdu.dev_id == self.unit:
            return pdu
        unit = pdu.dev_id
        if self.transport == "rtu":
            if unit not in self.neighbours:  # a neighbour's: the line's ordinary traffic
                self._foreign(unit, "no answer (another slave's request)")
            return None  # pymodbus drops a request it gets no PDU for: the line stays quiet
        self._foreign(unit, "exception 0x0B (gateway target device failed to respond)")
        function_code = pdu.function_code

        async def gateway_no_response(context: object, device_id: int) -> ModbusPDU:
            return ExceptionResponse(function_code, ExcCodes.GATEWAY_NO_RESPONSE)

        pdu.datastore_update = gateway_no_response  # type: ignore[method-assign]
        return pdu

    def _foreign(self, unit: int, answer: str) -> None:
        if unit in self.foreign_units:
            return
        self.foreign_units.add(unit)
        if self.on_event is not None:
            self.on_event("emulator.unit", f"{self.name}: request for unit {unit}, which this "
                                           f"device is not (it is unit {self.unit}): {answer}")

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Last hook before the wire: drop an answer or spoil its CRC, as the faults say."""
        if not sending:
            return data
        if self._drop_answer:
            self._drop_answer = False
            self._corrupt_answer = False
            return b""
        if self._corrupt_answer:
            self._corrupt_answer = False
            crc = FramerRTU.compute_CRC(data[:-2]) ^ 0xFFFF
            return data[:-2] + crc.to_bytes(2, "big")
        return data
