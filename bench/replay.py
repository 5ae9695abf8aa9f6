"""Replay: run a (new) controller against a recording and report where it diverges.

The recorded measured values of every device become the observations, tick by tick; the
new controller's setpoints drive the twin, which runs in lockstep and predicts what the
plant would have done under them.  The new recording holds the recorded measurements, the
twin under the new setpoints, and the new setpoints; the report names, for every setpoint,
the first tick where the new controller departs from the recorded one, and for every
measured signal the first tick where the twin under the new setpoints is further from the
recorded plant than the recorded twin was, by more than the signal's tolerance.  A twin-only
recording measured nothing: there the twin's recorded signals are compared, as values, with
the replay's.  The replay's recording is stamped ``replay_of`` (the source recording) and
``replay_controller``, and never replaces the recording it replays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import RecordingError
from bench.paths import same_file
from bench.recording import open_run


@dataclass
class Divergence:
    key: str
    kind: str               # "setpoint" or "signal"
    first_t_s: float        # NaN: never diverged
    max_abs: float
    tolerance: float


@dataclass
class ReplayReport:
    out: Path
    ticks: int
    divergences: list[Divergence] = field(default_factory=list)
    #: a line said before the table (what was compared, when not the usual)
    note: str = ""

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


def _tolerance(values: np.ndarray, given: float | None) -> float:
    """A signal's tolerance: the scenario's, else the largest of 2 % of its recorded range,
    0.5 % of its largest magnitude and its resolution (the smallest step it took)."""
    if given is not None:
        return float(given)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 1e-6
    span = float(finite.max() - finite.min())
    steps = np.diff(np.unique(finite))
    resolution = float(steps.min()) if len(steps) else 0.0
    return max(0.02 * span, 0.005 * float(np.abs(finite).max()), resolution, 1e-6)


def _first_divergence(a: np.ndarray, b: np.ndarray, tol: float, t: np.ndarray
                      ) -> tuple[float, float]:
    n = min(len(a), len(b))
    d = np.abs(a[:n] - b[:n])
    both = np.isfinite(d)
    if not both.any():
        return math.nan, math.nan
    over = np.flatnonzero(both & (d > tol))
    first = float(t[over[0]]) if len(over) else math.nan
    return first, float(np.nanmax(d))


def replay(path: str | Path, controller: str | None = None, out: str | Path | None = None,
           options: dict | None = None, progress: bool = True) -> ReplayReport:
    """Replay recording ``path`` with ``controller`` (default: the recorded one)."""
    from bench.build import build_plan
    from bench.engine import run_plan

    path = Path(path)
    out = Path(out) if out else path.with_name(path.stem + ".replay.h5")
    _refuse_overwrite(path, out)
    with open_run(path) as run:
        # the controller as overrides of the recorded scenario: the replay's recording
        # holds them, so a replay of it runs the controller it ran
        extra = [] if "run.mode=twin" in run.scenario_overrides else ["run.mode=twin"]
        if controller is not None:
            extra += [f"controller.name={_toml(controller)}", "controller.options={}"]
        extra += [f"controller.options.{k}={_toml(v)}" for k, v in (options or {}).items()]
        s = run.scenario(extra)
        n = len(run)
        if n == 0:
            raise RecordingError(f"{path}: the recording has no ticks")
        s = replace(s, run=replace(s.run, duration_s=n * s.run.dt_s, realtime=False))
        plan = build_plan(s, ledger=str(out.with_suffix(".replay.ledger.db")))
        plan.market = None  # a replay does not trade again
        measured = {r.key for r in run.signals("residual")}  # measured by a device
        values = np.full((n, len(plan.obs_keys)), np.nan)
        for j, key in enumerate(plan.obs_keys):
            if key in measured:
                node, asset, sig = key.split(".", 2)
                values[:, j] = run.signal(node, asset, sig)[:n]
        assets = {k.rsplit(".", 1)[0] for k in measured}
        plan.set_replay(values, assets)
        rec_setpoints = {r.key: run.signal(r.node, r.asset, r.name, "setpoint")[:n]
                         for r in run.signals("setpoint")}
        rec_residuals = {r.key: run.signal(r.node, r.asset, r.name, "residual")[:n]
                         for r in run.signals("residual")}
        # a twin-only recording measured nothing: its plant is the recorded twin's signals
        rec_plant = ({} if measured else
                     {r.key: run.signal(r.node, r.asset, r.name)[:n]
                      for r in run.signals("measured")})
        t = run.time[:n]
    summary = run_plan(plan, out, progress=progress)
    _stamp(out, path, s.controller.name)
    report = ReplayReport(out, summary.ticks)
    if not measured:
        report.note = ("no measured signals: a twin-only recording; compared setpoints and "
                       "the twin's plant signals (values, not residuals)")
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
            first, worst = _first_divergence(a, b, tol, t)
            report.divergences.append(Divergence(r.key, "setpoint", first, worst, tol))
        for r in new.signals("residual"):
            # how much further the twin under the new setpoints is from the recorded plant
            # than the recorded twin was: the twin's own mismatch cancels out
            res = np.abs(new.signal(r.node, r.asset, r.name, "residual"))
            base = np.abs(rec_residuals.get(r.key, np.zeros_like(res)))
            recorded = new.signal(r.node, r.asset, r.name)
            tol = _tolerance(recorded, tol_cfg.get(r.key))
            first, worst = _first_divergence(res, base, tol, t)
            report.divergences.append(Divergence(r.key, "signal", first, worst, tol))
        for r in new.signals("measured") if rec_plant else ():
            old = rec_plant.get(r.key)
            if old is None:
                continue
            tol = _tolerance(old, tol_cfg.get(r.key))
            first, worst = _first_divergence(old, new.signal(r.node, r.asset, r.name), tol, t)
            report.divergences.append(Divergence(r.key, "signal", first, worst, tol))
    return report


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


def _stamp(out: Path, source: Path, controller: str) -> None:
    """Mark a replay's recording as one: the recording it replayed and the controller."""
    import h5py

    with h5py.File(out, "r+") as f:
        f.attrs["replay_of"] = str(source.resolve())
        f.attrs["replay_controller"] = controller
