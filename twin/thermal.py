"""Lumped two-node thermal model: a body (cell) coupled to a holder (jig, enclosure) and ambient.

The equations are those of PyBaMM's equivalent-circuit thermal sub-model
(``pybamm.equivalent_circuit_elements.ThermalSubModel``)::

    C_cell dT_cell/dt = Q - k_cj (T_cell - T_jig)
    C_jig  dT_jig/dt  = k_cj (T_cell - T_jig) - k_ja (T_jig - T_amb)

with the heat ``Q`` generated in the body and the ambient temperature ``T_amb`` as inputs.
They are linear, so with ``Q`` and ``T_amb`` held over a step the exact update is one matrix
exponential (:func:`twin.stepper.discretise`).
"""

from __future__ import annotations

import numpy as np

from twin.stepper import discretise


def two_node_matrices(
    c_cell_j_per_k: np.ndarray | float,
    c_jig_j_per_k: np.ndarray | float,
    k_cell_jig_w_per_k: np.ndarray | float,
    k_jig_ambient_w_per_k: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """State and input matrices of ``d[T_cell, T_jig]/dt = A T + B [Q, T_amb]``.

    Parameters
    ----------
    c_cell_j_per_k
        Heat capacity of the cell. [J/K]
    c_jig_j_per_k
        Heat capacity of the jig (holder, enclosure). [J/K]
    k_cell_jig_w_per_k
        Thermal conductance between cell and jig. [W/K]
    k_jig_ambient_w_per_k
        Thermal conductance between jig and ambient air. [W/K]

    Returns
    -------
    a, b
        Arrays shaped ``(..., 2, 2)`` broadcast over the parameters. [1/s], [K/J and 1/s]
    """
    cc, cj, kcj, kja = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in
          (c_cell_j_per_k, c_jig_j_per_k, k_cell_jig_w_per_k, k_jig_ambient_w_per_k)))
    a = np.zeros(cc.shape + (2, 2))
    b = np.zeros(cc.shape + (2, 2))
    a[..., 0, 0] = -kcj / cc
    a[..., 0, 1] = kcj / cc
    a[..., 1, 0] = kcj / cj
    a[..., 1, 1] = -(kcj + kja) / cj
    b[..., 0, 0] = 1.0 / cc
    b[..., 1, 1] = kja / cj
    return a, b


def two_node_step(
    c_cell_j_per_k: np.ndarray | float,
    c_jig_j_per_k: np.ndarray | float,
    k_cell_jig_w_per_k: np.ndarray | float,
    k_jig_ambient_w_per_k: np.ndarray | float,
    dt: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact zero-order-hold step ``T' = Ad T + Bd [Q, T_amb]`` over ``dt`` seconds.

    Returns ``(Ad, Bd)``, each ``(..., 2, 2)``.
    """
    a, b = two_node_matrices(c_cell_j_per_k, c_jig_j_per_k, k_cell_jig_w_per_k,
                             k_jig_ambient_w_per_k)
    return discretise(a, b, dt)
