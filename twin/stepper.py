"""The lockstep stepper: advance any set of assets by ``dt`` with inputs held over the step.

Every asset is an ODE ``dx/dt = f(t, x, w)`` over arrays of ``n`` units, where ``w`` are the
*held inputs*: what the non-linear algebra of the model (OCV, efficiency, limits, closed-form
current for constant power) makes of the commanded inputs ``u`` once at the start of each step.
Two methods share that right-hand side:

``exact`` (default)
    each asset's own :meth:`Asset.step_exact`, which discretises the linear parts (RC branches,
    first-order lags, thermal nodes, the swing equation) exactly with the matrix exponential;
``scipy``
    :func:`scipy.integrate.solve_ivp` over each step on :meth:`Asset.rhs`: the reference.
    It costs 100-200 microseconds a call, so it is for validation, not for fleets.

Outputs of tick ``k`` are evaluated at ``t_k`` with the inputs applied at ``t_k``
(right-continuous, as a meter sampling just after the setpoint lands would see them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
import scipy.linalg

from twin.errors import TwinError

Method = Literal["exact", "scipy"]
METHODS: tuple[str, ...] = ("exact", "scipy")


class Asset(ABC):
    """A vectorised model of ``n`` units of one kind of asset.

    Subclasses hold the parameters (one dataclass per unit, or arrays over units) and implement
    five pure methods over arrays shaped ``(n, len(names))``.  Columns follow the ``*_names``
    tuples; names carry their units (``soc``, ``v_rc1_v``, ``temp_cell_c``, ``p_ac_w``).
    """

    kind: ClassVar[str]
    state_names: ClassVar[tuple[str, ...]]
    input_names: ClassVar[tuple[str, ...]]
    held_names: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]]

    n: int

    @abstractmethod
    def initial_state(self) -> np.ndarray:
        """State at ``t = 0`` from the parameter set's initial conditions, ``(n, nx)``."""

    @abstractmethod
    def hold(self, t: float, x: np.ndarray, u: np.ndarray, dt: float) -> np.ndarray:
        """Held inputs ``w`` for the step ``[t, t + dt]``: limits, efficiencies, closed forms.

        Never produces an impossible state: a command beyond a limit is saturated here and
        flagged in the outputs.
        """

    @abstractmethod
    def rhs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``dx/dt`` with held inputs ``w``: the reference right-hand side, ``(n, nx)``."""

    @abstractmethod
    def step_exact(self, x: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
        """State at ``t + dt``: linear parts discretised exactly (matrix exponential)."""

    @abstractmethod
    def outputs(self, t: float, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Observable signals at ``t``, ``(n, ny)``, columns as :attr:`output_names`."""

    def output_dict(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name, each ``(n,)``."""
        return {name: y[:, i] for i, name in enumerate(self.output_names)}

    def default_inputs(self) -> np.ndarray:
        """Inputs when none are given, ``(n, nu)``: zero unless a model says otherwise.

        Models whose neutral input is not zero (a curtailment of 100 %, the nominal grid
        frequency) override this.
        """
        return np.zeros((self.n, len(self.input_names)))

    def input_array(self, **inputs: float | np.ndarray) -> np.ndarray:
        """Inputs by name into an ``(n, nu)`` array; unnamed inputs take their defaults."""
        for k in inputs:
            if k not in self.input_names:
                raise TwinError(f"{self.kind}: unknown input '{k}'; inputs are "
                                f"{', '.join(self.input_names)}")
        u = self.default_inputs()
        for i, name in enumerate(self.input_names):
            if name in inputs:
                u[:, i] = inputs[name]
        return u


def step_scipy(asset: Asset, t: float, x: np.ndarray, w: np.ndarray, dt: float,
               rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
    """Integrate :meth:`Asset.rhs` over one step with ``solve_ivp`` (the reference method).

    SciPy's integrators are imported here, not with the module: every bench process (and
    each emulator) imports the twin, and only the reference method needs them."""
    import scipy.integrate

    shape = x.shape

    def f(tt: float, y: np.ndarray) -> np.ndarray:
        return asset.rhs(tt, y.reshape(shape), w).reshape(-1)

    sol = scipy.integrate.solve_ivp(f, (t, t + dt), x.reshape(-1), method="DOP853",
                                    rtol=rtol, atol=atol)
    if not sol.success:
        raise TwinError(f"{asset.kind}: solve_ivp failed at t={t} s: {sol.message}")
    return sol.y[:, -1].reshape(shape)


class Stepper:
    """Advance a named set of assets in lockstep by ``dt`` with zero-order-hold inputs.

    >>> s = Stepper({"bat": battery}, method="exact")      # doctest: +SKIP
    >>> y = s.advance({"bat": battery.input_array(current_a=10.0)}, dt=0.01)  # doctest: +SKIP
    """

    def __init__(self, assets: Mapping[str, Asset], method: Method = "exact",
                 t0: float = 0.0) -> None:
        if method not in METHODS:
            raise TwinError(f"unknown stepper method '{method}'; choose one of {METHODS}")
        self.assets = dict(assets)
        self.method = method
        self.t = float(t0)
        self.k = 0
        self.t0 = float(t0)
        self.state = {name: a.initial_state() for name, a in self.assets.items()}

    def advance(self, u: Mapping[str, np.ndarray], dt: float) -> dict[str, np.ndarray]:
        """Hold ``u`` over ``[t, t + dt]``, return each asset's outputs at ``t``, then step.

        Time is kept as ``t0 + k * dt`` (no accumulated rounding) while ``dt`` is constant.
        """
        out = {}
        for name, a in self.assets.items():
            x = self.state[name]
            ua = u.get(name)
            if ua is None:
                ua = a.default_inputs()
            w = a.hold(self.t, x, ua, dt)
            out[name] = a.outputs(self.t, x, w)
            if self.method == "exact":
                self.state[name] = a.step_exact(x, w, dt)
            else:
                self.state[name] = step_scipy(a, self.t, x, w, dt)
        self.k += 1
        self.t = self.t0 + self.k * dt
        return out


def discretise(a: np.ndarray, b: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact zero-order-hold discretisation of ``dx/dt = A x + B w``.

    Returns ``(Ad, Bd)`` with ``x(t + dt) = Ad x(t) + Bd w`` for ``w`` held over the step,
    from one matrix exponential of the augmented matrix ``[[A, B], [0, 0]] dt``.
    Works on stacks: ``a`` may be ``(..., nx, nx)`` and ``b`` ``(..., nx, nw)``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    nx, nw = a.shape[-1], b.shape[-1]
    m = np.zeros(a.shape[:-2] + (nx + nw, nx + nw))
    m[..., :nx, :nx] = a * dt
    m[..., :nx, nx:] = b * dt
    e = scipy.linalg.expm(m)
    return e[..., :nx, :nx], e[..., :nx, nx:]


def lag_factors(tau_s: np.ndarray | float, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact step of a first-order lag ``tau dx/dt = w - x``: ``x' = a x + (1 - a) w``.

    A zero time constant means an instantaneous response (``a = 0``).
    """
    tau = np.asarray(tau_s, dtype=float)
    with np.errstate(divide="ignore"):
        a = np.where(tau > 0, np.exp(-dt / np.where(tau > 0, tau, 1.0)), 0.0)
    return a, 1.0 - a


