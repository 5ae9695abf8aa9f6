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
#: what ``gridloop gpu predict --help`` says
PREDICT_DESCRIPTION = (
    "Write t_s, power_w (the model's power, the mean over each step), power_nvml_w (what "
    "NVML's one-second average would read), temp_c and sm_clock_mhz.  The simulation starts "
    "at 0, at the schedule's first entry where that is earlier, or a minute before that "
    "entry where it is more than a minute after 0 (a schedule on Unix time): the idle "
    "lead-in before the first entry is in the output, and the printed summary gives the "
    "mean power and energy over the schedule's own steps, and the lead-in's apart.")


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
                             description=PREDICT_DESCRIPTION)
    predict.add_argument("params", metavar="GPU.toml",
                         help="GPU parameter file (or the name of a shipped one)")
    predict.add_argument("--events", required=True, metavar="EVENTS.json", help="the schedule")
    predict.add_argument("--out", required=True, metavar="PRED.csv", help="CSV to write")
    predict.add_argument("--dt", type=_positive, default=0.01, metavar="S",
                         help="output step (default 0.01 s)")
    predict.add_argument("--temp-c", type=float, metavar="C",
                         help="die temperature at the schedule's first entry, of a card that "
                              "has been running what the schedule runs there: its heat sink, "
                              "clock and limiter settled to that load's power at C (at most "
                              "the power whose steady temperature C is); the prediction then "
                              "starts there, with no idle lead-in (default: the parameter "
                              "file's initial temp_c, of an idle card, else the idle steady "
                              "state)")
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
                                      "of the variance in a band.  Both run over the "
                                      "schedule's own span, from its first entry (on any "
                                      "clock, Unix time included) to its end (plus the "
                                      "spread, for the rack), with no idle lead-in.")
    spec.add_argument("--events", required=True, metavar="EVENTS.json", help="the schedule")
    spec.add_argument("--out", required=True, metavar="FIG.png", help="PNG to write")
    spec.add_argument("--rack", metavar="RACK.toml",
                      help="rack parameter file, or the name of a shipped one (default: "
                           "rack_h100_8gpu, 8 x H100)")
    spec.add_argument("--groups", type=int, default=1, metavar="K",
                      help="groups of GPUs with their own offsets (default 1)")
    spec.add_argument("--spread", type=float, default=0.0, metavar="S",
                      help="spread of the groups' offsets, each group delayed by up to S "
                           "(default 0 s)")
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
                             f"runs {_time_text(t[0])} to {_time_text(t[-1])} s")
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


#: a schedule whose lag behind (or ahead of) its trace's energy counter exceeds this gets a
#: warning (the shared recordings: within 0.01 s; the counter updates every 0.1 s) [s]
LAG_WARN_S = 0.05
#: lags searched, either way, for the figure a warning gives where a lag over
#: :data:`LAG_WARN_S` was found (a schedule 5 s late is best matched within 2 s by a lag of
#: about 1 s, one period of its training steps away) [s]
LAG_SEARCH_WIDE_S = 10.0
#: how much better the best lag must correlate than no lag for a warning: a flat peak (a
#: schedule with one load change, a slow log) aligns anywhere within its width [-]
LAG_MIN_GAIN = 0.02


def _warn_lag(m, pred) -> float | None:
    """Warn (one line) when the schedule runs off its trace's energy counter by more than
    :data:`LAG_WARN_S` or the counter's own update interval, whichever is longer, and that
    lag correlates better than none by :data:`LAG_MIN_GAIN`
    (:func:`twin.gpu_fit.schedule_lag`); nothing is shifted.  The lag, or None."""
    import warnings

    import numpy as np

    from twin.gpu_fit import LAG_GRID_S, LAG_SEARCH_S, schedule_lag

    found = schedule_lag(m, pred)
    if found is None:
        return None
    # a counter that updates every second places a load change no closer than that
    te, _ = m.energy_updates()
    resolution = max(LAG_WARN_S, float(np.median(np.diff(te)))) if len(te) > 1 else LAG_WARN_S
    if not abs(found[0]) > resolution or not found[1] - found[2] > LAG_MIN_GAIN:
        return found[0]
    lag, searched = found[0], LAG_SEARCH_S
    wide = schedule_lag(m, pred, LAG_SEARCH_WIDE_S)
    if wide is not None and wide[1] > found[1]:
        lag, searched = wide[0], LAG_SEARCH_WIDE_S
    way, order = ("late", "after") if lag > 0 else ("early", "before")
    size = (f"{searched:g} s or more" if abs(lag) >= searched - LAG_GRID_S
            else f"{abs(lag):.2f} s")
    warnings.warn(f"{m.name}: its schedule runs {size} {way} against the trace's energy "
                  f"counter (its loads change {size} {order} the measured power does, by "
                  "cross-correlation of the model's power with the counter's); nothing is "
                  "shifted: check the events' clock", stacklevel=2)
    return lag


