"""Replay: run a (new) controller against a recording and report where it diverges.

The recorded measured values of every device become the observations, tick by tick; the
new controller's setpoints drive the twin, which runs in lockstep and predicts what the
plant would have done under them.  The new recording holds the recorded measurements, the
twin under the new setpoints, and the new setpoints; the report names, for every setpoint,
the first tick where the new controller departs from the recorded one, and for every
measured signal the first tick where the twin under the new setpoints is further from the
recorded plant than the recorded twin was (``|res_new| - |res_old|``: closer is no
divergence), by more than the signal's tolerance (the asset's ``tolerance`` in the
scenario, else :func:`_tolerance`: 2 % of the recorded signal's range).  The controller
is given each recorded reading's quality code (``obs.quality``) with its value, tick by
tick, and the replay's ``/quality`` holds them (the reading's code, ``flag & 3``: the
replay writes to no device); a reading that failed is NaN, as it was to the recorded
controller, also where the device never answered at all (:func:`_device_assets`), never the
twin's value.  A twin-only recording measured nothing: there the twin's
recorded signals are compared, as values, with the replay's (a difference either way).
The replay's recording is stamped ``replay_of`` (the source recording) and
``replay_controller`` from its creation, and never replaces the recording it replays; by
default it is ``RUN.replay.CONTROLLER.h5`` (:func:`default_out`), and a recording it
replaces at ``--out`` is said in one line on stderr.  It holds its output as ``gridloop
run`` and ``gridloop lab run`` do (:func:`bench.paths.exclusive`): a second replay, run or
lab to the same file stops in one line before touching it.

The verdict: the scenario's ``[checks]`` are judged on the replay's recording as ``gridloop
report`` judges a replay's (:func:`bench.report.judge_checks`: on the twin under the replayed
controller; a residual check is not applicable).  ``gridloop replay`` exits with status 1
when one fails, as ``gridloop run`` does; a divergence is information only unless
``--fail-on-divergence`` is given.  ``--json`` writes it (:func:`result_document`), or why
the replay stopped (:func:`stopped_document`), with a stable ``outcome`` (run's:
:data:`bench.runner.OUTCOMES`, :func:`bench.runner.outcome_of`), over a placeholder written
once the arguments are read (:func:`running_document`): a replay killed outright leaves no
verdict, never an earlier one.

The replay runs the recording's ticks: its scenario says so (``run.duration_s``).  A
recording whose run stopped early (killed, interrupted) gives a replay that stops where it
did; the replay's recording says so (``replay_source_complete`` false, with
``replay_source_recording`` the recording that stopped, ``replay_source_ticks``,
``replay_source_duration_s`` the run was to last and ``replay_source_stopped`` the reason it
recorded, carried on by a replay of the replay), and so do its report and its summary.

Files: the scenario a recording holds names its files relative to the folder it was in
(``scenario_path``): profiles, parameter sets, a ``module:Class`` controller's module.  A
recording handed over without that folder is replayed with ``scenario_dir``, the folder the
files are in now; a file found in neither is named in one line before anything runs.  A GPU
rack driven by a ``power`` trace does not need the trace: the recording holds the power it
drew, tick by tick, and where the trace file is not found the replay's twin runs the racks
on that recorded power instead (exact, except that power the recorded controller's power cap
clipped stays clipped); the replay says which racks, and stamps them
(``replay_rack_power``).
"""

from __future__ import annotations

import importlib.util
import math
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError, RecordingError, ScenarioError
from bench.paths import exclusive, same_file
from bench.recording import open_run
from bench.runner import say_replacing


@dataclass
class Divergence:
    key: str
    kind: str               # "setpoint" or "signal"
    first_t_s: float        # NaN: never diverged
    #: a setpoint's (a twin-only plant signal's) largest difference; a measured signal's:
    #: the most the replayed twin got further from the plant (negative: closer throughout)
    max_abs: float
    tolerance: float
    #: the ticks at which it was beyond its tolerance
    ticks: int = 0