def per_unit(params: object, n: int | None, cls: type, what: str) -> tuple:
    """One parameter set per unit: ``params`` is one set (for ``n`` units, default 1) or a
    sequence of sets (one per unit, ``n`` if given must match)."""
    plist = [params] if isinstance(params, cls) else list(params)  # type: ignore[call-overload]
    if n is None:
        n = len(plist)
    if len(plist) == 1:
        plist = plist * n
    if len(plist) != n or n < 1:
        raise TwinError(f"{what}: {len(plist)} parameter sets for n={n} units")
    return tuple(plist)


def lag_mean(a: np.ndarray) -> np.ndarray:
    """Mean over a step of ``exp(-t/tau)`` relative to its start, from ``a = exp(-dt/tau)``:
    ``(1 - a) / ln(1/a)`` (0 for an instant response, 1 for none)."""
    a = np.asarray(a, dtype=float)
    inside = (a > 0.0) & (a < 1.0)
    safe = np.where(inside, a, 0.5)
    return np.where(inside, (1.0 - safe) / -np.log(safe), np.where(a >= 1.0, 1.0, 0.0))


class LagFactors:
    """:func:`lag_factors` of fixed time constants, computed once per step length: ``a``,
    or with ``mean`` the columns ``(a, lag_mean(a))`` (a kernel that needs the step's mean
    then takes no logarithm per step)."""

    def __init__(self, tau_s: np.ndarray, mean: bool = False) -> None:
        self.tau_s = np.asarray(tau_s, dtype=float)
        self.mean = mean
        self._by_dt: dict[float, np.ndarray] = {}

    def __call__(self, dt: float) -> np.ndarray:
        a = self._by_dt.get(dt)
        if a is None:
            if len(self._by_dt) >= 16:  # a run uses one dt; a sweep of dts must not grow this
                self._by_dt.clear()
            a = lag_factors(self.tau_s, dt)[0]
            if self.mean:
                a = np.stack((a, lag_mean(a)), axis=1)
            a = self._by_dt[dt] = np.ascontiguousarray(a)
        return a
