"""Workload schedules of a GPU: what it is commanded to do, and when.

A schedule is a list of entries ``{t_s, load, seconds}`` with an optional ``mfu`` on
``compute`` entries, the format of the ``*.events.json`` files that come with the shared H100
recordings.  Entries are in order of ``t_s``; each entry of non-zero length starts no earlier
than the previous one of non-zero length ends (up to :data:`OVERLAP_TOLERANCE_S`, trimmed).
A zero-length entry (a marker) occupies no time and changes no load: it may sit anywhere at
or after the previous entry's start; one inside another entry's span is dropped (the lookups
take the last entry started, so it would otherwise cut that entry short).  Time not covered
by an entry is idle.  Loads:

``idle``        nothing running;
``compute``     arithmetic-bound kernels; without ``mfu`` tensor cores saturated (large bf16
                matrix products), with ``mfu`` a training or inference step of that model
                FLOPs utilisation (in [0, 1]; up to :data:`MFU_TOLERANCE` above 1, a
                framework's rounding, is read as 1);
``memory``      memory-bound kernels (device-to-device copies, collective communication);
``light``       small kernels with gaps (low occupancy);
``checkpoint``  weights copied to the host and saved: idle-like for the GPU.

The generators below produce schedules from a description of a job (synchronous training,
inference serving) and desynchronise one schedule across the GPUs of a rack.  All are seeded
and deterministic.  The model of what a load draws is in :mod:`twin.gpu`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from twin.errors import TwinError
from twin.params import did_you_mean

#: load names and their codes (the codes of the recordings' ``phases``: 1 big matrix
#: products, 2 small ones, 3 copies; checkpoint added)
LOADS: dict[str, int] = {"idle": 0, "compute": 1, "light": 2, "memory": 3, "checkpoint": 4}
LOAD_NAMES: tuple[str, ...] = tuple(sorted(LOADS, key=LOADS.__getitem__))
IDLE, COMPUTE, LIGHT, MEMORY, CHECKPOINT = (LOADS[n] for n in LOAD_NAMES)

#: entries may overlap their predecessor by this much, and are trimmed to tile time: the
#: recorder's clock jitter and rounding, up to one 10 ms sample of NVML [s]
OVERLAP_TOLERANCE_S = 0.01

#: an ``mfu`` at most this much above 1 is a framework's rounding (1.0000001) and is read as
#: 1; further above it is an error
MFU_TOLERANCE = 1e-6

_ENTRY_KEYS = ("t_s", "load", "seconds", "mfu", "segment")


class ScheduleError(TwinError, ValueError):
    """A workload schedule is malformed; the message names the entry and the field."""


class ScheduleWarning(UserWarning):
    """A schedule entry has a field gridloop does not read that looks like one it does."""


@dataclass(frozen=True)
class Schedule:
    """A GPU's commanded workload: entries sorted by start time, gaps idle.

    Attributes
    ----------
    t_s : start of each entry. [s]
    seconds : duration of each entry. [s]
    load : load code of each entry (:data:`LOADS`).
    mfu : model FLOPs utilisation of each entry, NaN where not given; read on compute
        entries only.  In [0, 1]: a value up to :data:`MFU_TOLERANCE` above 1 (a framework's
        rounding) is clipped to 1. [fraction]
    segment : name of the part of the schedule each entry belongs to ("" if none).

    Zero-length entries inside another entry's span are dropped (see the module's
    docstring), so ``len`` may be less than the number of entries given.
    """

    t_s: np.ndarray
    seconds: np.ndarray
    load: np.ndarray
    mfu: np.ndarray
    segment: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.t_s)
        # Own copies: validation trims overlaps in place.
        object.__setattr__(self, "t_s", np.array(self.t_s, dtype=float).reshape(-1))
        object.__setattr__(self, "seconds", np.array(self.seconds, dtype=float).reshape(-1))
        object.__setattr__(self, "load", np.array(self.load, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "mfu", np.array(self.mfu, dtype=float).reshape(-1))
        if not self.segment:
            object.__setattr__(self, "segment", ("",) * n)
        for name in ("seconds", "load", "mfu"):
            if len(getattr(self, name)) != n:
                raise ScheduleError(f"schedule: {name} has {len(getattr(self, name))} "
                                    f"entries, t_s has {n}")
        if len(self.segment) != n:
            raise ScheduleError(f"schedule: segment has {len(self.segment)} entries, t_s has {n}")
        keep = _validate(self.t_s, self.seconds, self.load, self.mfu)
        if keep is not None:  # markers inside an entry: dropped, they would cut it
            for name in ("t_s", "seconds", "load", "mfu"):
                object.__setattr__(self, name, getattr(self, name)[keep])
            object.__setattr__(self, "segment",
                               tuple(s for s, k in zip(self.segment, keep, strict=True) if k))

    def __len__(self) -> int:
        return len(self.t_s)

    @property
    def start_s(self) -> float:
        """Start of the first entry (0 for an empty schedule). [s]"""
        return float(self.t_s[0]) if len(self) else 0.0

    @property
    def end_s(self) -> float:
        """End of the last entry. [s]"""
        return float(np.max(self.t_s + self.seconds)) if len(self) else 0.0

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]]) -> Schedule:
        """Build a schedule from event dictionaries; errors name the entry and field."""
        t, sec, load, mfu, seg = [], [], [], [], []
        # Other tools' fields (step numbers, token counts, hfu) are ignored: a file from
        # another tool must not fail.  One very like a field of ours that the entry lacks
        # (``mfuu``, ``MFU``) may be a typo that changes the prediction: named once in a
        # warning.
        near_misses: dict[str, str] = {}
        for i, e in enumerate(entries):
            where = f"entry {i}"
            if not isinstance(e, Mapping):
                raise ScheduleError(f"{where}: expected an object with t_s, load, seconds")
            for key in ("t_s", "load", "seconds"):
                if key not in e:
                    hint = did_you_mean(key, [str(k) for k in e if k not in _ENTRY_KEYS])
                    raise ScheduleError(f"{where}: field '{key}' is missing{hint}")
            for key in e:
                if key not in _ENTRY_KEYS and key not in near_misses:
                    near_misses[key] = did_you_mean(
                        str(key).lower(), [k for k in _ENTRY_KEYS if k not in e], cutoff=0.75)
            name = e["load"]
            if not isinstance(name, str):
                raise ScheduleError(f"{where}.load: expected a load name, one of "
                                    f"{', '.join(LOAD_NAMES)}; got {name!r}")
            if name not in LOADS:
                raise ScheduleError(f"{where}: unknown load {name!r}"
                                    f"{did_you_mean(str(name), LOADS)}; loads are "
                                    f"{', '.join(LOAD_NAMES)}")
            t.append(_number(e["t_s"], f"{where}.t_s"))
            sec.append(_number(e["seconds"], f"{where}.seconds"))
            load.append(LOADS[name])
            m = e.get("mfu")
            mfu.append(math.nan if m is None else _number(m, f"{where}.mfu"))
            seg.append(str(e.get("segment", "")))
        for key, hint in near_misses.items():
            if hint:
                warnings.warn(f"schedule: field '{key}' is not one gridloop reads, ignored"
                              f"{hint}", ScheduleWarning, stacklevel=2)
        try:
            return cls(np.array(t), np.array(sec), np.array(load, dtype=np.int64),
                       np.array(mfu), tuple(seg))
        except ScheduleError as exc:
            raise ScheduleError(str(exc)) from None

    def to_entries(self) -> list[dict[str, Any]]:
        """The schedule as event dictionaries (the ``*.events.json`` format)."""
        out = []
        for i in range(len(self)):
            e: dict[str, Any] = {"t_s": round(float(self.t_s[i]), 6),
                                 "load": LOAD_NAMES[self.load[i]],
                                 "seconds": round(float(self.seconds[i]), 6)}
            if self.segment[i]:
                e["segment"] = self.segment[i]
            if not math.isnan(self.mfu[i]):
                e["mfu"] = round(float(self.mfu[i]), 6)
            out.append(e)
        return out

    def index_at(self, t_s: np.ndarray | float) -> np.ndarray:
        """Index of the entry in force at each time, -1 where idle (before, between, after)."""
        t = np.asarray(t_s, dtype=float)
        i = np.searchsorted(self.t_s, t, side="right") - 1
        ok = (i >= 0)
        ic = np.where(ok, i, 0)
        inside = ok & (t < self.t_s[ic] + self.seconds[ic]) if len(self) else ok & False
        return np.where(inside, ic, -1)

    def load_at(self, t_s: np.ndarray | float) -> np.ndarray:
        """Load code in force at each time (idle outside the entries)."""
        i = self.index_at(t_s)
        return np.where(i >= 0, self.load[np.maximum(i, 0)] if len(self) else IDLE, IDLE)

    def step_means(self, values: np.ndarray, t0: float, dt: float, n: int,
                   idle_value: float = 0.0) -> np.ndarray:
        """Time-mean over each step ``[t0 + k dt, t0 + (k + 1) dt)`` of a per-entry value.

        ``values`` holds one value per entry; time outside entries counts as
        ``idle_value``.  Exact for entries shorter than a step (a 20 ms training step in a
        100 ms tick counts for a fifth), so the mean of what follows from the schedule does
        not depend on ``dt``.
        """
        edges = t0 + dt * np.arange(n + 1)
        return np.diff(self.integral(values, edges, idle_value)) / dt

    def integral(self, values: np.ndarray, t_s: np.ndarray, idle_value: float = 0.0
                 ) -> np.ndarray:
        """``int_-inf^t (value(s) - idle_value) ds + idle_value * t`` at each ``t``.

        The running integral of a per-entry value, piecewise linear in ``t``; differences of
        it are exact integrals over any interval.
        """
        t = np.asarray(t_s, dtype=float)
        v = np.asarray(values, dtype=float) - idle_value
        if len(self) == 0:
            return idle_value * t
        cum = np.concatenate(([0.0], np.cumsum(v * self.seconds)))
        i = np.searchsorted(self.t_s, t, side="right") - 1
        ic = np.maximum(i, 0)
        part = np.clip(t - self.t_s[ic], 0.0, self.seconds[ic]) * v[ic]
        return np.where(i >= 0, cum[ic] + part, 0.0) + idle_value * t

    def shifted(self, offset_s: float) -> Schedule:
        """The same schedule ``offset_s`` later."""
        return Schedule(self.t_s + offset_s, self.seconds, self.load, self.mfu, self.segment)

    def window(self, start_s: float, stop_s: float) -> Schedule:
        """The entries that overlap ``[start_s, stop_s)``, cut to it."""
        a = np.maximum(self.t_s, start_s)
        b = np.minimum(self.t_s + self.seconds, stop_s)
        keep = b > a
        return Schedule(a[keep], (b - a)[keep], self.load[keep], self.mfu[keep],
                        tuple(s for s, k in zip(self.segment, keep) if k))


def concat(schedules: Sequence[Schedule]) -> Schedule:
    """Entries of several schedules on one clock, sorted by start time (ties keep order)."""
    if not schedules:
        return empty()
    t = np.concatenate([s.t_s for s in schedules])
    order = np.argsort(t, kind="stable")
    seg = [name for s in schedules for name in s.segment]
    return Schedule(t[order], np.concatenate([s.seconds for s in schedules])[order],
                    np.concatenate([s.load for s in schedules])[order],
                    np.concatenate([s.mfu for s in schedules])[order],
                    tuple(seg[i] for i in order))


def empty() -> Schedule:
    """A schedule with no entries: idle for ever."""
    return Schedule(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0))


def _validate(t: np.ndarray, sec: np.ndarray, load: np.ndarray, mfu: np.ndarray
              ) -> np.ndarray | None:
    """Check a schedule's arrays, naming the first bad entry; in place, trims the recorder's
    small overlaps (``sec``) and clips an ``mfu`` rounded above 1.  Returns which entries to
    keep (None: all): a zero-length entry inside the span of the entry of non-zero length
    before it is left out."""
    bad = ~np.isfinite(t)
    if bad.any():
        raise ScheduleError(f"entry {int(np.argmax(bad))}: t_s is not a finite number")
    bad = ~np.isfinite(sec) | (sec < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ScheduleError(f"entry {i}: seconds must be >= 0, got {float(sec[i]):g}")
    bad = (load < 0) | (load >= len(LOADS))
    if bad.any():
        i = int(np.argmax(bad))
        raise ScheduleError(f"entry {i}: unknown load code {load[i]}")
    has = ~np.isnan(mfu)
    bad = has & ~((mfu >= 0) & (mfu <= 1 + MFU_TOLERANCE))
    if bad.any():
        i = int(np.argmax(bad))
        # repr: %g would show 1.0000011 as 1, a value inside the range
        raise ScheduleError(f"entry {i}: mfu must be in [0, 1], got {float(mfu[i])!r}")
    np.minimum(mfu, 1.0, out=mfu, where=has)
    if len(t) < 2:
        return None
    back = np.flatnonzero(t[1:] < t[:-1])
    if len(back):
        i = int(back[0]) + 1
        raise ScheduleError(f"entry {i}: t_s={_time(t[i])} is before the previous entry's "
                            f"t_s={_time(t[i - 1])}; entries must be in time order")
    busy = sec > 0
    ib = np.flatnonzero(busy)
    if len(ib) > 1:
        a, b = ib[:-1], ib[1:]
        bad = (t[a] + sec[a]) - t[b] > OVERLAP_TOLERANCE_S
        if bad.any():
            k = int(np.argmax(bad))
            i, j = int(b[k]), int(a[k])
            raise ScheduleError(f"entry {i}: starts at t_s={_time(t[i])}, before entry {j} "
                                f"ends at {_time(t[j] + sec[j])}")
        # Clip the recorder's small overlaps so entries tile time.
        sec[a] = np.minimum(sec[a], t[b] - t[a])
    # The last entry of non-zero length before each entry (-1: none).
    prev = np.maximum.accumulate(np.where(busy, np.arange(len(t)), -1))
    p = np.maximum(prev, 0)
    inside = ~busy & (prev >= 0) & (t < t[p] + sec[p])
    return ~inside if inside.any() else None


def _time(t: float) -> str:
    """A time for a message: all its digits (``%g`` shows a Unix time as 1.7645e+09)."""
    return f"{float(t):.15g}"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScheduleError(f"{where}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ScheduleError(f"{where}: {value!r} is not finite")
    return v


# --- generators -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Builder:
    """Collects entries in time order (used by the generators)."""

    t: list[float] = field(default_factory=list)
    sec: list[float] = field(default_factory=list)
    load: list[int] = field(default_factory=list)
    mfu: list[float] = field(default_factory=list)
    seg: list[str] = field(default_factory=list)

    def add(self, t_s: float, seconds: float, load: int, mfu: float = math.nan,
            segment: str = "") -> float:
        if seconds > 0:
            self.t.append(t_s)
            self.sec.append(seconds)
            self.load.append(load)
            self.mfu.append(mfu)
            self.seg.append(segment)
        return t_s + seconds

    def build(self) -> Schedule:
        return Schedule(np.array(self.t), np.array(self.sec),
                        np.array(self.load, dtype=np.int64), np.array(self.mfu),
                        tuple(self.seg))


def synchronous_training(
    step_s: float,
    compute_fraction: float,
    comm_fraction: float = 0.0,
    *,
    start_s: float = 0.0,
    stop_s: float = 60.0,
    mfu: float | None = None,
    comm_load: str = "memory",
    checkpoint_every_steps: int = 0,
    checkpoint_s: float = 0.0,
    jitter: float = 0.0,
    seed: int = 0,
) -> Schedule:
    """Schedule of one GPU in a synchronous data-parallel training job.

    Each step is ``compute_fraction`` of ``step_s`` of ``compute`` (forward, backward,
    optimiser), then ``comm_fraction`` of ``comm_load`` (the gradient all-reduce, ``memory``
    when it moves data through the GPU, ``idle`` when it is exposed waiting), then idle for
    the rest of the step (waiting for the slowest rank).  Every ``checkpoint_every_steps``
    steps a ``checkpoint`` of ``checkpoint_s`` stalls the job.  The job runs from ``start_s``
    to ``stop_s``.

    Parameters
    ----------
    step_s : step period. [s]
    compute_fraction, comm_fraction : parts of the step. [fraction]
    start_s, stop_s : job start and stop. [s]
    mfu : model FLOPs utilisation of the compute phase; None means tensor cores saturated.
        [fraction]
    comm_load : load of the communication phase, ``memory`` or ``idle``.
    checkpoint_every_steps : checkpoint period in steps; 0 means never.
    checkpoint_s : checkpoint length. [s]
    jitter : relative standard deviation of each step's compute time (stragglers, data
        loading). [fraction]
    seed : seed of the jitter.
    """
    if step_s <= 0:
        raise ScheduleError(f"synchronous_training: step_s must be > 0, got {step_s}")
    if not 0 < compute_fraction <= 1 or not 0 <= comm_fraction <= 1 - compute_fraction:
        raise ScheduleError("synchronous_training: need 0 < compute_fraction and "
                            "compute_fraction + comm_fraction <= 1")
    if comm_load not in LOADS:
        raise ScheduleError(f"synchronous_training: unknown comm_load {comm_load!r}")
    if stop_s < start_s:
        raise ScheduleError("synchronous_training: stop_s is before start_s")
    rng = np.random.default_rng(seed)
    b = _Builder()
    m = math.nan if mfu is None else float(mfu)
    t = float(start_s)
    k = 0
    while t < stop_s - 1e-12:
        c = step_s * compute_fraction * max(0.1, 1.0 + jitter * rng.standard_normal())
        # A slower step at the same FLOPs has a proportionally lower utilisation.
        mk = m * step_s * compute_fraction / c if mfu is not None else m
        end = min(t + max(step_s, c + step_s * comm_fraction), stop_s)
        t1 = b.add(t, min(c, stop_s - t), COMPUTE, min(mk, 1.0), "train")
        t1 = b.add(t1, min(step_s * comm_fraction, max(stop_s - t1, 0.0)), LOADS[comm_load],
                   segment="train")
        b.add(t1, max(end - t1, 0.0), IDLE, segment="train")
        t = end
        k += 1
        if checkpoint_every_steps and k % checkpoint_every_steps == 0 and t < stop_s:
            t = b.add(t, min(checkpoint_s, stop_s - t), CHECKPOINT, segment="checkpoint")
    return b.build()


def inference(
    duration_s: float,
    arrival_rate_hz: float,
    *,
    start_s: float = 0.0,
    max_batch: int = 32,
    prompt_tokens: int = 512,
    output_tokens: int = 128,
    prefill_s_per_token: float = 2.0e-5,
    decode_step_s: float = 0.02,
    decode_step_s_per_request: float = 2.0e-4,
    prefill_mfu: float = 0.45,
    decode_mfu: float = 0.05,
    seed: int = 0,
) -> Schedule:
    """Schedule of one GPU serving a language model with continuous batching.

    Requests arrive as a Poisson process.  Each iteration the server admits waiting requests
    (up to ``max_batch`` in flight), runs one ``compute`` prefill of their prompts
    (arithmetic-bound, ``prefill_mfu``) and then one decode step for every request in
    flight (memory-bound: weights and KV cache are read for few FLOPs, ``decode_mfu``).
    A request leaves after ``output_tokens`` decode steps.  With nothing in flight the GPU
    idles until the next arrival.

    Parameters
    ----------
    duration_s : length of the schedule. [s]
    arrival_rate_hz : mean request arrival rate. [1/s]
    start_s : start of serving. [s]
    max_batch : requests in flight at most.
    prompt_tokens, output_tokens : tokens per request (mean; each drawn geometric).
    prefill_s_per_token : prefill time per prompt token. [s]
    decode_step_s : time of one decode step of a batch of one. [s]
    decode_step_s_per_request : extra decode-step time per request in the batch. [s]
    prefill_mfu, decode_mfu : model FLOPs utilisation of the two phases. [fraction]
    seed : seed of arrivals and lengths.
    """
    if duration_s <= 0 or arrival_rate_hz <= 0 or max_batch < 1:
        raise ScheduleError("inference: need duration_s > 0, arrival_rate_hz > 0, "
                            "max_batch >= 1")
    # one stream each for arrivals, prompts and outputs, each drawn in order: a longer
    # schedule of the same seed starts with exactly the shorter one (a replay of a run cut
    # short, or a run of another duration, sees the same requests)
    arrival_rng, prompt_rng, output_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    stop = start_s + duration_s
    chunk = int(duration_s * arrival_rate_hz * 2) + 16
    gaps = arrival_rng.exponential(1.0 / arrival_rate_hz, chunk)
    while start_s + gaps.sum() < stop:  # rarely: the same stream, further on
        gaps = np.concatenate((gaps, arrival_rng.exponential(1.0 / arrival_rate_hz, chunk)))
    arrivals = start_s + np.cumsum(gaps)
    arrivals = arrivals[arrivals < stop]
    prompts = prompt_rng.geometric(1.0 / prompt_tokens, len(arrivals))
    outputs = output_rng.geometric(1.0 / output_tokens, len(arrivals))
    t, sec, phase = _serve(arrivals, prompts, outputs, float(start_s), float(stop), max_batch,
                           prefill_s_per_token, decode_step_s, decode_step_s_per_request)
    return Schedule(t, sec, np.where(phase == _SERVE_IDLE, IDLE, COMPUTE),
                    np.array([math.nan, prefill_mfu, decode_mfu])[phase],
                    tuple(np.array(_SERVE_PHASES)[phase].tolist()))


#: the phases of :func:`_serve`, by code: the segment names of its entries
_SERVE_PHASES = ("serve", "prefill", "decode")
_SERVE_IDLE, _SERVE_PREFILL, _SERVE_DECODE = range(3)


@numba.njit(cache=True)
def _serve(arrivals, prompts, outputs, start_s, stop, max_batch, prefill_s_per_token,
           decode_step_s, decode_step_s_per_request):
    """The server's iterations of :func:`inference`: ``(t_s, seconds, phase)`` of each
    entry.  Compiled: a day of serving is millions of decode steps."""
    n_cap = 1024
    t_out = np.empty(n_cap)
    sec_out = np.empty(n_cap)
    phase_out = np.empty(n_cap, dtype=np.int64)
    n = 0
    left = np.empty(max_batch, dtype=np.int64)  # decode steps left of each request in flight
    n_left = 0
    t = start_s
    nxt = 0  # next request not yet admitted
    n_req = arrivals.shape[0]
    while t < stop:
        if n + 2 > n_cap:  # room for a prefill and a decode step
            n_cap *= 2
            t_out = _grown(t_out, n_cap)
            sec_out = _grown(sec_out, n_cap)
            phase_out = _grown(phase_out, n_cap)
        tok = 0
        n_admit = 0
        while nxt < n_req and arrivals[nxt] <= t and n_left < max_batch:
            tok += prompts[nxt]
            left[n_left] = outputs[nxt]
            n_left += 1
            n_admit += 1
            nxt += 1
        if n_left == 0:
            if nxt >= n_req:
                break
            seconds = min(arrivals[nxt], stop) - t
            phase = _SERVE_IDLE
        else:
            if n_admit:
                seconds = min(tok * prefill_s_per_token, stop - t)
                if seconds > 0:
                    t_out[n], sec_out[n], phase_out[n] = t, seconds, _SERVE_PREFILL
                    n += 1
                t = t + seconds
                if t >= stop:
                    break
            seconds = min(decode_step_s + decode_step_s_per_request * n_left, stop - t)
            phase = _SERVE_DECODE
            kept = 0
            for k in range(n_left):
                if left[k] > 1:
                    left[kept] = left[k] - 1
                    kept += 1
            n_left = kept
        if seconds > 0:
            t_out[n], sec_out[n], phase_out[n] = t, seconds, phase
            n += 1
        t = t + seconds
    return t_out[:n].copy(), sec_out[:n].copy(), phase_out[:n].copy()


@numba.njit(cache=True)
def _grown(a, n):
    """``a`` in a new array of length ``n`` (its first ``len(a)`` values)."""
    b = np.empty(n, dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


def desynchronise(schedule: Schedule, n: int, spread_s: float, seed: int = 0
                  ) -> list[Schedule]:
    """``n`` copies of a schedule, each delayed by its own offset in ``[0, spread_s]``.

    GPUs of one synchronous job start each step at slightly different times (launch skew,
    stragglers, different ranks of a pipeline); across racks or independent jobs the offsets
    are a large part of the step.  Offsets are evenly spaced over ``[0, spread_s]`` in a
    seeded random order, so the rack always spans the whole spread.
    """
    if n < 1:
        raise ScheduleError(f"desynchronise: n must be >= 1, got {n}")
    if spread_s < 0:
        raise ScheduleError(f"desynchronise: spread_s must be >= 0, got {spread_s}")
    offsets = np.linspace(0.0, spread_s, n) if n > 1 else np.zeros(1)
    offsets = np.random.default_rng(seed).permutation(offsets)
    return [schedule.shifted(float(o)) for o in offsets]


#: generators a scenario names (``[profiles.X] generator = "training"``)
GENERATORS = {"training": synchronous_training, "inference": inference}