@dataclass
class ReplayReport:
    out: Path
    ticks: int
    divergences: list[Divergence] = field(default_factory=list)
    #: a line said before the table (what was compared, when not the usual)
    note: str = ""
    #: the scenario's ``[checks]`` judged on the replay (:func:`bench.report.judge_checks`)
    outcomes: list[Any] = field(default_factory=list)
    #: the line said before the checks' table (what they were judged on)
    checks_note: str = ""
    #: the engine's summary of the replay's run (:class:`bench.engine.RunSummary`)
    summary: Any = None
    #: the replay's figures (:func:`bench.summary.figures`), as ``gridloop report`` has them
    figures: Any = None
    #: the recording replayed, the controller replayed, the recorded scenario's file
    source: Path | None = None
    controller: str = ""
    scenario: Path | None = None
    #: whether the recording replayed ran to its end
    source_complete: bool = True

    @property
    def checks_passed(self) -> bool:
        """Whether every check passed on the replay (one not applicable passes)."""
        return all(o.passed for o in self.outcomes)

    def format_checks(self) -> str:
        """The checks' table as ``gridloop run`` prints it, after the line saying what they
        were judged on ("" with no checks)."""
        if not self.outcomes:
            return ""
        from bench.checks import format_outcomes

        return "\n".join([x for x in (self.checks_note, format_outcomes(self.outcomes)) if x])

    @property
    def diverged(self) -> list[Divergence]:
        return [d for d in self.divergences if math.isfinite(d.first_t_s)]

    def format(self) -> str:
        head = [self.note] if self.note else []
        if not self.diverged:
            return "\n".join(head + [
                f"no divergence: {len(self.divergences)} setpoints and signals within "
                f"tolerance; {self.ticks} ticks replayed -> {self.out}"])
        lines = head + [f"{'what':<9} {'signal':<34} {'diverges at':>12} {'max |diff|':>12} "
                 f"{'tolerance':>10}"]
        for d in sorted(self.diverged, key=lambda d: (d.first_t_s, d.key)):
            at = f"{d.first_t_s:.3f} s" if math.isfinite(d.first_t_s) else "never"
            lines.append(f"{d.kind:<9} {d.key:<34} {at:>12} {d.max_abs:12.4g} "
                         f"{d.tolerance:10.4g}")
        lines.append(f"{len(self.diverged)} of {len(self.divergences)} diverge; "
                     f"{self.ticks} ticks replayed -> {self.out}")
        return "\n".join(lines)


#: a signal's default tolerance (:func:`_tolerance`): this share of its recorded range
TOLERANCE_OF_RANGE = 0.02
#: the least default tolerance, which a signal that stayed constant gets: this share of its
#: largest magnitude (rounding, not a difference), and never under :data:`TOLERANCE_FLOOR`
TOLERANCE_FLOOR_REL = 1e-6
TOLERANCE_FLOOR = 1e-6


def _tolerance(values: np.ndarray, given: float | None) -> float:
    """A signal's tolerance: the scenario's (``tolerance`` on its asset), else the largest
    of 2 % of its recorded range, its resolution (the smallest step it took) and a floor
    for a signal that stayed constant (one part per million of its magnitude, at least
    1e-6).  Not a share of its magnitude: that is set by the signal's offset, and 0.5 % of
    a 50 Hz frequency (0.25 Hz) hid a nadir that moved by 57 mHz."""
    if given is not None:
        return float(given)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return TOLERANCE_FLOOR
    span = float(finite.max() - finite.min())
    steps = np.diff(np.unique(finite))
    resolution = float(steps.min()) if len(steps) else 0.0
    return max(TOLERANCE_OF_RANGE * span, resolution,
               TOLERANCE_FLOOR_REL * float(np.abs(finite).max()), TOLERANCE_FLOOR)


