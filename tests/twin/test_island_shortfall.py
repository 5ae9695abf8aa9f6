"""An island whose grid-forming battery reaches a limit: what it cannot deliver is load the
node does not serve (or, charging, generation it curtails), never energy from nowhere.

Scenarios (node ``b`` islanded, its battery the grid-forming source, no genset)::

    steady   b: rack replaying a constant 30 kW, battery (nearly empty) dispatched at 30 kW,
                the bus starting in that steady state (nominal frequency throughout)
    empty    b: PV (dim) -> inverter, battery (nearly empty), rack (training); a: a
                grid-connected node with a battery nearly empty too (its grid carries it)
    full     b: PV (bright) -> inverter, battery (nearly full), no rack: the sun has nowhere
                to go
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from twin import params
from twin.battery import LIMIT_SOC_MAX, LIMIT_SOC_MIN
from twin.microgrid import AssetSpec, Microgrid, Series
from twin.workload import synchronous_training

DATA = Path(__file__).resolve().parents[2] / "twin" / "data"
DT = 0.01
T = np.arange(0.0, 60.0, 0.5)
LOAD_W = 30e3


def _load(name: str, **changes: object) -> params.ParamSet:
    p = copy.deepcopy(params.load(DATA / f"{name}.toml"))
    p.params.update(changes)
    return p


#: an island's bus: grid-forming converters of 150 kW, no governed genset
ISLAND_BUS = _load("bus_node_100kva", governor={"rating_w": 0.0},
                   grid_forming={"rating_w": 150e3, "droop_pu": 0.05, "tau_s": 0.05})


def _battery(node: str, soc: float) -> AssetSpec:
    return AssetSpec(node, "battery", "battery", _load("battery_lfp_rack"),
                     _load("converter_battery_100kw"), initial={"soc": soc})


def _pv(node: str, irradiance_w_m2: float) -> list[AssetSpec]:
    sun = Series(T, irradiance_w_m2 * (1.0 + 0.1 * np.sin(T / 3.0)))
    return [AssetSpec(node, "pv", "pv", _load("pv_80kwp"), drive=sun),
            AssetSpec(node, "inverter", "inverter", _load("inverter_pv_abb_trio_60"),
                      source="pv")]


def _island(node: str, **initial: float) -> list[AssetSpec]:
    return [AssetSpec(node, "grid", "grid", ISLAND_BUS, initial={"islanded": 1.0, **initial}),
            AssetSpec(node, "meter", "meter")]


def _scenario(name: str) -> list[AssetSpec]:
    if name == "steady":  # the bus in the steady state of the dispatched load
        return ([_battery("b", 1e-4),
                 AssetSpec("b", "rack", "gpu_rack", drive=Series(T, LOAD_W + 0.0 * T))]
                + _island("b", p_gfm_pu=LOAD_W / 100e3))
    if name == "empty":
        rack = _load("rack_h100_4x8gpu")
        train = synchronous_training(1.0, 0.7, 0.2, stop_s=60.0)
        return (_pv("b", 150.0) + [_battery("b", 1e-4),
                            AssetSpec("b", "rack", "gpu_rack", rack, drive=train)]
                + _island("b")
                + [_battery("a", 2e-4), AssetSpec("a", "rack", "gpu_rack", rack, drive=train),
                   AssetSpec("a", "grid", "grid", _load("bus_node_100kva")),
                   AssetSpec("a", "meter", "meter")])
    return _pv("b", 800.0) + [_battery("b", 0.99995)] + _island("b")


def _run(mg: Microgrid, steps: int, p_set_w: float) -> dict[str, np.ndarray]:
    """Every step's outputs: the twin's signals by ``node.asset.signal`` and the islanded
    bus's own outputs (``bus.<name>``, its grid-forming power among them)."""
    sp = {s[:3]: j for j, s in enumerate(mg.setpoints)}
    for node in ("a", "b"):
        if (node, "battery", "p_set_w") in sp:
            mg.u[sp[node, "battery", "p_set_w"]] = p_set_w
    bus = mg.groups["grid"]
    b = mg.nodes.index("b")
    rows, bus_rows = [], []
    for _ in range(steps):
        mg.advance(DT)
        rows.append(mg.y.copy())
        bus_rows.append(bus.y[b].copy())
    ys, by = np.array(rows), np.array(bus_rows)
    out = {".".join(o[:3]): ys[:, i] for i, o in enumerate(mg.outputs)}
    out.update({f"bus.{n}": by[:, i] for i, n in enumerate(bus.asset.output_names)})
    return out


def _wh(p_w: np.ndarray) -> float:
    """Energy of the powers held over steps 0 .. n-2: what counters read at row n-1. [Wh]"""
    return float(p_w[:-1].sum() * DT / 3600.0)


def _bus_closes(o: dict[str, np.ndarray]) -> None:
    """The bus's counters: e_gen + e_src + e_grid = e_load + e_damp + kinetic energy."""
    e = {k: o[f"bus.{k}"][-1] for k in ("e_gen_wh", "e_src_wh", "e_grid_wh", "e_load_wh",
                                        "e_damp_wh", "e_kinetic_wh")}
    np.testing.assert_allclose(e["e_gen_wh"] + e["e_src_wh"] + e["e_grid_wh"],
                               e["e_load_wh"] + e["e_damp_wh"] + e["e_kinetic_wh"],
                               rtol=1e-9, atol=1e-9)


