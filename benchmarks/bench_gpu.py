"""GPU model speed: ``gpu predict`` throughput and the rack's lockstep step cost.

Baselines measured in the same run: the same physics through ``twin.stepper.Stepper`` with
``method="scipy"`` (``solve_ivp`` on the rack's right-hand side every step).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from twin.gpu import load_params, nvml_view, simulate
from twin.rack import GpuRack, load_rack
from twin.stepper import Stepper
from twin.workload import concat, desynchronise, synchronous_training

DT = 0.01


def _schedule(seconds: float):
    """A 170 s mix like the calibration recording: two training rhythms and an mfu job."""
    third = seconds / 3
    return concat([
        synchronous_training(2.0, 0.7, 0.3, start_s=5.0, stop_s=third),
        synchronous_training(0.5, 0.6, 0.0, start_s=third + 5, stop_s=2 * third),
        synchronous_training(0.07, 0.3, 0.0, start_s=2 * third + 5, stop_s=seconds - 5,
                             mfu=0.25, checkpoint_every_steps=40, checkpoint_s=0.6),
    ])


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _predict(quick: bool) -> dict:
    from bench.csvio import write_columns

    p, temp = load_params()
    sched = _schedule(170.0)
    simulate(p, sched, DT, temp_die_c=temp)  # compile or load the numba cache
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pred.csv"

        def predict() -> None:
            pred = simulate(p, sched, DT, temp_die_c=temp)
            _, usage = nvml_view(pred.t_s, pred.power_w)
            write_columns(out, {"t_s": pred.t_s, "power_w": pred.power_w,
                                "power_nvml_w": usage, "temp_c": pred.temp_c,
                                "sm_clock_mhz": pred.clock_mhz})

        wall = _best(predict, 3 if quick else 10)
        model = _best(lambda: simulate(p, sched, DT, temp_die_c=temp), 3 if quick else 10)
    # Baseline: the same GPU stepped with solve_ivp (a one-GPU rack, scipy method).
    rack = load_rack()[0]
    one = GpuRack(rack.replace(gpus=1), p, [sched], temp)
    span = 1.0 if quick else 3.0
    st = Stepper({"gpu": one}, method="scipy")
    u = {"gpu": one.input_array(power_cap_w=0.0)}
    t0 = time.perf_counter()
    for _ in range(round(span / DT)):
        st.advance(u, DT)
    scipy_s_per_sim_s = (time.perf_counter() - t0) / span
    return {
        "schedule_s": 170.0,
        "dt_s": DT,
        "predict_wall_s": round(wall, 4),
        "predict_sim_s_per_wall_s": round(170.0 / wall),
        "model_only_wall_s": round(model, 4),
        "model_sim_s_per_wall_s": round(170.0 / model),
        "scipy_baseline_sim_s_per_wall_s": round(1.0 / scipy_s_per_sim_s, 2),
        "speedup_model_vs_scipy": round(scipy_s_per_sim_s * 170.0 / model),
    }


def _rack_step(n: int, groups: int, quick: bool) -> dict:
    rack, gpu, temp = load_rack()
    sched = _schedule(600.0)
    racks = [desynchronise(sched, groups, 0.3, seed=i) for i in range(n)]
    asset = GpuRack(rack, gpu, racks, temp)
    x = asset.initial_state()
    u = asset.input_array(power_cap_w=np.full(n, 7000.0))
    x, _ = asset.advance(0.0, x, u, DT)
    batch = 200 if n == 1 else 20
    k = [1]

    def steps() -> None:
        nonlocal x
        for _ in range(batch):
            x, _ = asset.advance(k[0] * DT, x, u, DT)
            k[0] += 1

    per_step = _best(steps, 5 if quick else 20) / batch
    # Baseline: hold + solve_ivp on rhs + outputs through the Stepper, a few steps.
    st = Stepper({"rack": GpuRack(rack, gpu, racks, temp)}, method="scipy")
    m = 3 if n > 1 else (10 if quick else 50)
    t0 = time.perf_counter()
    for _ in range(m):
        st.advance({"rack": u}, DT)
    scipy_step = (time.perf_counter() - t0) / m
    return {"racks": n, "groups": groups, "advance_us": round(per_step * 1e6, 2),
            "scipy_step_us": round(scipy_step * 1e6, 1),
            "speedup_vs_scipy": round(scipy_step / per_step)}


def run(quick: bool = False) -> dict:
    return {
        "predict": _predict(quick),
        "rack_step": [_rack_step(1, 1, quick), _rack_step(1, 4, quick),
                      _rack_step(1000, 1, quick), _rack_step(1000, 2, quick)],
    }
