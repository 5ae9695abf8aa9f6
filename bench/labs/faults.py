"""Grader of the faults lab.

The ``gpu_smoothing`` node run clean (the main recording) and once per fault card (one
variant each).  For every run and the fault's window (from the card's ``start_s`` to two
seconds after its ``stop_s``) it measures the peak ramp of the 1 s mean grid power, taken
from the node balance ``rack - battery`` (both measured; the meter where one is missing,
so a faulty meter does not hide what the grid saw), and what the bench recorded: ticks with
a quality flag on the faulty device, bench events (``device_*``), the emulator's fault
events (``fault.*``, which a physical kit does not send), and the twin residual of the
device's power (measured minus twin), which shows the faults no reading flags.  A fault is
*flagged* when quality flags cover more than 2 % of its window's ticks.

A fault *breaks* the controller when the peak ramp in its window exceeds the bound of the
gpu_smoothing lab (the limit plus the rack's largest edge times the converter's lag).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import metrics
from bench.labs import LabError
from bench.labs.gpu_smoothing import WINDOW_S, Setting
from bench.labs.grading import Grade, Question, Recordings, asset_of, grade_answers
from bench.recording import Run

QUESTIONS = {
    "broken": Question("the faults that break the controller (variant names)", names=True),
    "flagged": Question("the faults the quality column flags (variant names)", names=True),
}
#: what follows a fault's window and still counts as its effect [s]
RECOVERY_S = 2.0
#: residual RMS in the window over RMS before it that reveals a silent fault [-]
RESIDUAL_RATIO = 10.0
#: a fault is flagged when flags cover more than this share of its window's ticks (a loaded
#: machine may miss a deadline now and then without any fault) [-]
FLAGGED_SHARE = 0.02


@dataclass(frozen=True)
class Outcome:
    """One run's behaviour in its fault window (the clean run: the same window)."""

    asset: str
    fault: str
    peak_ramp_w_per_s: float
    flagged_ticks: int
    window_ticks: int
    bench_events: int
    fault_events: int
    residual_ratio: float

    def broken(self, bound: float) -> bool:
        return self.peak_ramp_w_per_s > bound

    @property
    def flagged(self) -> bool:
        return self.flagged_ticks > FLAGGED_SHARE * self.window_ticks


def _card(recs: Recordings, variant: str) -> tuple[str, dict]:
    """The faulty asset of a variant and its fault card."""
    s = recs.scenario(variant)
    cards = [(name, cfg.faults[0]) for _, name, cfg in s.assets() if cfg.faults]
    if len(cards) != 1:
        raise LabError(f"{recs.path_of(variant)}: variant '{variant}' needs exactly one "
                       f"fault card, has {len(cards)}")
    return cards[0]


def _fault_name(card: dict) -> str:
    return ", ".join(k for k in ("timeout", "frozen", "drop_writes", "corrupt_crc")
                     if card.get(k)) or (f"exception {card['exception_code']}"
                                         if card.get("exception_code") else "delay")


def outcome(run: Run, node: str, rack: str, battery: str, meter: str, asset: str,
            card: dict, window: tuple[float, float]) -> Outcome:
    t, dt = run.time, run.dt
    w = (t >= window[0]) & (t < window[1])
    before = t < window[0]
    balance = run.signal(node, rack, "p_w") - run.signal(node, battery, "p_w")
    grid = metrics.hold_gaps(np.where(np.isfinite(balance), balance,
                                      run.signal(node, meter, "p_w")))
    events = [(tt, kind) for tt, kind, _ in run.events() if window[0] <= tt < window[1]]
    residual = run.signal(node, asset, "p_w", "residual") if asset and run.has(
        node, asset, "p_w", "residual") else np.full(len(t), np.nan)

    def rms(x: np.ndarray) -> float:
        x = x[np.isfinite(x)]
        return float(np.sqrt(np.mean(x ** 2))) if len(x) else math.nan

    floor = max(rms(residual[before]), 1.0)  # a watt: the registers' resolution
    return Outcome(
        asset=asset, fault=_fault_name(card) if card else "none",
        peak_ramp_w_per_s=metrics.peak_ramp_w_per_s(grid[w], dt, WINDOW_S),
        flagged_ticks=int((run.quality(node, asset)[w] != 0).sum()) if asset else 0,
        window_ticks=int(w.sum()),
        bench_events=sum(1 for _, k in events if k.startswith("device_")),
        fault_events=sum(1 for _, k in events if k.startswith("fault")),
        residual_ratio=rms(residual[w]) / floor)


