"""Fit a battery's resistances, capacitances and capacity to a recorded current/voltage trace.

The fit is nonlinear least squares (:func:`scipy.optimize.least_squares`) on the terminal
voltage, simulated with the same exact-step model the twin runs (:meth:`Battery.run`), with
the recorded current as input and the recorded cell temperature in the tables.  The unknowns
are log scale factors on the base parameters, so a parameter given as a table keeps its shape
and only its level is fitted.  Initial guesses come from the recording itself: the
series resistance from the voltage steps at current steps, the RC pairs from the longest
relaxation after a pulse (two exponentials), the capacity from the base set.

What the recording does not determine keeps its base value: a field that barely moves the
voltage; the capacity when the recording moves less than ``_MIN_CHARGE_FRACTION`` of it (the
voltage then holds too little of the OCV curve to read it from, and what little it holds is
within the OCV table's own error); and a field whose standard error, from the Jacobian of the
fit and the RMS of its residuals, exceeds ``_MAX_STD_ERROR`` of its value.  Such fields are
set aside one at a time, the worst first, and the rest fitted again.

An RC pair is fitted as a pair: its voltage, R I (1 - exp(-t / (R C))), ties R and C, so a
field fitted beside its partner held at the twin's value takes up the partner's error (a
recording shorter than tau reads C from the slope but not R).  Such a field is set aside too
where its error with the partner free (its standard error then, and how far it moves) exceeds
``_MAX_STD_ERROR``; else its standard error is the one with the partner free, and the report
says how far it leans on the partner.  A pair the twin does not have (a start the fit gave
it) that the recording does not determine is left out, as in the twin.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.optimize

from twin.battery import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    Battery,
    BatteryInitial,
    BatteryParams,
    PackParams,
)
from twin.errors import TwinError
from twin.lsq import standard_errors
from twin.params import Table

_V = OUTPUT_NAMES.index("voltage_v")
_MAX_FACTOR = 5.0  # fitted parameters stay within base / 5 ... base * 5
#: a parameter whose e-fold change moves the voltage (RMS) by less than this fraction of it
#: is not determined by the recording: it keeps its base value
_MIN_SENSITIVITY = 1e-6
#: the capacity is fitted only from a recording that moves at least this fraction of it
#: (the span of the charge counted from the start)
_MIN_CHARGE_FRACTION = 0.01
#: a fitted field whose relative standard error exceeds this is not determined (1.96 of it:
#: a 95 % confidence interval of about +-10 %): it keeps its base value
_MAX_STD_ERROR = 0.05


def _fields(n_rc: int) -> tuple[str, ...]:
    if n_rc == 1:
        return ("r0_ohm", "r1_ohm", "c1_f", "capacity_ah")
    if n_rc == 2:
        return ("r0_ohm", "r1_ohm", "c1_f", "r2_ohm", "c2_f", "capacity_ah")
    raise TwinError(f"calibration: n_rc={n_rc}; the battery model has 1 or 2 RC pairs")


def _scaled(value: float | Table, factor: float) -> float | Table:
    if isinstance(value, Table):
        return Table(value.axes, value.values * factor)
    return value * factor


def _level(value: float | Table, temp_c: float, soc: float, current_a: float) -> float:
    """A representative value of a parameter: a table at the recording's operating point."""
    if not isinstance(value, Table):
        return float(value)
    point = {"temp_c": temp_c, "soc": soc, "current_a": current_a}
    return float(value(**{a: point[a] for a in value.axis_names}))


def _embed(values: np.ndarray, free: np.ndarray) -> np.ndarray:
    """A full parameter vector: ``values`` where ``free``, zero (the base value) elsewhere."""
    theta = np.zeros(free.size)
    theta[free] = values
    return theta


