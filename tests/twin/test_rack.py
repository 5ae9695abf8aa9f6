"""The GPU rack asset: overhead and PSU, groups, cap, floor and ramp limits, both steppers."""

from __future__ import annotations

import numpy as np
import pytest

from twin.errors import ParameterError, TwinError
from twin.gpu import PredictionError, simulate, static_power_w
from twin.rack import H100_8GPU, GpuRack, ac_power_w, fan_power_w, load_rack
from twin.stepper import Stepper
from twin.workload import CHECKPOINT, COMPUTE, IDLE, Schedule, desynchronise, synchronous_training


@pytest.fixture(scope="module")
def shipped():
    return load_rack(H100_8GPU)


@pytest.fixture(scope="module")
def training() -> Schedule:
    return synchronous_training(2.0, 0.7, 0.2, start_s=1.0, stop_s=40.0,
                                checkpoint_every_steps=5, checkpoint_s=2.0)


def test_idle_rack_draws_gpus_overhead_and_psu_losses(shipped):
    rack, gpu, temp = shipped
    out = GpuRack(rack, gpu, [Schedule.from_entries([])], temp).run(2.0, 0.01)
    p_gpu = rack.gpus * static_power_w(gpu, out["temp_c"])
    np.testing.assert_allclose(out["p_gpu_w"], p_gpu, rtol=1e-4)  # electrical lag
    p_dc = p_gpu + rack.host_w + rack.network_w + fan_power_w(rack, out["temp_c"])
    np.testing.assert_allclose(out["p_dc_w"], p_dc, rtol=1e-4)
    np.testing.assert_allclose(out["p_w"], ac_power_w(rack, p_dc), rtol=1e-6)
    assert (out["p_w"] > out["p_dc_w"]).all()
    assert out["energy_wh"][-1] == pytest.approx(out["p_w"][:-1].sum() * 0.01 / 3600, rel=1e-9)
    assert (out["phase"] == IDLE).all() and (out["limited"] == 0).all()


def test_one_group_rack_is_n_times_the_gpu_model(shipped, training):
    rack, gpu, temp = shipped
    out = GpuRack(rack, gpu, [training], temp).run(20.0, 0.01)
    one = simulate(gpu, training, 0.01, t0=0.0, t_end=20.0, temp_die_c=temp)
    np.testing.assert_allclose(out["p_gpu_w"], rack.gpus * one.power_w, rtol=1e-9)
    np.testing.assert_allclose(out["temp_c"], one.temp_c, rtol=1e-9)
    np.testing.assert_allclose(out["clock_mhz"], one.clock_mhz, rtol=1e-9)
    assert set(np.unique(out["phase"])) <= {IDLE, COMPUTE, 3, CHECKPOINT}


def test_groups_share_the_gpus_and_desynchronisation_smooths_the_rack(shipped, training):
    rack, gpu, temp = shipped
    same = GpuRack(rack, gpu, [[training, training]], temp).run(30.0, 0.01)
    one = GpuRack(rack, gpu, [training], temp).run(30.0, 0.01)
    np.testing.assert_allclose(same["p_w"], one["p_w"], rtol=1e-12)
    spread = GpuRack(rack, gpu, [desynchronise(training, 4, 1.0)], temp).run(30.0, 0.01)
    assert spread["p_w"][500:].std() < 0.8 * one["p_w"][500:].std()
    assert spread["energy_wh"][-1] == pytest.approx(one["energy_wh"][-1], rel=0.03)


def test_cap_holds_in_every_step(shipped, training):
    rack, gpu, temp = shipped
    free = GpuRack(rack, gpu, [training], temp).run(30.0, 0.01)
    cap = 6000.0
    capped = GpuRack(rack, gpu, [training], temp).run(30.0, 0.01, power_cap_w=cap)
    assert free["p_w"].max() > cap + 1000
    assert capped["p_w"].max() <= cap * (1 + 1e-9)
    assert (capped["power_cap_w"] == cap).all()
    assert capped["limited"].max() == 1 and free["limited"].max() == 0
    assert capped["energy_wh"][-1] < free["energy_wh"][-1]
    # Held mostly by the GPUs' own limiters (their limit is the cap's share), so the
    # brake only trims bursts: the temperature follows the lower power.
    assert capped["temp_c"][-1] < free["temp_c"][-1]
    # NaN or 0 mean no cap.
    nan = GpuRack(rack, gpu, [training], temp).run(30.0, 0.01, power_cap_w=np.nan)
    np.testing.assert_allclose(nan["p_w"], free["p_w"])


def test_floor_burns_and_holds(shipped, training):
    rack, gpu, temp = shipped
    floor = 4000.0
    free = GpuRack(rack, gpu, [training], temp).run(40.0, 0.01)
    held = GpuRack(rack.replace(power_floor_w=floor), gpu, [training], temp).run(40.0, 0.01)
    assert free["p_gpu_w"].min() < floor - 2000
    assert held["p_gpu_w"].min() >= floor - 1e-6
    burn_w = np.diff(held["e_burn_wh"]) * 3600 / 0.01
    assert (burn_w >= 0).all() and held["e_burn_wh"][-1] > 0
    # Burnt energy is the gap to the floor, about what the free rack leaves below it.
    gap_wh = np.maximum(floor - free["p_gpu_w"], 0).sum() * 0.01 / 3600
    assert held["e_burn_wh"][-1] == pytest.approx(gap_wh, rel=0.1)
    assert free["e_burn_wh"][-1] == 0