def _first_divergence(a: np.ndarray, b: np.ndarray, tol: float, t: np.ndarray
                      ) -> tuple[float, float, int]:
    """Where two values (a setpoint, a twin-only plant signal) differ either way."""
    n = min(len(a), len(b))
    return _first_over(np.abs(a[:n] - b[:n]), tol, t)


def _first_further(res_new: np.ndarray, res_old: np.ndarray, tol: float, t: np.ndarray
                   ) -> tuple[float, float, int]:
    """Where the replayed twin is further from the recorded plant than the recorded twin
    was (``|res_new| - |res_old|``, signed): a twin the new setpoints bring closer to the
    plant does not diverge, however much closer."""
    n = min(len(res_new), len(res_old))
    return _first_over(np.abs(res_new[:n]) - np.abs(res_old[:n]), tol, t)


def _first_over(d: np.ndarray, tol: float, t: np.ndarray) -> tuple[float, float, int]:
    """The first time ``d`` exceeds ``tol`` (NaN: never), its largest value, and the ticks
    at which it exceeds it."""
    both = np.isfinite(d)
    if not both.any():
        return math.nan, math.nan, 0
    over = np.flatnonzero(both & (d > tol))
    first = float(t[over[0]]) if len(over) else math.nan
    return first, float(np.nanmax(d)), int(len(over))


def replay(path: str | Path, controller: str | None = None, out: str | Path | None = None,
           options: dict | None = None, progress: bool = True,
           scenario_dir: str | Path | None = None) -> ReplayReport:
    """Replay recording ``path`` with ``controller`` (default: the recorded one).

    ``scenario_dir``: the folder the files of the recorded scenario are in now, when not
    beside its recorded path."""
    path = Path(path)
    folder = _scenario_dir(scenario_dir)
    out = replay_out(path, controller, out, scenario_dir)
    _refuse_overwrite(path, out)
    # a second replay, a run or a lab writing the same recording would replace this one's
    # file as it writes it: the output lock they all take (bench.paths.exclusive)
    with exclusive(out, "gridloop replay"), \
            tempfile.TemporaryDirectory(prefix="gridloop-replay-") as tmp:
        return _replay(path, controller, out, options, progress, folder, Path(tmp))


def _scenario_dir(scenario_dir: str | Path | None) -> Path | None:
    """``--scenario-dir``, checked and made absolute (the replay's recording names it)."""
    if scenario_dir is None:
        return None
    folder = Path(scenario_dir)
    if not folder.is_dir():
        raise ScenarioError(f"--scenario-dir {folder}: no such folder")
    return folder.resolve()


def replay_out(path: str | Path, controller: str | None, out: str | Path | None = None,
               scenario_dir: str | Path | None = None) -> Path:
    """The recording a replay of ``path`` writes: ``out``, else :func:`default_out` (which
    reads the recorded controller's name when ``controller`` is None)."""
    if out:
        return Path(out)
    return default_out(Path(path), controller, _scenario_dir(scenario_dir))