def _relaxation(t: np.ndarray, v: np.ndarray, n_rc: int) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes and time constants of ``v(t) = v_inf + sum_j A_j exp(-t / tau_j)``."""
    span = t[-1] - t[0]
    tt = t - t[0]
    taus0 = np.array([span / 20.0, span / 3.0])[:n_rc]

    def model(p: np.ndarray) -> np.ndarray:
        amps, taus = p[1:1 + n_rc], np.exp(p[1 + n_rc:])
        return p[0] + (amps[None, :] * np.exp(-tt[:, None] / taus[None, :])).sum(axis=1)

    p0 = np.concatenate([[v[-1]], np.full(n_rc, (v[0] - v[-1]) / n_rc), np.log(taus0)])
    sol = scipy.optimize.least_squares(lambda p: model(p) - v, p0, method="lm")
    amps, taus = sol.x[1:1 + n_rc], np.exp(sol.x[1 + n_rc:])
    order = np.argsort(taus)
    return amps[order], taus[order]


def pulse_guesses(t_s: np.ndarray, current_a: np.ndarray, voltage_v: np.ndarray,
                  n_rc: int = 2) -> dict[str, float]:
    """Series resistance and RC pairs read off current steps and relaxations, at the terminals.

    Returns
    -------
    dict
        ``r0_ohm`` from the voltage jumps at current steps (median), and where the recording
        has a rest after a pulse, ``r{j}_ohm`` and ``tau{j}_s`` from a fit of exponentials to
        the longest such relaxation.  Values are of the whole pack as recorded. [Ohm], [s]
    """
    out: dict[str, float] = {}
    di = np.diff(current_a)
    dv = np.diff(voltage_v)
    scale = np.abs(current_a).max()
    if scale == 0:
        return out
    edges = np.flatnonzero(np.abs(di) > 0.2 * np.abs(di).max())
    r0 = -dv[edges] / di[edges]
    if r0.size and np.median(r0) > 0:
        out["r0_ohm"] = float(np.median(r0))
    rest = np.abs(current_a) <= 1e-3 * scale
    best = None
    k = 1
    while k < len(rest):
        if rest[k] and not rest[k - 1]:
            end = k
            while end < len(rest) and rest[end]:
                end += 1
            if end - k >= 20 and (best is None or end - k > best[1] - best[0]):
                best = (k, end)
            k = end
        else:
            k += 1
    if best is None:
        return out
    start, end = best
    i_pulse = current_a[start - 1]
    p0 = start - 1
    while p0 > 0 and abs(current_a[p0 - 1] - i_pulse) <= 1e-3 * scale:
        p0 -= 1
    duration = t_s[start] - t_s[p0]
    try:
        amps, taus = _relaxation(t_s[start:end], voltage_v[start:end], n_rc)
    except (ValueError, np.linalg.LinAlgError):
        return out
    for j, (amp, tau) in enumerate(zip(amps, taus), start=1):
        r = -amp / (i_pulse * -np.expm1(-duration / tau))
        if np.isfinite(r) and r > 0 and np.isfinite(tau) and tau > 0:
            out[f"r{j}_ohm"] = float(r)
            out[f"tau{j}_s"] = float(tau)
    return out


def _little_charge(moved_ah: float, capacity_ah: float, cells_parallel: int) -> str:
    """Why the capacity is kept: the charge the recording moves through the pack, a share of
    the pack's ``capacity_ah`` too small to read it from.  With ``cells_parallel`` (> 0) it
    is said per cell, the pack's charge beside it: a reader of the cell's fields who is given
    the pack's figures reads them as off by the number of cells in parallel."""
    moved, of, share = moved_ah, capacity_ah, f"{moved_ah / capacity_ah:.2%}"
    needs = f"(fitted from {_MIN_CHARGE_FRACTION:.0%})"
    if cells_parallel <= 0:
        return f"the recording moves {moved:.3g} Ah, {share} of {of:.4g} Ah {needs}"
    through = ""
    if cells_parallel > 1:
        moved, of = moved_ah / cells_parallel, capacity_ah / cells_parallel
        through = (f" through each cell ({moved_ah:.3g} Ah through the pack's "
                   f"{cells_parallel} in parallel)")
    return f"the recording moves {moved:.3g} Ah{through}, {share} of the cell's {of:.4g} Ah {needs}"


