"""A kit for hardware-mode tests: `gridloop emulate` in its own process stands in for the
physical devices (real Modbus servers on loopback, real serial boards on ptys)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[2]

#: a one-node twin-mode scenario (a grid, a battery) run by the controller ``{module}:C``,
#: named ``{name}``, with ``{checks}`` (a ``[checks]`` table, or nothing) at its end
ONE_NODE_TWIN = """\
[run]
name = "{name}"
dt_s = 0.05
duration_s = 1
mode = "twin"

[controller]
name = "{module}:C"

[nodes.n.grid]
kind = "grid"

[nodes.n.battery]
kind = "battery"
{checks}
"""

#: one lab node after a scenario's [run] and [controller]: PV in the twin behind an
#: inverter, a battery, a meter and a GPU rack training
LAB_NODE = """
[profiles.sun]
kind = "irradiance"
generator = "constant"
options = { value = 800.0 }

[profiles.train]
kind = "workload"
generator = "training"
options = { step_s = 2.0, compute_fraction = 0.7, comm_fraction = 0.2 }

[nodes.lab.pv]
kind = "pv"
profile = "sun"
mode = "twin"

[nodes.lab.inverter]
kind = "inverter"
source = "pv"

[nodes.lab.battery]
kind = "battery"
initial = { soc = 0.6 }

[nodes.lab.meter]
kind = "meter"

[nodes.lab.rack]
kind = "gpu_rack"
profile = "train"
"""


def dc_node(battery: str = "", meter: str = "") -> str:
    """One emulated node ``dc`` after a scenario's [run] and [controller]: a GPU rack
    training in 1 s steps, a battery at 60 % and a meter; ``battery`` and ``meter`` are
    lines added to their tables (a fault card)."""
    return f"""
[profiles.training]
kind = "workload"
generator = "training"
options = {{ step_s = 1.0, compute_fraction = 0.7, comm_fraction = 0.2 }}

[nodes.dc.rack]
kind = "gpu_rack"
params = "rack_h100_4x8gpu"
profile = "training"

[nodes.dc.battery]
kind = "battery"
initial = {{ soc = 0.6 }}
{battery}
[nodes.dc.meter]
kind = "meter"
{meter}"""


@contextmanager
def emulated_kit(scenario: Path, devices: int) -> Iterator[tuple[subprocess.Popen, list[dict]]]:
    """Serve ``scenario``'s emulated devices; yields the process and the ``devices`` address
    lines it prints (``emulate --json``).  Stopped on exit unless the test stopped it."""
    kit = subprocess.Popen([sys.executable, "-m", "bench", "emulate", str(scenario), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        yield kit, [json.loads(kit.stdout.readline()) for _ in range(devices)]
    finally:
        if kit.poll() is None:
            kit.send_signal(signal.SIGTERM)
            try:
                kit.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kit.kill()
                kit.wait()


@contextmanager
def in_terminal(*args: str, stdout: int = subprocess.PIPE) -> Iterator[subprocess.Popen]:
    """``gridloop ARGS`` as a terminal starts it: a process group of its own, so
    ``os.killpg(proc.pid, signal.SIGINT)`` is Ctrl-C; the group is killed on exit if it is
    still running."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=stdout,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def report_figures(recording: Path, out: Path) -> dict[str, Figure]:
    """The figures ``gridloop report`` writes of ``recording`` into ``out``, by file name
    (kept as they are saved, so a test can read their axes)."""
    import pytest

    from bench import report
    from bench.cli import main

    figs: dict[str, Figure] = {}
    save = report._save

    def keep(fig: Figure, path: Path) -> Path:
        figs[path.name] = fig
        return save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "_save", keep)
        assert main(["report", str(recording), "--out", str(out)]) == 0
    return figs