def _replay(path: Path, controller: str | None, out: Path, options: dict | None,
            progress: bool, folder: Path | None, tmp: Path) -> ReplayReport:
    from bench.build import build_plan
    from bench.engine import controller_for, run_plan

    notes = []
    with open_run(path) as run:
        n = len(run)
        if n == 0:
            raise RecordingError(f"{path}: the recording has no ticks")
        # the controller as overrides of the recorded scenario: the replay's recording
        # holds them, so a replay of it runs the controller it ran; and the ticks it has
        extra = [] if "run.mode=twin" in run.scenario_overrides else ["run.mode=twin"]
        extra.append(f"run.duration_s={_toml(n * run.dt)}")
        # an error one of them causes names the option the user typed (--controller,
        # --option), not a --set they never typed
        labelled: list[str | tuple[str, str]] = list(extra)
        if controller is not None:
            labelled += [(f"--controller {controller}", f"controller.name={_toml(controller)}"),
                         (f"--controller {controller}", "controller.options={}")]
        # each --option KEY is one option name, dots and all (passthrough's
        # "island.battery.p_set_w"), so it is quoted as one key
        from bench.scenario import quote_key

        labelled += [(f"--option {k}={_toml(v)}", f"controller.options.{quote_key(k)}={_toml(v)}")
                     for k, v in (options or {}).items()]
        extra = labelled
        s = run.scenario(extra, folder)
        source = source_attrs(run, n, folder)
        if not source["replay_source_complete"]:
            notes.append(_incomplete_note(source, run.dt))
        racks, rack_overrides, traces = _recorded_rack_power(run, s, n, tmp)
        if racks:
            s = run.scenario(extra + rack_overrides, folder)
            notes.append(f"{', '.join(racks)}: on the power recorded in {path.name} "
                         f"({', '.join(traces)} not found beside the scenario at "
                         f"{_folder(s)}); power the recorded controller's cap clipped stays "
                         "clipped")
        _check_files(path, s, folder, controller)
        s = replace(s, run=replace(s.run, realtime=False))
        # the twin's compiled (numba) code runs here: a signal is raised once it is built
        from bench.stopping import deferred_stop

        with deferred_stop():
            plan = build_plan(s, ledger=str(out.with_suffix(".replay.ledger.db")))
        plan.market = None  # a replay does not trade again
        assets = _device_assets(run)
        values, fed = _recorded_values(run, plan, assets, n)
        plan.set_replay(values, assets, _recorded_quality(run, plan, assets, n), fed)
        rec_setpoints = {r.key: run.signal(r.node, r.asset, r.name, "setpoint")[:n]
                         for r in run.signals("setpoint")}
        rec_residuals = {r.key: run.signal(r.node, r.asset, r.name, "residual")[:n]
                         for r in run.signals("residual")}
        # a twin-only recording measured nothing: its plant is the recorded twin's signals
        rec_plant = ({} if assets else
                     {r.key: run.signal(r.node, r.asset, r.name)[:n]
                      for r in run.signals("measured")})
        t = run.time[:n]
    _stamp(plan, path, s.controller.name, source, racks, rack_overrides)
    built = controller_for(plan)  # its options checked before a recording is replaced
    say_replacing(out)
    summary = run_plan(plan, out, progress=progress, controller=built)
    report = ReplayReport(out, summary.ticks, summary=summary, source=path,
                          controller=s.controller.name, scenario=s.path,
                          source_complete=bool(source["replay_source_complete"]))
    if not assets:
        notes.insert(0, "no measured signals: a twin-only recording; compared setpoints and "
                        "the twin's plant signals (values, not residuals)")
    report.note = "\n".join(notes)
    tol_cfg = {f"{n}.{a}.{sig}": v for n, a, c in s.assets() for sig, v in c.tolerance.items()}
    with open_run(out) as new:
        for r in new.signals("setpoint"):
            old = rec_setpoints.get(r.key)
            if old is None:
                continue
            now = new.signal(r.node, r.asset, r.name, "setpoint")
            # a setpoint never given (NaN) on both sides agrees
            a, b = np.nan_to_num(old, nan=0.0), np.nan_to_num(now, nan=0.0)
            tol = _tolerance(a, tol_cfg.get(r.key))
            first, worst, over = _first_divergence(a, b, tol, t)
            report.divergences.append(Divergence(r.key, "setpoint", first, worst, tol, over))
        for r in new.signals("residual"):
            # how much further the twin under the new setpoints is from the recorded plant
            # than the recorded twin was: the twin's own mismatch cancels out
            res = new.signal(r.node, r.asset, r.name, "residual")
            base = rec_residuals.get(r.key, np.zeros_like(res))
            recorded = new.signal(r.node, r.asset, r.name)
            tol = _tolerance(recorded, tol_cfg.get(r.key))
            first, worst, over = _first_further(res, base, tol, t)
            report.divergences.append(Divergence(r.key, "signal", first, worst, tol, over))
        for r in new.signals("measured") if rec_plant else ():
            old = rec_plant.get(r.key)
            if old is None:
                continue
            tol = _tolerance(old, tol_cfg.get(r.key))
            first, worst, over = _first_divergence(old, new.signal(r.node, r.asset, r.name),
                                                   tol, t)
            report.divergences.append(Divergence(r.key, "signal", first, worst, tol, over))
        # the scenario's checks, judged as ``gridloop report`` judges a replay's: on the
        # twin under the replayed controller (the verdict of ``replay --json``)
        from bench.report import judge_checks
        from bench.summary import figures

        report.checks_note, report.outcomes = (judge_checks(new, s.checks) if s.checks
                                                  else ("", []))
        report.figures = figures(new)
    return report


