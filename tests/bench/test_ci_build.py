"""The first run on a fresh CI machine: numba compiles the twin's kernels for about a minute.
The run says so in one line before the build (``--quiet`` too), and SIGTERM during that
compile stops the command within seconds (a runner sends SIGKILL about 10 s after it), with
exit status 143 and ``--json`` saying ``terminated``; nothing is left half written."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.cli import main

REPO = Path(__file__).resolve().parents[2]
TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"
SAID = "gridloop: building the twin: its compiled kernels are not cached yet"
#: far less than the ~50 s of compiling the signal used to wait for, with room for a loaded
#: machine (it takes a second or two)
STOPS_WITHIN_S = 15


def _lines(proc: subprocess.Popen) -> queue.SimpleQueue:
    """The process's stderr lines, read on a thread (None at its end)."""
    lines: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.parametrize(("sig", "status", "why"), [(signal.SIGTERM, 143, "terminated"),
                                                    (signal.SIGINT, 130, "interrupted")])
def test_a_signal_while_the_kernels_compile_stops_the_command_at_once(
        tmp_path: Path, sig: int, status: int, why: str) -> None:
    cache = tmp_path / "numba-cache"  # a fresh CI machine's: nothing compiled yet
    out, result = tmp_path / "r.h5", tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(TWO_NODES), "--quiet", "--out", str(out),
         "--json", str(result)],
        env=dict(os.environ, PYTHONPATH=str(REPO), NUMBA_CACHE_DIR=str(cache)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = _lines(proc)
    err: list[str] = []
    try:
        first = lines.get(timeout=60)
        assert first is not None, "ended before the build"
        err.append(first)
        # NUMBA_CACHE_DIR's folder for the twin's sources
        assert first.startswith(SAID) and f"cached afterwards in {cache}{os.sep}" in first, first
        time.sleep(2.0)  # well into the compiling (a minute of it)
        assert proc.poll() is None, "the build ended before the signal"
        signalled = time.monotonic()
        os.kill(proc.pid, sig)
        proc.wait(timeout=STOPS_WITHIN_S)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (line := lines.get(timeout=10)) is not None:
        err.append(line)
    said = "".join(err)
    assert proc.returncode == status, said
    assert took < STOPS_WITHIN_S
    for bad in ("Traceback", "SystemError", "Fatal Python error", "Exception ignored"):
        assert bad not in said, said
    assert err[-1].strip() == f"gridloop: {why}" and "node(s)" not in said  # never started
    doc = json.loads(result.read_text())
    assert (doc["status"], doc["outcome"], doc["stopped"], doc["recording"], doc["ticks"]) == (
        status, why, why, None, 0)
    assert not out.exists()  # the recording is not made before the build is done
    # numba's cache writes are never cut short: no temporary file of one is left
    assert not [p.name for p in cache.rglob("*") if ".tmp." in p.name]


def test_a_run_whose_kernels_are_compiled_says_nothing_of_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for k in range(2):  # the second builds on kernels the first compiled (or loaded)
        capsys.readouterr()
        assert main(["run", str(TWO_NODES), "--mode", "twin", "--duration", "1", "--quiet",
                     "--out", str(tmp_path / f"r{k}.h5")]) == 0
    assert SAID not in capsys.readouterr().err
