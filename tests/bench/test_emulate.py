"""``gridloop emulate``: bad numbers are one line, any finite speed still stops on time and
on a signal."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bench.cli import main

from .kit import in_terminal

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"  # 7 emulated devices


@pytest.mark.parametrize(("args", "says"), [
    (["--speed", "nan"], "--speed must be a positive number, not nan"),
    (["--speed", "inf"], "--speed must be a positive number, not inf"),
    (["--speed", "0"], "--speed must be a positive number"),
    (["--duration", "-1"], "--duration must be a positive number of seconds, not -1.0"),
    (["--duration", "nan"], "--duration must be a positive number of seconds"),
    (["--port-base", "65530"], "--port-base 65530: 7 devices listen on ports up to 65536"),
    (["--port-base", "0"], "--port-base must be a TCP port"),
])
def test_bad_numbers_are_one_line(args: list[str], says: str,
                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["emulate", str(SCENARIO), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"gridloop: error: {says}"), err


@pytest.mark.slow
def test_a_speed_past_what_the_plants_can_do_still_stops_at_the_duration() -> None:
    with in_terminal("emulate", str(SCENARIO), "--speed", "1e12", "--duration", "1") as proc:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "emulate: stopped after" in err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_it_at_any_speed(sig: signal.Signals) -> None:
    with in_terminal("emulate", str(SCENARIO), "--speed", "1e12") as proc:
        assert proc.stdout is not None and proc.stdout.readline()  # serving
        time.sleep(0.5)  # well into catching up with a clock it can never reach
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "emulate: stopped after" in err
