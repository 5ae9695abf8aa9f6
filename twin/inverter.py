"""Inverters and bidirectional converters: efficiency, limits, first-order response, droop.

Three layers, as in pvlib:

1. pure functions over arrays: the Sandia inverter model (:func:`sandia_ac_power`,
   :func:`sandia_efficiency`, its inverse :func:`sandia_dc_power`), the symmetric loss model of
   a bidirectional battery converter (:func:`converter_losses`, :func:`converter_ac_power`), the
   IEEE 1547-2018 volt-var and frequency-droop curves (:func:`volt_var`,
   :func:`frequency_droop`) and the grid-forming droop laws (:func:`droop_power`);
2. parameter dataclasses (:class:`InverterParams` and its parts) read from parameter files;
3. :class:`Inverter`, an :class:`~twin.stepper.Asset` over ``n`` units, and
   :func:`simulate_profile`, which runs one unit over a recorded input profile.

The dynamic model of one unit (states ``p_cmd_w``, ``q_cmd_var``: the active and reactive power
*commands* after the controller's first-order response)::

    tau dp_cmd/dt = p_ref - p_cmd          tau dq_cmd/dt = q_ref - q_cmd

``p_ref``/``q_ref`` are what the unit is asked for in its mode, held over the step:

``grid_following``
    ``p_ref = min(p_set_w, w_max_lim_pct/100 * p_max_w)`` (SunSpec model 704's ``WSet`` and
    ``WMaxLimPct``), adjusted by frequency droop when enabled (the pre-disturbance power of
    IEEE 1547 taken as what the unit delivers at the instant: ``min(p_ref, available)``);
    ``q_ref = q_set_var`` or the volt-var curve when enabled.  ``tau`` is ``tau_s``.
``grid_forming``
    P-f and Q-V droop, ``p_ref = p_set + (f_nom - f) / (m_p f_nom) * p_max`` and
    ``q_ref = q_set + (v_nom - v) / (m_q v_nom) * s_max``; the first-order lag is the power
    low-pass filter of the droop loop (``tau_pf_s``), written in admittance form: the bus
    (:mod:`twin.bus`) closes the loop through the frequency.

The references are first bounded (``[0, p_max]`` for a PV inverter, ``[-p_max, p_max]`` for a
converter), then limited to the apparent-power circle with P or Q priority (applied to the
active power the unit can deliver, so a PV inverter offered little DC keeps its reactive
headroom), then ramp-limited so the command moves at most ``ramp_w_per_s * dt`` per step (the
reactive reference yields so the circle still holds).  The terminal powers are limited to
the circle once more, so they never leave it.

The terminal power is the command bounded by what the DC side offers: a PV inverter delivers
``min(p_cmd, sandia_ac_power(v_dc, p_dc_avail))`` (drops in irradiance act at once, as the
MPPT and DC-link control are much faster than ``tau``), or stands by at ``-pnt_w`` when the DC
power is below its start-up power ``pso_w``; the DC power it draws is the Sandia curve
inverted at that AC power.  A converter delivers the command and draws
``p_ac + converter_losses(p_ac)`` from its DC side; its DC source (the battery) enforces its
own limits.

Inputs outside the model's range are taken at its bounds and set the output
``input_limited``: ``w_max_lim_pct`` outside ``[0, 100]``; a PV inverter offered more DC
power than the top of its Sandia curve (a downward parabola: beyond its vertex the curve
falls, and goes negative; the inverter clips there, as it clips at ``paco_w`` below it), or
offered power at a DC voltage that is not positive (or so far from ``vdco_v`` that the
curve no longer rises): it stands by.  So a PV inverter's AC power stays within
``[0, p_max]`` whatever it is offered, but for its night tare ``-pnt_w`` standing by and
the curve's own few watts below zero just above ``pso_w`` where ``v_dc`` shifts its zero
(as pvlib computes it).
:func:`simulate_profile` refuses such inputs in a recorded profile instead, naming the
column and the time.

Terminal powers are evaluated once per step from the *mean* of the command over
``[t_k, t_k + dt]`` (the first-order response to the held reference, integrated exactly:
``mean = ref + (cmd_k - ref) (1 - a) / ln(1/a)`` with ``a = exp(-dt/tau)``), so a setpoint
acts within the step it is given, whatever ``dt`` is; they are held over the step (the
zero-order hold of the lockstep loop), and the energy counters integrate exactly those held
values, so the energy a node's bus sees from this unit equals the unit's own counters:
``e_dc_wh = e_ac_wh + e_loss_wh`` holds to rounding in every run.

References
----------
.. [1] D. King, S. Gonzalez, G. Galbraith, W. Boyson, "Performance Model for Grid-Connected
   Photovoltaic Inverters", Sandia National Laboratories, SAND2007-5036, 2007.
   :doi:`10.2172/920449`
.. [2] IEEE Std 1547-2018, "IEEE Standard for Interconnection and Interoperability of
   Distributed Energy Resources with Associated Electric Power Systems Interfaces".
   :doi:`10.1109/IEEESTD.2018.8332112`
.. [3] H. Schmidt, D. U. Sauer, "Wechselrichter-Wirkungsgrade: Praxisgerechte Modellierung und
   Abschaetzung", Sonnenenergie 4 (1996) 43-47 (the three-term loss model).
.. [4] J. Rocabert, A. Luna, F. Blaabjerg, P. Rodriguez, "Control of Power Converters in AC
   Microgrids", IEEE Trans. Power Electron. 27 (2012) 4734-4749.
   :doi:`10.1109/TPEL.2012.2199334`
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numba
import numpy as np

from twin import stepper, vecmath
from twin.errors import ParameterError, TwinError
from twin.params import ParamSet, did_you_mean, from_mapping
from twin.units import WH_PER_J

EFFICIENCY_MODELS = ("sandia", "symmetric")
MODES = ("grid_following", "grid_forming")
PRIORITIES = ("p", "q")
#: the states of :class:`Inverter`, the names its ``[initial]`` table may set
STATE_NAMES = ("p_cmd_w", "q_cmd_var", "e_dc_wh", "e_ac_wh", "e_loss_wh")


def _check_finite(obj: Any, where: str) -> None:
    """Every number of dataclass ``obj`` (and of its tuples) finite, else ParameterError."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                raise ParameterError(f"{where}{f.name}: must be finite, got {v}")


