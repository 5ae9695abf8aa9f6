"""A device that was lost and answers again may have rebooted to its own defaults: the
bench writes every setpoint again at the next tick, changed or not (it wrote only changed
values, so a kit that power-cycled ran uncommanded while the recording said otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.recording import open_run

SCENARIO = """
[run]
name = "recover"
dt_s = 0.1
duration_s = 4
seed = 3
mode = "emulated"
capture = true
[controller]
name = "schedule"
options = { "lab.battery.p_set_w" = [[0, 20000]] }
[nodes.lab.battery]
kind = "battery"
faults = [{ disconnect_s = 1.0, start_s = 1.0 }]
[nodes.lab.meter]
kind = "meter"
"""


def test_every_setpoint_is_written_again_once_a_lost_device_answers(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "r.h5"
    with pytest.warns(Warning):
        assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        (back,) = [t for t, k, _ in run.events() if k == "device_recovered"]
        rows = run.capture("lab.battery")
        t = run.time
    writes = [t[k] for k, fc, status in zip(rows["tick"], rows["function_code"], rows["status"])
              if fc in (6, 16) and status == 0 and k >= 0]
    # the constant setpoint: written once at the start, again at the tick after recovery,
    # then not again (and the safe state after the last tick, outside the ticks)
    assert writes[0] == 0.0
    assert [w for w in writes if w > 0.0] == [pytest.approx(back + 0.1)], (back, writes)
