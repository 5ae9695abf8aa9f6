"""A user's controller that fails to import, exits, hangs or returns text: one line, the
run stopped with its recording closed and every tick before kept; Ctrl-C as before."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bench.build import build_plan
from bench.cli import main
from bench.engine import run_plan
from bench.errors import ControllerError
from bench.recording import open_run
from bench.scenario import load

REPO = Path(__file__).resolve().parents[2]

#: twin only, 20 ticks of 50 ms: a second of simulated time in milliseconds of wall clock
SCENARIO = """\
[run]
name = "faults"
dt_s = 0.05
duration_s = 1
mode = "twin"
{run}

[controller]
name = "{module}:C"

[nodes.n.grid]
kind = "grid"

[nodes.n.battery]
kind = "battery"
"""

_names = itertools.count()


def scenario(tmp_path: Path, controller: str, run: str = "") -> tuple[Path, str]:
    """A scenario with the controller module ``controller`` beside it (a module name of
    its own: a test's module must not be the one an earlier test imported)."""
    module = f"faults_ctrl_{os.getpid()}_{next(_names)}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(controller))
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(module=module, run=run))
    return path, module


def gridloop(path: Path, out: Path, capsys: pytest.CaptureFixture[str],
             *args: str) -> tuple[int, str]:
    """``gridloop run`` in this process: its status and its stderr."""
    capsys.readouterr()
    status = main(["run", str(path), "--quiet", "--out", str(out), *args])
    return status, capsys.readouterr().err


