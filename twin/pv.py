"""PV arrays: irradiance and cell temperature to DC power, clear-sky days and cloud transients.

Pure functions first (pvlib's layering):

- :func:`pvwatts_dc`: DC power of an array, PVWatts version 5 [1]_;
- :func:`faiman_temperature`: steady-state cell temperature, Faiman's model [2]_;
- :func:`solar_declination`, :func:`solar_zenith`, :func:`haurwitz_ghi`,
  :func:`sunrise_sunset`, :func:`clear_sky_ghi`: the shape of a clear day for a latitude and a
  day of the year (Cooper's declination [3]_, Haurwitz's clear-sky irradiance [4]_);
- :func:`cloud_transients`: a seeded clear-sky index from a two-state Markov chain with
  first-order edges.

Then :class:`PV`, an :class:`~twin.stepper.Asset` over ``n`` arrays with one state per array,
the cell temperature, which lags the Faiman temperature with the module's thermal time
constant (a module takes minutes to warm).  Like every asset its DC power is evaluated at
``t_k`` and held over the step, and ``energy_wh`` integrates exactly that.

References
----------
.. [1] A. P. Dobos, "PVWatts Version 5 Manual", NREL/TP-6A20-62641, 2014.
   :doi:`10.2172/1158421`
.. [2] D. Faiman, "Assessing the outdoor operating temperature of photovoltaic modules",
   Progress in Photovoltaics 16 (2008) 307-315. :doi:`10.1002/pip.813`
.. [3] P. I. Cooper, "The absorption of radiation in solar stills", Solar Energy 12 (1969)
   333-346. :doi:`10.1016/0038-092X(69)90047-4`
.. [4] B. Haurwitz, "Insolation in Relation to Cloud Cover", Journal of Meteorology 2 (1945)
   154-166.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numba
import numpy as np

from twin import stepper
from twin.errors import ParameterError, TwinError
from twin.params import ParamSet, from_mapping
from twin.units import S_PER_H

IRRADIANCE_REF_W_M2 = 1000.0
TEMP_REF_C = 25.0


# --------------------------------------------------------------------------------------------
# pure functions


def pvwatts_dc(irradiance_w_m2, temp_cell_c, p_dc0_w, gamma_pdc_per_c, temp_ref_c=TEMP_REF_C):
    """DC power of an array, PVWatts version 5 [1]_.

    ``p = p_dc0 * G / 1000 * (1 + gamma (T_cell - T_ref))``.

    Parameters
    ----------
    irradiance_w_m2 : ndarray or float
        Plane-of-array irradiance reaching the cells. [W/m^2]
    temp_cell_c : ndarray or float
        Cell temperature. [degC]
    p_dc0_w : float
        DC rating at 1000 W/m^2 and ``temp_ref_c``. [W]
    gamma_pdc_per_c : float
        Temperature coefficient of power (negative for silicon). [1/degC]
    temp_ref_c : float
        Reference cell temperature. [degC]

    Returns
    -------
    ndarray or float
        DC power. [W]
    """
    return (irradiance_w_m2 / IRRADIANCE_REF_W_M2 * p_dc0_w
            * (1.0 + gamma_pdc_per_c * (temp_cell_c - temp_ref_c)))


def faiman_temperature(irradiance_w_m2, temp_air_c, wind_m_s=1.0, u0=25.0, u1=6.84):
    """Steady-state cell temperature, Faiman's model [2]_. [degC]

    ``T = T_air + G / (u0 + u1 * wind)``; ``u0`` [W/(m^2 K)] and ``u1`` [W s/(m^3 K)]
    default to the values Faiman fitted (as pvlib's defaults).  Arguments are arrays or
    floats (the lockstep kernel compiles this same function for floats).
    """
    return temp_air_c + irradiance_w_m2 / (u0 + u1 * wind_m_s)


def solar_declination(day_of_year):
    """Solar declination, Cooper's formula [3]_. [rad]"""
    return np.deg2rad(23.45 * np.sin(2.0 * np.pi * (284.0 + np.asarray(day_of_year)) / 365.0))


def solar_zenith(latitude_rad, hour_angle_rad, declination_rad):
    """Solar zenith angle from latitude, hour angle and declination. [rad]"""
    cos_z = (np.sin(latitude_rad) * np.sin(declination_rad)
             + np.cos(latitude_rad) * np.cos(declination_rad) * np.cos(hour_angle_rad))
    return np.arccos(np.clip(cos_z, -1.0, 1.0))


def haurwitz_ghi(zenith_rad):
    """Clear-sky global horizontal irradiance, Haurwitz's model [4]_; zero at night. [W/m^2]"""
    cos_z = np.cos(np.asarray(zenith_rad, dtype=float))
    day = cos_z > 0
    safe = np.where(day, cos_z, 1.0)
    ghi = np.where(day, 1098.0 * safe * np.exp(-0.059 / safe), 0.0)
    return ghi if ghi.ndim else float(ghi)


def sunrise_sunset(latitude_deg: float, day_of_year: float) -> tuple[float, float]:
    """Sunrise and sunset in hours of apparent solar time (0 and 24 in polar day). [h]"""
    tan_prod = -np.tan(np.deg2rad(latitude_deg)) * np.tan(solar_declination(day_of_year))
    if tan_prod >= 1.0:  # polar night
        return 12.0, 12.0
    if tan_prod <= -1.0:  # polar day
        return 0.0, 24.0
    half = np.rad2deg(np.arccos(tan_prod)) / 15.0
    return 12.0 - half, 12.0 + half


def clear_sky_ghi(t_s, latitude_deg: float, day_of_year: float):
    """Clear-sky irradiance over a day; ``t_s`` is seconds after solar midnight. [W/m^2]

    The array is taken as horizontal (plane-of-array irradiance equals the global horizontal
    irradiance): the shape of the day, with sunrise and sunset where
    :func:`sunrise_sunset` puts them and the peak at solar noon.
    """
    hour_angle = np.deg2rad(15.0 * (np.asarray(t_s, dtype=float) / S_PER_H - 12.0))
    zenith = solar_zenith(np.deg2rad(latitude_deg), hour_angle,
                          solar_declination(day_of_year))
    return haurwitz_ghi(zenith)


@dataclass(frozen=True)
class CloudParams:
    """Statistics of the cloud-transient generator (see :func:`cloud_transients`)."""

    mean_clear_s: float = 600.0
    """Mean duration of a clear spell. [s]"""
    mean_cloudy_s: float = 180.0
    """Mean duration of a cloud's shadow. [s]"""
    k_cloudy_min: float = 0.2
    """Lowest clear-sky index under a cloud. [W/W]"""
    k_cloudy_max: float = 0.5
    """Highest clear-sky index under a cloud. [W/W]"""
    edge_tau_s: float = 5.0
    """Time constant of the shadow's edges. [s]"""

    def __post_init__(self) -> None:
        if self.mean_clear_s <= 0 or self.mean_cloudy_s <= 0 or self.edge_tau_s < 0:
            raise ParameterError("clouds: mean durations must be > 0, edge_tau_s >= 0")
        if not 0 <= self.k_cloudy_min <= self.k_cloudy_max <= 1:
            raise ParameterError("clouds: need 0 <= k_cloudy_min <= k_cloudy_max <= 1")

    @property
    def cloudy_fraction(self) -> float:
        """Long-run fraction of time under a cloud."""
        return self.mean_cloudy_s / (self.mean_clear_s + self.mean_cloudy_s)

    @property
    def mean_index(self) -> float:
        """Long-run mean clear-sky index (the edges' filter keeps the mean)."""
        f = self.cloudy_fraction
        return (1.0 - f) + f * 0.5 * (self.k_cloudy_min + self.k_cloudy_max)


@numba.njit(cache=True, error_model="numpy")
def _lag_filter(t, target, tau, y0):
    y = np.empty(t.size)
    y[0] = y0
    for k in range(t.size - 1):
        a = np.exp(-(t[k + 1] - t[k]) / tau) if tau > 0 else 0.0
        y[k + 1] = target[k] + a * (y[k] - target[k])
    return y


def cloud_transients(t_s, seed: int, clouds: CloudParams = CloudParams()) -> np.ndarray:
    """A clear-sky index (1 clear, below 1 shaded) at times ``t_s``, the same for one seed.

    A two-state continuous-time Markov chain: clear spells and cloud shadows alternate, each
    lasting an exponentially distributed time (means ``mean_clear_s``, ``mean_cloudy_s``);
    the first state is drawn from the stationary distribution, so the long-run cloudy
    fraction is :attr:`CloudParams.cloudy_fraction` from the start.  Each shadow has its own
    depth, uniform in ``[k_cloudy_min, k_cloudy_max]``.  The index follows the piecewise
    constant state through a first-order lag of ``edge_tau_s`` (exact on the sample times,
    with the state sampled at the start of each interval), so the long-run mean is
    :attr:`CloudParams.mean_index`.

    Parameters
    ----------
    t_s : array_like
        Increasing sample times. [s]
    seed : int
        Seed of the random generator (``numpy.random.default_rng``).
    clouds : CloudParams
        Statistics of the clouds.

    Returns
    -------
    ndarray
        Clear-sky index at each time. [W/W]
    """
    t = np.asarray(t_s, dtype=float)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) < 0):
        raise TwinError("cloud_transients: t_s must be a non-empty increasing 1-D array")
    rng = np.random.default_rng(seed)
    span = t[-1] - t[0]
    cloudy = bool(rng.random() < clouds.cloudy_fraction)
    ends, levels = [], []
    now = t[0]
    while now <= t[-1]:
        mean = clouds.mean_cloudy_s if cloudy else clouds.mean_clear_s
        depth = rng.uniform(clouds.k_cloudy_min, clouds.k_cloudy_max)
        now += rng.exponential(mean)
        ends.append(now)
        levels.append(depth if cloudy else 1.0)
        cloudy = not cloudy
        if len(ends) > 10 + 100 * span / min(clouds.mean_clear_s, clouds.mean_cloudy_s):
            raise TwinError("cloud_transients: too many spells; check the mean durations")
    state = np.asarray(levels)[np.searchsorted(np.asarray(ends), t, side="right")]
    return _lag_filter(t, state, clouds.edge_tau_s, state[0])


