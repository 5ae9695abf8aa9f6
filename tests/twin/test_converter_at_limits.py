"""A battery's converter when its cells cannot deliver what it asks (empty, full, at a limit):
it converts what the cells deliver, and loses what that flow costs by its own loss model,
not the loss of the transfer it was commanded.  Grid-connected its grid carries the AC power
it falls short by; islanded the node sheds it.

Scenarios::

    one       a: battery (converter_battery_100kw: 300 W + 1 % + 1e-7 P^2), meter
    island    b: islanded, grid-forming battery (empty), rack replaying a constant 30 kW
    limits    a: PV -> inverter, battery nearly empty, rack (trace), meter;
              b: battery nearly full, rack (trace), meter;
              c: islanded, grid-forming battery nearly empty, rack (trace), meter
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from twin import params
from twin.battery import LIMIT_SOC_MAX, LIMIT_SOC_MIN
from twin.inverter import InverterParams, converter_ac_power, converter_losses
from twin.microgrid import AssetSpec, Microgrid, Series

DATA = Path(__file__).resolve().parents[2] / "twin" / "data"
SHIPPED = {name: params.load(DATA / f"{name}.toml") for name in (
    "pv_80kwp", "inverter_pv_abb_trio_60", "battery_lfp_rack", "converter_battery_100kw",
    "bus_node_100kva")}
LOSSES = InverterParams.from_params(SHIPPED["converter_battery_100kw"]).losses
#: what an idle converter draws from its bus to feed its losses when no DC power flows:
#: its standby loss, and the loss of passing that power (303.04 W)
IDLE_W = -float(converter_ac_power(0.0, LOSSES))
T = np.arange(0.0, 600.0, 0.5)
LOAD_W = 30e3
#: every way a microgrid steps: fused exact, exact group by group, solve_ivp
METHODS = {"fused": {}, "groups": {"fused": False}, "scipy": {"method": "scipy"}}


def _island_bus() -> params.ParamSet:
    p = copy.deepcopy(SHIPPED["bus_node_100kva"])
    p.params.update(governor={"rating_w": 0.0},
                    grid_forming={"rating_w": 150e3, "droop_pu": 0.05, "tau_s": 0.05})
    return p


def _battery(node: str, soc: float) -> AssetSpec:
    return AssetSpec(node, "battery", "battery", SHIPPED["battery_lfp_rack"],
                     SHIPPED["converter_battery_100kw"], initial={"soc": soc})


def _rack(node: str, p_w: float) -> AssetSpec:
    return AssetSpec(node, "rack", "gpu_rack", drive=Series(T, p_w + 1e3 * np.sin(T)))


def _one(soc: float, **kw: object) -> Microgrid:
    return Microgrid([_battery("a", soc), AssetSpec("a", "meter", "meter")],
                     bus_default=SHIPPED["bus_node_100kva"], **kw)


def _island(soc: float, **kw: object) -> Microgrid:
    """The bus in the steady state of the dispatched load (nominal frequency throughout)."""
    return Microgrid([_battery("b", soc),
                      AssetSpec("b", "rack", "gpu_rack", drive=Series(T, LOAD_W + 0.0 * T)),
                      AssetSpec("b", "grid", "grid", _island_bus(),
                                initial={"islanded": 1.0, "p_gfm_pu": LOAD_W / 100e3}),
                      AssetSpec("b", "meter", "meter")], **kw)


def _limits(**kw: object) -> Microgrid:
    sun = Series(T, 300.0 + 100.0 * np.sin(T / 3.0))
    specs = [AssetSpec("a", "pv", "pv", SHIPPED["pv_80kwp"], drive=sun),
             AssetSpec("a", "inverter", "inverter", SHIPPED["inverter_pv_abb_trio_60"],
                       source="pv"),
             _battery("a", 2e-4), _rack("a", 30e3), AssetSpec("a", "meter", "meter"),
             _battery("b", 0.9998), _rack("b", 20e3), AssetSpec("b", "meter", "meter"),
             _battery("c", 2e-4), _rack("c", LOAD_W),
             AssetSpec("c", "grid", "grid", _island_bus(), initial={"islanded": 1.0}),
             AssetSpec("c", "meter", "meter")]
    return Microgrid(specs, bus_default=SHIPPED["bus_node_100kva"], **kw)


def _set(mg: Microgrid, node: str, name: str, value: float) -> None:
    mg.u[mg.setpoints.index((node, "battery", name, "W" if name == "p_set_w" else ""))] = value


def _get(mg: Microgrid, node: str, asset: str, signal: str) -> float:
    return float(mg.y[mg.index(node, asset, signal)])


def _run(mg: Microgrid, steps: int, dt: float) -> np.ndarray:
    ys = []
    for _ in range(steps):
        mg.advance(dt)
        ys.append(mg.y.copy())
    return np.array(ys)


def _sig(mg: Microgrid, ys: np.ndarray, node: str, asset: str, signal: str) -> np.ndarray:
    return ys[:, mg.index(node, asset, signal)]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("soc", "p_set_w", "flag"), [
    (0.0, 50e3, LIMIT_SOC_MIN), (0.0, 10e3, LIMIT_SOC_MIN), (0.0, 0.0, LIMIT_SOC_MIN),
    (1.0, -50e3, LIMIT_SOC_MAX), (1.0, -10e3, LIMIT_SOC_MAX)])
def test_a_battery_that_cannot_move_power_costs_its_bus_the_idle_converter_alone(
        soc, p_set_w, flag, method):
    """Empty and told to discharge, or full and told to charge: no DC power flows, and the
    bus feeds the converter's standby loss (and the loss of passing it), whatever the
    command.  It cost the loss of the commanded transfer: 1,050 W for 50 kW."""
    mg = _one(soc, **METHODS[method])
    _set(mg, "a", "p_set_w", p_set_w)
    for _ in range(10):
        mg.advance(1.0)
    assert int(_get(mg, "a", "battery", "limited")) & flag
    assert _get(mg, "a", "battery", "p_dc_w") == 0.0
    p_w = _get(mg, "a", "battery", "p_w")
    assert p_w == pytest.approx(-IDLE_W, rel=1e-12)
    # the loss is the loss model's at that flow, and little more than the standby loss
    assert -p_w == pytest.approx(float(converter_losses(p_w, LOSSES)), rel=1e-12)
    assert LOSSES.standby_w < IDLE_W < 1.011 * LOSSES.standby_w
    # the grid carries it, and the meter bills exactly that
    assert _get(mg, "a", "meter", "p_w") == pytest.approx(IDLE_W, rel=1e-12)
    assert _get(mg, "a", "meter", "e_import_wh") == pytest.approx(10 * IDLE_W / 3600.0,
                                                                  rel=1e-12)
    assert _get(mg, "a", "meter", "e_export_wh") == 0.0


@pytest.mark.parametrize("method", ["fused", "groups"])
@pytest.mark.parametrize("dt", [3600.0, 36000.0])
def test_a_partly_limited_battery_s_converter_loses_what_flows(dt, method):
    """Told to discharge 50 kW over a step longer than its charge lasts, the cells deliver
    part of it: the converter loses what that flow costs (about 360 W on 5.5 kW), not the
    1,050 W of 50 kW."""
    mg = _one(0.5, **METHODS[method])
    _set(mg, "a", "p_set_w", 50e3)
    for _ in range(2 if dt == 3600.0 else 1):  # an hour of 50 kW first, then what is left
        mg.advance(dt)
    assert int(_get(mg, "a", "battery", "limited")) & LIMIT_SOC_MIN
    p_dc, p_w = _get(mg, "a", "battery", "p_dc_w"), _get(mg, "a", "battery", "p_w")
    assert 1e3 < p_dc < 20e3
    assert p_w == pytest.approx(float(converter_ac_power(p_dc, LOSSES)), rel=1e-12)
    loss = p_dc - p_w
    assert loss == pytest.approx(float(converter_losses(p_w, LOSSES)), rel=1e-9)
    assert loss < 400.0
    assert _get(mg, "a", "meter", "p_w") == pytest.approx(-p_w, rel=1e-12)


@pytest.mark.parametrize("method", list(METHODS))
def test_an_island_whose_grid_forming_battery_is_empty_sheds_the_load_and_the_idle_loss(
        method):
    """The empty grid-forming battery delivers nothing: its converter draws its idle loss
    from the bus, and the node sheds the rack's load and that loss (it shed the loss of
    the full 30 kW share, 690 W, before).  The bus's counters close with it."""
    mg = _island(0.0, **METHODS[method])
    _set(mg, "b", "p_set_w", LOAD_W)
    bus = mg.groups["grid"]
    ys, gfm = [], []
    for _ in range(200):
        mg.advance(0.01)
        ys.append(mg.y.copy())
        gfm.append(bus.asset.output_dict(bus.y)["p_gfm_w"][0])
    ys, gfm = np.array(ys), np.array(gfm)
    assert (_sig(mg, ys, "b", "battery", "limited").astype(int) & LIMIT_SOC_MIN).all()
    bat = _sig(mg, ys, "b", "battery", "p_w")
    np.testing.assert_allclose(bat, -IDLE_W, rtol=1e-12)
    assert not _sig(mg, ys, "b", "battery", "p_dc_w").any()
    np.testing.assert_allclose(gfm, LOAD_W, rtol=1e-9)
    unserved = _sig(mg, ys, "b", "grid", "p_unserved_w")
    np.testing.assert_allclose(unserved, gfm - bat, rtol=1e-12)
    np.testing.assert_allclose(unserved, LOAD_W + IDLE_W, rtol=1e-9)
    assert not _sig(mg, ys, "b", "meter", "p_w").any()
    e = bus.asset.output_dict(bus.y)
    np.testing.assert_allclose(e["e_gen_wh"] + e["e_src_wh"] + e["e_grid_wh"],
                               e["e_load_wh"] + e["e_damp_wh"] + e["e_kinetic_wh"],
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(e["e_src_wh"], bat[:-1].sum() * 0.01 / 3600.0, rtol=1e-9)


def _balance(mg: Microgrid, ys: np.ndarray, n: str) -> np.ndarray:
    """What a grid-connected node's meter must read: racks - inverters - batteries."""
    p = _sig(mg, ys, n, "grid", "p_curtailed_w") - _sig(mg, ys, n, "grid", "p_unserved_w")
    for s in mg.specs:
        if s.node == n and s.kind == "gpu_rack":
            p = p + _sig(mg, ys, n, s.name, "p_w")
        elif s.node == n and s.kind == "inverter":
            p = p - _sig(mg, ys, n, s.name, "p_ac_w")
        elif s.node == n and s.kind == "battery":
            p = p - _sig(mg, ys, n, s.name, "p_w")
    return p


def _limits_run(**kw: object) -> tuple[Microgrid, np.ndarray]:
    mg = _limits(**kw)
    for n, p in (("a", 40e3), ("b", -40e3), ("c", LOAD_W)):
        _set(mg, n, "p_set_w", p)
    return mg, _run(mg, 300, 0.05)


def test_energy_is_conserved_over_a_run_that_hits_the_limits():
    """Batteries run empty, full, and an island's grid-forming one empty, on the way: every
    step, each converter's loss is its loss model's at the AC power it delivers; meters read
    the node's balance and integrate it; the buses' counters and the cells' own close."""
    mg, ys = _limits_run()
    for n, flag in (("a", LIMIT_SOC_MIN), ("b", LIMIT_SOC_MAX), ("c", LIMIT_SOC_MIN)):
        lim = _sig(mg, ys, n, "battery", "limited").astype(int) & flag
        assert not lim[0] and lim[-1], n  # the limit is reached on the way
        p_w, p_dc = _sig(mg, ys, n, "battery", "p_w"), _sig(mg, ys, n, "battery", "p_dc_w")
        np.testing.assert_allclose(p_dc - p_w, converter_losses(p_w, LOSSES), rtol=1e-9,
                                   atol=1e-6, err_msg=n)
        assert abs(p_w[-1]) < 5e3, n
    for n in ("a", "b"):
        p_grid = _sig(mg, ys, n, "meter", "p_w")
        np.testing.assert_allclose(p_grid, _balance(mg, ys, n), rtol=1e-9, atol=1e-6)
        net = _sig(mg, ys, n, "meter", "e_import_wh") - _sig(mg, ys, n, "meter", "e_export_wh")
        np.testing.assert_allclose(net, np.cumsum(p_grid) * 0.05 / 3600.0, rtol=1e-9,
                                   atol=1e-9)
    # the island sheds what its battery falls short by of the grid-forming power
    c = mg.nodes.index("c")
    e = mg.groups["grid"].asset.output_dict(mg.groups["grid"].y)
    np.testing.assert_allclose(e["e_gen_wh"] + e["e_src_wh"] + e["e_grid_wh"],
                               e["e_load_wh"] + e["e_damp_wh"] + e["e_kinetic_wh"],
                               rtol=1e-9, atol=1e-9)
    rack = _sig(mg, ys, "c", "rack", "p_w")[:-1].sum() * 0.05 / 3600.0
    np.testing.assert_allclose(e["e_load_wh"][c] + e["e_unserved_wh"][c], rack, rtol=1e-9)
    cells = mg.groups["battery"].asset.output_dict(mg.groups["battery"].y)
    total = cells["e_out_j"] + cells["e_loss_j"] + cells["e_stored_j"]
    scale = np.abs(cells["e_out_j"]) + np.abs(cells["e_loss_j"]) + np.abs(cells["e_stored_j"])
    assert np.all(np.abs(total) <= 1e-9 * scale)


def test_every_method_agrees_at_the_limits():
    """Fused and group by group to rounding; solve_ivp to its tolerance, where the cells
    reach their limits at the same step."""
    mg, fused = _limits_run()
    _, groups = _limits_run(fused=False)
    np.testing.assert_allclose(fused, groups, rtol=1e-12, atol=1e-9)
    _, scipy = _limits_run(method="scipy")
    powers = [i for i, o in enumerate(mg.outputs) if o[3] == "W"]
    lim = [i for i, o in enumerate(mg.outputs) if o[2] == "limited"]
    same = (fused[:, lim] == scipy[:, lim]).all(axis=1)
    assert same.mean() > 0.95
    np.testing.assert_allclose(fused[same][:, powers], scipy[same][:, powers], rtol=1e-6,
                               atol=1e-2)


def test_an_open_contactor_on_an_empty_battery_puts_nothing_on_the_bus():
    mg = _one(0.0)
    _set(mg, "a", "p_set_w", 50e3)
    mg.u[mg.setpoints.index(("a", "battery", "connect", ""))] = 0.0
    for _ in range(10):
        mg.advance(1.0)
    assert _get(mg, "a", "battery", "p_w") == 0.0
    assert _get(mg, "a", "meter", "p_w") == 0.0