# --------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class SandiaInverter:
    """Coefficients of the Sandia inverter model [1]_, named as in the CEC inverter library."""

    paco_w: float
    """AC power rating (clipping level). [W]"""
    pdco_w: float
    """DC power at which the AC rating is reached at ``vdco_v``. [W]"""
    vdco_v: float
    """DC voltage at which the AC rating is reached with ``pdco_w``. [V]"""
    pso_w: float
    """DC power needed to start inverting (self-consumption while running). [W]"""
    c0_per_w: float
    """Curvature of AC over DC power at the reference voltage. [1/W]"""
    c1_per_v: float
    """Linear voltage dependence of ``pdco_w``. [1/V]"""
    c2_per_v: float
    """Linear voltage dependence of ``pso_w``. [1/V]"""
    c3_per_v: float
    """Linear voltage dependence of ``c0_per_w``. [1/V]"""
    pnt_w: float
    """AC power drawn at night (night tare), positive. [W]"""
    vdc_max_v: float | None = None
    """Maximum DC input voltage, for information. [V]"""
    idc_max_a: float | None = None
    """Maximum DC input current, for information. [A]"""
    mppt_low_v: float | None = None
    """Lower end of the MPPT voltage window, for information. [V]"""
    mppt_high_v: float | None = None
    """Upper end of the MPPT voltage window, for information. [V]"""

    def __post_init__(self) -> None:
        _check_finite(self, "sandia.")
        for name in ("paco_w", "pdco_w", "vdco_v"):
            if getattr(self, name) <= 0:
                raise ParameterError(f"sandia.{name}: must be positive")
        if self.pso_w < 0 or self.pnt_w < 0:
            raise ParameterError("sandia.pso_w and sandia.pnt_w must not be negative")
        # the rating is reached above the start-up power: below it the curve has no
        # meaning (pdco_w = 100 W with pso_w = 144 W drew -1e10 W of DC)
        if not self.pdco_w > self.pso_w:
            raise ParameterError(f"sandia.pdco_w: {self.pdco_w:g} W must be above pso_w "
                                 f"({self.pso_w:g} W), the DC power inverting starts at")

    def check_curve(self) -> None:
        """ParameterError unless the curve describes an inverter at ``vdco_v``: no more AC
        power than DC at the rating, and an AC power that rises all the way from ``pso_w``
        to ``pdco_w``.  Every inverter of the CEC library passes.  Not checked on every
        construction: a fit passes through coefficients that fail it."""
        if self.paco_w > self.pdco_w:
            raise ParameterError(f"sandia.paco_w: {self.paco_w:g} W of AC from pdco_w = "
                                 f"{self.pdco_w:g} W of DC is an efficiency above 1")
        span = self.pdco_w - self.pso_w
        if abs(self.c0_per_w) * span * span >= self.paco_w:
            raise ParameterError(f"sandia.c0_per_w: {self.c0_per_w:g} /W bends the curve so "
                                 "much that the AC power does not rise from pso_w to pdco_w")

    def coefficients(self) -> np.ndarray:
        """``[paco, pdco, vdco, pso, c0, c1, c2, c3, pnt]`` as one array, for the kernels."""
        return np.array([self.paco_w, self.pdco_w, self.vdco_v, self.pso_w, self.c0_per_w,
                         self.c1_per_v, self.c2_per_v, self.c3_per_v, self.pnt_w])


@dataclass(frozen=True)
class ConverterLosses:
    """Symmetric loss model of a bidirectional converter [3]_.

    ``P_loss = a + b |P_ac| + c P_ac**2`` in both directions, drawn from the DC side:
    ``P_dc = P_ac + P_loss``.  ``a`` is the standby loss (control, fans, magnetising),
    ``b |P|`` the switching losses (proportional to current), ``c P**2`` the conduction losses
    (proportional to current squared).
    """

    standby_w: float
    """Loss at zero power, ``a``. [W]"""
    linear: float
    """Loss proportional to the power, ``b``. [W/W]"""
    quadratic_per_w: float
    """Loss proportional to the power squared, ``c``. [1/W]"""

    def __post_init__(self) -> None:
        _check_finite(self, "losses.")
        if min(self.standby_w, self.linear, self.quadratic_per_w) < 0:
            raise ParameterError("losses: standby_w, linear and quadratic_per_w must be >= 0")
        if self.linear >= 1:
            raise ParameterError("losses.linear: must be below 1 (a converter that loses "
                                 "all it converts)")


@dataclass(frozen=True)
class VoltVar:
    """Volt-var curve, IEEE 1547-2018 clause 5.3.3, defaults of Table 8 for Category B.

    Piecewise linear through ``(v_pu[i], q_pu[i])``, constant beyond the end points; voltages
    in per unit of ``v_nom_v``, reactive power in per unit of the apparent-power rating
    (positive injects, "over-excited").  Category A would be ``v_pu = (0.9, 1.0, 1.0, 1.1)``,
    ``q_pu = (0.25, 0, 0, -0.25)``.
    """

    enabled: bool = False
    v_pu: tuple[float, ...] = (0.92, 0.98, 1.02, 1.08)
    """Voltage break points V1..V4. [pu]"""
    q_pu: tuple[float, ...] = (0.44, 0.0, 0.0, -0.44)
    """Reactive power at V1..V4. [pu of s_max_va]"""

    def __post_init__(self) -> None:
        _check_finite(self, "volt_var.")
        if len(self.v_pu) != 4 or len(self.q_pu) != 4:
            raise ParameterError("volt_var: v_pu and q_pu need four points each")
        if not all(b > a for a, b in zip(self.v_pu, self.v_pu[1:])):
            raise ParameterError(f"volt_var.v_pu: must increase, got {self.v_pu}")


@dataclass(frozen=True)
class FrequencyDroop:
    """Frequency droop (frequency-watt), IEEE 1547-2018 clause 6.5.2.7, Table 24 defaults.

    The defaults (dead bands 36 mHz, droop 5 %) are those of every abnormal-performance
    category (I, II, III); the standard's default open-loop response time is 5 s, which a
    first-order response meets with ``tau_s = 5 / ln(10) = 2.17 s``.
    """

    enabled: bool = False
    db_of_hz: float = 0.036
    """Over-frequency dead band. [Hz]"""
    db_uf_hz: float = 0.036
    """Under-frequency dead band. [Hz]"""
    k_of: float = 0.05
    """Over-frequency droop: per-unit frequency change for a 1 pu power change. [pu/pu]"""
    k_uf: float = 0.05
    """Under-frequency droop. [pu/pu]"""

    def __post_init__(self) -> None:
        _check_finite(self, "freq_droop.")
        if self.k_of <= 0 or self.k_uf <= 0 or self.db_of_hz < 0 or self.db_uf_hz < 0:
            raise ParameterError("freq_droop: k_of, k_uf must be > 0, dead bands >= 0")


@dataclass(frozen=True)
class GridForming:
    """P-f and Q-V droop of a grid-forming unit with a power low-pass filter [4]_."""

    mp_pu: float = 0.05
    """P-f droop: per-unit frequency drop for a 1 pu (``p_max_w``) rise in power. [pu/pu]"""
    mq_pu: float = 0.05
    """Q-V droop: per-unit voltage drop for a 1 pu (``s_max_va``) rise in reactive power."""
    tau_pf_s: float = 0.05
    """Time constant of the power low-pass filter. [s]"""

    def __post_init__(self) -> None:
        _check_finite(self, "grid_forming.")
        if self.mp_pu <= 0 or self.mq_pu <= 0 or self.tau_pf_s <= 0:
            raise ParameterError("grid_forming: mp_pu, mq_pu and tau_pf_s must be > 0")


