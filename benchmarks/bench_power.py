"""Step cost of the power assets (inverter, PV, bus) at dt = 10 ms, for 1 and 1,000 units.

Each asset is advanced by its fused compiled ``advance`` (hold, outputs and the exact step
in one call, the lockstep path) and, as the baseline measured in the same run, by the
``scipy`` method of the stepper: the same held inputs and outputs, the state integrated with
``solve_ivp`` over each step.  Reported per step in microseconds (the best of several
rounds, the figure least disturbed by other processes), the ratio baseline / exact, and how
many times faster than real time 1,000 nodes' inverter, PV and bus advance together.  A
quarter of the nodes are islanded, the rest connected to the grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from twin import params, stepper
from twin.bus import Bus
from twin.inverter import Inverter
from twin.pv import PV

DT = 0.01


def _data(name: str) -> params.ParamSet:
    return params.load(Path(__file__).resolve().parents[1] / "twin" / "data" / name)


def _assets(n: int) -> dict[str, tuple[stepper.Asset, np.ndarray]]:
    rng = np.random.default_rng(0)
    inv = Inverter.from_params(_data("inverter_pv_abb_trio_60.toml"), n=n)
    pv = PV.from_params(_data("pv_80kwp.toml"), n=n)
    bus = Bus.from_params(_data("bus_node_100kva.toml"), n=n)
    return {
        "inverter": (inv, inv.input_array(p_dc_avail_w=rng.uniform(0, 80e3, n),
                                          v_dc_v=rng.uniform(600, 800, n),
                                          w_max_lim_pct=rng.uniform(50, 100, n))),
        "pv": (pv, pv.input_array(irradiance_w_m2=rng.uniform(0, 1000, n), temp_air_c=20.0)),
        "bus": (bus, bus.input_array(p_load_w=rng.uniform(0, 200e3, n),
                                     p_gen_w=rng.uniform(0, 100e3, n),
                                     islanded=(np.arange(n) < n // 4).astype(float))),
    }


def _per_step_us(step: Callable[[], None], steps: int, rounds: int) -> float:
    step()  # compile and fill the caches
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t0) / steps * 1e6)
    return min(times)  # best of the rounds: the least disturbed by other processes


def _exact(asset: stepper.Asset, u: np.ndarray) -> Callable[[], None]:
    state = {"x": asset.initial_state(), "t": 0.0}

    def step() -> None:
        state["x"], _ = asset.advance(state["t"], state["x"], u, DT)
        state["t"] += DT

    return step


def _scipy(asset: stepper.Asset, u: np.ndarray) -> Callable[[], None]:
    s = stepper.Stepper({"a": asset}, method="scipy")
    return lambda: s.advance({"a": u}, DT)


def run(quick: bool) -> dict:
    steps = {1: 200 if quick else 2000, 1000: 50 if quick else 1000}
    scipy_steps = {1: 20 if quick else 200, 1000: 2 if quick else 10}
    rounds = 3 if quick else 7
    out: dict = {"dt_s": DT}
    total_1000 = 0.0
    for n in (1, 1000):
        for name, (asset, u) in _assets(n).items():
            exact = _per_step_us(_exact(asset, u), steps[n], rounds)
            base = _per_step_us(_scipy(asset, u), scipy_steps[n], 3 if n == 1 else 1)
            out[f"{name}_n{n}_exact_us"] = round(exact, 3)
            out[f"{name}_n{n}_scipy_us"] = round(base, 1)
            out[f"{name}_n{n}_speedup"] = round(base / exact, 1)
            if n == 1000:
                total_1000 += exact
    out["power_n1000_exact_us"] = round(total_1000, 2)
    out["power_n1000_realtime_factor"] = round(DT * 1e6 / total_1000, 1)
    return out
