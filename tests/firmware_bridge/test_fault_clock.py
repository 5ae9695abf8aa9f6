"""A fault card runs on the device clock (the plant's time), never on the wall clock: a
``disconnect_s`` reboot stays down, however long the wall clock runs, until the plant's time
has moved ``disconnect_s`` on; a back-off counts on the clock it is given; a client that
draws its device's card (a run on the bench's clock) knows which requests get no answer
within its deadline, and waits no longer for those; and every field of a card is checked for
its type.

::

    SignalPlant / LagBattery -- emulator(fault card) ==[TCP | pty]== client back-end
          ^ advanced by hand: the only clock the card follows
"""

from __future__ import annotations

import asyncio
import os

import pytest

from firmware_bridge.backends.backoff import Backoff
from firmware_bridge.backends.serial import SerialDevice
from firmware_bridge.device import Quality, poll
from firmware_bridge.emulators.host import DeviceSpec, EmulatorHost
from firmware_bridge.emulators.serial_server import SerialEmulator
from firmware_bridge.errors import ConfigError, DeviceDisconnected, DeviceTimeout
from firmware_bridge.faults import FaultCard, LockstepFaults
from firmware_bridge.registry import open_device

from .aio import run
from .modbus_support import SignalPlant, client, emulated
from .plants import LagBattery

MAP = "gpu_rack"
SIGNALS = {"p_w": 50_000.0, "energy_wh": 1_000.0, "temp_c": 60.0, "power_cap_w": 90_000.0,
           "phase": 1.0}
#: far longer than the card's downtime: the wall clock must not bring the device back
WALL_WAIT_S = 0.6


def _kinds(events: list[tuple[str, str]]) -> list[str]:
    return [k for k, _ in events]


def test_a_tcp_reboot_lasts_disconnect_s_of_plant_time_not_of_wall_time() -> None:
    events: list[tuple[str, str]] = []
    plant = SignalPlant({"rack": SIGNALS})

    async def t() -> None:
        async with emulated(plant, "rack", MAP, on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=0.2, backoff_s=0.01, backoff_max_s=0.01) as dev:
            e.set_fault(FaultCard(disconnect_s=0.2))
            with pytest.raises(DeviceDisconnected):
                await dev.read()  # the request that struck: the connection is hung up
            await asyncio.sleep(WALL_WAIT_S)
            # three times the downtime later on the wall clock, and the plant has not moved:
            # still down (it takes the connection, then hangs up)
            with pytest.raises(DeviceDisconnected):
                await dev.read()
            plant.advance(0.1)
            await asyncio.sleep(0.02)  # past the client's back-off
            with pytest.raises(DeviceDisconnected):
                await dev.read()
            assert "fault.reconnect" not in _kinds(events)
            plant.advance(0.1)  # the downtime is over on the device clock
            await asyncio.sleep(0.02)
            assert (await dev.read()).quality == Quality.OK
    run(t())
    assert _kinds(events).count("fault.disconnect") == 1
    assert _kinds(events).count("fault.reconnect") == 1
    assert events[-1][1] == "test/rack: back after 0.2 s"


def test_an_rtu_reboot_is_silent_for_disconnect_s_of_plant_time() -> None:
    plant = SignalPlant({"rack": SIGNALS})

    async def t() -> None:
        async with emulated(plant, "rack", MAP, transport="rtu") as e, \
                client(e, MAP, timeout_s=0.1) as dev:
            e.set_fault(FaultCard(disconnect_s=0.2))
            with pytest.raises(DeviceTimeout):
                await dev.read()
            await asyncio.sleep(WALL_WAIT_S)
            with pytest.raises(DeviceTimeout):  # the wall clock alone changes nothing
                await dev.read()
            plant.advance(0.2)
            assert (await dev.read()).quality == Quality.OK
    run(t())


