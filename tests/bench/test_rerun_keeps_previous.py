"""A rerun over a recording replaces it (as CI reruns need), but one that stops before its
end does not take the last good recording with it: that is kept as ``RUN.previous.h5``
(with its ledger), said in one line; a rerun that completes leaves no such file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.recording import open_run

#: twin only, a market (so each recording has a ledger beside it), 40 ticks of 50 ms; the
#: controller fails at t = 1 s when its option ``fail`` is true
SCENARIO = """\
[run]
name = "rerun"
dt_s = 0.05
duration_s = 2
mode = "twin"

[controller]
name = "rerun_ctrl:C"
options = { fail = false }

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
class C:
    def __init__(self, context, fail):
        self.fail = fail

    def step(self, obs):
        if self.fail and obs.t >= 1.0:
            raise RuntimeError("stopped on purpose")
        return {}
"""


def run(folder: Path, out: Path, capsys: pytest.CaptureFixture[str], *args: str
        ) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["run", str(folder / "s.toml"), "--quiet", "--out", str(out), *args])
    return status, capsys.readouterr().err


def ticks(path: Path) -> tuple[int, bool]:
    with open_run(path) as r:
        return len(r), bool(r.complete)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "s.toml").write_text(SCENARIO)
    (tmp_path / "rerun_ctrl.py").write_text(textwrap.dedent(CONTROLLER))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_rerun_that_fails_keeps_the_recording_it_replaced(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = folder / "r.h5"
    assert run(folder, out, capsys)[0] == 0
    assert ticks(out) == (40, True)
    good = out.read_bytes()
    ledger = (folder / "r.ledger.db").read_bytes()
    status, err = run(folder, out, capsys, "--set", "controller.options.fail=true")
    assert status == 2
    kept, kept_ledger = folder / "r.previous.h5", folder / "r.previous.ledger.db"
    assert f"gridloop: the run stopped before its end; the recording it replaced is kept " \
           f"as {kept} (its ledger {kept_ledger})\n" in err
    assert kept.read_bytes() == good and kept_ledger.read_bytes() == ledger
    n, complete = ticks(out)  # the failed run's own recording, every tick up to the error
    assert not complete and 15 <= n < 40
    assert main(["ledger", "verify", str(kept_ledger)]) == 0
    assert sorted(p.name for p in folder.iterdir() if "previous" in p.name) == [
        "r.previous.h5", "r.previous.ledger.db"]  # nothing left aside


def test_a_rerun_that_completes_keeps_nothing_else(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = folder / "r.h5"
    assert run(folder, out, capsys)[0] == 0
    first = out.read_bytes()
    status, err = run(folder, out, capsys)
    assert status == 0 and "kept as" not in err
    assert out.read_bytes() != first and ticks(out) == (40, True)
    assert not [p for p in folder.iterdir() if "previous" in p.name]


def test_a_rerun_refused_before_it_starts_leaves_the_recording_where_it_was(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = folder / "r.h5"
    assert run(folder, out, capsys)[0] == 0
    good = out.read_bytes()
    status, err = run(folder, out, capsys, "--set", "controller.options.nope=1")
    assert status == 2 and "kept as" not in err
    assert out.read_bytes() == good
    assert not [p for p in folder.iterdir() if "previous" in p.name]


def test_a_rerun_killed_outright_leaves_the_replaced_recording_for_the_next_run(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL gives the run no stop path: the recording it replaced stays aside (hidden,
    nothing lost), and the next run to the same recording keeps it as RUN.previous.h5."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = folder / "r.h5"
    assert run(folder, out, capsys)[0] == 0
    good = out.read_bytes()
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(folder / "s.toml"), "--quiet", "--out",
         str(out), "--realtime", "--set", "run.duration_s=60"],
        cwd=folder, env=dict(os.environ, PYTHONPATH=f"{repo}{os.pathsep}{folder}"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(folder.glob(".r.h5.*.previous")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few ticks of its own recording
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    (aside,) = folder.glob(".r.h5.*.previous")
    assert aside.read_bytes() == good
    status, err = run(folder, out, capsys)
    assert status == 0
    kept = folder / "r.previous.h5"
    assert (f"gridloop: a run to {out} was killed before its end; the recording it replaced "
            f"is kept as {kept} (its ledger {folder / 'r.previous.ledger.db'})\n") in err
    assert kept.read_bytes() == good and not list(folder.glob(".r.*previous*"))
    assert main(["ledger", "verify", str(folder / "r.previous.ledger.db")]) == 0


def test_two_failed_reruns_keep_the_last_complete_recording(
        folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The second failed rerun replaced an incomplete recording: the complete one kept by
    the first stays RUN.previous.h5, with its ledger (it was overwritten by the remains)."""
    out = folder / "r.h5"
    assert run(folder, out, capsys)[0] == 0
    good = out.read_bytes()
    ledger = (folder / "r.ledger.db").read_bytes()
    kept, kept_ledger = folder / "r.previous.h5", folder / "r.previous.ledger.db"
    assert run(folder, out, capsys, "--set", "controller.options.fail=true")[0] == 2
    status, err = run(folder, out, capsys, "--set", "controller.options.fail=true")
    assert status == 2
    assert ("gridloop: the run stopped before its end; the recording it replaced was "
            f"incomplete too; the last complete one stays {kept} (its ledger "
            f"{kept_ledger})\n") in err
    assert kept.read_bytes() == good and kept_ledger.read_bytes() == ledger
    assert ticks(out)[1] is False
    assert sorted(p.name for p in folder.iterdir() if "previous" in p.name) == [
        "r.previous.h5", "r.previous.ledger.db"]
