"""Controllers under test: ``step(observation) -> setpoints``, and the built-ins.

A controller is any class with ``__init__(self, context: ControllerContext, **options)`` and
``step(self, obs: Observation) -> dict[str, float]``.  Keys of the returned dict are
``"node.asset.setpoint"`` (``"north.battery.p_set_w"``); a setpoint not returned keeps its
last value.  At market-interval boundaries the bench also calls ``orders(obs, interval)``
if the controller defines it (see :mod:`bench.market`).

Built-ins (``[controller] name = ...``):

``passthrough``
    writes the fixed setpoints given as options (or nothing): the plant runs on its own.
``peak_shaving``
    keeps each node's grid import under ``import_limit_w`` with its battery, and recharges
    the battery below ``recharge_below_w``.
``gpu_smoothing``
    keeps the ramp of each node's grid-side power under ``ramp_limit_w_per_s`` by letting the
    battery absorb the rack's training swings, pulling the state of charge back to
    ``soc_target`` slowly; with ``feed_forward_s`` it meets the racks' power edges the twin
    forecasts from their workload schedules.
``droop``
    frequency support when islanded: battery power ``p0 - (f - f_nom) / (f_nom * droop) *
    p_rated``.
``schedule``
    piecewise-constant setpoints over time: ``{"north.battery.p_set_w" = [[0, 0],
    [10, 50000], [20, 0]]}`` holds 0 W from 0 s, 50 kW from 10 s, 0 W from 20 s (pulse
    tests, lab exercises).
``external``
    the controller runs elsewhere (firmware on an MCU talking Modbus to the devices): the
    bench only observes and records.

An external module: ``name = "mypkg.ctrl:MyController"``.

A user's controller cannot take the run down with it: every call into it (its constructor,
``step``, ``orders``) goes through :class:`ControllerCalls`, which turns an exception, a
``sys.exit()`` or a call that overruns the run's ``controller_timeout_s`` into one
:class:`~bench.errors.ControllerError` line, and a module that fails to import is named by
file and line.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import signal
import sys
import threading
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from bench.errors import ControllerError
from twin.params import did_you_mean


class SignalError(ControllerError):
    """A signal, asset or forecast the run does not have, asked for by the controller's code
    (``obs["north.rack.p_ww"]``): raised inside a step, so the engine names the tick, as it
    does for any other failure of the step."""


@dataclass(frozen=True)
class AssetRef:
    """An asset the controller can see."""

    node: str
    name: str
    kind: str
    setpoints: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ControllerContext:
    """What a controller knows before the run: the topology and the run's clock."""

    dt_s: float
    assets: tuple[AssetRef, ...]
    islanded: Mapping[str, bool] = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.node for a in self.assets))

    def of_kind(self, kind: str, node: str | None = None) -> list[AssetRef]:
        return [a for a in self.assets if a.kind == kind and (node is None or a.node == node)]