def _fit(args: argparse.Namespace) -> int:
    import warnings

    from bench.errors import RecordingError
    from bench.paths import check_out, params_file
    from bench.traces import beside, read_power_limit_w
    from twin import params
    from twin.gpu import H100_SXM, PredictionError, load_params
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
    metas: list[tuple[Path, float | None]] = []
    if args.power_limit_w is None:  # given, no meta.json is read (nor can fail)
        for i, t in enumerate(args.traces):
            try:
                metas.append((Path(t), read_power_limit_w(t)))
            except RecordingError as exc:
                if i == 0:  # the limit the fit takes: an error
                    raise
                warnings.warn(f"{exc}; its power limit is not compared with the first "
                              "trace's", stacklevel=2)
    first = metas[0][1] if metas else None
    if args.power_limit_w is not None:
        limit, source = args.power_limit_w, "--power-limit-w"
    elif first is not None:
        limit, source = first, f"{beside(metas[0][0], 'meta').name}"
    else:
        limit, source = start.power_limit_w, "the starting set's power_limit_w"
    given = [(beside(t, "meta").name, w) for t, w in metas if w is not None]
    if len({w for _, w in given}) > 1 or (args.power_limit_w is None
                                          and any(w != limit for _, w in given)):
        warnings.warn("the traces' meta.json disagree on the power limit ("
                      + ", ".join(f"{name} {w:g} W" for name, w in given)
                      + f"); the fit takes one for all of them: {limit:g} W, from {source}",
                      stacklevel=2)
    start = start.replace(power_limit_w=limit)
    for m in recs:
        try:
            pred = m.simulate(start)
        except PredictionError:
            continue  # the fit says what is wrong
        _warn_lag(m, pred)
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


def _time_text(t: float) -> str:
    """A time as it reads best: to the millisecond, trailing zeros dropped, so a Unix time
    stays exact (1764500030.12, not 1.7645e+09) and a relative one short (0, 171.38)."""
    text = f"{float(t):.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _span_text(span: tuple[float, float]) -> str:
    a, b = span
    if math.isinf(a) and math.isinf(b):
        return "all"
    return f"{'' if math.isinf(a) else _time_text(a)}:{'' if math.isinf(b) else _time_text(b)} s"


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

    import numpy as np

    from bench.csvio import write_columns
    from bench.paths import check_out, params_file
    from bench.traces import read_events
    from twin.gpu import (
        activity,
        load_params,
        nvml_view,
        simulate,
        start_time_s,
        steady_power_w,
    )

    t_start = time.perf_counter()
    params_path = params_file(args.params)
    check_out(args.out, [("the parameter file", params_path), ("the schedule", args.events)])
    p, temp0 = load_params(params_path)
    schedule = read_events(args.events)
    start = schedule.start_s
    t0 = start_time_s(schedule, args.dt)
    if args.temp_c is None:
        pred = simulate(p, schedule, args.dt, t0=t0, temp_die_c=temp0)
    else:
        # --temp-c holds at the schedule's first entry (no idle lead-in to cool through): a
        # card found at that temperature running what the schedule runs there, its sink,
        # clock and limiter settled to that load's power (within what the temperature
        # allows: twin.gpu.initial_state); simulate refuses one out of the model's range
        x = start / args.dt
        n = round(x)
        t0 = args.dt * (n if abs(x - n) <= max(1e-9, 1e-12 * abs(x)) else math.floor(x))
        i = int(schedule.index_at(t0))
        act = (float(activity(p, schedule.load[i:i + 1], schedule.mfu[i:i + 1])[0])
               if i >= 0 else 0.0)
        pred = simulate(p, schedule, args.dt, t0=t0, temp_die_c=args.temp_c,
                        start_power_w=steady_power_w(p, act, args.temp_c))
    _, usage = nvml_view(pred.t_s, pred.power_w)
    write_columns(args.out, {"t_s": pred.t_s, "power_w": pred.power_w, "power_nvml_w": usage,
                             "temp_c": pred.temp_c, "sm_clock_mhz": pred.clock_mhz},
                  formats={"t_s": "%.6f", "power_w": "%.3f", "power_nvml_w": "%.3f",
                           "temp_c": "%.3f", "sm_clock_mhz": "%.1f"})
    # the idle lead-in: the steps that end at or before the schedule's first entry
    lead = int(np.count_nonzero(pred.t_s + args.dt <= start + 1e-3 * args.dt))
    own = pred.power_w[lead:]
    summary = (f"the schedule's steps ({_time_text(pred.t_s[lead])} to "
               f"{_time_text(pred.t_s[-1] + args.dt)} s): mean {own.mean():.1f} W, energy "
               f"{own.sum() * args.dt / 1000:.2f} kJ")
    if lead:
        before = pred.power_w[:lead]
        summary += (f"; idle lead-in before it ({_time_text(pred.t_s[0])} to "
                    f"{_time_text(pred.t_s[lead])} s, not in those figures): mean "
                    f"{before.mean():.1f} W, energy {before.sum() * args.dt / 1000:.2f} kJ")
    print(f"wrote {args.out}: {len(pred.t_s)} steps of {args.dt:g} s; {summary} "
          f"({time.perf_counter() - t_start:.2f} s)")
    return 0


