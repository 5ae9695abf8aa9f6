"""``gridloop replay`` holds its output as ``gridloop run`` and labs do: a second replay (or a
run) to the same recording stops in one line while the first writes it, and the first's
recording comes out whole, stamped as a replay from its creation (a viewer following it
meanwhile does not make the stamp fail on HDF5's file lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from bench.cli import main
from bench.paths import lock_path
from bench.recording import open_run

ROOT = Path(__file__).resolve().parents[2]
TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"

# A controller that stops at its first step until the test says go: the replay running it
# holds its output meanwhile, for as long as the test needs.
GATE = '''import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Gate:
    def __init__(self, context):
        pass

    def step(self, obs):
        if not (HERE / "go").exists():
            (HERE / "ready").write_text("")
            deadline = time.monotonic() + 8.0  # under the controller timeout (10 s)
            while not (HERE / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return {}
'''


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the first replay ended (status {proc.returncode}) before its "
                        f"controller ran: {out}{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the first replay's controller never ran")
        time.sleep(0.05)


def test_a_second_replay_to_a_held_output_stops_in_one_line_and_the_first_is_whole(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "gate_ctrl.py").write_text(GATE)
    out = tmp_path / "replayed.h5"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(gate)]))
    first = subprocess.Popen(
        [sys.executable, "-m", "bench", "replay", str(twin_run), "--controller",
         "gate_ctrl:Gate", "--out", str(out), "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(gate / "ready", first)
        assert lock_path(out).exists()
        # a viewer follows the replay: the recording is a replay's from its first tick
        viewer = open_run(out, follow=True)
        try:
            assert viewer.attrs["replay_of"] == str(twin_run.resolve())
            assert viewer.attrs["replay_controller"] == "gate_ctrl:Gate"
            capsys.readouterr()
            for args in (["replay", str(twin_run), "--controller", "passthrough"],
                         ["run", str(TWO_NODES), "--mode", "twin", "--set",
                          "market.kind=none", "--set", "run.duration_s=1"]):
                result = tmp_path / f"{args[0]}.json"
                assert main([*args, "--out", str(out), "--quiet", "--json", str(result)]) == 2
                err = capsys.readouterr().err
                assert err == (f"gridloop: error: {out} is in use by another run (gridloop "
                               f"replay, pid {first.pid}); wait for it to finish, or give "
                               "--out another file\n"), err
                # try again later, not bad input: the same word for a replay as for a run
                assert json.loads(result.read_text())["outcome"] == "busy"
            (gate / "go").write_text("")
            stdout, stderr = first.communicate(timeout=120)
        finally:
            viewer.close()
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, stderr
    assert stderr.strip() == "", stderr
    assert stdout.splitlines()[-1].endswith(f"-> {out}")
    # the first replay's recording, whole: its controller, every tick, complete
    with h5py.File(twin_run, "r") as src, h5py.File(out, "r") as f:
        assert f.attrs["replay_controller"] == "gate_ctrl:Gate"
        assert bool(f.attrs["complete"])
        assert len(f["time"]) == len(src["time"])
    assert not lock_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate", "replay.json", "replayed.h5",
                                                          "run.json"]