def fit_battery(t_s: np.ndarray, current_a: np.ndarray, voltage_v: np.ndarray,
                temp_c: np.ndarray, base: BatteryParams | PackParams, soc0: float,
                n_rc: int = 2, *, per_cell: bool = False
                ) -> tuple[BatteryParams | PackParams, dict[str, Any]]:
    """Fit R0, R1, C1 (R2, C2) and capacity of ``base`` to a recording.

    Parameters
    ----------
    t_s
        Sample times, strictly increasing. [s]
    current_a
        Recorded current, held until the next sample, positive on discharge. [A]
    voltage_v
        Recorded terminal voltage. [V]
    temp_c
        Recorded cell temperature, used in the parameter tables. [degC]
    base
        The parameters to start from (the twin's); values not fitted are kept.
    soc0
        State of charge at the first sample, with the RC pairs relaxed. [-]
    n_rc
        Number of RC pairs in the fitted model; 1 drops a second pair of ``base``.
    per_cell
        Say the charge and capacity of ``why_not_determined`` per cell (and the pack's charge
        beside it), for a reader who sees the cell's fields, as ``gridloop calibrate``'s
        table shows them; the report's numbers are the pack's either way.

    Returns
    -------
    params, report
        The fitted parameters (of the same type as ``base``) and a report: the scale
        factor of each field against ``base``, the fields fitted, those the recording does
        not determine (kept at their base value) and why, those fitted beside a held RC
        partner and how far they lean on it, the base's second pair where ``n_rc=1``
        dropped it, those that ended at the edge of their range
        (``_MAX_FACTOR``), the relative standard error of each fitted field, the charge
        the recording moves through the pack [Ah] and its fraction of the capacity, the
        initial guesses, RMS voltage residuals with the base, the guessed and the fitted
        parameters [V], and the optimiser's status.
    """
    fields = _fields(n_rc)
    t, i_a, v, temp = (np.asarray(a, dtype=float) for a in (t_s, current_a, voltage_v, temp_c))
    if not (t.ndim == 1 and t.shape == i_a.shape == v.shape == temp.shape):
        raise TwinError("calibration: t_s, current_a, voltage_v and temp_c must be "
                        "one-dimensional and of equal length")
    if t.size < 10:
        raise TwinError(f"calibration: {t.size} samples are too few to fit")
    for name, a in (("t_s", t), ("current_a", i_a), ("voltage_v", v), ("temp_c", temp)):
        if not np.all(np.isfinite(a)):
            raise TwinError(f"calibration: {name}[{int(np.argmin(np.isfinite(a)))}] "
                            "is not finite")
    if np.any(np.diff(t) <= 0):
        raise TwinError("calibration: t_s must increase strictly")
    if not 0 <= soc0 <= 1:
        raise TwinError(f"calibration: soc0={soc0} is not in [0, 1]")
    pack = base if isinstance(base, PackParams) else PackParams(base)
    twin = pack.cell
    cell = twin
    if n_rc == 1:
        cell = dataclasses.replace(cell, r2_ohm=0.0, c2_f=0.0)
    elif cell.n_rc == 1:  # give the missing pair a start: a tenth of R1, ten times tau1
        cell = dataclasses.replace(cell, r2_ohm=_scaled(cell.r1_ohm, 0.1),
                                   c2_f=_scaled(cell.c1_f, 100.0))
    dts = np.append(np.diff(t), np.diff(t)[-1])
    u = np.zeros((t.size, 1, len(INPUT_NAMES)))
    u[:, 0, INPUT_NAMES.index("current_a")] = i_a
    model = _Model(cell, fields, pack, u, dts, temp, BatteryInitial(soc=soc0), v)

    # initial guesses, from the recording where it has pulses and relaxations
    guess = pulse_guesses(t, i_a, v, n_rc)
    at = (float(np.mean(temp)), soc0, float(np.mean(np.abs(i_a))))
    bound = np.log(_MAX_FACTOR)
    theta0 = np.clip(_theta0(guess, cell, pack, fields, at), -0.9 * bound, 0.9 * bound)
    first = model.simulate(np.vstack([np.zeros(len(fields)), theta0]))
    # before: the twin as it is (not the start a fit of a pair the twin lacks is given)
    first[0] = dataclasses.replace(model, cell=twin).simulate(np.zeros((1, len(fields))))[0]
    # What the recording cannot tell (a field that barely moves the voltage: no current, no
    # relaxation, too little charge for the capacity) keeps its base value.
    sensitivity = np.sqrt(np.mean(model.jacobian(np.zeros(len(fields))) ** 2, axis=0))
    sensitive = sensitivity > _MIN_SENSITIVITY * max(float(np.mean(np.abs(v))), 1.0)
    if not sensitive.any():
        raise TwinError(f"calibration: the recording does not excite the battery: no "
                        f"parameter moves its voltage measurably (current "
                        f"{i_a.min():.3g} to {i_a.max():.3g} A)")
    fit = _Fit(free=np.ones(len(fields), dtype=bool), theta=theta0.copy(), why={},
               std_error=np.full(len(fields), np.nan))
    for k in np.flatnonzero(~sensitive):
        _set_aside(model, fit, twin, int(k), "it barely moves the voltage")
    charge_ah = np.concatenate([[0.0], np.cumsum(i_a * dts)]) / 3600.0
    moved_ah = float(np.ptp(charge_ah))  # of the pack
    capacity_ah = _level(cell.capacity_ah, *at) * pack.cells_parallel
    cap = fields.index("capacity_ah")
    if fit.free[cap] and moved_ah < _MIN_CHARGE_FRACTION * capacity_ah:
        _set_aside(model, fit, twin, cap, _little_charge(
            moved_ah, capacity_ah, pack.cells_parallel if per_cell else 0))
    _fit_determined(model, fit, twin, bound)
    free, theta, sol = fit.free, fit.theta, fit.sol
    fitted = model.scaled_cell(theta)
    factors = np.exp(theta)
    report = {
        "fields": list(fields),
        "fitted": [n for n, f in zip(fields, free) if f],
        "not_determined": [n for n, f in zip(fields, free) if not f],
        "why_not_determined": {n: fit.why[n] for n in fields if n in fit.why},
        # the twin's second pair, left out of a model with one (n_rc=1)
        "dropped": [n for n in ("r2_ohm", "c2_f")
                    if n not in fields and _present(getattr(twin, n))],
        # a factor at the edge of its range: the fit wanted more, a sign of a recording that
        # does not determine it (or of a model that does not fit the cell)
        "at_bound": [n for n, th in zip(fields, theta) if abs(th) > 0.999 * bound],
        "factors": {n: float(f) for n, f in zip(fields, factors)},
        "guesses": guess,
        "rms_base_v": float(np.sqrt(np.mean((first[0] - v) ** 2))),
        "rms_guess_v": float(np.sqrt(np.mean((first[1] - v) ** 2))),
        "rms_fit_v": float(np.sqrt(np.mean(model.residuals(theta) ** 2))),
        # relative standard error of each fitted field (of its log factor), with the RC
        # partner of a field free too where the recording does not determine it [-]
        "std_errors": {n: float(e) for n, e, f in zip(fields, fit.std_error, free) if f},
        # a fitted field whose RC partner the recording does not determine, and how far it
        # depends on the partner's held value
        "leaning": {fields[k]: _leaning_note(*x) for k, x in fit.leaning.items()},
        "charge_moved_ah": moved_ah,
        "charge_moved_fraction": moved_ah / capacity_ah,
        "samples": int(t.size),
        "success": bool(sol is None or sol.success),
        "evaluations": fit.evaluations,
        "message": "nothing determined" if sol is None else str(sol.message),
    }
    if isinstance(base, PackParams):
        return PackParams(fitted, base.cells_series, base.cells_parallel), report
    return fitted, report


