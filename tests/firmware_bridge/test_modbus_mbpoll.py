"""Debian's mbpoll (libmodbus), an independent Modbus client, reads the emulators over TCP
and RTU.  Skipped only where mbpoll is not installed (CI installs it in .ci/run)."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from .aio import run
from .modbus_support import KINDS, SignalPlant, emulated

pytestmark = pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll not installed")


async def _mbpoll(*args: str) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-a", "1", "-0", "-1", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    return [line.split(":", 1)[1].strip() for line in out.decode().splitlines()
            if line.startswith("[")]


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_mbpoll_reads_the_marker_and_a_32_bit_value(transport: str) -> None:
    map_name, signals = KINDS["inverter"]
    plant = SignalPlant({"inverter": signals})

    async def t() -> None:
        async with emulated(plant, "inverter", map_name, transport=transport) as e:
            line = (["-m", "tcp", "-p", str(e.port), "127.0.0.1"] if transport == "tcp" else
                    ["-m", "rtu", "-b", "19200", "-P", "none", str(e.serial_port)])
            marker = await _mbpoll("-r", "40000", "-c", "4", "-t", "4:hex", *line)
            # 701 Hz (uint32, Hz_SF = -3) at 40087, big-endian word order
            hz = await _mbpoll("-B", "-r", "40087", "-c", "1", "-t", "4:int", *line)
        assert marker == ["0x5375", "0x6E53", "0x0001", "0x0042"]  # SunS, model 1, L = 66
        assert hz == ["50012"]
    run(t())


def test_mbpoll_writes_the_gpu_rack_power_cap() -> None:
    map_name, signals = KINDS["gpu_rack"]
    plant = SignalPlant({"rack": signals})

    async def t() -> None:
        async with emulated(plant, "rack", map_name) as e:
            # WCap at 40074, W_SF = 1: 6000 is 60 kW (docs/gpu-rack-map.md)
            await _mbpoll("-r", "40074", "-p", str(e.port), "127.0.0.1", "6000")
    run(t())
    assert plant.written["rack"] == [{"power_cap_w": 60_000.0}]