RESULT_FORMAT = "gridloop-replay-result"


def _base_document(source: Path | None, controller: str | None, fail_on_divergence: bool
                   ) -> dict[str, Any]:
    """The fields every ``replay --json`` document has, null where not known (yet)."""
    return {"format": RESULT_FORMAT, "version": 1, "status": None, "outcome": None,
            "passed": False, "replay_of": None if source is None else str(source),
            "controller": controller,
            "scenario": None, "recording": None, "source_complete": None, "stopped": None,
            "ticks": None, "wall_s": None, "realtime_factor": None,
            "fail_on_divergence": fail_on_divergence, "diverging": None,
            "divergences": None, "figures": None, "nodes": None, "devices": None,
            "checks": None}


def running_document(source: Path, controller: str | None, out: Path | None,
                     fail_on_divergence: bool) -> dict[str, Any]:
    """What ``replay --json`` holds while the replay runs: no verdict (``status`` null,
    ``outcome`` and ``stopped`` "running") and which process wrote it, when; a replay killed
    outright leaves that, never an earlier replay's verdict."""
    import datetime
    import os

    return {**_base_document(source, controller, fail_on_divergence), "outcome": "running",
            "stopped": "running", "recording": None if out is None else str(out),
            "pid": os.getpid(),
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def stopped_document(source: Path | None, controller: str | None, out: Path | None,
                     status: int, outcome: str, stopped: str, ticks: int | None,
                     fail_on_divergence: bool) -> dict[str, Any]:
    """What ``replay --json`` holds for a replay that did not run to its end: its exit
    status, ``outcome``, ``stopped`` the one line on why, and the ticks its recording
    holds (``recording`` null: it made none); no divergences or checks (null)."""
    return {**_base_document(source, controller, fail_on_divergence), "status": status,
            "outcome": outcome, "stopped": stopped, "ticks": ticks,
            "recording": None if out is None else str(out)}


def result_document(report: ReplayReport, status: int, fail_on_divergence: bool
                    ) -> dict[str, Any]:
    """What ``replay --json`` holds for a replay that ran to its end: ``gridloop run
    --json``'s document (:func:`bench.runner.result_document`: the figures, and every check
    in its format, judged on the replay) with its ``outcome``, the recording replayed and
    the controller, and the divergence table: per setpoint and signal compared, whether it
    diverged beyond its tolerance, when first, how far at most, its tolerance and at how
    many ticks (NaN: null)."""
    from bench.runner import result_document as run_document

    def number(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    doc = run_document(report.scenario or Path(""), report.out, report.figures,
                       report.outcomes, report.summary, status)
    doc.update({"format": RESULT_FORMAT, "version": 1, "status": status,
                "outcome": "passed" if status == 0 else "checks_failed",
                "passed": status == 0, "replay_of": str(report.source),
                "controller": report.controller,
                "scenario": None if report.scenario is None else str(report.scenario),
                "recording": str(report.out), "source_complete": report.source_complete,
                "stopped": None, "fail_on_divergence": fail_on_divergence,
                "diverging": len(report.diverged),
                "divergences": [{"key": d.key, "kind": d.kind,
                                 "diverged": math.isfinite(d.first_t_s),
                                 "first_t_s": number(d.first_t_s),
                                 "max_abs": number(d.max_abs),
                                 "tolerance": number(d.tolerance), "ticks": d.ticks}
                                for d in report.divergences]})
    return {k: doc[k] for k in _base_document(Path(""), None, False)} | doc


def default_out(path: Path, controller: str | None, folder: Path | None = None) -> Path:
    """``RUN.replay.NAME.h5`` beside the recording, ``NAME`` the controller replayed (the
    recorded one when none is given) made safe as a file name: replays of one recording
    under two controllers do not replace each other's."""
    if controller is None:
        with open_run(path) as run:
            controller = run.scenario(folder=folder).controller.name
    name = re.sub(r"[^\w.-]+", "_", controller, flags=re.ASCII).strip("._-") or "controller"
    return path.with_name(f"{path.stem}.replay.{name}.h5")


def _device_assets(run: Any) -> set[str]:
    """``NODE.ASSET`` of every asset a device (or, in a replay's recording, the recording it
    replayed) fed: those recorded with a ``twin/`` prediction beside their readings.  A
    twin-only asset has no ``twin/``; a device that never answered has one, and NaN
    readings (or none at all in a replay's recording by an earlier gridloop)."""
    return {f"{r.node}.{r.asset}" for r in run.signals("twin")}


def _recorded_values(run: Any, plan: Any, assets: set[str], n: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The recorded value of each observation (a column per ``plan.obs_keys``, NaN where
    its device gave none) and which the recording measured: every signal a device of
    ``assets`` reads, all-NaN ones included, as the recorded controller was given NaN for a
    reading that failed, never the twin's value."""
    values = np.full((n, len(plan.obs_keys)), np.nan)
    fed = np.zeros(len(plan.obs_keys), dtype=bool)
    read = _read_signals(run, plan, assets)
    for j, key in enumerate(plan.obs_keys):
        if key not in read:
            continue
        fed[j] = True
        node, asset, sig = key.split(".", 2)
        if run.has(node, asset, sig):
            values[:, j] = run.signal(node, asset, sig)[:n]
    return values, fed


def _read_signals(run: Any, plan: Any, assets: set[str]) -> set[str]:
    """``NODE.ASSET.SIGNAL`` of every reading the devices of ``assets`` gave: the measured
    signals recorded for each.  An asset with none is a device that never answered, in a
    replay's recording by an earlier gridloop (which left an all-NaN signal out): the
    signals its kind's register map reads, as a device's are when it does not name its
    own."""
    from bench.plan import DEVICE_MAPS
    from firmware_bridge.maps import get_map

    keys = {r.key for r in run.signals("measured") if f"{r.node}.{r.asset}" in assets}
    recorded = {k.rsplit(".", 1)[0] for k in keys}
    for key in sorted(assets - recorded):
        node, asset = key.split(".", 1)
        kind = plan.asset_kinds.get((node, asset))
        if kind in DEVICE_MAPS:
            keys |= {f"{key}.{name}" for name in get_map(DEVICE_MAPS[kind]).signals}
    return keys


def _recorded_quality(run: Any, plan: Any, assets: set[str], n: int) -> np.ndarray:
    """The reading's code (``flag & 3``) ``/quality`` recorded for each asset the replay
    feeds, per tick, in ``plan.quality_index``'s columns (0 elsewhere): what the recorded
    controller was given.  The write bit is left out: the replay writes to no device."""
    from bench.plan import READ_QUALITY

    out = np.zeros((n, len(plan.quality_index)), dtype=np.uint8)
    for key, i in plan.quality_index.items():
        node, asset = key.split(".", 1)
        if key in assets and f"quality/{node}/{asset}" in run.file:
            out[:, i] = run.quality(node, asset)[:n] & READ_QUALITY
    return out


def _refuse_overwrite(path: Path, out: Path) -> None:
    """The replay's recording must not replace the one it replays (another spelling of its
    path, a symbolic or a hard link to it included)."""
    if same_file(out, path):
        raise RecordingError(f"--out {out}: that is the recording being replayed ({path}); "
                             "give another file")


def _toml(value: Any) -> str:
    """``value`` as a TOML value, for a ``--set`` override."""
    import tomli_w

    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _stamp(plan: Any, source: Path, controller: str, attrs: dict[str, Any],
           racks: list[str], rack_overrides: list[str]) -> None:
    """Mark a replay's recording as one from its creation (the recorder writes ``plan``'s
    recording attributes when it creates the file): the recording it replayed, the
    controller, whether that recording was complete, and the racks run on their recorded
    power (whose overrides, naming a file the replay deletes, leave its scenario).

    Written with the file, not by opening it again afterwards: a recording that someone
    opened meanwhile (a viewer following it) made that reopen fail on HDF5's file lock, and a
    replay killed before it was stamped read as a plain run."""
    extra = {"replay_of": str(source.resolve()), "replay_controller": controller, **attrs}
    if racks:
        extra["replay_rack_power"] = ", ".join(racks)
        kept = [x for x in plan.scenario.overrides if x and x not in rack_overrides]
        extra["scenario_overrides"] = "\n".join(kept)
    plan.extra_attrs.update(extra)


def source_attrs(run: Any, n: int, folder: Path | None) -> dict[str, Any]:
    """Whether the recording replayed ran to its end (a replay of a replay: whether the
    first one's source did), as the replay's recording states it."""
    attrs = run.attrs
    if run.complete and not bool(attrs.get("replay_source_complete", True)):
        return {k: v for k, v in attrs.items() if k.startswith("replay_source_")}
    out: dict[str, Any] = {"replay_source_complete": bool(run.complete),
                           "replay_source_ticks": int(n)}
    if not run.complete:
        out["replay_source_recording"] = str(run.path.resolve())
        try:
            out["replay_source_duration_s"] = float(run.scenario(folder=folder).run.duration_s)
        except BenchError:  # unknown: the line says less
            pass
        stopped = [m for _, kind, m in run.events() if kind == "run_stopped"]
        out["replay_source_stopped"] = stopped[-1] if stopped else ""
    return out


def _incomplete_note(source: dict[str, Any], dt: float) -> str:
    name = Path(str(source.get("replay_source_recording", "the recording"))).name
    ticks = int(source.get("replay_source_ticks", 0))
    planned = source.get("replay_source_duration_s")
    of = f" of the {float(planned):g} s it was to run" if planned is not None else ""
    why = str(source.get("replay_source_stopped", "") or
              "killed, or still being written")
    return (f"{name} is incomplete ({why}): it stopped at {ticks * dt:g} s{of}; "
            f"replayed its {ticks} ticks")


def _folder(s: Any) -> str:
    return str(s.path.parent) if s.path is not None else "the current folder"


def _recorded_rack_power(run: Any, s: Any, n: int, tmp: Path
                         ) -> tuple[list[str], list[str], list[str]]:
    """Racks driven by a ``power`` profile whose trace file is not found: their recorded
    power as the profile instead (a CSV in ``tmp``).  Returns the racks (``node.asset``),
    the overrides that point them at it, and the trace files not found.

    Row ``k`` of the recording holds the power of the step that ended at ``t_k``; a trace
    rack holds its trace's value at the step's start: ``trace(t_k)`` is row ``k + 1``."""
    gone = {name for name, p in s.profiles.items()
            if p.kind == "power" and p.file and not s.resolve(p.file).is_file()}
    columns: dict[str, np.ndarray] = {}
    traces: dict[str, None] = {}
    for node, asset, cfg in s.assets():
        if cfg.kind != "gpu_rack" or cfg.profile not in gone:
            continue
        kind = "twin" if run.has(node, asset, "p_w", "twin") else "measured"
        if not run.has(node, asset, "p_w", kind):
            continue
        p = np.asarray(run.signal(node, asset, "p_w", kind)[:n], dtype=float)
        good = np.isfinite(p)
        if not good.any():
            continue
        columns[f"{node}.{asset}"] = np.interp(np.arange(n), np.flatnonzero(good), p[good])
        traces[str(s.profiles[cfg.profile].file)] = None
    if not columns:
        return [], [], []
    t = run.time[:n]
    rows = slice(0, n - 1) if n > 1 else slice(0, 1)
    shift = slice(1, n) if n > 1 else slice(0, 1)
    csv_path = tmp / "rack_power.csv"
    with open(csv_path, "w") as f:
        f.write(",".join(["t_s", *columns]) + "\n")
        for i, ti in enumerate(t[rows]):
            f.write(",".join([repr(float(ti)),
                              *(repr(float(v[shift][i])) for v in columns.values())]) + "\n")
    overrides = []
    for key in columns:
        node, asset = key.split(".", 1)
        name = f"replay_recorded_{node}_{asset}"
        overrides += [f"profiles.{name}.kind=\"power\"",
                      f"profiles.{name}.file={_toml(str(csv_path))}",
                      f"profiles.{name}.column={_toml(key)}",
                      f"nodes.{node}.{asset}.profile={_toml(name)}"]
    return list(columns), overrides, list(traces)


def _check_files(path: Path, s: Any, folder: Path | None, controller: str | None) -> None:
    """The files the scenario names beside itself, which the replay needs: one line naming
    the missing ones, where they were looked for, and how to proceed.  A ``--controller``
    whose module is not found is the command line's error, not the recording's."""
    from bench.build import shipped

    if s.path is None:
        return
    module = _controller_module(s)
    if module is not None and controller is not None:
        raise ScenarioError(_no_module(controller, module, s.path.parent, folder))
    missing = []
    used = {cfg.profile for _, _, cfg in s.assets() if cfg.profile}
    for name in sorted(used):
        p = s.profiles.get(name)
        if p is not None and p.file and not s.resolve(p.file).is_file():
            missing.append(f"{p.file} (profiles.{name}.file)")
    for node, asset, cfg in s.assets():
        if cfg.params and not shipped(cfg.params).is_file() \
                and not s.resolve(cfg.params).is_file():
            missing.append(f"{cfg.params} (nodes.{node}.{asset}.params)")
    if module is not None:
        missing.append(f"{module}.py (controller {s.controller.name})")
    if not missing:
        return
    where = s.path.parent
    place = (f"looked for in --scenario-dir {where}" if folder is not None else
             f"beside its scenario at {where}" + ("" if where.is_dir() else
                                                 " (a folder that is gone)"))
    how = ("copy them back there, or give --scenario-dir DIR, the folder they are in now"
           if folder is None else "give the folder they are in")
    if module is not None:
        how += ", or --controller NAME to replay another controller"
    raise ScenarioError(f"{path}: the recording refers to files {place}, and these are "
                        f"not there: {', '.join(missing)}; {how}")


def _no_module(controller: str, module: str, where: Path, folder: Path | None) -> str:
    """The line for ``--controller module:Class`` naming a module that is nowhere the replay
    imports from (the recorded scenario's folder, or ``--scenario-dir``, and the installed
    packages): the value typed is wrong, as other overrides' errors say."""
    place = (f"in --scenario-dir {where}" if folder is not None else
             f"beside the recorded scenario (in {where})")
    return (f"--controller {controller}: no module {module} {place} nor installed; give a "
            "built-in name or module:Class of a module there or installed")


def _controller_module(s: Any) -> str | None:
    """The top module of a ``module:Class`` controller when it is neither beside the
    scenario nor installed (None: found, or a built-in, or a name the loader will refuse)."""
    module, sep, cls = s.controller.name.partition(":")
    top = module.split(".")[0]
    if not sep or not top or not cls or not top.isidentifier():
        return None
    where = s.path.parent
    if (where / f"{top}.py").is_file() or (where / top).is_dir():
        return None
    try:
        if importlib.util.find_spec(top) is not None:
            return None
    except (ImportError, ValueError):
        return None
    return top
