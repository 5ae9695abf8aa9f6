"""A GPU rack's thermal protection in the lockstep kernel: hot air or poor cooling used to let
the leakage exponential run away (kW per GPU, then NaN within a simulated minute); GPUs now
slow down above their slowdown temperature and, where even that is not enough, switch off
at their shutdown temperature, and the rack stays finite, bounded and flagged.

Scenarios (one rack of 8 H100s at full load unless said)::

    hot air        ambient 60 degC
    hot air floor  ambient 60 degC, a power floor of 90 % of the GPUs' limits
    poor sink      heat sink to air 10 times the shipped thermal resistance
    idle oven      ambient 91.9 degC, idle: leakage alone runs away
    microgrid      a node of the fused step: a 32-GPU rack in 60 degC air on its bus
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twin import params
from twin.gpu import H100_SXM
from twin.microgrid import AssetSpec, Microgrid
from twin.rack import H100_8GPU, GpuRack, ac_power_w, load_rack
from twin.workload import Schedule

DATA = Path(__file__).resolve().parents[2] / "twin" / "data"
BUSY = Schedule.from_entries([{"t_s": 0.0, "load": "compute", "seconds": 600.0}])
IDLE = Schedule.from_entries([])
#: how far past the shutdown temperature a die may get within the step in which it
#: switches off (its heat capacity and electrical lag) [degC]
OVERSHOOT_C = 1.0


@pytest.fixture(scope="module")
def shipped():
    return load_rack(H100_8GPU)


def _max_rack_ac_w(rack, gpu) -> float:
    """The most a rack can draw: every GPU at its burst limit, fans at full speed. [W]"""
    dc = (rack.gpus * gpu.burst_limit_ratio * gpu.power_limit_w + rack.host_w
          + rack.network_w + rack.fan_max_w)
    return float(ac_power_w(rack, dc))


def _run(r: GpuRack, seconds: float, dt: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Outputs of every step through :meth:`GpuRack.advance` (the kernel of the fused step,
    which, unlike :meth:`GpuRack.run`, never stops), and the final state."""
    x, u = r.initial_state(), r.input_array()
    ys = []
    for k in range(int(round(seconds / dt))):
        x, y = r.advance(k * dt, x, u, dt)
        ys.append(y[0])
    return dict(zip(r.output_names, np.array(ys).T)), x


@pytest.mark.parametrize(("case", "gpu_changes", "rack_changes", "schedule"), [
    ("hot air", {"ambient_c": 60.0}, {}, BUSY),
    ("hot air floor", {"ambient_c": 60.0}, {"power_floor_w": 0.9 * 8 * 700.0}, BUSY),
    ("poor sink", {"r_sink_c_per_w": 0.3027}, {}, BUSY),
    ("idle oven", {"ambient_c": 91.9}, {}, IDLE),
])
def test_gpus_switch_off_at_their_shutdown_temperature(shipped, case, gpu_changes,
                                                       rack_changes, schedule):
    rack, gpu, temp = shipped
    rack, gpu = rack.replace(**rack_changes), gpu.replace(**gpu_changes)
    r = GpuRack(rack, gpu, [[schedule, schedule.shifted(0.5)]], temp)
    out, x = _run(r, 240.0, 0.1)
    assert all(np.isfinite(v).all() for v in out.values()), case
    dies = x[0, [k * 9 + 2 for k in range(r.groups)]]
    assert out["temp_c"].max() <= gpu.temp_shutdown_c + OVERSHOOT_C, case
    assert dies.max() <= gpu.temp_shutdown_c + OVERSHOOT_C, case
    assert out["p_w"].max() <= _max_rack_ac_w(rack, gpu), case
    # it got there, and said so: the protection acted and the rack reports it limited
    assert out["temp_c"][-600:].min() > gpu.temp_shutdown_c - 5.0, case
    assert out["limited"][-600:].any(), case
    # and the energy counter integrates the power it drew
    assert out["energy_wh"][-1] == pytest.approx(out["p_w"][:-1].sum() * 0.1 / 3600, rel=1e-9)


def test_in_warm_air_the_gpus_slow_down_before_they_reach_shutdown(shipped):
    """In 50 degC air the rack's GPUs cannot run at their limit: they slow down and hold a
    degree or so above their slowdown temperature (89 degC), none switches off, and the
    rack reports itself limited while it lasts."""
    rack, gpu, temp = shipped
    warm = gpu.replace(ambient_c=50.0)
    r = GpuRack(rack, warm, [[BUSY, BUSY.shifted(0.5)]], temp)
    out, x = _run(r, 240.0, 0.1)
    dies = x[0, [k * 9 + 2 for k in range(r.groups)]]
    late = slice(-600, None)
    assert warm.temp_slowdown_c < out["temp_c"][late].min()
    assert out["temp_c"].max() < warm.temp_slowdown_c + 2.0 and dies.max() < warm.temp_shutdown_c
    assert out["limited"][late].all()
    assert out["clock_mhz"][late].mean() < 0.6 * warm.clock_max_mhz
    cool, _ = _run(GpuRack(rack, gpu, [[BUSY, BUSY.shifted(0.5)]], temp), 240.0, 0.1)
    # the same work at a lower clock: hot silicon spends its power on leakage
    assert out["clock_mhz"][late].mean() < 0.8 * cool["clock_mhz"][late].mean()


def test_the_protection_does_not_act_in_normal_air(shipped):
    """The shipped card at full load in its own air stays far from shutdown: nothing is
    flagged, and the offline run (which stops at shutdown) agrees with the kernel."""
    rack, gpu, temp = shipped
    r = GpuRack(rack, gpu, [BUSY], temp)
    out, _ = _run(r, 120.0, 0.1)
    assert out["temp_c"].max() < gpu.temp_shutdown_c - 10.0
    assert not out["limited"].any()
    ref = GpuRack(rack, gpu, [BUSY], temp).run(120.0, 0.1)
    np.testing.assert_array_equal(out["p_w"], ref["p_w"])


def test_a_hot_rack_on_a_microgrid_bus_stays_finite(tmp_path):
    """The fused step: a 32-GPU rack in 60 degC air ran away to NaN in about a minute, and
    took its bus (grid power, frequency, counters) with it."""
    gpu_file = tmp_path / "gpu_hot.toml"
    gpu_file.write_text(H100_SXM.read_text().replace("ambient_c = 29.59", "ambient_c = 60.0"))
    rack_file = tmp_path / "rack_hot.toml"
    rack_file.write_text((DATA / "rack_h100_4x8gpu.toml").read_text().replace(
        'gpu_params = "gpu_h100_sxm.toml"', 'gpu_params = "gpu_hot.toml"'))
    bus = params.load(DATA / "bus_node_100kva.toml")
    mg = Microgrid([AssetSpec("a", "rack", "gpu_rack", params.load(rack_file), drive=BUSY),
                    AssetSpec("a", "grid", "grid", bus), AssetSpec("a", "meter", "meter")],
                   bus_default=bus)
    ys = []
    for _ in range(1500):
        mg.advance(0.1)
        ys.append(mg.y.copy())
    ys = np.array(ys)
    assert np.isfinite(ys).all()
    temp = ys[:, mg.index("a", "rack", "temp_c")]
    assert temp.max() <= 92.0 + OVERSHOOT_C and temp[-100:].min() > 87.0
    assert ys[-100:, mg.index("a", "rack", "limited")].any()
    np.testing.assert_allclose(ys[:, mg.index("a", "meter", "p_w")],
                               ys[:, mg.index("a", "rack", "p_w")], rtol=1e-12)
