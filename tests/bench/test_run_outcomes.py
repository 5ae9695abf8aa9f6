"""What ``gridloop run`` says, and ``--json`` writes, in every outcome: a device that never
answered fails the run with null figures; a run stopped by an error, Ctrl-C or SIGTERM, or
refused before it starts, still writes its result (status, ``passed`` false, ``stopped``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.errors import DeviceWarning
from bench.recording import open_run

from .kit import dc_node, in_terminal

REPO = Path(__file__).resolve().parents[2]
TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"

def emulated(card: str) -> str:
    """Three emulated devices on one node (:func:`kit.dc_node`), its meter with the fault
    card ``card``."""
    return """[run]
dt_s = 0.05
duration_s = 3
seed = 3
mode = "emulated"
deadline_s = 0.04

[controller]
name = "gpu_smoothing"
options = { ramp_limit_w_per_s = 2000.0, soc_target = 0.6 }
""" + dc_node(meter=f"faults = [{card}]\n") + """
[checks]
"dc.rack.p_w" = { max = 1e9 }
"""


#: twin only, 20 ticks of 50 ms; the controller (a module beside it) fails at t = 0.25 s
TWIN = """[run]
name = "outcomes"
dt_s = 0.05
duration_s = 1
mode = "twin"

[controller]
name = "outcomes_ctrl_{pid}:C"

[nodes.n.grid]
kind = "grid"

[nodes.n.battery]
kind = "battery"
"""

CRASHES = """\
class C:
    def __init__(self, context):
        pass

    def step(self, obs):
        if obs.t >= 0.25:
            return {"n.battery.p_set_w": 1.0 / 0.0}
        return {}
"""


def run_emulated(tmp_path: Path, card: str, capsys: pytest.CaptureFixture[str]
                 ) -> tuple[int, str, str, dict, Path]:
    scenario = tmp_path / "dc.toml"
    scenario.write_text(emulated(card))
    out, result = tmp_path / "dc.h5", tmp_path / "dc.json"
    capsys.readouterr()
    with pytest.warns(DeviceWarning, match="dc.meter: no answer"):
        status = main(["run", str(scenario), "--out", str(out), "--quiet", "--json",
                       str(result)])
    said = capsys.readouterr()
    return status, said.out, said.err, json.loads(result.read_text()), out


@pytest.mark.slow
def test_a_device_that_never_answered_fails_the_run_with_no_figures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its energies are null ('-'), not 0.0 from summing no readings; its checks pass (it
    has none), yet the run fails (1) in a line naming it, and the JSON says per device."""
    status, out, err, doc, rec = run_emulated(tmp_path, "{ timeout = true }", capsys)
    with open_run(rec) as run:
        n = len(run)
        lost = int((run.quality("dc", "meter") != 0).sum())
    assert n == 60 and lost == n
    assert status == 1 and doc["status"] == 1 and doc["passed"] is False, err
    assert doc["stopped"] is None and "checks: 1 of 1 passed" in out
    assert err.strip().splitlines()[-1] == (
        "gridloop: run failed: no valid reading in any of the 60 ticks from dc.meter "
        "(60 timeout); its figures are null; if it answers, but later than the tick's "
        "deadline (a slow line or board), raise run.deadline_s (0.04 s in this run) or "
        "run.dt_s")
    dc = doc["nodes"]["dc"]
    assert dc["grid_import_kwh"] is None and dc["grid_export_kwh"] is None
    assert dc["peak_grid_import_kw"] is None and dc["missing_ticks"] == n
    assert dc["rack_kwh"] > 0  # the devices that answered still count
    assert doc["devices"]["dc.meter"] == {
        "kind": "meter", "ticks": n, "read": 0, "missing": n, "timeout": n, "error": 0,
        "skipped": 0, "stale": 0, "never_read": True}
    for other in ("dc.rack", "dc.battery"):
        assert doc["devices"][other]["read"] == n and not doc["devices"][other]["never_read"]
    row = next(line for line in out.splitlines() if line.startswith("dc "))
    assert row.split()[4:6] == ["-", "-"] and row.split()[7] == "-"  # grid in, out, peak
    assert (f"ticks without a reading: dc.meter {n} of {n} (it never answered within the "
            "deadline); grid in kWh, grid out kWh, peak kW have no figure") in out


