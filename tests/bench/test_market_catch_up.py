"""A real-time run that skips late ticks (``catch_up = "skip"``) may skip a market interval's
edge: the market takes the edge at the first tick after it, so every interval is still
cleared and settled (the skipped edge's interval was never settled, and its energy went to
the next one's reading)."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest

from bench.cli import main

#: 1 s intervals of 20 ticks; the controller sleeps 0.2 s at t = 0.9 s, so the run skips
#: ticks 19 to 21 or more: the edge at tick 20 among them
SCENARIO = """\
[run]
name = "skip"
dt_s = 0.05
duration_s = 3
mode = "twin"
realtime = true
catch_up = "skip"

[controller]
name = "skip_ctrl:Slow"

[market]
kind = "uniform"
interval_s = 1

[nodes.a.grid]
kind = "grid"

[nodes.a.battery]
kind = "battery"

[nodes.b.grid]
kind = "grid"

[nodes.b.battery]
kind = "battery"
"""

CONTROLLER = """\
import time


class Slow:
    def __init__(self, context):
        self.slept = False

    def step(self, obs):
        if obs.t >= 0.9 and not self.slept:
            self.slept = True
            time.sleep(0.2)
        return {"a.battery.p_set_w": -20000.0, "b.battery.p_set_w": 20000.0}
"""


def test_a_skipped_interval_edge_is_taken_at_the_next_tick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s.toml").write_text(SCENARIO)
    (tmp_path / "skip_ctrl.py").write_text(CONTROLLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "r.h5"
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(out), "--quiet"]) == 0
    with h5py.File(out) as f:
        skips = [e["message"].decode() for e in f["events"][:]
                 if e["kind"] == b"catch_up"]
        readings = f["market/meter_readings"][:]
    skipped = [(int(m.split(" tick(s) from tick ")[1].split(",")[0]),
                int(m.split("skip: ")[1].split(" ")[0])) for m in skips]
    assert any(k <= 20 < k + n for k, n in skipped), skips  # the edge's own tick skipped
    for node, side in ((b"a", "import_wh"), (b"b", "export_wh")):
        mine = readings[readings["node"] == node]
        assert list(mine["interval"]) == [0, 1, 2]
        assert (mine[side] > 0).all()  # a charges at 20 kW from the grid, b discharges into it
    first = readings[readings["interval"] == 0]["t"]
    assert (first > 1.0).all() and (first <= 1.0 + 0.05 * 8).all()  # taken after the edge
    capsys.readouterr()
    assert main(["ledger", "verify", str(tmp_path / "r.ledger.db")]) == 0
    assert "ok: 3 blocks" in capsys.readouterr().out