# --------------------------------------------------------------------------------------------
# parameters and the asset


@dataclass(frozen=True)
class PVParams:
    """One PV array (PVWatts model with Faiman cell temperature and a thermal lag)."""

    p_dc0_w: float
    """DC rating at 1000 W/m^2 and 25 degC. [W]"""
    gamma_pdc_per_c: float = -0.0037
    """Temperature coefficient of power. [1/degC]"""
    losses_frac: float = 0.14
    """DC system losses (soiling, shading, mismatch, wiring...), PVWatts' default 14 %."""
    u0: float = 25.0
    """Faiman's constant heat-loss coefficient. [W/(m^2 K)]"""
    u1: float = 6.84
    """Faiman's wind heat-loss coefficient. [W s/(m^3 K)]"""
    thermal_tau_s: float = 420.0
    """Time constant of the module temperature. [s]"""
    v_mp_ref_v: float = 700.0
    """Array voltage at the maximum power point at 25 degC. [V]"""
    beta_vmp_per_c: float = -0.0035
    """Temperature coefficient of the maximum-power voltage. [1/degC]"""

    def __post_init__(self) -> None:
        if self.p_dc0_w <= 0 or self.v_mp_ref_v <= 0 or self.thermal_tau_s <= 0:
            raise ParameterError("p_dc0_w, v_mp_ref_v and thermal_tau_s must be positive")
        if not 0 <= self.losses_frac < 1:
            raise ParameterError("losses_frac: must be in [0, 1)")
        if self.u0 <= 0 or self.u1 < 0:
            raise ParameterError("u0 must be positive and u1 not negative")

    @classmethod
    def from_params(cls, pset: ParamSet) -> PVParams:
        """The parameters of a ``pv`` parameter file."""
        if pset.kind != "pv":
            where = pset.path or pset.name
            raise ParameterError(f"{where}: meta.kind is '{pset.kind}', expected 'pv'")
        return from_mapping(cls, pset.params, where=f"{pset.path or pset.name}: params")


