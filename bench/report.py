"""``gridloop report``: PNG figures and a text summary of a recording.

Figures: power flows per node, battery SOC, bus frequency (each grid connection's and
meter's ``freq_hz``: an islanded node's own bus, a grid-connected node's grid), GPU rack
power and its spectrum, twin-versus-device residuals with their tolerance band, and the
lateness histogram of real-time runs.  Each is written only when the recording has its data.

What happened when: ``events.csv`` lists every event of ``/events`` (``t_s, kind, device,
message``: the device named ``node.asset`` however its source wrote it, the message without
it), and ``summary.txt`` ends with a short timeline of them (:func:`timeline`), where a
streak of one kind of event on one device (a fault card striking tick after tick) is one
line with its span and count.

A replay's recording (stamped ``replay_of``, :mod:`bench.replay`) holds, under each device's
plain names, the measurements of the run it replayed: the replayed controller's inputs, not
what happened under it.  What happened under it is the twin (``twin/<signal>``, and the plain
names of assets that had no device), and that is what the report plots, sums and judges the
scenario's ``[checks]`` on (:class:`Replayed`); its summary says first that it is a replay, of
which recording and under which controller.  A residual check (device against twin) is not
applicable there: no device ran under the replayed controller; nor is a bound on a signal
only a device recorded, which the twin does not predict.  The residuals figure keeps the
recording's residuals: recorded measurements minus the replay's twin.

A recording that is not complete (its run killed, interrupted, or still going) says so in the
summary's first line, with where it stopped, how long it was to run and why
(:func:`stopped_early`); one that holds no scenario, which is what names each asset's kind,
says why its PV, battery and rack figures are blank (:func:`no_kinds_line`).
"""

from __future__ import annotations

import csv
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import BenchError, RecordingError
from bench.paths import replacing
from bench.recording import Event, Run, open_run
from bench.summary import figures, format_figures, grid_asset


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as PNG through a new file renamed over ``path`` (a failed write leaves
    an earlier figure whole), and close it."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    except OSError as exc:
        raise BenchError(f"{path}: cannot write the figure ({_reason(exc)})") from None
    finally:
        _plt().close(fig)
    return path


def _outside_legend(ax, **kwargs) -> None:
    """The legend of ``ax`` to the right of its plotting area, where it covers no data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def _unit(unit: str) -> str:
    """A unit as the axis labels write it: ``[–]`` for a dimensionless signal."""
    return {"": "–", "1": "–", "-": "–", "degC": "°C"}.get(unit, unit)


#: one colour per kind of asset in ``power_flows.png``, the same in every node's panel (the
#: view's flow colours: PV amber, battery green, racks red, grid slate)
KIND_COLORS = {"inverter": "#e6a700", "pv": "#e6a700", "battery": "#2e8b57",
               "gpu_rack": "#c0392b", "meter": "#6b7b8c", "grid": "#6b7b8c"}
#: an asset of a kind without a colour of its own
OTHER_COLOR = "#444444"
#: the second, third, ... asset of one kind in one panel: its colour, another dash
KIND_STYLES = ("-", "--", ":", "-.")


def _flow_label(asset: str, kind: str, kw: np.ndarray) -> str:
    """``rack (gpu_rack)``; a device that gave no reading at any tick has no curve, and its
    entry says so rather than leave a reader looking for one."""
    if len(kw) and not np.isfinite(kw).any():
        return f"{asset} ({kind}, no readings)"
    return f"{asset} ({kind})"


def _node_flows(run: Run, node: str, assets: list[str],
                kinds: dict[tuple[str, str], str]) -> list[tuple[str, str, str]]:
    """``(asset, kind, signal)`` of each flow at the node's bus that the recording has."""
    has_inverter = any(kinds.get((node, a)) == "inverter" for a in assets)
    grid = grid_asset(run, node, assets, kinds)
    flows = []
    for asset in assets:
        kind = kinds.get((node, asset), "")
        sig = {"inverter": "p_ac_w", "battery": "p_w", "gpu_rack": "p_w",
               "pv": None if has_inverter else "p_dc_w"}.get(kind)
        if asset == grid:
            sig, kind = "p_w", kind or "grid"
        if sig and run.has(node, asset, sig):
            flows.append((asset, kind, sig))
    return flows


