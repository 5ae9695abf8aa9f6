"""Calibration: an emulator whose parameters are 20 % off the twin's is recovered within 5 %."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from twin import params as tp
from twin.battery import (
    OUTPUT_NAMES,
    Battery,
    BatteryInitial,
    BatteryParams,
    PackParams,
    params_from_set,
)
from twin.calibrate_battery import fit_battery, pulse_guesses
from twin.errors import TwinError
from twin.params import Table

from .test_battery import simple_cell

DATA = Path(__file__).resolve().parents[2] / "twin" / "data"
Y = {name: k for k, name in enumerate(OUTPUT_NAMES)}
OFF = {"r0_ohm": 1.2, "r1_ohm": 0.8, "c1_f": 1.2, "r2_ohm": 1.2, "c2_f": 0.8,
       "capacity_ah": 0.8}


def scaled(cell: BatteryParams, factors: dict[str, float]) -> BatteryParams:
    def one(v: float | Table, f: float) -> float | Table:
        return Table(v.axes, v.values * f) if isinstance(v, Table) else v * f
    return dataclasses.replace(cell, **{k: one(getattr(cell, k), f) for k, f in factors.items()})


def pulse_profile(cycles: int, dt: float, amps: float) -> np.ndarray:
    """Discharge pulse, long rest, shorter charge pulse, long rest: net discharge."""
    one = np.concatenate([np.full(int(120 / dt), amps), np.zeros(int(600 / dt)),
                          np.full(int(120 / dt), -amps / 2), np.zeros(int(600 / dt))])
    return np.tile(one, cycles)


def record(pack: PackParams, current: np.ndarray, dt: float, soc0: float,
           seed: int) -> tuple[np.ndarray, ...]:
    """What an emulator with ``pack`` records: noisy voltage and temperature."""
    bat = Battery(pack, initial=BatteryInitial(soc=soc0))
    u = np.zeros((current.size, 1, 2))
    u[:, 0, 0] = current
    y = bat.run(bat.initial_state(), u, dt)[1][:, 0, :]
    rng = np.random.default_rng(seed)
    v = y[:, Y["voltage_v"]] + rng.normal(0.0, 0.5e-3 * pack.cells_series, current.size)
    temp = y[:, Y["temp_cell_c"]] + rng.normal(0.0, 0.05, current.size)
    return np.arange(current.size) * dt, v, temp


def test_recovers_ecm_example_with_two_rc_pairs() -> None:
    pack, _ = params_from_set(tp.load(DATA / "battery_ecm_example.toml"))
    twin = dataclasses.replace(pack.cell, r2_ohm=3e-4, c2_f=1e6)  # tables for R0, R1, C1
    emulator = scaled(twin, OFF)
    current = pulse_profile(8, 1.0, 100.0)
    t, v, temp = record(PackParams(emulator), current, 1.0, 0.7, seed=1)
    fitted, report = fit_battery(t, current, v, temp, twin, soc0=0.7)
    assert isinstance(fitted, BatteryParams)
    for name, factor in OFF.items():
        assert report["factors"][name] == pytest.approx(factor, rel=0.05), name
    np.testing.assert_allclose(fitted.r0_ohm.values, emulator.r0_ohm.values, rtol=0.05)
    assert fitted.capacity_ah == pytest.approx(80.0, rel=0.05)
    # residuals shrink from tens of millivolts to the 0.5 mV noise
    assert report["rms_base_v"] > 10e-3
    assert report["rms_fit_v"] < 0.6e-3
    assert report["success"]
    assert report["not_determined"] == [] and report["at_bound"] == []


def test_recovers_a_pack_with_one_rc_pair() -> None:
    twin = PackParams(simple_cell(r2_ohm=0.0, c2_f=0.0), cells_series=4, cells_parallel=2)
    off = {k: OFF[k] for k in ("r0_ohm", "r1_ohm", "c1_f", "capacity_ah")}
    emulator = PackParams(scaled(twin.cell, off), 4, 2)
    current = pulse_profile(6, 2.0, 150.0)
    t, v, temp = record(emulator, current, 2.0, 0.6, seed=2)
    fitted, report = fit_battery(t, current, v, temp, twin, soc0=0.6, n_rc=1)
    assert isinstance(fitted, PackParams) and fitted.cells_series == 4
    assert report["fields"] == ["r0_ohm", "r1_ohm", "c1_f", "capacity_ah"]
    for name, factor in off.items():
        assert report["factors"][name] == pytest.approx(factor, rel=0.05), name
    assert fitted.cell.r2_ohm == 0.0
    assert report["rms_fit_v"] < report["rms_base_v"] / 10


def test_pulse_guesses_read_the_circuit() -> None:
    """On a clean pulse and relaxation the guesses are close to the truth."""
    cell = simple_cell(r0_ohm=1e-3, r1_ohm=2e-3, c1_f=1e4, r2_ohm=1e-3, c2_f=3e5)
    current = np.concatenate([np.zeros(10), np.full(300, 80.0), np.zeros(3000)])
    bat = Battery(cell)
    u = np.zeros((current.size, 1, 2))
    u[:, 0, 0] = current
    v = bat.run(bat.initial_state(), u, 0.5)[1][:, 0, Y["voltage_v"]]
    g = pulse_guesses(np.arange(current.size) * 0.5, current, v)
    assert g["r0_ohm"] == pytest.approx(1e-3, rel=0.05)  # includes 0.5 s of RC response
    assert g["tau1_s"] == pytest.approx(20.0, rel=0.05)
    assert g["r1_ohm"] == pytest.approx(2e-3, rel=0.05)
    assert g["tau2_s"] == pytest.approx(300.0, rel=0.1)


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "voltage_v": a["voltage_v"][:-1]}, "must be one-dimensional and of equal"),
    (lambda a: {**a, "voltage_v": np.where(np.arange(50) == 7, np.nan, a["voltage_v"])},
     r"voltage_v\[7\] is not finite"),
    (lambda a: {**a, "t_s": a["t_s"][::-1]}, "t_s must increase strictly"),
    (lambda a: {k: v[:5] for k, v in a.items()}, "5 samples are too few"),
])
def test_bad_recordings(change, message: str) -> None:
    good = {"t_s": np.arange(50.0), "current_a": np.ones(50), "voltage_v": np.full(50, 3.7),
            "temp_c": np.full(50, 25.0)}
    with pytest.raises(TwinError, match=message):
        fit_battery(**change(good), base=simple_cell(), soc0=0.5)
    with pytest.raises(TwinError, match="n_rc=3"):
        fit_battery(**good, base=simple_cell(), soc0=0.5, n_rc=3)


def test_a_recording_at_rest_is_refused() -> None:
    pack = PackParams(simple_cell(), cells_series=4, cells_parallel=1)
    current = np.zeros(600)
    t, v, temp = record(pack, current, 1.0, 0.5, seed=3)
    with pytest.raises(TwinError, match=r"does not excite the battery: no parameter moves its "
                                        r"voltage measurably \(current 0 to 0 A\)"):
        fit_battery(t, current, v, temp, pack, soc0=0.5)


def test_what_the_recording_cannot_see_keeps_its_value() -> None:
    """With a flat OCV the SOC, hence the capacity, leaves no mark on the voltage: the
    capacity keeps the twin's value while the resistances are still fitted."""
    flat = Table((("soc", np.array([0.0, 1.0])),), np.array([3.3, 3.3]))
    twin = simple_cell(ocv_v=flat)
    off = {"r0_ohm": 1.2, "r1_ohm": 0.8, "c1_f": 1.2, "capacity_ah": 0.8}
    current = pulse_profile(4, 1.0, 50.0)
    t, v, temp = record(PackParams(scaled(twin, off)), current, 1.0, 0.6, seed=4)
    fitted, report = fit_battery(t, current, v, temp, twin, soc0=0.6)
    assert report["not_determined"] == ["capacity_ah"]
    assert fitted.capacity_ah == twin.capacity_ah
    assert report["factors"]["r0_ohm"] == pytest.approx(1.2, rel=0.05)
    assert report["at_bound"] == []


