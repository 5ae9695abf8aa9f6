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
                from twin.rack import racks_from_specs as rack_factory  # noqa: N813
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
        self._bat_sp = {}
        for j, (kind, i, col) in enumerate(self._sp_map):
            if kind == "battery":
                self._bat_sp[(i, setpoints[j][2])] = j

    # -- stepping -----------------------------------------------------------------------

    def _apply_setpoints(self) -> None:
        u = self.u
        for j, (kind, i, col) in enumerate(self._sp_map):
            if col >= 0:
                v = u[j]
                g = self.groups[kind]
                g.u[i, col] = g.u0[i, col] if np.isnan(v) else v

    def _run(self, g: _Group, dt: float) -> None:
        if self.method == "exact":
            g.x, g.y = g.asset.advance(self.t, g.x, g.u, dt)
        else:
            w = g.asset.hold(self.t, g.x, g.u, dt)
            g.y = g.asset.outputs(self.t, g.x, w)
            g.x = step_scipy(g.asset, self.t, g.x, w, dt)

    def advance(self, dt: float) -> None:
        """Step every asset over ``[t, t + dt]`` with the setpoints in :attr:`u` held."""
        self._apply_setpoints()
        t = self.t
        nn = len(self.nodes)
        p_load = np.zeros(nn)
        p_gen = np.zeros(nn)
        groups = self.groups
        freq = groups["grid"].y[:, _col(groups["grid"].asset, "freq_hz")] \
            if self._k else None
        pv = groups.get("pv")
        if pv is not None:
            ui = _in(pv.asset, "irradiance_w_m2")
            cache: dict[int, float] = {}
            for i, s in enumerate(pv.specs):
                key = id(s.drive)
                if key not in cache:
                    cache[key] = s.drive(t) if s.drive is not None else 0.0
                pv.u[i, ui] = cache[key]
            self._run(pv, dt)
        inv = groups.get("inverter")
        if inv is not None:
            a = inv.asset
            if pv is not None:
                has = self._inv_src >= 0
                src = self._inv_src[has]
                inv.u[has, _in(a, "p_dc_avail_w")] = pv.y[src, _col(pv.asset, "p_dc_w")]
                inv.u[has, _in(a, "v_dc_v")] = pv.y[src, _col(pv.asset, "v_dc_v")]
            if freq is not None:
                inv.u[:, _in(a, "freq_hz")] = freq[inv.node]
            self._run(inv, dt)
            np.add.at(p_gen, inv.node, inv.y[:, _col(a, "p_ac_w")])
        rack = groups.get("gpu_rack")
        if rack is not None:
            self._run(rack, dt)
            np.add.at(p_load, rack.node, rack.y[:, _col(rack.asset, "p_w")])
        bus = groups["grid"]
        islanded = bus.u[:, _in(bus.asset, "islanded")] > 0.5
        bat = groups.get("battery")
        if bat is not None:
            bat_isl = islanded[self._bat_node]
            self._battery_setpoints()
            # grid-following batteries first: they are generation the bus sees
            conv = groups["converter"]
            self._run(conv, dt)
            p_ac = conv.y[:, _col(conv.asset, "p_ac_w")].copy()
            p_dc = conv.y[:, _col(conv.asset, "p_dc_w")].copy()
            np.add.at(p_gen, self._bat_node[~bat_isl], p_ac[~bat_isl])
        bus.u[:, _in(bus.asset, "p_load_w")] = p_load
        bus.u[:, _in(bus.asset, "p_gen_w")] = p_gen
        if bat is not None:
            gfm = np.zeros(nn)
            np.add.at(gfm, self._bat_node[bat_isl], self._bat_pset[bat_isl])
            bus.u[:, _in(bus.asset, "p_gfm_set_w")] = gfm
        self._run(bus, dt)
        if bat is not None:
            if bat_isl.any():
                # islanded: the grid-forming batteries deliver what the bus asks of them,
                # shared in proportion to their ratings
                gfm_w = bus.y[:, _col(bus.asset, "p_gfm_w")]
                share = self._bat_rating * bat_isl
                tot = np.zeros(nn)
                np.add.at(tot, self._bat_node, share)
                frac = np.divide(share, tot[self._bat_node], out=np.zeros_like(share),
                                 where=tot[self._bat_node] > 0)
                from twin.inverter import converter_losses

                p_ac[bat_isl] = (gfm_w[self._bat_node] * frac)[bat_isl]
                for i in np.flatnonzero(bat_isl):
                    loss = converter_losses(p_ac[i], conv.asset.params[i].losses)
                    p_dc[i] = p_ac[i] + loss
            p_dc *= self._bat_connected
            p_ac *= self._bat_connected
            bat.u[:, _in(bat.asset, "power_w")] = p_dc
            self._run(bat, dt)
            p_cells = bat.y[:, _col(bat.asset, "p_w")]
            # a battery that cannot deliver what the converter draws: the AC side is short
            self._bat_p_ac = p_ac - (p_dc - p_cells)
            self._bat_p_dc = p_cells
            if (~bat_isl).any():
                short = np.zeros(nn)
                np.add.at(short, self._bat_node[~bat_isl], (p_dc - p_cells)[~bat_isl])
                # the bus balanced with the converter's AC power; the shortfall comes from
                # the grid connection in the same step (held power, so it is exact)
                self._grid_correction = short
            else:
                self._grid_correction = np.zeros(nn)
        else:
            self._grid_correction = np.zeros(nn)
        p_grid = bus.y[:, _col(bus.asset, "p_w")] + self._grid_correction
        self._p_grid = p_grid
        self._e_import_wh += np.clip(p_grid, 0, None) * dt / S_PER_H
        self._e_export_wh += np.clip(-p_grid, 0, None) * dt / S_PER_H
        self._scatter()
        self._k += 1
        self.t = self._k * dt

    def _battery_setpoints(self) -> None:
        """Battery setpoints act on the converter (``p_set_w``) and the contactor."""
        conv = self.groups["converter"]
        n = conv.asset.n
        pset = np.zeros(n)
        for i in range(n):
            j = self._bat_sp.get((i, "p_set_w"))
            v = self.u[j] if j is not None else np.nan
            pset[i] = 0.0 if np.isnan(v) else v
            j = self._bat_sp.get((i, "connect"))
            c = self.u[j] if j is not None else np.nan
            self._bat_connected[i] = 1.0 if np.isnan(c) or c > 0.5 else 0.0
        self._bat_pset = pset * self._bat_connected
        conv.u[:, _in(conv.asset, "p_set_w")] = self._bat_pset

    def _scatter(self) -> None:
        y = self.y
        for kind, g in self.groups.items():
            if kind == "converter" or not len(g.cols):
                continue
            y[g.dest.ravel()] = g.y[:, g.cols].ravel()
        bat = self.groups.get("battery")
        if bat is not None:
            cap = self._bat_capacity_wh
            extra = np.column_stack([self._bat_p_ac, self._bat_p_dc, self._bat_connected,
                                     cap, np.ones(len(cap))])
            y[self._bat_dest.ravel()] = extra.ravel()
        if len(self._meters):
            bus = self.groups["grid"]
            nodes = self._meter_node
            v_nom = 0.0
            extra = np.column_stack([
                self._p_grid[nodes], np.zeros(len(nodes)), np.full(len(nodes), v_nom),
                bus.y[nodes, _col(bus.asset, "freq_hz")], self._e_import_wh[nodes],
                self._e_export_wh[nodes]])
            y[self._meter_dest.ravel()] = extra.ravel()

    def _first_outputs(self) -> None:
        """Outputs before the first step: a step of zero length from the initial state."""
        saved = copy.deepcopy((self.groups, self._e_import_wh, self._e_export_wh))
        method, self.method = self.method, "exact"
        self.advance(1e-9)
        self.method = method
        self.groups, self._e_import_wh, self._e_export_wh = saved
        self._k = 0
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
