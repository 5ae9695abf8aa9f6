"""Grader of the battery identification lab.

The emulated battery's cells have their own parameters (the scenario's ``emulator_scale``
on the twin's set); the grader compares the identified cell values, at 25 degC, with them:
the student's answers, or without answers ``gridloop calibrate``'s one-RC fit of the
recording (the reference solution).  It also checks that the recording is a usable pulse
test: pulses of at least 0.3 C, and a rest after a pulse of at least five time constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.labs.grading import Grade, Question, Recordings, asset_of, grade_answers, relative_error
from twin.params import ParamSet, Table

QUESTIONS = {
    "r0_ohm": Question("cell series resistance R0 at 25 degC", "Ohm"),
    "r1_ohm": Question("cell RC-pair resistance R1", "Ohm"),
    "c1_f": Question("cell RC-pair capacitance C1", "F"),
    "capacity_ah": Question("cell capacity", "Ah"),
}
#: tolerance of each identified value, relative to the emulator's, and its points
TOLERANCE = {"r0_ohm": (0.10, 2.0), "r1_ohm": (0.20, 1.0), "c1_f": (0.25, 1.0),
             "capacity_ah": (0.05, 2.0)}
#: temperature at which tabulated parameters are compared [degC]
TEMP_C = 25.0


@dataclass(frozen=True)
class Cell:
    """The identified cell: R0 at 25 degC, R1, C1, capacity. [Ohm], [Ohm], [F], [Ah]"""

    r0_ohm: float
    r1_ohm: float
    c1_f: float
    capacity_ah: float

    @property
    def tau1_s(self) -> float:
        return self.r1_ohm * self.c1_f


def _at_25(value: float | Table, soc: float = 0.5) -> float:
    if isinstance(value, Table):
        point = {"temp_c": TEMP_C, "soc": soc, "current_a": 0.0}
        return float(value(**{a: point[a] for a in value.axis_names}))
    return float(value)


def cell_of(pset: ParamSet) -> Cell:
    """The lab's four cell values of a battery parameter set."""
    from twin.battery import params_from_set

    cell = params_from_set(pset)[0].cell
    return Cell(_at_25(cell.r0_ohm), _at_25(cell.r1_ohm), _at_25(cell.c1_f),
                float(cell.capacity_ah))


def emulator_cell(recs: Recordings) -> tuple[Cell, str, str, int]:
    """The emulated cell's values, and the battery's node, name and cells in parallel."""
    from bench.build import asset_specs
    from twin.battery import params_from_set

    s = recs.scenario()
    node, name = asset_of(s, "battery")
    spec = next(sp for sp in asset_specs(s, emulator=True, nodes=[node]) if sp.name == name)
    return (cell_of(spec.params), node, name,
            params_from_set(spec.params)[0].cells_parallel)


def reference_cell(recs: Recordings, node: str, name: str) -> Cell:
    """``gridloop calibrate``'s one-RC fit of the recording."""
    from bench.calibrate import calibrate

    return cell_of(calibrate(recs.path, f"{node}.{name}", n_rc=1).pset)


