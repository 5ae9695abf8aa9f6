"""Figures of a finished run, computed from its recording: what ``run`` and ``demo`` print.

Energy by source per node (PV, battery discharge and charge, grid import and export, GPU
racks), peak grid import, battery throughput, and real-time lateness.  Where the grid
connection's import or export limit bound, the node's bus records the load it could not
serve and the generation it curtailed: with those the node's balance closes (PV + grid in +
battery out + unserved = racks + grid out + battery in + curtailed), and the summary says so;
islanded, the bus's governed source (a genset) is the term to add.
Power is integrated with the zero-order hold the engine applied (each tick's value held for
``dt``).  A figure whose signal the recording lacks is NaN (printed ``-``), not 0; ticks
without a reading (a device lost) are counted, and the table says its energies cover the
other ticks only.  A node without a meter or grid asset is on the default bus the twin gives
it (recorded as asset ``grid``): its grid figures are that bus's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.recording import Run

J_PER_KWH = 3.6e6


@dataclass
class NodeFigures:
    pv_kwh: float = math.nan
    battery_discharge_kwh: float = math.nan
    battery_charge_kwh: float = math.nan
    grid_import_kwh: float = math.nan
    grid_export_kwh: float = math.nan
    rack_kwh: float = math.nan
    peak_grid_import_kw: float = math.nan
    battery_throughput_kwh: float = math.nan
    soc_start: float = math.nan
    soc_end: float = math.nan
    #: load beyond the grid connection's import limit, which the node must shed
    unserved_kwh: float = math.nan
    #: generation beyond the grid connection's export limit, curtailed
    curtailed_kwh: float = math.nan
    #: ticks at which the import (export) limit bound: unserved (curtailed) power
    import_limited_ticks: int = 0
    export_limited_ticks: int = 0
    #: what the bus's own governed source (a genset) delivered while islanded
    governor_kwh: float = math.nan
    #: ticks at which a signal of these figures had no reading (the most of any signal)
    missing_ticks: int = 0

    def add(self, name: str, p_w: np.ndarray, dt: float) -> None:
        """Add the energy of ``p_w`` to the figure ``name`` (NaN until a first signal)."""
        e = _energy_kwh(p_w, dt)
        have = getattr(self, name)
        setattr(self, name, e if math.isnan(have) else have + e)
        self.missing_ticks = max(self.missing_ticks, int(np.isnan(p_w).sum()))


@dataclass
class Figures:
    nodes: dict[str, NodeFigures] = field(default_factory=dict)
    ticks: int = 0
    simulated_s: float = 0.0
    lateness_p50_ms: float = math.nan
    lateness_p99_ms: float = math.nan
    lateness_max_ms: float = math.nan
    late_ticks: int = 0
    missed_deadlines: int = 0
    events: dict[str, int] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """One flat dict of figures (sweep tables, grading)."""
        out: dict[str, float] = {"ticks": self.ticks, "simulated_s": self.simulated_s,
                                 "lateness_p50_ms": self.lateness_p50_ms,
                                 "lateness_p99_ms": self.lateness_p99_ms,
                                 "lateness_max_ms": self.lateness_max_ms}
        for node, f in self.nodes.items():
            for k, v in f.__dict__.items():
                out[f"{node}.{k}"] = v
        return out


def _energy_kwh(p_w: np.ndarray, dt: float) -> float:
    p = np.nan_to_num(p_w, nan=0.0)
    return float(p.sum() * dt / J_PER_KWH)


def figures(run: Run) -> Figures:
    """Compute the run's figures from its recording."""
    dt = run.dt
    fig = Figures(ticks=len(run), simulated_s=len(run) * dt)
    kinds = run.asset_kinds()
    for node, assets in run.nodes().items():
        f = NodeFigures()
        for asset in assets:
            kind = kinds.get((node, asset), "")
            if kind == "inverter" and run.has(node, asset, "p_ac_w"):
                f.add("pv_kwh", run.signal(node, asset, "p_ac_w"), dt)
            elif kind == "battery" and run.has(node, asset, "p_w"):
                p = run.signal(node, asset, "p_w")
                f.add("battery_discharge_kwh", np.clip(p, 0, None), dt)
                f.add("battery_charge_kwh", np.clip(-p, 0, None), dt)
                f.add("battery_throughput_kwh", np.abs(p), dt)
                if run.has(node, asset, "soc"):
                    soc = run.signal(node, asset, "soc")
                    good = soc[np.isfinite(soc)]
                    if len(good):
                        f.soc_start, f.soc_end = float(good[0]), float(good[-1])
            elif kind == "gpu_rack" and run.has(node, asset, "p_w"):
                f.add("rack_kwh", run.signal(node, asset, "p_w"), dt)
        grid = _grid_power(run, node, assets, kinds)
        bus = _bus(run, node, assets, kinds)
        if bus is not None:
            for name, signal, ticks in (("unserved_kwh", "p_unserved_w", "import_limited_ticks"),
                                        ("curtailed_kwh", "p_curtailed_w",
                                         "export_limited_ticks")):
                if run.has(node, bus, signal):
                    p = run.signal(node, bus, signal)
                    f.add(name, p, dt)
                    setattr(f, ticks, int((np.nan_to_num(p) > 0).sum()))
            if run.has(node, bus, "p_gov_w"):
                f.add("governor_kwh", run.signal(node, bus, "p_gov_w"), dt)
        if grid is not None:
            f.add("grid_import_kwh", np.clip(grid, 0, None), dt)
            f.add("grid_export_kwh", np.clip(-grid, 0, None), dt)
            finite = grid[np.isfinite(grid)]
            if len(finite):
                f.peak_grid_import_kw = float(max(0.0, finite.max())) / 1e3
        fig.nodes[node] = f
    if bool(run.attrs.get("realtime", False)) and len(run):
        lat = run.dataset("timing/lateness")
        lat = lat[np.isfinite(lat)]
        if len(lat):
            fig.lateness_p50_ms = float(np.percentile(lat, 50)) * 1e3
            fig.lateness_p99_ms = float(np.percentile(lat, 99)) * 1e3
            fig.lateness_max_ms = float(lat.max()) * 1e3
            fig.late_ticks = int((lat > float(run.attrs["late_after_s"])).sum())
            fig.missed_deadlines = int((lat >= run.dt).sum())
    for _, kind, _ in run.events():
        fig.events[kind] = fig.events.get(kind, 0) + 1
    return fig


