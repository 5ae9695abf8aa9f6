"""Nodes of a microgrid as one twin: assets of every node grouped by kind, stepped together.

Each node has a bus (with its grid connection, or islanded) and any of: PV arrays feeding PV
inverters, batteries behind bidirectional converters, GPU racks, a meter on the grid
connection.  Assets of one kind across all nodes form one vectorised
:class:`~twin.stepper.Asset` (1,000 nodes are one call per kind per step).  One step, with
every input held over it (zero-order hold):

1. PV arrays turn the irradiance at ``t`` into the DC power their inverters are offered;
2. PV inverters deliver AC power (setpoints: ``w_max_lim_pct``, ``p_set_w``, ``q_set_var``);
3. GPU racks draw what their workload asks at ``t``, within their power cap;
4. grid-connected batteries: the converter follows ``p_set_w``, the cells deliver its DC
   power (a battery that cannot - empty, full, at a limit - delivers what it can, and the AC
   side carries the shortfall so energy is never created);
5. each bus closes its node's balance through the grid connection, within import and export
   limits, or, islanded, turns the imbalance into frequency (swing equation);
6. islanded batteries are the grid-forming source: they deliver the bus's ``p_gfm_w``.

:attr:`Microgrid.y` holds the outputs of the step just taken (powers held over it, states
at its start): what a device sampled at the next tick, before that tick's setpoints land,
reports.  :attr:`Microgrid.u` holds the setpoints (NaN: none given, the model's default).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.errors import TwinError
from twin.params import ParamSet
from twin.stepper import METHODS, Asset, step_scipy
from twin.units import S_PER_H

KINDS = ("battery", "inverter", "pv", "gpu_rack", "grid", "meter")


@dataclass(frozen=True)
class Series:
    """A piecewise-linear exogenous profile ``value(t)`` (irradiance, air temperature)."""

    t_s: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if len(self.t_s) != len(self.values) or len(self.t_s) == 0:
            raise TwinError("series: t_s and values must be non-empty and of equal length")
        if np.any(np.diff(self.t_s) <= 0):
            raise TwinError("series: t_s must be strictly increasing")

    def __call__(self, t: float) -> float:
        return float(np.interp(t, self.t_s, self.values))


@dataclass(frozen=True)
class AssetSpec:
    """One asset of one node, as the twin needs it.

    ``params`` is the asset's parameter set (none for a meter, a view of its node's grid
    connection); ``converter`` the bidirectional converter of a battery; ``drive`` the
    exogenous input: a :class:`Series` of irradiance for PV, a workload for a GPU rack;
    ``source`` the PV array feeding an inverter; ``initial`` initial-condition overrides.
    """

    node: str
    name: str
    kind: str
    params: ParamSet | None = None
    converter: ParamSet | None = None
    drive: Any = None
    source: str = ""
    initial: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Group:
    """One vectorised asset over the units of one kind, and where its columns go."""

    asset: Asset
    specs: list[AssetSpec]
    x: np.ndarray
    u: np.ndarray
    y: np.ndarray
    #: recorded output columns of the asset, and the flat positions they fill in Microgrid.y
    cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    dest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    #: the node of each unit (index into Microgrid.nodes)
    node: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    #: the inputs a unit takes when no setpoint is given
    u0: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def _col(asset: Asset, name: str) -> int:
    return asset.output_names.index(name)


def _in(asset: Asset, name: str) -> int:
    return asset.input_names.index(name)


def _set_initial(asset: Asset, x: np.ndarray, specs: Sequence[AssetSpec]) -> None:
    """Per-unit initial conditions: the parameter file's ``[initial]``, then the spec's."""
    for i, s in enumerate(specs):
        for src in ((s.params.initial if s.params else {}), s.initial):
            for key, value in src.items():
                if key in asset.state_names and isinstance(value, (int, float)):
                    x[i, asset.state_names.index(key)] = float(value)


class Microgrid:
    """The twin of a set of nodes.

    Parameters
    ----------
    specs : sequence of AssetSpec
        Every asset of every node; a node without a ``grid`` asset gets an unconstrained
        grid connection.
    method : {"exact", "scipy"}
        How linear parts are integrated (see :mod:`twin.stepper`).
    bus_default : ParamSet, optional
        Bus parameters for nodes whose grid asset names none.
    rack_factory : callable, optional
        ``rack_factory(specs) -> Asset`` building the GPU racks (see :mod:`twin.rack`).
    """

    def __init__(self, specs: Sequence[AssetSpec], method: str = "exact",
                 bus_default: ParamSet | None = None,
                 rack_factory: Callable[[list[AssetSpec]], Asset] | None = None) -> None:
        if method not in METHODS:
            raise TwinError(f"unknown stepper method '{method}'; choose one of {METHODS}")
        self.method = method
        self.t = 0.0
        self._k = 0
        self._t_base = 0.0
        self._dt = 0.0
        self.specs = list(specs)
        seen = set()
        for s in self.specs:
            if s.kind not in KINDS:
                raise TwinError(f"{s.node}.{s.name}: unknown asset kind '{s.kind}'")
            if (s.node, s.name) in seen:
                raise TwinError(f"{s.node}.{s.name}: defined twice")
            seen.add((s.node, s.name))
        self.nodes = list(dict.fromkeys(s.node for s in self.specs))
        self._node_index = {n: i for i, n in enumerate(self.nodes)}
        by_kind: dict[str, list[AssetSpec]] = {k: [] for k in KINDS}
        for s in self.specs:
            by_kind[s.kind].append(s)
        self._by_kind = by_kind
        self._build(by_kind, bus_default, rack_factory)
        self._layout()
        self._first_outputs()

    # -- construction -------------------------------------------------------------------

    def _group(self, asset: Asset, specs: list[AssetSpec]) -> _Group:
        x = asset.initial_state()
        _set_initial(asset, x, specs)
        u = asset.default_inputs()
        node = np.array([self._node_index[s.node] for s in specs], dtype=int)
        return _Group(asset, specs, x, u, np.zeros((asset.n, len(asset.output_names))),
                      node=node, u0=u.copy())

    def _build(self, by_kind: dict[str, list[AssetSpec]], bus_default: ParamSet | None,
               rack_factory: Callable[[list[AssetSpec]], Asset] | None) -> None:
        from twin.battery import Battery, BatteryInitial, params_from_set
        from twin.bus import Bus, BusParams
        from twin.inverter import Inverter, InverterParams
        from twin.pv import PV, PVParams

        self.groups: dict[str, _Group] = {}
        pv_specs = by_kind["pv"]
        if pv_specs:
            self.groups["pv"] = self._group(
                PV([PVParams.from_params(self._need(s)) for s in pv_specs]), pv_specs)
        inv_specs = by_kind["inverter"]
        if inv_specs:
            self.groups["inverter"] = self._group(
                Inverter([InverterParams.from_params(self._need(s)) for s in inv_specs]),
                inv_specs)
            pv_pos = {(s.node, s.name): i for i, s in enumerate(pv_specs)}
            self._inv_src = np.array([pv_pos.get((s.node, s.source), -1) for s in inv_specs],
                                     dtype=int)
            for s, j in zip(inv_specs, self._inv_src):
                if s.source and j < 0:
                    raise TwinError(f"{s.node}.{s.name}: no pv '{s.source}' on node {s.node}")
        bat_specs = by_kind["battery"]
        if bat_specs:
            packs, inits = [], []
            for s in bat_specs:
                pack, init = params_from_set(self._need(s))
                fields = {k: v for k, v in s.initial.items()
                          if k in BatteryInitial.__dataclass_fields__}
                if fields:
                    from dataclasses import replace

                    init = replace(init, **fields)
                packs.append(pack)
                inits.append(init)
            self.groups["battery"] = self._group(
                Battery(packs, mode="power", initial=inits), bat_specs)
            conv = []
            for s in bat_specs:
                if s.converter is None:
                    raise TwinError(f"{s.node}.{s.name}: a battery needs converter parameters")
                conv.append(InverterParams.from_params(s.converter))
            self.groups["converter"] = self._group(Inverter(conv), bat_specs)
            self._bat_node = self.groups["battery"].node
            self._bat_connected = np.ones(len(bat_specs))
            self._bat_rating = np.array([p.p_rated_w for p in conv])
            # nominal energy: capacity times the mean OCV of the SOC table
            self._bat_capacity_wh = np.array([
                pack.capacity_ah * pack.cells_series * float(np.mean(pack.cell.ocv_v.values))
                for pack in packs])
        rack_specs = by_kind["gpu_rack"]
        if rack_specs:
            if rack_factory is None:
                from twin.rack import racks_from_specs as rack_factory
            self.groups["gpu_rack"] = self._group(rack_factory(rack_specs), rack_specs)
        # one bus per node, in node order
        grid_of = {s.node: s for s in by_kind["grid"]}
        bus_params, bus_specs = [], []
        for node in self.nodes:
            g = grid_of.get(node)
            pset = (g.params if g is not None and g.params is not None else bus_default)
            if pset is None:
                raise TwinError(f"node {node}: no bus parameters (give its grid asset params)")
            bus_params.append(BusParams.from_params(pset))
            bus_specs.append(g if g is not None else AssetSpec(node, "grid", "grid", pset))
        self.groups["grid"] = self._group(Bus(bus_params), bus_specs)
        self._islanded0 = np.array([float(s.initial.get("islanded", 0.0)) for s in bus_specs])
        grid = self.groups["grid"]
        grid.u[:, _in(grid.asset, "islanded")] = self._islanded0
        grid.u0[:, _in(grid.asset, "islanded")] = self._islanded0
        self._meters = by_kind["meter"]
        # nominal AC voltage of each node (meters report it): its converters' and inverters'
        v = {}
        for kind in ("converter", "inverter"):
            g = self.groups.get(kind)
            if g is not None:
                for s, p in zip(g.specs, g.asset.params):
                    v.setdefault(s.node, p.v_nom_v)
        # meters report the line-to-neutral voltage (SunSpec 203 PhV) of the nominal
        # line-to-line voltage
        self._v_nom = np.array([v.get(n, 400.0) for n in self.nodes]) / np.sqrt(3.0)
        self._e_import_wh = np.zeros(len(self.nodes))
        self._e_export_wh = np.zeros(len(self.nodes))
        self.islanded = {n: bool(v) for n, v in zip(self.nodes, self._islanded0)}

    @staticmethod
    def _need(s: AssetSpec) -> ParamSet:
        if s.params is None:
            raise TwinError(f"{s.node}.{s.name}: a {s.kind} needs a parameter set")
        return s.params

    # -- signals and setpoints ----------------------------------------------------------

    #: outputs recorded per kind: (name in the recording, asset output name)
    RECORDED = {
        "pv": ("p_dc_w", "irradiance_w_m2", "temp_cell_c", "v_dc_v"),
        "inverter": ("p_ac_w", "q_var", "p_dc_w", "efficiency", "energy_wh", "w_max_lim_pct",
                     "curtailed"),
        "battery": ("voltage_v", "current_a", "soc", "temp_cell_c", "temp_jig_c", "limited"),
        "grid": ("p_w", "freq_hz", "rocof_hz_per_s", "p_unserved_w", "p_curtailed_w",
                 "islanded"),
    }
    #: setpoints per kind: (name, unit, asset input name or "" for node-level handling)
    SETPOINTS = {
        "inverter": (("w_max_lim_pct", "%", "w_max_lim_pct"), ("p_set_w", "W", "p_set_w"),
                     ("q_set_var", "var", "q_set_var")),
        "battery": (("p_set_w", "W", ""), ("connect", "", "")),
        "gpu_rack": (("power_cap_w", "W", "power_cap_w"),),
        "grid": (("islanded", "", "islanded"),),
    }
    UNITS = {"p_dc_w": "W", "irradiance_w_m2": "W/m2", "temp_cell_c": "degC", "v_dc_v": "V",
             "p_ac_w": "W", "q_var": "var", "efficiency": "", "energy_wh": "Wh",
             "w_max_lim_pct": "%", "curtailed": "", "voltage_v": "V", "current_a": "A",
             "soc": "", "temp_jig_c": "degC", "limited": "", "p_w": "W", "freq_hz": "Hz",
             "rocof_hz_per_s": "Hz/s", "p_unserved_w": "W", "p_curtailed_w": "W",
             "islanded": "", "temp_c": "degC", "power_cap_w": "W", "phase": "",
             "connected": "", "capacity_wh": "Wh", "soh": "", "v_ac_v": "V",
             "e_import_wh": "Wh", "e_export_wh": "Wh"}

    def _layout(self) -> None:
        outputs: list[tuple[str, str, str, str]] = []
        for kind, names in self.RECORDED.items():
            g = self.groups.get(kind)
            if g is None:
                continue
            cols = np.array([_col(g.asset, n) for n in names], dtype=int)
            g.cols = cols
            start = len(outputs)
            for s in g.specs:
                for n in names:
                    outputs.append((s.node, s.name, n, self.UNITS.get(n, "")))
            g.dest = np.arange(start, len(outputs)).reshape(len(g.specs), len(names))
        # racks: the rack asset says which of its outputs are signals
        g = self.groups.get("gpu_rack")
        if g is not None:
            names = tuple(getattr(g.asset, "recorded_names", g.asset.output_names))
            g.cols = np.array([_col(g.asset, n) for n in names], dtype=int)
            start = len(outputs)
            for s in g.specs:
                for n in names:
                    outputs.append((s.node, s.name, n, self.UNITS.get(n, "")))
            g.dest = np.arange(start, len(outputs)).reshape(len(g.specs), len(names))
        # node-level signals computed here: battery AC power and state, meters
        self._bat_extra = ("p_w", "p_dc_w", "connected", "capacity_wh", "soh")
        if "battery" in self.groups:
            start = len(outputs)
            for s in self.groups["battery"].specs:
                for n in self._bat_extra:
                    outputs.append((s.node, s.name, n, self.UNITS.get(n, "")))
            self._bat_dest = np.arange(start, len(outputs)).reshape(-1, len(self._bat_extra))
        # a PV inverter's DC voltage is its array's (SunSpec 103 DCV)
        if "inverter" in self.groups:
            start = len(outputs)
            for s in self.groups["inverter"].specs:
                outputs.append((s.node, s.name, "v_dc_v", "V"))
            self._inv_vdc_dest = np.arange(start, len(outputs))
        self._meter_extra = ("p_w", "q_var", "v_ac_v", "freq_hz", "e_import_wh", "e_export_wh")
        start = len(outputs)
        for s in self._meters:
            for n in self._meter_extra:
                outputs.append((s.node, s.name, n, self.UNITS.get(n, "")))
        self._meter_dest = np.arange(start, len(outputs)).reshape(-1, len(self._meter_extra))
        self._meter_node = np.array([self._node_index[s.node] for s in self._meters], dtype=int)
        self.outputs = outputs
        self.y = np.full(len(outputs), np.nan)

        setpoints: list[tuple[str, str, str, str]] = []
        self._sp_map: list[tuple[str, int, int]] = []  # (group kind, unit, input col or -k)
        for kind, names in self.SETPOINTS.items():
            g = self.groups.get(kind)
            if g is None:
                continue
            for i, s in enumerate(g.specs):
                if kind == "grid" and s not in self._by_kind["grid"]:
                    continue  # implicit grid connection: not a controllable asset
                for name, unit, inp in names:
                    col = _in(g.asset, inp) if inp else -1 - len(setpoints)
                    setpoints.append((s.node, s.name, name, unit))
                    self._sp_map.append((kind, i, col))
        self.setpoints = setpoints
        self.u = np.full(len(setpoints), np.nan)
        # setpoints that are asset inputs: per group, (units, input columns, positions in u)
        self._sp_inputs = []
        for kind in self.SETPOINTS:
            rows = [(i, col, j) for j, (k, i, col) in enumerate(self._sp_map)
                    if k == kind and col >= 0]
            if rows:
                r = np.array(rows, dtype=int)
                self._sp_inputs.append((self.groups[kind], r[:, 0], r[:, 1], r[:, 2]))
        # battery setpoints, handled here: position in u of each battery's p_set_w, connect
        if "battery" in self.groups:
            nb = self.groups["battery"].asset.n
            self._bat_pset_j = np.full(nb, -1)
            self._bat_conn_j = np.full(nb, -1)
            for j, (kind, i, _) in enumerate(self._sp_map):
                if kind == "battery":
                    target = self._bat_pset_j if setpoints[j][2] == "p_set_w" else \
                        self._bat_conn_j
                    target[i] = j
            self._bat_pset = np.zeros(nb)
            self._bat_p_ac = np.zeros(nb)
            self._bat_p_dc = np.zeros(nb)
        self._columns()

    def _columns(self) -> None:
        """Column numbers used every step, looked up once."""
        g = self.groups
        self._c = c = {}
        if "pv" in g:
            a = g["pv"].asset
            c["pv_irr"], c["pv_pdc"], c["pv_vdc"] = (_in(a, "irradiance_w_m2"),
                                                    _col(a, "p_dc_w"), _col(a, "v_dc_v"))
        if "inverter" in g:
            a = g["inverter"].asset
            c["inv_pav"], c["inv_vdc"], c["inv_f"], c["inv_pac"] = (
                _in(a, "p_dc_avail_w"), _in(a, "v_dc_v"), _in(a, "freq_hz"), _col(a, "p_ac_w"))
            self._inv_has_src = self._inv_src >= 0
            self._inv_src_idx = self._inv_src[self._inv_has_src]
        if "gpu_rack" in g:
            c["rack_p"] = _col(g["gpu_rack"].asset, "p_w")
        if "battery" in g:
            conv, bat = g["converter"].asset, g["battery"].asset
            c["conv_pset"], c["conv_pac"], c["conv_pdc"] = (
                _in(conv, "p_set_w"), _col(conv, "p_ac_w"), _col(conv, "p_dc_w"))
            c["bat_pw_in"], c["bat_pw"] = _in(bat, "power_w"), _col(bat, "p_w")
        a = g["grid"].asset
        c.update(bus_isl=_in(a, "islanded"), bus_load=_in(a, "p_load_w"),
                 bus_gen=_in(a, "p_gen_w"), bus_gfm_set=_in(a, "p_gfm_set_w"),
                 bus_p=_col(a, "p_w"), bus_f=_col(a, "freq_hz"), bus_gfm=_col(a, "p_gfm_w"))

    # -- stepping -----------------------------------------------------------------------

    def _apply_setpoints(self) -> None:
        u = self.u
        for g, units, cols, js in self._sp_inputs:
            v = u[js]
            g.u[units, cols] = np.where(np.isnan(v), g.u0[units, cols], v)

    def _run(self, g: _Group, dt: float) -> None:
        if self.method == "exact":
            g.x, g.y = g.asset.advance(self.t, g.x, g.u, dt)
        else:
            w = g.asset.hold(self.t, g.x, g.u, dt)
            g.y = g.asset.outputs(self.t, g.x, w)
            g.x = step_scipy(g.asset, self.t, g.x, w, dt)

    def _node_sum(self, node: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(node, weights=values, minlength=len(self.nodes))

    def advance(self, dt: float) -> None:
        """Step every asset over ``[t, t + dt]`` with the setpoints in :attr:`u` held."""
        self._apply_setpoints()
        t = self.t
        c = self._c
        groups = self.groups
        nn = len(self.nodes)
        bus = groups["grid"]
        freq = bus.y[:, c["bus_f"]] if self.t > 0 else None
        p_gen = np.zeros(nn)
        p_load = np.zeros(nn)
        pv = groups.get("pv")
        if pv is not None:
            cache: dict[int, float] = {}
            for i, s in enumerate(pv.specs):
                key = id(s.drive)
                if key not in cache:
                    cache[key] = s.drive(t) if s.drive is not None else 0.0
                pv.u[i, c["pv_irr"]] = cache[key]
            self._run(pv, dt)
        inv = groups.get("inverter")
        if inv is not None:
            if pv is not None:
                has, src = self._inv_has_src, self._inv_src_idx
                inv.u[has, c["inv_pav"]] = pv.y[src, c["pv_pdc"]]
                inv.u[has, c["inv_vdc"]] = pv.y[src, c["pv_vdc"]]
            if freq is not None:
                inv.u[:, c["inv_f"]] = freq[inv.node]
            self._run(inv, dt)
            p_gen += self._node_sum(inv.node, inv.y[:, c["inv_pac"]])
        rack = groups.get("gpu_rack")
        if rack is not None:
            self._run(rack, dt)
            p_load += self._node_sum(rack.node, rack.y[:, c["rack_p"]])
        islanded = bus.u[:, c["bus_isl"]] > 0.5
        bat = groups.get("battery")
        shortfall = None
        if bat is not None:
            conv = groups["converter"]
            bat_isl = islanded[self._bat_node]
            self._battery_setpoints()
            conv.u[:, c["conv_pset"]] = self._bat_pset
            self._run(conv, dt)
            p_ac = conv.y[:, c["conv_pac"]].copy()
            p_dc = conv.y[:, c["conv_pdc"]].copy()
            follow = ~bat_isl
            p_gen += self._node_sum(self._bat_node[follow], p_ac[follow])
            bus.u[:, c["bus_gfm_set"]] = self._node_sum(self._bat_node[bat_isl],
                                                        self._bat_pset[bat_isl])
        bus.u[:, c["bus_load"]] = p_load
        bus.u[:, c["bus_gen"]] = p_gen
        self._run(bus, dt)
        if bat is not None:
            if bat_isl.any():
                self._grid_forming(bat_isl, p_ac, p_dc)
            p_dc *= self._bat_connected
            p_ac *= self._bat_connected
            bat.u[:, c["bat_pw_in"]] = p_dc
            self._run(bat, dt)
            p_cells = bat.y[:, c["bat_pw"]]
            # a battery that cannot deliver what its converter draws: the AC side is short
            # by the difference, which the grid connection carries in the same step
            short = p_dc - p_cells
            self._bat_p_ac = p_ac - short
            self._bat_p_dc = p_cells
            shortfall = self._node_sum(self._bat_node[follow], short[follow])
        p_grid = bus.y[:, c["bus_p"]]
        if shortfall is not None:
            p_grid = p_grid + shortfall
        self._p_grid = p_grid
        self._e_import_wh += np.maximum(p_grid, 0.0) * (dt / S_PER_H)
        self._e_export_wh += np.maximum(-p_grid, 0.0) * (dt / S_PER_H)
        self._scatter()
        self._tick(dt)

    def _tick(self, dt: float) -> None:
        """``t = t_base + k dt`` while ``dt`` stays the same (no accumulated rounding)."""
        if dt != self._dt:
            self._t_base, self._k, self._dt = self.t, 0, dt
        self._k += 1
        self.t = self._t_base + self._k * dt

    def _grid_forming(self, bat_isl: np.ndarray, p_ac: np.ndarray, p_dc: np.ndarray) -> None:
        """Islanded batteries deliver the bus's grid-forming power, shared by rating."""
        from twin.inverter import converter_losses

        bus = self.groups["grid"]
        conv = self.groups["converter"]
        gfm_w = bus.y[:, self._c["bus_gfm"]]
        share = self._bat_rating * bat_isl
        total = self._node_sum(self._bat_node, share)[self._bat_node]
        frac = np.divide(share, total, out=np.zeros_like(share), where=total > 0)
        for i in np.flatnonzero(bat_isl):
            p_ac[i] = gfm_w[self._bat_node[i]] * frac[i]
            p_dc[i] = p_ac[i] + converter_losses(p_ac[i], conv.asset.params[i].losses)

    def _battery_setpoints(self) -> None:
        """Battery setpoints act on the converter (``p_set_w``) and the contactor."""
        u = self.u
        has = self._bat_pset_j >= 0
        pset = np.zeros(len(has))
        pset[has] = np.nan_to_num(u[self._bat_pset_j[has]], nan=0.0)
        conn = np.ones(len(has))
        hc = self._bat_conn_j >= 0
        cv = u[self._bat_conn_j[hc]]
        conn[hc] = np.where(np.isnan(cv) | (cv > 0.5), 1.0, 0.0)
        self._bat_connected = conn
        self._bat_pset = pset * conn

    def _scatter(self) -> None:
        y = self.y
        for kind, g in self.groups.items():
            if kind == "converter" or not len(g.cols):
                continue
            y[g.dest] = g.y[:, g.cols]
        if "battery" in self.groups:
            d = self._bat_dest
            y[d[:, 0]] = self._bat_p_ac
            y[d[:, 1]] = self._bat_p_dc
            y[d[:, 2]] = self._bat_connected
            y[d[:, 3]] = self._bat_capacity_wh
            y[d[:, 4]] = 1.0
        if "inverter" in self.groups:
            y[self._inv_vdc_dest] = self.groups["inverter"].u[:, self._c["inv_vdc"]]
        if len(self._meters):
            nodes = self._meter_node
            d = self._meter_dest
            y[d[:, 0]] = self._p_grid[nodes]
            y[d[:, 1]] = 0.0
            y[d[:, 2]] = self._v_nom[nodes]
            y[d[:, 3]] = self.groups["grid"].y[nodes, self._c["bus_f"]]
            y[d[:, 4]] = self._e_import_wh[nodes]
            y[d[:, 5]] = self._e_export_wh[nodes]

    def _first_outputs(self) -> None:
        """Outputs before the first step: a step of zero length from the initial state."""
        saved = copy.deepcopy((self.groups, self._e_import_wh, self._e_export_wh))
        method, self.method = self.method, "exact"
        self.advance(1e-9)
        self.method = method
        self.groups, self._e_import_wh, self._e_export_wh = saved
        self._k, self._t_base, self._dt = 0, 0.0, 0.0
        self.t = 0.0

    # -- forecasts ----------------------------------------------------------------------

    def copy(self) -> Microgrid:
        """An independent copy (for forecasts that must not disturb the run)."""
        return copy.deepcopy(self)

    def index(self, node: str, asset: str, signal: str) -> int:
        for i, (n, a, s, _) in enumerate(self.outputs):
            if (n, a, s) == (node, asset, signal):
                return i
        raise TwinError(f"no twin signal {node}.{asset}.{signal}")