def test_a_serial_board_stays_unplugged_until_its_clock_moves_and_the_host_plugs_it_back(
        ) -> None:
    events: list[tuple[str, str]] = []
    plant = LagBattery()

    async def t() -> None:
        async with SerialEmulator(plant, "battery", ("p_set_w",), seed=1, name="n/battery",
                                  on_event=lambda k, m: events.append((k, m))) as emu:
            async with SerialDevice(emu.path, timeout_s=0.1, backoff_s=0.01,
                                    backoff_max_s=0.01) as dev:
                emu.set_fault(FaultCard(disconnect_s=0.5))
                with pytest.raises(DeviceDisconnected):
                    await dev.read()
                await asyncio.sleep(WALL_WAIT_S)
                assert not os.path.exists(emu.path)  # still unplugged
                plant.advance(0.5)
                # what a host does after stepping the plant: the board is back at once,
                # before anything else runs, so the next request finds it
                emu.clock_advanced()
                assert os.path.exists(emu.path)
                # reported at the next request (or step): when a bench's clock reads the
                # time it came back
                assert "fault.reconnect" not in _kinds(events)
                await asyncio.sleep(0.02)  # past the client's back-off
                assert (await poll(dev)).quality == Quality.OK
    run(t())
    kinds = _kinds(events)
    assert kinds.count("fault.disconnect") == 1 and kinds.count("fault.reconnect") == 1


def test_the_host_brings_a_device_back_in_the_step_that_ends_its_downtime() -> None:
    events: list[tuple[str, str]] = []
    plant = SignalPlant({"rack": SIGNALS})
    spec = DeviceSpec("n", "rack", MAP, fault=FaultCard(disconnect_s=0.5, start_s=0.25))

    async def t() -> None:
        async with EmulatorHost({"n": plant}, [spec],
                                on_event=lambda *e: events.append(e)) as host:
            port = host.describe()[0]["port"]
            dev = open_device("modbus_tcp", host="127.0.0.1", port=port, map=MAP,
                              timeout_s=0.2, backoff_s=0.01, backoff_max_s=0.01)
            async with dev:  # its first read, at 0 s, is before the card's schedule
                host.advance(0.25)
                with pytest.raises(DeviceDisconnected):
                    await dev.read()  # struck at 0.25 s: down until 0.75 s
                host.advance(0.25)
                await asyncio.sleep(0.02)
                with pytest.raises(DeviceDisconnected):
                    await dev.read()
                host.advance(0.25)  # 0.75 s: back; reported at the next request or step
                assert "fault.reconnect" not in _kinds(events)
                await asyncio.sleep(0.02)
                assert (await dev.read()).quality == Quality.OK
                assert _kinds(events).count("fault.reconnect") == 1
                host.advance(0.25)
                assert _kinds(events).count("fault.reconnect") == 1  # once
    run(t())


def test_a_backoff_counts_on_the_clock_it_is_given() -> None:
    now = [10.0]
    backoff = Backoff(0.1, 0.4, "dev", clock=lambda: now[0])
    backoff.check("lost")  # nothing failed yet
    backoff.failed()
    with pytest.raises(DeviceDisconnected, match="next attempt in 0.100 s"):
        backoff.check("lost")
    now[0] += 0.1
    backoff.check("lost")
    backoff.failed()  # then twice as long, at most max_s
    now[0] += 0.19
    with pytest.raises(DeviceDisconnected):
        backoff.check("lost")
    backoff.clock = lambda: 1e9  # the clock can be replaced
    backoff.check("lost")


