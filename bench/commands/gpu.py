"""``gridloop gpu``: fit the GPU model to recordings, predict a schedule's power, score.

A trace is a CSV (plain or ``.gz``) in the format of the shared H100 recordings; its
schedule is ``NAME.events.json`` beside ``NAME.csv.gz`` unless ``--events`` names it (one
trace only).  ``--span T0:T1`` (one per trace, in order; ``:`` for all of it) restricts
what the fit sees, so the rest of the recording tests it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path
from typing import Any

#: what ``gridloop gpu --help`` says: plain text, as argparse prints it (the docstring's reST
#: markup would show as it is)
DESCRIPTION = (
    "Fit the GPU model to recordings, predict a schedule's power, score a parameter set, "
    "draw a rack's power spectrum.  A trace is a CSV (plain or .gz) in the format of the "
    "shared H100 recordings; its schedule is NAME.events.json beside NAME.csv.gz unless "
    "--events names it (one trace only).  --span T0:T1 (one per trace, in order; ':' for "
    "all of it) restricts what the fit sees, so the rest of the recording tests it.")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gpu", help="GPU power model: fit, predict, score, spectrum",
                                   description=DESCRIPTION)
    sub = parser.add_subparsers(dest="gpu_command", metavar="ACTION", required=True)

    fit = sub.add_parser("fit", help="fit GPU parameters to recorded traces",
                         description="Fit the GPU model to one or more traces and write a "
                                     "parameter file with provenance and accuracy figures.")
    fit.add_argument("traces", nargs="+", metavar="TRACE.csv", help="recorded traces")
    fit.add_argument("--out", required=True, metavar="GPU.toml", help="parameter file to write")
    _schedule_args(fit)
    fit.add_argument("--start", metavar="PARAMS.toml",
                     help="starting parameters, a file or a shipped set's name (default: the "
                          "shipped H100 set)")
    fit.add_argument("--power-limit-w", type=_positive, metavar="W",
                     help="the card's power limit (default: NAME.meta.json beside the first "
                          "trace, else the starting set's)")
    fit.add_argument("--name", help="name of the parameter set (default: from the start set)")
    fit.set_defaults(func=_fit)

    predict = sub.add_parser("predict", help="simulate a GPU through a schedule",
                             description="Write t_s,power_w (instantaneous power, the mean "
                                         "over each step) plus power_nvml_w (NVML's one-second "
                                         "average), temp_c and sm_clock_mhz.")
    predict.add_argument("params", metavar="GPU.toml",
                         help="GPU parameter file (or the name of a shipped one)")
    predict.add_argument("--events", required=True, metavar="EVENTS.json", help="the schedule")
    predict.add_argument("--out", required=True, metavar="PRED.csv", help="CSV to write")
    predict.add_argument("--dt", type=_positive, default=0.01, metavar="S",
                         help="output step (default 0.01 s)")
    predict.add_argument("--temp-c", type=float, metavar="C",
                         help="initial die temperature (default: the parameter file's)")
    predict.set_defaults(func=_predict)

    score = sub.add_parser("score", help="accuracy of a parameter set on recorded traces",
                           description="Print, per trace: the mean absolute error of "
                                       "one-second window means of power over the mean power "
                                       "(against power_inst_w, and against the energy "
                                       "counter), the total energy error and the mean "
                                       "absolute temperature error.")
    score.add_argument("params", metavar="GPU.toml",
                       help="GPU parameter file (or the name of a shipped one)")
    score.add_argument("traces", nargs="+", metavar="TRACE.csv", help="recorded traces")
    _schedule_args(score)
    score.add_argument("--json", action="store_true", help="one JSON object per trace")
    score.set_defaults(func=_score)

    spec = sub.add_parser("spectrum", help="PSD figure of a rack running a schedule",
                          description="Run a rack of GPUs through a schedule (desynchronised "
                                      "across K groups) and write the power spectral density "
                                      "of one GPU and of the rack's AC power, with the share "
                                      "of the variance in a band.")
    spec.add_argument("--events", required=True, metavar="EVENTS.json", help="the schedule")
    spec.add_argument("--out", required=True, metavar="FIG.png", help="PNG to write")
    spec.add_argument("--rack", metavar="RACK.toml",
                      help="rack parameter file, or the name of a shipped one (default: "
                           "rack_h100_8gpu, 8 x H100)")
    spec.add_argument("--groups", type=int, default=1, metavar="K",
                      help="groups of GPUs with their own offsets (default 1)")
    spec.add_argument("--spread", type=float, default=0.0, metavar="S",
                      help="spread of the groups' offsets (default 0 s)")
    spec.add_argument("--band", type=float, nargs=2, default=(0.1, 20.0),
                      metavar=("LOW", "HIGH"), help="band in Hz (default 0.1 20)")
    spec.add_argument("--dt", type=_positive, default=0.01, metavar="S",
                      help="step (default 0.01 s)")
    spec.set_defaults(func=_spectrum)


def _schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", metavar="EVENTS.json",
                   help="schedule of the (single) trace, instead of NAME.events.json beside it")
    p.add_argument("--span", action="append", metavar="T0:T1",
                   help="part of each trace to use, in seconds (repeat once per trace)")


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def _spans(args: argparse.Namespace) -> list[tuple[float, float]]:
    from bench.errors import BenchError

    if not args.span:
        return [(-math.inf, math.inf)] * len(args.traces)
    if len(args.span) != len(args.traces):
        raise BenchError(f"--span given {len(args.span)} times for {len(args.traces)} traces; "
                         "give one per trace (':' for all of it)")
    out = []
    for text in args.span:
        a, sep, b = text.partition(":")
        try:
            lo = float(a) if a.strip() else -math.inf
            hi = float(b) if b.strip() else math.inf
        except ValueError:
            lo = hi = math.nan
        if not sep or math.isnan(lo) or math.isnan(hi) or not lo < hi:
            raise BenchError(f"--span {text!r}: expected T0:T1 with T0 < T1 (either may be "
                             "empty)")
        out.append((lo, hi))
    return out


def _events(args: argparse.Namespace) -> list[Path]:
    """The schedule of each trace: ``--events``, or ``NAME.events.json`` beside it."""
    from bench.errors import BenchError
    from bench.traces import beside

    if args.events and len(args.traces) != 1:
        raise BenchError("--events names the schedule of a single trace; with several, put "
                         "NAME.events.json beside each")
    return [Path(args.events) if args.events else beside(path, "events")
            for path in args.traces]


#: share of a trace's time over which its ``load`` column may disagree with its schedule
#: before the schedule is taken for another recording's (the shared recordings with their
#: own schedules: under 5 %; a wrong schedule still agrees wherever both are idle) [fraction]
LOAD_MISMATCH_WARN = 0.25


def _recordings(args: argparse.Namespace, spans: list[tuple[float, float]]) -> list:
    """Each trace with its schedule; refuses a span outside its trace, warns of a schedule
    whose loads disagree with the trace's ``load`` column over most of it."""
    import warnings

    from bench.errors import BenchError
    from bench.traces import read_events, read_trace, to_measured

    recs = []
    for path, events, (a, b) in zip(args.traces, _events(args), spans):
        trace = read_trace(path)
        t = trace["t_s"]
        if not (a < t[-1] and b > t[0]):
            raise BenchError(f"--span {_span_text((a, b))} lies outside {trace.name}, which "
                             f"runs {t[0]:g} to {t[-1]:g} s")
        m = to_measured(trace, read_events(events))
        wrong = _load_mismatch(trace, m.schedule)
        if wrong is not None and wrong > LOAD_MISMATCH_WARN:
            warnings.warn(f"{trace.name}: its load column disagrees with the schedule "
                          f"{Path(events).name} over {100 * wrong:.0f} % of its time (is it "
                          "the schedule of another recording?)", stacklevel=2)
        recs.append(m)
    return recs


