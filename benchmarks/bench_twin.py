"""Microgrid step cost at dt = 10 ms: the fused step against solve_ivp per step, same run.

For one node (PV array and inverter, battery and converter, GPU rack, bus, meter) and for
1,000 such nodes, the figures are the cost of one :meth:`twin.microgrid.Microgrid.advance`

* ``fused``: ``method="exact"``, every group and the coupling in one compiled call,
* ``group_by_group``: ``method="exact", fused=False``, each group's own ``advance`` with the
  coupling called from Python between them (how every step ran before the fused one),
* ``scipy``: ``method="scipy"``, each group integrated with ``solve_ivp`` (DOP853) on its
  right-hand side: the baseline of the goal (for 1,000 nodes only a few steps),

each the best of several batches (the machine is shared), the ratios against ``fused`` and
the real-time factor (10 ms over the step's cost).  ``kernels_n1000_us`` says where the time
of a 1,000-node step goes: each group's ``advance_inplace`` on its own, and the rest
(setpoints, drives, node sums, shortfall, meters, outputs: the fused step less the kernels)
as ``coupling``.  Each rack runs its GPUs as one group; ``gpu_rack_4_groups`` is the rack
kernel with the demo's four desynchronised groups per rack (its cost grows with the groups).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.timing import best_us
from twin import battery, bus, inverter, pv, rack
from twin import params as tp
from twin.microgrid import AssetSpec, Microgrid, Series
from twin.pv import clear_sky_ghi, cloud_transients
from twin.workload import desynchronise, synchronous_training

DATA = Path(__file__).resolve().parents[1] / "twin" / "data"
DT = 0.01


def node_specs(n: int, groups: int = 1) -> list[AssetSpec]:
    """``n`` nodes of the demo's kind, sharing parameter sets, drives and workload; each
    rack's GPUs in ``groups`` desynchronised groups."""
    p = {name: tp.load(DATA / f"{name}.toml") for name in (
        "pv_80kwp", "inverter_pv_abb_trio_60", "battery_lfp_rack", "converter_battery_100kw",
        "bus_node_100kva", "rack_h100_4x8gpu")}
    t = np.arange(0.0, 3600.0, 0.5)
    sun = Series(t, clear_sky_ghi(t + 12.5 * 3600.0, 40.0, 172)
                 * cloud_transients(t, seed=1))
    job = synchronous_training(2.0, 0.7, 0.2, stop_s=3600.0)
    if groups > 1:
        job = desynchronise(job, groups, 0.05)
    specs = []
    for k in range(n):
        name = f"n{k}"
        specs += [AssetSpec(name, "pv", "pv", p["pv_80kwp"], drive=sun),
                  AssetSpec(name, "inverter", "inverter", p["inverter_pv_abb_trio_60"],
                            source="pv"),
                  AssetSpec(name, "battery", "battery", p["battery_lfp_rack"],
                            p["converter_battery_100kw"], initial={"soc": 0.6}),
                  AssetSpec(name, "rack", "gpu_rack", p["rack_h100_4x8gpu"], drive=job),
                  AssetSpec(name, "grid", "grid", p["bus_node_100kva"]),
                  AssetSpec(name, "meter", "meter")]
    return specs


def commanded(mg: Microgrid) -> Microgrid:
    """Every battery discharging 20 kW, so the converters and cells work."""
    for j, (_, asset, name, _) in enumerate(mg.setpoints):
        if (asset, name) == ("battery", "p_set_w"):
            mg.u[j] = 20e3
    return mg


def step_costs(n: int, quick: bool) -> dict:
    specs = node_specs(n)
    fused = commanded(Microgrid(specs))
    groups = commanded(Microgrid(specs, fused=False))
    scipy = commanded(Microgrid(specs, method="scipy"))
    # many short batches: the best of them is the cost on a machine shared with others
    reps = 5 if quick else 30
    if n > 1:
        fused_calls, group_calls, scipy_calls = 3, 2, 1
    else:
        fused_calls, group_calls, scipy_calls = 200, 20, 2
    out = {
        "fused_us": best_us(lambda: fused.advance(DT), fused_calls, reps),
        "group_by_group_us": best_us(lambda: groups.advance(DT), group_calls, reps // 3),
        "scipy_us": best_us(lambda: scipy.advance(DT), scipy_calls,
                            1 if quick or n > 1 else 5),
    }
    out["scipy_over_fused"] = out["scipy_us"] / out["fused_us"]
    out["group_by_group_over_fused"] = out["group_by_group_us"] / out["fused_us"]
    out["realtime_factor"] = DT * 1e6 / out["fused_us"]
    return {k: round(v, 3) for k, v in out.items()}


def kernel_costs(quick: bool) -> dict:
    """Each group's compiled kernel for 1,000 units, as the fused step calls it. [us]"""
    mg = commanded(Microgrid(node_specs(1000)))
    for _ in range(10):
        mg.advance(DT)
    kernels = {"pv": pv.advance_inplace, "inverter": inverter.advance_inplace,
               "converter": inverter.advance_inplace, "gpu_rack": rack.advance_inplace,
               "grid": bus.advance_inplace, "battery": battery.advance_inplace}
    calls, repeats = (3, 5) if quick else (3, 30)
    out = {kind: kernel_us(mg, kind, kernel, calls, repeats)
           for kind, kernel in kernels.items()}
    total = best_us(lambda: mg.advance(DT), calls, repeats)
    out["coupling"] = max(total - sum(out.values()), 0.0)
    out["fused_step"] = total
    four = Microgrid(node_specs(1000, groups=4))
    out["gpu_rack_4_groups"] = kernel_us(four, "gpu_rack", rack.advance_inplace, calls,
                                         repeats)
    return {k: round(v, 3) for k, v in out.items()}


def kernel_us(mg: Microgrid, kind: str, kernel: Callable[..., None], calls: int,
              repeats: int) -> float:
    """One group's kernel on copies of its arrays, laid out as the fused step lays them out
    (many column by column), time moving on as in a run. [us]"""
    g = mg.groups[kind]
    x, u, y = g.x.copy(order="K"), g.u.copy(order="K"), g.y.copy(order="K")
    args = [a.copy(order="K") for a in g.kernel_args()] or g.asset.kernel_args(DT)
    clock = {"t": mg.t}

    def call() -> None:
        kernel(clock["t"], x, u, DT, y, *args)
        clock["t"] += DT

    return best_us(call, calls, repeats)


def run(quick: bool) -> dict:
    return {"dt_s": DT, "n1": step_costs(1, quick), "n1000": step_costs(1000, quick),
            "kernels_n1000_us": kernel_costs(quick)}