def error_line(err: str) -> str:
    """The one ``gridloop: error:`` line of stderr (nothing else but the run's header)."""
    lines = [x for x in err.splitlines() if not x.startswith("faults: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gridloop: error: "), err
    return lines[0].removeprefix("gridloop: error: ")


def stopped(out: Path) -> tuple[int, bool, list[str]]:
    """Ticks, the complete flag and the run_stopped messages of a recording."""
    with open_run(out) as run:
        return len(run), bool(run.complete), [m for _, k, m in run.events()
                                              if k == "run_stopped"]


# -- 1. a module that does not import --------------------------------------------------------

@pytest.mark.parametrize(("source", "where"), [
    ("class C:\n    def __init__(self, context, **options) pass\n",
     ":2: SyntaxError: expected ':'"),
    ("x = 1\ny = undefined_name + 1\n",
     ":2: NameError: name 'undefined_name' is not defined"),
    ("import sys\nsys.exit(3)\n", ":2: SystemExit: 3"),
    ("import json\n\njson.loads('{')\n", ":3: JSONDecodeError: Expecting property name"),
])
def test_a_module_that_fails_to_import_is_one_line_naming_its_file_and_line(
        source: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, module = scenario(tmp_path, source)
    status, err = gridloop(path, tmp_path / "r.h5", capsys)
    line = error_line(err)
    assert status == 2
    assert line.startswith(f"controller '{module}:C': cannot import {module}: "
                           f"{tmp_path / module}.py{where}"), line
    assert not (tmp_path / "r.h5").exists()


def test_an_import_error_inside_a_helper_names_the_module_line_and_the_helper(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, module = scenario(tmp_path, "")
    helper = f"{module}_helper"
    (tmp_path / f"{helper}.py").write_text("a = 1\nb = 1 / 0\n")
    (tmp_path / f"{module}.py").write_text(f"import os\nimport {helper}\n")
    status, err = gridloop(path, tmp_path / "r.h5", capsys)
    assert status == 2
    assert error_line(err) == (f"controller '{module}:C': cannot import {module}: "
                               f"{tmp_path / module}.py:2: ZeroDivisionError: division by "
                               f"zero (in {tmp_path / helper}.py:2)")


def test_a_missing_module_still_says_so_without_a_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, module = scenario(tmp_path, "")
    (tmp_path / f"{module}.py").unlink()
    status, err = gridloop(path, tmp_path / "r.h5", capsys)
    assert status == 2
    assert error_line(err) == (f"controller '{module}:C': cannot import {module}: "
                               f"No module named '{module}'")


# -- 2. sys.exit() in the controller, and Ctrl-C ---------------------------------------------

EXITS_AT_0_25 = """\
import sys

class C:
    def __init__(self, context, **options):
        pass

    def step(self, obs):
        if obs.t >= 0.25:
            sys.exit(0)
        return {"n.battery.p_set_w": 1000.0}
"""


def test_sys_exit_in_step_stops_the_run_with_an_error_and_keeps_the_recording(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, module = scenario(tmp_path, EXITS_AT_0_25)
    out = tmp_path / "r.h5"
    status, err = gridloop(path, out, capsys)
    message = f"controller '{module}:C' exited (SystemExit 0) in step at t = 0.250 s"
    assert (status, error_line(err)) == (2, message)
    assert stopped(out) == (5, False, [message])  # ticks 0..4, the ones before the exit


def test_sys_exit_ends_the_process_with_an_error_status_not_zero(tmp_path: Path) -> None:
    path, module = scenario(tmp_path, EXITS_AT_0_25)
    out = tmp_path / "r.h5"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--quiet",
                           "--out", str(out)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2, proc.stderr
    assert error_line(proc.stderr) == (f"controller '{module}:C' exited (SystemExit 0) in "
                                       "step at t = 0.250 s")
    assert stopped(out)[:2] == (5, False)


def test_sys_exit_in_the_constructor_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, module = scenario(tmp_path, """\
        import sys

        class C:
            def __init__(self, context):
                sys.exit("bye")
        """)
    status, err = gridloop(path, tmp_path / "r.h5", capsys)
    assert (status, error_line(err)) == (2, f"controller '{module}:C' exited (SystemExit "
                                            "bye) while starting")


def test_ctrl_c_in_a_step_still_interrupts_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = scenario(tmp_path, """\
        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                if obs.t >= 0.25:
                    raise KeyboardInterrupt
                return {}
        """)
    out = tmp_path / "r.h5"
    status, err = gridloop(path, out, capsys)
    assert status == 130 and "gridloop: interrupted" in err, err
    assert stopped(out) == (5, False, ["interrupted"])


# -- 3. a call that does not return ----------------------------------------------------------

HANGS = {
    # each would run for 3 s, far past the limit of 0.2 s, and then go on: without a
    # limit the run passes after 3 s instead of stopping
    "busy": """\
        import time

        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                if obs.t >= 0.25:
                    end = time.monotonic() + 3
                    while time.monotonic() < end:
                        pass
                return {}
        """,
    "sleep": """\
        import time

        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                if obs.t >= 0.25:
                    time.sleep(3)
                return {}
        """,
    # a controller that catches the interruption and goes on is stopped all the same
    "swallows": """\
        import time

        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                if obs.t >= 0.25:
                    try:
                        time.sleep(3)
                    except BaseException:
                        pass
                return {}
        """,
}


@pytest.mark.parametrize("kind", sorted(HANGS))
def test_a_step_that_overruns_the_limit_stops_the_run_in_one_line(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, module = scenario(tmp_path, HANGS[kind], run="controller_timeout_s = 0.2")
    out = tmp_path / "r.h5"
    before = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    t0 = time.monotonic()
    status, err = gridloop(path, out, capsys)
    assert time.monotonic() - t0 < 2.5
    message = (f"controller '{module}:C' took more than 0.2 s in step at t = 0.250 s (the "
               "limit is [run] controller_timeout_s)")
    assert (status, error_line(err)) == (2, message)
    assert stopped(out) == (5, False, [message])
    # the handler before the run is back, and its timer (pytest-timeout's, if any) still on
    after = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    assert after[0] is before[0]
    assert (after[1][0] > 0) == (before[1][0] > 0) and after[1][0] <= before[1][0]


def test_a_constructor_that_overruns_the_limit_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, module = scenario(tmp_path, """\
        import time

        class C:
            def __init__(self, context):
                time.sleep(3)

            def step(self, obs):
                return {}
        """, run="controller_timeout_s = 0.2")
    status, err = gridloop(path, tmp_path / "r.h5", capsys)
    assert (status, error_line(err)) == (2, f"controller '{module}:C' took more than 0.2 s "
                                            "while starting (the limit is [run] "
                                            "controller_timeout_s)")


SLOW = """\
    import time

    class C:
        def __init__(self, context):
            pass

        def step(self, obs):
            time.sleep(0.03)
            return {"n.battery.p_set_w": 1000.0}
    """


def test_the_limit_leaves_a_timer_someone_else_armed_to_fire_on_time(tmp_path: Path) -> None:
    """A caller's own alarm (pytest-timeout's is one) due during the run reaches its
    handler once, on time; the run, each step under the limit, completes."""
    path, _ = scenario(tmp_path, SLOW, run="controller_timeout_s = 0.2")
    fired: list[float] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(time.monotonic()))
    saved = signal.setitimer(signal.ITIMER_REAL, 0.3)
    t0 = time.monotonic()
    try:
        summary = run_plan(build_plan(load(path)), tmp_path / "r.h5", progress=False)
        assert summary.ticks == 20
        assert len(fired) == 1 and 0.28 <= fired[0] - t0 <= 0.4, [f - t0 for f in fired]
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, *saved)
        signal.signal(signal.SIGALRM, previous)


def test_a_run_outside_the_main_thread_has_no_limit(tmp_path: Path) -> None:
    """Signals reach the main thread only: a run in another (``--view``, a sweep's
    worker) runs its slow steps through, unlimited."""
    path, _ = scenario(tmp_path, SLOW, run="controller_timeout_s = 0.01")
    plan = build_plan(load(path))
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(
        run_plan(plan, tmp_path / "r.h5", progress=False)))
    thread.start()
    thread.join(60)
    assert len(result) == 1 and result[0].ticks == 20  # type: ignore[attr-defined]


def test_a_negative_limit_is_refused_and_zero_means_none(tmp_path: Path) -> None:
    from bench.errors import ScenarioError

    path, _ = scenario(tmp_path, SLOW, run="controller_timeout_s = -1")
    with pytest.raises(ScenarioError, match="controller_timeout_s: must be a non-negative "
                                            r"number of seconds \(0: no limit\)"):
        load(path)
    path, _ = scenario(tmp_path, SLOW, run="controller_timeout_s = 0")
    summary = run_plan(build_plan(load(path)), tmp_path / "r.h5", progress=False)
    assert summary.ticks == 20
    assert load(path, ["run.controller_timeout_s=5"]).run.controller_timeout_s == 5


# -- 4. setpoints that are not numbers -------------------------------------------------------

@pytest.mark.parametrize(("value", "shown"), [
    ('"12400"', "'12400' at t = 0.250 s; expected a number, not a str"),
    ("True", "True at t = 0.250 s; expected a number, not a bool"),
    ("numpy.bool_(False)", "np.False_ at t = 0.250 s; expected a number, not a bool"),
    ('b"1"', "b'1' at t = 0.250 s; expected a number, not a bytes"),
])
def test_a_setpoint_given_as_text_or_a_truth_value_is_refused(
        value: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, module = scenario(tmp_path, f"""\
        import numpy

        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                if obs.t >= 0.25:
                    return {{"n.battery.p_set_w": {value}}}
                return {{"n.battery.p_set_w": 1000.0}}
        """)
    out = tmp_path / "r.h5"
    status, err = gridloop(path, out, capsys)
    message = f"controller '{module}:C' set 'n.battery.p_set_w' to {shown}"
    assert (status, error_line(err)) == (2, message)
    assert stopped(out) == (5, False, [message])


def test_numbers_of_any_kind_are_still_setpoints(tmp_path: Path) -> None:
    path, _ = scenario(tmp_path, """\
        import numpy

        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                return {"n.battery.p_set_w": [1000, 1000.0, numpy.float32(1e3),
                                              numpy.int64(1000)][obs.k % 4]}
        """)
    summary = run_plan(build_plan(load(path)), tmp_path / "r.h5", progress=False)
    assert summary.ticks == 20
    with pytest.raises(ControllerError):  # and NaN is refused as before
        path, _ = scenario(tmp_path, """\
            class C:
                def __init__(self, context):
                    pass

                def step(self, obs):
                    return {"n.battery.p_set_w": float("nan")}
            """)
        run_plan(build_plan(load(path)), tmp_path / "r2.h5", progress=False)


# -- 6. a real-time tick late with catch_up = "fail" -------------------------------------------

def test_a_late_tick_with_catch_up_fail_is_a_failed_run_not_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit status 1 (as a failed check; 2 is bad input), one line, the recording kept up to
    the late tick, and ``--json`` says why the run stopped."""
    path, _ = scenario(tmp_path, """\
        import time

        class C:
            def __init__(self, context, **options):
                pass

            def step(self, obs):
                if obs.k == 5:
                    time.sleep(0.3)
                return {}
        """, run='realtime = true\ncatch_up = "fail"')
    out, doc = tmp_path / "r.h5", tmp_path / "r.json"
    status, err = gridloop(path, out, capsys, "--json", str(doc))
    lines = [x for x in err.splitlines() if not x.startswith("faults: ")]
    assert status == 1, err
    assert len(lines) == 1 and lines[0].startswith("gridloop: run failed: tick 6 "), err
    assert "catch_up is 'fail'" in lines[0] and str(out) in lines[0]
    ticks, complete, why = stopped(out)
    assert ticks == 6 and not complete and why and "late" in why[0]
    import json

    result = json.loads(doc.read_text())
    assert result["status"] == 1 and result["passed"] is False
    assert result["stopped"].startswith("tick 6 ")
