"""How well a least-squares fit determines its parameters: one answer for every fit in
gridloop (battery, inverter and GPU calibration)."""

from __future__ import annotations

import numpy as np


def standard_errors(jac: np.ndarray, res: np.ndarray, sum_sq: float | None = None
                    ) -> np.ndarray:
    """Standard errors of least-squares parameters: the square roots of the diagonal of
    ``s**2 (J^T J)^-1``, with ``J`` the Jacobian of the residuals ``res`` at the solution and
    ``s**2`` their variance over the degrees of freedom: ``sum_sq`` (default ``res @ res``;
    a robust fit passes twice its loss, scipy's ``cost``) over ``len(res)`` less the
    parameters.

    Computed from the singular values of ``J``: a parameter the residuals do not depend on,
    or only together with others (a null direction, singular values below 1e-10 of the
    largest), has an infinite error, and so has every parameter of a fit with no degree of
    freedom left.
    """
    jac = np.asarray(jac, dtype=float)
    n, p = jac.shape
    if n <= p or p == 0:
        return np.full(p, np.inf)
    _, sv, vt = np.linalg.svd(jac, full_matrices=False)
    null = sv <= 1e-10 * max(float(sv.max()), 1e-300)
    w = vt**2
    variance = float(res @ res if sum_sq is None else sum_sq) / (n - p)
    se = np.sqrt(variance * np.sum(w[~null] / sv[~null, None] ** 2, axis=0))
    se[np.any(w[null] > 1e-12, axis=0)] = np.inf
    return se