def measure(recs: Recordings) -> tuple[dict[str, Outcome], Setting]:
    """Every variant's outcome and the clean run's (key ``clean``) over the same window."""
    from bench.labs.gpu_smoothing import measure_setting

    s = recs.scenario()
    node, meter = asset_of(s, "meter")
    rack, battery = asset_of(s, "gpu_rack")[1], asset_of(s, "battery")[1]
    setting = measure_setting(recs)
    out = {}
    windows = []
    for v in recs.lab.variants:
        asset, card = _card(recs, v.name)
        start = float(card.get("start_s") or 0.0)
        stop = float(card.get("stop_s") or s.run.duration_s)
        windows.append((start, stop + RECOVERY_S))
        with recs.open(v.name) as run:
            out[v.name] = outcome(run, node, rack, battery, meter, asset, card, windows[-1])
    window = (min(w[0] for w in windows), max(w[1] for w in windows))
    with recs.open() as run:
        out["clean"] = outcome(run, node, rack, battery, meter, "", {}, window)
    return out, setting


def grade(recs: Recordings, answers: dict | None) -> Grade:
    g = recs.new_grade()
    out, st = measure(recs)
    bound = st.ramp_bound_w_per_s
    g.find("ramp bound", f"limit {st.limit_w_per_s:.0f} W/s + rack edge "
           f"{st.rack_edge_w / 1e3:.1f} kW x {st.tau_s * 1e3:.0f} ms / {WINDOW_S:g} s = "
           f"{bound:.0f} W/s")
    for name, o in out.items():
        verdict = "BREAKS" if o.broken(bound) else "holds"
        residual = f"x{o.residual_ratio:.0f}" if math.isfinite(o.residual_ratio) else "-"
        g.find(name, f"{o.asset or '-'}: {o.fault} | peak ramp {o.peak_ramp_w_per_s:.0f} W/s "
               f"{verdict} | flagged ticks {o.flagged_ticks} | events device_* "
               f"{o.bench_events}, fault.* {o.fault_events} | residual {residual}")
    clean = out.pop("clean")
    g.check("clean run holds the ramp bound", f"{clean.peak_ramp_w_per_s:.0f} W/s",
            f"<= {bound:.0f} W/s", not clean.broken(bound))
    for name, o in out.items():
        if o.flagged:
            seen, how = True, f"{o.flagged_ticks} flagged ticks"
        else:
            seen = o.residual_ratio >= RESIDUAL_RATIO
            how = f"no flags; residual x{o.residual_ratio:.0f}"
        g.check(f"{name} is in the recording", how,
                f"flags, or residual >= x{RESIDUAL_RATIO:g}", seen)
    measured = {"broken": sorted(n for n, o in out.items() if o.broken(bound)),
                "flagged": sorted(n for n, o in out.items() if o.flagged)}
    grade_answers(g, QUESTIONS, answers, {
        key: (", ".join(want) or "none", lambda value, want=want: sorted(set(value)) == want)
        for key, want in measured.items()}, points={key: 2.0 for key in QUESTIONS})
    return g


def figures(recs: Recordings, out: Path) -> list[Path]:
    """Grid power (node balance) of every run, the fault window shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = recs.scenario()
    node, meter = asset_of(s, "meter")
    rack, battery = asset_of(s, "gpu_rack")[1], asset_of(s, "battery")[1]
    names = [""] + [v.name for v in recs.lab.variants]
    fig = Figure(figsize=(10.0, 1.6 * len(names) + 0.8), dpi=110)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(len(names), 1, i + 1)
        with recs.open(name) as run:
            t = run.time
            bal = run.signal(node, rack, "p_w") - run.signal(node, battery, "p_w")
            ax.plot(t, run.signal(node, rack, "p_w") / 1e3, color="0.6", lw=0.7,
                    label="rack")
            ax.plot(t, bal / 1e3, color="tab:blue", lw=0.9, label="grid (rack - battery)")
            ax.plot(t, run.signal(node, meter, "p_w") / 1e3, color="tab:red", lw=0.7,
                    ls="--", label="meter reading")
        if name:
            _, card = _card(recs, name)
            ax.axvspan(float(card.get("start_s") or 0.0),
                       float(card.get("stop_s") or t[-1]), color="tab:orange", alpha=0.15)
        ax.set_ylabel(f"{name or 'clean'}\n[kW]", fontsize=8)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(loc="upper right", fontsize=7, ncol=3)
            ax.set_title("Grid power under each fault card (fault window shaded)")
    ax.set_xlabel("time [s]")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{recs.lab.name}_runs.png"
    fig.savefig(path, format="png")
    return [path]
