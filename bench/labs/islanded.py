"""Grader of the islanded microgrid lab.

Five recordings of an island meeting a rack start-up: the base case and one change each of
inertia (``low_inertia``, ``high_inertia``) and droop (``stiff_droop``, ``soft_droop``).
For each it finds the step in rack power, measures the frequency's initial RoCoF (over the
first 20 ms, against the rack's mean rise over them), RoCoF over 100 and 500 ms windows,
nadir, settled deviation and settling time, and compares the base case with the
single-area model of the sheet::

    initial RoCoF  = -dP0 / (2 H S) f_nom        (swing equation, before any source reacts)
    settled df     = -dP / (S (D + K)) f_nom,    K = sum of rating / (droop S)

with ``dP0`` the rack's first jump, ``dP`` its settled rise, ``S`` the bus base power.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import metrics
from bench.labs.grading import Grade, Question, Recordings, asset_of, grade_answers, relative_error
from bench.recording import Run

QUESTIONS = {
    "rocof_hz_per_s": Question("initial rate of change of frequency, base case", "Hz/s"),
    "deviation_hz": Question("settled frequency deviation after the start-up, base case",
                             "Hz"),
    "nadir_hz": Question("lowest frequency, base case", "Hz"),
    "settling_time_s": Question("settling time into the band, base case", "s"),
}
RUNS = ("", "low_inertia", "high_inertia", "stiff_droop", "soft_droop")
#: window of the initial RoCoF [s]
INITIAL_S = 0.02
#: the settled values are the means over this last fraction of the run
TAIL = 0.2
#: settling band: this fraction of the settled deviation
BAND = 0.2


@dataclass(frozen=True)
class Response:
    """One recording's frequency response to the start-up, and the model's prediction."""

    t_event_s: float
    dp0_w: float
    dp_w: float
    rocof0_hz_per_s: float
    rocof_100ms_hz_per_s: float
    rocof_500ms_hz_per_s: float
    nadir_hz: float
    nadir_t_s: float
    deviation_hz: float
    settling_s: float
    band_hz: float
    model_rocof0_hz_per_s: float
    model_deviation_hz: float


def _bus(s, node: str, asset: str):
    from bench.build import asset_specs
    from twin.bus import BusParams

    spec = next(sp for sp in asset_specs(s, emulator=False, nodes=[node]) if sp.name == asset)
    return BusParams.from_params(spec.params)


def response(run: Run, node: str, grid: str, rack: str, bus) -> Response:
    """Measure one recording (``bus``: the node's :class:`twin.bus.BusParams`)."""
    t, dt = run.time, run.dt
    f = run.signal(node, grid, "freq_hz")
    p = run.signal(node, rack, "p_w")
    # A recorded row holds the power over the step before it and the state at that step's
    # start: the start-up is the first row k + 1 well above the idle level before the
    # rack's largest jump, the power of the step from t[k].
    idle = float(np.nanmedian(p[:int(np.nanargmax(np.diff(p))) + 1]))
    k = int(np.flatnonzero(p - idle > 0.1 * (np.nanmax(p) - idle))[0]) - 1
    before = float(np.nanmean(p[max(0, k - int(1.0 / dt)):k + 1]))
    tail = slice(int(len(t) * (1 - TAIL)), None)
    n0 = max(1, int(round(INITIAL_S / dt)))
    dp0 = float(np.mean(p[k + 1:k + 1 + n0])) - before
    dp = float(np.nanmean(p[tail])) - before
    f0 = float(f[k + 1])
    dev = float(np.nanmean(f[tail])) - f0
    te = float(t[k])
    nadir, t_nadir = metrics.nadir(t, f, te)
    k_src = (bus.grid_forming.rating_w / bus.grid_forming.droop_pu
             + bus.governor.rating_w / bus.governor.droop_pu) / bus.s_base_va
    band = BAND * abs(dev)
    return Response(
        t_event_s=te, dp0_w=dp0, dp_w=dp,
        rocof0_hz_per_s=float(f[k + 1 + n0] - f[k + 1]) / (n0 * dt),
        rocof_100ms_hz_per_s=metrics.rocof_hz_per_s(t, f, 0.1, te),
        rocof_500ms_hz_per_s=metrics.rocof_hz_per_s(t, f, 0.5, te),
        nadir_hz=nadir, nadir_t_s=t_nadir - te, deviation_hz=dev,
        settling_s=metrics.settling_time_s(t, f, te, band, f0 + dev), band_hz=band,
        model_rocof0_hz_per_s=-dp0 / (2.0 * bus.h_s * bus.s_base_va) * bus.f_nom_hz,
        model_deviation_hz=-dp / (bus.s_base_va * (bus.d_pu + k_src)) * bus.f_nom_hz)


def measure(recs: Recordings) -> dict[str, Response]:
    """Every recording's response, by variant (``base`` for the main one)."""
    out = {}
    for variant in RUNS:
        s = recs.scenario(variant)
        node, grid = asset_of(s, "grid")
        rack = asset_of(s, "gpu_rack")[1]
        with recs.open(variant) as run:
            out[variant or "base"] = response(run, node, grid, rack, _bus(s, node, grid))
    return out


def grade(recs: Recordings, answers: dict | None) -> Grade:
    g = recs.new_grade()
    r = measure(recs)
    base = r["base"]
    g.find("rack start-up", f"at {base.t_event_s:.2f} s: first jump {base.dp0_w / 1e3:.1f} kW, "
           f"settled rise {base.dp_w / 1e3:.1f} kW")
    for name, x in r.items():
        g.find(name, f"RoCoF initial {x.rocof0_hz_per_s:+.2f} (model "
               f"{x.model_rocof0_hz_per_s:+.2f}), 100 ms {x.rocof_100ms_hz_per_s:.2f}, "
               f"500 ms {x.rocof_500ms_hz_per_s:.2f} Hz/s | nadir {x.nadir_hz:.3f} Hz at "
               f"+{x.nadir_t_s:.2f} s | settled {x.deviation_hz:+.3f} Hz (model "
               f"{x.model_deviation_hz:+.3f}) | settling {x.settling_s:.2f} s "
               f"(band +-{x.band_hz:.3f} Hz)")
    err = relative_error(base.rocof0_hz_per_s, base.model_rocof0_hz_per_s)
    g.check("initial RoCoF follows the swing equation", f"{base.rocof0_hz_per_s:+.2f} Hz/s",
            f"{base.model_rocof0_hz_per_s:+.2f} Hz/s +- 10 %", err <= 0.1, 2)
    err = relative_error(base.deviation_hz, base.model_deviation_hz)
    g.check("settled deviation follows the droop", f"{base.deviation_hz:+.3f} Hz",
            f"{base.model_deviation_hz:+.3f} Hz +- 10 %", err <= 0.1, 2)
    lo, hi = (abs(r[v].rocof0_hz_per_s) for v in ("low_inertia", "high_inertia"))
    g.check("less inertia, faster initial RoCoF",
            f"{lo:.2f} > {abs(base.rocof0_hz_per_s):.2f} > {hi:.2f} Hz/s", "decreasing in H",
            lo > abs(base.rocof0_hz_per_s) > hi)
    devs = [r[v].deviation_hz for v in ("low_inertia", "base", "high_inertia")]
    spread = (max(devs) - min(devs)) / abs(base.deviation_hz)
    g.check("inertia does not move the settled frequency",
            " / ".join(f"{d:+.3f}" for d in devs) + " Hz", "within 5 %", spread <= 0.05)
    stiff, soft = (abs(r[v].deviation_hz) for v in ("stiff_droop", "soft_droop"))
    g.check("stiffer droop, smaller settled deviation",
            f"{stiff:.3f} < {abs(base.deviation_hz):.3f} < {soft:.3f} Hz",
            "increasing in droop", stiff < abs(base.deviation_hz) < soft)
    g.check("frequency stays above 49 Hz (first load-shedding stage)",
            f"nadir {base.nadir_hz:.3f} Hz", ">= 49 Hz", base.nadir_hz >= 49.0)

    measured = {"rocof_hz_per_s": base.rocof0_hz_per_s, "deviation_hz": base.deviation_hz,
                "nadir_hz": base.nadir_hz, "settling_time_s": base.settling_s}
    judges = {}
    for key, want in measured.items():
        if key == "nadir_hz":
            judges[key] = (f"{want:.3f} +- 0.05 Hz",
                           lambda value, want=want: abs(value - want) <= 0.05)
        else:  # a falling frequency's RoCoF and deviation are graded by their size
            tol = 0.25 if key == "settling_time_s" else 0.1
            judges[key] = (f"{want:.4g} {QUESTIONS[key].unit} +- {100 * tol:.0f} %",
                           lambda value, want=want, tol=tol:
                           relative_error(abs(value), abs(want)) <= tol)
    grade_answers(g, QUESTIONS, answers, judges)
    return g


def figures(recs: Recordings, out: Path) -> list[Path]:
    """Frequency after the start-up in every recording, and the battery's response."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 7.0), dpi=110)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    r = measure(recs)
    for variant in RUNS:
        s = recs.scenario(variant)
        node, grid = asset_of(s, "grid")
        battery = asset_of(s, "battery")[1]
        bus = _bus(s, node, grid)
        label = (f"{variant or 'base'}: H {bus.h_s:g} s, droop "
                 f"{100 * bus.grid_forming.droop_pu:g} %")
        with recs.open(variant) as run:
            t = run.time - r[variant or "base"].t_event_s
            keep = (t >= -1.0) & (t <= 5.0)
            ax.plot(t[keep], run.signal(node, grid, "freq_hz")[keep], lw=1.0, label=label)
            ax2.plot(t[keep], run.signal(node, battery, "p_w")[keep] / 1e3, lw=1.0,
                     label=label)
    ax.set_ylabel("frequency [Hz]")
    ax.set_title("Island frequency after the rack start-up (t = 0)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax2.set_ylabel("grid-forming battery [kW]")
    ax2.set_xlabel("time after the start-up [s]")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{recs.lab.name}_frequency.png"
    fig.savefig(path, format="png")
    return [path]

