"""Grader of the GPU smoothing labs (``gpu_smoothing``, ``gpu_smoothing_h100``).

Three recordings of one node (rack, battery, meter): the battery idle (``baseline``), the
``gpu_smoothing`` controller on measurements alone (``feedback``) and with the twin's
forecast of the rack (the main recording).  At the grid connection (the meter) it measures
the swing (RMS of the power in the band, from its spectrum), the peak ramp of the 1 s mean
and the largest per-tick edge; on the battery, its energy throughput and equivalent full
cycles.  The swing reduction is ``20 log10(RMS before / RMS after)`` in dB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import metrics
from bench.labs.grading import Grade, Question, Recordings, asset_of, grade_answers, relative_error
from bench.recording import Run
from twin.spectrum import BAND_HZ

QUESTIONS = {
    "reduction_db": Question("swing reduction at the grid, baseline to smoothed", "dB"),
    "throughput_kwh": Question("battery energy throughput (charge plus discharge) with "
                               "smoothing", "kWh"),
    "peak_ramp_before_w_per_s": Question("peak ramp of the 1 s mean grid power, baseline",
                                         "W/s"),
    "peak_ramp_after_w_per_s": Question("peak ramp of the 1 s mean grid power, smoothed",
                                        "W/s"),
}
#: recordings compared, in the order they are shown: variant name and label
RUNS = (("baseline", "baseline"), ("feedback", "feedback"), ("", "feed-forward"))
#: ramp window [s]
WINDOW_S = 1.0
#: default targets (a lab's ``[targets]`` may set others): swing removed by smoothing and
#: the forecast's gain over feedback [dB]
TARGETS = {"reduction_db": 10.0, "forecast_gain_db": 3.0}


@dataclass(frozen=True)
class Swing:
    """What the grid connection of one recording saw."""

    rms_band_w: float
    peak_ramp_w_per_s: float
    peak_step_w_per_s: float
    peak_import_w: float
    rack_rms_band_w: float
    throughput_kwh: float
    capacity_kwh: float
    soc_min: float
    soc_max: float

    @property
    def cycles(self) -> float:
        """Equivalent full cycles: throughput over twice the capacity. [-]"""
        return self.throughput_kwh / (2.0 * self.capacity_kwh)


def band(dt: float) -> tuple[float, float]:
    """The swing band: the spectrum's default band, below the Nyquist frequency. [Hz]"""
    return BAND_HZ[0], min(BAND_HZ[1], 0.45 / dt)


def swing(run: Run, node: str, meter: str, rack: str, battery: str) -> Swing:
    """The swing figures of one recording."""
    dt = run.dt
    lo_hi = band(dt)
    grid = metrics.hold_gaps(run.signal(node, meter, "p_w"))
    p_rack = metrics.hold_gaps(run.signal(node, rack, "p_w"))
    p_bat = run.signal(node, battery, "p_w")
    soc = run.signal(node, battery, "soc")
    cap = run.signal(node, battery, "capacity_wh")
    return Swing(
        rms_band_w=math.sqrt(metrics.band_power_w2(grid, dt, lo_hi)),
        peak_ramp_w_per_s=metrics.peak_ramp_w_per_s(grid, dt, WINDOW_S),
        peak_step_w_per_s=metrics.peak_step_w_per_s(grid, dt),
        peak_import_w=float(np.nanmax(grid)),
        rack_rms_band_w=math.sqrt(metrics.band_power_w2(p_rack, dt, lo_hi)),
        throughput_kwh=metrics.energy_kwh(np.abs(p_bat), dt),
        capacity_kwh=float(np.nanmedian(cap)) / 1e3,
        soc_min=float(np.nanmin(soc)), soc_max=float(np.nanmax(soc)))


def reduction_db(before: Swing, after: Swing) -> float:
    """Swing reduction from ``before`` to ``after``. [dB]"""
    return metrics.reduction_db(before.rms_band_w ** 2, after.rms_band_w ** 2)


