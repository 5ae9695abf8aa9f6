"""The run's emulator process (bench/emulation.py) lives in a session of its own, as the
recorder's writer does, so Ctrl-C in a terminal (SIGINT to the whole process group) reaches
the bench, which stops the run at its next tick and then the emulators, and never kills the
emulators in the middle of a tick; and no emulator process outlives its run, however the
run ends: normally, by Ctrl-C, by SIGTERM or killed outright.

Real runs (``gridloop run`` in a process of its own, started as a terminal starts it),
real emulators on loopback Modbus."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path

import h5py
import pytest

from .kit import REPO, in_terminal

FAULTS = REPO / "experiments" / "faults" / "scenario.toml"


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of ``pid``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def _emulator_of(run_pid: int, timeout_s: float = 90.0) -> int:
    """The pid of the emulator process the run ``run_pid`` started (waits for it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            st = _stat(int(entry))
            if st is None or st[0] != run_pid:
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"bench.emulation" in cmdline:
                return int(entry)
        time.sleep(0.05)
    raise AssertionError(f"run {run_pid} started no emulator process in {timeout_s} s")


def _gone(pid: int, timeout_s: float = 15.0) -> bool:
    """Whether ``pid`` has ended (or is a zombie left to be reaped) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = _stat(pid)
        if st is None or st[1] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _start(out: Path, duration_s: float) -> AbstractContextManager[subprocess.Popen]:
    """The faults lab (no fault card) for ``duration_s``, as a terminal starts it."""
    return in_terminal("run", str(FAULTS), "--out", str(out), "--quiet",
                       "--set", f"run.duration_s={duration_s}")


def _events(out: Path) -> list[tuple[str, str]]:
    with h5py.File(out, "r") as f:
        return [(e["kind"].decode(), e["message"].decode()) for e in f["events"][()]]


def _wait_ticking(out: Path, emulator: int) -> None:
    """Give the run time to open its devices and tick (the emulator is up by now)."""
    assert out.exists()  # the recording is created before the emulators start
    time.sleep(2.0)
    assert _stat(emulator) is not None


@pytest.mark.slow
def test_ctrl_c_reaches_the_bench_not_the_emulators(tmp_path: Path) -> None:
    out = tmp_path / "int.h5"
    with _start(out, 60) as proc:
        emulator = _emulator_of(proc.pid)
        # a session (so a process group) of its own: the terminal's Ctrl-C misses it
        assert os.getsid(emulator) != os.getsid(proc.pid)
        assert os.getpgid(emulator) != os.getpgid(proc.pid)
        _wait_ticking(out, emulator)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "emulator" not in err, err
    assert _gone(emulator), f"emulator {emulator} outlived its run"
    events = _events(out)
    assert events[-1] == ("run_stopped", "interrupted"), events
    # the emulators served to the end: no device failed (no fault card is set)
    assert not [e for e in events if e[0].startswith("device_")], events


@pytest.mark.slow
def test_no_emulator_outlives_a_run_stopped_by_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "term.h5"
    with _start(out, 60) as proc:
        emulator = _emulator_of(proc.pid)
        _wait_ticking(out, emulator)
        proc.send_signal(signal.SIGTERM)  # the run alone, as a CI runner's cancel does
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert _gone(emulator), f"emulator {emulator} outlived its run"
    assert _events(out)[-1][0] == "run_stopped"


@pytest.mark.slow
def test_no_emulator_outlives_a_run_that_ends(tmp_path: Path) -> None:
    out = tmp_path / "done.h5"
    with _start(out, 3) as proc:
        emulator = _emulator_of(proc.pid)
        _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert _gone(emulator), f"emulator {emulator} outlived its run"


@pytest.mark.slow
def test_no_emulator_outlives_a_run_killed_outright(tmp_path: Path) -> None:
    """SIGKILL leaves the bench no stop path: the emulator sees its stdin close and ends."""
    out = tmp_path / "kill.h5"
    with _start(out, 60) as proc:
        emulator = _emulator_of(proc.pid)
        _wait_ticking(out, emulator)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _gone(emulator, 30.0), f"emulator {emulator} outlived its run"
