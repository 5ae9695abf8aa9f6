"""A run in hardware mode against a kit: `gridloop emulate` in its own process stands in for
the physical devices (real Modbus TCP servers on loopback, on the wall clock), and the
scenario names them by address, as a lab engineer's file names the kit's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.recording import open_run

from .kit import REPO, emulated_kit

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"


def _pointed_at(text: str, devices: list[dict]) -> str:
    """``text`` with every emulated asset switched to hardware at its device's address."""
    for d in devices:
        header = f"[nodes.{d['node']}.{d['asset']}]\n"
        assert header in text
        text = text.replace(header, header + 'mode = "hardware"\n'
                            f'device = {{ backend = "modbus_tcp", host = "{d["host"]}", '
                            f'port = {d["port"]}, unit = {d["unit"]} }}\n')
    return text


@pytest.mark.slow
def test_hardware_run_is_paced_and_reads_every_device(tmp_path: Path) -> None:
    with emulated_kit(SCENARIO, 7) as (_, devices):
        scenario = tmp_path / "lab.toml"
        scenario.write_text(_pointed_at(SCENARIO.read_text(), devices))
        out = tmp_path / "lab.h5"
        t0 = time.monotonic()
        # no --realtime: hardware runs on the wall clock all the same
        assert main(["run", str(scenario), "--out", str(out), "--quiet",
                     "--set", "run.mode=hardware", "--set", "run.duration_s=2"]) == 0
        wall = time.monotonic() - t0
    assert wall >= 2.0 * 0.95  # 40 ticks of 50 ms, paced
    with open_run(out) as run:
        assert run.attrs["mode"] == "hardware" and run.attrs["realtime"]
        assert len(run) == 40
        kinds = [k for _, k, _ in run.events()]
        assert "device_open_failed" not in kinds, run.events()
        for d in devices:
            q = run.quality(d["node"], d["asset"])
            assert np.mean(q == 0) >= 0.9, (d["asset"], np.bincount(q))
        for node in ("north", "south"):
            soc = run.signal(node, "battery", "soc")
            twin = run.signal(node, "battery", "soc", "twin")
            assert np.all(np.isfinite(soc[1:])) and np.all((soc >= 0) & (soc <= 1))
            assert np.nanmax(np.abs(soc - twin)) < 0.01
            freq = run.signal(node, "meter", "freq_hz")
            assert np.allclose(freq[1:], freq[1], atol=0.5) and 45 < freq[1] < 65
        wall_s = run.wall
        assert wall_s[-1] >= 39 * 0.05 * 0.95  # each tick on the wall clock



def test_a_device_that_cannot_be_reached_is_named_and_the_run_goes_on(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scenario = tmp_path / "lab.toml"
    scenario.write_text(_pointed_at(SCENARIO.read_text(), [
        {"node": "south", "asset": "battery", "host": "127.0.0.1", "port": port, "unit": 1}]))
    out = tmp_path / "lab.h5"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(scenario), "--out",
                           str(out), "--quiet", "--set", "run.duration_s=0.5",
                           "--set", "run.mode=hardware"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    # the run goes on to its end, and then fails (1): the device never gave a reading
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    said = f"south.battery: cannot connect to 127.0.0.1:{port}"
    assert f"gridloop: warning: {said} (the run goes on" in err
    assert err.strip().splitlines()[-1] == ("gridloop: run failed: no valid reading in any "
                                            "of the 10 ticks from south.battery (10 error); "
                                            "its figures are null")
    assert "Failed to connect" not in err  # pymodbus's own line, which names no device
    with open_run(out) as run:
        assert run.attrs["realtime"]
        assert (0.0, "device_open_failed", said) in run.events()
        assert len(run) == 10 and np.all(run.quality("south", "battery") != 0)
        assert np.mean(run.quality("north", "battery") == 0) >= 0.9  # emulated, unaffected


def _ticks(path: Path) -> int:
    """Ticks recorded so far by a run in progress (0 before its file exists)."""
    if not path.exists():
        return 0
    try:
        with open_run(path) as run:
            return len(run)
    except (OSError, BenchError):  # the writer between two flushes: ask again
        return 0


@pytest.mark.slow
def test_a_kit_lost_mid_run_is_said_at_once_and_in_the_summary(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with emulated_kit(SCENARIO, 7) as (kit, devices):
        meter = [d for d in devices if (d["node"], d["asset"]) == ("north", "meter")]
        scenario = tmp_path / "lab.toml"
        scenario.write_text(_pointed_at(SCENARIO.read_text(), meter))
        out = tmp_path / "lab.h5"
        run = subprocess.Popen([sys.executable, "-m", "bench", "run", str(scenario), "--out",
                                str(out), "--quiet", "--set", "run.mode=hardware",
                                "--set", "run.duration_s=4"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
        deadline = time.monotonic() + 60
        while _ticks(out) < 20 and time.monotonic() < deadline:  # a second of good reads
            time.sleep(0.1)
        kit.kill()  # the kit is lost
        kit.wait()
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert "gridloop: warning: at t = " in stderr and "north.meter" in stderr
    assert stderr.count("north.meter") == 1  # once per streak, not once per tick
    with open_run(out) as rec:
        lost = int(np.sum(rec.quality("north", "meter") != 0))
        assert any(k.startswith("device_") and "north.meter" in m for _, k, m in rec.events())
    assert 10 < lost < 80
    assert "ticks without a reading: north" in stdout