def test_ramp_limits_hold(shipped, training):
    rack, gpu, temp = shipped
    up, down = 2000.0, 1000.0
    out = GpuRack(rack.replace(ramp_up_w_per_s=up, ramp_down_w_per_s=down), gpu, [training],
                  temp).run(40.0, 0.01)
    d = np.diff(out["p_gpu_w"]) / 0.01
    assert d.max() <= up * (1 + 1e-9) and d.min() >= -down * (1 + 1e-9)
    assert out["e_burn_wh"][-1] > 0  # the slow fall burns
    assert out["limited"].max() == 1  # the slow rise throttles


def test_advance_matches_the_stepper_and_steps_split(shipped, training):
    rack, gpu, temp = shipped
    a = GpuRack(rack, gpu, [training, desynchronise(training, 1, 0)[0]], temp)
    b = GpuRack(rack, gpu, [training, training], temp)
    s = Stepper({"rack": b})
    x = a.initial_state()
    u = a.input_array(power_cap_w=np.array([0.0, 6500.0]))
    for k in range(300):
        x, y = a.advance(k * 0.05, x, u, 0.05)
        ys = s.advance({"rack": u}, 0.05)["rack"]
        np.testing.assert_allclose(y, ys, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x, s.state["rack"], rtol=1e-12)
    # A 50 ms step is five 10 ms sub-steps: the same energy as stepping 10 ms.
    fine = GpuRack(rack, gpu, [training, training], temp).run(15.0, 0.01,
                                                             np.array([0.0, 6500.0]))
    assert x[:, -2] == pytest.approx(fine["energy_wh"][-1] + fine["p_w"][-1] * 0.01 / 3600,
                                     rel=1e-6)


def test_scipy_reference_agrees_with_the_exact_step(shipped):
    rack, gpu, temp = shipped
    sched = synchronous_training(1.0, 0.5, 0.3, start_s=0.5, stop_s=6.0, mfu=0.3)
    runs = {}
    for method in ("exact", "scipy"):
        st = Stepper({"rack": GpuRack(rack, gpu, [sched], temp)}, method=method)
        u = {"rack": np.array([[0.0]])}
        for _ in range(300):
            st.advance(u, 0.02)
        runs[method] = st.state["rack"][0]
    names = GpuRack(rack, gpu, [sched], temp).state_names
    e = names.index("energy_wh")
    assert runs["scipy"][e] == pytest.approx(runs["exact"][e], rel=0.01)
    t = names.index("g0.temp_die_c")
    assert runs["scipy"][t] == pytest.approx(runs["exact"][t], abs=0.3)


def test_time_may_restart(shipped, training):
    rack, gpu, temp = shipped
    asset = GpuRack(rack, gpu, [training], temp)
    first = asset.run(10.0, 0.01)
    again = asset.run(10.0, 0.01)  # the schedule cursors find their way back
    np.testing.assert_allclose(first["p_w"], again["p_w"])


def test_bad_rack_input(shipped, tmp_path, training):
    rack, gpu, _ = shipped
    with pytest.raises(TwinError, match="same number"):
        GpuRack(rack, gpu, [[training], [training, training]])
    with pytest.raises(TwinError, match="9 groups for 8 GPUs"):
        GpuRack(rack, gpu, [[training] * 9])
    bad = tmp_path / "rack.toml"
    bad.write_text(H100_8GPU.read_text().replace("host_w", "hots_w"))
    with pytest.raises(ParameterError, match="did you mean 'host_w'"):
        load_rack(bad)
    bad.write_text(H100_8GPU.read_text().replace("0.90, 0.94", "0.90, 1.94"))
    with pytest.raises(ParameterError, match="psu_efficiency: values must be in"):
        load_rack(bad)
    bad.write_text(H100_8GPU.read_text().replace('gpu_params = "gpu_h100_sxm.toml"',
                                                 'gpu_params = "missing.toml"'))
    with pytest.raises(ParameterError, match="no such parameter file"):
        load_rack(bad)


def test_a_rack_in_hot_air_stops_where_its_gpus_would_shut_down(shipped):
    """In 66 degC air the GPUs' leakage ran away (kW per GPU, then NaN); the run stops."""
    rack, gpu, _ = shipped
    busy = Schedule.from_entries([{"t_s": 0.0, "load": "compute", "seconds": 120.0}])
    with pytest.raises(PredictionError, match=r"gpu_rack 0: at t = [0-9.]+ s its GPUs pass "
                                              r"their shutdown temperature \(92 degC"):
        GpuRack(rack, gpu.replace(ambient_c=66.0), [busy]).run(120.0, 0.1)
    with pytest.raises(ParameterError, match="initial die temperature 150 degC is outside"):
        GpuRack(rack, gpu, [busy], temp_c=150.0).run(1.0, 0.1)


@pytest.mark.parametrize(("initial", "message"), [
    ('temp_c = "warm"', "initial.temp_c: expected a number, got 'warm'"),
    ("temp_cc = 40.0", "initial.temp_cc: unknown initial condition (did you mean 'temp_c'?)"),
])
def test_a_racks_initial_conditions_are_checked(initial: str, message: str, tmp_path,
                                               training) -> None:
    from twin.microgrid import AssetSpec
    from twin.params import load
    from twin.rack import racks_from_specs

    path = tmp_path / "rack.toml"
    path.write_text(H100_8GPU.read_text().replace("[initial]\n", f"[initial]\n{initial}\n")
                    .replace('gpu_params = "gpu_h100_sxm.toml"',
                             f'gpu_params = "{H100_8GPU.with_name("gpu_h100_sxm.toml")}"'))
    spec = AssetSpec("n", "rack", "gpu_rack", load(path), drive=training)
    with pytest.raises(ParameterError) as exc:
        racks_from_specs([spec])
    assert message in str(exc.value) and str(path) in str(exc.value)
    path.write_text(path.read_text().replace(initial, "temp_c = 40.0"))
    assert racks_from_specs([AssetSpec("n", "rack", "gpu_rack", load(path),
                                       drive=training)]).temp_c == 40.0