class Observation:
    """What the controller sees at tick ``k``: measured values (twin values where an asset
    has no device), quality flags, and the twin's predictions and forecast.

    Values are read without copying from the engine's arrays:
    ``obs["north.battery.soc"]`` or ``obs.value("north", "battery", "soc")``; a value whose
    reading failed this tick is NaN and its quality is non-zero.
    """

    __slots__ = (
        "_forecast",
        "_index",
        "_qindex",
        "_quality",
        "_twin",
        "_values",
        "dt",
        "k",
        "t",
    )

    def __init__(self, index: Mapping[str, int], values: np.ndarray, twin: np.ndarray,
                 qindex: Mapping[str, int], quality: np.ndarray, dt: float,
                 forecast: Callable[[str, float], np.ndarray] | None = None) -> None:
        self._index = index
        self._values = values
        self._twin = twin
        self._qindex = qindex
        self._quality = quality
        self._forecast = forecast
        self.dt = dt
        self.t = 0.0
        self.k = 0

    def __getitem__(self, key: str) -> float:
        try:
            return float(self._values[self._index[key]])
        except KeyError:
            raise SignalError(f"no signal '{key}'{did_you_mean(key, self._index)}") from None

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str, default: float = math.nan) -> float:
        i = self._index.get(key)
        return default if i is None else float(self._values[i])

    def value(self, node: str, asset: str, signal: str) -> float:
        return self[f"{node}.{asset}.{signal}"]

    def twin(self, key: str) -> float:
        """The twin's prediction of the same signal at this tick."""
        try:
            return float(self._twin[self._index[key]])
        except KeyError:
            raise SignalError(f"no signal '{key}'{did_you_mean(key, self._index)}") from None

    def quality(self, node: str, asset: str) -> int:
        """0 when the asset's last reading was good (see firmware_bridge.device.Quality)."""
        key = f"{node}.{asset}"
        try:
            return int(self._quality[self._qindex[key]])
        except KeyError:
            raise SignalError(f"no asset '{key}'{did_you_mean(key, self._qindex)}") from None

    def forecast(self, key: str, horizon_s: float) -> np.ndarray:
        """The twin's forecast of an exogenously driven signal (rack power from its workload
        schedule, PV power from its irradiance profile) over the next ``horizon_s``, one
        value per tick, setpoints held."""
        if self._forecast is None:
            raise SignalError("this run has no twin forecast")
        try:
            return self._forecast(key, horizon_s)
        except SignalError:
            raise
        except ControllerError as exc:  # a signal the twin does not forecast
            raise SignalError(str(exc)) from None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self._index)


class Controller(Protocol):
    def step(self, obs: Observation) -> Mapping[str, float]: ...


class Passthrough:
    """Writes fixed setpoints (options ``{"north.battery.p_set_w": 0.0}``), or nothing."""

    def __init__(self, context: ControllerContext, **setpoints: float) -> None:
        known = {f"{a.node}.{a.name}.{s}" for a in context.assets for s in a.setpoints}
        for key in setpoints:
            if key not in known:
                raise _unknown_setpoint("passthrough", key, setpoints[key], known)
        self.setpoints = {k: float(v) for k, v in setpoints.items()}
        self._sent = False

    def step(self, obs: Observation) -> dict[str, float]:
        if self._sent:
            return {}
        self._sent = True
        return dict(self.setpoints)


class Schedule:
    """Setpoints that change at given times: ``{key: [[t_s, value], ...]}``, held between."""

    def __init__(self, context: ControllerContext, **schedules: Any) -> None:
        known = {f"{a.node}.{a.name}.{s}" for a in context.assets for s in a.setpoints}
        self.steps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for key, pairs in schedules.items():
            if key not in known:
                raise _unknown_setpoint("schedule", key, pairs, known)
            try:
                arr = np.asarray(pairs, dtype=float).reshape(-1, 2)
            except (TypeError, ValueError):
                raise ControllerError(f"schedule: '{key}' must be a list of [t_s, value] "
                                      f"pairs") from None
            if len(arr) == 0 or np.any(np.diff(arr[:, 0]) <= 0):
                raise ControllerError(f"schedule: the times of '{key}' must increase")
            self.steps[key] = (arr[:, 0], arr[:, 1])

    def step(self, obs: Observation) -> dict[str, float]:
        out = {}
        for key, (times, values) in self.steps.items():
            i = int(np.searchsorted(times, obs.t + 1e-9, side="right")) - 1
            if i >= 0:
                out[key] = float(values[i])
        return out


def _unknown_setpoint(controller: str, key: str, value: Any,
                      known: set[str]) -> ControllerError:
    """An option that names no setpoint.  One whose value is a table is most likely a
    setpoint name split at its dots (``--set controller.options.north.battery.p_set_w=0``,
    or dotted keys in the file): the error gives the quoted key that names it."""
    if not (isinstance(value, Mapping) and value):
        return ControllerError(f"{controller}: no setpoint '{key}'{did_you_mean(key, known)}")
    from bench.scenario import quote_key

    name, leaf = key, value
    while isinstance(leaf, Mapping) and leaf:
        part, leaf = next(iter(leaf.items()))
        name = f"{name}.{part}"
    text = _inline_toml(leaf)
    near = "" if name in known else did_you_mean(name, known)
    return ControllerError(f"{controller}: no setpoint '{key}': a setpoint's name has dots, "
                           f"so quote it as one key: --set 'controller.options."
                           f"{quote_key(name)}={text}' (in the file: {quote_key(name)} = "
                           f"{text}){near}")