@dataclass(frozen=True)
class Setting:
    """What the comparison is held to: the controller's limit and what physics allows over
    it."""

    dt_s: float
    #: the controller's ramp limit [W/s]
    limit_w_per_s: float
    #: the battery converter's response time constant [s]
    tau_s: float
    #: the rack's largest change from one tick to the next [W]
    rack_edge_w: float

    @property
    def ramp_bound_w_per_s(self) -> float:
        """The limit plus what the converter's lag lets through at the rack's largest edge:
        a first-order lag passes ``edge x tau`` of energy, spread over one window. [W/s]"""
        return self.limit_w_per_s + self.rack_edge_w * self.tau_s / WINDOW_S


def measure_setting(recs: Recordings) -> Setting:
    """The controller's limit, the converter's lag and the rack's largest edge (main run)."""
    from bench.build import DEFAULT_CONVERTER, load_params
    from twin.inverter import InverterParams

    s = recs.scenario()
    node, rack = asset_of(s, "gpu_rack")
    battery = asset_of(s, "battery")[1]
    conv = s.nodes[node][battery].converter or DEFAULT_CONVERTER
    tau = InverterParams.from_params(load_params(s, conv, f"{node}.{battery}")).tau_s
    with recs.open() as run:
        edge = metrics.peak_step_w_per_s(run.signal(node, rack, "p_w"), run.dt) * run.dt
    limit = float(s.controller.options.get("ramp_limit_w_per_s", math.nan))
    return Setting(s.run.dt_s, limit, tau, edge)


def measure(recs: Recordings) -> tuple[dict[str, Swing], Setting]:
    """Swing figures of every recording by label, and the setting they are judged in."""
    s = recs.scenario()
    node, meter = asset_of(s, "meter")
    rack, battery = asset_of(s, "gpu_rack")[1], asset_of(s, "battery")[1]
    out = {}
    for variant, label in RUNS:
        with recs.open(variant) as run:
            out[label] = swing(run, node, meter, rack, battery)
    return out, measure_setting(recs)