@dataclass(frozen=True)
class InverterParams:
    """One inverter or bidirectional converter.

    Exactly one of ``sandia`` (``efficiency_model = "sandia"``, a PV inverter, active power
    only delivered) or ``losses`` (``"symmetric"``, a battery converter, both directions) is
    given.
    """

    s_max_va: float
    """Apparent-power rating. [VA]"""
    efficiency_model: str = "sandia"
    """``"sandia"`` or ``"symmetric"``."""
    sandia: SandiaInverter | None = None
    losses: ConverterLosses | None = None
    p_max_w: float | None = None
    """Active-power rating, the base of ``w_max_lim_pct`` (SunSpec WMax); default
    ``s_max_va``. [W]"""
    mode: str = "grid_following"
    """``"grid_following"`` or ``"grid_forming"``."""
    priority: str = "p"
    """Which of P or Q keeps its reference when the apparent power would exceed the rating."""
    tau_s: float = 0.1
    """Time constant of the first-order response to commands. [s]"""
    ramp_w_per_s: float = 0.0
    """Largest rate of change of the active power command; 0 for none. [W/s]"""
    v_nom_v: float = 480.0
    """Nominal AC voltage (line to line). [V]"""
    f_nom_hz: float = 60.0
    """Nominal frequency. [Hz]"""
    volt_var: VoltVar = field(default_factory=VoltVar)
    freq_droop: FrequencyDroop = field(default_factory=FrequencyDroop)
    grid_forming: GridForming = field(default_factory=GridForming)

    def __post_init__(self) -> None:
        _check_finite(self, "")
        if self.s_max_va <= 0:
            raise ParameterError("s_max_va: must be positive")
        if self.p_max_w is not None and not 0 < self.p_max_w <= self.s_max_va:
            raise ParameterError("p_max_w: must be positive and at most s_max_va")
        if self.efficiency_model not in EFFICIENCY_MODELS:
            raise ParameterError(f"efficiency_model: '{self.efficiency_model}' is not one of "
                                 f"{EFFICIENCY_MODELS}")
        if self.efficiency_model == "sandia" and self.sandia is None:
            raise ParameterError("efficiency_model 'sandia' needs a [params.sandia] table")
        if self.sandia is not None:
            self.sandia.check_curve()
        if self.efficiency_model == "symmetric" and self.losses is None:
            raise ParameterError("efficiency_model 'symmetric' needs a [params.losses] table")
        if self.mode not in MODES:
            raise ParameterError(f"mode: '{self.mode}' is not one of {MODES}")
        if self.priority not in PRIORITIES:
            raise ParameterError(f"priority: '{self.priority}' is not one of {PRIORITIES}")
        if self.tau_s <= 0:
            raise ParameterError("tau_s: must be positive")
        if self.ramp_w_per_s < 0:
            raise ParameterError("ramp_w_per_s: must not be negative (0 disables the limit)")
        if self.v_nom_v <= 0 or self.f_nom_hz <= 0:
            raise ParameterError("v_nom_v and f_nom_hz must be positive")

    @property
    def p_rated_w(self) -> float:
        """The active-power rating: ``p_max_w``, or ``s_max_va`` when not given. [W]"""
        return self.s_max_va if self.p_max_w is None else self.p_max_w

    @property
    def response_tau_s(self) -> float:
        """The time constant of the command lag in this unit's mode. [s]"""
        return self.grid_forming.tau_pf_s if self.mode == "grid_forming" else self.tau_s

    @classmethod
    def from_params(cls, pset: ParamSet) -> InverterParams:
        """The parameters of an ``inverter`` parameter file (its ``[initial]`` table is
        checked too: :func:`initial_values`)."""
        where = pset.path or pset.name
        if pset.kind != "inverter":
            raise ParameterError(f"{where}: meta.kind is '{pset.kind}', expected 'inverter'")
        p = from_mapping(cls, pset.params, where=f"{where}: params")
        initial_values(pset.initial, f"{where}: initial")
        return p


def initial_values(initial: Mapping[str, Any], where: str = "initial") -> dict[str, float]:
    """The initial conditions of an inverter (:data:`STATE_NAMES`) as numbers.

    An unknown name (a misspelt ``p_cmd``) or a value that is not a finite number is a
    :class:`ParameterError` naming ``where.key``, with a "did you mean" hint.
    """
    out = {}
    for key, value in initial.items():
        if key not in STATE_NAMES:
            raise ParameterError(f"{where}.{key}: unknown initial condition"
                                 f"{did_you_mean(str(key), STATE_NAMES)}; an inverter's are "
                                 f"{', '.join(STATE_NAMES)}")
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise ParameterError(f"{where}.{key}: expected a finite number, got {value!r}")
        out[key] = float(value)
    return out


# --------------------------------------------------------------------------------------------
# scalar kernels (one formula each; the public functions below broadcast them over arrays)


@numba.njit(cache=True, error_model="numpy")
def _sandia_terms(v_dc, paco, pdco, vdco, pso, c0, c1, c2, c3):
    """``(B, K, C)`` of the Sandia curve at ``v_dc``: ``p_ac = K (p_dc - B) + C (p_dc - B)^2``.

    ``B`` is the voltage-corrected start-up power ``Pso``, ``C`` the corrected ``C0``, and
    ``K = Paco / (A - B) - C (A - B)`` with ``A`` the corrected ``Pdco``.
    """
    dv = v_dc - vdco
    a = pdco * (1.0 + c1 * dv)
    b = pso * (1.0 + c2 * dv)
    cc = c0 * (1.0 + c3 * dv)
    return b, paco / (a - b) - cc * (a - b), cc


@numba.njit(cache=True, error_model="numpy")
def _sandia_curve(p_dc, b, k, cc):
    """The Sandia curve before clipping and night tare (the square as a product: numba's
    ``** 2`` keeps a loop that calls it scalar)."""
    d = p_dc - b
    return k * d + cc * (d * d)


@numba.njit(cache=True, error_model="numpy")
def _sandia_inverse(p_ac, b, k, cc):
    """The DC power at which the unclipped curve gives ``p_ac``."""
    disc = k * k + 4.0 * cc * p_ac
    if disc < 0.0:  # beyond the vertex of a downward parabola: the largest DC power
        return b - k / (2.0 * cc)
    # the root of cc x^2 + k x - p_ac = 0 that is continuous as cc -> 0
    return b + 2.0 * p_ac / (k + math.sqrt(disc))


