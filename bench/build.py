"""From a validated scenario to a :class:`~bench.plan.Plan`: parameters, twin, devices.

Parameter sets are looked up by name in ``twin/data`` (``params = "battery_lfp_rack"``) or
as a path relative to the scenario.  The twin uses ``params`` with the asset's ``override``
table; an emulator uses ``emulator_params`` (default: the same) with the same overrides and
then ``emulator_scale`` factors, so the emulated plant can differ from the twin exactly as a
physical kit would.  Errors in any of it name the scenario line.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.checks import Check, unknown_signals
from bench.errors import RecordingError, ScenarioError, ScenarioWarning
from bench.plan import DEVICE_MAPS, Plan
from bench.profiles import build_profile
from bench.scenario import AssetConfig, Scenario
from twin import params as tparams
from twin.errors import TwinError
from twin.microgrid import AssetSpec, Microgrid

DATA = Path(__file__).resolve().parents[1] / "twin" / "data"

#: parameter set used when an asset names none
DEFAULT_PARAMS = {"battery": "battery_lfp_rack", "inverter": "inverter_pv_abb_trio_60",
                  "pv": "pv_80kwp", "grid": "bus_node_100kva", "gpu_rack": "rack_h100_8gpu"}
DEFAULT_CONVERTER = "converter_battery_100kw"


def shipped(name: str) -> Path:
    """Path of a parameter set shipped with gridloop."""
    return DATA / f"{name}.toml"


def shipped_names() -> list[str]:
    return sorted(p.stem for p in DATA.glob("*.toml"))


def load_params(s: Scenario, ref: str, where: str,
                cache: dict[Path, tparams.ParamSet] | None = None) -> tparams.ParamSet:
    """A parameter set by shipped name or path (read once per ``cache``)."""
    path = shipped(ref)
    if not path.is_file():
        path = s.resolve(ref)
    if not path.is_file():
        raise ScenarioError(f"{where}: no parameter set '{ref}' (neither shipped"
                            f"{tparams.did_you_mean(ref, shipped_names())} nor a file)")
    path = path.resolve()
    if cache is not None and path in cache:
        return cache[path]
    try:
        pset = tparams.load(path)
    except TwinError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    if cache is not None:
        cache[path] = pset
    return pset


def _set_dotted(params: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    target = params
    for p in parts[:-1]:
        target = target.setdefault(p, {})
    target[parts[-1]] = value


def _get_dotted(params: dict[str, Any], key: str) -> Any:
    target: Any = params
    for p in key.split("."):
        if not isinstance(target, dict) or p not in target:
            raise KeyError(key)
        target = target[p]
    return target


def with_overrides(pset: tparams.ParamSet, override: Mapping[str, Any],
                   scale: Mapping[str, float] = ()) -> tparams.ParamSet:
    """A copy of ``pset`` with parameter overrides, then multiplicative factors (``pset``
    itself when there are none: assets sharing a parameter set share one object, so the twin
    packs their parameters once)."""
    if not override and not scale:
        return pset
    out = copy.deepcopy(pset)
    for key, value in override.items():
        _set_dotted(out.params, key, value)
    for key, factor in dict(scale).items():
        value = _get_dotted(out.params, key)
        if isinstance(value, dict) and "values" in value:
            value = dict(value, values=(np.asarray(value["values"]) * factor).tolist())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value) * factor
        else:
            raise KeyError(key)
        _set_dotted(out.params, key, value)
    if override or scale:
        out.meta = dict(out.meta, source=f"{out.meta.get('source', '')} (modified by the "
                        f"scenario: override {dict(override)}, scale {dict(scale)})")
    return out


def asset_params(s: Scenario, node: str, name: str, cfg: AssetConfig, where: Callable[..., str],
                  emulator: bool, cache: dict[Path, tparams.ParamSet]
                  ) -> tuple[tparams.ParamSet | None, tparams.ParamSet | None]:
    """(params, converter params) of one asset, for the twin or its emulator."""
    if cfg.kind == "meter":
        return None, None
    base = ("nodes", node, name)
    ref = (cfg.emulator_params if emulator and cfg.emulator_params else cfg.params) \
        or DEFAULT_PARAMS[cfg.kind]
    field = "emulator_params" if emulator and cfg.emulator_params else "params"
    pset = load_params(s, ref, where(*base, field), cache)
    try:
        pset = with_overrides(pset, cfg.override, cfg.emulator_scale if emulator else {})
    except KeyError as exc:
        key = exc.args[0]
        table = "emulator_scale" if key in cfg.emulator_scale else "override"
        raise ScenarioError(f"{where(*base, table, key)}: '{key}' is not a numeric parameter "
                            f"of {ref}{tparams.did_you_mean(key, pset.params)}") from None
    conv = None
    if cfg.kind == "battery":
        conv = load_params(s, cfg.converter or DEFAULT_CONVERTER, where(*base, "converter"),
                           cache)
    _validate(pset, cfg, where(*base, "override" if cfg.override else field))
    return pset, conv


def _validate(pset: tparams.ParamSet, cfg: AssetConfig, where: str) -> None:
    """Build the model's parameters once, so a bad override names the scenario line."""
    try:
        if cfg.kind == "battery":
            from twin.battery import params_from_set

            params_from_set(pset)
        elif cfg.kind == "inverter":
            from twin.inverter import InverterParams

            InverterParams.from_params(pset)
        elif cfg.kind == "pv":
            from twin.pv import PVParams

            PVParams.from_params(pset)
        elif cfg.kind == "grid":
            from twin.bus import BusParams

            BusParams.from_params(pset)
        elif cfg.kind == "gpu_rack":
            from twin.rack import RackParams

            if pset.kind != "gpu_rack":
                raise TwinError(f"{pset.path}: meta.kind is '{pset.kind}', expected "
                                f"'gpu_rack'")
            tparams.from_mapping(RackParams, pset.params, "params")
    except TwinError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def asset_specs(s: Scenario, emulator: bool, nodes: list[str] | None = None,
                drives: dict[str, Any] | None = None) -> list[AssetSpec]:
    """Twin asset specs of the scenario (or of some nodes, with emulator parameters)."""
    where = s.where
    drives = drives if drives is not None else {}
    cache: dict[Path, tparams.ParamSet] = {}
    specs = []
    for node, name, cfg in s.assets():
        if nodes is not None and node not in nodes:
            continue
        pset, conv = asset_params(s, node, name, cfg, where, emulator, cache)
        if cfg.initial:
            check_initial(cfg.kind, cfg.initial, where("nodes", node, name, "initial"))
        drive = None
        if cfg.profile:
            if cfg.profile not in drives:
                drives[cfg.profile] = build_profile(s, cfg.profile)
            drive = drives[cfg.profile]
        specs.append(AssetSpec(node, name, cfg.kind, pset, conv, drive, cfg.source,
                               dict(cfg.initial)))
    return specs


