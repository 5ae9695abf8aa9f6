"""The microgrid twin: the fused step against the group-by-group reference, energy balances,
shortfall, grid forming, setpoints and their defaults, forecasts.

Scenarios (every bus has a grid connection unless marked islanded)::

    grid        a: PV -> inverter, battery, rack (training, 2 GPU groups), meter
    island      a: PV -> inverter, battery, rack (inference), meter
                b: islanded, grid-forming: battery 100 kW + battery2 50 kW, rack, meter
    shortfall   a: PV -> inverter, battery (nearly empty), rack, meter
                b: battery (nearly full), rack, meter
    traces      a, b: battery, rack replaying a Series trace (compiled), meter
    callables   a: PV (irradiance from a Python callable) -> inverter, rack replaying a
                   Python callable, meter
    fleet       n0..n5: shared and separate parameter sets, some islanded, a node
                without PV, one without a rack, one without a battery
    bare        a: rack only; c: PV -> inverter only, no grid asset (default bus), no meter
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from twin import params
from twin.battery import LIMIT_SOC_MAX, LIMIT_SOC_MIN
from twin.errors import TwinError
from twin.microgrid import AssetSpec, Microgrid, Series
from twin.workload import desynchronise, inference, synchronous_training

DATA = Path(__file__).resolve().parents[2] / "twin" / "data"
SHIPPED = {name: params.load(DATA / f"{name}.toml") for name in (
    "pv_80kwp", "inverter_pv_abb_trio_60", "battery_lfp_rack", "converter_battery_100kw",
    "bus_node_100kva", "rack_h100_4x8gpu")}
T = np.arange(0.0, 60.0, 0.5)
SUN = Series(T, 700.0 + 250.0 * np.sin(T / 3.0))
TRAIN = synchronous_training(1.0, 0.7, 0.2, stop_s=60.0)
SERVE = inference(60.0, 10.0, seed=3)
DT = 0.01


def modified(name: str, **changes: object) -> params.ParamSet:
    """A separate parameter set: a shipped one with some parameters changed."""
    p = copy.deepcopy(SHIPPED[name])
    p.params.update(changes)
    return p


GFM_BUS = modified("bus_node_100kva",
                   grid_forming={"rating_w": 150e3, "droop_pu": 0.05, "tau_s": 0.05})
HALF_CONVERTER = modified("converter_battery_100kw", p_max_w=50e3)
SMALL_BATTERY = modified("battery_lfp_rack", capacity_ah=200.0)


def node(name: str, *, pv: bool = True, battery: bool = True, rack: object = TRAIN,
         islanded: bool = False, soc: float = 0.6, bus: params.ParamSet | None = None,
         cells: params.ParamSet | None = None) -> list[AssetSpec]:
    specs = []
    if pv:
        specs += [AssetSpec(name, "pv", "pv", SHIPPED["pv_80kwp"], drive=SUN),
                  AssetSpec(name, "inverter", "inverter", SHIPPED["inverter_pv_abb_trio_60"],
                            source="pv")]
    if battery:
        specs.append(AssetSpec(name, "battery", "battery", cells or SHIPPED["battery_lfp_rack"],
                               SHIPPED["converter_battery_100kw"], initial={"soc": soc}))
    if rack is not None:
        specs.append(AssetSpec(name, "rack", "gpu_rack", SHIPPED["rack_h100_4x8gpu"],
                               drive=rack))
    specs += [AssetSpec(name, "grid", "grid", bus or SHIPPED["bus_node_100kva"],
                        initial={"islanded": 1.0} if islanded else {}),
              AssetSpec(name, "meter", "meter")]
    return specs


def scenarios() -> dict[str, list[AssetSpec]]:
    return {
        "grid": node("a", rack=desynchronise(TRAIN, 2, 0.1)),
        "island": node("a", rack=SERVE) + node("b", islanded=True, bus=GFM_BUS) + [
            AssetSpec("b", "battery2", "battery", SMALL_BATTERY, HALF_CONVERTER,
                      initial={"soc": 0.4})],
        "shortfall": node("a", soc=3e-4) + node("b", pv=False, soc=0.9999),
        "traces": (node("a", pv=False, rack=Series(T, 30e3 + 5e3 * np.cos(T)))
                   + node("b", pv=False, rack=Series(T, 20e3 + 0.0 * T))),
        "callables": [
            AssetSpec("a", "pv", "pv", SHIPPED["pv_80kwp"], drive=lambda t: 600.0 + 10.0 * t),
            AssetSpec("a", "inverter", "inverter", SHIPPED["inverter_pv_abb_trio_60"],
                      source="pv"),
            AssetSpec("a", "rack", "gpu_rack", drive=lambda t: 25e3 + 1e3 * t),
            AssetSpec("a", "grid", "grid", SHIPPED["bus_node_100kva"]),
            AssetSpec("a", "meter", "meter")],
        "fleet": [spec for k in range(6) for spec in node(
            f"n{k}", islanded=k % 3 == 0, bus=GFM_BUS if k % 3 == 0 else None,
            cells=SMALL_BATTERY if k % 2 else None, soc=0.3 + 0.05 * k,
            rack=None if k == 4 else TRAIN, pv=k != 2, battery=k != 5)],
        "bare": node("a", pv=False, battery=False) + [
            AssetSpec("c", "pv", "pv", SHIPPED["pv_80kwp"], drive=SUN),
            AssetSpec("c", "inverter", "inverter", SHIPPED["inverter_pv_abb_trio_60"],
                      source="pv")],
    }


def build(specs: list[AssetSpec], **kw: object) -> Microgrid:
    return Microgrid(specs, bus_default=SHIPPED["bus_node_100kva"], **kw)


def command(mg: Microgrid, rng: np.random.Generator, islanding: bool) -> None:
    """New setpoints, about a third of them NaN (none given: the model's default)."""
    for j, (_, asset, name, _) in enumerate(mg.setpoints):
        r = rng.random()
        if r < 0.3:
            value = np.nan
        elif name == "p_set_w" and asset.startswith("battery"):
            value = rng.uniform(-80e3, 80e3)
        elif name == "p_set_w":
            value = rng.uniform(0.0, 60e3)
        elif name == "connect":
            value = float(rng.random() < 0.8)
        elif name == "w_max_lim_pct":
            value = rng.uniform(20.0, 100.0)
        elif name == "q_set_var":
            value = rng.uniform(-1e4, 1e4)
        elif name == "power_cap_w":
            value = rng.choice([0.0, 20e3, 35e3])
        else:  # islanded
            value = float(rng.random() < 0.3) if islanding else mg.u[j]
        mg.u[j] = value


def run(mg: Microgrid, steps: int, seed: int = 0, islanding: bool = True,
        dt: float = DT) -> np.ndarray:
    """Outputs after each step, new setpoints every seventh step."""
    rng = np.random.default_rng(seed)
    ys = []
    for k in range(steps):
        if k % 7 == 0:
            command(mg, rng, islanding)
        mg.advance(dt)
        ys.append(mg.y.copy())
    return np.array(ys)


def signal(mg: Microgrid, ys: np.ndarray, node: str, asset: str, name: str) -> np.ndarray:
    return ys[:, mg.index(node, asset, name)]


def balance(mg: Microgrid, ys: np.ndarray, node: str) -> np.ndarray:
    """What a grid-connected node's meter must read: racks - inverters - batteries, less
    what the grid connection could not carry."""
    p = signal(mg, ys, node, "grid", "p_curtailed_w") - signal(mg, ys, node, "grid",
                                                              "p_unserved_w")
    for spec in mg.specs:
        if spec.node == node and spec.kind == "gpu_rack":
            p = p + signal(mg, ys, node, spec.name, "p_w")
        elif spec.node == node and spec.kind == "inverter":
            p = p - signal(mg, ys, node, spec.name, "p_ac_w")
        elif spec.node == node and spec.kind == "battery":
            p = p - signal(mg, ys, node, spec.name, "p_w")
    return p


@pytest.mark.parametrize("name", list(scenarios()))
def test_fused_step_matches_the_group_by_group_reference(name):
    specs = scenarios()[name]
    fused, ref = build(specs), build(specs, fused=False)
    np.testing.assert_array_equal(fused.y, ref.y)
    # a change of step length on the way: the step's factors are reloaded
    ys_fused = np.vstack([run(fused, 120), run(fused, 20, seed=1, dt=0.02)])
    ys_ref = np.vstack([run(ref, 120), run(ref, 20, seed=1, dt=0.02)])
    assert np.isfinite(ys_fused[:, [i for i, o in enumerate(fused.outputs)
                                    if o[1] != "rack" or o[2] in ("p_w", "energy_wh")]]).all()
    np.testing.assert_allclose(ys_fused, ys_ref, rtol=1e-12, atol=1e-9)
    assert fused.t == ref.t
    for kind, g in fused.groups.items():
        np.testing.assert_allclose(g.x, ref.groups[kind].x, rtol=1e-12, atol=1e-9,
                                   err_msg=kind)


@pytest.mark.parametrize("name", ["grid", "shortfall", "traces", "callables", "fleet"])
def test_energy_balances_at_every_node(name):
    """Grid-connected: the meter reads racks - inverters - batteries (less what the
    connection could not carry) at every step, and integrates it; every bus's counters
    close: e_gen + e_src + e_grid = e_load + e_damp + the change of kinetic energy."""
    mg = build(scenarios()[name])
    ys = run(mg, 150, islanding=False)
    for n in mg.nodes:
        if mg.islanded[n] or (n, "meter") not in {(o[0], o[1]) for o in mg.outputs}:
            continue
        p_grid = signal(mg, ys, n, "meter", "p_w")
        np.testing.assert_allclose(p_grid, balance(mg, ys, n), rtol=1e-9, atol=1e-6,
                                   err_msg=n)
        net_wh = signal(mg, ys, n, "meter", "e_import_wh") - signal(mg, ys, n, "meter",
                                                                   "e_export_wh")
        np.testing.assert_allclose(net_wh, np.cumsum(p_grid) * DT / 3600.0, rtol=1e-9,
                                   atol=1e-9, err_msg=n)
    bus = mg.groups["grid"]
    e = bus.asset.output_dict(bus.y)
    src = e["e_gen_wh"] + e["e_src_wh"] + e["e_grid_wh"]
    sink = e["e_load_wh"] + e["e_damp_wh"] + e["e_kinetic_wh"]
    np.testing.assert_allclose(src, sink, rtol=1e-9, atol=1e-6)


def test_a_battery_at_its_soc_limit_falls_short_and_the_grid_carries_it():
    mg = build(scenarios()["shortfall"])
    sp = {s[:3]: j for j, s in enumerate(mg.setpoints)}
    mg.u[sp["a", "battery", "p_set_w"]] = 40e3  # discharging the empty one
    mg.u[sp["b", "battery", "p_set_w"]] = -40e3  # charging the full one
    ys = np.array([(mg.advance(DT), mg.y.copy())[1] for _ in range(300)])
    for n, bit in (("a", LIMIT_SOC_MIN), ("b", LIMIT_SOC_MAX)):
        assert int(signal(mg, ys, n, "battery", "limited")[-1]) & bit, n
        # the cells take or give less than the converter asks: the battery reports that
        assert abs(signal(mg, ys, n, "battery", "p_w")[-1]) < 10e3, n
        # and the meter carries the rest: energy is never created
        np.testing.assert_allclose(signal(mg, ys, n, "meter", "p_w"), balance(mg, ys, n),
                                   rtol=1e-9, atol=1e-6)
        assert not signal(mg, ys, n, "grid", "p_curtailed_w").any()
        assert not signal(mg, ys, n, "grid", "p_unserved_w").any()
        # the grid asset reads what the meter reads (a node metered by its bus alone)
        np.testing.assert_allclose(signal(mg, ys, n, "grid", "p_w"),
                                   signal(mg, ys, n, "meter", "p_w"), rtol=1e-12, atol=1e-9)
    # and each bus's counters still close with the shortfall in its grid connection
    e = mg.groups["grid"].asset.output_dict(mg.groups["grid"].y)
    np.testing.assert_allclose(e["e_gen_wh"] + e["e_src_wh"] + e["e_grid_wh"],
                               e["e_load_wh"] + e["e_damp_wh"] + e["e_kinetic_wh"],
                               rtol=1e-9, atol=1e-6)


def test_islanded_batteries_form_the_grid_in_proportion_to_their_ratings():
    mg = build(scenarios()["island"])
    ys = run(mg, 100, islanding=False)
    assert (signal(mg, ys, "b", "meter", "p_w") == 0.0).all()
    assert (signal(mg, ys, "b", "grid", "islanded") == 1.0).all()
    one, two = (signal(mg, ys, "b", b, "p_w") for b in ("battery", "battery2"))
    both = (signal(mg, ys, "b", "battery", "connected") == 1.0) & (
        signal(mg, ys, "b", "battery2", "connected") == 1.0) & (np.abs(two) > 1.0)
    assert both.sum() > 20
    np.testing.assert_allclose(one[both] / two[both], 2.0, rtol=1e-9)
    # the islanded bus turns the imbalance into frequency
    assert np.ptp(signal(mg, ys, "b", "grid", "freq_hz")) > 1e-3


def test_an_open_contactor_takes_the_battery_off_its_bus():
    mg = build(scenarios()["island"])
    sp = {s[:3]: j for j, s in enumerate(mg.setpoints)}
    mg.u[sp["a", "battery", "p_set_w"]] = 50e3
    run_ = [(mg.advance(DT), mg.y.copy())[1] for _ in range(50)]
    mg.u[sp["a", "battery", "connect"]] = 0.0  # the converter still winds its command down
    mg.u[sp["b", "battery2", "connect"]] = 0.0  # the other grid-forming battery takes it all
    ys = np.array(run_ + [(mg.advance(DT), mg.y.copy())[1] for _ in range(50)])
    after = slice(51, None)
    for n, b in (("a", "battery"), ("b", "battery2")):
        assert (signal(mg, ys, n, b, "connected")[after] == 0.0).all()
        assert (signal(mg, ys, n, b, "p_w")[after] == 0.0).all()
    np.testing.assert_allclose(signal(mg, ys, "a", "meter", "p_w"), balance(mg, ys, "a"),
                               rtol=1e-9, atol=1e-6)
    gfm = mg.groups["grid"].asset.output_dict(mg.groups["grid"].y)["p_gfm_w"][1]
    assert mg.y[mg.index("b", "battery", "p_w")] == pytest.approx(gfm, rel=1e-9)


def test_setpoints_act_on_their_assets():
    mg = build(scenarios()["grid"])
    sp = {s[1:3]: j for j, s in enumerate(mg.setpoints)}
    mg.u[sp["inverter", "w_max_lim_pct"]] = 50.0
    mg.u[sp["rack", "power_cap_w"]] = 15e3
    for _ in range(150):
        mg.advance(DT)
    assert mg.y[mg.index("a", "inverter", "p_ac_w")] <= 30e3 * 1.001
    assert mg.y[mg.index("a", "inverter", "w_max_lim_pct")] == 50.0
    assert mg.y[mg.index("a", "rack", "p_w")] <= 15e3 * (1 + 1e-9)
    assert mg.y[mg.index("a", "rack", "power_cap_w")] == 15e3
    mg.u[sp["grid", "islanded"]] = 1.0
    mg.advance(DT)
    assert mg.y[mg.index("a", "grid", "islanded")] == 1.0
    assert mg.y[mg.index("a", "meter", "p_w")] == 0.0


def test_nan_setpoints_are_the_defaults():
    specs = scenarios()["island"]
    unset, explicit = build(specs), build(specs)
    defaults = {"w_max_lim_pct": 100.0, "q_set_var": 0.0, "power_cap_w": 0.0, "connect": 1.0}
    for j, (n, asset, name, _) in enumerate(explicit.setpoints):
        if name == "p_set_w":
            explicit.u[j] = 60e3 if asset == "inverter" else 0.0  # the PV inverter's rating
        elif name == "islanded":
            explicit.u[j] = 1.0 if explicit.islanded[n] else 0.0
        else:
            explicit.u[j] = defaults[name]
    for _ in range(100):
        unset.advance(DT)
        explicit.advance(DT)
        np.testing.assert_array_equal(unset.y, explicit.y)


def test_a_copy_forecasts_without_disturbing_the_run():
    mg = build(scenarios()["island"])
    run(mg, 30)
    forecast = mg.copy()
    y, u, t = mg.y.copy(), mg.u.copy(), mg.t
    ahead = run(forecast, 50, seed=5)
    np.testing.assert_array_equal(mg.y, y)
    assert mg.t == t and forecast.t > t
    mg.u[:] = u
    np.testing.assert_array_equal(run(mg, 50, seed=5), ahead)


@pytest.mark.parametrize("name", ["grid", "island"])
def test_forecast_is_the_copy_s_future_and_leaves_the_run_alone(name):
    mg = build(scenarios()[name])
    for ticks in (30, 7, 1):  # the scratch copy is reloaded each time, never stale
        run(mg, ticks)
        i = len(mg.outputs) // 2
        y, t = mg.y.copy(), mg.t
        reference = mg.copy()
        expected = []
        for _ in range(40):
            reference.advance(DT)
            expected.append(reference.y[i])
        np.testing.assert_array_equal(mg.forecast(i, 40, DT), expected)
        np.testing.assert_array_equal(mg.y, y)
        assert mg.t == t


def test_solve_ivp_reference_agrees_with_the_exact_step():
    specs = node("a", rack=Series(T, 30e3 + 5e3 * np.cos(T)))  # the GPU model is not an ODE
    exact, reference = build(specs), build(specs, method="scipy")
    ys_exact, ys_ref = run(exact, 12), run(reference, 12)
    powers = [i for i, o in enumerate(exact.outputs) if o[3] == "W"]
    np.testing.assert_allclose(ys_exact[:, powers], ys_ref[:, powers], rtol=1e-6, atol=1e-3)


def test_bad_drives_and_setpoint_arrays_are_named():
    specs = scenarios()["grid"]
    with pytest.raises(TwinError, match=r"^a\.pv: the drive of a pv .* not float$"):
        build([dataclasses.replace(s, drive=5.0) if s.kind == "pv" else s for s in specs])
    mg = build(specs)
    with pytest.raises(TwinError, match=f"3 setpoints given, it has {len(mg.setpoints)}"):
        mg.u = np.zeros(3)
    mg.u = np.full(len(mg.setpoints), 50.0)
    assert (mg.u == 50.0).all()
    with pytest.raises(AttributeError):
        mg.y = np.zeros(len(mg.outputs))


def test_every_dimensioned_signal_has_its_unit():
    """A signal whose name says it carries a unit (``_w``, ``_wh``, ``_c``, ...) is recorded
    with that unit; the view and the report label axes with it."""
    mg = build(scenarios()["grid"])
    suffixes = {"_w": "W", "_wh": "Wh", "_c": "degC", "_v": "V", "_a": "A", "_hz": "Hz",
                "_mhz": "MHz", "_var": "var"}
    for node, asset, name, unit in mg.outputs:
        for suffix, want in suffixes.items():
            if name.endswith(suffix):
                assert unit == want, (node, asset, name, unit)


def test_an_islanded_batterys_setpoint_dispatches_no_more_than_its_converter_rating():
    """A controller asking 1e30 W of a grid-forming battery gets its rating, as a
    grid-connected one gets what its converter allows."""
    mg = build(scenarios()["island"])
    sp = {s[:3]: j for j, s in enumerate(mg.setpoints)}
    mg.u[sp["b", "battery", "p_set_w"]] = 1e30
    mg.u[sp["b", "battery2", "p_set_w"]] = -1e30
    bus = mg.groups["grid"]
    gfm_set = []
    for _ in range(100):
        mg.advance(DT)
        gfm_set.append(bus.u[1, bus.asset.input_names.index("p_gfm_set_w")])
    # 100 kW out of the one, 50 kW into the other (HALF_CONVERTER)
    assert gfm_set[-1] == pytest.approx(100e3 - 50e3, rel=1e-12)
    assert np.isfinite(mg.y).all()
    assert abs(mg.y[mg.index("b", "battery", "p_w")]) < 1e6