class Counted(LockstepFaults):
    """A client's copy of the card that counts what it predicted."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.predicted = 0

    def unanswered(self) -> bool:
        late = super().unanswered()
        self.predicted += late
        return late


def test_a_client_drawing_its_devices_card_gives_up_exactly_on_the_unanswered_requests(
        ) -> None:
    events: list[tuple[str, str]] = []
    plant = SignalPlant({"rack": SIGNALS})
    card = FaultCard(timeout=True, probability=0.4, seed=5)
    outcomes: list[Quality] = []

    async def t() -> None:
        async with emulated(plant, "rack", MAP, on_event=lambda *e: events.append(e)) as e, \
                client(e, MAP, timeout_s=0.5, backoff_s=0.01, backoff_max_s=0.01) as dev:
            e.set_fault(card)
            dev.lockstep = Counted(card, 0.02, lambda: plant.t, "modbus_tcp")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for _ in range(20):
                outcomes.append((await poll(dev)).quality)
            # a withheld answer costs the deadline, not the back-end's 0.5 s
            assert loop.time() - t0 < 20 * 0.5 / 4
            assert dev.lockstep.predicted == _kinds(events).count("fault.timeout") > 3
    run(t())
    assert Quality.OK in outcomes and Quality.TIMEOUT in outcomes


@pytest.mark.parametrize("delay_s, quality", [(0.2, Quality.TIMEOUT), (0.03, Quality.OK)])
def test_a_delay_is_judged_against_the_deadline_not_the_wall_clock(
        delay_s: float, quality: Quality) -> None:
    plant = SignalPlant({"rack": SIGNALS})
    card = FaultCard(delay_s=delay_s)

    async def t() -> float:
        async with emulated(plant, "rack", MAP) as e, client(e, MAP, timeout_s=0.5) as dev:
            e.set_fault(card)
            dev.lockstep = LockstepFaults(card, 0.1, lambda: plant.t, "modbus_tcp")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert (await poll(dev)).quality == quality
            return loop.time() - t0
    took = run(t())
    assert took < 0.18  # a late answer is not waited for: the deadline is enough to know


def test_a_serial_client_drawing_its_boards_card_gives_up_at_the_deadline() -> None:
    plant = LagBattery()
    card = FaultCard(delay_s=0.3, start_s=1.0)

    async def t() -> None:
        async with SerialEmulator(plant, "battery", ("p_set_w",), seed=1, fault=card) as emu:
            async with SerialDevice(emu.path, timeout_s=0.5) as dev:
                dev.lockstep = LockstepFaults(card, 0.05, lambda: plant.t, "serial")
                assert (await poll(dev)).quality == Quality.OK
                plant.advance(1.0)
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                reading = await poll(dev)  # two tries, each given up at the deadline
                assert reading.quality == Quality.TIMEOUT and loop.time() - t0 < 0.25
                assert "within 0.05 s (2 attempts)" in (reading.error or "")
    run(t())


@pytest.mark.parametrize("data, message", [
    ({"timeout": "false"}, "timeout must be true or false, got 'false'"),
    ({"frozen": 1}, "frozen must be true or false, got 1"),
    ({"corrupt_crc": "yes"}, "corrupt_crc must be true or false"),
    ({"drop_writes": 0}, "drop_writes must be true or false"),
    ({"start_s": "1"}, "start_s must be a number of seconds .*, got '1'"),
    ({"stop_s": True}, "stop_s must be a number of seconds"),
    ({"start_s": float("nan")}, "start_s must be a number of seconds"),
    ({"delay_s": "0.1"}, "delay_s must be a number >= 0, got '0.1'"),
    ({"delay_s": True}, "delay_s must be a number >= 0, got True"),
    ({"disconnect_s": "2"}, "disconnect_s must be a number >= 0"),
    ({"probability": "0.5"}, "probability must be in \\[0, 1\\], got '0.5'"),
    ({"probability": False}, "probability must be in \\[0, 1\\]"),
    ({"exception_code": True}, "exception_code must be a whole number"),
    ({"exception_code": "4"}, "exception_code must be a whole number"),
    ({"exception_code": 4.0}, "exception_code must be a whole number"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ({"seed": "1"}, "seed must be a whole number"),
])
def test_every_field_of_a_card_is_checked_for_its_type(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^x.toml:3: faults.0: fault card: {message}"):
        FaultCard.from_mapping(data, where="x.toml:3: faults.0")


def test_well_typed_cards_are_taken() -> None:
    card = FaultCard.from_mapping({"timeout": False, "frozen": True, "start_s": 1,
                                   "stop_s": 2.5, "delay_s": 0, "probability": 1,
                                   "exception_code": 4, "seed": -3, "disconnect_s": 0.5})
    assert card.frozen and not card.timeout and card.scheduled(1.0)


@pytest.mark.parametrize(("card", "backend", "unanswered", "never"), [
    (FaultCard(timeout=True), "modbus_rtu", True, True),       # dropped: nothing comes
    (FaultCard(delay_s=0.2), "modbus_rtu", True, False),       # late: an answer comes after
    (FaultCard(delay_s=0.01), "modbus_rtu", False, False),     # within the deadline
    (FaultCard(disconnect_s=1.0), "modbus_rtu", True, True),   # an RTU device reboots silent
    (FaultCard(disconnect_s=1.0), "modbus_tcp", False, False), # a TCP one hangs up at once
])
def test_the_lockstep_card_tells_a_dropped_request_from_a_late_answer(
        card: FaultCard, backend: str, unanswered: bool, never: bool) -> None:
    """An RTU client keeps the line quiet after a timeout so a late answer is not taken for
    the next one's; to a request the emulator drops no answer comes, and the lockstep card
    says so (an RTU fault run waited 0.5 s a timeout for nothing: 7 s for 40 ticks)."""
    lock = LockstepFaults(card, 0.05, lambda: 0.0, backend)
    assert lock.unanswered() is unanswered
    assert lock.never_answered is never
