"""The one error line a CI log shows says what to do about it: where in the controller's own
code it raised, the device deadline the run really had, and for ``--view`` without a display
what ``run`` and ``demo`` can do instead."""

from __future__ import annotations

import itertools
import json
import os
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.recording import open_run

from .kit import ONE_NODE_TWIN

TWO_NODES = Path(__file__).with_name("scenarios") / "two_nodes.toml"


_names = itertools.count()


def controller(tmp_path: Path, source: str) -> tuple[Path, str, Path]:
    """A twin-only scenario with the controller module ``source`` beside it (a module name
    of its own: a test's module must not be one an earlier test imported)."""
    module = f"ci_where_{os.getpid()}_{next(_names)}"
    file = tmp_path / f"{module}.py"
    file.write_text(textwrap.dedent(source))
    path = tmp_path / "s.toml"
    path.write_text(ONE_NODE_TWIN.format(name="where", module=module, checks=""))
    return path, module, file


def run(tmp_path: Path, scenario: Path, capsys: pytest.CaptureFixture[str], *extra: str
        ) -> tuple[int, str, dict]:
    """``gridloop run``: its status, its last line on stderr and its ``--json``."""
    result = tmp_path / "r.json"
    capsys.readouterr()
    status = main(["run", str(scenario), "--quiet", "--out", str(tmp_path / "r.h5"),
                   "--json", str(result), *extra])
    return status, capsys.readouterr().err.strip().splitlines()[-1], json.loads(
        result.read_text())


STEP_RAISES = """\
    def helper(x):
        return 1 / x


    class C:
        def __init__(self, context):
            self.n = 0

        def step(self, obs):
            self.n += 1
            if self.n > 5:
                return {"n.battery.p_set_w": helper(0)}
            return {}
    """


def test_a_step_that_raises_is_named_at_its_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The innermost line in the controller's file (its helper's, where the division is),
    on stderr, in --json and in the recording's run_stopped event."""
    scenario, module, file = controller(tmp_path, STEP_RAISES)
    status, line, doc = run(tmp_path, scenario, capsys)
    message = (f"controller '{module}:C' failed at t = 0.250 s: ZeroDivisionError: division "
               f"by zero (at {file}:2 in helper)")
    assert (status, line) == (2, f"gridloop: error: {message}")
    assert (doc["stopped"], doc["outcome"]) == (message, "controller_error")
    with open_run(tmp_path / "r.h5") as recording:
        assert [m for _, k, m in recording.events() if k == "run_stopped"] == [message]


def test_a_missing_signal_is_named_at_the_line_that_asked_for_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, module, file = controller(tmp_path, """\
        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                return {"n.battery.p_set_w": obs["n.battery.socc"]}
        """)
    status, line, _ = run(tmp_path, scenario, capsys)
    assert status == 2 and line.startswith(
        f"gridloop: error: controller '{module}:C' failed at t = 0.000 s: no signal "
        "'n.battery.socc'"), line
    assert line.endswith(f" (at {file}:6 in step)"), line


def test_a_constructor_that_raises_is_named_at_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, module, file = controller(tmp_path, """\
        class C:
            def __init__(self, context):
                self.table = {}
                self.limit = self.table["limit"]
        """)
    status, line, doc = run(tmp_path, scenario, capsys)
    assert (status, line) == (2, f"gridloop: error: controller '{module}:C' failed to start: "
                                 f"KeyError: 'limit' (at {file}:4 in __init__)")
    assert doc["outcome"] == "controller_error" and doc["recording"] is None


def test_orders_that_raise_are_named_at_their_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario, module, file = controller(tmp_path, """\
        class C:
            def __init__(self, context):
                pass

            def step(self, obs):
                return {}

            def orders(self, obs, interval):
                raise RuntimeError("no price")
        """)
    # trading: orders for interval 1 (from 2 s, which a run of 3 s reaches) asked at t = 0
    scenario.write_text(TWO_NODES.read_text())
    status, line, _ = run(tmp_path, scenario, capsys, "--mode", "twin", "--duration", "3",
                          "--set", f'controller.name="{module}:C"', "--set",
                          "controller.options={}")
    assert (status, line) == (2, f"gridloop: error: controller '{module}:C' failed in orders "
                                 f"at t = 0.000 s: RuntimeError: no price (at {file}:9 in "
                                 "orders)")


@pytest.mark.parametrize(("extra", "said"), [
    ((), "2 s in this run: the default as fast as possible"),
    (("--set", "run.deadline_s=0.05"), "0.05 s in this run"),
])
def test_a_device_that_never_answered_names_the_deadline_the_run_had(
        extra: tuple[str, ...], said: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Not real time: the default deadline is 2 s, not 0.8 dt."""
    with pytest.warns(Warning, match="south.meter"):
        status, line, doc = run(tmp_path, TWO_NODES, capsys, "--duration", "0.1", "--set",
                                "market.kind=none", "--set",
                                "south.meter.faults=[{ timeout = true }]", *extra)
    assert (status, doc["outcome"]) == (1, "device_silent")
    assert line.endswith(f"raise run.deadline_s ({said}) or run.dt_s"), line


@pytest.mark.parametrize("command", ["run", "demo"])
def test_view_without_a_display_says_what_run_and_demo_can_do_instead(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--screenshot`` is ``gridloop view``'s option, not theirs: the line says to drop
    --view and look at the recording afterwards; said before the build."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    out, result = tmp_path / "v.h5", tmp_path / "v.json"
    capsys.readouterr()
    words = [command, *([str(TWO_NODES), "--mode", "twin"] if command == "run" else []),
             "--view", "--out", str(out), "--json", str(result)]
    assert main(words) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"gridloop: error: --view: no display to open the window on (DISPLAY is "
                   f"not set); drop --view, and look at the recording afterwards with "
                   f"gridloop view {out} --screenshot OUT.png"]
    assert json.loads(result.read_text())["outcome"] == "input_error"
    assert not out.exists()
