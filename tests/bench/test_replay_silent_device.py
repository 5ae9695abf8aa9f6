"""``gridloop replay`` of a run in which a device never answered: the controller is given NaN
with the recorded quality code at every tick, as the recorded controller was (never the
twin's value), also from a replay's recording that left the device's NaN readings out, as
gridloop did before; and a ``--controller`` naming a module that is nowhere is the command
line's error, not the recording's."""

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

#: emulated devices; the meter's fault card keeps it silent for the whole run
SILENT = """[run]
dt_s = 0.05
duration_s = 1.5
seed = 5
mode = "emulated"
deadline_s = 0.04

[controller]
name = "replay_silent_ctrl:FromMeter"

""" + dc_node(meter="faults = [{ timeout = true }]\n")

#: like gpu_smoothing, it commands the battery only from a meter value that is a number
#: (not from its quality), and logs what it was given each tick
CONTROLLER = """import json
import math


class FromMeter:
    def __init__(self, context, log=""):
        self.log = log

    def step(self, obs):
        meter = obs["dc.meter.p_w"]
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"k": obs.k, "meter": repr(meter),
                                    "q": obs.quality("dc", "meter"),
                                    "soc": repr(obs["dc.battery.soc"])}) + "\\n")
        if math.isnan(meter):
            return {}
        return {"dc.battery.p_set_w": 0.5 * (meter - 30000.0)}
"""

MODULE = "replay_silent_ctrl"
METER = ("p_w", "q_var", "v_ac_v", "freq_hz", "e_import_wh", "e_export_wh")


def _main(args: list[str]) -> int:
    """``gridloop`` with the controller's module imported afresh (from the scenario's folder)."""
    try:
        return main(args)
    finally:
        sys.modules.pop(MODULE, None)


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def silent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An emulated run whose meter never answered, with its controller's log."""
    folder = tmp_path_factory.mktemp("silent")
    (folder / "silent.toml").write_text(SILENT)
    (folder / f"{MODULE}.py").write_text(CONTROLLER)
    out = folder / "silent.h5"
    log = json.dumps(str(folder / "live.jsonl"))
    with pytest.warns(DeviceWarning):
        # exit 1: a device that never gave a reading fails the run (device_silent)
        assert _main(["run", str(folder / "silent.toml"), "--out", str(out), "--quiet",
                      "--set", f"controller.options.log={log}"]) == 1
    return out


def _replay(rec: Path, out: Path, log: Path, *args: str) -> dict:
    """Replay ``rec`` under its recorded controller, logging to ``log``: its --json verdict."""
    verdict = out.with_suffix(".json")
    assert _main(["replay", str(rec), "--out", str(out), "--quiet", "--json", str(verdict),
                  "--option", f"log={json.dumps(str(log))}", *args]) == 0
    return json.loads(verdict.read_text())


def _assert_reproduced(rec: Path, out: Path, doc: dict, log: Path, live: list[dict]) -> None:
    """The replayed controller was given what the recorded one was, so it commanded what it
    did; the replay's recording measured the silent meter as NaN, with its codes."""
    assert _log(log) == live
    assert doc["diverging"] == 0, [d for d in doc["divergences"] if d["diverged"]]
    setpoint = {d["key"]: d for d in doc["divergences"]}["dc.battery.p_set_w"]
    assert setpoint["diverged"] is False and setpoint["max_abs"] == 0
    with h5py.File(rec, "r") as src, h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["nodes/dc/battery/setpoint/p_set_w"][:],
                                      src["nodes/dc/battery/setpoint/p_set_w"][:])
        for sig in METER:
            assert np.isnan(f[f"nodes/dc/meter/{sig}"][:]).all(), sig
            assert np.isfinite(f[f"nodes/dc/meter/twin/{sig}"][:]).all(), sig
        np.testing.assert_array_equal(f["quality/dc/meter"][:], src["quality/dc/meter"][:] & 3)


def test_a_device_that_never_answered_is_replayed_as_nan_with_its_codes(
        silent: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    live = _log(silent.with_name("live.jsonl"))
    # what the recorded controller was given: NaN and 2 (timeout) at every tick, so it
    # never commanded the battery
    assert len(live) == 30
    assert {(e["meter"], e["q"]) for e in live} == {("nan", 2)}
    assert all(e["soc"] != "nan" for e in live)
    with h5py.File(silent, "r") as f:
        assert np.isnan(f["nodes/dc/battery/setpoint/p_set_w"][:]).all()
    out, log = tmp_path / "replayed.h5", tmp_path / "replay.jsonl"
    doc = _replay(silent, out, log)
    assert "no divergence" in capsys.readouterr().out
    _assert_reproduced(silent, out, doc, log, live)
    # a replay of the replay carries the NaN readings and their codes on
    again, log2 = tmp_path / "again.h5", tmp_path / "again.jsonl"
    _assert_reproduced(out, again, _replay(out, again, log2), log2, live)


def test_a_replay_recording_without_the_silent_devices_readings_is_replayed_as_nan(
        silent: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A replay's recording by an earlier gridloop left an all-NaN reading out: the silent
    meter had only its ``twin/`` signals and its codes.  Its readings are still NaN."""
    old = tmp_path / "old.h5"
    old.write_bytes(silent.read_bytes())
    with h5py.File(old, "r+") as f:
        meter = f["nodes/dc/meter"]
        for name in [*METER, "residual"]:
            del meter[name]
        assert list(meter) == ["twin"] and (f["quality/dc/meter"][:] == 2).all()
    out, log = tmp_path / "replayed.h5", tmp_path / "replay.jsonl"
    doc = _replay(old, out, log)
    capsys.readouterr()
    _assert_reproduced(old, out, doc, log, _log(silent.with_name("live.jsonl")))


def test_a_controller_module_that_is_nowhere_is_the_command_lines_error(
        silent: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Not "the recording refers to files ...": the recording never named nosuch.py."""
    out = tmp_path / "out.h5"
    folder = silent.parent
    for args, place in (([], f"beside the recorded scenario (in {folder})"),
                        (["--scenario-dir", str(folder)], f"in --scenario-dir {folder}")):
        assert _main(["replay", str(silent), "--controller", "nosuch:Thing", "--out",
                      str(out), "--quiet", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"gridloop: error: --controller nosuch:Thing: no module nosuch "
                       f"{place} nor installed; give a built-in name or module:Class of a "
                       "module there or installed"), err
        assert not out.exists()
    # the recorded controller's module, found beside the scenario, still replays
    assert _main(["replay", str(silent), "--controller", f"{MODULE}:FromMeter", "--out",
                  str(out), "--quiet"]) == 0
    assert "no divergence" in capsys.readouterr().out
