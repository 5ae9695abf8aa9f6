"""Read and write GPU power traces and their workload schedules.

The format is that of the shared H100 recordings (``../shared/data/README.md``): a CSV,
plain or gzip-compressed, UTF-8 with or without a byte-order mark, one row per NVML sample
with named columns (``t_s``, ``power_w``, ``power_inst_w``, ``energy_j``, ``temp_c``,
``sm_clock_mhz``, ``util_pct``, and the text columns ``segment`` and ``load``), beside it
``NAME.events.json`` with the commanded schedule and optionally ``NAME.meta.json`` with the
device facts.  Columns are found by name, so extra or reordered columns are fine.

What :func:`read_trace` checks:

- the header: not empty, no column twice, a ``t_s`` column;
- every row has as many fields as the header.  The last row alone may have fewer (a logger
  that crashed mid-line): it is dropped with a warning.  A gzip stream cut off by a crash
  keeps the rows before the cut (its incomplete last line dropped) with a warning naming the
  last ``t_s`` kept; a stream with no complete row before the cut is an error;
- the columns gridloop reads as numbers.  ``t_s``, ``energy_j`` and ``temp_c`` must hold a
  finite number in every row (an error names file, line and column), and ``t_s`` must
  increase strictly.  ``power_inst_w`` and ``sm_clock_mhz`` are optional: one that has an
  empty, NaN or non-numeric cell is left out, as if absent, with a warning naming the file,
  the column and the first such line;
- ``segment`` and ``load`` are read as text, unchecked.

Every other column (``power_w``, ``util_pct``, ``gpu_uuid``, ...) is not checked: it is kept
as numbers when every cell is a finite number, else as text.  :func:`to_measured`, which makes
a trace a recording to fit or score, further needs ``energy_j`` and ``temp_c``, refuses an
energy counter that never advances or that goes backwards (a reset), and a ``t_s`` plainly
not in seconds (samples over 1.5 apart spanning 500 times the schedule).  Every error names
the file, and for malformed rows the line and the column.  Warnings go through
:mod:`warnings` (the CLI prints each as one ``gridloop: warning:`` line).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import RecordingError
from twin.workload import Schedule, ScheduleError

if TYPE_CHECKING:
    from twin.gpu_fit import Measured

#: columns read as text
TEXT_COLUMNS = ("segment", "load")
#: columns a trace must have
REQUIRED_COLUMNS = ("t_s",)
#: numeric columns gridloop reads: every cell must be a finite number
STRICT_COLUMNS = ("t_s", "energy_j", "temp_c")
#: numeric columns gridloop reads if present: one with a bad cell is left out, with a warning
OPTIONAL_COLUMNS = ("power_inst_w", "sm_clock_mhz")
#: a median sample interval above this says t_s is not in seconds: NVML is logged every
#: 0.01-1 s (the margin over 1 s spares a 1 Hz logger's jitter) [s]
MAX_MEDIAN_INTERVAL_S = 1.5
#: ... and a trace spanning more than this many times its schedule is not in seconds [-]
MAX_SPAN_RATIO = 500.0
_SUFFIXES = (".csv.gz", ".csv")


@dataclass(frozen=True)
class Trace:
    """One recording: numeric columns as float arrays, text columns as string arrays.

    ``lines`` holds the file line of each row (for messages), where the trace was read.
    """

    path: Path
    columns: dict[str, np.ndarray]
    lines: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.columns["t_s"])

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise RecordingError(f"{self.path}: no column '{name}' (columns: "
                                 f"{', '.join(self.columns)})") from None

    def get(self, name: str) -> np.ndarray | None:
        return self.columns.get(name)

    @property
    def name(self) -> str:
        """File name without ``.csv`` / ``.csv.gz``."""
        return _stem(self.path)

    def where(self, i: int) -> str:
        """``PATH:LINE`` of row ``i`` (``PATH`` alone where the lines are not known)."""
        if self.lines is None:
            return str(self.path)
        return f"{self.path}:{int(self.lines[i])}"


def _stem(path: Path) -> str:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def beside(trace_path: str | Path, kind: str) -> Path:
    """``NAME.<kind>.json`` next to ``NAME.csv.gz`` (kind: ``events`` or ``meta``)."""
    p = Path(trace_path)
    return p.with_name(f"{_stem(p)}.{kind}.json")


def _read_bytes(path: Path) -> tuple[bytes, str | None]:
    """The file's bytes, decompressed if gzip, and why a gzip stream stopped early (None
    where it is whole)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such trace file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory, not a trace file") from None
    if data[:2] != b"\x1f\x8b":
        return data, None
    # zlib rather than gzip.GzipFile: a stream cut off keeps every byte before the cut
    # (GzipFile loses the whole read that meets the end)
    out: list[bytes] = []
    try:
        while data:  # one gzip member after another, as gzip.open reads them
            d = zlib.decompressobj(wbits=31)
            out.append(d.decompress(data))
            if not d.eof:
                out.append(d.flush())
                return b"".join(out), ("Compressed file ended before the end-of-stream "
                                       "marker was reached")
            data = d.unused_data.lstrip(b"\x00")  # gzip allows zero padding after a member
    except zlib.error as exc:
        raise RecordingError(f"{path}: corrupt gzip stream: {exc}") from None
    return b"".join(out), None