def _bus(run: Run, node: str, assets: list[str],
         kinds: dict[tuple[str, str], str]) -> str | None:
    """The node's bus: its ``grid`` asset, or the grid connection the twin gives a node
    without one (recorded as asset ``grid``, which the scenario does not list)."""
    for asset in assets:
        if kinds.get((node, asset)) == "grid":
            return asset
    if "grid" in assets and (node, "grid") not in kinds and run.has(node, "grid", "p_w"):
        return "grid"
    return None


def _grid_power(run: Run, node: str, assets: list[str],
                kinds: dict[tuple[str, str], str]) -> np.ndarray | None:
    """The node's grid-connection power: the meter's reading if there is one, else its
    bus's."""
    for asset in assets:
        if kinds.get((node, asset)) == "meter" and run.has(node, asset, "p_w"):
            return run.signal(node, asset, "p_w")
    bus = _bus(run, node, assets, kinds)
    if bus is not None:
        return run.signal(node, bus, "p_w")
    return None


def format_figures(fig: Figures) -> str:
    """The summary table printed after a run."""
    lines = [f"{'node':<10} {'PV kWh':>8} {'batt out':>9} {'batt in':>8} {'grid in':>8} "
             f"{'grid out':>9} {'racks':>8} {'peak kW':>8} {'thru kWh':>9} {'SOC':>11}"]
    def v(x: float, width: int, digits: int = 3) -> str:
        if not math.isfinite(x):
            return f"{'-':>{width}}"
        return f"{round(x, digits) + 0.0:{width}.{digits}f}"  # + 0.0: no "-0.000"

    gaps = []
    for node, f in fig.nodes.items():
        soc = (f"{f.soc_start:.3f}>{f.soc_end:.3f}" if math.isfinite(f.soc_start) else "-")
        lines.append(f"{node:<10} {v(f.pv_kwh, 8)} {v(f.battery_discharge_kwh, 9)} "
                     f"{v(f.battery_charge_kwh, 8)} {v(f.grid_import_kwh, 8)} "
                     f"{v(f.grid_export_kwh, 9)} {v(f.rack_kwh, 8)} "
                     f"{v(f.peak_grid_import_kw, 8, 1)} {v(f.battery_throughput_kwh, 9)} "
                     f"{soc:>11}")
        if f.missing_ticks:
            gaps.append(f"{node} {f.missing_ticks}")
    lines.append(f"{fig.ticks} ticks, {fig.simulated_s:.1f} s simulated")
    if gaps:
        lines.append(f"ticks without a reading: {', '.join(gaps)} of {fig.ticks}; those "
                     "nodes' energies cover the other ticks only")
    for node, f in fig.nodes.items():
        bound = []
        if f.import_limited_ticks:
            bound.append(f"import limit bound at {f.import_limited_ticks} of {fig.ticks} ticks, "
                         f"{f.unserved_kwh:.3f} kWh unserved (load the node must shed)")
        if f.export_limited_ticks:
            bound.append(f"export limit bound at {f.export_limited_ticks} of {fig.ticks} ticks, "
                         f"{f.curtailed_kwh:.3f} kWh curtailed")
        if bound:
            lines.append(f"{node}: grid {'; '.join(bound)}")
        if abs(f.governor_kwh) >= 5e-4:  # shown as 0.001 kWh or more
            lines.append(f"{node}: islanded, the bus's governed source (a genset) delivered "
                         f"{f.governor_kwh:.3f} kWh")
    if math.isfinite(fig.lateness_p50_ms):
        lines.append(f"lateness p50 {fig.lateness_p50_ms:.3f} ms, p99 {fig.lateness_p99_ms:.3f} "
                     f"ms, max {fig.lateness_max_ms:.3f} ms; {fig.late_ticks} late ticks, "
                     f"{fig.missed_deadlines} missed deadlines")
    if fig.events:
        lines.append("events: " + ", ".join(f"{k} {v}" for k, v in sorted(fig.events.items())))
    return "\n".join(lines)