def _load_mismatch(trace, schedule) -> float | None:
    """Share of the trace's time whose ``load`` column differs from the schedule's load
    (None when the trace has no ``load`` column). [fraction]"""
    import numpy as np

    from twin.workload import LOADS

    names = trace.get("load")
    if names is None:
        return None
    t = trace["t_s"]
    recorded = np.array([LOADS.get(str(n).strip(), -1) for n in names])
    # each sample stands for the time until the next one
    weight = np.diff(t, append=t[-1])
    total = float(weight.sum())
    if not total > 0:
        return None
    return float(weight[recorded != schedule.load_at(t)].sum() / total)


def _fit(args: argparse.Namespace) -> int:
    from bench.paths import check_out, params_file
    from bench.traces import beside, read_power_limit_w
    from twin import params
    from twin.gpu import H100_SXM, load_params
    from twin.gpu_fit import fit_report, rounded

    start_path = params_file(args.start) if args.start else H100_SXM
    check_out(args.out, [("the starting set", start_path),
                         *(("the trace", t) for t in args.traces),
                         *(("the schedule", e) for e in _events(args)),
                         *(("the device facts", beside(t, "meta")) for t in args.traces
                           if beside(t, "meta").exists())])
    spans = _spans(args)
    recs = _recordings(args, spans)
    start, temp0 = load_params(start_path)
    limit = (args.power_limit_w if args.power_limit_w is not None
             else read_power_limit_w(args.traces[0]) or start.power_limit_w)
    start = start.replace(power_limit_w=limit)
    result = fit_report(recs, start, spans)
    p = rounded(result.params)
    rows = _accuracy(p, recs, spans)
    for r in rows:
        print(r["row"])
    for name, why in result.doubtful.items():
        print(f"not to be trusted: {name} = {getattr(p, name):g}: {why}")
    meta: dict[str, Any] = {
        "name": args.name or params.load(start_path).name,
        "source": "fitted by gridloop gpu fit to " + ", ".join(
            f"{Path(t).name} ({_span_text(s)})" for t, s in zip(args.traces, spans)),
        "fitted_on": datetime.date.today().isoformat(),
        "reference": "power: energy-counter windows; temperature: temp_c (docs/gpu-model.md)",
        "accuracy": [{k: v for k, v in r.items() if k != "row"} for r in rows],
    }
    initial = {"temp_c": temp0} if temp0 is not None else {}
    pset = params.ParamSet(kind="gpu", name=meta.pop("name"), params=params.to_mapping(p),
                           initial=initial, meta=meta)
    params.save(pset, args.out)
    print(f"wrote {args.out}")
    return 0


