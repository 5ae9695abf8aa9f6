"""A device whose read timed out this tick is not written in the same tick: the write
would wait out a second deadline (a silent device held every other device's control late:
a real-time run at 0.6x real time, 1.27 s behind after a 2 s outage).  The tick is flagged
as a failed write, and the next tick writes it again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run

SCENARIO = """
[run]
name = "silent"
dt_s = 0.1
duration_s = 3
seed = 3
mode = "emulated"
capture = true
[controller]
name = "schedule"
options = { "lab.battery.p_set_w" = [[0, 0], [1.0, 10000], [1.5, 20000], [2.5, 30000]] }
[nodes.lab.battery]
kind = "battery"
faults = [{ timeout = true, start_s = 1.0, stop_s = 2.0 }]
[nodes.lab.meter]
kind = "meter"
"""


def test_a_tick_whose_read_timed_out_sends_no_write(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "r.h5"
    with pytest.warns(Warning):
        assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        q = run.quality("lab", "battery")
        rows = run.capture("lab.battery")
        t = run.time
        failed = {round(tt, 3): m for tt, k, m in run.events() if k == "device_write_failed"}
    timed_out = np.flatnonzero(q & 3 == 2)
    assert len(timed_out) >= 5
    assert (q[timed_out] & 4).all()  # the setpoint changed there: a failed write, flagged
    # the bench did not send them: not a write that failed on the line
    said = [failed.get(round(t[k], 3), "") for k in timed_out if round(t[k], 3) in failed]
    assert said and all(m.endswith("failed: not sent: its read timed out this tick")
                        for m in said), said
    writes = {int(k) for k, fc in zip(rows["tick"], rows["function_code"]) if fc in (6, 16)}
    assert not writes & set(timed_out.tolist()), (sorted(writes), timed_out)
    # once it answers, the setpoint goes out at that tick
    back = timed_out[-1] + 1
    assert back in writes and t[back] >= 2.0
