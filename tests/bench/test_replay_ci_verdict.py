"""``gridloop replay`` as a CI step: it fails (exit status 1) when the replayed controller
breaks one of the scenario's checks, as ``gridloop run`` does; a divergence fails it only
with ``--fail-on-divergence``; and ``--json RESULT.json`` writes its verdict (run's document,
an ``outcome``, the divergence table) in every outcome, over a placeholder written before the
work starts, so a replay killed outright never leaves an earlier verdict behind.

    north: PV -> inverter, battery, GPU rack (training), meter --- grid
    south: battery, GPU rack (inference), meter ------------------ grid

The recorded run (gpu_smoothing, on emulated devices) keeps south's grid import under 25 kW
with its battery; ``passthrough`` leaves the battery idle, and the rack's peaks reach the
grid.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest

from bench.cli import main
from tests.bench.kit import in_terminal

TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"

CHECKS = """
[checks]
"south.meter.p_w" = { max = 25000 }
"north.battery.voltage_v" = { residual = 2.0 }
"""

# controllers under test, beside the scenario: one that raises at its 21st step, and one
# slow enough to be stopped mid-replay
CONTROLLERS = '''import time


class Boom:
    def __init__(self, context):
        self.n = 0

    def step(self, obs):
        self.n += 1
        if self.n > 20:
            raise ZeroDivisionError("boom in my controller")
        return {}


class Slow:
    def __init__(self, context):
        pass

    def step(self, obs):
        time.sleep(0.2)
        return {}
'''

#: an earlier replay's passing verdict, which a reused CI workspace leaves at the path
EARLIER = {"format": "gridloop-replay-result", "status": 0, "outcome": "passed",
           "passed": True}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run whose checks pass, and its ``run --json`` document."""
    folder = tmp_path_factory.mktemp("replay_ci")
    scenario = folder / "smooth.toml"
    scenario.write_text(TWO_NODES.read_text() + CHECKS)
    (folder / "ctrl.py").write_text(CONTROLLERS)
    out, result = folder / "run.h5", folder / "run.json"
    assert main(["run", str(scenario), "--out", str(out), "--quiet", "--set",
                 "run.duration_s=3", "--set", "market.kind=none", "--json", str(result)]) == 0
    return out, json.loads(result.read_text())


def _replay(*args: str) -> int:
    return main(["replay", *args, "--quiet"])


