"""What a report (and the view) says first about a recording it can only partly judge: one
whose run was killed or stopped early (where it stopped, of how long it was to run, and why,
as a replay of it says), and one that holds no scenario (why its figures are blank)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import h5py
import pytest

from bench.cli import main

SCENARIO = Path(__file__).with_name("scenarios") / "two_nodes.toml"
HERE = "tests.bench.test_report_incomplete"


class FailsAfter:
    """A controller that fails at its first tick after ``after_s``: the run stops there,
    with its ``run_stopped`` event, and keeps its recording (not marked complete)."""

    def __init__(self, context: object, after_s: float = 1.0) -> None:
        self.after_s = after_s

    def step(self, obs: Any) -> dict[str, float]:
        if obs.t > self.after_s:
            raise ZeroDivisionError("on purpose")
        return {}


def _killed(src: Path, dst: Path, ticks: int) -> Path:
    """``src`` as a run killed after ``ticks`` ticks leaves it (its writer closes the file
    with what it received): every per-tick dataset that long, not marked complete, no
    ``run_stopped`` event."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        def cut(_: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.dtype.names is None and obj.ndim == 1:
                obj.resize((ticks,))

        for name in ("time", "wall"):
            f[name].resize((ticks,))
        for group in ("nodes", "quality", "timing"):
            if group in f:
                f[group].visititems(cut)
        f.attrs["complete"] = False
    return dst


def _report(path: Path, out: Path, capsys: pytest.CaptureFixture) -> list[str]:
    assert main(["report", str(path), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (out / "summary.txt").read_text().splitlines()[0] == lines[0]
    return lines


def test_a_killed_runs_report_says_first_where_it_stopped_of_how_long(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It said so only in its last line, without the planned duration, under the checks."""
    killed = _killed(twin_run, tmp_path / "killed.h5", 25)  # 1.25 s of the 2 s
    lines = _report(killed, tmp_path / "report", capsys)
    assert lines[0] == ("incomplete recording: killed.h5 stopped at 1.25 s of the 2 s it was "
                        "to run (killed, or still being written); the figures and checks "
                        "below cover only its 25 ticks")
    assert lines[1].startswith("node ") and any(x.startswith("25 ticks, ") for x in lines)
    assert not any("the recording is incomplete" in x for x in lines)
    # the figures a replay of it gives
    assert main(["replay", str(killed), "--out", str(tmp_path / "rp.h5"), "--quiet"]) == 0
    assert "it stopped at 1.25 s of the 2 s it was to run" in capsys.readouterr().out
    # the whole recording says nothing of it
    lines = _report(twin_run, tmp_path / "whole", capsys)
    assert lines[0].startswith("node ") and not any("incomplete" in x for x in lines)


def test_a_run_stopped_by_its_controller_says_why_first(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stopped = tmp_path / "stopped.h5"
    assert main(["run", str(SCENARIO), "--mode", "twin", "--out", str(stopped), "--quiet",
                 "--set", "run.duration_s=2", "--set", "market.kind=none",
                 "--set", f'controller.name="{HERE}:FailsAfter"',
                 "--set", "controller.options={}"]) != 0
    capsys.readouterr()
    first = _report(stopped, tmp_path / "report", capsys)[0]
    assert first.startswith("incomplete recording: stopped.h5 stopped at 1.05 s of the 2 s it "
                            f"was to run (controller '{HERE}:FailsAfter' failed at t = "), first
    raised = FailsAfter.step.__code__.co_firstlineno + 2  # where it raises
    assert first.endswith(f"ZeroDivisionError: on purpose (at {__file__}:{raised} in step)); "
                          "the figures and checks below cover only its 21 ticks"), first


def test_a_recording_without_its_scenario_says_why_its_figures_are_blank(
        twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """PV, battery and rack showed ``-`` with no reason (replay and calibrate gave one)."""
    noscen = tmp_path / "noscen.h5"
    shutil.copy(twin_run, noscen)
    with h5py.File(noscen, "r+") as f:
        del f.attrs["scenario"]
    lines = _report(noscen, tmp_path / "report", capsys)
    assert lines[0] == (f"{noscen}: the recording holds no scenario: the kinds of its assets "
                        "are unknown, so its PV, battery, rack and SOC figures are blank (-) "
                        "and no checks are judged")
    north = next(x for x in lines if x.startswith("north "))
    assert north.split()[1] == "-"  # PV kWh


@pytest.mark.qt
def test_the_view_says_a_killed_recording_is_incomplete(twin_run: Path,
                                                        tmp_path: Path) -> None:
    from bench.view.app import ViewWindow, application

    application(offscreen=True)
    killed = _killed(twin_run, tmp_path / "killed.h5", 25)
    for path, title, status in (
            (killed, "gridloop view · killed.h5 (incomplete)",
             "incomplete recording, stopped at 1.25 s of the 2 s it was to run (killed, or "
             "still being written) · 25 ticks · "),
            (twin_run, "gridloop view · twin.h5", "recording · 40 ticks · ")):
        win = ViewWindow(path)
        try:
            assert win.windowTitle() == title
            assert win.status.text().startswith(status), win.status.text()
        finally:
            win.close()
            win.run.close()