def test_an_island_whose_battery_runs_empty_sheds_what_it_cannot_serve():
    """In the steady state every term is exact: over the run, what the battery delivered
    plus what was not served is what the rack asked, to 1e-9."""
    mg = Microgrid(_scenario("steady"))
    o = _run(mg, 400, LOAD_W)
    lim = o["b.battery.limited"].astype(int)
    assert not lim[0] & LIMIT_SOC_MIN and lim[-1] & LIMIT_SOC_MIN  # it ran empty on the way
    bat, rack = o["b.battery.p_w"], o["b.rack.p_w"]
    assert bat[-1] < 0.1 * LOAD_W
    # the frequency never moved: the bus's grid-forming source was asked the load throughout
    np.testing.assert_allclose(o["bus.p_gfm_w"], LOAD_W, rtol=1e-12)
    np.testing.assert_allclose(o["b.grid.freq_hz"], 60.0, rtol=1e-12)
    # the unserved power is the battery's shortfall, step by step
    shortfall = o["bus.p_gfm_w"] - bat
    unserved = o["b.grid.p_unserved_w"]
    np.testing.assert_allclose(unserved, shortfall, rtol=1e-9, atol=1e-6)
    assert unserved[-1] > 0.9 * LOAD_W and not o["b.grid.p_curtailed_w"].any()
    # the node's energy: the rack's = the battery's + unserved, and the bus's counters say so
    e = {k: o[f"bus.{k}"][-1] for k in ("e_src_wh", "e_load_wh", "e_unserved_wh",
                                        "e_damp_wh", "e_kinetic_wh", "e_gen_wh")}
    assert e["e_unserved_wh"] > 0.5 * _wh(rack)
    np.testing.assert_allclose(_wh(bat) + _wh(unserved), _wh(rack), rtol=1e-9)
    np.testing.assert_allclose(e["e_src_wh"], _wh(bat), rtol=1e-9)
    np.testing.assert_allclose(e["e_unserved_wh"], _wh(unserved), rtol=1e-9)
    np.testing.assert_allclose(e["e_load_wh"] + e["e_unserved_wh"], _wh(rack), rtol=1e-9)
    assert max(abs(e["e_damp_wh"]), abs(e["e_kinetic_wh"]), abs(e["e_gen_wh"])) < 1e-12
    _bus_closes(o)
    # an island has no grid connection: its meter reads nothing
    assert not o["b.meter.p_w"].any()


@pytest.mark.parametrize(("name", "p_set_w", "flag"), [
    ("empty", 40e3, LIMIT_SOC_MIN), ("full", -40e3, LIMIT_SOC_MAX)])
def test_what_an_islanded_battery_falls_short_by_is_shed(name, p_set_w, flag):
    """Under a changing load (and frequency): unserved (empty) or curtailed (full) is the
    battery's shortfall at every step, and every counter integrates its power.  The bus
    integrates its grid-forming power exactly over each step while the battery delivers its
    value at the step's start (the coupling's zero-order hold), so there the source's energy
    and the battery's agree to that hold's error, not to rounding."""
    mg = Microgrid(_scenario(name), bus_default=_load("bus_node_100kva"))
    o = _run(mg, 400, p_set_w)
    assert int(o["b.battery.limited"][-1]) & flag
    shortfall = o["bus.p_gfm_w"] - o["b.battery.p_w"]
    shed = o["b.grid.p_unserved_w"] - o["b.grid.p_curtailed_w"]
    np.testing.assert_allclose(shed, shortfall, rtol=1e-9, atol=1e-6)
    sign = 1.0 if name == "empty" else -1.0
    assert sign * shed[-1] > 5e3
    assert not (o["b.grid.p_unserved_w"] * o["b.grid.p_curtailed_w"]).any()
    for counter, power in (("e_unserved_wh", "p_unserved_w"),
                           ("e_curtailed_wh", "p_curtailed_w")):
        np.testing.assert_allclose(o[f"bus.{counter}"][-1], _wh(o[f"b.grid.{power}"]),
                                   rtol=1e-9, atol=1e-12)
    # what the PV offered is used or curtailed; what the racks asked is served or not
    e = {k: o[f"bus.{k}"][-1] for k in mg.groups["grid"].asset.output_names if k[:2] == "e_"}
    np.testing.assert_allclose(e["e_gen_wh"] + e["e_curtailed_wh"],
                               _wh(o["b.inverter.p_ac_w"]), rtol=1e-9)
    rack = _wh(o["b.rack.p_w"]) if "b.rack.p_w" in o else 0.0
    np.testing.assert_allclose(e["e_load_wh"] + e["e_unserved_wh"], rack, rtol=1e-9,
                               atol=1e-12)
    _bus_closes(o)
    # the source's energy is the battery's, to the zero-order hold's error: about half a
    # step of the change of the grid-forming power over the run, within one step of its
    # largest; the shortfall's energy (the error without the shedding) is far more
    one_step_wh = np.abs(o["bus.p_gfm_w"]).max() * DT / 3600.0
    assert abs(e["e_src_wh"] - _wh(o["b.battery.p_w"])) < one_step_wh
    assert abs(_wh(shed)) > 20.0 * one_step_wh


def test_a_grid_connected_battery_s_shortfall_is_still_carried_by_its_grid():
    mg = Microgrid(_scenario("empty"), bus_default=_load("bus_node_100kva"))
    o = _run(mg, 300, 40e3)
    assert int(o["a.battery.limited"][-1]) & LIMIT_SOC_MIN
    assert not o["a.grid.p_unserved_w"].any()
    expected = o["a.rack.p_w"] - o["a.battery.p_w"]
    np.testing.assert_allclose(o["a.meter.p_w"], expected, rtol=1e-9, atol=1e-6)