def _band(band: tuple[float, float], dt: float) -> tuple[float, float]:
    """``--band`` checked against the Nyquist frequency of ``dt``; the upper edge clipped to
    it, with a warning."""
    import warnings

    from bench.errors import BenchError

    lo, hi = float(band[0]), float(band[1])
    nyquist = 0.5 / dt
    if not 0 <= lo < hi:
        raise BenchError(f"--band {lo:g} {hi:g}: expected 0 <= LOW < HIGH")
    if lo >= nyquist:
        raise BenchError(f"--band {lo:g} {hi:g}: the lower edge is at or above the Nyquist "
                         f"frequency {nyquist:g} Hz of --dt {dt:g} s")
    if hi > nyquist:
        warnings.warn(f"--band {lo:g} {hi:g}: the upper edge is above the Nyquist frequency "
                      f"of --dt {dt:g} s; the band is {lo:g}-{nyquist:g} Hz", stacklevel=2)
        hi = nyquist
    return lo, hi


def _span_text(span: tuple[float, float]) -> str:
    a, b = span
    if math.isinf(a) and math.isinf(b):
        return "all"
    return f"{'' if math.isinf(a) else f'{a:g}'}:{'' if math.isinf(b) else f'{b:g}'} s"


def _accuracy(p, recs, spans) -> list[dict[str, Any]]:
    """Scores on each span seen by the fit and on the held-out rest of each trace."""
    from twin.gpu_fit import score

    rows = []
    for m, (a, b) in zip(recs, spans):
        pred = m.simulate(p)
        parts = [("fit", (a, b))]
        if a > m.t_s[0] + 2:
            parts.append(("held out", (-math.inf, a)))
        if b < m.t_s[-1] - 2:
            parts.append(("held out", (b, math.inf)))
        for role, span in parts:
            sc = score(p, m, span, prediction=pred)
            rows.append({"recording": m.name, "role": role, "span": _span_text(span),
                         "window_error_pct": round(100 * sc.window_error, 2),
                         "window_error_energy_pct": round(100 * sc.window_error_energy, 2),
                         "window_floor_pct": round(100 * sc.window_floor, 2),
                         "energy_error_pct": round(100 * sc.energy_error, 2),
                         "temp_error_c": round(sc.temp_error_c, 2),
                         "row": f"{role:8s} {sc.row()} [{_span_text(span)}]"})
    return rows


