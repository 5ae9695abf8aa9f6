"""SIGTERM and Ctrl-C stop a run at a safe point, whenever they come.

A signal handler that raises lands between any two bytecodes: inside asyncio's code it left
the engine's run unfinished (the process then hung for the recorder's 600 s at interpreter
shutdown, the recording open and the ledger's interval unsettled), inside the twin's numba
code it crashed the process (exit 139, no ``--json``).  These tests start real
``python -m bench run`` processes, signal them at those points, and check that each one ends
promptly with the documented exit status, its ``--json`` and its recording closed (with why
it stopped) and its ledger settled.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench.errors import RecordingError
from bench.recorder import Column, Layout, Recorder
from bench.recording import open_run

REPO = Path(__file__).resolve().parents[2]
TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"
P2P = REPO / "experiments" / "p2p_trading" / "scenario.toml"
#: far more than any of these runs needs to stop; the failure was a 600 s hang
STOP_WITHIN_S = 60
WHY = {signal.SIGTERM: (143, "terminated"), signal.SIGINT: (130, "interrupted")}


class _Lines:
    """A process's stderr, read on a thread: wait for a line without blocking the test."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> bool:
        """Whether a line containing ``text`` came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            self.lines.append(line)
            if text in line:
                return True
        return False

    def rest(self) -> str:
        self._thread.join(STOP_WITHIN_S)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


def _start(argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
    """``argv`` in a process group of its own (``killpg(SIGINT)`` is Ctrl-C), stderr piped."""
    return subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _send(proc: subprocess.Popen, sig: int) -> None:
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C does: the whole group
    else:
        os.kill(proc.pid, sig)  # what a CI runner's cancel does: the process


def _finish(proc: subprocess.Popen, lines: _Lines) -> str:
    """Wait for ``proc`` (within STOP_WITHIN_S, else kill it and fail); its stderr."""
    try:
        proc.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running {STOP_WITHIN_S} s after the signal:\n{lines.rest()}")
    return lines.rest()


def _check_clean_stderr(err: str, why: str) -> None:
    for bad in ("Traceback", "never awaited", "SystemError", "Fatal Python error",
                "was destroyed but it is pending"):
        assert bad not in err, err
    assert err.strip().splitlines()[-1] == f"gridloop: {why}", err


def _pending_on_ledger(path: Path) -> tuple[int, int]:
    """``(records in blocks, pending records)`` of a ledger, its chain verified."""
    from ledger.store import open_store
    from ledger.verify import verify_chain

    with open_store(str(path), create=False, readonly=True) as store:
        verify_chain(store)
        return store.count()


@pytest.mark.slow
def test_a_signal_mid_run_of_an_emulated_run_always_stops_it_through_its_stop_path(
        tmp_path: Path) -> None:
    """The hang came in about 1 of 10 SIGTERMs, by where the signal landed in asyncio's code:
    several emulated runs (device I/O on the event loop) at once, each signalled at its own
    moment after its first tick.  Every one ends promptly with its status, its --json, its
    recording closed with a ``run_stopped`` event saying why, and its interval settled."""
    signals = [signal.SIGTERM, signal.SIGTERM, signal.SIGTERM, signal.SIGINT]
    delays = [0.0, 0.35, 0.8, 0.5]
    runs = []
    for i, sig in enumerate(signals):
        out, result = tmp_path / f"r{i}.h5", tmp_path / f"r{i}.json"
        proc = _start([sys.executable, "-m", "bench", "run", str(TWO_NODES), "--mode",
                       "emulated", "--set", "run.duration_s=600", "--out", str(out),
                       "--json", str(result)])
        runs.append((proc, _Lines(proc), sig, delays[i], out, result))
    try:
        for proc, lines, sig, delay, _, _ in runs:  # progress lines: "two_nodes: 0% (...)"
            assert lines.wait_for("two_nodes: 0%", 120), lines.rest()
            time.sleep(delay)
            assert proc.poll() is None, "the run ended before it was signalled"
            _send(proc, sig)
        for proc, lines, sig, _, out, result in runs:
            status, why = WHY[sig]
            err = _finish(proc, lines)
            assert proc.returncode == status, err
            _check_clean_stderr(err, why)
            with open_run(out) as run:
                ticks = len(run)
                assert ticks > 0 and not run.complete
                assert [m for _, k, m in run.events() if k == "run_stopped"] == [why]
            doc = json.loads(result.read_text())
            assert (doc["status"], doc["passed"], doc["stopped"], doc["recording"],
                    doc["ticks"]) == (status, False, why, str(out), ticks)
            sealed, pending = _pending_on_ledger(out.with_name(out.stem + ".ledger.db"))
            assert sealed > 0 and pending == 0, "the interval the run ended in is not settled"
    finally:
        for proc, *_ in runs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


#: runs ``python -m bench`` with the twin's compiled workload kernel (``_serve``, numba)
#: wrapped to say when it is entered and when it returned (not raised): the test signals
#: inside it
IN_KERNEL = textwrap.dedent("""\
    import runpy, sys
    from pathlib import Path
    import twin.workload as w
    serve, marks = w._serve, Path(sys.argv[1])
    def observed(*args):
        (marks / "entered").touch()
        out = serve(*args)
        (marks / "returned").touch()  # returned, not raised
        return out
    w._serve = observed
    sys.argv = ["gridloop", *sys.argv[2:]]
    runpy.run_module("bench", run_name="__main__", alter_sys=True)
    """)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_scenario_is_built_stops_after_the_compiled_code(
        tmp_path: Path, sig: int) -> None:
    """The p2p lab stretched to 40 h: its inference workload takes seconds in numba code,
    where a raising handler crashed the process (exit 139, no --json).  The signal now stops
    the command once the build is done: the documented status, the --json ``stopped``
    document, no recording (the run never started), no crash."""
    status, why = WHY[sig]
    out, result = tmp_path / "sg.h5", tmp_path / "sg.json"
    proc = _start([sys.executable, "-c", IN_KERNEL, str(tmp_path), "run", str(P2P), "--set",
                   "run.duration_s=144001", "--out", str(out), "--json", str(result)],
                  cwd=tmp_path)
    lines = _Lines(proc)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "entered").exists():
            assert proc.poll() is None and time.monotonic() < deadline, lines.rest()
            time.sleep(0.02)
        returned_before = (tmp_path / "returned").exists()
        _send(proc, sig)
        err = _finish(proc, lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not returned_before, "the kernel returned before the signal: signal it sooner"
    assert proc.returncode == status, err
    _check_clean_stderr(err, why)
    assert (tmp_path / "returned").exists()  # it stopped once the compiled call returned
    assert "node(s)" not in err  # before the run's first line: it never started
    doc = json.loads(result.read_text())
    assert (doc["status"], doc["passed"], doc["stopped"], doc["recording"], doc["ticks"],
            doc["figures"]) == (status, False, why, None, 0, None)
    assert not out.exists()


def test_closing_a_recorder_whose_writer_stopped_answering_is_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """A writer that no longer answers (here: stopped) is not waited on for ten silent
    minutes: after the stall limit it is killed, with a line on stderr; a run that stopped
    early keeps its own reason (a warning), a complete one fails with RecordingError."""
    import bench.recorder as recorder

    monkeypatch.setattr(recorder, "CLOSE_STALL_S", 1.0)
    monkeypatch.setattr(recorder, "CLOSE_NOTICE_S", 0.3)
    layout = Layout(floats=[Column("time", "s")])
    for complete in (False, True):
        path = tmp_path / f"stall_{complete}.h5"
        rec = Recorder(path, layout, {"mode": "twin"}, flush_s=0.01)
        for k in range(10):
            rec.append([k * 0.1])
        rec.flush()
        time.sleep(0.3)
        os.kill(rec.pid, signal.SIGSTOP)  # alive, but answering nothing
        t0 = time.monotonic()
        try:
            if complete:
                with pytest.raises(RecordingError, match="stopped answering"):
                    rec.close(complete=True)
            else:
                rec.close(complete=False)
        finally:
            rec._proc.kill()  # a no-op once close killed and reaped it
            rec._proc.wait()
        assert time.monotonic() - t0 < 20
        err = capsys.readouterr().err
        assert f"waiting for the recorder process (pid {rec.pid})" in err
        if not complete:
            assert "gridloop: warning:" in err and "stopped answering" in err
        assert rec._proc.returncode is not None  # the writer was killed, not left behind
    # a writer that answers closes as before, quietly
    rec = Recorder(tmp_path / "ok.h5", layout, {"mode": "twin"}, flush_s=0.01)
    rec.append([0.0])
    rec.close()
    assert capsys.readouterr().err == ""
    with open_run(tmp_path / "ok.h5") as run:
        assert run.complete and np.array_equal(run.time, [0.0])


STUCK = """\
[run]
name = "stuck"
dt_s = 0.05
duration_s = 60
mode = "twin"
controller_timeout_s = 0