def _theta0(guess: dict[str, float], cell: BatteryParams, pack: PackParams,
            fields: tuple[str, ...], at: tuple[float, float, float]) -> np.ndarray:
    """Log factors of the guesses read off the recording (zero: no guess, the base value)."""
    cell_per_pack = pack.cells_parallel / pack.cells_series  # pack resistance -> cell
    theta0 = np.zeros(len(fields))
    for k, name in enumerate(fields):
        if name == "capacity_ah":
            continue
        j = name[1]
        if name.startswith("r") and name in guess:
            value = guess[name] * cell_per_pack
        elif name.startswith("c") and f"tau{j}_s" in guess and f"r{j}_ohm" in guess:
            value = guess[f"tau{j}_s"] / (guess[f"r{j}_ohm"] * cell_per_pack)
        else:
            continue
        theta0[k] = np.log(value / _level(getattr(cell, name), *at))
    return theta0


#: the other field of each field's RC pair: the pair's voltage, R I (1 - exp(-t / (R C))),
#: depends on both, so a held R moves the C fitted beside it, and the other way round
_PARTNER = {"r1_ohm": "c1_f", "c1_f": "r1_ohm", "r2_ohm": "c2_f", "c2_f": "r2_ohm"}
_ORDINAL = {"1": "first", "2": "second"}