def grade(recs: Recordings, answers: dict | None) -> Grade:
    g = recs.new_grade()
    aim = recs.targets(TARGETS)
    sw, st = measure(recs)
    limit, bound = st.limit_w_per_s, st.ramp_bound_w_per_s
    base, fb, ff = sw["baseline"], sw["feedback"], sw["feed-forward"]
    lo, hi = band(st.dt_s)
    cols = " | ".join(f"{label} {{{i}}}" for i, (_, label) in enumerate(RUNS))
    g.find(f"swing at the grid, RMS {lo:g}-{hi:g} Hz",
           cols.format(*(f"{s.rms_band_w / 1e3:.2f} kW" for s in sw.values())))
    g.find("rack swing (the source), RMS in band", f"{base.rack_rms_band_w / 1e3:.2f} kW")
    g.find("swing reduction", f"feedback {reduction_db(base, fb):.1f} dB | feed-forward "
           f"{reduction_db(base, ff):.1f} dB")
    g.find(f"peak ramp of the {WINDOW_S:g} s mean",
           cols.format(*(f"{s.peak_ramp_w_per_s:.0f} W/s" for s in sw.values()))
           + f" (limit {limit:.0f} W/s)")
    g.find("largest per-tick edge",
           cols.format(*(f"{s.peak_step_w_per_s / 1e3:.0f} kW/s" for s in sw.values())))
    g.find("peak grid import",
           cols.format(*(f"{s.peak_import_w / 1e3:.1f} kW" for s in sw.values())))
    g.find("battery throughput", f"feedback {fb.throughput_kwh:.3f} kWh ({fb.cycles:.2e} "
           f"cycles) | feed-forward {ff.throughput_kwh:.3f} kWh ({ff.cycles:.2e} cycles)")

    same = all(relative_error(s.rack_rms_band_w, base.rack_rms_band_w) <= 0.01
               for s in sw.values())
    g.check("same rack swing in every recording",
            " / ".join(f"{s.rack_rms_band_w / 1e3:.2f}" for s in sw.values()) + " kW",
            "within 1 %", same)
    red = reduction_db(base, ff)
    g.check("swing removed with smoothing", f"{red:.1f} dB", f">= {aim['reduction_db']:g} dB",
            red >= aim["reduction_db"], 2)
    g.find("allowed over the limit: largest rack edge x converter lag",
           f"{st.rack_edge_w / 1e3:.1f} kW x {st.tau_s * 1e3:.0f} ms / {WINDOW_S:g} s = "
           f"{bound - limit:.0f} W/s")
    g.check(f"peak ramp of the {WINDOW_S:g} s mean, smoothed",
            f"{ff.peak_ramp_w_per_s:.0f} W/s", f"<= {bound:.0f} W/s",
            ff.peak_ramp_w_per_s <= bound, 2)
    gain = red - reduction_db(base, fb)
    g.check("the forecast helps (feed-forward over feedback)", f"{gain:+.1f} dB",
            f">= +{aim['forecast_gain_db']:g} dB", gain >= aim["forecast_gain_db"])
    g.check("battery SOC stays in 0.1-0.9", f"{ff.soc_min:.3f}-{ff.soc_max:.3f}", "0.1-0.9",
            ff.soc_min >= 0.1 and ff.soc_max <= 0.9)

    measured = {"reduction_db": red, "throughput_kwh": ff.throughput_kwh,
                "peak_ramp_before_w_per_s": base.peak_ramp_w_per_s,
                "peak_ramp_after_w_per_s": ff.peak_ramp_w_per_s}
    judges = {key: (f"{want:.4g} {QUESTIONS[key].unit} +- 10 %",
                    lambda value, want=want: relative_error(value, want) <= 0.1)
              for key, want in measured.items()}
    judges["reduction_db"] = (f"{red:.1f} +- 1 dB", lambda value: abs(value - red) <= 1.0)
    grade_answers(g, QUESTIONS, answers, judges)
    return g


def figures(recs: Recordings, out: Path) -> list[Path]:
    """The grid power of the three recordings over time, and their spectra (with the battery
    idle, the grid carries the rack's power)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bench.figures import spectrum_figure

    node, meter = asset_of(recs.scenario(), "meter")
    series = {}
    power = {}
    for variant, label in RUNS:
        with recs.open(variant) as run:
            t, dt = run.time, run.dt
            power[label] = metrics.hold_gaps(run.signal(node, meter, "p_w"))
    for _, label in RUNS:
        series[f"grid, {label}"] = (power[label], dt)
    out.mkdir(parents=True, exist_ok=True)
    paths = [spectrum_figure(out / f"{recs.lab.name}_spectrum.png", series, band(dt),
                             title="Power at the grid connection, with and without smoothing")]
    fig = Figure(figsize=(10.0, 6.0), dpi=110)
    FigureCanvasAgg(fig)
    zoom = (t >= t[-1] / 3) & (t <= t[-1] / 3 + 12.0)
    for k, (ax, keep) in enumerate(((fig.add_subplot(2, 1, 1), slice(None)),
                                    (fig.add_subplot(2, 1, 2), zoom))):
        for label, color in zip(("baseline", "feedback", "feed-forward"),
                                ("tab:red", "tab:orange", "tab:blue")):
            ax.plot(t[keep], power[label][keep] / 1e3, color=color, lw=0.9,
                    label=f"grid, {label}" + (" (= rack)" if label == "baseline" else ""))
        ax.set_ylabel("power [kW]")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(loc="lower right", fontsize=8, ncol=4)
            ax.set_title("Grid-side power: battery idle, feedback smoothing, feed-forward")
    ax.set_xlabel("time [s] (bottom: 12 s zoom)")
    fig.tight_layout()
    path = out / f"{recs.lab.name}_grid.png"
    fig.savefig(path, format="png")
    return paths + [path]