def _parse_rows(path: Path, data: bytes, cut: str | None) -> list[list[str]]:
    if cut is not None:
        # the last line of a stream cut off is incomplete (or empty): drop it
        data = data[: data.rfind(b"\n") + 1]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordingError(f"{path}: not a text CSV file ({exc.reason})") from None
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise RecordingError(f"{path}: not a valid CSV file: {exc}") from None


def _bad_cell(values: list[str]) -> tuple[int, int] | None:
    """Index of the first cell that is not a finite number and how many are not (None if
    all are)."""
    first, count = -1, 0
    for i, v in enumerate(values):
        try:
            ok = math.isfinite(float(v))
        except ValueError:
            ok = False
        if not ok:
            count += 1
            if first < 0:
                first = i
    return None if count == 0 else (first, count)


def read_trace(path: str | Path) -> Trace:
    """Read a trace CSV (plain or gzip); the errors name file, line and column.

    The module's docstring says what is checked; warnings (a dropped partial last line, a
    truncated gzip stream, an optional column left out) go through :mod:`warnings`.
    """
    path = Path(path)
    data, cut = _read_bytes(path)
    rows = _parse_rows(path, data, cut)
    if not rows or not any(h.strip() for h in rows[0]):
        if cut is not None:
            raise RecordingError(f"{path}: corrupt gzip stream: {cut} (no complete line "
                                 "before the cut)")
        raise RecordingError(f"{path}: empty file, expected a header line")
    header = [h.strip() for h in rows[0]]
    seen = set()
    for h in header:
        if h in seen:
            raise RecordingError(f"{path}:1: column '{h}' appears twice")
        seen.add(h)
    for name in REQUIRED_COLUMNS:
        if name not in header:
            raise RecordingError(f"{path}:1: no column '{name}' (columns: {', '.join(header)})")
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if r and any(c.strip() for c in r)]
    if len(body) > 1 and len(body[-1][1]) < len(header):
        line, r = body.pop()
        warnings.warn(f"{path}:{line}: the last line has {len(r)} fields, the header has "
                      f"{len(header)} (a logger cut off mid-line?): dropped", stacklevel=2)
    if not body:
        if cut is not None:
            raise RecordingError(f"{path}: corrupt gzip stream: {cut} (no complete data row "
                                 "before the cut)")
        raise RecordingError(f"{path}: header only, no data rows")
    for line, r in body:
        if len(r) != len(header):
            raise RecordingError(f"{path}:{line}: {len(r)} fields, the header has "
                                 f"{len(header)}")
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        values = [r[j] for _, r in body]
        if name in TEXT_COLUMNS:
            columns[name] = np.array(values, dtype=str)
            continue
        try:
            arr = np.array(values, dtype=float)
        except ValueError:
            arr = None
        if arr is not None and np.all(np.isfinite(arr)):
            columns[name] = arr
            continue
        bad = _bad_cell(values)
        assert bad is not None
        i, count = bad
        what = f"{path}:{body[i][0]}: column '{name}': {values[i]!r} is not a finite number"
        if name in STRICT_COLUMNS:
            raise RecordingError(what)
        if name in OPTIONAL_COLUMNS:
            more = f" (nor are {count - 1} more cells)" if count > 1 else ""
            warnings.warn(f"{what}{more}: the column is left out, as if the trace had none",
                          stacklevel=2)
            continue
        columns[name] = np.array(values, dtype=str)  # not read by gridloop: kept as text
    t = columns["t_s"]
    back = np.flatnonzero(np.diff(t) <= 0)
    if len(back):
        line = body[back[0] + 1][0]
        raise RecordingError(f"{path}:{line}: column 't_s': {float(t[back[0] + 1]):g} is not "
                             f"after the previous row's {float(t[back[0]]):g}")
    if cut is not None:
        warnings.warn(f"{path}: gzip stream cut off ({cut}): kept the {len(body)} rows "
                      f"before the cut, up to t_s = {float(t[-1]):.10g} (line "
                      f"{body[-1][0]})", stacklevel=2)
    return Trace(path, columns, np.array([line for line, _ in body], dtype=np.int64))


#: how an events file is laid out, for the messages about one that is not
_EVENTS_LAYOUT = ('an events file holds one JSON list of entries, '
                  '[{"t_s": ..., "load": ..., "seconds": ...}, ...]')