def _present(value: float | Table) -> bool:
    """Whether a field of an RC pair is there: a pair of zeros is no pair at all."""
    return isinstance(value, Table) or value != 0


@dataclasses.dataclass
class _Model:
    """The pack's terminal voltage under the recorded current, for log scale factors
    ``theta`` of ``fields`` on ``cell`` (a factor of zero keeps ``cell``'s value)."""

    cell: BatteryParams
    fields: tuple[str, ...]
    pack: PackParams
    u: np.ndarray
    dts: np.ndarray
    temp: np.ndarray
    initial: BatteryInitial
    v: np.ndarray
    step: float = 1e-6

    def scaled_cell(self, theta: np.ndarray) -> BatteryParams:
        f = np.exp(theta)
        return dataclasses.replace(self.cell, **{n: _scaled(getattr(self.cell, n), float(k))
                                                 for n, k in zip(self.fields, f)})

    def simulate(self, thetas: np.ndarray) -> np.ndarray:
        packs = [PackParams(self.scaled_cell(th), self.pack.cells_series,
                            self.pack.cells_parallel) for th in thetas]
        bat = Battery(packs, initial=self.initial)
        uu = np.repeat(self.u, len(packs), axis=1)
        y = bat.run(bat.initial_state(), uu, self.dts, temp_cell_c=self.temp[:, None])[1]
        return y[:, :, _V].T

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        return self.simulate(theta[None, :])[0] - self.v

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        thetas = np.vstack([theta, theta + self.step * np.eye(len(theta))])
        vs = self.simulate(thetas)
        return ((vs[1:] - vs[0]) / self.step).T


@dataclasses.dataclass
class _Fit:
    """Where the fit stands: which fields are free, their log factors, why the others are
    not, and the relative standard error of each free one."""

    free: np.ndarray
    theta: np.ndarray
    why: dict[str, str]
    std_error: np.ndarray
    evaluations: int = 0
    sol: Any = None
    #: each free field fitted beside its held RC partner: (standard error, move, partner)
    #: with the partner free too, together within ``_MAX_STD_ERROR``
    leaning: dict[int, tuple[float, float, str]] = dataclasses.field(default_factory=dict)


def _set_aside(model: _Model, fit: _Fit, twin: BatteryParams, k: int, reason: str) -> None:
    """Keep field ``k`` at its base value, for ``reason``.  A field of an RC pair the twin
    does not have (the fit gave it a start) takes its partner with it: the model then has no
    such pair, as the twin, rather than the start the fit gave it."""
    name = model.fields[k]
    fit.free[k], fit.theta[k] = False, 0.0
    fit.why[name] = reason
    partner = _PARTNER.get(name)
    if partner is None or (_present(getattr(twin, name)) and _present(getattr(twin, partner))):
        return
    j = name[1]
    model.cell = dataclasses.replace(model.cell, **{n: getattr(twin, n) for n in (name, partner)})
    fit.why[name] = f"{reason}; the twin has no {_ORDINAL[j]} RC pair, so the fit keeps none"
    if partner in model.fields and fit.free[p := model.fields.index(partner)]:
        fit.free[p], fit.theta[p] = False, 0.0
        fit.why[partner] = (f"kept with {name}: the twin has no {_ORDINAL[j]} RC pair, and the "
                            f"recording does not determine one")


