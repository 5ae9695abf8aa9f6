"""Workload schedules: the events format, exact step means, and the generators."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from twin.workload import (
    CHECKPOINT,
    COMPUTE,
    IDLE,
    LOADS,
    MEMORY,
    Schedule,
    ScheduleError,
    ScheduleWarning,
    concat,
    desynchronise,
    inference,
    synchronous_training,
)


def test_shared_schedules_read_with_their_loads_and_mfu(shared_data):
    cal = Schedule.from_entries(json.loads(
        (shared_data / "h100_power_calibration.events.json").read_text()))
    fast = Schedule.from_entries(json.loads(
        (shared_data / "h100_power_fast.events.json").read_text()))
    assert len(cal) == 215
    assert set(np.unique(cal.load)) == {LOADS[n] for n in ("idle", "compute", "memory", "light")}
    assert np.isnan(cal.mfu).all()
    has = ~np.isnan(fast.mfu)
    assert has.sum() == 881 and (fast.load[has] == COMPUTE).all()
    assert 0.15 < fast.mfu[has].min() and fast.mfu[has].max() < 0.3
    assert (fast.load == CHECKPOINT).sum() == 24
    # Entries tile time: the recorder's sub-millisecond overlaps are trimmed.
    assert np.all(fast.t_s[:-1] + fast.seconds[:-1] <= fast.t_s[1:] + 1e-12)
    assert cal.segment[1] == "train_a"


def test_other_tools_fields_are_ignored():
    s = Schedule.from_entries([{"t_s": 0, "load": "compute", "seconds": 1, "step": 7,
                                "tokens": 8192, "mfu": 0.3},
                               {"t_s": 1, "load": "idle", "seconds": 1, "mfu": 0.2}])
    assert len(s) == 2 and s.mfu[0] == 0.3
    # a recorder's few milliseconds of overlap are trimmed, not an error
    s = Schedule.from_entries([{"t_s": 0.0, "load": "compute", "seconds": 1.006},
                               {"t_s": 1.0, "load": "idle", "seconds": 1.0}])
    assert s.seconds[0] == 1.0


def test_entries_round_trip():
    entries = [{"t_s": 0.0, "load": "compute", "seconds": 0.5, "mfu": 0.4, "segment": "a"},
               {"t_s": 0.5, "load": "memory", "seconds": 0.25},
               {"t_s": 1.0, "load": "checkpoint", "seconds": 2.0}]
    s = Schedule.from_entries(entries)
    assert Schedule.from_entries(s.to_entries()).to_entries() == s.to_entries()
    assert s.to_entries()[0] == entries[0]
    assert s.end_s == 3.0


@pytest.mark.parametrize(("entries", "message"), [
    ([{"t_s": 0, "load": "compute", "seconds": -1}], "entry 0: seconds must be >= 0"),
    ([{"t_s": 0, "load": "comptue", "seconds": 1}], "did you mean 'compute'"),
    ([{"t_s": 0, "seconds": 1}], "entry 0: field 'load' is missing"),
    ([{"t_s": 0, "load": "compute", "seconds": 1, "mfu": 1.5}], "mfu must be in [0, 1]"),
    ([{"t_s": 0, "lod": "compute", "seconds": 1}],
     "entry 0: field 'load' is missing (did you mean 'lod'?)"),
    ([{"t_s": "soon", "load": "idle", "seconds": 1}], "entry 0.t_s: expected a number"),
    ([{"t_s": 5, "load": "idle", "seconds": 1}, {"t_s": 1, "load": "idle", "seconds": 1}],
     "entry 1: t_s=1 is before the previous"),
    ([{"t_s": 0, "load": "idle", "seconds": 2}, {"t_s": 1, "load": "idle", "seconds": 1}],
     "entry 1: starts at t_s=1, before entry 0 ends at 2"),
    (["compute"], "entry 0: expected an object"),
    # a load that is not a name (was a TypeError: unhashable type)
    ([{"t_s": 0, "load": ["compute"], "seconds": 1}],
     "entry 0.load: expected a load name, one of idle, compute, light, memory, checkpoint; "
     "got ['compute']"),
    ([{"t_s": 0, "load": "idle", "seconds": 1}, {"t_s": 1, "load": {"kind": "compute"},
                                                 "seconds": 1}],
     "entry 1.load: expected a load name"),
    ([{"t_s": 0, "load": 1, "seconds": 1}], "entry 0.load: expected a load name"),
])
def test_malformed_entries_are_named(entries, message):
    with pytest.raises(ScheduleError) as exc:
        Schedule.from_entries(entries)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_mfu_rounded_just_above_one_is_one_and_further_above_is_shown_exactly():
    s = Schedule.from_entries([{"t_s": 0, "load": "compute", "seconds": 1, "mfu": 1.0000001},
                               {"t_s": 1, "load": "compute", "seconds": 1, "mfu": 0.5}])
    assert s.mfu[0] == 1.0 and s.mfu[1] == 0.5
    assert Schedule.from_entries([{"t_s": 0, "load": "compute", "seconds": 1,
                                   "mfu": 1.000001}]).mfu[0] == 1.0
    # %g showed 1.0000011 as "got 1", a value inside the range
    with pytest.raises(ScheduleError, match=r"^entry 0: mfu must be in \[0, 1\], got 1\.0000011$"):
        Schedule.from_entries([{"t_s": 0, "load": "compute", "seconds": 1, "mfu": 1.0000011}])
    with pytest.raises(ScheduleError, match=r"got -1e-07$"):
        Schedule.from_entries([{"t_s": 0, "load": "compute", "seconds": 1, "mfu": -1e-7}])


def _marked(entries, markers):
    """``entries`` with zero-length ``markers`` ``(after entry k, t_s)`` put in."""
    out = []
    for k, e in enumerate(entries):
        out.append(e)
        out += [{"t_s": t, "load": "compute", "seconds": 0, "segment": "mark"}
                for after, t in markers if after == k]
    return out


def test_a_zero_length_marker_inside_an_entry_changes_nothing():
    """A marker occupies no time: inside an entry (at its start, or in its middle; finding 15
    was rejected as an overlap) it is dropped, as the lookups take the last entry started and
    would end the entry there; before an entry, at its end or in idle time it is kept."""
    entries = [{"t_s": -0.0059, "load": "compute", "seconds": 15.0},
               {"t_s": 14.9941, "load": "memory", "seconds": 2.0, "segment": "m"},
               {"t_s": 20.0, "load": "compute", "seconds": 3.0, "mfu": 0.3},
               {"t_s": 22.995, "load": "light", "seconds": 1.0}]  # 5 ms early: trimmed
    plain = Schedule.from_entries(entries)
    inside = Schedule.from_entries(_marked(entries, [(0, -0.0059), (0, 7.0), (1, 15.5),
                                                     (2, 22.0), (2, 22.993)]))
    for name in ("t_s", "seconds", "load", "mfu"):
        np.testing.assert_array_equal(getattr(inside, name), getattr(plain, name))
    assert inside.segment == plain.segment

    def per_entry(s):  # a value of each entry's load and mfu, as the GPU's activity is
        return 10.0 * s.load + np.nan_to_num(s.mfu)

    for s in (inside, Schedule.from_entries(_marked(entries, [(1, 16.9941), (1, 18.0),
                                                              (3, 23.995), (3, 30.0)]))):
        for t0, dt, n in ((-1.0, 0.01, 3200), (-0.5, 0.5, 64), (0.0, 0.1, 310)):
            np.testing.assert_array_equal(
                s.step_means(per_entry(s), t0, dt, n, idle_value=1.0),
                plain.step_means(per_entry(plain), t0, dt, n, idle_value=1.0))
        t = np.linspace(-1.0, 31.0, 6401)
        np.testing.assert_array_equal(s.load_at(t), plain.load_at(t))
        w, wp = s.window(5.0, 22.5), plain.window(5.0, 22.5)
        np.testing.assert_array_equal(w.t_s, wp.t_s)
        np.testing.assert_array_equal(w.seconds, wp.seconds)
        assert s.start_s == plain.start_s
    assert inside.end_s == plain.end_s
    # markers before an entry, at an entry's end and in idle time are kept (and harmless)
    kept = Schedule.from_entries(_marked(entries, [(1, 16.9941), (1, 18.0), (1, 20.0)]))
    assert len(kept) == len(plain) + 3 and kept.segment[2:5] == ("mark",) * 3
    # (one after the last entry marks the end of the schedule, as before)
    assert Schedule.from_entries(_marked(entries, [(3, 30.0)])).end_s == 30.0


@pytest.mark.parametrize(("entries", "message"), [
    # a real overlap is still one, named by the entries' numbers in the file
    (_marked([{"t_s": 0, "load": "compute", "seconds": 10},
              {"t_s": 8, "load": "idle", "seconds": 5}], [(0, 5)]),
     "entry 2: starts at t_s=8, before entry 0 ends at 10"),
    # a marker before the previous entry's start is out of order
    ([{"t_s": 5, "load": "compute", "seconds": 1}, {"t_s": 4.5, "load": "idle", "seconds": 0}],
     "entry 1: t_s=4.5 is before the previous entry's t_s=5; entries must be in time order"),
    # a Unix time keeps its digits (was 1.7645e+09)
    ([{"t_s": 1764500030.5, "load": "compute", "seconds": 10},
      {"t_s": 1764500031.25, "load": "idle", "seconds": 5}],
     "entry 1: starts at t_s=1764500031.25, before entry 0 ends at 1764500040.5"),
])
def test_overlaps_with_markers_are_named(entries, message):
    with pytest.raises(ScheduleError) as exc:
        Schedule.from_entries(entries)
    assert str(exc.value) == message


def test_other_tools_fields_are_ignored_and_a_near_miss_is_named_once():
    entries = [{"t_s": float(k), "load": "compute", "seconds": 1.0, "step": k, "hfu": 0.5,
                "tokens": 8192, "event": "fwd"} for k in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these is a near miss of an absent field
        entries[0]["mfu"] = 0.4
        plain = Schedule.from_entries(entries)
    assert plain.mfu[0] == 0.4 and np.isnan(plain.mfu[1])
    typo = [{"t_s": float(k), "load": "compute", "seconds": 1.0, "mfuu": 0.3}
            for k in range(3)]
    with pytest.warns(ScheduleWarning) as caught:
        s = Schedule.from_entries(typo)
    assert len(caught) == 1
    assert str(caught[0].message) == ("schedule: field 'mfuu' is not one gridloop reads, "
                                      "ignored (did you mean 'mfu'?)")
    assert np.all(np.isnan(s.mfu))


def test_step_means_are_exact_for_entries_shorter_than_a_step():
    s = Schedule.from_entries([{"t_s": 0.03, "load": "compute", "seconds": 0.02},
                               {"t_s": 0.15, "load": "compute", "seconds": 0.1}])
    v = np.array([1.0, 2.0])
    m = s.step_means(v, 0.0, 0.1, 3)
    np.testing.assert_allclose(m, [0.2, 1.0, 1.0])
    # The integral of what follows from a schedule does not depend on the step.
    fine = s.step_means(v, 0.0, 0.001, 300).sum() * 0.001
    np.testing.assert_allclose(m.sum() * 0.1, fine)
    # Idle time counts as idle_value.
    np.testing.assert_allclose(s.step_means(v, 0.0, 0.1, 1, idle_value=5.0), [0.2 + 0.8 * 5])


def test_lookups_and_windows():
    s = Schedule.from_entries([{"t_s": 1.0, "load": "memory", "seconds": 1.0},
                               {"t_s": 3.0, "load": "compute", "seconds": 1.0}])
    np.testing.assert_array_equal(s.load_at([0.5, 1.0, 1.99, 2.5, 3.5, 9.0]),
                                  [IDLE, MEMORY, MEMORY, IDLE, COMPUTE, IDLE])
    w = s.window(1.5, 3.5)
    np.testing.assert_allclose(w.t_s, [1.5, 3.0])
    np.testing.assert_allclose(w.seconds, [0.5, 0.5])
    both = concat([s, s.shifted(10.0)])
    assert len(both) == 4 and both.end_s == 14.0


def test_synchronous_training_steps_checkpoints_and_span():
    s = synchronous_training(0.5, 0.6, 0.2, start_s=2.0, stop_s=32.0,
                             checkpoint_every_steps=10, checkpoint_s=1.5)
    assert s.start_s == pytest.approx(2.0) and s.end_s == pytest.approx(32.0)
    comp = s.load == COMPUTE
    np.testing.assert_allclose(s.seconds[comp], 0.3)
    np.testing.assert_allclose(s.seconds[s.load == MEMORY], 0.1)
    starts = s.t_s[comp]
    # Ten steps of 0.5 s, then a 1.5 s checkpoint, then the next steps.
    assert np.diff(starts[:10]) == pytest.approx(0.5)
    assert starts[10] - starts[9] == pytest.approx(0.5 + 1.5)
    ck = s.t_s[s.load == CHECKPOINT]
    assert len(ck) == 4
    assert np.diff(ck) == pytest.approx(6.5)
    assert np.isnan(s.mfu).all()


def test_training_jitter_is_seeded_and_lowers_mfu_of_slow_steps():
    a = synchronous_training(1.0, 0.8, mfu=0.4, stop_s=50, jitter=0.1, seed=3)
    b = synchronous_training(1.0, 0.8, mfu=0.4, stop_s=50, jitter=0.1, seed=3)
    c = synchronous_training(1.0, 0.8, mfu=0.4, stop_s=50, jitter=0.1, seed=4)
    assert a.to_entries() == b.to_entries()
    assert a.to_entries() != c.to_entries()
    comp = a.load == COMPUTE
    # The same FLOPs in more time: mfu x compute time is constant.
    np.testing.assert_allclose(a.mfu[comp] * a.seconds[comp], 0.4 * 0.8, rtol=1e-6)


def test_training_rejects_impossible_fractions():
    with pytest.raises(ScheduleError):
        synchronous_training(1.0, 0.8, 0.3)
    with pytest.raises(ScheduleError):
        synchronous_training(0.0, 0.5)


def test_inference_is_seeded_with_prefill_decode_and_idle():
    a = inference(60.0, 2.0, seed=1)
    assert a.to_entries() == inference(60.0, 2.0, seed=1).to_entries()
    segs = set(a.segment)
    assert {"prefill", "decode", "serve"} <= segs
    pre = np.array([s == "prefill" for s in a.segment])
    dec = np.array([s == "decode" for s in a.segment])
    assert (a.mfu[pre] == 0.45).all() and (a.mfu[dec] == 0.05).all()
    assert a.end_s <= 60.0 + 1e-9
    busy = a.seconds[a.load != IDLE].sum()
    busier = inference(60.0, 20.0, seed=1)
    assert busier.seconds[busier.load != IDLE].sum() > busy


def _served(arrivals, prompts, outputs, stop, max_batch, s_per_token, step_s, step_s_per_req):
    """Continuous batching request by request, in plain Python: ``(t_s, seconds, phase)``."""
    entries, t, nxt, left = [], 0.0, 0, []
    while t < stop:
        admit = []
        while nxt < len(arrivals) and arrivals[nxt] <= t and len(left) + len(admit) < max_batch:
            admit.append(nxt)
            nxt += 1
        if not left and not admit:
            if nxt >= len(arrivals):
                break
            seconds, phase = min(arrivals[nxt], stop) - t, "serve"
        else:
            if admit:
                seconds = min(sum(int(prompts[i]) for i in admit) * s_per_token, stop - t)
                entries.append((t, seconds, "prefill"))
                t += seconds
                left += [int(outputs[i]) for i in admit]
                if t >= stop:
                    break
            seconds, phase = min(step_s + step_s_per_req * len(left), stop - t), "decode"
            left = [k - 1 for k in left if k > 1]
        entries.append((t, seconds, phase))
        t += seconds
    return entries


@pytest.mark.parametrize("rate_hz, max_batch, output_tokens", [
    (2.0, 32, 128), (40.0, 4, 64), (200.0, 1, 8), (0.05, 32, 128)])
def test_inference_serves_its_requests_as_continuous_batching_does(
        rate_hz: float, max_batch: int, output_tokens: int) -> None:
    """The compiled server against a request-by-request simulation of the same draws."""
    duration = 120.0
    s = inference(duration, rate_hz, max_batch=max_batch, output_tokens=output_tokens, seed=4)
    arrival_rng, prompt_rng, output_rng = (
        np.random.default_rng(q) for q in np.random.SeedSequence(4).spawn(3))
    arrivals = np.cumsum(arrival_rng.exponential(1.0 / rate_hz, int(duration * rate_hz * 2) + 16))
    arrivals = arrivals[arrivals < duration]
    prompts = prompt_rng.geometric(1.0 / 512, len(arrivals))
    outputs = output_rng.geometric(1.0 / output_tokens, len(arrivals))
    t, seconds, phases = zip(*_served(arrivals, prompts, outputs, duration, max_batch,
                                      2.0e-5, 0.02, 2.0e-4))
    loads = {"serve": IDLE, "prefill": COMPUTE, "decode": COMPUTE}
    mfus = {"serve": np.nan, "prefill": 0.45, "decode": 0.05}
    expected = Schedule(t, seconds, [loads[p] for p in phases], [mfus[p] for p in phases],
                        phases)  # trimmed as the generator's (t + seconds rounds)
    assert s.to_entries() == expected.to_entries()
    assert s.segment == phases


def test_a_longer_schedule_of_one_seed_starts_with_the_shorter_one():
    """A run cut short and its replay, or runs of two durations, see the same requests."""
    short, long = inference(30.0, 4.0, seed=7), inference(120.0, 4.0, seed=7)
    n = len(short.t_s) - 1  # the last entry of the short one is cut at its end
    assert n > 100
    for name in ("t_s", "seconds", "load", "mfu"):
        np.testing.assert_array_equal(getattr(short, name)[:n], getattr(long, name)[:n])
    assert short.segment[:n] == long.segment[:n]


def test_desynchronise_spreads_offsets():
    s = synchronous_training(1.0, 0.5, stop_s=10)
    copies = desynchronise(s, 4, 0.3, seed=2)
    offsets = sorted(c.t_s[0] - s.t_s[0] for c in copies)
    np.testing.assert_allclose(offsets, [0.0, 0.1, 0.2, 0.3])
    assert [c.t_s[0] for c in copies] == [c.t_s[0] for c in desynchronise(s, 4, 0.3, seed=2)]
    with pytest.raises(ScheduleError):
        desynchronise(s, 0, 0.1)