def _json_lines(text: str) -> bool:
    """Whether ``text`` is JSON lines: several lines, each one JSON value."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        for ln in lines:
            json.loads(ln)
    except json.JSONDecodeError:
        return False
    return True


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such {what} file") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{path}: not a UTF-8 text file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if what == "events" and _json_lines(text):
            hint = f": this is JSON lines (one object per line), but {_EVENTS_LAYOUT}"
        raise RecordingError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} "
                             f"(column {exc.colno}){hint}") from None


def read_events(path: str | Path) -> Schedule:
    """Read a schedule (``*.events.json``); errors name the file, the entry and the field."""
    path = Path(path)
    doc = _read_json(path, "events")
    if not isinstance(doc, list):
        raise RecordingError(f"{path}: expected a JSON list of events, got "
                             f"{type(doc).__name__} ({_EVENTS_LAYOUT})")
    if not doc:
        raise RecordingError(f"{path}: no events (a schedule needs at least one entry)")
    try:
        return Schedule.from_entries(doc)
    except ScheduleError as exc:
        raise RecordingError(f"{path}: {exc}") from None


def write_events(schedule: Schedule, path: str | Path) -> Path:
    """Write a schedule as ``*.events.json``."""
    path = Path(path)
    path.write_text(json.dumps(schedule.to_entries(), indent=1) + "\n", encoding="utf-8")
    return path


def read_power_limit_w(trace_path: str | Path) -> float | None:
    """The enforced power limit from ``NAME.meta.json`` beside a trace, if it says. [W]"""
    path = beside(trace_path, "meta")
    if not path.is_file():
        return None
    doc = _read_json(path, "meta")
    mw = doc.get("enforced_power_limit_mw", doc.get("power_limit_mw")) if isinstance(
        doc, dict) else None
    if mw is None:
        return None
    if isinstance(mw, bool) or not isinstance(mw, (int, float)) or not mw > 0:
        raise RecordingError(f"{path}: enforced_power_limit_mw: expected a positive number, "
                             f"got {mw!r}")
    return float(mw) / 1000.0


def _check_energy(trace: Trace) -> None:
    """Refuse an energy counter that never advances or that goes backwards (a reset)."""
    e = trace["energy_j"]
    if len(e) < 2:
        return
    step = np.diff(e)
    if not np.any(step):
        raise RecordingError(f"{trace.path}: energy_j never advances over its {len(e)} "
                             f"samples (it stays at {float(e[0]):.10g} J): the fit and score "
                             "need the energy counter (nvmlDeviceGetTotalEnergyConsumption)")
    back = np.flatnonzero(step < 0)
    if len(back):
        k = int(back[0]) + 1
        t = trace["t_s"]
        raise RecordingError(f"{trace.where(k)}: column 'energy_j' goes back by "
                             f"{float(e[k - 1] - e[k]):.10g} J at t_s = {float(t[k]):.10g} "
                             f"(from {float(e[k - 1]):.10g} to {float(e[k]):.10g} J): a counter "
                             "reset (a driver reload?); split the recording there")


def _check_seconds(trace: Trace, schedule: Schedule) -> None:
    """Refuse a trace whose ``t_s`` is plainly not in seconds: samples further apart than a
    logger's and a span hundreds of times its schedule's (a log in milliseconds; a slow
    logger, 0.5 Hz or dcgm's 10-30 s scrapes, of a job that fills it is fine)."""
    t = trace["t_s"]
    if len(t) < 2 or len(schedule) == 0:
        return
    median = float(np.median(np.diff(t)))
    span, job = float(t[-1] - t[0]), schedule.end_s - schedule.start_s
    if median > MAX_MEDIAN_INTERVAL_S and job > 0 and span > MAX_SPAN_RATIO * job:
        raise RecordingError(
            f"{trace.path}: t_s spans {span:.6g} with samples {median:.6g} apart, where its "
            f"schedule spans {job:.6g} s: t_s must be in seconds (is it in milliseconds?)")


def to_measured(trace: Trace, schedule: Schedule) -> Measured:
    """A trace and its schedule as the GPU fit and score read them.

    Refuses a trace without ``energy_j`` or ``temp_c``, or whose energy counter never
    advances or goes backwards, or whose ``t_s`` is plainly not in seconds.
    """
    from twin.gpu_fit import FitError, Measured

    for name in ("energy_j", "temp_c"):
        if name not in trace.columns:
            raise RecordingError(f"{trace.path}: no column '{name}', which fitting and "
                                 f"scoring need (columns: {', '.join(trace.columns)})")
    _check_energy(trace)
    _check_seconds(trace, schedule)
    t = trace["t_s"]
    if len(t) and len(schedule) and (schedule.start_s >= t[-1] or schedule.end_s <= t[0]):
        raise RecordingError(f"{trace.path}: its schedule runs {schedule.start_s:.1f}-"
                             f"{schedule.end_s:.1f} s and its samples {t[0]:.1f}-{t[-1]:.1f} s: "
                             "they do not overlap (is the schedule on the trace's clock?)")
    try:
        return Measured(trace.name, schedule, trace["t_s"], trace["energy_j"],
                        trace["temp_c"], trace.get("power_inst_w"), trace.get("sm_clock_mhz"))
    except FitError as exc:
        raise RecordingError(f"{trace.path}: {exc}") from None
