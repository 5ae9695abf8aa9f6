"""``gridloop emulate`` serves for longer than the scenario's ``duration_s``: a rack's
workload keeps going past it (it idled there, and a hardware run against the kit later saw
residuals that came from the stand-in), and a profile that does end is said on stderr."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from pathlib import Path

import pytest

from bench.scenario import load

from .kit import in_terminal

KIT = """
[run]
name = "kit"
dt_s = 0.1
duration_s = 1
seed = 1

[controller]
name = "external"

[profiles.train]
kind = "workload"
generator = "training"
options = { step_s = 1.0, compute_fraction = 0.8 }

[nodes.lab.rack]
kind = "gpu_rack"
profile = "train"
"""


def _kit(tmp_path: Path, options: str = "") -> Path:
    path = tmp_path / "kit.toml"
    text = KIT if not options else KIT.replace(
        "compute_fraction = 0.8 }", f"compute_fraction = 0.8, {options} }}")
    path.write_text(text)
    return path


async def _phases(entry: dict, seconds: float) -> list[float]:
    """The rack's ``phase`` as read over Modbus every 50 ms for ``seconds`` of wall clock."""
    from firmware_bridge.registry import open_device

    phases = []
    async with open_device("modbus_tcp", host=entry["host"], port=entry["port"],
                           unit=entry["unit"], map="gpu_rack") as dev:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            reading = await dev.read()
            if reading.values:
                phases.append(reading.values["phase"])
            await asyncio.sleep(0.05)
    return phases


def test_the_workload_keeps_going_past_the_scenarios_duration(tmp_path: Path) -> None:
    """At 10x the clock, 1 s after start the kit is 10 s into a scenario of 1 s: the rack
    still trains (80 % of each step in compute), and nothing said it ran out."""
    with in_terminal("emulate", str(_kit(tmp_path)), "--json", "--speed", "10") as proc:
        assert proc.stdout is not None
        entry = json.loads(proc.stdout.readline())
        time.sleep(0.5)  # simulated t of about 5 s: past duration_s (and its 1 s margin)
        phases = asyncio.run(_phases(entry, 1.0))
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert len(phases) >= 5, err
    assert sum(p == 1 for p in phases) >= len(phases) // 2, phases  # COMPUTE, not idle
    assert "ends at" not in err, err


def test_a_workload_that_ends_is_said_on_stderr(tmp_path: Path) -> None:
    """The job's own stop_s ends it: one line when the emulators' clock passes it."""
    with in_terminal("emulate", str(_kit(tmp_path, "stop_s = 2.0")), "--speed", "10",
                     "--duration", "0.6") as proc:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    says = "emulate: lab.rack: workload profile 'train' ends at t = 2.0 s; the rack idles"
    assert err.count(says) == 1, err
    assert err.index(says) < err.index("emulate: stopped after")


def test_profiles_cover_the_time_served_within_a_budget(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """--duration x --speed is what is generated; until stopped, as long as the budget of
    entries allows (a schedule of the run's length is its rate), and said when it ends."""
    from bench.commands import emulate
    from bench.profiles import profile_end_s

    s = load(_kit(tmp_path), ["run.mode=emulated"])
    assert profile_end_s(emulate.long_drives(s, 50.0)["train"]) >= 50.0
    monkeypatch.setattr(emulate, "ENTRY_BUDGET", 300)  # compute + idle a 1 s step: 150 s
    drives = emulate.long_drives(s, math.inf)
    end = profile_end_s(drives["train"])
    assert 140.0 <= end <= 160.0
    (at, says), = emulate.profile_ends(s, drives)
    assert at == end and f"ends at t = {end:.1f} s" in says
