"""Every fault card, injected by an emulator and seen by the client exactly as that fault.

::

    SignalPlant -- ModbusEmulator(fault card) ==[TCP | pty]== ModbusTcpDevice / ModbusRtuDevice
                         |
                         +-- on_event(kind, message) -> events
"""

from __future__ import annotations

import asyncio
import time

import pytest

from firmware_bridge.device import Quality, poll
from firmware_bridge.errors import (
    ConfigError,
    DeviceDisconnected,
    DeviceTimeout,
    ExceptionResponse,
    FrameError,
)
from firmware_bridge.faults import NO_FAULT, FaultCard, FaultInjector
from firmware_bridge.registry import open_device

from .aio import run
from .modbus_support import SignalPlant, client, emulated

MAP = "gpu_rack"
SIGNALS = {"p_w": 50_000.0, "energy_wh": 1_000.0, "temp_c": 60.0, "power_cap_w": 90_000.0,
           "phase": 1.0}
TIMEOUT_S = 0.2


def _plant() -> SignalPlant:
    # power and energy move every time the plant advances
    return SignalPlant({"rack": SIGNALS}, ramp={"p_w": 1_000.0, "energy_wh": 3_600.0})


def _kinds(events: list[tuple[str, str]]) -> list[str]:
    return [k for k, _ in events]


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_timeout_card_is_a_device_timeout(transport: str) -> None:
    events: list[tuple[str, str]] = []
    plant = _plant()

    async def t() -> None:
        async with emulated(plant, "rack", MAP, transport=transport,
                            on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S) as dev:
            e.set_fault(FaultCard(timeout=True))
            with pytest.raises(DeviceTimeout, match="no answer"):
                await dev.read()
            flagged = await poll(dev)
            assert flagged.quality == Quality.TIMEOUT and flagged.values == {}
            e.set_fault(None)
            assert (await dev.read()).quality == Quality.OK
    run(t())
    assert "fault.timeout" in _kinds(events)
    assert all("rack" in m for _, m in events)


@pytest.mark.parametrize("code", [0x01, 0x02, 0x04, 0x06, 0x0B])
def test_exception_card_answers_that_code(code: int) -> None:
    events: list[tuple[str, str]] = []

    async def t() -> None:
        async with emulated(_plant(), "rack", MAP, on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S) as dev:
            e.set_fault(FaultCard(exception_code=code))
            with pytest.raises(ExceptionResponse) as caught:
                await dev.read()
            assert caught.value.code == code
            assert f"{code:#04x}" in str(caught.value)
            assert (await poll(dev)).quality == Quality.ERROR
    run(t())
    assert _kinds(events).count("fault.exception") == 2


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_delay_card_delays_the_answer_and_beyond_the_deadline_times_out(transport: str) -> None:
    events: list[tuple[str, str]] = []
    plant = _plant()

    async def t() -> None:
        async with emulated(plant, "rack", MAP, transport=transport,
                            on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S) as dev:
            e.set_fault(FaultCard(delay_s=0.05))
            slow = await dev.read()
            assert slow.quality == Quality.OK and slow.rtt_s >= 0.05
            assert slow.values["p_w"] == pytest.approx(50_000.0)
            e.set_fault(FaultCard(delay_s=2 * TIMEOUT_S))
            with pytest.raises(DeviceTimeout):
                await dev.read()
            # the late answer must not be taken for the answer to the next request
            e.set_fault(None)
            plant.advance(1.0)
            assert (await dev.read()).values["p_w"] == pytest.approx(51_000.0)
    run(t())
    assert "fault.delay" in _kinds(events)


def test_frozen_card_serves_stale_registers_flagged_stale() -> None:
    events: list[tuple[str, str]] = []
    plant = _plant()

    async def t() -> None:
        async with emulated(plant, "rack", MAP, on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S, stale_after_s=0.1) as dev:
            first = await dev.read()
            e.set_fault(FaultCard(frozen=True))
            readings = []
            for _ in range(4):
                plant.advance(1.0)  # the plant moves on...
                await asyncio.sleep(0.06)
                readings.append(await dev.read())
            # ...the registers do not
            assert all(r.values == readings[0].values for r in readings)
            assert readings[0].values["p_w"] == pytest.approx(first.values["p_w"])
            assert first.quality == Quality.OK
            assert readings[-1].quality == Quality.STALE  # unchanged for over 0.1 s
            e.set_fault(None)
            moving = await dev.read()
            assert moving.quality == Quality.OK
            assert moving.values["p_w"] == pytest.approx(plant.read("rack")["p_w"])
    run(t())
    assert "fault.frozen" in _kinds(events)


