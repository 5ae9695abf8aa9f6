"""``gridloop run --json`` as a CI pipeline reads it: never an earlier run's verdict (a run
killed outright, a bad command line), its folder made as ``--out``'s is, a file that cannot
be written refused before the run, and an ``outcome`` word for every way a run ends."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.runner import OUTCOMES, outcome_of

from .kit import ONE_NODE_TWIN

REPO = Path(__file__).resolve().parents[2]
TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"
DEMO = REPO / "experiments" / "demo.toml"
#: two_nodes in the twin alone, one second: a run of a second or two
QUICK = ["--mode", "twin", "--duration", "1", "--quiet"]


def stale(path: Path) -> None:
    """What an earlier, passing run left at ``path``: a pipeline must not read it again."""
    path.write_text(json.dumps({"format": "gridloop-run-result", "version": 1, "status": 0,
                                "outcome": "passed", "passed": True}))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_run_killed_outright_leaves_no_verdict_not_the_last_one(tmp_path: Path) -> None:
    """A CI timeout's SIGKILL: the earlier run's ``passed: true`` is gone as soon as the
    command has read its arguments, replaced by a document with no verdict naming the
    process; the kill leaves that."""
    out, result = tmp_path / "r.h5", tmp_path / "r.json"
    stale(result)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(TWO_NODES), "--mode", "twin", "--quiet",
         "--set", "run.duration_s=3000", "--out", str(out), "--json", str(result)],
        env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while read(result).get("outcome") != "running":
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = read(result)
    assert (doc["status"], doc["passed"], doc["outcome"], doc["stopped"]) == (
        None, False, "running", "running")
    assert doc["pid"] == proc.pid and doc["started_at"].endswith("+00:00")
    assert doc["format"] == "gridloop-run-result" and doc["recording"] is None
    assert not list(tmp_path.glob(".r.json.*"))  # written by rename: no half file left


@pytest.mark.parametrize(("command", "scenario"), [("run", str(TWO_NODES)), ("demo", None)])
@pytest.mark.parametrize("bad", [["--bogus"], ["--duration", "abc"]])
def test_a_bad_command_line_writes_its_error_over_the_last_verdict(
        command: str, scenario: str | None, bad: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    result = tmp_path / "r.json"
    stale(result)
    words = [command, *([scenario] if scenario else []), "--json", str(result), "--out",
             str(tmp_path / "r.h5"), *bad]
    with pytest.raises(SystemExit) as ended:
        main(words)
    assert ended.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"usage: gridloop {command} ")  # its own usage, not gridloop's
    line = err[-1]
    assert line.startswith(f"gridloop {command}: error: ")
    doc = read(result)
    assert (doc["status"], doc["passed"], doc["outcome"], doc["recording"], doc["ticks"]) == (
        2, False, "input_error", None, 0)
    assert doc["stopped"] == line.replace(": error: ", ": ", 1)
    assert doc["scenario"] == (None if command == "run" else str(DEMO))
    assert not (tmp_path / "r.h5").exists()


def test_a_bad_command_line_finds_json_as_argparse_does_and_spares_other_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--json=PATH`` and an abbreviation are read as argparse reads them; a file that is
    not a run's result (the line may have named the wrong one) is left as it was."""
    for spelt in ("--json={}", "--js={}"):
        result = tmp_path / "r.json"
        stale(result)
        with pytest.raises(SystemExit):
            main(["run", str(TWO_NODES), spelt.format(result), "--bogus"])
        assert read(result)["outcome"] == "input_error", spelt
    notes = tmp_path / "notes.txt"
    notes.write_text("not a result")
    with pytest.raises(SystemExit):
        main(["run", str(TWO_NODES), "--json", str(notes), "--bogus"])
    assert notes.read_text() == "not a result"
    capsys.readouterr()


def test_an_unknown_flag_shows_the_usage_of_the_command_it_was_given_to(
        capsys: pytest.CaptureFixture[str]) -> None:
    for words, usage in ((["run", str(TWO_NODES), "--bogus"], "usage: gridloop run "),
                         (["lab", "run", "islanded", "--bogus"], "usage: gridloop lab run "),
                         (["--bogus"], "usage: gridloop [-h]")):
        with pytest.raises(SystemExit) as ended:
            main(words)
        err = capsys.readouterr().err
        assert ended.value.code == 2 and err.startswith(usage), err
        assert err.splitlines()[-1].endswith("error: unrecognized arguments: --bogus"), err