_pvwatts = numba.njit(cache=True)(pvwatts_dc)
_faiman = numba.njit(cache=True)(faiman_temperature)

_P0, _GAM, _LOSS, _U0, _U1, _VMP, _BETA = range(7)
_UG, _UT, _UW = range(3)
_WTSS, _WPDC, _WG, _WV = range(4)
_NW = 4
_NY = 5


@numba.njit(cache=True, error_model="numpy")
def _hold_kernel(x, u, par):
    n = x.shape[0]
    w = np.empty((n, _NW))
    for i in range(n):
        g = max(u[i, _UG], 0.0)
        temp = x[i, 0]
        w[i, _WTSS] = _faiman(g, u[i, _UT], max(u[i, _UW], 0.0), par[i, _U0], par[i, _U1])
        p = _pvwatts(g, temp, par[i, _P0], par[i, _GAM], TEMP_REF_C) * (1.0 - par[i, _LOSS])
        w[i, _WPDC] = max(p, 0.0)
        w[i, _WG] = g
        w[i, _WV] = par[i, _VMP] * (1.0 + par[i, _BETA] * (temp - TEMP_REF_C))
    return w


@numba.njit(cache=True, error_model="numpy")
def _step_into(x, w, a, dt, xn):
    """Exact step into ``xn``, which may be ``x`` itself (each element is read, then written)."""
    for i in range(x.shape[0]):
        xn[i, 0] = w[i, _WTSS] + a[i] * (x[i, 0] - w[i, _WTSS])
        xn[i, 1] = x[i, 1] + w[i, _WPDC] * dt / 3600.0


@numba.njit(cache=True, error_model="numpy")
def _outputs_into(x, w, y):
    for i in range(x.shape[0]):
        y[i, 0] = w[i, _WPDC]
        y[i, 1] = w[i, _WG]
        y[i, 2] = x[i, 0]
        y[i, 3] = w[i, _WV]
        y[i, 4] = x[i, 1]