def power_flows(run: Run, out: Path) -> Path | None:
    """Each node's flows at its bus: PV (the inverters' AC output, or the arrays' DC power
    without an inverter), batteries, GPU racks and the grid connection (the meter, else the
    node's grid asset: what the summary counts as grid in and out).  Each kind of asset has
    its colour (:data:`KIND_COLORS`) in every panel, so panels compare at a glance."""
    plt = _plt()
    kinds = run.asset_kinds()
    nodes = run.nodes()
    if not nodes:
        return None
    t = run.time
    fig, axes = plt.subplots(len(nodes), 1, figsize=(10, 2.6 * len(nodes)), sharex=True,
                             squeeze=False, layout="constrained")
    for ax, (node, assets) in zip(axes[:, 0], nodes.items()):
        seen: dict[str, int] = {}  # kind -> assets of it drawn in this panel
        for asset, kind, sig in _node_flows(run, node, assets, kinds):
            kw = run.signal(node, asset, sig) / 1e3
            style = KIND_STYLES[seen.get(kind, 0) % len(KIND_STYLES)]
            seen[kind] = seen.get(kind, 0) + 1
            ax.plot(t, kw, lw=0.8, ls=style, color=KIND_COLORS.get(kind, OTHER_COLOR),
                    label=_flow_label(asset, kind, kw))
        ax.set_ylabel(f"{node}\npower [kW]")
        ax.grid(alpha=0.3)
        if ax.lines:
            _outside_legend(ax, fontsize=7)
    axes[-1, 0].set_xlabel("time [s]")
    fig.suptitle("Power flows (battery + discharging, rack + consuming, grid + importing)")
    return _save(fig, out / "power_flows.png")


def _per_kind(run: Run, kind: str, signal: str) -> list[tuple[str, str]]:
    kinds = run.asset_kinds()
    return [(n, a) for (n, a), k in kinds.items() if k == kind and run.has(n, a, signal)]


def _lines(run: Run, assets: list[tuple[str, str]], signal: str, ylabel: str,
           path: Path, scale: float = 1.0) -> Path | None:
    """One signal of several assets over time, one line each (times ``scale``)."""
    if not assets:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3), layout="constrained")
    for n, a in assets:
        ax.plot(run.time, scale * run.signal(n, a, signal), label=f"{n}.{a}")
    ax.set_xlabel("time [s]")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _outside_legend(ax, fontsize=8)
    return _save(fig, path)


def soc(run: Run, out: Path) -> Path | None:
    """Battery SOC in percent, as the view and the summary show it."""
    return _lines(run, _per_kind(run, "battery", "soc"), "soc", "SOC [%]", out / "soc.png",
                  scale=100.0)


def frequency(run: Run, out: Path) -> Path | None:
    assets = _per_kind(run, "grid", "freq_hz") + _per_kind(run, "meter", "freq_hz")
    return _lines(run, assets, "freq_hz", "frequency [Hz]", out / "frequency.png")


#: the fewest samples a spectrum is estimated from (``twin.spectrum.spectrum``)
MIN_SPECTRUM_TICKS = 16


def gpu_power(run: Run, out: Path) -> list[Path]:
    assets = _per_kind(run, "gpu_rack", "p_w")
    if not assets:
        return []
    from bench.figures import spectrum_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3), layout="constrained")
    for n, a in assets:
        ax.plot(run.time, run.signal(n, a, "p_w") / 1e3, lw=0.7, label=f"{n}.{a}")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("rack power [kW]")
    ax.grid(alpha=0.3)
    _outside_legend(ax, fontsize=8)
    paths = [_save(fig, out / "gpu_power.png")]
    if len(run) < MIN_SPECTRUM_TICKS:
        warnings.warn(f"{run.path}: no GPU power spectrum: {len(run)} ticks, it needs "
                      f"{MIN_SPECTRUM_TICKS}", stacklevel=2)
        return paths
    series = {f"{n}.{a}": (np.nan_to_num(run.signal(n, a, "p_w")), run.dt)
              for n, a in assets}
    kinds = run.asset_kinds()
    nodes = run.nodes()
    for node in dict.fromkeys(n for n, _ in assets):
        grid = grid_asset(run, node, nodes.get(node, []), kinds)
        if grid is not None:
            series[f"{node} grid"] = (np.nan_to_num(run.signal(node, grid, "p_w")), run.dt)
    paths.append(spectrum_figure(out / "gpu_spectrum.png", series))
    return paths


