"""Figures of a finished run, computed from its recording: what ``run`` and ``demo`` print.

Energy by source per node (PV, battery discharge and charge, grid import and export, GPU
racks), peak grid import, battery throughput, and real-time lateness.  Where the grid
connection's import or export limit bound, the node's bus records the load it could not
serve and the generation it curtailed: with those the node's balance closes (PV + grid in +
battery out + unserved = racks + grid out + battery in + curtailed), and the summary says so;
islanded, the bus's governed source (a genset) is the term to add.

Integration: the row of tick ``k`` holds what was observed at ``t_k``, before that tick's
setpoints, so its powers are those of the step ``[t_(k-1), t_k]`` that led there (the twin
and the emulators hold each step's inputs and report at its end).  Energy is therefore the
sum of rows 1 to n-1, each held for ``dt``; row 0 is the state the run started from, before
any step, and adds nothing.  This is the rule the meters' own counters follow
(``e_import_wh[k] = e_import_wh[k-1] + max(p_w[k], 0) * dt``), so the grid figures equal
the rise of ``e_import_wh`` and ``e_export_wh`` over the recording (to the resolution of an
emulated meter's whole-Wh registers).  The run's last step is never recorded (there is no
row after it): the figures cover ``t_0`` to ``t_(n-1)``, ``(n - 1) * dt`` of the ``n * dt``
simulated.  Summing rows 0 to n-1 instead (a hold forward from each row) counted the start
state's power for a step it never drove: grid export a tick too high where a node exported
from its first tick.  (The twin's racks and inverters keep ``energy_wh`` counters too, which
report a step's energy a tick after its power: they fall one tick short of the racks and PV
columns, by the last row's energy.)

A figure whose signal the recording lacks is NaN (printed ``-``), not 0, and so is a figure
whose signals had no reading at any step it counts (a device that never gave a valid one): an
energy summed over no readings is unknown, not zero.  Ticks without a reading (a device lost)
are counted over all the run's ticks, as the recording's ``/quality`` flags count them, and
the summary says, one line per device, how many of its ticks had none and which columns they
leave short.  Every asset that ran a device (emulated or real: the recording has its
``timing/rtt``) is also counted from its quality flags in :attr:`Figures.devices`: ticks read
(OK or STALE), ticks without a reading (TIMEOUT, ERROR, or a real-time tick skipped to catch
up, when no device is read), and whether it never gave one (``gridloop run`` fails then).
A meter with energy counters bridges its own gaps: across them, grid in and out
are the difference of its last and first valid counter readings, as a billing meter reads
them, not the power integrated over the ticks it answered.  A node without a meter or grid
asset is on the default bus the twin gives it (recorded as asset ``grid``): its grid figures
are that bus's.

A replay's recording (stamped ``replay_of``, see :mod:`bench.replay`) holds the recorded
measurements, which were only the replayed controller's inputs, beside the twin run under
that controller's setpoints: its figures are the twin's (``twin/<signal>`` where the asset
had a device, the twin's own signals elsewhere), and the summary says so in its first line,
and says when the recording it replayed was incomplete.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.recording import Run

J_PER_KWH = 3.6e6

#: the summary table's column of each figure, with its unit (and the lines of the bus's
#: terms, which have no column); the gap lines name the columns so
COLUMNS = {"pv_kwh": "PV kWh", "battery_discharge_kwh": "batt out kWh",
           "battery_charge_kwh": "batt in kWh", "grid_import_kwh": "grid in kWh",
           "grid_export_kwh": "grid out kWh", "rack_kwh": "racks kWh",
           "battery_throughput_kwh": "thru kWh", "peak_grid_import_kw": "peak kW",
           "unserved_kwh": "unserved kWh", "curtailed_kwh": "curtailed kWh",
           "governor_kwh": "genset kWh"}

#: the summary table's figures after ``node``, in order, with the digits each is printed to
_TABLE_FIGURES = (("pv_kwh", 3), ("battery_discharge_kwh", 3), ("battery_charge_kwh", 3),
                  ("grid_import_kwh", 3), ("grid_export_kwh", 3), ("rack_kwh", 3),
                  ("peak_grid_import_kw", 1), ("battery_throughput_kwh", 3))
#: the summary table's columns after ``node``: name, unit (a second header line, so the
#: table stays as narrow as its numbers) and width; SOC is in percent, start>end, as the
#: view and the report's ``soc.png`` show it
TABLE = tuple((*COLUMNS[name].rsplit(" ", 1), max(8, len(COLUMNS[name].rsplit(" ", 1)[0]) + 1))
              for name, _ in _TABLE_FIGURES) + (("SOC", "%", 11),)


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
    #: ticks at which the import (export) limit bound: unserved (curtailed) power while
    #: connected to the grid
    import_limited_ticks: int = 0
    export_limited_ticks: int = 0
    #: ticks with unserved (curtailed) power while islanded: its sources at their limits
    islanded_unserved_ticks: int = 0
    islanded_curtailed_ticks: int = 0
    #: what the bus's own governed source (a genset) delivered while islanded
    governor_kwh: float = math.nan
    #: ticks at which a signal of these figures had no reading (the most of any signal), of
    #: all the run's ticks (as ``/quality`` counts them)
    missing_ticks: int = 0

    def add(self, name: str, p_w: np.ndarray, dt: float) -> int:
        """Add the energy of ``p_w`` to the figure ``name`` (NaN until a first signal with a
        reading: one without any leaves it as it was); returns the ticks ``p_w`` had no
        reading at."""
        e = _energy_kwh(p_w, dt)
        have = getattr(self, name)
        if math.isnan(have):
            setattr(self, name, e)
        elif not math.isnan(e):
            setattr(self, name, have + e)
        missing = int(np.isnan(p_w).sum())
        self.missing_ticks = max(self.missing_ticks, missing)
        return missing


@dataclass
class DeviceTicks:
    """What one device gave a run, tick by tick, from its ``/quality`` flags: ticks with a
    reading (``read``: OK or STALE) and without (``missing``: TIMEOUT, ERROR, or a real-time
    tick skipped to catch up, when no device is read), ``missing`` split by why."""

    kind: str
    ticks: int
    read: int
    missing: int
    timeout: int
    error: int
    skipped: int
    #: of ``read``: answered, but with values that did not change when they should have
    stale: int
    #: no valid reading at any tick: a device absent, unplugged or at a wrong address, or
    #: one answering with the wrong models or only exceptions
    never_read: bool

    def why(self) -> str:
        """``76 timeout, 4 error``: the ticks without a reading, by why."""
        return ", ".join(f"{n} {what}" for n, what in ((self.timeout, "timeout"),
                                                      (self.error, "error"),
                                                      (self.skipped, "skipped")) if n)


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
    #: what the figures are of, said before the table when not the recorded plant (a replay)
    source: str = ""
    #: said after ``source``: the recording a replay replayed was incomplete
    source_note: str = ""
    #: per node, the columns (``COLUMNS``) that cover only the ticks with a reading, with the
    #: ticks without one
    gaps: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the same per asset (``node.asset``): which asset's gaps leave which columns short
    asset_gaps: dict[str, dict[str, int]] = field(default_factory=dict)
    #: per asset that ran a device (``node.asset``), its ticks with and without a reading
    devices: dict[str, DeviceTicks] = field(default_factory=dict)
    #: lines on how figures were made where it is not the usual (meter counters across gaps,
    #: a replay's recorded inputs where the twin predicts nothing)
    notes: list[str] = field(default_factory=list)

    def never_read(self) -> dict[str, DeviceTicks]:
        """The devices that gave no valid reading in the whole run: an absent or miswired
        kit, which fails a run (``gridloop run`` exits 1, a sweep's point fails)."""
        return {k: d for k, d in self.devices.items() if d.never_read}

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
    """Rows 1 to n-1, each the power of the step that ended there, held for ``dt``; NaN
    when none of them has a reading (an energy summed over no readings is not known to be
    0)."""
    p = p_w[1:]
    if len(p) and not np.isfinite(p).any():
        return math.nan
    return float(np.nan_to_num(p, nan=0.0).sum() * dt / J_PER_KWH)


class _Signals:
    """The signals the figures read: in a replay the twin's prediction (``twin/<name>``)
    where the asset had a device, since its measured values are the recorded inputs; the
    recorded values elsewhere (a twin-only asset records the twin under the plain name)."""

    def __init__(self, run: Run, replay: bool) -> None:
        self.run = run
        self.replay = replay
        #: ``node.asset.signal`` a replay's figures had to take from the recorded inputs
        self.recorded: list[str] = []

    def has(self, node: str, asset: str, name: str) -> bool:
        return self.run.has(node, asset, name) or (
            self.replay and self.run.has(node, asset, name, "twin"))

    def get(self, node: str, asset: str, name: str) -> np.ndarray:
        run = self.run
        if self.replay:
            if run.has(node, asset, name, "twin"):
                return run.signal(node, asset, name, "twin")
            if f"nodes/{node}/{asset}/twin" in run.file:  # a device's, not predicted
                self.recorded.append(f"{node}.{asset}.{name}")
        return run.signal(node, asset, name)


def figures(run: Run) -> Figures:
    """Compute the run's figures from its recording."""
    dt = run.dt
    n = len(run)
    fig = Figures(ticks=n, simulated_s=n * dt)
    attrs = run.attrs
    replay = "replay_of" in attrs
    if replay:
        fig.source, fig.source_note = _replay_lines(attrs)
    sig = _Signals(run, replay)
    t = run.time
    kinds = run.asset_kinds()
    for node, assets in run.nodes().items():
        f = NodeFigures()
        gaps: dict[str, int] = {}  # column -> ticks without a reading

        def note_gap(asset: str, column: str, missing: int,
                     gaps: dict[str, int] = gaps, node: str = node) -> None:
            if missing:
                gaps[column] = max(gaps.get(column, 0), missing)
                of = fig.asset_gaps.setdefault(f"{node}.{asset}", {})
                of[column] = max(of.get(column, 0), missing)

        def add(name: str, p: np.ndarray, asset: str, f: NodeFigures = f) -> None:
            note_gap(asset, COLUMNS[name], f.add(name, p, dt))

        for asset in assets:
            kind = kinds.get((node, asset), "")
            if kind == "inverter" and sig.has(node, asset, "p_ac_w"):
                add("pv_kwh", sig.get(node, asset, "p_ac_w"), asset)
            elif kind == "battery" and sig.has(node, asset, "p_w"):
                p = sig.get(node, asset, "p_w")
                add("battery_discharge_kwh", np.clip(p, 0, None), asset)
                add("battery_charge_kwh", np.clip(-p, 0, None), asset)
                add("battery_throughput_kwh", np.abs(p), asset)
                if sig.has(node, asset, "soc"):
                    soc = sig.get(node, asset, "soc")
                    good = soc[np.isfinite(soc)]
                    if len(good):
                        f.soc_start, f.soc_end = float(good[0]), float(good[-1])
            elif kind == "gpu_rack" and sig.has(node, asset, "p_w"):
                add("rack_kwh", sig.get(node, asset, "p_w"), asset)
        bus = _bus(run, node, assets, kinds)
        if bus is not None:
            island = (np.nan_to_num(sig.get(node, bus, "islanded")) > 0.5
                      if sig.has(node, bus, "islanded") else None)
            for name, signal, ticks, islanded in (
                    ("unserved_kwh", "p_unserved_w", "import_limited_ticks",
                     "islanded_unserved_ticks"),
                    ("curtailed_kwh", "p_curtailed_w", "export_limited_ticks",
                     "islanded_curtailed_ticks")):
                if sig.has(node, bus, signal):
                    p = sig.get(node, bus, signal)
                    add(name, p, bus)
                    short = np.nan_to_num(p) > 0
                    island = np.zeros_like(short) if island is None else island
                    setattr(f, ticks, int((short & ~island).sum()))
                    setattr(f, islanded, int((short & island).sum()))
            if sig.has(node, bus, "p_gov_w"):
                add("governor_kwh", sig.get(node, bus, "p_gov_w"), bus)
        meter = _meter(run, node, assets, kinds)
        grid = (sig.get(node, meter, "p_w") if meter is not None else
                sig.get(node, bus, "p_w") if bus is not None else None)
        if grid is not None:
            counted = _grid_from_counters(sig, node, meter, grid, t, f, fig) \
                if meter is not None and np.isnan(grid[1:]).any() else False
            source = meter if meter is not None else str(bus)
            if not counted:
                add("grid_import_kwh", np.clip(grid, 0, None), source)
                add("grid_export_kwh", np.clip(-grid, 0, None), source)
            finite = grid[np.isfinite(grid)]
            if len(finite):
                f.peak_grid_import_kw = float(max(0.0, finite.max())) / 1e3
            missing = int(np.isnan(grid).sum())
            note_gap(source, COLUMNS["peak_grid_import_kw"], missing)
            f.missing_ticks = max(f.missing_ticks, missing)
        if gaps:
            fig.gaps[node] = gaps
        fig.nodes[node] = f
    if sig.recorded:
        fig.notes.append("from the recorded measurements, which the twin does not predict: "
                         + ", ".join(dict.fromkeys(sig.recorded)))
    if bool(attrs.get("realtime", False)) and n:
        lat = run.dataset("timing/lateness")
        lat = lat[np.isfinite(lat)]
        if len(lat):
            fig.lateness_p50_ms = float(np.percentile(lat, 50)) * 1e3
            fig.lateness_p99_ms = float(np.percentile(lat, 99)) * 1e3
            fig.lateness_max_ms = float(lat.max()) * 1e3
            fig.late_ticks = int((lat > float(attrs["late_after_s"])).sum())
            fig.missed_deadlines = int((lat >= run.dt).sum())
    for _, kind, _ in run.events():
        fig.events[kind] = fig.events.get(kind, 0) + 1
    if not replay:  # a replay read no device: its measurements are the recorded inputs
        fig.devices = device_ticks(run)
    return fig


def device_ticks(run: Run) -> dict[str, DeviceTicks]:
    """Per asset that ran a device (emulated or real; ``node.asset``), its ticks with and
    without a reading, from the recording's ``/quality`` flags (and ``timing/skipped``)."""
    from firmware_bridge.device import Quality

    n = len(run)
    file = run.file
    if "timing/rtt" not in file:
        return {}
    skipped = (run.dataset("timing/skipped") > 0 if "timing/skipped" in file
               else np.zeros(n, dtype=bool))
    kinds = run.asset_kinds()
    out: dict[str, DeviceTicks] = {}
    for node in file["timing/rtt"]:
        for asset in file[f"timing/rtt/{node}"]:
            if f"quality/{node}/{asset}" not in file:
                continue
            q = run.quality(node, asset)[:n] & 0b011  # the reading's bits (4: a write's)
            asked = ~skipped[:len(q)]
            timeout = int(((q == Quality.TIMEOUT) & asked).sum())
            error = int(((q == Quality.ERROR) & asked).sum())
            skip = int((~asked).sum())
            missing = timeout + error + skip
            out[f"{node}.{asset}"] = DeviceTicks(
                kind=kinds.get((node, asset), ""), ticks=len(q), read=len(q) - missing,
                missing=missing, timeout=timeout, error=error, skipped=skip,
                stale=int(((q == Quality.STALE) & asked).sum()),
                never_read=len(q) > 0 and missing == len(q))
    return out


def _replay_lines(attrs: dict) -> tuple[str, str]:
    """A replay's first line (what its figures are), and a line when the recording it
    replayed was incomplete (``""`` when not)."""
    source = Path(str(attrs["replay_of"])).name
    controller = str(attrs.get("replay_controller", "") or "its recorded controller")
    first = (f"replay of {source} under {controller}: energies from the twin (the recorded "
             "measurements were only the controller's inputs)")
    if bool(attrs.get("replay_source_complete", True)):
        return first, ""
    stopped_early = Path(str(attrs.get("replay_source_recording", "") or source)).name
    ticks = int(attrs.get("replay_source_ticks", 0))
    dt = float(attrs.get("dt", 0.0))
    planned = float(attrs.get("replay_source_duration_s", math.nan))
    stopped = str(attrs.get("replay_source_stopped", "") or "")
    of = f" of the {planned:g} s it was to run" if math.isfinite(planned) else ""
    why = f" ({stopped})" if stopped else " (killed, or still being written when replayed)"
    return first, (f"incomplete source: {stopped_early} stopped early, at {ticks * dt:g} s"
                   f"{of}{why}; this replay covers only its {ticks} ticks")


def _grid_from_counters(sig: _Signals, node: str, meter: str, grid: np.ndarray,
                        t: np.ndarray, f: NodeFigures, fig: Figures) -> bool:
    """Grid in and out from the meter's energy counters, across ticks without a power
    reading: the difference of their last and first valid readings.  False (integrate the
    power instead) when the meter has no counters, or they went down (a reset)."""
    counts = []
    for name in ("e_import_wh", "e_export_wh"):
        if not sig.has(node, meter, name):
            return False
        e = sig.get(node, meter, name)
        good = np.flatnonzero(np.isfinite(e))
        if len(good) < 2 or np.any(np.diff(e[good]) < 0):
            return False
        counts.append((good, e))
    (gi, ei), (ge, ee) = counts
    f.grid_import_kwh = float(ei[gi[-1]] - ei[gi[0]]) / 1e3
    f.grid_export_kwh = float(ee[ge[-1]] - ee[ge[0]]) / 1e3
    first, last = max(gi[0], ge[0]), min(gi[-1], ge[-1])
    missing = int(np.isnan(grid).sum())
    line = (f"{node}: grid in and grid out are the rise of {node}.{meter}'s energy counters "
            f"(e_import_wh, e_export_wh), which count across its {missing} ticks without a "
            f"power reading")
    if first > 0 or last < len(grid) - 1:
        line += (f"; they cover t = {t[first]:.3f} to {t[last]:.3f} s only (its first and "
                 f"last readings)")
    fig.notes.append(line)
    return True


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


def _meter(run: Run, node: str, assets: list[str],
           kinds: dict[tuple[str, str], str]) -> str | None:
    """The node's meter, whose power is its grid-connection power (else its bus's)."""
    for asset in assets:
        if kinds.get((node, asset)) == "meter" and (
                run.has(node, asset, "p_w") or run.has(node, asset, "p_w", "twin")):
            return asset
    return None


def grid_asset(run: Run, node: str, assets: list[str],
               kinds: dict[tuple[str, str], str]) -> str | None:
    """The asset whose ``p_w`` is the node's grid power, as the summary counts it: its
    meter if it has one, else its bus (figures plot the same)."""
    return _meter(run, node, assets, kinds) or _bus(run, node, assets, kinds)


def _gap_lines(fig: Figures) -> list[str]:
    """The ticks without a reading, one line per asset (one count each, of all the run's
    ticks, as its ``/quality`` flags count them), and exactly the columns they leave short:
    those that cover the other ticks only, those with no figure at all (no reading in any
    step they count), and, for an asset with no reading at any tick (said why: it never
    answered, or how its answers failed), those that count the node's other assets only."""
    lines = []
    for key, gaps in fig.asset_gaps.items():
        node = fig.nodes.get(key.split(".")[0], NodeFigures())
        count = max(gaps.values())
        never = count >= fig.ticks
        known, unknown = [], []
        for column in gaps:
            attr = next(a for a, c in COLUMNS.items() if c == column)
            (unknown if math.isnan(getattr(node, attr)) else known).append(column)
        line = f"ticks without a reading: {key} {count} of {fig.ticks}"
        line += f" ({_never_why(fig.devices.get(key))})" if never else ""
        parts = []
        if known:
            parts.append(f"{', '.join(known)} {'count' if len(known) > 1 else 'counts'} the "
                         "node's other assets only" if never else
                         f"{', '.join(known)} {'cover' if len(known) > 1 else 'covers'} the "
                         "other ticks only")
        if unknown:
            parts.append(f"{', '.join(unknown)} {'have' if len(unknown) > 1 else 'has'} no "
                         "figure")
        lines.append(line + "; " + "; ".join(parts))
    return lines


def _never_why(device: DeviceTicks | None) -> str:
    """What a device with no reading at any tick did, as its quality flags say: only
    timeouts is a device that never answered within a tick's deadline (silent, or slower
    than the deadline: the bench cannot tell them apart); an error is an answer the bench
    could not use (an exception, the wrong SunSpec models, an implausible value) or a
    refused connection, so the line gives the counts by why, as ``gridloop run``'s last
    line does."""
    if device is None or not device.missing:
        return "no valid reading at any tick"
    if device.timeout == device.missing:
        return "it never answered within the deadline"
    return f"no valid reading at any tick: {device.why()}"


def _row(first: str, cells: list[str]) -> str:
    """One line of the table: ``first`` left-aligned, the cells right-aligned under their
    headers."""
    padded = (f"{c:>{w}}" for c, (_, _, w) in zip(cells, TABLE, strict=True))
    return " ".join([f"{first:<10}", *padded])


def _number(x: float, digits: int = 3) -> str:
    """A figure rounded to ``digits``; ``-`` where it is unknown (NaN)."""
    if not math.isfinite(x):
        return "-"
    return f"{round(x, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.000"


def _soc(f: NodeFigures) -> str:
    """State of charge in percent, start>end (``80.0>79.6``): the view's unit."""
    if not math.isfinite(f.soc_start):
        return "-"
    return f"{_number(100 * f.soc_start, 1)}>{_number(100 * f.soc_end, 1)}"


def _cells(f: NodeFigures) -> list[str]:
    """A node's figures in the order of :data:`TABLE`."""
    return [*(_number(getattr(f, name), digits) for name, digits in _TABLE_FIGURES), _soc(f)]


def format_figures(fig: Figures) -> str:
    """The summary table printed after a run (after a line on what it is of, for a
    replay)."""
    lines = [x for x in (fig.source, fig.source_note) if x]
    lines.append(_row("node", [name for name, _, _ in TABLE]))
    lines.append(_row("", [unit for _, unit, _ in TABLE]))
    lines.extend(_row(node, _cells(f)) for node, f in fig.nodes.items())
    lines.append(f"{fig.ticks} ticks, {fig.simulated_s:.1f} s simulated")
    lines.extend(_gap_lines(fig))
    lines.extend(fig.notes)
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
        if f.islanded_unserved_ticks or f.islanded_curtailed_ticks:
            lines.append(f"{node}: islanded, its sources at their limits: load not served at "
                         f"{f.islanded_unserved_ticks}, generation curtailed at "
                         f"{f.islanded_curtailed_ticks} of {fig.ticks} ticks ("
                         f"{f.unserved_kwh:.3f} kWh unserved, {f.curtailed_kwh:.3f} kWh "
                         "curtailed over the run)")
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
