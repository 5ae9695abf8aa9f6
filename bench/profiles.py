"""Exogenous profiles of a scenario: irradiance, GPU workloads, prices, power traces.

A profile comes from a generator (seeded from the run's seed and the profile's name, so two
profiles never share a random stream and the same scenario gives the same profile) or from
a file (CSV with ``t_s`` and a value column, an events JSON for workloads, or a recorded
trace in the format of ``../shared/data``).
"""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import ScenarioError
from bench.scenario import ProfileConfig, Scenario
from twin.microgrid import Series
from twin.params import did_you_mean

#: resolution at which generated irradiance is sampled (interpolated linearly between) [s]
IRRADIANCE_STEP_S = 0.5


def profile_seed(run_seed: int, name: str) -> int:
    """A seed per profile: the run's seed mixed with the profile's name."""
    h = hashlib.sha256(f"{run_seed}:{name}".encode()).digest()
    return int.from_bytes(h[:4], "little")


#: where a field of one profile is: ``at("options", "step_s")`` -> ``file:line:
#: profiles.NAME.options.step_s`` (or the ``--set`` that gave it), via Scenario.where
At = Callable[..., str]


def _call(fn: Callable[..., Any], options: dict[str, Any], at: At, generator: str,
          also: tuple[str, ...] = (), **fixed: Any) -> Any:
    """Call a generator with scenario options: a misspelt, missing or mistyped option and
    an error the generator raises are named as the scenario's field, in the generator's
    name (never the Python function's); ``also``: options taken before the call."""
    try:  # the annotations as types (modules with ``from __future__`` make them text)
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, AttributeError, SyntaxError, TypeError):
        sig = inspect.signature(fn)
    names = [p for p in sig.parameters if p not in fixed]
    listed = ", ".join([*names, *also])
    for key, value in options.items():
        if key not in names:
            raise ScenarioError(f"{at('options', key)}: unknown option"
                                f"{did_you_mean(key, names)}; options are {listed}")
        _check_type(sig.parameters[key].annotation, value, at("options", key))
    missing = [p for p in names if sig.parameters[p].default is inspect.Parameter.empty
               and p not in options]
    if missing:
        raise ScenarioError(f"{at('options')}: the {generator} generator needs "
                            f"{' and '.join(missing)} (options: {listed})")
    try:
        return fn(**fixed, **options)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{at()}: {_in_words(str(exc), fn, generator)}") from None


def _in_words(message: str, fn: Callable[..., Any], generator: str) -> str:
    """A generator's error with the scenario's name for it, not the function's
    (``synchronous_training: step_s must be > 0`` -> ``the training generator: ...``)."""
    prefix = f"{fn.__name__}: "
    return f"the {generator} generator: {message[len(prefix):]}" \
        if message.startswith(prefix) else message


def _check_type(annotation: Any, value: Any, where: str) -> None:
    """A number option given text, or a whole-number option a fraction (``max_batch =
    8.5``), named here rather than failing inside the generator."""
    kinds = typing.get_args(annotation) or (annotation,)
    if int in kinds and float not in kinds:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{where}: must be a whole number, got {value!r}")
    elif float in kinds:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{where}: must be a number, got {value!r}")


def clear_sky(t_s: np.ndarray, latitude_deg: float = 40.0, day_of_year: int = 172,
              start_hour: float = 12.0, scale: float = 1.0) -> np.ndarray:
    """Clear-sky irradiance with run time 0 at ``start_hour`` of solar time. [W/m^2]"""
    from twin.pv import clear_sky_ghi

    for name, value, lo, hi in (("latitude_deg", latitude_deg, -90.0, 90.0),
                                ("day_of_year", day_of_year, 1, 366),
                                ("start_hour", start_hour, 0.0, 24.0)):
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {value:g}")
    if not scale >= 0:
        raise ValueError(f"scale must be >= 0, got {scale:g}")
    return scale * np.asarray(clear_sky_ghi(t_s + start_hour * 3600.0, latitude_deg,
                                            day_of_year))


def clear_sky_clouds(t_s: np.ndarray, seed: int, latitude_deg: float = 40.0,
                     day_of_year: int = 172, start_hour: float = 12.0, scale: float = 1.0,
                     mean_clear_s: float = 600.0, mean_cloudy_s: float = 180.0,
                     k_cloudy_min: float = 0.2, k_cloudy_max: float = 0.5,
                     edge_tau_s: float = 5.0) -> np.ndarray:
    """Clear-sky irradiance shaded by seeded cloud transients. [W/m^2]"""
    from twin.pv import CloudParams, cloud_transients

    clouds = CloudParams(mean_clear_s, mean_cloudy_s, k_cloudy_min, k_cloudy_max, edge_tau_s)
    return clear_sky(t_s, latitude_deg, day_of_year, start_hour, scale) * \
        cloud_transients(t_s, seed, clouds)


def constant(t_s: np.ndarray, value: float | None = None) -> np.ndarray:
    """The same ``value`` at every instant, in the profile's unit (irradiance W/m^2).

    ``value`` has no default: a constant profile without one is an error, not a silent 0
    (an array with no sun)."""
    if value is None:
        raise ValueError("the constant generator needs its value: options = { value = ... } "
                         "(irradiance in W/m2, e.g. value = 800.0)")
    return np.full(len(t_s), float(value))


IRRADIANCE = {"clear_sky": clear_sky, "clear_sky_clouds": clear_sky_clouds,
              "constant": constant}
PRICE = {"constant": constant}