def test_json_in_a_folder_that_is_not_there_makes_it_as_out_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, result = tmp_path / "new1" / "x.h5", tmp_path / "new2" / "deep" / "x.json"
    assert main(["run", str(TWO_NODES), *QUICK, "--out", str(out), "--json", str(result)]) == 0
    doc = read(result)
    assert (doc["status"], doc["outcome"], doc["passed"]) == (0, "passed", True)
    assert doc["recording"] == str(out) and out.is_file()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_json_that_cannot_be_written_is_refused_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """/proc takes no new file (as root too): said at once, not after the whole run."""
    out = tmp_path / "r.h5"
    status = main(["run", str(TWO_NODES), *QUICK, "--out", str(out), "--json",
                   "/proc/gridloop-result.json"])
    err = capsys.readouterr().err.splitlines()
    assert status == 2
    assert err == ["gridloop: error: --json /proc/gridloop-result.json: cannot write it "
                   "(No such file or directory)"]
    assert not out.exists()


# -- outcome: one word per way a run ends ---------------------------------------------------

CONTROLLER = """\
class C:
    def __init__(self, context):
        pass

    def step(self, obs):
        if obs.t >= 0.25:
            {action}
        return {{}}
"""



_names = itertools.count()


def twin(tmp_path: Path, action: str = "pass", checks: str = "") -> Path:
    """A twin-only scenario whose controller (a module of a name of its own beside it: a
    test's module must not be one an earlier test imported) does ``action`` at 0.25 s."""
    module = f"ci_outcome_{os.getpid()}_{next(_names)}"
    (tmp_path / f"{module}.py").write_text(CONTROLLER.format(action=action))
    path = tmp_path / "s.toml"
    path.write_text(ONE_NODE_TWIN.format(name="outcomes", module=module, checks=checks))
    return path


def outcome(tmp_path: Path, scenario: Path, *extra: str) -> tuple[int, dict]:
    result = tmp_path / "r.json"
    stale(result)
    status = main(["run", str(scenario), "--quiet", "--out", str(tmp_path / "r.h5"),
                   "--json", str(result), *extra])
    doc = read(result)
    assert doc["status"] == status and doc["outcome"] in OUTCOMES
    assert doc["passed"] is (doc["outcome"] == "passed")
    return status, doc


def test_outcome_of_a_run_that_ran_to_its_end(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert outcome(tmp_path, twin(tmp_path))[1]["outcome"] == "passed"
    broke = twin(tmp_path, checks='[checks]\n"n.battery.soc" = { max = 0.01 }\n')
    status, doc = outcome(tmp_path, broke)
    assert (status, doc["outcome"], doc["stopped"]) == (1, "checks_failed", None)


def test_outcome_of_a_device_that_never_answered(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Failed by the set-up, not by the controller under test: ``device_silent``."""
    with pytest.warns(Warning, match="south.meter"):
        status, doc = outcome(tmp_path, TWO_NODES, "--duration", "0.25", "--set",
                              "market.kind=none", "--set", "run.deadline_s=0.05", "--set",
                              "south.meter.faults=[{ timeout = true }]")
    assert (status, doc["outcome"]) == (1, "device_silent")
    assert doc["devices"]["south.meter"]["never_read"] is True


@pytest.mark.parametrize(("action", "status", "word"), [
    ("return {'n.battery.p_set_w': 1 / 0}", 2, "controller_error"),
    ("raise KeyboardInterrupt", 130, "interrupted"),
])
def test_outcome_of_a_run_its_controller_stopped(action: str, status: int, word: str,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    got, doc = outcome(tmp_path, twin(tmp_path, action))
    assert (got, doc["outcome"], doc["ticks"]) == (status, word, 5)


def test_outcome_of_a_run_refused_before_it_starts(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    scenario = twin(tmp_path)
    assert outcome(tmp_path, scenario, "--set", "run.dt_s=-1")[1]["outcome"] == "input_error"
    assert outcome(tmp_path, tmp_path / "none.toml")[1]["outcome"] == "input_error"
    status, doc = outcome(tmp_path, scenario, "--set", 'controller.name="nosuch"')
    assert (status, doc["outcome"]) == (2, "controller_error")


def test_outcome_of_a_run_whose_recording_another_run_holds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``busy`` (try again later), not ``input_error``: another process holds the lock."""
    out = tmp_path / "r.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from bench.paths import exclusive\n"
         f"with exclusive(Path({str(out)!r}), 'gridloop run'):\n"
         "    print('held', flush=True); sys.stdin.read()"],
        env=dict(os.environ, PYTHONPATH=str(REPO)), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, doc = outcome(tmp_path, twin(tmp_path))
    finally:
        holder.communicate("", timeout=30)
    assert (status, doc["outcome"], doc["recording"]) == (2, "busy", None)
    assert "is in use by another run (gridloop run, pid" in doc["stopped"]


def test_outcome_words_of_what_stops_a_command() -> None:
    """The mapping itself, for what no real run here can make happen (a bug of the bench)."""
    from bench.errors import ControllerError, ScenarioError
    from bench.stopping import Terminated

    assert [outcome_of(e) for e in (Terminated(), KeyboardInterrupt(), ControllerError("x"),
                                    ScenarioError("x"), FileNotFoundError("x"),
                                    RuntimeError("a bug"))] == [
        "terminated", "interrupted", "controller_error", "input_error", "input_error",
        "internal_error"]