def check_initial(kind: str, initial: dict[str, Any], where: str) -> None:
    """An asset's initial conditions, checked where the scenario gives them
    (:func:`twin.microgrid.check_initial`), as a scenario error."""
    from twin.microgrid import check_initial as check

    try:
        check(kind, initial, where)
    except TwinError as exc:
        raise ScenarioError(str(exc)) from None


def build_twin(s: Scenario, emulator: bool = False, nodes: list[str] | None = None,
               drives: dict[str, Any] | None = None) -> Microgrid:
    specs = asset_specs(s, emulator, nodes, drives)
    try:
        return Microgrid(specs, method=s.run.method,
                         bus_default=tparams.load(shipped(DEFAULT_PARAMS["grid"])))
    except TwinError as exc:
        raise ScenarioError(f"{s.path or '<scenario>'}: {exc}") from None


def _map_options(kind: str, pset: tparams.ParamSet | None, conv: tparams.ParamSet | None,
                 mg: Microgrid, node: str, asset: str) -> dict[str, float]:
    """Ratings a register map needs: its scale factors follow them, so values fit."""
    if kind == "battery" and pset is not None and conv is not None:
        from twin.battery import params_from_set

        pack, _ = params_from_set(pset)
        v_nom = pack.cells_series * float(np.mean(pack.cell.ocv_v.values))
        return {"rating_w": float(conv.params.get("p_max_w", conv.params.get("s_max_va"))),
                "capacity_wh": float(mg.y[mg.index(node, asset, "capacity_wh")]),
                "v_dc_nom_v": v_nom}
    if kind == "inverter" and pset is not None:
        sandia = pset.params.get("sandia", {})
        return {"rating_w": float(pset.params.get("p_max_w", pset.params.get("s_max_va"))),
                "v_nom_v": float(pset.params.get("v_nom_v", 400.0)),
                "v_dc_nom_v": float(sandia.get("vdco_v", 800.0))}
    if kind == "gpu_rack" and pset is not None:
        return {"rating_w": float(pset.params.get("psu_rated_w", 100_000.0))}
    if kind == "meter":
        g = [sp for sp in mg.specs if sp.node == node and sp.kind == "grid"]
        limit = 150_000.0
        if g and g[0].params is not None:
            limit = float(max(g[0].params.params.get("import_max_w", limit),
                              g[0].params.params.get("export_max_w", limit)))
        return {"rating_w": limit,
                "v_nom_v": float(mg.y[mg.index(node, asset, "v_ac_v")])}
    return {}