def _inline_toml(value: Any) -> str:
    """``value`` as TOML on one line (a hint's ``--set`` value); ``VALUE`` for what is not
    a number, a truth value, a string or an array of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        from bench.scenario import quote_key

        quoted = quote_key(value)
        return quoted if quoted.startswith('"') else f'"{quoted}"'
    if isinstance(value, list | tuple):
        parts = [_inline_toml(v) for v in value]
        return "VALUE" if "VALUE" in parts else f"[{', '.join(parts)}]"
    return "VALUE"


class External:
    """The controller runs outside the bench; the bench observes and records only."""

    def __init__(self, context: ControllerContext) -> None:
        pass

    def step(self, obs: Observation) -> dict[str, float]:
        return {}


@dataclass
class _NodeKeys:
    battery: str | None
    battery_p: str | None
    battery_soc: str | None
    battery_rating_w: float
    loads: list[str]
    generation: list[str]
    grid: str | None
    freq: str | None
    #: the bus's nominal frequency (NaN where the context does not say) [Hz]
    f_nom_hz: float = math.nan


def _node_keys(context: ControllerContext, node: str) -> _NodeKeys:
    bats = context.of_kind("battery", node)
    bat = bats[0] if bats else None
    grid = (context.of_kind("meter", node) or context.of_kind("grid", node) or [None])[0]
    loads = [f"{node}.{a.name}.p_w" for a in context.of_kind("gpu_rack", node)]
    gen = [f"{node}.{a.name}.p_ac_w" for a in context.of_kind("inverter", node)]
    freq, f_nom = None, math.nan
    grids = context.of_kind("grid", node)
    if grids:
        freq = f"{node}.{grids[0].name}.freq_hz"
        f_nom = float(grids[0].params.get("f_nom_hz", math.nan))
    rating = float(bat.params.get("p_rated_w", math.inf)) if bat else 0.0
    return _NodeKeys(
        battery=f"{node}.{bat.name}" if bat else None,
        battery_p=f"{node}.{bat.name}.p_w" if bat else None,
        battery_soc=f"{node}.{bat.name}.soc" if bat else None,
        battery_rating_w=rating,
        loads=loads, generation=gen,
        grid=f"{node}.{grid.name}.p_w" if grid else None,
        freq=freq, f_nom_hz=f_nom,
    )


class PeakShaving:
    """Keep grid import under ``import_limit_w`` per node with the battery.

    The net load the battery sees is ``grid + battery`` (the grid import the node would have
    without the battery); the battery discharges the part above the limit and recharges at up
    to ``recharge_w`` while the net load is below ``recharge_below_w`` and SOC is under
    ``soc_max``.
    """

    def __init__(self, context: ControllerContext, import_limit_w: float,
                 recharge_below_w: float | None = None, recharge_w: float = 10_000.0,
                 soc_min: float = 0.1, soc_max: float = 0.9) -> None:
        self.limit = float(import_limit_w)
        self.recharge_below = float(recharge_below_w if recharge_below_w is not None
                                    else 0.8 * import_limit_w)
        self.recharge_w = float(recharge_w)
        self.soc_min, self.soc_max = float(soc_min), float(soc_max)
        self.nodes = [k for k in (_node_keys(context, n) for n in context.nodes)
                      if k.battery and k.grid]
        if not self.nodes:
            raise ControllerError("peak_shaving needs a node with a battery and a meter or grid")

    def step(self, obs: Observation) -> dict[str, float]:
        out = {}
        for n in self.nodes:
            grid, bat = obs.get(n.grid), obs.get(n.battery_p)
            soc = obs.get(n.battery_soc)
            if not (math.isfinite(grid) and math.isfinite(bat)):
                continue  # a failed reading: hold the last setpoint
            net = grid + bat
            if net > self.limit and soc > self.soc_min:
                p = net - self.limit
            elif net < self.recharge_below and soc < self.soc_max:
                p = -min(self.recharge_w, self.recharge_below - net)
            else:
                p = 0.0
            out[f"{n.battery}.p_set_w"] = min(p, n.battery_rating_w)
        return out


class GpuSmoothing:
    """Keep the grid-side power ramp under ``ramp_limit_w_per_s`` with the battery.

    The grid-side target follows the node's net load through a rate limiter; the battery
    supplies (or absorbs) the difference between the net load and the target.  A slow term
    ``soc_gain_w`` x (SOC - ``soc_target``) steers the target so the battery does not drift
    empty or full over many training steps.

    The net load is measured: it is a tick old when the setpoint lands, and the converter
    follows its setpoint with a lag, so a rack's power edge reaches the grid before the
    battery answers it.  With ``feed_forward_s`` > 0 the controller adds the change of the
    racks' power that the twin forecasts (from their workload schedules) between the
    measured tick and ``feed_forward_s`` after the setpoint lands, so the battery meets the
    edge instead of following it.  Each tick then costs a twin forecast
    (:meth:`Observation.forecast`).

    A tick whose grid (meter) or battery reading is missing (NaN: a timeout, an exception
    answer) is bridged, not skipped: holding the battery's last setpoint would pass the
    rack's edges straight to the grid.  The net load of the last tick that had every reading
    is carried forward by the change of the node's measured rack power (``loads``) since
    then.  The controller skips the node only when it has no such tick yet or the racks'
    readings are missing too.  A frozen meter is not bridged: its stale value looks valid.
    """

    def __init__(self, context: ControllerContext, ramp_limit_w_per_s: float,
                 soc_target: float = 0.5, soc_gain_w: float = 20_000.0,
                 feed_forward_s: float = 0.0) -> None:
        if ramp_limit_w_per_s <= 0:
            raise ControllerError("gpu_smoothing: ramp_limit_w_per_s must be positive")
        if feed_forward_s < 0:
            raise ControllerError("gpu_smoothing: feed_forward_s must not be negative")
        self.max_step = float(ramp_limit_w_per_s) * context.dt_s
        self.soc_target = float(soc_target)
        self.soc_gain = float(soc_gain_w)
        #: forecast steps: the setpoint's own tick, plus the lead, in ticks
        self.lead = int(round(feed_forward_s / context.dt_s)) + 1 if feed_forward_s else 0
        self.nodes = [k for k in (_node_keys(context, n) for n in context.nodes)
                      if k.battery and k.grid]
        if not self.nodes:
            raise ControllerError("gpu_smoothing needs a node with a battery and a meter or grid")
        self.target: dict[str, float] = {}
        #: per battery: (net load, racks' power) of the last tick with every reading
        self.last_good: dict[str, tuple[float, float]] = {}

    def step(self, obs: Observation) -> dict[str, float]:
        out = {}
        for n in self.nodes:
            net = self._net_load(obs, n)  # what the grid would carry without the battery
            if not math.isfinite(net):
                continue
            if self.lead:
                net += self._forecast_change(obs, n.loads)
            soc = obs.get(n.battery_soc, self.soc_target)
            if not math.isfinite(soc):  # a failed SOC reading: no correction this tick
                soc = self.soc_target
            # SOC above target -> grid carries a little less, battery discharges a little more.
            wanted = net - self.soc_gain * (soc - self.soc_target)
            prev = self.target.get(n.battery, net)
            target = prev + min(max(wanted - prev, -self.max_step), self.max_step)
            self.target[n.battery] = target
            out[f"{n.battery}.p_set_w"] = net - target
        return out

    def _net_load(self, obs: Observation, n: _NodeKeys) -> float:
        """``grid + battery`` measured, or bridged over a missing reading by the racks'
        measured change since the last tick with every reading; NaN when it cannot be."""
        assert n.battery is not None
        grid, bat = obs.get(n.grid), obs.get(n.battery_p)
        loads = sum(obs.get(key) for key in n.loads) if n.loads else math.nan
        if math.isfinite(grid) and math.isfinite(bat):
            if math.isfinite(loads):
                self.last_good[n.battery] = (grid + bat, loads)
            return grid + bat
        last = self.last_good.get(n.battery)
        if last is None or not math.isfinite(loads):
            return math.nan
        return last[0] + (loads - last[1])

    def _forecast_change(self, obs: Observation, loads: list[str]) -> float:
        """Forecast rack power ``lead`` ticks ahead minus the twin's value at the measured
        tick: the edge the measurement has not seen yet."""
        change = 0.0
        horizon = self.lead * obs.dt
        for key in loads:
            ahead = obs.forecast(key, horizon)
            change += float(ahead[-1]) - obs.twin(key)
        return change


class Droop:
    """Frequency support when islanded: ``p = p0 - (f - f_nom)/(f_nom droop) p_rated``.

    ``f_nom_hz`` defaults to each node's bus (its parameter set's ``f_nom_hz``): a 50 Hz
    default on a 60 Hz bus charged the battery at full power to pull 60 Hz down to 50.
    """

    def __init__(self, context: ControllerContext, droop: float = 0.05,
                 f_nom_hz: float | None = None, p0_w: float = 0.0,
                 p_rated_w: float | None = None, deadband_hz: float = 0.0) -> None:
        if droop <= 0:
            raise ControllerError("droop: 'droop' must be a positive fraction (e.g. 0.05)")
        if f_nom_hz is not None and not f_nom_hz > 0:
            raise ControllerError(f"droop: f_nom_hz must be positive, got {f_nom_hz}")
        self.droop, self.p0 = float(droop), float(p0_w)
        self.deadband = float(deadband_hz)
        self.nodes = [k for k in (_node_keys(context, n) for n in context.nodes)
                      if k.battery and k.freq]
        if not self.nodes:
            raise ControllerError("droop needs a node with a battery and a grid (bus frequency)")
        self.f_nom = {n.battery: float(f_nom_hz if f_nom_hz is not None else n.f_nom_hz)
                      for n in self.nodes}
        for b, f_nom in self.f_nom.items():
            if not math.isfinite(f_nom):
                raise ControllerError(f"droop: give f_nom_hz (the bus of battery {b} does "
                                      "not say its nominal frequency)")
        self.rated = {n.battery: float(p_rated_w if p_rated_w is not None
                                       else n.battery_rating_w) for n in self.nodes}
        for b, r in self.rated.items():
            if not math.isfinite(r):
                raise ControllerError(f"droop: give p_rated_w (battery {b} has no rating)")

    def step(self, obs: Observation) -> dict[str, float]:
        out = {}
        for n in self.nodes:
            f = obs.get(n.freq)
            if not math.isfinite(f):
                continue
            f_nom = self.f_nom[n.battery]
            df = f - f_nom
            if abs(df) <= self.deadband:
                df = 0.0
            else:
                df -= math.copysign(self.deadband, df)
            out[f"{n.battery}.p_set_w"] = self.p0 - df / (f_nom * self.droop) * \
                self.rated[n.battery]
        return out


BUILTINS: dict[str, type] = {
    "passthrough": Passthrough,
    "peak_shaving": PeakShaving,
    "gpu_smoothing": GpuSmoothing,
    "droop": Droop,
    "schedule": Schedule,
    "external": External,
}


def load_controller(name: str, context: ControllerContext,
                    options: Mapping[str, Any], timeout_s: float = 0.0) -> Any:
    """Build a built-in controller or ``module:Class``, checking its options by name.

    ``timeout_s`` > 0 limits the constructor's time (see :class:`ControllerCalls`)."""
    if name in BUILTINS:
        cls = BUILTINS[name]
    elif ":" in name:
        module_name, _, cls_name = name.partition(":")
        if not module_name or not cls_name:
            raise ControllerError(f"controller '{name}': expected module:Class, "
                                  f"e.g. mypkg.control:MyController")
        try:
            module = importlib.import_module(module_name)
        except (Exception, SystemExit) as exc:  # anything its code raises; Ctrl-C goes on
            raise ControllerError(f"controller '{name}': cannot import {module_name}: "
                                  f"{_one_line(_import_failure(exc, module_name))}") from None
        cls = getattr(module, cls_name, None)
        if cls is None:
            raise ControllerError(f"controller '{name}': {module_name} has no {cls_name}")
        if not callable(cls):
            raise ControllerError(f"controller '{name}': {module_name}.{cls_name} is not a "
                                  f"class (it is a {type(cls).__name__})")
    else:
        raise ControllerError(f"unknown controller '{name}'{did_you_mean(name, BUILTINS)}; "
                              f"built-ins: {', '.join(BUILTINS)}, or 'module:Class'")
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):  # a built-in type such as builtins:int
        raise ControllerError(f"controller '{name}': cannot read the arguments of "
                              f"{name.replace(':', '.')}; is it a controller class?") from None
    params = list(sig.parameters.values())[1:]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not takes_kwargs:
        for key in options:
            if key not in names:
                raise ControllerError(f"controller '{name}': unknown option '{key}'"
                                      f"{did_you_mean(key, names)}")
    missing = [p.name for p in params if p.default is p.empty and p.name not in options
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        raise ControllerError(f"controller '{name}': missing option(s) {', '.join(missing)}")
    try:  # the annotations as types (this module's ``from __future__`` makes them text)
        typed = inspect.signature(cls, eval_str=True).parameters
    except (NameError, AttributeError, SyntaxError, TypeError):  # not evaluable: no check
        typed = {}
    for key, value in options.items():
        if key in typed:
            _check_option(name, typed[key], value)
    try:
        with ControllerCalls(name, timeout_s) as calls:
            ctrl = calls.call("start", None, cls, context, **options)
    except (TypeError, ValueError) as exc:  # an option it refuses
        raise ControllerError(f"controller '{name}': {exc}{where_raised(exc, cls)}") from None
    except ControllerError:
        raise
    except Exception as exc:  # a user's class: any failure of its constructor is one line
        raise ControllerError(f"controller '{name}' failed to start: "
                              f"{type(exc).__name__}: {exc}{where_raised(exc, cls)}") from None
    if not callable(getattr(ctrl, "step", None)):
        raise ControllerError(f"controller '{name}' has no step(observation) method")
    return ctrl


def _check_option(controller: str, param: inspect.Parameter, value: Any) -> None:
    """A number option given something else (``--option ramp_limit_w_per_s=abc``) is named
    here, not left to fail as a comparison inside the constructor."""
    ann, default = param.annotation, param.default
    if ann is param.empty:  # unannotated: a number default makes it a number option
        numeric = isinstance(default, int | float) and not isinstance(default, bool)
        optional = default is None
    else:
        kinds = typing.get_args(ann) or (ann,)
        numeric = int in kinds or float in kinds
        optional = type(None) in kinds or default is None
    if not numeric or (value is None and optional):
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControllerError(f"controller '{controller}': option {param.name}: expected a "
                              f"number, got {value!r}")


def check_setpoint_values(name: str, setpoints: Mapping[str, Any], t: float) -> None:
    """Refuse a setpoint given as text or as a truth value: ``"12400"`` and ``True`` are
    not numbers, though ``float()`` would make them ones."""
    for key, value in setpoints.items():
        if isinstance(value, str | bytes | bool | np.bool_):
            raise ControllerError(f"controller '{name}' set '{key}' to {value!r} at "
                                  f"t = {t:.3f} s; expected a number, not a "
                                  f"{type(value).__name__}")


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))


