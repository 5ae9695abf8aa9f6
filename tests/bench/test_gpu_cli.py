"""``gridloop gpu``: fit, predict, score and spectrum, run in-process on the shared data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.traces import read_trace
from twin import params
from twin.gpu import H100_SXM, load_params, simulate
from twin.workload import Schedule

REPO = Path(__file__).resolve().parents[2]
CAL = "h100_power_calibration"
FAST = "h100_power_fast"


def test_predict_writes_power_and_the_nvml_view(shared_data, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    events = shared_data / f"{CAL}.events.json"
    assert main(["gpu", "predict", str(H100_SXM), "--events", str(events),
                 "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert out.read_text().splitlines()[0] == "t_s,power_w,power_nvml_w,temp_c,sm_clock_mhz"
    tr = read_trace(out)
    np.testing.assert_allclose(np.diff(tr["t_s"]), 0.01, atol=1e-6)
    p, temp = load_params(H100_SXM)
    sched = Schedule.from_entries(json.loads(events.read_text()))
    pred = simulate(p, sched, 0.01, temp_die_c=temp)
    np.testing.assert_allclose(tr["power_w"], pred.power_w, atol=1e-3)
    # The one-second average lags the instantaneous power but keeps its energy.
    assert tr["power_nvml_w"].sum() == pytest.approx(tr["power_w"].sum(), rel=0.01)
    assert 700 < tr["power_w"].max() < 1000
    assert main(["gpu", "predict", str(H100_SXM), "--events", str(events), "--out",
                 str(tmp_path / "coarse.csv"), "--dt", "0.1", "--temp-c", "50"]) == 0
    coarse = read_trace(tmp_path / "coarse.csv")
    assert coarse["temp_c"][0] == 50.0 and len(coarse) == pytest.approx(len(tr) / 10, abs=2)
    capsys.readouterr()
    # a step longer than the schedule: the energy is still power times dt
    short = tmp_path / "short.events.json"
    short.write_text('[{"t_s": 0, "load": "compute", "seconds": 2}]')
    assert main(["gpu", "predict", str(H100_SXM), "--events", str(short), "--out",
                 str(tmp_path / "one.csv"), "--dt", "5"]) == 0
    one = read_trace(tmp_path / "one.csv")
    said = capsys.readouterr().out
    assert len(one) == 1 and f"energy {one['power_w'][0] * 5 / 1000:.2f} kJ" in said
    assert one["power_w"][0] * 5 > 1000  # two seconds of compute are in it


def test_predict_warns_in_one_line_of_a_field_like_its_own(tmp_path):
    events = tmp_path / "typo.events.json"
    events.write_text(json.dumps([{"t_s": 0.0, "load": "compute", "seconds": 2.0,
                                   "MFU": 0.3, "step": 1}]))
    # a process of its own: pytest records warnings instead of printing them
    done = subprocess.run([sys.executable, "-m", "bench.cli", "gpu", "predict", str(H100_SXM),
                           "--events", str(events), "--out", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ("gridloop: warning: schedule: field 'MFU' is not one gridloop "
                           "reads, ignored (did you mean 'mfu'?)\n")


def test_score_prints_the_three_figures(shared_data, capsys):
    assert main(["gpu", "score", str(H100_SXM), str(shared_data / f"{CAL}.csv.gz"),
                 str(shared_data / f"{FAST}.csv.gz"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["recording"] for r in rows] == [CAL, FAST]
    for r in rows:
        assert r["window_error_energy"] < 0.03 and abs(r["energy_error"]) < 0.01
        assert r["temp_error_c"] < 2.0
    assert main(["gpu", "score", str(H100_SXM), str(shared_data / f"{FAST}.csv.gz"),
                 "--span", "72.87:"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{FAST}: window ") and "energy " in line and "degC" in line


@pytest.mark.slow
def test_fit_predict_score_round_trip(shared_data, tmp_path, capsys):
    gpu = tmp_path / "gpu.toml"
    cal = shared_data / f"{CAL}.csv.gz"
    fast = shared_data / f"{FAST}.csv.gz"
    prior = H100_SXM.with_name("gpu_h100_sxm_prior.toml")
    assert main(["gpu", "fit", str(cal), str(fast), "--span", ":", "--span", ":72.87",
                 "--start", str(prior), "--out", str(gpu)]) == 0
    out = capsys.readouterr().out
    assert "held out h100_power_fast" in out
    pset = params.load(gpu)
    assert pset.kind == "gpu" and pset.meta["fitted_on"]
    roles = {(r["recording"], r["role"]) for r in pset.meta["accuracy"]}
    assert roles == {(CAL, "fit"), (FAST, "fit"), (FAST, "held out")}
    assert pset.params["power_limit_w"] == 700.0  # from the meta.json beside the trace
    pred = tmp_path / "pred.csv"
    assert main(["gpu", "predict", str(gpu), "--events",
                 str(shared_data / f"{FAST}.events.json"), "--out", str(pred)]) == 0
    energy = read_trace(pred)["power_w"].sum() * 0.01
    measured = read_trace(fast)["energy_j"][-1]
    assert energy == pytest.approx(measured, rel=0.02)
    capsys.readouterr()
    assert main(["gpu", "score", str(gpu), str(fast), "--span", "72.87:", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["window_error_energy"] < 0.025 and abs(held["energy_error"]) < 0.02


def test_spectrum_command_writes_a_figure(shared_data, tmp_path, capsys):
    from twin.workload import synchronous_training

    events = tmp_path / "train.events.json"
    events.write_text(json.dumps(synchronous_training(0.5, 0.6, 0.2, stop_s=60.0).to_entries()))
    fig = tmp_path / "psd.png"
    assert main(["gpu", "spectrum", "--events", str(events), "--out", str(fig),
                 "--groups", "2", "--spread", "0.1"]) == 0
    out = capsys.readouterr().out
    rack = next(line for line in out.splitlines() if line.startswith("rack (AC):"))
    assert float(rack.split("peak ")[1].split(" Hz")[0]) == pytest.approx(2.0, abs=0.02)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000


@pytest.mark.parametrize(("argv", "message"), [
    (["gpu", "predict", "P", "--events", "{missing}", "--out", "{tmp}/p.csv"],
     "no such events file"),
    (["gpu", "predict", "{tmp}/none.toml", "--events", "{events}", "--out", "{tmp}/p.csv"],
     "none.toml: no such parameter file"),
    (["gpu", "score", "P", "{cal}", "{cal}", "--events", "{events}"],
     "--events names the schedule of a single trace"),
    (["gpu", "score", "P", "{cal}", "--span", "9:3"], "--span '9:3': expected T0:T1"),
    (["gpu", "score", "P", "{cal}", "--span", ":", "--span", ":"], "--span given 2 times"),
    (["gpu", "fit", "{tmp}/bad.csv", "--events", "{events}", "--out", "{tmp}/g.toml"],
     "bad.csv:3: column 'energy_j'"),
    # a schedule on another clock than its trace (here 1000 s later)
    (["gpu", "fit", "{cal}", "--events", "{tmp}/late.events.json", "--out", "{tmp}/g.toml"],
     "its schedule runs 1000.0-1001.0 s and its samples 0.0-"),
    (["gpu", "predict", "P", "--events", "{tmp}/empty.events.json", "--out", "{tmp}/p.csv"],
     "empty.events.json: no events"),
    # the spread, not the schedule, is what is wrong
    (["gpu", "spectrum", "--events", "{events}", "--out", "{tmp}/f.png", "--groups", "4",
      "--spread", "nan"], "--spread must be a finite number of seconds >= 0, got nan"),
    (["gpu", "spectrum", "--events", "{events}", "--out", "{tmp}/f.png", "--groups", "4",
      "--spread", "-1"], "--spread must be a finite number of seconds >= 0, got -1"),
])
def test_bad_input_exits_2_with_one_line(shared_data, tmp_path, capsys, argv, message):
    (tmp_path / "bad.csv").write_text("t_s,energy_j,temp_c\n0,0,30\n0.1,x,30\n")
    (tmp_path / "late.events.json").write_text(
        '[{"t_s": 1000, "load": "compute", "seconds": 1}]')
    (tmp_path / "empty.events.json").write_text("[]")
    fill = {"missing": str(tmp_path / "missing.events.json"), "tmp": str(tmp_path),
            "events": str(shared_data / f"{CAL}.events.json"),
            "cal": str(shared_data / f"{CAL}.csv.gz")}
    argv = [str(H100_SXM) if a == "P" else a.format(**fill) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gridloop: error: ") and message in err and "\n" not in err


def test_help_lists_the_actions(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["gpu", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for action in ("fit", "predict", "score", "spectrum"):
        assert action in out


def _other_name(tmp_path: Path, target: Path, how: str) -> str:
    """``target`` as given, spelt another way, or a symbolic or a hard link to it."""
    if how == "same":
        return str(target)
    if how == "spelling":
        (tmp_path / "sub").mkdir(exist_ok=True)
        return str(tmp_path / "sub" / ".." / target.name)
    link = tmp_path / f"{how}-{target.name}"
    (link.symlink_to if how == "symlink" else link.hardlink_to)(target)
    return str(link)


@pytest.mark.parametrize(("argv", "target", "what", "how"), [
    (["fit", "{cal}", "--out", "OUT"], "{cal}", "the trace", "same"),
    (["fit", "{cal}", "{fast}", "--out", "OUT"], "{fast}", "the trace", "spelling"),
    (["fit", "{cal}", "{fast}", "--out", "OUT"], "{fast_events}", "the schedule", "symlink"),
    (["fit", "{cal}", "{fast}", "--out", "OUT"], "{fast_meta}", "the device facts",
     "hardlink"),
    (["fit", "{cal}", "--events", "{events}", "--out", "OUT"], "{events}", "the schedule",
     "same"),
    (["fit", "{cal}", "--start", "{gpu}", "--out", "OUT"], "{gpu}", "the starting set",
     "spelling"),
    (["predict", "{gpu}", "--events", "{events}", "--out", "OUT"], "{events}", "the schedule",
     "same"),
    (["predict", "{gpu}", "--events", "{events}", "--out", "OUT"], "{gpu}",
     "the parameter file", "hardlink"),
    (["spectrum", "--events", "{events}", "--out", "OUT"], "{events}", "the schedule",
     "symlink"),
])
def test_out_that_is_an_input_is_refused(shared_data, tmp_path, capsys, argv, target, what,
                                         how):
    import shutil

    for name in (CAL, FAST):
        for suffix in (".csv.gz", ".events.json", ".meta.json"):
            shutil.copy(shared_data / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    (tmp_path / "mine.events.json").write_text(
        '[{"t_s": 0, "load": "compute", "seconds": 2}]')
    (tmp_path / "gpu.toml").write_bytes(H100_SXM.read_bytes())
    fill = {"cal": str(tmp_path / f"{CAL}.csv.gz"), "fast": str(tmp_path / f"{FAST}.csv.gz"),
            "fast_events": str(tmp_path / f"{FAST}.events.json"),
            "fast_meta": str(tmp_path / f"{FAST}.meta.json"),
            "events": str(tmp_path / "mine.events.json"), "gpu": str(tmp_path / "gpu.toml")}
    target = target.format(**fill)
    before = Path(target).read_bytes()
    out = _other_name(tmp_path, Path(target), how)
    assert main(["gpu", *(out if a == "OUT" else a.format(**fill) for a in argv)]) == 2
    assert capsys.readouterr().err == (f"gridloop: error: --out {out}: that is an input "
                                       f"({what} {target}); give another file\n")
    assert Path(target).read_bytes() == before


@pytest.mark.parametrize("limit", ["0", "-5", "nan"])
def test_fit_refuses_a_power_limit_that_is_none(shared_data, tmp_path, capsys, limit):
    out = tmp_path / "g.toml"
    with pytest.raises(SystemExit) as exc:  # 0 was taken for "not given"
        main(["gpu", "fit", str(shared_data / f"{FAST}.csv.gz"), "--out", str(out),
              "--power-limit-w", limit])
    assert exc.value.code == 2
    assert f"argument --power-limit-w: must be > 0, got '{limit}'" in capsys.readouterr().err
    assert not out.exists()


def test_predict_and_score_take_a_shipped_set_by_name(shared_data, tmp_path, capsys,
                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # no such files here: the shipped sets
    (tmp_path / "two.events.json").write_text('[{"t_s": 0, "load": "compute", "seconds": 2}]')
    assert main(["gpu", "predict", "gpu_h100_sxm", "--events", "two.events.json",
                 "--out", "p.csv.gz"]) == 0
    assert (tmp_path / "p.csv.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip, as it says
    assert len(read_trace(tmp_path / "p.csv.gz")) == 200
    assert main(["gpu", "score", "gpu_h100_sxm.toml", str(shared_data / f"{FAST}.csv.gz"),
                 "--span", "0:20"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{FAST}: window ")


def _cut(shared_data: Path, tmp_path: Path, seconds: float) -> Path:
    """The first ``seconds`` of the calibration recording, its schedule cut to match."""
    import gzip

    with gzip.open(shared_data / f"{CAL}.csv.gz", "rt") as f:
        lines = f.read().splitlines()
    out = tmp_path / "short.csv"
    out.write_text("\n".join([lines[0]] + [r for r in lines[1:]
                                            if float(r.split(",")[0]) < seconds]) + "\n")
    events = json.loads((shared_data / f"{CAL}.events.json").read_text())
    (tmp_path / "short.events.json").write_text(json.dumps(
        [dict(e, seconds=min(e["seconds"], seconds - e["t_s"])) for e in events
         if e["t_s"] < seconds]))
    return out


def test_fit_names_the_parameters_a_short_trace_does_not_determine(shared_data, tmp_path,
                                                                    capsys):
    """Three seconds of idle: the thermal parameters end on their bounds, the dynamic ones
    are not seen at all; each gets a line saying why."""
    short = _cut(shared_data, tmp_path, 3.0)
    assert main(["gpu", "fit", str(short), "--out", str(tmp_path / "short.toml")]) == 0
    doubts = {line.split(" = ")[0].removeprefix("not to be trusted: "): line
              for line in capsys.readouterr().out.splitlines()
              if line.startswith("not to be trusted: ")}
    assert "at the edge of the fitted range (lower bound 0.001)" in doubts["r_die_c_per_w"]
    assert "at the edge of the fitted range (upper bound 5)" in doubts["tau_die_s"]
    assert "barely determined" in doubts["tau_sink_s"]
    assert "not determined by the data" in doubts["burst_limit_ratio"]
    assert "dynamic_w" not in doubts  # no compute without mfu: kept, not fitted


@pytest.mark.slow
def test_the_shipped_fit_doubts_the_checkpoint_and_the_limiters_integral_only(shared_data,
                                                                             tmp_path, capsys):
    """The command that made the shipped set (docs/gpu-model.md): the recordings hold no
    checkpoint, so activity_checkpoint stays on its lower bound 0; the limiter holds its
    average without its integral term, so the recordings barely determine that term's gain;
    nothing else is doubted."""
    prior = H100_SXM.with_name("gpu_h100_sxm_prior.toml")
    assert main(["gpu", "fit", str(shared_data / f"{CAL}.csv.gz"),
                 str(shared_data / f"{FAST}.csv.gz"), "--start", str(prior),
                 "--out", str(tmp_path / "gpu.toml")]) == 0
    doubts = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith("not to be trusted")]
    assert doubts[0] == ("not to be trusted: activity_checkpoint = 0: at the edge of the "
                         "fitted range (lower bound 0)")
    assert len(doubts) == 2 and doubts[1].startswith(
        "not to be trusted: limit_integral_per_s = ") and "barely determined" in doubts[1]


@pytest.mark.parametrize("command", ["fit", "score"])
def test_a_span_outside_the_trace_is_refused_as_such(shared_data, tmp_path, capsys, command):
    argv = (["gpu", "fit", str(shared_data / f"{CAL}.csv.gz"), "--out", str(tmp_path / "g.toml")]
            if command == "fit" else ["gpu", "score", str(H100_SXM),
                                      str(shared_data / f"{CAL}.csv.gz")])
    assert main([*argv, "--span", "500:600"]) == 2
    err = capsys.readouterr().err
    assert ("--span 500:600 s lies outside h100_power_calibration, which runs 0 to 171.38 s"
            in err)


def test_score_warns_of_a_schedule_the_trace_did_not_run(shared_data, capsys):
    cal = str(shared_data / f"{CAL}.csv.gz")
    with pytest.warns(UserWarning, match=r"load column disagrees with the schedule "
                                         r"h100_power_fast.events.json over 57 % of its time"):
        assert main(["gpu", "score", str(H100_SXM), cal, "--events",
                     str(shared_data / f"{FAST}.events.json")]) == 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert main(["gpu", "score", str(H100_SXM), cal,
                     str(shared_data / f"{FAST}.csv.gz")]) == 0


def test_spectrum_refuses_a_band_above_nyquist_and_clips_its_top(tmp_path, capsys):
    events = tmp_path / "e.events.json"
    events.write_text('[{"t_s": 0, "load": "compute", "seconds": 20}]')
    argv = ["gpu", "spectrum", "--events", str(events), "--out", str(tmp_path / "f.png")]
    assert main([*argv, "--band", "60", "1000"]) == 2
    assert "lower edge is at or above the Nyquist frequency 50 Hz" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="the band is 0.1-50 Hz"):
        assert main([*argv, "--band", "0.1", "1000"]) == 0
    assert "in 0.1-50 Hz" in capsys.readouterr().out


def _shifted_copy(shared_data: Path, tmp_path: Path, name: str, offset_s: float,
                  events_offset_s: float = 0.0) -> Path:
    """A shared recording with ``offset_s`` added to its t_s (and to its schedule's, plus
    ``events_offset_s`` there), as ``tmp_path/NAME.csv`` beside its events and meta."""
    import gzip
    import shutil

    with gzip.open(shared_data / f"{name}.csv.gz", "rt") as f:
        lines = f.read().splitlines()
    rows = []
    for line in lines[1:]:
        t, rest = line.split(",", 1)
        rows.append(f"{float(t) + offset_s:.4f},{rest}")
    out = tmp_path / f"{name}.csv"
    out.write_text("\n".join([lines[0], *rows]) + "\n")
    events = json.loads((shared_data / f"{name}.events.json").read_text())
    (tmp_path / f"{name}.events.json").write_text(json.dumps(
        [dict(e, t_s=e["t_s"] + offset_s + events_offset_s) for e in events]))
    shutil.copy(shared_data / f"{name}.meta.json", tmp_path / f"{name}.meta.json")
    return out


def test_the_shared_schedules_run_on_their_traces_clock(shared_data):
    """The lag estimate on the shared recordings as they are: within a few milliseconds."""
    from bench.traces import read_events, to_measured
    from twin.gpu_fit import schedule_lag

    p, _ = load_params(H100_SXM)
    for name in (CAL, FAST):
        m = to_measured(read_trace(shared_data / f"{name}.csv.gz"),
                        read_events(shared_data / f"{name}.events.json"))
        lag, r, r0 = schedule_lag(m, m.simulate(p))
        assert abs(lag) < 0.03 and r > 0.8 and r - r0 < 0.01, (name, lag, r, r0)


@pytest.mark.parametrize(("shift", "said"), [
    (0.5, "its schedule runs 0.49 s late against the trace's energy counter (its loads "
          "change 0.49 s after the measured power does"),
    (-0.3, "its schedule runs 0.31 s early against the trace's energy counter (its loads "
           "change 0.31 s before the measured power does"),
    # past the 2 s searched first: one period of the training steps away fits better there
    (5.0, "its schedule runs 4.99 s late"),
])
def test_score_warns_of_a_schedule_off_the_traces_clock(shared_data, tmp_path, capsys, shift,
                                                        said):
    events = tmp_path / "off.events.json"
    events.write_text(json.dumps([dict(e, t_s=e["t_s"] + shift) for e in json.loads(
        (shared_data / f"{CAL}.events.json").read_text())]))
    with pytest.warns(UserWarning) as record:
        assert main(["gpu", "score", str(H100_SXM), str(shared_data / f"{CAL}.csv.gz"),
                     "--events", str(events)]) == 0
    lags = [str(w.message) for w in record if "schedule runs" in str(w.message)]
    assert len(lags) == 1 and lags[0].startswith(f"{CAL}: {said}"), lags
    assert lags[0].endswith("nothing is shifted: check the events' clock")
    # nothing is shifted: the score is the one of the schedule as given
    assert capsys.readouterr().out.startswith(f"{CAL}: window ")


class _Stop(Exception):
    pass


def test_fit_warns_of_a_lag_and_of_power_limits_that_disagree(shared_data, tmp_path,
                                                              monkeypatch):
    """Checked with the starting set before fitting (the fit itself is stopped here)."""
    import twin.gpu_fit

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(twin.gpu_fit, "fit_report", stop)
    cal = _shifted_copy(shared_data, tmp_path, CAL, 0.0, events_offset_s=0.5)
    fast = _shifted_copy(shared_data, tmp_path, FAST, 0.0)
    (tmp_path / f"{FAST}.meta.json").write_text('{"enforced_power_limit_mw": 500000}')
    with pytest.warns(UserWarning) as record, pytest.raises(_Stop):
        main(["gpu", "fit", str(cal), str(fast), "--out", str(tmp_path / "g.toml")])
    said = [str(w.message) for w in record]
    assert next(s for s in said if "schedule runs" in s).startswith(
        f"{CAL}: its schedule runs 0.49 s late")
    assert not any(s.startswith(f"{FAST}: its schedule runs") for s in said)
    assert (f"the traces' meta.json disagree on the power limit ({CAL}.meta.json 700 W, "
            f"{FAST}.meta.json 500 W); the fit takes one for all of them: 700 W, from "
            f"{CAL}.meta.json") in said


def test_score_warns_of_a_power_limit_other_than_the_sets(shared_data, tmp_path, capsys):
    import shutil
    import warnings

    for suffix in (".csv.gz", ".events.json"):
        shutil.copy(shared_data / f"{FAST}{suffix}", tmp_path / f"{FAST}{suffix}")
    (tmp_path / f"{FAST}.meta.json").write_text('{"enforced_power_limit_mw": 500000}')
    argv = ["gpu", "score", str(H100_SXM), str(tmp_path / f"{FAST}.csv.gz"), "--json"]
    with pytest.warns(UserWarning, match=rf"^{FAST}: {FAST}.meta.json gives a power limit of "
                                         r"500 W, the parameter set's power_limit_w is 700 W; "
                                         r"scored with 700 W"):
        assert main(argv) == 0
    warned = json.loads(capsys.readouterr().out)
    (tmp_path / f"{FAST}.meta.json").write_text('{"enforced_power_limit_mw": 700000}')
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == warned  # the score is unchanged


def test_unix_time_spans_and_ranges_print_exactly(shared_data, tmp_path, capsys):
    trace = _shifted_copy(shared_data, tmp_path, FAST, 1764500000.0)
    assert main(["gpu", "score", str(H100_SXM), str(trace), "--span",
                 "1764500005.25:1764500015", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["span"] == "1764500005.25:1764500015 s"
    assert main(["gpu", "score", str(H100_SXM), str(trace), "--span", "30:100"]) == 2
    t = read_trace(trace)["t_s"]
    assert (t[0], t[-1]) == (1764500000.0016, 1764500132.9816)  # to the millisecond:
    assert (f"--span 30:100 s lies outside {FAST}, which runs 1764500000.002 to "
            "1764500132.982 s") in capsys.readouterr().err


def test_predict_prints_the_schedules_energy_and_the_lead_in_apart(tmp_path, capsys):
    for start, lead in ((0.0, None), (50.0, "0 to 50"),
                        (1764500000.0, "1764499940 to 1764500000")):
        events = tmp_path / "e.events.json"
        events.write_text(json.dumps([{"t_s": start, "load": "compute", "seconds": 2}]))
        out = tmp_path / "p.csv"
        assert main(["gpu", "predict", str(H100_SXM), "--events", str(events),
                     "--out", str(out)]) == 0
        said = capsys.readouterr().out
        tr = read_trace(out)
        own = tr["t_s"] >= start - 1e-6
        assert own.sum() == 200
        assert (f"the schedule's steps ({start:.0f} to {start + 2:.0f} s): mean "
                f"{tr['power_w'][own].mean():.1f} W, energy "
                f"{tr['power_w'][own].sum() * 0.01 / 1000:.2f} kJ") in said
        if lead is None:
            assert "lead-in" not in said
        else:
            assert (f"; idle lead-in before it ({lead} s, not in those figures): mean "
                    f"{tr['power_w'][~own].mean():.1f} W, energy "
                    f"{tr['power_w'][~own].sum() * 0.01 / 1000:.2f} kJ") in said


def test_predict_help_says_what_power_w_is_and_names_the_lead_in(capsys):
    with pytest.raises(SystemExit):
        main(["gpu", "predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "power_w (the model's power, the mean over each step)" in text
    assert "instantaneous power" not in text
    assert "idle lead-in" in text and "a minute" in text
    assert "--temp-c C die temperature at the schedule's first entry, of a card that has " \
           "been running what the schedule runs there" in text


def test_predict_temp_c_starts_a_card_warm_from_the_load_it_runs(shared_data, tmp_path,
                                                                 capsys):
    """The calibration from 30 s, a compute burst at its start, the die at 62 degC there:
    a card that has been running that load has a cooler heat sink than an idle card at
    62 degC (the tester's 5.0 degC mean error with the idle start)."""
    from twin.workload import Schedule

    sched = Schedule.from_entries(json.loads(
        (shared_data / f"{CAL}.events.json").read_text())).window(30.0, 100.0).shifted(-30.0)
    events = tmp_path / "warm.events.json"
    events.write_text(json.dumps(sched.to_entries()))
    tr = read_trace(shared_data / f"{CAL}.csv.gz")
    sel = (tr["t_s"] >= 30.0) & (tr["t_s"] < 100.0)
    t, temp = tr["t_s"][sel] - 30.0, tr["temp_c"][sel]
    assert temp[0] == 62
    out = tmp_path / "p.csv"
    assert main(["gpu", "predict", str(H100_SXM), "--events", str(events), "--out", str(out),
                 "--temp-c", "62"]) == 0
    pred = read_trace(out)
    assert pred["temp_c"][0] == 62.0
    assert np.mean(np.abs(np.interp(t, pred["t_s"], pred["temp_c"]) - temp)) < 2.5
    # the idle card at 62 degC that --temp-c gave before
    p, _ = load_params(H100_SXM)
    idle = simulate(p, sched, 0.01, temp_die_c=62.0)
    assert np.mean(np.abs(np.interp(t, idle.t_s, idle.temp_c) - temp)) > 4.5
    # a schedule that starts late: --temp-c holds at its first entry, with no idle minute
    # before it to cool through (the die was 37.9 degC where the card measured 67)
    events.write_text(json.dumps(sched.shifted(120.0).to_entries()))
    assert main(["gpu", "predict", str(H100_SXM), "--events", str(events), "--out", str(out),
                 "--temp-c", "62"]) == 0
    late = read_trace(out)
    assert late["t_s"][0] == 120.0 and late["temp_c"][0] == 62.0
    assert np.allclose(late["temp_c"], pred["temp_c"], atol=1e-6)


def test_spectrum_runs_over_the_schedules_own_span(tmp_path, capsys):
    """On Unix time (it tried to allocate TiB) and starting late (idle was in its figures),
    the same figures as the schedule from 0."""
    from twin.workload import synchronous_training

    base = synchronous_training(0.5, 0.6, 0.2, stop_s=30.0)
    figures = []
    for offset in (0.0, 100.0, 1764500000.0):
        events = tmp_path / f"train{offset:.0f}.events.json"
        events.write_text(json.dumps(base.shifted(offset).to_entries()))
        assert main(["gpu", "spectrum", "--events", str(events), "--out",
                     str(tmp_path / "psd.png"), "--groups", "2", "--spread", "0.1"]) == 0
        figures.append([line for line in capsys.readouterr().out.splitlines()
                        if "variance" in line])
    assert figures[1] == figures[0]
    for a, b in zip(figures[2], figures[0]):  # Unix time: the grid rounds a little
        sa, sb = (float(x.split("std ")[1].split(" W")[0]) for x in (a, b))
        assert sa == pytest.approx(sb, rel=0.01) and a.split(",")[0] == b.split(",")[0]


def _decimated(shared_data: Path, tmp_path: Path, every: int, offset: int) -> Path:
    """The calibration recording logged every ``every`` samples from row ``offset`` (a
    slow logger), its schedule beside it."""
    import gzip

    with gzip.open(shared_data / f"{CAL}.csv.gz", "rt") as f:
        lines = f.read().splitlines()
    out = tmp_path / f"slow{every}_{offset}.csv"
    out.write_text("\n".join([lines[0]] + lines[1 + offset::every]) + "\n")
    (tmp_path / f"slow{every}_{offset}.events.json").write_text(
        (shared_data / f"{CAL}.events.json").read_text())
    return out


@pytest.mark.parametrize("offset", [25, 50])
def test_a_one_hertz_log_is_scored_whatever_the_phase_of_its_samples(shared_data, tmp_path,
                                                                     capsys, offset):
    """Samples at x.25 or x.5 s once a second: every window is scored (the counter is
    known within its own interval of each edge; a 0.25 s rule refused these), and no lag is
    claimed that the counter's one-second steps cannot resolve."""
    path = _decimated(shared_data, tmp_path, 100, offset)
    assert main(["gpu", "score", str(H100_SXM), str(path), "--json"]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err
    row = json.loads(out.out)
    assert row["windows_left_out"] == 0 and row["seconds"] >= 169
    assert abs(row["energy_error"]) < 0.005 and row["window_error_energy"] < 0.09


def test_score_json_says_null_where_the_trace_has_no_instantaneous_field(shared_data,
                                                                        tmp_path, capsys):
    import gzip

    with gzip.open(shared_data / f"{CAL}.csv.gz", "rt") as f:
        lines = f.read().splitlines()
    drop = lines[0].split(",").index("power_inst_w")
    out = tmp_path / "bare.csv"
    out.write_text("\n".join(",".join(c for i, c in enumerate(r.split(",")) if i != drop)
                             for r in lines) + "\n")
    (tmp_path / "bare.events.json").write_text(
        (shared_data / f"{CAL}.events.json").read_text())
    assert main(["gpu", "score", str(H100_SXM), str(out), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["window_error"] is None and row["window_floor"] is None
    assert row["instant"] is False and row["window_error_energy"] > 0


def test_fit_with_a_power_limit_given_does_not_read_a_broken_meta(shared_data, tmp_path,
                                                                   capsys):
    short = _cut(shared_data, tmp_path, 20.0)
    (tmp_path / "short.meta.json").write_text("{ not json")
    assert main(["gpu", "fit", str(short), "--power-limit-w", "700",
                 "--out", str(tmp_path / "g.toml")]) == 0
    assert params.load(tmp_path / "g.toml").params["power_limit_w"] == 700.0
    capsys.readouterr()
    # without the option the broken file is the limit's source: an error naming it
    assert main(["gpu", "fit", str(short), "--out", str(tmp_path / "h.toml")]) == 2
    assert "short.meta.json" in capsys.readouterr().err
