"""Battery step cost at dt = 10 ms: the exact method against solve_ivp per step, same run.

For n = 1 and n = 1000 units of each shipped parameter set (the LFP rack pack: constant RC
pairs, R0 over temperature, hysteresis; PyBaMM's ECM_Example: 3-D tables), the figures are
the cost of one step of

* ``advance``: hold + outputs + step_exact in one compiled call (what the node model calls),
* ``three_calls``: the same through the separate ``Asset`` methods,
* ``scipy``: hold + outputs + ``twin.stepper.step_scipy`` (solve_ivp, DOP853) on ``rhs``,

each the best of several batches (the machine is shared), and the ratios scipy / advance
and real time / advance (how many times faster than real time 1,000 nodes run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.timing import best_us
from twin import params as tp
from twin.battery import Battery, params_from_set
from twin.stepper import step_scipy

DATA = Path(__file__).resolve().parents[1] / "twin" / "data"
DT = 0.01


def one_case(name: str, n: int, quick: bool) -> dict:
    pack, initial = params_from_set(tp.load(DATA / name))
    bat = Battery(pack, n=n, initial=initial)
    rng = np.random.default_rng(0)
    u = bat.input_array(current_a=rng.uniform(-0.5, 0.5, n) * pack.capacity_ah)
    state = {"x": bat.initial_state()}

    def advance() -> None:
        state["x"] = bat.advance(0.0, state["x"], u, DT)[0]

    def three_calls() -> None:
        x = state["x"]
        w = bat.hold(0.0, x, u, DT)
        bat.outputs(0.0, x, w)
        state["x"] = bat.step_exact(x, w, DT)

    def scipy_step() -> None:
        x = state["x"]
        w = bat.hold(0.0, x, u, DT)
        bat.outputs(0.0, x, w)
        state["x"] = step_scipy(bat, 0.0, x, w, DT)

    scale = 1 if n == 1 else 1000
    calls = max(2, (2000 if not quick else 200) // scale)
    out = {
        "advance_us": best_us(advance, calls * 10, 7 if not quick else 3),
        "three_calls_us": best_us(three_calls, calls * 5, 5 if not quick else 2),
        "scipy_us": best_us(scipy_step, max(2, calls // 4), 3 if not quick else 1),
    }
    out["scipy_over_advance"] = out["scipy_us"] / out["advance_us"]
    out["realtime_factor"] = DT * 1e6 / out["advance_us"]
    return {k: round(v, 3) for k, v in out.items()}


def run(quick: bool) -> dict:
    result: dict = {"dt_s": DT}
    for name in ("battery_lfp_rack.toml", "battery_ecm_example.toml"):
        key = name.removeprefix("battery_").removesuffix(".toml")
        result[key] = {f"n{n}": one_case(name, n, quick) for n in (1, 1000)}
    return result