def _score(args: argparse.Namespace) -> int:
    import warnings

    from bench.errors import RecordingError
    from bench.paths import params_file
    from bench.traces import beside, read_power_limit_w
    from twin.gpu import load_params
    from twin.gpu_fit import score

    p, _ = load_params(params_file(args.params))
    spans = _spans(args)
    for path, m, span in zip(args.traces, _recordings(args, spans), spans):
        try:
            limit = read_power_limit_w(path)
        except RecordingError as exc:  # the score does not need it: said, and scored on
            warnings.warn(f"{m.name}: {exc}; its power limit is not checked against the "
                          "parameter set's", stacklevel=2)
            limit = None
        if limit is not None and abs(limit - p.power_limit_w) > 1e-6 * p.power_limit_w:
            warnings.warn(f"{m.name}: {beside(path, 'meta').name} gives a power limit of "
                          f"{limit:g} W, the parameter set's power_limit_w is "
                          f"{p.power_limit_w:g} W; scored with {p.power_limit_w:g} W (a set "
                          f"with power_limit_w = {limit:g} scores the card as it ran)",
                          stacklevel=2)
        pred = m.simulate(p)
        _warn_lag(m, pred)
        sc = score(p, m, None if math.isinf(span[0]) and math.isinf(span[1]) else span,
                   prediction=pred)
        if args.json:
            print(json.dumps({"recording": sc.name, "span": _span_text(span),
                              # null without the instantaneous field (the row's "n/a")
                              "window_error": (round(sc.window_error, 5) if sc.instant
                                               else None),
                              "window_error_energy": round(sc.window_error_energy, 5),
                              "window_floor": (round(sc.window_floor, 5) if sc.instant
                                               else None),
                              "instant": sc.instant,
                              "windows_left_out": sc.windows_left_out,
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
    if not (math.isfinite(args.spread) and args.spread >= 0):
        raise BenchError(f"--spread must be a finite number of seconds >= 0, got "
                         f"{args.spread:g}")
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
    # the schedule's own span, from its first entry (a Unix-time schedule is not run from
    # 1970, a late one not after minutes of idle): the model starts idle and settled, so it
    # needs no lead-in, and one would only add idle to the spectrum
    t0 = args.dt * math.floor(schedule.start_s / args.dt + 1e-9)
    asset = GpuRack(rack, gpu, [groups], temp)
    out = asset.run(schedule.end_s + args.spread, args.dt, t0=t0)
    one = GpuRack(rack.replace(gpus=1), gpu, [schedule], temp).run(schedule.end_s, args.dt,
                                                                   t0=t0)
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