def _predict(args: argparse.Namespace) -> int:
    import time

    from bench.csvio import write_columns
    from bench.paths import check_out, params_file
    from bench.traces import read_events
    from twin.gpu import load_params, nvml_view, simulate

    t_start = time.perf_counter()
    params_path = params_file(args.params)
    check_out(args.out, [("the parameter file", params_path), ("the schedule", args.events)])
    p, temp0 = load_params(params_path)
    schedule = read_events(args.events)
    pred = simulate(p, schedule, args.dt,
                    temp_die_c=args.temp_c if args.temp_c is not None else temp0)
    _, usage = nvml_view(pred.t_s, pred.power_w)
    write_columns(args.out, {"t_s": pred.t_s, "power_w": pred.power_w, "power_nvml_w": usage,
                             "temp_c": pred.temp_c, "sm_clock_mhz": pred.clock_mhz},
                  formats={"t_s": "%.6f", "power_w": "%.3f", "power_nvml_w": "%.3f",
                           "temp_c": "%.3f", "sm_clock_mhz": "%.1f"})
    energy = float(pred.power_w.sum() * args.dt)
    print(f"wrote {args.out}: {len(pred.t_s)} steps of {args.dt:g} s, mean "
          f"{pred.power_w.mean():.1f} W, energy {energy / 1000:.2f} kJ "
          f"({time.perf_counter() - t_start:.2f} s)")
    return 0


def _score(args: argparse.Namespace) -> int:
    from bench.paths import params_file
    from twin.gpu import load_params
    from twin.gpu_fit import score

    p, _ = load_params(params_file(args.params))
    spans = _spans(args)
    for m, span in zip(_recordings(args, spans), spans):
        sc = score(p, m, None if math.isinf(span[0]) and math.isinf(span[1]) else span)
        if args.json:
            print(json.dumps({"recording": sc.name, "span": _span_text(span),
                              "window_error": round(sc.window_error, 5),
                              "window_error_energy": round(sc.window_error_energy, 5),
                              "window_floor": round(sc.window_floor, 5),
                              "energy_error": round(sc.energy_error, 5),
                              "temp_error_c": round(sc.temp_error_c, 4),
                              "mean_power_w": round(sc.mean_power_w, 2),
                              "seconds": sc.seconds}))
        else:
            print(sc.row())
    return 0


def _spectrum(args: argparse.Namespace) -> int:
    from bench.errors import BenchError
    from bench.figures import spectrum_figure
    from bench.paths import check_out, params_file
    from bench.traces import read_events
    from twin.rack import H100_8GPU, GpuRack, load_rack
    from twin.spectrum import spectrum
    from twin.workload import desynchronise

    if args.groups < 1:
        raise BenchError(f"--groups must be >= 1, got {args.groups}")
    band = _band(args.band, args.dt)
    rack_path = params_file(args.rack) if args.rack else H100_8GPU
    out_path = check_out(args.out, [("the schedule", args.events), ("the rack file", rack_path)])
    if out_path.suffix.lower() != ".png":  # the figure is a PNG: never one under a .txt name
        ext = f"'{out_path.suffix}' is not .png" if out_path.suffix else "no extension"
        raise BenchError(f"--out {args.out}: {ext}; the figure is a PNG: give a file ending "
                         "in .png")
    rack, gpu, temp = load_rack(rack_path)
    schedule = read_events(args.events)
    groups = desynchronise(schedule, args.groups, args.spread)
    asset = GpuRack(rack, gpu, [groups], temp)
    out = asset.run(schedule.end_s + args.spread, args.dt)
    one = GpuRack(rack.replace(gpus=1), gpu, [schedule], temp).run(schedule.end_s, args.dt)
    series = {"one GPU (board)": (one["p_gpu_w"], args.dt), "rack (AC)": (out["p_w"], args.dt)}
    path = spectrum_figure(out_path, series, band,
                           title=f"{Path(args.events).name}: {rack.gpus} GPUs in "
                                 f"{args.groups} group(s), spread {args.spread:g} s")
    for name, (pw, dt) in series.items():
        sp = spectrum(pw, dt, band)
        print(f"{name}: {100 * sp.band_share:.1f} % of the variance in {band[0]:g}-"
              f"{band[1]:g} Hz, peak {sp.peak_hz:.3f} Hz, std {sp.std_w:.1f} W")
    print(f"wrote {path}")
    return 0