@pytest.mark.slow
def test_a_device_lost_for_a_while_is_counted_as_its_quality_flags_say(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One count per device, of all the run's ticks, equal to its /quality flags (the
    energy columns counted one tick fewer); it does not fail the run by itself."""
    status, out, err, doc, rec = run_emulated(
        tmp_path, "{ timeout = true, start_s = 1, stop_s = 2 }", capsys)
    with open_run(rec) as run:
        n = len(run)
        lost = int((run.quality("dc", "meter") != 0).sum())
        assert lost == int(np.isnan(run.signal("dc", "meter", "p_w")).sum())
    assert 15 <= lost <= 25
    assert status == 0 and doc["passed"] is True, err
    meter = doc["devices"]["dc.meter"]
    assert (meter["read"], meter["missing"], meter["never_read"]) == (n - lost, lost, False)
    assert doc["nodes"]["dc"]["missing_ticks"] == lost
    assert doc["figures"]["gaps"] == {"dc": {"peak kW": lost}}
    lines = [x for x in out.splitlines() if x.startswith("ticks without a reading")]
    assert lines == [f"ticks without a reading: dc.meter {lost} of {n}; peak kW covers the "
                     "other ticks only"]


def twin_scenario(tmp_path: Path, controller: str = CRASHES) -> Path:
    (tmp_path / f"outcomes_ctrl_{os.getpid()}.py").write_text(controller)
    path = tmp_path / "s.toml"
    path.write_text(TWIN.format(pid=os.getpid()))
    return path


def stale(path: Path) -> None:
    """What an earlier, passing run left at ``path``: a pipeline must not read it again."""
    path.write_text(json.dumps({"status": 0, "passed": True}))


def test_a_run_stopped_by_an_error_writes_its_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, out, result = twin_scenario(tmp_path), tmp_path / "r.h5", tmp_path / "r.json"
    stale(result)
    status = main(["run", str(scenario), "--quiet", "--out", str(out), "--json", str(result)])
    err = capsys.readouterr().err
    assert status == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("gridloop: error: controller set 'n.battery.p_set_w' to inf") \
        or re.match(r"gridloop: error: controller '[^']+' failed at t = 0\.250 s", line), err
    doc = json.loads(result.read_text())
    with open_run(out) as run:
        ticks = len(run)
    assert ticks == 5
    assert doc == {"format": "gridloop-run-result", "version": 1, "status": 2,
                   "outcome": "controller_error", "passed": False, "scenario": str(scenario), "recording": str(out),
                   "stopped": line.removeprefix("gridloop: error: "), "ticks": 5,
                   "wall_s": None, "realtime_factor": None, "figures": None, "nodes": None,
                   "devices": None, "checks": None}
    assert not list(tmp_path.glob(".r.json.*"))  # written by rename: no half file left


def test_a_run_refused_before_it_starts_writes_status_2_and_no_recording(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, out, result = twin_scenario(tmp_path), tmp_path / "r.h5", tmp_path / "r.json"
    stale(result)
    assert main(["run", str(scenario), "--quiet", "--out", str(out), "--json", str(result),
                 "--set", "run.dt_s=-1"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    doc = json.loads(result.read_text())
    assert doc["status"] == 2 and doc["passed"] is False and doc["recording"] is None
    assert doc["ticks"] == 0 and line == f"gridloop: error: {doc['stopped']}"
    assert not out.exists()
    # --json naming one of the run's own files is refused, and that file left alone
    ledger = tmp_path / "r.ledger.db"
    ledger.write_bytes(b"ledger")
    text = scenario.read_text()
    for own in (scenario, out, ledger):
        assert main(["run", str(scenario), "--quiet", "--out", str(out), "--json",
                     str(own)]) == 2
        assert "--json" in capsys.readouterr().err
    assert scenario.read_text() == text and ledger.read_bytes() == b"ledger"
    assert not out.exists()


def test_the_json_is_written_before_the_summary_is_printed(tmp_path: Path) -> None:
    """A reader of stdout that stops early (| head): exit 0 as before, and the result is
    there (it was written after the printing, so never)."""
    out, result = tmp_path / "r.h5", tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(TWO_NODES), "--mode",
                             "twin", "--quiet", "--duration", "1", "--out", str(out),
                             "--json", str(result)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    proc.stdout.close()  # the reader is gone before the summary comes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    doc = json.loads(result.read_text())
    assert doc["status"] == 0 and doc["stopped"] is None and doc["ticks"] == 20


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status", "why"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_run_writes_its_json(tmp_path: Path, sig: int, status: int,
                                            why: str) -> None:
    """Ctrl-C (the terminal's whole group) or SIGTERM (a CI runner's cancel, the bench's
    process alone): the exit status, and the same in the JSON with why and the ticks kept."""
    out, result = tmp_path / "r.h5", tmp_path / "r.json"
    stale(result)
    with in_terminal("run", str(TWO_NODES), "--mode", "twin", "--quiet", "--out", str(out),
                     "--set", "run.duration_s=3000", "--set", "run.flush_s=0.2", "--json",
                     str(result), stdout=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 120
        while not out.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be stopped"
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == f"gridloop: {why}"
    doc = json.loads(result.read_text())
    with open_run(out) as run:
        ticks = len(run)
    assert ticks > 0
    assert (doc["status"], doc["passed"], doc["stopped"], doc["ticks"], doc["recording"]) \
        == (status, False, why, ticks, str(out))
