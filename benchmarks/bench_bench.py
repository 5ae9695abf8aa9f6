"""The lockstep engine: ticks per second as fast as possible, and lateness in real time.

- twin mode, one node and 100 nodes (battery, PV + inverter, GPU rack, meter each), the
  whole loop (controller, recording) against the twin stepping alone (same run): the ratio
  is what the engine adds;
- emulated mode, three nodes of the demo (twelve Modbus devices on loopback);
- real time at 50 Hz with the demo's twelve emulated devices (five minutes; 20 s in quick
  mode): lateness p50, p99 and max and missed deadlines, against a bare asyncio pacing loop
  at the same rate in the same run.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "demo.toml"


def _node(name: str) -> str:
    return f"""
[nodes.{name}.pv]
kind = "pv"
profile = "sun"
[nodes.{name}.inverter]
kind = "inverter"
source = "pv"
[nodes.{name}.battery]
kind = "battery"
[nodes.{name}.rack]
kind = "gpu_rack"
params = "rack_h100_4x8gpu"
profile = "train"
[nodes.{name}.meter]
kind = "meter"
"""


def _scenario(nodes: int, duration_s: float, dt_s: float = 0.01) -> str:
    head = f"""
[run]
name = "bench"
dt_s = {dt_s}
duration_s = {duration_s}
seed = 1
mode = "twin"
[controller]
name = "gpu_smoothing"
options = {{ ramp_limit_w_per_s = 5000.0 }}
[profiles.sun]
kind = "irradiance"
generator = "clear_sky"
[profiles.train]
kind = "workload"
generator = "training"
options = {{ step_s = 2.0, compute_fraction = 0.7, comm_fraction = 0.2 }}
"""
    return head + "".join(_node(f"n{i}") for i in range(nodes))


def _engine_rate(text: str, tmp: Path, name: str) -> dict:
    from bench.build import build_plan
    from bench.engine import run_plan
    from bench.scenario import parse

    s = parse(text, name)
    plan = build_plan(s, ledger=str(tmp / f"{name}.ledger.db"))
    summary = run_plan(plan, tmp / f"{name}.h5", progress=False)
    # the same twin alone, same number of steps
    twin = build_plan(s).twin
    t0 = time.perf_counter()
    for _ in range(summary.ticks):
        twin.advance(s.run.dt_s)
    twin_s = time.perf_counter() - t0
    return {"ticks": summary.ticks, "ticks_per_s": round(summary.ticks / summary.wall_s, 1),
            "twin_alone_ticks_per_s": round(summary.ticks / twin_s, 1),
            "engine_overhead_ratio": round((summary.wall_s / summary.ticks)
                                           / (twin_s / summary.ticks), 2)}


async def _bare_pacing(dt: float, n: int) -> np.ndarray:
    """Lateness of an empty loop paced like the engine's (the machine's own jitter)."""
    late = np.empty(n)
    t0 = time.perf_counter()
    for k in range(n):
        late[k] = time.perf_counter() - (t0 + k * dt)
        wait = t0 + (k + 1) * dt - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
    return late


def _realtime(tmp: Path, duration_s: float) -> dict:
    from bench.build import build_plan
    from bench.engine import run_plan
    from bench.scenario import load

    s = load(DEMO, [f"run.duration_s={duration_s}", "run.realtime=true", "run.dt_s=0.02",
                    "market.kind=none", "run.catch_up=hold"])
    plan = build_plan(s)
    devices = len(plan.devices)
    summary = run_plan(plan, tmp / "realtime.h5", progress=False)
    base = asyncio.run(_bare_pacing(0.02, summary.ticks))
    p99_base = float(np.percentile(base, 99))
    return {
        "devices": devices, "rate_hz": 50, "duration_s": duration_s, "ticks": summary.ticks,
        "lateness_p50_ms": round(summary.lateness_p50_s * 1e3, 3),
        "lateness_p99_ms": round(summary.lateness_p99_s * 1e3, 3),
        "lateness_max_ms": round(summary.lateness_max_s * 1e3, 3),
        "missed_deadlines": summary.missed_deadlines,
        "late_ticks_over_quarter_dt": summary.late_ticks,
        "bare_loop_lateness_p50_ms": round(float(np.percentile(base, 50)) * 1e3, 3),
        "bare_loop_lateness_p99_ms": round(p99_base * 1e3, 3),
        "p99_ratio_to_bare_loop": round(summary.lateness_p99_s / p99_base, 2)
        if p99_base > 0 else None,
        "device_errors": summary.device_errors,
    }


def run(quick: bool = False) -> dict:
    from bench.build import build_plan
    from bench.engine import run_plan
    from bench.scenario import load

    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out["twin_1_node"] = _engine_rate(_scenario(1, 20.0 if quick else 100.0), tmp, "one")
        out["twin_100_nodes"] = _engine_rate(_scenario(100, 2.0 if quick else 10.0), tmp,
                                             "hundred")
        s = load(DEMO, [f"run.duration_s={5 if quick else 30}", "market.kind=none"])
        summary = run_plan(build_plan(s), tmp / "emulated.h5", progress=False)
        out["emulated_3_nodes"] = {"devices": 12, "ticks": summary.ticks,
                                   "ticks_per_s": round(summary.ticks / summary.wall_s, 1),
                                   "realtime_factor": round(summary.realtime_factor, 2)}
        out["realtime_50hz_12_devices"] = _realtime(tmp, 20.0 if quick else 300.0)
    out["goals"] = {"twin_1_node_ticks_per_s": 20_000, "realtime_p99_ms": 5.0,
                    "missed_deadlines": 0}
    return out
