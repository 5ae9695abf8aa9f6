"""Scenarios: what a run contains, read from TOML and validated before anything starts.

A scenario names its nodes and their assets (each ``twin``, ``emulated`` or ``hardware`` with
its address), the controller and its options, the exogenous profiles (irradiance, GPU
workloads, prices), the market, and the run's ``dt_s``, ``duration_s`` and ``seed``::

    [run]
    dt_s = 0.02
    duration_s = 60
    seed = 1

    [controller]
    name = "peak_shaving"
    options = { import_limit_w = 40000 }

    [profiles.sun]
    kind = "irradiance"
    generator = "clear_sky_clouds"

    [nodes.north.battery]
    kind = "battery"
    params = "battery_lfp_rack"

Errors read ``file:line: field: what is wrong`` with a "did you mean" for misspelt keys.
Every field is documented in ``docs/scenarios.md``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.checks import Check, parse_checks
from bench.errors import ScenarioError, ScenarioWarning
from bench.tomlpos import key_lines, line_of
from twin.errors import ParameterError
from twin.params import from_mapping

AssetKind = Literal["battery", "inverter", "pv", "gpu_rack", "grid", "meter"]
AssetMode = Literal["twin", "emulated", "hardware"]
RunMode = Literal["twin", "emulated", "hardware", "replay"]
MODE_ORDER = {"twin": 0, "emulated": 1, "hardware": 2}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


#: the largest seed: the recording stores it as a signed 64-bit integer
_SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class RunConfig:
    """The run as a whole."""

    name: str = "run"
    #: tick length [s]
    dt_s: float = 0.02
    #: simulated duration [s]
    duration_s: float = 60.0
    seed: int = 0
    mode: RunMode = "emulated"
    #: twin stepper method: ``exact`` or ``scipy`` (the reference)
    method: Literal["exact", "scipy"] = "exact"
    #: pace ticks to the wall clock (always, once any asset runs on hardware)
    realtime: bool = False
    #: what a late real-time tick does: ``hold`` (run it late), ``skip`` (drop the ticks
    #: whose deadline passed, holding setpoints), ``fail`` (stop the run)
    catch_up: Literal["hold", "skip", "fail"] = "hold"
    #: a tick starting this much after its due time is late and the catch-up policy acts;
    #: 0: a quarter of dt [s]
    late_after_s: float = 0.0
    #: recorder flush period (data older than this survives a crash) [s of wall clock]
    flush_s: float = 1.0
    #: record every Modbus transaction of every device under /capture (replayable)
    capture: bool = False
    #: per-device deadline of a read or write [s]; default: 0.8 dt in real time, and 2 s
    #: as fast as possible (a slow machine must not turn a deterministic run into timeouts)
    deadline_s: float = 0.0
    #: the longest a controller call (its constructor, a step, its orders) may take before
    #: the run stops with an error; 0: no limit [s of wall clock]
    controller_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not 0 <= self.seed <= _SEED_MAX:
            raise ValueError(f"seed must be a whole number from 0 to {_SEED_MAX} (it is "
                             f"recorded as a 64-bit integer), got {self.seed}")
        if not self.dt_s > 0 or not math.isfinite(self.dt_s):
            raise ValueError("dt_s must be a positive number of seconds")
        if not self.duration_s > 0:
            raise ValueError("duration_s must be positive")
        if self.duration_s / self.dt_s > 1e9:
            raise ValueError("duration_s / dt_s is over a billion ticks")
        steps = self.duration_s / self.dt_s
        if steps < 1 - 1e-9:
            raise ValueError(f"duration_s must be at least one step of dt_s = {self.dt_s:g} s "
                             f"(got {self.duration_s:g} s, which runs no tick)")
        if abs(steps - round(steps)) > 1e-9 * steps:
            lo, hi = math.floor(steps), math.ceil(steps)
            raise ValueError(f"duration_s must be a whole number of steps of dt_s = "
                             f"{self.dt_s:g} s: {self.duration_s:g} s is {steps:.4g} steps; "
                             f"use {lo * self.dt_s:.10g} s or {hi * self.dt_s:.10g} s")
        for name in ("late_after_s", "deadline_s"):
            value = getattr(self, name)
            if not value >= 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a non-negative number of seconds "
                                 "(0: the default)")
        if not self.controller_timeout_s >= 0 or not math.isfinite(self.controller_timeout_s):
            raise ValueError("controller_timeout_s must be a non-negative number of seconds "
                             "(0: no limit)")
        if not 0 < self.flush_s <= 1.0:
            raise ValueError("flush_s must be in (0, 1] so a crash loses at most one second")

    @property
    def n_ticks(self) -> int:
        return int(round(self.duration_s / self.dt_s))

    @property
    def late_threshold_s(self) -> float:
        return self.late_after_s if self.late_after_s > 0 else 0.25 * self.dt_s

    @property
    def device_deadline_s(self) -> float:
        if self.deadline_s > 0:
            return self.deadline_s
        return 0.8 * self.dt_s if self.realtime else 2.0


@dataclass(frozen=True)
class ControllerConfig:
    """The controller under test: a built-in name, ``module:Class``, or ``external``."""

    name: str = "passthrough"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileConfig:
    """An exogenous profile: from a generator (seeded from the run) or from a file."""

    kind: Literal["irradiance", "workload", "price", "temperature", "power"]
    #: generator name (see docs/scenarios.md) or empty when ``file`` is given
    generator: str = ""
    #: a CSV (``t_s`` plus a value column), an events JSON (workloads) or a trace
    file: str = ""
    #: the CSV column holding the value
    column: str = ""
    #: multiply the values (e.g. one GPU's trace scaled to a rack) [-]
    scale: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.generator) == bool(self.file):
            raise ValueError("give exactly one of 'generator' and 'file'")


@dataclass(frozen=True)
class AssetConfig:
    """One asset of a node."""

    kind: AssetKind
    #: ``twin`` (no device), ``emulated`` (an emulator on loopback) or ``hardware`` (the
    #: ``device`` address); a run's ``--mode`` lowers it (hardware -> emulated -> twin)
    mode: AssetMode = "emulated"
    #: parameter set: a name shipped in twin/data (without .toml) or a path
    params: str = ""
    #: the emulator's own parameter set (defaults to ``params``)
    emulator_params: str = ""
    #: factors applied to emulator parameters, e.g. { r0_ohm = 1.2 } (calibration studies)
    emulator_scale: dict[str, float] = field(default_factory=dict)
    #: parameter overrides for twin and emulator, e.g. { capacity_ah = 300 }
    override: dict[str, Any] = field(default_factory=dict)
    #: initial-condition overrides, e.g. { soc = 0.8 }
    initial: dict[str, Any] = field(default_factory=dict)
    #: exogenous profile driving the asset (irradiance for pv, workload for gpu_rack)
    profile: str = ""
    #: for an inverter: the pv asset that feeds it
    source: str = ""
    #: for a battery: its bidirectional converter's parameter set (name or path)
    converter: str = ""
    #: emulated transport: Modbus TCP, Modbus RTU on a pty, or the serial MCU protocol
    transport: Literal["tcp", "rtu", "serial"] = "tcp"
    #: hardware address: { backend = "modbus_tcp", host = ..., port = ..., unit = ... }
    device: dict[str, Any] = field(default_factory=dict)
    #: a recording whose /capture of this asset to serve as its emulator (Modbus): the
    #: device answers exactly as the recorded one did
    replay_capture: str = ""
    #: fault cards for this asset's emulator (see docs/scenarios.md)
    faults: list[dict[str, Any]] = field(default_factory=list)
    #: residual tolerance band per signal, e.g. { voltage_v = 0.5 } [signal units]
    tolerance: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MarketConfig:
    """Peer-to-peer trading between nodes, cleared at interval boundaries."""

    kind: Literal["none", "uniform", "continuous"] = "none"
    #: market and delivery interval [s]
    interval_s: float = 15.0
    #: grid import price [micro-units of currency per Wh] (300 = 0.30 per kWh)
    import_price_micro_per_wh: int = 300
    #: grid export price [micro-units of currency per Wh]
    export_price_micro_per_wh: int = 50
    #: the ledger's key directory (``gridloop ledger keygen --dir DIR``), relative to the
    #: scenario file, used as it is (a missing key is an error); "" keeps the keys beside
    #: the ledger, made when missing
    keys: str = ""

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if self.import_price_micro_per_wh < 0 or self.export_price_micro_per_wh < 0:
            raise ValueError("prices must not be negative")


@dataclass(frozen=True)
class Scenario:
    """A validated scenario; ``text`` is the TOML it came from (recorded with the run)."""

    run: RunConfig
    controller: ControllerConfig
    nodes: dict[str, dict[str, AssetConfig]]
    profiles: dict[str, ProfileConfig] = field(default_factory=dict)
    market: MarketConfig = field(default_factory=MarketConfig)
    path: Path | None = None
    text: str = ""
    #: the ``--set`` overrides applied to ``text`` (the scenario is ``text`` + these)
    overrides: tuple[str, ...] = ()
    #: pass/fail checks on the run's signals (``[checks]``, :mod:`bench.checks`)
    checks: tuple[Check, ...] = ()
    #: the scenario file as the user named it (errors say it so), ``<scenario>`` for a text
    source: str = ""
    #: where each key path was given: its file line, or the override that set it
    origins: Any = field(default=None, compare=False, repr=False)

    def assets(self) -> list[tuple[str, str, AssetConfig]]:
        """Every (node, asset name, config), in file order."""
        return [(n, a, c) for n, assets in self.nodes.items() for a, c in assets.items()]

    def effective_mode(self, asset: AssetConfig) -> str:
        """The asset's mode under this run's mode (a run never raises an asset's mode)."""
        run_mode = "emulated" if self.run.mode == "replay" else self.run.mode
        return min(asset.mode, run_mode, key=MODE_ORDER.__getitem__)

    def where(self, *path: str) -> str:
        """``file:line: field`` of a key path, with the file as the user named it, or
        ``--set KEY=VALUE: field`` (``--duration 0.03: field``) when an override gave it: what
        an error about that field starts with."""
        return _at(self.source or str(self.path or "<scenario>"),
                   self.origins if self.origins is not None else _Lines(key_lines(self.text)),
                   tuple(path))

    def resolve(self, relative: str) -> Path:
        """A path written in the scenario, relative to the scenario file."""
        p = Path(relative).expanduser()
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p


_TOP = {"run": RunConfig, "controller": ControllerConfig, "market": MarketConfig}
#: the top-level tables of a scenario, in the order the docs give them
SECTIONS = ("run", "controller", "market", "profiles", "nodes", "checks")


#: an override as given to :func:`parse`: ``KEY=VALUE`` (typed as ``--set KEY=VALUE``), or
#: ``(label, "KEY=VALUE")`` where the user typed something else (``("--duration 0.03",
#: "run.duration_s=0.03")``): errors it causes name it by its label
Override = str | tuple[str, str]


def labelled(item: Override) -> tuple[str, str]:
    """``(label, KEY=VALUE)`` of an override: the label is what the user typed."""
    return item if isinstance(item, tuple) else (f"--set {item}", item)


def override_text(items: Sequence[Override]) -> tuple[str, ...]:
    """The ``KEY=VALUE`` strings of overrides (what a recording keeps)."""
    return tuple(labelled(o)[1] for o in items)


class _Lines:
    """Where each key path of a scenario was given: its line in the file (``file``, from
    :func:`bench.tomlpos.key_lines`), or the override that set it (``sets``: the key path
    an override set -> its label, in the order they were applied)."""

    def __init__(self, file: dict[tuple[str, ...], int],
                 sets: dict[tuple[str, ...], str] | None = None) -> None:
        self.file = file
        self.sets = sets or {}

    def __contains__(self, path: object) -> bool:
        return path in self.file or path in self.sets

    def under(self, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        """The paths overrides set inside the table ``path`` (in the order applied)."""
        n = len(path)
        return [q for q in self.sets if len(q) > n and q[:n] == path] if n else []

    def where(self, path: tuple[str, ...], tables: bool = True) -> int | str | None:
        """What gave ``path``: the override that set it or a table holding it (its label),
        else the line of it or of its nearest defined table in the file.  ``tables``: a
        table an override set a key in is the override's (errors: :func:`parse` gives it
        back to the file when the file alone is wrong the same way); else only a table the
        overrides made is (notes)."""
        for k in range(len(path), 0, -1):  # the value an override set, or one inside it
            if path[:k] in self.sets:
                return self.sets[path[:k]]
        under = self.under(path)
        if under and (tables or path not in self.file):
            return self.sets[under[-1]]
        return line_of(self.file, path)


def _at(source: str, lines: _Lines, path: tuple[str, ...], tables: bool = True) -> str:
    """``file:line: field`` of a key path (the line of its nearest defined prefix), or
    ``--set KEY=VALUE: field`` (the override's label) when the value came from the command
    line."""
    line = lines.where(path, tables)
    where = line if isinstance(line, str) else f"{source}:{line}" if line else source
    return f"{where}: {'.'.join(path) if path else '(top level)'}"


class _Located(ScenarioError):
    """A scenario error about the field at ``path``: its location (:func:`_at`), then
    ``tail`` (``": what is wrong"``)."""

    def __init__(self, text: str, path: tuple[str, ...], tail: str) -> None:
        super().__init__(text)
        self.path = path
        self.tail = tail


def _fail(source: str, lines: _Lines, path: tuple[str, ...], message: str) -> ScenarioError:
    return _Located(f"{_at(source, lines, path)}: {message}", path, f": {message}")


def _note(source: str, lines: _Lines, path: tuple[str, ...], message: str) -> str:
    """A warning's text: at the field's line, or the override that set it."""
    return f"{_at(source, lines, path, tables=False)}: {message}"


def _parameter_error(source: str, lines: dict, exc: ParameterError) -> ScenarioError:
    """Re-address a ``where.key: message`` error from :func:`from_mapping` to a line."""
    text = str(exc)
    dotted, sep, message = text.partition(": ")
    if not sep:
        return _fail(source, lines, (), text)
    path = tuple(p for p in re.split(r"\.|\[(\d+)\]", dotted) if p)
    # "run: duration_s must be positive" is about the field duration_s: at its own line,
    # or at the --set that gave it
    field = re.match(r"([a-z_][a-z0-9_]*) (.+)", message)
    if field and (*path, field.group(1)) in lines:
        path, message = (*path, field.group(1)), field.group(2)
    return _fail(source, lines, path, message)


def parse(text: str, source: str = "<scenario>", path: Path | None = None,
          overrides: Sequence[Override] = (), check_files: bool = True) -> Scenario:
    """Validate scenario ``text``; ``overrides`` are ``--set`` strings ``KEY=VALUE``, or
    ``(label, KEY=VALUE)`` pairs for those the user typed otherwise (``--duration 0.03``):
    an error an override causes names it as typed, one in the file names the file's line
    (``source``, as the user named the file).

    ``check_files=False`` leaves the files it names unchecked: a recording's scenario read
    on another machine, or after its profile files moved, still says what ran.  Checked,
    each asset's parameter sets (with its ``override`` table) and initial conditions are
    read here too, so an error in them names its line or override before anything starts.
    """
    items = [labelled(o) for o in overrides]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"line (\d+)", msg)
        where = f"{source}:{m.group(1)}" if m else source
        raise ScenarioError(f"{where}: not valid TOML: {msg}") from None
    sets: dict[tuple[str, ...], str] = {}
    paths = []
    for label, item in items:
        # an error in an overridden value is the command line's, not the file's
        at = apply_override(doc, item, label)
        sets.pop(at, None)  # the last override of a key is the one that counts
        sets[at] = label
        paths.append(at)
    lines = _Lines(dict(key_lines(text)), sets)
    try:
        return _parse_doc(doc, text, source, path, items, lines, check_files)
    except _Located as exc:
        under = lines.under(exc.path) if exc.path not in lines.sets else []
        if not under or exc.path not in lines.file:
            raise
        raise _blame(exc, under, text, source, path, items, paths, lines,
                     check_files) from None


def _blame(exc: _Located, under: list[tuple[str, ...]], text: str, source: str,
           path: Path | None, items: list[tuple[str, str]], paths: list[tuple[str, ...]],
           lines: _Lines, check_files: bool) -> _Located:
    """An error about a table of the file that overrides set keys in (``under``): the
    last of them without which the scenario is not wrong that way, else the file's own when
    it is wrong that way without them all (as said: the last of them)."""
    def same(rest: list[tuple[str, str]]) -> _Located | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parse(text, source, path, rest, check_files)
        except _Located as again:
            if again.path == exc.path and again.tail == exc.tail:
                return again
        except ScenarioError:
            pass
        return None

    for q in reversed(under):
        if same([o for o, at in zip(items, paths) if at != q]) is None:
            one = _Lines(lines.file, {q: lines.sets[q]})
            return _Located(f"{_at(source, one, exc.path)}{exc.tail}", exc.path, exc.tail)
    return same([o for o, at in zip(items, paths) if at not in under]) or exc


def _parse_doc(doc: dict, text: str, source: str, path: Path | None,
               items: list[tuple[str, str]], lines: _Lines, check_files: bool) -> Scenario:
    """:func:`parse` once the overrides are applied to ``doc``."""
    for key in doc:
        if key not in SECTIONS:
            from twin.params import did_you_mean

            raise _fail(source, lines, (key,),
                        f"unknown section{did_you_mean(key, SECTIONS)}; "
                        f"sections are {', '.join(sorted(SECTIONS))}")
    try:
        parts = {k: from_mapping(cls, doc.get(k, {}), k) for k, cls in _TOP.items()}
        profiles = {}
        for name, p in _table(doc, "profiles", source, lines).items():
            profiles[name] = from_mapping(ProfileConfig, _table(p, ("profiles", name),
                                                                source, lines),
                                          f"profiles.{name}")
        nodes: dict[str, dict[str, AssetConfig]] = {}
        for node, assets in _table(doc, "nodes", source, lines).items():
            _check_name(node, ("nodes", node), source, lines)
            nodes[node] = {}
            for asset, cfg in _table(assets, ("nodes", node), source, lines).items():
                _check_name(asset, ("nodes", node, asset), source, lines)
                raw = _table(cfg, ("nodes", node, asset), source, lines)
                nodes[node][asset] = from_mapping(AssetConfig, raw, f"nodes.{node}.{asset}")
                _check_fields(nodes[node][asset], raw, ("nodes", node, asset), source, lines)
                if raw.get("device") and "mode" not in raw:
                    # an address without a mode: the author most likely meant the device
                    # (the table still picks an emulator's transport and line settings)
                    warnings.warn(ScenarioWarning(_note(
                        source, lines, ("nodes", node, asset, "device"),
                        'the asset is emulated (the default mode): its emulator takes this '
                        'table\'s transport and settings, the device is not opened; set '
                        'mode = "hardware" to run against the device')), stacklevel=2)
    except ParameterError as exc:
        raise _parameter_error(source, lines, exc) from None

    if not nodes:
        raise _fail(source, lines, ("nodes",), "a scenario needs at least one node")
    checks = parse_checks(doc.get("checks", {}), lambda *path: _at(source, lines, path))
    for c in checks:
        node, asset, _ = c.key.split(".")
        if asset not in nodes.get(node, {}):
            raise _fail(source, lines, ("checks", c.key), f"no asset {node}.{asset}")
    scenario = Scenario(run=parts["run"], controller=parts["controller"], nodes=nodes,
                        profiles=profiles, market=parts["market"], path=path, text=text,
                        overrides=override_text(items), checks=checks, source=source,
                        origins=lines)
    _cross_check(scenario, source, lines, check_files)
    if check_files:
        _check_assets(scenario, source, lines)
    if not scenario.run.realtime and any(scenario.effective_mode(c) == "hardware"
                                         for _, _, c in scenario.assets()):
        # a physical device lives on the wall clock: the twin and controller keep its pace
        scenario = dataclasses.replace(
            scenario, run=dataclasses.replace(scenario.run, realtime=True))
    return scenario


def _check_assets(s: Scenario, source: str, lines: _Lines) -> None:
    """Read each asset's parameter sets with its ``override`` (and its emulator's, with
    ``emulator_scale``) and check its initial conditions, as the build will: an error names
    the field's line, or the override that gave it, before anything starts."""
    from bench import build

    cache: dict[Path, Any] = {}
    asked: dict[str, tuple[str, ...]] = {}

    def where(*path: str) -> str:
        text = _at(source, lines, path)
        asked[text] = path
        return text

    for node, name, cfg in s.assets():
        asked.clear()
        try:
            build.asset_params(s, node, name, cfg, where, False, cache)
            if s.effective_mode(cfg) != "twin" and (cfg.emulator_params or cfg.emulator_scale):
                build.asset_params(s, node, name, cfg, where, True, cache)
            if cfg.initial:
                build.check_initial(cfg.kind, cfg.initial, where("nodes", node, name,
                                                                  "initial"))
        except ScenarioError as exc:
            text = str(exc)
            for at in sorted(asked, key=len, reverse=True):  # the field it names
                if text.startswith(at):
                    raise _Located(text, asked[at], text[len(at):]) from None
            raise


def load(path: str | Path, overrides: Sequence[Override] = ()) -> Scenario:
    """Read and validate a scenario file (errors name it as given: ``path``, not resolved)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a text file") from None
    return parse(text, str(path), path.resolve(), overrides)


def _table(doc: Any, key: str | tuple[str, ...], source: str, lines: dict) -> dict:
    path = (key,) if isinstance(key, str) else key
    value = doc.get(key, {}) if isinstance(key, str) else doc
    if not isinstance(value, dict):
        raise _fail(source, lines, path, f"expected a table, got {value!r}")
    return value


def _check_name(name: str, path: tuple[str, ...], source: str, lines: dict) -> None:
    if not _NAME.match(name):
        raise _fail(source, lines, path,
                    "names use letters, digits, '_' and '-' and start with a letter")


#: kinds that have a device (a register map: emulated, hardware or a replayed capture)
DEVICE_KINDS = ("battery", "inverter", "meter", "gpu_rack")
_PARAMETERISED = ("battery", "inverter", "pv", "gpu_rack", "grid")
#: asset fields that only some kinds take (``kind``, ``mode`` and ``tolerance``: every kind;
#: an initial condition's key is checked against the kind by the builder)
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "params": _PARAMETERISED, "emulator_params": _PARAMETERISED,
    "emulator_scale": _PARAMETERISED, "override": _PARAMETERISED,
    "converter": ("battery",), "profile": ("pv", "gpu_rack"), "source": ("inverter",),
    "transport": DEVICE_KINDS, "device": DEVICE_KINDS, "replay_capture": DEVICE_KINDS,
    "faults": DEVICE_KINDS, "initial": _PARAMETERISED,
}
_PARAMETER_FIELDS = ("params", "emulator_params", "emulator_scale", "override")
#: device back-ends that only some kinds may use (the others: any kind with a register map)
BACKEND_KINDS = {"nvml": ("gpu_rack",)}


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _any(kinds: tuple[str, ...]) -> str:
    """``a pv or a gpu_rack``"""
    return _or([_a(k) for k in kinds])


def _or(names: list[str]) -> str:
    """``a, b or c``"""
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


def _check_fields(cfg: AssetConfig, raw: dict, path: tuple[str, ...], source: str,
                  lines: dict) -> None:
    """Refuse the fields an asset's kind ignores, at their line, and bad tolerances."""
    takes = [f.name for f in dataclasses.fields(AssetConfig)
             if cfg.kind in KIND_FIELDS.get(f.name, (cfg.kind,)) and f.name != "kind"]
    for key in raw:
        kinds = KIND_FIELDS.get(key)
        if kinds is not None and cfg.kind not in kinds:
            reason = (" (a meter has no parameters)" if cfg.kind == "meter"
                      and key in _PARAMETER_FIELDS else
                      " (it has no device)" if kinds is DEVICE_KINDS else "")
            raise _fail(source, lines, path + (key,),
                        f"{_a(cfg.kind)} takes no {key}{reason}, only {_any(kinds)} does; "
                        f"{_a(cfg.kind)} takes {', '.join(takes)}")
    backend = cfg.device.get("backend")
    if isinstance(backend, str) and cfg.kind not in BACKEND_KINDS.get(backend, (cfg.kind,)):
        others = [b for b, k in sorted(_BACKENDS_OF.items()) if cfg.kind in k]
        raise _fail(source, lines, path + ("device", "backend"),
                    f"{_a(cfg.kind)} cannot use the {backend} back-end, only "
                    f"{_any(BACKEND_KINDS[backend])} can; {_a(cfg.kind)} uses "
                    f"{_or(others)}")
    for signal, value in cfg.tolerance.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise _fail(source, lines, path + ("tolerance", signal),
                        f"a tolerance is a non-negative number in the signal's unit, "
                        f"not {value!r}")
    if cfg.faults and cfg.mode == "twin":
        warnings.warn(ScenarioWarning(_note(
            source, lines, path + ("faults",),
            'not used: the asset\'s mode is "twin" (no emulator to inject the faults into); '
            'set mode = "emulated" to inject them')), stacklevel=3)


#: back-ends a scenario names, by the kinds that may use them
_BACKENDS_OF = {"modbus_tcp": DEVICE_KINDS, "modbus_rtu": DEVICE_KINDS,
                "serial": DEVICE_KINDS, **BACKEND_KINDS}


def _cross_check(s: Scenario, source: str, lines: dict, check_files: bool = True) -> None:
    """Checks that span sections: profile references, sources, one grid per node."""
    needs_profile = {"pv": "irradiance", "gpu_rack": ("workload", "power")}
    for node, assets in s.nodes.items():
        grids = [a for a, c in assets.items() if c.kind == "grid"]
        if len(grids) > 1:
            raise _fail(source, lines, ("nodes", node, grids[1]),
                        "a node has at most one grid connection")
        #: pv -> the inverter it feeds
        fed_by: dict[str, str] = {}
        for name, cfg in assets.items():
            path = ("nodes", node, name)
            if cfg.kind in needs_profile:
                want = needs_profile[cfg.kind]
                if not cfg.profile:
                    raise _fail(source, lines, path + ("profile",),
                                f"a {cfg.kind} needs a profile of kind {want}")
            if cfg.profile:
                if cfg.profile not in s.profiles:
                    from twin.params import did_you_mean

                    raise _fail(source, lines, path + ("profile",),
                                f"no profile named '{cfg.profile}'"
                                f"{did_you_mean(cfg.profile, s.profiles)}")
                kind = s.profiles[cfg.profile].kind
                want = needs_profile.get(cfg.kind)
                if want and kind not in (want if isinstance(want, tuple) else (want,)):
                    raise _fail(source, lines, path + ("profile",),
                                f"profile '{cfg.profile}' is a {kind} profile; "
                                f"a {cfg.kind} needs {want}")
            if cfg.kind == "inverter":
                if not cfg.source:
                    raise _fail(source, lines, path,
                                "an inverter needs a source: the pv that feeds it (without "
                                "one it produces nothing)")
                if cfg.source not in assets:
                    raise _fail(source, lines, path + ("source",),
                                f"node '{node}' has no asset '{cfg.source}'")
                if assets[cfg.source].kind != "pv":
                    raise _fail(source, lines, path + ("source",),
                                f"'{cfg.source}' is a {assets[cfg.source].kind}, not a pv")
                if cfg.source in fed_by:
                    raise _fail(source, lines, path + ("source",),
                                f"pv '{cfg.source}' already feeds inverter "
                                f"'{fed_by[cfg.source]}'; inverters '{fed_by[cfg.source]}' "
                                f"and '{name}' would count its energy twice")
                fed_by[cfg.source] = name
            if cfg.mode == "hardware" and not cfg.device:
                raise _fail(source, lines, path + ("device",),
                            "a hardware asset needs a device address "
                            "(backend, host/port or serial port)")
        for name, cfg in assets.items():
            if cfg.kind == "pv" and name not in fed_by:
                warnings.warn(ScenarioWarning(_note(
                    source, lines, ("nodes", node, name),
                    "no inverter takes this pv (give one source = "
                    f'"{name}"): its energy reaches nothing')), stacklevel=3)
    used = {c.profile for _, _, c in s.assets()}
    for name, p in s.profiles.items():
        path = ("profiles", name)
        if check_files and p.file and s.path is not None and not s.resolve(p.file).is_file():
            raise _fail(source, lines, path + ("file",),
                        f"no such file: {s.resolve(p.file)}")
        if name not in used:
            why = (f"no asset reads a {p.kind} profile (only a pv's irradiance and a "
                   "gpu_rack's workload or power drive the twin)"
                   if p.kind in ("price", "temperature") else
                   "no asset names it in its profile field")
            warnings.warn(ScenarioWarning(_note(
                source, lines, path, f"not used, so never built or checked: {why}")),
                stacklevel=3)
    if s.market.kind != "none":
        ticks = s.market.interval_s / s.run.dt_s
        if abs(ticks - round(ticks)) > 1e-6:
            raise _fail(source, lines, ("market", "interval_s"),
                        f"{s.market.interval_s} s is not a whole number of ticks of "
                        f"{s.run.dt_s} s")
        if not any(c.kind in ("meter", "grid") for _, _, c in s.assets()):
            raise _fail(source, lines, ("market",), "trading needs a meter or grid asset")
    _check_ports(s, source, lines)


def _valid_line(table: dict[str, Any]) -> bool:
    """Whether a ``modbus_rtu`` device table's line settings are each valid."""
    from firmware_bridge.backends.modbus import validate_rtu_line
    from firmware_bridge.errors import ConfigError

    try:
        validate_rtu_line("", *(table.get(k, v) for k, v in _RTU_LINE.items()))
    except (ConfigError, TypeError):
        return False
    return True


def _given(table: dict[str, Any], key: str, value: Any) -> str:
    """``value`` of ``key`` in a device table, said to be the default where it is not given."""
    return f"{value!r}" if key in table else f"{value!r} (the default)"


#: the line settings of a ``modbus_rtu`` device table that gives none (the back-end's)
_RTU_LINE = {"baudrate": 19200, "parity": "N", "bytesize": 8, "stopbits": 1}


def _check_ports(s: Scenario, source: str, lines: _Lines) -> None:
    """Devices that name one serial port: Modbus RTU devices share its line (RS-485 is
    multi-drop), so they agree on its settings and each has a unit id of its own; a serial
    board has its port to itself.  Assets in the twin open no port and are left out."""
    from firmware_bridge.line import port_key

    first: dict[str, tuple[str, dict[str, Any]]] = {}  # port -> its first asset, its table
    units: dict[tuple[str, int], str] = {}  # (port, unit id) -> the asset that has it
    for node, name, cfg in s.assets():
        table, at, here = cfg.device, ("nodes", node, name, "device"), f"{node}.{name}"
        port = table.get("port")
        if table.get("backend") not in ("modbus_rtu", "serial") or not isinstance(port, str) \
                or s.effective_mode(cfg) == "twin":
            continue
        key = port_key(port)
        if key in first:
            wrong = _shared_port(table, *first[key])
            if wrong is not None:
                raise _fail(source, lines, at + (wrong[0],), wrong[1])
        first.setdefault(key, (here, table))
        unit = table.get("unit", 1)
        if isinstance(unit, int) and units.setdefault((key, unit), here) != here:
            raise _fail(source, lines, at + ("unit",),
                        f"unit {unit} on {_on(table, *first[key])} is already "
                        f"{units[(key, unit)]}'s; the devices on one RTU port each need a "
                        "unit id of their own")


def _shared_port(table: dict[str, Any], other: str, theirs: dict[str, Any]
                 ) -> tuple[str, str] | None:
    """What is wrong with device ``table`` on the port of ``other``'s (``theirs``): the
    field, and why; None when the two may share it."""
    on = _on(table, other, theirs)
    if "serial" in (table["backend"], theirs["backend"]):
        who = "; a serial board" if table["backend"] == "serial" else ", a serial board, which"
        return "port", (f"{on} is already {other}'s{who} has its port to itself (only "
                        "modbus_rtu devices share one, the slaves of an RS-485 line)")
    if not (_valid_line(table) and _valid_line(theirs)):
        return None  # an invalid setting: the back-end's own check says what is allowed
    for setting, default in _RTU_LINE.items():
        mine, its = table.get(setting, default), theirs.get(setting, default)
        if mine != its:
            return setting, (f"{_given(table, setting, mine)} on {on}, where {other} has "
                             f"{_given(theirs, setting, its)}; the devices on one RTU port "
                             "share its line: their baudrate, parity, bytesize and stopbits "
                             "must match")
    return None


def _on(table: dict[str, Any], other: str, theirs: dict[str, Any]) -> str:
    """The port of ``table``, and how ``other`` names it where that is another name."""
    port = table["port"]
    return port if theirs["port"] == port else f"{port} (which {other} names {theirs['port']})"


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax if it parses (numbers, booleans, arrays), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


#: a key part TOML writes bare (any other is quoted)
_BARE = re.compile(r"[A-Za-z0-9_-]+")
#: a quoted key part: a basic string (escapes allowed) or a literal one
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')


def quote_key(name: str) -> str:
    """``name`` as one part of a dotted ``--set`` key: bare where TOML allows it, else in
    double quotes, so a name with dots (``north.battery.p_set_w``, a passthrough option)
    stays one name."""
    if _BARE.fullmatch(name):
        return name
    escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F
                      else "\\" + c if c in '"\\' else c for c in name)
    return f'"{escaped}"'