def build_plan(s: Scenario, ledger: str | None = None) -> Plan:
    """Everything a run of ``s`` needs; devices are opened when the run starts."""
    drives: dict[str, Any] = {}
    twin = build_twin(s, drives=drives)
    kinds = {(n, a): c.kind for n, a, c in s.assets()}
    params: dict[tuple[str, str], dict[str, Any]] = {}
    for spec in twin.specs:
        p: dict[str, Any] = {}
        if spec.kind == "battery" and spec.converter is not None:
            p["p_rated_w"] = float(spec.converter.params.get("p_max_w", 0.0))
        if spec.kind == "grid" and spec.params is not None:
            from twin.bus import BusParams

            p["f_nom_hz"] = float(spec.params.params.get("f_nom_hz", BusParams.f_nom_hz))
        params[(spec.node, spec.name)] = p
    plan = Plan(s, twin, kinds, params)
    _attach_devices(s, plan, drives)
    if s.checks:  # a check on a signal the run will not record: said now, not after it
        bad = unknown_signals(s.checks, plan.obs_index, plan.twin_keys())
        if bad:
            key, what = bad[0]
            raise ScenarioError(f"{s.where('checks', key)}: {what}")
    # a tolerance is a residual band: on a misspelt signal it would bound nothing, silently
    bands = {Check(f"{n}.{a}.{sig}", "residual", v): ("nodes", n, a, "tolerance", sig)
             for n, a, c in s.assets() for sig, v in c.tolerance.items()}
    bad = unknown_signals(bands, plan.obs_index, plan.twin_keys())
    if bad:
        key, what = bad[0]
        at = next(p for c, p in bands.items() if c.key == key)
        raise ScenarioError(f"{s.where(*at)}: {what}")
    if s.market.kind != "none":
        from bench.market import MarketLink

        plan.market = MarketLink(s, plan, ledger)
    return plan


def emulated_assets(s: Scenario) -> list[tuple[str, str, AssetConfig]]:
    """Assets that get an emulator in this run: emulated, with a register map."""
    return [(n, a, c) for n, a, c in s.assets()
            if s.effective_mode(c) == "emulated" and c.kind in DEVICE_MAPS]


def build_emulators(s: Scenario, drives: dict[str, Any] | None = None,
                    host: str = "127.0.0.1", port_base: int | None = None,
                    on_event: Any = None) -> Any:
    """An EmulatorHost serving every emulated asset of ``s`` from twin-backed plants (one
    per node, with the emulators' own parameters), or None when nothing is emulated."""
    from firmware_bridge.emulators.host import EmulatorHost

    plants, specs = emulator_specs(s, drives)
    if not specs:
        return None
    return EmulatorHost(plants, specs, host=host, port_base=port_base, on_event=on_event)