def where_raised(exc: BaseException, *code: Any) -> str:
    """`` (at FILE:LINE in FUNC)``: where in the controller's own code ``exc`` was raised, for
    its error line (a controller's developer reads a CI log for that first).  ``code``: the
    controller's class, or the method of it that was called (``controller.step``); its
    files are the module the class is defined in and the file of the method's code.  The
    innermost frame of ``exc``'s traceback in one of them is the place, the bench's own
    calls into the controller (:class:`ControllerCalls`, :class:`Observation`) left out: a
    failed ``obs["key"]`` is at the controller's line that asked.  ``""`` where no frame is
    (it raised before its own code ran)."""
    files: set[str] = set()
    for part in code:
        fn = getattr(part, "__func__", part)
        if getattr(fn, "__code__", None) is not None:
            files.add(os.path.abspath(fn.__code__.co_filename))
        owner = part if isinstance(part, type) else type(getattr(part, "__self__", part))
        module_file = getattr(sys.modules.get(owner.__module__), "__file__", None)
        if module_file:
            files.add(os.path.abspath(module_file))
    here = os.path.abspath(__file__)
    at = None
    tb = exc.__traceback__
    while tb is not None:
        frame_code = tb.tb_frame.f_code
        file = frame_code.co_filename
        if not file.startswith("<") and os.path.abspath(file) in files:
            qualname = getattr(frame_code, "co_qualname", frame_code.co_name)
            if not (os.path.abspath(file) == here
                    and qualname.split(".")[0] in ("ControllerCalls", "Observation")):
                at = (file, tb.tb_lineno, frame_code.co_name)
        tb = tb.tb_next
    return "" if at is None else f" (at {at[0]}:{at[1]} in {at[2]})"