@numba.njit(cache=True, error_model="numpy")
def _sandia_ac(v_dc, p_dc, c):
    if p_dc < c[3]:
        return -abs(c[8])
    b, k, cc = _sandia_terms(v_dc, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
    return min(c[0], _sandia_curve(p_dc, b, k, cc))


@numba.njit(cache=True, error_model="numpy")
def _sandia_dc(v_dc, p_ac, c):
    b, k, cc = _sandia_terms(v_dc, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
    return _sandia_inverse(p_ac, b, k, cc)


@numba.njit(cache=True, error_model="numpy")
def _converter_loss(p_ac, a, b, c):
    return a + b * abs(p_ac) + c * p_ac * p_ac


@numba.njit(cache=True, error_model="numpy")
def _converter_ac(p_dc, a, b, c):
    """Invert ``p_dc = p_ac + a + b|p_ac| + c p_ac^2`` for ``p_ac``."""
    e = p_dc - a
    k = 1.0 + b if e >= 0.0 else 1.0 - b
    disc = k * k + 4.0 * c * e
    if disc < 0.0:  # charging beyond the converter's most negative DC power
        return -k / (2.0 * c)
    return 2.0 * e / (k + math.sqrt(disc))


@numba.njit(cache=True, error_model="numpy")
def _volt_var(v_pu, v1, v2, v3, v4, q1, q2, q3, q4):
    if v_pu <= v1:
        return q1
    if v_pu <= v2:
        return q1 + (q2 - q1) * (v_pu - v1) / (v2 - v1)
    if v_pu <= v3:
        return q2 + (q3 - q2) * (v_pu - v2) / (v3 - v2)
    if v_pu <= v4:
        return q3 + (q4 - q3) * (v_pu - v3) / (v4 - v3)
    return q4


@numba.njit(cache=True, error_model="numpy")
def _frequency_droop(f, p_pre, p_rated, p_avail, p_min, f_nom, db_of, db_uf, k_of, k_uf):
    if f > f_nom + db_of:
        p = p_pre - p_rated * (f - (f_nom + db_of)) / (f_nom * k_of)
        return max(p, p_min)
    if f < f_nom - db_uf:
        p = p_pre + p_rated * ((f_nom - db_uf) - f) / (f_nom * k_uf)
        return min(p, max(p_avail, p_pre))
    return p_pre


@numba.njit(cache=True, error_model="numpy")
def _apparent_limit(p, q, s, q_priority):
    """Limit ``(p, q)`` to the circle of radius ``s``; returns ``(p, q, limited)``."""
    if p * p + q * q <= s * s:
        return p, q, False
    if q_priority:
        q = min(max(q, -s), s)
        pm = math.sqrt(max(s * s - q * q, 0.0))
        p = min(max(p, -pm), pm)
    else:
        p = min(max(p, -s), s)
        qm = math.sqrt(max(s * s - p * p, 0.0))
        q = min(max(q, -qm), qm)
    return p, q, True


# which scalar kernel _broadcast_call evaluates
_SANDIA_AC, _SANDIA_DC, _LOSS, _CONVERTER_AC, _VOLT_VAR, _SANDIA_CURVE = range(6)


@numba.njit(cache=True, error_model="numpy")
def _broadcast_call(kind, x, y, c):
    """Evaluate scalar kernel ``kind`` elementwise over ``x`` and ``y`` with coefficients ``c``."""
    out = np.empty(x.size)
    for i in range(x.size):
        if kind == _SANDIA_AC:
            out[i] = _sandia_ac(x[i], y[i], c)
        elif kind == _SANDIA_DC:
            out[i] = _sandia_dc(x[i], y[i], c)
        elif kind == _LOSS:
            out[i] = _converter_loss(x[i], c[0], c[1], c[2])
        elif kind == _CONVERTER_AC:
            out[i] = _converter_ac(x[i], c[0], c[1], c[2])
        elif kind == _VOLT_VAR:
            out[i] = _volt_var(x[i], c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
        else:
            b, k, cc = _sandia_terms(x[i], c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
            out[i] = _sandia_curve(y[i], b, k, cc)
    return out


def _apply(kind: int, x, y, c: np.ndarray) -> np.ndarray | float:
    xa, ya = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    out = _broadcast_call(kind, np.ascontiguousarray(xa).ravel(),
                          np.ascontiguousarray(ya).ravel(), c).reshape(xa.shape)
    return out if out.ndim else float(out)


# --------------------------------------------------------------------------------------------
# pure functions


def sandia_ac_power(v_dc, p_dc, params: SandiaInverter):
    """AC power of a PV inverter from DC voltage and power: the Sandia model [1]_.

    Clipped at ``paco_w``; below the start-up power ``pso_w`` the inverter draws its night
    tare, ``-pnt_w`` (the same piecewise definition as ``pvlib.inverter.sandia``).

    Parameters
    ----------
    v_dc : array_like
        DC input voltage. [V]
    p_dc : array_like
        DC input power. [W]
    params : SandiaInverter
        Model coefficients.

    Returns
    -------
    p_ac : ndarray or float
        AC output power. [W]
    """
    return _apply(_SANDIA_AC, v_dc, p_dc, params.coefficients())


def sandia_curve(v_dc, p_dc, params: SandiaInverter):
    """The Sandia curve alone, before clipping at ``paco_w`` and the night tare. [W]

    What a fit of the coefficients compares with measured AC power while the inverter runs
    unclipped (:mod:`twin.calibrate_inverter`).
    """
    return _apply(_SANDIA_CURVE, v_dc, p_dc, params.coefficients())


def sandia_efficiency(v_dc, p_dc, params: SandiaInverter):
    """``sandia_ac_power / p_dc``; zero where ``p_dc`` is zero (nothing converted). [W/W]

    Below ``pso_w`` it is negative (night tare over a small DC power), as pvlib computes it.
    """
    p_dc = np.asarray(p_dc, dtype=float)
    p_ac = np.asarray(sandia_ac_power(v_dc, p_dc, params))
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(p_dc != 0.0, p_ac / np.where(p_dc != 0.0, p_dc, 1.0), 0.0)
    return eff if eff.ndim else float(eff)


def sandia_dc_power(v_dc, p_ac, params: SandiaInverter):
    """DC power an inverter draws to deliver ``p_ac`` while running: the Sandia curve inverted.

    Valid between the AC power at ``pso_w`` and ``paco_w``; this is what a curtailed inverter
    draws when its MPPT moves off the maximum power point. [W]
    """
    return _apply(_SANDIA_DC, v_dc, p_ac, params.coefficients())


def converter_losses(p_ac_w, losses: ConverterLosses):
    """Losses of a bidirectional converter at AC power ``p_ac_w`` (either sign). [W]"""
    c = np.array([losses.standby_w, losses.linear, losses.quadratic_per_w])
    return _apply(_LOSS, p_ac_w, 0.0, c)


def converter_ac_power(p_dc_w, losses: ConverterLosses):
    """AC power for DC power ``p_dc_w`` (positive discharging): the loss model inverted. [W]"""
    c = np.array([losses.standby_w, losses.linear, losses.quadratic_per_w])
    return _apply(_CONVERTER_AC, p_dc_w, 0.0, c)


def volt_var(v_pu, curve: VoltVar = VoltVar()):
    """Reactive power from the volt-var curve, in per unit of the apparent-power rating.

    Parameters
    ----------
    v_pu : array_like
        AC voltage in per unit of nominal. [pu]
    curve : VoltVar
        Break points; the default is IEEE 1547-2018 Category B (clause 5.3.3, Table 8).
    """
    return _apply(_VOLT_VAR, v_pu, 0.0, np.array(curve.v_pu + curve.q_pu, dtype=float))


def frequency_droop(f_hz, p_pre_w, p_rated_w, p_avail_w, p_min_w=0.0, f_nom_hz=60.0,
                    droop: FrequencyDroop = FrequencyDroop()):
    """Active power under frequency droop, IEEE 1547-2018 clause 6.5.2.7.

    Above ``f_nom + db_of`` the power falls by ``p_rated`` per ``k_of * f_nom`` hertz, down to
    ``p_min_w``; below ``f_nom - db_uf`` it rises by the same law (``k_uf``) up to the power
    available (never below the pre-disturbance power).

    Parameters
    ----------
    f_hz : array_like
        Grid frequency. [Hz]
    p_pre_w : array_like
        Active power before the disturbance (the unit's setpoint). [W]
    p_rated_w : float
        Active-power rating. [W]
    p_avail_w : array_like
        Active power the source can deliver. [W]
    p_min_w : float
        Lowest active power (0 for PV, the charging limit for storage). [W]
    f_nom_hz : float
        Nominal frequency. [Hz]
    droop : FrequencyDroop
        Dead bands and droops (Table 24 defaults).
    """
    f, pre, av = np.broadcast_arrays(*(np.asarray(a, dtype=float)
                                       for a in (f_hz, p_pre_w, p_avail_w)))
    out = np.empty(f.shape)
    for idx in np.ndindex(f.shape):
        out[idx] = _frequency_droop(f[idx], pre[idx], float(p_rated_w), av[idx],
                                    float(p_min_w), float(f_nom_hz), droop.db_of_hz,
                                    droop.db_uf_hz, droop.k_of, droop.k_uf)
    return out if out.ndim else float(out)


def droop_power(f_hz, p_set_w, p_rated_w, mp_pu, f_nom_hz):
    """Steady-state active power of a grid-forming unit on P-f droop. [W]

    ``p = p_set + (f_nom - f) / (mp f_nom) * p_rated``: a unit with 5 % droop goes from its
    setpoint to full power over a 5 % fall in frequency.
    """
    return np.asarray(p_set_w) + (f_nom_hz - np.asarray(f_hz)) / (mp_pu * f_nom_hz) * p_rated_w


# --------------------------------------------------------------------------------------------
# the vectorised asset

# column indices of the packed parameter array (one row per unit)
_S, _PMAX, _MODEL, _MODE, _PRIO, _RAMP, _VNOM, _FNOM = range(8)
_SANDIA = 8  # 9 coefficients, as SandiaInverter.coefficients()
_LA, _LB, _LC = 17, 18, 19
_VV_ON, _VV = 20, 21  # 4 voltages then 4 reactive powers
_FW_ON, _DB_OF, _DB_UF, _K_OF, _K_UF = 29, 30, 31, 32, 33
_MP, _MQ = 34, 35
_NPAR = 36

# state, input, held and output columns
_XP, _XQ, _EDC, _EAC, _ELOSS = range(5)
_UP, _UQ, _UWLIM, _UPDC, _UVDC, _UVAC, _UF = range(7)
(_WRP, _WRQ, _WPAC, _WQ, _WPDC, _WLOSS, _WEFF, _WAVAIL, _WSLIM, _WRAMP, _WDCLIM, _WCURT,
 _WWLIM, _WVAC, _WF, _WINLIM) = range(16)
_NW = 16
_NY = 19
#: below this many units, the passes meant for SIMD vectors cost more than they save (a
#: vectorised loop first checks that its arrays do not overlap, a few dozen comparisons)
_FEW_UNITS = 16


def _pack(p: InverterParams) -> np.ndarray:
    row = np.zeros(_NPAR)
    row[_S] = p.s_max_va
    row[_PMAX] = p.p_rated_w
    row[_MODEL] = EFFICIENCY_MODELS.index(p.efficiency_model)
    row[_MODE] = MODES.index(p.mode)
    row[_PRIO] = PRIORITIES.index(p.priority)
    row[_RAMP] = p.ramp_w_per_s
    row[_VNOM] = p.v_nom_v
    row[_FNOM] = p.f_nom_hz
    if p.sandia is not None:
        row[_SANDIA:_SANDIA + 9] = p.sandia.coefficients()
    if p.losses is not None:
        row[_LA:_LC + 1] = (p.losses.standby_w, p.losses.linear, p.losses.quadratic_per_w)
    row[_VV_ON] = p.volt_var.enabled
    row[_VV:_VV + 4] = p.volt_var.v_pu
    row[_VV + 4:_VV + 8] = p.volt_var.q_pu
    row[_FW_ON] = p.freq_droop.enabled
    row[_DB_OF:_K_UF + 1] = (p.freq_droop.db_of_hz, p.freq_droop.db_uf_hz,
                             p.freq_droop.k_of, p.freq_droop.k_uf)
    row[_MP] = p.grid_forming.mp_pu
    row[_MQ] = p.grid_forming.mq_pu
    return row


@numba.njit(cache=True, error_model="numpy", inline="always")
def _plain_mode(par, a, i):
    """Whether unit ``i`` runs plain: grid-following, no droop, no volt-var, no ramp limit
    (every parameter read, then ``&``: a load behind ``and`` keeps a loop scalar)."""
    mode, fw, vv, ramp, a0 = par[i, _MODE], par[i, _FW_ON], par[i, _VV_ON], par[i, _RAMP], a[i, 0]
    return (mode == 0.0) & (fw == 0.0) & (vv == 0.0) & (not ((ramp > 0.0) & (a0 < 1.0)))


@numba.njit(cache=True, error_model="numpy")
def _plain_converters(x, u, par, a, w, done):
    """Held inputs of a group of converters (symmetric loss model), a branch-free pass over
    every unit (SIMD where the arrays are stored column by column, as the microgrid's arena
    stores a battery's converters): ``done[i]`` is 1 where unit ``i``'s are in ``w``.

    Those of the plain units (:func:`_plain_mode`) within their apparent-power circle: the
    computation then is :func:`_hold_units`', operation for operation, so the same numbers;
    the others are left to it.  ``w`` is written through 1-D views of its columns (a store
    through 2-D indexing keeps the loop scalar)."""
    (rp, rq, pac, q, pdc, loss, eff, avail, slim, ramp, dclim, curt, wl, vac, fr,
     inlim) = _columns(w)
    for i in range(x.shape[0]):
        s = par[i, _S]
        pmax = min(par[i, _PMAX], s)
        p_set, q_set, wlim = u[i, _UP], u[i, _UQ], u[i, _UWLIM]
        lim = min(max(wlim, 0.0), 100.0) * 0.01 * par[i, _PMAX]
        p_ref = min(max(p_set, -lim), lim)
        p_ref = min(max(p_ref, -pmax), pmax)
        p_act = min(p_ref, pmax)
        g = a[i, 1]
        xp = p_ref + (x[i, _XP] - p_ref) * g
        xq = q_set + (x[i, _XQ] - q_set) * g
        p_ac = min(max(xp, -pmax), pmax)
        p_dc = p_ac + _converter_loss(p_ac, par[i, _LA], par[i, _LB], par[i, _LC])
        up, down = p_ac > 0.0 and p_dc > 0.0, p_ac < 0.0 and p_dc < 0.0
        plain = (_plain_mode(par, a, i) and p_act * p_act + q_set * q_set <= s * s
                 and p_ac * p_ac + xq * xq <= s * s)
        done[i] = 1.0 if plain else 0.0
        rp[i], rq[i], pac[i], q[i], pdc[i] = p_ref, q_set, p_ac, xq, p_dc
        loss[i] = p_dc - p_ac
        eff[i] = p_ac / p_dc if up else (p_dc / p_ac if down else 0.0)
        avail[i] = pmax
        slim[i], ramp[i], dclim[i], curt[i] = 0.0, 0.0, 0.0, 0.0
        wl[i], vac[i], fr[i] = wlim, u[i, _UVAC], u[i, _UF]
        inlim[i] = 0.0 if 0.0 <= wlim <= 100.0 else 1.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _columns(w):
    """The ``_NW`` columns of ``w``, as 1-D views in the order of its columns."""
    return (w[:, 0], w[:, 1], w[:, 2], w[:, 3], w[:, 4], w[:, 5], w[:, 6], w[:, 7], w[:, 8],
            w[:, 9], w[:, 10], w[:, 11], w[:, 12], w[:, 13], w[:, 14], w[:, 15])


@numba.njit(cache=True, error_model="numpy")
def _plain_pv(x, u, par, a, w, done):
    """:func:`_plain_converters` for a group of PV inverters (Sandia model): the plain
    units in daylight, below the top of their curve, above their standby power and within
    their apparent-power circle.  The square root and divisions of the curve's inverse are
    taken for every unit (as SIMD vectors they cost less than the branches they replace;
    the root of a negative number is NaN, and not taken)."""
    tol = 1e-9
    (rp, rq, pac, q, pdc, loss, eff, avail_, slim, ramp, dclim, curt, wl, vac, fr,
     inlim) = _columns(w)
    for i in range(x.shape[0]):
        s = par[i, _S]
        pmax = min(par[i, _PMAX], s)
        c = _SANDIA
        paco, pso = par[i, c], par[i, c + 3]
        p_set, q_set, wlim = u[i, _UP], u[i, _UQ], u[i, _UWLIM]
        p_dc_av, v_dc = u[i, _UPDC], u[i, _UVDC]
        sb, sk, sc = _sandia_terms(v_dc, paco, par[i, c + 1], par[i, c + 2], pso,
                                   par[i, c + 4], par[i, c + 5], par[i, c + 6], par[i, c + 7])
        day = (not p_dc_av < pso) and v_dc > 0.0 and sk > 0.0 and sk < math.inf
        below_top = not (sc < 0.0 and p_dc_av > sb - sk / (2.0 * sc))
        avail = min(paco, _sandia_curve(p_dc_av, sb, sk, sc))
        lim = min(max(wlim, 0.0), 100.0) * 0.01 * par[i, _PMAX]
        p_ref = min(max(p_set, -lim), lim)
        p_ref = min(max(p_ref, 0.0), pmax)
        p_act = min(p_ref, avail)
        g = a[i, 1]
        xp = p_ref + (x[i, _XP] - p_ref) * g
        xq = q_set + (x[i, _XQ] - q_set) * g
        awake = not xp < _sandia_curve(pso, sb, sk, sc)
        p_ac = min(max(xp, 0.0), min(avail, pmax))
        disc = sk * sk + 4.0 * sc * p_ac
        p_dc = (sb - sk / (2.0 * sc) if disc < 0.0
                else sb + 2.0 * p_ac / (sk + vecmath.sqrt(disc)))
        up, down = p_ac > 0.0 and p_dc > 0.0, p_ac < 0.0 and p_dc < 0.0
        plain = (_plain_mode(par, a, i) and day and below_top and awake
                 and p_act * p_act + q_set * q_set <= s * s and p_ac * p_ac + xq * xq <= s * s)
        done[i] = 1.0 if plain else 0.0
        rp[i], rq[i], pac[i], q[i], pdc[i] = p_ref, q_set, p_ac, xq, p_dc
        loss[i] = p_dc - p_ac
        eff[i] = p_ac / p_dc if up else (p_dc / p_ac if down else 0.0)
        avail_[i] = avail
        slim[i], ramp[i] = 0.0, 0.0
        dclim[i] = 1.0 if xp > avail + tol * s else 0.0
        curt[i] = 1.0 if xp < avail - tol * s else 0.0
        wl[i], vac[i], fr[i] = wlim, u[i, _UVAC], u[i, _UF]
        inlim[i] = 0.0 if 0.0 <= wlim <= 100.0 else 1.0


@numba.njit(cache=True, error_model="numpy")
def _hold_kernel(x, u, par, a, dt):
    """Held inputs ``w`` of every unit for one step (see the module docstring), stored
    column by column: outputs and step are then passes over contiguous columns.  A group
    of one model first takes its plain pass (:func:`_plain_converters`,
    :func:`_plain_pv`: a third to a half of the cost unit by unit; not for a few units,
    where its set-up costs more), then :func:`_hold_units` the units it leaves."""
    n = x.shape[0]
    w = np.empty((_NW, n)).T
    done = np.zeros(n)
    converters = 0.0
    for i in range(n):
        converters += par[i, _MODEL]
    if n >= _FEW_UNITS and converters == n:
        _plain_converters(x, u, par, a, w, done)
    elif n >= _FEW_UNITS and converters == 0.0:
        _plain_pv(x, u, par, a, w, done)
    _hold_units(x, u, par, a, dt, w, done)
    return w


@numba.njit(cache=True, error_model="numpy")
def _hold_units(x, u, par, a, dt, w, done):
    """Held inputs into ``w``, unit by unit, of the units not ``done``."""
    tol = 1e-9
    for i in range(x.shape[0]):
        if done[i] != 0.0:
            continue
        s = par[i, _S]
        pmax = min(par[i, _PMAX], s)
        sandia = par[i, _MODEL] == 0.0
        paco, pso, pnt = par[i, _SANDIA], par[i, _SANDIA + 3], abs(par[i, _SANDIA + 8])
        p_set, q_set, wlim = u[i, _UP], u[i, _UQ], u[i, _UWLIM]
        p_dc_av, v_dc, v_ac, f = u[i, _UPDC], u[i, _UVDC], u[i, _UVAC], u[i, _UF]
        # inputs outside the model's range are taken at its bounds, and flagged
        in_lim = not 0.0 <= wlim <= 100.0
        # what the DC side offers, as AC power, and the bounds of the command
        sb, sk, sc = 0.0, 1.0, 0.0
        if sandia:
            c = _SANDIA
            sb, sk, sc = _sandia_terms(v_dc, paco, par[i, c + 1], par[i, c + 2], pso,
                                       par[i, c + 4], par[i, c + 5], par[i, c + 6], par[i, c + 7])
            night = p_dc_av < pso
            if not night and not (v_dc > 0.0 and sk > 0.0 and math.isfinite(sk)):
                # no DC voltage (or one so far off vdco that the curve does not rise):
                # no power can flow
                night, in_lim = True, True
            p_dc_eval = p_dc_av
            if not night and sc < 0.0 and p_dc_av > sb - sk / (2.0 * sc):
                # beyond the top of the downward parabola the curve would fall, and go
                # negative: the inverter clips there, its MPPT off the maximum power point
                p_dc_eval, in_lim = sb - sk / (2.0 * sc), True
            avail = -pnt if night else min(paco, _sandia_curve(p_dc_eval, sb, sk, sc))
            lo = 0.0
        else:
            night = False
            avail = pmax
            lo = -pmax
        # references in this unit's mode
        if par[i, _MODE] == 0.0:
            lim = min(max(wlim, 0.0), 100.0) * 0.01 * par[i, _PMAX]
            p_ref = min(max(p_set, -lim), lim)
            if par[i, _FW_ON] != 0.0:
                # the droop acts on what the unit delivers, not on an unlimited command
                p_ref = _frequency_droop(f, min(p_ref, avail), par[i, _PMAX], avail, lo,
                                         par[i, _FNOM], par[i, _DB_OF], par[i, _DB_UF],
                                         par[i, _K_OF], par[i, _K_UF])
            if par[i, _VV_ON] != 0.0:
                c = _VV
                q_ref = s * _volt_var(v_ac / par[i, _VNOM], par[i, c], par[i, c + 1],
                                      par[i, c + 2], par[i, c + 3], par[i, c + 4], par[i, c + 5],
                                      par[i, c + 6], par[i, c + 7])
            else:
                q_ref = q_set
        else:
            p_ref = p_set + (par[i, _FNOM] - f) / (par[i, _MP] * par[i, _FNOM]) * par[i, _PMAX]
            q_ref = q_set + (par[i, _VNOM] - v_ac) / (par[i, _MQ] * par[i, _VNOM]) * s
        p_ref = min(max(p_ref, lo), pmax)
        # the circle applies to what the unit would deliver: a PV inverter commanded to its
        # rating but offered less keeps the reactive headroom of the power it has
        p_act = min(p_ref, avail)
        p_lim, q_ref, s_lim = _apparent_limit(p_act, q_ref, s, par[i, _PRIO] == 1.0)
        if p_lim != p_act:
            p_ref = p_lim
        # ramp limit on the command: the state moves at most ramp * dt in this step
        ramp_lim = False
        xp = x[i, _XP]
        if par[i, _RAMP] > 0.0 and a[i, 0] < 1.0:
            dmax = par[i, _RAMP] * dt / (1.0 - a[i, 0])
            if p_ref > xp + dmax:
                p_ref, ramp_lim = xp + dmax, True
            elif p_ref < xp - dmax:
                p_ref, ramp_lim = xp - dmax, True
            p_act = min(p_ref, avail)
            qm = math.sqrt(max(s * s - p_act * p_act, 0.0))
            q_ref = min(max(q_ref, -qm), qm)
        # terminal powers over the step from the mean of the command's response over it
        g = a[i, 1]
        xp = p_ref + (xp - p_ref) * g
        xq = q_ref + (x[i, _XQ] - q_ref) * g
        standby = False
        dc_lim = False
        curtailed = False
        if sandia:
            standby = night or xp < _sandia_curve(pso, sb, sk, sc)
            dc_lim = xp > avail + tol * s
            curtailed = (not night) and xp < avail - tol * s
        if standby:
            p_ac, q_ac, p_dc = -pnt, 0.0, 0.0
            s_out = False
        else:
            p_ac = min(max(xp, lo), min(avail, pmax))
            p_ac, q_ac, s_out = _apparent_limit(p_ac, xq, s, par[i, _PRIO] == 1.0)
            if sandia:
                p_dc = _sandia_inverse(p_ac, sb, sk, sc)
            else:
                p_dc = p_ac + _converter_loss(p_ac, par[i, _LA], par[i, _LB], par[i, _LC])
        if p_ac > 0.0 and p_dc > 0.0:
            eff = p_ac / p_dc
        elif p_ac < 0.0 and p_dc < 0.0:
            eff = p_dc / p_ac
        else:
            eff = 0.0
        w[i, _WRP], w[i, _WRQ] = p_ref, q_ref
        w[i, _WPAC], w[i, _WQ], w[i, _WPDC] = p_ac, q_ac, p_dc
        w[i, _WLOSS], w[i, _WEFF] = p_dc - p_ac, eff
        w[i, _WAVAIL] = avail
        w[i, _WSLIM] = 1.0 if (s_lim or s_out) else 0.0
        w[i, _WRAMP] = 1.0 if ramp_lim else 0.0
        w[i, _WDCLIM] = 1.0 if dc_lim else 0.0
        w[i, _WCURT] = 1.0 if curtailed else 0.0
        w[i, _WWLIM], w[i, _WVAC], w[i, _WF] = wlim, v_ac, f
        w[i, _WINLIM] = 1.0 if in_lim else 0.0


@numba.njit(cache=True, inline="always", error_model="numpy")
def _lag(x, ref, a, xn):
    """``xn = ref + a (x - ref)`` over 1-D columns: a first-order lag's exact step."""
    for i in range(x.shape[0]):
        xn[i] = ref[i] + a[i] * (x[i] - ref[i])


@numba.njit(cache=True, inline="always", error_model="numpy")
def _accumulate(x, p, h, xn):
    """``xn = x + p h`` over 1-D columns: an energy counter's step. [Wh]"""
    for i in range(x.shape[0]):
        xn[i] = x[i] + p[i] * h


@numba.njit(cache=True, error_model="numpy")
def _step_into(x, w, a, dt, xn):
    """Exact step into ``xn``, which may be ``x`` itself, a pass per state over 1-D columns
    (SIMD where the arrays are stored column by column; one loop over units writing ``x``
    in place stays scalar)."""
    h = dt / 3600.0
    _lag(x[:, _XP], w[:, _WRP], a[:, 0], xn[:, _XP])
    _lag(x[:, _XQ], w[:, _WRQ], a[:, 0], xn[:, _XQ])
    _accumulate(x[:, _EDC], w[:, _WPDC], h, xn[:, _EDC])
    _accumulate(x[:, _EAC], w[:, _WPAC], h, xn[:, _EAC])
    _accumulate(x[:, _ELOSS], w[:, _WLOSS], h, xn[:, _ELOSS])


#: where each output column comes from: a held input (its column of ``w``) or, negative, a
#: state (column ``-1 - k`` of ``x``)
_Y_SOURCE = np.array([_WPAC, _WQ, _WPDC, _WEFF, _WLOSS, _WAVAIL, -1 - _XP, -1 - _XQ, _WSLIM,
                      _WRAMP, _WDCLIM, _WCURT, -1 - _EAC, -1 - _EDC, -1 - _ELOSS, _WWLIM, _WVAC,
                      _WF, _WINLIM])


@numba.njit(cache=True, error_model="numpy")
def _outputs_into(x, w, y):
    """Outputs column by column: contiguous copies where ``x``, ``w`` and ``y`` are stored
    column by column, as the microgrid's fused step stores them (unit by unit, the copy
    from a transposed layout cost three times as much at 1,000 units); for a few units,
    unit by unit (a vectorised copy's set-up costs more than a few elements)."""
    if x.shape[0] < _FEW_UNITS:
        for i in range(x.shape[0]):
            for k in range(_NY):
                src = _Y_SOURCE[k]
                y[i, k] = w[i, src] if src >= 0 else x[i, -1 - src]
        return
    for k in range(_NY):
        src = _Y_SOURCE[k]
        if src >= 0:
            vecmath.copy(w[:, src], y[:, k])
        else:
            vecmath.copy(x[:, -1 - src], y[:, k])


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
    """:meth:`Inverter.advance` into the caller's arrays, for compiled callers (the
    microgrid's fused step): ``x`` is stepped in place, ``y`` receives the outputs at ``t``;
    ``(par, a)`` is :meth:`Inverter.kernel_args` (``t`` is there for the signature every
    asset shares)."""
    w = _hold_kernel(x, u, par, a, dt)
    _outputs_into(x, w, y)
    _step_into(x, w, a, dt, x)


@numba.njit(cache=True, error_model="numpy")
def _advance_kernel(x, u, par, a, dt):
    xn = x.copy()
    y = np.empty((x.shape[0], _NY))
    advance_inplace(0.0, xn, u, dt, y, par, a)
    return xn, y


@numba.njit(cache=True, error_model="numpy")
def converter_loss_w(par, i, p_ac_w):
    """Losses of unit ``i`` of packed parameters ``par`` (:meth:`Inverter.kernel_args`), a
    bidirectional converter, at AC power ``p_ac_w``: :func:`converter_losses` for compiled
    callers. [W]"""
    return _converter_loss(p_ac_w, par[i, _LA], par[i, _LB], par[i, _LC])


@numba.njit(cache=True, error_model="numpy")
def converter_ac_w(par, i, p_dc_w):
    """AC power of unit ``i`` of packed parameters ``par`` (:meth:`Inverter.kernel_args`), a
    bidirectional converter, that goes with DC power ``p_dc_w``: the loss model inverted,
    :func:`converter_ac_power` for compiled callers. [W]"""
    return _converter_ac(p_dc_w, par[i, _LA], par[i, _LB], par[i, _LC])


class Inverter(stepper.Asset):
    """``n`` inverters or converters, each with its own :class:`InverterParams`.

    >>> inv = Inverter(params, n=3)                                    # doctest: +SKIP
    >>> x = inv.initial_state()                                        # doctest: +SKIP
    >>> x, y = inv.advance(0.0, x, inv.input_array(p_dc_avail_w=40e3), 0.01)  # doctest: +SKIP
    """

    kind: ClassVar[str] = "inverter"
    state_names: ClassVar[tuple[str, ...]] = STATE_NAMES
    input_names: ClassVar[tuple[str, ...]] = ("p_set_w", "q_set_var", "w_max_lim_pct",
                                              "p_dc_avail_w", "v_dc_v", "v_ac_v", "freq_hz")
    held_names: ClassVar[tuple[str, ...]] = (
        "p_ref_w", "q_ref_var", "p_ac_w", "q_var", "p_dc_w", "losses_w", "efficiency",
        "p_avail_w", "s_limited", "ramp_limited", "dc_limited", "curtailed", "w_max_lim_pct",
        "v_ac_v", "freq_hz", "input_limited")
    output_names: ClassVar[tuple[str, ...]] = (
        "p_ac_w", "q_var", "p_dc_w", "efficiency", "losses_w", "p_avail_w", "p_cmd_w",
        "q_cmd_var", "s_limited", "ramp_limited", "dc_limited", "curtailed", "energy_wh",
        "e_dc_wh", "e_loss_wh", "w_max_lim_pct", "v_ac_v", "freq_hz", "input_limited")

    def __init__(self, params: InverterParams | Sequence[InverterParams], n: int | None = None,
                 initial: Mapping[str, float] | None = None) -> None:
        plist = stepper.per_unit(params, n, InverterParams, "inverter")
        self.n = len(plist)
        self.params = plist
        self._par = np.array([_pack(p) for p in plist])
        self._a = stepper.LagFactors(np.array([p.response_tau_s for p in plist]), mean=True)
        self._initial = initial_values(initial or {})

    @classmethod
    def from_params(cls, pset: ParamSet, n: int = 1) -> Inverter:
        """``n`` identical units from a parameter file, with its initial conditions."""
        return cls(InverterParams.from_params(pset), n=n, initial=pset.initial)

    def default_inputs(self) -> np.ndarray:
        """A PV inverter unlimited (``p_set_w`` at its rating), a converter at 0 W; 100 % of
        WMax, nominal voltages and frequency, no DC offered."""
        u = np.zeros((self.n, len(self.input_names)))
        u[:, _UP] = np.where(self._par[:, _MODEL] == 0, self._par[:, _PMAX], 0.0)
        u[:, _UWLIM] = 100.0
        u[:, _UVDC] = np.where(self._par[:, _MODEL] == 0, self._par[:, _SANDIA + 2], 0.0)
        u[:, _UVAC] = self._par[:, _VNOM]
        u[:, _UF] = self._par[:, _FNOM]
        return u

    def initial_state(self) -> np.ndarray:
        """Commands at rest: a PV inverter's at its rating (tracking the maximum power point
        from the start), a converter's at zero; ``[initial] p_cmd_w``, ``q_cmd_var`` and the
        energy counters override."""
        x = np.zeros((self.n, len(self.state_names)))
        x[:, _XP] = np.where(self._par[:, _MODEL] == 0, self._par[:, _PMAX], 0.0)
        for j, name in enumerate(self.state_names):
            if name in self._initial:
                x[:, j] = self._initial[name]
        return x

    def hold(self, t: float, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        return _hold_kernel(np.ascontiguousarray(x, dtype=float),
                            np.ascontiguousarray(u, dtype=float), self._par, self._a(dt), dt)

    def rhs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        dx = np.empty_like(x)
        dx[:, _XP] = (w[:, _WRP] - x[:, _XP]) / self._a.tau_s
        dx[:, _XQ] = (w[:, _WRQ] - x[:, _XQ]) / self._a.tau_s
        dx[:, _EDC] = w[:, _WPDC] * WH_PER_J
        dx[:, _EAC] = w[:, _WPAC] * WH_PER_J
        dx[:, _ELOSS] = w[:, _WLOSS] * WH_PER_J
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


#: inputs of a profile that must lie in a range: (column, test, what the range is)
_PROFILE_RANGES = (
    ("w_max_lim_pct", lambda v: (v >= 0.0) & (v <= 100.0), "must be in [0, 100] (% of WMax)"),
    ("freq_hz", lambda v: v > 0.0, "must be positive"),
    ("v_ac_v", lambda v: v >= 0.0, "must not be negative (an RMS voltage)"),
)


def _check_profile(inv: Inverter, t: np.ndarray, u: np.ndarray) -> None:
    """TwinError naming the column and the time of the first input of a profile outside
    its physical range (the compiled step takes such inputs at their bounds and flags
    ``input_limited``; a recorded profile that holds them is wrong, and says so)."""
    def bad(name: str, ok: np.ndarray, what: str) -> None:
        k = int(np.argmin(ok))
        if not ok[k]:
            col = inv.input_names.index(name)
            raise TwinError(f"inverter profile: column '{name}' is "
                            f"{u[k, col]:g} at t_s = {t[k]:g} s; it {what}")

    for name, test, what in _PROFILE_RANGES:
        bad(name, test(u[:, inv.input_names.index(name)]), what)
    if inv.params[0].efficiency_model == "sandia":
        v_dc, p_dc = u[:, _UVDC], u[:, _UPDC]
        ok = (v_dc > 0.0) | ((v_dc == 0.0) & (p_dc <= 0.0))
        what = ("must not be negative for a PV inverter" if v_dc[np.argmin(ok)] < 0.0 else
                "must be positive where the array offers power (p_dc_w > 0)")
        bad("v_dc_v", ok, what)


def simulate_profile(pset: ParamSet, t_s: np.ndarray, inputs: Mapping[str, np.ndarray],
                     method: stepper.Method = "exact") -> dict[str, np.ndarray]:
    """Run one inverter over a profile; the inputs at ``t_s[k]`` are held until ``t_s[k+1]``.

    Parameters
    ----------
    pset : ParamSet
        An ``inverter`` parameter file.
    t_s : ndarray
        Strictly increasing sample times. [s]
    inputs : mapping of str to ndarray
        ``p_dc_w`` (DC power offered, the PV array at its maximum power point) [W] and
        ``v_dc_v`` [V] at least; any other input of :class:`Inverter` by name
        (``p_set_w``, ``w_max_lim_pct``, ``q_set_var``, ``v_ac_v``, ``freq_hz``).
    method : {"exact", "scipy"}
        The stepper method.

    Returns
    -------
    dict of str to ndarray
        ``t_s`` and every output of :class:`Inverter` (``p_ac_w``, ``efficiency``, ...),
        evaluated at each ``t_s``.
    """
    if method not in stepper.METHODS:
        raise TwinError(f"unknown method '{method}'; choose one of {stepper.METHODS}")
    t = np.asarray(t_s, dtype=float)
    if t.ndim != 1 or len(t) < 2 or not np.all(np.diff(t) > 0):
        raise TwinError("t_s: need at least two strictly increasing times")
    names = {"p_dc_w": "p_dc_avail_w"}
    inv = Inverter.from_params(pset)
    for key in ("p_dc_w", "v_dc_v"):
        if key not in inputs:
            raise TwinError(f"inverter profile: input column '{key}' is missing")
    u = np.repeat(inv.default_inputs(), len(t), axis=0)
    for key, col in inputs.items():
        name = names.get(key, key)
        if name not in inv.input_names:
            others = ", ".join(n for n in inv.input_names if n != "p_dc_avail_w")
            raise TwinError(f"inverter profile: unknown input column '{key}'; inputs are "
                            f"p_dc_w, {others}")
        col = np.asarray(col, dtype=float)
        if col.shape != t.shape:
            raise TwinError(f"inverter profile: column '{key}' has {col.size} values, "
                            f"t_s has {t.size}")
        if not np.all(np.isfinite(col)):
            raise TwinError(f"inverter profile: column '{key}' holds a value that is not finite")
        u[:, inv.input_names.index(name)] = col
    _check_profile(inv, t, u)
    dts = np.append(np.diff(t), t[-1] - t[-2])
    x = inv.initial_state()
    y = np.empty((len(t), len(inv.output_names)))
    for k in range(len(t)):
        uk = u[k:k + 1]
        if method == "exact":
            x, yk = inv.advance(t[k], x, uk, dts[k])
        else:
            w = inv.hold(t[k], x, uk, dts[k])
            yk = inv.outputs(t[k], x, w)
            x = stepper.step_scipy(inv, t[k], x, w, dts[k])
        y[k] = yk[0]
    out = {"t_s": t}
    out.update({name: y[:, j] for j, name in enumerate(inv.output_names)})
    return out
