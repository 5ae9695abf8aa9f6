"""A serial board cannot release an inverter's power setpoint (its protocol has no enable
to clear): the run's end says so, as an event and one warning line, instead of leaving it
without a word; the limit it can set back is written as usual."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.recording import open_run

SCENARIO = """
[run]
name = "serial"
dt_s = 0.1
duration_s = 1
seed = 3
mode = "emulated"
[controller]
name = "schedule"
options = { "lab.inverter.p_set_w" = [[0, 5000]], "lab.inverter.w_max_lim_pct" = [[0, 50]] }
[profiles.sun]
kind = "irradiance"
generator = "constant"
options = { value = 800.0 }
[nodes.lab.pv]
kind = "pv"
profile = "sun"
[nodes.lab.inverter]
kind = "inverter"
source = "pv"
transport = "serial"
"""


def test_a_setpoint_a_serial_board_cannot_release_is_said_at_the_end(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "r.h5"
    with pytest.warns(Warning, match=r"lab\.inverter: p_set_w left at the run's last value "
                                     r"\(the device cannot release it\)"):
        assert main(["run", str(scenario), "--out", str(out), "--quiet"]) == 0
    with open_run(out) as run:
        said = [m for _, k, m in run.events() if k == "safe_state"]
    assert said == ["lab.inverter: p_set_w left at the run's last value (the device cannot "
                    "release it)",
                    "lab.inverter: safe state written: w_max_lim_pct = 100 %"], said
