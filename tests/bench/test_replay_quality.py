"""``gridloop replay`` gives the controller each recorded reading's quality code with its
value, tick by tick, as the recorded run did, and its recording keeps those codes: a reading
that timed out or failed is not replayed as ``0`` (ok)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.cli import main
from bench.errors import DeviceWarning

from .kit import dc_node

#: emulated devices that fail part of the run: the battery times out from 1 s to 1.5 s (its
#: setpoint writes fail too: flag 6), the meter answers with a Modbus exception from 2 s to
#: 2.5 s (flag 3)
FAULTY = """[run]
dt_s = 0.05
duration_s = 3
seed = 3
mode = "emulated"
deadline_s = 0.04

[controller]
name = "replay_quality_ctrl:Gated"

""" + dc_node(battery="faults = [{ timeout = true, start_s = 1, stop_s = 1.5 }]\n",
                meter="faults = [{ exception_code = 4, start_s = 2, stop_s = 2.5 }]\n")

#: uses a reading only when its quality says it is good (the documented way), and logs what
#: it was given each tick
CONTROLLER = """import json
import math


class Gated:
    def __init__(self, context, log=""):
        self.log = log
        self.p = 0.0

    def step(self, obs):
        q = {a: obs.quality("dc", a) for a in ("battery", "meter", "rack")}
        meter, soc = obs["dc.meter.p_w"], obs["dc.battery.soc"]
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"t": round(obs.t, 6), "q": q,
                                    "nan": [math.isnan(meter), math.isnan(soc)]}) + "\\n")
        if q["meter"] == 0:
            self.p = 0.1 * (meter - 30000.0)
        return {"dc.battery.p_set_w": self.p}
"""


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An emulated run of the gated controller, with its log of what it was given."""
    folder = tmp_path_factory.mktemp("faulty")
    (folder / "faulty.toml").write_text(FAULTY)
    (folder / "replay_quality_ctrl.py").write_text(CONTROLLER)
    out = folder / "faulty.h5"
    try:
        with pytest.warns(DeviceWarning):
            assert main(["run", str(folder / "faulty.toml"), "--out", str(out), "--quiet",
                         "--set", f"controller.options.log={json.dumps(str(folder / 'live.jsonl'))}"]
                        ) == 0
    finally:
        sys.modules.pop("replay_quality_ctrl", None)  # imported from folder by the run
    return out


def test_the_replayed_controller_is_given_the_recorded_quality_codes(
        faulty: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    live = _log(faulty.with_name("live.jsonl"))
    # the recording's faults, as the live controller saw them (the read's code: a timeout
    # with a failed write is 6 in /quality, 2 to the controller)
    assert {e["q"]["battery"] for e in live} == {0, 2}
    assert {e["q"]["meter"] for e in live} == {0, 3}
    out = tmp_path / "replayed.h5"
    log = tmp_path / "replay.jsonl"
    try:
        assert main(["replay", str(faulty), "--out", str(out), "--quiet",
                     "--option", f"log={json.dumps(str(log))}"]) == 0
    finally:
        sys.modules.pop("replay_quality_ctrl", None)
    # the same inputs, tick by tick: a NaN value comes with its failed reading's code, so
    # the gated controller holds its setpoint where it did, and nothing diverges
    assert _log(log) == live
    assert "no divergence" in capsys.readouterr().out
    with h5py.File(faulty, "r") as src, h5py.File(out, "r") as f:
        for asset in ("battery", "meter", "rack"):
            recorded = src[f"quality/dc/{asset}"][:]
            np.testing.assert_array_equal(f[f"quality/dc/{asset}"][:], recorded & 3)
        assert 6 in src["quality/dc/battery"][:]  # the write bit: not the replay's
        assert set(np.unique(f["quality/dc/battery"][:])) == {0, 2}
        assert set(np.unique(f["quality/dc/meter"][:])) == {0, 3}
    # a replay of the replay carries them on
    again = tmp_path / "again.h5"
    try:
        assert main(["replay", str(out), "--out", str(again), "--quiet"]) == 0
    finally:
        sys.modules.pop("replay_quality_ctrl", None)
    assert "no divergence" in capsys.readouterr().out
    with h5py.File(out, "r") as first, h5py.File(again, "r") as f:
        for asset in ("battery", "meter"):
            np.testing.assert_array_equal(f[f"quality/dc/{asset}"][:],
                                          first[f"quality/dc/{asset}"][:])


def test_another_controller_is_given_them_too(faulty: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """A built-in controller replayed: the replay's /quality still says which readings
    failed (it was 0 at every tick)."""
    out = tmp_path / "passthrough.h5"
    assert main(["replay", str(faulty), "--controller", "passthrough", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    with h5py.File(faulty, "r") as src, h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["quality/dc/meter"][:], src["quality/dc/meter"][:] & 3)
        assert np.count_nonzero(f["quality/dc/meter"][:] == 3) >= 5