def test_a_replay_that_breaks_a_check_fails_and_says_so_in_its_json(
        recorded: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec, run_doc = recorded
    result = tmp_path / "result.json"
    result.write_text(json.dumps(EARLIER))
    out = tmp_path / "pt.h5"
    assert _replay(str(rec), "--controller", "passthrough", "--out", str(out), "--json",
                   str(result)) == 1
    said = capsys.readouterr().out
    # the checks' table, as run prints it, after the divergence table
    assert ("checks judged on the replay: the twin under passthrough, not the measurements "
            "recorded in run.h5") in said
    assert "checks: 0 of 1 passed, 1 not applicable" in said
    doc = json.loads(result.read_text())
    assert doc["format"] == "gridloop-replay-result" and doc["version"] == 1
    assert (doc["status"], doc["outcome"], doc["passed"]) == (1, "checks_failed", False)
    assert doc["recording"] == str(out) and doc["replay_of"] == str(rec)
    assert doc["controller"] == "passthrough" and doc["stopped"] is None
    assert doc["source_complete"] is True and doc["ticks"] == 60
    assert isinstance(doc["wall_s"], float) and doc["wall_s"] >= 0
    # run's document, its check list in run's format: judged on the replay
    assert set(run_doc) <= set(doc)
    assert [set(c) for c in doc["checks"]] == [set(c) for c in run_doc["checks"]]
    grid, residual = doc["checks"]
    assert grid["key"] == "south.meter.p_w" and grid["passed"] is False
    assert grid["failed"] > 0 and grid["worst"] > 25000
    with h5py.File(out, "r") as f:
        assert grid["worst"] == pytest.approx(float(f["nodes/south/meter/twin/p_w"][:].max()))
    assert residual["passed"] is True
    assert residual["not_applicable"] == "a replay: no device ran under passthrough"
    # the divergence table: every setpoint and signal compared, those beyond tolerance
    # with when, how far and at how many ticks, as the printed table has them
    rows = {(d["kind"], d["key"]): d for d in doc["divergences"]}
    diverged = [d for d in doc["divergences"] if d["diverged"]]
    assert doc["diverging"] == len(diverged) > 0
    assert f"{len(diverged)} of {len(doc['divergences'])} diverge" in said
    p_set = rows["setpoint", "south.battery.p_set_w"]
    assert p_set["diverged"]
    assert 0 < p_set["ticks"] <= 60 and p_set["max_abs"] > p_set["tolerance"] > 0
    assert math.isfinite(p_set["first_t_s"])
    calm = [d for d in doc["divergences"] if not d["diverged"]]
    assert calm and all(d["ticks"] == 0 and d["first_t_s"] is None for d in calm)


def test_a_replay_whose_checks_pass_passes_and_divergence_fails_only_on_request(
        recorded: tuple[Path, dict], twin_run: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    rec, _ = recorded
    result = tmp_path / "same.json"
    # the recorded controller: its checks pass and nothing diverges, with the flag or not
    for flag in ([], ["--fail-on-divergence"]):
        assert _replay(str(rec), "--out", str(tmp_path / "same.h5"), "--json", str(result),
                       *flag) == 0
        doc = json.loads(result.read_text())
        assert (doc["status"], doc["outcome"], doc["passed"]) == (0, "passed", True)
        assert doc["diverging"] == 0 and doc["fail_on_divergence"] == bool(flag)
        assert all(c["passed"] for c in doc["checks"])
    # a recording with no checks: another controller diverges, which is information only...
    result = tmp_path / "pt.json"
    assert _replay(str(twin_run), "--controller", "passthrough", "--out",
                   str(tmp_path / "pt.h5"), "--json", str(result)) == 0
    doc = json.loads(result.read_text())
    assert (doc["status"], doc["outcome"], doc["checks"]) == (0, "passed", [])
    assert doc["diverging"] > 0
    capsys.readouterr()
    # ...unless --fail-on-divergence makes it fail
    assert _replay(str(twin_run), "--controller", "passthrough", "--out",
                   str(tmp_path / "pt.h5"), "--json", str(result),
                   "--fail-on-divergence") == 1
    err = capsys.readouterr().err
    assert f"gridloop: replay failed: {doc['diverging']} of {len(doc['divergences'])} " \
           "setpoints and signals diverge beyond their tolerance (--fail-on-divergence)" in err
    doc = json.loads(result.read_text())
    assert (doc["status"], doc["outcome"], doc["passed"]) == (1, "checks_failed", False)
    assert doc["fail_on_divergence"] is True


def test_every_outcome_writes_the_json_over_an_earlier_verdict(
        recorded: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec, _ = recorded
    result = tmp_path / "r.json"
    out = tmp_path / "r.h5"
    cases = [
        # bad input: refused before the replay starts, nothing recorded
        ([str(tmp_path / "nope.h5")], 2, "input_error", "no such recording"),
        ([str(rec), "--option", "oops"], 2, "input_error", "--option oops: expected"),
        ([str(rec), "--scenario-dir", str(tmp_path / "gone")], 2, "input_error",
         "--scenario-dir"),
        # the controller under test: one that does not load, one that raises mid-replay
        ([str(rec), "--controller", "ctrl:Nope"], 2, "controller_error", "ctrl:Nope"),
        ([str(rec), "--controller", "ctrl:Boom"], 2, "controller_error",
         "ZeroDivisionError: boom in my controller"),
    ]
    for args, status, outcome, why in cases:
        result.write_text(json.dumps(EARLIER))
        out.unlink(missing_ok=True)
        assert _replay(*args, "--out", str(out), "--json", str(result)) == status, args
        doc = json.loads(result.read_text())
        assert (doc["status"], doc["outcome"], doc["passed"]) == (status, outcome, False), doc
        assert why in doc["stopped"], doc
        assert doc["checks"] is None and doc["divergences"] is None
        if "ctrl:Boom" in args:  # it stopped at its 21st step: the recording keeps 20 ticks
            assert doc["recording"] == str(out) and doc["ticks"] == 20
        else:
            assert doc["recording"] is None and doc["ticks"] == 0
    capsys.readouterr()


def test_a_json_naming_the_replays_own_files_is_refused_and_they_are_left_alone(
        recorded: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec, _ = recorded
    before = rec.read_bytes()
    assert _replay(str(rec), "--json", str(rec), "--out", str(tmp_path / "x.h5")) == 2
    assert "--json" in capsys.readouterr().err and rec.read_bytes() == before
    # the default --out, beside the recording: named by --json
    default = rec.with_name("run.replay.gpu_smoothing.h5")
    assert _replay(str(rec), "--json", str(default)) == 2
    assert "that is the replay's recording" in capsys.readouterr().err
    assert not default.exists()


def test_the_json_goes_into_a_folder_made_for_it(
        recorded: tuple[Path, dict], tmp_path: Path) -> None:
    rec, _ = recorded
    result = tmp_path / "artifacts" / "ci" / "replay.json"
    assert _replay(str(rec), "--out", str(tmp_path / "a.h5"), "--json", str(result)) == 0
    assert json.loads(result.read_text())["outcome"] == "passed"


def _start_slow(rec: Path, out: Path, result: Path) -> subprocess.Popen:
    """Wait until the slow replay is under way: its placeholder written, its recording
    begun; returns its process (in its own session: the test kills it)."""
    return in_terminal("replay", str(rec), "--controller", "ctrl:Slow", "--out", str(out),
                       "--json", str(result), "--quiet")


def _wait_running(proc: subprocess.Popen, out: Path, result: Path) -> dict:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the replay never started"
        if out.exists() and result.exists():
            doc = json.loads(result.read_text())
            if doc.get("outcome") == "running":
                return doc
        time.sleep(0.1)


def test_a_killed_replay_leaves_no_verdict_and_a_terminated_one_says_so(
        recorded: tuple[Path, dict], tmp_path: Path) -> None:
    rec, _ = recorded
    out, result = tmp_path / "slow.h5", tmp_path / "slow.json"
    result.write_text(json.dumps(EARLIER))
    with _start_slow(rec, out, result) as proc:
        doc = _wait_running(proc, out, result)
        assert doc["status"] is None and doc["passed"] is False
        assert doc["stopped"] == "running" and doc["recording"] == str(out)
        assert doc["pid"] == proc.pid
        os.killpg(proc.pid, signal.SIGKILL)  # a CI timeout's last word
        proc.wait()
    doc = json.loads(result.read_text())
    assert (doc["status"], doc["outcome"], doc["passed"]) == (None, "running", False)

    # SIGTERM (a CI cancel): exit 143, "terminated", the recording kept up to that tick
    result.write_text(json.dumps(EARLIER))
    out.unlink()  # the killed replay's: the next one's recording is awaited
    with _start_slow(rec, out, result) as proc:
        _wait_running(proc, out, result)
        time.sleep(1.0)  # a few of its slow ticks
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    doc = json.loads(result.read_text())
    assert (doc["status"], doc["outcome"], doc["passed"]) == (143, "terminated", False)
    assert doc["stopped"] == "terminated" and doc["recording"] == str(out)
    assert 0 < doc["ticks"] < 60
    with h5py.File(out, "r") as f:
        assert len(f["time"]) == doc["ticks"] and not f.attrs["complete"]


def test_a_refused_command_line_replaces_an_earlier_verdict(
        recorded: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec, _ = recorded
    result = tmp_path / "r.json"
    result.write_text(json.dumps(EARLIER))
    with pytest.raises(SystemExit) as stop:
        main(["replay", str(rec), "--json", str(result), "--quiet", "--bogus"])
    assert stop.value.code == 2
    doc = json.loads(result.read_text())
    assert (doc["status"], doc["outcome"], doc["passed"]) == (2, "input_error", False)
    assert "unrecognized arguments: --bogus" in doc["stopped"]
    # a file that is not a result is left alone: the line may have named the wrong one
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    with pytest.raises(SystemExit):
        main(["replay", str(rec), "--json", str(notes), "--bogus"])
    assert notes.read_text() == '{"mine": 1}'
    capsys.readouterr()