def emulator_specs(s: Scenario, drives: dict[str, Any] | None = None
                   ) -> tuple[dict[str, Any], list[Any]]:
    """The plants (one per node) and device specs of every emulated asset of ``s``."""
    from firmware_bridge.emulators.host import DeviceSpec
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.faults import FaultCard
    from firmware_bridge.plants import TwinPlant

    assets = emulated_assets(s)
    if not assets:
        return {}, []
    drives = drives if drives is not None else {}
    where = s.where
    nodes = list(dict.fromkeys(n for n, _, _ in assets))
    plants = {node: TwinPlant(build_twin(s, emulator=True, nodes=[node], drives=drives))
              for node in nodes}
    specs = []
    for node, name, cfg in assets:
        base = ("nodes", node, name)
        mg = plants[node].mg
        spec = next(sp for sp in mg.specs if sp.name == name)
        options = _map_options(cfg.kind, spec.params, spec.converter, mg, node, name)
        if len(cfg.faults) > 1:
            raise ScenarioError(f"{where(*base, 'faults')}: one fault card per device "
                                f"(combine the fields into one table)")
        card = None
        if cfg.faults:
            try:
                card = FaultCard.from_mapping(cfg.faults[0], where=where(*base, "faults", "0"))
            except BridgeError as exc:
                raise ScenarioError(str(exc)) from None
        replay: tuple = ()
        if cfg.replay_capture:
            replay = _recorded_capture(s, cfg.replay_capture, f"{node}.{name}",
                                       where(*base, "replay_capture"))
        specs.append(DeviceSpec(node, name, DEVICE_MAPS[cfg.kind], transport=cfg.transport,
                                map_options=options, fault=card, replay=replay))
    return plants, specs


def _recorded_capture(s: Scenario, ref: str, device: str, where: str) -> tuple:
    """The transactions of ``device`` captured in recording ``ref``."""
    from bench.recording import open_h5
    from firmware_bridge.capture import read_capture
    from firmware_bridge.errors import BridgeError

    path = s.resolve(ref)
    try:
        with open_h5(path) as f:
            capture = read_capture(f)
    except (OSError, BridgeError, RecordingError) as exc:
        said = str(exc).removeprefix(f"{path}: ")  # the file is named once
        raise ScenarioError(f"{where}: cannot replay {path}: {said}") from None
    if device not in capture.devices:
        raise ScenarioError(f"{where}: {path} captured no device '{device}' (it has "
                            f"{', '.join(capture.devices) or 'none'})")
    return tuple(capture.transactions(device))


def _attach_devices(s: Scenario, plan: Plan, drives: dict[str, Any]) -> None:
    """Emulators for emulated assets, client devices for emulated and hardware assets."""
    from firmware_bridge.maps import get_map

    if s.run.capture:
        from firmware_bridge.capture import Capture

        plan.capture = Capture()

    deadline = s.run.device_deadline_s
    # the run's emulators live in a child process (bench/emulation.py) built from the same
    # scenario; here we only need their devices' maps and transports (the device tables')
    from bench.emulation import specs as emulated_specs

    _, device_specs, _ = emulated_specs(s, drives)
    specs = {(d.node, d.asset): d for d in device_specs}
    for node, name, cfg in s.assets():
        mode = s.effective_mode(cfg)
        if mode == "twin" or cfg.kind not in DEVICE_MAPS:
            continue
        if mode == "emulated":
            spec = specs[(node, name)]
            regmap = get_map(spec.map, **spec.map_options)
            plan.add_device(node, name, _Pending(name, regmap.signals, regmap.setpoints,
                                                 spec.map, dict(spec.map_options)), deadline)
            modbus = spec.transport in ("tcp", "rtu")
        else:
            # at the file's line, or the --set that gave the table or a key of it
            device, declared = _hardware_device(cfg, s.where("nodes", node, name, "device"),
                                                plan.capture, f"{node}.{name}")
            # a serial board names its points only when it answers (HELLO), after the
            # recording's layout is fixed: until then it has the ones declared in its
            # device table, or its asset kind's (those the emulated board announces)
            regmap = get_map(DEVICE_MAPS[cfg.kind])
            plan.add_device(node, name, device, deadline,
                            declared or device.signals or regmap.signals,
                            device.setpoints or regmap.setpoints)
            modbus = cfg.device.get("backend", "").startswith("modbus")
        if plan.capture is not None and modbus:
            plan.capture_devices.append(f"{node}.{name}")
        elif plan.capture is not None:  # said, not left out without a word
            import warnings

            warnings.warn(ScenarioWarning(
                f"{s.where('run', 'capture')}: {node}.{name} is not captured: capture records "
                "Modbus transactions, and its device is a serial board (a replay_capture of "
                "it will find none)"), stacklevel=2)
    if specs:
        plan.emulators = _Emulators(s, plan)