#: residuals worth a plot when no tolerance names others
MAIN_RESIDUALS = ("voltage_v", "current_a", "p_w", "p_ac_w", "soc", "temp_c")
MAX_RESIDUAL_PLOTS = 12


def residuals(run: Run, out: Path) -> Path | None:
    """Residuals with a tolerance in the scenario, else the main ones of each device."""
    configs = run.asset_configs()
    refs = run.signals("residual")
    toleranced = [r for r in refs
                  if r.name in configs.get((r.node, r.asset), {}).get("tolerance", {})]
    main = [r for r in refs if r.name in MAIN_RESIDUALS and r not in toleranced]
    refs = (toleranced + main)[:MAX_RESIDUAL_PLOTS]
    if not refs:
        return None
    plt = _plt()
    # constrained layout makes room for the title above the first plot
    fig, axes = plt.subplots(len(refs), 1, figsize=(10, 1.8 * len(refs)), sharex=True,
                             squeeze=False, layout="constrained")
    t = run.time
    for ax, r in zip(axes[:, 0], refs):
        ax.plot(t, run.signal(r.node, r.asset, r.name, "residual"), lw=0.7)
        tol = configs.get((r.node, r.asset), {}).get("tolerance", {}).get(r.name)
        if tol:
            ax.axhspan(-tol, tol, color="tab:green", alpha=0.15, label="tolerance")
        ax.set_ylabel(f"{r.node}.{r.asset}\n{r.name} [{_unit(r.unit)}]", fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time [s]")
    fig.suptitle("Residuals: recorded measurements minus the replay's twin"
                 if "replay_of" in run.attrs else "Residuals: measured minus twin")
    return _save(fig, out / "residuals.png")


def lateness(run: Run, out: Path) -> Path | None:
    if not run.attrs.get("realtime"):
        return None
    lat = run.dataset("timing/lateness") * 1e3
    lat = lat[np.isfinite(lat)]
    if not len(lat):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(lat, bins=60, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("lateness [ms]")
    ax.set_ylabel("ticks")
    ax.set_title(f"p50 {np.percentile(lat, 50):.3f} ms, p99 {np.percentile(lat, 99):.3f} ms, "
                 f"max {lat.max():.3f} ms")
    return _save(fig, out / "lateness.png")


class Replayed:
    """A replay's recording as the report reads it: each signal the replay's twin computed
    (``twin/<signal>`` where the asset had a device, the plain name where it had none), under
    its plain name, and no device values (the recorded ones were the replayed controller's
    inputs).  Everything else is the recording's (:class:`bench.recording.Run`)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        attrs = run.attrs
        #: the recording replayed (its file name) and the controller the replay ran
        self.source = Path(str(attrs["replay_of"])).name
        self.controller = str(attrs.get("replay_controller", "") or "its recorded controller")

    def __getattr__(self, name: str):
        return getattr(self.run, name)

    def __len__(self) -> int:
        return len(self.run)

    def device(self, node: str, asset: str) -> bool:
        """Whether the asset had a device (the recording has a twin beside its values)."""
        return f"nodes/{node}/{asset}/twin" in self.run.file

    def has(self, node: str, asset: str, name: str, kind: str = "measured") -> bool:
        if kind == "twin":  # no device under the replayed controller: nothing to compare
            return False
        if kind != "measured":
            return self.run.has(node, asset, name, kind)
        return self.run.has(node, asset, name, "twin") or (
            self.run.has(node, asset, name) and not self.device(node, asset))

    def _kind(self, node: str, asset: str, name: str, kind: str) -> str:
        return "twin" if kind == "measured" and self.run.has(node, asset, name, "twin") \
            else kind

    def signal(self, node: str, asset: str, name: str, kind: str = "measured") -> np.ndarray:
        return self.run.signal(node, asset, name, self._kind(node, asset, name, kind))

    def unit(self, node: str, asset: str, name: str, kind: str = "measured") -> str:
        return self.run.unit(node, asset, name, self._kind(node, asset, name, kind))


def replayed(run: Run) -> Run | Replayed:
    """What the report reads of ``run``: a replay's recording as :class:`Replayed`."""
    return Replayed(run) if "replay_of" in run.attrs else run


def _judge(run: Run, checks: tuple) -> str:
    """The checks' table, judged on what the recording is of: a replay's on the twin under
    the replayed controller (a line before the table says so)."""
    from bench.checks import format_outcomes

    note, outcomes = judge_checks(run, checks)
    return "\n".join([x for x in (note, format_outcomes(outcomes)) if x])


def judge_checks(run: Run, checks: tuple) -> tuple[str, list]:
    """The outcomes of ``checks`` (:class:`bench.checks.Outcome`) judged on what ``run`` is
    of, and the line that says what that is ("" for a plain run's recording): a replay's
    are judged on the twin under the replayed controller, where a residual check, or a bound
    on a signal only the device recorded, is not applicable.  ``gridloop report`` prints
    them, and ``gridloop replay`` judges its recording with them (its exit status, and its
    ``--json``)."""
    from dataclasses import replace

    from bench.checks import evaluate

    view = replayed(run)
    outcomes = evaluate(view, checks)
    if not isinstance(view, Replayed):
        return "", outcomes
    for i, o in enumerate(outcomes):
        node, asset, name = o.check.key.split(".")
        if o.check.bound == "residual" and run.has(node, asset, name):
            why = f"a replay: no device ran under {view.controller}"
        elif not o.judged and view.device(node, asset) and run.has(node, asset, name):
            why = (f"a replay: the twin does not predict it; {view.source} recorded it under "
                   "its own controller")
        else:
            continue
        outcomes[i] = replace(o, not_applicable=why, unit=o.unit or run.unit(node, asset,
                                                                              name))
    return (f"checks judged on the replay: the twin under {view.controller}, not the "
            f"measurements recorded in {view.source}"), outcomes


@dataclass(frozen=True)
class Stopped:
    """Where an incomplete recording stopped: what a replay of it records
    (``replay_source_*``, :func:`bench.replay.source_attrs`), as the report and view say it."""

    #: ticks every per-tick dataset holds
    ticks: int
    #: their simulated time, ``ticks * dt`` [s]
    simulated_s: float
    #: ``run.duration_s`` of its scenario; None where it holds none [s]
    planned_s: float | None
    #: its ``run_stopped`` event's reason; "" for a run killed or still being written
    why: str

    def __str__(self) -> str:
        of = f" of the {self.planned_s:g} s it was to run" if self.planned_s is not None else ""
        return (f"stopped at {self.simulated_s:g} s{of} "
                f"({self.why or 'killed, or still being written'})")


def stopped_early(run: Run) -> Stopped | None:
    """Where ``run`` stopped, if it is not complete (None if it is): computed as a replay of
    it computes it, so report, view and replay give the same figures."""
    if run.complete:
        return None
    from bench.replay import source_attrs

    source = source_attrs(run, len(run), None)
    ticks = int(source["replay_source_ticks"])
    planned = source.get("replay_source_duration_s")
    return Stopped(ticks, ticks * run.dt, None if planned is None else float(planned),
                   str(source.get("replay_source_stopped", "") or ""))


def incomplete_line(run: Run) -> str:
    """The summary's first line for an incomplete recording ("" for a complete one): its
    figures and checks cover only part of the run, which "7 of 7 passed" does not show."""
    stopped = stopped_early(run)
    if stopped is None:
        return ""
    return (f"incomplete recording: {run.path.name} {stopped}; the figures and checks below "
            f"cover only its {stopped.ticks} ticks")


def no_kinds_line(run: Run) -> str:
    """Why the PV, battery and rack figures are blank where the recording's scenario, which
    names each asset's kind, cannot be read ("" where it can)."""
    try:
        run.scenario()
    except BenchError as exc:
        return (f"{exc}: the kinds of its assets are unknown, so its PV, battery, rack and "
                "SOC figures are blank (-) and no checks are judged")
    return ""


def _recorded_checks(run: Run) -> tuple:
    """The ``[checks]`` of the scenario the run recorded (none if it holds no scenario)."""
    from bench.errors import BenchError

    try:
        return run.scenario().checks
    except BenchError:
        return ()


#: every file a report writes, lab figures aside (``bench.labs.grading.LAB_FIGURES``)
REPORT_FILES = ("power_flows.png", "soc.png", "frequency.png", "residuals.png", "lateness.png",
                "gpu_power.png", "gpu_spectrum.png", "events.csv", "summary.txt")

#: lines of the summary's timeline; the lines after them are counted (events.csv has all)
TIMELINE_LINES = 20
#: characters of a message the timeline prints (events.csv has each whole)
TIMELINE_MESSAGE = 100


@dataclass
class Streak:
    """Events of one kind on one device, each soon after the one before: a timeline line."""

    #: first and last event's time [s]
    t0: float
    t1: float
    kind: str
    device: str
    #: the first event's message
    message: str
    count: int = 1
    #: whether a later event's message differs from the first one's
    varied: bool = False


def streaks(events: list[Event], gap_s: float) -> list[Streak]:
    """``events`` (in time order) as streaks: an event of the kind and device of an earlier
    one at most ``gap_s`` after it joins that one's streak, whatever came between (a fault
    card striking every few ticks, the device's errors and recoveries interleaved); in the
    order of their first event."""
    out: list[Streak] = []
    last: dict[tuple[str, str], Streak] = {}
    for e in events:
        s = last.get((e.kind, e.device))
        if s is not None and e.t - s.t1 <= gap_s:
            s.t1 = e.t
            s.count += 1
            s.varied = s.varied or e.message != s.message
            continue
        s = last[(e.kind, e.device)] = Streak(e.t, e.t, e.kind, e.device, e.message)
        out.append(s)
    return out


def streak_gap_s(dt: float) -> float:
    """How far apart two events of a streak may be: a second, or five ticks. [s]"""
    return max(1.0, 5.0 * dt)


def timeline(events: list[Event], dt: float, lines: int = TIMELINE_LINES) -> str:
    """The summary's timeline of ``events``: one line per streak (:func:`streaks`), the
    first ``lines`` of them, then how many more; empty without events."""
    if not events:
        return ""
    gap = streak_gap_s(dt)
    all_streaks = streaks(events, gap)
    shown = all_streaks[:lines]
    n = len(events)
    head = (f"timeline: {n} event{'s' if n != 1 else ''}"
            + (f" in {len(all_streaks)} lines" if len(all_streaks) != n else "")
            + f" (a line: one kind on one device, at most {gap:g} s apart; all in events.csv)")
    spans = [f"{s.t0:.3f}" if s.count == 1 else f"{s.t0:.3f}-{s.t1:.3f}" for s in shown]
    w_span = max(len("t [s]"), *map(len, spans))
    w_n = max(len("n"), *(len(str(s.count)) for s in shown))
    w_dev = max(len("device"), *(len(s.device or "-") for s in shown))
    w_kind = max(len("kind"), *(len(s.kind) for s in shown))
    out = [head, f"{'t [s]':<{w_span}}  {'n':>{w_n}}  {'device':<{w_dev}}  "
                 f"{'kind':<{w_kind}}  message"]
    for s, span in zip(shown, spans, strict=True):
        message = s.message + (" (messages vary)" if s.varied else "")
        if len(message) > TIMELINE_MESSAGE:
            message = message[:TIMELINE_MESSAGE - 3] + "..."
        out.append(f"{span:<{w_span}}  {s.count:>{w_n}}  {s.device or '-':<{w_dev}}  "
                   f"{s.kind:<{w_kind}}  {message}".rstrip())
    rest = all_streaks[lines:]
    if rest:
        k = sum(s.count for s in rest)
        out.append(f"... {len(rest)} more line{'s' if len(rest) != 1 else ''} ({k} "
                   f"event{'s' if k != 1 else ''}) from {rest[0].t0:.3f} s to "
                   f"{max(s.t1 for s in rest):.3f} s: see events.csv")
    return "\n".join(out)


def write_events_csv(events: list[Event], path: Path) -> Path:
    """Every event as a row of ``t_s,kind,device,message`` (device ``node.asset``, empty
    for the run as a whole; the message without the device's name)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("t_s", "kind", "device", "message"))
    for e in events:
        w.writerow((repr(round(e.t, 9)), e.kind, e.device, e.message))
    try:
        with replacing(path) as tmp:
            tmp.write_text(buf.getvalue())
    except OSError as exc:
        raise BenchError(f"{path}: cannot write the events ({_reason(exc)})") from None
    return path


def _output_dir(path: Path, out: str | Path | None) -> Path:
    """The report's folder, created and checked writable before any figure: a folder that
    cannot be created or written, or one where the report would replace (or remove as
    stale) the recording itself, is a one-line error."""
    from bench.labs.grading import lab_figure_names
    from bench.paths import same_file

    out_dir = Path(out) if out else path.with_name(path.stem + "-report")

    def refuse(what: str) -> BenchError:
        # the default folder is not one the user named: say where it is and how to choose
        if out:
            return BenchError(f"--out {out_dir}: {what}; give another folder with --out DIR")
        return BenchError(f"the report folder {out_dir}: {what}; write the report elsewhere "
                          "with --out DIR")

    if out_dir.exists() and not out_dir.is_dir():
        raise (BenchError(f"--out {out_dir}: exists and is not a directory") if out else
               refuse("exists and is not a directory"))
    for name in (*REPORT_FILES, *lab_figure_names()):
        if same_file(out_dir / name, path):
            raise refuse(f"the report would replace the recording {path} (it writes {name} "
                         "there)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a parent folder should be
        raise (BenchError(f"--out {out_dir}: cannot create the folder (a file is in the way)")
               if out else refuse("cannot create the folder (a file is in the way)")) from None
    except OSError as exc:  # read-only, immutable or full: e.g. the recording's own folder
        raise refuse(f"cannot create the folder ({_reason(exc)})") from None
    try:
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise refuse(f"cannot write into the folder ({_reason(exc)})") from None
    return out_dir


def _reason(exc: OSError) -> str:
    """An OSError's reason in lower case, without its errno and path."""
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]


def _remove_stale(out_dir: Path, written: list[Path]) -> None:
    """Remove the files an earlier report wrote into ``out_dir`` that this one did not, so
    the folder shows one recording (only names gridloop writes are touched)."""
    from bench.labs.grading import lab_figure_names

    keep = {p.name for p in written}
    for name in (*REPORT_FILES, *lab_figure_names()):
        if name not in keep and (out_dir / name).is_file():
            (out_dir / name).unlink()


def write_report(path: str | Path, out: str | Path | None = None) -> tuple[Path, list[Path]]:
    """Write every figure the recording supports, ``events.csv`` and ``summary.txt`` into
    ``out``."""
    path = Path(path)
    with open_run(path) as run:
        _ = run.dt  # a recording without its tick length fails before any figure
        if not len(run):
            raise RecordingError(f"{path}: the recording has no ticks")
        out_dir = _output_dir(path, out)
        written: list[Path] = []
        view = replayed(run)  # a replay's figures: what its twin did under its controller
        for fn, of in ((power_flows, view), (soc, view), (frequency, view),
                       (residuals, run), (lateness, run)):
            p = fn(of, out_dir)
            if p is not None:
                written.append(p)
        written.extend(gpu_power(view, out_dir))
        first = [line for line in (incomplete_line(run), no_kinds_line(run)) if line]
        text = "\n".join([*first, format_figures(figures(run))])
        checks = _recorded_checks(run)
        if checks:
            text += "\n" + _judge(run, checks)
        events = run.timeline()
        written.append(write_events_csv(events, out_dir / "events.csv"))
        if events:
            text += "\n" + timeline(events, run.dt)
        summary = out_dir / "summary.txt"
        try:
            with replacing(summary) as tmp:
                tmp.write_text(text + "\n")
        except OSError as exc:
            raise BenchError(f"{summary}: cannot write the summary ({_reason(exc)})") from None
        written.append(summary)
    from bench.labs.grading import lab_figures

    written.extend(lab_figures(path, out_dir))  # a lab's main recording: the lab's figures
    _remove_stale(out_dir, written)
    return summary, written
