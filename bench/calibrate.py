"""Calibration from a recording: fit an asset's twin parameters to what its device measured.

``gridloop calibrate RUN.h5 --asset NODE.ASSET`` starts from the twin's parameters of that
asset (from the scenario stored in the recording) and fits, for a battery, R0, R1, C1, R2,
C2 and capacity to the measured current and voltage; for an inverter, the Sandia efficiency
coefficients to the measured DC power, DC voltage and AC power.  The result is a parameter
file with its provenance; run the scenario with it as ``params`` and the residuals shrink.

A battery is fitted as one trajectory from its first reading, so an outage of its device
(more than :data:`MAX_GAP_TICKS` ticks in a row without a reading: it may have rebooted, its
state reset) or a jump of its state of charge the current does not explain splits the
recording: the fit takes the longest stretch without either, and says so in one line.  An
inverter's efficiency has no state: its fit takes every good sample.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError, RecordingError
from bench.recording import Run, open_run
from twin import params as tparams


@dataclass
class Calibration:
    node: str
    asset: str
    kind: str
    pset: tparams.ParamSet
    rms_before: float
    rms_after: float
    unit: str
    changes: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: parameters the recording does not determine: kept at the twin's values
    kept: list[str] = field(default_factory=list)
    #: parameters fitted to the edge of their range (a battery's: a fifth or five times the
    #: twin's; an inverter's: the CEC library's)
    at_bound: list[str] = field(default_factory=list)
    #: why each parameter of ``kept`` is
    why_kept: dict[str, str] = field(default_factory=dict)
    #: what of the recording the fit left out, and why (one line; empty: nothing)
    note: str = ""
    #: parameters fitted to the recording
    fitted: list[str] = field(default_factory=list)
    #: the twin's second RC pair, left out of a battery model with one pair (``--rc 1``)
    dropped: list[str] = field(default_factory=list)
    #: fitted parameters whose RC partner is kept, and how far they depend on its value
    leaning: dict[str, str] = field(default_factory=dict)

    def format(self) -> str:
        lines = [f"{self.node}.{self.asset} ({self.kind}): residual RMS "
                 f"{self.rms_before:.4g} -> {self.rms_after:.4g} {self.unit}"]
        lines += [self.note] if self.note else []
        lines.append(f"{'parameter':<24} {'twin':>14} {'fitted':>14} {'ratio':>8}")
        lines += [self._row(label, old, new) for label, (old, new) in self.changes.items()]
        lines.append(f"fitted to the recording: {', '.join(self.fitted) or 'nothing'}")
        lines += [f"  {name}: {self.leaning[name]}" for name in self.fitted
                  if name in self.leaning]
        if self.kept:
            lines.append(f"kept at the twin's values (the recording does not determine "
                         f"them): {', '.join(self.kept)}")
            lines += [f"  {name}: {self.why_kept[name]}" for name in self.kept
                      if name in self.why_kept]
        if self.dropped:
            lines.append(f"dropped, for a model with one RC pair (--rc 1): "
                         f"{', '.join(self.dropped)} (the twin's second pair)")
        if self.at_bound:
            hint = (" (does the recording have current steps and rests?)"
                    if self.kind == "battery" else "")
            lines.append(f"at the edge of the fitted range, not to be trusted{hint}: "
                         f"{', '.join(self.at_bound)}")
        return "\n".join(lines)

    def _row(self, label: str, old: float, new: float) -> str:
        """One line of the table: a dropped parameter says so, not "fitted 0"."""
        if label.split(" ")[0] in self.dropped:
            return f"{label:<24} {old:14.6g} {'dropped':>14} {'-':>8}"
        ratio = f"{new / old:8.4f}" if old else f"{'-':>8}"
        return f"{label:<24} {old:14.6g} {new:14.6g} {ratio}"


def _measured(run: Run, node: str, asset: str, name: str) -> np.ndarray:
    if not run.has(node, asset, name):
        raise RecordingError(f"{run.path}: {node}.{asset} has no measured '{name}' "
                             f"(was the asset emulated or on hardware?)")
    return run.signal(node, asset, name)


def _good(*arrays: np.ndarray) -> np.ndarray:
    ok = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        ok &= np.isfinite(a)
    return ok


#: more ticks than this in a row without a reading split a battery's recording: the fit does
#: not carry the battery's state across an outage (the device may have rebooted)
MAX_GAP_TICKS = 3
#: a state of charge that moves between two readings by more than this, beyond what the
#: current moved, was reset: a discontinuity, which splits the recording too [-]
SOC_JUMP = 0.005


@dataclass
class _Split:
    """A battery's readings cut where its trajectory breaks (tick indices, ``stop``
    exclusive): the stretches between the breaks, the outages (their missing ticks), the
    jumps of state of charge (the readings before and after)."""

    spans: list[tuple[int, int]]
    gaps: list[tuple[int, int]] = field(default_factory=list)
    jumps: list[tuple[int, int]] = field(default_factory=list)


def _split(ok: np.ndarray, soc: np.ndarray, i: np.ndarray, t: np.ndarray,
           capacity_ah: float) -> _Split:
    """Cut the good ticks ``ok`` at outages (runs of more than :data:`MAX_GAP_TICKS` ticks
    without a reading) and where the state of charge jumps by more than :data:`SOC_JUMP`
    beyond what the current (positive on discharge) moved through ``capacity_ah``."""
    idx = [int(k) for k in np.flatnonzero(ok)]
    out = _Split([])
    start = idx[0]
    for prev, k in itertools.pairwise(idx):
        expected = -i[prev] * (t[k] - t[prev]) / 3600.0 / capacity_ah
        moved = soc[k] - soc[prev]
        jumped = bool(np.isfinite(moved)) and abs(moved - expected) > SOC_JUMP + abs(expected)
        if k - prev - 1 > MAX_GAP_TICKS:
            out.gaps.append((prev + 1, k))
        elif jumped:
            out.jumps.append((prev, k))
        else:
            continue
        out.spans.append((start, prev + 1))
        start = k
    out.spans.append((start, idx[-1] + 1))
    # an outage at either end splits nothing, but the fit leaves it out all the same
    if idx[0] > MAX_GAP_TICKS:
        out.gaps.insert(0, (0, idx[0]))
    if len(ok) - 1 - idx[-1] > MAX_GAP_TICKS:
        out.gaps.append((idx[-1] + 1, len(ok)))
    return out


def _when(t_s: float) -> str:
    return f"{round(t_s, 6):g}"


def _split_note(split: _Split, span: tuple[int, int], t: np.ndarray, soc: np.ndarray
                ) -> str:
    """One line: what the fit left out of the recording, and what it fitted on."""
    parts = []
    if split.gaps:  # an outage ends at a reading: from its first missing tick to that
        missing = sum(b - a for a, b in split.gaps)
        when = ", ".join(f"{_when(t[a])} to {_when(t[min(b, len(t) - 1)])} s"
                         for a, b in split.gaps)
        parts.append(f"{missing} ticks without a reading ({when})")
    if split.jumps:
        when = ", ".join(f"{soc[a]:.4g} to {soc[b]:.4g} at {_when(t[b])} s"
                         for a, b in split.jumps)
        parts.append(f"state of charge jumped ({when})")
    a, b = span
    return (f"{' and '.join(parts)} left out; fitted on the longest unbroken stretch, "
            f"{_when(t[a])} to {_when(t[b - 1])} s ({b - a} of {len(t)} ticks), from its "
            f"first reading")


def calibrate(path: str | Path, asset_key: str, n_rc: int = 2) -> Calibration:
    """Fit the twin parameters of ``NODE.ASSET`` to recording ``path``."""
    from bench.build import asset_specs

    node, sep, asset = asset_key.partition(".")
    if not sep:
        raise BenchError(f"--asset {asset_key}: expected NODE.ASSET")
    with open_run(path) as run:
        s = run.scenario()
        if node not in s.nodes or asset not in s.nodes[node]:
            from twin.params import did_you_mean

            keys = [f"{n}.{a}" for n, a, _ in s.assets()]
            raise BenchError(f"--asset {asset_key}: not in the recorded scenario"
                             f"{did_you_mean(asset_key, keys)}")
        if s.effective_mode(s.nodes[node][asset]) == "twin":
            raise BenchError(f"{run.path}: {asset_key} ran in the twin in this recording: "
                             "its values are the twin's own; calibrate from an emulated or "
                             "hardware run")
        spec = next(sp for sp in asset_specs(s, emulator=False, nodes=[node])
                    if sp.name == asset)
        override = dict(s.nodes[node][asset].override)
        if spec.kind == "battery":
            return _battery(run, spec, n_rc, path, override)
        if spec.kind == "inverter":
            return _inverter(run, spec, path, override)
        raise BenchError(f"--asset {asset_key}: calibration fits batteries and inverters, "
                         f"not a {spec.kind}")


def _plain(value: Any) -> Any:
    """What a TOML table of the calibration keeps: numbers, text, lists of names (as one
    line), tables of text (why each was kept); None for anything else."""
    if isinstance(value, list | tuple) and all(isinstance(x, str) for x in value):
        return ", ".join(value)
    if isinstance(value, dict) and value and all(isinstance(x, str) for x in value.values()):
        return dict(value)
    return value if isinstance(value, int | float | str) else None


def _assignments(override: dict[str, Any]) -> str:
    """``key = value, ...`` of a scenario's override, numbers as TOML would show them."""
    return ", ".join(f"{k} = {v:g}" if isinstance(v, int | float) and not isinstance(v, bool)
                     else f"{k} = {v!r}" for k, v in override.items())