def _solve(model: _Model, fit: _Fit, bound: float) -> None:
    """Least squares on the free fields, from where they are; their standard errors."""
    free = fit.free.copy()

    def residuals(th: np.ndarray) -> np.ndarray:
        return model.residuals(_embed(th, free))

    def jacobian(th: np.ndarray) -> np.ndarray:
        return model.jacobian(_embed(th, free))[:, free]

    sol = scipy.optimize.least_squares(residuals, fit.theta[free], jac=jacobian,
                                       bounds=(-bound, bound), x_scale=1.0,
                                       xtol=1e-10, ftol=1e-12, gtol=1e-10)
    fit.evaluations += int(sol.nfev)
    fit.sol, fit.theta = sol, _embed(sol.x, free)
    fit.std_error = np.full(free.size, np.nan)
    fit.std_error[free] = standard_errors(sol.jac, sol.fun)


def _leaning(model: _Model, fit: _Fit) -> dict[int, tuple[float, float, str]]:
    """Each free field whose RC partner is held: with the partner free too, its relative
    standard error, how far it would move (a Gauss-Newton step from here), and the partner.
    A fit beside a partner held at a value the recording cannot confirm takes up the
    partner's error; the standard error of that fit alone would take the partner as exact."""
    out = {}
    jac = res = None
    for k, name in enumerate(model.fields):
        partner = _PARTNER.get(name)
        if not fit.free[k] or partner not in model.fields:
            continue
        p = model.fields.index(partner)
        if fit.free[p] or not _present(getattr(model.cell, partner)):
            continue
        if jac is None:
            jac, res = model.jacobian(fit.theta), model.residuals(fit.theta)
        cols = fit.free.copy()
        cols[p] = True
        at = int(np.count_nonzero(cols[:k]))  # where field k is among the columns
        se = standard_errors(jac[:, cols], res)[at]
        shift = np.linalg.lstsq(jac[:, cols], -res, rcond=None)[0][at]
        out[k] = (float(se), float(shift), partner)
    return out


def _partner_error(se: float, shift: float) -> float:
    """A field's relative error when its RC partner is not known: its standard error with
    the partner free, and how far it moves then, together."""
    return float(np.hypot(se, shift))


def _with_partner(se: float, shift: float, partner: str) -> str:
    return (f"with {partner} free too it moves {100 * shift:+.3g}% and its standard error is "
            f"{100 * se:.3g}%: {100 * _partner_error(se, shift):.3g}% of its value together "
            f"(fitted up to {_MAX_STD_ERROR:.0%})")


def _leaning_note(se: float, shift: float, partner: str) -> str:
    """What a field fitted beside its held RC partner owes the partner's value."""
    return f"fitted beside {partner} held at the twin's value: {_with_partner(se, shift, partner)}"


def _leaning_reason(name: str, se: float, shift: float, partner: str) -> str:
    """Why a field is kept with its held RC partner."""
    j = name[1]
    return (f"kept with {partner}, its RC partner (tau{j} = R{j}*C{j}): fitted beside "
            f"{partner} held at the twin's value, it takes up {partner}'s error; "
            f"{_with_partner(se, shift, partner)}")


def _fit_determined(model: _Model, fit: _Fit, twin: BatteryParams, bound: float) -> None:
    """Fit the free fields, setting aside one at a time, the worst first, what the recording
    does not determine: a field whose standard error exceeds ``_MAX_STD_ERROR``, then one
    whose error, with its held RC partner not known, exceeds it."""
    while fit.free.any():
        _solve(model, fit, bound)
        worst = int(np.nanargmax(fit.std_error))
        if fit.std_error[worst] > _MAX_STD_ERROR:
            _set_aside(model, fit, twin, worst,
                       f"its standard error is {100 * fit.std_error[worst]:.3g}% of its "
                       f"value (fitted up to {_MAX_STD_ERROR:.0%})")
            continue
        leaning = _leaning(model, fit)
        for k, (se, _, _) in leaning.items():
            fit.std_error[k] = se  # the partner is not known exactly: its error counts
        over = {k: _partner_error(se, shift) for k, (se, shift, _) in leaning.items()}
        over = {k: x for k, x in over.items() if x > _MAX_STD_ERROR}
        if not over:
            fit.leaning = leaning
            return
        k = max(over, key=over.__getitem__)
        _set_aside(model, fit, twin, k, _leaning_reason(model.fields[k], *leaning[k]))