def test_corrupt_crc_card_is_a_frame_error_on_rtu() -> None:
    events: list[tuple[str, str]] = []

    async def t() -> None:
        async with emulated(_plant(), "rack", MAP, transport="rtu",
                            on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S) as dev:
            e.set_fault(FaultCard(corrupt_crc=True))
            with pytest.raises(FrameError, match="bad CRC"):
                await dev.read()
            e.set_fault(None)
            assert (await dev.read()).quality == Quality.OK
    run(t())
    assert "fault.corrupt_crc" in _kinds(events)


def test_corrupt_crc_card_is_refused_on_tcp() -> None:
    async def t() -> None:
        async with emulated(_plant(), "rack", MAP) as e:
            with pytest.raises(ConfigError, match="corrupt_crc applies to RTU"):
                e.set_fault(FaultCard(corrupt_crc=True))
    run(t())


def test_drop_writes_card_acknowledges_writes_that_never_reach_the_plant() -> None:
    events: list[tuple[str, str]] = []
    plant = _plant()

    async def t() -> None:
        async with emulated(plant, "rack", MAP, on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S) as dev:
            e.set_fault(FaultCard(drop_writes=True))
            await dev.write({"power_cap_w": 40_000.0})  # no error: acknowledged
            assert plant.written["rack"] == []
            assert (await dev.read()).values["power_cap_w"] == pytest.approx(90_000.0)
            e.set_fault(None)
            await dev.write({"power_cap_w": 40_000.0})
            assert plant.written["rack"] == [{"power_cap_w": 40_000.0}]
    run(t())
    assert "fault.drop_writes" in _kinds(events)


def test_disconnect_card_drops_the_connection_then_the_device_comes_back() -> None:
    events: list[tuple[str, str]] = []
    plant = _plant()

    async def t() -> None:
        async with emulated(plant, "rack", MAP, on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S, backoff_s=0.05, backoff_max_s=0.1) as dev:
            e.set_fault(FaultCard(disconnect_s=0.3))
            with pytest.raises(DeviceDisconnected):
                await dev.read()
            with pytest.raises(DeviceDisconnected):  # refused while it reboots
                await dev.read()
            plant.advance(0.3)  # the downtime is on the device clock
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                reading = await poll(dev)
                if reading.quality == Quality.OK:
                    break
                assert reading.quality == Quality.ERROR, reading
                await asyncio.sleep(0.05)
            assert reading.quality == Quality.OK  # reconnected and rescanned
            assert reading.values["p_w"] == pytest.approx(50_000.0 + 0.3 * 1_000.0)
    run(t())
    assert _kinds(events).count("fault.disconnect") == 1
    assert "fault.reconnect" in _kinds(events)


def test_disconnect_card_on_rtu_is_silence_then_answers() -> None:
    plant = _plant()

    async def t() -> None:
        async with emulated(plant, "rack", MAP, transport="rtu") as e, \
                client(e, MAP, timeout_s=TIMEOUT_S) as dev:
            e.set_fault(FaultCard(disconnect_s=0.3))
            with pytest.raises(DeviceTimeout):
                await dev.read()
            plant.advance(0.3)  # the downtime is on the device clock
            deadline = time.monotonic() + 5
            while (await poll(dev)).quality != Quality.OK:
                assert time.monotonic() < deadline
    run(t())


def test_schedule_strikes_only_inside_its_window_of_plant_time() -> None:
    plant = _plant()

    async def t() -> None:
        async with emulated(plant, "rack", MAP,
                            fault=FaultCard(exception_code=4, start_s=10.0, stop_s=20.0)) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S) as dev:
            assert (await dev.read()).quality == Quality.OK
            plant.advance(12.0)
            with pytest.raises(ExceptionResponse):
                await dev.read()
            plant.advance(10.0)
            assert (await dev.read()).quality == Quality.OK
    run(t())