def split_key(key: str) -> list[str]:
    """The parts of a dotted ``--set`` key, read as TOML reads a dotted key: a quoted part
    (``controller.options."north.battery.p_set_w"``) is one name, dots and all; a bare part
    is the text between dots.  Raises ValueError saying what is wrong."""
    parts: list[str] = []
    i, n = 0, len(key)
    while True:
        while i < n and key[i] in " \t":
            i += 1
        if i < n and key[i] in "\"'":
            m = _QUOTED.match(key, i)
            if m is None:
                raise ValueError(f"unclosed quote in key {key.strip()}")
            try:  # escapes as TOML reads them
                parts.append(tomllib.loads(f"v = {m.group()}")["v"])
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"bad quoted key part {m.group()}: {exc}") from None
            i = m.end()
        else:
            j = i
            while j < n and key[j] not in ".\"'":
                j += 1
            part = key[i:j].strip()
            if not part:
                raise ValueError(f"empty part in key {key.strip()}" if key.strip()
                                 else "empty key")
            if j < n and key[j] in "\"'":
                raise ValueError(f"a quote inside key part {part}{key[j]}...: quote the "
                                 "whole part (a.\"b.c\")")
            parts.append(part)
            i = j
        while i < n and key[i] in " \t":
            i += 1
        if i == n:
            return parts
        if key[i] != ".":
            raise ValueError(f"expected '.' after {quote_key(parts[-1])} in key {key.strip()}")
        i += 1