def test_a_capacity_with_little_charge_moved_keeps_its_value() -> None:
    """Pulses that move 0.75 % of the capacity: too little to read it from the OCV (an error
    of a few mV in the OCV table would be a large one of the capacity), even where, as here,
    the model is exact and the noise alone would allow it.  The capacity keeps the twin's
    value, and the report says why; the resistances are fitted."""
    twin = PackParams(simple_cell(r2_ohm=0.0, c2_f=0.0), cells_series=4, cells_parallel=2)
    off = {"r0_ohm": 1.2, "r1_ohm": 0.8, "c1_f": 1.2}
    current = np.tile(np.concatenate([np.full(30, 120.0), np.zeros(60), np.full(30, -100.0),
                                      np.zeros(60)]), 4)
    t, v, temp = record(PackParams(scaled(twin.cell, off), 4, 2), current, 1.0, 0.5, seed=5)
    fitted, report = fit_battery(t, current, v, temp, twin, soc0=0.5, n_rc=1)
    assert report["charge_moved_ah"] == pytest.approx(1.5)
    assert report["not_determined"] == ["capacity_ah"]
    assert report["why_not_determined"] == {
        "capacity_ah": "the recording moves 1.5 Ah, 0.75% of 200 Ah (fitted from 1%)"}
    assert fitted.cell.capacity_ah == twin.cell.capacity_ah
    for name, factor in off.items():
        assert report["factors"][name] == pytest.approx(factor, rel=0.05), name
    assert set(report["std_errors"]) == set(off)


def test_a_capacity_the_noise_hides_keeps_its_value() -> None:
    """An OCV that rises 0.5 mV from empty to full: 4 % of the capacity moved changes it by
    less than the noise, so the capacity's standard error is far above 5 %: it is kept."""
    almost_flat = Table((("soc", np.array([0.0, 1.0])),), np.array([3.3, 3.3005]))
    twin = simple_cell(ocv_v=almost_flat, r2_ohm=0.0, c2_f=0.0)
    off = {"r0_ohm": 1.2, "r1_ohm": 0.8, "c1_f": 1.2, "capacity_ah": 0.8}
    current = pulse_profile(4, 1.0, 50.0)
    t, v, temp = record(PackParams(scaled(twin, off)), current, 1.0, 0.6, seed=6)
    fitted, report = fit_battery(t, current, v, temp, twin, soc0=0.6, n_rc=1)
    assert report["not_determined"] == ["capacity_ah"]
    assert report["why_not_determined"]["capacity_ah"].startswith("its standard error is ")
    assert fitted.capacity_ah == twin.capacity_ah
    assert report["factors"]["r0_ohm"] == pytest.approx(1.2, rel=0.05)