def read_csv_column(path: Path, column: str, at: At) -> tuple[np.ndarray, np.ndarray]:
    """``t_s`` and one column of a CSV (optionally gzipped); errors name file, line, column."""
    from bench.csvio import CsvError, read_columns

    try:
        cols = read_columns(path, (column,) if column else None)
    except CsvError as exc:
        raise ScenarioError(f"{at('file')}: {exc}") from None
    others = [c for c in cols if c != "t_s"]
    if not column:
        if len(others) != 1:
            raise ScenarioError(f"{at('column')}: {path} has several value columns "
                                f"({', '.join(others)}); name one")
        column = others[0]
    if column not in cols:
        raise ScenarioError(f"{at('column')}: {path} has no column '{column}'"
                            f"{did_you_mean(column, others)}")
    return cols["t_s"], cols[column]


def build_profile(s: Scenario, name: str, horizon_s: float | None = None) -> Any:
    """The drive object of profile ``name``: a Series, or a workload for GPU racks.

    A generated profile covers the run (``duration_s``), or ``horizon_s`` when given:
    ``gridloop emulate`` serves for longer than a run, and a profile that ended would idle
    the rack (or hold the sun) under the bench's feet.  A longer profile starts with the
    run's: the generators draw their random streams in time order."""
    cfg: ProfileConfig = s.profiles[name]

    def at(*fields: str) -> str:
        return s.where("profiles", name, *fields)

    seed = profile_seed(s.run.seed, name)
    horizon = s.run.duration_s if horizon_s is None else max(horizon_s, s.run.duration_s)
    if cfg.kind in ("irradiance", "price", "temperature", "power"):
        if cfg.file:
            t, v = read_csv_column(s.resolve(cfg.file), cfg.column, at)
            return Series(t, v * cfg.scale)
        table = IRRADIANCE if cfg.kind == "irradiance" else PRICE
        fn = table.get(cfg.generator)
        if fn is None:
            raise ScenarioError(f"{at('generator')}: unknown {cfg.kind} generator "
                                f"'{cfg.generator}'{did_you_mean(cfg.generator, table)}; "
                                f"generators: {', '.join(table)}")
        step = min(IRRADIANCE_STEP_S, s.run.dt_s)
        t = np.arange(0.0, horizon + 2 * step, step)
        fixed: dict[str, Any] = {"t_s": t}
        if "seed" in inspect.signature(fn).parameters:
            fixed["seed"] = seed
        v = _call(fn, dict(cfg.options), at, cfg.generator, **fixed)
        return Series(t, np.asarray(v, dtype=float) * cfg.scale)
    if cfg.kind == "workload":
        return build_workload(s, cfg, at, seed, horizon)
    raise ScenarioError(f"{at('kind')}: profiles of kind '{cfg.kind}' are not supported")


def build_workload(s: Scenario, cfg: ProfileConfig, at: At, seed: int,
                   horizon_s: float | None = None) -> Any:
    """A GPU workload: a schedule from a generator or an events JSON file, generated up to
    ``horizon_s`` (default: the run's ``duration_s``) unless its options end it.

    Options ``groups`` and ``spread_s`` desynchronise it across the rack's GPUs: ``groups``
    copies, each delayed by its own offset in ``[0, spread_s]`` (:func:`desynchronise`).
    """
    from twin import workload

    options = dict(cfg.options)
    groups = options.pop("groups", 1)
    spread = options.pop("spread_s", 0.0)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ScenarioError(f"{at('options', 'groups')}: must be a whole number >= 1")
    _check_type(float, spread, at("options", "spread_s"))
    if cfg.file:
        schedule = _read_workload(s, cfg, options, at)
    else:
        gens = workload.GENERATORS
        fn = gens.get(cfg.generator)
        if fn is None:
            raise ScenarioError(f"{at('generator')}: unknown workload generator "
                                f"'{cfg.generator}'{did_you_mean(cfg.generator, gens)}; "
                                f"generators: {', '.join(gens)}")
        fixed: dict[str, Any] = {}
        params = inspect.signature(fn).parameters
        if "seed" in params:
            fixed["seed"] = seed
        horizon = s.run.duration_s if horizon_s is None else horizon_s
        for name in ("duration_s", "stop_s"):
            if name in params and name not in options:
                # past the run's end; a job set to start after it (a shortened run) is idle
                start = options.get("start_s", 0.0)
                end = horizon + 1.0
                options[name] = max(end, start) if isinstance(start, int | float) else end
        schedule = _call(fn, options, at, cfg.generator, ("groups", "spread_s"), **fixed)
    if groups == 1 and not spread:
        return schedule
    try:
        return workload.desynchronise(schedule, groups, float(spread), seed=seed + 1)
    except workload.ScheduleError as exc:
        raise ScenarioError(f"{at('options')}: {exc}") from None


def _read_workload(s: Scenario, cfg: ProfileConfig, options: dict[str, Any], at: At) -> Any:
    """The schedule of a workload profile read from an events JSON file."""
    from bench.errors import RecordingError
    from bench.traces import read_events

    if options:
        raise ScenarioError(f"{at('options')}: a workload read from a file takes only "
                            f"groups and spread_s")
    try:
        return read_events(s.resolve(cfg.file))
    except RecordingError as exc:
        raise ScenarioError(f"{at('file')}: {exc}") from None


def profile_end_s(drive: Any) -> float:
    """When a profile's data ends [s]: a series' last sample (it holds that value after),
    a schedule's last entry (idle after), the latest of a desynchronised set's."""
    if isinstance(drive, Series):
        return float(drive.t_s[-1])
    if isinstance(drive, list | tuple):
        return max((profile_end_s(d) for d in drive), default=0.0)
    t, seconds = np.asarray(drive.t_s), np.asarray(drive.seconds)
    return float((t + seconds).max()) if len(t) else 0.0