def split_override(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` split at the first ``=`` outside a quoted key part (raises ValueError
    without one)."""
    i = 0
    while i < len(item):
        m = _QUOTED.match(item, i) if item[i] in "\"'" else None
        if m is not None:
            i = m.end()
            continue
        if item[i] == "=":
            return item[:i], item[i + 1:]
        i += 1
    raise ValueError("expected KEY=VALUE")


def join_key(path: list[str] | tuple[str, ...]) -> str:
    """A key path as a ``--set`` key (each part quoted where it needs it)."""
    return ".".join(quote_key(p) for p in path)


def apply_override(doc: dict, item: str, label: str = "") -> tuple[str, ...]:
    """Apply one ``--set KEY=VALUE`` to the raw document; returns the key path it set.
    Errors start with ``label`` (what the user typed; default ``--set KEY=VALUE``).

    ``run.dt_s=0.01`` and ``controller.options.limit_w=5e4`` set those fields;
    ``NODE.ASSET.KEY=VALUE`` sets an asset field (``north.battery.initial.soc=0.9``), or
    else a parameter override (``north.battery.capacity_ah=300`` and
    ``north.grid.governor.rating_w=0`` land in that asset's ``override`` table);
    ``checks.north.grid.p_w.max=6e4`` sets a check's bound.  A part in quotes is one name,
    as in TOML: ``controller.options."north.battery.p_set_w"=0`` sets the passthrough option
    of that name (unquoted, its dots would make it a table of tables).
    """
    label = label or f"--set {item}"
    try:
        key, raw = split_override(item)
        if not key.strip():
            raise ValueError("expected KEY=VALUE")
        path = split_key(key)
    except ValueError as exc:
        raise ScenarioError(f"{label}: {exc}") from None
    value = parse_value(raw.strip())
    if path[0] == "checks" and len(path) == 5:  # checks.NODE.ASSET.SIGNAL.BOUND
        path = ["checks", ".".join(path[1:4]), path[4]]
    if path[0] not in SECTIONS:
        if len(path) < 3:
            raise ScenarioError(f"{label}: expected SECTION.KEY ({', '.join(SECTIONS)}) "
                                "or NODE.ASSET.KEY")
        node, asset, name = path[:3]
        nodes = doc.get("nodes", {})
        if node not in nodes:
            from twin.params import did_you_mean

            raise ScenarioError(f"{label}: no node '{node}'{did_you_mean(node, nodes)}")
        if asset not in nodes[node]:
            from twin.params import did_you_mean

            raise ScenarioError(f"{label}: node '{node}' has no asset '{asset}'"
                                f"{did_you_mean(asset, nodes[node])}")
        fields = {f.name for f in dataclasses.fields(AssetConfig)}
        path = ["nodes", node, asset] + (path[2:] if name in fields
                                         else ["override", ".".join(path[2:])])
    target = doc
    for i, part in enumerate(path[:-1]):
        nxt = target.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ScenarioError(f"{label}: '{part}' is not a table"
                                f"{_quote_hint(path[:i + 1], path[i + 1:], raw.strip())}")
        target = nxt
    target[path[-1]] = value
    return tuple(path)


def _quote_hint(head: list[str], rest: list[str], raw: str) -> str:
    """For a key that went through a value (``controller.options.a.b`` where option ``a``
    is a number): the quoted key that names the option ``a.b``, which the user more likely
    meant."""
    if len(head) < 3 or head[:2] != ["controller", "options"]:
        return ""
    name = ".".join(head[2:] + rest)
    return (f"; for an option named {name}, quote it as one key: "
            f"controller.options.{quote_key(name)}={raw}")
