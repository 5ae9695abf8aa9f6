"""Fitting the Sandia coefficients to a recording of an emulator with other parameters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from twin import params
from twin.calibrate_inverter import VOLTAGE, fit_inverter_efficiency
from twin.errors import ParameterError
from twin.inverter import Inverter, InverterParams


@pytest.fixture(scope="module")
def base(repo) -> InverterParams:
    return InverterParams.from_params(
        params.load(repo / "twin/data/inverter_pv_abb_trio_60.toml"))


def off_by_20_percent(p: InverterParams) -> InverterParams:
    s = p.sandia
    emu = dataclasses.replace(s, pdco_w=s.pdco_w * 1.2, pso_w=s.pso_w * 0.8,
                              c0_per_w=s.c0_per_w * 1.2, c1_per_v=s.c1_per_v * 0.8,
                              c2_per_v=s.c2_per_v * 1.2, c3_per_v=s.c3_per_v * 0.8,
                              paco_w=s.paco_w * 1.2, pnt_w=s.pnt_w * 1.2)
    return dataclasses.replace(p, s_max_va=emu.paco_w, p_max_w=emu.paco_w, sandia=emu)


def record(emulator: InverterParams, voltages) -> dict[str, np.ndarray]:
    """A day-like sweep through the emulator (an Inverter asset), as a recording holds it."""
    inv = Inverter(emulator)
    x = inv.initial_state()
    p_dc = np.linspace(0.0, 1.4 * emulator.sandia.pdco_w, 150)
    rows = {"p_dc_w": [], "v_dc_v": [], "p_ac_w": []}
    for v in voltages:
        for p in p_dc:
            x, y = inv.advance(0.0, x, inv.input_array(p_dc_avail_w=p, v_dc_v=v), 1.0)
            o = inv.output_dict(y)
            rows["p_dc_w"].append(p)  # what a DC meter on the PV side reads
            rows["v_dc_v"].append(v)
            rows["p_ac_w"].append(o["p_ac_w"][0])
    return {k: np.array(v) for k, v in rows.items()}


def test_recovers_parameters_20_percent_off(base):
    emu = off_by_20_percent(base)
    rec = record(emu, voltages=[570.0, 720.0, 800.0])
    fitted, report = fit_inverter_efficiency(rec["p_dc_w"], rec["v_dc_v"], rec["p_ac_w"], base)
    assert set(report.fitted) >= set(VOLTAGE)
    assert report.paco_from_plateau and report.pnt_from_night
    for name in report.after:
        want = getattr(emu.sandia, name)
        assert abs(getattr(fitted.sandia, name) / want - 1) < 0.05, name
        assert abs(report.before[name] / want - 1) > 0.15, name  # it really was 20 % off
    assert report.rms_after_w < 1e-6 * report.rms_before_w


def test_constant_voltage_fits_what_it_can(base):
    emu = off_by_20_percent(base)
    rec = record(emu, voltages=[emu.sandia.vdco_v])
    fitted, report = fit_inverter_efficiency(rec["p_dc_w"], rec["v_dc_v"], rec["p_ac_w"], base)
    assert report.fitted == ("pdco_w", "pso_w", "c0_per_w")
    for name in VOLTAGE:  # not identifiable: kept
        assert getattr(fitted.sandia, name) == getattr(base.sandia, name)
    assert report.rms_after_w < 1e-3 * report.rms_before_w


def test_bad_recordings_are_named(base):
    with pytest.raises(ParameterError, match="differ in length"):
        fit_inverter_efficiency(np.ones(10), np.ones(9), np.ones(10), base)
    with pytest.raises(ParameterError, match="p_ac_w holds values that are not finite"):
        fit_inverter_efficiency(np.ones(10), np.ones(10), np.full(10, np.nan), base)
    with pytest.raises(ParameterError, match="only 0 running"):
        fit_inverter_efficiency(np.zeros(10), np.ones(10), np.zeros(10), base)


def test_a_narrow_band_of_power_keeps_what_it_cannot_tell(base):
    """A sunny noon at a third of the rating, in the 10 W steps of the power registers: the
    fit stays in range, the peak is no clipping plateau, and what the band of 10-25 kW does
    not determine keeps its base value."""
    s = base.sandia
    emu = dataclasses.replace(base, sandia=dataclasses.replace(s, pso_w=s.pso_w * 1.2))
    inv = Inverter(emu)
    x = inv.initial_state()
    t = np.linspace(-1.0, 1.0, 2000)
    p_dc = np.round(25e3 - 15e3 * t ** 2, -1)  # a peak of the sun, 10 W steps
    p_ac = []
    for p in p_dc:
        x, y = inv.advance(0.0, x, inv.input_array(p_dc_avail_w=p, v_dc_v=715.0), 1.0)
        p_ac.append(inv.output_dict(y)["p_ac_w"][0])
    p_ac = np.round(np.array(p_ac), -1)
    fitted, report = fit_inverter_efficiency(p_dc, np.full(p_dc.size, 715.0), p_ac, base)
    assert not report.paco_from_plateau and fitted.sandia.paco_w == s.paco_w
    assert "pso_w" in report.fitted and report.at_bound == ()
    assert fitted.sandia.pso_w == pytest.approx(1.2 * s.pso_w, rel=0.05)
    for name in report.kept:
        assert getattr(fitted.sandia, name) == getattr(s, name), name
    assert set(report.why_kept) == set(report.kept) >= set(VOLTAGE)
    assert report.rms_after_w < report.rms_before_w
