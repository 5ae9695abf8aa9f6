"""PV: PVWatts and Faiman against pvlib, the clear-sky day, cloud transients, the PV asset."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin import params, stepper
from twin.errors import ParameterError, TwinError
from twin.pv import (
    PV,
    CloudParams,
    PVParams,
    clear_sky_ghi,
    cloud_transients,
    faiman_temperature,
    haurwitz_ghi,
    pvwatts_dc,
    solar_declination,
    solar_zenith,
    sunrise_sunset,
)

pvlib = pytest.importorskip("pvlib")


@pytest.fixture(scope="module")
def array(repo) -> PVParams:
    return PVParams.from_params(params.load(repo / "twin/data/pv_80kwp.toml"))


def test_pvwatts_and_faiman_match_pvlib():
    g = np.linspace(0, 1300, 131)
    temp = np.linspace(-20, 80, 131)
    wind = np.linspace(0, 12, 131)
    assert np.allclose(pvwatts_dc(g, temp, 80e3, -0.0037),
                       pvlib.pvsystem.pvwatts_dc(g, temp, 80e3, -0.0037), rtol=1e-12)
    assert np.allclose(faiman_temperature(g, temp, wind),
                       pvlib.temperature.faiman(g, temp, wind), rtol=1e-12)
    assert pvwatts_dc(1000.0, 25.0, 80e3, -0.0037) == 80e3


def test_solar_geometry_matches_pvlib():
    doy = np.arange(1, 366)
    assert np.allclose(solar_declination(doy), pvlib.solarposition.declination_cooper69(doy),
                       rtol=1e-12)
    lat, ha, dec = np.deg2rad(48.0), np.deg2rad(np.linspace(-150, 150, 61)), 0.3
    assert np.allclose(solar_zenith(lat, ha, dec),
                       pvlib.solarposition.solar_zenith_analytical(lat, ha, dec), rtol=1e-12)
    zen_deg = np.linspace(0, 100, 101)
    ref = pvlib.clearsky.haurwitz(pd.Series(zen_deg))["ghi"].to_numpy()
    assert np.allclose(haurwitz_ghi(np.deg2rad(zen_deg)), ref, rtol=1e-12, atol=1e-12)


def test_clear_sky_day_shape():
    t = np.arange(0.0, 86400.0, 10.0)
    for lat, doy in ((48.0, 172), (48.0, 355), (0.0, 80)):
        ghi = clear_sky_ghi(t, lat, doy)
        rise, sset = sunrise_sunset(lat, doy)
        day = ghi > 0
        assert abs(t[day][0] / 3600 - rise) < 0.01 and abs(t[day][-1] / 3600 - sset) < 0.01
        assert t[np.argmax(ghi)] == 43200.0
        assert math.isclose(rise + sset, 24.0)
    summer, winter = clear_sky_ghi(43200.0, 48.0, 172), clear_sky_ghi(43200.0, 48.0, 355)
    assert 900 < summer < 1000 and 250 < winter < 350  # noon zenith 25.4 and 71.5 degrees
    assert sunrise_sunset(80.0, 172) == (0.0, 24.0) and sunrise_sunset(80.0, 355) == (12.0, 12.0)


def test_cloud_transients_are_seeded():
    t = np.arange(0.0, 7200.0, 1.0)
    a, b = cloud_transients(t, seed=11), cloud_transients(t, seed=11)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, cloud_transients(t, seed=12))
    assert np.all((a >= CloudParams().k_cloudy_min - 1e-12) & (a <= 1.0 + 1e-12))


def test_cloud_transient_statistics():
    """Over 20 simulated days the long-run figures come out as documented."""
    clouds = CloudParams(mean_clear_s=600.0, mean_cloudy_s=200.0, k_cloudy_min=0.2,
                         k_cloudy_max=0.4, edge_tau_s=5.0)
    t = np.arange(0.0, 20 * 86400.0, 2.0)
    k = cloud_transients(t, seed=5, clouds=clouds)
    assert abs(k.mean() - clouds.mean_index) < 0.01
    shaded = k < 0.7
    assert abs(shaded.mean() - clouds.cloudy_fraction) < 0.02
    # mean length of a shadow, from the edges of the shaded mask
    starts = np.flatnonzero(np.diff(shaded.astype(int)) == 1)
    assert abs(shaded.sum() * 2.0 / len(starts) - clouds.mean_cloudy_s) < 0.1 * 200.0
    # first-order edges: inside a long shadow successive changes shrink by e^(-dt/tau)
    s = next(j for j in starts if shaded[j + 1:j + 60].all())
    steps = np.diff(k[s:s + 6])
    assert np.allclose(steps[1:] / steps[:-1], math.exp(-2.0 / 5.0), rtol=1e-9)


def test_cloud_parameters_are_checked():
    with pytest.raises(ParameterError, match="k_cloudy_min"):
        CloudParams(k_cloudy_min=0.6, k_cloudy_max=0.5)
    with pytest.raises(TwinError, match="increasing"):
        cloud_transients([0.0, 2.0, 1.0], seed=1)


@pytest.mark.parametrize("method", stepper.METHODS)
def test_pv_asset_thermal_lag_and_energy(array, method):
    pv = PV(array)
    s = stepper.Stepper({"pv": pv}, method=method)
    u = pv.input_array(irradiance_w_m2=800.0, temp_air_c=20.0, wind_m_s=2.0)
    dt = 10.0
    e = 0.0
    for _ in range(360):
        o = pv.output_dict(s.advance({"pv": u}, dt)["pv"])
        e += o["p_dc_w"][0] * dt / 3600
    t_ss = faiman_temperature(800.0, 20.0, 2.0)
    t_end = t_ss + (25.0 - t_ss) * math.exp(-3600.0 / array.thermal_tau_s)
    assert math.isclose(s.state["pv"][0, 0], t_end, rel_tol=1e-9)
    assert math.isclose(s.state["pv"][0, 1], e, rel_tol=1e-9)
    p_expect = pvwatts_dc(800.0, o["temp_cell_c"][0], 80e3, -0.0037) * 0.86
    assert math.isclose(o["p_dc_w"][0], p_expect, rel_tol=1e-12)
    assert o["v_dc_v"][0] < array.v_mp_ref_v  # hot cells, lower voltage


def test_pv_feeds_the_inverter(array, repo):
    """A cloudy day through PV and the 60 kW inverter: clipping at noon, tare at night."""
    from twin.inverter import Inverter

    inv = Inverter.from_params(params.load(repo / "twin/data/inverter_pv_abb_trio_60.toml"))
    pv = PV(array)
    t = np.arange(0.0, 86400.0, 60.0)
    g = clear_sky_ghi(t, 35.0, 172) * 1.15 * cloud_transients(t, seed=2)
    xp, xi = pv.initial_state(), inv.initial_state()
    p_ac = []
    for gk in g:
        xp, yp = pv.advance(0.0, xp, pv.input_array(irradiance_w_m2=gk, temp_air_c=25.0), 60.0)
        o = pv.output_dict(yp)
        xi, yi = inv.advance(0.0, xi, inv.input_array(p_dc_avail_w=o["p_dc_w"][0],
                                                      v_dc_v=o["v_dc_v"][0]), 60.0)
        p_ac.append(inv.output_dict(yi)["p_ac_w"][0])
    p_ac = np.array(p_ac)
    assert p_ac.max() == 60e3 and p_ac.min() == -0.8
    assert np.all(p_ac <= 60e3)


@settings(max_examples=40, deadline=None)
@given(seq=st.lists(st.tuples(st.floats(-100, 1500), st.floats(-40, 50), st.floats(-5, 30)),
                    min_size=1, max_size=30), dt=st.sampled_from([0.01, 1.0, 60.0]))
def test_outputs_are_finite_and_power_not_negative(array, seq, dt):
    pv = PV(array)
    x = pv.initial_state()
    for row in seq:
        x, y = pv.advance(0.0, x, np.array([row]), dt)
        o = pv.output_dict(y)
        assert all(np.all(np.isfinite(v)) for v in o.values())
        assert o["p_dc_w"][0] >= 0.0


def test_pv_parameter_errors(array):
    with pytest.raises(ParameterError, match="losses_frac"):
        dataclasses.replace(array, losses_frac=1.0)
