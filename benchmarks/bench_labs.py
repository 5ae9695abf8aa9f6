"""What the GPU smoothing lab's feed-forward costs per tick, and what a lab grade costs.

The ``gpu_smoothing`` lab's scenario runs in twin mode (no device I/O, so the controller's
share of a tick shows) twice in the same process: the controller on measurements alone
(``feed_forward_s = 0``, the baseline) and with the twin's forecast of the rack
(``feed_forward_s = 0.04``: one forecast of three ticks per tick, a copy of the twin
advanced ahead).  Reported: wall time per tick of each (best of the rounds), their ratio,
and the wall time of grading the islanded lab's quick recordings (five HDF5 files read,
spectra and step responses computed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.build import build_plan
from bench.engine import run_plan
from bench.labs import get_lab
from bench.scenario import load


def _tick_ms(overrides: list[str], out: Path, rounds: int) -> float:
    lab = get_lab("gpu_smoothing")
    best = float("inf")
    for _ in range(rounds):
        scenario = load(lab.scenario, ["run.mode=twin"] + overrides)
        plan = build_plan(scenario)
        summary = run_plan(plan, out, progress=False)
        best = min(best, summary.wall_s / summary.ticks * 1e3)
    return best


def run(quick: bool) -> dict:
    ticks = 500 if quick else 3000
    rounds = 2 if quick else 3
    duration = [f"run.duration_s={ticks * 0.02}"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.h5"
        _tick_ms(duration, out, 1)  # compile and warm the caches
        feedback = _tick_ms(duration + ["controller.options.feed_forward_s=0.0"], out, rounds)
        forecast = _tick_ms(duration, out, rounds)
        from bench.cli import main
        from bench.labs.grading import grade

        rec = Path(tmp) / "islanded.h5"
        main(["lab", "run", "islanded", "--quick", "--out", str(rec), "--quiet"])
        t0 = time.perf_counter()
        passed = grade(rec).passed
        grade_s = time.perf_counter() - t0
    return {
        "ticks": ticks,
        "tick_ms_feedback": round(feedback, 4),
        "tick_ms_feed_forward": round(forecast, 4),
        "feed_forward_over_feedback": round(forecast / feedback, 2),
        "grade_islanded_quick_s": round(grade_s, 3),
        "grade_passed": passed,
    }