[controller]
name = "stuck_ctrl:C"

[nodes.n.grid]
kind = "grid"

[nodes.n.battery]
kind = "battery"
"""


@pytest.mark.slow
def test_sigterm_still_interrupts_a_controller_stuck_in_its_step(tmp_path: Path) -> None:
    """Deferring signals does not make a controller stuck in its step (no time limit) deaf
    to them: its Python code is interrupted at once, as the docs say, and the run goes
    through its stop path."""
    (tmp_path / "stuck_ctrl.py").write_text(textwrap.dedent(f"""\
        import time
        from pathlib import Path

        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                if obs.t >= 0.25:
                    Path({str(tmp_path / "stuck")!r}).touch()
                    time.sleep(600)
                return {{}}
        """))
    scenario = tmp_path / "s.toml"
    scenario.write_text(STUCK)
    out, result = tmp_path / "r.h5", tmp_path / "r.json"
    proc = _start([sys.executable, "-m", "bench", "run", str(scenario), "--quiet", "--out",
                   str(out), "--json", str(result)])
    lines = _Lines(proc)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "stuck").exists():
            assert proc.poll() is None and time.monotonic() < deadline, lines.rest()
            time.sleep(0.05)
        _send(proc, signal.SIGTERM)
        err = _finish(proc, lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, err
    _check_clean_stderr(err, "terminated")
    with open_run(out) as run:
        assert (len(run), run.complete) == (5, False)
        assert [m for _, k, m in run.events() if k == "run_stopped"] == ["terminated"]
    doc = json.loads(result.read_text())
    assert (doc["status"], doc["stopped"], doc["ticks"]) == (143, "terminated", 5)


def test_deferred_signals_are_raised_at_the_safe_point() -> None:
    """The primitives, with real signals to this process: inside ``deferred_stop`` a signal
    is only noted (the code goes on) and raised on leaving; ``interruptible`` code is
    interrupted at once, but compiled code it calls (a nested ``deferred_stop``) is not;
    the handlers are put back."""
    from bench.stopping import Terminated, deferred_stop, interruptible, stop_requested

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    went_on = False
    with pytest.raises(Terminated), deferred_stop():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop_requested() is Terminated
        os.kill(os.getpid(), signal.SIGINT)  # the first one is the one raised
        time.sleep(0.05)
        went_on = True
    assert went_on and stop_requested() is None
    with pytest.raises(KeyboardInterrupt) as raised, deferred_stop():
        with interruptible():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # interrupted at once
        pytest.fail("not interrupted")
    assert type(raised.value) is KeyboardInterrupt
    returned = False
    with pytest.raises(Terminated), deferred_stop(), interruptible():
        with deferred_stop():  # the twin's compiled code, called from a controller's step
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            returned = True
        pytest.fail("not raised once the compiled code returned")
    assert returned
    with deferred_stop():  # nothing came: nothing raised
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