def _provenance(pset: tparams.ParamSet, path: str | Path, what: str,
                report: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``meta`` of a calibrated file: what was fitted to what, from which parameter set, and
    the recorded scenario's override of it, which the file's values include."""
    calibration = {k: v for k, v in ((k, _plain(v)) for k, v in report.items())
                   if v is not None}
    changed = (f", with the recorded scenario's override ({_assignments(override)})"
               if override else "")
    sources = _overridden(pset.meta.get("sources", {}), override)
    return {**pset.meta,
            "source": f"gridloop calibrate: {what} fitted to {Path(path).name} on "
                      f"{time.strftime('%Y-%m-%d')}; started from {pset.name}{changed}",
            **({"sources": sources} if sources else {}),
            "calibration": calibration}


def _name(pset: tparams.ParamSet, override: dict[str, Any]) -> str:
    """The calibrated file's name: the set's, and the scenario's override its values hold
    (the set's name may describe another pack: 16s x 8p where the scenario has 128s x 1p)."""
    changed = f", with {_assignments(override)}" if override else ""
    return f"{pset.name}{changed} (calibrated)"


#: ``meta.sources`` entries that describe a group of parameters, beyond the rule that an
#: entry describes the parameter of its name and those its name begins ("cells": cells_series)
#: or is a word of ("jig": k_cell_jig_w_per_k)
_SOURCE_GROUPS = {"rc_pairs": ("r1_ohm", "c1_f", "r2_ohm", "c2_f"),
                  "limits": ("current_max_discharge_a", "current_max_charge_a",
                             "voltage_min_v", "voltage_max_v", "soc_min", "soc_max")}


def _describes(key: str, param: str) -> bool:
    """Whether the ``meta.sources`` entry ``key`` speaks of parameter ``param``."""
    name = param.split(".")[-1]
    return (name == key or name.startswith(f"{key}_") or f"_{key}_" in f"_{name}_"
            or name in _SOURCE_GROUPS.get(key, ()))


def _overridden(sources: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``meta.sources`` for the values the file holds: an entry that speaks of a parameter
    the scenario overrode says so first (what follows it describes the value before), and
    each overridden parameter has an entry saying the scenario set it."""
    out = dict(sources)
    for key, text in sources.items():
        mine = {p: v for p, v in override.items() if _describes(key, p)}
        if mine and key not in override:
            out[key] = (f"overridden by the recorded scenario ({_assignments(mine)}); before "
                        f"that, the parameter set's: {text}")
    for param, value in override.items():
        was = f"; the parameter set's: {sources[param]}" if param in sources else ""
        out[param] = f"set by the recorded scenario's override: {_assignments({param: value})}{was}"
    return out


def _sources(sources: dict[str, Any], changes: dict[str, tuple[float, float]],
             fitted: list[str], dropped: list[str], path: str | Path) -> dict[str, Any]:
    """``meta.sources`` of a battery file after calibration: each value the fit changed says
    so, and where the twin's value came from; what it kept keeps its source."""
    out = dict(sources)
    how = f"gridloop calibrate, from {Path(path).name} on {time.strftime('%Y-%m-%d')}"
    rc = []
    for label, (old, new) in changes.items():
        name = label.split(" ")[0]
        if name in dropped:
            what = "dropped (a model with one RC pair fitted)"
        elif name in fitted:
            what = "fitted"
        else:
            continue
        was = f"; the twin's value came from: {sources[name]}" if name in sources else ""
        out[name] = f"{what} by {how}: {label} {old:.6g} -> {new:.6g}{was}"
        if name[1] in "12":
            rc.append(name)
    if rc and "rc_pairs" in sources:
        out["rc_pairs"] = (f"the twin's values, before {', '.join(rc)} were changed by {how} "
                           f"(see their entries): {sources['rc_pairs']}")
    return out


def _battery(run: Run, spec: Any, n_rc: int, path: str | Path,
             override: dict[str, Any]) -> Calibration:
    from twin.battery import param_set, params_from_set
    from twin.calibrate_battery import fit_battery

    node, asset = spec.node, spec.name
    t = run.time
    i = _measured(run, node, asset, "current_a")
    v = _measured(run, node, asset, "voltage_v")
    soc = _measured(run, node, asset, "soc")
    temp = (run.signal(node, asset, "temp_cell_c") if run.has(node, asset, "temp_cell_c")
            else run.signal(node, asset, "temp_cell_c", "twin"))
    ok = _good(i, v, temp)
    if ok.sum() < 10:
        raise RecordingError(f"{run.path}: too few good samples of {node}.{asset}")
    pack, initial = params_from_set(spec.params)
    ok, soc0, note = _stretch(run, f"{node}.{asset}", ok, soc, i, _pack_capacity(pack))
    # per cell, like the table of changes below: the cell's fields
    fitted, report = fit_battery(t[ok], i[ok], v[ok], temp[ok], pack, soc0, n_rc=n_rc,
                                 per_cell=True)
    if note:
        report["note"] = note  # the parameter file says what it was fitted on
    changes = _battery_changes(pack.cell, fitted.cell, report)
    meta = _provenance(spec.params, path, ", ".join(report["fitted"]) or "nothing", report,
                       override)
    meta["sources"] = _sources(meta.get("sources", {}), changes, report["fitted"],
                               report["dropped"], path)
    out = param_set(fitted, _name(spec.params, override), initial=initial, meta=meta)
    return Calibration(node, asset, "battery", out, float(report["rms_base_v"]),
                       float(report["rms_fit_v"]), "V", changes, report["not_determined"],
                       report["at_bound"], report["why_not_determined"], note,
                       fitted=report["fitted"], dropped=report["dropped"],
                       leaning=report["leaning"])


def _battery_changes(old_cell: Any, new_cell: Any, report: dict[str, Any]
                     ) -> dict[str, tuple[float, float]]:
    """The twin's and the fitted value of each field the fit speaks of (a table's mean): a
    pair the model has neither in the twin nor in the fit is left out, unless the fit kept
    it so (it gave it a start, and the recording did not determine one)."""
    spoken = set(report["fields"]) | set(report["dropped"])
    changes = {}
    for name in ("r0_ohm", "r1_ohm", "c1_f", "r2_ohm", "c2_f", "capacity_ah"):
        old, new = getattr(old_cell, name, None), getattr(new_cell, name, None)
        if not old and not new and name not in spoken:
            continue  # a pair the model does not have
        if isinstance(old, (int, float)) and isinstance(new, (int, float)):
            changes[name] = (float(old), float(new))
        elif old is not None and hasattr(old, "values"):
            changes[f"{name} (table mean)"] = (float(np.mean(old.values)),
                                               float(np.mean(new.values)))
    return changes


def _pack_capacity(pack: Any) -> float:
    """The pack's capacity [Ah] (a table's mean): the scale of a state-of-charge jump."""
    cap = pack.cell.capacity_ah
    cap = float(np.mean(cap.values)) if hasattr(cap, "values") else float(cap)
    return cap * pack.cells_parallel


def _stretch(run: Run, key: str, ok: np.ndarray, soc: np.ndarray, i: np.ndarray,
             capacity_ah: float) -> tuple[np.ndarray, float, str]:
    """The good ticks of the longest stretch without an outage or a jump of state of charge
    (the fitter runs one trajectory from one initial state), the state of charge it starts
    from, and a note of what was left out (empty: nothing)."""
    t = run.time
    split = _split(ok, soc, i, t, capacity_ah)
    a, b = max(split.spans, key=lambda s: int(ok[s[0]:s[1]].sum()))
    keep = np.zeros_like(ok)
    keep[a:b] = ok[a:b]
    if keep.sum() < 10:
        raise RecordingError(f"{run.path}: too few good samples of {key} in its longest "
                             f"stretch without an outage ({_when(t[a])} to "
                             f"{_when(t[b - 1])} s)")
    known = np.flatnonzero(np.isfinite(soc[a:b]))
    if not len(known):
        known = np.flatnonzero(np.isfinite(soc)) - a
        if not len(known):
            raise RecordingError(f"{run.path}: {key} has no state-of-charge reading; the fit "
                                 "starts from the measured state of charge")
    first = a + known[0]
    note = _split_note(split, (a, b), t, soc) if len(split.spans) > 1 or split.gaps else ""
    return keep, float(soc[first]), note


def _inverter(run: Run, spec: Any, path: str | Path, override: dict[str, Any]
              ) -> Calibration:
    from twin.calibrate_inverter import fit_inverter_efficiency
    from twin.errors import ParameterError
    from twin.inverter import InverterParams

    node, asset = spec.node, spec.name
    p_ac = _measured(run, node, asset, "p_ac_w")
    p_dc = _measured(run, node, asset, "p_dc_w")
    v_dc = _measured(run, node, asset, "v_dc_v")
    ok = _good(p_ac, p_dc, v_dc)
    base = InverterParams.from_params(spec.params)
    try:
        fitted, report = fit_inverter_efficiency(p_dc[ok], v_dc[ok], p_ac[ok], base)
    except ParameterError as exc:  # too few samples to fit: say of which recording, asset
        why = str(exc).removeprefix("calibrate inverter: ")
        unread = f"; {int((~ok).sum())} ticks had no reading" if (~ok).any() else ""
        raise RecordingError(f"{run.path}: {node}.{asset}: cannot fit its efficiency curve: "
                             f"{why}{unread}") from None
    changes = {}
    for name in ("paco_w", "pdco_w", "vdco_v", "pso_w", "c0_per_w", "c1_per_v", "c2_per_v",
                 "c3_per_v", "pnt_w"):
        old, new = getattr(base.sandia, name, None), getattr(fitted.sandia, name, None)
        if isinstance(old, (int, float)):
            changes[name] = (float(old), float(new))
    order = list(changes)
    reasons = {**report.why_kept, **report.kept_curve}
    kept = sorted(reasons, key=order.index)
    why = {n: reasons[n] for n in kept}
    fitted_names = sorted([*report.fitted, *["paco_w"] * report.paco_from_plateau,
                           *["pnt_w"] * report.pnt_from_night], key=order.index)
    summary = {**vars(report), "fitted": fitted_names, "kept": kept, "why_kept": why,
               "kept_curve": None}  # in kept and why_kept: the file says it once
    out = replace(spec.params, params=tparams.to_mapping(fitted),
                  name=_name(spec.params, override),
                  meta=_provenance(spec.params, path, ", ".join(fitted_names) or "nothing",
                                   summary, override))
    return Calibration(node, asset, "inverter", out, float(report.rms_before_w),
                       float(report.rms_after_w), "W", changes, kept,
                       list(report.at_bound), why, fitted=fitted_names)