def test_probability_draws_are_reproducible_with_the_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        card = FaultCard(exception_code=4, probability=0.5, seed=seed)
        injector = FaultInjector(card, "x", clock=lambda: 0.0)
        return [injector.draw("FC3 40000+10", reads=True).exception_code is not None
                for _ in range(200)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 60 < sum(pattern(7)) < 140


def test_an_unsolicited_frame_is_struck_by_frozen_and_corrupt_crc_only() -> None:
    events: list[tuple[str, str]] = []
    card = FaultCard(delay_s=0.1, timeout=True, frozen=True, corrupt_crc=True,
                     drop_writes=True, disconnect_s=1.0)
    injector = FaultInjector(card, "n1/bms", lambda: 0.0, lambda *e: events.append(e))
    telemetry = injector.draw("TELEMETRY seq 0", reads=True, reply=False)
    assert (telemetry.frozen, telemetry.corrupt_crc) == (True, True)
    assert (telemetry.delay_s, telemetry.reboot_s, telemetry.timeout,
            telemetry.exception_code, telemetry.drop_write) == (0.0, 0.0, False, None, False)
    assert _kinds(events) == ["fault.set", "fault.frozen", "fault.corrupt_crc"]
    assert events[0][1] == ("n1/bms: delay_s=0.1, timeout=True, frozen=True, "
                            "corrupt_crc=True, drop_writes=True, disconnect_s=1.0")
    # the reboot is left for the first request, which it takes whole; then timeouts
    assert injector.draw("READ seq 1", reads=True).reboot_s == 1.0
    after = injector.draw("READ seq 2", reads=True)
    assert (after.reboot_s, after.timeout, after.delay_s, after.frozen) == (0.0, True, 0.0, False)
    assert _kinds(events)[3:] == ["fault.disconnect", "fault.timeout"]
    injector.set_card(None)
    assert injector.draw("READ seq 3", reads=True) == NO_FAULT
    assert events[-1] == ("fault.set", "n1/bms: cleared")


def test_probability_on_the_wire() -> None:
    async def t() -> list[Quality]:
        async with emulated(_plant(), "rack", MAP) as e, \
                client(e, MAP, timeout_s=TIMEOUT_S) as dev:
            e.set_fault(FaultCard(exception_code=6, probability=0.5, seed=3))
            return [(await poll(dev)).quality for _ in range(20)]
    qualities = run(t())
    assert Quality.OK in qualities and Quality.ERROR in qualities


@pytest.mark.parametrize("data, message", [
    ({"timeot": True}, "unknown fault 'timeot' .*did you mean 'timeout'"),
    ({"exception_code": 12}, "exception_code 12 is not a Modbus exception code"),
    ({"probability": 1.5}, "probability must be in"),
    ({"delay_s": -1}, "delay_s must be a number >= 0"),
    ({"start_s": 5, "stop_s": 5}, "stop_s .* must be after start_s"),
])
def test_malformed_cards_are_refused_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FaultCard.from_mapping(data, where="scenario.toml: devices.n1.inv.fault")


def test_a_failing_device_never_stops_the_others() -> None:
    async def t() -> None:
        async with emulated(_plant(), "rack", MAP, fault=FaultCard(timeout=True)) as bad, \
                emulated(_plant(), "rack", MAP) as good, \
                client(good, MAP, timeout_s=TIMEOUT_S) as healthy:
            stuck = client(bad, MAP, timeout_s=TIMEOUT_S)
            with pytest.raises(DeviceTimeout):
                await stuck.open()
            done = 0

            async def keep_polling() -> None:
                nonlocal done
                while True:
                    assert (await poll(healthy)).quality == Quality.OK
                    done += 1

            poller = asyncio.create_task(keep_polling())
            try:
                assert (await poll(stuck)).quality == Quality.TIMEOUT
            finally:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
                await stuck.close()
            assert done >= 3  # healthy reads went on while the other waited for its deadline
    run(t())


def test_reconnects_back_off_exponentially() -> None:
    async def t() -> None:
        async with emulated(_plant(), "rack", MAP) as e:
            port = e.port
        dev = open_device("modbus_tcp", host="127.0.0.1", port=port, map=MAP, timeout_s=0.2,
                          backoff_s=0.1, backoff_max_s=0.4)
        waits = []
        try:
            with pytest.raises(DeviceDisconnected, match="cannot connect"):
                await dev.open()
            for _ in range(4):
                with pytest.raises(DeviceDisconnected, match=r"next attempt in") as caught:
                    await dev.read()  # inside the back-off: no connection attempt
                waits.append(float(str(caught.value).split("in ")[-1].split(" s")[0]))
                await asyncio.sleep(waits[-1] + 0.01)
                with pytest.raises(DeviceDisconnected, match="cannot connect"):
                    await dev.read()
        finally:
            await dev.close()
        assert waits[0] <= 0.1 and 0.1 < waits[1] <= 0.2 and 0.2 < waits[2] <= 0.4
        assert 0.2 < waits[3] <= 0.4  # bounded by backoff_max_s
    run(t())


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_a_read_cancelled_at_its_deadline_leaves_no_late_answer_behind(transport: str) -> None:
    """The bench cancels a read at the tick's deadline, well before the device's own timeout:
    the slow device's late answer must not be taken for the answer to the next read."""
    plant = _plant()

    async def t() -> None:
        async with emulated(plant, "rack", MAP, transport=transport) as e, \
                client(e, MAP, timeout_s=1.0) as dev:
            e.set_fault(FaultCard(delay_s=0.15))
            for _ in range(3):  # ticks whose deadline passes before the answer comes
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(dev.read(), 0.05)
            e.set_fault(None)
            plant.advance(1.0)
            # RTU waits out the line (a master may not speak before the answer or the
            # timeout); TCP starts a fresh connection
            fresh = await asyncio.wait_for(dev.read(), 2.5)
            assert fresh.quality == Quality.OK
            assert fresh.values["p_w"] == pytest.approx(51_000.0)
            plant.advance(1.0)
            assert (await dev.read()).values["p_w"] == pytest.approx(52_000.0)
    run(t())
