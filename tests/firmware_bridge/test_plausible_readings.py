"""A device that answers a huge but finite value (1e30 W from a board, an int16 power at
scale factor 10, a 4 MHz grid frequency, a 600 % SoC) answers garbage: the point reads NaN,
the reading is an error naming the device, the point and the value, the other points are
kept, and the capture still holds what was on the wire.  Legitimate values (export as
negative power, large energy counters) are read as before.

::

    modbus: SignalPlant -- ModbusEmulator ==[TCP loopback]== ModbusTcpDevice(capture)
    serial: scripted board ==[pty]== SerialDevice
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from firmware_bridge.backends.serial import SerialDevice
from firmware_bridge.capture import Capture, Status
from firmware_bridge.device import Quality, poll
from firmware_bridge.pty import Pty, TtyStream
from firmware_bridge.serialproto import frames, messages
from firmware_bridge.serialproto.frames import Frame, FrameParser
from firmware_bridge.serialproto.messages import Access, Hello, MsgType, Point

from .aio import run
from .modbus_support import KINDS, SignalPlant, client, emulated

# ------------------------------------------------------------------------------ Modbus


@pytest.mark.parametrize(("kind", "signal", "value", "options", "problem"), [
    # a rack whose scale factor (10, SunSpec's largest) lets its int16 say 300 TW
    ("gpu_rack", "p_w", 3e14, {"rating_w": 1e14},
     "p_w (model 64901 W) = 3e+14 W, outside the plausible -1e+09..1e+09 W"),
    # a 32-bit grid frequency at 1 mHz steps: 4 MHz
    ("inverter", "freq_hz", 4e6, {},
     "freq_hz (model 701 Hz) = 4e+06 Hz, outside the plausible 0..1000 Hz"),
    # SunSpec's SoC is 0..100 %
    ("battery", "soc", 6.0, {},
     "soc (model 802 SoC) = 600 %, outside the plausible -10..110 %"),
    ("gpu_rack", "temp_c", 3000.0, {},
     "temp_c (model 64901 Tmp) = 3000 degC, outside the plausible -273.15..1000 degC"),
])
def test_a_modbus_value_outside_its_unit_is_an_error_naming_device_point_and_value(
        kind: str, signal: str, value: float, options: dict, problem: str) -> None:
    map_name, signals = KINDS[kind]
    plant = SignalPlant({kind: signals})
    capture = Capture()

    async def t() -> None:
        async with emulated(plant, kind, map_name, **options) as e, \
                client(e, map_name, name=f"n.{kind}", capture=capture) as dev:
            plant.signals[kind][signal] = value
            plant.advance(0.1)  # the device's next reading holds it
            r = await poll(dev)
            assert r.quality == Quality.ERROR
            assert r.error == f"n.{kind}: device sent an implausible value for {problem}"
            assert math.isnan(r.values[signal])
            others = {k: v for k, v in r.values.items() if k != signal}
            assert others and all(math.isfinite(v) for v in others.values())
            # what was on the wire is captured as it came: a good frame, garbage inside
            last = capture.transactions(f"n.{kind}")[-1]
            assert last.status == Status.OK and last.function_code == 3 and last.response
            plant.signals[kind][signal] = signals[signal]  # sane again: read as before
            plant.advance(0.1)
            r = await poll(dev)
            assert r.quality == Quality.OK and r.error is None
            assert math.isfinite(r.values[signal])
    run(t())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_legitimate_modbus_values_are_read_as_before(kind: str) -> None:
    """Every kind's operating point (export, charging and reactive power negative), with
    energy counters near the top of their registers."""
    map_name, signals = KINDS[kind]
    big = {"inverter": {"energy_wh": 9e14},      # uint64 at 1 Wh
           "meter": {"e_import_wh": 4.2e9, "e_export_wh": 4.0e9},  # acc32 at 1 Wh
           "gpu_rack": {"energy_wh": 9e14}}.get(kind, {})
    plant = SignalPlant({kind: {**signals, **big}})

    async def t() -> None:
        async with emulated(plant, kind, map_name) as e, client(e, map_name) as dev:
            r = await poll(dev)
            assert r.quality == Quality.OK and r.error is None, r.error
            for name, v in {**signals, **big}.items():
                if name in r.values:
                    assert r.values[name] == pytest.approx(v, rel=1e-3, abs=0.1), name
    run(t())


# ------------------------------------------------------------------------------ serial

HELLO = Hello(1, 0, "battery", (Point(0, "p_w", Access.READ), Point(1, "energy_wh", Access.READ),
                                Point(2, "soc", Access.READ), Point(3, "temp_cell_c", Access.READ),
                                Point(4, "phase", Access.READ)))


@asynccontextmanager
async def board(values: Callable[[], dict[int, float]]) -> AsyncIterator[tuple[str, TtyStream]]:
    """A board on a real pty that answers HELLO, and every READ with ``values()``."""
    parser = FrameParser()
    with Pty() as pty:
        def on_data(data: bytes) -> None:
            for item in parser.feed(data):
                assert isinstance(item, Frame)
                if item.type == MsgType.HELLO:
                    reply = Frame(MsgType.HELLO_REPLY, item.seq, messages.encode_hello(HELLO))
                else:
                    reply = Frame(MsgType.READ_REPLY, item.seq,
                                  messages.encode_values(values()))
                stream.write(frames.encode(reply))
        stream = TtyStream(pty.fd, on_data, lambda exc: None)
        try:
            yield pty.path, stream
        finally:
            stream.close()


SANE = {0: -45_000.0, 1: 2.0 ** 41, 2: 0.5, 3: 31.5, 4: 7.0}  # exporting; a large counter


def test_a_serial_value_outside_its_unit_is_nan_with_an_error_naming_it() -> None:
    answers = iter([{**SANE, 0: 1e30}, {**SANE, 2: 5.0, 3: -300.0}, SANE])

    async def main() -> None:
        async with board(lambda: next(answers)) as (path, _), \
                SerialDevice(path, name="n.battery") as dev:
            r = await poll(dev)
            assert r.quality == Quality.ERROR and math.isnan(r.values["p_w"])
            assert r.error == ("n.battery: board sent an implausible value for p_w (1e+30 W, "
                               "outside the plausible -1e+09..1e+09 W)")
            assert r.values["energy_wh"] == 2.0 ** 41 and r.values["soc"] == 0.5
            r = await poll(dev)
            assert r.quality == Quality.ERROR
            assert r.error == ("n.battery: board sent an implausible value for soc (5, outside "
                               "the plausible -0.1..1.1), temp_cell_c (-300 degC, outside the "
                               "plausible -273.15..1000 degC)")
            assert math.isnan(r.values["soc"]) and math.isnan(r.values["temp_cell_c"])
            assert r.values["p_w"] == -45_000.0
            # legitimate: export, a counter of 2.2 TWh, a code without a unit
            r = await poll(dev)
            assert r.quality == Quality.OK and r.error is None
            assert r.values == pytest.approx({"p_w": -45_000.0, "energy_wh": 2.0 ** 41,
                                              "soc": 0.5, "temp_cell_c": 31.5, "phase": 7.0})
    run(main())


def test_implausible_telemetry_is_flagged_like_a_read() -> None:
    async def main() -> None:
        async with board(lambda: SANE) as (path, stream), \
                SerialDevice(path, name="n.battery") as dev:
            stream.write(frames.encode(Frame(MsgType.TELEMETRY, 0, messages.encode_telemetry(
                1000, {**SANE, 1: -3e38}))))
            for _ in range(200):
                if dev.telemetry() is not None:
                    break
                await asyncio.sleep(0.005)
            r = dev.telemetry()
            assert r is not None and r.quality == Quality.ERROR
            assert r.error == ("n.battery: board sent an implausible value for energy_wh "
                               "(-3e+38 Wh, outside the plausible -1e+15..1e+15 Wh)")
            assert math.isnan(r.values["energy_wh"]) and r.values["p_w"] == -45_000.0
    run(main())