@numba.njit(cache=True, error_model="numpy")
def _step_kernel(x, w, a, dt):
    xn = np.empty_like(x)
    _step_into(x, w, a, dt, xn)
    return xn


@numba.njit(cache=True, error_model="numpy")
def _outputs_kernel(x, w):
    y = np.empty((x.shape[0], _NY))
    _outputs_into(x, w, y)
    return y


@numba.njit(cache=True, error_model="numpy")
def advance_inplace(t, x, u, dt, y, par, a):
    """:meth:`PV.advance` into the caller's arrays, for compiled callers (the microgrid's
    fused step): ``x`` is stepped in place, ``y`` receives the outputs at ``t``; ``(par, a)``
    is :meth:`PV.kernel_args` (``t`` is there for the signature every asset shares)."""
    w = _hold_kernel(x, u, par)
    _outputs_into(x, w, y)
    _step_into(x, w, a, dt, x)


@numba.njit(cache=True, error_model="numpy")
def _advance_kernel(x, u, par, a, dt):
    xn = x.copy()
    y = np.empty((x.shape[0], _NY))
    advance_inplace(0.0, xn, u, dt, y, par, a)
    return xn, y


class PV(stepper.Asset):
    """``n`` PV arrays: plane-of-array irradiance, air temperature and wind to DC power.

    ``p_dc_w`` is the power at the maximum power point after system losses, the power an
    inverter is offered (:class:`twin.inverter.Inverter` input ``p_dc_avail_w``), and
    ``v_dc_v`` the voltage it is offered at (input ``v_dc_v``).  Negative irradiance and
    wind are read as zero.
    """

    kind: ClassVar[str] = "pv"
    state_names: ClassVar[tuple[str, ...]] = ("temp_cell_c", "e_dc_wh")
    input_names: ClassVar[tuple[str, ...]] = ("irradiance_w_m2", "temp_air_c", "wind_m_s")
    held_names: ClassVar[tuple[str, ...]] = ("temp_cell_ss_c", "p_dc_w", "irradiance_w_m2",
                                             "v_dc_v")
    output_names: ClassVar[tuple[str, ...]] = ("p_dc_w", "irradiance_w_m2", "temp_cell_c",
                                               "v_dc_v", "energy_wh")

    def __init__(self, params: PVParams | Sequence[PVParams], n: int | None = None,
                 initial: Mapping[str, float] | None = None) -> None:
        plist = stepper.per_unit(params, n, PVParams, "pv")
        self.n = len(plist)
        self.params = plist
        self._par = np.array([[p.p_dc0_w, p.gamma_pdc_per_c, p.losses_frac, p.u0, p.u1,
                               p.v_mp_ref_v, p.beta_vmp_per_c] for p in plist])
        self._a = stepper.LagFactors(np.array([p.thermal_tau_s for p in plist]))
        self._initial = dict(initial or {})

    @classmethod
    def from_params(cls, pset: ParamSet, n: int = 1) -> PV:
        """``n`` identical arrays from a parameter file, with its initial conditions."""
        return cls(PVParams.from_params(pset), n=n, initial=pset.initial)

    def default_inputs(self) -> np.ndarray:
        """Night at 25 degC with a 1 m/s breeze."""
        u = np.zeros((self.n, len(self.input_names)))
        u[:, _UT] = TEMP_REF_C
        u[:, _UW] = 1.0
        return u

    def initial_state(self) -> np.ndarray:
        """Cells at ``[initial] temp_cell_c`` (default 25 degC), counter at zero."""
        x = np.zeros((self.n, 2))
        x[:, 0] = float(self._initial.get("temp_cell_c", TEMP_REF_C))
        x[:, 1] = float(self._initial.get("e_dc_wh", 0.0))
        return x

    def hold(self, t: float, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        return _hold_kernel(np.ascontiguousarray(x, dtype=float),
                            np.ascontiguousarray(u, dtype=float), self._par)

    def rhs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        dx = np.empty_like(x)
        dx[:, 0] = (w[:, _WTSS] - x[:, 0]) / self._a.tau_s
        dx[:, 1] = w[:, _WPDC] / S_PER_H
        return dx

    def step_exact(self, x: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
        return _step_kernel(np.ascontiguousarray(x, dtype=float), w, self._a(dt), dt)

    def outputs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _outputs_kernel(np.ascontiguousarray(x, dtype=float), w)

    def advance(self, t: float, x: np.ndarray, u: np.ndarray,
                dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Hold, outputs at ``t`` and the exact step in one compiled call: ``(x_next, y)``."""
        return _advance_kernel(x, u, self._par, self._a(dt), dt)

    def kernel_args(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """The arrays :func:`advance_inplace` takes after ``y`` for steps of ``dt``."""
        return self._par, self._a(dt)
