"""The view's training-step marker on a real twin recording of the demo.

East's rack checkpoints (4 s stalls every 12 steps of 1.5 s): the stalls add slow power and
shift the step's phase, which once made the marker name a harmonic (0.50 s, 0.75 s) at a
quarter of the cursor positions.  North's rack (2 s, no checkpoints) is the plain case.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.recording import open_run
from bench.view.spectrum import rolling_psd, step_frequency
from twin.workload import CHECKPOINT

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo.toml"
#: the view's spectrum window (RackPanel's spectrum_s) and how often it recomputes it [s]
WINDOW_S = 40.0
REFRESH_S = 0.5
#: 150 s holds five checkpoint cycles of 22 s after the first full window
DURATION_S = 150.0


@pytest.fixture(scope="module")
def demo_twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo scenario run in the twin alone: the racks' power as the twin models it."""
    out = tmp_path_factory.mktemp("step_marker") / "demo.h5"
    assert main(["run", str(DEMO), "--mode", "twin", "--out", str(out), "--quiet",
                 "--set", f"run.duration_s={DURATION_S}", "--set", "market.kind=none"]) == 0
    return out


def _workload(node: str) -> dict:
    """The workload options of a node's rack in the demo scenario."""
    scenario = tomllib.loads(DEMO.read_text())
    profile = scenario["nodes"][node]["rack"]["profile"]
    return scenario["profiles"][profile]["options"]


@pytest.mark.parametrize("node", ["east", "north"])
def test_the_step_is_named_at_every_cursor_position(demo_twin: Path, node: str) -> None:
    """From the first full window to the end of the run, at every position the view
    recomputes its spectrum, the marker names the rack's step, never a harmonic of it;
    before the window is full it names the step or nothing."""
    options = _workload(node)
    step_s = options["step_s"]
    with open_run(demo_twin) as run:
        dt_s = float(run.time[1] - run.time[0])
        p_w = run.signal(node, "rack", "p_w")
        phase = run.signal(node, "rack", "phase")
    if node == "east":  # the case of the finding: the recording holds checkpoint stalls
        assert options.get("checkpoint_every_steps", 0) > 0
        assert np.any(phase == CHECKPOINT)
    every = round(REFRESH_S / dt_s)
    named = {}
    for k in range(every, len(p_w), every):
        f, psd = rolling_psd(p_w[: k + 1], dt_s, WINDOW_S)
        step_hz = step_frequency(f, psd, WINDOW_S)
        named[round(k * dt_s, 2)] = 1.0 / step_hz if np.isfinite(step_hz) else None
    full = {t: s for t, s in named.items() if t >= WINDOW_S}
    assert len(full) >= (DURATION_S - WINDOW_S) / REFRESH_S
    wrong = {t: s for t, s in full.items() if s is None or abs(s / step_s - 1) > 0.03}
    assert not wrong, f"{node}: step {step_s} s, named instead at cursor [s]: {wrong}"
    early = {t: s for t, s in named.items()
             if t < WINDOW_S and s is not None and abs(s / step_s - 1) > 0.05}
    assert not early, f"{node}: a short history named {early}"