def _hardware_device(cfg: AssetConfig, where: str, capture: Any,
                     name: str) -> tuple[Any, tuple[str, ...]]:
    """The device of a hardware asset, and the signals its table declares (serial only)."""
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.registry import open_device

    options = dict(cfg.device)
    backend = options.pop("backend", None)
    if not backend:
        raise ScenarioError(f"{where}: the device table needs a 'backend' "
                            f"(modbus_tcp, modbus_rtu, serial, nvml)")
    declared = options.pop("signals", None)
    if declared is not None:
        if backend != "serial":
            raise ScenarioError(f"{where}.signals: only a serial board's signals are "
                                f"declared (the {backend} back-end knows its own)")
        if not isinstance(declared, list) or not declared \
                or not all(isinstance(n, str) and n for n in declared):
            raise ScenarioError(f"{where}.signals: a list of signal names, e.g. "
                                f'["p_w", "soc"], got {declared!r}')
    try:
        check_device_options(backend, options, where)
    except BridgeError as exc:  # an unknown back-end, or one whose library is missing
        raise ScenarioError(f"{where}.backend: {exc}") from None
    options.setdefault("name", name)
    if backend.startswith("modbus"):
        options.setdefault("map", DEVICE_MAPS[cfg.kind])
        if capture is not None:
            options["capture"] = capture
    try:
        return open_device(backend, **options), tuple(declared or ())
    except (BridgeError, TypeError, ValueError) as exc:
        raise ScenarioError(f"{where}: {exc}") from None


#: constructor arguments of a device the bench fills in itself, never a device table
_BENCH_ARGS = frozenset({"self", "name", "capture", "address_label", "on_event"})


def device_options(backend: str) -> tuple[list[str], list[str]] | None:
    """(every option, the required ones) a device table of ``backend`` takes, read from its
    class's constructors (a ``**kwargs`` passes on to the base class's); None when some
    constructor takes any keyword, so nothing can be called unknown."""
    from firmware_bridge.registry import backend_class

    names: list[str] = []
    required: list[str] = []
    for klass in backend_class(backend).__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in _BENCH_ARGS \
                    or p.name in names:
                continue
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, required
    return None


def check_unopened_table(device: Mapping[str, Any], where: str) -> None:
    """A device table the run does not open (its asset runs emulated), checked all the
    same: a misspelt option would pass CI and fail on the lab's day.  A back-end not
    installed here (a lab's plugin, NVML) is left to the run that opens it."""
    from firmware_bridge.errors import BridgeError

    backend = device.get("backend")
    if not isinstance(backend, str) or not backend:
        return
    options = {k: v for k, v in device.items() if k not in ("backend", "signals")}
    try:
        check_device_options(backend, options, where)
    except BridgeError:
        return