def _import_failure(exc: BaseException, module_name: str) -> str:
    """``FILE:LINE: Kind: message`` of an error importing a controller's module: the line of
    the module (or of the file that does not compile) where it happened, and where it was
    raised when that is elsewhere; no place when the import machinery itself refused (no
    such module, a name that is not a module name)."""
    if isinstance(exc, SyntaxError) and exc.filename and not exc.filename.startswith("<"):
        return f"{exc.filename}:{exc.lineno}: {type(exc).__name__}: {exc.msg}"
    importlib_dir = os.path.dirname(os.path.abspath(importlib.__file__)) + os.sep
    frames = []  # (file, line, module name) of the code the import ran, outermost first
    tb = exc.__traceback__
    while tb is not None:
        file = tb.tb_frame.f_code.co_filename
        full = os.path.abspath(file) if not file.startswith("<") else ""
        if full and full != os.path.abspath(__file__) and not full.startswith(importlib_dir):
            frames.append((file, tb.tb_lineno, tb.tb_frame.f_globals.get("__name__")))
        tb = tb.tb_next
    if not frames:  # the import machinery refused: its words, as before
        return str(exc) or type(exc).__name__
    own = [f for f in frames if f[2] == module_name]
    at = own[-1] if own else frames[-1]
    via = f" (in {frames[-1][0]}:{frames[-1][1]})" if frames[-1] != at else ""
    return f"{at[0]}:{at[1]}: {type(exc).__name__}: {exc}{via}"


