"""``gridloop twin``: run one asset model on a profile; import parameter sets."""

from __future__ import annotations

import argparse

#: models ``twin simulate`` runs: kind -> module with ``simulate_profile``
SIMULATORS = {"battery": "twin.battery", "inverter": "twin.inverter"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("twin", help="run one asset model; import parameter sets",
                       description="Run one asset model on a profile, or convert a "
                       "parameter set from PyBaMM or the CEC library.")
    tsub = p.add_subparsers(dest="twin_command", metavar="SUBCOMMAND", required=True)

    sim = tsub.add_parser("simulate", help="run one model on a CSV profile",
                          description="Run one asset model on a profile. Input CSV: t_s and "
                          "the model's inputs (battery: current_a, positive = discharge, or "
                          "power_w; inverter: p_dc_w and v_dc_v), held over each step. "
                          "Output CSV: t_s and the model's outputs.")
    sim.add_argument("kind", choices=sorted(SIMULATORS))
    sim.add_argument("--params", required=True, metavar="PARAMS.toml",
                     help="parameter file (or the name of a shipped one)")
    sim.add_argument("--input", required=True, metavar="IN.csv")
    sim.add_argument("--out", required=True, metavar="OUT.csv")
    sim.add_argument("--dt", type=float, metavar="S",
                     help="resample the profile to this step: the times T0 + k S up to its "
                          "last sample's, so at most the profile's span (default: the "
                          "input's times)")
    sim.add_argument("--method", choices=("exact", "scipy"), default="exact",
                     help="exact discretisation (default) or solve_ivp per step (reference)")
    sim.set_defaults(func=simulate)

    params = tsub.add_parser("params", help="import parameter sets from other tools")
    psub = params.add_subparsers(dest="params_command", metavar="SUBCOMMAND", required=True)
    pb = psub.add_parser("import-pybamm", help="convert a PyBaMM equivalent-circuit set",
                         description="Convert a PyBaMM equivalent-circuit parameter set "
                         "(e.g. ECM_Example) with its lookup tables, thermal parameters and "
                         "initial conditions into a gridloop battery parameter file.")
    pb.add_argument("name", help="PyBaMM parameter set name, e.g. ECM_Example")
    pb.add_argument("--out", required=True, metavar="PARAMS.toml")
    pb.set_defaults(func=import_pybamm)
    cec = psub.add_parser("import-cec", help="take an inverter from pvlib's CEC library",
                          description="Write an inverter parameter file (Sandia model) for "
                          "an inverter of the CEC library that pvlib ships.")
    cec.add_argument("name", help='inverter name, e.g. "ABB: TRIO-60.0-TL-OUTD-US-480 [480V]"')
    cec.add_argument("--out", required=True, metavar="PARAMS.toml")
    cec.set_defaults(func=import_cec)


#: the most steps ``--dt`` may resample a profile to (a grid beyond it fills the memory)
MAX_STEPS = 100_000_000


def simulate(args: argparse.Namespace) -> int:
    import importlib
    import math

    from bench.csvio import read_columns, write_columns
    from bench.errors import BenchError
    from bench.paths import check_out, params_file
    from twin import params
    from twin.errors import ParameterError, TwinError

    if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
        raise BenchError(f"--dt must be a positive number of seconds, not {args.dt}")
    params_path = params_file(args.params)
    check_out(args.out, [("the profile", args.input), ("the parameter file", params_path)])
    pset = params.load(params_path)
    columns = read_columns(args.input)
    t = columns.pop("t_s")
    module = importlib.import_module(SIMULATORS[args.kind])
    if args.dt is not None:
        t, columns = _resample(t, columns, args.dt)
    try:
        out = module.simulate_profile(pset, t, columns, method=args.method)
    except ParameterError:  # what the parameter file holds wrong: it names the file
        raise
    except TwinError as exc:  # what the profile lacks or holds wrong: name its file
        raise TwinError(f"{args.input}: {exc}") from None
    write_columns(args.out, {"t_s": out.pop("t_s"), **out})
    print(f"wrote {args.out}: {len(next(iter(out.values())))} rows, columns "
          f"{', '.join(['t_s', *out])}")
    return 0


def _resample(t, columns, dt):
    """Zero-order hold of the input profile on the grid ``t[0] + k dt``.

    The grid comes from integer ``k`` (a running sum drifts), and a sample within a millionth
    of a step, or a few rounding units of the times, of a grid time counts as at it (and
    lends it its time): the sample at 0.9 s is on the grid of 0.3 s, whose third time is
    0.8999999999999999.
    """
    import numpy as np

    from bench.errors import BenchError

    tol = 1e-6 * dt + 4 * np.spacing(max(abs(t[0]), abs(t[-1])))
    steps = (t[-1] - t[0] + tol) / dt
    if steps < 1:  # the grid would be the first sample alone, the rest of the profile unread
        if t.size == 1:
            raise BenchError(f"--dt {dt:g}: the profile has a single sample (t_s = "
                             f"{t[0]:g}), nothing to resample; leave --dt out")
        raise BenchError(f"--dt {dt:g} s is longer than the profile, which spans "
                         f"{t[-1] - t[0]:g} s (t_s {t[0]:g} to {t[-1]:g}); give --dt "
                         f"{t[-1] - t[0]:g} or less")
    if not steps < MAX_STEPS:
        raise BenchError(f"--dt {dt:g} makes {steps:,.0f} steps of the profile's "
                         f"{t[-1] - t[0]:g} s; at most {MAX_STEPS:,}")
    grid = t[0] + dt * np.arange(int(steps) + 1)
    idx = np.searchsorted(t, grid + tol, side="right") - 1
    grid = np.where(np.abs(t[idx] - grid) <= tol, t[idx], grid)
    return grid, {k: v[idx] for k, v in columns.items()}


def import_pybamm(args: argparse.Namespace) -> int:
    from bench.paths import check_out
    from twin import params
    from twin.interop.pybamm import import_parameter_set

    check_out(args.out)
    pset = import_parameter_set(args.name)
    params.save(pset, args.out)
    print(f"wrote {args.out}: {pset.name} ({pset.source})")
    return 0


def import_cec(args: argparse.Namespace) -> int:
    from bench.paths import check_out
    from twin import params
    from twin.interop.cec import import_cec_inverter

    check_out(args.out)
    pset = import_cec_inverter(args.name)
    params.save(pset, args.out)
    print(f"wrote {args.out}: {pset.name}")
    return 0