def grade(recs: Recordings, answers: dict | None) -> Grade:
    g = recs.new_grade()
    truth, node, name, parallel = emulator_cell(recs)
    with recs.open() as run:
        t, i_pack = run.time, run.signal(node, name, "current_a")
    i_cell = np.nan_to_num(i_pack) / parallel
    c_rate = float(np.max(np.abs(i_cell))) / truth.capacity_ah
    g.check("pulse current", f"{c_rate:.2f} C", ">= 0.3 C", c_rate >= 0.3)
    rest = _longest_rest_after_pulse(t, i_cell, 0.01 * truth.capacity_ah)
    g.check("longest rest after a pulse", f"{rest:.0f} s",
            f">= 5 tau1 = {5 * truth.tau1_s:.0f} s", rest >= 5 * truth.tau1_s)
    judges = {key: (f"within {100 * tol:.0f} % of the emulator's",
                    lambda value, key=key, tol=tol:
                    relative_error(value, getattr(truth, key)) <= tol)
              for key, (tol, _) in TOLERANCE.items()}
    points = {key: pts for key, (_, pts) in TOLERANCE.items()}
    if answers is not None:
        shown = [f"{label} {answers[key]:.4g} {QUESTIONS[key].unit}" if key in answers
                 else f"{label} missing" for key, label in
                 (("r0_ohm", "R0"), ("r1_ohm", "R1"), ("c1_f", "C1"), ("capacity_ah", "capacity"))]
        g.find("identified cell", ", ".join(shown))
        grade_answers(g, QUESTIONS, answers, judges, points)
        return g
    # no answers file: the reference solution is graded in the answers' place, so that a
    # lab run alone shows whether its recording can be identified at all
    found = reference_cell(recs, node, name)
    g.find("graded values", "gridloop calibrate --rc 1 (the reference solution; give "
           "--answers to grade yours)")
    g.find("identified cell", f"R0 {found.r0_ohm:.4g} Ohm, R1 {found.r1_ohm:.4g} Ohm, "
           f"C1 {found.c1_f:.4g} F (tau1 {found.tau1_s:.3g} s), capacity "
           f"{found.capacity_ah:.4g} Ah")
    g.answers_note = ("answers not graded (no --answers): the reference solution (gridloop "
                      "calibrate --rc 1) is graded in their place")
    for key, (target, meets) in judges.items():
        value = getattr(found, key)
        g.check(f"calibrate: {key}", f"{value:.4g} {QUESTIONS[key].unit}", target,
                meets(value), points[key])
    return g


def _longest_rest_after_pulse(t: np.ndarray, i: np.ndarray, tiny_a: float) -> float:
    """Length of the longest run of near-zero current that follows a pulse. [s]"""
    rest = np.abs(i) <= tiny_a
    best, start = 0.0, None
    for k in range(1, len(rest)):
        if rest[k] and not rest[k - 1]:
            start = k
        elif not rest[k] and rest[k - 1] and start is not None:
            best, start = max(best, float(t[k] - t[start])), None
    if start is not None:
        best = max(best, float(t[-1] - t[start]))
    return best


def figures(recs: Recordings, out: Path) -> list[Path]:
    """Current and voltage over the whole test, and over the first pulse and its rest."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _, node, name, _ = emulator_cell(recs)
    with recs.open() as run:
        t = run.time
        i = run.signal(node, name, "current_a")
        v = run.signal(node, name, "voltage_v")
        soc = run.signal(node, name, "soc")
    edges = np.flatnonzero(np.abs(np.diff(np.nan_to_num(i))) > 0.2 * np.nanmax(np.abs(i)))
    first = slice(max(0, edges[0] - 40), min(len(t), edges[1] + 240)) if len(edges) > 1 \
        else slice(None)
    fig = Figure(figsize=(10.0, 7.0), dpi=110)
    FigureCanvasAgg(fig)
    for row, (keep, what) in enumerate(((slice(None), "whole test"),
                                        (first, "first pulse and its rest"))):
        ax = fig.add_subplot(2, 1, row + 1)
        ax.plot(t[keep], v[keep], color="tab:blue", lw=1.0)
        ax.set_ylabel("pack voltage [V]", color="tab:blue")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(t[keep], i[keep], color="tab:red", lw=0.8)
        ax2.set_ylabel("pack current [A] (+ discharge)", color="tab:red")
        if row == 0:
            ax.set_title(f"Pulse test, {what}: SOC {np.nanmax(soc):.3f} to {np.nanmin(soc):.3f}")
        else:
            ax.set_title(f"Pulse test, {what}: read R0 from the jump, tau1 from the relaxation")
            ax.set_xlabel("time [s]")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{recs.lab.name}_pulse.png"
    fig.savefig(path, format="png")
    return [path]