class _Overrun(BaseException):
    """Raised inside a controller's code when its call overruns the limit (a
    ``BaseException``, so the controller's own ``except Exception`` does not swallow it)."""


class ControllerCalls:
    """Calls into a controller, each as one line when it goes wrong.

    :meth:`call` turns a ``sys.exit()`` of the controller into a
    :class:`~bench.errors.ControllerError` (it would otherwise end the process with the
    status it gave, as if the run had passed), and limits the call's time to ``timeout_s``
    (0: no limit).  Other exceptions pass through for the caller to word.

    The limit is a SIGALRM timer (``setitimer(ITIMER_REAL)``) armed around each call only,
    whose handler raises inside the controller's code: a busy loop or a ``time.sleep`` is
    interrupted (code stuck in a C extension that never returns to Python is not).  Python
    runs signal handlers in the main thread only, so the limit holds where this is entered
    in the main thread; elsewhere (a run in a thread, as under ``--view``, or a sweep's
    point in a Dask worker thread) calls are unlimited.  Entering installs the handler,
    leaving restores the previous one; a timer someone else had armed (pytest-timeout, a
    caller's own alarm) keeps its due time and its handler still receives it.
    """

    #: after an overrun the controller swallowed (a bare ``except:``), interrupt it again
    #: this often [s]
    AGAIN_S = 1.0

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = float(timeout_s)
        self.limited = False
        self._previous: Any = None
        self._in_call = False
        self._due: float | None = None  # monotonic time our timer fires
        self._foreign: tuple[float, float] | None = None  # someone else's: (due, interval)
        self._overran = False

    def __enter__(self) -> ControllerCalls:
        self.limited = (self.timeout_s > 0 and hasattr(signal, "setitimer")
                        and threading.current_thread() is threading.main_thread())
        if self.limited:
            delay, interval = signal.getitimer(signal.ITIMER_REAL)
            self._foreign = (time.monotonic() + delay, interval) if delay > 0 else None
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.limited:
            return
        try:
            self._stop()  # someone else's timer only, or none
        finally:
            # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGALRM, signal.SIG_DFL if self._previous is None
                          else self._previous)
            self.limited = False

    def call(self, where: str, t: float | None, fn: Callable[..., Any], /, *args: Any,
             **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` for the controller; ``where`` is ``"start"`` (its
        constructor), ``"step"`` or ``"orders"``, ``t`` the simulated time of the tick."""
        if not self.limited:
            try:
                return fn(*args, **kwargs)
            except SystemExit as exc:
                raise self._exited(exc, where, t) from None
        self._overran = False
        try:
            try:
                self._in_call = True
                if self._foreign is None:  # the usual case: one system call to arm
                    signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
                else:
                    now = time.monotonic()
                    self._due = now + self.timeout_s
                    self._arm(now)
                out = fn(*args, **kwargs)
            finally:
                self._stop()
            if self._overran:  # interrupted, but the controller caught it and went on
                raise _Overrun
            return out
        except _Overrun:
            self._stop()  # again: the alarm may have cut the finally short
            raise ControllerError(f"controller '{self.name}' took more than "
                                  f"{self.timeout_s:g} s {self._when(where, t)} (the limit is "
                                  "[run] controller_timeout_s)") from None
        except SystemExit as exc:
            raise self._exited(exc, where, t) from None

    def _stop(self) -> None:
        """Our timer off (someone else's kept); from here the handler raises nothing."""
        self._in_call, self._due = False, None
        if self._foreign is None:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
        else:
            self._arm(time.monotonic())

    def _exited(self, exc: SystemExit, where: str, t: float | None) -> ControllerError:
        return ControllerError(f"controller '{self.name}' exited (SystemExit {exc.code}) "
                               f"{self._when(where, t)}")

    @staticmethod
    def _when(where: str, t: float | None) -> str:
        return "while starting" if where == "start" else f"in {where} at t = {t:.3f} s"

    def _arm(self, now: float) -> None:
        """Set the real-time timer to the earliest of ours and someone else's, or off."""
        dues = [d for d in (self._due, self._foreign[0] if self._foreign else None)
                if d is not None]
        signal.setitimer(signal.ITIMER_REAL, max(min(dues) - now, 1e-6) if dues else 0.0)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self._foreign is not None and now >= self._foreign[0] - 1e-3:
            interval = self._foreign[1]  # someone else's alarm: theirs to handle
            self._foreign = (now + interval, interval) if interval > 0 else None
            self._arm(now)
            prev = self._previous
            if callable(prev):
                prev(signum, frame)
            elif prev == signal.SIG_DFL:  # what the alarm did before: end the process
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGALRM)
            return
        # ours: with no other timer (no due time kept) any alarm during a call
        if self._in_call and (self._due is None or now >= self._due - 1e-3):
            self._overran = True
            if self._due is None:
                signal.setitimer(signal.ITIMER_REAL, self.AGAIN_S)
            else:
                self._due = now + self.AGAIN_S
                self._arm(now)
            raise _Overrun
        self._arm(now)  # early, or ours arriving after the call returned: nothing to do