def check_device_options(backend: str, options: Mapping[str, Any], where: str) -> None:
    """A device table's keys against what its back-end takes: a misspelt one is named with a
    did-you-mean and the back-end's options (not a constructor's TypeError), a missing one
    by name."""
    known = device_options(backend)
    if known is None:
        return
    names, required = known
    # a serial board's table may declare its signals (the bench reads them, not the device)
    extra = ["signals"] if backend == "serial" else []
    listed = f"options of backend {backend} are {', '.join(['backend', *names, *extra])}"
    for key in options:
        if key not in names:
            raise ScenarioError(f"{where}: unknown device option {key!r}"
                                f"{tparams.did_you_mean(key, names)}; {listed}")
    missing = [n for n in required if n not in options]
    if missing:
        raise ScenarioError(f"{where}: backend {backend} needs "
                            f"{' and '.join(repr(n) for n in missing)}; {listed}")


class _Pending:
    """A client device whose address is known once its emulator listens."""

    def __init__(self, asset: str, signals: tuple[str, ...], setpoints: tuple[str, ...],
                 map_name: str, map_options: dict[str, float]) -> None:
        self.asset = asset
        self.signals = signals
        self.setpoints = setpoints
        self.map_name = map_name
        self.map_options = map_options


#: what the messages of an emulated device's client call its address: the emulator's TCP
#: port and pseudo-terminal are other ones each run, and a run's events are the same each
#: run (a hardware device's messages keep its real address)
EMULATOR_TCP_LABEL = "its emulator"
EMULATOR_PTY_LABEL = "its emulator's pty"


class _Emulators:
    """The run's emulators, in a process of their own, stepped on the bench's clock; their
    fault events are recorded; client devices connect once the servers listen.

    The events of the emulators arrive as their servers answered, the devices' requests
    interleaved as the concurrent reads completed: each batch (a tick's, received while the
    plants advance) is recorded in the scenario's device order, each device's own events in
    the order they happened, so two runs of a scenario record the same ``/events``."""

    def __init__(self, s: Scenario, plan: Plan) -> None:
        from bench.emulation import EmulatorProcess

        self.plan = plan
        self._events: list[tuple[float, str, str]] = []
        self.process = EmulatorProcess(s, s.overrides, self._event)

    def _event(self, t: float, kind: str, message: str) -> None:
        self._events.append((t, kind, message))

    def _record_events(self) -> None:
        """Record the events received since the last time (faults injected by emulators
        land in /events), sorted by time, then device (scenario order), stably."""
        events, self._events = self._events, []
        rec = self.plan._rec
        if rec is None or not events:
            return
        order = {f"{slot.node}/{slot.asset}": i for i, slot in enumerate(self.plan.devices)}

        def key(event: tuple[float, str, str]) -> tuple[float, int]:
            # an emulator's message starts with its device, ``node/asset: ``
            device = event[2].partition(":")[0]
            return event[0], order.get(device, len(order))

        for t, kind, message in sorted(events, key=key):
            rec.event(t, kind, message)

    async def start(self) -> None:
        from firmware_bridge.registry import open_device

        try:
            where = {(d["node"], d["asset"]): d for d in self.process.start()}
        finally:
            self._record_events()
        capture = {"capture": self.plan.capture} if self.plan.capture is not None else {}
        for slot in self.plan.devices:
            pending = slot.device
            if not isinstance(pending, _Pending):
                continue
            d = where[(slot.node, slot.asset)]
            name = f"{slot.node}.{slot.asset}"
            if d["transport"] == "tcp":
                slot.device = open_device("modbus_tcp", host=d["host"], port=d["port"],
                                          unit=d["unit"], map=pending.map_name, name=name,
                                          address_label=EMULATOR_TCP_LABEL, **capture)
            elif d["transport"] == "rtu":
                slot.device = open_device("modbus_rtu", port=d["serial_port"], unit=d["unit"],
                                          map=pending.map_name, name=name,
                                          address_label=EMULATOR_PTY_LABEL, **capture)
            else:
                slot.device = open_device("serial", port=d["serial_port"], name=name,
                                          address_label=EMULATOR_PTY_LABEL)

    def advance(self, dt: float) -> None:
        try:
            self.process.advance(dt)
        finally:
            self._record_events()

    def prepare(self, dt: float) -> None:
        try:
            self.process.prepare(dt)
        finally:
            self._record_events()

    async def stop(self) -> None:
        try:
            self.process.stop()
        finally:
            self._record_events()
